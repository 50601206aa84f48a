"""Command line: ``python -m unipan_pipeline.evaluation pq --gt-json G --gt-folder GF --pred-json P
--pred-folder PF [--output out.json] [--workers N] [--per-class] [--compat panopticapi]``.

Prints ``pq_compute``'s table and writes its result structure as JSON (atomically; ``nan`` -> ``null``).
Exit status 2 with a one-line message on bad input. Strict by default; ``--compat panopticapi`` accepts the
inputs that ``pq_compute`` tolerates (a predicted image not in the ground truth, a ground-truth segment
without pixels, a ground-truth PNG id missing from its json) and returns its numbers for them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, *, start_method: str = "forkserver") -> int:
    """Run the command line; ``start_method``: how PQ worker processes start (``pq_compute_files``)."""
    from unipan_pipeline.evaluation.pq_files import pq_compute_files  # noqa: PLC0415 - after the env set-up
    from unipan_pipeline.evaluation.pq_matching import COMPAT_MODES  # noqa: PLC0415
    from unipan_pipeline.evaluation.pq_report import format_pq_table, results_to_jsonable  # noqa: PLC0415
    from unipan_pipeline.fileio.atomic import write_json_atomic  # noqa: PLC0415
    from unipan_pipeline.fileio.errors import EvaluationError  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m unipan_pipeline.evaluation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pq = sub.add_parser("pq", help="panoptic quality from COCO panoptic json + PNG folders")
    pq.add_argument("--gt-json", required=True)
    pq.add_argument("--gt-folder", default=None, help="default: --gt-json without .json")
    pq.add_argument("--pred-json", required=True)
    pq.add_argument("--pred-folder", default=None, help="default: --pred-json without .json")
    pq.add_argument("--output", default=None, help="write the result JSON here")
    pq.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    pq.add_argument("--per-class", action="store_true", help="also print the per-class table")
    pq.add_argument(
        "--compat",
        choices=COMPAT_MODES,
        default=None,
        help="panopticapi: tolerate what pq_compute tolerates, with its numbers (default: strict)",
    )
    args = parser.parse_args(argv)

    try:
        results, acc = pq_compute_files(
            args.gt_json,
            args.pred_json,
            args.gt_folder,
            args.pred_folder,
            workers=args.workers,
            return_accumulator=True,
            compat=args.compat,
            start_method=start_method,
        )
    except (EvaluationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_pq_table(results, acc.categories if args.per_class else None))
    if args.output:
        write_json_atomic(args.output, results_to_jsonable(results), newline=False, indent=2, sort_keys=True)
        print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    # A process of its own, with no threads: PQ needs no BLAS thread pool, and the workers can simply be
    # forked (faster than the forkserver that in-process callers such as tests get).
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    sys.exit(main(start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"))
