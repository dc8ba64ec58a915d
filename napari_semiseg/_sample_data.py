"""Sample data: a 2 mm MNI152 brain bundled with the package (see data/NOTICE).

``load_sample_volumes`` needs neither napari nor Qt, so the CLI and tests can use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_semiseg._reader import layer_kwargs
from napari_semiseg.core.volume import Volume, read_volume

DATA_DIR = Path(__file__).with_name("data")
IMAGE_FILE = DATA_DIR / "mni152_t1_2mm.nii.gz"
TISSUE_FILE = DATA_DIR / "mni152_tissue_2mm.nii.gz"
TISSUE_NAMES = {0: "background", 1: "grey matter", 2: "white matter", 3: "ventricles"}


def load_sample_volumes() -> tuple[Volume, Volume]:
    """The bundled MNI152 T1 (uint8) and its tissue labels (uint8, see ``TISSUE_NAMES``)."""
    return read_volume(IMAGE_FILE), read_volume(TISSUE_FILE)


def mni152_sample() -> list[tuple]:
    """The T1 image and an empty ``annotations`` labels layer on the same grid, ready to paint."""
    image, _ = load_sample_volumes()
    empty = np.zeros(image.shape, dtype=np.uint8)
    return [
        (image.array, layer_kwargs(image, "MNI152 T1", "sample"), "image"),
        (empty, layer_kwargs(image, "annotations", "sample"), "labels"),
    ]


def mni152_tissue_sample() -> list[tuple]:
    """The T1 image and the reference tissue labels derived from the MNI probability maps."""
    image, tissue = load_sample_volumes()
    return [
        (image.array, layer_kwargs(image, "MNI152 T1", "sample"), "image"),
        (tissue.array, layer_kwargs(tissue, "MNI152 tissue", "sample"), "labels"),
    ]
