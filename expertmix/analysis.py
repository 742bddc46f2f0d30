"""Cheap per-stem measurements for the default mix planner (numpy/scipy only).

:func:`analyse_audio` makes one pass over the audio in ~1.5 s chunks (K-weighted loudness,
true peak, 100 ms raw energies, DC and stereo sums), then looks at a bounded number of spectral
frames, so its cost is linear in duration with a small constant (~0.3 s for 180 s of stereo
44.1 kHz on one core).

Definitions (all levels relative to digital full scale; a full-scale sine has peak 0 dBFS and
RMS -3.01 dBFS):

* **Activity gate.** A 400 ms momentary block (hop 100 ms, BS.1770-4) is *active* when its
  loudness is above the absolute gate (-70 LUFS) *and* within :data:`ACTIVITY_RANGE_LU` (30 LU)
  of the loudest block. The second condition treats a stem's noise floor, bleed and long
  reverb tails (quieter than the played parts by more than a typical dynamic range) as
  inactive, independently of the stem's overall gain. RMS and crest factor are measured over
  the 100 ms sub-blocks whose own K-weighted loudness passes the same gate (so the edges of
  active blocks do not dilute the RMS with silence).
* **Spectral measures** use the DC-free signal (DC is reported separately in ``dc_offset``).
  Broadband ratios and centroid come from an averaged Hann-windowed power spectrum
  (~0.19 s frames, at most :data:`MAX_BROADBAND_FRAMES` frames spread over the stem, channel
  powers summed). Hum uses a high-resolution mono spectrum (>= 1 s frames, ~0.67 Hz bins) over
  the quietest non-silent part of the stem, where a mains hum is least masked.
* **Clipping.** Flat tops: runs of >= 3 consecutive samples with exactly the same value (hence
  the same |value|) at or above 0.99 full scale. Exactly equal values are what clipping
  produces in float or integer audio; a sign-alternating run is not a flat top and is ignored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .loudness import (
    ABSOLUTE_GATE_LUFS,
    LoudnessMeter,
    block_loudness_lufs,
    as_frames,
    gated_integrated_lufs,
    loudness_range_from_short_term,
)
from .units import SILENCE_DB, gain_to_db, power_to_db

#: Active blocks lie within this many LU of the loudest momentary block.
ACTIVITY_RANGE_LU = 30.0
#: A stem whose sample peak is below this is silent, dBFS.
SILENT_PEAK_DBFS = -90.0
#: |sample| at or above this (linear full scale) counts towards a flat top.
CLIP_LEVEL = 0.99
#: Minimum run of equal samples that counts as a flat top, samples.
CLIP_MIN_RUN = 3
#: ``clipped`` is set when more than this share of all samples sits in flat tops (5e-5 is about
#: two flat-topped samples per second per channel at 44.1 kHz: an accidental over or two
#: passes, repeatedly clipped transients or a clipped passage do not).
CLIP_FRACTION_THRESHOLD = 5e-5
#: Band edges for the low-energy and sub (rumble) ratios, Hz.
LOW_EDGE_HZ = 150.0
#: Lower edge of the sibilance/presence band measured by ``high_energy_ratio``, Hz.
HIGH_EDGE_HZ = 5000.0
SUB_EDGE_HZ = 40.0
#: Band of the sub floor (``sub_floor_dbfs``), Hz: below an instrument's lowest note, above the
#: slow DC drift of synthetic waveforms and sample edits (< 10 Hz), where rumble, handling noise,
#: traffic and air conditioning live.
SUB_FLOOR_BAND_HZ = (10.0, 40.0)
#: ``sub_floor_dbfs`` is this percentile over the broadband frames: steady energy (rumble is
#: there between the notes too) rather than the low notes of the part.
SUB_FLOOR_PERCENTILE = 20.0
#: Broadband spectrum: frame length ~ this many seconds (power of two), frames used at most.
BROADBAND_FRAME_S = 0.186
MAX_BROADBAND_FRAMES = 256
#: Hum spectrum: frames of at least this many seconds (power of two: 1.49 s, 0.67 Hz bins at
#: 44.1 kHz), 50 % overlap; between MIN_ and MAX_HUM_FRAMES of the quietest frames are used.
HUM_FRAME_S = 1.0
MIN_HUM_FRAMES = 6
MAX_HUM_FRAMES = 18
#: Hum analysis needs at least this much audio, s.
MIN_HUM_DURATION_S = 1.0
#: Mains fundamentals examined and harmonics per family.
MAINS_HZ = (50.0, 60.0)
HUM_HARMONICS = 6
#: Hum is reported when the mean of the three most prominent harmonics' excess over the local
#: floor reaches this, dB. Noise and music alone give ~2-4 dB, at most ~6 dB, when at least
#: MIN_HUM_FRAMES frames are averaged; with fewer (stems under ~5 s) up to ~8.5 dB, hence the
#: stricter threshold there. A -50 dBFS hum under a -20 LUFS part reads ~10 dB.
HUM_DETECT_DB = 8.0
HUM_DETECT_FEW_FRAMES_DB = 12.0
#: Local floor around a harmonic: median power within this distance, Hz, outside the line.
HUM_FLOOR_SPAN_HZ = 10.0
#: A line may sit this many bins (Hann main lobe) plus this relative drift off its nominal
#: frequency (mains frequency stays within ~0.2 %).
HUM_LINE_BINS = 1.5
HUM_DRIFT = 0.002
#: A line must be the largest bin out to this many bins beyond its tolerance window.
HUM_SKIRT_BINS = 4
#: Frames are averaged in this many groups; a line must stand out in every group.
HUM_GROUPS = 3
#: Cap for ``hum_excess_db`` when the floor is exactly zero (synthetic signals), dB.
HUM_EXCESS_CAP_DB = 100.0
#: Cap for ``stereo_width`` when the mid channel is (nearly) empty (inverted channels).
WIDTH_CAP = 1000.0

# Frames per batch of the averaged spectra (bounds their scratch memory to a few MB).
_SPECTRUM_BATCH = 32
# Per-chunk frames for the single pass: whole 100 ms sub-blocks, about 1.5 s.
_CHUNK_SUB_BLOCKS = 15


@dataclass(frozen=True)
class StemAnalysis:
    """Cheap measurements of one stem. Field suffixes give units; see the module docstring.

    loudness_lufs: BS.1770-4 gated integrated loudness (-200.0 if nothing passes the gates).
    loudness_range_lu: EBU Tech 3342 LRA (0.0 if undefined).
    short_term_max_lufs: largest 3 s loudness.
    peak_dbfs / true_peak_dbtp: sample peak / 4x true peak (-200.0 for digital silence).
    rms_dbfs: RMS over active parts, power-averaged over channels (-200.0 if none).
    crest_db: peak_dbfs - rms_dbfs (0.0 when silent); 3.01 dB for a sine.
    active_fraction: share of 400 ms blocks passing the activity gate, 0..1.
    is_silent: peak below -90 dBFS or no active block.
    dc_offset: max over channels of |mean|, linear full scale.
    low_energy_ratio / sub_energy_ratio: share of (DC-free) power below 150 Hz / 40 Hz, 0..1.
    sub_floor_dbfs: steady level in 10-40 Hz: the 20th percentile over the broadband frames
        (silent ones included) of the band's mean square (channel mean), dB re full scale
        (-200.0 when silent). Rumble under a loud part is a tiny share of its power but keeps
        this level up between the notes.
    high_energy_ratio: share of power above 5 kHz (sibilance, air), 0..1.
    spectral_centroid_hz: power-weighted mean frequency, Hz (0.0 when silent).
    hum_hz: 50.0 or 60.0 when a mains hum is detected, else None.
    hum_excess_db: prominence of the stronger mains family's lines over the local floor, dB
        (mean of its 3 most prominent of the first 6 harmonics); reported even below the
        detection threshold; 0.0 when it cannot be measured.
    clipped_fraction: share of samples in flat tops, 0..1; clipped: above 5e-5.
    channels: channel count.
    stereo_correlation: Pearson correlation of the first two (DC-free) channels, -1..1;
        None for mono or silence.
    stereo_width: E[S^2]/E[M^2] with M=(L+R)/2, S=(L-R)/2 (0 for dual mono, 1 for uncorrelated
        equal channels, capped at 1000 for inverted channels); None for mono or silence.
    duration_s: length, s.
    """

    loudness_lufs: float
    loudness_range_lu: float
    short_term_max_lufs: float
    peak_dbfs: float
    true_peak_dbtp: float
    rms_dbfs: float
    crest_db: float
    active_fraction: float
    is_silent: bool
    dc_offset: float
    low_energy_ratio: float
    sub_energy_ratio: float
    sub_floor_dbfs: float
    high_energy_ratio: float
    spectral_centroid_hz: float
    hum_hz: float | None
    hum_excess_db: float
    clipped_fraction: float
    clipped: bool
    channels: int
    stereo_correlation: float | None
    stereo_width: float | None
    duration_s: float

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """Plain Python values for YAML: dB/LU to 0.01, ratios to 1e-4, small values to 4
        significant digits, Hz to 0.1, seconds to 1 ms."""
        out: dict[str, float | int | bool | None] = {}
        for key, value in asdict(self).items():
            if value is None or isinstance(value, (bool, np.bool_)):
                out[key] = None if value is None else bool(value)
            elif key == "channels":
                out[key] = int(value)
            elif key.endswith(("_lufs", "_lu", "_dbfs", "_dbtp", "_db")):
                out[key] = round(float(value), 2)
            elif key.endswith("_hz"):
                out[key] = round(float(value), 1)
            elif key == "duration_s":
                out[key] = round(float(value), 3)
            elif key in ("dc_offset", "clipped_fraction"):
                out[key] = float(f"{float(value):.4g}")
            else:
                out[key] = round(float(value), 4)
        return out


# --- pieces ---------------------------------------------------------------------------------

def _flat_top_samples(channel: np.ndarray) -> int:
    """Number of samples in runs of >= CLIP_MIN_RUN equal values with |value| >= CLIP_LEVEL."""
    idx = np.flatnonzero(np.abs(channel) >= CLIP_LEVEL)
    if len(idx) < CLIP_MIN_RUN:
        return 0
    vals = channel[idx]
    # pair k joins samples idx[k] and idx[k+1] into one flat run
    joined = (np.diff(idx) == 1) & (vals[1:] == vals[:-1])
    if not joined.any():
        return 0
    edges = np.diff(np.concatenate(([0], joined.astype(np.int8), [0])))
    run_pairs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)  # pairs per run
    long_runs = run_pairs >= CLIP_MIN_RUN - 1
    return int((run_pairs[long_runs] + 1).sum())


def _frame_starts(n_frames: int, frame: int, max_frames: int) -> np.ndarray:
    """Starts of non-overlapping frames of ``frame`` samples, evenly thinned to ``max_frames``."""
    count = n_frames // frame
    starts = np.arange(count) * frame
    if count > max_frames:
        starts = starts[np.linspace(0, count - 1, max_frames).round().astype(int)]
    return starts


def _power_spectrum(x: np.ndarray, frame: int, starts: np.ndarray,
                    offsets: np.ndarray | None = None,
                    band_bins: slice | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean Hann-windowed |rfft|^2 over frames at ``starts`` of ``x`` (frames, channels), summed
    over channels, after subtracting ``offsets`` (per-channel DC). A signal shorter than a frame
    is zero-padded into one frame (its DC removed before padding).

    Also, when ``band_bins`` is given, each frame's mean square in those bins (Parseval for a
    Hann-windowed one-sided spectrum), summed over channels; else None."""
    import scipy.fft  # (here, not at the top: the main process of a mix never computes spectra)

    window = np.hanning(frame + 2)[1:-1].astype(np.float32)
    total = np.zeros(frame // 2 + 1)
    if len(starts) == 0 or len(x) < frame:
        starts = np.array([0])
    band = np.zeros(len(starts)) if band_bins is not None else None
    for c in range(x.shape[1]):
        dc = np.float32(offsets[c]) if offsets is not None else np.float32(0.0)
        col = x[:, c]
        if len(col) < frame:
            col = np.concatenate((col.astype(np.float32) - dc,
                                  np.zeros(frame - len(col), np.float32)))
            dc = np.float32(0.0)
        view = np.lib.stride_tricks.sliding_window_view(col, frame)
        # frames in batches: the spectra of all frames at once would take ~50 MB more memory
        for b0 in range(0, len(starts), _SPECTRUM_BATCH):
            batch = starts[b0:b0 + _SPECTRUM_BATCH]
            frames = view[batch] - dc
            frames *= window
            spec = scipy.fft.rfft(frames, axis=-1, workers=-1)
            power = np.square(spec.real, dtype=np.float64)
            power += np.square(spec.imag, dtype=np.float64)
            total += power.sum(0)
            if band is not None:
                band[b0:b0 + len(batch)] += power[:, band_bins].sum(axis=1)
    total /= len(starts)
    if band is not None:
        band *= 2.0 / (frame * float(np.sum(window.astype(np.float64) ** 2)))
    return total, band


def _next_pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1.0))))


