"""Command line: train, predict, list strategies, open the demo.

Other tools rely on these commands and the files they write; keep them stable.
argparse lives only here, over typed functions of the core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from . import cli_project

from .cli_project import add_parsers as add_project_parsers
from .cli_evaluate import add_parsers as add_evaluate_parsers
from .cli_registration import add_parsers as add_registration_parsers
from .core.config import DEFAULT_STRATEGY

log = logging.getLogger("napari_semiseg")


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-semiseg",
        description="Semi-supervised segmentation of 3D medical images from a few painted slices.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_predict(commands)
    strategies = commands.add_parser("strategies", help="list the training strategies")
    strategies.set_defaults(handler=run_strategies)
    demo = commands.add_parser("demo", help="open napari with the plugin docked and the bundled sample")
    demo.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and quit")
    demo.set_defaults(handler=run_demo)
    add_registration_parsers(commands)
    add_project_parsers(commands)
    add_evaluate_parsers(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model from images and sparse labels",
        description=(
            "Label files pair with the first images in order; images without a label file are "
            "unannotated training data. Slice mode by default: a slice with any painted voxel is "
            "fully annotated and its unpainted voxels are background."
        ),
    )
    train.add_argument("images", nargs="*", metavar="IMAGE")
    train.add_argument("--labels", nargs="+", default=[], metavar="LABEL")
    train.add_argument("--strategy", default=DEFAULT_STRATEGY)
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--iterations", type=int)
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    train.add_argument("--scribbles", action="store_true", help="only painted voxels are known")
    train.add_argument("--background-label", type=int, help="label value painted as background (scribbles)")
    train.add_argument("--axis", type=int, default=0, choices=[0, 1, 2], help="annotation axis (0 = z)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--patch-size", type=int, default=128)
    train.add_argument("--network-size", default="auto", choices=["auto", "cpu", "paper"])
    train.add_argument("--boundary-weight", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    train.add_argument("--registration-share", type=float, default=0.25,
                       help="with --minutes, the largest share of the budget spent registering unannotated "
                            "volumes for registration pseudo-labels (default 0.25)")
    train.add_argument("--resume", metavar="MODEL", help="continue from a model folder or checkpoint "
                       "('last' with --project: the project's newest model or checkpoint)")
    train.add_argument("--out", metavar="MODEL_DIR", help="required unless --project is given")
    train.add_argument("--project", metavar="DIR", help="train on a project's volumes and saved annotations")
    train.set_defaults(handler=run_train)


def _add_predict(commands) -> None:
    predict = commands.add_parser("predict", help="segment volumes with a trained model")
    predict.add_argument("model", nargs="?", metavar="MODEL_DIR", help="with --project: the newest model if omitted")
    predict.add_argument("images", nargs="*", metavar="IMAGE")
    predict.add_argument("--project", metavar="DIR", help="predict a project's volumes into DIR/predictions")
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    predict.add_argument("--disagreement", action="store_true", help="also write <name>_disagreement.nii.gz")
    predict.add_argument("--labels", nargs="+", default=[], metavar="LABELS",
                         help="painted slices (or scribbles) of each IMAGE (same order), blended into its prediction")
    predict.add_argument("--network-only", action="store_true",
                         help="do not blend painted slices (the project's annotations, --labels) into the prediction")
    predict.add_argument("--out", metavar="OUT_DIR", help="required unless --project is given")
    predict.set_defaults(handler=run_predict)


def run_strategies(args: argparse.Namespace) -> int:
    from .core.engine.presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for name, preset in PRESETS.items():
        print(f"{name:<{width}}  {preset.summary}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .core.annotations import AnnotationMode, AnnotationScheme
    from .core.config import TrainConfig
    from .core.engine import TrainingData, train
    from .core.engine.checkpoint import load_checkpoint
    from .core.events import (CheckpointSaved, PseudoLabelsLimited, PseudoLabelsReady, StepCompleted,
                              TrainingFinished, TrainingStarted)
    from .core.volume import check_same_grid, read_volume

    project = _project(args, "train", needs_out=True)
    cache = None
    if project is not None:
        volumes, labels, scheme = cli_project.training_inputs(project)
        cache = str(project.registration_cache_dir)
        args.out = args.out or str(project.new_run_dir())
        args.resume = cli_project.resume_path(project, args.resume)
    else:
        if len(args.labels) > len(args.images):
            raise UsageError(f"{len(args.labels)} label files for {len(args.images)} images: give at most one per "
                             "image.")
        volumes = [read_volume(path) for path in args.images]
        label_volumes = [read_volume(path) for path in args.labels]
        for volume, label_volume in zip(volumes, label_volumes):
            check_same_grid(volume, label_volume)
        labels = [v.array for v in label_volumes] + [None] * (len(volumes) - len(args.labels))
        mode = AnnotationMode.SCRIBBLES if args.scribbles else AnnotationMode.SLICES
        scheme = AnnotationScheme(mode, args.axis, args.background_label)
    config = TrainConfig(
        strategy=args.strategy, minutes=args.minutes, iterations=args.iterations, device=args.device,
        batch_size=args.batch_size, patch_size=args.patch_size, network_size=args.network_size,
        boundary_weight=args.boundary_weight, seed=args.seed, threads=args.threads,
        registration_share=args.registration_share,
    )
    initial = load_checkpoint(args.resume) if args.resume else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 writes and reports
    if main_rank:
        (out / "config.json").write_text(json.dumps({"config": config.to_dict(), "scheme": scheme.to_dict(),
                                                     "images": args.images, "labels": args.labels}, indent=2))
    with open(out / "training_log.jsonl" if main_rank else os.devnull, "w") as journal:
        stop = _stop_on_first_interrupt()
        data = TrainingData(volumes, labels, scheme, registration_cache=cache)
        for event in train(data, config, out, stop, initial_checkpoint=initial):
            if not main_rank:
                continue
            if isinstance(event, TrainingStarted):
                _say(f"training '{event.strategy}' on {event.device}: {event.annotated_slices} annotated and "
                     f"{event.unannotated_slices} unannotated slices, classes {list(event.label_values)}")
            elif isinstance(event, PseudoLabelsReady):
                _say(f"registration pseudo-labels for {volumes[event.volume_index].name} ({event.source}): "
                     f"{event.seconds:.1f} s, mean quality {event.mean_quality:.2f}")
            elif isinstance(event, PseudoLabelsLimited):
                _say(f"registration stopped at its time limit ({event.seconds:.0f} s): {event.registered} "
                     f"unannotated volumes have pseudo-labels, {event.skipped} train without them "
                     "(raise --registration-share or --minutes to register more)")
            elif isinstance(event, StepCompleted):
                journal.write(json.dumps({"iteration": event.iteration, "seconds": round(event.seconds, 2),
                                          **{k: round(v, 5) for k, v in event.terms.items()}}) + "\n")
                _progress(event)
            elif isinstance(event, CheckpointSaved):
                log.info("checkpoint at iteration %d", event.iteration)
            elif isinstance(event, TrainingFinished):
                _say(f"\nfinished after {event.iteration} iterations in {event.seconds:.0f} s: {event.model_path}")
                if len(event.member_dice) > 1:
                    _say("Dice on painted slices: " + ", ".join(f"{k} {v:.3f}" for k, v in event.member_dice.items()))
                if project is not None:
                    project.record_run(event.model_path, config.strategy,
                                       cli_project.annotated_slice_count(labels, scheme), event.iteration)
    return 0


def _project(args: argparse.Namespace, command: str, needs_out: bool):
    """The project of ``--project``, or None; without one, the plain arguments are required."""
    from .core.project import Project

    if args.project:
        return Project.open(args.project)
    if not args.images or (needs_out and not args.out) or (command == "predict" and not (args.model and args.out)):
        wanted = "IMAGE... --out MODEL_DIR" if command == "train" else "MODEL_DIR IMAGE... --out OUT_DIR"
        raise UsageError(f"give {wanted}, or --project DIR")
    return None


def _stop_on_first_interrupt() -> threading.Event:
    """Ctrl-C once: finish the current step and save the model; twice: abort."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        _say("\nstopping after this step (Ctrl-C again to abort without saving)")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
    return stop


