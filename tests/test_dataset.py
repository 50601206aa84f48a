"""PanopticDataset / collate_panoptic: the training batch contract, on the real COCO sample."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unipan_pipeline.categories import IGNORE_INDEX, CategoryMap
from unipan_pipeline.data.coco import ingest_panopticapi_sample
from unipan_pipeline.data.dataset import (
    PanopticDataset,
    build_target,
    collate_panoptic,
    ids_to_index,
    masks_to_boxes,
)
from unipan_pipeline.data.store import read_panoptic_png, rgb_to_id, write_id_png
from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panopticapi_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"panopticapi sample not found at {SAMPLE}")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The test machine's cores are shared: intra-op threads only add contention on these tiny tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"panopticapi sample not found at {SAMPLE}")
    out = tmp_path_factory.mktemp("coco") / "coco"
    ingest_panopticapi_sample(SAMPLE, out)
    return out


def _train(**kw: object) -> PanopticTransform:
    return PanopticTransform(TransformConfig.from_params(kw, train=True))


def check_contract(image: torch.Tensor, t: dict, cats: CategoryMap) -> None:
    """Every invariant of the batch contract for one item."""
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    h, w = image.shape[1:]
    n = t["boxes"].shape[0]
    assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (n, 4)
    assert t["labels"].dtype == torch.int64 and t["labels"].shape == (n,)
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (n, h, w)
    assert t["semantic"].dtype == torch.int64 and t["semantic"].shape == (h, w)
    assert t["panoptic"].dtype == torch.int64 and t["panoptic"].shape == (h, w)
    s = t["segment_classes"].shape[0]
    assert t["segment_classes"].dtype == torch.int64 and t["segment_iscrowd"].dtype == torch.bool
    assert t["segment_iscrowd"].shape == (s,)
    assert isinstance(t["image_id"], str) and len(t["orig_size"]) == 2
    # boxes: inside the image, not degenerate, tight around their masks
    if n:
        b = t["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert torch.equal(masks_to_boxes(t["masks"].bool()), b)
    assert ((t["labels"] >= 1) & (t["labels"] <= cats.num_things)).all()
    # panoptic index map: 0..S, every listed segment present
    pan = t["panoptic"]
    assert pan.min() >= 0 and pan.max() <= s
    assert set(torch.unique(pan[pan > 0]).tolist()) == set(range(1, s + 1))
    # semantic == class of the segment, 255 on void
    expected_sem = torch.cat([torch.tensor([IGNORE_INDEX]), t["segment_classes"]])[pan]
    assert torch.equal(t["semantic"], expected_sem)
    # masks == the non-crowd thing segments, in order, with their labels
    is_inst = (t["segment_classes"] >= cats.num_stuff) & ~t["segment_iscrowd"]
    inst_idx = torch.nonzero(is_inst).flatten()
    assert len(inst_idx) == n
    for j, k in enumerate(inst_idx.tolist()):
        assert torch.equal(t["masks"][j].bool(), pan == k + 1)
        assert t["labels"][j] == cats.detector_label(int(t["segment_classes"][k]))


@needs_sample
def test_eval_item_matches_json(root: Path) -> None:
    ds = PanopticDataset(root, "val")
    cats = ds.categories
    gt = json.loads((root / "panoptic_val.json").read_text())
    for i in range(len(ds)):
        image, t = ds[i]
        check_contract(image, t, cats)
        img = gt["images"][i]
        assert t["image_id"] == img["id"]
        assert tuple(image.shape[1:]) == t["orig_size"] == (img["height"], img["width"])
        segs = gt["annotations"][i]["segments_info"]
        assert len(t["segment_classes"]) == len(segs)  # nothing lost without augmentation
        for k, seg in enumerate(segs):
            assert int((t["panoptic"] == k + 1).sum()) == seg["area"]
            assert t["segment_classes"][k] == cats.train_id(seg["category_id"])
            assert bool(t["segment_iscrowd"][k]) == bool(seg["iscrowd"])
        things = [s for s in segs if cats.by_dataset_id(s["category_id"]).isthing and not s["iscrowd"]]
        xyxy = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (s["bbox"] for s in things)]).float()
        assert torch.equal(t["boxes"], xyxy)
        # normalised with ImageNet statistics: de-normalising gives the [0, 1] picture back
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        raw, *_ = ds.load(i)
        assert torch.allclose(image * std + mean, raw.float() / 255, atol=1e-5)
    assert any(t["segment_iscrowd"].any() for _, t in (ds[i] for i in range(len(ds))))


@needs_sample
def test_coco_augmentation_sizes_and_consistency(root: Path) -> None:
    torch.manual_seed(0)
    ds = PanopticDataset(root, "val", transforms=_train(min_size_range=(100, 140), max_size=200))
    for _ in range(4):
        for i in range(len(ds)):
            image, t = ds[i]
            check_contract(image, t, ds.categories)
            h, w = image.shape[1:]
            assert max(h, w) <= 200
            assert t["orig_size"] == ((427, 640), (360, 640))[i]
            assert 100 <= min(h, w) <= 140 or max(h, w) == 200


@needs_sample
def test_scale_crop_flip_boxes_inside(root: Path) -> None:
    torch.manual_seed(1)
    ds = PanopticDataset(
        root, "val", transforms=_train(scale_range=(0.1, 0.5), crop_size=(96, 160), hflip_prob=0.5)
    )
    for _ in range(5):
        for i in range(len(ds)):
            image, t = ds[i]
            assert tuple(image.shape[1:]) == (96, 160)
            check_contract(image, t, ds.categories)


@needs_sample
def test_padding_is_void(root: Path) -> None:
    torch.manual_seed(2)
    ds = PanopticDataset(
        root, "val", transforms=_train(scale_range=(0.1, 0.1), crop_size=(64, 96), hflip_prob=0)
    )
    image, t = ds[0]  # 427x640 * 0.1 -> 43x64, padded bottom/right to 64x96
    check_contract(image, t, ds.categories)
    assert (t["semantic"][43:] == IGNORE_INDEX).all() and (t["semantic"][:, 64:] == IGNORE_INDEX).all()
    assert (t["panoptic"][43:] == 0).all() and (image[:, 43:] == 0).all()


@needs_sample
def test_flip_is_exact_mirror(root: Path) -> None:
    plain = PanopticDataset(root, "val")
    flipped = PanopticDataset(root, "val", transforms=_train(hflip_prob=1.0))
    image, t = plain[1]
    image_f, t_f = flipped[1]
    assert torch.allclose(image_f, image.flip(-1))
    assert torch.equal(t_f["panoptic"], t["panoptic"].flip(-1))
    w = image.shape[-1]
    mirrored = t["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([w, 0, w, 0])
    assert torch.equal(t_f["boxes"], mirrored)


@needs_sample
def test_empty_thing_crop(root: Path) -> None:
    """Tiny crops of the sky/wall regions contain no thing: [0, 4] boxes, [0] labels, [0, H, W] masks."""
    torch.manual_seed(3)
    ds = PanopticDataset(root, "val", transforms=_train(crop_size=(8, 8)))
    empty = 0
    for _ in range(40):
        image, t = ds[0]
        check_contract(image, t, ds.categories)
        if t["boxes"].shape[0] == 0:
            empty += 1
            assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 8, 8)
    assert empty > 0


def test_build_target_only_stuff_and_crowd() -> None:
    cats = CategoryMap.cityscapes()  # 11 stuff, 8 things
    index = torch.tensor([[0, 1, 1], [2, 2, 3]])
    classes = torch.tensor([0, 13, 11])  # road, car (crowd), person (vanished by the "crop")
    crowd = torch.tensor([False, True, False])
    index[1, 2] = 2  # segment 3 no longer present
    t = build_target(index, classes, crowd, cats, image_id="x", orig_size=(2, 3))
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 2, 3)
    assert t["segment_classes"].tolist() == [0, 13]  # vanished segment dropped
    assert t["semantic"].tolist() == [[255, 0, 0], [13, 13, 13]]  # crowd keeps its class


def test_png_id_codec_uint32(tmp_path: Path) -> None:
    ids = np.array([[0, 255, 256], [65535, 65536, 2**24 - 1]], dtype=np.uint32)
    write_id_png(tmp_path / "x.png", ids)
    assert np.array_equal(read_panoptic_png(tmp_path / "x.png"), ids)
    assert rgb_to_id(np.array([[[255, 255, 255]]], dtype=np.uint8))[0, 0] == 2**24 - 1  # no uint8 overflow


def test_ids_to_index_uint32_ids() -> None:
    ids = np.array([[0, 26001, 7], [2**24 - 1, 26001, 5]], dtype=np.uint32)
    index = ids_to_index(ids, [7, 26001, 2**24 - 1])
    assert index.tolist() == [[0, 2, 1], [3, 2, 0]]


@needs_sample
def test_collate_pickle_and_workers(root: Path) -> None:
    ds = PanopticDataset(root, "val", transforms=_train(min_size_range=(60, 80), max_size=120))
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == len(ds) == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_panoptic)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2
    for image, t in zip(images, targets, strict=True):
        check_contract(image, t, ds.categories)


@pytest.mark.parametrize("name", ["train_cityscapes", "train_coco"])
def test_augmentation_parameters_in_conf_parse(name: str) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf" / "base" / f"parameters_{name}.yml"
    params = yaml.safe_load(conf.read_text())[name]
    train = TransformConfig.from_params(params["augment"], train=True)
    evaluation = TransformConfig.from_params(params["augment_eval"], train=False)
    assert train.train and not evaluation.train and train.hflip_prob == 0.5
    if name == "train_cityscapes":
        assert train.scale_range == (0.5, 2.0) and train.crop_size == (512, 1024)
        assert evaluation.eval_min_size is None
    else:
        assert train.min_size_range == (640, 800) and train.max_size == 1333
        assert (evaluation.eval_min_size, evaluation.eval_max_size) == (800, 1333)
    with pytest.raises(ValueError, match="unknown augmentation parameter"):
        TransformConfig.from_params({"crop": [1, 2]}, train=True)


def test_coco_eval_resize_and_transform_checks() -> None:
    coco = yaml.safe_load((Path(__file__).parents[1] / "conf/base/parameters_train_coco.yml").read_text())
    t = PanopticTransform(TransformConfig.from_params(coco["train_coco"]["augment_eval"], train=False))
    image = torch.zeros(3, 100, 300, dtype=torch.uint8)
    index = torch.zeros(100, 300, dtype=torch.int64)
    out_image, out_index = t(image, index)
    assert tuple(out_image.shape) == (3, 444, 1333) and tuple(out_index.shape) == (444, 1333)
    with pytest.raises(ValueError, match="uint8"):
        t(image.float(), index)
