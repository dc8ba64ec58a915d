"""The one training loop. Every strategy is a preset it runs.

``train`` is a generator of small events: the caller reads progress from it and stops
it cooperatively by setting the ``stop`` flag it passed in.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from ..annotations import IGNORE, to_targets
from ..config import TrainConfig
from ..device import resolve_device, set_threads, tune_cpu_allocator
from ..memory import OutOfMemory, is_out_of_memory, release_memory, voxels_that_fit
from ..events import (
    CheckpointSaved,
    PreviewReady,
    StepCompleted,
    TrainingFinished,
    TrainingPaused,
    TrainingResumed,
    TrainingStarted,
    ValidationScored,
)
from ..metrics import dice, mean_ignoring_absent
from ..model import TrainedModel
from ..predict import predict_slices
from ..validation import HeldOutSlices, ValidationScorer
from .checkpoint import save_checkpoint
from .data import Batch, BatchSampler, TrainingData, build_training_slices, normalise_intensity
from .composition import build_terms, feature_kind, trainable_groups, weighted_losses
from .hooks import build_hooks
from .members import Member, build_members, copy_weights
from .distributed import from_environment
from .presets import StrategyPreset, get_preset
from .pseudo_labels import RegistrationPlan, registration_pseudo_labels
from .schedules import poly
from .step import Step
from .terms import TermContext, kind_capability
from .views import strong_view

log = logging.getLogger(__name__)

STEP_EVENT_SECONDS = 0.5
PAUSE_POLL_SECONDS = 0.1
REGISTRATION_MIN_QUALITY = 0.5
MEMBER_DICE_MARGIN = 0.1
PreviewRequest = Callable[[], "tuple[int, int] | None"]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class _NeverStop:
    def is_set(self) -> bool:
        return False


class Budget:
    """Progress in [0, 1] by iterations or by wall-clock time, whichever the config sets."""

    def __init__(self, config: TrainConfig):
        self.iterations = config.iterations
        self.seconds = config.minutes * 60.0 if config.minutes is not None else None
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def exclude(self, seconds: float) -> None:
        """Take a pause out of the clock."""
        self.started += seconds

    def progress(self, iteration: int) -> float:
        if self.iterations is not None:
            return min(iteration / self.iterations, 1.0)
        return min(self.elapsed / self.seconds, 1.0)

    def done(self, iteration: int) -> bool:
        return self.progress(iteration) >= 1.0


def train(
    data: TrainingData,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    stop: StopFlag | None = None,
    preview_request: PreviewRequest | None = None,
    preview_seconds: float = 3.0,
    initial_checkpoint: dict | None = None,
    pause: StopFlag | None = None,
    validation: HeldOutSlices | None = None,
    validation_seconds: float = 5.0,
) -> Iterator[object]:
    """Train a model and yield events; the last one is :class:`TrainingFinished`.

    Args:
        data: volumes, their sparse labels and the annotation scheme.
        config: the frozen training settings (strategy, budget, device...).
        out_dir: where ``model.pt`` (final) and ``checkpoint.pt`` (periodic) are written.
        stop: a flag (``threading.Event``, ``multiprocessing.Event``) checked every step.
        preview_request: returns ``(volume index, slice index)`` to preview, or None.
        initial_checkpoint: a loaded checkpoint to continue from (same strategy and classes).
        pause: while this flag is set, training idles (sleeping) and its budget clock stops.
        validation: painted slices kept out of ``data``, scored every ``validation_seconds``
            and once more for the saved model (:class:`ValidationScored`).

    Started by ``torchrun``, each process trains data-parallel (see :mod:`.distributed`).
    """
    stop = stop or _NeverStop()
    label_values = data.check()
    preset = get_preset(config.strategy)
    distributed = from_environment(config.device)  # None unless started by torchrun
    try:
        yield from _train(data, config, out_dir, stop, preview_request, preview_seconds, initial_checkpoint,
                          label_values, preset, distributed, pause, validation, validation_seconds)
    finally:
        if distributed is not None:
            distributed.close()


def _train(data, config, out_dir, stop, preview_request, preview_seconds, initial_checkpoint, label_values,
           preset, distributed, pause, validation, validation_seconds) -> Iterator[object]:
    device = distributed.device if distributed else resolve_device(config.device)
    is_main = distributed is None or distributed.is_main
    if device.type == "cpu":
        tune_cpu_allocator()
        set_threads(distributed.threads(config.threads) if distributed else config.threads)
    torch.manual_seed(config.seed)
    budget = Budget(config)  # registration counts against the budget: the user waits for it too
    pseudo = None
    if _needs_registration_targets(preset):
        plan = RegistrationPlan(config.registration_seconds, data.registration_cache, config.threads, config.seed)
        for item in registration_pseudo_labels(data, label_values, REGISTRATION_MIN_QUALITY, stop, plan):
            if isinstance(item, list):
                pseudo = item
            else:
                yield item
    slices = _training_slices(data, label_values, config.seed, pseudo)
    members = build_members(preset, len(label_values), config.network_size, device, config.seed)
    context = TermContext(len(label_values), config.boundary_weight, device.type, sum(slices.counts))
    terms = build_terms(preset, context, members, device)
    optimizer = _optimizer(members, terms)
    iteration = _restore(initial_checkpoint, members, optimizer, label_values, terms)
    rank_seed = distributed.seed_offset if distributed else 0
    if distributed:
        _check_distributable(preset, terms)
        torch.manual_seed(config.seed + rank_seed)  # different dropout on each rank's different batches
    sampler = BatchSampler(
        slices, config.patch_size, config.batch_size, preset.uses_unannotated, config.augment,
        config.seed + iteration + rank_seed,
    )
    annotated, unannotated = slices.counts
    yield TrainingStarted(
        preset.name, str(device), label_values, annotated, unannotated if sampler.use_unannotated else 0,
        config.iterations, config.minutes,
    )
    run = _Run(data, config, preset, members, optimizer, label_values, device, Path(out_dir), terms, iteration,
               distributed=distributed)
    scorer = _validation_scorer(run, validation) if is_main else None
    last_step_event = last_preview = last_checkpoint = last_validation = time.perf_counter()
    start_iteration, reason = iteration, "budget"
    while True:
        if pause is not None and pause.is_set():
            yield from _hold(pause, stop, budget, iteration)
        progress, stopped = budget.progress(iteration - start_iteration), stop.is_set()
        if distributed:  # every rank uses the same schedules and stops at the same iteration
            progress, stopped = distributed.agree(progress, stopped)
        if progress >= 1.0:
            break
        if stopped:
            reason = "stopped"
            break
        losses = _step_within_memory(run, sampler, progress)
        iteration += 1
        now = time.perf_counter()
        if now - last_step_event >= STEP_EVENT_SECONDS or budget.done(iteration - start_iteration):
            last_step_event = now
            slices_per_second = (iteration - start_iteration) * config.batch_size / max(budget.elapsed, 1e-9)
            yield StepCompleted(iteration, budget.progress(iteration - start_iteration), losses["total"],
                                losses, budget.elapsed, slices_per_second)
        if preview_request is not None and now - last_preview >= preview_seconds:
            last_preview = now
            preview = run.preview(iteration, preview_request())
            if preview is not None:
                yield preview
        if scorer is not None and now - last_validation >= validation_seconds:
            yield _validate(run, scorer, iteration, budget)
            last_validation = time.perf_counter()
        if now - last_checkpoint >= config.checkpoint_seconds and is_main:
            last_checkpoint = now
            yield CheckpointSaved(iteration, str(run.save("checkpoint.pt", iteration)))
    if scorer is not None:
        yield _validate(run, scorer, iteration, budget, final=True)
    if distributed:  # DDP syncs BatchNorm statistics before each forward; sync the last ones too
        for member in members:
            distributed.broadcast_buffers(member.network)
    member_dice = run.member_dice_on_painted(slices)
    model_path = run.save("model.pt", iteration, member_dice) if is_main else Path(out_dir) / "model.pt"
    if distributed:
        distributed.barrier()  # the model file exists when any rank reports the end
    yield TrainingFinished(iteration, reason, str(model_path), budget.elapsed, member_dice)


def _needs_registration_targets(preset: StrategyPreset) -> bool:
    """Whether a term of the preset reads registration pseudo-labels (computed before training)."""
    return any(kind_capability(spec.kind, "needs_registration_targets") for spec in preset.terms)


def _check_distributable(preset: StrategyPreset, terms) -> None:
    """Refuse, before the first step, a strategy with a term that cannot run under DDP."""
    unsupported = sorted({term.spec.kind for term in terms if not term.supports_ddp})
    if unsupported:
        raise ValueError(f"Strategy '{preset.name}' runs a network twice per step (terms: {', '.join(unsupported)}), "
                         "which distributed training does not support yet; train it on one process.")


def _step_within_memory(run: "_Run", sampler: BatchSampler, progress: float) -> dict[str, float]:
    """One step; out of memory halves the batch, and below two slices refuses with what fits."""
    while True:
        try:
            return run.step(sampler.sample(), progress)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            run.optimizer.zero_grad(set_to_none=True)
            release_memory(run.device)
            if not sampler.shrink_batch():
                voxels = sum(int(np.prod(v.shape)) for v in run.data.volumes)
                raise OutOfMemory(
                    f"Out of memory while training, even with {sampler.batch_size} slices of {sampler.patch_size}x"
                    f"{sampler.patch_size} pixels per step. Lower the patch size or crop the volume: about "
                    f"{voxels_that_fit(run.device):,} voxels of training data fit in the memory free now, "
                    f"and these volumes have {voxels:,}."
                ) from None
            log.warning("out of memory: continuing with %d slices per step", sampler.batch_size)
def _hold(pause: StopFlag, stop: StopFlag, budget: Budget, iteration: int) -> Iterator[object]:
    """Sleep while paused (no CPU used), keeping the pause out of the budget clock."""
    yield TrainingPaused(iteration)
    started = time.perf_counter()
    while pause.is_set() and not stop.is_set():
        time.sleep(PAUSE_POLL_SECONDS)
    paused = time.perf_counter() - started
    budget.exclude(paused)
    yield TrainingResumed(iteration, paused)


def _validation_scorer(run: "_Run", validation: HeldOutSlices | None) -> ValidationScorer | None:
    if validation is None or not 0 <= validation.volume_index < len(run.data.volumes):
        return None
    return ValidationScorer(validation, run._normalised(validation.volume_index), run.data.scheme, run.label_values)


def _validate(run: "_Run", scorer: ValidationScorer, iteration: int, budget: Budget, final: bool = False):
    for member in run.members:
        member.network.eval()
    score = scorer.score(run.model(iteration))
    return ValidationScored(iteration, score, len(scorer.held_out.slice_indices), budget.elapsed, final)


def _training_slices(data: TrainingData, label_values: tuple[int, ...], seed: int, pseudo=None):
    targets = [
        to_targets(labels, data.scheme, label_values) if labels is not None else None for labels in data.labels
    ]
    return build_training_slices([v.array for v in data.volumes], targets, data.scheme.axis, seed, pseudo)


def _optimizer(members: list[Member], terms=()) -> torch.optim.Optimizer:
    """AdamW over the students (one group each) and the terms' own parameters; not teachers."""
    groups = [
        {"params": list(m.network.parameters()), "lr": m.spec.learning_rate, "initial_lr": m.spec.learning_rate}
        for m in members
        if not m.spec.is_teacher
    ]
    return torch.optim.AdamW(groups + trainable_groups(terms), weight_decay=5e-4)


