"""A resumed run goes on training as the uninterrupted one would, to the same final loss: from a checkpoint
in phase 1, at the phase boundary and in phase 3 (each saved right after a densification step), and after
a run killed while it was writing a checkpoint."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from run_helpers import config_for, run, setup

STEPS, PHASE1, SAVE_EVERY = 160, 81, 40  # checkpoints at 40 (phase 1), 80 (the next step aligns) and 120 (phase 3)


def resume_config(scene: Path, out: Path, steps: int = STEPS):
    config = config_for(scene, out, steps=steps, phase1=PHASE1)
    config.steps_per_save = SAVE_EVERY
    config.save_only_latest_checkpoint = False
    strategy = config.pipeline.model.strategy  # refinements at 40, 80, 120: each checkpoint follows one
    strategy.refine_start_iter, strategy.refine_every, strategy.refine_stop_iter = SAVE_EVERY, SAVE_EVERY, 150
    return config


@torch.no_grad()
def training_loss(pipeline) -> float:
    """The image losses of both modalities, summed over every training view (evaluation background)."""
    model, dm = pipeline.model, pipeline.datamanager
    model.eval()
    total = 0.0
    for views in dm.train_views.values():
        for view in views:
            camera, batch = view.served(model.device)
            outputs = model.get_outputs_for_camera(camera)
            total += sum(float(v) for k, v in model.get_loss_dict(outputs, batch).items() if k in ("rgb_loss", "xray_loss"))
    model.train()
    return total


@pytest.fixture(scope="module")
def uninterrupted(scene_factory, tmp_path_factory):
    scene = scene_factory("doll", write_calibration=True)
    config = resume_config(scene, tmp_path_factory.mktemp("resume") / "runs")
    trainer = run(config)
    return scene, config, trainer, training_loss(trainer.pipeline)


@pytest.mark.slow
@pytest.mark.parametrize("step", [40, 80, 120])
def test_resumed_run_trains_on(uninterrupted, tmp_path, step):
    scene, first, trainer, final_loss = uninterrupted
    config = resume_config(scene, tmp_path / "runs")
    config.load_dir, config.load_step = first.get_checkpoint_dir(), step
    resumed = setup(config)
    model = resumed.pipeline.model
    assert resumed._start_step == step + 1
    assert int(model.phase) == (3 if step > PHASE1 else 1)
    if step > PHASE1:  # the alignment and the object's grid come back from the checkpoint
        assert model.alignment_source == "checkpoint" and model.object_occupancy.numel() > 0
        torch.testing.assert_close(model.xray_to_rgb, trainer.pipeline.model.xray_to_rgb)
    for key, opt in resumed.optimizers.optimizers.items():  # the optimizers step the tensors the model renders
        assert id(opt.param_groups[0]["params"][0]) == id(model.gaussians.params[key]), f"{key}: the optimizer holds another tensor"
    for buffer in (model.gaussians.population, model.object_occupancy, model.xray_to_rgb):
        assert buffer.device == model.device
    start_means = model.gaussians.params["means"].detach().clone()
    start_loss = training_loss(resumed.pipeline)
    resumed.train()
    means = model.gaussians.params["means"].detach()
    if means.shape == start_means.shape:
        assert (means - start_means).abs().max() > 1e-4
    end_loss = training_loss(resumed.pipeline)
    assert end_loss < start_loss, (start_loss, end_loss)  # a run that trains nothing stays at start_loss
    # the checkpoint holds the random streams (views' order, backgrounds, splits, TV cubes) and the densification
    # statistics: the resumed run is the uninterrupted one, not another draw of it (two draws of this 160-step run
    # end up to 2 % apart, which is more than the 1-2 % a run resumed at 80 still has to go)
    assert end_loss == pytest.approx(final_loss, rel=1e-4), (end_loss, final_loss)
    if step < PHASE1:  # the resumed run crossed the boundary: the scene's calibration.json is the alignment
        record = json.loads((config.get_base_dir() / "alignment.json").read_text())
        calibration = json.loads((scene / "calibration.json").read_text())["xray_to_rgb"]
        assert record["source"] == "calibration"
        np.testing.assert_allclose(record["xray_to_rgb"], calibration, atol=1e-5)
        np.testing.assert_allclose(model.xray_to_rgb.numpy(), calibration, atol=1e-5)


@pytest.mark.slow
def test_a_checkpoint_of_the_earlier_layout_loads_the_same_model(uninterrupted, tmp_path):
    """Checkpoints written before the Gaussian set (keys `gauss_params.*` and `population`) load into the same
    Gaussians, phase and alignment as today's."""
    scene, first, _, _ = uninterrupted
    saved = first.get_checkpoint_dir() / "step-000000120.ckpt"
    state = torch.load(saved, map_location="cpu", weights_only=False)
    state["pipeline"] = {k.replace("_model.gaussians.params.", "_model.gauss_params.").replace(
        "_model.gaussians.population", "_model.population"): v for k, v in state["pipeline"].items()}
    assert "_model.gauss_params.means" in state["pipeline"] and "_model.population" in state["pipeline"]
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / saved.name)
    models = []
    for where in (saved.parent, tmp_path / "old"):
        config = resume_config(scene, tmp_path / "runs")
        config.load_dir, config.load_step = where, 120
        models.append(setup(config).pipeline.model)
    today, earlier = models
    assert int(earlier.phase) == 3 and torch.equal(earlier.xray_to_rgb, today.xray_to_rgb)
    assert torch.equal(earlier.gaussians.population, today.gaussians.population)
    for key, value in today.gaussians.params.items():
        assert torch.equal(earlier.gaussians.params[key], value), key


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    import torch
    import insideout_ns.pipeline as pipeline
    from test_resume import resume_config
    from run_helpers import run

    save = torch.save
    def save_then_die(obj, path):  # the second checkpoint: half written when the process is killed
        if "000000080" in str(path):
            save(obj, path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        save(obj, path)
    pipeline.torch.save = save_then_die
    config = resume_config(Path({scene!r}), Path({out!r}), steps=100)
    config.timestamp = "killed"
    run(config)
""")


@pytest.mark.slow
def test_run_killed_while_saving_resumes_from_its_last_whole_checkpoint(scene_factory, tmp_path):
    scene = scene_factory("doll", write_calibration=True)
    out = tmp_path / "runs"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), scene=str(scene), out=str(out))
    # cwd elsewhere: `python -c` puts the cwd first on sys.path, and the repository root would shadow an
    # installed (non-editable) insideout_ns, whose subpackages live in other folders of the repository
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", errors="replace", timeout=600, cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-3000:]
    config = resume_config(scene, out, steps=100)
    config.timestamp = "killed"
    ckpt_dir = config.get_checkpoint_dir()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step-000000040.ckpt"]
    config.load_dir = ckpt_dir  # the latest checkpoint, as `ns-train ... --load-dir` finds it
    config.timestamp = "resumed"
    resumed = run(config)
    assert resumed._start_step == 41 and int(resumed.pipeline.model.phase) == 3
    assert (config.get_checkpoint_dir() / "step-000000099.ckpt").is_file()  # the last step, as uninterrupted
