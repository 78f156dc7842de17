"""Densification of dual-attribute Gaussians, as a `gsplat.strategy.Strategy` (the model forwards to it,
as splatfacto forwards to gsplat's `DefaultStrategy`): gsplat's clone/split/prune operations, with
attenuation conserved and each Gaussian judged by the attributes its phase renders.

- Growth: a Gaussian whose mean image-plane gradient (accumulated over the views of the modalities it
  is rendered in) exceeds `grow_grad2d` is cloned when small and split when large, as in 3DGS.
- Mass: a split or clone must not change the projections. A clone halves the density of both copies; a
  split gives each of the two children (scales / 1.6) the density rho * 1.6^3 / 2, so the children hold the
  parent's mass (R2-Gaussian's halving would lose 88 % of it with the same shrink).
- Pruning: a Gaussian goes when every attribute it is judged by is low: opacity below `prune_opa`,
  density below `prune_density_frac` of the largest (the phase schedule says which attributes judge
  which Gaussian: phases.Schedule.judged_by). Very large ones go too, and those the model calls unwanted
  (RGB Gaussians in the air of a capture without masks: object_region.Region.in_the_air; in phase 3, those
  outside the object both modalities see: object_grid.py).

Example:
    >>> import torch
    >>> from insideout_ns.strategy import InsideOutStrategy
    >>> strategy = InsideOutStrategy(refine_start_iter=100, refine_every=100)
    >>> state = strategy.initialize_state()
    >>> strategy.is_refine_step(200), strategy.is_refine_step(250)
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from gsplat.strategy.base import Strategy
from gsplat.strategy.ops import duplicate, remove, split
from torch import Tensor

from .gaussians import densities_of, opacities_of, scales_of, set_densities

SPLIT_SHRINK = 1.6  # gsplat's split divides scales by 1.6


@dataclass
class InsideOutStrategy(Strategy):
    """Clone / split / prune every `refine_every` steps in [refine_start_iter, refine_stop_iter)."""

    refine_start_iter: int = 200
    """First step at which Gaussians are grown and pruned."""
    refine_stop_iter: int = 10_000
    """No growth or pruning from this step on."""
    refine_every: int = 100
    """Steps between two refinements (gradients are averaged over them)."""
    grow_grad2d: float = 0.0002
    """Grow a Gaussian whose mean image-plane gradient (gsplat's normalisation) exceeds this."""
    grow_scale3d: float = 0.01
    """Split (rather than clone) above this fraction of the population's scene extent."""
    prune_opa: float = 0.005
    """Opacity below which a Gaussian judged by opacity is dead."""
    prune_density_frac: float = 0.002
    """Density below this fraction of the largest, for a Gaussian judged by density."""
    prune_scale3d: float = 0.1
    """Prune a Gaussian larger than this fraction of its population's scene extent."""
    max_gaussians: int = 200_000
    """Growth stops at this many Gaussians (the strongest gradients grow first)."""
    grow_from: Tuple[str, ...] = ("rgb",)
    """Modalities whose image-plane gradients drive growth: X-ray gradients grow Gaussians along the streaks of a
    sparse scan and made the volume worse (benchmarks/README.md)."""

    def initialize_state(self) -> Dict:
        """Running sums of image-plane gradient norms (`grad2d` [N]) and of views (`count` [N]), and the renders of
        the current step (`renders`: gsplat-style infos). The model keeps its per-Gaussian tensors here too
        (`population` [N] tags, `extent` [N] its frame's extent, `by_opacity` / `by_density` [N] bool: which attributes
        judge it), so that gsplat's ops resize them with every clone, split and removal, and `unwanted`: a function
        that gives the Gaussians [N] bool to prune whatever their attributes."""
        return {"grad2d": None, "count": None, "renders": []}

    def is_refine_step(self, step: int) -> bool:
        return self.refine_start_iter <= step < self.refine_stop_iter and step % self.refine_every == 0 and step > 0

    def step_pre_backward(self, params, optimizers, state: Dict, step: int, info: Dict) -> None:
        """Keeps one render's image-plane gradient (`info["means2d"]` [C, M, 2]) for `step_post_backward` where its
        modality (`info["modality"]`) drives growth; `info["selected"]` [N] bool says which Gaussians it drew."""
        if not info["means2d"].requires_grad or info["modality"] not in self.grow_from:
            return
        info["means2d"].retain_grad()
        state["renders"].append(info)

    @torch.no_grad()
    def step_post_backward(self, params, optimizers, state: Dict, step: int, info: Optional[Dict] = None,
                           packed: bool = False) -> None:
        """Accumulates the step's renders' gradients and refines on refine steps (the step's renders are in
        `state`; `info` is gsplat's argument, unused)."""
        renders, state["renders"] = state["renders"], []
        n = len(state["population"])
        for render in renders:
            self._accumulate(state, render, n)
        if not self.is_refine_step(step):
            return
        self._refine(params, optimizers, state)
        state["grad2d"] = state["count"] = None

    @staticmethod
    def _accumulate(state: Dict, info: Dict, n: int) -> None:
        grads = info["means2d"].grad  # [C, M, 2]
        if grads is None:
            return
        if state["grad2d"] is None or len(state["grad2d"]) != n:
            state["grad2d"] = torch.zeros(n, device=grads.device)
            state["count"] = torch.zeros(n, device=grads.device)
        g = grads.clone()
        g[..., 0] *= info["width"] / 2.0 * info["n_cameras"]  # gsplat's normalisation to [-1, 1] screens
        g[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = info["radii"] > 0  # [C, M]
        ids = torch.nonzero(info["selected"]).squeeze(-1)  # rendered index -> Gaussian index
        cam, local = torch.nonzero(visible, as_tuple=True)
        state["grad2d"].index_add_(0, ids[local], g[cam, local].norm(dim=-1))
        state["count"].index_add_(0, ids[local], torch.ones_like(local, dtype=torch.float32))

    def _refine(self, params, optimizers, state: Dict) -> None:
        population = state["population"]
        n = len(population)
        unwanted = state.get("unwanted")
        # whatever a refinement prunes regardless of attributes, as a tensor that gsplat's ops resize with the rest
        state["pruned"] = unwanted() if unwanted is not None else torch.zeros(n, dtype=torch.bool, device=population.device)
        scale_max = scales_of(params).max(dim=-1).values
        if state["grad2d"] is not None and len(state["grad2d"]) == n:
            avg = state["grad2d"] / state["count"].clamp(min=1)
            grow = (avg > self.grow_grad2d) & (state["count"] > 0)
        else:  # no render of a growing modality since the last refinement: prune only
            avg = grow = torch.zeros(n, dtype=torch.bool, device=population.device)
        room = max(self.max_gaussians - n, 0)
        if int(grow.sum()) > room:  # the strongest gradients first
            keep = torch.topk(avg * grow, room).indices
            grow = torch.zeros_like(grow).index_fill_(0, keep, True)
        small = scale_max <= self.grow_scale3d * state["extent"]
        clone, splits = grow & small, grow & ~small
        if clone.any():
            set_densities(params, clone, densities_of(params)[clone] / 2)  # both copies carry half the mass
            duplicate(params, optimizers, state, clone)
        splits = torch.cat([splits, torch.zeros(len(params["means"]) - n, dtype=torch.bool, device=splits.device)])
        if splits.any():
            k = int(splits.sum())
            split(params, optimizers, state, splits)  # the 2k children go last
            children = slice(len(params["means"]) - 2 * k, None)
            set_densities(params, children, densities_of(params)[children] * SPLIT_SHRINK**3 / 2)
        prune = self.dead(params, state["by_opacity"], state["by_density"]) | state.pop("pruned")
        prune |= scales_of(params).max(dim=-1).values > self.prune_scale3d * state["extent"]
        if prune.any() and not prune.all():
            remove(params, optimizers, state, prune)

    def dead(self, params, by_opacity: Tensor, by_density: Tensor) -> Tensor:  # [N] bool
        """Gaussians every judging attribute of which is low (one judged by neither is never dead)."""
        low_opa = opacities_of(params) < self.prune_opa
        dens = densities_of(params)
        peak = dens[by_density].max() if by_density.any() else dens.new_tensor(0.0)
        low_dens = dens < self.prune_density_frac * peak.clamp(min=1e-12)
        judged_any = by_opacity | by_density
        return judged_any & (low_opa | ~by_opacity) & (low_dens | ~by_density)
