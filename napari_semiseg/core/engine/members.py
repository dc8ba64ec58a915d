"""Members: the networks a strategy trains, built reproducibly from plain arguments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..networks import build_network
from .presets import MemberSpec, StrategyPreset


@dataclass
class Member:
    spec: MemberSpec
    network: nn.Module
    build_args: dict

    @property
    def name(self) -> str:
        return self.spec.name


def resolve_network_size(network_size: str, device: torch.device) -> str:
    """``auto`` means the published sizes on a GPU and small, fast networks on a CPU."""
    if network_size != "auto":
        return network_size
    return "paper" if device.type == "cuda" else "cpu"


def build_member_network(build_args: dict, device: torch.device) -> nn.Module:
    """Rebuild a network from the JSON-able arguments stored in a checkpoint."""
    network = build_network(
        build_args["network"],
        in_channels=build_args["in_channels"],
        num_classes=build_args["num_classes"],
        size=build_args["size"],
        **build_args.get("overrides", {}),
    )
    network = network.to(device)
    if device.type == "cpu":
        network = network.to(memory_format=torch.channels_last)
    return network


def build_members(
    preset: StrategyPreset, num_classes: int, network_size: str, device: torch.device, seed: int
) -> list[Member]:
    """Students with seeded initial weights, then teachers as frozen copies of their students."""
    members = []
    for offset, spec in enumerate(preset.members):
        torch.manual_seed(seed + 1000 * offset)
        build_args = {
            "network": spec.network,
            "in_channels": 1,
            "num_classes": num_classes,
            "size": resolve_network_size(network_size, device),
            "overrides": {},
        }
        members.append(Member(spec, build_member_network(build_args, device), build_args))
    by_name = {m.name: m for m in members}
    for member in members:
        if member.spec.is_teacher:
            copy_weights(by_name[member.spec.ema_of].network, member.network)
            member.network.requires_grad_(False)
    return members


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Make ``target`` (same architecture) hold ``source``'s parameters and buffers."""
    target.load_state_dict(source.state_dict())
