"""Densification of dual-attribute Gaussians: gsplat's clone/split/prune operations, with attenuation
conserved and each population judged by its own modality.

- Growth: a Gaussian whose mean image-plane gradient (accumulated over the views of the modalities it
  is rendered in) exceeds `grow_grad2d` is cloned when small and split when large, as in 3DGS.
- Mass: a split or clone must not change the projections. A clone halves the density of both copies; a
  split gives each of the two children (scales / 1.6) the density rho * 1.6^3 / 2, so the children hold the
  parent's mass (R2-Gaussian's halving would lose 88 % of it with the same shrink).
- Pruning: an RGB Gaussian (phase 1) goes when its opacity is below `prune_opa`; a radiative one when its
  density is below `prune_density_frac` of the largest; a joint one (phase 3) only when both are low
  (an invisible Gaussian may still carry interior density). Very large ones go too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from gsplat.strategy.ops import duplicate, remove, split
from torch import Tensor

RGB, RADIATIVE = 0.0, 1.0  # population tags
SPLIT_SHRINK = 1.6  # gsplat's split divides scales by 1.6


def inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x.clamp(min=1e-12)))


@dataclass
class DensifyConfig:
    refine_every: int = 100
    start: int = 200
    stop: int = 10_000
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    """Split (rather than clone) above this fraction of the population's scene extent."""
    prune_opa: float = 0.005
    prune_density_frac: float = 0.002
    prune_scale3d: float = 0.1
    max_gaussians: int = 200_000


class Densifier:
    """Keeps per-Gaussian gradient statistics and applies the clone/split/prune steps."""

    def __init__(self, config: DensifyConfig):
        self.config = config
        self.grad2d: Tensor | None = None  # [N] sum of normalised image-plane gradient norms
        self.count: Tensor | None = None  # [N] how many views saw each Gaussian

    def accumulate(self, info: Dict, n: int, selected: Tensor) -> None:
        """Adds one render's gradients. `selected` [n] bool: which of the n Gaussians were rendered
        (the render saw them in order)."""
        grads = info["means2d"].grad
        if grads is None:
            return
        dev = grads.device
        if self.grad2d is None or len(self.grad2d) != n:
            self.grad2d, self.count = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        g = grads.clone()
        g[..., 0] *= info["width"] / 2.0 * info["n_cameras"]  # gsplat's normalisation to [-1, 1] screens
        g[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = info["radii"] > 0  # [C, M]
        ids = torch.nonzero(selected).squeeze(-1)  # rendered index -> Gaussian index
        cam, local = torch.nonzero(visible, as_tuple=True)
        self.grad2d.index_add_(0, ids[local], g[cam, local].norm(dim=-1))
        self.count.index_add_(0, ids[local], torch.ones_like(local, dtype=torch.float32))

    @torch.no_grad()
    def refine(self, params, optimizers, population: Tensor, extent: Tensor, joint: bool) -> Tensor:
        """One clone/split/prune round; returns the new population tags. `extent` [N]: the scene extent
        of each Gaussian's population (RGB and X-ray frames differ until aligned)."""
        cfg = self.config
        n = len(population)
        if self.grad2d is None or len(self.grad2d) != n:
            return population
        state = {"population": population, "extent": extent}
        avg = self.grad2d / self.count.clamp(min=1)
        scale_max = torch.exp(params["scales"]).max(dim=-1).values
        grow = (avg > cfg.grow_grad2d) & (self.count > 0)
        room = max(cfg.max_gaussians - n, 0)
        if int(grow.sum()) > room:  # the strongest gradients first
            keep = torch.topk(avg * grow, room).indices
            grow = torch.zeros_like(grow).index_fill_(0, keep, True)
        small = scale_max <= cfg.grow_scale3d * extent
        clone, splits = grow & small, grow & ~small
        if clone.any():
            dens = params["densities"]
            halved = inverse_softplus(F.softplus(dens[clone]) / 2)
            dens.data[clone] = halved  # both copies carry half the mass
            duplicate(params, optimizers, state, clone)
        splits = torch.cat([splits, torch.zeros(len(params["means"]) - n, dtype=torch.bool, device=splits.device)])
        if splits.any():
            k = int(splits.sum())
            split(params, optimizers, state, splits)
            child = params["densities"].data[-2 * k :]
            params["densities"].data[-2 * k :] = inverse_softplus(F.softplus(child) * SPLIT_SHRINK**3 / 2)
        population, extent = state["population"], state["extent"]
        opa = torch.sigmoid(params["opacities"])
        dens = F.softplus(params["densities"])
        low_opa = opa < cfg.prune_opa
        low_dens = dens < cfg.prune_density_frac * dens.max().clamp(min=1e-12)
        if joint:
            prune = low_opa & low_dens
        else:
            prune = torch.where(population == RGB, low_opa, low_dens)
        prune |= torch.exp(params["scales"]).max(dim=-1).values > cfg.prune_scale3d * extent
        if prune.any() and not prune.all():
            remove(params, optimizers, state, prune)
        self.grad2d = self.count = None
        return state["population"]