def _line_excess_db(power: np.ndarray, bin_hz: float, line_hz: float) -> float:
    """How far the strongest bin within the mains tolerance of ``line_hz`` sits above the
    median of the surrounding bins (a ring out to HUM_FLOOR_SPAN_HZ), dB."""
    centre = int(round(line_hz / bin_hz))
    span = int(math.ceil(HUM_FLOOR_SPAN_HZ / bin_hz))
    tol = int(math.ceil(HUM_LINE_BINS + HUM_DRIFT * line_hz / bin_hz))
    lo, hi = max(centre - span, 0), min(centre + span + 1, len(power))
    local = power[lo:hi]
    offsets = np.abs(np.arange(lo, hi) - centre)
    line = float(local[offsets <= tol].max())
    # a steady partial a few Hz off the mains line (G2 = 98 Hz next to 100 Hz) puts its skirt in
    # the tolerance window: a line that is not a local maximum is that skirt, not hum
    beside = local[(offsets > tol) & (offsets <= tol + HUM_SKIRT_BINS)]
    if beside.size and float(beside.max()) > line:
        return 0.0
    ring = local[offsets > tol + 2]
    floor = float(np.median(ring)) if ring.size else 0.0
    if floor <= 0.0:
        return HUM_EXCESS_CAP_DB if line > 0.0 else 0.0
    return min(power_to_db(line / floor), HUM_EXCESS_CAP_DB)


