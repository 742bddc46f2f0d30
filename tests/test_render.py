"""Real behaviour of the pyo renderer (expertmix.render.render_mix) on synthetic stems.

Every test writes short synthetic stems (44.1 kHz float WAV) into ``tmp_path``, builds a plan
directly with the pydantic models, renders it and compares the recorded files with a known
answer computed in numpy.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from expertmix.plan import Cleanup, Compressor, Ducking, EQBand, FxBus, MixPlan, Send, TrackPlan
from expertmix.render import BUFFER_FRAMES, RENDER_QUANTUM_FRAMES, StemSource, render_frames, render_mix
from expertmix.units import db_to_gain

pytestmark = pytest.mark.slow

SR = 44100
NEUTRAL = Cleanup(dc_remove=False)  # no DC filter: a chain that must not touch the signal
_ids = itertools.count()


# -- helpers ---------------------------------------------------------------------------------

def t_axis(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def sine(freq_hz: float, seconds: float, level_dbfs: float = -12.0, phase: float = 0.0) -> np.ndarray:
    return db_to_gain(level_dbfs) * np.sin(2 * np.pi * freq_hz * t_axis(seconds) + phase)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1)


def noise(seconds: float, seed: int, channels: int = 2, rms: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (int(round(seconds * SR)), channels) if channels > 1 else (int(round(seconds * SR)),)
    return rms * rng.standard_normal(shape)


def level_db(x: np.ndarray) -> float:
    """RMS level in dB (-200 for digital silence)."""
    ms = float(np.mean(np.square(x)))
    return 10.0 * math.log10(ms) if ms > 0 else -200.0


def write_stem(folder: Path, name: str, audio: np.ndarray) -> tuple[Path, np.ndarray]:
    """Write float32 and return the path and exactly what was written (as float64)."""
    audio = np.asarray(audio, dtype=np.float32)
    path = folder / f"{name}.wav"
    sf.write(str(path), audio, SR, subtype="FLOAT")
    return path, audio.astype(np.float64)


class Render:
    """A finished render: the plan, the written inputs and the recorded outputs (float64)."""

    def __init__(self, plan: MixPlan, inputs: dict[str, np.ndarray], out: Path, frames: int):
        self.plan, self.inputs, self.out, self.frames = plan, inputs, out, frames
        self.mix = sf.read(str(out / "mix.wav"), always_2d=True)[0]
        self.stems = {t.name: sf.read(str(out / "stems" / f"{t.name}.wav"), always_2d=True)[0] for t in plan.tracks}

    def padded(self, name: str) -> np.ndarray:
        """Input ``name`` zero-padded to the render length (mono inputs as one column)."""
        x = self.inputs[name]
        x = x[:, None] if x.ndim == 1 else x
        out = np.zeros((self.frames, x.shape[1]))
        out[: len(x)] = x
        return out


def render(tmp_path: Path, stems: dict[str, np.ndarray], tracks: list[TrackPlan] | None = None,
           *, processes: int | None = None, **plan_kw) -> Render:
    """Write ``stems`` and render a plan of ``tracks`` (default: one neutral track per stem);
    ``processes`` is passed to render_mix when given (else its default)."""
    k = next(_ids)
    folder = tmp_path / f"stems{k}"
    folder.mkdir()
    written: dict[str, np.ndarray] = {}
    sources: dict[str, StemSource] = {}
    for name, audio in stems.items():
        path, data = write_stem(folder, name, audio)
        written[name] = data
        sources[name] = StemSource(path, 1 if data.ndim == 1 else 2)
    if tracks is None:
        tracks = [TrackPlan(name=n, file=f"{n}.wav", cleanup=NEUTRAL) for n in stems]
    plan_kw.setdefault("tail_s", 0.0)
    plan = MixPlan(stems_dir=str(folder), sample_rate_hz=SR, tracks=tracks, **plan_kw)
    # a track may reuse another track's stem file
    srcs = {t.name: sources[Path(t.file).stem] for t in tracks}
    ins = {t.name: written[Path(t.file).stem] for t in tracks}
    out = tmp_path / f"out{k}"
    work = tmp_path / f"work{k}"
    out.mkdir()
    work.mkdir()
    content = max(len(a) for a in written.values())
    kw = {} if processes is None else {"processes": processes}
    result = render_mix(plan, srcs, out, content_frames=content, work_dir=work, **kw)
    assert result.mix_path == out / "mix.wav"
    r = Render(plan, ins, out, result.frames)
    r.workers, r.work = result.workers, work
    return r


def track(name: str, file: str | None = None, **kw) -> TrackPlan:
    kw.setdefault("cleanup", NEUTRAL)
    return TrackPlan(name=name, file=file or f"{name}.wav", **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- gain staging ----------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["gain_db", "trim_db"])
@pytest.mark.parametrize("gain_db, factor", [(-6.0206, 0.5), (6.0206, 2.0), (-20.0, 0.1)])
def test_gain_and_trim_scale_the_amplitude(tmp_path, field, gain_db, factor):
    x = noise(1.0, seed=1)
    r = render(tmp_path, {"n": x}, [track("n", **{field: gain_db})])
    assert r.frames == render_frames(len(x), 0)
    np.testing.assert_allclose(r.stems["n"], factor * r.padded("n"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.mix, factor * r.padded("n"), rtol=0, atol=1e-6)


def test_polarity_invert_negates(tmp_path):
    x = noise(0.5, seed=2)
    r = render(tmp_path, {"n": x}, [track("n", polarity_invert=True)])
    np.testing.assert_allclose(r.stems["n"], -r.padded("n"), rtol=0, atol=1e-7)


# -- a neutral plan is a plain, sample-aligned sum -------------------------------------------

def test_neutral_stereo_plan_is_the_plain_sum(tmp_path):
    a = noise(1.0, seed=3)                       # longest stem
    b = noise(0.6, seed=4, rms=0.1)              # shorter: padded with zeros at the end
    b[12345] = [0.9, -0.8]                       # an impulse at a known sample
    c = np.zeros((int(0.25 * SR), 2))            # shortest, starts with an impulse at sample 0
    c[0] = [0.7, 0.5]
    c[100:] = noise(0.25, seed=5, rms=0.05)[100:]
    r = render(tmp_path, {"a": a, "b": b, "c": c}, tail_s=0.5)

    assert r.frames == render_frames(len(a), int(round(0.5 * SR)))
    assert r.mix.shape == (r.frames, 2)
    for name in ("a", "b", "c"):
        np.testing.assert_allclose(r.stems[name], r.padded(name), rtol=0, atol=1e-6, err_msg=name)
    expected = r.padded("a") + r.padded("b") + r.padded("c")
    assert np.max(np.abs(r.mix - expected)) < 1e-6
    assert np.max(np.abs(r.mix - sum(r.stems.values()))) < 1e-6

    # nothing trimmed or delayed at the start: the impulses stay on their samples
    np.testing.assert_allclose(r.stems["c"][0], [0.7, 0.5], atol=1e-7)
    assert int(np.argmax(np.abs(r.stems["b"][:, 0]))) == 12345
    np.testing.assert_allclose(r.stems["b"][12345], [0.9, -0.8], atol=1e-7)
    # shorter stems are padded with silence, not looped or cut
    assert np.all(r.stems["b"][len(b):] == 0.0)
    assert np.all(r.stems["c"][len(c):] == 0.0)
    assert np.all(r.mix[len(a):] == 0.0)


def test_every_stem_is_recorded_stereo_at_the_render_length(tmp_path):
    r = render(tmp_path, {"m": noise(0.3, seed=6, channels=1), "s": noise(0.7, seed=7)})
    for name in ("m", "s"):
        info = sf.info(str(r.out / "stems" / f"{name}.wav"))
        assert (info.channels, info.samplerate, info.frames, info.subtype) == (2, SR, r.frames, "FLOAT")


# -- pan and width ---------------------------------------------------------------------------

def test_mono_centre_is_constant_power_minus_3db(tmp_path):
    r = render(tmp_path, {"m": noise(0.5, seed=8, channels=1)})
    x = r.padded("m")[:, 0]
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(r.stems["m"][:, 0], c * x, atol=1e-6)
    np.testing.assert_allclose(r.stems["m"][:, 1], c * x, atol=1e-6)


@pytest.mark.parametrize("pan, side", [(-1.0, 0), (1.0, 1)])
def test_mono_hard_pan_puts_everything_on_one_side(tmp_path, pan, side):
    r = render(tmp_path, {"m": noise(0.5, seed=9, channels=1)}, [track("m", pan=pan)])
    x = r.padded("m")[:, 0]
    np.testing.assert_allclose(r.stems["m"][:, side], x, atol=1e-6)
    assert np.max(np.abs(r.stems["m"][:, 1 - side])) < 1e-6


@pytest.mark.parametrize("pan", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_mono_pan_keeps_power_constant(tmp_path, pan):
    r = render(tmp_path, {"m": noise(0.5, seed=10, channels=1)}, [track("m", pan=pan)])
    x = r.padded("m")[:, 0]
    left, right = r.stems["m"][:, 0], r.stems["m"][:, 1]
    np.testing.assert_allclose(left ** 2 + right ** 2, x ** 2, atol=1e-5)
    if pan != 0.0:  # the louder side is the side panned to
        assert (level_db(right) > level_db(left)) == (pan > 0)


@pytest.mark.parametrize("pan", [0.5, -0.5, 0.25])
def test_stereo_pan_is_a_balance_control(tmp_path, pan):
    r = render(tmp_path, {"s": noise(0.5, seed=11)}, [track("s", pan=pan)])
    x = r.padded("s")
    left_gain = 1.0 - pan if pan > 0 else 1.0
    right_gain = 1.0 + pan if pan < 0 else 1.0
    np.testing.assert_allclose(r.stems["s"][:, 0], left_gain * x[:, 0], atol=1e-6)
    np.testing.assert_allclose(r.stems["s"][:, 1], right_gain * x[:, 1], atol=1e-6)


def test_width_zero_folds_stereo_to_mono(tmp_path):
    r = render(tmp_path, {"s": noise(0.5, seed=12)}, [track("s", width=0.0)])
    x = r.padded("s")
    mid = (x[:, 0] + x[:, 1]) / 2.0
    np.testing.assert_allclose(r.stems["s"][:, 0], mid, atol=1e-6)
    np.testing.assert_allclose(r.stems["s"][:, 1], mid, atol=1e-6)


def test_width_two_doubles_the_side_signal(tmp_path):
    r = render(tmp_path, {"s": noise(0.5, seed=13)}, [track("s", width=2.0)])
    x, y = r.padded("s"), r.stems["s"]
    np.testing.assert_allclose(y[:, 0] + y[:, 1], x[:, 0] + x[:, 1], atol=1e-6)  # mid kept
    np.testing.assert_allclose(y[:, 0] - y[:, 1], 2.0 * (x[:, 0] - x[:, 1]), atol=1e-6)  # side doubled


# -- compressor ------------------------------------------------------------------------------

LOUD_DB, QUIET_DB, THRESH_DB, RATIO = -6.0, -30.0, -20.0, 4.0
EXPECTED_GR_DB = (LOUD_DB - THRESH_DB) * (1.0 - 1.0 / RATIO)   # 10.5 dB


def loud_quiet(seconds: float = 3.0) -> np.ndarray:
    """1 kHz sine alternating 0.5 s at -6 dBFS and 0.5 s at -30 dBFS (stereo, identical channels)."""
    t = t_axis(seconds)
    gain = np.where((t % 1.0) < 0.5, db_to_gain(LOUD_DB), db_to_gain(QUIET_DB))
    return stereo(gain * np.sin(2 * np.pi * 1000.0 * t))


def steady_windows(loud: bool, seconds: float = 3.0) -> list[slice]:
    """The settled last 0.25 s of every loud (or quiet) half second after the first second."""
    start = 0.0 if loud else 0.5
    return [slice(int((s + 0.22) * SR), int((s + 0.47) * SR)) for s in np.arange(1.0 + start, seconds, 1.0)]


def gain_change_db(y: np.ndarray, x: np.ndarray, windows: list[slice]) -> list[float]:
    return [level_db(y[w, 0]) - level_db(x[w, 0]) for w in windows]


def compressor(**kw) -> Compressor:
    args = dict(enabled=True, threshold_db=THRESH_DB, ratio=RATIO, attack_ms=0.5, release_ms=50.0, knee_db=0.0)
    args.update(kw)
    return Compressor(**args)


@pytest.mark.parametrize("knee_db", [0.0, 3.0, 6.0])
def test_compressor_reduces_loud_part_by_static_curve(tmp_path, knee_db):
    """-6 dBFS is 14 dB over a -20 dB threshold (above any knee): 14 * (1 - 1/4) = 10.5 dB less,
    whatever the knee width; the -30 dBFS part is below threshold and untouched."""
    x = loud_quiet()
    r = render(tmp_path, {"x": x}, [track("x", compressor=compressor(knee_db=knee_db))])
    y, xin = r.stems["x"], r.padded("x")
    for change in gain_change_db(y, xin, steady_windows(loud=True)):
        assert change == pytest.approx(-EXPECTED_GR_DB, abs=0.5)
    for change in gain_change_db(y, xin, steady_windows(loud=False)):
        assert change == pytest.approx(0.0, abs=0.1)
    # the loud/quiet contrast (crest over the whole signal) shrinks by the same amount
    loud_w, quiet_w = steady_windows(True)[0], steady_windows(False)[0]
    contrast_in = level_db(xin[loud_w, 0]) - level_db(xin[quiet_w, 0])
    contrast_out = level_db(y[loud_w, 0]) - level_db(y[quiet_w, 0])
    assert contrast_in == pytest.approx(LOUD_DB - QUIET_DB, abs=0.05)
    assert contrast_in - contrast_out == pytest.approx(EXPECTED_GR_DB, abs=0.5)


def test_compressor_soft_knee_compresses_inside_the_knee(tmp_path):
    """A steady sine 1.5 dB over the threshold, inside a 6 dB knee centred on the threshold, is
    reduced by the quadratic knee curve (x - T + W/2)^2 / (2W) * (1 - 1/R) = 1.27 dB."""
    knee, over = 6.0, 1.5
    expected = (over + knee / 2) ** 2 / (2 * knee) * (1 - 1 / RATIO)
    x = stereo(sine(1000.0, 1.5, THRESH_DB + over))
    r = render(tmp_path, {"x": x}, [track("x", compressor=compressor(knee_db=knee, attack_ms=0.1))])
    w = slice(int(0.8 * SR), int(1.4 * SR))
    change = level_db(r.stems["x"][w, 0]) - level_db(r.padded("x")[w, 0])
    assert change == pytest.approx(-expected, abs=0.4)


@pytest.mark.parametrize("makeup_db", [3.0, -4.5])
def test_compressor_makeup_adds_exactly_its_gain(tmp_path, makeup_db):
    x = loud_quiet(2.0)
    plain = render(tmp_path, {"x": x}, [track("x", compressor=compressor())])
    made_up = render(tmp_path, {"x": x}, [track("x", compressor=compressor(makeup_db=makeup_db))])
    np.testing.assert_allclose(made_up.stems["x"], db_to_gain(makeup_db) * plain.stems["x"], atol=1e-6)


def test_parallel_compression_averages_dry_and_compressed_amplitudes(tmp_path):
    x = loud_quiet(2.0)
    full = render(tmp_path, {"x": x}, [track("x", compressor=compressor())])
    half = render(tmp_path, {"x": x}, [track("x", compressor=compressor(mix=0.5))])
    np.testing.assert_allclose(half.stems["x"], 0.5 * full.padded("x") + 0.5 * full.stems["x"], atol=1e-6)


def test_compressor_disabled_is_transparent(tmp_path):
    x = loud_quiet(1.0)
    r = render(tmp_path, {"x": x}, [track("x", compressor=compressor(enabled=False))])
    np.testing.assert_allclose(r.stems["x"], r.padded("x"), atol=1e-7)


# -- clean-up and EQ -------------------------------------------------------------------------

def response_db(tmp_path: Path, freq_hz: float, **track_kw) -> float:
    """Steady-state gain of a track's chain at one frequency (stereo sine, after 0.5 s)."""
    x = stereo(sine(freq_hz, 2.0, -12.0))
    r = render(tmp_path, {"x": x}, [track("x", **track_kw)])
    w = slice(int(0.5 * SR), len(x))
    return level_db(r.stems["x"][w, 0]) - level_db(r.padded("x")[w, 0])


