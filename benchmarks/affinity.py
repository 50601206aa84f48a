"""Benchmark of the dense instance affinity head (eq. 3-4): efficient Q(Q^T Psi) vs explicit (QQ^T)Psi.

Usage::

    .venv/bin/python benchmarks/affinity.py                      # CPU, default sizes, < 5 min on 2 cores
    .venv/bin/python benchmarks/affinity.py --device cuda --repeats 10
    .venv/bin/python benchmarks/affinity.py --skip-full-model --sizes 256x512,512x1024

For every input size (image H x W, features at stride 4, C = 128, K = N_st + D = 153) it measures the time
and peak memory of the efficient head (forward under ``no_grad``; forward + backward w.r.t. Q, Psi and the
phi parameters) and, side by side in the same run, of the explicit form that materialises the
``HW x HW`` affinity matrix -- skipped (and said so) when its estimated footprint exceeds
``--explicit-budget-gib`` (estimate: 1 matrix for the forward, 3 matrices for forward + backward: A, dL/dA
and a temporary).

Times are the best of ``--repeats`` calls (median also in the JSON): on a shared machine the minimum is the
least disturbed estimate. Memory measurement:

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory allocated
  before the call (so inputs and parameters are excluded; outputs and autograd buffers are included).
* CPU: peak resident set size (RSS, via ``psutil``) sampled every ~0.5 ms by a background thread during the
  call, minus the RSS right before it. To make RSS follow PyTorch's frees, glibc's ``M_MMAP_THRESHOLD`` is
  pinned to 64 KiB with ``mallopt`` (big tensors are then mmapped and returned to the OS on free); short
  spikes between samples can be missed, so CPU figures are lower bounds (good to ~1 MiB for the efficient
  head).

Full model share: with ``unipan_pipeline.model.build_model`` (ResNet-50-FPN, Mask R-CNN head, Cityscapes
categories, random weights, eval mode) the script times a whole 1024x2048 inference and, by wrapping
``PanopticNetwork.panoptic_logits`` (mask pasting at stride 4 + dynamic potential + affinity), the time spent
in the panoptic submodule inside that same call. It also reports the standalone potential + affinity time at
D = 100 as a fraction of the full model time. ``--skip-full-model`` skips this part; without ``build_model``
the torchvision ResNet-50-FPN Mask R-CNN is used as denominator (and the output says so).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unipan_pipeline.model.dynamic_potential import dynamic_potential
from unipan_pipeline.model.instance_affinity import (
    DenseInstanceAffinity,
    explicit_instance_affinity,
)

MIB = 1024.0**2
GIB = 1024.0**3


def _pin_mmap_threshold() -> bool:
    """Make glibc return large frees to the OS so RSS deltas measure tensor memory (see module docstring)."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024))
    except OSError:
        return False