def _hum(mono: np.ndarray, sample_rate_hz: int, offset: float = 0.0) -> tuple[float | None, float]:
    """(hum_hz or None, hum_excess_db) from a mono signal whose DC is ``offset``.

    Hann frames of >= 1 s (50 % overlap); the quietest half of the non-silent frames (at most
    MAX_HUM_FRAMES) are averaged in up to HUM_GROUPS groups of consecutive frames. A line's
    excess is the *smallest* over the groups: mains hum is stationary, a musical partial that
    happens to sit on a mains harmonic is not. A family's excess is the mean of its three most
    prominent harmonics among the first HUM_HARMONICS.
    """
    if len(mono) < MIN_HUM_DURATION_S * sample_rate_hz:
        return None, 0.0
    mono = mono.astype(np.float32, copy=False)
    frame = _next_pow2(HUM_FRAME_S * sample_rate_hz)
    hop = frame // 2
    pieces = len(mono) // hop
    if pieces < 3:  # at most one full frame: one zero-padded / single frame
        starts = np.array([0])
    else:
        p = mono[:pieces * hop].reshape(pieces, hop)
        piece_energy = np.einsum("ij,ij->i", p, p, dtype=np.float64)
        # mean square of each frame (two pieces), DC removed approximately
        energy = (piece_energy[:-1] + piece_energy[1:]) / frame - offset * offset
        candidates = np.flatnonzero(energy > 1e-10)  # above -100 dBFS
        if len(candidates) == 0:
            return None, 0.0
        order = candidates[np.argsort(energy[candidates], kind="stable")]
        # quietest half, but never fewer than MIN_HUM_FRAMES (estimate variance) if available
        keep = min(MAX_HUM_FRAMES, len(order), max(MIN_HUM_FRAMES, (len(order) + 1) // 2))
        starts = np.sort(order[:keep]) * hop
    n_groups = HUM_GROUPS if len(starts) >= HUM_GROUPS * 2 else 1
    groups = np.array_split(starts, n_groups)
    spectra = [_power_spectrum(mono[:, None], frame, g, offsets=np.array([offset]))[0]
               for g in groups]
    bin_hz = sample_rate_hz / frame
    best_hz, best_score = None, -np.inf
    for f0 in MAINS_HZ:
        excess = [min(_line_excess_db(spec, bin_hz, h * f0) for spec in spectra)
                  for h in range(1, HUM_HARMONICS + 1)
                  if h * f0 + HUM_FLOOR_SPAN_HZ < sample_rate_hz / 2]
        if len(excess) < 3:
            continue
        score = float(np.mean(sorted(excess, reverse=True)[:3]))
        if score > best_score:
            best_hz, best_score = f0, score
    if best_hz is None:
        return None, 0.0
    threshold = HUM_DETECT_DB if len(starts) >= MIN_HUM_FRAMES else HUM_DETECT_FEW_FRAMES_DB
    return (best_hz if best_score >= threshold else None), best_score


# --- main entry point -----------------------------------------------------------------------

@dataclass(frozen=True)
class AnalysisDetail:
    """By-products of :func:`analyse_audio_detailed`, for further analysis without a second pass.

    hop_frames: frames per 100 ms sub-block (the loudness meter's hop).
    momentary_lufs: 400 ms momentary loudness every 100 ms (block i covers sub-blocks i..i+3).
    short_term_lufs: 3 s short-term loudness every 100 ms (window j covers sub-blocks j..j+29;
        a single value over the whole signal when it is shorter than 3 s).
    block_active: per momentary block, the activity gate (see the module docstring).
    sub_active: per complete 100 ms sub-block, its own K-weighted loudness passes the same gate.
    sub_mean_square: per complete 100 ms sub-block and channel, raw mean square (DC included).
    channel_means: per-channel mean (the DC offset), linear full scale.
    channel_cov: DC-free channel covariance over the whole stem, shape (channels, channels).
    mono: the channel mean, shape (frames,), or None when the sample peak is below -90 dBFS.
    """

    hop_frames: int
    momentary_lufs: np.ndarray
    short_term_lufs: np.ndarray
    block_active: np.ndarray
    sub_active: np.ndarray
    sub_mean_square: np.ndarray
    channel_means: np.ndarray
    channel_cov: np.ndarray
    mono: np.ndarray | None


def analyse_audio(audio: np.ndarray, sample_rate_hz: int) -> StemAnalysis:
    """Measure one stem. ``audio``: float array (frames, channels) (or (frames,) for mono),
    full scale = 1.0; ``sample_rate_hz``: Hz. See :class:`StemAnalysis` for the fields."""
    return analyse_audio_detailed(audio, sample_rate_hz)[0]


def analyse_audio_detailed(audio: np.ndarray,
                           sample_rate_hz: int) -> tuple[StemAnalysis, AnalysisDetail]:
    """:func:`analyse_audio` plus the per-block data it computed on the way
    (:class:`AnalysisDetail`), from the same single pass."""
    x = as_frames(audio, what="stem audio")
    n_frames, n_ch = x.shape
    if n_ch == 0:
        raise InputError("stem audio has no channels")
    meter = LoudnessMeter(sample_rate_hz, n_ch)
    if n_frames:  # the whole stem is here: its sample peak lets the true-peak meter skip more
        meter.expect_sample_peak(max(float(x.max()), -float(x.min())))
    hop = meter.hop_frames
    chunk = hop * _CHUNK_SUB_BLOCKS

    sums = np.zeros(n_ch)
    gram = np.zeros((n_ch, n_ch))
    raw_sub: list[np.ndarray] = []  # per 100 ms sub-block, per channel: mean square
    for start in range(0, n_frames, chunk):
        block = x[start:start + chunk]
        meter.process(block)
        b = block.astype(np.float64)
        sums += np.ones(len(b)) @ b  # BLAS; far faster than b.sum(axis=0) on (frames, 2)
        gram += b.T @ b
        m = len(b) // hop
        if m:
            r = b[:m * hop].reshape(m, hop, n_ch)
            raw_sub.append(np.einsum("ijk,ijk->ik", r, r) / hop)
    sub_ms = np.concatenate(raw_sub) if raw_sub else np.zeros((0, n_ch))

    # -- loudness (one pass, done above)
    momentary_power = meter.momentary_power()
    momentary = meter.momentary_lufs()
    short_term = meter.short_term_lufs()
    loudness = gated_integrated_lufs(momentary_power)
    lra = loudness_range_from_short_term(short_term)
    st_max = float(short_term.max()) if short_term.size else SILENCE_DB
    peak_lin = meter.sample_peak_linear
    peak_db = gain_to_db(peak_lin)
    tp_db = meter.true_peak_dbtp()

    # -- activity and RMS over active parts
    if momentary.size:
        active = ((momentary > ABSOLUTE_GATE_LUFS)
                  & (momentary >= momentary.max() - ACTIVITY_RANGE_LU))
    else:
        active = np.zeros(0, dtype=bool)
    active_fraction = float(active.mean()) if active.size else 0.0
    n_sub = len(sub_ms)
    sub_active = np.zeros(n_sub, dtype=bool)
    if active.any():
        # the 100 ms sub-blocks' own K-weighted loudness through the same gate
        sub_lufs = block_loudness_lufs(meter.sub_block_energy / hop)
        sub_active = ((sub_lufs > ABSOLUTE_GATE_LUFS)
                      & (sub_lufs >= momentary.max() - ACTIVITY_RANGE_LU))[:n_sub]
    rms_db = power_to_db(float(sub_ms[sub_active].mean())) if sub_active.any() else SILENCE_DB
    is_silent = peak_db < SILENT_PEAK_DBFS or not active.any()
    crest = 0.0 if is_silent or rms_db <= SILENCE_DB else peak_db - rms_db

    # -- DC and stereo (DC-free second moments from the running sums)
    means = sums / max(n_frames, 1)
    dc = float(np.max(np.abs(means))) if n_frames else 0.0
    cov = gram / max(n_frames, 1) - np.outer(means, means)
    corr = width = None
    if n_ch >= 2 and n_frames and not is_silent:
        ll, rr, lr = cov[0, 0], cov[1, 1], cov[0, 1]
        if ll > 0 and rr > 0:
            corr = float(np.clip(lr / math.sqrt(ll * rr), -1.0, 1.0))
            side, mid = max(ll + rr - 2 * lr, 0.0), max(ll + rr + 2 * lr, 0.0)  # x4 both
            width = WIDTH_CAP if mid * WIDTH_CAP <= side else float(side / mid)

    # -- clipping (only worth looking at when the peak gets there)
    flat = 0
    if peak_lin >= CLIP_LEVEL:
        flat = sum(_flat_top_samples(x[:, c]) for c in range(n_ch))
    clipped_fraction = flat / (n_frames * n_ch) if n_frames else 0.0

    # -- spectra (DC removed)
    low = sub = high = centroid = 0.0
    sub_floor = SILENCE_DB
    hum_hz, hum_excess = None, 0.0
    mono = None
    if n_frames and peak_db >= SILENT_PEAK_DBFS:
        frame = _next_pow2(BROADBAND_FRAME_S * sample_rate_hz)
        bin_hz = sample_rate_hz / frame
        floor_bins = slice(math.ceil(SUB_FLOOR_BAND_HZ[0] / bin_hz), math.ceil(SUB_FLOOR_BAND_HZ[1] / bin_hz))
        power, floor_ms = _power_spectrum(x, frame, _frame_starts(n_frames, frame, MAX_BROADBAND_FRAMES),
                                          offsets=means, band_bins=floor_bins)
        sub_floor = max(power_to_db(float(np.percentile(floor_ms, SUB_FLOOR_PERCENTILE)) / n_ch), SILENCE_DB)
        freqs = np.arange(len(power)) * bin_hz
        total = float(power.sum())
        if total > 0:
            low = float(power[freqs < LOW_EDGE_HZ].sum() / total)
            sub = float(power[freqs < SUB_EDGE_HZ].sum() / total)
            high = float(power[freqs >= HIGH_EDGE_HZ].sum() / total)
            centroid = float((freqs * power).sum() / total)
        # mono mix (a matrix product: much faster than mean(axis=1) on (frames, channels))
        mono = x[:, 0] if n_ch == 1 else x @ np.full(n_ch, 1.0 / n_ch, dtype=x.dtype)  # (mono: a view)
        hum_hz, hum_excess = _hum(mono, sample_rate_hz, offset=float(means.mean()))

    result = StemAnalysis(
        loudness_lufs=loudness, loudness_range_lu=lra, short_term_max_lufs=st_max,
        peak_dbfs=peak_db, true_peak_dbtp=tp_db, rms_dbfs=rms_db, crest_db=crest,
        active_fraction=active_fraction, is_silent=bool(is_silent), dc_offset=dc,
        low_energy_ratio=low, sub_energy_ratio=sub, sub_floor_dbfs=sub_floor, high_energy_ratio=high,
        spectral_centroid_hz=centroid,
        hum_hz=hum_hz, hum_excess_db=float(hum_excess), clipped_fraction=float(clipped_fraction),
        clipped=bool(clipped_fraction > CLIP_FRACTION_THRESHOLD), channels=n_ch,
        stereo_correlation=corr, stereo_width=width, duration_s=n_frames / float(sample_rate_hz),
    )
    detail = AnalysisDetail(
        hop_frames=hop, momentary_lufs=momentary, short_term_lufs=short_term, block_active=active,
        sub_active=sub_active, sub_mean_square=sub_ms, channel_means=means, channel_cov=cov,
        mono=mono)
    return result, detail
