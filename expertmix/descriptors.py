"""Per-stem descriptors and session-wide masking: the listening half of "listening and deciding".

This is the only module of expertmix that imports Essentia. It fills every descriptor declared in
:mod:`expertmix.descriptor_specs` (names, units and order come from there) from **one decode** of
each stem: the loudness, peak, RMS, DC, stereo, hum, clipping and broadband-ratio measures come
from :func:`expertmix.analysis.analyse_audio_detailed` (one streaming pass, loudness computed once),
and everything below reuses that pass's 100 ms block data instead of measuring again.

Public API
----------
* :func:`describe_audio` (one stem, float32 ``(frames, channels)`` audio) ->
  :class:`StemDescriptors`
* :func:`compute_masking` (stems, optional planned gains) -> list of :class:`Masking`, and fills
  ``masked_max_db`` / ``masking_max_db`` in each stem's values
* :func:`describe_session` (a :class:`~expertmix.stems.StemSet`) -> :class:`SessionDescriptors`,
  stems described in a process pool, with tempo and masking; ``to_dict`` / ``from_dict`` /
  ``write_yaml`` for the YAML round trip

Definitions
-----------
Levels are relative to digital full scale (a full-scale sine: peak 0 dBFS, RMS -3.01 dBFS).
"Silence" reads :data:`~expertmix.units.SILENCE_DB` (-200) wherever a level has no value.

**Activity.** Two gates, both from :mod:`expertmix.analysis` (BS.1770-4 K-weighted, 100 ms hop):

* an *active frame* is a 100 ms sub-block whose own K-weighted loudness is above -70 LUFS and
  within 30 LU of the stem's loudest 400 ms momentary block (used for per-frame statistics that
  silence would bias: spectra, MFCC, flatness, masking, short-term percentiles, stereo balance).
  ``rms_dbfs`` is the analysis module's RMS over active frames;
* an *active block* is a 400 ms momentary block passing the same gate (``active_fraction`` is
  their share). The *active parts* of a stem are the stretches of sub-blocks covered by active
  blocks, each trimmed to run from its first to its last active frame: continuous time, used
  where a duration or a continuous signal is needed (onset rate, dynamic complexity). The
  silence between the hits of a phrase belongs to it; a rest between phrases does not.

**Loudness** (``loudness_*``, ``loudness_range_lu``, ``peak_dbfs``, ``true_peak_dbtp``,
``rms_dbfs``, ``crest_db``, ``active_fraction``): as in :mod:`expertmix.analysis` (BS.1770-4,
EBU Tech 3342, 4x true peak). ``loudness_st_p10/p50/p95_lufs``: percentiles (Hazen) of the 3 s
short-term loudness (hop 100 ms) over the windows of which at least half the 100 ms sub-blocks
are active frames (when none qualifies: the windows that pass the activity gate on their own
loudness; -200 when none does).

**Dynamics.** ``dynamic_complexity_db``: Essentia ``DynamicComplexity`` (0.2 s frames; the mean
absolute deviation of a B-weighted, 35 ms-smoothed frame level from its loudness-weighted
average) of the channel-mean signal over the active parts only (inactive stretches cut out, so
rests do not count as dynamics); 0.0 for a silent stem.

**Noise floor.** ``noise_floor_dbfs``: the 5th percentile (linear interpolation) of the RMS of the
100 ms sub-blocks that are not digital silence (mean square above -120 dBFS), each block's own
mean removed, channel powers averaged; -200 when every block is digital silence.
``signal_to_noise_db`` = ``rms_dbfs`` - ``noise_floor_dbfs`` (0.0 when either is silence). A
stem with no quiet gap reads the quietest 5 % of its own playing.

**Spectrum.** One spectrum per active frame: a Hann window of ``N`` samples (the largest power of
two within 100 ms: 4096 at 44.1/48 kHz, 10.8 Hz bins) centred in the 100 ms sub-block, DC
removed, one-sided power scaled so that the bins of a frame sum to its (Hann-weighted) mean
square. Channel powers are *averaged* for the stem's spectral descriptors (so mono and dual-mono
read the same) and *summed* for ``band_frames_db`` (the BS.1770 convention, so that aligning
stems by loudness aligns their band levels). From that one spectrum:

* the long-term spectrum (LTAS) is the mean power over all active frames;
* ``band_<name>_db``: LTAS power in ``BANDS_HZ`` (bins with low <= f < high) over the whole
  LTAS, dB (<= 0; -200 for a band above Nyquist or without power);
* ``bark_NN_db``: the 24 classic Bark critical bands (0, 100, 200, 300 ... 12000, 15500 Hz),
  Essentia ``BarkBands`` (26 bands, its split first two bands merged) of the LTAS, over the whole
  LTAS, dB;
* ``spectral_rolloff_hz``: Essentia ``RollOff`` (85 % of the power) of the LTAS;
* per-frame measures add an epsilon of 1e-12 x the frame's mean bin power to every bin (a floor
  120 dB under the frame's level, so exact zeros and float rounding noise do not decide them);
* ``spectral_flatness``: mean over active frames of Essentia ``Flatness`` of the power spectrum.
  A per-frame measure: a pure tone reads ~0, white noise ~0.56 (exp(-Euler gamma), the flatness
  of a single periodogram), never 1;
* ``mfcc_NN``: mean over active frames of Essentia ``MFCC`` (40 mel bands from 0 to
  min(11 kHz, Nyquist), Essentia's defaults otherwise: power bands, dB amplitude log, DCT-II) of
  the frame's magnitude spectrum; ``mfcc_01`` is the 0th (energy) coefficient.

Per-frame Essentia calls (MFCC, Flatness) see at most :data:`MAX_SPECTRAL_FRAMES` active frames,
evenly spaced over the stem, so their cost is bounded; the LTAS and band levels use all active
frames. ``spectral_centroid_hz`` and the ``*_energy_ratio`` values are the analysis module's
(power-weighted, averaged spectrum of up to 256 frames spread over the whole stem).

**Onsets.** ``onset_rate_hz``: onsets in the active parts per second of active parts (an onset
found in a frame that runs past the end of the stem, the edge of Essentia's zero padding, is not
counted). Onsets are Essentia ``OnsetRate``'s: high-frequency-content (Brossier) and
complex-domain (Bello) detection functions of 1024-sample Hann frames, hop 512 (11.6 ms at
44.1 kHz; frame and hop scale with the sample rate), of the channel mean, combined and
peak-picked by Essentia ``Onsets``. The framing, FFT and both detection functions are computed
in numpy, vectorised over all frames (Essentia's formulas exactly; its own per-frame loop costs
~8x more); the test suite checks that the onset times equal ``OnsetRate``'s. Running
``OnsetRate`` on a decimated signal instead, as once planned, was measured to lose most onsets
(a 4 Hz click train read 0.9 Hz, 8 Hz hi-hats ~0 Hz).

**Stereo.** ``stereo_width`` / ``stereo_correlation`` from the analysis (DC-free, whole stem);
mono or silent: width 0.0, correlation 1.0; a stereo stem with one silent channel: width from
the same formula (1.0), correlation 0.0. ``stereo_balance_db``: right minus left channel power
(block means removed) over active frames, dB, clipped to +-100 (0.0 for mono).

**Defects.** ``dc_offset``, ``hum_hz`` (0.0 when no hum), ``hum_excess_db``,
``clipped_fraction``: the analysis module's. ``click_count``: isolated spikes of 1 to 3 samples,
per channel. A spike of width ``w`` starting at sample ``s``:

* its samples ``x[s .. s+w-1]`` all lie on the same side of the line joining ``x[s-1]`` and
  ``x[s+w]``, each by at least half the largest deviation ``h``;
* the signal is continuous across it: the slope of the two samples on each side, extrapolated
  over the spike, lands within ``h / 2`` of the other side (this rejects steps, such as a drum
  attack out of silence or a cut);
* its smallest deviation is at least 4x the largest value of the same measure (the mean of a
  ``w``-sample run minus the mean of its two neighbours) over the runs within 0.75 ms on either
  side that do not touch it: a smooth waveform, whose curvature looks alike everywhere, and a
  spike next to a drum hit, measured against the hit, do not count;
* its smallest deviation is at least -60 dBFS.

Candidates come from a cheap pass over the second difference ``x[n] - (x[n-1] + x[n+1]) / 2``
(64-sample blocks whose largest value exceeds 3.5x the RMS of both neighbouring blocks).
Detections within 4 samples of each other, in any channel, are one click. ``clicks_per_min`` is
the count per minute of audio.

Masking
-------
:func:`compute_masking` compares stems band by band (``BANDS_HZ``) over time, using each stem's
``band_frames_db`` (per 100 ms active frame, channel-summed band power, dB):

1. Alignment: every stem is offset to equal integrated loudness (``-loudness_lufs``), or, when
   ``gains_db`` is given, by its planned gain (the raw level plus ``gains_db[name]``, 0 dB for a
   stem not listed).
2. A band is *essential* to a maskee when it holds at least 15 % of the maskee's power summed
   over the seven bands and its active frames, or is one of its two strongest bands and holds
   at least 5 % (``maskee_band_share`` reports the share).
3. For each ordered pair (masker, maskee) and each essential band of the maskee,
   ``masking_db`` is the median of (masker band level - maskee band level) after alignment,
   over the frames where the masker is active and the maskee's band *sounds* (the maskee is
   active and its level in the band is within 20 dB of the band's mean power over its active
   frames, so that a part that only touches the band now and then is judged where it does);
   at least 1 s of such frames is needed. It is reported when it is above 0 dB: there, the
   masker is usually louder than the maskee in a band the maskee needs.

``masked_max_db`` of a stem is its largest ``masking_db`` as maskee, ``masking_max_db`` its
largest as masker (0.0 when none).
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import soundfile as sf
import yaml

from .analysis import (  # noqa: E402
    ACTIVITY_RANGE_LU, AnalysisDetail, StemAnalysis, analyse_audio_detailed)
from .descriptor_specs import (  # noqa: E402
    BANDS_HZ, DESCRIPTOR_NAMES, DESCRIPTOR_VERSION, DESCRIPTORS, N_BARK, N_MFCC)
from .errors import InputError  # noqa: E402
from .io import atomic_write_text  # noqa: E402
from .loudness import ABSOLUTE_GATE_LUFS, as_frames  # noqa: E402
from .stems import (Stem, StemInfo, StemProbe, StemSet, assemble_stemset, prepare_cache,  # noqa: E402
                    prepare_stem)
from .tempo import estimate_tempo_bpm, onset_envelope  # noqa: E402
from .units import SILENCE_DB, power_to_db  # noqa: E402
from .workers import WorkerPool, worker_pool  # noqa: E402

# --- constants ------------------------------------------------------------------------------

#: Short-term windows count as active parts when at least this share of their 100 ms
#: sub-blocks are active frames.
ST_ACTIVE_SHARE = 0.5
#: Mean square at or below this (-120 dBFS) is digital silence for the noise floor.
DIGITAL_SILENCE_MS = 1e-12
#: Percentile of the non-silent 100 ms block RMS that defines the noise floor.
NOISE_FLOOR_PERCENTILE = 5.0
#: At most this many active frames are fed to the per-frame Essentia algorithms.
MAX_SPECTRAL_FRAMES = 400
#: Frames per FFT batch (bounds memory).
_FFT_BATCH = 64
#: Spectral roll-off share of the power.
ROLLOFF_CUTOFF = 0.85
#: Flatness epsilon, relative to the frame's mean bin power.
FLATNESS_EPS = 1e-12
#: MFCC: mel bands and upper frequency (Essentia's defaults), Hz.
MFCC_BANDS = 40
MFCC_HIGH_HZ = 11000.0
#: Essentia's BarkBands edges split the first two classic bands: 26 of its bands are the 24
#: classic critical bands up to 15.5 kHz once the halves are merged.
_ESSENTIA_BARK_BANDS = 26
#: Onset detection: Essentia OnsetRate's hop at 44.1 kHz (scaled with the rate; frame = 2 hops).
ONSET_HOP_44K = 512
_ONSET_BATCH = 256
#: Dynamic complexity frame, s (Essentia's default).
DYNAMIC_FRAME_S = 0.2
#: Clicks: spike width range (samples), height over the largest spikiness of the neighbourhood,
#: level floor, neighbourhood each side (s), and detections merged within this many samples.
CLICK_MAX_WIDTH = 3
CLICK_RATIO = 4.0
CLICK_MIN_LEVEL = 1e-3
CLICK_CONTEXT_S = 0.00075
CLICK_MERGE = 4
#: Click candidates: blocks of this many second-difference samples whose largest |d| exceeds
#: this multiple of the RMS of both neighbouring blocks; at most this many are examined.
_CLICK_BLOCK = 64
_CLICK_PREFILTER = 3.5
_CLICK_CHUNK = 1 << 15
_MAX_CLICK_CANDIDATES = 20000
#: stereo_balance_db is clipped to +- this, dB.
BALANCE_CAP_DB = 100.0
#: Masking: essential band share; the strongest bands are essential when they hold at least
#: ESSENTIAL_TOP_MIN_SHARE; frames where both stems are active needed (100 ms each).
ESSENTIAL_SHARE = 0.15
ESSENTIAL_TOP = 2
ESSENTIAL_TOP_MIN_SHARE = 0.05
MIN_SHARED_FRAMES = 10
#: A maskee's band sounds in a frame when its level there is within this of the band's mean
#: power over the maskee's active frames, dB.
SOUNDING_RANGE_DB = 20.0

BAND_NAMES: tuple[str, ...] = tuple(BANDS_HZ)

#: (stem name, done, total) -> None
Progress = Callable[[str, int, int], None]


# --- data -----------------------------------------------------------------------------------

@dataclass
class StemDescriptors:
    """Descriptors of one stem.

    values: every name of ``DESCRIPTOR_NAMES``, in that order, as plain floats.
    analysis: the :class:`~expertmix.analysis.StemAnalysis` the values were built from (None when
        read back from YAML).
    band_frames_db: (frames, len(BANDS_HZ)) channel-summed band power per 100 ms sub-block, dB;
        inactive frames read -200 in every band (they are not analysed). Not serialised.
    frame_active: (frames,) bool, the active frames (None: every frame with any band power).
    """

    values: dict[str, float]
    analysis: StemAnalysis | None = None
    band_frames_db: np.ndarray = field(default_factory=lambda: np.zeros((0, len(BANDS_HZ))))
    frame_active: np.ndarray | None = None

    def to_dict(self) -> dict[str, float]:
        """The values, rounded for YAML (see :func:`round_descriptor`)."""
        return {k: round_descriptor(k, v) for k, v in self.values.items()}


@dataclass(frozen=True)
class Masking:
    """``masker`` is on average ``masking_db`` dB above ``maskee`` in ``band`` (``low_hz`` ..
    ``high_hz``), a band holding ``maskee_band_share`` of the maskee's power."""

    masker: str
    maskee: str
    band: str
    low_hz: float
    high_hz: float
    masking_db: float
    maskee_band_share: float

    def to_dict(self) -> dict[str, Any]:
        return {"masker": self.masker, "maskee": self.maskee, "band": self.band,
                "low_hz": float(self.low_hz), "high_hz": float(self.high_hz),
                "masking_db": round(float(self.masking_db), 2),
                "maskee_band_share": round(float(self.maskee_band_share), 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Masking":
        return cls(masker=str(d["masker"]), maskee=str(d["maskee"]), band=str(d["band"]),
                   low_hz=float(d["low_hz"]), high_hz=float(d["high_hz"]),
                   masking_db=float(d["masking_db"]),
                   maskee_band_share=float(d["maskee_band_share"]))


@dataclass
class SessionDescriptors:
    """Descriptors of every stem (in stem order), their roles, the tempo and the masking.

    tempo_bpm: None when there is no rhythm to find; tempo_confidence 0..1.
    """

    stems: dict[str, StemDescriptors]
    roles: dict[str, str]
    tempo_bpm: float | None
    tempo_confidence: float
    masking: list[Masking]
    sample_rate_hz: int
    descriptor_version: int = DESCRIPTOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-dumpable values (floats rounded by unit, no numpy types)."""
        return {
            "descriptor_version": int(self.descriptor_version),
            "sample_rate_hz": int(self.sample_rate_hz),
            "tempo_bpm": None if self.tempo_bpm is None else round(float(self.tempo_bpm), 1),
            "tempo_confidence": round(float(self.tempo_confidence), 3),
            "stems": {name: {"role": self.roles.get(name, ""), **sd.to_dict()}
                      for name, sd in self.stems.items()},
            "masking": [m.to_dict() for m in self.masking],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SessionDescriptors":
        """Read back :meth:`to_dict` output (band frames and analyses are not restored)."""
        if not isinstance(data, Mapping):
            raise InputError("descriptors: expected a mapping at the top level")
        version = data.get("descriptor_version")
        if version != DESCRIPTOR_VERSION:
            raise InputError(f"descriptors have version {version}, this expertmix reads "
                             f"version {DESCRIPTOR_VERSION}", hint="re-run the analysis")
        stems: dict[str, StemDescriptors] = {}
        roles: dict[str, str] = {}
        for name, entry in (data.get("stems") or {}).items():
            entry = dict(entry)
            roles[str(name)] = str(entry.pop("role", ""))
            missing = [k for k in DESCRIPTOR_NAMES if k not in entry]
            unknown = sorted(k for k in entry if k not in DESCRIPTORS)
            if missing or unknown:
                raise InputError(f"descriptors of stem {name!r}: missing {missing or 'none'}, "
                                 f"unknown {unknown or 'none'}", hint="re-run the analysis")
            stems[str(name)] = StemDescriptors(
                values={k: float(entry[k]) for k in DESCRIPTOR_NAMES})
        tempo = data.get("tempo_bpm")
        return cls(stems=stems, roles=roles, tempo_bpm=None if tempo is None else float(tempo),
                   tempo_confidence=float(data.get("tempo_confidence", 0.0)),
                   masking=[Masking.from_dict(m) for m in data.get("masking") or []],
                   sample_rate_hz=int(data["sample_rate_hz"]), descriptor_version=int(version))

    def write_yaml(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as YAML, atomically."""
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


def round_descriptor(name: str, value: float) -> float:
    """A descriptor value rounded for YAML by its unit: dB/LU/LUFS to 0.01, Hz to 0.1 (onset
    rate to 0.001), ratios and linear levels to 4 significant digits, MFCCs to 0.001, counts to
    integers, seconds to 1 ms. Always a plain float."""
    v = float(value)
    unit = DESCRIPTORS[name].unit if name in DESCRIPTORS else ""
    if not math.isfinite(v):
        return v
    if name == "onset_rate_hz":
        return round(v, 3)
    if unit in ("LUFS", "LU", "dB", "dBFS", "dBTP", "1/min"):
        return round(v, 2)
    if unit == "Hz":
        return round(v, 1)
    if unit in ("ratio", "FS"):
        return float(f"{v:.4g}")
    if unit == "count":
        return float(round(v))
    if unit == "s":
        return round(v, 3)
    return round(v, 3)


# --- Essentia algorithms (per process, per configuration) ------------------------------------

_LOCAL = threading.local()
_ESSENTIA: Any = None


def _single(x: Any) -> Any:
    """An input as ``essentia.standard`` passes it on: numpy arrays as C-contiguous float32."""
    if isinstance(x, np.ndarray) and (x.dtype == np.float64 or not x.flags["C_CONTIGUOUS"]):
        return np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float64 else x.dtype)
    return x


class _EssentiaAlgorithm:
    """One configured Essentia algorithm, called like ``essentia.standard``'s (``algo(*inputs)``).

    ``essentia.standard`` builds a Python class for each of its ~250 algorithms when imported
    (about 0.5 s, on the critical path of every mix: the workers cannot start before it). This
    builds only the six used here, on Essentia's own extension type, converting parameters and
    inputs with ``essentia.common`` exactly as ``essentia.standard`` does. Where that interface
    is missing (another Essentia build), :func:`load_essentia` falls back to ``essentia.standard``.
    """

    def __init__(self, essentia: Any, name: str, params: Mapping[str, Any]):
        common = essentia.common
        self._algo = algo = essentia._essentia.Algorithm(name)
        algo.__configure__(**{k: common.convertData(v, algo.paramType(k)) for k, v in params.items()})
        self._convert = common.convertData
        self._types = [common.Edt(algo.inputType(n)) for n in algo.inputNames()]

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) != len(self._types):
            raise TypeError(f"expected {len(self._types)} inputs, got {len(inputs)}")
        return self._algo.__compute__(*[self._convert(_single(x), t) for x, t in zip(inputs, self._types)])


