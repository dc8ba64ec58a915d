"""Interactive protocol on ACDC: k painted slices of one volume, the rest of that volume scored.

For each validation volume (10 patients x 2 frames) and each k, the k painted slices are spread
over the slices that contain the heart (the centres of k equal parts of that range). From the
same slices: training on that volume only through the engine (CPU, a fixed budget), scored as
the program shows it ("train": the network blended with the propagated painted slices, see
core.predict.PaintedPrior) and as the network alone ("network", same training run), ITK
morphological contour interpolation, and within-volume registration propagation. Separately,
the expert scribbles (Valvano et al.) train a model on their own, scored blended with the
scribbles (core.predict.scribble_prior) and alone. Scores (core.metrics) cover
the slices nobody painted (for scribbles, the whole volume); distances are in voxels, since
the ACDC copy lost its spacing.

    python benchmarks/acdc_interactive_protocol.py                       # everything (~200 min of training)
    python benchmarks/acdc_interactive_protocol.py --methods interpolation propagation   # no training
    python benchmarks/acdc_interactive_protocol.py --cases patient002_frame01 --k 3 --iterations 20
    python benchmarks/acdc_interactive_protocol.py --methods train --k            # only the scribble runs

Results: resources/benchmarks/<name>.json (every run; runs already there are skipped, so an
interrupted run resumes) and <name>.md (summary table).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from itk_interpolation import interpolate_in_subprocess
from protocol_common import (ACDC, ACDC_CLASSES, RESULTS, ResultFile, add_run_options, command_line, require, score,
                             summary_cells, summary_header, timed, train_model, write_markdown)

from napari_semiseg.core.metrics import slice_mask
from napari_semiseg.core.phantoms import paint_slices
from napari_semiseg.core.volume import read_volume

METHODS = ("train", "interpolation", "propagation")
ROW_METHODS = ("train", "network", "interpolation", "propagation")  # one training gives "train" and "network"
SCRIBBLE_UNANNOTATED, SCRIBBLE_BACKGROUND = 4, 0


def validation_cases() -> list[str]:
    """The 20 volumes (both frames) of the 10 SSL4MIS validation patients."""
    patients = (ACDC / "splits" / "val.txt").read_text().split()
    folder = ACDC / "nifti"
    return sorted(p.name[: -len(".nii.gz")] for patient in patients for p in folder.glob(f"{patient}_frame??.nii.gz"))


def spread_slices(truth: np.ndarray, k: int) -> list[int]:
    """k slices at the centres of k equal parts of the range of slices that contain the heart."""
    heart = np.flatnonzero(truth.any(axis=(1, 2)))
    positions = ((np.arange(k) + 0.5) * len(heart) / k).astype(int)
    return sorted({int(heart[min(p, len(heart) - 1)]) for p in positions})


def interpolate(sparse: np.ndarray) -> np.ndarray:
    """ITK morphological contour interpolation between the painted slices (see itk_interpolation.py)."""
    return interpolate_in_subprocess(sparse, axis=0)


def propagate(image, sparse: np.ndarray) -> np.ndarray:
    from napari_semiseg.core.registration import propagate_labels

    return propagate_labels(image, sparse).labels


def scribble_labels(scribbles: np.ndarray) -> np.ndarray:
    """Expert scribbles in our scribble convention: 0 unknown, 4 background, 1-3 classes."""
    labels = scribbles.astype(np.uint8).copy()
    labels[scribbles == SCRIBBLE_BACKGROUND] = 4
    labels[scribbles == SCRIBBLE_UNANNOTATED] = 0
    return labels


def train_config(args):
    from napari_semiseg.core.config import TrainConfig

    budget = {"iterations": args.iterations} if args.iterations else {"minutes": args.minutes}
    return TrainConfig(strategy=args.strategy, device="cpu", seed=args.seed, threads=args.threads, **budget)


def run_one(case: str, setting: str, method: str, args, workdir: Path) -> list[dict]:
    folder = ACDC / "nifti"
    image = read_volume(folder / f"{case}.nii.gz")
    truth = read_volume(folder / f"{case}_gt.nii.gz").array
    row = {"case": case, "setting": setting, "method": method}
    if setting == "scribbles":
        from napari_semiseg.core.annotations import AnnotationMode, AnnotationScheme

        labels = scribble_labels(read_volume(folder / f"{case}_scribble.nii.gz").array)
        scheme, mask, painted = AnnotationScheme(AnnotationMode.SCRIBBLES, 0, 4), None, []
    else:
        from napari_semiseg.core.annotations import AnnotationScheme

        painted = spread_slices(truth, int(setting.split("=")[1]))
        labels, scheme = paint_slices(truth, painted), AnnotationScheme()
        mask = slice_mask(truth.shape, 0, painted)
    row["painted_slices"] = painted
    if method == "train":
        return train_rows(image, labels, scheme, truth, mask, row, args, workdir / f"{case}_{setting}")
    if method == "interpolation":
        prediction, row["seconds"] = timed(interpolate, labels)
    else:
        prediction, row["seconds"] = timed(propagate, image, labels)
    row["scores"] = score(prediction, truth, ACDC_CLASSES, None, mask, args.tolerance, args.band_width)
    return [row]


def train_rows(image, labels, scheme, truth, mask, row: dict, args, workdir: Path) -> list[dict]:
    """Train on the volume; score the program's blended prediction ("train") and the network alone."""
    from napari_semiseg.core.model import load_model
    from napari_semiseg.core.predict import painted_prior, predict_volume

    config = train_config(args)
    model_path, info = train_model([image], [labels], scheme, config, workdir)
    model = load_model(model_path, "cpu")
    network, network_seconds = timed(lambda: predict_volume(model, image).labels)
    prior, prior_seconds = timed(painted_prior, image, labels, scheme)
    blended, blend_seconds = timed(lambda: predict_volume(model, image, prior=prior).labels)
    common = dict(row, **info, strategy=config.strategy, budget=config.minutes or f"{config.iterations} it")
    rows = []
    for method, prediction, seconds in (("train", blended, prior_seconds + blend_seconds),
                                        ("network", network, network_seconds)):
        rows.append(dict(common, method=method, predict_seconds=round(seconds, 1),
                         wall_seconds=round(info["wall_seconds"] + seconds, 1),
                         scores=score(prediction, truth, ACDC_CLASSES, None, mask, args.tolerance, args.band_width)))
    return rows