HIGHPASS = dict(cleanup=Cleanup(dc_remove=False, highpass_hz=100.0, highpass_slope_db_per_oct=24))
HUM50 = dict(cleanup=Cleanup(dc_remove=False, hum_notch_hz=50))


@pytest.mark.parametrize("freq_hz", [30.0])
def test_highpass_attenuates_rumble(tmp_path, freq_hz):
    assert response_db(tmp_path, freq_hz, **HIGHPASS) < -25.0


def test_highpass_passes_the_midrange(tmp_path):
    assert response_db(tmp_path, 1000.0, **HIGHPASS) == pytest.approx(0.0, abs=0.2)


@pytest.mark.parametrize("freq_hz, expected_db", [(100.0, -3.01), (50.0, -17.65), (25.0, -40.6)])
def test_24_db_highpass_is_a_linkwitz_riley_3_db_down_at_its_cutoff(tmp_path, freq_hz, expected_db):
    """(w^4 / (1 + w^4))^2 with w = f / (0.8023 * 100 Hz): -3 dB at the cutoff, then 24 dB/oct."""
    assert response_db(tmp_path, freq_hz, **HIGHPASS) == pytest.approx(expected_db, abs=0.1)


def test_12_db_highpass_is_a_butterworth(tmp_path):
    gentle = dict(cleanup=Cleanup(dc_remove=False, highpass_hz=100.0, highpass_slope_db_per_oct=12))
    assert response_db(tmp_path, 100.0, **gentle) == pytest.approx(-3.01, abs=0.1)
    assert response_db(tmp_path, 50.0, **gentle) == pytest.approx(-12.3, abs=0.1)  # 10 log10(1/17)


