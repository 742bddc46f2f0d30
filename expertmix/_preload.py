"""Imported once by the workers' fork server (:data:`expertmix.workers.PRELOAD`), so that every
worker forks with the heavy libraries loaded: Essentia (through
:func:`expertmix.descriptors.load_essentia`), pyo (through :func:`expertmix.render._load_pyo`)
and scipy.fft (the analysis imports it where it is used, so that the main process never does)."""
import importlib

from .descriptors import load_essentia
from .render import _load_pyo

load_essentia()
_load_pyo()
importlib.import_module("scipy.fft")