def load_essentia() -> Any:
    """Essentia, imported (log silenced) on first use; returns a factory
    ``make(name, **params)`` of configured algorithms.

    Only the workers that describe stems need Essentia: the main process of a mix imports this
    module without it, and the workers' fork server loads it once (:mod:`expertmix._preload`).
    """
    global _ESSENTIA
    if _ESSENTIA is None:
        import essentia

        essentia.log.infoActive = False
        essentia.log.warningActive = False
        try:
            import essentia._essentia  # noqa: F401  (the extension type essentia.standard wraps)
            import essentia.common  # noqa: F401

            _EssentiaAlgorithm(essentia, "Flatness", {})  # the interface is there and works

            def make(name: str, **params: Any) -> Any:
                return _EssentiaAlgorithm(essentia, name, params)
        except Exception:  # another build: the public, slower-to-import module
            import essentia.standard

            def make(name: str, **params: Any) -> Any:
                return getattr(essentia.standard, name)(**params)
        _ESSENTIA = make
    return _ESSENTIA


def _algo(name: str, **params: Any) -> Any:
    """A configured Essentia algorithm (:func:`load_essentia`), cached per thread (instances
    are not thread-safe). Only stateless algorithms are cached; stateful ones (Onsets,
    DynamicComplexity) are built per call."""
    cache = getattr(_LOCAL, "algos", None)
    if cache is None:
        cache = _LOCAL.algos = {}
    key = (name, tuple(sorted(params.items())))
    algo = cache.get(key)
    if algo is None:
        algo = cache[key] = load_essentia()(name, **params)
    return algo


