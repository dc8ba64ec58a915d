"""Command-line subcommand ``evaluate``: score predicted label volumes against ground truth.

``add_parsers(subparsers)`` adds it. Metrics, their definitions and the rules for empty or
absent classes live in :mod:`napari_semiseg.core.metrics`; this module reads the files, checks
that each pair shares its grid, prints the table and writes the JSON report.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .core.export import write_json_verified
from .core.metrics import METRICS, VolumeScores, evaluate_volume, slice_mask, summarise
from .core.volume import Volume, read_volume

COLUMNS = ("dice", "hd95", "asd", "nsd", "boundary_dice")
HEADINGS = ("Dice", "HD95", "ASD", "NSD", "bDice")


class EvaluationError(ValueError):
    """Inputs that cannot be compared; the message says what to fix."""


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    evaluate = subparsers.add_parser(
        "evaluate", help="score predicted labels against ground truth (Dice, HD95, ASD, surface Dice)",
        description="Pairs predictions with ground-truth files in order. Distances are in mm when the "
                    "files carry a spacing, in voxels otherwise (or with --voxel-units). A class absent "
                    "from both is not scored (NaN); a missed or spurious class has Dice 0 and infinite HD95/ASD.")
    evaluate.add_argument("predictions", nargs="+", metavar="PRED")
    evaluate.add_argument("--gt", nargs="+", required=True, metavar="GT", help="ground truth, one per prediction")
    evaluate.add_argument("--classes", nargs="+", type=int, metavar="LABEL",
                          help="label values to score (default: every non-zero value in the ground truth)")
    evaluate.add_argument("--exclude-slices-from", nargs="+", metavar="PAINTED",
                          help="sparse label files, one per prediction: their painted slices are left out")
    evaluate.add_argument("--axis", type=int, default=0, choices=(0, 1, 2), help="slice axis of PAINTED (0 = z)")
    evaluate.add_argument("--tolerance", type=float, default=2.0, metavar="MM", help="surface-Dice tolerance (mm; default 2)")
    evaluate.add_argument("--band-width", type=float, default=2.0, metavar="MM", help="boundary-Dice band width (mm; default 2)")
    evaluate.add_argument("--voxel-units", action="store_true", help="ignore the spacing: distances in voxels")
    evaluate.add_argument("--json", metavar="OUT", help="write every score to this JSON file")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``evaluate``: prints the table, writes ``--json``; 0 on success."""
    _check_counts(args)
    truths = [read_volume(path) for path in args.gt]
    classes = args.classes or sorted({int(v) for t in truths for v in np.unique(t.array) if v != 0})
    if not classes:
        raise EvaluationError("The ground truth has no non-zero label; give the labels to score with --classes.")
    painted_files = args.exclude_slices_from or [None] * len(truths)
    reports = []
    for prediction_path, truth, painted_path in zip(args.predictions, truths, painted_files):
        prediction = read_volume(prediction_path)
        _check_same_grid(prediction, truth)
        excluded = painted_slices(_labels_like(painted_path, truth), args.axis) if painted_path else []
        mask = slice_mask(truth.shape, args.axis, excluded) if painted_path else None
        spacing = _spacing(truth, args.voxel_units)
        scores = evaluate_volume(_as_labels(prediction.array), _as_labels(truth.array), classes, spacing, mask,
                                 args.tolerance, args.band_width)
        reports.append({"prediction": str(prediction_path), "truth": str(truth.source), "excluded_slices": excluded,
                        "scores": scores})
    print(format_table(reports, classes))
    if args.json:
        _write_json(Path(args.json), reports, classes, args)
    return 0


def painted_slices(labels: np.ndarray, axis: int) -> list[int]:
    """Indices along ``axis`` of the slices with any painted (non-zero) voxel."""
    others = tuple(a for a in range(labels.ndim) if a != axis)
    return [int(i) for i in np.flatnonzero(np.any(labels != 0, axis=others))]


