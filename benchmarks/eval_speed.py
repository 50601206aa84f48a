"""Speed of panoptic-quality evaluation: our PQ command line vs hotcoco's, ours in process vs panopticapi.

Generates (seeded) a Cityscapes-sized set in COCO panoptic format in a temporary folder - street-like
scenes: stuff bands with wavy boundaries, poles and signs, 10-40 thing instances (ellipses, perspective-
scaled), crowd regions, void; predictions are jittered re-renderings (shifted boundaries, dropped /
spurious / relabelled instances, random 24-bit ids); integer image ids, as COCO has (hotcoco requires them) -
then times, in one run:

* side by side, as whole processes (start-up, imports and JSON reading included), ``--repeats`` back-to-back
  pairs in alternating order: ``python -m unipan_pipeline.evaluation pq --workers W`` and hotcoco's
  ``hotcoco.panoptic.pq_compute`` (``RAYON_NUM_THREADS=W``; install it with ``pip install -e '.[bench]'``;
  without it that row is left out and said so);
* in this process: ``pq_compute_files`` (``workers=W``), ``PQAccumulator.update`` on id maps already in
  memory (only the update calls are timed) and ``panopticapi.evaluation.pq_compute``;
* a profile of where our time goes (``--profile``): PNG decoding, run-length pass, matching, start-up.

Checks that ours agrees (bitwise between entry points and the command line, 1e-12 against panopticapi;
hotcoco's deviation is printed) and prints a table and, last, one JSON line with the command line's speed-up
over hotcoco (``cli_speedup_vs_hotcoco``: the median over the pairs of hotcoco's time / ours, target >= 1.5).

    python benchmarks/eval_speed.py                 # 200 images of 1024x2048, 2 workers
    python benchmarks/eval_speed.py --images 20     # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from panopticapi.evaluation import pq_compute

from unipan_pipeline.evaluation import pq_files
from unipan_pipeline.evaluation.panoptic_quality import (
    PQAccumulator,
    PQCategories,
    evaluate_runs,
    joint_runs,
    pq_compute_files,
)
from unipan_pipeline.fileio.png import (
    ID_MASK,
    available_backends,
    decode_id_png,
    decode_pixel_words,
    write_id_png,
)

HOTCOCO_SCRIPT = """
import contextlib, io, json, sys
from hotcoco.panoptic import pq_compute
with contextlib.redirect_stdout(io.StringIO()):
    res = pq_compute(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
with open(sys.argv[5], "w") as f:
    json.dump(res, f, default=float)
"""

STUFF = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23]  # Cityscapes label ids
THINGS = [24, 25, 26, 27, 28, 31, 32, 33]
NAMES = {
    7: "road",
    8: "sidewalk",
    11: "building",
    12: "wall",
    13: "fence",
    17: "pole",
    19: "traffic light",
    20: "traffic sign",
    21: "vegetation",
    22: "terrain",
    23: "sky",
    24: "person",
    25: "rider",
    26: "car",
    27: "truck",
    28: "bus",
    31: "train",
    32: "motorcycle",
    33: "bicycle",
}


def _categories() -> list[dict[str, Any]]:
    return [
        {"id": c, "name": NAMES[c], "isthing": int(c in THINGS), "color": [0, 0, 0]} for c in STUFF + THINGS
    ]


def _scene(rng: np.random.Generator, h: int, w: int) -> dict[str, Any]:
    """Random scene parameters."""
    bands = [23, 11, 21, 8, 7]  # sky, building, vegetation, sidewalk, road from top to bottom
    if rng.random() < 0.5:
        bands.insert(3, int(rng.choice([12, 13, 22])))
    heights = np.sort(rng.uniform(0.15, 0.85, size=len(bands) - 1)) * h
    waves = [(rng.uniform(5, 40), rng.uniform(1, 6), rng.uniform(0, 6.3)) for _ in heights]
    poles = [
        (int(rng.integers(0, w - 20)), int(rng.integers(4, 14)), int(rng.integers(h // 5, h // 2)))
        for _ in range(int(rng.integers(2, 8)))
    ]
    signs = [
        (
            int(rng.integers(0, h // 2)),
            int(rng.integers(0, w - 60)),
            int(rng.integers(15, 50)),
            int(rng.integers(15, 60)),
            int(rng.choice([19, 20])),
        )
        for _ in range(int(rng.integers(1, 6)))
    ]
    things = []
    for _ in range(int(rng.integers(10, 41))):
        cy = rng.uniform(0.45, 0.95) * h
        scale = (cy / h) ** 2
        cls = int(rng.choice(THINGS, p=[0.3, 0.05, 0.4, 0.05, 0.05, 0.02, 0.05, 0.08]))
        ry = rng.uniform(20, 160) * scale + 3
        rx = ry * (rng.uniform(0.3, 0.7) if cls in (24, 25, 33) else rng.uniform(1.0, 2.2))
        things.append([cy, rng.uniform(0, w), ry, rx, cls, rng.random() < 0.06])
    return {
        "bands": bands,
        "heights": heights,
        "waves": waves,
        "poles": poles,
        "signs": signs,
        "things": things,
        "ego": rng.uniform(0.88, 0.97) * h,
    }


def _jitter(rng: np.random.Generator, s: dict[str, Any]) -> dict[str, Any]:
    """A plausible prediction of scene ``s``."""
    out = dict(s)
    out["heights"] = s["heights"] + rng.normal(0, 6, size=len(s["heights"]))
    out["waves"] = [(a * rng.uniform(0.8, 1.2), f, p + rng.normal(0, 0.05)) for a, f, p in s["waves"]]
    out["poles"] = [
        (x + int(rng.integers(-3, 4)), max(2, wd + int(rng.integers(-2, 3))), hh)
        for x, wd, hh in s["poles"]
        if rng.random() > 0.2
    ]
    things = []
    for cy, cx, ry, rx, cls, _crowd in s["things"]:
        if rng.random() < 0.12:
            continue  # missed
        label = int(rng.choice(THINGS)) if rng.random() < 0.06 else cls
        things.append(
            [
                cy + rng.normal(0, 0.08 * ry),
                cx + rng.normal(0, 0.08 * rx),
                ry * rng.uniform(0.85, 1.15),
                rx * rng.uniform(0.85, 1.15),
                label,
                False,
            ]
        )
    h_guess = max(s["ego"], 1.0)
    for _ in range(int(rng.integers(0, 4))):  # spurious
        things.append(
            [
                rng.uniform(0.5, 0.9) * h_guess,
                rng.uniform(0, 2 * h_guess),
                rng.uniform(8, 40),
                rng.uniform(8, 60),
                int(rng.choice(THINGS)),
                False,
            ]
        )
    out["things"] = things
    out["ego"] = s["ego"] + rng.normal(0, 3)
    return out


def _render(
    s: dict[str, Any], h: int, w: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, list[dict]]:
    """Rasterise a scene; ``rng`` given -> random 24-bit ids (predictions), else Cityscapes-style ids."""
    ids = np.zeros((h, w), dtype=np.uint32)
    cat_of: dict[int, int] = {}
    crowd_of: dict[int, int] = {}
    used: set[int] = set()

    def new_id(cls: int, k: int, crowd: bool) -> int:
        if rng is None:
            sid = cls if (cls in STUFF or crowd) else cls * 1000 + k
        else:
            sid = int(rng.integers(1, 1 << 24))
            while sid in used:
                sid = int(rng.integers(1, 1 << 24))
        used.add(sid)
        cat_of[sid] = cls
        crowd_of[sid] = int(crowd)
        return sid

    stuff_id = {cls: new_id(cls, 0, False) for cls in STUFF}
    x = np.arange(w)
    rows = np.arange(h)[:, None]
    band = np.zeros((h, w), dtype=np.int8)
    for hgt, (amp, freq, ph) in zip(s["heights"], s["waves"], strict=True):
        band += rows >= (hgt + amp * np.sin(freq * 2 * np.pi * x / w + ph))[None, :]
    ids[:] = np.asarray([stuff_id[c] for c in s["bands"]], dtype=np.uint32)[band]
    horizon = int(s["heights"][len(s["heights"]) // 2])
    for px, pw, ph in s["poles"]:
        ids[max(0, horizon - ph) : horizon + ph // 3, px : px + pw] = stuff_id[17]
    for sy, sx, sh, sw, cls in s["signs"]:
        ids[sy : sy + sh, sx : sx + sw] = stuff_id[cls]
    crowd_ids: dict[int, int] = {}
    for k, (cy, cx, ry, rx, cls, crowd) in enumerate(sorted(s["things"], key=lambda t: t[0])):
        y0, y1 = int(max(0, cy - ry)), int(min(h, cy + ry + 1))
        x0, x1 = int(max(0, cx - rx)), int(min(w, cx + rx + 1))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        if crowd:
            sid = crowd_ids.get(cls) or new_id(cls, k + 1, True)
            crowd_ids[cls] = sid
        else:
            sid = new_id(cls, k + 1, False)
        ids[y0:y1, x0:x1][mask] = sid
    ids[int(s["ego"]) :] = 0  # ego vehicle: void
    present, counts = np.unique(ids, return_counts=True)
    segs = [
        {"id": int(i), "category_id": cat_of[int(i)], "area": int(c), "iscrowd": crowd_of[int(i)]}
        for i, c in zip(present, counts, strict=True)
        if i != 0
    ]
    return ids, segs


def _make_image(args: tuple[int, int, int, int, str]) -> tuple[dict, dict, str]:
    k, seed, h, w, root = args
    rng = np.random.default_rng([seed, k])
    scene = _scene(rng, h, w)
    gt, gt_segs = _render(scene, h, w, None)
    pred, pred_segs = _render(_jitter(rng, scene), h, w, rng)
    for s in pred_segs:
        s.pop("iscrowd")
    name = f"frankfurt_{k:06d}_000019"
    write_id_png(Path(root) / "gt" / f"{name}.png", gt)
    write_id_png(Path(root) / "pred" / f"{name}.png", pred)
    return (
        {"image_id": k, "file_name": f"{name}.png", "segments_info": gt_segs},
        {"image_id": k, "file_name": f"{name}.png", "segments_info": pred_segs},
        name,
    )


def generate(root: Path, n: int, h: int, w: int, *, seed: int, workers: int) -> tuple[Path, Path]:
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "pred").mkdir(parents=True, exist_ok=True)
    jobs = [(k, seed, h, w, str(root)) for k in range(n)]
    with multiprocessing.Pool(workers) as pool:
        pairs = pool.map(_make_image, jobs)
    images = [
        {"id": g["image_id"], "file_name": name + ".png", "height": h, "width": w} for g, _, name in pairs
    ]
    for name, idx in (("gt", 0), ("pred", 1)):
        (root / f"{name}.json").write_text(
            json.dumps(
                {"images": images, "annotations": [p[idx] for p in pairs], "categories": _categories()}
            )
        )
    return root / "gt.json", root / "pred.json"


def _max_dev(a: dict, b: dict) -> float:
    """Largest |a - b| over the All/Things/Stuff and per-class pq, sq, rq (inf if ``n`` or classes differ);
    per-class keys compared as strings (JSON turns them into strings)."""
    dev = 0.0
    for g in ("All", "Things", "Stuff"):
        if a[g]["n"] != b[g]["n"]:
            return float("inf")
        dev = max([dev, *(abs(float(a[g][k]) - float(b[g][k])) for k in ("pq", "sq", "rq"))])
    pa = {str(c): v for c, v in a["per_class"].items()}
    pb = {str(c): v for c, v in b["per_class"].items()}
    if set(pa) != set(pb):
        return float("inf")
    for c, v in pb.items():
        dev = max([dev, *(abs(float(pa[c][k]) - float(v[k])) for k in ("pq", "sq", "rq"))])
    return dev


def _hotcoco_as_pq_compute(res: dict) -> dict:
    """hotcoco's one documented difference in the result dict: classes without TP, FP or FN get -1 where
    pq_compute reports 0. Map those back so that the rest can be compared number for number."""
    per_class = {}
    for cid, r in res["per_class"].items():
        empty = r.get("tp", 1) + r.get("fp", 0) + r.get("fn", 0) == 0
        per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0} if empty else r
    return {**res, "per_class": per_class}


def _close(a: dict, b: dict, tol: float = 1e-12) -> bool:
    return _max_dev(a, b) <= tol


def _timed_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def _side_by_side(
    paths: tuple[str, str, str, str], workers: int, repeats: int, out: Path
) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Whole-process wall times of our command line and hotcoco's pq_compute, alternating, and results."""
    ours_cmd = [
        sys.executable,
        "-m",
        "unipan_pipeline.evaluation",
        "pq",
        "--gt-json",
        paths[0],
        "--pred-json",
        paths[1],
        "--gt-folder",
        paths[2],
        "--pred-folder",
        paths[3],
        "--workers",
        str(workers),
        "--output",
        str(out / "ours_cli.json"),
    ]
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {"ours": (ours_cmd, None)}
    if importlib.util.find_spec("hotcoco") is not None:
        hot_cmd = [sys.executable, "-c", HOTCOCO_SCRIPT, *paths, str(out / "hotcoco.json")]
        commands["hotcoco"] = (hot_cmd, {**os.environ, "RAYON_NUM_THREADS": str(workers)})
    else:
        print("(hotcoco not installed: pip install -e '.[bench]'; its row is left out)")
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for k in range(repeats):  # back-to-back pairs, the order alternating: drifts in load hit both alike
        for name in list(commands)[:: 1 if k % 2 == 0 else -1]:
            runs[name].append(_timed_process(*commands[name]))
    results = {"ours": json.loads((out / "ours_cli.json").read_text())}
    if "hotcoco" in commands:
        results["hotcoco"] = _hotcoco_as_pq_compute(json.loads((out / "hotcoco.json").read_text()))
    return runs, results


def _profile(root: Path, gt: dict, pred: dict, n: int) -> dict[str, float]:
    """Milliseconds per image pair of each stage of our file path (one process), and the start-up."""
    pq_files._keep_decode_buffers_on_the_heap()  # as in the command line's workers
    cats = PQCategories.coerce(gt["categories"])
    stages = {"decode 2 PNGs": 0.0, "joint runs": 0.0, "matching": 0.0}
    anns = gt["annotations"][:n]
    for ann in anns:
        t0 = time.perf_counter()
        g = decode_pixel_words(root / "gt" / ann["file_name"])
        p = decode_pixel_words(root / "pred" / ann["file_name"])
        t1 = time.perf_counter()
        g_run, p_run, lengths = joint_runs(g, p, value_mask=ID_MASK)
        t2 = time.perf_counter()
        evaluate_runs(
            g_run,
            p_run,
            lengths,
            ann["segments_info"],
            pred[ann["image_id"]]["segments_info"],
            categories=cats,
            image_id=ann["image_id"],
            gt_file=None,
            pred_file=None,
            cat_index=None,
        )
        t3 = time.perf_counter()
        stages["decode 2 PNGs"] += t1 - t0
        stages["joint runs"] += t2 - t1
        stages["matching"] += t3 - t2
    out = {k: 1e3 * v / len(anns) for k, v in stages.items()}
    cmd = [sys.executable, "-m", "unipan_pipeline.evaluation", "--help"]
    out["start-up (python -m ... --help), once"] = 1e3 * min(_timed_process(cmd) for _ in range(3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=7, help="back-to-back pairs of the two whole-process commands"
    )
    ap.add_argument("--profile", type=int, default=20, help="images profiled stage by stage (0: none)")
    ap.add_argument(
        "--dir",
        default=None,
        help="keep the generated set here (default: a temp folder); a set made there before with the same "
        "--images/--height/--width/--seed is reused",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="eval_speed_") as tmp:
        root = Path(args.dir or tmp)
        t0 = time.perf_counter()
        recipe = {"images": args.images, "height": args.height, "width": args.width, "seed": args.seed}
        made = root / "recipe.json"
        if made.is_file() and json.loads(made.read_text()) == recipe:
            gt_json, pred_json = root / "gt.json", root / "pred.json"
        else:
            gt_json, pred_json = generate(
                root, args.images, args.height, args.width, seed=args.seed, workers=args.workers
            )
            made.write_text(json.dumps(recipe))
        gen_s = time.perf_counter() - t0
        paths = (str(gt_json), str(pred_json), str(root / "gt"), str(root / "pred"))
        n = args.images
        rows: list[tuple[str, float, dict | None]] = []

        runs, proc_results = _side_by_side(paths, args.workers, args.repeats, root)
        cli_s = statistics.median(runs["ours"])
        hot_s = statistics.median(runs["hotcoco"]) if "hotcoco" in runs else None
        # the speed-up: median over the pairs of hotcoco / ours (each pair run back to back); on a shared
        # machine whole-process times move by +-20 % from run to run, a pair's ratio far less
        pair_speedups = [h / o for o, h in zip(runs["ours"], runs.get("hotcoco", []), strict=False)]
        speedup = statistics.median(pair_speedups) if pair_speedups else None

        t0 = time.perf_counter()
        ours_files = pq_compute_files(*paths, workers=args.workers)
        rows.append(
            (f"ours, pq_compute_files ({args.workers} workers)", time.perf_counter() - t0, ours_files)
        )

        gt = json.loads(gt_json.read_text())
        pred = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
        acc = PQAccumulator(gt["categories"])
        mem_s = 0.0
        for ann in gt["annotations"]:
            g = decode_id_png(root / "gt" / ann["file_name"]).astype(np.int32)
            p = decode_id_png(root / "pred" / ann["file_name"]).astype(np.int32)
            pa = pred[ann["image_id"]]
            t0 = time.perf_counter()
            acc.update(g, ann["segments_info"], p, pa["segments_info"], image_id=ann["image_id"])
            mem_s += time.perf_counter() - t0
        ours_mem = acc.compute()
        rows.append(("ours, in memory (1 process)", mem_s, ours_mem))

        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ref = pq_compute(*paths)
        ref_s = time.perf_counter() - t0
        rows.append((f"panopticapi pq_compute ({multiprocessing.cpu_count()} procs)", ref_s, ref))
        profile = _profile(root, gt, pred, min(args.profile, n)) if args.profile > 0 else {}

        print(
            f"\n{n} images of {args.height}x{args.width}, generated in {gen_s:.1f} s "
            f"(segments/image gt {np.mean([len(a['segments_info']) for a in gt['annotations']]):.1f}); "
            f"PNG decoder: {available_backends()[0]}; load average {os.getloadavg()[0]:.2f}"
        )
        print(f"\nwhole processes, {args.workers} workers, median of {args.repeats} runs (all in brackets)")
        print(f"{'command':42s} {'seconds':>9s} {'img/s':>8s}  {'PQ':>8s}  dev. from pq_compute")
        for name, times in runs.items():
            res = proc_results[name]
            label = (
                "ours: python -m unipan_pipeline.evaluation"
                if name == "ours"
                else "hotcoco.panoptic.pq_compute"
            )
            print(
                f"{label:42s} {statistics.median(times):9.2f} {n / statistics.median(times):8.1f}  "
                f"{100 * float(res['All']['pq']):8.4f}  {_max_dev(res, ref):.1e}   "
                f"[{', '.join(f'{t:.2f}' for t in times)}]"
            )
        if speedup is not None and hot_s is not None:
            print(
                f"ours vs hotcoco: {speedup:.2f}x, median of {len(pair_speedups)} back-to-back pairs "
                f"[{', '.join(f'{r:.2f}' for r in pair_speedups)}] (target >= 1.5x); "
                f"ratio of the medians {hot_s / cli_s:.2f}x"
            )
        print("\nin this process")
        print(f"{'method':42s} {'seconds':>9s} {'img/s':>8s} {'vs pq_compute':>14s}  PQ")
        for name, sec, res in rows:
            pq = f"{100 * float(res['All']['pq']):.4f}" if isinstance(res, dict) and "All" in res else "-"
            print(f"{name:42s} {sec:9.2f} {n / sec:8.1f} {ref_s / sec:13.1f}x  {pq}")
        if profile:
            print(
                f"\nprofile of our file path, one process, {min(args.profile, n)} images (ms per image pair)"
            )
            for stage, ms in profile.items():
                print(f"  {stage:40s} {ms:8.2f}")
        bitwise = ours_files == ours_mem
        cli_agree = _close(proc_results["ours"], ref)
        agree = _close(ours_files, ref)
        print(
            f"ours files == ours in memory (bitwise): {bitwise}; ours agree with pq_compute to 1e-12: "
            f"{agree} (command line: {cli_agree})"
        )
        summary = {
            "images": n,
            "height": args.height,
            "width": args.width,
            "workers": args.workers,
            "png_decoder": available_backends()[0],
            "cli_s": cli_s,
            "hotcoco_s": hot_s,
            "cli_speedup_vs_hotcoco": speedup,
            "cli_speedup_pairs": pair_speedups,
            "cli_speedup_ratio_of_medians": hot_s / cli_s if hot_s is not None else None,
            "target_1.5x_met": (speedup >= 1.5) if speedup is not None else None,
            "hotcoco_max_dev_from_pq_compute": _max_dev(proc_results["hotcoco"], ref) if hot_s else None,
            "files_img_per_s": n / rows[0][1],
            "memory_img_per_s": n / mem_s,
            "pq_compute_img_per_s": n / ref_s,
            "files_speedup_vs_pq_compute": ref_s / rows[0][1],
            "memory_speedup_vs_pq_compute": ref_s / mem_s,
            "bitwise_files_eq_memory": bitwise,
            "agree_pq_compute_1e-12": agree and cli_agree,
            "profile_ms_per_pair": profile,
            "load_average_1min": os.getloadavg()[0],
            "pq": ours_files["All"]["pq"],
        }
        print(json.dumps(summary))
        if not (bitwise and agree and cli_agree):
            sys.exit(1)


if __name__ == "__main__":
    main()
