"""expertmix.analysis on synthetic stems with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from expertmix import analysis as A
from expertmix.errors import InputError
from expertmix.loudness import integrated_loudness_lufs, loudness_range_lu
from expertmix.units import SILENCE_DB, db_to_gain

SR = 44100


def sine(freq_hz: float, seconds: float = 5.0, level_dbfs: float = 0.0, sr: int = SR):
    t = np.arange(int(seconds * sr)) / sr
    return db_to_gain(level_dbfs) * np.sin(2 * np.pi * freq_hz * t)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1).astype(np.float32)


def song(seconds: float = 10.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Stereo 'part': plucked harmonic notes on an A440 scale, random pans, some rests, and a
    -50 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(int(0.5 * sr)) / sr
    out = np.zeros((n, 2))
    for start in range(0, n - len(t), len(t)):
        if rng.random() < 0.25:
            continue
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k ** 1.5 for k in range(1, 8)) * np.exp(-3 * t)
        pan = rng.uniform(0.2, 0.8)
        out[start:start + len(t)] += 0.2 * tone[:, None] * np.array([1 - pan, pan])
    out += 0.003 * rng.standard_normal((n, 2))
    return out.astype(np.float32)


def noise(seconds: float = 10.0, seed: int = 0, channels: int = 2, level: float = 0.1):
    return (level * np.random.default_rng(seed).standard_normal((int(seconds * SR), channels))
            ).astype(np.float32)


def hum(f0_hz: float, frames: int, amplitude: float = 0.01, harmonics: int = 5) -> np.ndarray:
    """Mains hum: fundamental plus harmonics falling as 1/h."""
    t = np.arange(frames) / SR
    return sum(amplitude / h * np.sin(2 * np.pi * f0_hz * h * t + h)
               for h in range(1, harmonics + 1))


BASES = {"song": song, "noise": noise}


# --- loudness fields ------------------------------------------------------------------------

def test_loudness_fields_come_from_bs1770():
    x = song(8)
    a = A.analyse_audio(x, SR)
    assert a.loudness_lufs == pytest.approx(integrated_loudness_lufs(x, SR), abs=1e-9)
    assert a.loudness_range_lu == pytest.approx(loudness_range_lu(x, SR), abs=1e-9)
    assert a.true_peak_dbtp >= a.peak_dbfs
    assert a.short_term_max_lufs >= a.loudness_lufs
    assert a.channels == 2 and a.duration_s == pytest.approx(8.0)


@pytest.mark.parametrize("level", [0.0, -6.0, -20.0])
def test_crest_factor_of_a_sine_is_3_db(level):
    a = A.analyse_audio(stereo(sine(1000, 5, level)), SR)
    assert a.crest_db == pytest.approx(10 * math.log10(2), abs=0.05)
    assert a.rms_dbfs == pytest.approx(level - 10 * math.log10(2), abs=0.05)
    assert a.peak_dbfs == pytest.approx(level, abs=0.01)


def test_rms_and_activity_ignore_silent_parts():
    tone = sine(1000, 5, -12)
    x = stereo(np.concatenate([tone, np.zeros_like(tone)]))
    a = A.analyse_audio(x, SR)
    assert a.active_fraction == pytest.approx(0.5, abs=0.05)
    assert a.rms_dbfs == pytest.approx(-12 - 10 * math.log10(2), abs=0.1)
    assert not a.is_silent


# --- silence --------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [
    np.zeros((SR * 3, 2), np.float32),
    np.zeros(SR * 3, np.float32),
    noise(3, level=db_to_gain(-110)),
    np.zeros((0, 2), np.float32),
], ids=["stereo-zeros", "mono-zeros", "noise-at-110dBFS", "empty"])
def test_silence_is_flagged(x):
    a = A.analyse_audio(x, SR)
    assert a.is_silent
    assert a.loudness_lufs == SILENCE_DB and a.active_fraction == 0.0
    assert a.crest_db == 0.0 and a.hum_hz is None and not a.clipped
    assert a.stereo_correlation is None and a.stereo_width is None


# --- DC -------------------------------------------------------------------------------------

@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("dc", [0.0, 0.05, -0.05])
def test_dc_offset(base, dc):
    x = BASES[base](5) + np.float32(dc)
    assert A.analyse_audio(x, SR).dc_offset == pytest.approx(abs(dc), abs=0.005)


def test_dc_offset_is_the_worst_channel_and_does_not_leak_into_the_spectrum():
    x = stereo(sine(3000, 5, -6))
    x[:, 1] += 0.05
    a = A.analyse_audio(x, SR)
    assert a.dc_offset == pytest.approx(0.05, abs=0.005)
    assert a.low_energy_ratio < 0.01


# --- hum ------------------------------------------------------------------------------------

@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("mains_hz,expected", [(50.0, 50.0), (60.0, 60.0), (50.1, 50.0),
                                               (59.95, 60.0)])
def test_mains_hum_is_detected(base, mains_hz, expected):
    x = BASES[base](10)
    x = x + hum(mains_hz, len(x))[:, None].astype(np.float32)
    a = A.analyse_audio(x, SR)
    assert a.hum_hz == expected
    assert a.hum_excess_db >= A.HUM_DETECT_DB


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_signal_has_no_hum(base, seed):
    a = A.analyse_audio(BASES[base](10, seed=seed), SR)
    assert a.hum_hz is None
    assert a.hum_excess_db < A.HUM_DETECT_DB


# --- clipping -------------------------------------------------------------------------------

def _clipped_sine():
    return np.clip(2.0 * sine(441, 3), -1.0, 1.0)


def _int16_clipped_sine():
    return np.round(np.clip(2.0 * sine(441, 3), -1.0, 32767 / 32768) * 32768) / 32768


@pytest.mark.parametrize("make,expected", [
    pytest.param(_clipped_sine, True, id="hard-clipped"),
    pytest.param(_int16_clipped_sine, True, id="int16-clipped"),
    pytest.param(lambda: sine(441, 3), False, id="clean-full-scale"),
    pytest.param(lambda: sine(1000, 3, -0.01), False, id="clean-just-below"),
    pytest.param(lambda: np.tile([1.0, -1.0], SR), False, id="alternating-full-scale"),
])
def test_clipping(make, expected):
    a = A.analyse_audio(stereo(make()), SR)
    assert a.clipped is expected
    if expected:
        assert a.clipped_fraction > 0.3  # a 2x overdriven sine is flat for 2/3 of the time
    else:
        assert a.clipped_fraction == 0.0


def test_a_single_short_over_is_not_called_clipped():
    x = sine(441, 5, -3)
    x[1000:1003] = 1.0
    a = A.analyse_audio(stereo(x), SR)
    assert 0 < a.clipped_fraction < A.CLIP_FRACTION_THRESHOLD and not a.clipped


# --- spectrum -------------------------------------------------------------------------------

@pytest.mark.parametrize("freq,low_min,low_max,sub_max", [
    (30.0, 0.95, 1.0, 1.0),
    (60.0, 0.95, 1.0, 0.05),
    (3000.0, 0.0, 0.01, 0.01),
])
def test_low_and_sub_energy_ratios(freq, low_min, low_max, sub_max):
    a = A.analyse_audio(stereo(sine(freq, 5, -6)), SR)
    assert low_min <= a.low_energy_ratio <= low_max
    assert a.sub_energy_ratio <= sub_max
    if freq < A.SUB_EDGE_HZ:
        assert a.sub_energy_ratio > 0.95


def test_sub_floor_reads_a_steady_rumble_under_a_loud_part():
    """A 25 Hz tone with mean square -50 dB (amplitude -47 dBFS) under a -6 dBFS 200 Hz tone: a
    share of ~4e-5 of the power, but the floor reads -50 dB; mono and dual-mono stereo agree."""
    x = sine(200, 10, -6) + sine(25, 10, -47)
    for audio in (x.astype(np.float32), stereo(x)):
        a = A.analyse_audio(audio, SR)
        assert a.sub_energy_ratio < 1e-4
        assert a.sub_floor_dbfs == pytest.approx(-50.0, abs=0.3)


def test_sub_floor_ignores_low_notes_that_come_and_go_and_clean_parts():
    t = np.arange(10 * SR) / SR
    gate = (np.floor(t / 1.0) % 4 == 0)  # a 30 Hz note one second in four
    notes = sine(30, 10, -6) * gate + sine(400, 10, -12)
    assert A.analyse_audio(stereo(notes), SR).sub_floor_dbfs < -100.0
    assert A.analyse_audio(stereo(sine(100, 10, 0)), SR).sub_floor_dbfs < -80.0
    assert A.analyse_audio(stereo(np.zeros(SR)), SR).sub_floor_dbfs == SILENCE_DB


@pytest.mark.parametrize("x,expected_hz,tol", [
    (stereo(sine(1000, 5, -6)), 1000.0, 20.0),
    (noise(5), SR / 4, SR / 4 * 0.05),
], ids=["sine-1k", "white-noise"])
def test_spectral_centroid(x, expected_hz, tol):
    assert A.analyse_audio(x, SR).spectral_centroid_hz == pytest.approx(expected_hz, abs=tol)


# --- stereo ---------------------------------------------------------------------------------

def _inverted():
    x = noise(5, channels=1)[:, 0]
    return np.stack([x, -x], axis=1)


@pytest.mark.parametrize("make,corr,width,tol", [
    pytest.param(lambda: stereo(noise(5, channels=1)[:, 0]), 1.0, 0.0, 1e-6, id="dual-mono"),
    pytest.param(_inverted, -1.0, A.WIDTH_CAP, 1e-6, id="inverted"),
    pytest.param(lambda: noise(5), 0.0, 1.0, 0.05, id="independent"),
])
def test_stereo_correlation_and_width(make, corr, width, tol):
    a = A.analyse_audio(make(), SR)
    assert a.stereo_correlation == pytest.approx(corr, abs=tol)
    assert a.stereo_width == pytest.approx(width, abs=tol * max(1.0, width))


@pytest.mark.parametrize("shape", [(SR * 3,), (SR * 3, 1)], ids=["1d", "2d"])
def test_mono_has_no_stereo_measures(shape):
    x = noise(3, channels=1).reshape(shape)
    a = A.analyse_audio(x, SR)
    assert a.channels == 1
    assert a.stereo_correlation is None and a.stereo_width is None
    # one channel, weight 1 (not duplicated): 3 dB below the same signal in two channels
    two = A.analyse_audio(stereo(x.reshape(-1)), SR)
    assert two.loudness_lufs - a.loudness_lufs == pytest.approx(10 * math.log10(2), abs=0.01)


# --- plumbing -------------------------------------------------------------------------------

def test_to_dict_is_yaml_plain():
    x = song(6) + hum(50.0, SR * 6)[:, None].astype(np.float32)
    d = A.analyse_audio(x, SR).to_dict()
    assert list(d) == [f.name for f in A.StemAnalysis.__dataclass_fields__.values()]
    for key, value in d.items():
        assert value is None or type(value) in (float, int, bool), key
    assert type(d["is_silent"]) is bool and type(d["channels"]) is int
    assert d["loudness_lufs"] == round(d["loudness_lufs"], 2)
    mono = A.analyse_audio(noise(3, channels=1), SR).to_dict()
    assert mono["stereo_width"] is None and mono["hum_hz"] is None


@pytest.mark.parametrize("bad", [
    np.zeros((SR, 2), dtype=np.int16),
    np.full((SR, 2), np.nan, dtype=np.float32),
    np.zeros((2, SR), dtype=np.float32),
    np.zeros((SR, 2, 1), dtype=np.float32),
], ids=["int16", "nan", "transposed", "3d"])
def test_bad_input_is_an_input_error(bad):
    with pytest.raises(InputError):
        A.analyse_audio(bad, SR)


def test_a_steady_note_beside_a_mains_harmonic_is_not_hum():
    """A sustained G2 (98 Hz) with harmonics 196/294/392 Hz sits 2-8 Hz from the 100/200/300/400 Hz
    mains lines: their skirts are not hum; a real 50 Hz hum added to the same note still is."""
    rng = np.random.default_rng(3)
    t = np.arange(int(10 * SR)) / SR
    note = sum(0.3 / k * np.sin(2 * np.pi * 98.0 * k * t) for k in range(1, 7)) + 0.001 * rng.standard_normal(len(t))
    a = A.analyse_audio(stereo(note.astype(np.float32)), SR)
    assert a.hum_hz is None
    with_hum = note + hum(50.0, len(t), amplitude=0.01)
    assert A.analyse_audio(stereo(with_hum.astype(np.float32)), SR).hum_hz == 50.0
