"""Loudness, loudness range and peak measurement (ITU-R BS.1770-4, EBU Tech 3341 / 3342).

numpy and scipy's compiled second-order-sections kernel only (see :func:`sosfilt_rows`: the
main process and the workers never pay for importing ``scipy.signal``). Everything is
streaming: :class:`LoudnessMeter` and :class:`TruePeakMeter` take blocks of any size, keep
their filter state between blocks and hold only one number per 100 ms of audio, so a file of
any length is measured in constant (audio) memory.

Units: LUFS / LKFS (absolute loudness, full-scale K-weighted), LU (loudness differences),
dBFS (sample peak, full-scale sine peak = 0 dBFS), dBTP (true peak, oversampled).

Conventions followed
--------------------
* Channel weights ``G_i`` (BS.1770-4 Table 3): 1.0 for L, R, C and for a mono channel,
  1.41 (+1.5 dB) for the surround channels, 0 for LFE. A mono file is *one* channel of weight 1:
  it is not duplicated (a mono 1 kHz sine at -23 dBFS peak reads -26 LUFS, the same sine in both
  channels of a stereo file reads -23 LUFS).
* Gating blocks ``T_g`` = 400 ms with 75 % overlap (BS.1770-4 eq. 3), built from 100 ms
  sub-block energies; short-term windows are 3 s (EBU Tech 3341), also hopped every 100 ms.
* A trailing partial 100 ms sub-block is not measured (blocks must be complete). When the
  signal is shorter than a window, the window's value is taken over the complete sub-blocks that
  exist (one value), so short one-shots still get a reading instead of "undefined".
* Anything that has no defined level (digital silence, everything gated out) reads
  ``SILENCE_DB`` (-200.0); a loudness range that cannot be formed reads 0.0 LU.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import InputError
from .units import SILENCE_DB, gain_to_db, power_to_db

# --- constants of the standards -------------------------------------------------------------

#: BS.1770-4 eq. 2: ``L_K = -0.691 + 10 log10(sum_i G_i z_i)``; -0.691 dB cancels the K-filter
#: gain at 1 kHz so a 1 kHz sine reads its RMS level.
K_OFFSET_DB = -0.691
#: BS.1770-4 §2.8 / Annex 1 eq. 6: absolute gate, LUFS.
ABSOLUTE_GATE_LUFS = -70.0
#: BS.1770-4 eq. 6: relative gate for integrated loudness, LU below the abs.-gated loudness.
RELATIVE_GATE_LU = -10.0
#: EBU Tech 3342: relative gate for loudness range, LU below the abs.-gated short-term mean.
LRA_RELATIVE_GATE_LU = -20.0
#: EBU Tech 3342: percentiles of the gated short-term distribution spanning the LRA.
LRA_PERCENTILES = (10.0, 95.0)
#: Sub-block length, s: the 75 % overlap hop of the 400 ms block and the 10 Hz short-term rate.
SUB_BLOCK_S = 0.1
#: Sub-blocks per momentary block (400 ms, BS.1770-4 T_g) and per short-term window (3 s).
MOMENTARY_SUB_BLOCKS = 4
SHORT_TERM_SUB_BLOCKS = 30
#: Lowest sample rate the K-weighting design supports (the shelf sits at 1.68 kHz), Hz.
MIN_SAMPLE_RATE_HZ = 8000
#: Default frames per block when a whole array is fed through a meter (bounds memory).
_CHUNK_FRAMES = 65536


# --- K-weighting ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _sosfilt_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None:
    """scipy's compiled cascade-of-biquads kernel, loaded on its own; None if it cannot be.

    ``scipy.signal.sosfilt`` validates its arguments, copies the input to float64 rows and calls
    the compiled ``scipy.signal._sosfilt._sosfilt(sos, x, zi)``, which filters ``x`` (signals,
    samples) in place and updates ``zi`` (signals, sections, 2). Importing ``scipy.signal``
    costs about 0.35 s (it imports scipy.stats, scipy.interpolate and more), paid on every run
    by the main process and by the workers' fork server, for this one loop. The kernel module
    itself needs only numpy, so it is loaded directly from scipy's installation. When that is
    not possible (another scipy layout), :func:`sosfilt_rows` uses ``scipy.signal.sosfilt``;
    the two give bit-identical output (tested).
    """
    try:
        import scipy  # the package itself is light: it does not import its subpackages
        folder = Path(scipy.__file__).parent / "signal"
        name = "scipy.signal._sosfilt"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_sosfilt{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(name, str(path))
                spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
                if spec is None:
                    return None
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                kernel = module._sosfilt
                # a 1-sample self-check of the calling convention: y = b0 x, state updated
                x = np.ones((1, 1))
                zi = np.zeros((1, 1, 2))
                kernel(np.array([[0.5, 0.0, 0.0, 1.0, 0.0, 0.0]]), x, zi)
                return kernel if x[0, 0] == 0.5 else None
    except Exception:  # noqa: BLE001 - any failure: use the public API instead
        return None
    return None


def sosfilt_rows(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """Filter every row of ``x`` through the second-order sections ``sos`` in place.

    ``sos``: float64 (sections, 6) in scipy's layout ``[b0, b1, b2, 1, a1, a2]``; ``x``: float64
    C-contiguous (signals, samples), overwritten with the output; ``zi``: float64 C-contiguous
    (signals, sections, 2) filter state (direct form II transposed), updated in place, so that
    consecutive blocks filter as one signal. Same arithmetic as ``scipy.signal.sosfilt``.
    """
    kernel = _sosfilt_kernel()
    if kernel is not None:
        kernel(sos, x, zi)
        return
    import scipy.signal  # fallback: the public API (slow to import, same kernel)
    y, zf = scipy.signal.sosfilt(sos, x, axis=-1, zi=np.ascontiguousarray(zi.transpose(1, 0, 2)))
    x[...] = y
    zi[...] = zf.transpose(1, 0, 2)


def sos_response(sos: np.ndarray, freqs_hz: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """Complex frequency response of second-order sections at ``freqs_hz`` (as
    ``scipy.signal.sosfreqz(sos, worN=freqs_hz, fs=sample_rate_hz)[1]``)."""
    z1 = np.exp(-2j * np.pi * np.asarray(freqs_hz, dtype=np.float64) / float(sample_rate_hz))
    h = np.ones_like(z1)
    for b0, b1, b2, a0, a1, a2 in np.asarray(sos, dtype=np.float64):
        h *= (b0 + z1 * (b1 + z1 * b2)) / (a0 + z1 * (a1 + z1 * a2))
    return h


def k_weighting_sos(sample_rate_hz: float) -> np.ndarray:
    """K-weighting filter (BS.1770-4 Annex 1) as second-order sections, shape ``(2, 6)``.

    Stage 1 is the "pre-filter" high shelf (+4 dB above ~1.7 kHz, head modelled as a rigid
    sphere), stage 2 the "RLB" high-pass (~38 Hz). BS.1770-4 only tabulates the 48 kHz
    coefficients (Tables 1 and 2); for other rates both biquads are derived from their analog
    prototypes with the pre-warped bilinear transform, ``K = tan(pi f0 / fs)``, using the
    prototype parameters fitted to the 48 kHz tables (as libebur128 and Brecht De Man's
    loudness.py do). At 48 kHz the result equals the tabulated coefficients to 1e-15.

    High shelf  H(s) = (Vh s^2 + Vb (w0/Q) s + w0^2) / (s^2 + (w0/Q) s + w0^2)  (in s/w0 form):
        b0 = (Vh + Vb K/Q + K^2)/a0, b1 = 2 (K^2 - Vh)/a0, b2 = (Vh - Vb K/Q + K^2)/a0,
        a1 = 2 (K^2 - 1)/a0, a2 = (1 - K/Q + K^2)/a0, a0 = 1 + K/Q + K^2.
    High-pass   H(s) = g s^2 / (s^2 + (w0/Q) s + w0^2): b = g (1, -2, 1)/a0, a as above. Table 2
                has b = (1, -2, 1) exactly, i.e. g = a0(48 kHz) ~ 1.005 (+0.043 dB); keeping that
                analog gain g at every rate keeps the response rate-independent (libebur128
                instead keeps b = (1, -2, 1), which drifts by ~0.02 dB at 96 kHz).

    ``sample_rate_hz`` in Hz (>= 8000). Rows are ``[b0, b1, b2, 1, a1, a2]`` (scipy SOS layout).
    """
    fs = float(sample_rate_hz)
    if not fs >= MIN_SAMPLE_RATE_HZ:
        raise InputError(f"sample rate {sample_rate_hz} Hz is too low for K-weighting",
                         hint=f"use audio sampled at {MIN_SAMPLE_RATE_HZ} Hz or more")
    # Stage 1: pre-filter (high shelf). Prototype fitted to BS.1770-4 Table 1.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / fs)
    vh = 10.0 ** (gain_db / 20.0)  # shelf gain as amplitude ratio (prototype constant)
    vb = vh ** 0.4996667741545416  # band gain at the shelf centre
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0,
             (vh - vb * k / q + k * k) / a0, 1.0, 2.0 * (k * k - 1.0) / a0,
             (1.0 - k / q + k * k) / a0]
    # Stage 2: RLB weighting (high-pass). Prototype fitted to BS.1770-4 Table 2.
    f0, q = 38.13547087602444, 0.5003270373238773
    k48 = math.tan(math.pi * f0 / 48000.0)
    g = 1.0 + k48 / q + k48 * k48  # analog passband gain implied by Table 2's b = (1, -2, 1)
    k = math.tan(math.pi * f0 / fs)
    a0 = 1.0 + k / q + k * k
    b = g / a0
    highpass = [b, -2.0 * b, b, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770-4 Table 3 weights ``G_i`` for a channel count in the usual order.

    1-3 channels (mono; L R; L R C): all 1.0. 5 channels (L R C Ls Rs): 1.0 x3, 1.41 x2.
    6 channels (5.1, L R C LFE Ls Rs): LFE 0.0, surrounds 1.41. Other counts: all 1.0.
    """
    if channels == 5:
        return np.array([1.0, 1.0, 1.0, 1.41, 1.41])
    if channels == 6:
        return np.array([1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    return np.ones(channels)


# --- small helpers --------------------------------------------------------------------------

def as_frames(audio: np.ndarray, *, what: str = "audio") -> np.ndarray:
    """View ``audio`` as (frames, channels); (frames,) is one mono channel."""
    x = np.asarray(audio)
    if x.dtype.kind != "f":
        if x.dtype.kind in "iub":
            raise InputError(f"{what} has integer dtype {x.dtype}",
                             hint="convert to float in [-1, 1] (soundfile dtype='float32')")
        raise InputError(f"{what} has unsupported dtype {x.dtype}", hint="pass real floats")
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise InputError(f"{what} must be shaped (frames,) or (frames, channels), got {x.shape}")
    if x.shape[1] > 64 and x.shape[0] <= 64:
        raise InputError(f"{what} looks transposed: shape {x.shape}",
                         hint="pass (frames, channels), e.g. audio.T")
    return x


def block_loudness_lufs(power: np.ndarray) -> np.ndarray:
    """BS.1770-4 eq. 2/4 applied element-wise: ``-0.691 + 10 log10(z)``, floored at SILENCE_DB.

    ``power`` is channel-weighted mean-square ``sum_i G_i z_i``. Arrays here hold one value per
    100 ms, so the scalar :func:`power_to_db` is fast enough and keeps the conversion in units.
    """
    return np.fromiter((max(K_OFFSET_DB + power_to_db(float(p)), SILENCE_DB) for p in power),
                       dtype=np.float64, count=len(power))


def _loudness(power: float) -> float:
    """Scalar BS.1770-4 eq. 2: LUFS of a channel-weighted mean-square, floored."""
    return max(K_OFFSET_DB + power_to_db(power), SILENCE_DB)


def _window_power(sub_energy: np.ndarray, sub_blocks: int, hop_frames: int) -> np.ndarray:
    """Mean-square of sliding windows of ``sub_blocks`` sub-blocks, hop one sub-block.

    ``sub_energy`` holds per-sub-block sums of weighted squares. BS.1770-4 eq. 1/3: the block
    mean-square is ``z_j = 1/T_g * integral over the block``. Windows longer than the signal
    collapse to a single window over the whole (complete) signal; no sub-block gives no window.
    """
    n = len(sub_energy)
    if n == 0:
        return np.zeros(0)
    if n < sub_blocks:
        return np.array([sub_energy.sum() / (n * hop_frames)])
    # Direct window sums (not cumsum differences, which would leave rounding residue in the
    # silent blocks after loud ones); one value per 100 ms, so this is cheap.
    return sliding_window_view(sub_energy, sub_blocks).sum(axis=1) / (sub_blocks * hop_frames)


def gated_integrated_lufs(block_power: np.ndarray) -> float:
    """Integrated loudness from 400 ms block powers (BS.1770-4 eqs. 4-7), LUFS.

    ``block_power``: channel-weighted mean-square ``sum_i G_i z_ij`` per gating block.
    l_j = -0.691 + 10 log10(block_power_j)                                   (eq. 4)
    J_a = {j : l_j > -70}; Gamma_r = -0.691 + 10 log10(mean_{J_a} power) - 10   (eq. 6)
    J_g = {j : l_j > Gamma_a and l_j > Gamma_r}; L_KG = -0.691 + 10 log10(mean_{J_g} power) (7)
    Returns ``SILENCE_DB`` when no block passes the gates.
    """
    p = np.asarray(block_power, dtype=np.float64)
    if p.size == 0:
        return SILENCE_DB
    lj = block_loudness_lufs(p)
    above_abs = lj > ABSOLUTE_GATE_LUFS
    if not above_abs.any():
        return SILENCE_DB
    gamma_r = _loudness(float(p[above_abs].mean())) + RELATIVE_GATE_LU
    gated = above_abs & (lj > gamma_r)
    if not gated.any():
        return SILENCE_DB
    return _loudness(float(p[gated].mean()))


def loudness_range_from_short_term(short_term_lufs: np.ndarray) -> float:
    """EBU Tech 3342 loudness range from short-term (3 s) loudness values, LU.

    Absolute gate: keep ``s >= -70 LUFS``; relative gate: keep ``s >= 10 log10(mean 10^(s/10))
    - 20 LU`` over the absolutely gated values (energy mean, as in Tech 3342's reference code);
    LRA = P95 - P10 of what remains. Percentiles use MATLAB ``prctile`` interpolation
    (numpy ``method="hazen"``), which the Tech 3342 reference implementation uses.
    Returns 0.0 when nothing passes the gates.
    """
    s = np.asarray(short_term_lufs, dtype=np.float64)
    s = s[s >= ABSOLUTE_GATE_LUFS]
    if s.size == 0:
        return 0.0
    # Energy mean of the values in LUFS; the -0.691 offset cancels out of a relative gate.
    mean_power = float(np.mean(10.0 ** ((s - K_OFFSET_DB) / 10.0)))
    gate = _loudness(mean_power) + LRA_RELATIVE_GATE_LU
    s = s[s >= gate]
    if s.size == 0:
        return 0.0
    lo, hi = np.percentile(s, LRA_PERCENTILES, method="hazen")
    return float(hi - lo)


# --- true peak ------------------------------------------------------------------------------

def _kaiser_lowpass(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """Windowed-sinc low-pass, unscaled: ``scipy.signal.firwin(taps, cutoff, window=("kaiser",
    beta), scale=False)`` (``cutoff`` relative to Nyquist), in numpy."""
    m = np.arange(taps) - 0.5 * (taps - 1)
    return cutoff * np.sinc(cutoff * m) * np.kaiser(taps, beta)


def _interpolator(oversample: int, taps_per_phase: int, kaiser_beta: float) -> np.ndarray:
    """Polyphase matrix ``H[j, p]`` of a windowed-sinc interpolator (BS.1770-4 Annex 2).

    The prototype low-pass has ``L*T + 1`` taps (L = oversample, T = taps_per_phase, even),
    cutoff at the original Nyquist (a Nyquist / L-band filter), Kaiser window. Its centre phase
    is an exact unit impulse, so phase 0 reproduces the input samples and the true peak is never
    below the sample peak. With T=24, beta=6 the passband (to 0.4 fs) is flat to +-0.005 dB and
    images beyond 0.6 fs are down > 60 dB (BS.1770-4's example 48-tap filter is coarser).
    Output ``y[nL + p] = sum_j window[n][j] * H[j, p]`` where ``window[n]`` holds the last
    ``T + 1`` input samples in ascending time.
    """
    L, T = int(oversample), int(taps_per_phase)
    h = _kaiser_lowpass(L * T + 1, 1.0 / L, kaiser_beta) * L
    centre = L * T // 2
    h[centre % L::L] = 0.0  # sinc zeros at multiples of L from the centre: make them exact
    h[centre] = 1.0
    h = np.concatenate((h, np.zeros(L - 1)))  # (T + 1) * L taps
    width = T + 1
    H = np.empty((width, L))
    for j in range(width):
        H[j] = h[(width - 1 - j) * L:(width - j) * L]
    return H


#: Windows per run when the true-peak meter skips runs that cannot beat its reading.
_TP_RUN_FRAMES = 4096


class TruePeakMeter:
    """Streaming true-peak and sample-peak meter (BS.1770-4 Annex 2).

    ``channels``: channel count; ``oversample``: integer factor (default 4, BS.1770-4's figure
    for 48 kHz; 1 degenerates to sample peak); ``taps_per_phase``: interpolator length per
    polyphase branch (even). Blocks of any size are accepted; the last ``taps_per_phase``
    samples per channel are kept between blocks, so the result is independent of the blocking.
    The reading includes the filter tail after the last sample (a virtual flush with zeros).
    Cost is one small matrix product per block (``frames x (T+1) x L`` multiply-adds); blocks
    whose sample peak cannot beat the current reading by the interpolator's worst-case gain are
    skipped exactly.
    """

    def __init__(self, channels: int, oversample: int = 4, taps_per_phase: int = 24,
                 kaiser_beta: float = 6.0):
        if channels < 1:
            raise InputError(f"channel count must be >= 1, got {channels}")
        if int(oversample) != oversample or oversample < 1:
            raise InputError(f"oversample must be a whole number >= 1, got {oversample}")
        if taps_per_phase < 2 or taps_per_phase % 2:
            raise InputError(f"taps_per_phase must be even and >= 2, got {taps_per_phase}")
        self.channels = int(channels)
        self.oversample = int(oversample)
        # Phase 0 is the input itself (exact impulse): only phases 1..L-1 need computing.
        self._H = _interpolator(self.oversample, taps_per_phase, kaiser_beta)[:, 1:].astype(
            np.float32)
        #: Worst-case |output| / max|input window| over the phases (sum of |taps|).
        self._gain_bound = (float(np.abs(self._H).sum(axis=0).max()) * (1 + 1e-6)
                            if self.oversample > 1 else 1.0)
        self._width = self._H.shape[0]
        self._history = np.zeros((self._width - 1, self.channels), dtype=np.float32)
        self._history_peak = 0.0
        self._true_peak = 0.0
        self._sample_peak = 0.0

    def _interpolated_peak(self, xx: np.ndarray, floor: float = 0.0) -> float:
        """Max |interpolated sample| over all full windows of ``xx`` (frames, channels), or a
        value <= ``floor`` when none exceeds it.

        Windows are taken in runs of :data:`_TP_RUN_FRAMES`; runs whose sample peak times the
        interpolator's worst-case gain cannot beat ``floor`` (or the block's own sample peak,
        which the true peak is never below) are skipped exactly, so quiet passages cost little.
        """
        n = len(xx) - self._width + 1  # number of full windows
        if n <= 0:
            return 0.0
        run = _TP_RUN_FRAMES
        starts = np.arange(0, n, run)
        mag = np.abs(xx[:, 0])
        for c in range(1, self.channels):  # (a max over axis 1 of a (frames, 2) array is slow)
            np.maximum(mag, np.abs(xx[:, c]), out=mag)
        peaks = np.maximum.reduceat(mag, starts)  # run k reads mag[start_k : start_k + run + width - 1]
        peaks[:-1] = np.maximum(peaks[:-1], peaks[1:])  # run >= width: bound the overlap by the next run
        need = peaks * self._gain_bound > max(floor, float(mag.max()))
        best = floor
        k, runs = 0, len(starts)
        while k < runs:  # contiguous spans of needed runs, one matrix product each
            if not need[k]:
                k += 1
                continue
            j = k
            while j + 1 < runs and need[j + 1]:
                j += 1
            i0, i1 = int(starts[k]), min(int(starts[j]) + run, n)
            seg = xx[i0: i1 + self._width - 1]
            for c in range(self.channels):
                y = sliding_window_view(seg[:, c], self._width) @ self._H
                best = max(best, float(y.max()), float(-y.min()))
            k = j + 1
        return best

    def process(self, block: np.ndarray) -> None:
        """Feed a block shaped (frames, channels) (or (frames,) for one channel), floats."""
        x = as_frames(block, what="block")
        if x.shape[1] != self.channels:
            raise InputError(f"block has {x.shape[1]} channels, meter expects {self.channels}")
        if len(x) == 0:
            return
        x = x.astype(np.float32, copy=False)
        block_peak = max(float(x.max()), -float(x.min()))
        if not math.isfinite(block_peak):
            raise InputError("audio contains NaN or infinite samples",
                             hint="check the decoder or the processing before the meter")
        self._sample_peak = max(self._sample_peak, block_peak)
        self._true_peak = max(self._true_peak, block_peak)  # phase 0 reproduces the samples
        xx = np.concatenate((self._history, x), axis=0)
        window_peak = max(block_peak, self._history_peak)
        if self.oversample > 1 and window_peak * self._gain_bound > self._true_peak:
            self._true_peak = max(self._true_peak, self._interpolated_peak(xx, self._true_peak))
        self._history = xx[len(xx) - (self._width - 1):].copy()
        self._history_peak = float(np.max(np.abs(self._history))) if len(self._history) else 0.0

    def expect_sample_peak(self, peak_linear: float) -> None:
        """Tell the meter the sample peak of the whole signal it is about to be fed (linear full
        scale), measured by the caller. The true peak is never below the sample peak, so from the
        first block on, runs whose worst case cannot beat it are skipped, not only runs that
        cannot beat the loudest sample fed so far (about a fifth fewer runs computed on stems).
        The reading stays exact provided ``peak_linear`` is the sample peak of the samples fed."""
        self._true_peak = max(self._true_peak, float(peak_linear))

    def _flushed_peak(self) -> float:
        """True peak including the interpolation tail after the last sample (state unchanged)."""
        if self.oversample == 1 or self._history_peak * self._gain_bound <= self._true_peak:
            return self._true_peak
        tail = np.concatenate((self._history, np.zeros_like(self._history)), axis=0)
        return max(self._true_peak, self._interpolated_peak(tail, self._true_peak))

    @property
    def true_peak_linear(self) -> float:
        """Largest |oversampled sample| so far, linear full scale (1.0 = 0 dBTP)."""
        return self._flushed_peak()

    @property
    def sample_peak_linear(self) -> float:
        """Largest |sample| so far, linear full scale."""
        return self._sample_peak

    def true_peak_dbtp(self) -> float:
        """True peak so far, dBTP; ``SILENCE_DB`` for digital silence."""
        return gain_to_db(self.true_peak_linear)

    def sample_peak_dbfs(self) -> float:
        """Sample peak so far, dBFS; ``SILENCE_DB`` for digital silence."""
        return gain_to_db(self._sample_peak)


# --- loudness meter -------------------------------------------------------------------------

class LoudnessMeter:
    """Streaming BS.1770-4 / EBU R 128 meter: integrated, momentary, short-term, LRA, peaks.

    ``sample_rate_hz``: Hz; ``channels``: channel count (weights from :func:`channel_weights`
    unless ``weights`` is given); ``track_peaks``: also run a :class:`TruePeakMeter`
    (``oversample``x). Feed :meth:`process` float blocks shaped (frames, channels) of any size.

    State: the K-filter's ``sosfilt`` state (``zi``), the running sum of the current 100 ms
    sub-block, and one float per completed sub-block (channel-weighted sum of K-weighted
    squares, ``sum_i G_i sum_n y_i[n]^2``). Momentary (400 ms), short-term (3 s) and gating
    blocks are formed from these on demand, so no audio is retained.
    """

    def __init__(self, sample_rate_hz: int, channels: int, *,
                 weights: Iterable[float] | None = None,
                 track_peaks: bool = True, oversample: int = 4):
        if channels < 1:
            raise InputError(f"channel count must be >= 1, got {channels}")
        self.sample_rate_hz = int(sample_rate_hz)
        self.channels = int(channels)
        self._sos = k_weighting_sos(self.sample_rate_hz)
        self._weights = (channel_weights(self.channels) if weights is None
                         else np.asarray(list(weights), dtype=np.float64))
        if self._weights.shape != (self.channels,):
            raise InputError(f"{len(self._weights)} channel weights for {self.channels} channels")
        #: Frames per 100 ms sub-block (the 75 % overlap hop of the 400 ms block).
        self.hop_frames = max(1, int(round(self.sample_rate_hz * SUB_BLOCK_S)))
        self._zi = np.zeros((self.channels, self._sos.shape[0], 2))  # see sosfilt_rows
        self._partial_energy = 0.0
        self._partial_frames = 0
        self._chunks: list[np.ndarray] = []
        self._sub_cache: np.ndarray | None = np.zeros(0)
        self.frames = 0
        self._peaks = TruePeakMeter(self.channels, oversample) if track_peaks else None

    def expect_sample_peak(self, peak_linear: float) -> None:
        """See :meth:`TruePeakMeter.expect_sample_peak` (nothing to do without peaks)."""
        if self._peaks is not None:
            self._peaks.expect_sample_peak(peak_linear)

    # -- feeding
    def process(self, block: np.ndarray) -> None:
        """Add a block of audio: floats shaped (frames, channels), or (frames,) if mono."""
        x = as_frames(block, what="block")
        if x.shape[1] != self.channels:
            raise InputError(f"block has {x.shape[1]} channels, meter expects {self.channels}")
        n = len(x)
        if n == 0:
            return
        if self._peaks is not None:
            self._peaks.process(x)
        y = np.array(x.T, dtype=np.float64, order="C")  # (channels, frames), filtered in place
        sosfilt_rows(self._sos, y, self._zi)
        energy = self._weights @ np.square(y, out=y)  # sum_i G_i y_i[n]^2, per frame
        self.frames += n
        hop = self.hop_frames
        need = hop - self._partial_frames
        if n < need:
            self._partial_energy += float(energy.sum())
            self._partial_frames += n
            self._check_finite(self._partial_energy)
            return
        first = self._partial_energy + float(energy[:need].sum())
        rest = energy[need:]
        m = len(rest) // hop
        full = rest[:m * hop].reshape(m, hop).sum(axis=1)
        tail = rest[m * hop:]
        self._partial_energy = float(tail.sum())
        self._partial_frames = len(tail)
        self._check_finite(first + float(full.sum()) + self._partial_energy)
        self._chunks.append(np.concatenate(([first], full)))
        self._sub_cache = None

    @staticmethod
    def _check_finite(total: float) -> None:
        """NaN/inf samples make the (non-negative) energy sum non-finite."""
        if not math.isfinite(total):
            raise InputError("audio contains NaN or infinite samples",
                             hint="check the decoder or the processing before the meter")

    def reset(self) -> None:
        """Forget everything fed so far (filter state, blocks and peaks)."""
        self.__init__(self.sample_rate_hz, self.channels, weights=self._weights,
                      track_peaks=self._peaks is not None,
                      oversample=self._peaks.oversample if self._peaks else 4)

    # -- raw block data
    @property
    def sub_block_energy(self) -> np.ndarray:
        """Per completed 100 ms sub-block: ``sum_i G_i sum_n y_i[n]^2`` (K-weighted), float64."""
        if self._sub_cache is None:
            self._sub_cache = np.concatenate(self._chunks) if self._chunks else np.zeros(0)
            self._chunks = [self._sub_cache] if len(self._sub_cache) else []
        return self._sub_cache

    def momentary_power(self) -> np.ndarray:
        """Channel-weighted mean-square ``sum_i G_i z_ij`` of each 400 ms block, hop 100 ms."""
        return _window_power(self.sub_block_energy, MOMENTARY_SUB_BLOCKS, self.hop_frames)

    # -- readings
    def momentary_lufs(self) -> np.ndarray:
        """Momentary loudness (400 ms, BS.1770-4 eq. 4) every 100 ms, LUFS; floor -200."""
        return block_loudness_lufs(self.momentary_power())

    def short_term_lufs(self) -> np.ndarray:
        """Short-term loudness (3 s, EBU Tech 3341) every 100 ms, LUFS; floor -200."""
        return block_loudness_lufs(
            _window_power(self.sub_block_energy, SHORT_TERM_SUB_BLOCKS, self.hop_frames))

    def integrated_lufs(self) -> float:
        """Gated integrated loudness (BS.1770-4 eqs. 4-7), LUFS; -200.0 if nothing passes."""
        return gated_integrated_lufs(self.momentary_power())

    def loudness_range_lu(self) -> float:
        """Loudness range (EBU Tech 3342) over 3 s windows every 100 ms, LU; 0.0 if undefined."""
        return loudness_range_from_short_term(self.short_term_lufs())

    def momentary_max_lufs(self) -> float:
        """Largest momentary loudness, LUFS (floor -200)."""
        m = self.momentary_lufs()
        return float(m.max()) if m.size else SILENCE_DB

    def short_term_max_lufs(self) -> float:
        """Largest short-term loudness, LUFS (floor -200)."""
        s = self.short_term_lufs()
        return float(s.max()) if s.size else SILENCE_DB

    @property
    def sample_peak_linear(self) -> float:
        """Largest |sample| so far, linear full scale (needs ``track_peaks=True``)."""
        return self._need_peaks().sample_peak_linear

    def _need_peaks(self) -> TruePeakMeter:
        if self._peaks is None:
            raise RuntimeError("this LoudnessMeter was created with track_peaks=False")
        return self._peaks

    def true_peak_dbtp(self) -> float:
        """True peak, dBTP (BS.1770-4 Annex 2); -200.0 for silence."""
        return self._need_peaks().true_peak_dbtp()

    def sample_peak_dbfs(self) -> float:
        """Sample peak, dBFS; -200.0 for silence."""
        return self._need_peaks().sample_peak_dbfs()

    @property
    def tracks_peaks(self) -> bool:
        """Whether this meter also measures the true and sample peaks."""
        return self._peaks is not None

    def stats(self, peaks: tuple[float, float] | None = None) -> "LoudnessStats":
        """All readings at once. The peaks come from this meter (``track_peaks=True``) or, for a
        meter without, from ``peaks`` = (true peak dBTP, sample peak dBFS) measured elsewhere."""
        short_term = self.short_term_lufs()
        momentary = self.momentary_lufs()
        true_peak, sample_peak = peaks if peaks is not None else (self.true_peak_dbtp(), self.sample_peak_dbfs())
        return LoudnessStats(
            integrated_lufs=gated_integrated_lufs(self.momentary_power()),
            loudness_range_lu=loudness_range_from_short_term(short_term),
            true_peak_dbtp=float(true_peak),
            sample_peak_dbfs=float(sample_peak),
            short_term_max_lufs=float(short_term.max()) if short_term.size else SILENCE_DB,
            momentary_max_lufs=float(momentary.max()) if momentary.size else SILENCE_DB,
        )


@dataclass(frozen=True)
class LoudnessStats:
    """Summary of one signal. LUFS/LU per BS.1770-4 / Tech 3342, peaks in dBFS / dBTP."""

    integrated_lufs: float
    loudness_range_lu: float
    true_peak_dbtp: float
    sample_peak_dbfs: float
    short_term_max_lufs: float
    momentary_max_lufs: float

    def to_dict(self) -> dict[str, float]:
        """Plain floats rounded to 0.01 (YAML-friendly)."""
        return {k: round(float(v), 2) for k, v in asdict(self).items()}


# --- whole-array conveniences ---------------------------------------------------------------

def _feed(meter: LoudnessMeter | TruePeakMeter, x: np.ndarray, chunk: int = _CHUNK_FRAMES) -> None:
    for start in range(0, len(x), chunk):
        meter.process(x[start:start + chunk])


def _metered(x: np.ndarray, sample_rate_hz: int, track_peaks: bool) -> LoudnessMeter:
    frames = as_frames(x)
    meter = LoudnessMeter(sample_rate_hz, frames.shape[1], track_peaks=track_peaks)
    _feed(meter, frames)
    return meter


def integrated_loudness_lufs(x: np.ndarray, sample_rate_hz: int) -> float:
    """Gated integrated loudness of ``x`` ((frames,) or (frames, channels)), LUFS."""
    return _metered(x, sample_rate_hz, False).integrated_lufs()


def loudness_range_lu(x: np.ndarray, sample_rate_hz: int) -> float:
    """EBU Tech 3342 loudness range of ``x``, LU."""
    return _metered(x, sample_rate_hz, False).loudness_range_lu()


def true_peak_dbtp(x: np.ndarray, sample_rate_hz: int, oversample: int = 4) -> float:
    """True peak of ``x`` (max over channels) with ``oversample``x interpolation, dBTP.

    ``sample_rate_hz`` is validated only: the interpolator is defined relative to the rate.
    """
    if not sample_rate_hz > 0:
        raise InputError(f"sample rate must be positive, got {sample_rate_hz}")
    frames = as_frames(x)
    meter = TruePeakMeter(frames.shape[1], oversample)
    _feed(meter, frames)
    return meter.true_peak_dbtp()


def sample_peak_dbfs(x: np.ndarray) -> float:
    """Largest |sample| of ``x``, dBFS (-200.0 for silence or an empty array)."""
    frames = as_frames(x)
    return gain_to_db(float(np.max(np.abs(frames)))) if frames.size else SILENCE_DB


def measure_loudness(x: np.ndarray, sample_rate_hz: int) -> LoudnessStats:
    """Integrated loudness, LRA, true/sample peak and max momentary/short-term of ``x``."""
    return _metered(x, sample_rate_hz, True).stats()


def _feed_file(path: str, make: Callable[[int, int], Any], *, start_frame: int = 0, frames: int | None = None,
               block_frames: int = 65536) -> Any:
    """``make(sample_rate_hz, channels)`` (a meter), fed ``frames`` frames of an audio file from
    ``start_frame`` (to the end when None) in ``block_frames`` blocks. Unreadable files raise
    :class:`InputError`."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            meter = make(f.samplerate, f.channels)
            f.seek(min(max(0, int(start_frame)), f.frames))
            left = f.frames if frames is None else int(frames)
            while left > 0:
                block = f.read(min(block_frames, left), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                meter.process(block)
                left -= len(block)
    except (RuntimeError, OSError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise InputError(f"cannot read audio: {exc}", path=str(path),
                         hint="check the file is a readable WAV/FLAC/AIFF") from exc
    except InputError as exc:
        raise InputError(exc.message, path=str(path), hint=exc.hint) from exc
    return meter


def meter_file(path: str, *, start_frame: int = 0, frames: int | None = None, track_peaks: bool = True,
               block_frames: int = 65536) -> LoudnessMeter:
    """A :class:`LoudnessMeter` fed with ``frames`` frames of an audio file from ``start_frame``
    (to the end when ``frames`` is None), streamed in ``block_frames`` blocks: its stats and its
    momentary/short-term series are then at hand. Unreadable files raise :class:`InputError`."""
    return _feed_file(path, lambda sr, ch: LoudnessMeter(sr, ch, track_peaks=track_peaks),
                      start_frame=start_frame, frames=frames, block_frames=block_frames)


def file_peaks(path: str, block_frames: int = 65536) -> tuple[float, float]:
    """(true peak dBTP, sample peak dBFS) of an audio file, streamed in ``block_frames`` blocks."""
    meter = _feed_file(path, lambda sr, ch: TruePeakMeter(ch), block_frames=block_frames)
    return meter.true_peak_dbtp(), meter.sample_peak_dbfs()


def measure_loudness_file(path: str, block_frames: int = 65536) -> LoudnessStats:
    """:func:`measure_loudness` of an audio file, streamed in ``block_frames`` blocks.

    Memory stays constant in the file length. Unreadable files raise :class:`InputError`."""
    return meter_file(path, block_frames=block_frames).stats()
