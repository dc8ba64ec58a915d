"""Metrics against values worked out by hand, with anisotropic spacing, and the empty/absent rules."""

import math

import numpy as np
import pytest

from napari_semiseg.core.metrics import (boundary_dice, class_scores, evaluate_volume, mean_ignoring_absent,
                                         slice_mask, summarise)

SPACING = (2.0, 0.5, 0.5)  # (z, y, x) mm


def plane(z: int, x0: int, shape=(8, 10, 10)) -> np.ndarray:
    """A one-voxel-thick 4 x 4 square: every voxel is a surface voxel."""
    volume = np.zeros(shape, bool)
    volume[z, 2:6, x0:x0 + 4] = True
    return volume


def test_planes_three_slices_apart_are_six_millimetres_apart():
    scores = class_scores(plane(5, 2), plane(2, 2), 1, SPACING, tolerance=5.0)
    assert scores.status == "scored"
    assert scores.dice == 0.0
    assert scores.hd95 == pytest.approx(6.0)  # 3 slices x 2 mm, straight down for every voxel
    assert scores.asd == pytest.approx(6.0)
    assert scores.nsd == 0.0
    assert class_scores(plane(5, 2), plane(2, 2), 1, SPACING, tolerance=6.0).nsd == 1.0
    assert class_scores(plane(5, 2), plane(2, 2), 1, (1.0, 1.0, 1.0)).hd95 == pytest.approx(3.0)


def test_in_plane_shift_by_hand():
    # Shift by 2 columns of 0.5 mm: per direction 8 voxels overlap (0 mm), 4 at 0.5 mm, 4 at 1.0 mm.
    scores = class_scores(plane(2, 4), plane(2, 2), 1, SPACING, tolerance=0.5)
    assert scores.dice == pytest.approx(0.5)
    assert scores.asd == pytest.approx((8 * 0.5 + 8 * 1.0) / 32)
    assert scores.hd95 == pytest.approx(1.0)
    assert scores.nsd == pytest.approx(24 / 32)


def test_boundary_dice_separates_a_shrunken_cube_from_the_truth():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:8, 2:8, 2:8] = True
    inner = np.zeros_like(truth)
    inner[3:7, 3:7, 3:7] = True  # exactly the part of the truth that is not its one-voxel band
    assert boundary_dice(truth, truth, (1, 1, 1), 1.0) == 1.0
    assert boundary_dice(inner, truth, (1, 1, 1), 1.0) == 0.0
    assert class_scores(inner, truth, 1, (1, 1, 1), band_width=1.0).dice == pytest.approx(2 * 64 / (216 + 64))


def test_band_width_follows_the_spacing():
    cube = np.zeros((10, 10, 10), bool)
    cube[2:8, 2:8, 2:8] = True
    # 0.5 mm in-plane, 2 mm between slices: a 1 mm band is two voxels deep in-plane, none across slices.
    from napari_semiseg.core.metrics import boundary_band

    band = boundary_band(cube, SPACING, 1.0)
    assert band[5, 2, 5] and band[5, 3, 5] and not band[5, 4, 5]
    assert not band[2, 5, 5]  # top face: the nearest outside voxel is 2 mm away


def test_empty_prediction_is_missed_never_perfect():
    truth = plane(2, 2)
    scores = class_scores(np.zeros_like(truth), truth, 1, SPACING)
    assert scores.status == "missed"
    assert scores.dice == 0.0 and scores.nsd == 0.0 and scores.boundary_dice == 0.0
    assert math.isinf(scores.hd95) and math.isinf(scores.asd)
    spurious = class_scores(truth, np.zeros_like(truth), 1, SPACING)
    assert spurious.status == "spurious" and spurious.dice == 0.0 and math.isinf(spurious.hd95)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    truth = plane(2, 2).astype(np.uint8)
    result = evaluate_volume(truth, truth, [1, 2], spacing=SPACING)
    assert result.classes[2].status == "absent" and math.isnan(result.classes[2].hd95)
    assert result.means["dice"] == 1.0 and result.means["hd95"] == 0.0
    assert result.to_dict()["classes"]["2"]["dice"] is None
    assert result.unit == "mm"
    assert evaluate_volume(truth, truth, [1]).unit == "voxels"


def test_a_missed_class_makes_the_distance_mean_infinite():
    truth = (plane(2, 2) * 1 + plane(5, 2) * 2).astype(np.uint8)
    prediction = plane(2, 2).astype(np.uint8)
    result = evaluate_volume(prediction, truth, [1, 2], spacing=SPACING)
    assert result.means["dice"] == pytest.approx(0.5)
    assert math.isinf(result.means["hd95"])
    assert summarise([1.0, math.inf, math.nan, 3.0]) == {"mean": 2.0, "infinite": 1, "absent": 1, "count": 4}
    assert math.isnan(mean_ignoring_absent([math.nan]))


def test_slice_mask_scores_only_the_unpainted_slices():
    truth = np.zeros((8, 10, 10), np.uint8)
    truth[1:7, 2:8, 2:8] = 1
    prediction = truth.copy()
    prediction[4] = 0  # wrong on slice 4 only
    everywhere = evaluate_volume(prediction, truth, [1])
    painted_slice_4 = evaluate_volume(prediction, truth, [1], mask=slice_mask(truth.shape, 0, [4]))
    assert everywhere.classes[1].dice < 1.0
    assert painted_slice_4.classes[1].dice == 1.0
    assert painted_slice_4.classes[1].truth_voxels == 5 * 36
    only_slice_4 = evaluate_volume(prediction, truth, [1], mask=slice_mask(truth.shape, 0, [0, 1, 2, 3, 5, 6, 7]))
    assert only_slice_4.classes[1].status == "missed"


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        evaluate_volume(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), [1])
