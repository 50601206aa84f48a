"""The census of the affinity's live channels (``experiment/affinity_channels.py``): which phi0 / phi1
channels are non-zero, and |P - Psi| read at the affinity head of a model's ordinary inference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from builders import make_panoptic_sample, tiny_config

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.experiment import affinity_channels
from unipan_pipeline.experiment.affinity_channels import affinity_channel_census
from unipan_pipeline.experiment.common import BUNDLE_FILES
from unipan_pipeline.model import build_model
from unipan_pipeline.model.instance_affinity import DenseInstanceAffinity

torch.set_num_threads(1)


def _kill(conv: torch.nn.Conv2d, channels: list[int]) -> None:
    """Make output channels of ``conv`` negative everywhere on non-negative inputs (dead after ReLU)."""
    with torch.no_grad():
        conv.weight[channels] = -conv.weight[channels].abs()
        conv.bias[channels] = -1.0


def test_live_channels_by_hand() -> None:
    head = DenseInstanceAffinity(feature_channels=4)
    with torch.no_grad():
        for conv in (head.phi0[0], head.phi1[0]):
            conv.weight.copy_(torch.eye(4)[:, :, None, None])
            conv.bias.zero_()
    q = torch.zeros(4, 3, 5)
    q[0, 1, 2] = 1.0  # channel 0 alive at one cell
    q[2] = 0.5  # channel 2 alive everywhere
    q[3] = -1.0  # channel 3 negative: dead after ReLU
    live0, live1 = head.live_channels(q)
    assert live0.tolist() == [True, False, True, False] and torch.equal(live0, live1)
    with torch.no_grad():
        head.phi1[0].bias[2] = -1.0  # phi1 channel 2 now negative everywhere: alive in phi0 only
    live0, live1 = head.live_channels(q[None].expand(2, -1, -1, -1))  # batched
    assert live0.tolist() == [True, False, True, False] and live1.tolist() == [True, False, False, False]


def _sample_images() -> list[torch.Tensor]:
    return [
        make_panoptic_sample(64, 96, [(8, 10, 40, 50, 3), (30, 20, 70, 60, 4)], seed=1)[0],
        make_panoptic_sample(64, 96, [(5, 30, 40, 60, 4)], seed=2)[0],
    ]


def test_census_of_a_tiny_model_and_of_its_dead_twin(tiny_categories: CategoryMap) -> None:
    """An untrained model propagates (|P - Psi| > 0, some channels alive in both); the same weights with
    every phi1 channel killed have P == Psi exactly, and the census says so."""
    torch.manual_seed(0)
    model = build_model(tiny_config(), tiny_categories)
    images = _sample_images()
    alive = affinity_channel_census(model, images)
    c = model.affinity.feature_channels
    assert alive["images"] == 2 and alive["affinity_calls"] == 2 and alive["channels"] == c
    assert 0 < alive["both"] <= min(alive["phi0"], alive["phi1"]) <= c
    assert alive["max_abs_p_minus_psi"] > 0
    assert model.training  # left as it was

    _kill(model.affinity.phi1[0], list(range(c)))
    dead = affinity_channel_census(model, images)
    assert dead["phi1"] == 0 and dead["both"] == 0 and dead["phi0"] == alive["phi0"]
    assert dead["max_abs_p_minus_psi"] == 0.0

    _kill(model.affinity.phi0[0], list(range(c)))  # phi0 dead too; phi1 restored on half its channels
    with torch.no_grad():
        model.affinity.phi1[0].bias[: c // 2] = 1.0
        model.affinity.phi1[0].weight[: c // 2] = 0.0
    disjoint = affinity_channel_census(model, images)
    assert disjoint["phi0"] == 0 and disjoint["phi1"] == c // 2 and disjoint["both"] == 0
    assert disjoint["max_abs_p_minus_psi"] == 0.0


def test_census_needs_an_affinity_head_and_an_image(tiny_categories: CategoryMap) -> None:
    model = build_model(tiny_config(use_affinity=False), tiny_categories)
    with pytest.raises(ValueError, match="no affinity head"):
        affinity_channel_census(model, _sample_images())
    with pytest.raises(ValueError, match="no image"):
        affinity_channel_census(build_model(tiny_config(), tiny_categories), [])


def test_command_line_on_the_demo_model(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line on the tiny project's trained model: its manifest and its bundle folder give the
    same census, printed as a table and a JSON line."""
    monkeypatch.chdir(tiny_project)
    results = affinity_channels.main(
        ["data/06_models/demo/model.json", "data/06_models/demo", "--max-images", "2"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("| model | images | phi0 live") and len(out) == 2 + 2 + 1
    assert json.loads(out[-1]) == results
    by_manifest, by_folder = results
    assert {k: v for k, v in by_manifest.items() if k != "model"} == {
        k: v for k, v in by_folder.items() if k != "model"
    }
    assert by_manifest["images"] == 2 and 0 <= by_manifest["both"] <= by_manifest["channels"]
    bare = tmp_path / "bundle"  # the bundle's files without a manifest: the data set must be given
    bare.mkdir()
    for name in BUNDLE_FILES.values():
        shutil.copy(tiny_project / "data/06_models/demo" / name, bare / name)
    with pytest.raises(ValueError, match="pass --root"):
        affinity_channels.census_of_model(bare)
    given = affinity_channels.census_of_model(bare, root="data/03_primary/cityscapes", max_images=2)
    assert given["phi0"] == by_folder["phi0"] and given["both"] == by_folder["both"]
