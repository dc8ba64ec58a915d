"""Registration between volumes and within a volume, on small synthetic phantoms."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_semiseg.core.registration import (AnnotatedVolume, PairRegistered, PropagationFinished,
                                              RegistrationCache, RegistrationCancelled, RegistrationError,
                                              RegistrationFinished, RegistrationSettings, SlicePropagated,
                                              best_pseudo_label, choose_mode, mean_dice, propagate_labels,
                                              propagate_slices, register_pair, register_to_sources)
from napari_semiseg.core.volume import Geometry, Volume, read_volume, write_volume

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
ROTATED = (1.0, 0.0, 0.0, 0.0, 0.866025, -0.5, 0.0, 0.5, 0.866025)  # 30 degrees in-plane (z, y, x)


def phantom(shape=(12, 64, 64), centre=(32.0, 32.0), size=1.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A heart-like stack: bright disc (3) in a dark ring (2) beside a bright blob (1), in a body."""
    n_z, n_y, n_x = shape
    yy, xx = np.meshgrid(np.arange(n_y, dtype=float), np.arange(n_x, dtype=float), indexing="ij")
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    body = ((yy - n_y / 2) / (0.45 * n_y)) ** 2 + ((xx - n_x / 2) / (0.42 * n_x)) ** 2 < 1
    for z in range(n_z):
        radius = size * 0.13 * min(n_y, n_x) * (1.0 - 0.45 * abs(z - (n_z - 1) / 2) / n_z * 2)
        distance = np.hypot(yy - centre[0], xx - centre[1])
        side = np.hypot(yy - centre[0] + 0.2 * radius, xx - centre[1] + 1.55 * radius) < 0.8 * radius
        labels[z][side] = 1
        labels[z][distance < radius] = 2
        labels[z][distance < 0.62 * radius] = 3
    values = np.array([0.35, 0.7, 0.2, 0.95], np.float32)
    image[:] = np.where(body, values[0], 0.05)
    image = np.where(labels > 0, values[labels], image)
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(image, (0, 1.0, 1.0)) + 0.02 * rng.standard_normal(shape).astype(np.float32)
    return image.astype(np.float32), labels


def shifted(array: np.ndarray, shift: tuple[float, float, float], order: int) -> np.ndarray:
    return ndimage.shift(array, shift, order=order, mode="nearest")


@pytest.fixture(scope="module")
def stack_pair():
    geometry = Geometry(spacing=(6.0, 1.5, 1.25), origin=(10.0, -20.0, 5.0), direction=ROTATED)
    image, labels = phantom()
    moving_image, moving_labels = shifted(image, (0, 4, -3), 1), shifted(labels, (0, 4, -3), 0)
    fixed = Volume(image, geometry, "fixed")
    moving = Volume(moving_image, geometry, "moving")
    return fixed, labels, moving, moving_labels


def test_mode_is_chosen_from_geometry():
    assert choose_mode(((10, 256, 232), Geometry())) == "stack"
    assert choose_mode(((88, 140, 183), Geometry((0.625,) * 3))) == "volume"
    assert choose_mode(((60, 64, 64), Geometry((5.0, 1.0, 1.0)))) == "stack"


def test_stack_registration_recovers_shift_in_fixed_geometry(stack_pair):
    fixed, fixed_labels, moving, moving_labels = stack_pair
    result = register_pair(fixed, moving, moving_labels, RegistrationSettings(cycle=False))
    assert result.labels.shape == fixed.shape and result.labels.dtype == moving_labels.dtype
    assert result.metrics["mode"] == "stack"
    assert mean_dice(result.labels, fixed_labels, (1, 2, 3)) > 0.85
    found = np.array(ndimage.center_of_mass(result.labels == 3))
    expected = np.array(ndimage.center_of_mass(fixed_labels == 3))
    assert np.abs(found - expected).max() < 1.0


def test_volume_registration_recovers_shift_with_rotated_anisotropic_geometry():
    geometry = Geometry(spacing=(2.0, 1.5, 1.5), origin=(3.0, 7.0, -4.0), direction=ROTATED)
    image, labels = phantom((32, 40, 40), (20.0, 20.0), size=1.6)
    image = ndimage.gaussian_filter(image, (1.5, 0.5, 0.5))
    fixed = Volume(image, geometry, "fixed")
    moving = Volume(shifted(image, (2, -3, 2), 1), geometry, "moving")
    settings = RegistrationSettings(mode="volume", cycle=False, sampling=0.2, iterations=200)
    result = register_pair(fixed, moving, shifted(labels, (2, -3, 2), 0), settings)
    assert mean_dice(result.labels, labels, (1, 2, 3)) > 0.8


