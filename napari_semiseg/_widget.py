"""npe2 widget contribution: the dock widget lives in :mod:`napari_semiseg.ui.widget`."""

from napari_semiseg.ui.widget import SemisegWidget

__all__ = ["SemisegWidget"]