@pytest.mark.parametrize("freq_hz", [50.0, 100.0, 150.0])
def test_hum_notch_removes_mains_harmonics(tmp_path, freq_hz):
    assert response_db(tmp_path, freq_hz, **HUM50) < -20.0


def test_hum_notch_passes_the_midrange(tmp_path):
    assert response_db(tmp_path, 1000.0, **HUM50) == pytest.approx(0.0, abs=0.5)


@pytest.mark.parametrize("dc_remove, highpass_hz, expected_mean", [(True, None, 0.0), (False, None, 0.1),
                                                                  (True, 40.0, 0.0), (False, 40.0, 0.0)])
def test_dc_remove_removes_an_offset(tmp_path, dc_remove, highpass_hz, expected_mean):
    """The 5 Hz DC filter, or the clean-up high-pass (which stands in for it when set)."""
    x = stereo(0.1 + sine(440.0, 2.0, -20.0))
    cleanup = Cleanup(dc_remove=dc_remove, highpass_hz=highpass_hz)
    r = render(tmp_path, {"x": x}, [track("x", cleanup=cleanup)])
    settled = r.stems["x"][int(0.5 * SR): len(x)]
    assert np.abs(settled.mean(axis=0) - expected_mean).max() < 1e-3


@pytest.mark.parametrize("freq_hz, expected_db, tol_db", [(1000.0, 6.0, 0.3), (100.0, 0.0, 0.5)])
def test_peak_eq_boosts_its_band_only(tmp_path, freq_hz, expected_db, tol_db):
    eq = [EQBand(kind="peak", freq_hz=1000.0, gain_db=6.0, q=1.0)]
    assert response_db(tmp_path, freq_hz, eq=eq) == pytest.approx(expected_db, abs=tol_db)


