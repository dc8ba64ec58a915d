"""Loss values on tiny hand-computed tensors."""

import math

import pytest
import torch

from napari_semiseg.core.annotations import IGNORE
from napari_semiseg.core.losses import boundary_band, masked_cross_entropy, masked_dice_loss


def _logits_for(probabilities):
    return torch.log(torch.tensor(probabilities, dtype=torch.float32))


def test_cross_entropy_averages_only_known_pixels():
    # one image, 2 classes, 1x3 pixels: p(class 1) = 0.8, 0.5, 0.1
    logits = _logits_for([[[[0.2, 0.5, 0.9]], [[0.8, 0.5, 0.1]]]])
    target = torch.tensor([[[1, IGNORE, 0]]])
    expected = -(math.log(0.8) + math.log(0.9)) / 2
    assert masked_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_with_nothing_known_is_zero():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.full((1, 2, 2), IGNORE)
    assert masked_cross_entropy(logits, target).item() == 0.0


def test_dice_counts_only_known_pixels():
    logits = _logits_for([[[[0.2, 0.5, 0.9]], [[0.8, 0.5, 0.1]]]])
    target = torch.tensor([[[1, IGNORE, 0]]])
    # known pixels 0 and 2. class 0: p = 0.2, 0.9; y = 0, 1 -> 2*0.9 / (1.1 + 1)
    # class 1: p = 0.8, 0.1; y = 1, 0 -> 2*0.8 / (0.9 + 1)
    dice0, dice1 = 1.8 / 2.1, 1.6 / 1.9
    expected = 1 - (dice0 + dice1) / 2
    assert masked_dice_loss(logits, target, smooth=0).item() == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_has_near_zero_losses():
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    logits = torch.nn.functional.one_hot(target.clamp_min(0), 3).permute(0, 3, 1, 2).float() * 50
    assert masked_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_cross_entropy(logits, target).item() == pytest.approx(0.0, abs=1e-5)


def test_pixel_weights_emphasise_boundary_pixels():
    logits = _logits_for([[[[0.2, 0.5, 0.9]], [[0.8, 0.5, 0.1]]]])
    target = torch.tensor([[[1, IGNORE, 0]]])
    weight = torch.tensor([[[3.0, 1.0, 1.0]]])
    expected = -(3 * math.log(0.8) + math.log(0.9)) / 2
    assert masked_cross_entropy(logits, target, weight).item() == pytest.approx(expected, rel=1e-5)


def test_boundary_band_marks_pixels_next_to_a_class_change_and_never_unknown_ones():
    target = torch.zeros(1, 5, 5, dtype=torch.long)
    target[0, :, 3:] = 1
    target[0, 0, :] = IGNORE
    band = boundary_band(target, 2)
    assert band[0, 2].tolist() == [0, 0, 1, 1, 0]
    assert band[0, 0].sum() == 0


@pytest.mark.parametrize("loss", [masked_dice_loss, masked_cross_entropy])
def test_shape_errors_are_explicit(loss):
    with pytest.raises(ValueError, match="target must be"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must be"):
        loss(torch.randn(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))


def test_dice_rejects_targets_beyond_the_classes():
    with pytest.raises(ValueError, match="only 2 classes"):
        masked_dice_loss(torch.randn(1, 2, 2, 2), torch.full((1, 2, 2), 2))