def _check_counts(args: argparse.Namespace) -> None:
    if len(args.predictions) != len(args.gt):
        raise EvaluationError(f"{len(args.predictions)} predictions but {len(args.gt)} ground-truth files: "
                              "give one --gt file per prediction, in the same order.")
    if args.exclude_slices_from and len(args.exclude_slices_from) != len(args.gt):
        raise EvaluationError(f"{len(args.exclude_slices_from)} --exclude-slices-from files for "
                              f"{len(args.gt)} predictions: give one per prediction, in the same order.")
    if args.tolerance < 0 or args.band_width <= 0:
        raise EvaluationError("--tolerance must be 0 or more and --band-width more than 0.")


def _check_same_grid(prediction: Volume, truth: Volume) -> None:
    if prediction.shape != truth.shape:
        raise EvaluationError(f"{prediction.name} has shape {prediction.shape} but its ground truth {truth.name} "
                              f"has {truth.shape}: compare files on the same voxel grid.")
    if prediction.geometry.known and truth.geometry.known and not prediction.geometry.matches(truth.geometry):
        raise EvaluationError(f"{prediction.name} and {truth.name} sit in different places "
                              f"({prediction.geometry.describe_difference(truth.geometry)}): resample the "
                              "prediction onto the ground truth's grid first.")


def _labels_like(path: str, truth: Volume) -> np.ndarray:
    labels = read_volume(path).array
    if labels.shape != truth.shape:
        raise EvaluationError(f"{Path(path).name} has shape {labels.shape} but {truth.name} has {truth.shape}: "
                              "--exclude-slices-from needs the painted labels of the same volume.")
    return labels


def _as_labels(array: np.ndarray) -> np.ndarray:
    return np.rint(array).astype(np.int64) if array.dtype.kind == "f" else array


def _spacing(truth: Volume, voxel_units: bool):
    return None if voxel_units or not truth.geometry.known else truth.geometry.spacing


def format_table(reports: list[dict], classes: list[int]) -> str:
    """Per-volume, per-class rows, each volume's mean, then per-class means over volumes."""
    unit = reports[0]["scores"].unit if reports else "mm"
    lines = [f"distances in {unit}; NSD at {reports[0]['scores'].tolerance:g}, boundary band "
             f"{reports[0]['scores'].band_width:g}" if reports else ""]
    header = f"{'volume':<28} {'class':>5} {'status':<9}" + "".join(f"{h:>8}" for h in HEADINGS)
    lines += [header, "-" * len(header)]
    for report in reports:
        scores: VolumeScores = report["scores"]
        name = Path(report["prediction"]).name[:28]
        for label, item in scores.classes.items():
            lines.append(f"{name:<28} {label:>5} {item.status:<9}" + "".join(_cell(getattr(item, c)) for c in COLUMNS))
        lines.append(f"{name:<28} {'mean':>5} {'':<9}" + "".join(_cell(scores.means[c]) for c in COLUMNS))
    lines.append("-" * len(header))
    for label in classes:
        cells = [summarise(getattr(r["scores"].classes[label], c) for r in reports) for c in COLUMNS]
        lines.append(f"{'all volumes':<28} {label:>5} {'':<9}" + "".join(_cell(s["mean"]) for s in cells))
    missed = sum(1 for r in reports for item in r["scores"].classes.values() if item.status in ("missed", "spurious"))
    if missed:
        lines.append(f"{missed} class(es) missed or spurious: infinite HD95/ASD, left out of the means over volumes.")
    return "\n".join(lines)


def _cell(value: float) -> str:
    if math.isnan(value):
        return f"{'-':>8}"
    return f"{'inf':>8}" if math.isinf(value) else f"{value:8.3f}"


def _write_json(path: Path, reports: list[dict], classes: list[int], args: argparse.Namespace) -> None:
    summary = {str(label): {metric: summarise(getattr(r["scores"].classes[label], metric) for r in reports)
                            for metric in METRICS} for label in classes}
    content = {"classes": classes, "tolerance": args.tolerance, "band_width": args.band_width,
               "volumes": [{**{k: v for k, v in r.items() if k != "scores"}, **r["scores"].to_dict()} for r in reports],
               "summary_over_volumes": _json_safe(summary)}
    write_json_verified(content, path)
    print(f"wrote {path}", file=sys.stderr)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