def test_disabled_eq_band_is_ignored(tmp_path):
    eq = [EQBand(kind="peak", freq_hz=1000.0, gain_db=6.0, q=1.0, enabled=False)]
    assert response_db(tmp_path, 1000.0, eq=eq) == pytest.approx(0.0, abs=1e-4)


# -- sidechain ducking -----------------------------------------------------------------------

BURSTS_S = (0.5, 1.5, 2.5)
BURST_LEN_S = 0.3


def kick_and_bass() -> dict[str, np.ndarray]:
    t = t_axis(3.0)
    bass = 0.25 * np.sin(2 * np.pi * 80.0 * t)
    kick = np.zeros_like(t)
    n = int(BURST_LEN_S * SR)
    for s in BURSTS_S:
        a = int(s * SR)
        kick[a:a + n] = 0.5 * np.sin(2 * np.pi * 60.0 * np.arange(n) / SR)
    return {"bass": stereo(bass), "kick": stereo(kick)}


@pytest.mark.parametrize("depth_db", [3.0, 6.0, 12.0])
def test_bass_is_ducked_by_kick_by_depth(tmp_path, depth_db):
    duck = Ducking(target="bass", trigger="kick", threshold_db=-30.0, depth_db=depth_db, ratio=30.0,
                   attack_ms=1.0, release_ms=40.0)
    r = render(tmp_path, kick_and_bass(), ducking=[duck])
    bass_in, bass_out = r.padded("bass")[:, 0], r.stems["bass"][:, 0]
    for s in BURSTS_S:
        during = slice(int((s + 0.1) * SR), int((s + BURST_LEN_S - 0.02) * SR))
        between = slice(int((s + BURST_LEN_S + 0.3) * SR), int((s + 0.95) * SR))
        assert level_db(bass_out[during]) - level_db(bass_in[during]) == pytest.approx(-depth_db, abs=0.5)
        if between.stop <= len(bass_in):
            assert level_db(bass_out[between]) - level_db(bass_in[between]) == pytest.approx(0.0, abs=0.1)
    # before the first hit the bass is untouched; the trigger itself is not processed
    np.testing.assert_allclose(r.stems["bass"][: int(0.45 * SR)], r.padded("bass")[: int(0.45 * SR)], atol=1e-6)
    np.testing.assert_allclose(r.stems["kick"], r.padded("kick"), atol=1e-6)
    np.testing.assert_allclose(r.mix, r.stems["bass"] + r.stems["kick"], atol=1e-6)


