"""Census of the affinity's live channels: why P can equal Psi on a trained model (issue: the affinity is
nearly inert).

Eq. 4's propagated term is ``sum_c phi0_c(Q) (phi1_c(Q)^T Psi) / Z``: channel ``c`` contributes only when
``phi0_c`` and ``phi1_c`` are both non-zero somewhere. With ReLU activations (the default) a channel whose
1x1-convolution output is negative at every cell is dead, and a model with no channel alive in both embeds
gives ``P == Psi`` exactly. :func:`affinity_channel_census` runs a trained model's ordinary inference on a
few images, reads ``Q``, ``Psi`` and ``P`` at the affinity head (a forward hook, no second code path) and
counts, over those images:

* ``phi0`` / ``phi1`` / ``both``: channels of each embedding non-zero at some cell of some image;
* ``max_abs_p_minus_psi``: the largest ``|P - Psi|`` seen (0 when nothing propagates).

``python -m unipan_pipeline.experiment.affinity_channels MODEL [MODEL ...]`` (bundle folders or training
manifests) prints a Markdown table, then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unipan_pipeline.data import PanopticDataset
from unipan_pipeline.experiment.common import load_bundle
from unipan_pipeline.experiment.train import eval_transform
from unipan_pipeline.model import PanopticNetwork

__all__ = ["affinity_channel_census", "census_of_model", "main"]


@torch.no_grad()
def affinity_channel_census(model: PanopticNetwork, images: Iterable[Tensor]) -> dict[str, Any]:
    """Live channels of phi0 / phi1 and the largest ``|P - Psi|`` over ``images`` (``[3, H, W]`` each, as
    the model's inference takes them); see the module docstring for the keys."""
    affinity = model.affinity
    if affinity is None:
        raise ValueError("affinity_channel_census: the model has no affinity head (use_affinity is false)")
    channels = affinity.feature_channels
    live0 = torch.zeros(channels, dtype=torch.bool)
    live1 = torch.zeros(channels, dtype=torch.bool)
    largest = 0.0
    calls = 0

    def record(_module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        nonlocal live0, live1, largest, calls
        q, psi = args
        a, b = affinity.live_channels(q)
        live0, live1 = live0 | a.cpu(), live1 | b.cpu()
        psis = [psi] if isinstance(psi, Tensor) else list(psi)
        ps = [output] if isinstance(output, Tensor) else list(output)
        for p_img, psi_img in zip(ps, psis, strict=True):
            if p_img.numel():
                largest = max(largest, float((p_img.float() - psi_img.float()).abs().max()))
        calls += 1

    was_training = model.training
    model.eval()
    handle = affinity.register_forward_hook(record)
    n = 0
    try:
        for image in images:
            model([image])
            n += 1
    finally:
        handle.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("affinity_channel_census: no image given")
    return {
        "images": n,
        "affinity_calls": calls,
        "channels": channels,
        "activation": affinity.activation,
        "phi0": int(live0.sum()),
        "phi1": int(live1.sum()),
        "both": int((live0 & live1).sum()),
        "max_abs_p_minus_psi": largest,
    }


def census_of_model(
    location: str | Path,
    *,
    root: str | None = None,
    split: str = "val",
    max_images: int = 10,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`affinity_channel_census` of a bundle folder or training manifest on the first ``max_images``
    of an ingested split (``root``: the data set the model was trained on, from its manifest)."""
    location = Path(location)
    loaded = load_bundle(location, device=device)
    model = loaded.model
    if not isinstance(model, PanopticNetwork):
        raise ValueError(f"{location}: not a panoptic network")
    if root is None:
        manifest = location
        if location.suffix != ".json":  # a bundle folder: the trainer's manifest.json, or the catalog's copy
            manifest = next(
                (m for m in (location / "manifest.json", location / "model.json") if m.is_file()),
                location / "manifest.json",
            )
        try:
            root = str(json.loads(manifest.read_text())["ingested_root"])
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{manifest}: cannot read the model's data set ({err}); pass --root <ingested data set>"
            ) from err
    dataset = PanopticDataset(root, split, loaded.categories, eval_transform(loaded.eval_transform))
    n = min(max_images, len(dataset))
    dev = next(model.parameters()).device
    result = affinity_channel_census(model, (dataset[i][0].to(dev) for i in range(n)))
    return {"model": location.as_posix(), **result}


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per model: live channels of phi0, phi1, both (of C) and the largest |P - Psi|."""
    lines = [
        "| model | images | phi0 live | phi1 live | both live | max abs(P - Psi) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r["channels"]
        lines.append(
            f"| {r['model']} | {r['images']} | {r['phi0']} / {c} | {r['phi1']} / {c} | {r['both']} / {c} "
            f"| {r['max_abs_p_minus_psi']:.3g} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line: the census of each model given, as a Markdown table and a JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m unipan_pipeline.experiment.affinity_channels", description=__doc__.split("\n")[0]
    )
    parser.add_argument("models", nargs="+", help="bundle folders or training manifests (json)")
    parser.add_argument("--root", default=None, help="ingested data set (default: each model's own)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    results = [
        census_of_model(m, root=args.root, split=args.split, max_images=args.max_images, device=args.device)
        for m in args.models
    ]
    print(markdown_table(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
