"""Every docstring example of the installed package runs and prints what it shows (the modules are imported by
their installed names, `insideout_ns.*`, as a user imports them). Paths in examples are relative to the
repository's root, where the suite runs."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the three top-level folders install as these packages (pyproject's package-dir), which walk_packages cannot
# see through one another
PACKAGES = ("insideout_ns", "insideout_ns.dataparsers", "insideout_ns.dataparsers.synth", "insideout_ns.kernels")
MODULES = sorted({m.name for p in PACKAGES for m in pkgutil.iter_modules(importlib.import_module(p).__path__, p + ".")
                  if not m.ispkg})


def test_the_package_has_examples():
    finder = doctest.DocTestFinder()
    examples = sum(not ex.options.get(doctest.SKIP, False) for name in MODULES
                   for t in finder.find(importlib.import_module(name)) for ex in t.examples)
    assert examples >= 40, examples  # that run (+SKIP ones, which need a trained model, not counted)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.chdir(REPO)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (printed above)"
