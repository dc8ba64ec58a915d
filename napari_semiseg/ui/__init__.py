"""napari widgets and layers over the headless core."""