# --- helpers --------------------------------------------------------------------------------

def _active_parts(block_active: np.ndarray, frame_active: np.ndarray) -> np.ndarray:
    """Sub-blocks in the active parts: covered by an active 400 ms block (block i covers
    sub-blocks i .. i+3), trimmed at both ends of each covered stretch to its first and last
    active frame (so that the stretch starts and ends where the playing does)."""
    n_sub = len(frame_active)
    parts = np.zeros(n_sub, dtype=bool)
    if n_sub == 0 or block_active.size == 0:
        return parts
    if block_active.size == 1 and n_sub < 4:  # one short block over the whole signal
        parts[:] = bool(block_active[0])
    else:
        for k in range(4):
            idx = np.flatnonzero(block_active) + k
            parts[idx[idx < n_sub]] = True
    edges = np.diff(np.concatenate(([0], parts.astype(np.int8), [0])))
    parts = np.zeros(n_sub, dtype=bool)
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        played = np.flatnonzero(frame_active[start:end])
        if played.size:
            parts[start + played[0]:start + played[-1] + 1] = True
    return parts


def _spectrum_frame(hop: int) -> int:
    """Largest power of two within a 100 ms sub-block (at least 64)."""
    return max(64, 1 << int(math.floor(math.log2(max(hop, 1)))))


