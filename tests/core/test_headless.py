"""The core and the command line must never load a GUI toolkit."""

import subprocess
import sys

GUI_MODULES = ("napari", "qtpy", "PySide6", "PyQt5", "PyQt6", "magicgui", "superqt", "vispy")

PROBE = """
import sys
import napari_semiseg.core
import napari_semiseg.core.engine, napari_semiseg.core.predict, napari_semiseg.core.model
import napari_semiseg.core.volume, napari_semiseg.core.annotations, napari_semiseg.core.accept
import napari_semiseg.cli
napari_semiseg.cli.build_parser()
loaded = sorted({name.split('.')[0] for name in sys.modules} & set(sys.argv[1:]))
print(','.join(loaded))
"""


def test_core_and_cli_import_no_gui_modules():
    result = subprocess.run([sys.executable, "-c", PROBE, *GUI_MODULES], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"GUI modules imported by the core: {result.stdout.strip()}"


def test_each_entry_module_imports_on_its_own():
    """Import cycles only show when a module is the first one imported."""
    for module in ("napari_semiseg.core.model", "napari_semiseg.core.predict", "napari_semiseg.core.engine.loop",
                   "napari_semiseg.core.registration", "napari_semiseg.cli"):
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert result.returncode == 0, f"importing {module} first fails:\n{result.stderr[-2000:]}"
