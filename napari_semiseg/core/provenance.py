"""Where each label came from: painted, accepted from the model or registration, edited since.

The provenance is a uint8 map on the labels' grid plus a record of every acceptance (when,
from which model version or with which registration scores). It is kept in step with the
labels by comparing states, so it sees any edit however it was made (brush, fill, eraser,
undo, redo):

* a labelled voxel nobody accepted is *painted by the user*;
* an accepted voxel whose value changed since is *edited after acceptance*;
* an acceptance whose voxels all hold their pre-acceptance values again was undone: its codes
  are restored (and re-applied if every voxel holds the accepted values again, a redo).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

NONE = 0
PAINTED = 1
ACCEPTED_MODEL = 2
ACCEPTED_REGISTRATION = 3
EDITED = 4
CODE_NAMES = {
    NONE: "none",
    PAINTED: "painted by user",
    ACCEPTED_MODEL: "accepted from model",
    ACCEPTED_REGISTRATION: "accepted from registration",
    EDITED: "edited after acceptance",
}
SOURCE_CODES = {"model": ACCEPTED_MODEL, "registration": ACCEPTED_REGISTRATION}
FORMAT = "napari-semiseg provenance"
FORMAT_VERSION = 1


@dataclass
class _Acceptance:
    """One acceptance: what it wrote, what it replaced, and the acceptance state before it."""

    record: dict
    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    previous_values: np.ndarray
    previous_source: np.ndarray
    previous_accepted: np.ndarray
    undone: bool = False


@dataclass
class Provenance:
    """Per-voxel provenance codes and the acceptance record for one labels array.

    ``accepted_source`` (0, ACCEPTED_MODEL or ACCEPTED_REGISTRATION) and ``accepted_values``
    say what the last acceptance in force wrote at each voxel; the codes follow from them and
    the current labels.
    """

    codes: np.ndarray
    accepted_source: np.ndarray
    accepted_values: np.ndarray
    _acceptances: list[_Acceptance] = field(default_factory=list)
    _earlier_records: list[dict] = field(default_factory=list)  # acceptances of earlier sessions

    @classmethod
    def for_labels(cls, labels: np.ndarray) -> "Provenance":
        """Start tracking ``labels``: what is already there counts as painted by the user."""
        labels = np.asarray(labels)
        codes = np.where(labels != 0, PAINTED, NONE).astype(np.uint8)
        return cls(codes, np.zeros(labels.shape, dtype=np.uint8), np.zeros(labels.shape, dtype=labels.dtype))

    @classmethod
    def from_saved(cls, labels: np.ndarray, state: dict[str, np.ndarray]) -> "Provenance":
        """The provenance kept beside ``labels`` by :meth:`saved_state` (in a project's save).

        Acceptances of earlier sessions stay in the record and in the codes, but cannot be
        undone: napari's undo history ends with the session.

        Raises:
            ValueError: the saved state does not fit ``labels``.
        """
        labels = np.asarray(labels)
        source = np.asarray(state["accepted_source"], dtype=np.uint8)
        values = np.asarray(state["accepted_values"])
        if source.shape != labels.shape or values.shape != labels.shape:
            raise ValueError(f"Saved provenance of shape {source.shape} does not fit labels of shape {labels.shape}.")
        provenance = cls.for_labels(labels)
        provenance.accepted_source = source.copy()
        provenance.accepted_values = values.astype(labels.dtype)
        provenance._earlier_records = json.loads(str(state["acceptance_records"]))
        provenance.update(labels)
        return provenance

    def saved_state(self) -> dict[str, np.ndarray]:
        """What a project keeps beside the labels: per voxel the source and value of the
        acceptance in force, and the records (arrays only, for an ``.npz``)."""
        return {"accepted_source": self.accepted_source, "accepted_values": self.accepted_values,
                "acceptance_records": np.array(json.dumps(self.records))}

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape

    @property
    def records(self) -> list[dict]:
        """The acceptances in force (undone ones left out), oldest first."""
        return self._earlier_records + [acceptance.record for acceptance in self._acceptances if not acceptance.undone]

    def user_painted(self) -> np.ndarray:
        """Voxels the user painted or edited (what acceptances must not overwrite)."""
        return (self.codes == PAINTED) | (self.codes == EDITED)

    def record_acceptance(
        self,
        labels_before: np.ndarray,
        indices: tuple[np.ndarray, ...],
        values: np.ndarray,
        source: str,
        scope: str,
        **details,
    ) -> dict:
        """Note an acceptance; call with the labels *before* it was written.

        Args:
            labels_before: the labels before the edit (only the edited voxels are read).
            indices, values: the edit, as given to ``Labels.data_setitem``.
            source: ``"model"`` or ``"registration"``.
            scope: what was accepted (``"all"``, ``"slice"``, ``"label"``, ``"component"``, ``"region"``).
            details: JSON-serialisable facts to keep (model path and iteration, registration
                score per slice, threshold, ...).

        Returns:
            The record that goes into the JSON sidecar.
        """
        if source not in SOURCE_CODES:
            raise ValueError(f"Unknown acceptance source '{source}'; use 'model' or 'registration'.")
        indices = tuple(np.asarray(i) for i in indices)
        values = np.broadcast_to(np.asarray(values, dtype=self.accepted_values.dtype), indices[0].shape).copy()
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "scope": scope,
            "voxels": int(indices[0].size),
            **_jsonable(details),
        }
        self._acceptances = [a for a in self._acceptances if not a.undone]  # a new edit ends redo
        self._acceptances.append(_Acceptance(
            record, indices, values, np.asarray(labels_before)[indices].copy(),
            self.accepted_source[indices].copy(), self.accepted_values[indices].copy(),
        ))
        self.accepted_source[indices] = SOURCE_CODES[source]
        self.accepted_values[indices] = values
        self.codes[indices] = SOURCE_CODES[source]
        return record

    def update(self, labels: np.ndarray) -> bool:
        """Bring the codes in line with the current labels; returns True if any code changed."""
        labels = np.asarray(labels)
        if labels.shape != self.codes.shape:
            raise ValueError(f"Labels shape {labels.shape} differs from the provenance shape {self.codes.shape}.")
        self._follow_undo_redo(labels)
        accepted = self.accepted_source != 0
        codes = np.where(labels != 0, PAINTED, NONE).astype(np.uint8)
        codes[accepted] = np.where(labels[accepted] == self.accepted_values[accepted],
                                   self.accepted_source[accepted], EDITED)
        changed = not np.array_equal(codes, self.codes)
        self.codes = codes
        return changed

    def _follow_undo_redo(self, labels: np.ndarray) -> None:
        for acceptance in reversed(self._acceptances):
            if not acceptance.undone and np.array_equal(labels[acceptance.indices], acceptance.previous_values):
                self.accepted_source[acceptance.indices] = acceptance.previous_source
                self.accepted_values[acceptance.indices] = acceptance.previous_accepted
                acceptance.undone = True
        for acceptance in self._acceptances:
            if acceptance.undone and np.array_equal(labels[acceptance.indices], acceptance.values):
                self.accepted_source[acceptance.indices] = SOURCE_CODES[acceptance.record["source"]]
                self.accepted_values[acceptance.indices] = acceptance.values
                acceptance.undone = False

    def counts(self) -> dict[str, int]:
        """Voxels per provenance code, by name."""
        histogram = np.bincount(self.codes.ravel(), minlength=len(CODE_NAMES))
        return {CODE_NAMES[code]: int(histogram[code]) for code in CODE_NAMES}

    def to_json(self, **extra) -> dict:
        """The sidecar record: code meanings, voxel counts and every acceptance in force."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "codes": {str(code): name for code, name in CODE_NAMES.items()},
            "counts": self.counts(),
            "acceptances": self.records,
            **_jsonable(extra),
        }


def slices_touched(indices: tuple[np.ndarray, ...], axis: int) -> list[int]:
    """The slice indices along ``axis`` an edit touches."""
    return [int(i) for i in np.unique(np.asarray(indices[axis]))]


def _jsonable(value):
    """Plain JSON types (numpy scalars and arrays, tuples and int keys converted)."""
    return json.loads(json.dumps(value, default=_convert))


def _convert(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
