"""Backend choice: 'auto' falls back to pure torch where a compiled backend cannot build (on a CPU, and
on a GPU without nvcc), says so once, and an unknown name is a clear error."""

import logging

import pytest
import torch

from insideout_ns.kernels import _backend


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_falls_back_to_torch_once_with_one_warning(monkeypatch, caplog, device):
    monkeypatch.setitem(_backend._FAILED, device, f"could not build the '{device}' kernels: (simulated)")
    monkeypatch.delitem(_backend._LOADED, device, raising=False)
    monkeypatch.setattr(_backend, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        picks = [_backend.resolve("auto", torch.device(device)) for _ in range(3)]
    assert picks == ["torch"] * 3
    warnings = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(warnings) == 1 and "simulated" in warnings[0].getMessage()


def test_explicit_backends_that_cannot_run_say_why():
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.resolve("opengl", torch.device("cpu"))
    with pytest.raises(_backend.BackendUnavailable, match="needs CUDA tensors"):
        _backend.resolve("cuda", torch.device("cpu"))
