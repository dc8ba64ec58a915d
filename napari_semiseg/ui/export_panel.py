"""Export box: the chosen labels as one file, or every map of the volume into a folder.

Both go through ``core.export`` (written atomically, re-read and compared before success is
reported) with the provenance record of the session's one tracker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from .._writer import layer_geometry
from ..core.export import ExportItem, export_labels, export_maps
from ..core.volume import VolumeError
from .layers import CERTAINTY_LAYER, is_preview, layer_meta
from .session import Session

LABEL_FILES = "Medical volumes (*.nii.gz *.nii *.mha *.nrrd)"


class ExportPanel(QGroupBox):
    """Export labels... (one file and its provenance) and Export all... (labels, certainty, provenance)."""

    def __init__(self, session: Session):
        super().__init__("Export")
        self.session = session
        self.viewer = session.viewer
        row = QHBoxLayout(self)
        self.export_button = QPushButton("Export labels...")
        self.export_button.setToolTip("Write the labels (and where each came from) in the image's geometry, verified")
        self.export_all_button = QPushButton("Export all...")
        self.export_all_button.setToolTip("Write labels, certainty and provenance into a folder, verified")
        row.addWidget(self.export_button)
        row.addWidget(self.export_all_button)
        self.export_button.clicked.connect(self._choose_file)
        self.export_all_button.clicked.connect(self._choose_folder)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.nii.gz", LABEL_FILES)
        if path:
            self.export_labels(path)

    def _choose_folder(self) -> None:
        start = str(self.session.project.predictions_dir) if self.session.project else ""
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", start)
        if folder:
            self.export_all(folder)

    def export_labels(self, path: str) -> str | None:
        """Write the labels in their source geometry and the provenance beside them, verified."""
        labels = self._labels()
        if labels is None:
            return None
        provenance = self.session.provenance.now(labels)
        record = None if provenance is None else (provenance.codes, provenance.to_json())
        result = self._run(lambda: export_labels(path, np.asarray(labels.data), _geometry(labels), record))
        if result is None:
            return None
        self.session.say(f"Exported and verified {result.files[0]}")
        return str(result.files[0])

    def export_all(self, folder: str | Path) -> list[Path]:
        """Write labels, certainty and provenance (when present) in the image's geometry, verified."""
        labels = self._labels()
        if labels is None:
            return []
        stem = self.session.volume_name or labels.name.replace(" ", "_")
        items, left_out = [ExportItem("seg", np.asarray(labels.data))], ""
        certainty = self.viewer.layers[CERTAINTY_LAYER] if CERTAINTY_LAYER in self.viewer.layers else None
        if certainty is not None and is_preview(certainty):
            left_out = (" The certainty map was left out: it holds training previews of a few slices; "
                        "export again once training has finished.")
        elif certainty is not None and certainty.data.shape == labels.data.shape:
            items.append(ExportItem("certainty", np.asarray(certainty.data)))
        provenance = self.session.provenance.now(labels)
        if provenance is not None:
            record = provenance.to_json(labels_file=f"{stem}_seg.nii.gz", provenance_map=f"{stem}_provenance.nii.gz")
            items.append(ExportItem("provenance", provenance.codes, record))
        result = self._run(lambda: export_maps(folder, stem, _geometry(labels), items))
        if result is None:
            return []
        message = f"Exported and verified {result.describe()} in {folder}.{left_out}"
        self.session.say(message)
        show_info(message)
        return result.files

    def _labels(self):
        labels = self.session.labels_layer
        if labels is None:
            show_warning("Pick a labels layer to export.")
        return labels

    def _run(self, export):
        try:
            return export()
        except (VolumeError, RuntimeError, ValueError) as error:
            self.session.say(str(error), error=True)
            return None


def _geometry(layer):
    return layer_geometry(layer_meta(layer))
