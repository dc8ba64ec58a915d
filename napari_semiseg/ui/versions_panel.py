"""Model versions box: the session's run registry; load one, compare two, roll back."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QGroupBox, QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from ..core.versions import ModelVersion, VersionError
from .session import Session


class VersionsPanel(QGroupBox):
    """The versions of the session's run registry, newest first, the current one marked."""

    def __init__(self, session: Session):
        super().__init__("Model versions")
        self.session = session
        layout = QVBoxLayout(self)
        self.version_list = QListWidget()
        self.version_list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.version_list.setToolTip("Select one version to load or roll back to, two to compare")
        self.version_list.setMaximumHeight(120)
        layout.addWidget(self.version_list)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Predict the image with this version (prediction layer, acceptable)")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Predict with two versions and show both as labels layers")
        self.roll_back_button = QPushButton("Roll back")
        self.roll_back_button.setToolTip("Make this version current: the next training continues from it")
        for button in (self.load_button, self.compare_button, self.roll_back_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.load_button.clicked.connect(self.load_selected)
        self.compare_button.clicked.connect(self.compare_selected)
        self.roll_back_button.clicked.connect(self.roll_back_selected)
        self.version_list.itemSelectionChanged.connect(self._update_buttons)
        session.versions_changed.connect(self.refresh)
        self.refresh()

    @property
    def store(self):
        return self.session.versions

    def refresh(self) -> None:
        """Re-read the registry; newest first, the current version marked."""
        self.version_list.clear()
        try:
            versions, current = self.store.versions(), self.store.current()
        except VersionError as error:
            self.session.say(str(error))
            versions, current = [], None
        for version in reversed(versions):
            marker = "● " if current is not None and version.id == current.id else "   "
            item = QListWidgetItem(marker + version.describe())
            item.setData(Qt.UserRole, version.id)
            item.setToolTip(f"{self.store.path_of(version)}\ncreated {version.created}, "
                            f"held-out slices {list(version.held_out_slices)}")
            self.version_list.addItem(item)
        self._update_buttons()

    def selected(self) -> list[ModelVersion]:
        ids = [item.data(Qt.UserRole) for item in self.version_list.selectedItems()]
        return [self.store.get(int(i)) for i in sorted(ids)]

    def select(self, *version_ids: int) -> None:
        for row in range(self.version_list.count()):
            item = self.version_list.item(row)
            item.setSelected(item.data(Qt.UserRole) in version_ids)

    def load_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 1:
            self.session.say("Select one version to load.")
            return
        self.session.load_version(chosen[0])

    def compare_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 2:
            self.session.say("Select two versions to compare (Ctrl+click).")
            return
        self.session.compare_versions(chosen[0], chosen[1])

    def roll_back_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 1:
            self.session.say("Select one version to roll back to.")
            return
        try:
            version = self.store.roll_back(chosen[0].id)
        except VersionError as error:
            self.session.say(str(error))
            return
        self.refresh()
        self.session.roll_back(version)

    def _update_buttons(self) -> None:
        count = len(self.version_list.selectedItems())
        self.load_button.setEnabled(count == 1)
        self.roll_back_button.setEnabled(count == 1)
        self.compare_button.setEnabled(count == 2)
