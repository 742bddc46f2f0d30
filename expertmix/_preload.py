"""Imported once by the workers' fork server (:data:`expertmix.workers.PRELOAD`), so that every
worker forks with the heavy libraries loaded: Essentia (through
:func:`expertmix.descriptors.load_essentia`) and pyo (through :mod:`expertmix.render`)."""
from . import descriptors, render

__all__ = ["descriptors", "render"]

descriptors.load_essentia()
