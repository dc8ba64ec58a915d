"""Headless core: volumes, annotations, networks, training, prediction, registration.

Nothing under this package imports napari, Qt, magicgui or superqt.
"""
