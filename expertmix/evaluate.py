"""Objective measures of a mix, alone or against a reference ("how far is my mix from this?").

:func:`evaluate` reads an expertmix output folder (``master.wav``, ``mix.wav``,
``stems/<name>.wav`` = each stem's processed contribution, ``plan.yaml``) and the raw stems, and
measures:

* **master**: integrated loudness (BS.1770-4, LUFS), true peak (dBTP), loudness range (EBU Tech
  3342, LU), all from :mod:`expertmix.loudness`;
* **stereo**: width ``E[S^2] / E[M^2]`` with ``M = (L+R)/2``, ``S = (L-R)/2`` (0 for mono or
  dual mono, 1 for independent equal channels) and left/right imbalance
  ``10 log10(E[R^2] / E[L^2])`` dB (positive = right louder), over the whole signal and in three
  bands (:data:`STEREO_BANDS_HZ`, 4th-order Butterworth filters);
* **long-term spectrum**: band powers (Welch average of Hann-windowed FFTs, channel powers
  summed) in the seven broad bands of :data:`expertmix.descriptor_specs.BANDS_HZ` and in ISO
  1/3-octave bands, each expressed *relative to the file's integrated loudness* (dB re LUFS).
  Two files are thereby compared at matched loudness: the per-band difference is
  ``(ours_b - L_ours) - (ref_b - L_ref)`` and the band error is the RMS of those differences
  (broad bands: ``band_error_db``; 1/3 octaves from 31.5 Hz to 16 kHz: ``third_octave_error_db``);
* **per-stem balance**: each processed stem's integrated loudness, relative to the mix loudness;
  against a reference balance (reference stems matched by file name, or raw loudness + a gain per
  stem, or absolute loudness per stem) the per-stem difference with the mean difference removed
  and the **balance error** = RMS over stems of that, in LU (:func:`balance_error_lu`). The same
  metric is given for two baselines computed from the raw stems' loudness: the plain sum (every
  gain 0 dB) and every stem at equal loudness (:func:`stem_loudness_from_gains`).

Conventions: a stem's loudness in a mix is its file loudness plus its gain (the constant-power
pan law expertmix renders with keeps a centred mono stem at its mono loudness). Stems whose
loudness is at or below the absolute gate (-70 LUFS: silent or muted) and stems missing on one
side are left out of the balance, with a warning in :attr:`Evaluation.warnings`, never an error.
Files of the output folder must share one sample rate; a reference may have any rate (bands are
in Hz, levels in LUFS). Unreadable files and mismatched rates raise
:class:`~expertmix.errors.InputError` naming the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import scipy.signal
import soundfile as sf
import yaml
from numpy.lib.stride_tricks import sliding_window_view

from .descriptor_specs import BANDS_HZ
from .errors import InputError
from .io import iter_blocks
from .loudness import ABSOLUTE_GATE_LUFS, LoudnessMeter
from .units import power_to_db

#: Stereo analysis bands, Hz: name -> (low edge or None, high edge or None).
STEREO_BANDS_HZ: dict[str, tuple[float | None, float | None]] = {
    "low": (None, 250.0),
    "mid": (250.0, 4000.0),
    "high": (4000.0, None),
}
#: Butterworth order of the stereo band filters.
STEREO_FILTER_ORDER = 4
#: Cap for the width when the mid channel is (nearly) empty (inverted channels), as in analysis.
WIDTH_CAP = 1000.0
#: Largest |imbalance| reported, dB (one channel silent).
IMBALANCE_CAP_DB = 60.0
#: ISO 266 nominal 1/3-octave centres, Hz (exact centres are 1000 * 2^(k/3)).
THIRD_OCTAVE_NOMINAL_HZ: tuple[float, ...] = (
    20, 25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250,
    1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000)
#: 1/3-octave bands that enter ``third_octave_error_db`` (nominal centres, inclusive), Hz.
THIRD_OCTAVE_ERROR_RANGE_HZ = (31.5, 16000.0)
#: Band levels are floored this far below the integrated loudness, dB (keeps empty bands finite).
BAND_FLOOR_DB = -100.0
#: Welch segment length, s (rounded up to a power of two: 16384 samples at 44.1/48 kHz).
SPECTRUM_SEGMENT_S = 0.35
#: Frames per block when streaming files.
BLOCK_FRAMES = 65536
#: Audio file suffixes looked at in reference/stem folders.
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".mp3")


# --- balance metrics (pure functions) -------------------------------------------------------

def _audible(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > ABSOLUTE_GATE_LUFS


def balance_differences(ours: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Per-stem ``(ours - reference) - mean(ours - reference)``, LU, over the stems in both.

    ``ours`` and ``reference``: stem name -> loudness (LUFS; any common offset cancels). Stems
    missing on either side or at/below -70 LUFS are left out. Empty if nothing is in common.
    """
    common = [n for n in ours if n in reference and _audible(ours[n]) and _audible(reference[n])]
    if not common:
        return {}
    diffs = np.array([float(ours[n]) - float(reference[n]) for n in common])
    diffs -= diffs.mean()
    return {n: float(d) for n, d in zip(common, diffs)}


