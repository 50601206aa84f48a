"""The training loop on a tiny contract-following model (CPU): config, schedule, loop behaviour, failures."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from toy_model import (
    ToyModelConfig,
    ToyPanopticDataset,
    build_toy_model,
    collate_lists,
    toy_categories,
)

from unipan_pipeline.training import (
    DistInfo,
    Hook,
    NonFiniteLossError,
    TrainerConfig,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    lr_factor,
    train,
)
from unipan_pipeline.training.hooks import default_hooks
from unipan_pipeline.training.loader import make_loader
from unipan_pipeline.training.loop import Trainer
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset, sample_seed
from unipan_pipeline.training.schedule import parameter_groups
from unipan_pipeline.training.state import TrainResult, build_state

torch.set_num_threads(1)


def _cfg(**kw: Any) -> TrainerConfig:
    base = {
        "iterations": 6,
        "images_per_batch": 4,
        "lr": 0.05,
        "warmup_iters": 2,
        "lr_steps": [4],
        "checkpoint_every": 0,
        "log_every": 1,
        "progress_bar": False,
        "device": "cpu",
        "seed": 3,
    }
    base.update(kw)
    return TrainerConfig(**base)


class ListLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))


# ------------------------------------------------------------------------------------------------ config
def test_config_from_dict_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"params.yml: unknown key\(s\) \['lr_step'\]"):
        TrainerConfig.from_dict({"lr_step": [1]}, source="params.yml")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainerConfig.from_dict({"optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="grad_clip_norm"):
        TrainerConfig(grad_clip_norm=0)
    cfg = TrainerConfig.from_dict(
        {"iterations": 65000, "images_per_batch": 32, "lr": 0.01, "lr_steps": [55000, 40000], "amp": True}
    )
    assert cfg.lr_steps == [40000, 55000] and cfg.amp == "fp16"
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        cfg.per_process_batch(3)


# ------------------------------------------------------------------------------------------------ schedule
def test_lr_factor_warmup_and_steps() -> None:
    kw = {"warmup_iters": 10, "warmup_factor": 0.1, "lr_steps": [20, 30], "gamma": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(5, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(19, **kw) == pytest.approx(1.0)
    assert lr_factor(20, **kw) == pytest.approx(0.1)
    assert lr_factor(30, **kw) == pytest.approx(0.01)
    # the paper's Cityscapes schedule: lr 0.01, /10 at 40k and 55k
    city = TrainerConfig(iterations=65000, lr=0.01, lr_steps=[40000, 55000], warmup_iters=1000)
    lr = [
        city.lr
        * lr_factor(
            t,
            warmup_iters=city.warmup_iters,
            warmup_factor=city.warmup_factor,
            lr_steps=city.lr_steps,
            gamma=city.gamma,
        )
        for t in (39999, 40000, 54999, 55000)
    ]
    assert lr == pytest.approx([0.01, 0.001, 0.001, 0.0001])


def test_scheduler_drives_optimizer_lr() -> None:
    model = build_toy_model(ToyModelConfig(width=2), toy_categories())
    cfg = _cfg(lr=0.2, warmup_iters=4, warmup_factor=0.5, lr_steps=[6, 8], gamma=0.5)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [
        0.2 * lr_factor(t, warmup_iters=4, warmup_factor=0.5, lr_steps=[6, 8], gamma=0.5) for t in range(10)
    ]
    assert seen == pytest.approx(expected)
    assert seen[:5] == pytest.approx([0.1, 0.125, 0.15, 0.175, 0.2])


def test_no_weight_decay_on_norm_and_bias() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight + bias, linear bias
    assert len(parameter_groups(model, 1e-4, decay_norm_and_bias=True)) == 1


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_epochs_are_permutations_and_shards_partition_the_global_batch() -> None:
    n, g = 7, 4
    single = InfiniteShardedSampler(n, g, seed=1)
    it = iter(single)
    stream = [next(it)[0] for _ in range(3 * n)]
    for e in range(3):
        assert sorted(stream[e * n : (e + 1) * n]) == list(range(n))
    assert stream[:n] != stream[n : 2 * n]  # a fresh shuffle each epoch
    shards = [iter(InfiniteShardedSampler(n, g, rank=r, world_size=2, seed=1)) for r in range(2)]
    for step in range(5):
        union = [next(shards[0]) for _ in range(2)] + [next(shards[1]) for _ in range(2)]
        assert [i for i, _ in union] == stream[step * g : (step + 1) * g]
        assert [s for _, s in union] == [sample_seed(1, step * g + j) for j in range(g)]
    resumed = iter(InfiniteShardedSampler(n, g, seed=1, start_position=3 * g))
    assert [next(resumed)[0] for _ in range(g)] == stream[3 * g : 4 * g]
    plain = iter(InfiniteShardedSampler(3, 2, shuffle=False))
    assert [next(plain)[0] for _ in range(5)] == [0, 1, 2, 0, 1]


def test_seeded_dataset_is_repeatable_and_keeps_global_rng() -> None:
    ds = SeededDataset(ToyPanopticDataset(4, 8, 8, augment=True))
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    a, b = ds[(2, 12345)], ds[(2, 12345)]
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], ds[(2, 999)][0])  # another seed, another augmentation
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


# ------------------------------------------------------------------------------------------------ loop
def test_training_reduces_loss_logs_and_validates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = ToyPanopticDataset(8, 12, 12)
    model = build_toy_model(ToyModelConfig(width=6), ds.categories)
    logger = ListLogger()
    val_calls: list[tuple[int, bool]] = []

    def validate(m: nn.Module, iteration: int) -> dict[str, float]:
        val_calls.append((iteration, m.training))
        out = m([ds[0][0]])
        return {"segments": float(len(out[0]["segments_info"]))}

    cfg = _cfg(
        iterations=30,
        optimizer="adamw",
        lr=0.02,
        warmup_iters=3,
        lr_steps=[25],
        log_every=5,
        validate_every=10,
        grad_clip_norm=5.0,
        checkpoint_dir=str(tmp_path / "ck"),
        checkpoint_every=10,
        keep_last_n=2,
    )
    res = train(model, ds, cfg, collate_fn=collate_lists, validate_fn=validate, logger=logger)
    assert res.iteration == 30 and res.start_iteration == 0 and res.resumed_from is None
    assert [s for _, s in logger.calls if "train/loss" in _] == [5, 10, 15, 20, 25, 30]
    first, last = logger.calls[0][0], [c for c, _ in logger.calls if "train/loss" in c][-1]
    assert set(first) >= {
        "train/loss",
        "train/loss_semantic",
        "train/loss_aux",
        "train/lr",
        "train/grad_norm",
    }
    assert first["train/loss"] == pytest.approx(first["train/loss_semantic"] + first["train/loss_aux"])
    assert last["train/loss"] < first["train/loss"]
    assert last["train/lr"] == pytest.approx(0.002)
    assert val_calls == [(10, False), (20, False), (30, False)]
    assert model.training  # back in train mode
    assert sorted(res.validation) == [10, 20, 30]
    assert ({"val/segments"} <= set(c) for c, s in logger.calls if s == 30)
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["ckpt_00000020.pt", "ckpt_00000030.pt"]  # keep_last_n=2
    final = load_checkpoint(tmp_path / "ck" / "ckpt_00000030.pt")
    assert final["kind"] == "final" and final["iteration"] == 30
    assert final["sampler"]["consumed"] == 30 * 4
    assert final["config"]["lr"] == 0.02


def test_gradient_clipping_bounds_the_update() -> None:
    ds = ToyPanopticDataset(4, 8, 8)
    torch.manual_seed(0)
    model = build_toy_model(ToyModelConfig(width=4), ds.categories)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = _cfg(
        iterations=1,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        lr=1.0,
        warmup_iters=0,
        lr_steps=[],
        grad_clip_norm=1e-3,
    )
    res = train(model, ds, cfg, collate_fn=collate_lists)
    step = torch.sqrt(
        sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True))
    )
    assert res.history[0]["train/grad_norm"] > 1e-2  # the raw norm was far above the threshold
    assert float(step) == pytest.approx(1e-3, rel=1e-3)  # ||lr * clipped grad|| == lr * max_norm


def test_same_seed_same_weights() -> None:
    def run() -> list[torch.Tensor]:
        torch.manual_seed(5)
        ds = ToyPanopticDataset(6, 8, 8)
        model = build_toy_model(ToyModelConfig(width=4, dropout=0.2), ds.categories)
        train(
            model,
            ds,
            _cfg(iterations=5, deterministic=True, optimizer="adamw", lr=1e-2),
            collate_fn=collate_lists,
        )
        return [p.detach().clone() for p in model.parameters()]

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    torch.use_deterministic_algorithms(False)


class _ExplodingNet(nn.Module):
    """Finite losses until ``at`` steps have been taken, then NaN in ``loss_bad`` (or an inf gradient)."""

    def __init__(self, at: int, mode: str = "loss") -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.at = at
        self.mode = mode
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        self.steps += 1
        x = torch.stack([im.mean() for im in images]).mean()
        good = (self.w * x) ** 2
        if int(self.steps) <= self.at:
            return {"loss_good": good, "loss_bad": 0 * self.w.sum()}
        if self.mode == "loss":
            return {"loss_good": good, "loss_bad": self.w.sum() * float("nan")}
        return {"loss_good": good, "loss_bad": torch.sqrt(self.w * 0).sum()}  # d sqrt(u)/du at 0 = inf


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_non_finite_loss_stops_with_last_finite_checkpoint(tmp_path: Path, mode: str) -> None:
    ds = ToyPanopticDataset(4, 8, 8)
    model = _ExplodingNet(at=3, mode=mode)
    cfg = _cfg(iterations=10, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    with pytest.raises(NonFiniteLossError) as err:
        train(model, ds, cfg, collate_fn=collate_lists)
    term = "loss_bad" if mode == "loss" else "gradient norm"
    assert err.value.iteration == 4 and err.value.term == term
    assert f"non-finite {term}" in str(err.value) and "at iteration 4" in str(err.value)
    assert err.value.checkpoint_path == tmp_path / "last_finite_00000003.pt"
    saved = load_checkpoint(err.value.checkpoint_path)
    assert saved["kind"] == "last_finite" and saved["iteration"] == 3 and "iteration 4" in saved["reason"]
    assert torch.isfinite(saved["model"]["w"]).all()
    assert torch.equal(saved["model"]["w"], model.w.detach())  # the weights were not touched by the bad step
    clone = pickle.loads(pickle.dumps(err.value))  # DDP workers hand it back to the launcher
    assert (clone.iteration, clone.term, str(clone)) == (4, term, str(err.value))
    # the regular checkpoint folder is untouched by the failure: auto-resume would use ckpt_2
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_00000002.pt"]


def test_model_contract_violation_is_reported() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, images: list[torch.Tensor], targets: list[dict]) -> list[torch.Tensor]:
            return [self.w.sum()]

    with pytest.raises(TypeError, match="dict of loss tensors"):
        train(
            Bad(),
            ToyPanopticDataset(2, 4, 4),
            _cfg(iterations=1, images_per_batch=2),
            collate_fn=collate_lists,
        )


def test_fp16_is_ignored_on_cpu_bf16_and_channels_last_train() -> None:
    ds = ToyPanopticDataset(4, 8, 8)
    model = build_toy_model(ToyModelConfig(width=2), ds.categories)
    with pytest.warns(UserWarning, match="CUDA only"):
        res = train(model, ds, _cfg(iterations=2, amp="fp16"), collate_fn=collate_lists)
    assert res.iteration == 2 and all(math.isfinite(h["train/loss"]) for h in res.history)
    model = build_toy_model(ToyModelConfig(width=2), ds.categories)
    res = train(model, ds, _cfg(iterations=2, amp="auto", channels_last=True), collate_fn=collate_lists)
    assert res.iteration == 2 and all(math.isfinite(h["train/loss"]) for h in res.history)


def test_dict_config_and_empty_dataset() -> None:
    ds = ToyPanopticDataset(4, 8, 8)
    model = build_toy_model(ToyModelConfig(width=2), ds.categories)
    res = train(model, ds, _cfg(iterations=2).to_dict(), collate_fn=collate_lists)
    assert res.iteration == 2
    with pytest.raises(ValueError, match="empty"):
        train(model, ToyPanopticDataset(0), _cfg(), collate_fn=collate_lists)


# ------------------------------------------------------------------------------------------------ hooks
class _Recorder(Hook):
    """Records each moment with what the trainer exposes at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.weights_at_backward: list[torch.Tensor] = []
        self.weights_after_step: list[torch.Tensor] = []

    def before_train(self, trainer: Trainer) -> None:
        self.events.append(("before_train", trainer.iteration))

    def after_forward(self, trainer: Trainer) -> None:
        assert math.isfinite(trainer.step.loss) and math.isnan(trainer.step.grad_norm)
        self.events.append(("after_forward", trainer.iteration))

    def after_backward(self, trainer: Trainer) -> None:
        assert math.isfinite(trainer.step.grad_norm)
        self.weights_at_backward.append(_flat(trainer.state.model))
        self.events.append(("after_backward", trainer.iteration))

    def after_step(self, trainer: Trainer) -> None:
        self.weights_after_step.append(_flat(trainer.state.model))
        self.events.append(("after_step", trainer.iteration))

    def after_train(self, trainer: Trainer) -> None:
        self.events.append(("after_train", trainer.iteration))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_trainer_calls_hooks_in_order_around_each_step() -> None:
    torch.manual_seed(0)
    ds = ToyPanopticDataset(4, 8, 8)
    model = build_toy_model(ToyModelConfig(width=2), ds.categories)
    cfg = _cfg(iterations=3)
    state = build_state(model, len(ds), cfg, DistInfo(), torch.device("cpu"))
    batches = make_loader(ds, state.sampler, cfg, collate_lists, torch.device("cpu"))
    recorder = _Recorder()
    result = Trainer(state, batches, [recorder], TrainResult(iteration=0)).train()
    assert result.iteration == 3
    per_step = ["after_forward", "after_backward", "after_step"]
    expected = [("before_train", 0)]
    for it in range(3):
        expected += [(moment, it + (moment == "after_step")) for moment in per_step]
    assert recorder.events == [*expected, ("after_train", 3)]
    # after_backward sees the weights before the update, after_step the updated ones
    assert torch.equal(recorder.weights_at_backward[1], recorder.weights_after_step[0])
    assert not torch.equal(recorder.weights_at_backward[1], recorder.weights_after_step[1])
    # without the default hooks nothing is logged
    assert result.history == [] and result.validation == {}


