"""One training engine: members, loss terms, schedules and presets run by one loop.

``TrainingData`` and ``train`` are imported on first use: importing the package (presets,
checkpoints) stays light and free of import cycles, and building a training job
(``TrainingData``, from :mod:`.data`) does not import the loop.
"""

from importlib import import_module

from .presets import PRESETS, get_preset, strategy_names

__all__ = ["PRESETS", "TrainingData", "get_preset", "strategy_names", "train"]

LAZY = {"TrainingData": "data", "train": "loop"}  # name -> the module of this package defining it


def __getattr__(name: str):
    if name in LAZY:
        return getattr(import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
