"""Volumes with their geometry, read and written through SimpleITK.

Arrays are always (z, y, x). Spacing, origin and direction are stored in the same
(z, y, x) order, so nothing downstream has to remember that SimpleITK speaks (x, y, z).
This module is the one place where that conversion happens.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_file

log = logging.getLogger(__name__)

GEOMETRY_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
PLAIN_EXTENSIONS = (".tif", ".tiff", ".npy")
READABLE_EXTENSIONS = GEOMETRY_EXTENSIONS + PLAIN_EXTENSIONS
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
MAX_VOXELS_VARIABLE = "NAPARI_SEMISEG_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 1024**3


class VolumeError(ValueError):
    """A file or array that cannot be used as a volume; the message says what to do."""


@dataclass(frozen=True)
class Geometry:
    """Where voxels sit in physical space, all in (z, y, x) order.

    ``physical = origin + direction @ (spacing * index)`` with index, origin and the
    result in (z, y, x); ``direction`` is a row-major 3x3 matrix.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY
    known: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise VolumeError("Geometry needs 3 spacings, 3 origin values and a 3x3 direction.")
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise VolumeError(f"Voxel spacing must be positive and finite, got {self.spacing}.")

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def is_axis_aligned(self) -> bool:
        return bool(np.allclose(self.direction_matrix, np.eye(3), atol=1e-6))

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map (N, 3) voxel indices (z, y, x) to physical points (z, y, x)."""
        index = np.atleast_2d(np.asarray(index_zyx, dtype=float))
        linear = self.direction_matrix @ np.diag(self.spacing)
        return index @ linear.T + np.asarray(self.origin)

    def affine(self) -> np.ndarray:
        """The 4x4 homogeneous index-to-physical matrix in (z, y, x) order."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def napari_transform(self) -> dict:
        """Keyword arguments that place a napari layer in physical space."""
        if self.is_axis_aligned:
            return {"scale": self.spacing, "translate": self.origin}
        return {"affine": self.affine()}

    def matches(self, other: "Geometry", rtol: float = 1e-4, atol: float = 1e-4) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
            and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def describe_difference(self, other: "Geometry") -> str:
        parts = []
        for name in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if not np.allclose(mine, theirs, rtol=1e-4, atol=1e-4):
                parts.append(f"{name} {np.round(mine, 4).tolist()} vs {np.round(theirs, 4).tolist()}")
        return "; ".join(parts) or "none"

    def to_dict(self) -> dict:
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "known": self.known,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Geometry":
        return cls(
            spacing=tuple(data["spacing"]),
            origin=tuple(data["origin"]),
            direction=tuple(data["direction"]),
            known=bool(data.get("known", True)),
        )

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Geometry":
        direction_xyz = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls(
            spacing=tuple(reversed(image.GetSpacing())),
            origin=tuple(reversed(image.GetOrigin())),
            direction=tuple(direction_xyz[::-1, ::-1].ravel()),
        )

    def apply_to_sitk(self, image: sitk.Image) -> None:
        """Copy this geometry onto a SimpleITK image (converting to x, y, z)."""
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(tuple(reversed(self.origin)))
        image.SetDirection(tuple(self.direction_matrix[::-1, ::-1].ravel()))


@dataclass(eq=False)
class Volume:
    """A 3D array in (z, y, x) order with its physical geometry."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    name: str = "volume"
    source: str | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise VolumeError(
                f"'{self.name}' has {self.array.ndim} dimension(s) {self.array.shape}; "
                "a 3D volume (z, y, x) is needed. For a 2D image, stack it as a single-slice "
                "volume; for 4D data (time or channels), save one 3D frame per file."
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    def with_array(self, array: np.ndarray, name: str | None = None) -> "Volume":
        """A volume in the same geometry with another array (same shape)."""
        if array.shape != self.array.shape:
            raise VolumeError(f"Array shape {array.shape} differs from volume shape {self.shape}.")
        return Volume(array, self.geometry, name or self.name, self.source)

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(_sitk_compatible(self.array)))
        self.geometry.apply_to_sitk(image)
        return image


def volume_stem(path: str | os.PathLike) -> str:
    """File name without its extension(s): ``case01.nii.gz`` -> ``case01``."""
    name = Path(path).name
    for ext in READABLE_EXTENSIONS + (".dcm",):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem if "." in name else name


def is_readable_path(path: str | os.PathLike) -> bool:
    """True if the path looks like something :func:`read_volume` can open."""
    path = Path(path)
    if path.is_dir():
        return bool(_dicom_series_ids(path))
    return path.name.lower().endswith(READABLE_EXTENSIONS + (".dcm",))


def read_volume(path: str | os.PathLike, series_id: str | None = None) -> Volume:
    """Read a 3D volume and its geometry.

    Args:
        path: a NIfTI, MHA/MHD, NRRD, TIFF or ``.npy`` file, or a folder holding a DICOM series.
        series_id: which DICOM series to read when the folder holds several.

    Raises:
        VolumeError: with a message that says what to do when the file cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"'{path}' does not exist. Check the path and try again.")
    if path.is_dir():
        return _read_dicom_folder(path, series_id)
    lower = path.name.lower()
    if lower.endswith(".npy"):
        return _checked(Volume(_load_npy(path), Geometry(known=False), volume_stem(path), str(path)))
    if not lower.endswith(READABLE_EXTENSIONS + (".dcm",)):
        raise VolumeError(
            f"'{path.name}' is not a supported volume. Use NIfTI (.nii/.nii.gz), MHA/MHD, NRRD, "
            "a DICOM series folder, TIFF or .npy."
        )
    _check_file_size_before_reading(path)
    image = _read_sitk_file(path)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise VolumeError(
            f"'{path.name}' has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or "
            "vector data); a greyscale 3D volume is needed. Convert it to greyscale first."
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]  # a single frame: keep its 3D geometry
    geometry = Geometry.from_sitk(image) if image.GetDimension() == 3 else Geometry(known=False)
    if lower.endswith((".tif", ".tiff")):
        geometry = Geometry(known=False)
    array = sitk.GetArrayFromImage(image)
    return _checked(Volume(_drop_singleton_channels(array, path), geometry, volume_stem(path), str(path)))


