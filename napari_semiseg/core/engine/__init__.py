"""One training engine: members, loss terms, schedules and presets run by one loop."""

from .loop import TrainingData, train
from .presets import PRESETS, get_preset, strategy_names

__all__ = ["PRESETS", "TrainingData", "get_preset", "strategy_names", "train"]
