"""expertmix.estimate: recovering an engineer's decisions from stems and a mix with known answers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from expertmix.errors import InputError
from expertmix.estimate import TARGET_SLOTS, estimate_decisions

SR = 44100
SECONDS = 6.0
N = int(SECONDS * SR)


def colored_noise(slope_db_per_oct: float, seed: int, n: int = N) -> np.ndarray:
    """Gaussian noise with a spectral slope (0 white, -3 pink, -6 brown), RMS 0.1."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1]
    spec *= (f / 1000.0) ** (slope_db_per_oct / (20 * math.log10(2)))
    x = np.fft.irfft(spec, n)
    return (0.1 * x / np.std(x)).astype(np.float32)


def stepped_noise(seed: int, n: int = N, step_s: float = 0.4, range_db: float = 24.0) -> np.ndarray:
    """Pink noise whose level jumps every ``step_s`` within ``range_db``: something to compress."""
    rng = np.random.default_rng(seed)
    k = int(step_s * SR)
    env = np.repeat(10 ** (rng.uniform(-range_db, 0.0, size=n // k + 1) / 20), k)[:n]
    return (colored_noise(-3, seed, n) * env * 3).astype(np.float32)


def pan_mono(x: np.ndarray, pan: float, gain_db: float) -> np.ndarray:
    """The renderer's constant-power law (expertmix.plan.pan_matrix)."""
    theta = (pan + 1.0) * math.pi / 4.0
    g = 10 ** (gain_db / 20)
    return np.stack([x * g * math.cos(theta), x * g * math.sin(theta)], axis=1)


def balance_stereo(x: np.ndarray, pan: float, gain_db: float, width: float = 1.0) -> np.ndarray:
    """The renderer's stereo law: mid/side width, then balance."""
    a, b = (1 + width) / 2, (1 - width) / 2
    g = 10 ** (gain_db / 20)
    lg, rg = (1 - pan if pan > 0 else 1.0), (1 + pan if pan < 0 else 1.0)
    return np.stack([g * lg * (a * x[:, 0] + b * x[:, 1]), g * rg * (b * x[:, 0] + a * x[:, 1])], axis=1)


def band_boost(x: np.ndarray, lo_hz: float, hi_hz: float, gain_db: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / SR)
    spec[(f >= lo_hz) & (f < hi_hz)] *= 10 ** (gain_db / 20)
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def compress(x: np.ndarray, threshold_db: float, ratio: float) -> np.ndarray:
    """Feed-forward compressor: 5 ms RMS detector, 50 ms gain smoothing."""
    a = math.exp(-1 / (0.005 * SR))
    level_db = 10 * np.log10(scipy.signal.lfilter([1 - a], [1, -a], x.astype(np.float64) ** 2) + 1e-12)
    gr_db = np.minimum(0.0, (threshold_db - level_db) * (1 - 1 / ratio))
    r = math.exp(-1 / (0.05 * SR))
    return (x * 10 ** (scipy.signal.lfilter([1 - r], [1, -r], gr_db) / 20)).astype(np.float32)


# known answers: mono stems (gain dB, pan), a stereo stem (gain dB, balance)
TRUTH = {"pink": (-6.0, -0.5), "white": (0.0, 0.0), "brown": (3.0, 0.7), "wide": (-2.0, 0.3)}


@pytest.fixture(scope="module")
def session():
    stems = {"pink": colored_noise(-3, 1), "white": colored_noise(0, 2), "brown": colored_noise(-6, 3),
             "wide": np.stack([colored_noise(-3, 4), colored_noise(-3, 5)], axis=1)}
    return stems


def make_mix(stems, truth=TRUTH, processed=None):
    processed = processed or {}
    mix = np.zeros((N, 2))
    for name, (gain_db, pan) in truth.items():
        x = processed.get(name, stems[name])
        mix += pan_mono(x, pan, gain_db) if x.ndim == 1 else balance_stereo(x, pan, gain_db)
    return mix


def test_known_gains_and_pans_are_recovered(session):
    est = estimate_decisions(session, make_mix(session), SR)
    assert est.residual_db < -60.0
    assert est.offset_ms == 0.0
    for name, (gain_db, pan) in TRUTH.items():
        s = est.stems[name]
        assert s.gain_db == pytest.approx(gain_db, abs=0.2), name
        assert s.pan == pytest.approx(pan, abs=0.02), name
        assert all(v is None or abs(v) < 0.2 for v in s.eq_db.values()), (name, s.eq_db)
    assert est.stems["wide"].width == pytest.approx(1.0, abs=0.02)
    assert est.stems["pink"].width is None  # mono: no width


def test_stereo_width_and_balance(session):
    mix = balance_stereo(session["wide"], -0.4, 1.5, width=0.5) + pan_mono(session["white"], 0.2, -3.0)
    est = estimate_decisions({"wide": session["wide"], "white": session["white"]}, mix, SR)
    s = est.stems["wide"]
    assert s.width == pytest.approx(0.5, abs=0.02)
    assert s.pan == pytest.approx(-0.4, abs=0.02)
    assert s.gain_db == pytest.approx(1.5, abs=0.2)


def test_band_boost_is_recovered(session):
    boosted = band_boost(session["pink"], 500.0, 2000.0, 4.0)  # exactly the 'mid' band
    est = estimate_decisions(session, make_mix(session, processed={"pink": boosted}), SR)
    s = est.stems["pink"]
    assert s.eq_db["mid"] == pytest.approx(4.0, abs=1.0)
    assert all(abs(v) < 0.5 for b, v in s.eq_db.items() if b != "mid" and v is not None)
    assert s.gain_db == pytest.approx(-6.0, abs=0.2)  # an EQ boost is not read as a fader move
    assert est.stems["white"].eq_db["mid"] == pytest.approx(0.0, abs=0.2)


def test_peaking_eq_shows_in_its_band(session):
    # a real minimum-phase biquad: +6 dB at 1 kHz, Q 0.7 (phase shifts are absorbed by complex fits)
    A, w = 10 ** (6 / 40), 2 * math.pi * 1000 / SR
    alpha = math.sin(w) / (2 * 0.7)
    b = [1 + alpha * A, -2 * math.cos(w), 1 - alpha * A]
    a = [1 + alpha / A, -2 * math.cos(w), 1 - alpha / A]
    eqd = scipy.signal.lfilter(b, a, session["white"]).astype(np.float32)
    est = estimate_decisions(session, make_mix(session, processed={"white": eqd}), SR)
    eq = est.stems["white"].eq_db
    assert eq["mid"] > 3.0
    assert eq["mid"] == max(v for v in eq.values() if v is not None)
    assert abs(eq["air"]) < 0.5


def test_different_stems_are_refused(session):
    others = {k: colored_noise(-3, 100 + i) for i, k in enumerate(["a", "b", "c"])}
    with pytest.raises(InputError, match="does not look like a mix of these stems"):
        estimate_decisions(others, make_mix(session), SR)


@pytest.mark.parametrize("offset_ms", [50.0, -50.0])
def test_offset_is_found_and_compensated(session, offset_ms):
    mix = make_mix(session)
    d = int(round(abs(offset_ms) * SR / 1000))
    mix = np.concatenate([np.zeros((d, 2)), mix]) if offset_ms > 0 else mix[d:]
    est = estimate_decisions(session, mix, SR)
    assert est.offset_frames == int(math.copysign(d, offset_ms))
    assert est.offset_ms == pytest.approx(offset_ms, abs=0.05)
    assert any("compensated" in w for w in est.warnings)
    assert est.residual_db < -40.0
    for name, (gain_db, pan) in TRUTH.items():
        assert est.stems[name].gain_db == pytest.approx(gain_db, abs=0.2)
        assert est.stems[name].pan == pytest.approx(pan, abs=0.02)


def test_large_offset_is_refused(session):
    mix = np.concatenate([np.zeros((int(0.8 * SR), 2)), make_mix(session)])
    with pytest.raises(InputError, match=r"offset by \+800 ms"):
        estimate_decisions(session, mix, SR)


@pytest.mark.parametrize("change_s", [6.0, -4.0])
def test_length_mismatch_is_refused(session, change_s):
    mix = make_mix(session)
    mix = np.concatenate([mix, mix[: int(change_s * SR)]]) if change_s > 0 else mix[: int((SECONDS + change_s) * SR)]
    with pytest.raises(InputError, match="do not have the same length"):
        estimate_decisions(session, mix, SR)


def test_reverb_tail_within_tolerance_is_accepted(session):
    mix = np.concatenate([make_mix(session), 0.01 * np.ones((int(1.0 * SR), 2))])
    est = estimate_decisions(session, mix, SR)
    assert est.stems["white"].gain_db == pytest.approx(0.0, abs=0.2)


def test_robust_to_reverb_in_the_mix(session):
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    ir = rng.standard_normal((len(t), 2)) * np.exp(-6.91 * t / 1.5)[:, None]
    ir /= np.sqrt(np.sum(ir ** 2, axis=0))
    send = 0.3 * (session["pink"] * 0.5 + session["white"])
    wet = np.stack([scipy.signal.fftconvolve(send, ir[:, c])[:N] for c in range(2)], axis=1)
    est = estimate_decisions(session, make_mix(session) + wet, SR)
    assert -15.0 < est.residual_db < -3.0
    for name, (gain_db, _) in TRUTH.items():
        assert est.stems[name].gain_db == pytest.approx(gain_db, abs=0.3), name


def test_compression_is_detected():
    voice, other = stepped_noise(7, n=int(8 * SR)), stepped_noise(8, n=int(8 * SR))
    steady = colored_noise(-3, 1, n=int(8 * SR))
    mix = (pan_mono(compress(voice, -30.0, 4.0), 0.0, 0.0) + pan_mono(other, 0.3, -3.0)
           + pan_mono(steady, -0.5, -6.0))
    est = estimate_decisions({"voice": voice, "other": other, "steady": steady}, mix, SR)
    c = est.stems["voice"].compression
    assert c.estimated and c.ratio >= 2.0 and c.gain_reduction_db >= 4.0, c
    assert est.stems["other"].compression.estimated
    assert est.stems["other"].compression.ratio < 1.3
    assert not est.stems["steady"].compression.estimated  # too steady to tell
    assert "varies by only" in est.stems["steady"].compression.note


def test_targets_dict_and_determinism(session):
    mix = make_mix(session)
    a = estimate_decisions(session, mix, SR)
    b = estimate_decisions(session, mix, SR)
    assert a.to_dict() == b.to_dict()
    json.dumps(a.to_dict(), allow_nan=False)
    targets = a.targets()
    assert {slot for _, slot, _ in targets} <= set(TARGET_SLOTS)
    got = {(stem, slot): v for stem, slot, v in targets}
    assert got[("pink", "gain_db")] == pytest.approx(-6.0, abs=0.2)
    assert got[("brown", "pan")] == pytest.approx(0.7, abs=0.02)
    assert ("pink", "width") not in got
    assert ("wide", "width") in got
    assert ("pink", "level.relative_lu") in got


def test_silent_and_muted_stems(session):
    stems = dict(session, silent=np.zeros(N, dtype=np.float32), muted=colored_noise(0, 9))
    mix = make_mix(session)
    est = estimate_decisions(stems, mix, SR)
    assert not est.stems["silent"].active
    assert est.stems["muted"].muted
    assert not any(stem == "silent" for stem, _, _ in est.targets())


@pytest.mark.parametrize("bad, match", [
    ({"x": np.zeros((N, 3), dtype=np.float32)}, "3 channels"),
    ({"x": np.full(N, np.nan, dtype=np.float32)}, "NaN"),
    ({}, "no stems"),
])
def test_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        estimate_decisions(bad, np.zeros((N, 2)), SR)


def test_mono_mix_is_accepted_with_a_warning(session):
    mono = make_mix(session).mean(axis=1)
    est = estimate_decisions(session, mono, SR)
    assert any("mix is mono" in w for w in est.warnings)
    assert est.stems["pink"].pan == pytest.approx(0.0, abs=0.02)


def test_demo_reference_mix_known_balance():
    """The bundled demo: raw stems (bleed, rumble, hum, clipping, hiss) and a reference mix of the
    clean stems with documented gains and pans (expertmix/demo/meta.json)."""
    import soundfile as sf

    from expertmix.resources import data_dir

    root = data_dir("demo")
    meta = json.loads((root / "meta.json").read_text())
    stems = {Path(f).stem: sf.read(str(root / f), dtype="float32")[0] for f in meta["stems"]}
    mix, sr = sf.read(str(root / "reference" / meta["reference_mix"]["file"]), dtype="float32")
    est = estimate_decisions(stems, mix, sr)
    assert est.residual_db < -30.0 and est.offset_ms == 0.0
    norm_db = meta["reference_mix"]["normalisation_gain_db"]
    for f, info in meta["stems"].items():
        s = est.stems[Path(f).stem]
        expected = info["gain_to_reference_balance_db"] + norm_db
        # the raw kick carries 5-35 Hz rumble that the clean kick in the mix does not: its sub band reads low
        assert s.gain_db == pytest.approx(expected, abs=0.5 if f == "kick.flac" else 0.1), f
        if info["reference_mix_pan"] is not None:
            assert s.pan == pytest.approx(info["reference_mix_pan"], abs=0.02), f
        else:
            assert s.pan == pytest.approx(0.0, abs=0.02) and s.width == pytest.approx(1.0, abs=0.02), f
