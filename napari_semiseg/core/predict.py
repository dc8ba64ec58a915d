"""Whole-volume prediction with a certainty map and the members' disagreement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .engine.data import normalise_intensity
from .events import PredictionProgress
from .model import TrainedModel
from .volume import Volume

SLICES_PER_CHUNK = 4


@dataclass
class Prediction:
    """Labels (painted values), certainty (1 = certain) and disagreement (0 = agree)."""

    labels: np.ndarray
    certainty: np.ndarray
    disagreement: np.ndarray


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


@torch.no_grad()
def predict_slices(model: TrainedModel, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict (N, H, W) normalised slices: class indices, certainty, disagreement."""
    batch = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None].to(model.device)
    if model.device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)
    member_logits = [network(batch).float() for network in model.networks.values()]
    member_probabilities = [F.softmax(logits, dim=1) for logits in member_logits]
    probabilities = F.softmax(torch.stack(member_logits).mean(dim=0), dim=1)
    return (
        probabilities.argmax(dim=1).cpu().numpy().astype(np.int64),
        certainty_from_probabilities(probabilities).cpu().numpy().astype(np.float32),
        disagreement_between(member_probabilities).cpu().numpy().astype(np.float32),
    )


def iter_predict_volume(
    model: TrainedModel, volume: Volume, axis: int | None = None
) -> Iterator[PredictionProgress | Prediction]:
    """Predict slice by slice along the training axis, yielding progress, then the result."""
    axis = model.scheme.axis if axis is None else axis
    normalised = np.moveaxis(normalise_intensity(volume.array), axis, 0)
    count = normalised.shape[0]
    classes = np.empty(normalised.shape, dtype=np.int64)
    certainty = np.empty(normalised.shape, dtype=np.float32)
    disagreement = np.empty(normalised.shape, dtype=np.float32)
    for start in range(0, count, SLICES_PER_CHUNK):
        chunk = slice(start, min(start + SLICES_PER_CHUNK, count))
        classes[chunk], certainty[chunk], disagreement[chunk] = predict_slices(model, normalised[chunk])
        yield PredictionProgress(chunk.stop, count)
    lookup = np.asarray(model.label_values, dtype=np.int64)
    labels = lookup[classes].astype(_label_dtype(int(lookup.max())))
    yield Prediction(
        labels=np.moveaxis(labels, 0, axis),
        certainty=np.moveaxis(certainty, 0, axis),
        disagreement=np.moveaxis(disagreement, 0, axis),
    )


def predict_volume(model: TrainedModel, volume: Volume, axis: int | None = None) -> Prediction:
    """Predict a whole volume (see :func:`iter_predict_volume`)."""
    *_, result = iter_predict_volume(model, volume, axis)
    return result


def _label_dtype(maximum: int) -> type:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if maximum <= np.iinfo(dtype).max:
            return dtype
    return np.int64
