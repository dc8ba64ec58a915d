"""Interactive protocol on ACDC: paint k slices of one volume, train on it through the
command line for a fixed CPU budget, and score the slices nobody painted.

    .venv/bin/python benchmarks/acdc_interactive.py --cases patient002_frame01 --k 3 --minutes 2

Results go to resources/benchmarks/acdc_interactive.json and .md. The ACDC volumes stay
in ../shared/data; only temporary files are written elsewhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_semiseg.core.metrics import dice_per_class, mean_ignoring_absent, slice_mask  # noqa: E402
from napari_semiseg.core.phantoms import paint_slices  # noqa: E402
from napari_semiseg.core.volume import read_volume, write_volume  # noqa: E402

ACDC = ROOT.parent / "shared" / "data" / "acdc" / "nifti"
CLASSES = {1: "RV", 2: "Myo", 3: "LV"}
RESULTS = ROOT / "resources" / "benchmarks"


def spread_slices(truth: np.ndarray, k: int) -> list[int]:
    """k slices spread evenly over the slices that contain the heart."""
    with_heart = np.flatnonzero(np.any(truth > 0, axis=(1, 2)))
    positions = np.linspace(0, len(with_heart) - 1, k + 2)[1:-1] if k > 1 else [len(with_heart) / 2]
    return sorted({int(with_heart[int(round(p))]) for p in positions})


def run_case(case: str, k: int, minutes: float, strategy: str, workdir: Path) -> dict:
    image_path = ACDC / f"{case}.nii.gz"
    truth_volume = read_volume(ACDC / f"{case}_gt.nii.gz")
    truth = truth_volume.array
    painted = spread_slices(truth, k)
    sparse_path = workdir / f"{case}_sparse.nii.gz"
    write_volume(truth_volume.with_array(paint_slices(truth, painted)), sparse_path)
    model_dir, out_dir = workdir / f"{case}_model", workdir / f"{case}_out"
    command = [sys.executable, "-m", "napari_semiseg.cli"]
    started = time.perf_counter()
    subprocess.run(command + ["train", str(image_path), "--labels", str(sparse_path), "--strategy", strategy,
                              "--minutes", str(minutes), "--device", "cpu", "--out", str(model_dir)], check=True)
    trained = time.perf_counter() - started
    subprocess.run(command + ["predict", str(model_dir), str(image_path), "--out", str(out_dir)], check=True)
    prediction = read_volume(out_dir / f"{case}_seg.nii.gz").array
    scores = dice_per_class(prediction, truth, list(CLASSES), slice_mask(truth.shape, 0, painted))
    iterations = sum(1 for _ in open(model_dir / "training_log.jsonl"))
    return {
        "case": case, "k": k, "painted_slices": painted, "slices": int(truth.shape[0]), "strategy": strategy,
        "minutes": minutes, "train_seconds": round(trained, 1), "log_lines": iterations,
        "dice": {CLASSES[c]: round(v, 4) for c, v in scores.items()},
        "mean_dice": round(mean_ignoring_absent(scores.values()), 4),
    }


def write_results(results: list[dict], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    lines = ["| case | k | painted | strategy | minutes | RV | Myo | LV | mean |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["dice"]
        lines.append(f"| {r['case']} | {r['k']} | {r['painted_slices']} | {r['strategy']} | {r['minutes']} | "
                     f"{d['RV']:.3f} | {d['Myo']:.3f} | {d['LV']:.3f} | {r['mean_dice']:.3f} |")
    (RESULTS / f"{name}.md").write_text(f"Measured {time.strftime('%Y-%m-%d')} with "
                                        f"`{' '.join(sys.argv)}`\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["patient002_frame01"])
    parser.add_argument("--k", nargs="+", type=int, default=[3])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--strategy", default="cross_teaching")
    parser.add_argument("--name", default="acdc_interactive")
    args = parser.parse_args()
    if not ACDC.exists():
        sys.exit(f"ACDC data not found at {ACDC}; this benchmark needs ../shared/data.")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            for k in args.k:
                results.append(run_case(case, k, args.minutes, args.strategy, Path(tmp)))
                print(json.dumps(results[-1]))
    write_results(results, args.name)


if __name__ == "__main__":
    main()