def _band_matrix(n_bins: int, frame: int, sample_rate_hz: int) -> np.ndarray:
    """(bins, bands) 0/1 matrix of BANDS_HZ membership (low <= f < high)."""
    freqs = np.arange(n_bins) * (sample_rate_hz / frame)
    m = np.zeros((n_bins, len(BANDS_HZ)), dtype=np.float32)
    for j, (lo, hi) in enumerate(BANDS_HZ.values()):
        m[(freqs >= lo) & (freqs < hi), j] = 1.0
    return m


def _db(power: np.ndarray) -> np.ndarray:
    """10 log10 of a power array, floored at SILENCE_DB."""
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(np.maximum(power, 0.0)), SILENCE_DB)


@dataclass
class _Spectra:
    ltas: np.ndarray              # mean channel-averaged power over active frames, (bins,)
    band_frames_db: np.ndarray    # (n_sub, bands), channel-summed
    selected: np.ndarray          # channel-averaged power of the frames for MFCC/flatness
    frame: int
    n_active: int


def _spectra(x: np.ndarray, sample_rate_hz: int, hop: int, active: np.ndarray,
             means: np.ndarray) -> _Spectra:
    """One Hann spectrum per active 100 ms sub-block (see the module docstring)."""
    import scipy.fft  # (here: the main process of a mix imports this module, never computes spectra)

    n_frames, n_ch = x.shape
    n_sub = len(active)
    frame = _spectrum_frame(hop)
    n_bins = frame // 2 + 1
    band_db = np.full((n_sub, len(BANDS_HZ)), SILENCE_DB)
    idx = np.flatnonzero(active)
    if len(idx) == 0:
        return _Spectra(np.zeros(n_bins), band_db, np.zeros((0, n_bins), np.float32), frame, 0)
    window = np.hanning(frame + 2)[1:-1].astype(np.float32)
    # one-sided power scaled so that the bins sum to the window-weighted mean square
    scale = np.full(n_bins, 2.0 / (frame * float(np.sum(window.astype(np.float64) ** 2))))
    scale[0] /= 2.0
    if frame % 2 == 0:
        scale[-1] /= 2.0
    scale = scale.astype(np.float32)
    bands = _band_matrix(n_bins, frame, sample_rate_hz)
    offset = (hop - frame) // 2
    starts = np.clip(idx * hop + offset, 0, max(n_frames - frame, 0))
    if n_frames < frame:
        pad = np.zeros((frame - n_frames, n_ch), dtype=x.dtype)
        x = np.concatenate((x, pad))
    if len(idx) > MAX_SPECTRAL_FRAMES:
        pick = np.unique(np.linspace(0, len(idx) - 1, MAX_SPECTRAL_FRAMES).round().astype(int))
    else:
        pick = np.arange(len(idx))
    pick_mask = np.zeros(len(idx), dtype=bool)
    pick_mask[pick] = True
    ltas = np.zeros(n_bins)
    selected: list[np.ndarray] = []
    views = [np.lib.stride_tricks.sliding_window_view(x[:, c], frame) for c in range(n_ch)]
    dc = [np.float32(means[c]) for c in range(n_ch)]
    for b0 in range(0, len(idx), _FFT_BATCH):
        sl = slice(b0, b0 + _FFT_BATCH)
        st = starts[sl]
        total = None
        for c in range(n_ch):
            spec = scipy.fft.rfft((views[c][st] - dc[c]) * window, axis=-1)
            p = spec.real * spec.real + spec.imag * spec.imag
            total = p if total is None else total + p
        total *= scale  # channel-summed power per bin
        band_db[idx[sl]] = _db((total @ bands).astype(np.float64))
        mean_p = total / np.float32(n_ch)
        ltas += mean_p.sum(axis=0, dtype=np.float64)
        keep = pick_mask[sl]
        if keep.any():
            selected.append(mean_p[keep])
    ltas /= len(idx)
    return _Spectra(ltas, band_db, np.concatenate(selected), frame, len(idx))


def _spectral_values(sp: _Spectra, sample_rate_hz: int) -> dict[str, float]:
    """Band, Bark, roll-off, flatness and MFCC values from the spectra."""
    out: dict[str, float] = {}
    total = float(sp.ltas.sum())
    n_bins = len(sp.ltas)
    if sp.n_active == 0 or total <= 0.0:
        out.update({f"band_{b}_db": SILENCE_DB for b in BANDS_HZ})
        out.update({f"bark_{i:02d}_db": SILENCE_DB for i in range(1, N_BARK + 1)})
        out.update({f"mfcc_{i:02d}": 0.0 for i in range(1, N_MFCC + 1)})
        out["spectral_rolloff_hz"] = 0.0
        out["spectral_flatness"] = 0.0
        return out
    bands = _band_matrix(n_bins, sp.frame, sample_rate_hz).astype(np.float64)
    band_power = sp.ltas @ bands
    for b, p in zip(BANDS_HZ, band_power):
        out[f"band_{b}_db"] = power_to_db(float(p) / total)
    mag = np.sqrt(sp.ltas).astype(np.float32)
    bark = np.asarray(_algo("BarkBands", numberBands=_ESSENTIA_BARK_BANDS,
                            sampleRate=float(sample_rate_hz))(mag), dtype=np.float64)
    bark = np.concatenate(([bark[0] + bark[1], bark[2] + bark[3]], bark[4:]))
    for i, p in enumerate(bark[:N_BARK], start=1):
        out[f"bark_{i:02d}_db"] = power_to_db(float(p) / total)
    out["spectral_rolloff_hz"] = float(_algo("RollOff", cutoff=ROLLOFF_CUTOFF,
                                             sampleRate=float(sample_rate_hz))(mag))
    flatness = _algo("Flatness")
    mfcc = _algo("MFCC", inputSize=n_bins, sampleRate=float(sample_rate_hz),
                 numberCoefficients=N_MFCC, numberBands=MFCC_BANDS,
                 highFrequencyBound=min(MFCC_HIGH_HZ, sample_rate_hz / 2.0))
    flats = []
    coeffs = np.zeros(N_MFCC)
    for p in sp.selected:
        p = p + np.float32(FLATNESS_EPS * max(float(p.mean()), 1e-30))
        flats.append(float(flatness(p)))
        coeffs += np.asarray(mfcc(np.sqrt(p))[1], dtype=np.float64)
    n = max(len(sp.selected), 1)
    out["spectral_flatness"] = float(np.mean(flats)) if flats else 0.0
    for i, c in enumerate(coeffs / n, start=1):
        out[f"mfcc_{i:02d}"] = float(c)
    return out


