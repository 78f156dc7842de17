"""The method's phase schedule, in one place (docs/method.md, "The three phases"):

1. INDEPENDENT: the RGB population fits the photographs in the RGB frame, the radiative population the
   projections in the X-ray frame; each is rendered, and judged by densification, by its own modality.
2. ALIGN: an instant, not a stretch of steps: at `phase1_steps` the similarity X-ray -> RGB is found, the
   radiative population moves into the RGB frame and the populations merge (merge.py, model.align).
3. JOINT: one set in the RGB frame; every Gaussian renders both modalities, the density is held inside the
   object both modalities see (object_grid.py; a CT scene's by its voxels instead), and a Gaussian is dead only when
   both its opacity and its density are.

A scene with one modality stays in INDEPENDENT: its one population is judged by its own attribute.
The no-hierarchy ablation (`hierarchical=False`) starts in JOINT with the calibration (or identity).

Example:
    >>> import torch
    >>> from insideout_ns.phases import Phase, Schedule
    >>> schedule = Schedule(has_rgb=True, has_xray=True, hierarchical=True, phase1_steps=400)
    >>> schedule.initial_phase(), schedule.alignment_due(Phase.INDEPENDENT, 400)
    (<Phase.INDEPENDENT: 1>, True)
    >>> population = torch.tensor([0.0, 1.0])  # one RGB, one radiative Gaussian
    >>> schedule.rendered_by("rgb", Phase.INDEPENDENT, population).tolist()
    [True, False]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import List, Tuple

import torch
from torch import Tensor

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation

from .gaussians import RADIATIVE, RGB


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss, a failed alignment); the message says why."""


class Phase(IntEnum):
    INDEPENDENT = 1
    ALIGN = 2
    JOINT = 3


@dataclass(frozen=True)
class Schedule:
    """Which populations and losses are live in each phase, for a scene with these modalities."""

    has_rgb: bool
    has_xray: bool
    hierarchical: bool
    phase1_steps: int

    @property
    def paired(self) -> bool:
        return self.has_rgb and self.has_xray

    def initial_phase(self) -> Phase:
        return Phase.JOINT if self.paired and not self.hierarchical else Phase.INDEPENDENT

    def alignment_due(self, phase: Phase, step: int) -> bool:
        """Phase 2 happens before the first step at or past `phase1_steps` of a paired, independent run."""
        return self.paired and phase == Phase.INDEPENDENT and step >= self.phase1_steps

    def joint(self, phase: Phase) -> bool:
        """Both populations are one set in the RGB frame: the radiative Gaussians and the X-ray cameras are
        moved by the alignment, and the object's grid bounds the density."""
        return self.paired and phase == Phase.JOINT

    def rendered_by(self, modality: str, phase: Phase, population: Tensor) -> Tensor:  # [N] bool
        """Which Gaussians render `modality` ("rgb" or "xray"): its own population while independent."""
        if not self.paired or self.joint(phase):
            return torch.ones_like(population, dtype=torch.bool)
        return population == (RGB if modality == "rgb" else RADIATIVE)

    def judged_by(self, phase: Phase, population: Tensor) -> Tuple[Tensor, Tensor]:  # ([N], [N]) bool
        """(by_opacity, by_density): the attributes that decide whether a Gaussian is dead. Independent:
        each population's own (a single-modality scene's one population: its modality's); joint: both."""
        ones = torch.ones_like(population, dtype=torch.bool)
        if self.joint(phase):
            return ones, ones
        if not self.paired:
            return ones & self.has_rgb, ones & self.has_xray
        return population == RGB, population == RADIATIVE


def phase_callbacks(model, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
    """The schedule as Nerfstudio callbacks: before each step the model learns the step, its optimizers
    and its run folder, and `model.align()` (phase 2) runs when it is due; after each step, the model's
    after_step (scaled moves of the means, densification)."""

    def before(step: int):
        model.step = step
        model.optimizers = attrs.optimizers.optimizers
        if attrs.trainer is not None:
            model.run_dir = attrs.trainer.base_dir
        if model.schedule.alignment_due(Phase(int(model.phase)), step):
            model.align()
        model.before_step()

    return [
        TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before),
        TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], model.after_step),
    ]
