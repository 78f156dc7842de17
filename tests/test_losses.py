"""The losses' own maths: the edge-preserving TV against its closed form."""

import math

import pytest
import torch

from insideout_ns.losses import total_variation_3d


@pytest.mark.parametrize("jump", [1e-3, 0.5, 7.0])
def test_edge_preserving_tv_is_tv_for_small_jumps_and_logarithmic_past_its_edge(jump):
    vol = torch.zeros(2, 2, 2)
    vol[1] = jump  # one jump along x; none along y and z
    vol.requires_grad_(True)
    plain, edged = total_variation_3d(vol), total_variation_3d(vol, edge=1.0)
    assert float(plain) == pytest.approx(jump, rel=1e-5)
    assert float(edged) == pytest.approx(math.log1p(jump), rel=1e-5)  # c log(1 + d / c), c = 1
    if jump < 0.01:  # TV where the differences are small (noise, streaks)
        assert float(edged) == pytest.approx(jump, rel=1e-2)
    # the pull on the jump falls as 1 / (1 + d / c): a dense small part is flattened 1 + d times less than by TV
    (g_plain,) = torch.autograd.grad(plain, vol)
    (g_edged,) = torch.autograd.grad(edged, vol)
    assert float(g_edged[1, 0, 0] / g_plain[1, 0, 0]) == pytest.approx(1 / (1 + jump), rel=1e-4)
