"""expertmix.descriptors on synthetic signals with known answers (whole file: a few seconds)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from expertmix import descriptors as D
from expertmix.descriptor_specs import BANDS_HZ, DESCRIPTOR_NAMES, DESCRIPTOR_VERSION
from expertmix.errors import InputError
from expertmix.stems import load_stems
from expertmix.units import SILENCE_DB, db_to_gain

SR = 44100
RNG_SEED = 1234


# --- signals --------------------------------------------------------------------------------

def sine(freq_hz: float = 1000.0, seconds: float = 5.0, level_dbfs: float = -6.0, sr: int = SR,
         phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (db_to_gain(level_dbfs) * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def white(seconds: float = 5.0, level: float = 0.1, seed: int = RNG_SEED, sr: int = SR) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def band_noise(lo_hz: float, hi_hz: float, seconds: float = 3.0, rms: float = 0.1,
               seed: int = RNG_SEED, sr: int = SR) -> np.ndarray:
    """White noise with every component outside lo..hi removed (brick wall), scaled to ``rms``."""
    n = int(seconds * sr)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(f < lo_hz) | (f >= hi_hz)] = 0.0
    x = np.fft.irfft(spec, n)
    return (x * (rms / np.sqrt(np.mean(x * x)))).astype(np.float32)


def plucks(seconds: float = 8.0, rate_hz: float = 2.0, seed: int = RNG_SEED, sr: int = SR) -> np.ndarray:
    """Plucked harmonic notes (random pitches) at a steady rate over a -70 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    t = np.arange(int(0.6 * sr)) / sr
    for start in range(int(0.05 * sr), n - len(t), int(sr / rate_hz)):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        note = sum(np.sin(2 * np.pi * f0 * k * t) / k ** 1.5 for k in range(1, 8)) * np.exp(-4 * t)
        out[start:start + len(t)] += 0.2 * note
    out += db_to_gain(-70.0) * rng.standard_normal(n)
    return out.astype(np.float32)