def _short_term_percentiles(detail: AnalysisDetail) -> tuple[float, float, float]:
    st = detail.short_term_lufs
    if st.size == 0:
        return SILENCE_DB, SILENCE_DB, SILENCE_DB
    sub = detail.sub_active.astype(np.int64)
    n_sub = len(sub)
    win = 30
    if n_sub >= win and st.size == n_sub - win + 1:
        csum = np.concatenate(([0], np.cumsum(sub)))
        share = (csum[win:] - csum[:-win]) / win
        keep = share >= ST_ACTIVE_SHARE
    else:  # one window over a short signal
        keep = np.full(st.size, bool(sub.any()))
    if not keep.any():
        top = detail.momentary_lufs.max() if detail.momentary_lufs.size else SILENCE_DB
        keep = (st > ABSOLUTE_GATE_LUFS) & (st >= top - ACTIVITY_RANGE_LU)
    if not keep.any():
        return SILENCE_DB, SILENCE_DB, SILENCE_DB
    p10, p50, p95 = np.percentile(st[keep], (10.0, 50.0, 95.0), method="hazen")
    return float(p10), float(p50), float(p95)


def _block_ac_power(x: np.ndarray, detail: AnalysisDetail) -> np.ndarray:
    """Per 100 ms sub-block and channel, mean square with the block's own mean removed."""
    ms = detail.sub_mean_square
    n_sub, hop = len(ms), detail.hop_frames
    if n_sub == 0:
        return ms
    blocks = x[:n_sub * hop].reshape(n_sub, hop, x.shape[1])
    means = np.matmul(np.full(hop, 1.0 / hop, dtype=x.dtype), blocks).astype(np.float64)
    return np.maximum(ms - means * means, 0.0)


def _noise_floor_dbfs(detail: AnalysisDetail, ac: np.ndarray) -> float:
    if ac.size == 0:
        return SILENCE_DB
    power = ac.mean(axis=1)[detail.sub_mean_square.mean(axis=1) > DIGITAL_SILENCE_MS]
    if power.size == 0:
        return SILENCE_DB
    return power_to_db(float(np.percentile(power, NOISE_FLOOR_PERCENTILE)))


def _balance_db(detail: AnalysisDetail, ac: np.ndarray) -> float:
    if ac.shape[1] < 2 or not detail.sub_active.any():
        return 0.0
    p = ac[detail.sub_active[:len(ac)]].mean(axis=0)
    left, right = float(p[0]), float(p[1])
    if left <= 0.0 and right <= 0.0:
        return 0.0
    value = power_to_db(right) - power_to_db(left)
    return float(np.clip(value, -BALANCE_CAP_DB, BALANCE_CAP_DB))


# --- onsets ---------------------------------------------------------------------------------

