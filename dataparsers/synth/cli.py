"""`insideout-synth`: make paired scenes (analytic phantoms, real CT volumes) and import public X-ray layouts.

    insideout-synth phantom OUT --preset doll
    insideout-synth from-ct data/ct/headsq.mha OUT
    insideout-synth from-ct data/ct/bunny_ct_128.npy.gz OUT --axis-order zyx --spacing 1.35
    insideout-synth import-dxchange data/xray/tooth.h5 OUT
    insideout-synth import-r2gaussian R2_SCENE_DIR OUT
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple

import torch
import tyro
from typing_extensions import Annotated

from ..readers import read_dxchange, read_r2gaussian
from ..scene_writer import write_scene
from ..ct_volume import ct_to_attenuation, read_ct
from .from_ct import CtObject
from .generate import SceneOptions, generate_scene
from .phantom import PRESETS, preset

Options = Annotated[SceneOptions, tyro.conf.arg(name="")]  # flattened: --rgb-views, not --scene.rgb-views


@dataclass
class PhantomCommand:
    """An analytic phantom of ellipsoids: exact X-rays, exact photographs, exact volume."""

    out: tyro.conf.Positional[Path]
    """Scene folder to write."""
    preset: Literal["doll", "box", "fruit", "egg"] = "doll"
    """Which phantom."""
    volume_res: int = 64
    """Voxels per side of the ground-truth volume."""
    scene: Options = field(default_factory=SceneOptions)

    def main(self) -> Path:
        obj = preset(self.preset)
        obj.volume_res = self.volume_res
        return generate_scene(obj, self.out, self.scene)


@dataclass
class FromCtCommand:
    """A scene made from a real CT volume: X-rays by ray marching, photographs of the skin iso-surface."""

    volume: tyro.conf.Positional[Path]
    """CT volume: .npy, .npy.gz, .mha/.mhd, .nii/.nii.gz."""
    out: tyro.conf.Positional[Path]
    """Scene folder to write."""
    spacing: Optional[Tuple[float, float, float]] = None
    """Voxel size along x, y, z in mm (default: the file's; 1 mm for .npy)."""
    axis_order: Literal["xyz", "zyx"] = "xyz"
    """How a .npy array is indexed."""
    intercept: float = -1024.0
    """HU = stored value + intercept."""
    mu_water: float = 0.02
    """Attenuation of water, 1/mm."""
    air_hu: float = -900.0
    """HU below which a voxel is air (attenuation 0); also removes field-of-view masks."""
    skin_hu: float = -400.0
    """HU of the iso-surface photographed as the object's outside."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where rays are marched: auto is the GPU when there is one (photographs at 512^2 take seconds there)."""
    scene: Options = field(default_factory=SceneOptions)

    def main(self) -> Path:
        values, spacing = read_ct(self.volume, self.spacing, self.axis_order)
        mu = ct_to_attenuation(values, self.intercept, self.mu_water, self.air_hu)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        obj = CtObject.centred(mu, spacing, iso=self.mu_water * (1.0 + self.skin_hu / 1000.0), device=device)
        return generate_scene(obj, self.out, self.scene)


@dataclass
class ImportDxchangeCommand:
    """Convert a TomoPy Data Exchange HDF5 scan into an X-ray-only scene."""

    src: tyro.conf.Positional[Path]
    out: tyro.conf.Positional[Path]
    pixel_size: float = 1.0
    """Detector pixel size (the scene's length unit)."""
    rotation_center: Optional[float] = None
    """Column of the rotation axis (TomoPy convention); default the detector's middle."""

    def main(self) -> Path:
        return write_scene(self.out, None, read_dxchange(self.src, self.pixel_size, self.rotation_center))


@dataclass
class ImportR2GaussianCommand:
    """Convert an R2-Gaussian scene folder (meta_data.json) into an X-ray-only scene."""

    src: tyro.conf.Positional[Path]
    out: tyro.conf.Positional[Path]

    def main(self) -> Path:
        return write_scene(self.out, None, read_r2gaussian(self.src))


def entrypoint() -> None:
    cmd = tyro.extras.subcommand_cli_from_dict(
        {
            "phantom": PhantomCommand,
            "from-ct": FromCtCommand,
            "import-dxchange": ImportDxchangeCommand,
            "import-r2gaussian": ImportR2GaussianCommand,
        },
        description=__doc__,
    )
    start = time.perf_counter()
    out = cmd.main()
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")


assert set(PRESETS) == {"doll", "box", "fruit", "egg"}  # the CLI's Literal must list every preset
