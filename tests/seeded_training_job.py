"""One seeded training of the real network through the training glue, as its own process.

``python tests/seeded_training_job.py --data ROOT --out DIR [--seed S] [--iterations N] [--num-workers W]``
runs :func:`unipan_pipeline.experiment.train_experiment` (the function behind ``kedro run
--pipelines=demo_train`` and every ablation training) on the ingested data set ``ROOT`` with a tiny model,
``trainer.deterministic: true``, a checkpoint after every step in ``DIR/checkpoints`` and the bundle in
``DIR`` (``model.pt``, ``manifest.json``). Rerun with the same arguments, it resumes from the newest
checkpoint, exactly as a rerun of a killed ``kedro run`` does. MLflow logs to ``$MLFLOW_TRACKING_URI``.
Used by ``tests/test_seed_determinism.py``, which starts it in fresh processes (and kills it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kedro_project import TINY_MODEL


def training_params(data: str, out: str, seed: int, iterations: int, num_workers: int) -> dict[str, Any]:
    """A demo-like training namespace (scale jitter, crops, flips, the full model with the affinity),
    tiny enough to train a step in about a second on one core."""
    return {
        "dataset": "cityscapes",
        "ingested_root": data,
        "train_split": "train",
        "val_split": "val",
        "augment": {"base_scale": 1.0, "scale_range": [0.8, 1.25], "crop_size": [64, 128], "hflip_prob": 0.5},
        "augment_eval": {"base_scale": 1.0},
        "model": {**TINY_MODEL, "use_masks": True, "use_affinity": True, "train_end_to_end": True},
        "trainer": {
            "iterations": iterations,
            "images_per_batch": 2,
            "optimizer": "adamw",
            "lr": 0.002,
            "warmup_iters": 1,
            "lr_steps": [],
            "amp": "auto",
            "seed": seed,
            "deterministic": True,
            "num_workers": num_workers,
            "checkpoint_every": 1,
            "keep_last_n": 2,
            "checkpoint_dir": f"{out}/checkpoints",
            "log_every": 1,
            "validate_every": 0,
            "progress_bar": False,
            "device": "cpu",
        },
        "validation": {"max_images": 0},
        "output_dir": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from unipan_pipeline.experiment import train_experiment  # noqa: PLC0415 - after the thread setting

    params = training_params(args.data, args.out, args.seed, args.iterations, args.num_workers)
    train_experiment(params, name="seeded_job")


if __name__ == "__main__":
    main()
