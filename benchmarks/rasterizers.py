"""Rasterizer speed and memory: X-ray (each backend here), RGB (C++ and torch tile compositors; gsplat on CUDA).

    python benchmarks/rasterizers.py                      # the full grid on this machine's backends
    python benchmarks/rasterizers.py --quick              # the CPU goal only: 2e4 Gaussians at 128^2
    python benchmarks/rasterizers.py --device cuda --json out.json   # only the GPU rows

Prints a table and writes JSON: forward and forward+backward milliseconds (median of repeats) and peak
memory (CUDA: max allocated; CPU: growth of the process's peak resident set, a coarse figure).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from insideout_ns.kernels._backend import BackendUnavailable, load_extension
from insideout_ns.kernels.rgb import rasterize_rgb
from insideout_ns.kernels.xray import rasterize_xray


def scene(n: int, n_cams: int, res: int, device: str):
    """Gaussians filling a ball in front of C cameras on a circle (an object as in a lite scene)."""
    g = torch.Generator().manual_seed(0)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g) ** (1 / 3)
    scale = 0.6 / n ** (1 / 3)  # neighbours overlap, as a fitted model's do
    scales = scale * (0.5 + torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    viewmats = []
    for a in torch.linspace(0, 6.28, n_cams + 1)[:-1]:
        c, s = torch.cos(a), torch.sin(a)
        rot = torch.tensor([[c, 0, -s], [0, 1.0, 0], [s, 0, c]])  # rotate about y, look along +z
        view = torch.eye(4)
        view[:3, :3] = rot
        view[:3, 3] = torch.tensor([0, 0, 3.0])
        viewmats.append(view)
    f = res * 1.2
    K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]]).expand(n_cams, 3, 3).contiguous()
    tensors = [means, quats, scales, 0.05 + torch.rand(n, generator=g), torch.stack(viewmats), K,
               torch.rand(n, 3, generator=g)]
    return [t.to(device) for t in tensors]


def peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn, device: str, repeats: int):
    times = []
    for _ in range(repeats + 1):  # the first run warms up (and JIT-compiles)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times[1:])


def run_case(kind: str, backend: str, n: int, res: int, n_cams: int, device: str, repeats: int) -> dict:
    means, quats, scales, vals, viewmats, Ks, colors = scene(n, n_cams, res, device)
    params = [means, quats, scales, vals, colors]

    def render():
        if kind == "xray":
            return rasterize_xray(means, quats, scales, vals, viewmats, Ks, res, res, backend=backend)[0]
        if kind == "rgb-gsplat":
            from gsplat import rasterization

            return rasterization(means, quats, scales, vals, colors, viewmats, Ks, res, res, packed=False)[0]
        return rasterize_rgb(means, quats, scales, vals, colors, viewmats, Ks, res, res, backend=backend)[0]

    def fwd():
        with torch.no_grad():
            render()

    def fwd_bwd():
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        render().sum().backward()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = peak_mb(device)
    row = {"kind": kind, "backend": backend, "N": n, "res": res, "C": n_cams, "device": device,
           "fwd_ms": timed(fwd, device, repeats), "fwd_bwd_ms": timed(fwd_bwd, device, repeats)}
    row["peak_mb"] = peak_mb(device) - (0.0 if device == "cuda" else before)
    row["fwd_bwd_ms_per_view"] = row["fwd_bwd_ms"] / n_cams
    return row


def print_table(cases: list, digits: int = 1) -> None:
    """The rows of a run (benchmarks/rasterizers.json's "cases") as a table."""
    print(f"\n{'kind':<11}{'backend':<8}{'N':>9}{'res':>5}{'C':>3}{'fwd ms':>10}{'fwd+bwd ms':>12}{'per view':>10}{'peak MB':>9}")
    for r in cases:
        head = f"{r['kind']:<11}{r['backend']:<8}{r['N']:>9}{r['res']:>5}{r['C']:>3}"
        if "error" in r:
            print(f"{head}   failed: {r['error'][:60]}")
        else:
            print(f"{head}{r['fwd_ms']:>10.{digits}f}{r['fwd_bwd_ms']:>12.{digits}f}{r['fwd_bwd_ms_per_view']:>10.{digits}f}"
                  f"{r['peak_mb']:>9.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the CPU goal case (2e4 Gaussians, 128^2, 1 view)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/rasterizers.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-n", type=float, default=1e6, help="skip cases above this many Gaussians")
    ap.add_argument("--device", choices=("all", "cpu", "cuda"), default="all", help="run only this device's rows")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = []
    backends = [("xray", "torch", "cpu"), ("rgb", "torch", "cpu")]
    try:
        load_extension("cpu")
        backends[1:1] = [("xray", "cpu", "cpu"), ("rgb", "cpu", "cpu")]
    except BackendUnavailable as err:
        print(f"(skipping the C++ CPU backend: {err})")
    if torch.cuda.is_available():
        backends += [("xray", "cuda", "cuda"), ("xray", "torch", "cuda"), ("rgb-gsplat", "cuda", "cuda")]
        try:
            import gsplat.cuda._backend  # noqa: F401  (gsplat JIT-compiles its kernels here on first use)
        except (ImportError, RuntimeError, OSError) as err:  # not installed, or its JIT build failed
            print(f"(skipping gsplat's RGB rows: {type(err).__name__}: {err})")
            backends.remove(("rgb-gsplat", "cuda", "cuda"))
    backends = [b for b in backends if args.device in ("all", b[2])]
    if args.quick:
        grid = [(20_000, 128, 1)]
    else:
        grid = [(int(n), r, c) for n in (1e4, 1e5, 1e6) for r in (256, 512) for c in (1, 8) if n <= args.max_n]
        grid.insert(0, (20_000, 128, 1))
    for kind, backend, device in backends:
        for n, res, c in grid:
            if (device == "cpu" or backend == "torch") and n * c > 2e5 and not args.quick:
                continue  # CPU and torch-twin runs of 1e6 Gaussians x 8 views take minutes each: not run
            try:
                row = run_case(kind, backend, n, res, c, device, args.repeats)
            except (RuntimeError, MemoryError) as err:  # out of memory is a result, not a crash
                row = {"kind": kind, "backend": backend, "N": n, "res": res, "C": c, "device": device, "error": str(err)[:200]}
            cases.append(row)
            print(" | ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    meta = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "cases": cases}, indent=1))
    print_table(cases)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
