"""Data-loader throughput vs. training-step time, side by side.

Answers "is training input-bound?": images/s the DataLoader delivers on its own (for several worker counts)
next to images/s of forward + backward + optimiser step on already-loaded batches. If the loader is slower
than the step, add workers / cache the data set.

Defaults run on the toy model and data set of the tests (``tests/toy_model.py``); point it at the real
ones with import paths::

    .venv/bin/python benchmarks/loader_throughput.py \\
        --dataset-factory unipan_pipeline.data.dataset:PanopticDataset \\
        --dataset-kwargs '{"root": "data/03_primary/cityscapes", "split": "train"}' \\
        --collate unipan_pipeline.data.dataset:collate_panoptic \\
        --model-factory unipan_pipeline.model:build_model --model-config conf/model.json \\
        --categories data/03_primary/cityscapes/categories.json --batch 4 --workers 0 2 4

Figures are printed (and written as JSON with ``--out``); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.devices import resolve_device
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.factories import resolve_import_path
from unipan_pipeline.training.loader import to_device
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset, worker_init_fn
from unipan_pipeline.training.schedule import build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # toy_model, the default


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-factory", default="toy_model:build_toy_dataset")
    p.add_argument("--dataset-kwargs", default="{}", help="JSON kwargs of the dataset factory")
    p.add_argument("--collate", default="toy_model:collate_lists")
    p.add_argument(
        "--model-factory",
        default="toy_model:build_toy_model_default",
        help="zero-argument factory, or build_model(cfg, categories) when --model-config is given",
    )
    p.add_argument("--config-factory", default="unipan_pipeline.model:ModelConfig.from_dict")
    p.add_argument("--model-config", default=None, help="JSON/YAML file of the model config")
    p.add_argument("--categories", default=None, help="categories.json (CategoryMap.save output)")
    p.add_argument("--batch", type=int, default=4, help="images per step")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args()


def _load_mapping(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yml", ".yaml")):
        import yaml  # noqa: PLC0415 - only for YAML configs

        return dict(yaml.safe_load(text))
    return dict(json.loads(text))


def _build_model(args: argparse.Namespace) -> torch.nn.Module:
    factory = resolve_import_path(args.model_factory)
    if args.model_config is None:
        return factory()
    if args.categories is None:
        raise SystemExit("--model-config needs --categories")
    cfg = resolve_import_path(args.config_factory)(_load_mapping(args.model_config))
    return factory(cfg, CategoryMap.load(args.categories))


def _loader(dataset: Any, collate: Any, batch: int, workers: int) -> DataLoader:
    sampler = InfiniteShardedSampler(len(dataset), batch, seed=0, shuffle=True)
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn,
        persistent_workers=False,
    )


def loader_throughput(
    dataset: Any, collate: Any, batch: int, workers: int, n_batches: int
) -> dict[str, float]:
    """Images/s of the DataLoader alone (first batch, incl. worker start-up, reported separately)."""
    t0 = time.perf_counter()
    it = iter(_loader(dataset, collate, batch, workers))
    next(it)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    dt = time.perf_counter() - t1
    del it
    return {"workers": workers, "first_batch_s": first, "images_per_s": n_batches * batch / dt}


def step_throughput(
    model: torch.nn.Module, dataset: Any, collate: Any, args: argparse.Namespace
) -> dict[str, float]:
    """Images/s of forward + backward + SGD step on pre-loaded batches (no data loading in the timing)."""
    device = resolve_device(args.device)
    model.to(device).train()
    cfg = TrainerConfig(iterations=1, images_per_batch=args.batch, lr=1e-4, warmup_iters=0)
    opt = build_optimizer(model, cfg)
    it = iter(_loader(dataset, collate, args.batch, 0))
    batches = [to_device(next(it), device, False) for _ in range(min(args.steps + args.warmup, 8))]
    use_amp = args.amp != "off" and device.type == "cuda"
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    times = []
    for i in range(args.steps + args.warmup):
        images, targets = batches[i % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    return {"device": str(device), "step_s": mean, "images_per_s": args.batch / mean}


def main() -> int:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = resolve_import_path(args.dataset_factory)(**json.loads(args.dataset_kwargs))
    collate = resolve_import_path(args.collate)
    model = _build_model(args)
    print(f"data set: {args.dataset_factory} ({len(dataset)} images); model: {args.model_factory}")
    print(f"batch {args.batch}, torch threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}")
    loads = [loader_throughput(dataset, collate, args.batch, w, args.loader_batches) for w in args.workers]
    step = step_throughput(model, dataset, collate, args)
    print(f"{'':24s}{'images/s':>12s}{'first batch s':>16s}")
    for r in loads:
        name = f"loader, {r['workers']} workers"
        print(f"{name:24s}{r['images_per_s']:12.1f}{r['first_batch_s']:16.2f}")
    print(
        f"{'train step (' + step['device'] + ')':24s}{step['images_per_s']:12.1f}{'':16s}"
        f"  ({step['step_s'] * 1000:.1f} ms/step)"
    )
    best = max(loads, key=lambda r: r["images_per_s"])
    verdict = "input-bound" if best["images_per_s"] < step["images_per_s"] else "compute-bound"
    print(
        f"-> {verdict}: best loader {best['images_per_s']:.1f} img/s vs step {step['images_per_s']:.1f} img/s"
    )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as fh:
            json.dump({"loader": loads, "step": step, "verdict": verdict}, fh, indent=2)
        os.replace(fh.name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
