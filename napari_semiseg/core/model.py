"""A trained model: the networks that predict, with what they were trained for."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .annotations import AnnotationScheme
from .config import TrainConfig
from .device import resolve_device
from .engine.checkpoint import CheckpointError, load_checkpoint
from .engine.members import build_member_network


@dataclass
class TrainedModel:
    """Networks in eval mode plus the label values and scheme they were trained with."""

    networks: dict[str, nn.Module]
    label_values: tuple[int, ...]
    scheme: AnnotationScheme
    config: TrainConfig
    iteration: int
    device: torch.device

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    @classmethod
    def from_checkpoint(cls, content: dict, device: torch.device) -> "TrainedModel":
        networks = {}
        for member in content["members"]:
            if not member.get("predicts", True):
                continue
            network = build_member_network(member["build_args"], device)
            try:
                network.load_state_dict(member["state_dict"])
            except RuntimeError as error:
                raise CheckpointError(f"The weights of '{member['name']}' do not fit its network: {error}") from None
            networks[member["name"]] = network.eval()
        return cls(
            networks=networks,
            label_values=tuple(content["label_values"]),
            scheme=AnnotationScheme.from_dict(content["scheme"]),
            config=TrainConfig.from_dict(content["config"]),
            iteration=int(content["iteration"]),
            device=device,
        )


def load_model(path: str | os.PathLike, device: str = "auto") -> TrainedModel:
    """Load a model folder (``model.pt`` inside) or a checkpoint file for prediction."""
    return TrainedModel.from_checkpoint(load_checkpoint(path), resolve_device(device))
