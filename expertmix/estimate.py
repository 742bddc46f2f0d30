"""Estimate the decisions a mix engineer made, from the raw stems and the final mix.

:func:`estimate_decisions` takes aligned raw stems and the stereo mix made from them and returns an
:class:`Estimate`: per stem its gain, pan (and width for a stereo stem), broad EQ band gains and,
when the audio allows it, how much it was compressed; plus how well all that reproduces the mix
(``residual_db``) and any warnings. These become training targets (``learn add``).

Checks first, because a wrong pair would teach the models nonsense:

1. **Lengths.** The audible length of the mix (up to its last block within 60 dB of its loudest)
   and of the stems must agree within ``max_length_diff_s`` (3 s by default: a reverb tail or a
   trimmed fade passes, another edit of the song does not).
2. **Offset.** The mix is cross-correlated with the sum of the stems (GCC-PHAT, the phase transform:
   a sharp peak even through EQ and compression) over up to 30 s of the loudest part, for lags up
   to ``±OFFSET_SEARCH_MS``. An offset up to ``max_offset_ms`` (500 ms) is compensated and reported
   as ``offset_ms`` (> 0: the mix starts later than the stems); a larger one is refused.
3. **Fit.** If the best fit below leaves ``residual_db`` above ``max_residual_db`` (-3 dB: the fit
   explains less than half the mix's energy), the pair is refused: "does not look like a mix of
   these stems".

The fit (method)
----------------
Short-time Fourier transforms (Hann, ~93 ms, 50 % overlap) of every stem channel and of both mix
channels. In each of the seven broad bands of :data:`~expertmix.descriptor_specs.BANDS_HZ`, for each
mix channel, one *complex* coefficient per stem channel is fitted by least squares over all the
band's bins and frames::

    Mix_c(f, t) ~ sum_k h[band, k, c] * Stem_k(f, t)

A complex coefficient absorbs the phase shift of an EQ within the band and small delays, so the
band gains do not depend on phase; cross terms (a stereo stem's left channel feeding the right
output) are fitted too, which gives the width. The sums are accumulated block by block (normal
equations), so memory does not grow with the song's length. Reverb in the mix is mostly
uncorrelated with the dry stem at the same instant and ends up in the residual (its earliest part
slightly raises the gain of the stem that feeds it); compression varies the gain over time and the
fit returns its average.

From the coefficients, with ``E_in`` the stem's energy and ``E_out,c`` its fitted contribution's
energy in mix channel ``c``, per band:

* band energy gain ``g_b = sqrt((E_out,L + E_out,R) / E_in)``;
* **gain_db**: the robust average of ``20 log10 g_b`` over the bands where the stem has energy,
  weighted by its K-weighted (BS.1770) energy share, so the average follows loudness and a
  rumble counts little; bands more than 1.5 dB from the weighted median are left out, so that an
  EQ boost in one band is not read as a fader move. A band only counts when its gain is well
  determined: the least-squares standard error (residual power times the diagonal of the inverse
  Gram matrix) must lie 20 dB under the stem's contribution there, which leaves out bands where
  two stems carry the same signal (bleed). For a stereo stem it is the fader
  of the balance law (the louder side's gain). It includes everything common to all stems
  (mix-bus and mastering gain): compare stems with ``relative_loudness_lu``.
* **pan**: from the ratio ``rho = sqrt(E_out,R / E_out,L)`` over the stem's bands, in the
  renderer's law (:func:`expertmix.plan.pan_matrix`): mono stems constant power,
  ``pan = (4 / pi) * atan2(rho, 1) - 1`` (so -1 left, 0 centre, +1 right); stereo stems balance,
  ``pan = rho - 1`` when ``rho < 1`` else ``1 - 1 / rho``.
* **width** (stereo stems whose channels differ enough): from the cross terms, the renderer's
  mid/side width (0 mono, 1 as recorded, 2 wider).
* **eq_db[band]**: ``20 log10 g_b - gain`` for bands where the stem has at least 0.1 % of its
  (K-weighted) energy, its contribution is within 40 dB of the mix in that band and the band gain
  is well determined (above); otherwise None.
* **relative_loudness_lu**: BS.1770 loudness of the stem's contribution (its own loudness plus the
  fitted energy gain) minus the loudness of the mix: the balance, free of the mastering gain.
* **compression**: a second pass fits one real multiplier per stem and frame on top of the band
  fit, i.e. the stem's gain over time. Regressing it (in dB) on the stem's own frame level with a
  hinge (flat below a threshold, slope ``beta`` above) gives ``ratio = 1 / (1 + beta)``, the
  threshold (frame RMS, dBFS of the raw stem) and the gain reduction at the stem's loud (95th
  percentile) frames. Not estimated when the stem is too short, too steady (under 6 dB of level
  range) or too quiet in the mix. A bus or master compressor driven by several stems also shows
  up here, on the stems that drive it.

Accuracy measured in tests/test_estimate.py (6-8 s synthetic noise stems, 44.1 kHz): a linear mix
(gains -6/0/+3/-2 dB, pans -0.5/0/+0.7 and a stereo balance of +0.3) is recovered exactly (errors
< 0.001 dB and 0.0001, residual -120 dB); with a stereo reverb return at -10 dB (residual -10 dB)
gains stay within 0.07 dB and pans within 0.04; a +4 dB boost of the mid band reads +3.98 dB with
the stem's gain unchanged; offsets of +-50 ms are found to the sample (peak z ~ 1900); a 4:1
compressor at -30 dBFS reads ratio 3.2, threshold -30 dBFS, 12 dB of gain reduction (ratios are
underestimated: frame-level gains smooth the static curve; 8:1 reads 4-5:1), and uncompressed
stems read 1.0. A mix of other stems is refused (residual -0.0 dB). On the bundled demo (real drum
samples with bleed between the microphones, raw stems with rumble, hum, clipping and hiss, and a
reference mix of the cleaned stems, soft-clipped): residual -35 dB, gains within 0.02 dB of the
documented balance except the kick (-0.4 dB: its raw sub band holds rumble the mix does not),
pans within 0.001.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from .descriptor_specs import BANDS_HZ
from .errors import InputError
from .loudness import as_frames, integrated_loudness_lufs, k_weighting_sos, sos_response
from .units import SILENCE_DB

#: Largest offset between mix and stems that is compensated (larger: refused).
MAX_OFFSET_MS = 500.0
#: Lags searched by the cross-correlation, ms (either way).
OFFSET_SEARCH_MS = 2000.0
#: Largest difference between the audible lengths of the mix and the stems, s.
MAX_LENGTH_DIFF_S = 3.0
#: The fit must leave a residual below this, dB relative to the mix energy.
MAX_RESIDUAL_DB = -3.0
#: Audible length: up to the last 100 ms block within this many dB of the loudest block.
ACTIVE_REL_DB = -60.0
#: Cross-correlation excerpt, s.
OFFSET_EXCERPT_S = 30.0
#: Minimum peak-to-noise ratio of the cross-correlation for an alignment to count as found.
OFFSET_MIN_PEAK_Z = 8.0
#: A band enters the gain and EQ estimates when it holds at least this share of the stem's energy.
MIN_BAND_SHARE = 1e-3
#: ... and the stem's contribution there is within this many dB of the mix's band energy.
MIN_BAND_CONTRIBUTION_DB = -40.0
#: ... and its fitted contribution there is this far above the fit's uncertainty, dB (20 dB: the band
#: gain is known to about 1 dB).
MIN_BAND_SNR_DB = 20.0
#: Bands within this distance of the weighted median enter the broadband gain, dB.
GAIN_TRIM_DB = 1.5
#: A stem whose contribution is this far below its own level is reported as muted, dB.
MUTED_DB = -60.0

#: Slots written by :meth:`Estimate.targets` (per stem). ``gain_db`` is the absolute raw-to-mix gain
#: (it includes the mix-bus and mastering gain common to all stems); ``level.relative_lu`` is the
#: stem's loudness in the mix relative to the mix, free of that common gain; the training
#: pipeline maps these onto the rulebook's slots.
TARGET_SLOTS: tuple[str, ...] = (
    "gain_db", "level.relative_lu", "pan", "width",
    *[f"eq.band_{b}_db" for b in BANDS_HZ],
    "compressor.ratio", "compressor.gain_reduction_db",
)


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd) + 0.0  # no -0.0


@dataclass
class CompressionEstimate:
    """Level-dependent gain of one stem in the mix (see the module doc). ``estimated`` False: ``note`` says why."""

    estimated: bool
    ratio: float | None = None
    threshold_dbfs: float | None = None
    gain_reduction_db: float | None = None
    r2: float | None = None
    frames: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StemEstimate:
    """What the engineer did to one stem, as far as the mix shows it.

    ``gain_db``: broadband gain from the raw stem into the mix (dB, includes mix-bus and master
    gain). ``relative_loudness_lu``: loudness of the stem's contribution minus the mix's. ``pan``:
    -1..1 in the renderer's law. ``width``: stereo stems only (None if not identifiable).
    ``eq_db``: per band of BANDS_HZ, gain relative to ``gain_db`` (None: not estimable).
    ``band_gain_db``: the absolute band gains. ``contribution_db``: the stem's share of the mix
    energy. ``polarity_inverted``: the fitted coefficients are mostly negative.
    """

    name: str
    channels: int
    active: bool
    muted: bool = False
    gain_db: float | None = None
    relative_loudness_lu: float | None = None
    contribution_lufs: float | None = None
    contribution_db: float | None = None
    pan: float | None = None
    width: float | None = None
    polarity_inverted: bool = False
    eq_db: dict[str, float | None] = field(default_factory=dict)
    band_gain_db: dict[str, float | None] = field(default_factory=dict)
    compression: CompressionEstimate = field(default_factory=lambda: CompressionEstimate(False, note="not run"))
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Estimate:
    """The decisions estimated from one (stems, mix) pair and how well they explain the mix.

    ``residual_db``: energy of (mix - fitted sum) relative to the mix, dB (-20 is a close fit, 0 is
    no fit at all); ``residual_by_band_db`` per band (None above Nyquist). ``offset_ms``: how much
    later the mix starts than the stems (compensated). ``mix_lufs``: loudness of the mix over the
    part compared. ``overlap_s``: length compared.
    """

    sample_rate_hz: int
    offset_ms: float
    offset_frames: int
    offset_peak_z: float
    stems_duration_s: float
    mix_duration_s: float
    overlap_s: float
    residual_db: float
    residual_by_band_db: dict[str, float | None]
    mix_lufs: float
    stems: dict[str, StemEstimate]
    warnings: list[str] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def targets(self) -> list[tuple[str, str, float]]:
        """``(stem, slot, value)`` for every estimated number (slots in :data:`TARGET_SLOTS`).

        Inactive or muted stems give only ``gain_db``; values that could not be estimated are left out.
        """
        out: list[tuple[str, str, float]] = []
        for name, s in self.stems.items():
            if not s.active:
                continue
            vals: dict[str, float | None] = {"gain_db": s.gain_db}
            if not s.muted:
                vals.update({"level.relative_lu": s.relative_loudness_lu, "pan": s.pan, "width": s.width})
                vals.update({f"eq.band_{b}_db": v for b, v in s.eq_db.items()})
                if s.compression.estimated:
                    vals["compressor.ratio"] = s.compression.ratio
                    vals["compressor.gain_reduction_db"] = s.compression.gain_reduction_db
            out += [(name, slot, float(v)) for slot, v in vals.items() if v is not None and math.isfinite(v)]
        return out


# --------------------------------------------------------------------------------------------
# helpers


def _db(power: float) -> float:
    return 10.0 * math.log10(power) if power > 0 else SILENCE_DB


def _fft_size(sample_rate_hz: int) -> int:
    """Power of two closest to 93 ms (4096 at 44.1/48 kHz)."""
    return int(2 ** round(math.log2(0.093 * sample_rate_hz)))


def _audible_frames(x_mono: np.ndarray, sample_rate_hz: int) -> int:
    """Frames up to the end of the last 100 ms block within ACTIVE_REL_DB of the loudest block."""
    block = max(1, int(0.1 * sample_rate_hz))
    n = len(x_mono) // block
    if n == 0:
        return len(x_mono)
    ms = np.mean(x_mono[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1)
    top = float(ms.max())
    if top <= 0:
        return 0
    loud = np.nonzero(ms >= top * 10 ** (ACTIVE_REL_DB / 10))[0]
    return int((loud[-1] + 1) * block)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    return float(v[np.searchsorted(cw, 0.5 * cw[-1])])


def find_offset(stem_sum: np.ndarray, mix: np.ndarray, sample_rate_hz: int, *,
                search_ms: float = OFFSET_SEARCH_MS, excerpt_s: float = OFFSET_EXCERPT_S) -> tuple[int, float]:
    """Lag in frames of ``mix`` against ``stem_sum`` (both mono) and the peak's z-score.

    ``mix[t + lag] ~ stem_sum[t]``: a positive lag means the mix starts later. GCC-PHAT over the
    loudest ``excerpt_s`` of the stems. The z-score is the peak over the standard deviation of the
    correlation at the other lags (a real alignment reads tens to hundreds).
    """
    sr = sample_rate_hz
    k = int(round(search_ms * sr / 1000.0))
    w = min(len(stem_sum), int(excerpt_s * sr))
    blk = max(1, sr // 10)
    e = np.concatenate([[0.0], np.cumsum(stem_sum.astype(np.float64) ** 2)])
    starts = np.arange(0, max(1, len(stem_sum) - w + 1), blk)
    a = int(starts[np.argmax(e[starts + w] - e[starts])])
    s_seg = stem_sum[a: a + w].astype(np.float64)
    lo, hi = a - k, a + w + k
    m_seg = np.zeros(hi - lo)
    src_lo, src_hi = max(lo, 0), min(hi, len(mix))
    if src_hi > src_lo:
        m_seg[src_lo - lo: src_hi - lo] = mix[src_lo:src_hi]
    n = 1 << int(math.ceil(math.log2(len(m_seg) + w)))
    x = np.fft.rfft(s_seg, n)
    y = np.fft.rfft(m_seg, n)
    cross = np.conj(x) * y
    mag = np.abs(cross)
    cross /= mag + 1e-6 * float(mag.max() or 1.0)
    corr = np.fft.irfft(cross, n)[: 2 * k + 1]
    j = int(np.argmax(corr))
    others = np.delete(corr, np.arange(max(0, j - 20), min(len(corr), j + 21)))
    sd = float(np.std(others)) if len(others) else 0.0
    z = float(corr[j] / sd) if sd > 0 else float("inf")
    return j - k, z


class _Stft:
    """Frames of a set of channels of equal length, Hann-windowed, chunk by chunk."""

    def __init__(self, n_fft: int, frames: int):
        self.n_fft, self.hop = n_fft, n_fft // 2
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
        self.n_frames = 1 + (frames - n_fft) // self.hop

    def chunk(self, x: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """rfft of frames t0..t1-1 of the 1-D signal x: (t1 - t0, bins) complex64."""
        view = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop][t0:t1]
        return np.fft.rfft(view * self.window, axis=-1).astype(np.complex64)


# --------------------------------------------------------------------------------------------
# the estimate


def _prepare(stems: Mapping[str, np.ndarray], mix: np.ndarray, warnings: list[str]):
    if not stems:
        raise InputError("no stems to compare with the mix")
    chans: dict[str, np.ndarray] = {}
    for name, audio in stems.items():
        x = as_frames(audio, what=f"stem {name}")
        if x.shape[1] not in (1, 2):
            raise InputError(f"stem {name} has {x.shape[1]} channels; pass mono or stereo stems",
                             hint="downmix with expertmix.stems.downmix_to_stereo")
        if not np.all(np.isfinite(x)):
            raise InputError(f"stem {name} contains NaN or infinite samples")
        chans[name] = x
    m = as_frames(mix, what="mix")
    if m.shape[1] == 1:
        warnings.append("the mix is mono: pans cannot be estimated and read as centre")
        m = np.repeat(m, 2, axis=1)
    if m.shape[1] != 2:
        raise InputError(f"the mix has {m.shape[1]} channels; pass a stereo mix")
    if not np.all(np.isfinite(m)):
        raise InputError("the mix contains NaN or infinite samples")
    return chans, m


def estimate_decisions(stems: Mapping[str, np.ndarray], mix: np.ndarray, sample_rate_hz: int, *,
                       max_offset_ms: float = MAX_OFFSET_MS, max_length_diff_s: float = MAX_LENGTH_DIFF_S,
                       max_residual_db: float = MAX_RESIDUAL_DB, compression: bool = True) -> Estimate:
    """Estimate each stem's gain, pan, width, band EQ and compression from the mix.

    ``stems``: name -> raw stem, (frames,) or (frames, 1|2) float, all at ``sample_rate_hz`` and
    starting at the same instant (as exported from one session; shorter ones are padded with
    silence at the end). ``mix``: the final stereo mix (frames, 2) at the same rate (a mono mix is
    accepted with a warning). Raises :class:`InputError` when the pair does not match: lengths
    (``max_length_diff_s``), offset (``max_offset_ms``) or fit (``max_residual_db``); the message
    says which and by how much. ``compression=False`` skips the second pass.
    See the module documentation for the method.
    """
    sr = int(sample_rate_hz)
    if sr < 8000:
        raise InputError(f"sample rate {sr} Hz is too low; pass the rate of the audio (e.g. 44100)")
    warnings: list[str] = []
    chans, m = _prepare(stems, mix, warnings)
    n_stems_frames = max(len(x) for x in chans.values())
    stem_sum = np.zeros(n_stems_frames, dtype=np.float64)
    for x in chans.values():
        stem_sum[: len(x)] += np.mean(x, axis=1, dtype=np.float64)
    mix_mono = np.mean(m, axis=1, dtype=np.float64)

    # 1. lengths --------------------------------------------------------------------------
    stems_audible = _audible_frames(stem_sum, sr) / sr
    mix_audible = _audible_frames(mix_mono, sr) / sr
    if stems_audible == 0:
        raise InputError("every stem is silent")
    if mix_audible == 0:
        raise InputError("the mix is silent")
    diff = mix_audible - stems_audible
    if abs(diff) > max_length_diff_s:
        raise InputError(
            f"the mix and the stems do not have the same length: the mix plays for {mix_audible:.1f} s, "
            f"the stems for {stems_audible:.1f} s ({abs(diff):.1f} s {'longer' if diff > 0 else 'shorter'}; "
            f"at most {max_length_diff_s:g} s is accepted for a reverb tail or a trimmed ending)",
            hint="check that the mix is of this song and of the same edit, and that the stems were exported "
                 "from the session start")
    if abs(diff) > 0.5:
        warnings.append(f"the mix plays {abs(diff):.1f} s {'longer' if diff > 0 else 'shorter'} than the stems")

    # 2. offset ---------------------------------------------------------------------------
    lag, z = find_offset(stem_sum, mix_mono, sr)
    offset_ms = 1000.0 * lag / sr
    if z < OFFSET_MIN_PEAK_Z:
        warnings.append(f"no clear alignment between the mix and the stems (correlation peak z = {z:.1f}); "
                        "assuming no offset")
        lag, offset_ms = 0, 0.0
    elif abs(offset_ms) > max_offset_ms:
        raise InputError(
            f"the mix is offset by {offset_ms:+.0f} ms from the stems (more than the {max_offset_ms:g} ms "
            "expertmix compensates)", hint="trim or pad the mix so that it starts with the stems, "
                                           "or export the stems from the same start point as the mix")
    elif lag != 0:
        warnings.append(f"the mix starts {abs(offset_ms):.1f} ms {'later' if lag > 0 else 'earlier'} than "
                        "the stems; compensated")
    # compare mix[t + lag] with stems[t]: drop the head of whichever starts first
    stem_start = max(0, -lag)
    m = m[max(0, lag):]
    n = min(n_stems_frames - stem_start, len(m))
    n_fft = _fft_size(sr)
    if n < 4 * n_fft:
        raise InputError(f"the stems and the mix overlap for only {n / sr:.2f} s; at least "
                         f"{4 * n_fft / sr:.1f} s are needed")

    # 3. fit ------------------------------------------------------------------------------
    names = list(chans)
    channel_of: list[tuple[str, int]] = []  # (stem, channel) for each fitted input
    signals: list[np.ndarray] = []
    silent: set[str] = set()
    for name in names:
        x = chans[name][stem_start: stem_start + n]
        if len(x) < n:
            x = np.concatenate([x, np.zeros((n - len(x), x.shape[1]), dtype=x.dtype)])
        if not np.any(x):
            silent.add(name)
            continue
        for c in range(x.shape[1]):
            channel_of.append((name, c))
            signals.append(np.ascontiguousarray(x[:, c], dtype=np.float32))
    if not signals:
        raise InputError("every stem is silent over the part shared with the mix")
    mix_ch = [np.ascontiguousarray(m[:n, c], dtype=np.float32) for c in range(2)]

    stft = _Stft(n_fft, n)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    nyq = sr / 2.0
    bands: dict[str, tuple[int, int]] = {}
    for b, (lo, hi) in BANDS_HZ.items():
        if lo < nyq:
            i0, i1 = int(np.searchsorted(freqs, lo)), int(np.searchsorted(freqs, min(hi, nyq)))
            if i1 > i0:
                bands[b] = (i0, i1)
    f_lo = min(i0 for i0, _ in bands.values())
    f_hi = max(i1 for _, i1 in bands.values())
    k_in = len(signals)
    gram = {b: np.zeros((k_in, k_in), np.complex128) for b in bands}
    cross = {b: np.zeros((k_in, 2), np.complex128) for b in bands}
    mix_e = {b: np.zeros(2) for b in bands}
    # BS.1770 K-weighting per bin: band weights follow loudness, not raw energy (rumble counts little)
    kresp = sos_response(k_weighting_sos(sr), freqs[f_lo:f_hi], sr)
    kw = (np.abs(kresp) ** 2).astype(np.float32)
    loud_e = {b: np.zeros(k_in) for b in bands}
    frame_e_in = np.zeros((k_in, stft.n_frames))
    frame_e_mix = np.zeros(stft.n_frames)
    chunk = max(4, int(4e6 // (k_in * (f_hi - f_lo) + 1)))
    for t0 in range(0, stft.n_frames, chunk):
        t1 = min(stft.n_frames, t0 + chunk)
        S = np.stack([stft.chunk(x, t0, t1)[:, f_lo:f_hi] for x in signals])  # (K, T, F)
        M = np.stack([stft.chunk(x, t0, t1)[:, f_lo:f_hi] for x in mix_ch])   # (2, T, F)
        frame_e_in[:, t0:t1] = np.sum(np.abs(S) ** 2, axis=2)
        frame_e_mix[t0:t1] = np.sum(np.abs(M) ** 2, axis=(0, 2))
        for b, (i0, i1) in bands.items():
            Sb = S[:, :, i0 - f_lo: i1 - f_lo].reshape(k_in, -1).astype(np.complex128)
            Mb = M[:, :, i0 - f_lo: i1 - f_lo].reshape(2, -1).astype(np.complex128)
            gram[b] += Sb.conj() @ Sb.T
            cross[b] += Sb.conj() @ Mb.T
            mix_e[b] += np.sum(np.abs(Mb) ** 2, axis=1)
            loud_e[b] += np.sum(np.abs(S[:, :, i0 - f_lo: i1 - f_lo]) ** 2 * kw[i0 - f_lo: i1 - f_lo], axis=(1, 2))
        del S, M

    coef: dict[str, np.ndarray] = {}
    coef_var: dict[str, np.ndarray] = {}  # variance of each input's coefficients (summed over mix channels)
    res_e: dict[str, float] = {}
    for b, (i0, i1) in bands.items():
        inv = np.linalg.pinv(gram[b], rcond=1e-10, hermitian=True)
        h = inv @ cross[b]  # (K, 2)
        coef[b] = h
        res_c = [max(float(mix_e[b][c]) - float(np.real(np.vdot(h[:, c], cross[b][:, c]))),
                     1e-12 * float(mix_e[b][c])) for c in range(2)]
        res_e[b] = sum(res_c)
        # least-squares standard error: residual power per independent observation times diag(A^-1);
        # Hann frames at 50 % overlap: about half the bins x frames are independent
        n_eff = max(1.0, 0.5 * (i1 - i0) * stft.n_frames)
        coef_var[b] = np.real(np.diag(inv)) * (sum(res_c) / n_eff)
    total_mix = sum(float(mix_e[b].sum()) for b in bands)
    residual_db = _db(sum(res_e.values()) / total_mix) if total_mix > 0 else 0.0
    residual_by_band = {b: (_r(_db(res_e[b] / float(mix_e[b].sum())), 2) if b in bands and mix_e[b].sum() > 0 else None)
                        for b in BANDS_HZ}
    if residual_db > max_residual_db:
        raise InputError(
            f"the mix does not look like a mix of these stems: the best fit of the stems explains only "
            f"{100 * (1 - 10 ** (residual_db / 10)):.0f} % of the mix's energy (residual {residual_db:.1f} dB "
            f"relative to the mix; at most {max_residual_db:.1f} dB is accepted)",
            hint="check that the stems and the mix are of the same song and the same version; heavy "
                 "processing (distortion, pitch or time changes) in the mix also breaks the fit")

    # 4. per stem -------------------------------------------------------------------------
    mix_lufs = integrated_loudness_lufs(m[:n].astype(np.float64), sr)
    results: dict[str, StemEstimate] = {}
    for name in names:
        chs = chans[name].shape[1]
        if name in silent:
            results[name] = StemEstimate(name=name, channels=chs, active=False,
                                         warnings=["silent over the part shared with the mix"])
            continue
        idx = [i for i, (nm, _) in enumerate(channel_of) if nm == name]
        audio = chans[name][stem_start: stem_start + n]
        results[name] = _stem_estimate(name, chs, idx, bands, gram, coef, coef_var, mix_e, loud_e, audio, sr,
                                       mix_lufs, total_mix)
    if compression:
        _estimate_compression(results, names, channel_of, signals, mix_ch, stft, bands, coef, f_lo, f_hi,
                              frame_e_in, frame_e_mix, sr)
    for s in results.values():
        warnings += [f"{s.name}: {w}" for w in s.warnings]
    if residual_db > -10.0:
        warnings.append(f"the fit leaves {residual_db:+.1f} dB of the mix unexplained: heavy processing, "
                        "effects or missing stems; treat the estimates as rough")
    return Estimate(
        sample_rate_hz=sr, offset_ms=_r(offset_ms, 3), offset_frames=int(lag), offset_peak_z=_r(z, 1),
        stems_duration_s=_r(n_stems_frames / sr, 3), mix_duration_s=_r(len(mix) / sr, 3),
        overlap_s=_r(n / sr, 3), residual_db=_r(residual_db, 2), residual_by_band_db=residual_by_band,
        mix_lufs=_r(mix_lufs, 2), stems=results, warnings=warnings,
        method={"fit": "complex least squares per band on STFT bins", "n_fft": n_fft, "hop": stft.hop,
                "window": "hann", "bands_hz": {b: list(BANDS_HZ[b]) for b in bands},
                "pan_law": "mono: constant power, stereo: balance (as expertmix.plan.pan_matrix)"})


def _stem_estimate(name: str, chs: int, idx: list[int], bands, gram, coef, coef_var, mix_e, loud_e,
                   audio: np.ndarray, sr: int, mix_lufs: float, total_mix: float) -> StemEstimate:
    est = StemEstimate(name=name, channels=chs, active=True)
    band_names = list(bands)
    e_in = np.zeros(len(band_names))          # stem energy per band (sum over its channels)
    e_in_ch = np.zeros((len(band_names), chs))
    e_out = np.zeros((len(band_names), 2))    # contribution energy per band and mix channel
    cross_ratio, cross_w, re_sum = [], [], 0.0
    for j, b in enumerate(band_names):
        r = gram[b][np.ix_(idx, idx)]
        h = coef[b][idx, :]
        e_in_ch[j] = np.real(np.diag(r))
        e_in[j] = e_in_ch[j].sum()
        for c in range(2):
            e_out[j, c] = max(0.0, float(np.real(np.vdot(h[:, c], r @ h[:, c]))))
        re_sum += float(np.sum(np.real(h) * np.abs(h)))
        if chs == 2 and e_in[j] > 0:
            # renderer: L = g*lg*(a*inL + b*inR), R = g*rg*(b*inL + a*inR): b/a from each output row
            for out_c, main, other in ((0, 0, 1), (1, 1, 0)):
                if abs(h[main, out_c]) > 0:
                    cross_ratio.append((j, float(np.real(h[other, out_c] / h[main, out_c]))))
                    cross_w.append(float(e_out[j, out_c]))
    total_in = float(e_in.sum())
    loud = np.array([float(loud_e[b][idx].sum()) for b in band_names])
    share = loud / loud.sum() if loud.sum() > 0 else np.zeros_like(loud)  # K-weighted energy share
    contrib = e_out.sum(axis=1)
    g2 = np.where(e_in > 0, contrib / np.maximum(e_in, 1e-300), 0.0)
    mix_b = np.array([float(mix_e[b].sum()) for b in band_names])
    # energy of the coefficients' uncertainty, as a share of the contribution (collinear stems, e.g.
    # the same bleed in two microphones, make it large)
    e_err = np.array([float(np.sum(coef_var[b][idx] * e_in_ch[j])) for j, b in enumerate(band_names)])
    valid = ((share >= MIN_BAND_SHARE) & (contrib > 0)
             & (contrib >= mix_b * 10 ** (MIN_BAND_CONTRIBUTION_DB / 10))
             & (contrib >= e_err * 10 ** (MIN_BAND_SNR_DB / 10)))
    overall_g2 = float(contrib.sum() / total_in) if total_in > 0 else 0.0
    est.contribution_db = _r(_db(float(contrib.sum()) / total_mix), 2) if total_mix > 0 else None
    est.band_gain_db = {b: None for b in BANDS_HZ}
    est.eq_db = {b: None for b in BANDS_HZ}
    if overall_g2 <= 10 ** (MUTED_DB / 10) or not np.any(valid):
        est.muted = True
        est.gain_db = _r(max(-96.0, _db(overall_g2)), 2)
        est.warnings.append("barely present in the mix (muted or buried); only its gain is estimated")
        return est
    band_db = 10 * np.log10(np.where(valid, g2, 1.0))
    w = share[valid]
    med = _weighted_median(band_db[valid], w)
    keep = valid & (np.abs(band_db - med) <= GAIN_TRIM_DB)
    energy_gain_db = float(np.sum(band_db[keep] * share[keep]) / np.sum(share[keep]))
    for j, b in enumerate(band_names):
        if valid[j]:
            est.band_gain_db[b] = _r(band_db[j], 2)
            est.eq_db[b] = _r(band_db[j] - energy_gain_db, 2)
    # pan from the channel energy ratio over the valid bands (an EQ is common to both sides)
    el, er = float(e_out[keep, 0].sum()), float(e_out[keep, 1].sum())
    if chs == 1:
        est.pan = _r(4.0 / math.pi * math.atan2(math.sqrt(er), math.sqrt(el)) - 1.0, 4)
        est.gain_db = _r(energy_gain_db, 3)
    else:
        # renderer: out = fader * diag(lg, rg) @ [[a, b], [b, a]] @ in, a = (1 + w) / 2, b = (1 - w) / 2
        rin = np.real(sum(gram[b][np.ix_(idx, idx)] for b, v in zip(band_names, keep) if v))
        coh = abs(rin[0, 1]) / math.sqrt(max(float(rin[0, 0] * rin[1, 1]), 1e-300))
        width = 1.0
        pairs = [(r_, w_) for (j, r_), w_ in zip(cross_ratio, cross_w) if keep[j]]
        if coh < 0.9 and pairs and sum(w_ for _, w_ in pairs) > 0:
            ratio = float(np.average([r_ for r_, _ in pairs], weights=[w_ for _, w_ in pairs]))
            width = min(2.0, max(0.0, (1.0 - ratio) / (1.0 + ratio))) if ratio > -1.0 else 2.0
            est.width = _r(width, 3)
        a, b_ = (1.0 + width) / 2.0, (1.0 - width) / 2.0
        vl, vr = np.array([a, b_]), np.array([b_, a])
        el_unit, er_unit = float(vl @ rin @ vl), float(vr @ rin @ vr)  # energies at fader 0 dB, centre
        el_n, er_n = el / max(el_unit, 1e-300), er / max(er_unit, 1e-300)
        rho = math.sqrt(er_n / el_n) if el_n > 0 else float("inf")
        est.pan = _r(rho - 1.0 if rho < 1.0 else 1.0 - 1.0 / rho, 4)
        lg, rg = (min(1.0, 1.0 / rho) if rho > 0 else 1.0), min(1.0, rho)
        unit = (lg ** 2 * el_unit + rg ** 2 * er_unit) / max(float(np.trace(rin)), 1e-300)
        est.gain_db = _r(energy_gain_db - 10 * math.log10(max(unit, 1e-30)), 3)
    est.polarity_inverted = re_sum < 0
    if est.polarity_inverted:
        est.warnings.append("appears with inverted polarity in the mix")
    stem_lufs = integrated_loudness_lufs(np.asarray(audio, dtype=np.float64), sr)
    if stem_lufs > -150 and mix_lufs > -150:
        est.contribution_lufs = _r(stem_lufs + _db(overall_g2), 2)
        est.relative_loudness_lu = _r(est.contribution_lufs - mix_lufs, 2)
    return est


def _estimate_compression(results, names, channel_of, signals, mix_ch, stft: _Stft, bands, coef, f_lo, f_hi,
                          frame_e_in, frame_e_mix, sr) -> None:
    """Second pass: per-frame real gain of each stem's fitted contribution, then a hinge fit per stem."""
    active = [nm for nm in names if nm in results and results[nm].active and not results[nm].muted]
    for nm in names:
        if nm in results and results[nm].active and nm not in active:
            results[nm].compression = CompressionEstimate(False, note="not estimated: muted or buried in the mix")
    if not active:
        return
    n_frames = stft.n_frames
    if n_frames < 20:
        for nm in active:
            results[nm].compression = CompressionEstimate(False, note="not estimated: too short")
        return
    band_of_bin = np.full(f_hi - f_lo, -1)
    band_list = list(bands)
    for j, b in enumerate(band_list):
        i0, i1 = bands[b]
        band_of_bin[i0 - f_lo: i1 - f_lo] = j
    in_band = band_of_bin >= 0
    # per-bin coefficients: (K, 2, F)
    h_bin = np.zeros((len(signals), 2, f_hi - f_lo), np.complex64)
    for j, b in enumerate(band_list):
        h_bin[:, :, band_of_bin == j] = coef[b][:, :, None]
    stem_inputs = {nm: [i for i, (s, _) in enumerate(channel_of) if s == nm] for nm in active}
    n_act = len(active)
    gains = np.ones((n_act, n_frames))
    share = np.zeros((n_act, n_frames))
    chunk = max(4, int(2e6 // (len(signals) * (f_hi - f_lo) + 1)))
    for t0 in range(0, n_frames, chunk):
        t1 = min(n_frames, t0 + chunk)
        S = np.stack([stft.chunk(x, t0, t1)[:, f_lo:f_hi] for x in signals])    # (K, T, F)
        M = np.stack([stft.chunk(x, t0, t1)[:, f_lo:f_hi] for x in mix_ch])     # (2, T, F)
        S[:, :, ~in_band] = 0
        # contribution of each active stem: (N, T, 2, F)
        P = np.zeros((n_act, t1 - t0, 2, f_hi - f_lo), np.complex64)
        for i, nm in enumerate(active):
            for k in stem_inputs[nm]:
                P[i] += S[k][:, None, :] * h_bin[k][None, :, :]
        Pf = P.reshape(n_act, t1 - t0, -1).transpose(1, 0, 2)                   # (T, N, 2F)
        Mf = M.transpose(1, 0, 2).reshape(t1 - t0, -1)                           # (T, 2F)
        G = np.real(Pf.conj() @ Pf.transpose(0, 2, 1)).astype(np.float64)       # (T, N, N)
        r = np.real(np.einsum("tnf,tf->tn", Pf.conj(), Mf)).astype(np.float64)  # (T, N)
        diag = np.einsum("tnn->tn", G)
        lam = 1e-3 * np.maximum(diag, 1e-3 * diag.max(axis=1, keepdims=True) + 1e-30)
        A = G + lam[:, :, None] * np.eye(n_act)[None]
        rhs = r - np.einsum("tnm,tm->tn", G, np.ones((t1 - t0, n_act)))
        gains[:, t0:t1] = (1.0 + np.linalg.solve(A, rhs[:, :, None])[:, :, 0]).T
        share[:, t0:t1] = (diag / np.maximum(frame_e_mix[t0:t1, None], 1e-30)).T
        del S, M, P
    norm = float(np.sum(stft.window.astype(np.float64) ** 2)) * stft.n_fft / 2.0
    for i, nm in enumerate(active):
        level = np.array([_db(v / norm) for v in frame_e_in[stem_inputs[nm]].sum(axis=0) / len(stem_inputs[nm])])
        ok = (level > level.max() - 40.0) & (share[i] >= 10 ** (-20.0 / 10)) & (gains[i] > 0.05)
        results[nm].compression = _hinge_fit(level[ok], 20.0 * np.log10(np.maximum(gains[i][ok], 1e-6)))


def _hinge_fit(level_db: np.ndarray, gain_db: np.ndarray) -> CompressionEstimate:
    """Fit gain = a + beta * max(0, level - T): ratio 1/(1+beta), threshold T, GR at the loud frames."""
    n = len(level_db)
    if n < 20:
        return CompressionEstimate(False, frames=n, note="not estimated: fewer than 20 frames where the stem "
                                                         "stands out in the mix")
    p5, p95 = np.percentile(level_db, [5, 95])
    if p95 - p5 < 6.0:
        return CompressionEstimate(False, frames=n, note=f"not estimated: the stem's level varies by only "
                                                         f"{p95 - p5:.1f} dB")
    sst = float(np.sum((gain_db - gain_db.mean()) ** 2))
    best = None
    for thr in np.percentile(level_db, np.arange(5, 90, 5)):
        z = np.maximum(0.0, level_db - thr)
        X = np.stack([np.ones(n), z], axis=1)
        coefs, *_ = np.linalg.lstsq(X, gain_db, rcond=None)
        sse = float(np.sum((X @ coefs - gain_db) ** 2))
        if best is None or sse < best[0] - 1e-12:
            best = (sse, float(thr), float(coefs[1]))
    sse, thr, beta = best
    r2 = 1.0 - sse / sst if sst > 0 else 0.0
    if beta >= -0.05 or r2 < 0.2:
        return CompressionEstimate(True, ratio=1.0, threshold_dbfs=None, gain_reduction_db=0.0, r2=_r(max(r2, 0.0), 3),
                                   frames=n, note="no level-dependent gain found")
    beta = max(beta, -0.97)
    return CompressionEstimate(True, ratio=_r(1.0 / (1.0 + beta), 2), threshold_dbfs=_r(thr, 1),
                               gain_reduction_db=_r(-beta * max(0.0, p95 - thr), 2), r2=_r(r2, 3), frames=n)


__all__ = ["estimate_decisions", "find_offset", "Estimate", "StemEstimate", "CompressionEstimate",
           "TARGET_SLOTS", "MAX_OFFSET_MS", "MAX_LENGTH_DIFF_S", "MAX_RESIDUAL_DB"]
