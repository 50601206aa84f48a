"""The one strict converter of ``params:`` mappings into dataclasses (``unipan_pipeline.params``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from unipan_pipeline.data import TransformConfig
from unipan_pipeline.experiment.train import TrainParams
from unipan_pipeline.params import ParameterError, conf_files, from_params
from unipan_pipeline.pipelines.generate_synthetic.nodes import GenerateParams
from unipan_pipeline.training import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    size: tuple[int, int] = (1, 2)
    name: str = "x"

    def __post_init__(self) -> None:
        if self.size[0] < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


@dataclass
class Outer:
    required: int
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None


def test_nested_dataclasses_tuples_and_defaults() -> None:
    out = from_params(Outer, {"required": 3, "inner": {"size": [4, 5]}, "maybe": {"name": "y"}}, "params:t")
    assert out == Outer(3, Inner((4, 5)), Inner(name="y"))
    assert from_params(Outer, {"required": 1, "maybe": None}, "params:t").maybe is None


def test_errors_name_the_key_where_it_sits_and_the_conf_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(
        ParameterError, match=r"^params:t: missing key\(s\) \['required'\]; unknown key\(s\) \['requird'\]"
    ):
        from_params(Outer, {"requird": 1}, "params:t")
    with pytest.raises(ParameterError, match=r"^params:t\.inner: unknown key\(s\) \['nme'\]"):
        from_params(Outer, {"required": 1, "inner": {"nme": "z"}}, "params:t")
    with pytest.raises(ParameterError, match=r"params:t\.inner: size must be >= 0"):
        from_params(Outer, {"required": 1, "inner": {"size": [-1, 0]}}, "params:t")
    with pytest.raises(ParameterError, match="must be a mapping, got list"):
        from_params(Outer, [1], "params:t")  # type: ignore[arg-type]
    # a real namespace: the message ends with the file(s) that define it
    with pytest.raises(
        ParameterError,
        match=r"params:demo\.trainer: unknown key\(s\) \['lr_step'\].*\(conf/base/parameters_demo\.yml\)$",
    ):
        TrainerConfig.from_dict({"lr_step": [1]}, source="params:demo.trainer")
    assert conf_files("params:train_coco.model") == ["conf/base/parameters_train_coco.yml"]
    assert conf_files("params:no_such_namespace") == []
    with pytest.raises(
        ValueError, match=r"params:demo\.augment: unknown augmentation parameter\(s\) \['flip'\]"
    ):
        TransformConfig.from_params({"flip": 0.5}, train=True, where="params:demo.augment")


def test_the_conf_files_convert() -> None:
    demo = yaml.safe_load((ROOT / "conf/base/parameters_demo.yml").read_text())["demo"]
    spec = from_params(TrainParams, demo, "params:demo")
    assert spec.trainer.lr_steps == demo["trainer"]["lr_steps"] and spec.model.anchor_sizes == (
        8,
        16,
        32,
        64,
        128,
    )
    assert spec.validation is not None and spec.validation.max_images == demo["validation"]["max_images"]
    generate = yaml.safe_load((ROOT / "conf/base/parameters_generate_synthetic.yml").read_text())
    gen = from_params(GenerateParams, generate["generate_synthetic"], "params:generate_synthetic")
    assert (gen.height, gen.width) == (128, 256)  # the demo's values come from the YAML alone
    with pytest.raises(ParameterError, match=r"missing key\(s\) \['output_dir'\]"):
        from_params(GenerateParams, {}, "params:generate_synthetic")
