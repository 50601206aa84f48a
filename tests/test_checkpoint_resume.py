"""Atomic checkpoints and exact resume: 2N steps straight == N steps, (crash), resume to 2N (torch.equal)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from toy_model import ToyModelConfig, ToyPanopticDataset, build_toy_model, collate_lists

from unipan_pipeline.training import CheckpointError, TrainerConfig, load_checkpoint, lr_factor, train
from unipan_pipeline.training.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    find_resume_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    restore_rng_state,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
N = 4  # checkpoint interval; the full run is 2N iterations


def _cfg(ckpt_dir: Path | None, iterations: int, *, shuffle: bool, num_workers: int) -> TrainerConfig:
    # 10 images, batch 4: epochs end in the middle of batches, so the sampler position matters.
    return TrainerConfig(
        iterations=iterations,
        images_per_batch=4,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_iters=3,
        lr_steps=[6],
        grad_clip_norm=1.0,
        seed=7,
        shuffle=shuffle,
        num_workers=num_workers,
        checkpoint_every=N,
        checkpoint_dir=None if ckpt_dir is None else str(ckpt_dir),
        keep_last_n=5,
        log_every=1,
        progress_bar=False,
        device="cpu",
    )


def _model(init_seed: int) -> torch.nn.Module:
    torch.manual_seed(init_seed)
    # dropout makes the result depend on the restored torch RNG; the data set draws random augmentations
    return build_toy_model(ToyModelConfig(width=4, dropout=0.3), ToyPanopticDataset(1).categories)


def _dataset() -> ToyPanopticDataset:
    return ToyPanopticDataset(10, 10, 10, seed=1, augment=True)


class _CrashAfter:
    """Logger that kills the run when it is told about step ``at`` (after the checkpoint at N was written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step == self.at:
            raise KeyboardInterrupt(f"simulated kill at step {step}")


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"parameter {k} differs after resume"


@pytest.mark.parametrize(("shuffle", "num_workers"), [(False, 0), (True, 0), (True, 2)])
def test_resume_gives_identical_weights(tmp_path: Path, shuffle: bool, num_workers: int) -> None:
    straight = _model(0)
    ref = train(
        straight,
        _dataset(),
        _cfg(None, 2 * N, shuffle=shuffle, num_workers=num_workers),
        collate_fn=collate_lists,
    )

    ckpt_dir = tmp_path / "ck"
    first = _model(0)
    with pytest.raises(KeyboardInterrupt):
        train(
            first,
            _dataset(),
            _cfg(ckpt_dir, 2 * N, shuffle=shuffle, num_workers=num_workers),
            collate_fn=collate_lists,
            logger=_CrashAfter(N + 2),
        )
    assert [i for i, _ in list_checkpoints(ckpt_dir)] == [N]

    # a new trainer with a differently initialised model and a disturbed global RNG picks up at N
    torch.manual_seed(12345)
    resumed = _model(99)
    res = train(
        resumed,
        _dataset(),
        _cfg(ckpt_dir, 2 * N, shuffle=shuffle, num_workers=num_workers),
        collate_fn=collate_lists,
    )
    assert res.start_iteration == N and res.iteration == 2 * N
    assert res.resumed_from is not None and res.resumed_from.endswith(f"ckpt_{N:08d}.pt")
    _assert_same_params(straight, resumed)
    # and the logged losses of the resumed steps are those of the straight run
    assert [h["train/loss"] for h in res.history] == [h["train/loss"] for h in ref.history[N:]]


def test_extending_a_finished_run_matches_a_longer_run(tmp_path: Path) -> None:
    straight = _model(0)
    train(straight, _dataset(), _cfg(None, 2 * N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    part = _model(0)
    r1 = train(part, _dataset(), _cfg(tmp_path, N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    assert r1.final_checkpoint is not None and load_checkpoint(r1.final_checkpoint)["kind"] == "final"
    cont = _model(1)
    train(cont, _dataset(), _cfg(tmp_path, 2 * N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    _assert_same_params(straight, cont)
    # a rerun of a finished job does nothing
    again = _model(2)
    r3 = train(
        again, _dataset(), _cfg(tmp_path, 2 * N, shuffle=True, num_workers=0), collate_fn=collate_lists
    )
    assert r3.start_iteration == r3.iteration == 2 * N
    _assert_same_params(straight, again)


def test_resume_in_a_fresh_process(tmp_path: Path) -> None:
    """Kill-and-rerun across processes: a new python process resumes from this process's checkpoint."""
    with pytest.raises(KeyboardInterrupt):
        train(
            _model(0),
            _dataset(),
            _cfg(tmp_path / "ck", 2 * N, shuffle=True, num_workers=0),
            collate_fn=collate_lists,
            logger=_CrashAfter(N + 1),
        )
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_checkpoint_resume import _cfg, _model, _dataset, N
        from unipan_pipeline.training import train
        from toy_model import collate_lists
        torch.set_num_threads(1)
        model = _model(42)
        res = train(model, _dataset(), _cfg({str(tmp_path / "ck")!r}, 2 * N, shuffle=True, num_workers=0),
                    collate_fn=collate_lists)
        assert res.start_iteration == N, res
        torch.save(model.state_dict(), {str(tmp_path / "final.pt")!r})
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    straight = _model(0)
    train(straight, _dataset(), _cfg(None, 2 * N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    resumed = _model(0)
    resumed.load_state_dict(torch.load(tmp_path / "final.pt", weights_only=True))
    _assert_same_params(straight, resumed)


# ------------------------------------------------------------------------------------------------ files
def test_checkpoint_contents(tmp_path: Path) -> None:
    model = _model(0)
    train(model, _dataset(), _cfg(tmp_path, N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    ck = load_checkpoint(tmp_path / f"ckpt_{N:08d}.pt")
    assert set(ck) >= {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "sampler",
        "iteration",
        "config",
        "world_size",
        "kind",
    }
    assert ck["iteration"] == N and ck["world_size"] == 1 and len(ck["rng"]) == 1
    assert set(ck["rng"][0]) >= {"python", "numpy", "torch"}
    assert ck["sampler"] == {
        "seed": 7,
        "shuffle": True,
        "dataset_size": 10,
        "global_batch": 4,
        "consumed": 4 * N,
        "epoch": 1,
        "position": 6,
    }
    assert ck["scheduler"]["last_epoch"] == N
    assert any("momentum_buffer" in s for s in ck["optimizer"]["state"].values())
    assert TrainerConfig.from_dict(ck["config"]).iterations == N
    json.dumps(ck["config"])


def test_atomic_save_and_pruning(tmp_path: Path) -> None:
    for it in (2, 4, 6, 8):
        atomic_torch_save({"format": 1, "iteration": it, "model": {}}, tmp_path / f"ckpt_{it:08d}.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert [p.name for p in prune_checkpoints(tmp_path, 2)] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert [i for i, _ in list_checkpoints(tmp_path)] == [6, 8]

    class Boom:
        def __reduce__(self) -> Any:
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"x": Boom()}, tmp_path / "ckpt_00000010.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000006.pt", "ckpt_00000008.pt"]


def test_corrupt_latest_checkpoint_falls_back(tmp_path: Path) -> None:
    atomic_torch_save({"format": 1, "iteration": 4, "model": {}}, tmp_path / "ckpt_00000004.pt")
    (tmp_path / "ckpt_00000008.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"ckpt_00000008\.pt: cannot read checkpoint"):
        load_checkpoint(tmp_path / "ckpt_00000008.pt")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        found = find_resume_checkpoint(tmp_path)
    assert found is not None and found[1]["iteration"] == 4
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a unipan training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_wrong_model_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    train(_model(0), _dataset(), _cfg(tmp_path, 2, shuffle=True, num_workers=0), collate_fn=collate_lists)
    other = build_toy_model(ToyModelConfig(width=6), _dataset().categories)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        train(other, _dataset(), _cfg(tmp_path, 4, shuffle=True, num_workers=0), collate_fn=collate_lists)


def test_rng_state_roundtrip() -> None:
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_resume_follows_the_current_schedule(tmp_path: Path) -> None:
    """The schedule is a function of (config, iteration): a resumed run with another lr / steps uses them."""
    train(_model(0), _dataset(), _cfg(tmp_path, N, shuffle=True, num_workers=0), collate_fn=collate_lists)
    changed = _cfg(tmp_path, 2 * N, shuffle=True, num_workers=0)
    changed.lr, changed.lr_steps = 0.2, [N + 2]
    res = train(_model(0), _dataset(), changed, collate_fn=collate_lists)
    assert res.start_iteration == N
    lrs = [h["train/lr"] for h in res.history]
    expected = [
        0.2 * lr_factor(t, warmup_iters=3, warmup_factor=changed.warmup_factor, lr_steps=[N + 2], gamma=0.1)
        for t in range(N, 2 * N)
    ]
    assert lrs == pytest.approx(expected)
    assert load_checkpoint(tmp_path / f"ckpt_{2 * N:08d}.pt")["scheduler"]["base_lrs"] == [0.2, 0.2]


def test_checkpoint_with_a_scheduler_at_another_step_is_refused(tmp_path: Path) -> None:
    train(_model(0), _dataset(), _cfg(tmp_path, 2, shuffle=True, num_workers=0), collate_fn=collate_lists)
    path = tmp_path / "ckpt_00000002.pt"
    ck = load_checkpoint(path)
    ck["scheduler"]["last_epoch"] = 5
    atomic_torch_save(ck, path)
    with pytest.raises(
        CheckpointError, match=r"ckpt_00000002\.pt: scheduler at step 5, checkpoint at iteration 2"
    ):
        train(_model(0), _dataset(), _cfg(tmp_path, 4, shuffle=True, num_workers=0), collate_fn=collate_lists)
