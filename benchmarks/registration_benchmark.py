"""Registration benchmark on ../shared data: speed and Dice between and within volumes.

Run: ``.venv/bin/python benchmarks/registration_benchmark.py [--quick]``. Writes
``resources/benchmarks/registration.json`` and ``registration.md``. Nothing derived from the
data is stored besides these summary numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import stats

from napari_semiseg.core.metrics import dice_per_class, mean_ignoring_absent
from napari_semiseg.core.registration import (AnnotatedVolume, RegistrationSettings, propagate_labels,
                                              register_pair, register_to_sources, RegistrationFinished)
from napari_semiseg.core.volume import Volume, read_volume

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "resources" / "benchmarks"
CLASSES = (1, 2, 3)
log = logging.getLogger("registration_benchmark")


def mean_dice(prediction: np.ndarray, truth: np.ndarray, classes: tuple[int, ...]) -> float:
    """Mean Dice over the classes present in either (core.metrics: an absent class is NaN, not 1.0)."""
    return mean_ignoring_absent(dice_per_class(prediction, truth, list(classes)).values())


def acdc_case(patient: str) -> tuple[Volume, np.ndarray]:
    folder = DATA / "acdc" / "nifti"
    name = next(p.name for p in sorted(folder.glob(f"{patient}_frame*.nii.gz")) if "_gt" not in p.name
                and "_scribble" not in p.name)
    image = read_volume(folder / name)
    return image, read_volume(folder / name.replace(".nii.gz", "_gt.nii.gz")).array


def centre_alignment_dice(fixed: Volume, moving: Volume, labels: np.ndarray, truth: np.ndarray) -> float:
    """Baseline: align image centres (geometry only) and warp labels."""
    fixed_image, moving_image = fixed.to_sitk(), moving.to_sitk()
    transform = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.GEOMETRY)
    label_image = Volume(labels, moving.geometry).to_sitk()
    warped = sitk.GetArrayFromImage(sitk.Resample(label_image, fixed_image, transform, sitk.sitkNearestNeighbor, 0))
    return mean_dice(warped, truth, CLASSES)


def between_acdc(targets: list[str], sources: list[str]) -> dict:
    fixed = {p: acdc_case(p) for p in targets}
    annotated = {p: acdc_case(p) for p in sources}
    source_list = [AnnotatedVolume(annotated[p][0], annotated[p][1]) for p in sources]
    target_list = [fixed[p][0] for p in targets]
    truth = {fixed[p][0].name: fixed[p][1] for p in targets}
    runs = {}
    for label, settings in (("forward only", RegistrationSettings(cycle=False)),
                            ("with cycle", RegistrationSettings(cycle=True))):
        start = time.perf_counter()
        finished = next(e for e in register_to_sources(target_list, source_list, settings, workers=2)
                        if isinstance(e, RegistrationFinished))
        wall = time.perf_counter() - start
        runs[label] = (finished, wall)
    finished, wall = runs["with cycle"]
    pairs = []
    for result in finished.pairs:
        pairs.append({"fixed": result.fixed, "moving": result.moving, "dice": mean_dice(result.labels, truth[result.fixed], CLASSES),
                      "score": result.score, "rmse": result.metrics["rmse"], "mi": result.metrics["mi"],
                      "label_cycle_dice": result.metrics["label_cycle_dice"], "seconds": result.seconds,
                      "mean_quality_in_label": float(result.quality[result.labels > 0].mean())
                      if np.any(result.labels) else 0.0})
    forward, forward_wall = runs["forward only"]
    forward_dice = [mean_dice(r.labels, truth[r.fixed], CLASSES) for r in forward.pairs]
    baseline = [centre_alignment_dice(fixed[t][0], annotated[s][0], annotated[s][1], fixed[t][1])
                for t in targets for s in sources]
    selection = []
    for name in truth:
        mine = [p for p in pairs if p["fixed"] == name]
        chosen = min(mine, key=lambda p: p["score"])
        selection.append({"fixed": name, "chosen": chosen["moving"], "chosen_dice": chosen["dice"],
                          "median_dice": statistics.median(p["dice"] for p in mine),
                          "best_dice": max(p["dice"] for p in mine)})
    rho = stats.spearmanr([p["score"] for p in pairs], [p["dice"] for p in pairs]).statistic if len(pairs) > 2 else None
    n = len(pairs)
    return {
        "targets": targets, "sources": sources, "pairs": pairs,
        "forward_mean_dice": float(np.mean(forward_dice)),
        "forward_seconds_per_pair_mean": float(np.mean([r.seconds for r in forward.pairs])),
        "forward_wall_seconds_per_pair": forward_wall / n,
        "cycle_seconds_per_pair_mean": float(np.mean([p["seconds"] for p in pairs])),
        "cycle_wall_seconds_per_pair": wall / n,
        "centre_alignment_mean_dice": float(np.mean(baseline)),
        "selection": selection,
        "selection_mean_dice": float(np.mean([s["chosen_dice"] for s in selection])),
        "median_source_mean_dice": float(np.mean([s["median_dice"] for s in selection])),
        "oracle_mean_dice": float(np.mean([s["best_dice"] for s in selection])),
        "spearman_score_vs_dice": None if rho is None else float(rho),
    }


def between_la(count: int, deformable_pairs: int) -> dict:
    ids = (DATA / "la2018" / "train.txt").read_text().split()[: count + 1]
    folder = DATA / "la2018" / "nifti"
    cases = {i: (read_volume(folder / f"{i}.nii.gz"), read_volume(folder / f"{i}_gt.nii.gz").array) for i in ids}
    rows = []
    for index in range(count):
        fixed_id, moving_id = ids[index], ids[index + 1]
        (fixed, truth), (moving, labels) = cases[fixed_id], cases[moving_id]
        row = {"fixed": fixed_id, "moving": moving_id, "identity_dice": mean_dice(labels, truth, (1,))
               if labels.shape == truth.shape else None}
        variants = [("affine", False)] + ([("affine+bspline", True)] if index < deformable_pairs else [])
        for label, deformable in variants:
            settings = RegistrationSettings(mode="auto", deformable=deformable, cycle=False)
            start = time.perf_counter()
            result = register_pair(fixed, moving, labels, settings, threads=2)
            row[label] = {"dice": mean_dice(result.labels, truth, (1,)), "seconds": time.perf_counter() - start,
                          "mode": result.metrics["mode"]}
        rows.append(row)
    return {"pairs": rows}


def pick_slices(truth: np.ndarray, k: int) -> list[int]:
    """k slices spread over the slices that contain the heart."""
    heart = np.flatnonzero(truth.any(axis=(1, 2)))
    if k == 1:
        return [int(heart[len(heart) // 2])]
    return sorted({int(round(v)) for v in np.linspace(heart[0], heart[-1], k)})


def mci(sparse: np.ndarray) -> np.ndarray | None:
    try:
        import itk
    except ImportError:
        return None
    image = itk.image_from_array(sparse.astype(np.uint8))
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(2)  # ITK's (x, y, z): our slice axis 0
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput())


def within_acdc(patients: list[str], ks: tuple[int, ...]) -> dict:
    rows, slice_scores, slice_dice = [], [], []
    for patient in patients:
        image, truth = acdc_case(patient)
        for k in ks:
            chosen = pick_slices(truth, k)
            sparse = np.zeros_like(truth)
            sparse[chosen] = truth[chosen]
            start = time.perf_counter()
            result = propagate_labels(image, sparse)
            seconds = time.perf_counter() - start
            others = [z for z in range(truth.shape[0]) if z not in chosen]
            row = {"patient": patient, "k": k, "slices": chosen, "seconds": seconds,
                   "dice": mean_dice(result.labels, truth, CLASSES),
                   "dice_unpainted": mean_dice(result.labels[others], truth[others], CLASSES)}
            interpolated = mci(sparse)
            if interpolated is not None:
                row["mci_dice"] = mean_dice(interpolated, truth, CLASSES)
                row["mci_dice_unpainted"] = mean_dice(interpolated[others], truth[others], CLASSES)
            for z, score in result.slice_scores.items():
                if truth[z].any():
                    slice_scores.append(score)
                    slice_dice.append(mean_dice(result.labels[z], truth[z], CLASSES))
            rows.append(row)
    summary = {}
    for k in ks:
        mine = [r for r in rows if r["k"] == k]
        summary[str(k)] = {key: float(np.nanmean([r[key] for r in mine])) for key in
                           ("dice", "dice_unpainted", "seconds", "mci_dice", "mci_dice_unpainted") if key in mine[0]}
    rho = stats.spearmanr(slice_scores, slice_dice).statistic if len(slice_scores) > 2 else None
    return {"rows": rows, "summary": summary, "spearman_slice_score_vs_dice": None if rho is None else float(rho),
            "slices_scored": len(slice_scores)}


def markdown(report: dict) -> str:
    between = report["acdc_between"]
    lines = ["# Registration benchmark", "",
             f"Machine: {report['machine']}; {report['date']}; quick={report['quick']}; total {report['seconds']:.0f} s.", "",
             "## ACDC between patients (ED; fixed = validation patients, sources = first labeled patients)", "",
             "| measure | value |", "|---|---|",
             f"| pairs | {len(between['pairs'])} |",
             f"| centre alignment, mean Dice (classes 1-3) | {between['centre_alignment_mean_dice']:.3f} |",
             f"| stack-mode registration, mean Dice | {between['forward_mean_dice']:.3f} |",
             f"| seconds per pair, forward only (in-thread mean / wall per pair, 2 workers) | "
             f"{between['forward_seconds_per_pair_mean']:.2f} / {between['forward_wall_seconds_per_pair']:.2f} |",
             f"| seconds per pair, forward + backward for the cycle score | "
             f"{between['cycle_seconds_per_pair_mean']:.2f} / {between['cycle_wall_seconds_per_pair']:.2f} |",
             f"| best-registration selection, mean Dice | {between['selection_mean_dice']:.3f} |",
             f"| median source, mean Dice | {between['median_source_mean_dice']:.3f} |",
             f"| oracle (best source), mean Dice | {between['oracle_mean_dice']:.3f} |",
             f"| Spearman(score, Dice) over pairs (negative = score predicts Dice) | "
             f"{between['spearman_score_vs_dice']:.3f} |", "",
             "## Left atrium (3D, isotropic; consecutive pairs of train.txt)", "",
             "| fixed | moving | no registration | affine Dice | s | affine+B-spline Dice | s |", "|---|---|---|---|---|---|---|"]
    for row in report["la_between"]["pairs"]:
        spline = row.get("affine+bspline", {})
        identity = "" if row["identity_dice"] is None else f"{row['identity_dice']:.3f}"
        lines.append(f"| {row['fixed'][:8]} | {row['moving'][:8]} | {identity} | {row['affine']['dice']:.3f} | "
                     f"{row['affine']['seconds']:.1f} | {spline.get('dice', float('nan')):.3f} | "
                     f"{spline.get('seconds', float('nan')):.1f} |")
    within = report["acdc_within"]
    lines += ["", "## ACDC within a volume (slices spread over the heart; Dice of the whole volume / of unpainted slices)", "",
              "| k painted slices | propagation Dice | unpainted only | seconds | ITK contour interpolation Dice | unpainted only |",
              "|---|---|---|---|---|---|"]
    for k, s in within["summary"].items():
        lines.append(f"| {k} | {s['dice']:.3f} | {s['dice_unpainted']:.3f} | {s['seconds']:.1f} | "
                     f"{s.get('mci_dice', float('nan')):.3f} | {s.get('mci_dice_unpainted', float('nan')):.3f} |")
    rho = within["spearman_slice_score_vs_dice"]
    lines += ["", f"Spearman(slice consistency score, slice Dice) over {within['slices_scored']} slices: "
              f"{rho if rho is None else round(rho, 3)}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small subset (about a minute)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir():
        print(f"no data at {DATA}; nothing to benchmark")
        return 1
    start = time.perf_counter()
    val = (DATA / "acdc" / "splits" / "val.txt").read_text().split()
    labeled = (DATA / "acdc" / "splits" / "labeled_order.txt").read_text().split()
    targets, sources = (val[:3], labeled[:2]) if args.quick else (val, labeled[:3])
    report = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
                         f"SimpleITK {sitk.Version.VersionString()}"}
    report["acdc_between"] = between_acdc(targets, sources)
    print("between ACDC done", flush=True)
    report["la_between"] = between_la(1 if args.quick else 3, 1)
    print("LA done", flush=True)
    report["acdc_within"] = within_acdc(val[:1] if args.quick else val[:5], (1, 2, 3, 5))
    report["seconds"] = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "registration.json").write_text(json.dumps(report, indent=1, default=float))
    (OUT / "registration.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
