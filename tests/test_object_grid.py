"""What each modality gives the other once aligned (object_grid.py, merge.transfer_attributes): the
photographed and the scanned hull of a phantom against its exact volume, the grid's sampling and dilation,
and the attribute transfer (masses kept, colours from the surface the photographs see)."""

import json

import imageio.v3 as iio
import torch
import torch.nn.functional as F

from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
from insideout_ns.init_points import xray_support
from insideout_ns.merge import transfer_attributes
from insideout_ns.object_grid import ObjectGrid, dilated, hull_in_xray_frame, object_grid
from insideout_ns.gaussians import inverse_softplus, unit_mass


def test_a_grid_samples_its_cells_and_grows_by_whole_cells():
    occ = torch.zeros(8, 8, 8, dtype=torch.bool)
    occ[3, 4, 5] = True
    grid = ObjectGrid(occ, torch.tensor([[0.0, 0, 0], [8, 8, 8]]))
    assert grid.contains(torch.tensor([[3.5, 4.5, 5.5], [3.5, 5.5, 5.5], [-1.0, 4.5, 5.5]])).tolist() == [True, False, False]
    grown = dilated(occ, 1)
    assert int(grown.sum()) == 27 and bool(grown[2, 3, 4]) and not bool(grown[1, 4, 5])


def test_both_hulls_hold_the_phantom_and_little_else(scene_factory):
    """The doll (16 photographs with masks, 16 cone-beam projections, 48 px) with the true alignment, on a 32^3
    grid of the X-ray frame: the photographed hull misses at most 3 % of the phantom's cells (measured 1.9 %: edge
    cells half a pixel out), the X-ray hull at most 10 % (measured 6.5 %: thin edges whose chords stay under the
    support threshold); each holds less than 2.5 times the phantom (measured 1.9 x each); dilated by the grid's
    margin and intersected, they hold every cell of the phantom."""
    scene = scene_factory("doll", volume_res=32, rgb_views=16, xray_views=16, rgb_res=48, xray_res=48)
    outputs = InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    xr = outputs.metadata["xray"]
    box = torch.tensor(xr.volume.aabb, dtype=torch.float32)
    truth = torch.from_numpy(xr.volume.values) > 0  # [32, 32, 32] on the grid over the same box
    masks = [torch.from_numpy(iio.imread(f)[..., 3:4].copy()) for f in outputs.image_filenames]
    xray_to_rgb = torch.tensor(json.loads((scene / "ground_truth.json").read_text())["xray_to_rgb"], dtype=torch.float32)
    photographed = hull_in_xray_frame(outputs.cameras, masks, False, xray_to_rgb, box, res=32)
    scanned = hull_in_xray_frame(xr.cameras, xray_support(xr.projections)[..., None], False, torch.eye(4), box, res=32)
    cells = float(truth.sum())
    for hull, missed in ((photographed, 0.03), (scanned, 0.10)):
        assert float((truth & ~hull).sum()) <= missed * cells
        assert float(hull.sum()) < 2.5 * cells
    both = object_grid(photographed, scanned, box)
    assert not bool((truth & ~both.occupancy).any())
    assert float(both.occupancy.sum()) < 3.5 * cells  # measured 2.85 x: a whole cell of margin on this coarse grid


def test_transfer_keeps_every_mass_and_colours_the_inside_from_the_seen_surface():
    """Two RGB Gaussians on the surface (seen: red and blue), a hidden RGB one born with a random colour near the
    red one, and two radiative ones: the attenuation's total mass is unchanged; the hidden and the radiative
    Gaussians take the colour of the nearest seen one, the radiative ones the opacity of the nearest RGB one."""
    means = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0.6, 0, 0], [0.85, 0.1, 0], [-0.7, 0, 0]])
    radiative = torch.tensor([False, False, False, True, True])
    seen = torch.tensor([True, True, False, False, False])
    params = {"means": means, "scales": torch.log(torch.full((5, 3), 0.1)),
              "features_dc": torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.3, 0.7, 0.2], [0, 0, 0], [0, 0, 0]]),
              "features_rest": torch.zeros(5, 3, 3), "opacities": torch.logit(torch.tensor([0.9, 0.8, 0.1, 0.5, 0.5])),
              "densities": inverse_softplus(torch.tensor([1e-6, 1e-6, 1e-6, 2.0, 3.0]))}
    params = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    mass = lambda: float((F.softplus(params["densities"]) * unit_mass(torch.exp(params["scales"]))).sum())  # noqa: E731
    before = mass()
    transfer_attributes(params, radiative, seen)
    assert abs(mass() - before) < 1e-4 * before
    colours = params["features_dc"].detach()
    torch.testing.assert_close(colours[[2, 3]], torch.tensor([[1.0, 0, 0]] * 2))  # nearest seen: the red one
    torch.testing.assert_close(colours[4], torch.tensor([0.0, 0, 1.0]))
    torch.testing.assert_close(torch.sigmoid(params["opacities"][[3, 4]]), torch.tensor([0.9, 0.8]))  # the nearest RGB one's
    assert float(torch.sigmoid(params["opacities"][2])) == float(torch.tensor(0.1))  # an RGB one keeps its opacity
