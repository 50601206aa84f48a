"""DDP via torch's elastic launcher (what torchrun uses): 2 CPU processes == 1 process, same global batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from toy_model import ToyModelConfig, ToyPanopticDataset, build_toy_model, collate_lists

from unipan_pipeline.training import TrainerConfig, load_checkpoint, train
from unipan_pipeline.training import distributed as dist_utils

torch.set_num_threads(1)


def _cfg(num_processes: int, ckpt: Path | None = None) -> TrainerConfig:
    return TrainerConfig(
        iterations=6,
        images_per_batch=4,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_iters=2,
        lr_steps=[4],
        grad_clip_norm=1.0,
        seed=5,
        shuffle=True,
        num_workers=0,
        checkpoint_every=3,
        checkpoint_dir=None if ckpt is None else str(ckpt),
        log_every=1,
        progress_bar=False,
        device="cpu",
        num_processes=num_processes,
    )


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    # no BatchNorm / dropout: the loss of a batch split over processes equals the loss of the whole batch
    return build_toy_model(ToyModelConfig(width=4), ToyPanopticDataset(1).categories)


def test_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    ds = ToyPanopticDataset(10, 10, 10, seed=2, augment=True)

    single = _model()
    ref = train(single, ds, _cfg(1), collate_fn=collate_lists)

    multi = _model()
    res = train(multi, ds, _cfg(2, tmp_path / "ck"), collate_fn=collate_lists)

    assert res.world_size == 2 and res.iteration == 6
    for a, b in zip(ref.history, res.history, strict=True):
        for key in ("train/loss", "train/loss_semantic", "train/loss_aux", "train/grad_norm", "train/lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["iteration"], key)
    # the caller's model received rank 0's weights (each worker trained a private copy: tensors handed to
    # spawned processes live in shared memory, so sharing them would apply every update world_size times)
    for (name, p1), p2 in zip(single.state_dict().items(), multi.state_dict().values(), strict=True):
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-6, msg=f"{name} differs")
    # only rank 0 wrote checkpoints, with both ranks' RNG states
    ck = load_checkpoint(tmp_path / "ck" / "ckpt_00000006.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["ckpt_00000003.pt", "ckpt_00000006.pt"]

    # resuming the 2-process checkpoint at 3 in ONE process continues the same data stream (the RNG streams
    # are re-seeded with a warning; this model draws no random numbers) and lands on the same weights
    (tmp_path / "ck1").mkdir()
    shutil.copy(tmp_path / "ck" / "ckpt_00000003.pt", tmp_path / "ck1" / "ckpt_00000003.pt")
    cont = _model()
    with pytest.warns(UserWarning, match="world size 2 but resuming with 1"):
        res1 = train(cont, ds, _cfg(1, tmp_path / "ck1"), collate_fn=collate_lists)
    assert res1.start_iteration == 3
    for a, b in zip(ref.history[3:], res1.history, strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5, abs=1e-6)
    for (name, p1), p2 in zip(single.state_dict().items(), cont.state_dict().values(), strict=True):
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-6, msg=f"{name} differs")


def test_env_detection_and_no_relaunch_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_utils.env_dist_info() is None
    assert dist_utils.current_dist_info() == dist_utils.DistInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_utils.env_dist_info()
    assert info == dist_utils.DistInfo(3, 8, 1) and not info.is_main and info.distributed
    assert not dist_utils.is_main_process()

    # a torchrun-started single process (WORLD_SIZE=1) trains in place even with num_processes: 2
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")

    def no_launch(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not re-launch under torchrun")

    monkeypatch.setattr(dist_utils, "launch_local", no_launch)
    res = train(_model(), ToyPanopticDataset(4, 6, 6), _cfg(2), collate_fn=collate_lists)
    assert res.iteration == 6 and res.world_size == 1


def test_backend_choice() -> None:
    assert dist_utils.resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert dist_utils.resolve_backend("auto", torch.device("cuda", 0)) == "nccl"
    assert dist_utils.resolve_backend("gloo", torch.device("cuda", 0)) == "gloo"


def _share(fail_on_main: bool) -> str:
    """Worker: rank 0 computes a value (or fails), rank 1 does a collective meanwhile; both report."""

    def on_main() -> dict[str, object]:
        total = torch.ones(1)
        torch.distributed.all_reduce(total)  # rank 1 takes part in this collective from on_others
        if fail_on_main:
            raise ValueError("rank 0 broke")
        return {"world": int(total.item()), "frame": pd.DataFrame({"iteration": [1, 2]})}

    def on_others() -> None:
        torch.distributed.all_reduce(torch.ones(1))

    dist_utils.init_process_group("gloo", torch.device("cpu"))
    try:
        value = dist_utils.result_of_main(on_main, on_others)
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        dist_utils.destroy_process_group()
    return f"world={value['world']} iterations={value['frame']['iteration'].tolist()}"


def test_rank_zero_result_reaches_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert dist_utils.launch_local(_share, (False,), 2) == {
        0: "world=2 iterations=[1, 2]",
        1: "world=2 iterations=[1, 2]",
    }
    failed = dist_utils.launch_local(_share, (True,), 2)
    assert failed[0] == "ValueError: rank 0 broke"
    assert failed[1] == "RuntimeError: rank 0 failed, so rank 1 has no result: ValueError: rank 0 broke"
    # one process: the main function's value, no process group needed
    assert dist_utils.result_of_main(lambda: 7, lambda: pytest.fail("not called")) == 7
