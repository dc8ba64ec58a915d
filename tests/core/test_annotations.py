import numpy as np
import pytest

from napari_semiseg.core.annotations import (
    IGNORE,
    AnnotationError,
    AnnotationMode,
    AnnotationScheme,
    annotated_slices,
    check_label_array,
    check_trainable,
    class_label_values,
    known_mask,
    to_targets,
)


def _labels():
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1, 2, 2] = 3
    labels[3, 0:2, 0:2] = 1
    return labels


def test_slice_mode_marks_whole_painted_slices_known_along_the_painting_axis():
    labels = _labels()
    assert annotated_slices(labels, 0).tolist() == [1, 3]
    known = known_mask(labels, AnnotationScheme(axis=0))
    assert known[1].all() and known[3].all() and not known[0].any() and not known[2].any()
    assert annotated_slices(labels, 2).tolist() == [0, 1, 2]


def test_slice_mode_targets_map_values_to_classes_and_unpainted_to_background():
    labels = _labels()
    values = class_label_values([labels], AnnotationScheme())
    assert values == (0, 1, 3)
    targets = to_targets(labels, AnnotationScheme(), values)
    assert targets[1, 2, 2] == 2 and targets[1, 0, 0] == 0
    assert targets[3, 0, 0] == 1
    assert (targets[0] == IGNORE).all()


def test_scribble_mode_knows_only_painted_voxels_and_maps_background_label_to_zero():
    labels = _labels()
    labels[0, 4, 5] = 9
    scheme = AnnotationScheme(AnnotationMode.SCRIBBLES, 0, background_label=9)
    values = check_trainable([labels], scheme)
    assert values == (0, 1, 3)
    targets = to_targets(labels, scheme, values)
    assert targets[0, 4, 5] == 0
    assert targets[1, 2, 2] == 2
    assert targets[1, 0, 0] == IGNORE
    assert (targets != IGNORE).sum() == 1 + 1 + 4


def test_scribble_mode_needs_a_background_label():
    with pytest.raises(AnnotationError, match="background"):
        AnnotationScheme(AnnotationMode.SCRIBBLES, 0, None)


def test_float_labels_holding_whole_numbers_are_accepted():
    """Refusals of labels that do not fit are in tests/core/test_bad_input.py."""
    check_label_array(np.full((2, 3, 4), 2.0), (2, 3, 4))


def test_unknown_painted_value_is_not_silently_dropped():
    labels = _labels()
    with pytest.raises(AnnotationError, match="Label value 3"):
        to_targets(labels, AnnotationScheme(), (0, 1))
