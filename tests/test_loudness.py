"""BS.1770-4 / EBU Tech 3341 / Tech 3342 behaviour of expertmix.loudness on synthetic signals."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from expertmix import loudness as L
from expertmix.errors import InputError
from expertmix.units import SILENCE_DB, db_to_gain

# BS.1770-4 Annex 1, Tables 1 and 2 (48 kHz): pre-filter and RLB high-pass.
BS1770_48K = np.array([
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
])


def sine(freq_hz: float, seconds: float, sr: int, level_dbfs: float = 0.0, phase: float = 0.0):
    """Sine with peak amplitude ``level_dbfs``."""
    t = np.arange(int(round(seconds * sr))) / sr
    return db_to_gain(level_dbfs) * np.sin(2 * np.pi * freq_hz * t + phase)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1)


def steps(levels_and_seconds, sr: int, freq_hz: float = 1000.0) -> np.ndarray:
    """Stereo 1 kHz sine stepping through (level dBFS, duration s) segments (phase-continuous)."""
    n = [int(round(s * sr)) for _, s in levels_and_seconds]
    gain = np.concatenate([np.full(k, db_to_gain(lv)) for (lv, _), k in zip(levels_and_seconds, n)])
    t = np.arange(len(gain)) / sr
    return stereo(gain * np.sin(2 * np.pi * freq_hz * t))


def pink_noise(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    spec = np.fft.rfft(rng.standard_normal((channels, n)), axis=-1)
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[:, 1:] /= np.sqrt(f[1:])
    spec[:, 0] = 0
    x = np.fft.irfft(spec, n, axis=-1).T
    return 0.1 * x / np.sqrt(np.mean(x ** 2))


def music_like(seconds: float, sr: int, seed: int = 1) -> np.ndarray:
    """Stereo: enveloped harmonic notes, a decaying low 'kick', hi-hat noise bursts, a quiet
    bridge (loudness changes over time)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros((n, 2))
    note_len = int(0.25 * sr)
    for start in range(0, n - note_len, note_len):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = t[:note_len]
        tone = sum(np.sin(2 * np.pi * f0 * k * seg) / k for k in range(1, 6))
        env = np.exp(-seg * 6)
        pan = rng.uniform(0.2, 0.8)
        out[start:start + note_len, 0] += 0.2 * tone * env * (1 - pan)
        out[start:start + note_len, 1] += 0.2 * tone * env * pan
    beat = int(0.5 * sr)
    kick = np.sin(2 * np.pi * 55 * t[:beat] * np.exp(-t[:beat] * 4)) * np.exp(-t[:beat] * 12)
    hat = rng.standard_normal(int(0.05 * sr)) * np.exp(-np.arange(int(0.05 * sr)) / (0.01 * sr))
    hat = scipy.signal.lfilter([1, -1], [1], hat)
    for start in range(0, n - beat, beat):
        out[start:start + beat] += 0.5 * kick[:, None]
        out[start + beat // 2:start + beat // 2 + len(hat)] += 0.05 * hat[:, None]
    bridge = (t > seconds * 0.4) & (t < seconds * 0.6)
    out[bridge] *= 0.2
    return out


# --- K-weighting ----------------------------------------------------------------------------

def test_k_weighting_matches_bs1770_table_at_48k():
    np.testing.assert_allclose(L.k_weighting_sos(48000), BS1770_48K, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sr", [32000, 44100, 88200, 96000, 192000])
def test_k_weighting_response_is_rate_independent(sr):
    freqs = np.array([20.0, 100.0, 1000.0, 4000.0, 10000.0])
    _, ref = scipy.signal.sosfreqz(BS1770_48K, worN=freqs, fs=48000)
    _, got = scipy.signal.sosfreqz(L.k_weighting_sos(sr), worN=freqs, fs=sr)
    np.testing.assert_allclose(20 * np.log10(abs(got)), 20 * np.log10(abs(ref)), atol=0.02)


def test_k_weighting_rejects_too_low_rate():
    with pytest.raises(InputError):
        L.k_weighting_sos(4000)


# --- the filter kernel, loaded without scipy.signal -------------------------------------------

def _sections(seed):
    rng = np.random.default_rng(seed)
    sos = [L.k_weighting_sos(44100)[0], L.k_weighting_sos(44100)[1]]
    poles = rng.uniform(0.5, 0.999, 2) * np.exp(1j * rng.uniform(0.01, 3.0, 2))
    for p in poles:  # two random stable biquads on top of the K-weighting
        sos.append([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1), 1.0,
                    -2 * p.real, abs(p) ** 2])
    return np.array(sos)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_sosfilt_rows_is_bit_identical_to_scipy_sosfilt_across_blocks(use_kernel, monkeypatch):
    """The directly loaded kernel and the public-API fallback both give exactly what
    scipy.signal.sosfilt gives on the whole signal, however it is cut into blocks."""
    if not use_kernel:
        monkeypatch.setattr(L, "_sosfilt_kernel", lambda: None)
    else:
        assert L._sosfilt_kernel() is not None  # the fast path is what runs on this install
    sos = _sections(0)
    x = np.random.default_rng(1).standard_normal((3, 20000))
    ref = scipy.signal.sosfilt(sos, x, axis=-1)
    zi = np.zeros((3, len(sos), 2))
    out = []
    for a, b in ((0, 1), (1, 777), (777, 8192), (8192, 20000)):
        block = np.ascontiguousarray(x[:, a:b])
        L.sosfilt_rows(sos, block, zi)
        out.append(block)
    np.testing.assert_array_equal(np.concatenate(out, axis=1), ref)


def test_sos_response_matches_scipy_sosfreqz():
    sos = _sections(2)
    freqs = np.geomspace(5.0, 22000.0, 300)
    _, ref = scipy.signal.sosfreqz(sos, worN=freqs, fs=44100)
    np.testing.assert_allclose(L.sos_response(sos, freqs, 44100), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("taps, cutoff, beta", [(97, 0.25, 6.0), (49, 0.5, 5.0), (193, 0.125, 8.6)])
def test_kaiser_lowpass_matches_scipy_firwin(taps, cutoff, beta):
    ref = scipy.signal.firwin(taps, cutoff, window=("kaiser", beta), scale=False)
    np.testing.assert_allclose(L._kaiser_lowpass(taps, cutoff, beta), ref, rtol=0, atol=1e-15)


def test_the_mix_path_does_not_import_scipy_signal():
    """The main process of a mix and the workers' fork server load scipy's filter kernel alone,
    not scipy.signal (about 0.35 s of imports each, on every run)."""
    import subprocess
    import sys

    code = ("import sys, expertmix.pipeline, expertmix.cli, expertmix._preload, numpy as np;"
            "from expertmix.loudness import LoudnessMeter;"
            "LoudnessMeter(44100, 2).process(np.zeros((4410, 2), np.float32));"
            "print('scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- integrated loudness: EBU Tech 3341 cases -----------------------------------------------

@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("level", [-23.0, -33.0])
def test_stereo_sine_reads_its_level(sr, level):
    x = stereo(sine(1000, 20, sr, level))
    assert L.integrated_loudness_lufs(x, sr) == pytest.approx(level, abs=0.1)


@pytest.mark.parametrize("segments", [
    pytest.param([(-36, 10), (-23, 60), (-36, 10)], id="3341-case3"),
    pytest.param([(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], id="3341-case4"),
    pytest.param([(-26, 20), (-20, 20.1), (-26, 20)], id="3341-case5"),
])
def test_tech3341_gated_sequences_read_minus_23(segments):
    sr = 48000
    assert L.integrated_loudness_lufs(steps(segments, sr), sr) == pytest.approx(-23.0, abs=0.1)


def test_short_term_is_constant_when_window_spans_one_period():
    # Tech 3341 style: -20 dBFS for 1.34 s then -30 dBFS for 1.66 s, repeated: every 3 s
    # window holds the same energy, 10 log10((1.34e-2 + 1.66e-3) / 3) = -22.99 LUFS.
    sr = 48000
    x = steps([(-20, 1.34), (-30, 1.66)] * 6, sr)
    meter = L.LoudnessMeter(sr, 2)
    meter.process(x)
    st = meter.short_term_lufs()
    assert st.min() == pytest.approx(-23.0, abs=0.1) and st.max() == pytest.approx(-23.0, abs=0.1)


def test_momentary_is_constant_when_window_spans_one_period():
    # Same idea for the 400 ms window: 0.18 s at -20, 0.22 s at -30 dBFS.
    sr = 48000
    x = steps([(-20, 0.18), (-30, 0.22)] * 20, sr)
    expected = 10 * np.log10((0.18 * 1e-2 + 0.22 * 1e-3) / 0.4)
    meter = L.LoudnessMeter(sr, 2)
    meter.process(x)
    m = meter.momentary_lufs()
    np.testing.assert_allclose(m, expected, atol=0.1)
    assert meter.momentary_max_lufs() == pytest.approx(expected, abs=0.1)


def test_mono_is_one_channel_not_duplicated():
    sr = 48000
    x = sine(1000, 10, sr, -23.0)
    mono_1d = L.integrated_loudness_lufs(x, sr)
    assert mono_1d == pytest.approx(L.integrated_loudness_lufs(x[:, None], sr), abs=1e-12)
    assert mono_1d == pytest.approx(-23.0 - 10 * np.log10(2), abs=0.1)


@pytest.mark.parametrize("x", [np.zeros((48000, 2)), np.zeros((100, 2)),
                               1e-6 * np.ones((48000, 2)), np.zeros((0, 2))],
                         ids=["silence", "too-short", "below-gate", "empty"])
def test_nothing_passing_the_gate_reads_the_floor(x):
    assert L.integrated_loudness_lufs(x, 48000) == SILENCE_DB


# --- loudness range: EBU Tech 3342 cases ----------------------------------------------------

@pytest.mark.parametrize("segments,expected", [
    pytest.param([(-20, 20), (-30, 20)], 10.0, id="3342-case1"),
    pytest.param([(-20, 20), (-15, 20)], 5.0, id="3342-case2"),
    pytest.param([(-40, 20), (-20, 20)], 20.0, id="3342-case3"),
    pytest.param([(-50, 20), (-35, 20), (-20, 20), (-35, 20), (-50, 20)], 15.0, id="3342-case4"),
])
def test_tech3342_loudness_range(segments, expected):
    sr = 48000
    assert L.loudness_range_lu(steps(segments, sr), sr) == pytest.approx(expected, abs=1.0)


def test_loudness_range_of_steady_tone_is_zero_and_of_silence_is_zero():
    sr = 44100
    assert L.loudness_range_lu(stereo(sine(1000, 10, sr, -20)), sr) == pytest.approx(0.0, abs=0.1)
    assert L.loudness_range_lu(np.zeros((sr * 5, 2)), sr) == 0.0


# --- agreement with pyloudnorm --------------------------------------------------------------

@pytest.mark.parametrize("signal", ["pink", "music"])
@pytest.mark.parametrize("sr", [44100, 48000])
def test_agrees_with_pyloudnorm(signal, sr):
    pyln = pytest.importorskip("pyloudnorm")
    x = pink_noise(15, sr) if signal == "pink" else music_like(15, sr)
    ours = L.integrated_loudness_lufs(x, sr)
    theirs = pyln.Meter(sr).integrated_loudness(x)
    assert ours == pytest.approx(theirs, abs=0.1)


# --- streaming ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_in_random_blocks_matches_whole_array(seed):
    sr = 44100
    x = music_like(12, sr, seed=seed).astype(np.float32)
    rng = np.random.default_rng(seed)
    meter = L.LoudnessMeter(sr, 2)
    pos = 0
    while pos < len(x):
        size = int(rng.choice([1, 7, 100, 4409, 4410, 4411, 30000, 70000]))
        meter.process(x[pos:pos + size])
        pos += size
    whole = L.measure_loudness(x, sr)
    assert meter.integrated_lufs() == pytest.approx(whole.integrated_lufs, abs=1e-6)
    assert meter.loudness_range_lu() == pytest.approx(whole.loudness_range_lu, abs=1e-6)
    assert meter.short_term_max_lufs() == pytest.approx(whole.short_term_max_lufs, abs=1e-6)
    assert meter.true_peak_dbtp() == pytest.approx(whole.true_peak_dbtp, abs=1e-6)
    assert meter.sample_peak_dbfs() == pytest.approx(whole.sample_peak_dbfs, abs=1e-9)


def test_meter_rejects_bad_blocks():
    meter = L.LoudnessMeter(48000, 2)
    with pytest.raises(InputError):
        meter.process(np.zeros((100, 3)))
    with pytest.raises(InputError):
        meter.process(np.zeros((2, 48000)))  # transposed
    with pytest.raises(InputError):
        meter.process(np.zeros((100, 2), dtype=np.int16))
    with pytest.raises(InputError):
        meter.process(np.full((100, 2), np.nan))


# --- true peak ------------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [44100, 48000])
def test_inter_sample_peak_of_quarter_rate_sine(sr):
    x = stereo(sine(sr / 4, 1, sr, 0.0, phase=np.pi / 4))  # samples at +-0.707, peaks at 1.0
    over = L.true_peak_dbtp(x, sr) - L.sample_peak_dbfs(x)
    assert over == pytest.approx(3.01, abs=0.2)


def test_inter_sample_peak_without_onset_transient_is_exact():
    sr = 48000
    fade = np.ones(sr)
    ramp = np.sin(np.linspace(0, np.pi / 2, 480)) ** 2
    fade[:480], fade[-480:] = ramp, ramp[::-1]
    x = sine(sr / 4, 1, sr, 0.0, phase=np.pi / 4) * fade
    assert L.true_peak_dbtp(x, sr) == pytest.approx(0.0, abs=0.02)


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_full_scale_997hz_sine_reads_0_dbtp(sr):
    assert L.true_peak_dbtp(stereo(sine(997, 2, sr)), sr) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("fn", [lambda x: L.true_peak_dbtp(x, 48000), L.sample_peak_dbfs])
def test_peaks_of_silence_read_the_floor(fn):
    assert fn(np.zeros((4800, 2))) == SILENCE_DB


def test_true_peak_is_never_below_sample_peak_and_blocking_does_not_matter():
    sr = 44100
    x = pink_noise(3, sr).astype(np.float32)
    whole = L.true_peak_dbtp(x, sr)
    assert whole >= L.sample_peak_dbfs(x)
    meter = L.TruePeakMeter(2)
    for start in range(0, len(x), 1234):
        meter.process(x[start:start + 1234])
    assert meter.true_peak_dbtp() == pytest.approx(whole, abs=1e-6)


def test_skipping_quiet_runs_is_exact():
    """The meter skips runs whose sample peak cannot beat its reading: on a signal with loud
    and quiet passages and isolated inter-sample overs, it still reads exactly what
    interpolating every sample reads."""
    sr = 44100
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((10 * sr, 2)) * 0.02).astype(np.float32)
    x[3 * sr: 4 * sr] *= 7.5                                   # a loud passage: samples to ~0.7
    t = np.arange(400)
    burst = 0.9 * np.sin(2 * np.pi * (sr / 4) * t / sr + np.pi / 4)  # peaks between samples
    x[7 * sr: 7 * sr + 400, 1] = burst.astype(np.float32)      # in an otherwise quiet stretch
    meter = L.TruePeakMeter(2)
    for start in range(0, len(x), 65536):
        meter.process(x[start:start + 65536])
    told = L.TruePeakMeter(2)  # told the whole signal's sample peak first: skips more, reads the same
    told.expect_sample_peak(float(np.abs(x).max()))
    for start in range(0, len(x), 65536):
        told.process(x[start:start + 65536])
    assert told.true_peak_linear == meter.true_peak_linear
    assert told.sample_peak_linear == meter.sample_peak_linear
    H = L._interpolator(4, 24, 6.0)
    padded = np.concatenate([np.zeros((24, 2), np.float32), x, np.zeros((24, 2), np.float32)])
    brute = max(np.abs(np.lib.stride_tricks.sliding_window_view(padded[:, c], 25) @ H).max() for c in range(2))
    assert meter.true_peak_linear == pytest.approx(brute, rel=1e-5)
    # the burst's samples reach 0.64 only, less than the loud passage's; its inter-sample peak
    # of 0.9 is still found
    assert 0.64 < meter.sample_peak_linear < 0.85
    assert meter.true_peak_linear == pytest.approx(0.9, abs=0.02)


# --- summaries and files --------------------------------------------------------------------

def test_measure_loudness_and_file_agree(tmp_path):
    sf = pytest.importorskip("soundfile")
    sr = 48000
    x = music_like(8, sr).astype(np.float32)
    path = tmp_path / "music.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    in_memory = L.measure_loudness(x, sr)
    from_file = L.measure_loudness_file(str(path), block_frames=5000)
    for field in ("integrated_lufs", "loudness_range_lu", "true_peak_dbtp", "sample_peak_dbfs",
                  "short_term_max_lufs", "momentary_max_lufs"):
        assert getattr(from_file, field) == pytest.approx(getattr(in_memory, field), abs=1e-6)
    d = in_memory.to_dict()
    assert all(type(v) is float for v in d.values())
    assert d["integrated_lufs"] == round(in_memory.integrated_lufs, 2)
    assert (in_memory.momentary_max_lufs >= in_memory.short_term_max_lufs
            >= in_memory.integrated_lufs)


def test_a_loudness_only_meter_takes_its_peaks_from_elsewhere(tmp_path):
    """The renderer meters the mix without peaks; file_peaks measures them (in a worker) and
    stats(peaks=...) gives the same readings as a meter that tracked them itself."""
    sf = pytest.importorskip("soundfile")
    sr = 48000
    x = music_like(6, sr).astype(np.float32)
    path = tmp_path / "music.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    full = L.meter_file(str(path))
    lean = L.meter_file(str(path), track_peaks=False)
    assert full.tracks_peaks and not lean.tracks_peaks
    with pytest.raises(RuntimeError):
        lean.stats()
    peaks = L.file_peaks(str(path), block_frames=7000)
    assert peaks == pytest.approx((full.true_peak_dbtp(), full.sample_peak_dbfs()), abs=1e-9)
    assert lean.stats(peaks) == full.stats()
    assert peaks[1] == pytest.approx(20 * np.log10(np.abs(x).max()), abs=1e-6)


def test_unreadable_file_is_an_input_error(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_text("hello")
    with pytest.raises(InputError) as err:
        L.measure_loudness_file(str(bad))
    assert str(bad) in str(err.value)