def balance_error_lu(ours: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """RMS over stems of ``(ours - reference)`` after removing the mean difference, LU.

    0 when ``ours`` equals ``reference`` up to a common gain; +2/-2 LU on two stems gives 2.0.
    Only stems present (and audible, > -70 LUFS) on both sides count. Raises
    :class:`InputError` when no stem is in common.
    """
    d = balance_differences(ours, reference)
    if not d:
        raise InputError("no audible stem is in both balances",
                         hint=f"ours: {', '.join(ours) or '(none)'}; reference: {', '.join(reference) or '(none)'}")
    return float(math.sqrt(sum(v * v for v in d.values()) / len(d)))


def stem_loudness_from_gains(raw_loudness: Mapping[str, float],
                             gains_db: Mapping[str, float] | None = None) -> dict[str, float]:
    """Loudness of each stem in a mix that applies ``gains_db`` to the raw stems, LUFS.

    ``raw_loudness``: stem name -> raw file loudness (LUFS). ``gains_db``: stem name -> gain (dB;
    missing names get 0 dB). ``None`` or ``{}`` is the plain sum of the raw stems. Silent stems
    stay silent. Assumes the constant-power pan law (a stem keeps its file loudness at 0 dB).
    """
    gains = gains_db or {}
    return {n: (float(v) + float(gains.get(n, 0.0)) if _audible(v) else float(v))
            for n, v in raw_loudness.items()}


def equal_loudness_gains(raw_loudness: Mapping[str, float], target_lufs: float = -23.0) -> dict[str, float]:
    """Gains (dB) that bring every audible raw stem to ``target_lufs`` (the equal-loudness baseline)."""
    return {n: target_lufs - float(v) for n, v in raw_loudness.items() if _audible(v)}


def rms_db(values: Iterable[float]) -> float:
    """Root mean square of a collection of dB differences (0.0 for none)."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.sqrt(np.mean(v * v))) if v.size else 0.0


# --- one streaming pass over a file ---------------------------------------------------------

def _third_octave_edges() -> dict[str, tuple[float, float]]:
    bands: dict[str, tuple[float, float]] = {}
    for nominal in THIRD_OCTAVE_NOMINAL_HZ:
        k = round(3.0 * math.log2(nominal / 1000.0))
        centre = 1000.0 * 2.0 ** (k / 3.0)
        bands[f"{nominal:g}"] = (centre * 2.0 ** (-1.0 / 6.0), centre * 2.0 ** (1.0 / 6.0))
    return bands


#: 1/3-octave band name (nominal centre, Hz) -> (low, high) edges, Hz.
THIRD_OCTAVE_BANDS_HZ: dict[str, tuple[float, float]] = _third_octave_edges()


class _Spectrum:
    """Streaming Welch estimate (Hann, 50 % overlap) of the channel-summed power spectrum."""

    def __init__(self, sample_rate_hz: int, channels: int):
        self.sr = sample_rate_hz
        self.n = 1 << max(8, math.ceil(math.log2(SPECTRUM_SEGMENT_S * sample_rate_hz)))
        self.hop = self.n // 2
        self.window = scipy.signal.get_window("hann", self.n)
        self.carry = np.zeros((0, channels), dtype=np.float64)
        self.acc = np.zeros(self.n // 2 + 1)
        self.segments = 0

    def _add(self, buf: np.ndarray, count: int) -> None:
        segs = sliding_window_view(buf, self.n, axis=0)[: (count - 1) * self.hop + 1: self.hop]
        spec = np.fft.rfft(segs * self.window, axis=-1)  # (segments, channels, bins)
        self.acc += (spec.real ** 2 + spec.imag ** 2).sum(axis=(0, 1))
        self.segments += count

    def process(self, x: np.ndarray) -> None:
        buf = np.concatenate((self.carry, x), axis=0)
        if len(buf) >= self.n:
            count = (len(buf) - self.n) // self.hop + 1
            self._add(buf, count)
            buf = buf[count * self.hop:]
        self.carry = buf

    def band_powers(self, bands: Mapping[str, tuple[float, float]]) -> dict[str, float]:
        """Mean-square power (channels summed) in each band; Parseval-scaled one-sided PSD."""
        if self.segments == 0 and len(self.carry):  # shorter than one segment: zero-pad it
            pad = np.zeros((self.n, self.carry.shape[1]))
            pad[: len(self.carry)] = self.carry
            self._add(pad, 1)
            # a zero-padded segment holds len/n of a full segment's energy: rescale
            self.acc *= self.n / max(1, len(self.carry))
        if self.segments == 0:
            return {b: 0.0 for b in bands}
        psd = self.acc / (self.segments * self.n * float(np.sum(self.window ** 2)))
        psd[1:-1] *= 2.0  # one-sided
        freqs = np.fft.rfftfreq(self.n, 1.0 / self.sr)
        return {b: float(psd[(freqs >= lo) & (freqs < hi)].sum()) for b, (lo, hi) in bands.items()}


class _Stereo:
    """Streaming L/R/M/S energies, whole band and per :data:`STEREO_BANDS_HZ` band."""

    def __init__(self, sample_rate_hz: int):
        nyq = sample_rate_hz / 2.0
        self.filters: dict[str, np.ndarray | None] = {"all": None}
        for name, (lo, hi) in STEREO_BANDS_HZ.items():
            if lo is None:
                sos = scipy.signal.butter(STEREO_FILTER_ORDER, hi, "lowpass", fs=sample_rate_hz, output="sos")
            elif hi is None or hi >= nyq:
                sos = scipy.signal.butter(STEREO_FILTER_ORDER, lo, "highpass", fs=sample_rate_hz, output="sos")
            else:
                sos = scipy.signal.butter(STEREO_FILTER_ORDER // 2, (lo, hi), "bandpass", fs=sample_rate_hz,
                                          output="sos")
            self.filters[name] = sos
        self.zi = {n: np.zeros((s.shape[0], 2, 2)) for n, s in self.filters.items() if s is not None}
        self.sums = {n: np.zeros(4) for n in self.filters}  # E[L^2], E[R^2], E[M^2], E[S^2] (sums)

    def process(self, x: np.ndarray) -> None:
        lr = x[:, :2]
        for name, sos in self.filters.items():
            if sos is None:
                y = lr
            else:
                y, self.zi[name] = scipy.signal.sosfilt(sos, lr, axis=0, zi=self.zi[name])
            left, right = y[:, 0], y[:, 1]
            mid, side = 0.5 * (left + right), 0.5 * (left - right)
            self.sums[name] += (float(left @ left), float(right @ right), float(mid @ mid), float(side @ side))

    @staticmethod
    def _width(m2: float, s2: float) -> float:
        if s2 <= 0.0:
            return 0.0
        return WIDTH_CAP if m2 * WIDTH_CAP <= s2 else s2 / m2

    @staticmethod
    def _imbalance(l2: float, r2: float) -> float:
        if l2 <= 0.0 and r2 <= 0.0:
            return 0.0
        d = power_to_db(r2) - power_to_db(l2)
        return float(max(-IMBALANCE_CAP_DB, min(IMBALANCE_CAP_DB, d)))

    def results(self) -> tuple[dict[str, float], dict[str, float]]:
        widths = {n: self._width(s[2], s[3]) for n, s in self.sums.items()}
        imbalance = {n: self._imbalance(s[0], s[1]) for n, s in self.sums.items()}
        return widths, imbalance


@dataclass
class SignalMeasures:
    """Measures of one audio file (a master, a mix or a reference mix).

    ``spectrum_db`` / ``third_octave_db``: band power (mean square, channels summed) in dB
    *relative to the integrated loudness* (dB re LUFS), floored at :data:`BAND_FLOOR_DB`; two
    files' values subtract to their difference at matched loudness. ``width``/``imbalance_db``
    are whole-band; ``band_width``/``band_imbalance_db`` per :data:`STEREO_BANDS_HZ` band (all
    0 for mono).
    """

    path: str
    sample_rate_hz: int
    channels: int
    duration_s: float
    integrated_lufs: float
    true_peak_dbtp: float
    sample_peak_dbfs: float
    loudness_range_lu: float
    width: float
    imbalance_db: float
    band_width: dict[str, float]
    band_imbalance_db: dict[str, float]
    spectrum_db: dict[str, float]
    third_octave_db: dict[str, float]

    @property
    def silent(self) -> bool:
        return not _audible(self.integrated_lufs)


def _open_info(path: Path) -> Any:
    if not path.is_file():
        raise InputError("file not found", path=str(path))
    try:
        return sf.info(str(path))
    except (RuntimeError, OSError) as exc:
        raise InputError(f"cannot read audio: {exc}", path=str(path),
                         hint="check the file is a readable WAV/FLAC/AIFF/OGG/MP3") from None


def _blocks(path: Path) -> Iterable[np.ndarray]:
    try:
        yield from iter_blocks(path, BLOCK_FRAMES, dtype="float64")
    except (RuntimeError, OSError) as exc:
        raise InputError(f"cannot read audio: {exc}", path=str(path),
                         hint="check the file is a readable WAV/FLAC/AIFF/OGG/MP3") from None


def measure_file(path: str | Path) -> SignalMeasures:
    """Loudness, peaks, LRA, stereo width/imbalance and long-term spectrum of an audio file.

    One streaming pass (memory independent of the length). Raises :class:`InputError` for a
    missing or unreadable file or one holding NaN/inf samples.
    """
    p = Path(path)
    info = _open_info(p)
    sr, ch = int(info.samplerate), int(info.channels)
    try:
        meter = LoudnessMeter(sr, ch)
    except InputError as exc:
        raise InputError(exc.message, path=str(p), hint=exc.hint) from None
    spectrum = _Spectrum(sr, ch)
    stereo = _Stereo(sr) if ch >= 2 else None
    frames = 0
    for block in _blocks(p):
        try:
            meter.process(block)
        except InputError as exc:
            raise InputError(exc.message, path=str(p), hint=exc.hint) from None
        spectrum.process(block)
        if stereo is not None:
            stereo.process(block)
        frames += len(block)
    stats = meter.stats()
    loud = stats.integrated_lufs
    if stereo is not None:
        widths, imbalance = stereo.results()
    else:
        widths = {n: 0.0 for n in ("all", *STEREO_BANDS_HZ)}
        imbalance = dict(widths)

    def relative(powers: dict[str, float]) -> dict[str, float]:
        if not _audible(loud):
            return {b: BAND_FLOOR_DB for b in powers}
        return {b: max(power_to_db(v) - loud, BAND_FLOOR_DB) for b, v in powers.items()}

    return SignalMeasures(
        path=str(p), sample_rate_hz=sr, channels=ch, duration_s=frames / float(sr),
        integrated_lufs=loud, true_peak_dbtp=stats.true_peak_dbtp, sample_peak_dbfs=stats.sample_peak_dbfs,
        loudness_range_lu=stats.loudness_range_lu, width=widths.pop("all"), imbalance_db=imbalance.pop("all"),
        band_width=widths, band_imbalance_db=imbalance,
        spectrum_db=relative(spectrum.band_powers(BANDS_HZ)),
        third_octave_db=relative(spectrum.band_powers(THIRD_OCTAVE_BANDS_HZ)))


def file_loudness(path: str | Path) -> tuple[float, int]:
    """(integrated loudness in LUFS, sample rate in Hz) of an audio file, streamed."""
    p = Path(path)
    info = _open_info(p)
    try:
        meter = LoudnessMeter(int(info.samplerate), int(info.channels), track_peaks=False)
        for block in _blocks(p):
            meter.process(block)
    except InputError as exc:
        if exc.path:
            raise
        raise InputError(exc.message, path=str(p), hint=exc.hint) from None
    return meter.integrated_lufs(), int(info.samplerate)


# --- spectrum comparison --------------------------------------------------------------------

def band_difference_db(ours: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Per-band ``ours - reference`` of loudness-relative band levels (dB), bands in both."""
    return {b: float(ours[b]) - float(reference[b]) for b in ours if b in reference}


def _third_octave_error(diff: Mapping[str, float]) -> float:
    lo, hi = THIRD_OCTAVE_ERROR_RANGE_HZ
    return rms_db(v for b, v in diff.items() if lo <= float(b) <= hi)


# --- the evaluation -------------------------------------------------------------------------

@dataclass
class StemBalance:
    """One stem's level in our mix and in the reference (LUFS / LU; None when unknown).

    ``lufs``: integrated loudness of the processed stem (``stems/<name>.wav``); ``relative_lu``:
    ``lufs`` minus the mix loudness; ``raw_lufs``: the raw stem file; ``change_lu``: ``lufs -
    raw_lufs`` (what the mix did to its level); ``reference_lufs``: the reference stem's loudness;
    ``difference_lu``: ``(lufs - reference_lufs)`` minus the mean of that over the compared stems
    (positive = louder in our balance than in the reference's).
    """

    name: str
    lufs: float | None = None
    relative_lu: float | None = None
    raw_lufs: float | None = None
    change_lu: float | None = None
    reference_lufs: float | None = None
    difference_lu: float | None = None


@dataclass
class PlanFinding:
    """A defect a plan reports (``plan.yaml`` ``findings``), read leniently."""

    stem: str
    kind: str
    action: str
    detail: str = ""


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured. ``to_dict()`` is YAML/JSON-ready; ``to_markdown()``."""

    stems_dir: str
    out_dir: str
    master: SignalMeasures | None
    mix_lufs: float | None = None
    reference_mix: SignalMeasures | None = None
    band_difference_db: dict[str, float] = field(default_factory=dict)
    band_error_db: float | None = None
    third_octave_difference_db: dict[str, float] = field(default_factory=dict)
    third_octave_error_db: float | None = None
    stems: list[StemBalance] = field(default_factory=list)
    reference_balance_source: str | None = None
    balance_error_lu: float | None = None
    balance_stems: list[str] = field(default_factory=list)
    baseline_balance_error_lu: dict[str, float] = field(default_factory=dict)
    findings: list[PlanFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    # -- convenience
    def stem(self, name: str) -> StemBalance:
        for s in self.stems:
            if s.name == name:
                return s
        raise KeyError(name)

    def loudness(self, which: str = "lufs") -> dict[str, float]:
        """Stem name -> a loudness column (``lufs``, ``raw_lufs`` or ``reference_lufs``), known values."""
        return {s.name: getattr(s, which) for s in self.stems if getattr(s, which) is not None}

    # -- output
    def to_dict(self) -> dict[str, Any]:
        """Plain values (floats rounded to 0.01 dB/LU, 0.001 for widths) for YAML/JSON."""
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        return _markdown(self)


def _plain(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v, str(k) if not key.endswith(("width", "_db", "_lu")) else key)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        return round(v, 3) if "width" in key else round(v, 2)
    return value


def _stem_name(key: str) -> str:
    """``kick.flac`` / ``reference_stems/kick.flac`` / ``kick`` -> ``kick``."""
    name = Path(str(key)).name
    return Path(name).stem if Path(name).suffix.lower() in AUDIO_SUFFIXES else name


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError("folder does not exist", path=str(folder))
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES)


def _casefold_lookup(names: Iterable[str]) -> dict[str, str]:
    return {n.casefold(): n for n in names}


def load_reference_gains(path: str | Path) -> dict[str, float]:
    """Stem name -> gain (dB) that turns the raw stem into its reference level.

    Reads a corpus ``meta.json`` (``stems.<file>.gain_to_reference_balance_db``) or a flat
    YAML/JSON mapping ``name: gain_db``. Raises :class:`InputError` for anything else.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read reference gains: {exc}", path=str(p)) from None
    if isinstance(data, dict) and isinstance(data.get("stems"), dict):
        out = {_stem_name(k): float(v["gain_to_reference_balance_db"]) for k, v in data["stems"].items()
               if isinstance(v, dict) and v.get("gain_to_reference_balance_db") is not None}
    elif isinstance(data, dict) and all(isinstance(v, (int, float)) for v in data.values()):
        out = {_stem_name(k): float(v) for k, v in data.items()}
    else:
        raise InputError("expected a meta.json with stems.*.gain_to_reference_balance_db or a mapping name: gain_db",
                         path=str(p))
    if not out:
        raise InputError("no reference gains in the file", path=str(p))
    return out


def _read_plan(out: Path, ev: Evaluation) -> dict[str, str]:
    """Track name -> raw file name from ``plan.yaml``; fills findings and notes (lenient)."""
    plan_path = out / "plan.yaml"
    if not plan_path.is_file():
        ev.warnings.append("no plan.yaml in the output folder: no findings; stems matched by name")
        return {}
    try:
        data = yaml.safe_load(plan_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        ev.warnings.append(f"plan.yaml not readable ({exc}); no findings; stems matched by name")
        return {}
    if not isinstance(data, dict):
        ev.warnings.append("plan.yaml is not a mapping; no findings; stems matched by name")
        return {}
    files: dict[str, str] = {}
    for t in data.get("tracks") or []:
        if isinstance(t, dict) and t.get("name") and t.get("file"):
            files[str(t["name"])] = str(t["file"])
    for f in data.get("findings") or []:
        if isinstance(f, dict) and f.get("stem") and f.get("kind"):
            ev.findings.append(PlanFinding(stem=str(f["stem"]), kind=str(f["kind"]), action=str(f.get("action", "")),
                                       detail=str(f.get("detail", ""))))
    ev.notes = [str(n) for n in data.get("notes") or []]
    return files


def evaluate(stems_dir: str | Path, out_dir: str | Path, *, reference_mix: str | Path | None = None,
             reference_stems_dir: str | Path | None = None,
             reference_gains: Mapping[str, float] | str | Path | None = None,
             reference_loudness: Mapping[str, float] | None = None) -> Evaluation:
    """Measure a mix and, given a reference, how far it is from it.

    ``stems_dir``: the raw stems. ``out_dir``: an expertmix output folder (``master.wav``,
    ``mix.wav``, ``stems/``, ``plan.yaml``), or a single audio file taken as the master (then
    only master measures and the spectrum comparison are made). ``reference_mix``: an audio
    file to compare the master's spectrum, loudness and stereo image with.
    ``reference_stems_dir``: the reference's stems, matched to ours by file name (without
    extension, case-insensitively). ``reference_gains``: stem name -> gain in dB such that the
    reference level of a stem is its raw loudness plus the gain (or a path to a ``meta.json``
    / YAML mapping, see :func:`load_reference_gains`). ``reference_loudness``: stem name ->
    reference loudness in LUFS. At most one reference balance may be given.

    Raises :class:`InputError` for a missing folder, unreadable audio (naming the file), output
    files of different sample rates, or more than one reference balance. Silent or missing stems
    are skipped with a warning in the result.
    """
    given = [x is not None for x in (reference_stems_dir, reference_gains, reference_loudness)]
    if sum(given) > 1:
        raise InputError("give at most one reference balance: reference stems, reference gains or reference loudness")
    stems_path = Path(stems_dir).expanduser()
    if not stems_path.is_dir():
        raise InputError("stems folder does not exist", path=str(stems_path),
                         hint="pass the folder of raw stems the mix was made from")
    out = Path(out_dir).expanduser()
    ev = Evaluation(stems_dir=str(stems_path.resolve()), out_dir=str(out.resolve()), master=None)

    # -- the master (or mix) ---------------------------------------------------------------
    if out.is_file():
        master_path, out_files = out, []
        track_files: dict[str, str] = {}
        processed: list[Path] = []
    elif out.is_dir():
        master_path = out / "master.wav"
        if not master_path.is_file():
            if not (out / "mix.wav").is_file():
                raise InputError("no master.wav or mix.wav in the output folder", path=str(out),
                                 hint="pass the folder `expertmix mix` wrote, or a mix file")
            ev.warnings.append("no master.wav: measuring mix.wav as the master")
            master_path = out / "mix.wav"
        track_files = _read_plan(out, ev)
        processed = _audio_files(out / "stems") if (out / "stems").is_dir() else []
        if not processed:
            ev.warnings.append("no stems/ in the output folder: no per-stem balance")
        out_files = [master_path, *([out / "mix.wav"] if (out / "mix.wav").is_file() else []), *processed]
    else:
        raise InputError("output folder does not exist", path=str(out), hint="run `expertmix mix` first")

    rates: dict[int, Path] = {}
    for p in out_files:
        sr = int(_open_info(p).samplerate)
        if rates and sr not in rates:
            first_sr, first = next(iter(rates.items()))
            raise InputError(f"sample rate {sr} Hz differs from {first_sr} Hz of {first.name}", path=str(p),
                             hint="the files of one mix must share a sample rate; re-render the mix")
        rates.setdefault(sr, p)

    ev.master = measure_file(master_path)
    if ev.master.silent:
        ev.warnings.append(f"{master_path.name} is silent: no spectrum or balance figures relative to it")
    if out.is_dir() and (out / "mix.wav").is_file():
        ev.mix_lufs = file_loudness(out / "mix.wav")[0]

    # -- reference mix -------------------------------------------------------------------
    if reference_mix is not None:
        ev.reference_mix = measure_file(Path(reference_mix).expanduser())
        if ev.reference_mix.silent:
            ev.warnings.append("the reference mix is silent: no spectrum comparison")
        elif not ev.master.silent:
            ev.band_difference_db = band_difference_db(ev.master.spectrum_db, ev.reference_mix.spectrum_db)
            ev.band_error_db = rms_db(ev.band_difference_db.values())
            ev.third_octave_difference_db = band_difference_db(ev.master.third_octave_db,
                                                               ev.reference_mix.third_octave_db)
            ev.third_octave_error_db = _third_octave_error(ev.third_octave_difference_db)

    # -- per-stem loudness ----------------------------------------------------------------
    raw_files = {p.stem: p for p in _audio_files(stems_path)}
    raw_lookup = _casefold_lookup(raw_files)
    rows: dict[str, StemBalance] = {}
    for p in processed:
        name = p.stem
        lufs = file_loudness(p)[0]
        row = StemBalance(name=name)
        rows[name] = row
        if _audible(lufs):
            row.lufs = lufs
            if ev.mix_lufs is not None and _audible(ev.mix_lufs):
                row.relative_lu = lufs - ev.mix_lufs
        else:
            ev.warnings.append(f"{name}: silent in the mix (muted?); left out of the balance")
        raw_name = Path(track_files[name]).stem if name in track_files else name
        raw_key = raw_lookup.get(raw_name.casefold())
        if raw_key is None:
            ev.warnings.append(f"{name}: no raw stem {raw_name!r} in {stems_path}")
            continue
        raw = file_loudness(raw_files[raw_key])[0]
        if _audible(raw):
            row.raw_lufs = raw
            if row.lufs is not None:
                row.change_lu = row.lufs - raw
        else:
            ev.warnings.append(f"{name}: the raw stem is silent")
    if not processed:  # no output stems: the raw stems alone (for the baselines)
        for name, p in raw_files.items():
            raw = file_loudness(p)[0]
            rows[name] = StemBalance(name=name, raw_lufs=raw if _audible(raw) else None)
    ev.stems = list(rows.values())
    row_lookup = _casefold_lookup(rows)

    # -- reference balance ----------------------------------------------------------------
    reference: dict[str, float] = {}
    if reference_stems_dir is not None:
        ref_dir = Path(reference_stems_dir).expanduser()
        ev.reference_balance_source = f"reference stems: {ref_dir}"
        for p in _audio_files(ref_dir):
            key = row_lookup.get(p.stem.casefold())
            if key is None:
                ev.warnings.append(f"reference stem {p.name} matches none of our stems; ignored")
                continue
            lufs = file_loudness(p)[0]
            if _audible(lufs):
                reference[key] = lufs
            else:
                ev.warnings.append(f"reference stem {p.name} is silent; ignored")
    elif reference_gains is not None:
        gains = (load_reference_gains(reference_gains) if isinstance(reference_gains, (str, Path))
                 else {_stem_name(k): float(v) for k, v in reference_gains.items()})
        ev.reference_balance_source = "raw stem loudness + reference gains"
        for n, g in gains.items():
            key = row_lookup.get(n.casefold())
            if key is None or rows[key].raw_lufs is None:
                ev.warnings.append(f"reference gain for {n!r}: no audible raw stem of that name; ignored")
                continue
            reference[key] = rows[key].raw_lufs + g
    elif reference_loudness is not None:
        ev.reference_balance_source = "reference loudness per stem"
        for n, v in reference_loudness.items():
            key = row_lookup.get(_stem_name(n).casefold())
            if key is None:
                ev.warnings.append(f"reference loudness for {n!r}: no stem of that name; ignored")
                continue
            reference[key] = float(v)
    for n, v in reference.items():
        rows[n].reference_lufs = v

    if reference:
        ours = ev.loudness("lufs")
        for n in ours:
            if n not in reference:
                ev.warnings.append(f"{n}: no reference level; left out of the balance")
        diffs = balance_differences(ours, reference)
        if diffs:
            for n, d in diffs.items():
                rows[n].difference_lu = d
            ev.balance_stems = list(diffs)
            ev.balance_error_lu = balance_error_lu(ours, reference)
        raw = ev.loudness("raw_lufs")
        if balance_differences(raw, reference):
            ev.baseline_balance_error_lu = {
                "plain_sum": balance_error_lu(stem_loudness_from_gains(raw), reference),
                "equal_loudness": balance_error_lu(stem_loudness_from_gains(raw, equal_loudness_gains(raw)),
                                                   reference),
            }
    return ev


# --- Markdown -------------------------------------------------------------------------------

def _f(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _markdown(ev: Evaluation) -> str:
    lines = ["# Mix evaluation", "", f"Mix: `{ev.out_dir}`  ", f"Stems: `{ev.stems_dir}`", ""]
    m, r = ev.master, ev.reference_mix
    cols = ["master"] + (["reference"] if r else [])
    lines += ["## Master", "", "| measure | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]

    def row(label: str, get: Any, digits: int = 1, signed: bool = False) -> None:
        vals = [_f(get(x), digits, signed) for x in (m, r) if x is not None]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("integrated loudness, LUFS", lambda x: x.integrated_lufs)
    row("true peak, dBTP", lambda x: x.true_peak_dbtp)
    row("loudness range, LU", lambda x: x.loudness_range_lu)
    row("stereo width (side/mid energy)", lambda x: x.width, 3)
    row("L/R imbalance, dB (+ = right)", lambda x: x.imbalance_db, 2, True)
    for b in STEREO_BANDS_HZ:
        row(f"width, {b} band", lambda x, b=b: x.band_width.get(b), 3)
        row(f"imbalance, {b} band, dB", lambda x, b=b: x.band_imbalance_db.get(b), 2, True)
    if ev.mix_lufs is not None:
        lines.append(f"| mix.wav loudness, LUFS | {_f(ev.mix_lufs)} |" + (" |" if r else ""))
    lines.append("")
    if m is not None:
        lines += ["## Long-term spectrum (band power re integrated loudness, dB)", ""]
        head = "| band | master |" + (" reference | difference |" if r else "")
        lines += [head, "|---|---:|" + ("---:|---:|" if r else "")]
        for b, (lo, hi) in BANDS_HZ.items():
            cells = [_f(m.spectrum_db.get(b))]
            if r:
                cells += [_f(r.spectrum_db.get(b)), _f(ev.band_difference_db.get(b), 1, True)]
            lines.append(f"| {b} ({lo:g}-{hi:g} Hz) | " + " | ".join(cells) + " |")
        if ev.band_error_db is not None:
            lines += ["", f"Band error at matched loudness (RMS over the 7 bands): **{_f(ev.band_error_db, 2)} dB**; "
                          f"over 1/3 octaves 31.5 Hz-16 kHz: {_f(ev.third_octave_error_db, 2)} dB."]
        lines.append("")
    if ev.stems:
        lines += ["## Stem balance", ""]
        if ev.reference_balance_source:
            lines += [f"Reference balance: {ev.reference_balance_source}.", ""]
        lines += ["| stem | raw LUFS | mix LUFS | change LU | re mix LU | reference LUFS | difference LU |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for s in ev.stems:
            lines.append(f"| {s.name} | {_f(s.raw_lufs)} | {_f(s.lufs)} | {_f(s.change_lu, 1, True)} | "
                         f"{_f(s.relative_lu, 1, True)} | {_f(s.reference_lufs)} | {_f(s.difference_lu, 1, True)} |")
        if ev.balance_error_lu is not None:
            text = (f"Balance error (RMS of the differences after removing their mean, "
                    f"{len(ev.balance_stems)} stems): **{_f(ev.balance_error_lu, 2)} LU**")
            if ev.baseline_balance_error_lu:
                text += ("; baselines: plain sum of the raw stems "
                         f"{_f(ev.baseline_balance_error_lu.get('plain_sum'), 2)} LU, every stem at equal "
                         f"loudness {_f(ev.baseline_balance_error_lu.get('equal_loudness'), 2)} LU")
            lines += ["", text + "."]
        lines.append("")
    if ev.findings:
        lines += ["## Defects the plan reports", "", "| stem | kind | action | detail |", "|---|---|---|---|"]
        lines += [f"| {f.stem} | {f.kind} | {f.action} | {f.detail} |" for f in ev.findings]
        lines.append("")
    if ev.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in ev.warnings] + [""]
    return "\n".join(lines)
