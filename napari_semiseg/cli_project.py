"""Command-line ``project`` subcommands and the ``--project`` option of ``train`` and ``predict``.

``napari-semiseg project init DIR IMAGE... [--labels LABEL...] [--classes 1=name ...]`` makes a
project folder, ``project show DIR`` describes it, ``project relink DIR NAME PATH`` points a
volume at a moved image. ``train --project DIR`` trains on the project's volumes and saved
annotations into ``DIR/runs/<time>/``; ``predict --project DIR`` uses the project's newest model
and volumes and writes into ``DIR/predictions/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .core.annotations import AnnotationError, AnnotationMode, AnnotationScheme, annotated_slices, check_label_classes
from .core.project import Project, ProjectError
from .core.volume import Volume, check_same_grid, read_volume


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``project init``, ``project add``, ``project show`` and ``project relink``."""
    project = subparsers.add_parser("project", help="create or inspect a project folder")
    actions = project.add_subparsers(dest="project_command", required=True)
    init = actions.add_parser("init", help="make a project folder referring to images (they are not copied)")
    init.add_argument("folder")
    init.add_argument("images", nargs="*", metavar="IMAGE")
    init.add_argument("--labels", nargs="+", default=[], metavar="LABEL",
                      help="existing annotations, paired with the first images in order")
    init.add_argument("--classes", nargs="+", default=[], metavar="VALUE=NAME", help="for example 1=ventricle")
    init.add_argument("--scribbles", action="store_true", help="only painted voxels are known")
    init.add_argument("--background-label", type=int, help="label value painted as background (scribbles)")
    init.add_argument("--axis", type=int, default=0, choices=[0, 1, 2], help="annotation axis (0 = z)")
    init.set_defaults(handler=run_project_init)
    add = actions.add_parser("add", help="add image files, or every volume in folders (recursively), to a project")
    add.add_argument("folder")
    add.add_argument("paths", nargs="+", metavar="PATH",
                     help="NIfTI, MHA/MHD or NRRD files, DICOM series folders, or folders holding any of them")
    add.set_defaults(handler=run_project_add)
    show = actions.add_parser("show", help="list a project's volumes, annotations and models")
    show.add_argument("folder")
    show.set_defaults(handler=run_project_show)
    relink = actions.add_parser("relink", help="point a volume at its image's new location (same content)")
    relink.add_argument("folder")
    relink.add_argument("name")
    relink.add_argument("path")
    relink.set_defaults(handler=run_project_relink)


def describe_project(project: Project) -> str:
    """A few lines for ``napari-semiseg project show``."""
    lines = [f"project {project.folder}",
             f"annotation: {project.scheme.mode.value} along axis {project.scheme.axis}",
             "classes: " + (", ".join(f"{k} {v}" for k, v in sorted(project.classes.items())) or "not named")]
    for volume in project.volumes:
        saved = project.annotations_path(volume.name)
        state = time.strftime("saved %Y-%m-%d %H:%M:%S", time.localtime(saved.stat().st_mtime)) \
            if saved.exists() else "no annotations yet"
        lines.append(f"volume {volume.name}: {volume.path} {tuple(volume.shape)}, {state}")
    for run in project.runs:
        lines.append(f"model {run.path}: {run.strategy}, {run.iteration} iterations, "
                     f"{run.annotated_slices} annotated slices, {run.created}")
    return "\n".join(lines)


def parse_classes(items: list[str]) -> dict[int, str]:
    classes = {}
    for item in items:
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or not name.strip() or int(value) == 0:
            raise ProjectError(f"'{item}' is not VALUE=NAME with a label value above 0 (for example 1=ventricle).")
        classes[int(value)] = name.strip()
    return classes


def run_project_init(args: argparse.Namespace) -> int:
    if len(args.labels) > len(args.images):
        raise ProjectError(f"{len(args.labels)} label files for {len(args.images)} images: at most one per image.")
    mode = AnnotationMode.SCRIBBLES if args.scribbles else AnnotationMode.SLICES
    scheme = AnnotationScheme(mode, args.axis, args.background_label)
    classes = parse_classes(args.classes)
    labels = [_checked_labels(image, label, classes, scheme) for image, label in zip(args.images, args.labels)]
    project = Project.create(args.folder, args.images, classes, scheme)
    for entry, array in zip(project.volumes, labels):
        project.save_annotations(entry.name, array)
    print(describe_project(project))
    return 0