def test_cycle_scores_and_quality_map_are_in_range(stack_pair):
    fixed, fixed_labels, moving, moving_labels = stack_pair
    result = register_pair(fixed, moving, moving_labels)
    assert np.isfinite(result.score)
    assert result.quality.dtype == np.float32 and result.quality.shape == fixed.shape
    assert 0.0 <= result.quality.min() and result.quality.max() <= 1.0
    assert result.metrics["label_cycle_dice"] > 0.8
    assert result.quality[result.labels == 3].mean() > 0.5


def test_cache_hits_and_invalidates(tmp_path, stack_pair):
    fixed, _, moving, moving_labels = stack_pair
    cache = RegistrationCache(tmp_path / "cache")
    start = time.perf_counter()
    first = register_pair(fixed, moving, moving_labels, cache=cache)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second = register_pair(fixed, moving, moving_labels, cache=cache)
    assert second.cached and not first.cached
    assert time.perf_counter() - start < first_seconds
    np.testing.assert_array_equal(first.labels, second.labels)
    assert second.score == pytest.approx(first.score)
    changed = fixed.with_array(fixed.array * 0.9 + 0.05)
    assert not register_pair(changed, moving, moving_labels, cache=cache).cached


class _StopAfter:
    """A stop flag that turns on after ``calls`` checks (i.e. during the registration)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.count = calls, 0

    def is_set(self) -> bool:
        self.count += 1
        return self.count > self.calls


def test_stop_flag_ends_registration_early():
    image, labels = phantom((32, 40, 40), (20.0, 20.0), size=1.6)
    fixed = Volume(image, Geometry((2.0, 1.0, 1.0)), "fixed")
    moving = Volume(shifted(image, (1, 2, 2), 1), fixed.geometry, "moving")
    settings = RegistrationSettings(mode="volume", deformable=True, iterations=300)
    stop = _StopAfter(5)
    start = time.perf_counter()
    with pytest.raises(RegistrationCancelled):
        register_pair(fixed, moving, labels, settings, stop=stop)
    assert time.perf_counter() - start < 5.0


def test_generator_ends_with_cancelled_event(stack_pair):
    fixed, _, moving, moving_labels = stack_pair
    stop = threading.Event()
    events = []
    for event in register_to_sources([fixed], [AnnotatedVolume(moving, moving_labels)] * 2, stop=stop):
        events.append(event)
        stop.set()
    assert isinstance(events[-1], RegistrationFinished) and events[-1].cancelled
    assert not events[-1].results


def test_best_registration_selection_picks_the_matching_source():
    image, labels = phantom(seed=1)
    target = Volume(image, Geometry((8.0, 1.4, 1.4)), "target")
    close_image, close_labels = phantom(centre=(30.0, 34.0), seed=2)
    far_image, far_labels = phantom(size=0.7, seed=3)
    far_image = np.ascontiguousarray(far_image[:, ::-1, ::-1])
    far_labels = np.ascontiguousarray(far_labels[:, ::-1, ::-1])
    sources = [AnnotatedVolume(Volume(far_image, target.geometry, "far"), far_labels),
               AnnotatedVolume(Volume(close_image, target.geometry, "close"), close_labels)]
    events = list(register_to_sources([target], sources, workers=2))
    assert sum(isinstance(e, PairRegistered) for e in events) == 2
    best = events[-1].results["target"]
    assert best.moving == "close"
    scores = {p.moving: p.score for p in events[-1].pairs}
    assert scores["close"] < scores["far"]
    assert mean_dice(best.labels, labels, (1, 2, 3)) > 0.7
    assert best_pseudo_label(target, sources[1:]).moving == "close"


def test_propagation_fills_slices_between_two_painted_slices():
    image, labels = phantom((12, 64, 64))
    sparse = np.zeros_like(labels)
    sparse[[2, 9]] = labels[[2, 9]]
    events = list(propagate_slices(image, sparse, axis=0))
    assert any(isinstance(e, SlicePropagated) for e in events)
    result = events[-1].result
    assert isinstance(events[-1], PropagationFinished) and not events[-1].cancelled
    assert mean_dice(result.labels[3:9], labels[3:9], (1, 2, 3)) > 0.85
    np.testing.assert_array_equal(result.labels[[2, 9]], labels[[2, 9]])
    assert result.quality.min() >= 0.0 and result.quality.max() <= 1.0
    assert set(result.slice_scores) == set(range(12)) - {2, 9}
    assert all(0.0 <= s <= 1.0 for s in result.slice_scores.values())


def test_propagation_along_another_axis_and_errors():
    image, labels = phantom((12, 48, 48))
    moved_image, moved_labels = np.moveaxis(image, 0, 2).copy(), np.moveaxis(labels, 0, 2).copy()
    sparse = np.zeros_like(moved_labels)
    sparse[..., 5] = moved_labels[..., 5]
    result = propagate_labels(moved_image, sparse, axis=2)
    assert result.labels.shape == moved_labels.shape
    assert mean_dice(result.labels[..., 4:7], moved_labels[..., 4:7], (1, 2, 3)) > 0.8
    with pytest.raises(RegistrationError):
        propagate_labels(image, np.zeros_like(labels))
    with pytest.raises(RegistrationError):
        propagate_labels(image, labels[:-1])


def test_propagation_can_be_cancelled():
    image, labels = phantom((12, 48, 48))
    sparse = np.zeros_like(labels)
    sparse[6] = labels[6]
    stop = threading.Event()
    events = []
    for event in propagate_slices(image, sparse, stop=stop):
        events.append(event)
        stop.set()
    assert events[-1].cancelled and events[-1].result is None


# ---------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    """What the package's cli.py does: build the parser, add our subcommands, dispatch."""
    from napari_semiseg.cli_registration import add_parsers

    parser = argparse.ArgumentParser(prog="napari-semiseg")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture()
