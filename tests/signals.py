"""Synthetic test signals shared by several test files."""
from __future__ import annotations

import numpy as np


def kick_pattern(seconds: float, sr: int, every_s: float = 0.5) -> np.ndarray:
    """A decaying 150 -> 50 Hz sine sweep (a synthetic kick) every ``every_s`` seconds, mono."""
    n = int(seconds * sr)
    kick = np.zeros(n)
    m = int(0.25 * sr)
    k = np.arange(m) / sr
    hit = 0.8 * np.sin(2 * np.pi * (50 + 100 * np.exp(-k / 0.02)) * k) * np.exp(-k / 0.08)
    for s in np.arange(0.0, seconds, every_s):
        a = int(s * sr)
        kick[a:a + m] += hit[: n - a]
    return kick
