"""Training helpers for the end-to-end tests: the lite preset scaled to a few hundred steps, and a run."""

import os
from pathlib import Path

from insideout_ns.method_configs import insideout_lite_method, scaled

STEPS, PHASE1 = 240, 120
DEVICE = os.environ.get("INSIDEOUT_TEST_DEVICE", "cpu")  # where the training tests train (scripts/gpu_check.sh: cuda)


def config_for(scene: Path, out: Path, steps: int = STEPS, phase1: int = PHASE1):
    config = scaled(insideout_lite_method, steps, phase1=phase1)
    config.data = scene
    config.pipeline.datamanager.data = scene  # what ns-train's main does with --data
    config.output_dir = out
    config.machine.device_type = DEVICE
    config.vis = "tensorboard"
    config.steps_per_save = 200
    config.steps_per_eval_image = 10_000
    config.steps_per_eval_all_images = 10_000
    config.pipeline.datamanager.num_rgb_points = 1500  # the tests' own budget, whatever the preset's
    config.pipeline.datamanager.num_radiative_points = 1500
    config.pipeline.model.strategy.max_gaussians = 23_000  # the cap the tests were written against (the lite preset's until it grew)
    config.pipeline.model.no_masks.extra_gaussians = 0  # that cap leaves 20 000 to grow already (the extra cost 20-30 s a run)
    config.set_timestamp()
    return config


def setup(config):
    """The trainer, seeded as `ns-train` seeds it (a test's result must not depend on the tests run before it)."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def run(config):
    config.save_config()
    trainer = setup(config)
    trainer.train()
    return trainer
