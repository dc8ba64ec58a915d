"""One training engine: members, loss terms, schedules and presets run by one loop.

The loop is imported on first use, so that light modules (checkpoints, presets) can be
imported from here without pulling in the loop (and without import cycles through it).
"""

from .presets import PRESETS, get_preset, strategy_names

__all__ = ["PRESETS", "TrainingData", "get_preset", "strategy_names", "train"]


def __getattr__(name: str):
    if name in ("TrainingData", "train"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
