"""Registration between volumes (pseudo-labels for unannotated volumes) and within a volume.

Between volumes (CCT-R): :func:`best_pseudo_label` / :func:`best_registrations` register every
annotated source onto unannotated volumes, keep the best by cycle consistency and return its
pseudo-label, per-voxel quality and score; :func:`register_to_sources` is the same work as a
generator of events (progress, cancellation). Within a volume: :func:`propagate_labels` /
:func:`propagate_slices` fill unpainted slices from painted ones.
"""

from .cache import RegistrationCache, pair_key
from .events import (BestRegistrationSelected, PairFailed, PairRegistered, PairStarted, PropagationFinished,
                     RegistrationFinished, SlicePropagated)
from .pairwise import RegisteredLabels, choose_mode, register_pair, register_transform, warp
from .scores import cycle_score, dice_per_class, mean_dice, mutual_information, quality_map, rmse
from .selection import AnnotatedVolume, best_pseudo_label, best_registrations, register_to_sources, select_best
from .settings import PropagationSettings, RegistrationError, RegistrationSettings
from .sitk_tools import RegistrationCancelled
from .slices import PropagationResult, annotated_slice_indices, propagate_labels, propagate_slices

__all__ = [
    "AnnotatedVolume", "BestRegistrationSelected", "PairFailed", "PairRegistered", "PairStarted",
    "PropagationFinished", "PropagationResult", "PropagationSettings", "RegisteredLabels", "RegistrationCache",
    "RegistrationCancelled", "RegistrationError", "RegistrationFinished", "RegistrationSettings",
    "SlicePropagated", "annotated_slice_indices", "best_pseudo_label", "best_registrations", "choose_mode",
    "cycle_score", "dice_per_class", "mean_dice", "mutual_information", "pair_key", "propagate_labels",
    "propagate_slices", "quality_map", "register_pair", "register_to_sources", "register_transform", "rmse",
    "select_best", "warp",
]