def _restore(checkpoint: dict | None, members: list[Member], optimizer, label_values, terms=()) -> int:
    """Load weights, teachers, term state (banks, heads) and optimiser state to continue
    training; returns the iteration. Teachers missing from the checkpoint start as copies of
    their restored students."""
    if checkpoint is None:
        return 0
    if tuple(checkpoint["label_values"]) != tuple(label_values):
        log.warning("classes changed from %s to %s: continuing from weights where they fit",
                    checkpoint["label_values"], label_values)
    stored = {m["name"]: m for m in checkpoint["members"]}
    by_name = {m.name: m for m in members}
    for member in sorted(members, key=lambda m: m.spec.is_teacher):
        if member.name in stored:
            _load_matching(member.network, stored[member.name]["state_dict"])
        elif member.spec.is_teacher:
            copy_weights(by_name[member.spec.ema_of].network, member.network)
    stored_terms = checkpoint.get("terms", [])
    for term, entry in zip(terms, stored_terms):
        if entry.get("kind") == term.spec.kind:
            _load_matching(term, entry["state_dict"])
    if tuple(checkpoint["label_values"]) == tuple(label_values) and "optimizer" in checkpoint:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError:
            log.warning("optimiser state does not fit the strategy; starting the optimiser afresh")
    return int(checkpoint.get("iteration", 0))