def _progress(event) -> None:
    bar = "#" * int(event.progress * 30)
    sys.stderr.write(
        f"\r[{bar:<30}] {event.progress:4.0%} it {event.iteration:>6} loss {event.loss:.4f} "
        f"{event.slices_per_second:5.1f} slices/s"
    )
    sys.stderr.flush()


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


def run_predict(args: argparse.Namespace) -> int:
    from .core.model import load_model
    from .core.predict import painted_prior, predict_volume
    from .core.volume import check_same_grid, read_volume, write_volume

    project = _project(args, "predict", needs_out=True)
    if args.labels and len(args.labels) != len(args.images):
        raise UsageError(f"--labels needs one file per IMAGE, in the same order: {len(args.images)} image(s), "
                         f"{len(args.labels)} labels file(s).")
    images = [read_volume(path) for path in args.images]
    painted = [None] * len(images)
    for index, path in enumerate(args.labels):
        label_volume = read_volume(path)
        check_same_grid(images[index], label_volume)
        painted[index] = label_volume.array
    if project is not None:
        model_path, volumes, default_out = cli_project.prediction_inputs(project, args.model)
        volumes, painted = volumes + images, cli_project.saved_annotations(project) + painted
        out = Path(args.out) if args.out else default_out
    else:
        model_path, volumes, out = args.model, images, Path(args.out)
    model = load_model(model_path, args.device)
    scheme = project.scheme if project is not None else model.scheme
    for volume, labels in zip(volumes, painted):
        prior = None if args.network_only else painted_prior(volume, labels, scheme)
        prediction = predict_volume(model, volume, prior=prior)
        name = volume.name
        write_volume(volume.with_array(prediction.labels), out / f"{name}_seg.nii.gz")
        write_volume(volume.with_array(prediction.certainty), out / f"{name}_certainty.nii.gz")
        if args.disagreement:
            write_volume(volume.with_array(prediction.disagreement), out / f"{name}_disagreement.nii.gz")
        blended = f" ({_annotation_kind(scheme)} blended in)" if prior is not None else ""
        _say(f"{name}: wrote {name}_seg.nii.gz and {name}_certainty.nii.gz to {out}{blended}")
    return 0


def _annotation_kind(scheme) -> str:
    from .core.annotations import AnnotationMode

    return "scribbles" if scheme.mode is AnnotationMode.SCRIBBLES else "painted slices"


def run_demo(args: argparse.Namespace) -> int:
    from .ui.launch import open_demo

    return open_demo(screenshot=args.screenshot)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-semiseg`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130
    except (UsageError, ValueError, RuntimeError, OSError) as error:
        _say(f"napari-semiseg {args.command}: error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
