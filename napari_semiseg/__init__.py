"""napari-semiseg: semi-supervised segmentation of 3D medical images in napari."""

__version__ = "0.1.0"
