"""Unit conversions: the only place where dB, linear gain and LU are converted."""
from __future__ import annotations

import math

import numpy as np

#: Floor used when a level is zero: keeps logs finite and reads as "silent".
SILENCE_DB = -200.0


def db_to_gain(gain_db: float) -> float:
    """Amplitude ratio for a level in dB (``-6.0206`` -> ``0.5``)."""
    return 10.0 ** (gain_db / 20.0)


def gain_to_db(gain: float) -> float:
    """Level in dB of an amplitude ratio; ``SILENCE_DB`` for zero."""
    return 20.0 * math.log10(gain) if gain > 0 else SILENCE_DB


def power_to_db(power: float) -> float:
    """Level in dB of a power (mean-square) ratio; ``SILENCE_DB`` for zero."""
    return 10.0 * math.log10(power) if power > 0 else SILENCE_DB


def amplitude_to_db_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`gain_to_db` for arrays of amplitudes."""
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(np.abs(x)), SILENCE_DB)


def ms_to_samples(time_ms: float, sample_rate_hz: int) -> int:
    """Nearest whole number of samples for a duration in ms."""
    return int(round(time_ms * sample_rate_hz / 1000.0))


def beat_ms(tempo_bpm: float, note_fraction: float = 0.25) -> float:
    """Duration in ms of a note value at a tempo (``note_fraction=0.25`` is a quarter note)."""
    return 60000.0 / tempo_bpm * (note_fraction / 0.25)