def _read_sitk_file(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise VolumeError(
            f"Could not read '{path.name}': the file is damaged, truncated or not an image "
            f"({first_line}). Re-export it from its source program."
        ) from None
    _check_nifti_complete(image, path)
    return image


def _check_nifti_complete(image: sitk.Image, path: Path) -> None:
    """ITK pads a truncated NIfTI (.nii or .nii.gz) with zeros and reports no error."""
    keys = set(image.GetMetaDataKeys())
    if not {"vox_offset", "bitpix", "dim[0]"} <= keys:
        return
    ndim = int(image.GetMetaData("dim[0]"))
    voxels = math.prod(int(image.GetMetaData(f"dim[{axis}]")) for axis in range(1, ndim + 1))
    expected = int(float(image.GetMetaData("vox_offset"))) + voxels * int(image.GetMetaData("bitpix")) // 8
    found = _uncompressed_size(path)
    if found < expected:
        raise VolumeError(
            f"Could not read '{path.name}': the file is truncated (it holds less voxel data than "
            "its header describes). Copy or export it again."
        )


def _uncompressed_size(path: Path) -> int:
    """Bytes in the file, or in its gzip stream up to where the stream breaks off."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return path.stat().st_size
    found = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 16):
                found += len(chunk)
    except (EOFError, OSError):  # truncated or corrupt stream: count what came out
        pass
    return found


def _check_file_size_before_reading(path: Path) -> None:
    """Refuse a huge file from its header, before its voxels take up memory."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # reading it properly says what is wrong with it
    check_volume_size(tuple(reversed(reader.GetSize())), path.name)


def _load_npy(path: Path) -> np.ndarray:
    try:
        check_volume_size(np.load(path, mmap_mode="r", allow_pickle=False).shape, path.name)
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise VolumeError(f"Could not read '{path.name}' as a NumPy array: {error}.") from None


def _drop_singleton_channels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[-1] in (3, 4):
        raise VolumeError(
            f"'{path.name}' is a colour (RGB) image; a greyscale 3D volume is needed. "
            "Convert it to greyscale first."
        )
    while array.ndim > 3 and 1 in array.shape:
        array = np.squeeze(array, axis=array.shape.index(1))
    return array


def _checked(volume: Volume) -> Volume:
    if volume.array.dtype == object or volume.array.dtype.kind not in "biuf":
        raise VolumeError(f"'{volume.name}' holds {volume.array.dtype} values; numbers are needed.")
    return volume


def _dicom_series_ids(folder: Path) -> list[str]:
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _read_dicom_folder(folder: Path, series_id: str | None) -> Volume:
    series = _dicom_series_ids(folder)
    if not series:
        raise VolumeError(f"The folder '{folder}' holds no DICOM series. Pick a file or a DICOM folder.")
    if series_id is None and len(series) > 1:
        raise VolumeError(
            f"The folder '{folder}' holds {len(series)} DICOM series ({', '.join(series)}). "
            "Choose one: move each series into its own folder, or pass its series id."
        )
    chosen = series_id or series[0]
    if chosen not in series:
        raise VolumeError(f"Series '{chosen}' is not in '{folder}'; it holds {', '.join(series)}.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise VolumeError(f"Could not read the DICOM series in '{folder}': {error}".strip()) from None
    check_volume_size(tuple(reversed(image.GetSize())), folder.name)
    return _checked(Volume(sitk.GetArrayFromImage(image), Geometry.from_sitk(image), folder.name, str(folder)))


def write_volume(volume: Volume, path: str | os.PathLike, verify: bool = True) -> Path:
    """Write a volume atomically and, by default, re-read it to check it.

    The file is written beside its destination under a temporary name and renamed into
    place, so a crash never leaves a half-written file where the user expects one.

    Raises:
        VolumeError: if the directory is not writable or the re-read file differs.
    """
    path = Path(path)
    lower = path.name.lower()
    if not lower.endswith(GEOMETRY_EXTENSIONS + (".npy", ".tif", ".tiff")):
        raise VolumeError(f"Cannot write '{path.name}': use .nii.gz, .nii, .mha, .nrrd or .npy.")
    suffix = next(ext for ext in GEOMETRY_EXTENSIONS + (".npy", ".tif", ".tiff") if lower.endswith(ext))
    started = False
    try:
        with atomic_file(path, suffix=suffix) as temporary:
            started = True
            _write_file(volume, temporary, suffix)
            if verify:
                _verify_written(volume, temporary)
    except OSError as error:
        if not started:
            raise VolumeError(f"Cannot write into '{path.parent}': {error.strerror}. "
                              "Choose a writable folder.") from None
        raise VolumeError(f"Writing '{path}' failed: {error.strerror or error}. Nothing was overwritten.") from None
    log.info("wrote %s", path)
    return path


def _write_file(volume: Volume, path: Path, suffix: str) -> None:
    if suffix == ".npy":
        with open(path, "wb") as handle:
            np.save(handle, volume.array)
        return
    if suffix in (".mhd", ".nhdr"):
        raise VolumeError("Write a single-file format (.nii.gz, .mha, .nrrd) so the write can be atomic.")
    try:
        sitk.WriteImage(volume.to_sitk(), str(path), useCompression=True)
    except RuntimeError as error:
        raise OSError(str(error).strip().splitlines()[-1]) from None


def _verify_written(volume: Volume, path: Path) -> None:
    reread = read_volume(path)
    if reread.shape != volume.shape:
        raise VolumeError(f"Verification failed: wrote shape {volume.shape}, read back {reread.shape}.")
    if path.suffix not in (".npy", ".tif", ".tiff") and not reread.geometry.matches(volume.geometry):
        difference = volume.geometry.describe_difference(reread.geometry)
        raise VolumeError(f"Verification failed: geometry changed on disk ({difference}).")
    if not np.array_equal(reread.array, _sitk_compatible(volume.array)):
        raise VolumeError("Verification failed: the values read back differ from those written.")


def _sitk_compatible(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def check_image_usable(volume: Volume) -> None:
    """Refuse images no network can learn from, with a message that says why."""
    array = volume.array
    check_volume_size(volume.shape, volume.name)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise VolumeError(
            f"'{volume.name}' has {bad} NaN or infinite voxel(s). Fix or mask them in the source "
            "image (for example replace them with the minimum value) and load it again."
        )
    if array.size and float(array.max()) == float(array.min()):
        raise VolumeError(f"'{volume.name}' is constant (every voxel is {array.flat[0]}); there is nothing to segment.")


def max_voxels() -> int:
    """The largest volume (in voxels) accepted; set ``NAPARI_SEMISEG_MAX_VOXELS`` to change it."""
    value = os.environ.get(MAX_VOXELS_VARIABLE, "")
    try:
        return int(float(value)) if value.strip() else DEFAULT_MAX_VOXELS
    except ValueError:
        log.warning("ignoring %s=%r: not a number", MAX_VOXELS_VARIABLE, value)
        return DEFAULT_MAX_VOXELS


def fitting_shape(shape: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """``shape`` scaled down evenly until it holds at most ``limit`` voxels."""
    factor = (limit / max(math.prod(shape), 1)) ** (1.0 / len(shape))
    return tuple(max(1, int(side * factor)) for side in shape)


def check_volume_size(shape: tuple[int, ...], name: str, limit: int | None = None) -> None:
    """Refuse a volume above the voxel limit, saying which size would fit."""
    limit = max_voxels() if limit is None else limit
    voxels = math.prod(int(s) for s in shape)
    if voxels > limit:
        fits = " x ".join(str(s) for s in fitting_shape(tuple(shape), limit))
        raise VolumeError(
            f"'{name}' is too large: {' x '.join(str(s) for s in shape)} = {voxels:,} voxels, and at most "
            f"{limit:,} fit (for example {fits} at the same proportions). Crop or downsample it, or raise the "
            f"limit with the environment variable {MAX_VOXELS_VARIABLE} if this machine has the memory."
        )


def check_same_grid(image: Volume, labels: Volume) -> None:
    """Refuse labels that do not lie on the image's voxel grid (shape, spacing, origin, direction)."""
    if labels.shape != image.shape:
        raise VolumeError(
            f"The labels '{labels.name}' have shape {labels.shape} but the image '{image.name}' has {image.shape}. "
            "Pick the labels painted on this image."
        )
    if image.geometry.known and labels.geometry.known and not image.geometry.matches(labels.geometry):
        raise VolumeError(
            f"The labels '{labels.name}' lie on another grid than the image '{image.name}' "
            f"({image.geometry.describe_difference(labels.geometry)}). Resample the labels onto the image, "
            "or pick the labels painted on this image."
        )