# -- mute ------------------------------------------------------------------------------------

def test_mute_silences_the_stem_and_removes_it_from_the_mix(tmp_path):
    a, b = noise(0.5, seed=20), noise(0.5, seed=21)
    r = render(tmp_path, {"a": a, "b": b}, [track("a"), track("b", mute=True)])
    assert r.stems["b"].shape == (r.frames, 2)
    assert np.all(r.stems["b"] == 0.0)
    np.testing.assert_allclose(r.mix, r.padded("a"), atol=1e-6)


def test_muted_track_feeds_no_send(tmp_path):
    a = noise(0.5, seed=22)
    fx = [FxBus(name="verb", kind="reverb", decay_s=1.0)]
    r = render(tmp_path, {"a": a}, [track("a", mute=True, sends=[Send(bus="verb", level_db=0.0)])], fx=fx,
               tail_s=0.5)
    assert np.all(r.mix == 0.0)


def test_all_tracks_muted_gives_a_silent_mix_of_full_length(tmp_path):
    r = render(tmp_path, {"a": noise(0.4, seed=23)}, [track("a", mute=True)], tail_s=0.3)
    assert r.mix.shape == (render_frames(int(0.4 * SR), int(0.3 * SR)), 2)
    assert np.all(r.mix == 0.0)


# -- effect sends ----------------------------------------------------------------------------

def dry_then_silence() -> np.ndarray:
    x = np.zeros((2 * SR, 2))
    x[:SR] = noise(1.0, seed=30, rms=0.3)
    return x


