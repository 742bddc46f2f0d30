"""Objective mix evaluation (expertmix.evaluate): known-answer tests on synthetic signals.

Balance error, spectrum at matched loudness, stereo width and imbalance, a whole output folder
built here (small WAVs and a minimal plan.yaml), warnings for silent or missing stems, and the
errors for bad input. No corpus, no rendering: fast.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import yaml

from expertmix.errors import InputError
from expertmix.evaluate import (BANDS_HZ, STEREO_BANDS_HZ, balance_differences, balance_error_lu,
                                equal_loudness_gains, evaluate, load_reference_gains, measure_file,
                                stem_loudness_from_gains)

SR = 44100
SECONDS = 2.0
RNG_SEED = 7


def noise(channels: int = 1, seconds: float = SECONDS, seed: int = RNG_SEED, level: float = 0.1) -> np.ndarray:
    x = level * np.random.default_rng(seed).standard_normal((int(seconds * SR), channels))
    return x[:, 0] if channels == 1 else x


def db(g: float) -> float:
    return 10.0 ** (g / 20.0)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype="FLOAT")
    return path


# -- balance metric ---------------------------------------------------------------------------

@pytest.mark.parametrize("common_gain", [0.0, -7.5, 12.0])
def test_balance_error_is_zero_up_to_a_common_gain(common_gain: float) -> None:
    ref = {"kick": -20.0, "bass": -22.5, "vox": -18.0}
    ours = {k: v + common_gain for k, v in ref.items()}
    assert balance_error_lu(ours, ref) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("offsets, expected", [
    ((2.0, -2.0), 2.0),                          # +2/-2 LU -> 2.0
    ((3.0, 0.0, -3.0), math.sqrt(6.0)),          # RMS of (3, 0, -3)
    ((1.0, 1.0, 1.0, 5.0), math.sqrt(3.0)),      # mean 2 removed: (-1, -1, -1, 3)
])
def test_balance_error_known_offsets(offsets: tuple[float, ...], expected: float) -> None:
    ref = {f"s{i}": -20.0 - i for i in range(len(offsets))}
    ours = {n: v + o - 4.0 for (n, v), o in zip(ref.items(), offsets)}
    assert balance_error_lu(ours, ref) == pytest.approx(expected, abs=1e-12)
    d = balance_differences(ours, ref)
    assert sum(d.values()) == pytest.approx(0.0, abs=1e-12)


def test_balance_error_uses_only_audible_common_stems() -> None:
    ref = {"a": -20.0, "b": -22.0, "c": -30.0, "only_ref": -10.0}
    ours = {"a": -18.0, "b": -24.0, "c": -200.0, "only_ours": -5.0}  # c is silent (muted)
    assert balance_error_lu(ours, ref) == pytest.approx(2.0)
    assert set(balance_differences(ours, ref)) == {"a", "b"}
    with pytest.raises(InputError, match="no audible stem"):
        balance_error_lu({"x": -20.0}, {"y": -20.0})


def test_baselines_from_gains() -> None:
    raw = {"a": -30.0, "b": -20.0, "c": -25.0, "quiet": -200.0}
    assert stem_loudness_from_gains(raw) == raw  # plain sum: every gain 0 dB
    assert stem_loudness_from_gains(raw, {"a": 10.0})["a"] == -20.0
    equal = stem_loudness_from_gains(raw, equal_loudness_gains(raw, -23.0))
    assert {k: v for k, v in equal.items() if k != "quiet"} == {"a": -23.0, "b": -23.0, "c": -23.0}
    # equal loudness vs a reference: the error is the spread of the reference's own balance
    ref = {"a": -21.0, "b": -19.0, "c": -20.0}
    assert balance_error_lu(equal, ref) == pytest.approx(np.std([-21.0, -19.0, -20.0]))
    # the plain sum vs a reference reached by known gains: the error is the spread of the gains
    gains = {"a": 9.0, "b": 1.0, "c": 5.0}
    ref2 = stem_loudness_from_gains(raw, gains)
    assert balance_error_lu(raw, ref2) == pytest.approx(np.std(list(gains.values())))


# -- spectrum at matched loudness -------------------------------------------------------------

def test_band_difference_of_a_scaled_copy_is_zero(tmp_path: Path) -> None:
    x = noise(2)
    a = measure_file(write(tmp_path / "a.wav", x))
    b = measure_file(write(tmp_path / "b.wav", x * db(-6.0)))
    assert a.integrated_lufs - b.integrated_lufs == pytest.approx(6.0, abs=0.01)
    for band in BANDS_HZ:
        assert a.spectrum_db[band] - b.spectrum_db[band] == pytest.approx(0.0, abs=0.01)
    for band, v in a.third_octave_db.items():
        assert v - b.third_octave_db[band] == pytest.approx(0.0, abs=0.01)


def spectral_tilt(x: np.ndarray, db_per_octave: float) -> np.ndarray:
    """``x`` with a gain of ``db_per_octave * log2(f / 1 kHz)`` dB at every frequency f."""
    spec = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(len(x), 1.0 / SR), 1.0)
    return np.fft.irfft(spec * 10.0 ** (db_per_octave * np.log2(f / 1000.0) / 20.0), n=len(x))


def test_band_difference_of_a_tilted_copy_has_the_expected_signs(tmp_path: Path) -> None:
    pink = spectral_tilt(noise(1, seed=3), -3.0)
    pink *= 0.1 / np.sqrt(np.mean(pink ** 2))
    bright = spectral_tilt(pink, +2.0)  # +2 dB per octave above 1 kHz, -2 dB per octave below
    ours = write(tmp_path / "out" / "master.wav", bright)
    ref = write(tmp_path / "ref.wav", pink * 3.0)  # loudness does not matter
    write(tmp_path / "stems" / "x.wav", pink)
    ev = evaluate(tmp_path / "stems", ours, reference_mix=ref)
    d = ev.band_difference_db
    for band in ("sub", "bass", "low_mid"):
        assert d[band] < -1.0, (band, d)
    for band in ("presence", "air"):  # (the loudness match pivots where K-weighted energy sits, ~3 kHz)
        assert d[band] > 1.0, (band, d)
    values = [d[b] for b in BANDS_HZ]
    assert values == sorted(values)  # rises band by band
    assert ev.band_error_db is not None and ev.band_error_db > 2.0
    third = [ev.third_octave_difference_db[b] for b in ("63", "250", "1000", "4000", "16000")]
    assert third == sorted(third)
    # a tilt the other way flips every sign
    dark = evaluate(tmp_path / "stems", write(tmp_path / "dark.wav", spectral_tilt(pink, -2.0)),
                    reference_mix=ref).band_difference_db
    assert all(np.sign(dark[b]) == -np.sign(d[b]) for b in ("sub", "bass", "presence", "air"))


def test_a_very_short_file_still_has_a_spectrum(tmp_path: Path) -> None:
    x = noise(1, seconds=0.2)  # shorter than one Welch segment
    m = measure_file(write(tmp_path / "short.wav", x))
    assert all(v > -40.0 for b, v in m.spectrum_db.items())


# -- stereo ------------------------------------------------------------------------------------

def test_width_and_imbalance_of_known_signals(tmp_path: Path) -> None:
    x = noise(1)
    dual = measure_file(write(tmp_path / "dual.wav", np.stack([x, x], axis=1)))
    assert dual.width == pytest.approx(0.0, abs=1e-9)
    assert dual.imbalance_db == pytest.approx(0.0, abs=1e-6)
    assert all(w == pytest.approx(0.0, abs=1e-9) for w in dual.band_width.values())

    indep = measure_file(write(tmp_path / "indep.wav", noise(2)))
    assert indep.width == pytest.approx(1.0, abs=0.05)
    for band in STEREO_BANDS_HZ:
        assert indep.band_width[band] == pytest.approx(1.0, abs=0.15), band

    right = measure_file(write(tmp_path / "right.wav", np.stack([x, x * db(6.0)], axis=1) * 0.5))
    assert right.imbalance_db == pytest.approx(6.0, abs=0.01)
    assert all(v == pytest.approx(6.0, abs=0.05) for v in right.band_imbalance_db.values())

    mono = measure_file(write(tmp_path / "mono.wav", x))
    assert mono.width == 0.0 and mono.imbalance_db == 0.0


# -- a whole output folder ---------------------------------------------------------------------

RAW = {"kick": (-6.0, 300.0), "bass": (-12.0, 150.0), "guitar": (-9.0, 3000.0), "vox": (-3.0, 1500.0)}
OURS_DB = {"kick": 2.0, "bass": 4.0, "guitar": -3.0, "vox": 0.0}
REFERENCE_DB = {"kick": 0.0, "bass": 6.0, "guitar": -3.0, "vox": 1.0}


def raw_stem(name: str) -> np.ndarray:
    level_db, centre = RAW[name]
    x = noise(1, seed=list(RAW).index(name))
    sos = scipy.signal.butter(2, (centre / 2, centre * 2), "bandpass", fs=SR, output="sos")
    y = scipy.signal.sosfilt(sos, x)
    return y / np.sqrt(np.mean(y ** 2)) * db(level_db) * 0.1


def build_session(root: Path, *, silent: tuple[str, ...] = (), findings: list[dict] | None = None) -> tuple[Path, Path]:
    """Raw stems + an expertmix-like output folder whose stems are the raw stems at OURS_DB."""
    stems, out = root / "stems", root / "out"
    mix = np.zeros((int(SECONDS * SR), 2))
    tracks = []
    for name in RAW:
        raw = raw_stem(name)
        write(stems / f"{name}.wav", raw)
        g = 0.0 if name in silent else db(OURS_DB[name]) * math.sqrt(0.5)  # constant-power centre
        contribution = np.stack([raw * g, raw * g], axis=1)
        write(out / "stems" / f"{name}.wav", contribution)
        mix += contribution
        tracks.append({"name": name, "file": f"{name}.wav", "role": "other"})
    write(out / "mix.wav", mix)
    write(out / "master.wav", mix * db(3.0))
    plan = {"format_version": 1, "stems_dir": str(stems), "tracks": tracks,
            "notes": ["kick: DC offset 0.0200 removed"], "findings": findings or []}
    (out / "plan.yaml").write_text(yaml.safe_dump(plan))
    return stems, out


def test_evaluate_an_output_folder_against_reference_stems(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path, findings=[
        {"stem": "kick", "kind": "dc_offset", "action": "repaired", "detail": "DC 0.02 removed"}])
    ref_stems = tmp_path / "reference_stems"
    for name in RAW:  # stereo reference stems at another common gain
        y = raw_stem(name) * db(REFERENCE_DB[name] - 5.0)
        write(ref_stems / f"{name.upper()}.wav", np.stack([y, y], axis=1))  # names match case-insensitively
    ref_mix = write(tmp_path / "reference_mix.wav", sf.read(str(out / "master.wav"))[0] * db(-4.0))
    ev = evaluate(stems, out, reference_mix=ref_mix, reference_stems_dir=ref_stems)

    offsets = np.array([OURS_DB[n] - REFERENCE_DB[n] for n in RAW])
    expected = float(np.sqrt(np.mean((offsets - offsets.mean()) ** 2)))
    assert ev.balance_error_lu == pytest.approx(expected, abs=0.02)
    assert sorted(ev.balance_stems) == sorted(RAW)
    for name in RAW:
        s = ev.stem(name)
        assert s.change_lu == pytest.approx(OURS_DB[name], abs=0.02)
        assert s.difference_lu == pytest.approx(OURS_DB[name] - REFERENCE_DB[name] - offsets.mean(), abs=0.02)
    # the relative levels sum (in power) to the mix: sum 10^(rel/10) = 1 for uncorrelated stems
    assert sum(10 ** (s.relative_lu / 10) for s in ev.stems) == pytest.approx(1.0, abs=0.1)
    # baselines: plain sum = raw balance; equal loudness = all equal
    raw_loud = ev.loudness("raw_lufs")
    ref_loud = ev.loudness("reference_lufs")
    assert ev.baseline_balance_error_lu["plain_sum"] == pytest.approx(balance_error_lu(raw_loud, ref_loud))
    assert ev.baseline_balance_error_lu["equal_loudness"] == pytest.approx(
        float(np.std(list(ref_loud.values()))), abs=1e-9)
    # master measures; the reference mix is the master 4 dB down: same spectrum at matched loudness
    assert ev.master.integrated_lufs - ev.mix_lufs == pytest.approx(3.0, abs=0.01)
    assert ev.master.width == pytest.approx(0.0, abs=1e-6)
    assert ev.band_error_db == pytest.approx(0.0, abs=0.01)
    assert ev.reference_mix.integrated_lufs == pytest.approx(ev.master.integrated_lufs - 4.0, abs=0.01)
    assert [(f.stem, f.kind, f.action) for f in ev.findings] == [("kick", "dc_offset", "repaired")]
    assert ev.notes == ["kick: DC offset 0.0200 removed"]
    # plain output: YAML- and JSON-dumpable, Markdown summary
    data = yaml.safe_load(yaml.safe_dump(ev.to_dict()))
    assert data["balance_error_lu"] == pytest.approx(expected, abs=0.02)
    assert json.loads(ev.to_json())["master"]["channels"] == 2
    md = ev.to_markdown()
    assert "Balance error" in md and "| kick |" in md and "dc_offset" in md


def test_evaluate_with_reference_gains_and_loudness(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path)
    gains = {f"{n}.wav": REFERENCE_DB[n] for n in RAW}  # keys may carry the file extension
    ev = evaluate(stems, out, reference_gains=gains)
    offsets = np.array([OURS_DB[n] - REFERENCE_DB[n] for n in RAW])
    assert ev.balance_error_lu == pytest.approx(float(np.std(offsets)), abs=0.02)
    assert ev.baseline_balance_error_lu["plain_sum"] == pytest.approx(float(np.std(list(REFERENCE_DB.values()))),
                                                                      abs=1e-9)
    # the same gains from a corpus-style meta.json
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"stems": {f"{n}.flac": {"gain_to_reference_balance_db": g}
                                          for n, g in REFERENCE_DB.items()}}))
    assert load_reference_gains(meta) == REFERENCE_DB
    assert evaluate(stems, out, reference_gains=meta).balance_error_lu == pytest.approx(ev.balance_error_lu)
    # absolute reference loudness equal to ours: no error
    ours = ev.loudness("lufs")
    assert evaluate(stems, out, reference_loudness=ours).balance_error_lu == pytest.approx(0.0, abs=1e-9)


def test_silent_and_missing_stems_are_warnings_not_errors(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path, silent=("guitar",))
    ref = {n: v for n, v in REFERENCE_DB.items() if n != "vox"}
    ref["triangle"] = 0.0
    ev = evaluate(stems, out, reference_gains=ref)
    assert sorted(ev.balance_stems) == ["bass", "kick"]
    text = "\n".join(ev.warnings)
    assert "guitar: silent in the mix" in text
    assert "'triangle'" in text and "vox: no reference level" in text
    offsets = np.array([OURS_DB[n] - REFERENCE_DB[n] for n in ("kick", "bass")])
    assert ev.balance_error_lu == pytest.approx(float(np.std(offsets)), abs=0.02)


def test_a_single_mix_file_and_a_folder_without_stems(tmp_path: Path) -> None:
    write(tmp_path / "stems" / "a.wav", noise(1))
    ev = evaluate(tmp_path / "stems", write(tmp_path / "my_mix.wav", noise(2)))
    assert ev.master is not None and ev.stems[0].raw_lufs is not None and ev.balance_error_lu is None
    only_mix = tmp_path / "out"
    write(only_mix / "mix.wav", noise(2))
    ev = evaluate(tmp_path / "stems", only_mix)
    assert any("no master.wav" in w for w in ev.warnings)
    assert any("no plan.yaml" in w for w in ev.warnings)


def test_evaluate_a_real_expertmix_output(tmp_path: Path) -> None:
    """Mix tiny synthetic stems with expertmix, then evaluate the folder it wrote."""
    from expertmix.pipeline import run_mix

    stems = tmp_path / "stems"
    for name in ("kick", "bass", "vox"):  # stems named by role, 1.5 s
        write(stems / f"{name}.wav", raw_stem(name)[: int(1.5 * SR)])
    result = run_mix(stems, tmp_path / "out", genre="pop")
    ev = evaluate(stems, result.out_dir, reference_loudness={n: -20.0 for n in ("kick", "bass", "vox")})
    assert ev.master.integrated_lufs == pytest.approx(result.plan.master.target_lufs, abs=result.plan.master.tolerance_lu)
    assert ev.master.true_peak_dbtp <= result.plan.master.limiter.ceiling_dbtp + 0.1
    assert sorted(s.name for s in ev.stems) == ["bass", "kick", "vox"]
    for s in ev.stems:
        assert s.lufs is not None and s.raw_lufs is not None and s.relative_lu < 0.0
        assert s.change_lu == pytest.approx(s.lufs - s.raw_lufs)
    assert ev.balance_error_lu is not None and sorted(ev.balance_stems) == ["bass", "kick", "vox"]
    assert ev.warnings == []


# -- bad input ---------------------------------------------------------------------------------

def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path)
    (out / "stems" / "bass.wav").write_bytes(b"RIFF this is not audio")
    with pytest.raises(InputError, match="bass.wav"):
        evaluate(stems, out)


def test_mismatched_sample_rates_raise(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path)
    write(out / "stems" / "vox.wav", np.zeros((48000, 2)), sr=48000)
    with pytest.raises(InputError, match="vox.wav.*48000"):
        evaluate(stems, out)


def test_missing_folders_and_conflicting_references(tmp_path: Path) -> None:
    stems, out = build_session(tmp_path)
    with pytest.raises(InputError, match="output folder does not exist"):
        evaluate(stems, tmp_path / "nowhere")
    with pytest.raises(InputError, match="stems folder does not exist"):
        evaluate(tmp_path / "nostems", out)
    with pytest.raises(InputError, match="at most one reference balance"):
        evaluate(stems, out, reference_gains={"kick": 0.0}, reference_loudness={"kick": -20.0})
    with pytest.raises(InputError, match="missing.wav"):
        evaluate(stems, out, reference_mix=tmp_path / "missing.wav")
    with pytest.raises(InputError, match="folder does not exist"):
        evaluate(stems, out, reference_stems_dir=tmp_path / "no_ref_stems")
    bad = tmp_path / "gains.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="gains.yaml"):
        load_reference_gains(bad)
