"""How sure a prediction is, and where to look next: per-voxel certainty and the members'
disagreement, one fused "needs review" certainty map, a per-slice summary and a ranking.

Three signals say a voxel may be wrong, each turned into a *need for review* in [0, 1]:

* ``entropy``: 1 − certainty of the averaged prediction (certainty = 1 − normalised entropy);
* ``disagreement``: the members' mean total-variation distance (0 when they agree);
* ``registration``: 1 − registration quality, only where registered pseudo-labels exist.

The fused need at a voxel is the weighted mean of the signals present there,

    need = Σ_k w_k · u_k / Σ_k w_k    (k over the components given, and for ``registration``
                                       only over voxels it covers),

and the fused certainty is ``1 − need``. Any component may be missing (no model yet, a single
network, no registration); a voxel no component covers has certainty 1. A weighted mean rather
than a maximum keeps one noisy signal from flagging a whole volume, while the per-slice reason
(the component contributing most) still says which signal raised the flag.

Slices are summarised by the mean need over the slice, which grows with both how uncertain the
voxels are and how many of them there are (roughly, how much correcting a slice will take), and
ranked from the most in need of review; slices the user painted are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

ENTROPY = "entropy"
DISAGREEMENT = "disagreement"
REGISTRATION = "registration"
COMPONENTS = (ENTROPY, DISAGREEMENT, REGISTRATION)
REASONS = {
    ENTROPY: "low confidence",
    DISAGREEMENT: "network disagreement",
    REGISTRATION: "low registration consistency",
}


def certainty_from_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """1 - normalised entropy over the class axis (dim 1): 1 is certain, 0 is uniform."""
    num_classes = probabilities.shape[1]
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-8))).sum(dim=1)
    return 1.0 - entropy / np.log(num_classes)


def disagreement_between(member_probabilities: list[torch.Tensor]) -> torch.Tensor:
    """Mean total-variation distance between the members' class probabilities (0 to 1)."""
    if len(member_probabilities) < 2:
        return torch.zeros_like(member_probabilities[0][:, 0])
    pairs = [
        0.5 * (a - b).abs().sum(dim=1)
        for i, a in enumerate(member_probabilities)
        for b in member_probabilities[i + 1 :]
    ]
    return torch.stack(pairs).mean(dim=0)


@dataclass(frozen=True)
class FusionWeights:
    """Relative weight of each signal in the fused need for review."""

    entropy: float = 1.0
    disagreement: float = 1.0
    registration: float = 1.0

    def of(self, component: str) -> float:
        return float(getattr(self, component))


@dataclass(frozen=True)
class ReviewMap:
    """The fused certainty (1 = certain) and each component's need for review.

    Attributes:
        certainty: (z, y, x) float32 fused certainty in [0, 1].
        needs: component name -> (z, y, x) float32 need in [0, 1] (only components given).
        coverage: component name -> boolean mask where that component is defined, or None
            when it covers every voxel.
        weights: the weights used.
    """

    certainty: np.ndarray
    needs: dict[str, np.ndarray]
    coverage: dict[str, np.ndarray | None]
    weights: FusionWeights = field(default_factory=FusionWeights)


@dataclass(frozen=True)
class SliceSummary:
    """One slice's mean need for review, overall and per component, and the main reason."""

    index: int
    need: float
    components: dict[str, float]
    reason: str

    @property
    def certainty(self) -> float:
        return 1.0 - self.need

    def describe(self) -> str:
        return f"slice {self.index}: certainty {self.certainty:.2f}, {self.reason}"