class _PeakRSS:
    """Context manager sampling this process' RSS in a thread; ``delta_mib`` = peak - RSS at entry."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        self.interval_s = interval_s
        self.proc = psutil.Process()
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> _PeakRSS:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / MIB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Best and median wall time (ms) of ``repeats`` calls after ``warmup``; peak memory of one call (MiB)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    # memory of one call
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        mem = (torch.cuda.max_memory_allocated(device) - base) / MIB
    else:
        with _PeakRSS() as peak:
            fn()
        mem = peak.delta_mib
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    # "ms" is the best of the repeats (timeit practice: the machine may be shared, the minimum is the least
    # disturbed estimate of the intrinsic cost); the median is kept alongside.
    return {"ms": times[0], "ms_median": times[len(times) // 2], "peak_mib": mem}


def _bench_size(
    height: int,
    width: int,
    args: argparse.Namespace,
    device: torch.device,
    budget_bytes: float,
) -> dict[str, Any]:
    h, w = math.ceil(height / args.stride), math.ceil(width / args.stride)
    hw = h * w
    c, k = args.channels, args.k
    torch.manual_seed(0)
    mod = DenseInstanceAffinity(c).to(device)
    q = torch.randn(c, h, w, device=device)
    psi = torch.rand(k, h, w, device=device)

    def eff_fwd() -> None:
        with torch.no_grad():
            mod(q, psi)

    def eff_fwd_bwd() -> None:
        qq = q.detach().requires_grad_(True)
        pp = psi.detach().requires_grad_(True)
        mod.zero_grad(set_to_none=True)
        mod(qq, pp).sum().backward()

    def exp_fwd() -> None:
        with torch.no_grad():
            explicit_instance_affinity(mod, q, psi)

    def exp_fwd_bwd() -> None:
        qq = q.detach().requires_grad_(True)
        pp = psi.detach().requires_grad_(True)
        mod.zero_grad(set_to_none=True)
        explicit_instance_affinity(mod, qq, pp).sum().backward()

    row: dict[str, Any] = {"image": f"{height}x{width}", "grid": f"{h}x{w}", "HW": hw, "C": c, "K": k}
    matrix_bytes = hw * hw * 4
    row["explicit_matrix_gib"] = matrix_bytes / GIB
    row["efficient_fwd"] = measure(eff_fwd, device, args.repeats, args.warmup)
    row["efficient_fwd_bwd"] = measure(eff_fwd_bwd, device, args.repeats, args.warmup)
    for name, fn, factor in (("explicit_fwd", exp_fwd, 1), ("explicit_fwd_bwd", exp_fwd_bwd, 3)):
        need = factor * matrix_bytes
        if need > budget_bytes:
            row[name] = {"skipped": f"needs ~{need / GIB:.1f} GiB > budget {budget_bytes / GIB:.1f} GiB"}
            continue
        row[name] = measure(fn, device, args.explicit_repeats, min(args.warmup, 1))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for kind in ("fwd", "fwd_bwd"):
        e, x = row[f"efficient_{kind}"], row[f"explicit_{kind}"]
        if "ms" in x:
            row[f"speedup_{kind}"] = x["ms"] / e["ms"]
            row[f"memory_ratio_{kind}"] = x["peak_mib"] / max(e["peak_mib"], 1e-3)
    # FLOPs (multiply-adds x 2) of the propagation alone, without the 1x1 convs
    row["gflop_efficient"] = 2 * 2 * hw * c * k / 1e9
    row["gflop_explicit"] = (2 * hw * hw * c + 2 * hw * hw * k) / 1e9
    return row


def _potential_plus_affinity(
    size: tuple[int, int], args: argparse.Namespace, device: torch.device, *, n_stuff: int, n_cls: int, d: int
) -> dict[str, float]:
    """Standalone time of dynamic potential (variant C, masks) + affinity at one image size, D detections."""
    height, width = size
    h, w = math.ceil(height / args.stride), math.ceil(width / args.stride)
    g = torch.Generator(device="cpu").manual_seed(0)
    sem = torch.randn(n_cls, h, w, generator=g).to(device)
    xy = torch.rand(d, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
    wh = torch.rand(d, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) + 8
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    scores = torch.rand(d, generator=g).to(device)
    classes = torch.randint(n_stuff, n_cls, (d,), generator=g).to(device)
    masks = torch.rand(d, h, w, generator=g).to(device)
    q = torch.randn(args.channels, h, w, generator=g).to(device)
    mod = DenseInstanceAffinity(args.channels).to(device)

    def pot() -> None:
        with torch.no_grad():
            dynamic_potential(sem, boxes, scores, classes, masks, n_stuff, "C", args.stride)

    def both() -> None:
        with torch.no_grad():
            mod(q, dynamic_potential(sem, boxes, scores, classes, masks, n_stuff, "C", args.stride))

    return {
        "K": n_stuff + d,
        "potential_ms": measure(pot, device, args.repeats, args.warmup)["ms"],
        "potential_plus_affinity_ms": measure(both, device, args.repeats, args.warmup)["ms"],
    }


def _full_model(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    height, width = 1024, 2048
    out: dict[str, Any] = {"image": f"{height}x{width}"}
    image = torch.randn(3, height, width, device=device)
    try:
        from unipan_pipeline.categories import CategoryMap  # noqa: PLC0415
        from unipan_pipeline.model import ModelConfig, build_model  # noqa: PLC0415
    except ImportError as exc:  # fall back to torchvision's Mask R-CNN as denominator
        from torchvision.models.detection import maskrcnn_resnet50_fpn  # noqa: PLC0415

        out["denominator"] = f"torchvision maskrcnn_resnet50_fpn (build_model unavailable: {exc})"
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=9).to(device).eval()

        def run_tv() -> None:
            with torch.no_grad():
                model([image])

        out["full_model_ms"] = measure(run_tv, device, args.full_model_repeats, args.full_model_warmup)["ms"]
        return out

    categories = CategoryMap.cityscapes()
    cfg = ModelConfig(pretrained="none")
    model = build_model(cfg, categories).to(device).eval()
    out["denominator"] = "unipan_pipeline.model.build_model (ResNet-50-FPN, Mask R-CNN head, random weights)"
    out["num_stuff"] = categories.num_stuff
    inner: list[float] = []
    ks: list[int] = []
    original = model.panoptic_logits

    def timed_panoptic_logits(*a: Any, **kw: Any) -> torch.Tensor:
        _sync(device)
        t0 = time.perf_counter()
        res = original(*a, **kw)
        _sync(device)
        inner.append((time.perf_counter() - t0) * 1000.0)
        ks.append(int(res.shape[0]))
        return res

    model.panoptic_logits = timed_panoptic_logits  # type: ignore[method-assign]

    def run() -> None:
        with torch.no_grad():
            model([image])

    for _ in range(args.full_model_warmup):
        run()
    totals = []
    inner.clear()
    ks.clear()
    for _ in range(args.full_model_repeats):
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        totals.append((time.perf_counter() - t0) * 1000.0)
    out["full_model_ms"] = min(totals)
    out["panoptic_submodule_in_model_ms"] = min(inner) if inner else None
    out["panoptic_K_in_model"] = ks[0] if ks else None
    if inner:
        out["share_in_model"] = out["panoptic_submodule_in_model_ms"] / out["full_model_ms"]
    return out


def _fmt(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    if "skipped" in m:
        return "skipped"
    return f"{m['ms']:9.1f} ms {m['peak_mib']:9.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="256x512,512x1024,800x1300,1024x2048", help="image HxW list")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--channels", type=int, default=128, help="C of Q")
    parser.add_argument("--k", type=int, default=153, help="K = N_st + D channels of Psi")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the efficient head (best-of)")
    parser.add_argument("--explicit-repeats", type=int, default=1, help="timed calls of the explicit form")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--explicit-budget-gib",
        type=float,
        default=None,
        help="memory budget for the explicit HW x HW form (default: 2 GiB on CPU, 80%% of the GPU on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--skip-full-model", action="store_true")
    parser.add_argument("--full-model-repeats", type=int, default=1)
    parser.add_argument("--full-model-warmup", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/affinity.py: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pinned = _pin_mmap_threshold() if device.type == "cpu" else False
    if args.explicit_budget_gib is not None:
        budget = args.explicit_budget_gib * GIB
    elif device.type == "cuda":
        budget = 0.8 * torch.cuda.get_device_properties(device).total_memory
    else:
        budget = 2.0 * GIB
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]

    t_start = time.perf_counter()
    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": psutil.cpu_count(),
        "explicit_budget_gib": budget / GIB,
        "memory_method": "cuda max_memory_allocated delta"
        if device.type == "cuda"
        else f"psutil peak RSS delta (0.5 ms sampling; mmap threshold pinned: {pinned})",
    }
    print(f"# dense instance affinity benchmark on {env['device']} ({env['threads']} threads), {env}")
    header = (
        f"{'image':>10} {'grid':>8} {'A GiB':>6} | {'efficient fwd':>24} | {'efficient fwd+bwd':>24} | "
        f"{'explicit fwd':>24} | {'explicit fwd+bwd':>24} | speedup f / fb"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for height, width in sizes:
        row = _bench_size(height, width, args, device, budget)
        rows.append(row)
        sp = " / ".join(f"{row[k]:.1f}x" if k in row else "-" for k in ("speedup_fwd", "speedup_fwd_bwd"))
        print(
            f"{row['image']:>10} {row['grid']:>8} {row['explicit_matrix_gib']:6.2f} | "
            f"{_fmt(row['efficient_fwd']):>24} | {_fmt(row['efficient_fwd_bwd']):>24} | "
            f"{_fmt(row['explicit_fwd']):>24} | {_fmt(row['explicit_fwd_bwd']):>24} | {sp}",
            flush=True,
        )
    for row in rows:
        for name in ("explicit_fwd", "explicit_fwd_bwd"):
            if "skipped" in row[name]:
                print(f"  {row['image']}: {name} skipped: {row[name]['skipped']}")
        if "memory_ratio_fwd_bwd" in row:
            print(
                f"  {row['image']}: explicit/efficient peak memory fwd {row['memory_ratio_fwd']:.0f}x, "
                f"fwd+bwd {row['memory_ratio_fwd_bwd']:.0f}x; propagation GFLOP efficient "
                f"{row['gflop_efficient']:.2f} vs explicit {row['gflop_explicit']:.1f}"
            )

    result: dict[str, Any] = {"env": env, "affinity": rows}
    if not args.skip_full_model:
        full = _full_model(args, device)
        n_stuff = int(full.get("num_stuff", 11))
        standalone = {
            "cityscapes_K": _potential_plus_affinity(
                (1024, 2048), args, device, n_stuff=n_stuff, n_cls=n_stuff + 8, d=100
            ),
            "coco_K153": _potential_plus_affinity((1024, 2048), args, device, n_stuff=53, n_cls=133, d=100),
        }
        for v in standalone.values():
            v["share_of_full_model"] = v["potential_plus_affinity_ms"] / full["full_model_ms"]
        full["standalone_potential_plus_affinity_D100"] = standalone
        result["full_model"] = full
        print(f"# full model at 1024x2048: {full['denominator']}")
        print(f"  full inference: {full['full_model_ms']:.0f} ms")
        if full.get("panoptic_submodule_in_model_ms") is not None:
            print(
                "  panoptic submodule inside it (mask pasting + potential + affinity, "
                f"K={full['panoptic_K_in_model']}): {full['panoptic_submodule_in_model_ms']:.0f} ms = "
                f"{100 * full['share_in_model']:.1f}%"
            )
        for name, v in standalone.items():
            print(
                f"  standalone potential + affinity, D=100, K={v['K']} ({name}): "
                f"{v['potential_plus_affinity_ms']:.0f} ms (potential alone {v['potential_ms']:.0f} ms) = "
                f"{100 * v['share_of_full_model']:.1f}% of the full model"
            )
    else:
        result["full_model"] = {"skipped": "--skip-full-model"}
    result["wall_s"] = time.perf_counter() - t_start
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