@pytest.mark.parametrize("pre_fader", [False, True])
def test_reverb_send_adds_a_tail_after_the_dry_signal(tmp_path, pre_fader):
    x = dry_then_silence()
    fx = [FxBus(name="verb", kind="reverb", decay_s=1.5)]
    r = render(tmp_path, {"v": x}, [track("v", sends=[Send(bus="verb", level_db=-6.0, pre_fader=pre_fader)])],
               fx=fx, tail_s=1.0)
    tail = r.mix[SR + int(0.05 * SR): SR + int(0.5 * SR)]
    assert level_db(tail) > -50.0                        # clearly audible reverb tail
    assert np.all(r.stems["v"][SR:] == 0.0)              # the dry stem itself has ended
    # the dry part is still in the mix: mix minus dry is the wet return only
    assert level_db(r.mix[:SR] - r.padded("v")[:SR]) < level_db(r.padded("v")[:SR])


def test_send_at_minus_96_db_adds_nothing(tmp_path):
    x = dry_then_silence()
    fx = [FxBus(name="verb", kind="reverb", decay_s=1.5)]
    r = render(tmp_path, {"v": x}, [track("v", sends=[Send(bus="verb", level_db=-96.0)])], fx=fx, tail_s=1.0)
    assert np.max(np.abs(r.mix - r.padded("v"))) < 1e-4      # below -80 dBFS


def test_delay_echo_arrives_after_its_time(tmp_path):
    x = np.zeros((SR, 2))
    x[1000] = [0.8, 0.8]
    fx = [FxBus(name="echo", kind="delay", time_ms=250.0, feedback=0.0, highpass_hz=20.0, lowpass_hz=20000.0)]
    r = render(tmp_path, {"v": x}, [track("v", sends=[Send(bus="echo", level_db=0.0)])], fx=fx, tail_s=0.3)
    wet = r.mix[:, 0] - r.padded("v")[:, 0]
    expected = 1000 + int(round(0.25 * SR))
    assert abs(int(np.argmax(np.abs(wet))) - expected) <= int(0.002 * SR)
    assert np.max(np.abs(wet[: expected - int(0.005 * SR)])) < 1e-4   # nothing before the echo


@pytest.mark.parametrize("content_frames, tail_s", [
    (SR, 1.5),                # 1 s + the default tail
    (2 * SR, 0.37),
    (3 * RENDER_QUANTUM_FRAMES - 100, 0.0),   # exactly 3 Record chunks
    (4 * RENDER_QUANTUM_FRAMES - 1, 0.0),     # exactly 4 Record chunks
    (RENDER_QUANTUM_FRAMES + 1, 0.0),         # one frame into a chunk: a whole chunk more
    (30000, 0.25),
])
def test_render_length_is_longest_stem_plus_tail_in_whole_buffers(tmp_path, content_frames, tail_s):
    """Lengths are whole Record chunks (whole server buffers), and no chunk is dropped."""
    assert RENDER_QUANTUM_FRAMES % BUFFER_FRAMES == 0
    short = noise(0.2, seed=31)
    longest = np.zeros((content_frames, 2))
    longest[-1] = [0.5, 0.5]
    r = render(tmp_path, {"long": longest, "short": short}, tail_s=tail_s)
    expected = int(math.ceil((content_frames + round(tail_s * SR)) / RENDER_QUANTUM_FRAMES) * RENDER_QUANTUM_FRAMES)
    assert r.frames == expected == render_frames(content_frames, int(round(tail_s * SR)))
    assert sf.info(str(r.out / "mix.wav")).frames == expected
    np.testing.assert_allclose(r.mix[content_frames - 1], [0.5, 0.5], atol=1e-7)   # last sample kept


# -- determinism -----------------------------------------------------------------------------

def test_rendering_twice_gives_byte_identical_files(tmp_path):
    stems = kick_and_bass()
    stems["vox"] = noise(3.0, seed=40, channels=1, rms=0.1)
    tracks = [
        track("bass", eq=[EQBand(kind="low_shelf", freq_hz=120.0, gain_db=2.0)], compressor=compressor()),
        track("kick", cleanup=Cleanup(highpass_hz=30.0)),
        track("vox", pan=-0.3, compressor=compressor(threshold_db=-30.0, knee_db=3.0),
              sends=[Send(bus="verb", level_db=-12.0), Send(bus="echo", level_db=-18.0)]),
    ]
    kw = dict(fx=[FxBus(name="verb", kind="reverb"), FxBus(name="echo", kind="delay", note="1/8")],
              ducking=[Ducking(target="bass", trigger="kick")], tail_s=0.5)
    first = render(tmp_path, stems, tracks, **kw)
    second = render(tmp_path, stems, tracks, **kw)
    for rel in ("mix.wav", "stems/vox.wav", "stems/bass.wav"):
        assert sha256(first.out / rel) == sha256(second.out / rel), rel


@pytest.mark.parametrize("threshold_db, loud_change, quiet_change", [(-20.0, 0.0, -18.0), (-45.0, 0.0, 0.0),
                                                                     (-3.0, -18.0, -18.0)])