def markdown(rows: list[dict], settings: list[str]) -> list[str]:
    header, rule = summary_header(ACDC_CLASSES, ["setting", "method"])
    table = [header + " s per volume |", rule + "---|"]
    for setting in settings:
        for method in ROW_METHODS:
            mine = [r for r in rows if r["setting"] == setting and r["method"] == method]
            if mine:
                seconds = np.mean([r.get("seconds", r.get("wall_seconds", np.nan)) for r in mine])
                cells = [setting, method, str(len(mine))] + summary_cells(mine, ACDC_CLASSES) + [f"{seconds:.1f}"]
                table.append("| " + " | ".join(cells) + " |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", help="volume names (default: the 20 validation volumes)")
    parser.add_argument("--k", nargs="*", type=int, default=[1, 2, 3, 5],
                        help="painted slices per volume (none: only the scribble runs)")
    parser.add_argument("--no-scribbles", action="store_true", help="leave out the expert-scribble runs")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--skip-training", action="store_true", help="same as leaving 'train' out of --methods")
    parser.add_argument("--strategy", default="registration_supervised")
    add_run_options(parser, "acdc_interactive_protocol", minutes=2.0, unit="voxels")
    args = parser.parse_args()
    require(ACDC)
    methods = [m for m in args.methods if not (args.skip_training and m == "train")]
    cases = args.cases or validation_cases()
    settings = [f"k={k}" for k in args.k] + ([] if args.no_scribbles else ["scribbles"])
    results = ResultFile(RESULTS / f"{args.name}.json", ("case", "setting", "method"))
    meta = {"command": command_line(), "distance_unit": "voxels", "tolerance": args.tolerance,
            "band_width": args.band_width, "scored": "unpainted slices (scribbles: whole volume)"}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for setting in settings:
                for method in methods:
                    if setting == "scribbles" and method != "train":
                        continue  # interpolation and propagation need fully painted slices
                    if results.has(case=case, setting=setting, method=method) and not args.redo:
                        continue
                    for row in run_one(case, setting, method, args, Path(tmp)):
                        results.add(row, meta)
                        print(f"{case} {setting} {row['method']}: " + ", ".join(
                            f"{k} {v}" for k, v in row["scores"]["means"].items()), flush=True)
    all_settings = [f"k={k}" for k in sorted({int(r["setting"][2:]) for r in results.rows if r["setting"] != "scribbles"})]
    all_settings += ["scribbles"] if any(r["setting"] == "scribbles" for r in results.rows) else []
    notes = ["ACDC validation volumes (SSL4MIS split), one volume at a time. Scored on the slices that were "
             "not painted (scribbles: the whole volume). Dice: mean over volumes of the mean over present classes. "
             f"HD95 and ASD in voxels (spacing lost in this copy): mean of finite per-class values, and, as '(n inf)', "
             f"the number of class-volume pairs missed or spurious on the unpainted slices (infinite distance). "
             f"NSD at {args.tolerance:g} voxels."]
    write_markdown(RESULTS / f"{args.name}.md", "ACDC interactive protocol", meta["command"], notes,
                   markdown(results.rows, all_settings))


if __name__ == "__main__":
    main()
