"""Semi-supervised benchmark on ACDC with the papers' protocol (SSL4MIS split).

The first N patients of ``splits/labeled_order.txt`` are annotated (both frames, every slice
that has a label), the other training patients (``splits/train.txt``) are unannotated; the
engine trains 2D networks with the given strategy and CPU budget; each validation volume
(10 patients x 2 frames) is predicted slice by slice and scored in 3D per class: Dice and HD95
(voxels: the ACDC copy lost its spacing), next to the reference results in docs/methods.md.

The engine trains on native-resolution crops, so slice-by-slice inference at native resolution is
inference at the training resolution (the papers resize every slice to 256 x 256 for both). Slice
mode treats a slice with no label at all as unannotated, so the few empty slices of annotated
volumes count as unannotated data here, where the papers use them as labelled background.

    python benchmarks/acdc_ssl_protocol.py --strategies supervised cross_teaching cct_r --labeled 1 3 7 --minutes 20
    python benchmarks/acdc_ssl_protocol.py --strategies cct_r --labeled 3 --minutes 60
    python benchmarks/acdc_ssl_protocol.py --labeled 1 --iterations 5 --unlabeled-limit 2 --val-limit 1 --name smoke

Results: resources/benchmarks/<name>.json (one row per strategy x labeled x budget; rows already
there are skipped, so an interrupted run resumes) and <name>.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from protocol_common import (ACDC, ACDC_CLASSES, RESULTS, ResultFile, add_run_options, class_values, command_line,
                             require, score, summarise, train_and_predict, volume_mean_dice, write_markdown)

from napari_semiseg.core.volume import read_volume

# docs/methods.md, "Reference results": 3D Dice (%) on this split, GPU, 30k-40k iterations (thesis tables 5.2, 6.1)
REFERENCE = {
    "LS (U-Net)": {1: 26.4, 3: 51.2, 7: 75.9}, "MT": {3: 56.6, 7: 80.9}, "CPS": {3: 60.3, 7: 85.0},
    "CTS": {1: 46.8, 3: 65.6, 7: 86.4}, "MCSC": {1: 58.6, 3: 73.6, 7: 89.4},
    "MCSCv2": {1: 59.8, 3: 76.3, 7: 89.5}, "CCT-R": {1: 80.4, 3: 85.7, 7: 90.3},
}
COUNTERPART = {"supervised": "LS (U-Net)", "mean_teacher": "MT", "cross_teaching": "CTS", "mcsc": "MCSC",
               "mcsc_v2": "MCSCv2", "cct_r": "CCT-R"}


def patient_volumes(patient: str) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (ACDC / "nifti").glob(f"{patient}_frame??.nii.gz"))


def split(labeled: int) -> tuple[list[str], list[str], list[str]]:
    """Annotated, unannotated and validation volume names for ``labeled`` annotated patients."""
    splits = ACDC / "splits"
    order = (splits / "labeled_order.txt").read_text().split()[:labeled]
    rest = [p for p in (splits / "train.txt").read_text().split() if p not in order]
    validation = (splits / "val.txt").read_text().split()
    return volumes_of(order), volumes_of(rest), volumes_of(validation)


def volumes_of(patients: list[str]) -> list[str]:
    return [volume for patient in patients for volume in patient_volumes(patient)]


def load(name: str, with_truth: bool = True):
    folder = ACDC / "nifti"
    image = read_volume(folder / f"{name}.nii.gz")
    return image, read_volume(folder / f"{name}_gt.nii.gz").array if with_truth else None


def run(strategy: str, labeled: int, args, workdir: Path) -> dict:
    from napari_semiseg.core.annotations import AnnotationScheme
    from napari_semiseg.core.config import TrainConfig

    annotated, unannotated, validation = split(labeled)
    unannotated = unannotated[: args.unlabeled_limit] if args.unlabeled_limit is not None else unannotated
    validation = validation[: args.val_limit] if args.val_limit else validation
    train_pairs = [load(n) for n in annotated]
    volumes = [image for image, _ in train_pairs] + [load(n, False)[0] for n in unannotated]
    labels = [truth for _, truth in train_pairs] + [None] * len(unannotated)
    targets = [load(n) for n in validation]
    budget = {"iterations": args.iterations} if args.iterations else {"minutes": args.minutes}
    config = TrainConfig(strategy=strategy, device="cpu", seed=args.seed, threads=args.threads, **budget)
    predictions, info = train_and_predict(volumes, labels, AnnotationScheme(), config, [t[0] for t in targets],
                                          workdir / f"{strategy}_{labeled}")
    volumes_scores = [{"case": name, "scores": score(prediction, truth, ACDC_CLASSES)}
                      for name, prediction, (_, truth) in zip(validation, predictions, targets)]
    return {"strategy": strategy, "labeled": labeled, "budget": _budget_label(args), "seed": args.seed,
            "annotated_volumes": annotated, "unannotated_volumes": len(unannotated), **info,
            "volumes": volumes_scores}


def _budget_label(args) -> str:
    return f"{args.iterations} it" if args.iterations else f"{args.minutes:g} min"


def table(rows: list[dict]) -> list[str]:
    lines = ["| strategy | labeled patients | budget | iterations | Dice % | Dice RV / Myo / LV | HD95 (voxels) | "
             "reference Dice % (methods.md) |", "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["labeled"], r["strategy"], r["budget"])):
        volumes = row["volumes"]
        mean = 100 * float(np.nanmean([volume_mean_dice(v) for v in volumes]))
        per_class = " / ".join(f"{100 * summarise(class_values(volumes, 'dice', c))['mean']:.1f}" for c in ACDC_CLASSES)
        hd = summarise(class_values(volumes, "hd95"))
        hd_text = ("n/a" if math.isnan(hd["mean"]) else f"{hd['mean']:.2f}") + (
            f" ({hd['infinite']} inf)" if hd["infinite"] else "")
        lines.append(f"| {row['strategy']} | {row['labeled']} | {row['budget']} | {row['iterations']} | {mean:.1f} | "
                     f"{per_class} | {hd_text} | {_reference(row['strategy'], row['labeled'])} |")
    return lines


def _reference(strategy: str, labeled: int) -> str:
    name = COUNTERPART.get(strategy)
    if name and labeled in REFERENCE[name]:
        return f"{name} {REFERENCE[name][labeled]}"
    best = max(REFERENCE, key=lambda n: REFERENCE[n].get(labeled, -1))
    return f"best: {best} {REFERENCE[best].get(labeled, 'n/a')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["supervised", "cross_teaching", "mcsc_v2", "cct_r"])
    parser.add_argument("--labeled", nargs="+", type=int, default=[1, 3, 7], help="annotated patients")
    parser.add_argument("--unlabeled-limit", type=int, help="use only the first N unannotated volumes (quick checks)")
    parser.add_argument("--val-limit", type=int, help="score only the first N validation volumes (quick checks)")
    add_run_options(parser, "acdc_ssl_protocol", minutes=20.0)
    args = parser.parse_args()
    require(ACDC)
    results = ResultFile(RESULTS / f"{args.name}.json", ("strategy", "labeled", "budget", "seed"))
    meta = {"command": command_line(), "distance_unit": "voxels", "scored": "whole validation volumes, 3D"}
    with tempfile.TemporaryDirectory() as tmp:
        for labeled in args.labeled:
            for strategy in args.strategies:
                key = {"strategy": strategy, "labeled": labeled, "budget": _budget_label(args), "seed": args.seed}
                if results.has(**key) and not args.redo:
                    continue
                row = run(strategy, labeled, args, Path(tmp))
                results.add(row, meta)
                print("\n".join(table([row])[2:]), flush=True)
    notes = ["SSL4MIS split; N annotated patients (first N of labeled_order.txt, both frames), the other training "
             "patients unannotated; scored on the validation volumes (20 unless --val-limit), 3D per class, Dice in %, HD95 in voxels "
             "(mean of finite per-class values; '(n inf)': class-volume pairs missed or spurious). Reference: docs/methods.md "
             "(GPU, 30k-40k iterations, slices resized to 256 x 256)."]
    write_markdown(RESULTS / f"{args.name}.md", "ACDC semi-supervised protocol", meta["command"], notes,
                   table(results.rows))


if __name__ == "__main__":
    main()
