"""The names, units and meanings of every per-stem descriptor, declared once.

The analysis (:mod:`expertmix.descriptors`) fills these; the rulebook resolves the descriptor
names its conditions use against this table when it loads (so a typo fails at load time with a
suggestion), the CLI lists them, and the learning models use them, in this order, as features.
Every value is a plain float (booleans are 0.0/1.0; "not applicable" is a documented neutral
value, never None, so rules and models see a number).

Bumping :data:`DESCRIPTOR_VERSION` tells trained models that their features changed meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Increment when a descriptor is added, removed or changes its definition.
DESCRIPTOR_VERSION = 2


@dataclass(frozen=True)
class DescriptorSpec:
    name: str
    unit: str
    doc: str
    family: str


#: Broad bands used by band energies and masking: name -> (low_hz, high_hz).
BANDS_HZ: dict[str, tuple[float, float]] = {
    "sub": (20.0, 60.0),
    "bass": (60.0, 200.0),
    "low_mid": (200.0, 500.0),
    "mid": (500.0, 2000.0),
    "high_mid": (2000.0, 5000.0),
    "presence": (5000.0, 10000.0),
    "air": (10000.0, 20000.0),
}

N_MFCC = 13
N_BARK = 24

_SPECS: list[tuple[str, str, str, str]] = [
    # name, unit, family, doc
    ("loudness_lufs", "LUFS", "level", "BS.1770-4 gated integrated loudness (-200 when nothing passes the gates)"),
    ("loudness_st_p10_lufs", "LUFS", "level", "10th percentile of the 3 s short-term loudness over the active parts"),
    ("loudness_st_p50_lufs", "LUFS", "level", "median short-term loudness over the active parts"),
    ("loudness_st_p95_lufs", "LUFS", "level", "95th percentile of the short-term loudness over the active parts"),
    ("loudness_range_lu", "LU", "dynamics", "EBU Tech 3342 loudness range"),
    ("peak_dbfs", "dBFS", "level", "sample peak"),
    ("true_peak_dbtp", "dBTP", "level", "true peak, 4x oversampled"),
    ("rms_dbfs", "dBFS", "level", "RMS over the active parts"),
    ("crest_db", "dB", "dynamics", "peak minus active RMS (3 dB for a sine, 15-20 dB for raw drums)"),
    ("dynamic_complexity_db", "dB", "dynamics", "Essentia dynamic complexity: mean deviation of the loudness from its average"),
    ("active_fraction", "ratio", "level", "share of the stem that is played (400 ms blocks within 30 LU of the loudest)"),
    ("noise_floor_dbfs", "dBFS", "defects", "RMS of the quietest non-silent 100 ms blocks (5th percentile): hiss, bleed, room"),
    ("signal_to_noise_db", "dB", "defects", "active RMS above the noise floor"),
    ("spectral_centroid_hz", "Hz", "spectrum", "power-weighted mean frequency of the active parts"),
    ("spectral_rolloff_hz", "Hz", "spectrum", "frequency below which 85 % of the power lies"),
    ("spectral_flatness", "ratio", "spectrum", "mean over active frames of the geometric over arithmetic mean of the power spectrum: ~0 tonal, ~0.56 white noise"),
    ("low_energy_ratio", "ratio", "spectrum", "share of the power below 150 Hz"),
    ("sub_energy_ratio", "ratio", "spectrum", "share of the power below 40 Hz (rumble)"),
    ("sub_floor_dbfs", "dBFS", "defects", "steady 10-40 Hz level: 20th percentile over 0.19 s frames, silent ones included (rumble, handling noise)"),
    ("high_energy_ratio", "ratio", "spectrum", "share of the power above 5 kHz (sibilance, air)"),
    *[(f"band_{b}_db", "dB", "spectrum", f"power in {lo:g}-{hi:g} Hz relative to the whole spectrum (<= 0)")
      for b, (lo, hi) in BANDS_HZ.items()],
    *[(f"bark_{i:02d}_db", "dB", "spectrum", f"Bark band {i} power relative to the whole spectrum") for i in range(1, N_BARK + 1)],
    *[(f"mfcc_{i:02d}", "", "timbre", f"mean MFCC coefficient {i} over the active frames") for i in range(1, N_MFCC + 1)],
    ("onset_rate_hz", "Hz", "rhythm", "note onsets per second over the active parts"),
    ("channels", "count", "stereo", "1 or 2"),
    ("stereo_width", "ratio", "stereo", "side over mid energy (0 for mono or dual mono, 1 for uncorrelated channels)"),
    ("stereo_correlation", "ratio", "stereo", "L/R correlation, -1..1 (1.0 for mono)"),
    ("stereo_balance_db", "dB", "stereo", "right minus left channel energy (0 for mono)"),
    ("dc_offset", "FS", "defects", "largest per-channel mean, linear full scale"),
    ("hum_hz", "Hz", "defects", "50 or 60 when a mains hum is detected, 0 when not"),
    ("hum_excess_db", "dB", "defects", "prominence of the mains lines over the local floor (reported below detection too)"),
    ("clipped_fraction", "ratio", "defects", "share of samples in flat tops at full scale"),
    ("click_count", "count", "defects", "isolated clicks: 1-3 sample spikes far above their neighbourhood (drum attacks are not counted)"),
    ("clicks_per_min", "1/min", "defects", "click_count per minute of audio"),
    ("masked_max_db", "dB", "masking", "strongest masking another stem exerts on this stem in one of its essential bands"),
    ("masking_max_db", "dB", "masking", "strongest masking this stem exerts on another stem in an essential band"),
    ("duration_s", "s", "level", "length"),
]

DESCRIPTORS: dict[str, DescriptorSpec] = {n: DescriptorSpec(n, u, d, f) for n, u, f, d in _SPECS}
#: Feature order for the learning models.
DESCRIPTOR_NAMES: tuple[str, ...] = tuple(DESCRIPTORS)
