"""Left-atrium protocol (2018 Atrial Segmentation Challenge, 24 volumes in ../shared).

Leave-out evaluation over the annotated pool: the 24 volumes are split into ``--folds`` folds in
the order of ``train.txt``; for each fold, its volumes are held out (never trained on) and scored,
the first N of the other volumes are annotated (every slice with a label; N = 4 or 8) and the
rest are unannotated training data. The engine trains slice-wise along z with the given strategy
and CPU budget; each held-out volume is predicted and scored in 3D: Dice, HD95 and ASD in mm
(0.625 mm isotropic), NSD at ``--tolerance`` mm. ASD here is symmetric (MedPy's ``asd``, used by
the LA papers, is directed from the prediction to the truth).

    python benchmarks/la_protocol.py --annotated 4 8 --strategies supervised registration_supervised --minutes 20
    python benchmarks/la_protocol.py --annotated 4 --folds 4 --fold 0 --iterations 5 --unlabeled-limit 2 --name smoke

Results: resources/benchmarks/<name>.json (one row per strategy x N x fold x budget; rows already
there are skipped, so an interrupted run resumes) and <name>.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from protocol_common import (LA, RESULTS, ResultFile, add_run_options, command_line, require, score, summary_cells,
                             summary_header, train_and_predict, write_markdown)

from napari_semiseg.core.volume import read_volume

CLASSES = {1: "LA"}


def folds(names: list[str], count: int) -> list[list[str]]:
    """``count`` contiguous folds of nearly equal size, in the order given."""
    return [list(part) for part in np.array_split(np.asarray(names), count)]


def load(name: str):
    folder = LA / "nifti"
    return read_volume(folder / f"{name}.nii.gz"), read_volume(folder / f"{name}_gt.nii.gz").array


def run(strategy: str, annotated: int, fold: int, args, workdir: Path) -> dict:
    from napari_semiseg.core.annotations import AnnotationScheme
    from napari_semiseg.core.config import TrainConfig

    names = (LA / "train.txt").read_text().split()
    held_out = folds(names, args.folds)[fold]
    pool = [n for n in names if n not in held_out]
    labelled, unlabelled = pool[:annotated], pool[annotated:]
    unlabelled = unlabelled[: args.unlabeled_limit] if args.unlabeled_limit is not None else unlabelled
    labelled_data = [load(n) for n in labelled]
    volumes = [image for image, _ in labelled_data] + [load(n)[0] for n in unlabelled]
    labels = [truth for _, truth in labelled_data] + [None] * len(unlabelled)
    targets = [load(n) for n in held_out]
    budget = {"iterations": args.iterations} if args.iterations else {"minutes": args.minutes}
    config = TrainConfig(strategy=strategy, device="cpu", seed=args.seed, threads=args.threads, **budget)
    predictions, info = train_and_predict(volumes, labels, AnnotationScheme(), config, [image for image, _ in targets],
                                          workdir / f"{strategy}_{annotated}_{fold}")
    scored = [{"case": name, "scores": score(prediction, truth, CLASSES, image.geometry.spacing, None,
                                             args.tolerance, args.band_width)}
              for name, prediction, (image, truth) in zip(held_out, predictions, targets)]
    return {"strategy": strategy, "annotated": annotated, "fold": fold, "folds": args.folds,
            "budget": _budget_label(args), "seed": args.seed, "annotated_volumes": labelled,
            "unannotated_volumes": len(unlabelled), **info, "volumes": scored}


def _budget_label(args) -> str:
    return f"{args.iterations} it" if args.iterations else f"{args.minutes:g} min"


def table(rows: list[dict]) -> list[str]:
    lines = summary_header(CLASSES, ["strategy", "annotated", "budget", "folds"])
    groups = sorted({(r["strategy"], r["annotated"], r["budget"]) for r in rows}, key=lambda g: (g[1], g[0], g[2]))
    for strategy, annotated, budget in groups:
        mine = [r for r in rows if (r["strategy"], r["annotated"], r["budget"]) == (strategy, annotated, budget)]
        volumes = [v for r in mine for v in r["volumes"]]
        fold_list = ",".join(str(fold) for fold in sorted(r["fold"] for r in mine))
        cells = [strategy, str(annotated), budget, fold_list, str(len(volumes))]
        lines.append("| " + " | ".join(cells + summary_cells(volumes, CLASSES)) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["supervised", "registration_supervised"])
    parser.add_argument("--annotated", nargs="+", type=int, default=[4, 8], help="annotated volumes per fold")
    parser.add_argument("--folds", type=int, default=4, help="held-out folds over the 24 volumes")
    parser.add_argument("--fold", nargs="+", type=int, help="run only these folds (default: all)")
    parser.add_argument("--unlabeled-limit", type=int, help="use only the first N unannotated volumes (quick checks)")
    add_run_options(parser, "la_protocol", minutes=20.0, unit="mm")
    args = parser.parse_args()
    require(LA)
    results = ResultFile(RESULTS / f"{args.name}.json", ("strategy", "annotated", "fold", "budget", "seed"))
    meta = {"command": command_line(), "distance_unit": "mm", "tolerance": args.tolerance, "folds": args.folds}
    with tempfile.TemporaryDirectory() as tmp:
        for annotated in args.annotated:
            for fold in args.fold if args.fold is not None else range(args.folds):
                for strategy in args.strategies:
                    key = {"strategy": strategy, "annotated": annotated, "fold": fold, "budget": _budget_label(args),
                           "seed": args.seed}
                    if results.has(**key) and not args.redo:
                        continue
                    row = run(strategy, annotated, fold, args, Path(tmp))
                    results.add(row, meta)
                    print("\n".join(table([row])[2:]), flush=True)
    notes = [f"Left atrium, 24 volumes, {args.folds} held-out folds; N annotated of the other volumes, the rest "
             "unannotated. 3D scores per held-out volume; HD95 and ASD in mm (mean of finite values; '(n inf)': "
             f"volumes missed or spurious), NSD at {args.tolerance:g} mm."]
    write_markdown(RESULTS / f"{args.name}.md", "Left-atrium protocol", meta["command"], notes, table(results.rows))


if __name__ == "__main__":
    main()
