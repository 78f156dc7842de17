"""Nerfstudio glue: the `insideout` and `insideout-lite` methods (entry point `nerfstudio.method_configs`),
and `scaled`, the one way to run a preset for another number of steps (the demo, the benchmarks and the
tests use it)."""

from __future__ import annotations

import copy
from typing import Optional

import torch

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from .datamanager import InsideOutDataManagerConfig
from .model import InsideOutModelConfig
from .pipeline import InsideOutPipelineConfig, InsideOutTrainerConfig
from .strategy import InsideOutStrategy


def optimizers(max_steps: int) -> dict:
    """One Adam per parameter tensor (every tensor needs its own key), 3DGS's learning rates."""

    def adam(lr):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}

    def decaying(lr):  # to a tenth by the end of the run (R2-Gaussian's schedule for the radiative attributes)
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr / 10, max_steps=max_steps)}

    return {
        "means": {"optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
                  "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps)},
        "scales": adam(0.005),
        "quats": adam(0.001),
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "densities": decaying(0.01),
        "environment": adam(0.01),  # the room behind photographs without masks (environment.py)
    }


def trainer_config(name: str, steps: int, phase1: int, strategy: InsideOutStrategy, rgb_points: int,
                   radiative_points: int, device_type: str) -> InsideOutTrainerConfig:
    return InsideOutTrainerConfig(
        method_name=name,
        steps_per_eval_image=max(steps // 10, 100),
        steps_per_eval_batch=0,
        steps_per_save=max(steps // 5, 200),
        steps_per_eval_all_images=steps,
        max_num_iterations=steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=device_type),
        pipeline=InsideOutPipelineConfig(
            datamanager=InsideOutDataManagerConfig(num_rgb_points=rgb_points, num_radiative_points=radiative_points),
            model=InsideOutModelConfig(phase1_steps=phase1, strategy=strategy),
        ),
        optimizers=optimizers(steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def scaled(preset: MethodSpecification, steps: Optional[int] = None, phase1: Optional[int] = None,
           radiative_points: Optional[int] = None) -> InsideOutTrainerConfig:
    """A deep copy of the preset's config (the preset stays untouched) for `steps` training steps: the
    phase boundary (unless `phase1` is given), the densification window and the learning-rate decay at
    the preset's fractions of the run; with `radiative_points`, that many radiative starting points and
    the Gaussian cap moved by as many as the preset's start differs (the benchmarks' budget rows).

        >>> from insideout_ns.method_configs import insideout_lite_method, scaled
        >>> config = scaled(insideout_lite_method, steps=300)
        >>> config.max_num_iterations, config.pipeline.model.phase1_steps, config.pipeline.model.strategy.refine_every
        (300, 80, 20)
    """
    config = copy.deepcopy(preset.config)
    if steps is not None and steps != config.max_num_iterations:
        fraction = steps / config.max_num_iterations
        model, strategy = config.pipeline.model, config.pipeline.model.strategy
        model.phase1_steps = round(model.phase1_steps * fraction)
        strategy.refine_start_iter = round(strategy.refine_start_iter * fraction)
        strategy.refine_stop_iter = round(strategy.refine_stop_iter * fraction)
        strategy.refine_every = max(10, round(strategy.refine_every * fraction))
        config.max_num_iterations = steps
        config.steps_per_eval_all_images = steps
        config.optimizers = optimizers(steps)
    if phase1 is not None:
        config.pipeline.model.phase1_steps = phase1
    if radiative_points is not None:
        dm, strategy = config.pipeline.datamanager, config.pipeline.model.strategy
        strategy.max_gaussians = max(strategy.max_gaussians + radiative_points - dm.num_radiative_points, radiative_points)
        dm.num_radiative_points = radiative_points
    return config


insideout_method = MethodSpecification(
    # 15 000 steps: about 8 minutes on one H100 for 100 photographs at 512^2 and 100 projections at 256^2
    # (benchmarks/README.md, "GPU check")
    config=trainer_config("insideout", 15_000, 7_500,
                          InsideOutStrategy(refine_every=100, refine_start_iter=500, refine_stop_iter=12_500,
                                            max_gaussians=1_000_000), 20_000, 50_000, device_type="cuda"),
    description="InsideOut: one set of Gaussians for photographs (outside) and exact X-ray line integrals (inside)",
)

insideout_lite_method = MethodSpecification(
    config=trainer_config("insideout-lite", 1500, 400,
                          # 60 000 radiative starting points (the FBP on a lattice): a CT grid wants them from the
                          # start, and growth past them hurts the volume (benchmarks/README.md, "Budgets")
                          InsideOutStrategy(refine_every=100, refine_start_iter=200, refine_stop_iter=1200,
                                            max_gaussians=63_000), 3000, 60_000,
                          device_type="cuda" if torch.cuda.is_available() else "cpu"),
    description="InsideOut at CPU scale: the whole three-phase fit of a ~128 px scene in minutes on 2 cores "
                "(runs on the CPU where there is no GPU)",
)
