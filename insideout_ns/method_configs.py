"""Nerfstudio glue: the `insideout` and `insideout-lite` methods (entry point `nerfstudio.method_configs`)."""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from .datamanager import InsideOutDataManagerConfig
from .densify import DensifyConfig
from .model import InsideOutModelConfig
from .pipeline import InsideOutPipelineConfig, InsideOutTrainerConfig


def optimizers(max_steps: int) -> dict:
    """One Adam per parameter tensor (every tensor needs its own key), 3DGS's learning rates."""

    def adam(lr):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}

    return {
        "means": {"optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
                  "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps)},
        "scales": adam(0.005),
        "quats": adam(0.001),
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "densities": adam(0.01),
    }


def trainer_config(name: str, steps: int, phase1: int, densify: DensifyConfig, n_points: int) -> InsideOutTrainerConfig:
    return InsideOutTrainerConfig(
        method_name=name,
        steps_per_eval_image=max(steps // 10, 100),
        steps_per_eval_batch=0,
        steps_per_save=max(steps // 5, 200),
        steps_per_eval_all_images=steps,
        max_num_iterations=steps,
        mixed_precision=False,
        pipeline=InsideOutPipelineConfig(
            datamanager=InsideOutDataManagerConfig(num_rgb_points=n_points, num_radiative_points=n_points),
            model=InsideOutModelConfig(phase1_steps=phase1, densify=densify),
        ),
        optimizers=optimizers(steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


insideout_method = MethodSpecification(
    config=trainer_config("insideout", 30_000, 15_000,
                          DensifyConfig(refine_every=100, start=500, stop=25_000, max_gaussians=1_000_000), 20_000),
    description="InsideOut: one set of Gaussians for photographs (outside) and exact X-ray line integrals (inside)",
)

insideout_lite_method = MethodSpecification(
    config=trainer_config("insideout-lite", 1500, 400,
                          DensifyConfig(refine_every=100, start=200, stop=1200, max_gaussians=12_000), 3000),
    description="InsideOut at CPU scale: the whole three-phase fit of a ~128 px scene in minutes on 2 cores",
)
