"""The learned environment behind photographs without masks (environment.py): its equirectangular
convention against directions built independently from texel centres, and its gradient."""

import math

import torch

from insideout_ns.environment import EnvironmentMap


def texel_direction(i: float, j: float, rows: int) -> torch.Tensor:  # [3]
    """The direction through the centre of texel (row i, column j): azimuth from -pi at the left edge to pi
    at the right, elevation from pi/2 (up, +z) at the top edge to -pi/2 at the bottom."""
    az = (j + 0.5) / (2 * rows) * 2 * math.pi - math.pi
    el = math.pi / 2 - (i + 0.5) / rows * math.pi
    return torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def test_a_texel_centre_gives_that_texel_colour():
    rows = 6
    env = EnvironmentMap(rows)
    with torch.no_grad():
        env.texture.copy_(torch.randn(1, 3, rows, 2 * rows))
    ij = [(i, j) for i in range(rows) for j in range(2 * rows)]
    dirs = torch.stack([texel_direction(i, j, rows) * (1 + i) for i, j in ij])  # any length: directions only
    got = env(dirs[None])[0]  # [rows * 2 rows, 3]
    want = torch.stack([torch.sigmoid(env.texture[0, :, i, j]) for i, j in ij])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_between_two_texels_the_colour_is_their_mean_and_gradients_reach_both():
    rows = 4
    env = EnvironmentMap(rows)
    with torch.no_grad():
        env.texture.copy_(torch.randn(1, 3, rows, 2 * rows))
    d = texel_direction(1, 2.5, rows)  # row 1's centre, half way between columns 2 and 3
    colour = env(d[None])[0]
    logit = 0.5 * (env.texture[0, :, 1, 2] + env.texture[0, :, 1, 3])
    torch.testing.assert_close(torch.logit(colour), logit.detach(), atol=1e-4, rtol=0)
    colour.sum().backward()
    touched = env.texture.grad[0].abs().sum(0) > 0  # [rows, 2 rows]
    assert touched[1, 2] and touched[1, 3] and int(touched.sum()) == 2