def test_gate_opens_above_its_threshold_and_attenuates_by_its_range(tmp_path, threshold_db, loud_change, quiet_change):
    """The gate's threshold is a level in dBFS (short-term RMS): the -9 dBFS-RMS loud part passes a
    -20 dB gate untouched while the -33 dBFS-RMS quiet part drops by the 18 dB range; a -45 dB
    gate passes both, a -3 dB gate closes on both."""
    from expertmix.plan import Gate

    x = loud_quiet()
    gate = Gate(enabled=True, threshold_db=threshold_db, range_db=18.0, attack_ms=0.5, release_ms=20.0)
    r = render(tmp_path, {"x": x}, [track("x", gate=gate)])
    y, xin = r.stems["x"], r.padded("x")
    for change in gain_change_db(y, xin, steady_windows(loud=True)):
        assert change == pytest.approx(loud_change, abs=0.2)
    for change in gain_change_db(y, xin, steady_windows(loud=False)):
        assert change == pytest.approx(quiet_change, abs=0.3)


# -- rendering the tracks in worker processes ------------------------------------------------

@pytest.fixture
def always_parallel(monkeypatch):
    """Use worker processes even for these short renders (normally rendered in-process)."""
    import expertmix.render as render_module

    monkeypatch.setattr(render_module, "MIN_PARALLEL_CPU_S", 0.0)


def busy_session() -> tuple[dict[str, np.ndarray], list[TrackPlan], dict]:
    """Mono and stereo tracks, two group buses (EQ, compressors), a track straight to the mix,
    pre- and post-fader sends to a reverb and a delay, ducking, a gate, a de-esser, a mute."""
    from expertmix.plan import DeEsser, Gate, GroupBus

    stems = kick_and_bass()
    stems["vox"] = noise(3.0, seed=50, channels=1, rms=0.1)
    stems["keys"] = noise(2.5, seed=51, rms=0.15)
    stems["gtr"] = noise(3.0, seed=52, channels=1, rms=0.2)
    stems["perc"] = noise(1.0, seed=53, rms=0.05)
    tracks = [
        track("kick", bus="drums", cleanup=Cleanup(highpass_hz=30.0)),
        track("bass", eq=[EQBand(kind="low_shelf", freq_hz=120.0, gain_db=2.0)], compressor=compressor()),
        track("vox", bus="vocals", pan=-0.3, compressor=compressor(threshold_db=-30.0, knee_db=3.0),
              deesser=DeEsser(enabled=True, threshold_db=-40.0),
              sends=[Send(bus="verb", level_db=-12.0), Send(bus="echo", level_db=-18.0, pre_fader=True)]),
        track("keys", width=1.5, gain_db=-3.0, cleanup=Cleanup(hum_notch_hz=50),
              sends=[Send(bus="verb", level_db=-9.0, pre_fader=True)]),
        track("gtr", pan=0.6, gate=Gate(enabled=True, threshold_db=-30.0), sends=[Send(bus="verb", level_db=-15.0)]),
        track("perc", bus="drums", mute=True, sends=[Send(bus="verb", level_db=-6.0)]),
    ]
    kw = dict(buses=[GroupBus(name="drums", compressor=compressor(threshold_db=-24.0), gain_db=-1.0),
                     GroupBus(name="vocals", eq=[EQBand(kind="peak", freq_hz=3000.0, gain_db=2.0)])],
              fx=[FxBus(name="verb", kind="reverb", decay_s=1.2), FxBus(name="echo", kind="delay", note="1/8")],
              ducking=[Ducking(target="bass", trigger="kick", depth_db=6.0)], tail_s=0.5, mix_gain_db=-2.0)
    return stems, tracks, kw


def test_two_worker_processes_write_the_same_bits_as_one_process(tmp_path, always_parallel):
    """Workers write the post-fader stems (and pre-fader send signals) as float32, which holds
    pyo's float32 samples exactly, and the buses, sends and mix sum them in the same order: every
    file is byte-identical to the one-process render, whatever the split."""
    stems, tracks, kw = busy_session()
    one = render(tmp_path, stems, tracks, processes=1, **kw)
    two = render(tmp_path, stems, tracks, processes=2, **kw)
    again = render(tmp_path, stems, tracks, processes=2, **kw)
    assert one.workers == []
    assert len(two.workers) == 2
    split = [set(w["tracks"]) for w in two.workers]
    assert sorted(n for s in split for n in s) == sorted(t.name for t in tracks)   # each track once
    assert any({"kick", "bass"} <= s for s in split)      # a ducking pair shares a worker
    assert [w["tracks"] for w in again.workers] == [w["tracks"] for w in two.workers]
    for rel in ["mix.wav"] + [f"stems/{t.name}.wav" for t in tracks]:
        assert sha256(one.out / rel) == sha256(two.out / rel) == sha256(again.out / rel), rel
    # and the comparison is not vacuous: the mix has the reverb, the ducking and the buses in it
    assert level_db(one.mix[int(3.1 * SR):]) > -60.0
    assert np.all(two.stems["perc"] == 0.0)
    assert not any(two.work.iterdir())                    # pre-fader send files and scratch removed


