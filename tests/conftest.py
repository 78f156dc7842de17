"""Shared fixtures: small generated scenes (cached per session) and the real data shipped in data/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from insideout_ns.dataparsers.synth.generate import SceneOptions, generate_scene
from insideout_ns.kernels._backend import BackendUnavailable, load_extension
from insideout_ns.dataparsers.synth.phantom import preset
from run_helpers import DEVICE, config_for, run

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def data_file(rel: str) -> Path:
    """A file of the repository's real data (data/README.md)."""
    path = DATA / rel
    if not path.is_file():
        pytest.fail(f"{path} is missing from the repository (data/README.md lists what belongs there)")
    return path


def tiny_options(**kw) -> SceneOptions:
    base = dict(rgb_views=6, xray_views=9, rgb_res=32, xray_res=24, seed=3)
    base.update(kw)
    return SceneOptions(**base)


@pytest.fixture(scope="session")
def scene_factory(tmp_path_factory):
    """make(name, preset, **options) -> scene path; each distinct request is generated once."""
    cache = {}

    def make(preset_name: str = "doll", volume_res: int = 16, **kw) -> Path:
        key = (preset_name, volume_res, tuple(sorted(kw.items())))
        if key not in cache:
            obj = preset(preset_name)
            obj.volume_res = volume_res
            cache[key] = generate_scene(obj, tmp_path_factory.mktemp(preset_name), tiny_options(**kw))
        return cache[key]

    return make


@pytest.fixture
def scene(scene_factory, tmp_path):
    """A private copy of the small doll scene, for tests that edit or break it."""
    dst = tmp_path / "scene"
    shutil.copytree(scene_factory("doll"), dst)
    return dst


@pytest.fixture(scope="session")
def cpu_kernels():
    """The C++ CPU kernels; a build failure fails the test (CI always has a compiler)."""
    try:
        return load_extension("cpu")
    except BackendUnavailable as err:
        pytest.fail(f"the C++ CPU kernels must build: {err}")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A box phantom trained through all three phases (240 steps, 48 px): (scene, config, trainer, metrics before)."""
    root = tmp_path_factory.mktemp("e2e")
    scene = generate_scene(preset("box"), root / "scene", SceneOptions(rgb_views=24, xray_views=24, rgb_res=48,
                                                                       xray_res=48, seed=5))
    config = config_for(scene, root / "runs")
    # metrics before training, from a fresh pipeline
    fresh = config.pipeline.setup(device=DEVICE, test_mode="val")
    before = fresh.get_average_eval_image_metrics()
    trainer = run(config)
    return scene, config, trainer, before


@pytest.fixture
def one_support_threshold(monkeypatch):
    """The alignment tries the default X-ray support threshold only (merge.fitted_support runs a global search
    for each of init_points.SUPPORT_FRACTIONS, 15 s each): for tests of what follows the threshold's choice,
    on phantoms whose sharp supports tie at every threshold and keep the default (measured)."""
    from insideout_ns import merge
    from insideout_ns.init_points import SUPPORT_FRACTION

    monkeypatch.setattr(merge, "SUPPORT_FRACTIONS", (SUPPORT_FRACTION,))

