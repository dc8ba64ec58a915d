"""Strategies as presets: which members train, which loss terms, on which schedules.

A strategy is data, not a training script: the one loop in :mod:`.loop` runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemberSpec:
    """A network the strategy trains.

    Args:
        name: role in the strategy (``cnn``, ``transformer``, ``teacher``).
        network: registered network name (see ``napari_semiseg.core.networks``).
        learning_rate: AdamW learning rate before the poly decay (unused for EMA teachers).
        predicts: whether its logits are averaged into the prediction.
        ema_of: for a teacher, the name of the student it tracks: its weights are the
            exponential moving average of the student's, updated after every optimiser step;
            it is not trained by the optimiser and gets no gradient.
        ema_decay: the teacher's decay (0.99: a new teacher moves 1 % towards the student per step).
    """

    name: str
    network: str
    learning_rate: float
    predicts: bool = True
    ema_of: str | None = None
    ema_decay: float = 0.99

    @property
    def is_teacher(self) -> bool:
        return self.ema_of is not None


@dataclass(frozen=True)
class TermSpec:
    """A loss term with its weight, weight schedule (a function of progress) and options.

    ``options`` are the term's own settings as ``(name, value)`` pairs (see :func:`options`),
    read by the term with :meth:`option`; plain values only, so presets stay hashable data.
    """

    kind: str
    weight: float = 1.0
    schedule: str = "constant"
    options: tuple[tuple[str, object], ...] = ()

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)


def options(**values) -> tuple[tuple[str, object], ...]:
    """``TermSpec(..., options=options(bank_size=1024))``."""
    return tuple(sorted(values.items()))


@dataclass(frozen=True)
class StrategyPreset:
    """A strategy: its members, loss terms and whether students see a strong view.

    ``strong_view``: the unannotated rows of the batch reach the students with extra intensity
    noise, blur and a cut-out box (same geometry), while teachers see the ordinary augmented
    (weak) view; annotated rows are identical in both views.
    """

    name: str
    summary: str
    members: tuple[MemberSpec, ...]
    terms: tuple[TermSpec, ...]
    reference: str = ""
    strong_view: bool = False

    def __post_init__(self) -> None:
        students = {m.name for m in self.members if not m.is_teacher}
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy '{self.name}': member names must be unique, got {names}.")
        for member in self.members:
            if member.is_teacher and member.ema_of not in students:
                raise ValueError(
                    f"strategy '{self.name}': teacher '{member.name}' tracks '{member.ema_of}', "
                    f"which is not a trained member ({', '.join(sorted(students))})."
                )
            if member.is_teacher and not 0.0 <= member.ema_decay < 1.0:
                raise ValueError(f"strategy '{self.name}': ema_decay of '{member.name}' must be in [0, 1).")

    @property
    def uses_unannotated(self) -> bool:
        return any(term.kind != "supervised" for term in self.terms)

    @property
    def students(self) -> tuple[MemberSpec, ...]:
        return tuple(m for m in self.members if not m.is_teacher)

    @property
    def teachers(self) -> tuple[MemberSpec, ...]:
        return tuple(m for m in self.members if m.is_teacher)


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

CROSS_TEACHING_MEMBERS = (MemberSpec("cnn", "unet", 1e-3), MemberSpec("transformer", "swin_unet", 5e-4))
CROSS_TEACHING_TERMS = (TermSpec("supervised"), TermSpec("cross_pseudo", weight=0.1, schedule="gaussian_warmup"))

register(
    StrategyPreset(
        name="cct_r",
        summary=(
            "Cross teaching plus registration supervision: unpainted slices get labels propagated "
            "from painted ones by slice-to-slice registration, unannotated volumes get the best "
            "cycle-consistent registered labels, weighted by registration quality; plus the "
            "certainty-guided contrastive term with registration-enhanced positives (REPS)."
        ),
        members=CROSS_TEACHING_MEMBERS,
        terms=(
            *CROSS_TEACHING_TERMS,
            TermSpec("registration", weight=0.5),
            TermSpec("reps_contrastive", weight=1e-3),
        ),
        reference="Liu, PhD thesis (Glasgow, 2025) ch. 6; arXiv 2409.10422 (registration supervision, "
        "best-registration selection, registration-enhanced positive sampling)",
    )
)

register(
    StrategyPreset(
        name="mcsc",
        summary=(
            "Cross teaching plus a multi-scale cross supervised contrastive loss: features at three "
            "scales of each network, labelled by the other network's pseudo-labels (ground truth "
            "where painted), class-balanced so background does not dominate."
        ),
        members=CROSS_TEACHING_MEMBERS,
        terms=(*CROSS_TEACHING_TERMS, TermSpec("mcsc_contrastive", weight=1e-3)),
        reference="Liu, PhD thesis (Glasgow, 2025) ch. 4; Liu et al., BMVC 2023",
    )
)

register(
    StrategyPreset(
        name="mcsc_v2",
        summary=(
            "Cross teaching plus certainty-guided contrastive learning: confident pixels are anchors, "
            "each class has a memory bank of hard negatives chosen by prediction rank and certainty."
        ),
        members=CROSS_TEACHING_MEMBERS,
        terms=(*CROSS_TEACHING_TERMS, TermSpec("certainty_contrastive", weight=1e-3)),
        reference="Liu, PhD thesis (Glasgow, 2025) ch. 5",
    )
)

register(
    StrategyPreset(
        name="mean_teacher",
        summary=(
            "A U-Net student and its EMA teacher (decay 0.99): supervised on annotated pixels, and on "
            "the rest the student (strong view) matches the teacher's softmax (weak view), MSE with a "
            "sigmoid ramp. Prediction uses the student."
        ),
        members=(
            MemberSpec("student", "unet", 1e-3),
            MemberSpec("teacher", "unet", 0.0, predicts=False, ema_of="student", ema_decay=0.99),
        ),
        terms=(TermSpec("supervised"), TermSpec("consistency", weight=0.1, schedule="sigmoid_rampup")),
        reference="Tarvainen & Valpola, Mean teachers are better role models, NeurIPS 2017 (SSL4MIS settings)",
        strong_view=True,
    )
)


register(
    StrategyPreset(
        name="boclis",
        summary=(
            "A U-Net student with three EMA teachers (decays 0.999, 0.99, 0.9) on the weak view; the "
            "student (strong view) learns their entropy-weighted pseudo-labels, weighted by certainty, "
            "plus a boundary-guided patch contrastive loss (edge patches against centre and whole-region "
            "patches). Prediction uses the student."
        ),
        members=(
            MemberSpec("student", "unet", 1e-3),
            MemberSpec("teacher_999", "unet", 0.0, predicts=False, ema_of="student", ema_decay=0.999),
            MemberSpec("teacher_99", "unet", 0.0, predicts=False, ema_of="student", ema_decay=0.99),
            MemberSpec("teacher_9", "unet", 0.0, predicts=False, ema_of="student", ema_decay=0.9),
        ),
        terms=(
            TermSpec("supervised"),
            TermSpec("teacher_ensemble", weight=1.0, schedule="sigmoid_rampup"),
            TermSpec("patch_contrastive", weight=0.1, schedule="sigmoid_rampup"),
        ),
        reference="Yang, Zhuang, Sun, Wang, Su, IEEE TMI 44(7), 2025 (BoCLIS); patches encoded by pooling the "
        "student's encoder map, see core/losses/patch_contrastive.py",
        strong_view=True,
    )
)

register(
    StrategyPreset(
        name="bfa",
        summary=(
            "Mean teacher (EMA 0.99, student on the strong view, consistency MSE) plus boundary feature "
            "alignment: annotated and unannotated crops are mixed by copy-paste, an early boundary head "
            "learns the mixed label maps' boundaries, and per class the boundary prototypes of "
            "pseudo-labelled pixels are pulled to those of painted ones. Prediction uses the student."
        ),
        members=(
            MemberSpec("student", "unet_boundary", 1e-3),
            MemberSpec("teacher", "unet_boundary", 0.0, predicts=False, ema_of="student", ema_decay=0.99),
        ),
        terms=(
            TermSpec("supervised"),
            TermSpec("consistency", weight=0.1, schedule="sigmoid_rampup"),
            TermSpec("boundary_head", weight=1.0),
            TermSpec("boundary_alignment", weight=0.1, schedule="sigmoid_rampup"),
        ),
        reference="Guo, Wang et al., Pattern Recognition 2025 (BFA; no public code)",
        strong_view=True,
    )
)

register(
    StrategyPreset(
        name="pmcm",
        summary=(
            "One encoder, two decoders (transposed-convolution and bilinear upsampling), each with a "
            "segmentation and a signed-distance head; the decoders teach each other where the other is "
            "less certain, weighted by prototype reliability, and the segmentation and distance heads "
            "are tied by cyclic task consistency. Prediction averages the two decoders."
        ),
        members=(MemberSpec("student", "unet_dual_sdf", 1e-3),),
        terms=(
            TermSpec("dual_supervised"),
            TermSpec("prototype_mutual", weight=0.5, schedule="sigmoid_rampup"),
            TermSpec("task_consistency", weight=1.0, schedule="sigmoid_rampup"),
        ),
        reference="Lin, Chen, Chen, Digital Signal Processing 169, 2026 (PMCM); truncated fixed-scale SDF "
        "targets instead of the released code's per-volume min-max scaling",
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
