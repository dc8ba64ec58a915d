"""Strategies as presets: which members train, which loss terms, on which schedules.

A strategy is data, not a training script: the one loop in :mod:`.loop` runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemberSpec:
    """A network the strategy trains.

    Args:
        name: role in the strategy (``cnn``, ``transformer``).
        network: registered network name (see ``napari_semiseg.core.networks``).
        learning_rate: AdamW learning rate before the poly decay.
        predicts: whether its logits are averaged into the prediction.
    """

    name: str
    network: str
    learning_rate: float
    predicts: bool = True


@dataclass(frozen=True)
class TermSpec:
    """A loss term with its weight and weight schedule (a function of progress)."""

    kind: str
    weight: float = 1.0
    schedule: str = "constant"


@dataclass(frozen=True)
class StrategyPreset:
    name: str
    summary: str
    members: tuple[MemberSpec, ...]
    terms: tuple[TermSpec, ...]
    reference: str = ""

    @property
    def uses_unannotated(self) -> bool:
        return any(term.kind != "supervised" for term in self.terms)


PRESETS: dict[str, StrategyPreset] = {}


def register(preset: StrategyPreset) -> StrategyPreset:
    PRESETS[preset.name] = preset
    return preset


register(
    StrategyPreset(
        name="supervised",
        summary="One U-Net trained on the annotated pixels only (masked Dice + CE); the floor to beat.",
        members=(MemberSpec("cnn", "unet", 1e-3),),
        terms=(TermSpec("supervised"),),
    )
)

register(
    StrategyPreset(
        name="cross_teaching",
        summary=(
            "CNN and Transformer teach each other: a U-Net and a Swin-UNet, supervised on annotated "
            "pixels, each learning the other's pseudo-labels on the rest."
        ),
        members=(MemberSpec("cnn", "unet", 1e-3), MemberSpec("transformer", "swin_unet", 5e-4)),
        terms=(TermSpec("supervised"), TermSpec("cross_pseudo", weight=0.1, schedule="gaussian_warmup")),
        reference="Luo et al., Semi-supervised medical image segmentation via cross teaching between CNN and Transformer, MIDL 2022",
    )
)


register(
    StrategyPreset(
        name="registration_supervised",
        summary=(
            "One U-Net on the painted pixels plus registration pseudo-labels on unpainted slices and "
            "unannotated volumes, weighted by registration quality; the fastest strong choice on a CPU."
        ),
        members=(MemberSpec("cnn", "unet", 1e-3),),
        terms=(TermSpec("supervised"), TermSpec("registration", weight=0.5)),
        reference="registration supervision loss of CCT-R (Liu, PhD thesis, Glasgow, 2025, ch. 6) without cross teaching",
    )
)

register(
    StrategyPreset(
        name="cct_r",
        summary=(
            "Cross teaching plus registration supervision: unpainted slices get labels propagated "
            "from painted ones by slice-to-slice registration, unannotated volumes get the best "
            "cycle-consistent registered labels, weighted by registration quality."
        ),
        members=(MemberSpec("cnn", "unet", 1e-3), MemberSpec("transformer", "swin_unet", 5e-4)),
        terms=(
            TermSpec("supervised"),
            TermSpec("cross_pseudo", weight=0.1, schedule="gaussian_warmup"),
            TermSpec("registration", weight=0.5),
        ),
        reference="Liu, PhD thesis (Glasgow, 2025) ch. 6; arXiv 2409.10422 (registration supervision and "
        "best-registration selection; the contrastive REPS term is not part of this preset)",
    )
)


def get_preset(name: str) -> StrategyPreset:
    """The preset called ``name``; unknown names raise with the list of valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown strategy '{name}'. Choose one of: {', '.join(PRESETS)}.") from None


def strategy_names() -> list[str]:
    return list(PRESETS)
