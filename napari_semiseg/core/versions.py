"""Model versions: one entry per training run, kept in a JSON index inside the runs folder.

The index (``versions.json``) lists each run's saved model with when it finished, its strategy,
how many painted slices it trained on and held out, and its validation Dice. One version is
*current*: the model a retrain continues from. Rolling back makes an older version current; no
model file is ever deleted or rewritten. The index is written atomically (temporary file, then
rename), so a crash leaves the previous index intact.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .atomic import write_text_atomic

INDEX_NAME = "versions.json"
INDEX_FORMAT = "napari-semiseg-versions"


class VersionError(ValueError):
    """An unknown version or an unreadable index; the message says what to do."""


@dataclass(frozen=True)
class ModelVersion:
    """One saved model. ``model_path`` is relative to the runs folder when it lies inside it."""

    id: int
    model_path: str
    created: str
    strategy: str
    iterations: int
    painted_slices: int
    trained_slices: int
    held_out_slices: tuple[int, ...] = ()
    validation_dice: float | None = None
    parent: int | None = None
    reason: str = "budget"

    def describe(self) -> str:
        """One line for a list: id, time, strategy, slices seen, validation score."""
        score = "no validation" if self.validation_dice is None else f"val Dice {self.validation_dice:.3f}"
        return (f"v{self.id}  {self.created[11:16]}  {self.strategy}  trained on {self.trained_slices} of "
                f"{self.painted_slices} painted slices  {score}  ({self.iterations} it)")


class VersionStore:
    """The versions of the models trained in one runs folder."""

    def __init__(self, runs_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir)
        self.index_path = self.runs_dir / INDEX_NAME

    def versions(self) -> list[ModelVersion]:
        """All versions, oldest first."""
        return [self._from_dict(entry) for entry in self._read()["versions"]]

    def current(self) -> ModelVersion | None:
        """The version a retrain continues from (the newest unless rolled back)."""
        index = self._read()
        if index["current"] is None:
            return None
        return self.get(index["current"])

    def get(self, version_id: int) -> ModelVersion:
        for version in self.versions():
            if version.id == version_id:
                return version
        raise VersionError(f"There is no model version v{version_id} in '{self.runs_dir}'.")

    def add(self, model_path: str | os.PathLike, *, strategy: str, iterations: int, painted_slices: int,
            trained_slices: int, held_out_slices=(), validation_dice: float | None = None,
            reason: str = "budget") -> ModelVersion:
        """Record a finished run's model and make it current."""
        index = self._read()
        next_id = 1 + max((entry["id"] for entry in index["versions"]), default=0)
        version = ModelVersion(
            id=next_id,
            model_path=self._relative(Path(model_path)),
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            strategy=strategy,
            iterations=int(iterations),
            painted_slices=int(painted_slices),
            trained_slices=int(trained_slices),
            held_out_slices=tuple(int(i) for i in held_out_slices),
            validation_dice=None if validation_dice is None or validation_dice != validation_dice
            else float(validation_dice),
            parent=index["current"],
            reason=reason,
        )
        entry = asdict(version)
        entry["held_out_slices"] = list(version.held_out_slices)
        index["versions"].append(entry)
        index["current"] = version.id
        self._write(index)
        return version

    def roll_back(self, version_id: int) -> ModelVersion:
        """Make an older version current (the next retrain continues from it)."""
        version = self.get(version_id)
        if not self.path_of(version).exists():
            raise VersionError(f"The model file of v{version_id} is missing ({self.path_of(version)}).")
        index = self._read()
        index["current"] = version.id
        self._write(index)
        return version

    def latest_on_disk(self) -> Path | None:
        """The current version's model file, else the newest one still on disk, else None."""
        current = self.current()
        candidates = ([current] if current is not None else []) + list(reversed(self.versions()))
        return next((self.path_of(v) for v in candidates if self.path_of(v).exists()), None)

    def path_of(self, version: ModelVersion) -> Path:
        """Absolute path of a version's model file."""
        path = Path(version.model_path)
        return path if path.is_absolute() else self.runs_dir / path

    def history(self) -> list[tuple[int, float | None]]:
        """(painted slices, validation Dice) per run, oldest first, for the plateau rule."""
        return [(v.painted_slices, v.validation_dice) for v in self.versions()]

    # ----- storage --------------------------------------------------------------------
    def _relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.runs_dir.resolve()))
        except ValueError:
            return str(path.resolve())

    def _read(self) -> dict:
        if not self.index_path.exists():
            return {"format": INDEX_FORMAT, "versions": [], "current": None}
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise VersionError(f"The version index '{self.index_path}' cannot be read ({error}); "
                               "move it aside to start a new one (model files are untouched).") from error
        if index.get("format") != INDEX_FORMAT:
            raise VersionError(f"'{self.index_path}' is not a napari-semiseg version index.")
        return index

    def _write(self, index: dict) -> None:
        write_text_atomic(self.index_path, json.dumps(index, indent=1))

    @staticmethod
    def _from_dict(entry: dict) -> ModelVersion:
        known = {f.name for f in fields(ModelVersion)}
        values = {key: value for key, value in entry.items() if key in known}
        values["held_out_slices"] = tuple(values.get("held_out_slices", ()))
        return ModelVersion(**values)