def fuse_certainty(
    certainty: np.ndarray | None = None,
    disagreement: np.ndarray | None = None,
    registration_quality: np.ndarray | None = None,
    registered: np.ndarray | None = None,
    weights: FusionWeights = FusionWeights(),
) -> ReviewMap:
    """Fuse the available signals into one certainty map (see the module doc for the formula).

    Args:
        certainty: prediction certainty, 1 − normalised entropy.
        disagreement: the members' disagreement (0 = agree).
        registration_quality: per-voxel registration quality (1 = trustworthy).
        registered: boolean mask of the voxels that have registered pseudo-labels (for example
            the filled slices); None means the quality covers every voxel.
        weights: relative weights of the three signals.

    Raises:
        ValueError: when nothing is given or the shapes differ.
    """
    given = {ENTROPY: certainty, DISAGREEMENT: disagreement, REGISTRATION: registration_quality}
    given = {name: np.asarray(array, dtype=np.float32) for name, array in given.items() if array is not None}
    if not given:
        raise ValueError("Nothing to fuse: train a model or propagate registered labels first.")
    shape = next(iter(given.values())).shape
    if any(array.shape != shape for array in given.values()) or (registered is not None and registered.shape != shape):
        raise ValueError("Certainty, disagreement and registration quality must cover the same voxel grid.")
    needs = {name: _need(name, array) for name, array in given.items()}
    coverage: dict[str, np.ndarray | None] = {name: None for name in needs}
    if REGISTRATION in needs and registered is not None:
        coverage[REGISTRATION] = np.asarray(registered, dtype=bool)
    total = np.zeros(shape, dtype=np.float32)
    weight_sum = np.zeros(shape, dtype=np.float32)
    for name, need in needs.items():
        weight = np.float32(weights.of(name))
        covered = coverage[name]
        if covered is None:
            total += weight * need
            weight_sum += weight
        else:
            total += np.where(covered, weight * need, 0.0).astype(np.float32)
            weight_sum += np.where(covered, weight, 0.0).astype(np.float32)
    fused_need = np.divide(total, weight_sum, out=np.zeros(shape, dtype=np.float32), where=weight_sum > 0)
    return ReviewMap(np.clip(1.0 - fused_need, 0.0, 1.0).astype(np.float32), needs, coverage, weights)


def _need(component: str, array: np.ndarray) -> np.ndarray:
    need = array if component == DISAGREEMENT else 1.0 - array
    return np.clip(need, 0.0, 1.0).astype(np.float32)


def slice_summaries(review: ReviewMap, axis: int) -> list[SliceSummary]:
    """Mean need for review of every slice along ``axis``, with the component behind it."""
    need = 1.0 - review.certainty
    other = tuple(a for a in range(need.ndim) if a != axis)
    overall = need.mean(axis=other)
    means = {name: _covered_mean(component, review.coverage[name], other) for name, component in review.needs.items()}
    contributions = {name: _contribution(review, name, other) for name in review.needs}
    summaries = []
    for index in range(need.shape[axis]):
        components = {name: float(values[index]) for name, values in means.items() if not np.isnan(values[index])}
        main = max(contributions, key=lambda name: contributions[name][index])
        summaries.append(SliceSummary(index, float(overall[index]), components, REASONS[main]))
    return summaries


def _covered_mean(need: np.ndarray, covered: np.ndarray | None, axes: tuple[int, ...]) -> np.ndarray:
    if covered is None:
        return need.mean(axis=axes)
    count = covered.sum(axis=axes)
    total = np.where(covered, need, 0.0).sum(axis=axes)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def _contribution(review: ReviewMap, name: str, axes: tuple[int, ...]) -> np.ndarray:
    """Each component's share of the slice's fused need (same normalisation as the fusion)."""
    weight_sum = np.zeros(review.certainty.shape, dtype=np.float32)
    for other, covered in review.coverage.items():
        weight_sum += review.weights.of(other) if covered is None else np.where(covered, review.weights.of(other), 0.0)
    share = review.weights.of(name) * review.needs[name]
    if review.coverage[name] is not None:
        share = np.where(review.coverage[name], share, 0.0)
    share = np.divide(share, weight_sum, out=np.zeros_like(weight_sum), where=weight_sum > 0)
    return share.sum(axis=axes)


def rank_slices(
    summaries: list[SliceSummary], skip: set[int] | list[int] | np.ndarray = (), limit: int | None = None
) -> list[SliceSummary]:
    """Slices to look at next, most in need of review first, without the ``skip`` ones."""
    skipped = {int(index) for index in np.asarray(list(skip)).ravel()}
    ranked = sorted((s for s in summaries if s.index not in skipped), key=lambda s: (-s.need, s.index))
    return ranked if limit is None else ranked[:limit]


def registered_mask(shape: tuple[int, ...], axis: int, slice_indices) -> np.ndarray:
    """Boolean mask of the given slices along ``axis`` (the slices registration filled)."""
    mask = np.zeros(shape, dtype=bool)
    index: list = [slice(None)] * len(shape)
    index[axis] = [int(i) for i in slice_indices]
    if index[axis]:
        mask[tuple(index)] = True
    return mask
