"""Nerfstudio glue: a pipeline whose evaluation reports each modality separately, plus the volume and
alignment metrics of the whole model, and a trainer whose checkpoints are written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Type

import numpy as np
import torch

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from .alignment import alignment_error
from .dataparsers.scene_format import read_ground_truth
from .losses import psnr, ssim_metric


@dataclass
class InsideOutPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: InsideOutPipeline)


class InsideOutPipeline(VanillaPipeline):
    def get_train_loss_dict(self, step: int):
        """As nerfstudio's, over every view the datamanager serves for the step (next_train_views): each loss
        averaged over the views that have it; the views after the first are marked `repeat`, so that the
        model adds its step-wide regularisers once."""
        totals: Dict[str, torch.Tensor] = {}
        counts: Dict[str, int] = {}
        for i, (camera, batch) in enumerate(self.datamanager.next_train_views(step)):
            batch = {**batch, "repeat": i > 0}
            outputs = self._model(camera)
            metrics = self.model.get_metrics_dict(outputs, batch)
            for name, value in self.model.get_loss_dict(outputs, batch, metrics).items():
                totals[name] = totals.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
        return outputs, {name: totals[name] / counts[name] for name in totals}, metrics

    def get_extra_state(self) -> Dict:
        """torch's global random state (the random backgrounds, the split children's positions), so that a resumed
        run draws what the uninterrupted one would (the TV's cubes have the model's own stream)."""
        return {"torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def set_extra_state(self, state: Dict) -> None:
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def get_average_image_metrics(self, data_loader, image_prefix: str, step: Optional[int] = None,
                                  output_path: Optional[Path] = None, get_std: bool = False) -> Dict[str, float]:
        """Every held-out view of both modalities; each metric averaged over the views that have it."""
        self.eval()
        per_key: Dict[str, list] = {}
        with torch.no_grad():
            for camera, batch in data_loader:
                outputs = self.model.get_outputs_for_camera(camera)
                metrics, _ = self.model.get_image_metrics_and_images(outputs, batch)
                for k, v in metrics.items():
                    per_key.setdefault(k, []).append(float(v))
            result = {k: float(np.mean(v)) for k, v in per_key.items()}
            if get_std:
                result.update({f"{k}_std": float(np.std(v)) for k, v in per_key.items()})
            result.update(self.model_metrics())
        self.train()
        return result

    def model_metrics(self) -> Dict[str, float]:
        """3D volume PSNR/SSIM against the scene's volume, and alignment error against ground_truth.json."""
        model, out = self.model, {}
        vol = getattr(model, "gt_volume", None)
        if vol is not None:
            gt = torch.from_numpy(vol.values).to(model.device)
            aabb, peak = torch.tensor(vol.aabb, dtype=torch.float32), float(gt.max())
            # the values at the voxel centres, as the scene's volume holds them (benchmarks/README.md, "Voxel values")
            pred = model.volume_in_xray_frame(shape=tuple(gt.shape), aabb=aabb)
            out["volume_psnr"], out["volume_ssim"] = psnr(pred, gt, peak), ssim_metric(pred, gt, peak)
        truth = read_ground_truth(self.datamanager.get_datapath()).get("xray_to_rgb")
        if model.joint and truth is not None:
            # the truth maps the X-ray frame users see (a CT's patient frame) to the RGB frame
            truth = np.array(truth) @ model.patient_from_frame.cpu().double().numpy()
            box = model.box_xray.cpu().numpy()
            diameter = float(np.linalg.norm(box[1] - box[0])) * float(np.cbrt(np.linalg.det(truth[:3, :3])))
            err = alignment_error(model.xray_to_rgb.cpu().double().numpy(), truth, box.mean(0), diameter)
            out.update({f"alignment_{k}": v for k, v in err.items()})
        return out


def plain(obj):
    """numpy scalars (nerfstudio's schedulers leave some in their state) as Python numbers, so that
    torch.load's default weights_only mode (used by ns-eval, ns-render and resuming) reads the file."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


@dataclass
class InsideOutTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: InsideOutTrainer)


class InsideOutTrainer(Trainer):
    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        if config.machine.device_type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"{config.method_name}: this machine has no CUDA GPU; pass --machine.device-type cpu "
                             "(or train insideout-lite, which picks the CPU by itself)")
        super().__init__(config, local_rank, world_size)

    def train(self) -> None:
        """As nerfstudio's, but a resumed run ends where the uninterrupted one would, at
        `max_num_iterations` (nerfstudio would train that many steps more, past every schedule's end)."""
        total = self.config.max_num_iterations
        if self._start_step >= total:
            CONSOLE.print(f"The checkpoint is at step {self._start_step - 1} of {total}: nothing left to train "
                          "(raise --max-num-iterations to train on)")
            return
        self.config.max_num_iterations = total - self._start_step
        try:
            super().train()
        finally:
            self.config.max_num_iterations = total

    def save_checkpoint(self, step: int) -> None:
        """As nerfstudio's, but written to a temporary file beside the checkpoint folder and renamed: a run
        killed while saving leaves the previous checkpoint whole, and nothing in the folder that
        `--load-dir` would take for a checkpoint (it reads every name there as a step)."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        tmp = self.checkpoint_dir.parent / f".{ckpt_path.name}.partial"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        torch.save(plain({
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }), tmp)
        os.replace(tmp, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("*.ckpt"):
                if f != ckpt_path:
                    f.unlink()
