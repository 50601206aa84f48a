"""How long the ablation study of ``conf/base/parameters_ablation_cityscapes.yml`` takes on this machine,
estimated from a measured training step of each of its models and a measured evaluation of an image.

Each model of the study (A, B, C, D, Dgt) takes ``--steps`` timed training steps (after ``--warmup``) on
generated street scenes of the study's size, with its base configuration (amp, detection cap, batch). The
weights are freshly initialised, whose detector scores little above ``box_score_thresh``: a trained model
brings more detections to the panoptic head, so the figure is a lower bound for the panoptic part (the
demo's trained model steps at ~1.4 s with the same model, bf16 and cap). ``--upper-bound`` sets
``box_score_thresh: 0`` and ``panoptic_min_score: 0``: every image then brings the detector's maximum of
(meaningless, large, overlapping) detections, far above a trained model's cost (4-13 s a step here).
On a shared machine a step's wall time includes the neighbours': the table gives the best wall time and
the process's CPU time divided by its threads (an idle machine with perfect threading, a lower bound);
the estimate uses the wall time::

    sum over models and seeds of (iterations * step_s + train_overhead_s)
      + sum over rows and seeds of (val_images * eval_s + eval_overhead_s)

``train_overhead_s`` / ``eval_overhead_s`` (bundle, MLflow model logging, reports; defaults from the tiny
tests) are arguments. Run: ``.venv/bin/python benchmarks/ablation_cost.py [--seeds N] [--iterations N]``;
prints a table and, last, one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from unipan_pipeline import ablation
from unipan_pipeline.data import PanopticDataset, PanopticTransform, TransformConfig, collate_panoptic
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.experiment.train import eval_transform
from unipan_pipeline.model import ModelConfig, build_model
from unipan_pipeline.synthetic import generate_cityscapes_tree
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.precision import Autocast
from unipan_pipeline.training.schedule import build_optimizer
from unipan_pipeline.training.trainer import seed_everything

ROOT = Path(__file__).resolve().parents[1]
UPPER_BOUND = {"box_score_thresh": 0.0, "panoptic_min_score": 0.0}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=6, help="timed evaluation images per inference")
    p.add_argument("--seeds", type=int, default=None, help="default: the study's")
    p.add_argument("--iterations", type=int, default=None, help="default: the study's")
    p.add_argument("--val-images", type=int, default=None, help="default: the generated val split's")
    p.add_argument("--train-overhead-s", type=float, default=20.0)
    p.add_argument("--eval-overhead-s", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--upper-bound", action="store_true", help="every image brings the most detections")
    return p.parse_args()


def _data(study: dict[str, Any], gen: dict[str, Any], n: int, tmp: Path) -> tuple[Any, Any, Any]:
    raw = tmp / "raw"
    generate_cityscapes_tree(
        raw, {"train": n, "val": 2}, gen["height"], gen["width"], seed=1, scene=gen["scene"], progress=False
    )
    ingest_cityscapes(raw, tmp / "ingested", ["train", "val"], source="synthetic")
    base = study["base"]
    train_tf = PanopticTransform(TransformConfig.from_params(dict(base["augment"]), train=True))
    train = PanopticDataset(tmp / "ingested", "train", None, train_tf)
    val = PanopticDataset(tmp / "ingested", "val", None, eval_transform(base["augment_eval"]))
    return train, val, train.categories


def main() -> int:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    conf = yaml.safe_load((ROOT / "conf/base/parameters_ablation_cityscapes.yml").read_text())
    study = conf["ablation_cityscapes"]
    gen = yaml.safe_load((ROOT / "conf/base/parameters_generate_synthetic.yml").read_text())[
        "generate_synthetic"
    ]
    seeds = args.seeds or len(ablation.study_seeds(study))
    trainer = {**study["base"]["trainer"], "seed": 0}
    iterations = args.iterations or int(trainer["iterations"])
    val_images = args.val_images or int(gen["splits"]["val"])
    batch = int(trainer["images_per_batch"])
    with tempfile.TemporaryDirectory() as tmp:
        train_ds, val_ds, categories = _data(study, gen, batch * (args.steps + args.warmup), Path(tmp))
        torch.manual_seed(0)
        items = [train_ds[i] for i in range(len(train_ds))]
        batches = [collate_panoptic(items[i : i + batch]) for i in range(0, len(items), batch)]
        val_images_t = [val_ds[i % len(val_ds)][0] for i in range(args.eval_images)]
    cfg = TrainerConfig.from_dict(trainer)
    bound = UPPER_BOUND if args.upper_bound else {}
    step_s: dict[str, float] = {}
    for model in ablation.study_models(study):
        model_cfg = ModelConfig.from_dict({**study["base"]["model"], **study["models"][model], **bound})
        seed_everything(0)
        net = build_model(model_cfg, categories)
        net.train()
        opt, autocast = build_optimizer(net, cfg), Autocast(cfg.amp, torch.device("cpu"))
        times, cpu = [], []
        for k, (images, targets) in enumerate(batches):
            t0, c0 = time.perf_counter(), time.process_time()
            with autocast():
                losses = net(images, targets)
            opt.zero_grad(set_to_none=True)
            sum(v.float() for v in losses.values()).backward()
            opt.step()
            if k >= args.warmup:
                times.append(time.perf_counter() - t0)
                cpu.append((time.process_time() - c0) / torch.get_num_threads())
        step_s[model] = min(times)
        print(
            f"train {model}: {step_s[model]:.3f} s/step (best of {len(times)}; "
            f"CPU / threads {min(cpu):.3f} s)",
            flush=True,
        )
    eval_s: dict[str, float] = {}
    for inference in ("argmax", "heuristic"):
        model_cfg = ModelConfig.from_dict(
            {**study["base"]["model"], **study["models"]["D"], **bound, "inference": inference}
        )
        net = build_model(model_cfg, categories).eval()
        times = []
        with torch.no_grad():
            for image in val_images_t:
                t0 = time.perf_counter()
                net([image])
                times.append(time.perf_counter() - t0)
        eval_s[inference] = sorted(times)[len(times) // 2]
        print(f"evaluate ({inference}): {eval_s[inference]:.3f} s/image (median)", flush=True)
    rows = ablation.study_rows(study)
    train_total = sum(seeds * (iterations * step_s[m] + args.train_overhead_s) for m in step_s)
    eval_total = sum(
        seeds * (val_images * eval_s[study["rows"][r]["inference"]] + args.eval_overhead_s) for r in rows
    )
    total = train_total + eval_total
    print(
        f"\n{len(step_s)} models x {seeds} seeds x {iterations} iterations: {train_total / 60:.1f} min; "
        f"{len(rows)} rows x {seeds} seeds x {val_images} images: {eval_total / 60:.1f} min; "
        f"total {total / 60:.1f} min (threads {torch.get_num_threads()})"
    )
    print(
        json.dumps(
            {
                "step_s": step_s,
                "eval_s_per_image": eval_s,
                "seeds": seeds,
                "iterations": iterations,
                "val_images": val_images,
                "train_min": train_total / 60,
                "eval_min": eval_total / 60,
                "total_min": total / 60,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
