import numpy as np
import pytest

from napari_semiseg.core.accept import acceptance_edit


def test_acceptance_writes_only_unpainted_foreground_inside_the_region():
    labels = np.zeros((2, 3, 3), dtype=np.uint8)
    labels[0, 0, 0] = 2
    proposal = np.ones_like(labels)
    proposal[1, 2, 2] = 0
    indices, values = acceptance_edit(labels, proposal)
    changed = np.zeros(labels.shape, bool)
    changed[indices] = True
    assert not changed[0, 0, 0] and not changed[1, 2, 2]
    assert changed.sum() == 18 - 2 and (values == 1).all()

    indices, _ = acceptance_edit(labels, proposal, region=np.s_[1])
    assert set(indices[0].tolist()) == {1}


def test_overwrite_is_explicit():
    labels = np.full((1, 2, 2), 3, dtype=np.uint8)
    proposal = np.ones_like(labels)
    assert len(acceptance_edit(labels, proposal)[0][0]) == 0
    assert len(acceptance_edit(labels, proposal, overwrite_painted=True)[0][0]) == 4


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shape"):
        acceptance_edit(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))


from napari_semiseg.core.accept import (  # noqa: E402
    accept_component_edit,
    accept_confident_edit,
    accept_label_edit,
    accept_slice_edit,
    box_mask,
    polygon_mask,
    prism_mask,
)


def _changed(shape, edit):
    mask = np.zeros(shape, bool)
    mask[edit[0]] = True
    return mask


def test_slice_and_label_acceptance_keep_painted_voxels():
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[1, 0, 0] = 5
    proposal = np.zeros_like(labels)
    proposal[:, :2] = 1
    proposal[:, 2:] = 2
    changed = _changed(labels.shape, accept_slice_edit(labels, proposal, axis=0, index=1))
    assert changed[1].sum() == 15 and not changed[1, 0, 0] and not changed[[0, 2]].any()
    changed = _changed(labels.shape, accept_slice_edit(labels, proposal, axis=2, index=0))
    assert changed[:, :, 0].sum() == 11 and changed.sum() == 11
    indices, values = accept_label_edit(labels, proposal, 2)
    assert (values == 2).all() and len(values) == 24
    assert len(accept_label_edit(labels, proposal, 1, overwrite_painted=True)[1]) == 24
    with pytest.raises(ValueError, match="foreground"):
        accept_label_edit(labels, proposal, 0)
    with pytest.raises(ValueError, match="outside"):
        accept_slice_edit(labels, proposal, axis=0, index=3)


def test_component_acceptance_takes_only_the_3d_component_under_the_point():
    proposal = np.zeros((4, 6, 6), np.uint8)
    proposal[0:3, 0:2, 0:2] = 1  # a component spanning three slices
    proposal[1, 4:6, 4:6] = 1  # same label, not connected
    proposal[3, 0:2, 0:2] = 2  # other label, touching
    labels = np.zeros_like(proposal)
    labels[2, 1, 1] = 7
    changed = _changed(labels.shape, accept_component_edit(labels, proposal, (1.2, 0.6, 1.4)))
    expected = np.zeros_like(changed)
    expected[0:3, 0:2, 0:2] = True
    expected[2, 1, 1] = False
    assert np.array_equal(changed, expected)
    with pytest.raises(ValueError, match="no predicted label"):
        accept_component_edit(labels, proposal, (0, 5, 0))
    with pytest.raises(ValueError, match="outside"):
        accept_component_edit(labels, proposal, (0, 9, 0))


def test_polygon_prism_and_box_masks():
    triangle = polygon_mask((5, 5), [(-0.5, -0.5), (4.5, -0.5), (-0.5, 4.5)])
    assert triangle.sum() == 10 and triangle[0, 0] and triangle[0, 3] and not triangle[4, 4]
    rectangle = polygon_mask((6, 6), [(0.5, 1.5), (0.5, 4.5), (3.5, 4.5), (3.5, 1.5)])
    assert np.array_equal(np.argwhere(rectangle).min(0), [1, 2]) and np.array_equal(np.argwhere(rectangle).max(0), [3, 4])
    prism = prism_mask((5, 6, 6), 0, [(0.5, 1.5), (0.5, 4.5), (3.5, 4.5), (3.5, 1.5)], 3, 1)
    assert prism.sum() == 3 * 9 and prism[1:4].all(axis=0).sum() == 9 and not prism[[0, 4]].any()
    sideways = prism_mask((5, 6, 6), 2, [(0.5, 1.5), (0.5, 4.5), (3.5, 4.5), (3.5, 1.5)], 2, 2)
    assert sideways[:, :, 2].sum() == 9 and sideways.sum() == 9
    box = box_mask((4, 4, 4), (1, 0.2, 3), (2, 1.9, 1))
    assert np.array_equal(np.argwhere(box).min(0), [1, 1, 1]) and np.array_equal(np.argwhere(box).max(0), [2, 1, 3])
    with pytest.raises(ValueError, match="three"):
        polygon_mask((3, 3), [(0, 0), (1, 1)])


def test_confident_acceptance_inside_a_region():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, 1, 1] = 3
    proposal = np.ones_like(labels)
    certainty = np.zeros(labels.shape, np.float32)
    certainty[:, :2] = 0.9
    region = box_mask(labels.shape, (0, 0, 0), (0, 3, 1))
    changed = _changed(labels.shape, accept_confident_edit(labels, proposal, certainty, 0.8, region))
    expected = np.zeros_like(changed)
    expected[0, :2, :2] = True
    expected[0, 1, 1] = False
    assert np.array_equal(changed, expected)
    everywhere = _changed(labels.shape, accept_confident_edit(labels, proposal, certainty, 0.8))
    assert everywhere.sum() == 15
    with pytest.raises(ValueError, match="Certainty shape"):
        accept_confident_edit(labels, proposal, certainty[0], 0.5)
