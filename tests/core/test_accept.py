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