def drum_pattern(seconds: float = 8.0, sr: int = SR, seed: int = RNG_SEED) -> np.ndarray:
    """Kick on 1 and 3, snare on 2 and 4, closed hats on eighths at 120 BPM, out of digital
    silence, each hit starting abruptly (the kick at a cosine peak: a full-scale step)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    t = np.arange(int(0.35 * sr)) / sr
    kick = 0.9 * np.cos(2 * np.pi * np.cumsum(50 + 120 * np.exp(-t / 0.03)) / sr) * np.exp(-t / 0.12)
    snare = (0.5 * rng.standard_normal(len(t)) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.07)
    hat_noise = np.fft.rfft(rng.standard_normal(len(t)))
    hat_noise[np.fft.rfftfreq(len(t), 1 / sr) < 6000] = 0
    hat = 0.3 * np.fft.irfft(hat_noise, len(t)) * np.exp(-t / 0.02)
    beat = int(0.5 * sr)
    for b in range(int(seconds / 0.5) - 1):
        hit = kick if b % 2 == 0 else snare
        out[b * beat:b * beat + len(t)] += hit
        for half in (0, beat // 2):
            out[b * beat + half:b * beat + half + len(t)] += hat
    return out.astype(np.float32)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1).astype(np.float32)


def describe(x: np.ndarray, sr: int = SR) -> dict[str, float]:
    return D.describe_audio(x, sr).values


# --- the contract ---------------------------------------------------------------------------

SIGNALS = {
    "sine": lambda: sine(),
    "stereo_noise": lambda: np.stack([white(seed=1), white(seed=2)], axis=1),
    "plucks": lambda: plucks(4.0),
    "drums": lambda: stereo(drum_pattern(4.0)),
    "silence": lambda: np.zeros((SR, 2), np.float32),
    "short_50ms": lambda: sine(seconds=0.05),
    "short_1s": lambda: sine(440.0, seconds=1.0),
    "left_only": lambda: np.stack([sine(seconds=2.0), np.zeros(2 * SR, np.float32)], axis=1),
}


@pytest.mark.parametrize("name", SIGNALS)
def test_every_descriptor_is_a_finite_plain_float_in_spec_order(name):
    values = describe(SIGNALS[name]())
    assert tuple(values) == DESCRIPTOR_NAMES
    for key, value in values.items():
        assert type(value) is float, key
        assert math.isfinite(value), key
    assert values["masked_max_db"] == 0.0 and values["masking_max_db"] == 0.0


def test_neutral_values_for_silence_and_mono():
    silent = describe(np.zeros((SR, 2), np.float32))
    assert silent["loudness_lufs"] == SILENCE_DB
    assert silent["noise_floor_dbfs"] == SILENCE_DB and silent["signal_to_noise_db"] == 0.0
    assert silent["onset_rate_hz"] == 0.0 and silent["click_count"] == 0.0
    assert silent["stereo_correlation"] == 1.0 and silent["stereo_width"] == 0.0
    assert silent["band_mid_db"] == SILENCE_DB and silent["mfcc_01"] == 0.0
    mono = describe(sine())
    assert mono["channels"] == 1.0 and mono["stereo_correlation"] == 1.0
    assert mono["stereo_width"] == 0.0 and mono["stereo_balance_db"] == 0.0
    assert silent["hum_hz"] == 0.0 and silent["hum_excess_db"] == 0.0


def test_one_sided_stereo():
    v = describe(SIGNALS["left_only"]())
    assert v["stereo_width"] == pytest.approx(1.0)
    assert v["stereo_correlation"] == 0.0
    assert v["stereo_balance_db"] == -D.BALANCE_CAP_DB


def test_rejects_more_than_two_channels():
    with pytest.raises(InputError):
        D.describe_audio(np.zeros((SR, 3), np.float32), SR)


def test_only_descriptors_imports_essentia():
    package = Path(D.__file__).parent
    importers = sorted(p.name for p in package.rglob("*.py")
                       if re.search(r"^\s*(import|from)\s+essentia", p.read_text(), re.M))
    assert importers == ["descriptors.py"]


def test_essentia_algorithms_match_essentia_standard():
    """The lean wrapper (no essentia.standard import) computes what essentia.standard does."""
    import essentia.standard as es

    rng = np.random.default_rng(3)
    spectrum = np.abs(rng.standard_normal(1025)).astype(np.float32) + 1e-6
    signal = (0.3 * rng.standard_normal(3 * SR)).astype(np.float32) * np.repeat([1.0, 0.1, 1.0], SR).astype(np.float32)
    detections = np.abs(rng.standard_normal((2, 400))).astype(np.float32)
    make = D.load_essentia()
    cases = [("Flatness", {}, (spectrum,)),
             ("RollOff", {"cutoff": 0.85, "sampleRate": float(SR)}, (spectrum,)),
             ("BarkBands", {"numberBands": 27, "sampleRate": float(SR)}, (spectrum,)),
             ("MFCC", {"inputSize": 1025, "sampleRate": float(SR)}, (spectrum,)),
             ("Onsets", {"frameRate": SR / 512.0}, (detections, [1.0, 1.0])),
             ("DynamicComplexity", {"frameSize": 0.2, "sampleRate": float(SR)}, (signal,))]
    for name, params, inputs in cases:
        mine, ref = make(name, **params)(*inputs), getattr(es, name)(**params)(*inputs)
        mine, ref = (mine, ref) if isinstance(ref, tuple) else ((mine,), (ref,))
        assert len(mine) == len(ref), name
        for a, b in zip(mine, ref):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_the_main_process_does_not_import_essentia():
    """Importing the pipeline, the CLI and the descriptors (as the main process of a mix does)
    leaves Essentia, pyo and scipy's FFT and signal packages unloaded: only the workers, which
    describe and render, pay for them."""
    import subprocess
    import sys

    code = ("import sys, expertmix.pipeline, expertmix.cli, expertmix.descriptors, expertmix.render; "
            "print([m for m in ('essentia', 'pyo', 'scipy.fft', 'scipy.signal') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- spectrum -------------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_sine_1khz(sr):
    v = describe(sine(1000.0, seconds=3.0, sr=sr), sr)
    assert v["spectral_centroid_hz"] == pytest.approx(1000.0, abs=15.0)
    assert v["spectral_rolloff_hz"] == pytest.approx(1000.0, abs=25.0)
    assert v["spectral_flatness"] < 1e-3
    assert v["band_mid_db"] == pytest.approx(0.0, abs=0.01)
    assert v["band_bass_db"] < -60 and v["band_high_mid_db"] < -60
    assert v["bark_09_db"] == pytest.approx(0.0, abs=0.1)  # 920-1080 Hz
    assert v["onset_rate_hz"] == pytest.approx(1 / 3.0)  # the start


def test_white_noise():
    v = describe(white(5.0))
    # a single periodogram's flatness is exp(-Euler gamma) = 0.561 for white noise
    assert 0.5 < v["spectral_flatness"] < 0.62
    assert v["spectral_rolloff_hz"] == pytest.approx(0.85 * SR / 2, rel=0.01)
    # band shares follow the bandwidths
    assert v["band_mid_db"] == pytest.approx(10 * math.log10(1500 / (SR / 2)), abs=0.2)
    assert v["bark_24_db"] == pytest.approx(10 * math.log10(3500 / (SR / 2)), abs=0.3)


def test_mono_and_dual_mono_stereo_read_the_same_spectrum():
    x = plucks(4.0)
    mono, dual = describe(x), describe(stereo(x))
    spectral = [k for k in DESCRIPTOR_NAMES
                if k.startswith(("band_", "bark_", "mfcc_", "spectral_")) or k.endswith("_ratio")
                or k in ("onset_rate_hz", "dynamic_complexity_db", "click_count", "noise_floor_dbfs")]
    for key in spectral:
        assert dual[key] == pytest.approx(mono[key], rel=1e-5, abs=1e-4), key
    assert dual["loudness_lufs"] == pytest.approx(mono["loudness_lufs"] + 3.01, abs=0.01)


# --- rhythm and dynamics --------------------------------------------------------------------

def click_train(rate_hz: float, seconds: float = 10.0) -> np.ndarray:
    x = white(seconds, level=db_to_gain(-80.0))
    x[int(0.05 * SR)::int(SR / rate_hz)] += 0.5
    return x


def test_click_train_onset_rate():
    assert describe(click_train(4.0))["onset_rate_hz"] == pytest.approx(4.0, abs=0.15)


def test_onset_rate_counts_active_parts_only():
    x = click_train(4.0, seconds=6.0)
    padded = np.concatenate([np.zeros(6 * SR, np.float32), x, np.zeros(6 * SR, np.float32)])
    assert describe(padded)["onset_rate_hz"] == pytest.approx(4.0, abs=0.2)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_onset_times_are_essentias(sr):
    import essentia.standard as es

    x = plucks(5.0, rate_hz=3.0, sr=sr) + 0.3 * drum_pattern(5.0, sr=sr)
    mine = D.onset_times_s(x, sr)
    if sr == 44100:  # Essentia's OnsetRate only exists at 44.1 kHz
        ref, _ = es.OnsetRate()(x)
        np.testing.assert_allclose(mine, ref, atol=1e-6)
    assert len(mine) >= 15  # 15 notes, 10 kicks/snares (some coincide)


@pytest.mark.parametrize("frames", [100, 1023, 1024, 1537, 5000, 44107])
def test_onset_framing_matches_essentia_at_any_length(frames):
    import essentia.standard as es

    x = plucks(2.0, rate_hz=8.0)[:frames]
    np.testing.assert_allclose(D.onset_times_s(x, SR), es.OnsetRate()(x)[0], atol=1e-6)


def test_short_term_percentiles_and_dynamics():
    loud, soft = band_noise(200, 4000, 5.0, rms=0.2), band_noise(200, 4000, 5.0, rms=0.02, seed=9)
    v = describe(np.concatenate([loud, soft]))
    assert v["loudness_st_p95_lufs"] - v["loudness_st_p10_lufs"] == pytest.approx(20.0, abs=1.0)
    steady = describe(np.concatenate([loud, loud]))
    assert steady["loudness_st_p95_lufs"] - steady["loudness_st_p10_lufs"] < 0.5
    assert steady["dynamic_complexity_db"] < 1.0 < v["dynamic_complexity_db"]


def test_dynamic_complexity_ignores_rests():
    x = band_noise(200, 4000, 3.0, rms=0.1)
    with_rests = np.concatenate([x, np.zeros(3 * SR, np.float32), x])
    assert describe(with_rests)["dynamic_complexity_db"] == pytest.approx(
        describe(np.concatenate([x, x]))["dynamic_complexity_db"], abs=0.5)


# --- defects --------------------------------------------------------------------------------

def inject_clicks(x: np.ndarray, count: int = 5, amplitude: float = 0.3,
                  seed: int = 7) -> tuple[np.ndarray, list[int]]:
    """Add ``count`` spikes 1, 2, 3, 1, 2 ... samples wide, alternating sign (and channel)."""
    rng = np.random.default_rng(seed)
    y = x.copy()
    n = len(y)
    # on a 0.25 s grid, 0.13 s after the drum pattern's hits (clicks on a hit's first sample
    # would be part of its attack)
    grid = np.arange(SR // 2, n - SR // 2, SR // 4) + int(0.13 * SR)
    where = sorted(rng.choice(grid, count, replace=False).tolist())
    for i, pos in enumerate(where):
        width = 1 + i % 3
        sign = 1.0 if i % 2 else -1.0
        if y.ndim == 1:
            y[pos:pos + width] += sign * amplitude
        else:
            y[pos:pos + width, i % y.shape[1]] += sign * amplitude
    return y, where


@pytest.mark.parametrize("base", ["plucks", "sine", "stereo_plucks"])
def test_isolated_clicks_are_counted_exactly(base):
    x = {"plucks": lambda: plucks(4.0), "sine": lambda: sine(220.0, 4.0, -10.0),
         "stereo_plucks": lambda: np.stack([plucks(4.0), plucks(4.0, seed=5)], axis=1)}[base]()
    assert describe(x)["click_count"] == 0.0
    clicked, where = inject_clicks(x)
    pos = D.click_positions(clicked, SR)
    assert len(pos) == 5
    assert np.all(np.abs(pos - np.array(where)) <= D.CLICK_MAX_WIDTH)
    v = describe(clicked)
    assert v["click_count"] == 5.0
    assert v["clicks_per_min"] == pytest.approx(5.0 / (len(x) / SR / 60.0))


def test_drum_hits_are_not_clicks():
    drums = drum_pattern(8.0)
    assert D.click_positions(drums, SR).size == 0
    # a quiet kit: the -60 dBFS level floor is not what saves it
    assert D.click_positions(drums * 0.05, SR).size == 0
    clicked, _ = inject_clicks(drums * 0.2, amplitude=0.5)
    assert D.click_positions(clicked, SR).size == 5  # 0.13 s after the hits


def test_noise_floor_between_notes():
    tone = sine(440.0, 1.0, -12.0)
    gap = white(1.0, level=db_to_gain(-60.0))
    x = np.concatenate([tone, gap] * 4 + [np.zeros(SR, np.float32)])  # trailing digital silence
    v = describe(x)
    assert v["noise_floor_dbfs"] == pytest.approx(-60.0, abs=0.5)
    assert v["signal_to_noise_db"] == pytest.approx(v["rms_dbfs"] + 60.0, abs=0.5)


def test_noise_floor_ignores_dc():
    x = sine(440.0, 4.0, -12.0)
    x[2 * SR:] = white(2.0, level=db_to_gain(-60.0))
    assert describe(x + np.float32(0.01))["noise_floor_dbfs"] == pytest.approx(-60.0, abs=0.5)


# --- masking --------------------------------------------------------------------------------

def stem_of(x: np.ndarray) -> D.StemDescriptors:
    return D.describe_audio(x, SR)


def test_masking_same_band_both_ways():
    # each stem holds most of its power where the other holds less: each masks the other there
    a = stem_of(band_noise(500, 2000, rms=0.08, seed=1) + band_noise(2000, 5000, rms=0.05, seed=2))
    b = stem_of(band_noise(500, 2000, rms=0.05, seed=3) + band_noise(2000, 5000, rms=0.08, seed=4))
    stems = {"a": a, "b": b}
    found = {(m.masker, m.maskee, m.band): m for m in D.compute_masking(stems)}
    assert ("a", "b", "mid") in found and ("b", "a", "high_mid") in found
    assert all(m.masking_db > 0 for m in found.values())
    assert a.values["masking_max_db"] > 0 and a.values["masked_max_db"] > 0
    assert b.values["masking_max_db"] > 0 and b.values["masked_max_db"] > 0


def test_masking_follows_planned_gains():
    a = stem_of(band_noise(500, 2000, rms=0.1, seed=1))
    b = stem_of(band_noise(500, 2000, rms=0.1, seed=2))
    found = D.compute_masking({"a": a, "b": b}, gains_db={"a": 6.0, "b": 0.0})
    assert [(m.masker, m.maskee, m.band) for m in found] == [("a", "b", "mid")]
    assert found[0].masking_db == pytest.approx(6.0, abs=0.5)
    assert found[0].maskee_band_share == pytest.approx(1.0, abs=0.01)  # Hann leakage
    assert (found[0].low_hz, found[0].high_hz) == BANDS_HZ["mid"]
    assert b.values["masked_max_db"] == found[0].masking_db and a.values["masked_max_db"] == 0.0


def test_disjoint_bands_do_not_mask():
    a = stem_of(band_noise(60, 200, rms=0.3, seed=1))
    b = stem_of(band_noise(2000, 5000, rms=0.01, seed=2))
    assert D.compute_masking({"a": a, "b": b}) == []
    assert D.compute_masking({"a": a, "b": b}, gains_db={"a": 40.0, "b": -40.0}) == []
    assert a.values["masked_max_db"] == a.values["masking_max_db"] == 0.0


def test_no_masking_without_shared_activity():
    a = band_noise(500, 2000, 3.0, rms=0.1, seed=1)
    silence = np.zeros(3 * SR, np.float32)
    first, second = stem_of(np.concatenate([a, silence])), stem_of(np.concatenate([silence, a]))
    assert D.compute_masking({"a": first, "b": second}, gains_db={"a": 10.0}) == []


# --- determinism and serialisation ----------------------------------------------------------

def test_deterministic():
    x = np.stack([plucks(4.0), plucks(4.0, seed=3)], axis=1)
    first, second = D.describe_audio(x, SR), D.describe_audio(x, SR)
    assert first.values == second.values
    np.testing.assert_array_equal(first.band_frames_db, second.band_frames_db)
    assert first.band_frames_db.shape == (40, len(BANDS_HZ))


def write_session(folder: Path) -> Path:
    folder.mkdir()
    sf.write(str(folder / "kick.wav"), drum_pattern(4.0), SR, subtype="PCM_24")
    sf.write(str(folder / "bass.wav"), 0.5 * band_noise(60, 200, 4.0, seed=3) + plucks(4.0) * 0.2, SR,
             subtype="FLOAT")
    sf.write(str(folder / "keys.wav"), np.stack([plucks(4.0, seed=8), plucks(4.0, seed=9)], axis=1), SR,
             subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("session")
    stemset = load_stems(write_session(root / "stems"), cache_dir=root / "cache")
    return stemset, D.describe_session(stemset, processes=1)


def test_describe_session(session):
    stemset, sd = session
    assert list(sd.stems) == list(stemset.names)
    assert sd.roles == {s.name: s.role for s in stemset}
    assert sd.sample_rate_hz == SR and sd.descriptor_version == DESCRIPTOR_VERSION
    assert sd.tempo_bpm == pytest.approx(120.0, abs=2.0)
    for m in sd.masking:
        assert m.masker != m.maskee and m.masking_db > 0


def test_session_round_trip(session, tmp_path):
    _, sd = session
    data = sd.to_dict()
    text = yaml.safe_dump(data, sort_keys=False)
    back = D.SessionDescriptors.from_dict(yaml.safe_load(text))
    assert back.to_dict() == data
    assert list(back.stems["kick"].values) == list(DESCRIPTOR_NAMES)
    path = tmp_path / "descriptors.yaml"
    sd.write_yaml(path)
    assert yaml.safe_load(path.read_text()) == data


def test_from_dict_rejects_bad_input(session):
    data = session[1].to_dict()
    with pytest.raises(InputError, match="version"):
        D.SessionDescriptors.from_dict({**data, "descriptor_version": DESCRIPTOR_VERSION + 1})
    broken = yaml.safe_load(yaml.safe_dump(data))
    del broken["stems"]["kick"]["loudness_lufs"]
    broken["stems"]["kick"]["loudnes_lufs"] = -20.0
    with pytest.raises(InputError, match="loudnes_lufs"):
        D.SessionDescriptors.from_dict(broken)


def test_processes_do_not_change_results(session):
    stemset, one = session
    calls = []
    two = D.describe_session(stemset, processes=2, progress=lambda *a: calls.append(a))
    assert two.to_dict() == one.to_dict()
    for name in one.stems:
        assert two.stems[name].values == one.stems[name].values
    assert sorted(c[0] for c in calls) == sorted(one.stems)
    assert [c[1:] for c in calls] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("processes", [1, 2])
def test_load_and_describe_decodes_once_with_the_same_results(session, tmp_path, processes):
    """Loading and describing each stem in one worker job gives the stems and descriptors that
    load_stems + describe_session give."""
    from expertmix.stems import probe_stems

    stemset, one = session
    probe = probe_stems(stemset.source_dir)
    stems, sd = D.load_and_describe(probe, tmp_path / "cache", processes=processes)
    assert [s.name for s in stems] == [s.name for s in stemset]
    assert [(s.frames, s.channels, s.role) for s in stems] == [(s.frames, s.channels, s.role) for s in stemset]
    assert stems.warnings == stemset.warnings
    assert sd.to_dict() == one.to_dict()


def test_load_and_describe_reports_the_first_bad_stem_in_name_order(tmp_path):
    from expertmix.stems import probe_stems

    folder = write_session(tmp_path / "stems")
    sf.write(str(folder / "a_silent.wav"), np.zeros(SR), SR)
    sf.write(str(folder / "b_silent.wav"), np.zeros(SR), SR)
    probe = probe_stems(folder)
    for _ in range(2):  # whichever worker finishes first
        with pytest.raises(InputError, match="a_silent.wav"):
            D.load_and_describe(probe, tmp_path / "cache", processes=2)
    stems, sd = D.load_and_describe(probe, tmp_path / "cache", processes=2, skip_silent=True)
    assert "a_silent" not in sd.stems and sum("silent" in w for w in stems.warnings) == 2