def test_after_train_runs_when_a_step_raises() -> None:
    class Stop(Hook):
        def after_step(self, trainer: Trainer) -> None:
            if trainer.iteration == 2:
                raise KeyboardInterrupt

    ds = ToyPanopticDataset(4, 8, 8)
    cfg = _cfg(iterations=5)
    state = build_state(
        build_toy_model(ToyModelConfig(width=2), ds.categories), 4, cfg, DistInfo(), torch.device("cpu")
    )
    recorder = _Recorder()
    batches = make_loader(ds, state.sampler, cfg, collate_lists, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(state, batches, [Stop(), recorder], TrainResult(iteration=0)).train()
    assert recorder.events[-1] == ("after_train", 2)


def test_default_hooks_order_follows_the_loop() -> None:
    names = [type(h).__name__ for h in default_hooks(lambda m, i: {}, None)]
    assert names == [
        "NonFiniteStop",
        "ProgressBar",
        "MetricsWriter",
        "PeriodicValidation",
        "PeriodicCheckpointer",
    ]
    assert "PeriodicValidation" not in [type(h).__name__ for h in default_hooks(None, None)]


def test_scheduler_built_at_a_step_matches_the_stepped_one() -> None:
    cfg = _cfg(lr=0.2, warmup_iters=4, warmup_factor=0.5, lr_steps=[6, 8], gamma=0.5)
    model = build_toy_model(ToyModelConfig(width=2), toy_categories())
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(7):
        opt.step()
        sched.step()
    other = build_optimizer(build_toy_model(ToyModelConfig(width=2), toy_categories()), cfg)
    rebuilt = build_scheduler(other, cfg, steps_taken=7)
    assert rebuilt.last_epoch == sched.last_epoch == 7
    assert rebuilt.get_last_lr() == sched.get_last_lr() == [g["lr"] for g in other.param_groups]
    with pytest.raises(ValueError, match="steps_taken"):
        build_scheduler(other, cfg, steps_taken=-1)