def onset_times_s(mono: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Onset times (s, frame starts) of a mono signal, as Essentia ``OnsetRate`` finds them.

    Same framing (frames start at 0 and every hop while ``start + hop < len``, zero-padded at the
    end), symmetric Hann window, HFC (Brossier: sum of bin index x magnitude) and complex-domain
    (Bello: sum over bins of ``|M[n-1] - X[n] exp(-i(2 phi[n-1] - phi[n-2]))|``, zero frames
    with phase 0 before the start) detection functions, and Essentia ``Onsets`` (both functions
    normalised to their maximum, weights 1, 5-frame moving average, adaptive median threshold).
    Frame and hop are 1024/512 at 44.1 kHz and scale with the rate.
    """
    import scipy.fft

    y = np.ascontiguousarray(mono, dtype=np.float32)
    hop = max(1, int(round(ONSET_HOP_44K * sample_rate_hz / 44100.0)))
    frame = 2 * hop  # 1024 at 44.1 kHz
    n = len(y)
    if n == 0:
        return np.zeros(0)
    count = max(1, -(-(n - hop) // hop)) if n > hop else 1
    # frames inside the signal are views; the last ones, which run past its end, are cut from a
    # small zero-padded copy of the tail
    full = max(0, (n - frame) // hop + 1) if n >= frame else 0
    full = min(full, count)
    inside = np.lib.stride_tricks.sliding_window_view(y, frame)[::hop][:full] if full else None
    tail = None
    if count > full:
        rest = y[full * hop:]
        rest = np.concatenate((rest, np.zeros((count - full - 1) * hop + frame - len(rest),
                                              np.float32)))
        tail = np.lib.stride_tricks.sliding_window_view(rest, frame)[::hop][:count - full]

    def frames(a: int, b: int) -> np.ndarray:
        if b <= full:
            return inside[a:b]
        if a >= full:
            return tail[a - full:b - full]
        return np.concatenate((inside[a:], tail[:b - full]))
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame) / (frame - 1))).astype(np.float32)
    n_bins = frame // 2 + 1
    weights = np.arange(n_bins, dtype=np.float32)
    hfc = np.empty(count, dtype=np.float64)
    cdf = np.empty(count, dtype=np.float64)
    # magnitude and unit phasor of the two frames before the batch (before the start: zero
    # magnitude, phase 0, as Essentia's OnsetDetection state starts)
    prev_mag = np.zeros((2, n_bins), np.float32)
    prev_unit = np.ones((2, n_bins), np.complex64)
    for b0 in range(0, count, _ONSET_BATCH):
        spec = scipy.fft.rfft(frames(b0, min(count, b0 + _ONSET_BATCH)) * window, axis=-1)
        mag = np.abs(spec)
        hfc[b0:b0 + len(spec)] = mag @ weights
        # (near-)zero bins: denormal magnitudes would overflow the reciprocal into NaNs
        zero = mag < 1e-20
        unit = spec * np.reciprocal(np.where(zero, np.float32(1.0), mag))
        unit[zero] = 1.0  # Essentia's phase of a zero bin is 0
        mag_e = np.concatenate((prev_mag, mag))
        unit_e = np.concatenate((prev_unit, unit))
        # X[n] exp(-i target), target = 2 phi[n-1] - phi[n-2]
        rotated = np.conj(unit_e[1:-1])
        rotated *= rotated
        rotated *= unit_e[:-2]
        rotated *= spec
        cdf[b0:b0 + len(spec)] = np.abs(mag_e[1:-1] - rotated).sum(axis=1)
        prev_mag, prev_unit = mag_e[-2:], unit_e[-2:]
    detections = np.ascontiguousarray(np.vstack((hfc, cdf)), dtype=np.float32)  # = essentia.array
    onsets = load_essentia()("Onsets", frameRate=sample_rate_hz / float(hop))
    return np.asarray(onsets(detections, [1.0, 1.0]), dtype=np.float64)


def _onset_rate(mono: np.ndarray | None, sample_rate_hz: int, hop_frames: int,
                parts: np.ndarray) -> float:
    active_s = parts.sum() * hop_frames / sample_rate_hz
    if mono is None or active_s <= 0:
        return 0.0
    times = onset_times_s(mono, sample_rate_hz)
    if times.size == 0:
        return 0.0
    onset_hop = max(1, int(round(ONSET_HOP_44K * sample_rate_hz / 44100.0)))
    start = np.round(times * (sample_rate_hz / onset_hop)).astype(np.int64) * onset_hop
    start = start[start + 2 * onset_hop <= len(mono)]  # not in a frame padded past the end
    sub = np.minimum((start + onset_hop) // hop_frames, len(parts) - 1)  # frame centre
    return float(parts[sub].sum() / active_s)


# --- dynamic complexity ---------------------------------------------------------------------

def _active_signal(mono: np.ndarray, hop: int, parts: np.ndarray) -> np.ndarray:
    """The mono signal over the active parts only (inactive stretches cut out)."""
    if parts.all():
        return mono[:len(parts) * hop]
    edges = np.diff(np.concatenate(([0], parts.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return np.concatenate([mono[s * hop:e * hop] for s, e in zip(starts, ends)])


def _dynamic_complexity(mono: np.ndarray | None, sample_rate_hz: int, hop: int,
                        parts: np.ndarray) -> float:
    if mono is None or not parts.any():
        return 0.0
    signal = np.ascontiguousarray(_active_signal(mono, hop, parts), dtype=np.float32)
    if signal.size == 0:
        return 0.0
    algo = load_essentia()("DynamicComplexity", frameSize=DYNAMIC_FRAME_S, sampleRate=float(sample_rate_hz))
    return float(algo(signal)[0])


# --- clicks ---------------------------------------------------------------------------------

def click_positions(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Sample positions of isolated clicks (see the module docstring), merged over channels."""
    x = as_frames(x)
    n, n_ch = x.shape
    ctx = max(8, int(round(CLICK_CONTEXT_S * sample_rate_hz)))
    reach = ctx + 2 * CLICK_MAX_WIDTH + 2  # samples either side of a candidate that are examined
    B = _CLICK_BLOCK
    nb = (n - 2) // B
    if n < 2 * reach + 2 * B or nb < 3:
        return np.zeros(0, np.int64)
    # per block of B second-difference values and channel: largest |d| and mean d^2, computed
    # in cache-sized chunks (d[i] = |x[i+1] - (x[i] + x[i+2]) / 2| belongs to sample i + 1)
    peak = np.empty((nb, n_ch), dtype=np.float32)
    ms = np.empty((nb, n_ch), dtype=np.float64)
    per_chunk = max(1, _CLICK_CHUNK // (B * n_ch))
    for b0 in range(0, nb, per_chunk):
        b1 = min(nb, b0 + per_chunk)
        lo, hi = b0 * B, b1 * B
        chunk = np.ascontiguousarray(x[lo:hi + 2].T)  # (channels, samples): fast reductions
        d = chunk[:, :-2] + chunk[:, 2:]
        d *= -0.5
        d += chunk[:, 1:-1]
        np.abs(d, out=d)
        peak[b0:b1] = np.maximum.reduceat(d, np.arange(0, hi - lo, B), axis=1).T
        blocks = d.reshape(n_ch, b1 - b0, B)
        ms[b0:b1] = np.einsum("kij,kij->ki", blocks, blocks).T / B
    inf = np.full((1, n_ch), np.inf)
    neighbour = np.sqrt(np.maximum(np.concatenate((inf, ms[:-1])), np.concatenate((ms[1:], inf))))
    # a spike of height h has |d| >= h / 2
    candidate = (peak >= 0.5 * CLICK_MIN_LEVEL) & (peak > _CLICK_PREFILTER * neighbour)
    found = [_channel_clicks(x[:, c], np.flatnonzero(candidate[:, c]), peak[:, c], ctx, reach)
             for c in range(n_ch) if candidate[:, c].any()]
    pos = np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
    if pos.size == 0:
        return pos
    keep = np.concatenate(([True], np.diff(pos) > CLICK_MERGE))
    return pos[keep]


def _channel_clicks(y: np.ndarray, cand: np.ndarray, peak: np.ndarray, ctx: int,
                    reach: int) -> np.ndarray:
    """The exact click test (module docstring) at the candidate blocks of one channel."""
    n = len(y)
    B = _CLICK_BLOCK
    if cand.size > _MAX_CLICK_CANDIDATES:
        cand = np.sort(cand[np.argsort(-peak[cand], kind="stable")[:_MAX_CLICK_CANDIDATES]])
    idx = cand[:, None] * B + np.arange(B)
    dc = np.abs(y[idx + 1] - 0.5 * (y[idx] + y[idx + 2]))
    p = cand * B + np.argmax(dc, axis=1) + 1  # sample of the largest |d|
    p = p[(p >= reach) & (p < n - reach)]
    if p.size == 0:
        return np.zeros(0, np.int64)
    # the neighbourhood of each candidate: seg[:, reach] is sample p
    width = 2 * reach + 1
    seg = y[p[:, None] + np.arange(-reach, reach + 1)].astype(np.float64)
    # shape, continuity and level first (cheap, per candidate); the neighbourhood test after,
    # for the few candidates that pass
    tests: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (w, shift, rows, hmin)
    for w in range(1, CLICK_MAX_WIDTH + 1):
        for shift in range(-w, 2):
            c = reach + shift  # segment index of the first spike sample
            before, after = seg[:, c - 1], seg[:, c + w]
            dev = seg[:, c:c + w] - 0.5 * (before + after)[:, None]  # (m, w)
            sign = np.sign(dev[:, 0])
            mag = dev * sign[:, None]
            hmax, hmin = mag.max(axis=1), mag.min(axis=1)
            # continuity across the spike: the slope on either side predicts the other side
            from_left = before + (w + 1) * (before - seg[:, c - 2])
            from_right = after - (w + 1) * (seg[:, c + w + 1] - after)
            gap = np.maximum(np.abs(after - from_left), np.abs(before - from_right))
            rows = np.flatnonzero((sign != 0) & (hmin >= 0.5 * hmax) & (gap <= 0.5 * hmax)
                                  & (hmin >= CLICK_MIN_LEVEL))
            if rows.size:
                tests.append((w, shift, rows, hmin[rows]))
    hits: list[np.ndarray] = []
    for w in range(1, CLICK_MAX_WIDTH + 1):
        mine = [t for t in tests if t[0] == w]
        if not mine:
            continue
        rows = np.unique(np.concatenate([t[2] for t in mine]))
        sg = seg[rows]
        # spikiness of every w-sample run in the neighbourhood: e[:, k - 1] for a run starting
        # at segment index k = mean of the run - mean of the two samples around it
        inner = sum(sg[:, 1 + j:width - w + j] for j in range(w)) / w
        e = np.abs(inner - 0.5 * (sg[:, :width - w - 1] + sg[:, 1 + w:]))
        # the same statistic at the runs that touch neither the spike nor its neighbours, for
        # any of the spike starts tried (runs starting reach-2w-1 .. reach+w+2 excluded)
        left = e[:, reach - 2 * w - 2 - ctx:reach - 2 * w - 2].max(axis=1)
        right = e[:, reach + w + 2:reach + w + 2 + ctx].max(axis=1)
        env = np.zeros(len(p))
        env[rows] = CLICK_RATIO * np.maximum(left, right)
        for _, shift, r, hmin in mine:
            ok = hmin >= env[r]
            if ok.any():
                hits.append(p[r[ok]] + shift)
    if not hits:
        return np.zeros(0, np.int64)
    pos = np.unique(np.concatenate(hits))
    keep = np.concatenate(([True], np.diff(pos) > CLICK_MERGE))
    return pos[keep].astype(np.int64)


# --- one stem -------------------------------------------------------------------------------

def describe_audio(audio: np.ndarray, sample_rate_hz: int) -> StemDescriptors:
    """Every descriptor of one stem. ``audio``: float (frames, channels) or (frames,), 1 or 2
    channels, full scale 1.0; ``sample_rate_hz``: Hz. See the module docstring for definitions;
    ``masked_max_db`` / ``masking_max_db`` are 0.0 until :func:`compute_masking` fills them."""
    return _describe(audio, sample_rate_hz)[0]


def _describe(audio: np.ndarray, sample_rate_hz: int) -> tuple[StemDescriptors, np.ndarray | None]:
    """:func:`describe_audio` and the channel-mean signal it used (None for a silent stem)."""
    x = as_frames(audio, what="stem audio")
    if x.shape[1] not in (1, 2):
        raise InputError(f"stem audio has {x.shape[1]} channels; descriptors need 1 or 2",
                         hint="downmix to stereo first (expertmix.stems does this on load)")
    sr = int(sample_rate_hz)
    a, detail = analyse_audio_detailed(x, sr)
    hop = detail.hop_frames
    n_sub = len(detail.sub_mean_square)
    frame_active = detail.sub_active[:n_sub].copy() if not a.is_silent else np.zeros(n_sub, bool)
    parts = (_active_parts(detail.block_active, frame_active) if not a.is_silent
             else np.zeros(n_sub, bool))
    mono = detail.mono

    v: dict[str, float] = {}
    v["loudness_lufs"] = a.loudness_lufs
    p10, p50, p95 = _short_term_percentiles(detail) if not a.is_silent else (SILENCE_DB,) * 3
    v["loudness_st_p10_lufs"], v["loudness_st_p50_lufs"], v["loudness_st_p95_lufs"] = p10, p50, p95
    v["loudness_range_lu"] = a.loudness_range_lu
    v["peak_dbfs"] = a.peak_dbfs
    v["true_peak_dbtp"] = a.true_peak_dbtp
    v["rms_dbfs"] = a.rms_dbfs
    v["crest_db"] = a.crest_db
    v["dynamic_complexity_db"] = _dynamic_complexity(mono, sr, hop, parts)
    v["active_fraction"] = a.active_fraction
    ac = _block_ac_power(x, detail)
    floor = _noise_floor_dbfs(detail, ac)
    v["noise_floor_dbfs"] = floor
    v["signal_to_noise_db"] = (a.rms_dbfs - floor if a.rms_dbfs > SILENCE_DB and floor > SILENCE_DB
                               else 0.0)
    v["spectral_centroid_hz"] = a.spectral_centroid_hz
    spectra = _spectra(x, sr, hop, frame_active, detail.channel_means)
    spectral = _spectral_values(spectra, sr)
    v["spectral_rolloff_hz"] = spectral["spectral_rolloff_hz"]
    v["spectral_flatness"] = spectral["spectral_flatness"]
    v["low_energy_ratio"] = a.low_energy_ratio
    v["sub_energy_ratio"] = a.sub_energy_ratio
    v["sub_floor_dbfs"] = a.sub_floor_dbfs
    v["high_energy_ratio"] = a.high_energy_ratio
    for b in BANDS_HZ:
        v[f"band_{b}_db"] = spectral[f"band_{b}_db"]
    for i in range(1, N_BARK + 1):
        v[f"bark_{i:02d}_db"] = spectral[f"bark_{i:02d}_db"]
    for i in range(1, N_MFCC + 1):
        v[f"mfcc_{i:02d}"] = spectral[f"mfcc_{i:02d}"]
    v["onset_rate_hz"] = _onset_rate(mono, sr, hop, parts)
    v["channels"] = float(a.channels)
    width, corr = a.stereo_width, a.stereo_correlation
    if a.channels == 2 and width is None and not a.is_silent:
        cov = detail.channel_cov
        ll, rr, lr = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
        mid, side = ll + rr + 2 * lr, ll + rr - 2 * lr
        if mid > 0:  # one silent channel: no correlation, width from the same formula
            width, corr = max(side, 0.0) / mid, 0.0
    v["stereo_width"] = float(width) if width is not None else 0.0
    v["stereo_correlation"] = float(corr) if corr is not None else 1.0
    v["stereo_balance_db"] = _balance_db(detail, ac) if not a.is_silent else 0.0
    v["dc_offset"] = a.dc_offset
    v["hum_hz"] = float(a.hum_hz) if a.hum_hz is not None else 0.0
    v["hum_excess_db"] = a.hum_excess_db
    v["clipped_fraction"] = a.clipped_fraction
    clicks = click_positions(x, sr).size if not a.is_silent else 0
    v["click_count"] = float(clicks)
    v["clicks_per_min"] = clicks / (a.duration_s / 60.0) if a.duration_s > 0 else 0.0
    v["masked_max_db"] = 0.0
    v["masking_max_db"] = 0.0
    v["duration_s"] = a.duration_s

    values = {name: float(v[name]) for name in DESCRIPTOR_NAMES}
    bad = [k for k, val in values.items() if not math.isfinite(val)]
    if bad:  # a bug, not a user error: say which
        raise RuntimeError(f"non-finite descriptors: {bad}")
    return StemDescriptors(values=values, analysis=a, band_frames_db=spectra.band_frames_db,
                           frame_active=frame_active), mono


# --- masking --------------------------------------------------------------------------------

def compute_masking(stems: dict[str, StemDescriptors],
                    gains_db: dict[str, float] | None = None) -> list[Masking]:
    """Pairwise band masking between stems (definition in the module docstring).

    Returns the maskings above 0 dB in a deterministic order (masker, maskee in ``stems`` order,
    then band order), and sets ``masked_max_db`` / ``masking_max_db`` in every stem's values
    (0.0 when none). Stems without band frames (read back from YAML) take part in nothing.
    """
    names = list(stems)
    levels: dict[str, np.ndarray] = {}
    active: dict[str, np.ndarray] = {}
    essential: dict[str, list[tuple[int, float]]] = {}
    sounding: dict[str, np.ndarray] = {}
    for name in names:
        sd = stems[name]
        bands = np.asarray(sd.band_frames_db, dtype=np.float64)
        if bands.ndim != 2 or bands.shape[0] == 0:
            continue
        act = (np.asarray(sd.frame_active, dtype=bool)[:len(bands)] if sd.frame_active is not None
               else (bands > SILENCE_DB).any(axis=1))
        if not act.any():
            continue
        if gains_db is not None:
            offset = float(gains_db.get(name, 0.0))
        else:
            loud = sd.values.get("loudness_lufs", SILENCE_DB)
            if loud <= SILENCE_DB:
                continue
            offset = -float(loud)
        levels[name] = bands + offset
        active[name] = act
        power = (10.0 ** (bands[act] / 10.0)).sum(axis=0)
        total = float(power.sum())
        if total <= 0:
            continue
        share = power / total
        top = set(np.argsort(-share, kind="stable")[:ESSENTIAL_TOP].tolist())
        essential[name] = [(j, float(share[j])) for j in range(len(BAND_NAMES))
                           if share[j] >= ESSENTIAL_SHARE
                           or (j in top and share[j] >= ESSENTIAL_TOP_MIN_SHARE)]
        # per band: the frames where the band sounds (within SOUNDING_RANGE_DB of its mean power)
        mean_db = 10.0 * np.log10(power / act.sum())
        sounding[name] = act[:, None] & (bands >= mean_db[None, :] - SOUNDING_RANGE_DB)
    result: list[Masking] = []
    for masker in names:
        if masker not in levels:
            continue
        for maskee in names:
            if maskee == masker or maskee not in essential:
                continue
            n = min(len(levels[masker]), len(levels[maskee]))
            for j, share in essential[maskee]:
                both = active[masker][:n] & sounding[maskee][:n, j]
                if both.sum() < MIN_SHARED_FRAMES:
                    continue
                value = float(np.median(levels[masker][:n, j][both] - levels[maskee][:n, j][both]))
                if value > 0.0:
                    lo, hi = BANDS_HZ[BAND_NAMES[j]]
                    result.append(Masking(masker=masker, maskee=maskee, band=BAND_NAMES[j],
                                          low_hz=lo, high_hz=hi, masking_db=value,
                                          maskee_band_share=share))
    for name in names:
        stems[name].values["masked_max_db"] = max(
            (m.masking_db for m in result if m.maskee == name), default=0.0)
        stems[name].values["masking_max_db"] = max(
            (m.masking_db for m in result if m.masker == name), default=0.0)
    return result


# --- a session ------------------------------------------------------------------------------

def _describe_file(path: str, sample_rate_hz: int) -> tuple[StemDescriptors, np.ndarray]:
    """Worker: decode one stem WAV and describe it; also its tempo onset envelope."""
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:
        raise InputError(f"cannot read audio: {exc}", path=path) from exc
    if sr != sample_rate_hz:
        raise InputError(f"sample rate {sr} Hz differs from the session's {sample_rate_hz} Hz",
                         path=path, hint="load the stems with expertmix.stems.load_stems")
    described, mono = _describe(audio, sr)
    # the tempo envelope of the channel mean (what onset_envelope computes from the channels)
    return described, onset_envelope(mono if mono is not None else audio, sr)


def describe_session(stemset: StemSet, *, processes: int = 2, pool: WorkerPool | None = None,
                     progress: Progress | None = None) -> SessionDescriptors:
    """Describe every stem of ``stemset`` (read from ``stem.render_path``), then tempo and masking.

    ``processes``: worker processes (1 describes in this process), or ``pool``: a running
    :class:`expertmix.workers.WorkerPool` to use. Results are in stem order and do not depend on
    either. ``progress(name, done, total)`` is called each time a stem is described (``name``:
    that stem; ``done``: how many are, 1 .. total).

    Workers start with forkserver (spawn where it does not exist) and single-threaded BLAS, so
    a script that calls this with ``processes > 1`` needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    stems = list(stemset.stems)
    sr = int(stemset.sample_rate_hz)
    jobs = [(stem.name, (str(stem.render_path), sr)) for stem in stems]
    results = _run_jobs(_describe_file, jobs, processes, pool, progress)
    return _session(stems, {n: r[0] for n, r in results.items()}, {n: r[1] for n, r in results.items()}, sr)


def _load_and_describe(info: StemInfo, cache: Path, protected: frozenset[Path], skip_silent: bool
                       ) -> tuple[Stem | None, str | None, StemDescriptors | None, np.ndarray | None]:
    """Worker: decode one stem once (:func:`expertmix.stems.prepare_stem`: checks, cache file)
    and describe that same decode; also its tempo onset envelope."""
    stem, warning, audio = prepare_stem(info, cache, protected, skip_silent=skip_silent)
    if stem is None:
        return None, warning, None, None
    described, mono = _describe(audio, info.sample_rate_hz)
    return stem, warning, described, onset_envelope(mono if mono is not None else audio, info.sample_rate_hz)


def load_and_describe(probe: StemProbe, cache_dir: str | os.PathLike[str], *, skip_silent: bool = False,
                      processes: int = 2, pool: WorkerPool | None = None,
                      progress: Progress | None = None) -> tuple[StemSet, SessionDescriptors]:
    """Load (as :func:`expertmix.stems.load_stems`) and describe (as :func:`describe_session`)
    every probed stem, decoding each once, in worker processes.

    The first bad stem in name order raises its :class:`InputError`; the results do not depend
    on ``processes``/``pool``.
    """
    cache, protected = prepare_cache(cache_dir, probe)
    jobs = [(info.name, (info, cache, protected, skip_silent)) for info in probe.stems]
    # decoding and describing cost about frames x channels (+ a resample when the rate differs)
    costs = [info.frames * info.channels * (2 if info.source_sample_rate_hz != info.sample_rate_hz else 1)
             for info in probe.stems]
    results = _run_jobs(_load_and_describe, jobs, processes, pool, progress, costs)
    stemset = assemble_stemset(probe, [(r[0], r[1]) for r in results.values()])
    stems = list(stemset.stems)
    described = {s.name: results[s.name][2] for s in stems}
    envelopes = {s.name: results[s.name][3] for s in stems}
    return stemset, _session(stems, described, envelopes, int(stemset.sample_rate_hz))


def _run_jobs(fn: Callable[..., Any], jobs: list[tuple[str, tuple]], processes: int, pool: WorkerPool | None,
              progress: Progress | None, costs: Sequence[float] | None = None) -> dict[str, Any]:
    """``fn(*args)`` for every ``(name, args)`` job, in this process (``processes == 1`` and no
    pool) or in worker processes (costliest first, by ``costs``); results keyed by name, in job
    order. The first job (in order) that failed raises its exception."""
    report = progress or (lambda stage, done, count: None)
    total = len(jobs)
    if pool is None and (int(processes) <= 1 or total <= 1):
        results: dict[str, Any] = {}
        for i, (name, args) in enumerate(jobs, start=1):
            results[name] = fn(*args)
            report(name, i, total)
        return results
    with worker_pool(min(int(processes), total), pool) as workers:
        values = workers.map_ordered(fn, [args for _name, args in jobs],
                                     on_done=lambda i, done: report(jobs[i][0], done, total), costs=costs)
    return {name: value for (name, _args), value in zip(jobs, values)}


def _session(stems: list[Stem], described: dict[str, StemDescriptors], envelopes: dict[str, np.ndarray],
             sr: int) -> SessionDescriptors:
    """Tempo and masking over the described stems (in stem order)."""
    described = {stem.name: described[stem.name] for stem in stems}
    tempo, confidence = estimate_tempo_bpm([envelopes[stem.name] for stem in stems])
    masking = compute_masking(described)
    return SessionDescriptors(stems=described, roles={s.name: s.role for s in stems},
                              tempo_bpm=tempo, tempo_confidence=float(confidence),
                              masking=masking, sample_rate_hz=sr)
