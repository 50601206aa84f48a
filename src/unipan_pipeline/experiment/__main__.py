"""Command line: ``python -m unipan_pipeline.experiment predict --model URI --input DIR --output DIR
[--device auto|cpu|cuda] [--no-overlays] [--on-error skip|fail] [--tracking-uri URI]``.

``URI``: ``models:/unipan-cityscapes@champion``, ``models:/unipan-cityscapes/3``, ``runs:/<run id>/model``,
a run id, a model bundle folder (``data/06_models/<name>``) or a training manifest json. MLflow URIs are
resolved against ``--tracking-uri`` (default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
working directory, i.e. the project's store when run from the project root). Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unipan_pipeline.experiment", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="panoptic predictions for a folder of images")
    p.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, ..."
    )
    p.add_argument("--input", required=True, help="folder of images (.png/.jpg/.jpeg)")
    p.add_argument("--output", required=True, help="output folder (replaced atomically)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="an unreadable image: skip it (default) or, after predicting the others, fail",
    )
    p.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.tracking_uri:
        from unipan_pipeline.tracking.store import set_tracking_uri  # noqa: PLC0415 - imports MLflow

        set_tracking_uri(args.tracking_uri)
    from unipan_pipeline.experiment.predict import predict_folder  # noqa: PLC0415

    try:
        summary = predict_folder(
            args.input,
            args.model,
            args.output,
            overlays=not args.no_overlays,
            device=args.device,
            on_error=args.on_error,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