def _load_matching(network: torch.nn.Module, state_dict: dict) -> None:
    own = network.state_dict()
    fitting = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    network.load_state_dict(fitting, strict=False)


def _foreground_dice(predicted: list[np.ndarray], targets: list[np.ndarray]) -> float:
    prediction = np.concatenate([p.ravel() for p in predicted])
    target = np.concatenate([t.ravel() for t in targets])
    known = target != IGNORE
    classes = [c for c in np.unique(target[known]) if c > 0]
    return mean_ignoring_absent([dice(prediction, target, int(c), known) for c in classes])


def _members_to_predict(member_dice: dict[str, float]) -> set[str]:
    """Members whose painted-slice Dice is within MEMBER_DICE_MARGIN of the best one.

    Averaging logits with an untrained member erases thin structures, so a member that
    lags far behind is left out of the prediction (it keeps training when resumed).
    """
    scored = {name: value for name, value in member_dice.items() if np.isfinite(value)}
    if not scored:
        return set(member_dice)
    best = max(scored.values())
    return {name for name, value in scored.items() if value >= best - MEMBER_DICE_MARGIN}


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)


class _Run:
    """State of one training run: one optimiser step, previews and checkpoints."""

    def __init__(self, data, config, preset: StrategyPreset, members, optimizer, label_values, device, out_dir,
                 terms=None, start_iteration: int = 0, distributed=None):
        self.data = data
        self.config = config
        self.preset = preset
        self.members = members
        self.optimizer = optimizer
        self.label_values = label_values
        self.device = device
        self.out_dir = out_dir
        self.context = TermContext(len(label_values), config.boundary_weight, device.type)
        self.terms = terms if terms is not None else build_terms(preset, self.context, members, device)
        self.feature_kind = feature_kind(self.terms)
        self.hooks = build_hooks(members, self.terms, start_iteration)
        self.view_generator = torch.Generator().manual_seed(config.seed + 7919 + start_iteration)
        self._normalised_cache: dict[int, np.ndarray] = {}
        self.distributed = distributed
        # under torchrun, trained members run through their DDP wrappers so gradients are averaged
        self.callers = {m.name: distributed.wrap(m.network) for m in members} if distributed else {}

    def step(self, batch: Batch, progress: float) -> dict[str, float]:
        batch = Batch(self._images(batch.images), _to(batch.targets, self.device), batch.annotated,
                      _to(batch.pseudo_targets, self.device), _to(batch.pseudo_weights, self.device))
        strong = None
        if self.preset.strong_view:
            strong = self._images(strong_view(batch.images, batch.annotated, self.view_generator))
        for member in self.members:
            member.network.train()
        self.terms.train()
        step = Step(batch, progress, self.context, self.members, self.feature_kind, strong, self.callers)
        total, report = weighted_losses(self.terms, step)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.distributed:
            self.distributed.average_gradients(self.terms)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * poly(progress)
        self.optimizer.step()
        for hook in self.hooks:
            hook.after_optimizer_step(step)
        report["total"] = float(total.detach())
        return report

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def model(self, iteration: int) -> TrainedModel:
        networks = {m.name: m.network for m in self.members if m.spec.predicts}
        return TrainedModel(networks, self.label_values, self.data.scheme, self.config, iteration, self.device)

    def preview(self, iteration: int, request: tuple[int, int] | None) -> PreviewReady | None:
        if request is None:
            return None
        volume_index, slice_index = request
        if not 0 <= volume_index < len(self.data.volumes):
            return None
        normalised = self._normalised(volume_index)
        axis = self.data.scheme.axis
        if not 0 <= slice_index < normalised.shape[axis]:
            return None
        image = np.take(normalised, slice_index, axis=axis)[None]
        for member in self.members:
            member.network.eval()
        classes, certainty, _ = predict_slices(self.model(iteration), image)
        labels = np.asarray(self.label_values, dtype=np.int32)[classes[0]]
        return PreviewReady(iteration, volume_index, axis, slice_index, labels, certainty[0])

    def _normalised(self, volume_index: int) -> np.ndarray:
        if volume_index not in self._normalised_cache:
            self._normalised_cache[volume_index] = normalise_intensity(self.data.volumes[volume_index].array)
        return self._normalised_cache[volume_index]

    def member_dice_on_painted(self, slices) -> dict[str, float]:
        """Mean foreground Dice of each predicting member on (up to 16) painted slices.

        Optimistic, since the members trained on these slices, but enough to tell a member
        that has not learnt yet (a Transformer after a short CPU budget) from one that has.
        """
        chosen = slices.annotated[np.linspace(0, len(slices.annotated) - 1, min(16, len(slices.annotated))).astype(int)]
        scores = {}
        for member in self.members:
            if not member.spec.predicts:
                continue
            member.network.eval()
            model = TrainedModel({member.name: member.network}, self.label_values, self.data.scheme,
                                 self.config, 0, self.device)
            predicted = [predict_slices(model, slices.images[i][None])[0][0] for i in chosen]
            scores[member.name] = _foreground_dice(predicted, [slices.targets[i] for i in chosen])
        return scores

    def save(self, filename: str, iteration: int, member_dice: dict[str, float] | None = None) -> Path:
        predicting = _members_to_predict(member_dice) if member_dice else None
        payload = {
            "strategy": self.preset.name,
            "config": self.config.to_dict(),
            "scheme": self.data.scheme.to_dict(),
            "label_values": list(self.label_values),
            "iteration": iteration,
            "members": [
                {
                    "name": m.name,
                    "ema_of": m.spec.ema_of,
                    "predicts": m.spec.predicts and (predicting is None or m.name in predicting),
                    "painted_dice": (member_dice or {}).get(m.name),
                    "build_args": m.build_args,
                    "state_dict": m.network.state_dict(),
                }
                for m in self.members
            ],
            "terms": [{"kind": term.spec.kind, "state_dict": term.state_dict()} for term in self.terms],
            "optimizer": self.optimizer.state_dict(),
        }
        return save_checkpoint(self.out_dir / filename, payload)
