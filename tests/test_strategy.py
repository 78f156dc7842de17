"""The phase schedule says which attributes judge each Gaussian, and densification prunes by them: in a
scene with one modality, by that modality's attribute; in a paired scene, by each population's own in
phase 1 and by both in phase 3."""

import pytest
import torch

from insideout_ns.dataparsers.synth.generate import SceneOptions, generate_scene
from insideout_ns.dataparsers.synth.phantom import preset
from insideout_ns.phases import Phase, Schedule
from insideout_ns.gaussians import RADIATIVE, RGB, inverse_softplus
from insideout_ns.strategy import InsideOutStrategy
from run_helpers import config_for, run

POP = torch.tensor([RGB, RGB, RADIATIVE, RADIATIVE])


@pytest.mark.parametrize("has_rgb, has_xray, phase, by_opacity, by_density", [
    (True, True, Phase.INDEPENDENT, [1, 1, 0, 0], [0, 0, 1, 1]),
    (True, True, Phase.JOINT, [1, 1, 1, 1], [1, 1, 1, 1]),
    (False, True, Phase.INDEPENDENT, [0, 0, 0, 0], [1, 1, 1, 1]),
    (True, False, Phase.INDEPENDENT, [1, 1, 1, 1], [0, 0, 0, 0]),
])
def test_schedule_judges_each_gaussian_by_what_it_renders(has_rgb, has_xray, phase, by_opacity, by_density):
    schedule = Schedule(has_rgb, has_xray, hierarchical=True, phase1_steps=10)
    got = schedule.judged_by(phase, POP)
    assert got[0].tolist() == [bool(b) for b in by_opacity] and got[1].tolist() == [bool(b) for b in by_density]


def test_single_modality_scenes_never_reach_the_joint_phase():
    for has_rgb, has_xray in ((True, False), (False, True)):
        schedule = Schedule(has_rgb, has_xray, hierarchical=True, phase1_steps=10)
        assert schedule.initial_phase() == Phase.INDEPENDENT and not schedule.alignment_due(Phase.INDEPENDENT, 10**6)
    assert Schedule(True, True, hierarchical=False, phase1_steps=10).initial_phase() == Phase.JOINT


def test_dead_means_every_judging_attribute_is_low():
    strategy = InsideOutStrategy(prune_opa=0.1, prune_density_frac=0.1)
    # opacity: high, low, high, low; density: low, high, high, low (of a peak of 1)
    params = {"opacities": torch.logit(torch.tensor([0.9, 0.01, 0.9, 0.01])),
              "densities": inverse_softplus(torch.tensor([0.001, 1.0, 1.0, 0.001]))}
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    assert strategy.dead(params, yes, no).tolist() == [False, True, False, True]  # by opacity alone
    assert strategy.dead(params, no, yes).tolist() == [True, False, False, True]  # by density alone
    assert strategy.dead(params, yes, yes).tolist() == [False, False, False, True]  # joint: both low
    assert strategy.dead(params, no, no).tolist() == [False] * 4  # judged by nothing: never dead


@pytest.mark.parametrize("keep", ["xray", "rgb"])
def test_single_modality_runs_prune_by_their_own_attribute(tmp_path, keep):
    """Growth off, a pruning threshold that catches some Gaussians, the last step a refinement: the run
    pruned, and no Gaussian is left whose own attribute is low (the joint rule, low opacity *and* low
    density, pruned none of them: an X-ray-only run never changes opacity, an RGB-only one density)."""
    opts = SceneOptions(rgb_views=12 if keep == "rgb" else 0, xray_views=12 if keep == "xray" else 0,
                        rgb_res=32, xray_res=32, seed=2)
    scene = generate_scene(preset("fruit"), tmp_path / "s", opts)
    config = config_for(scene, tmp_path / "runs", steps=41)
    strategy = config.pipeline.model.strategy
    strategy.refine_start_iter, strategy.refine_every, strategy.refine_stop_iter = 20, 20, 41
    strategy.grow_grad2d = float("inf")
    strategy.prune_opa, strategy.prune_density_frac = (0.08, 0.0) if keep == "rgb" else (0.0, 0.5)
    start = config.pipeline.datamanager.num_rgb_points if keep == "rgb" else config.pipeline.datamanager.num_radiative_points
    model = run(config).pipeline.model
    assert model.num_points < start
    p = model.gaussians.params
    if keep == "rgb":
        assert float(torch.sigmoid(p["opacities"]).min()) >= 0.08
    else:
        dens = torch.nn.functional.softplus(p["densities"])
        assert float(dens.min()) >= 0.5 * float(dens.max()) * (1 - 1e-6)
