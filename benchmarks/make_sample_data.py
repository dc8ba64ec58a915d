"""Derive the bundled sample (napari_semiseg/data/) from the MNI ICBM152 2009a template.

Run once from the project root:  python benchmarks/make_sample_data.py [--source DIR]

What it does, in order:
1. reads the 1 mm T1 and the grey- and white-matter probability maps;
2. crops to the brain (GM + WM probability >= 0.5) plus a 4 mm margin, with even lengths;
3. averages 2x2x2 blocks (1 mm -> 2 mm, the block mean is the anti-aliasing filter);
4. labels each 2 mm voxel: 1 grey matter / 2 white matter where GM + WM >= 0.5 (the larger of
   the two wins), else 0; then 3 = ventricles: the largest region of non-tissue voxels that the
   tissue mask encloses completely in 3D (found by hole filling; no CSF map is used);
5. flips axes so the direction is the identity (LPS), which leaves every voxel at the same
   physical position and lets napari place the layers with a plain 2 mm scale;
6. writes uint8 NIfTI files and a NOTICE beside them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_semiseg.core.volume import Geometry, Volume, read_volume, write_volume

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mni152"
DESTINATION = ROOT / "napari_semiseg" / "data"
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
MARGIN_MM = 4
FACTOR = 2


def brain_box(mask: np.ndarray, margin: int, factor: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` plus ``margin`` voxels, lengths rounded up to a multiple of factor."""
    found = np.argwhere(mask)
    box = []
    for low, high, size in zip(found.min(0) - margin, found.max(0) + 1 + margin, mask.shape):
        length = -(-(int(high) - int(low)) // factor) * factor
        high = min(int(low) + length, size)
        low = max(high - length, 0)
        box.append(slice(low, high - (high - low) % factor))
    return tuple(box)


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    z, y, x = (s // factor for s in array.shape)
    blocks = array[: z * factor, : y * factor, : x * factor].astype(np.float32)
    return blocks.reshape(z, factor, y, factor, x, factor).mean(axis=(1, 3, 5))


def downsampled_geometry(geometry: Geometry, start: tuple[int, ...], factor: int) -> Geometry:
    """Geometry of block-averaged voxels: each new voxel sits at the centre of its block."""
    centre = np.asarray(start, dtype=float) + (factor - 1) / 2
    origin = geometry.index_to_physical(centre)[0]
    spacing = tuple(s * factor for s in geometry.spacing)
    return Geometry(spacing, tuple(origin), geometry.direction)


def to_identity_direction(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """Flip axes whose direction is -1 so the direction becomes the identity (flips only)."""
    matrix = geometry.direction_matrix
    if not np.allclose(np.abs(matrix), np.eye(3)):
        raise ValueError("Only axis flips are handled; this direction permutes or rotates axes.")
    flipped = [axis for axis in range(3) if matrix[axis, axis] < 0]
    corner = [array.shape[axis] - 1 if axis in flipped else 0 for axis in range(3)]
    origin = geometry.index_to_physical(corner)[0]
    return np.flip(array, axis=flipped).copy(), Geometry(geometry.spacing, tuple(origin))


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """0 background, 1 grey matter, 2 white matter, 3 enclosed CSF (ventricles)."""
    tissue = (gm + wm) >= 0.5
    labels = np.where(tissue, np.where(wm > gm, 2, 1), 0).astype(np.uint8)
    enclosed, count = ndi.label(ndi.binary_fill_holes(tissue) & ~tissue)
    if count:
        largest = 1 + int(np.argmax(np.bincount(enclosed.ravel())[1:]))
        labels[enclosed == largest] = 3
    return labels


def make_sample(source: Path) -> tuple[Volume, Volume]:
    t1, gm, wm = (read_volume(source / TEMPLATE.format(kind)) for kind in ("t1", "gm", "wm"))
    gm_prob, wm_prob = gm.array / 255.0, wm.array / 255.0
    box = brain_box(gm_prob + wm_prob >= 0.5, MARGIN_MM, FACTOR)
    geometry = downsampled_geometry(t1.geometry, tuple(s.start for s in box), FACTOR)
    image = np.clip(np.rint(block_mean(t1.array[box], FACTOR)), 0, 255).astype(np.uint8)
    labels = tissue_labels(block_mean(gm_prob[box], FACTOR), block_mean(wm_prob[box], FACTOR))
    image, final = to_identity_direction(image, geometry)
    labels, _ = to_identity_direction(labels, geometry)
    return (
        Volume(image, final, "mni152_t1_2mm", "sample"),
        Volume(labels, final, "mni152_tissue_2mm", "sample"),
    )


NOTICE_DERIVED = """
Derived files in this folder (made by benchmarks/make_sample_data.py):
- mni152_t1_2mm.nii.gz: the T1 template cropped to the brain (grey + white matter probability
  >= 0.5) with a 4 mm margin, averaged over 2x2x2 blocks to 2 mm voxels, rounded to uint8.
- mni152_tissue_2mm.nii.gz: uint8 labels on the same grid: 1 grey matter, 2 white matter where
  the block-averaged grey + white probability is >= 0.5 (the larger of the two wins), 0 elsewhere;
  3 = ventricles, defined here as the largest non-tissue region that the tissue mask encloses in
  3D. No CSF map was used: label 3 is a geometric approximation, not an expert delineation.
Both files were reoriented to an identity direction (LPS) by flipping array axes; every voxel
keeps its physical position in MNI space.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args(argv)
    image, labels = make_sample(args.source)
    DESTINATION.mkdir(parents=True, exist_ok=True)
    for volume in (image, labels):
        path = write_volume(volume, DESTINATION / f"{volume.name}.nii.gz")
        print(f"{path.relative_to(ROOT)}: {volume.shape} {path.stat().st_size / 1024:.0f} KiB")
    counts = np.bincount(labels.array.ravel(), minlength=4)
    print("label voxels (0..3):", counts.tolist(), "ml:", (counts * 8 / 1000).round(1).tolist())
    notice = (args.source / "NOTICE.txt").read_text().rstrip() + "\n" + NOTICE_DERIVED
    (DESTINATION / "NOTICE").write_text(notice)


if __name__ == "__main__":
    main()