def _checked_labels(image_path: str, labels_path: str, classes: dict[int, str], scheme: AnnotationScheme):
    image, labels = read_volume(image_path), read_volume(labels_path)
    check_same_grid(image, labels)
    if labels.array.dtype.kind not in "biu":
        raise AnnotationError(f"The labels '{labels.name}' hold {labels.array.dtype} values; label values must be "
                              "whole numbers.")
    if labels.array.size and labels.array.min() < 0:
        raise AnnotationError(f"The labels '{labels.name}' contain negative values; labels must be 0 or positive.")
    if classes:
        check_label_classes(labels.array, classes, scheme, name=f"labels '{labels.name}'")
    return labels.array


def run_project_add(args: argparse.Namespace) -> int:
    """Add volumes with a line of progress each; fails only when none could be added."""
    from .core.volume_sources import VolumeAdded, VolumesAdded, VolumeSkipped, add_volumes

    project = Project.open(args.folder)
    for event in add_volumes(project, args.paths):
        if isinstance(event, VolumeAdded):
            print(f"[{event.done}/{event.total}] added {event.name}: {event.path}", flush=True)
        elif isinstance(event, VolumeSkipped):
            print(f"[{event.done}/{event.total}] skipped {event.path}: {event.reason}", file=sys.stderr, flush=True)
        elif isinstance(event, VolumesAdded):
            print(f"{len(event.names)} volumes added, {event.skipped} skipped ({event.seconds:.1f} s); "
                  f"the project has {len(project.volumes)}.")
            return 0 if event.names or not event.skipped else 1
    return 0


def run_project_show(args: argparse.Namespace) -> int:
    project = Project.open(args.folder)
    print(describe_project(project))
    problems = []
    for name in project.volume_names:
        try:
            project.check_source(name)
        except ProjectError as error:
            problems.append(str(error))
    for note in project.recovery_notes + problems:
        sys.stderr.write(note + "\n")
    return 2 if problems else 0


def run_project_relink(args: argparse.Namespace) -> int:
    project = Project.open(args.folder)
    project.relink(args.name, args.path)
    print(f"{args.name}: now read from {project.source_path(args.name)}")
    return 0


# ----- train / predict --project --------------------------------------------------------------


def training_inputs(project: Project) -> tuple[list[Volume], list, AnnotationScheme]:
    """The project's volumes, their saved annotations (None where none) and scheme."""
    volumes, labels = [], []
    for name in project.volume_names:
        volumes.append(project.read_volume(name))
        saved = project.load_annotations(name)
        if saved is not None and saved.note:
            sys.stderr.write(saved.note + "\n")
        if saved is not None and project.classes:
            check_label_classes(saved.labels, project.classes, project.scheme, name=f"annotations of '{name}'")
        labels.append(saved.labels if saved is not None else None)
    if not volumes:
        raise ProjectError(f"The project '{project.folder}' has no volumes yet; add images with `project init`.")
    return volumes, labels, project.scheme


def annotated_slice_count(labels: list, scheme: AnnotationScheme) -> int:
    return sum(len(annotated_slices(array, scheme.axis)) for array in labels if array is not None)


def resume_path(project: Project, resume: str | None) -> str | None:
    """``--resume last`` in a project: its newest model or checkpoint (also of an interrupted run)."""
    if resume != "last":
        return resume
    latest = project.latest_resumable()
    if latest is None:
        raise ProjectError(f"The project '{project.folder}' has no model to resume from yet; train without --resume.")
    return str(latest)


def saved_annotations(project: Project) -> list:
    """Each project volume's saved annotations (None where none), in :attr:`Project.volume_names` order."""
    saved = [project.load_annotations(name) for name in project.volume_names]
    return [entry.labels if entry is not None else None for entry in saved]


def prediction_inputs(project: Project, model: str | None) -> tuple[str, list[Volume], Path]:
    """The model (given, else the project's newest), the project's volumes and its predictions folder."""
    if model is None:
        latest = project.latest_model() or project.latest_resumable()
        if latest is None:
            raise ProjectError(f"The project '{project.folder}' has no trained model yet; train first.")
        model = str(latest)
    return model, [project.read_volume(name) for name in project.volume_names], project.predictions_dir
