"""The package registers with nerfstudio and installs nothing generic at the top level."""

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
    out = subprocess.run([str(Path(sys.executable).parent / "ns-train"), "--help"], capture_output=True, text=True,
                         timeout=300)
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
