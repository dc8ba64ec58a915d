"""Fused certainty, per-slice summary and the next-slice ranking on tiny known cases."""

import numpy as np
import pytest

from napari_semiseg.core.certainty import (
    FusionWeights,
    fuse_certainty,
    rank_slices,
    registered_mask,
    slice_summaries,
)


def test_fused_certainty_is_the_weighted_mean_of_the_needs_present():
    certainty = np.array([[[1.0, 0.5, 0.2, 0.9]]], dtype=np.float32)
    disagreement = np.array([[[0.0, 0.5, 0.4, 0.3]]], dtype=np.float32)
    quality = np.array([[[0.2, 1.0, 0.0, 0.5]]], dtype=np.float32)
    covered = np.array([[[False, True, True, False]]])
    fused = fuse_certainty(certainty, disagreement, quality, covered, FusionWeights(1.0, 2.0, 1.0)).certainty
    # need = (1·(1−c) + 2·d + 1·(1−q)·[covered]) / (1 + 2 + [covered])
    expected = 1.0 - np.array([(0 + 0) / 3, (0.5 + 1.0 + 0.0) / 4, (0.8 + 0.8 + 1.0) / 4, (0.1 + 0.6) / 3])
    np.testing.assert_allclose(fused[0, 0], expected, atol=1e-6)


def test_each_component_is_optional():
    certainty = np.full((1, 1, 2), 0.7, np.float32)
    np.testing.assert_allclose(fuse_certainty(certainty=certainty).certainty, 0.7, atol=1e-6)
    np.testing.assert_allclose(fuse_certainty(disagreement=1 - certainty).certainty, 0.7, atol=1e-6)
    quality = np.array([[[0.25, 0.25]]], np.float32)
    only_first = np.array([[[True, False]]])
    fused = fuse_certainty(registration_quality=quality, registered=only_first).certainty
    np.testing.assert_allclose(fused[0, 0], [0.25, 1.0], atol=1e-6)  # uncovered voxel: nothing says doubt
    with pytest.raises(ValueError, match="Nothing to fuse"):
        fuse_certainty()
    with pytest.raises(ValueError, match="same voxel grid"):
        fuse_certainty(certainty, np.zeros((1, 2, 2), np.float32))


def test_ranking_puts_the_planted_doubts_first_with_their_reasons_and_skips_painted_slices():
    shape = (6, 8, 8)
    certainty = np.ones(shape, np.float32)
    disagreement = np.zeros(shape, np.float32)
    quality = np.ones(shape, np.float32)
    disagreement[4, :4] = 0.9  # networks disagree on half of slice 4
    certainty[1, :2] = 0.3  # a low-confidence strip on slice 1
    quality[2] = 0.1  # registration failed on slice 2 ...
    quality[0] = 0.0  # ... and on slice 0, which the user painted
    covered = registered_mask(shape, 0, [0, 2, 3])
    review = fuse_certainty(certainty, disagreement, quality, covered)
    summaries = slice_summaries(review, axis=0)
    ranked = rank_slices(summaries, skip=[0])
    assert [s.index for s in ranked[:3]] == [2, 4, 1]
    assert [s.reason for s in ranked[:3]] == ["low registration consistency", "network disagreement", "low confidence"]
    assert all(s.index != 0 for s in ranked) and len(ranked) == 5
    assert summaries[3].need == 0.0 and summaries[5].components == {"entropy": 0.0, "disagreement": 0.0}
    assert summaries[2].components["registration"] == pytest.approx(0.9)
    assert "slice 2" in ranked[0].describe() and len(rank_slices(summaries, limit=2)) == 2


def test_ranking_follows_the_axis():
    certainty = np.ones((4, 5, 6), np.float32)
    certainty[:, :, 3] = 0.0
    ranked = rank_slices(slice_summaries(fuse_certainty(certainty), axis=2))
    assert ranked[0].index == 3 and ranked[0].reason == "low confidence"
