"""The one set of Gaussians the model, the strategy, the merge and the exports share: raw parameters (what
the optimizers step), population tags, and the activations that turn them into scales, opacities and
densities, written once here.

Raw parameters (gsplat's and splatfacto's convention): `means` [N, 3], `quats` [N, 4] (w, x, y, z, not
normalised), `scales` [N, 3] as logs, `opacities` [N] as logits, `features_dc` [N, 3] and `features_rest`
[N, K-1, 3] as spherical-harmonic coefficients, and the radiative attribute `densities` [N] through softplus
(attenuation per unit length of the frame the Gaussian lives in).

Example:
    >>> import torch
    >>> from insideout_ns.gaussians import GaussianSet, RADIATIVE
    >>> from insideout_ns.init_points import StartingData
    >>> start = StartingData(radiative=(torch.zeros(2, 3), torch.full((2,), 0.1), torch.tensor([2.0, 0.5])))
    >>> g = GaussianSet.from_start(start, rgb=False, xray=True, sh_degree=1)
    >>> len(g), g.densities().tolist(), g.sh().shape, bool(g.of(RADIATIVE).all())
    (2, [2.0, 0.5], torch.Size([2, 4, 3]), True)
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from scipy.spatial import cKDTree
from torch.nn import Parameter

from .init_points import StartingData
from .kernels.rgb import SH_C0
from .transforms import transform_gaussians

RGB, RADIATIVE = 0.0, 1.0  # population tags
PARAM_KEYS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities", "densities")


def inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x.clamp(min=1e-12)))


def unit_mass(scales: Tensor) -> Tensor:  # [..., 3] -> [...]
    """The integral over space of a Gaussian of density 1 with these scales: (2 pi)^(3/2) s_x s_y s_z."""
    return (2 * math.pi) ** 1.5 * scales.prod(-1)


# The activations, on a mapping of raw parameters (gsplat's strategies and ops take such a dict)
def scales_of(params: Mapping[str, Tensor]) -> Tensor:  # [N, 3]
    return torch.exp(params["scales"])


def opacities_of(params: Mapping[str, Tensor]) -> Tensor:  # [N]
    return torch.sigmoid(params["opacities"])


def densities_of(params: Mapping[str, Tensor]) -> Tensor:  # [N]
    return F.softplus(params["densities"])


def set_densities(params: Mapping[str, Tensor], where, values: Tensor) -> None:
    """Writes activated densities [M] at `where` (an index or a mask) into the raw parameter, in place."""
    params["densities"].data[where] = inverse_softplus(values)


class GaussianSet(torch.nn.Module):
    """Parameters (`params`, a ParameterDict whose entries the optimizers hold) and population tags
    (`population` [N]: RGB or RADIATIVE, where the Gaussian started); the accessors take an optional selection
    sel [N] (bool or indices) and return activated values."""

    def __init__(self, params: Dict[str, Tensor], population: Tensor):
        super().__init__()
        assert set(params) == set(PARAM_KEYS), sorted(params)
        n = len(population)
        assert all(v.shape[0] == n for v in params.values()), {k: tuple(v.shape) for k, v in params.items()}
        self.params = torch.nn.ParameterDict({k: Parameter(v) for k, v in params.items()})
        self.register_buffer("population", population)

    @classmethod
    def from_start(cls, start: StartingData, rgb: bool, xray: bool, sh_degree: int) -> "GaussianSet":
        """The starting set: RGB points (isotropic, scale the mean distance to their 3 nearest neighbours, density
        ~0) and the radiative population (its scales and densities), opacity 0.1, random rotations and colours."""
        means, pop, dens, scales = [], [], [], []
        if rgb:
            pts = start.rgb_points
            nn = cKDTree(pts.numpy()).query(pts.numpy(), k=4)[0][:, 1:].mean(1)  # mean distance to 3 neighbours
            means.append(pts)
            scales.append(torch.log(torch.from_numpy(nn).float().clamp(min=1e-6)))
            pop.append(torch.full((len(pts),), RGB))
            dens.append(torch.full((len(pts),), 1e-6))
        if xray:
            m, s, d = start.radiative
            means.append(m)
            scales.append(torch.log(s))
            pop.append(torch.full((len(m),), RADIATIVE))
            dens.append(d)
        means = torch.cat(means).float()
        n = len(means)
        return cls({
            "means": means,
            "scales": torch.cat(scales).float()[:, None].repeat(1, 3),
            "quats": F.normalize(torch.randn(n, 4), dim=-1),
            "features_dc": (torch.rand(n, 3) - 0.5) / SH_C0 * 0.5,
            "features_rest": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3),
            "opacities": torch.logit(torch.full((n,), 0.1)),
            "densities": inverse_softplus(torch.cat(dens).float()),
        }, torch.cat(pop))

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    def resize(self, n: int) -> None:
        """Every per-Gaussian tensor to n rows (zeros), in place: the Parameters stay the objects the optimizers
        hold (a checkpoint's count is loaded into them)."""
        for p in self.params.values():
            p.data = p.data.new_zeros((n,) + p.shape[1:])
        self.population = self.population.new_zeros(n)

    def _pick(self, x: Tensor, sel: Optional[Tensor]) -> Tensor:
        return x if sel is None else x[sel]

    def means(self, sel: Optional[Tensor] = None) -> Tensor:  # [M, 3]
        return self._pick(self.params["means"], sel)

    def quats(self, sel: Optional[Tensor] = None) -> Tensor:  # [M, 4]
        return self._pick(self.params["quats"], sel)

    def scales(self, sel: Optional[Tensor] = None) -> Tensor:  # [M, 3]
        return torch.exp(self._pick(self.params["scales"], sel))

    def opacities(self, sel: Optional[Tensor] = None) -> Tensor:  # [M]
        return torch.sigmoid(self._pick(self.params["opacities"], sel))

    def densities(self, sel: Optional[Tensor] = None) -> Tensor:  # [M]
        return F.softplus(self._pick(self.params["densities"], sel))

    def sh(self, sel: Optional[Tensor] = None) -> Tensor:  # [M, K, 3]
        return torch.cat([self._pick(self.params["features_dc"], sel)[:, None], self._pick(self.params["features_rest"], sel)], 1)

    def geometry(self, sel: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:  # [M, 3], [M, 4], [M, 3]
        return self.means(sel), self.quats(sel), self.scales(sel)

    def base_colours(self) -> Tensor:  # [N, 3] in [0, 1]
        """The view-independent colour (degree 0 of the SH)."""
        return (SH_C0 * self.params["features_dc"] + 0.5).clamp(0, 1)

    def of(self, population: float) -> Tensor:  # [N] bool
        return self.population == population

    @torch.no_grad()
    def move(self, selected: Tensor, matrix: Tensor) -> None:
        """Moves the selected Gaussians [N] bool by the similarity matrix [4, 4] in place (attenuation scales by 1/s)."""
        m, q, s, d = transform_gaussians(matrix.to(self.params["means"]), *self.geometry(selected), self.densities(selected))
        p = self.params
        p["means"].data[selected], p["quats"].data[selected], p["scales"].data[selected] = m, q, torch.log(s)
        set_densities(p, selected, d)

    def transformed(self, matrix: Tensor, sel: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Means [M, 3], quaternions [M, 4], scales [M, 3] and densities [M] of the selected Gaussians moved by the
        similarity matrix [4, 4] (not in place)."""
        return transform_gaussians(matrix, *self.geometry(sel), self.densities(sel))
