"""Loss functions, one small module per family."""

from .segmentation import boundary_band, masked_cross_entropy, masked_dice_loss, one_hot_with_ignore

__all__ = ["boundary_band", "masked_cross_entropy", "masked_dice_loss", "one_hot_with_ignore"]
