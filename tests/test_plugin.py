"""The package registers with nerfstudio and installs nothing generic at the top level."""

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import insideout_ns


def test_entry_points():
    methods = {e.name: e for e in entry_points(group="nerfstudio.method_configs")}
    parsers = {e.name: e for e in entry_points(group="nerfstudio.dataparser_configs")}
    assert {"insideout", "insideout-lite"} <= set(methods) and "insideout-data" in parsers
    assert methods["insideout"].load().config.method_name == "insideout"
    assert parsers["insideout-data"].load().config.__class__.__name__ == "InsideOutDataParserConfig"


def test_ns_train_help_lists_the_methods():
    # beside this interpreter in a virtual environment; on PATH where the package went in with --target
    beside = Path(sys.executable).parent / "ns-train"
    ns_train = str(beside) if beside.exists() else shutil.which("ns-train")
    assert ns_train, "no ns-train beside the interpreter or on PATH: is nerfstudio installed?"
    out = subprocess.run([ns_train, "--help"], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "insideout" in out.stdout and "insideout-lite" in out.stdout


def test_no_generic_top_level_packages():
    import importlib.util

    for name in ("kernels", "dataparsers"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" not in str(spec.origin), spec
    assert Path(insideout_ns.__file__).parent.name == "insideout_ns"
    from insideout_ns.kernels import xray  # noqa: F401  (mapped under insideout_ns)
    from insideout_ns.dataparsers import dataparser  # noqa: F401


def test_every_config_field_is_documented():
    """`ns-train insideout --help` shows a line for every field of ours (tyro reads the docstrings)."""
    import inspect

    from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
    from insideout_ns.datamanager import InsideOutDataManagerConfig
    from insideout_ns.model import AblationConfig, AlignmentConfig, InsideOutModelConfig, NoMasksConfig, XrayConfig
    from insideout_ns.strategy import InsideOutStrategy

    for cls in (InsideOutModelConfig, XrayConfig, AlignmentConfig, NoMasksConfig, AblationConfig, InsideOutStrategy,
                InsideOutDataManagerConfig, InsideOutDataParserConfig):
        source = inspect.getsource(cls)
        own = [name for name in cls.__dict__.get("__annotations__", {}) if name != "_target"]
        assert own
        for name in own:
            after = source.split(f"    {name}:", 1)[1].split("\n", 2)
            assert after[1].strip().startswith('"""'), f"{cls.__name__}.{name} has no docstring"


def test_a_renamed_flag_still_works_with_a_warning():
    """Flags users typed before the model's config was nested (README until 2026-12) keep working for one release."""
    import pytest

    from insideout_ns.model import InsideOutModelConfig

    with pytest.warns(FutureWarning, match="--pipeline.model.clear-air is now --pipeline.model.no-masks.clear-air"):
        config = InsideOutModelConfig(clear_air=False, alignment_candidate=2)
    assert config.no_masks.clear_air is False and config.alignment.candidate == 2 and config.clear_air is None


def test_cpu_preset_picks_the_cpu_and_the_gpu_preset_says_what_to_pass(tmp_path):
    import pytest
    import torch

    from insideout_ns.method_configs import insideout_lite_method, insideout_method, scaled

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: both presets run as they are")
    assert insideout_lite_method.config.machine.device_type == "cpu"
    config = scaled(insideout_method)
    config.output_dir = tmp_path
    with pytest.raises(SystemExit, match="no CUDA GPU.*--machine.device-type cpu"):
        config.setup(local_rank=0, world_size=1)


def test_scaled_moves_the_phases_and_the_radiative_budget_with_the_run():
    from insideout_ns.method_configs import insideout_lite_method, scaled

    preset = insideout_lite_method.config
    start = preset.pipeline.datamanager.num_radiative_points
    config = scaled(insideout_lite_method, steps=300, radiative_points=start + 40_000)
    assert config.max_num_iterations == 300
    assert config.pipeline.model.phase1_steps == round(preset.pipeline.model.phase1_steps * 300 / preset.max_num_iterations)
    assert config.pipeline.model.strategy.max_gaussians == preset.pipeline.model.strategy.max_gaussians + 40_000
    assert config.pipeline.datamanager.num_radiative_points == start + 40_000
    assert preset.pipeline.datamanager.num_radiative_points == start  # the preset itself untouched
