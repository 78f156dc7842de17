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


def test_lpips_is_switched_off_only_when_its_weights_cannot_be_had(monkeypatch):
    """Offline (an OSError while fetching AlexNet) LPIPS is left out; any other error is a real one."""
    import torchmetrics.image.lpip as lpip

    from insideout_ns import losses

    img = torch.rand(8, 8, 3)
    for error, reported in ((OSError("no network"), None), (ValueError("a bug"), ValueError)):
        def broken(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(lpip, "LearnedPerceptualImagePatchSimilarity", broken)
        monkeypatch.setattr(losses, "_LPIPS", None)
        if reported is None:
            assert losses.lpips_or_none(img, img) is None and losses._LPIPS is False
        else:
            with pytest.raises(reported):
                losses.lpips_or_none(img, img)
