"""Training box: strategy, device and budget; start, pause, stop; progress, status line and curve."""

from __future__ import annotations

import time

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
)

from ..core.config import DEFAULT_STRATEGY, TrainConfig
from ..core.device import device_status
from ..core.engine.presets import PRESETS
from ..core.events import (
    PseudoLabelsLimited,
    PseudoLabelsReady,
    StepCompleted,
    TrainingFailed,
    TrainingFinished,
    TrainingPaused,
    TrainingResumed,
    TrainingStarted,
    ValidationScored,
)
from ..core.validation import MIN_ANNOTATED_FOR_HOLDOUT, painting_plateau
from .curves import QuietProgressBar, TrainingCurves
from .layers import current_slice
from .session import Session
from .training_process import background_threads

STEP_DISPLAY_SECONDS = 1.0  # each status change repaints the dock: 70-90 ms with software OpenGL


class TrainingPanel(QGroupBox):
    """Train the session's layers in the worker process and show how it goes."""

    def __init__(self, session: Session):
        super().__init__("Training")
        self.session = session
        self._last_step_shown = -float("inf")
        self._build()
        session.message.connect(self._say)
        session.training_event.connect(self._show_event)
        session.training_ended.connect(self._show_idle)
        session.model_changed.connect(self._show_model)
        session.viewer.dims.events.current_step.connect(self._request_preview)
        self._show_model(session.current_model)

    def _build(self) -> None:
        form = QFormLayout(self)
        self.strategy_combo = QComboBox()
        for name, preset in PRESETS.items():
            self.strategy_combo.addItem(name, name)
            self.strategy_combo.setItemData(self.strategy_combo.count() - 1, preset.summary, 3)
        self.strategy_combo.setCurrentIndex(max(0, self.strategy_combo.findData(DEFAULT_STRATEGY)))
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.device_combo.currentTextChanged.connect(self._device_chosen)
        self._device_chosen()
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(0.1, 100000)
        self.budget_spin.setDecimals(1)
        self.budget_spin.setValue(2.0)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["minutes", "iterations"])
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_spin, 1)
        budget_row.addWidget(self.budget_unit)
        self.continue_check = QCheckBox("Continue from the last model")
        self.continue_check.setEnabled(False)
        self.start_button = QPushButton("Start training")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold training (no CPU used, budget clock stopped); press again to resume")
        self.stop_button = QPushButton("Stop")
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(button)
        self.progress_bar = QuietProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Paint a few slices, then start training.")
        self.status_label.setWordWrap(True)
        self.curves = TrainingCurves()
        self.validation_label = QLabel(f"Paint at least {MIN_ANNOTATED_FOR_HOLDOUT} slices to get a validation score.")
        self.validation_label.setWordWrap(True)
        form.addRow("Strategy", self.strategy_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_label)
        form.addRow("Budget", budget_row)
        form.addRow("", self.continue_check)
        form.addRow(buttons)
        for row in (self.progress_bar, self.status_label, self.curves, self.validation_label):
            form.addRow(row)
        self.start_button.clicked.connect(self.start_training)
        self.stop_button.clicked.connect(self.session.stop_training)
        self.pause_button.clicked.connect(self.toggle_pause)
        self._show_idle()

    def config(self) -> TrainConfig:
        budget = self.budget_spin.value()
        by_iterations = self.budget_unit.currentText() == "iterations"
        return TrainConfig(
            strategy=self.strategy_combo.currentData(),
            minutes=None if by_iterations else budget,
            iterations=int(budget) if by_iterations else None,
            device=self.device_combo.currentText(),
            threads=background_threads(),
            checkpoint_seconds=self.session.checkpoint_seconds,
        )

    def start_training(self) -> bool:
        """Train on the session's image and labels in the worker process. Returns success."""
        if not self.session.start_training(self.config(), self.continue_check.isChecked()):
            return False
        for button, enabled in ((self.start_button, False), (self.stop_button, True), (self.pause_button, True)):
            button.setEnabled(enabled)
        self.pause_button.setText("Pause")
        self.progress_bar.setValue(0)
        self.curves.reset()
        run = self.session.run
        self.validation_label.setText(held_out_note(run.held_out, run.painted, MIN_ANNOTATED_FOR_HOLDOUT))
        self._request_preview()
        return True

    def toggle_pause(self) -> None:
        """Pause a running training or resume it."""
        self.session.toggle_pause()
        if self.session.training:
            self.pause_button.setText("Resume" if self.session.process.paused else "Pause")

    def _request_preview(self, event=None) -> None:
        image = self.session.image_layer
        if self.session.training and image is not None and self.session.run is not None:
            axis = self.session.run.axis
            self.session.request_preview(current_slice(self.session.viewer, image, axis))

    def _say(self, text: str) -> None:
        self.status_label.setText(text)

    def _device_chosen(self, *args) -> None:
        self.session.device = self.device_combo.currentText()
        ok, message = device_status(self.session.device)
        self.device_label.setText(message if ok else f"⚠ {message}")

    def _show_model(self, model: str | None) -> None:
        self.continue_check.setEnabled(model is not None)
        self.continue_check.setChecked(model is not None)

    def _show_idle(self) -> None:
        for button, enabled in ((self.start_button, True), (self.stop_button, False), (self.pause_button, False)):
            button.setEnabled(enabled)
        self.pause_button.setText("Pause")

    def _show_event(self, event) -> None:
        say = self.status_label.setText
        if isinstance(event, TrainingStarted):
            say(f"Training '{event.strategy}' on {event.device}: {event.annotated_slices} annotated, "
                f"{event.unannotated_slices} unannotated slices.")
        elif isinstance(event, PseudoLabelsReady):
            say(f"Registration pseudo-labels ready ({event.source}, {event.seconds:.1f} s); training...")
        elif isinstance(event, PseudoLabelsLimited):
            say(f"Registration time limit reached: {event.registered} volumes registered, "
                f"{event.skipped} train without pseudo-labels.")
        elif isinstance(event, StepCompleted):
            self._show_step(event)
        elif isinstance(event, ValidationScored):
            self.curves.add_validation(event.seconds, event.dice)
            self.validation_label.setText(f"Validation Dice {event.dice:.3f} on {event.slices} held-out slices "
                                          f"(iteration {event.iteration}).")
        elif isinstance(event, TrainingPaused):
            say(f"Paused at iteration {event.iteration}; press Resume to continue.")
        elif isinstance(event, TrainingResumed):
            say(f"Resumed after {event.paused_seconds:.0f} s.")
        elif isinstance(event, TrainingFinished):
            self._show_finished(event)
        elif isinstance(event, TrainingFailed):
            self._show_failed(event)

    def _show_step(self, event: StepCompleted) -> None:
        self.curves.add_loss(event.seconds, event.loss)
        now = time.monotonic()
        if now - self._last_step_shown >= STEP_DISPLAY_SECONDS:
            self._last_step_shown = now
            self.progress_bar.setValue(int(event.progress * 1000))
            self.status_label.setText(f"Iteration {event.iteration}, loss {event.loss:.3f}, "
                                      f"{event.slices_per_second:.1f} slices/s")
            self.curves.flush()  # one repaint of the dock for progress, status and curve

    def _show_finished(self, event: TrainingFinished) -> None:
        self.progress_bar.setValue(1000)
        plateau = painting_plateau(self.session.versions.history())
        if plateau:
            self.validation_label.setText(plateau)
        verb = "Stopped" if event.reason == "stopped" else "Finished"
        members = ", ".join(f"{name} {value:.2f}" for name, value in event.member_dice.items())
        detail = f" Dice on painted slices: {members}." if len(event.member_dice) > 1 else ""
        self.status_label.setText(f"{verb} after {event.iteration} iterations ({event.seconds:.0f} s).{detail} "
                                  "Review the prediction.")

    def _show_failed(self, event: TrainingFailed) -> None:
        text = f"Training failed: {event.message}"
        checkpoint = self.session.last_checkpoint
        if checkpoint is not None:
            text += f" Training will resume from the checkpoint at iteration {checkpoint.iteration}."
        self.session.say(text, error=True)


def held_out_note(slices: tuple[int, ...], painted: int, minimum: int) -> str:
    """What the panel says about validation before a run."""
    if slices:
        return f"Validating on held-out painted slices {', '.join(str(i) for i in slices)}."
    return f"Paint at least {minimum} slices to get a validation score ({painted} painted)."
