"""expertmix.role_model: the shipped role classifier, its features and the guessing rules.

Fast (synthetic signals of a few seconds, no corpus): the model must load and match the features
expertmix computes; signals with an obvious answer get it; the confidence threshold, a silent
stem, a missing and a broken model behave as documented.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from expertmix import role_model as rm
from expertmix.descriptor_specs import DESCRIPTOR_NAMES, DESCRIPTOR_VERSION
from expertmix.descriptors import describe_audio
from expertmix.errors import ModelError
from expertmix.roles import ROLE_FAMILY, ROLES

SR = 44100


@pytest.fixture(scope="module")
def model() -> rm.RoleModel:
    m, reason = rm.load_role_model_with_reason()
    assert m is not None, reason
    return m


def kick_like(seconds: float = 10.0, bpm: float = 120.0) -> np.ndarray:
    """Decaying 55 Hz sine bursts with a short pitch drop, on every beat."""
    n = int(seconds * SR)
    x = np.zeros(n)
    t = np.arange(int(0.5 * SR)) / SR
    hit = np.sin(2 * np.pi * np.cumsum(55 + 90 * np.exp(-t / 0.02)) / SR) * np.exp(-t / 0.18)
    for i in range(int(seconds * bpm / 60)):
        s = int(i * 60 / bpm * SR)
        seg = hit[: n - s]
        x[s: s + len(seg)] += seg
    return (0.5 * x).astype(np.float32)


def bass_line(seconds: float = 10.0, bpm: float = 100.0) -> np.ndarray:
    """Low sawtooth notes (E1..A1) on eighths, low-passed."""
    from scipy import signal

    n = int(seconds * SR)
    notes = [41.2, 41.2, 55.0, 49.0]
    step = int(60 / bpm / 2 * SR)
    f = np.zeros(n)
    g = np.zeros(n)
    for k, s in enumerate(range(0, n, step)):
        e = min(n, s + int(step * 0.85))
        f[s:e] = notes[(k // 4) % len(notes)]
        g[s:e] = np.exp(-np.arange(e - s) / SR / 0.4)
    saw = 2 * ((np.cumsum(f) / SR) % 1.0) - 1
    sos = signal.butter(2, 500, "lowpass", fs=SR, output="sos")
    return (0.3 * signal.sosfilt(sos, saw * g)).astype(np.float32)


def sustained_chord(seconds: float = 10.0) -> np.ndarray:
    """An A major chord of slightly detuned sawtooths, 1 s fade in and out, low-passed at 2 kHz."""
    from scipy import signal

    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros(len(t))
    for f in (220.0, 277.18, 329.63, 440.0):
        for detune in (-0.003, 0.003):
            x += 2 * ((f * (1 + detune) * t) % 1.0) - 1
    x *= np.minimum(1, t / 1.0) * np.minimum(1, t[::-1] / 1.0)
    sos = signal.butter(2, 2000, "lowpass", fs=SR, output="sos")
    return (0.05 * signal.sosfilt(sos, x)).astype(np.float32)


def hats_like(seconds: float = 10.0) -> np.ndarray:
    """Short noise bursts above 7 kHz on sixteenths at 60 bpm."""
    from scipy import signal

    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    x = np.zeros(n)
    k = np.arange(int(0.1 * SR))
    for i in range(int(seconds * 4)):
        s = int(i * 0.25 * SR)
        seg = (rng.standard_normal(len(k)) * np.exp(-k / SR / 0.03))[: n - s]
        x[s: s + len(seg)] += seg
    sos = signal.butter(2, 7000, "highpass", fs=SR, output="sos")
    return (0.1 * signal.sosfilt(sos, x)).astype(np.float32)


def describe(x: np.ndarray) -> dict[str, float]:
    return describe_audio(x, SR).values


# ------------------------------------------------------------------------------------------------
# the shipped model


def test_shipped_model_matches_the_features_and_descriptors(model):
    card = model.card
    assert card["feature_names"] == list(rm.FEATURE_NAMES)
    assert card["descriptor_version"] == DESCRIPTOR_VERSION
    assert card["target"] == rm.TARGET
    assert card["kind"] == "classifier"
    assert model.classes == list(rm.ROLE_CLASSES)
    assert set(rm.ROLE_CLASSES) <= set(ROLES) and "other" not in rm.ROLE_CLASSES
    for key in ("cv_by_song", "held_out"):
        assert key in card["metrics"]
    assert "GPL" in card["licence"] and card["training"]["rows"] > 0


def test_features_are_named_descriptors_without_levels():
    assert set(rm.REQUIRED_DESCRIPTORS) <= set(DESCRIPTOR_NAMES)
    for level in ("loudness_lufs", "peak_dbfs", "rms_dbfs", "true_peak_dbtp", "noise_floor_dbfs", "mfcc_01",
                  "duration_s", "channels"):
        assert level not in rm.FEATURE_NAMES
    values = describe(bass_line(4.0))
    f = rm.features(values)
    assert list(f) == list(rm.FEATURE_NAMES)
    assert all(np.isfinite(v) for v in f.values())
    with pytest.raises(ModelError, match="spectral_flatness"):
        rm.features({k: v for k, v in values.items() if k != "spectral_flatness"})


@pytest.mark.parametrize("make", [kick_like, bass_line])
def test_features_do_not_depend_on_the_recording_level(make):
    x = make(6.0)
    loud, quiet = rm.features(describe(x)), rm.features(describe(x * 10 ** (-30 / 20)))
    for name in rm.FEATURE_NAMES:
        assert quiet[name] == pytest.approx(loud[name], rel=0.1, abs=0.1), name


def test_a_kick_like_signal_is_a_kick(model):
    ranked = model.predict(describe(kick_like()))
    assert [r for r, _ in ranked] and sorted(p for _, p in ranked) == sorted((p for _, p in ranked))
    assert abs(sum(p for _, p in ranked) - 1.0) < 1e-6
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    assert ranked[0][0] == "kick", ranked[:3]


def test_a_bass_line_is_a_bass(model):
    ranked = model.predict(describe(bass_line()))
    assert ranked[0][0] == "bass", ranked[:3]
    assert ROLE_FAMILY[ranked[0][0]] == "music"


def test_noise_bursts_up_high_are_hats(model):
    ranked = model.predict(describe(hats_like()))
    assert ranked[0][0] == "hats", ranked[:3]


def test_a_sustained_chord_is_a_sustained_instrument(model):
    # pad and strings are close calls for a plain sawtooth chord (measured ~0.46 each), so only
    # the kind of role is asserted: sustained, tonal, not drums, not a voice
    ranked = model.predict(describe(sustained_chord()))
    assert ranked[0][0] in ("pad", "strings"), ranked[:3]
    assert {r for r, _ in ranked[:2]} <= {"pad", "strings", "synth", "keys"}, ranked[:3]


# ------------------------------------------------------------------------------------------------
# guessing: threshold, silence, missing and broken models


def test_confidence_threshold_decides_acceptance(model):
    stems = {"track07.wav": describe(kick_like()), "track08.wav": describe(bass_line())}
    sure = rm.guess_roles(stems, model=model, min_confidence=0.0)
    assert list(sure) == list(stems)
    for g in sure.values():
        assert g.accepted and g.role == g.predicted != "other" and 0 < g.confidence <= 1
        assert len(g.alternatives) == 3 and all(p <= g.confidence for _, p in g.alternatives)
        assert "guessed from the audio" in g.reason
    never = rm.guess_roles(stems, model=model, min_confidence=1.0)
    for name, g in never.items():
        assert not g.accepted and g.role == "other" and g.family == "music"
        assert g.predicted == sure[name].predicted and g.confidence == pytest.approx(sure[name].confidence)
        assert "--role" in g.reason
    mid = rm.guess_roles(stems, model=model, min_confidence=sure["track07.wav"].confidence)
    assert mid["track07.wav"].accepted  # the threshold itself is accepted
    json.dumps({k: g.to_dict() for k, g in mid.items()})
    with pytest.raises(ValueError):
        rm.guess_roles(stems, model=model, min_confidence=1.5)


def test_a_silent_stem_is_not_guessed(model):
    silent = describe(np.zeros(SR * 3, np.float32))
    g = rm.guess_roles({"empty.wav": silent}, model=model, min_confidence=0.0)["empty.wav"]
    assert not g.accepted and g.role == "other" and "silent" in g.reason
    assert rm.guess_roles({}, model=model) == {}


def test_missing_model_keeps_other(tmp_path):
    assert rm.load_role_model(tmp_path) is None
    m, reason = rm.load_role_model_with_reason(tmp_path)
    assert m is None and str(tmp_path) in reason
    values = describe(kick_like(3.0))
    g = rm.guess_roles({"track07.wav": values}, models_dir=tmp_path)["track07.wav"]
    assert g.role == "other" and not g.accepted and g.confidence == 0.0 and "no role model" in g.reason


def test_model_folder_or_models_root_both_work(tmp_path, model):
    root = tmp_path / "models"
    shutil.copytree(model.path, root / rm.MODEL_SUBDIR)
    assert rm.load_role_model(root) is not None
    assert rm.load_role_model(root / rm.MODEL_SUBDIR) is not None


def test_a_broken_model_given_explicitly_raises(tmp_path, model):
    folder = tmp_path / "roles"
    shutil.copytree(model.path, folder)
    txt = folder / f"{rm.MODEL_NAME}.txt"
    txt.write_text(txt.read_text()[:-100])
    with pytest.raises(ModelError, match="corrupt"):
        rm.load_role_model(folder)
    with pytest.raises(ModelError):
        rm.guess_roles({"track07.wav": describe(kick_like(3.0))}, models_dir=folder)
    # a card for other features: named in the error
    shutil.copy(model.path / f"{rm.MODEL_NAME}.txt", txt)
    card_path = folder / f"{rm.MODEL_NAME}.card.json"
    card = json.loads(card_path.read_text())
    card["descriptor_version"] = DESCRIPTOR_VERSION + 1
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="descriptor version"):
        rm.load_role_model(folder)