def nifti_files(tmp_path, stack_pair):
    fixed, fixed_labels, moving, moving_labels = stack_pair
    paths = {"fixed": tmp_path / "case_a.nii.gz", "moving": tmp_path / "case_b.nii.gz",
             "moving_labels": tmp_path / "case_b_gt.nii.gz", "fixed_labels": tmp_path / "case_a_gt.nii.gz"}
    write_volume(fixed, paths["fixed"])
    write_volume(moving, paths["moving"])
    write_volume(moving.with_array(moving_labels), paths["moving_labels"])
    write_volume(fixed.with_array(fixed_labels), paths["fixed_labels"])
    return paths


def test_cli_register_writes_outputs(tmp_path, nifti_files, stack_pair):
    out = tmp_path / "out"
    code = main(["register", str(nifti_files["fixed"]), str(nifti_files["moving"]),
                 "--moving-labels", str(nifti_files["moving_labels"]), "--out", str(out)])
    assert code == 0
    seg = read_volume(out / "case_a_registered_seg.nii.gz")
    quality = read_volume(out / "case_a_registered_quality.nii.gz")
    assert seg.geometry.matches(stack_pair[0].geometry)
    assert mean_dice(seg.array, stack_pair[1], (1, 2, 3)) > 0.85
    assert quality.array.dtype == np.float32 and 0 <= quality.array.min() <= quality.array.max() <= 1
    import json

    report = json.loads((out / "case_a_registration.json").read_text())
    assert {"score", "seconds", "metrics"} <= set(report)


def test_cli_propagate_writes_outputs(tmp_path, nifti_files, stack_pair):
    fixed, fixed_labels = stack_pair[0], stack_pair[1]
    sparse = np.zeros_like(fixed_labels)
    sparse[[3, 8]] = fixed_labels[[3, 8]]
    sparse_path = tmp_path / "sparse.nii.gz"
    write_volume(fixed.with_array(sparse), sparse_path)
    out = tmp_path / "prop"
    assert main(["propagate", str(nifti_files["fixed"]), "--labels", str(sparse_path), "--out", str(out)]) == 0
    seg = read_volume(out / "case_a_propagated_seg.nii.gz")
    assert mean_dice(seg.array[4:8], fixed_labels[4:8], (1, 2, 3)) > 0.8
    assert (out / "case_a_propagated_quality.nii.gz").exists()


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, nifti_files, capsys):
    out = str(tmp_path / "x")
    assert main(["register", str(tmp_path / "missing.nii.gz"), str(nifti_files["moving"]),
                 "--moving-labels", str(nifti_files["moving_labels"]), "--out", out]) == 2
    small = tmp_path / "small.nii.gz"
    write_volume(Volume(np.zeros((3, 4, 5), np.uint8)), small)
    assert main(["register", str(nifti_files["fixed"]), str(nifti_files["moving"]),
                 "--moving-labels", str(small), "--out", out]) == 2
    empty = tmp_path / "empty.nii.gz"
    write_volume(read_volume(nifti_files["fixed_labels"]).with_array(np.zeros((12, 64, 64), np.uint8)), empty)
    assert main(["propagate", str(nifti_files["fixed"]), "--labels", str(empty), "--out", out]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED / "acdc" / "nifti").is_dir(), reason="../shared data not available")
def test_real_acdc_pair_beats_centre_alignment():
    folder = SHARED / "acdc" / "nifti"
    fixed = read_volume(folder / "patient078_frame01.nii.gz")
    truth = read_volume(folder / "patient078_frame01_gt.nii.gz").array
    moving = read_volume(folder / "patient038_frame01.nii.gz")
    labels = read_volume(folder / "patient038_frame01_gt.nii.gz").array
    result = register_pair(fixed, moving, labels, RegistrationSettings(cycle=False))
    assert result.metrics["mode"] == "stack"
    assert mean_dice(result.labels, truth, (1, 2, 3)) > 0.5