def test_split_is_deterministic_balanced_and_keeps_ducking_pairs_together():
    from expertmix.render import split_tracks, track_cost

    heavy = dict(eq=[EQBand(kind="peak", freq_hz=f, gain_db=3.0) for f in (100.0, 1000.0, 5000.0)],
                 compressor=compressor(knee_db=6.0))
    tracks = [track(f"t{i}", **(heavy if i % 3 == 0 else {})) for i in range(9)]
    plan = MixPlan(stems_dir="/nowhere", sample_rate_hz=SR, tracks=tracks,
                   ducking=[Ducking(target="t8", trigger="t1"), Ducking(target="t1", trigger="t4")])
    sources = {t.name: StemSource(Path(f"/nowhere/{t.name}.wav"), 2 if i % 2 else 1) for i, t in enumerate(tracks)}
    groups = split_tracks(plan, sources, 2)
    assert groups == split_tracks(plan, sources, 2)
    assert len(groups) == 2 and sorted(n for g in groups for n in g) == sorted(sources)
    assert any({"t1", "t4", "t8"} <= set(g) for g in groups)
    order = [t.name for t in tracks]
    assert all(g == sorted(g, key=order.index) for g in groups)       # plan order inside a group
    cost = {t.name: track_cost(t, sources[t.name].channels, SR) for t in tracks}
    loads = sorted(sum(cost[n] for n in g) for g in groups)
    assert loads[1] - loads[0] <= max(cost.values())                   # no worse than one track apart
    assert split_tracks(plan, sources, 1) == [order]
    assert len(split_tracks(plan, sources, 20)) == 7                   # 9 tracks, one group of 3


def test_mix_section_split_shares_whole_buses_and_keeps_direct_tracks_in_part_0():
    from expertmix.plan import GroupBus
    from expertmix.render import split_mix

    plan = MixPlan(stems_dir="/nowhere", sample_rate_hz=SR, tracks=[track("a")],
                   buses=[GroupBus(name=n) for n in ("drums", "vocals", "music")],
                   fx=[FxBus(name="verb", kind="reverb"), FxBus(name="echo", kind="delay", time_ms=250.0)])
    keys = [["mix", "bus:drums", "bus:music", "send:verb", "send:echo"], ["bus:drums", "bus:vocals", "send:verb"]]
    parts = split_mix(plan, keys)
    assert parts == split_mix(plan, keys)
    assert len(parts) == 2 and parts[0][2] and not parts[1][2]
    assert sorted(b for p in parts for b in p[0]) == ["drums", "music", "vocals"]   # each bus once, whole
    assert sorted(f for p in parts for f in p[1]) == ["echo", "verb"]
    assert "verb" in parts[1][1]             # the costliest piece first, to the part not reading "mix"
    # nothing but direct tracks: one part; nothing at all: still one (silent) part
    assert split_mix(plan, [["mix"], []]) == [([], [], True)]
    assert split_mix(plan, [[], []]) == [([], [], True)]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_stem_pyo_cannot_read_is_a_render_error(tmp_path, always_parallel, processes):
    from expertmix.errors import RenderError

    stems, tracks, kw = busy_session()
    bogus = tmp_path / "not-audio.wav"
    bogus.write_text("this is not a WAV file")
    plan = MixPlan(stems_dir=str(tmp_path), sample_rate_hz=SR, tracks=tracks, **kw)
    sources = {}
    for name, audio in stems.items():
        path, data = write_stem(tmp_path, name, audio)
        sources[name] = StemSource(path, 1 if data.ndim == 1 else 2)
    sources["keys"] = StemSource(bogus, 2)
    (tmp_path / "out").mkdir()
    with pytest.raises(RenderError, match="not-audio.wav"):
        render_mix(plan, sources, tmp_path / "out", content_frames=3 * SR, work_dir=tmp_path,
                   processes=processes)


class _KillsTheWorker:
    """Unpickling this in a worker process ends the process at once (as a crash would)."""

    def __reduce__(self):
        import os

        return (os._exit, (3,))


def test_a_worker_that_dies_or_fails_is_a_render_error(tmp_path):
    from expertmix.errors import RenderError
    from expertmix.render import _run_workers, _TrackJob

    def job(**kw) -> _TrackJob:
        args = dict(plan=None, names=["a"], sources={}, stems_dir=tmp_path, partials_dir=tmp_path, frames=BUFFER_FRAMES,
                    scratch=tmp_path / "scratch.wav")
        args.update(kw)
        return _TrackJob(**args)

    with pytest.raises(RenderError, match="died"):
        _run_workers([job(sources={"a": _KillsTheWorker()}), job()])
    with pytest.raises(RenderError, match="failed in a worker process: AttributeError"):
        _run_workers([job(), job()])
