"""expertmix.stems on small synthetic stem folders written into tmp_path (all files <= 1 s)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from expertmix.errors import InputError
from expertmix.stems import (SUPPORTED_EXTENSIONS, Stem, StemSet, discover_stems, downmix_to_stereo, load_stems,
                             probe_stems)
from expertmix.units import db_to_gain, gain_to_db

SR = 44100


def tone(seconds: float = 0.25, freq_hz: float = 1000.0, sr: int = SR, level_dbfs: float = -6.0,
         channels: int = 1) -> np.ndarray:
    """(frames, channels) float32 sine; channel k is k+1 times quieter (to check channel order)."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = db_to_gain(level_dbfs) * np.sin(2 * np.pi * freq_hz * t)
    return np.stack([x / (k + 1) for k in range(channels)], axis=1).astype(np.float32)


def write(folder: Path, name: str, audio: np.ndarray, sr: int = SR, **kwargs) -> Path:
    path = folder / name
    sf.write(str(path), audio, sr, **kwargs)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stems_dir(tmp_path: Path) -> Path:
    d = tmp_path / "stems"
    d.mkdir()
    return d


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def load(stems_dir: Path, cache_dir: Path, **kwargs) -> tuple[StemSet, dict[str, np.ndarray]]:
    """load_stems, also returning a copy of the audio each stem's visit saw."""
    seen: dict[str, np.ndarray] = {}

    def visit(stem: Stem, audio: np.ndarray) -> None:
        assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape == (stem.frames, stem.channels)
        seen[stem.name] = audio.copy()

    return load_stems(stems_dir, cache_dir=cache_dir, visit=visit, **kwargs), seen


# ------------------------------------------------------------------------------------------
# formats


FORMATS = [
    # file name, soundfile format, subtype, lossless, streamed in place
    ("s.wav", "WAV", "PCM_16", True, True),
    ("s.wav", "WAV", "PCM_24", True, True),
    ("s.wav", "WAV", "FLOAT", True, True),
    ("s.WAVE", "WAV", "PCM_24", True, True),
    ("s.flac", "FLAC", "PCM_24", True, False),
    ("s.aiff", "AIFF", "PCM_16", True, True),
    ("s.aif", "AIFF", "PCM_24", True, True),
    ("s.aifc", "AIFF", "FLOAT", True, True),
    ("s.ogg", "OGG", "VORBIS", False, False),
    ("s.oga", "OGG", "VORBIS", False, False),
    ("s.mp3", "MP3", "MPEG_LAYER_III", False, False),
]


@pytest.mark.parametrize("filename, fmt, subtype, lossless, in_place", FORMATS,
                         ids=[f"{f[0]}-{f[2]}" for f in FORMATS])
def test_every_format_round_trips(stems_dir, cache_dir, filename, fmt, subtype, lossless, in_place):
    original = tone(0.5, 440.0, channels=2)
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"soundfile on this machine cannot write {fmt}/{subtype}")
    try:
        path = write(stems_dir, filename, original, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        pytest.skip(f"soundfile on this machine cannot write {fmt}/{subtype}: {exc}")

    stems, seen = load(stems_dir, cache_dir)
    stem = stems.by_name("s")
    audio = seen["s"]
    assert (stem.channels, stem.source_channels, stem.sample_rate_hz) == (2, 2, SR)
    assert stem.source_format.startswith(fmt + "/")
    if lossless:
        assert stem.frames == len(original)
        step = {"PCM_16": 2.0 ** -15, "PCM_24": 2.0 ** -23}.get(subtype, 1e-7)
        np.testing.assert_allclose(audio, original, atol=step)
    else:  # lossy: same length (within a codec frame), same level per channel, same waveform
        assert abs(stem.frames - len(original)) <= 1152
        n = min(len(audio), len(original))
        mid = slice(n // 4, 3 * n // 4)
        for ch in range(2):
            level_db = gain_to_db(np.sqrt(np.mean(audio[mid, ch] ** 2)) / np.sqrt(np.mean(original[mid, ch] ** 2)))
            assert abs(level_db) < 0.5
            assert np.corrcoef(audio[mid, ch], original[mid, ch])[0, 1] > 0.99
    # render_path: the original when pyo can stream it, else a float32 cache WAV in cache_dir
    assert stem.cached is (not in_place)
    if in_place:
        assert stem.render_path == path.resolve()
        assert not cache_dir.exists()
    else:
        assert stem.render_path.parent == cache_dir.resolve() and stem.render_path.suffix == ".wav"
        info = sf.info(str(stem.render_path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "FLOAT", SR, 2)
    rendered, sr = sf.read(str(stem.render_path), dtype="float32", always_2d=True)
    assert sr == SR
    np.testing.assert_array_equal(rendered, audio)


def test_supported_extensions_are_documented():
    assert set(SUPPORTED_EXTENSIONS) == {".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".mp3"}


# ------------------------------------------------------------------------------------------
# resampling and channels


def test_resampling_keeps_level_length_and_timing(stems_dir, cache_dir):
    sine = tone(1.0, 1000.0, sr=48000, level_dbfs=-6.0)
    impulse = np.zeros((48000, 1), np.float32)
    impulse[24000] = 0.5  # 0.5 s
    write(stems_dir, "sine.wav", sine, 48000, subtype="FLOAT")
    write(stems_dir, "click.wav", impulse, 48000, subtype="FLOAT")

    stems, seen = load(stems_dir, cache_dir, sample_rate_hz=44100)
    assert stems.sample_rate_hz == 44100
    for stem in stems:
        assert stem.source_sample_rate_hz == 48000 and stem.sample_rate_hz == 44100
        assert stem.frames == round(48000 * 44100 / 48000)
        assert stem.cached  # other rate -> decoded into the cache
    out = seen["sine"][:, 0]
    mid = out[4410:-4410]
    rms_db = gain_to_db(float(np.sqrt(np.mean(mid ** 2))))
    assert abs(rms_db - (-6.0 - 3.0103)) < 0.1
    assert abs(gain_to_db(float(np.max(np.abs(mid)))) - (-6.0)) < 0.1
    assert abs(int(np.argmax(np.abs(seen["click"][:, 0]))) - 22050) <= 1
    assert any("resampling 2 stem(s) to the session rate of 44100 Hz" in w for w in stems.warnings)


def test_session_rate_is_most_common_then_higher(stems_dir):
    write(stems_dir, "a.wav", tone(0.1), 44100)
    write(stems_dir, "b.wav", tone(0.1, sr=48000), 48000)
    assert probe_stems(stems_dir).sample_rate_hz == 48000  # tie -> the higher
    write(stems_dir, "c.wav", tone(0.1), 44100)
    probe = probe_stems(stems_dir)
    assert probe.sample_rate_hz == 44100
    assert [s.needs_cache for s in probe.stems] == [False, True, False]
    assert probe.warnings == ("resampling 1 stem(s) to the session rate of 44100 Hz: b (48000 Hz)",)
    with pytest.raises(InputError, match="session sample rate 12 Hz"):
        probe_stems(stems_dir, sample_rate_hz=12)


@pytest.mark.parametrize("source_channels", [1, 2])
def test_mono_and_stereo_stay_as_they_are(stems_dir, cache_dir, source_channels):
    write(stems_dir, "gtr.wav", tone(0.2, channels=source_channels), subtype="FLOAT")
    stems, _ = load(stems_dir, cache_dir)
    stem = stems.by_name("gtr")
    assert (stem.channels, stem.source_channels, stem.cached, stem.warnings) == (
        source_channels, source_channels, False, ())


def test_six_channels_downmix_itu_without_lfe(stems_dir, cache_dir):
    levels = np.array([0.1, 0.2, 0.3, 0.9, 0.05, 0.04], np.float32)  # L R C LFE Ls Rs
    write(stems_dir, "keys.wav", np.tile(levels, (4410, 1)), subtype="FLOAT")
    stems, seen = load(stems_dir, cache_dir)
    stem = stems.by_name("keys")
    assert (stem.channels, stem.source_channels, stem.cached) == (2, 6, True)
    assert any("6 channels (read as 5.1: L R C LFE Ls Rs) downmixed to stereo" in w and "LFE dropped" in w
               for w in stem.warnings)
    c = np.sqrt(0.5)
    np.testing.assert_allclose(seen["keys"][0], [0.1 + c * 0.3 + c * 0.05, 0.2 + c * 0.3 + c * 0.04], rtol=1e-6)
    assert sf.info(str(stem.render_path)).channels == 2


@pytest.mark.parametrize("channels", [3, 4, 8])
def test_other_channel_counts_average_even_left_odd_right(channels):
    block = np.tile(np.arange(1, channels + 1, dtype=np.float32), (3, 1))
    out = downmix_to_stereo(block)
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(out[0], [np.mean(np.arange(1, channels + 1, 2)), np.mean(np.arange(2, channels + 1, 2))])


def test_four_channel_stem_warns(stems_dir):
    write(stems_dir, "pad.wav", tone(0.1, channels=4), subtype="FLOAT")
    (info,) = probe_stems(stems_dir).stems
    assert info.channels == 2 and info.needs_cache
    assert info.warnings == ("4 channels downmixed to stereo: channels 1, 3, 5 ... averaged to the left, "
                             "2, 4, 6 ... to the right",)


# ------------------------------------------------------------------------------------------
# bad stems


def test_empty_file(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", np.zeros((0, 1), np.float32))
    with pytest.raises(InputError, match=r"kick\.wav: is empty"):
        load(stems_dir, cache_dir)


def test_corrupt_file(stems_dir, cache_dir):
    (stems_dir / "snare.wav").write_bytes(os.urandom(64) + b"not a wave file" * 20)
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    assert "snare.wav: cannot be read as audio" in str(err.value) and "fix:" in str(err.value)


def test_all_problems_are_reported_at_once(stems_dir, cache_dir):
    (stems_dir / "a.wav").write_bytes(b"garbage" * 10)
    write(stems_dir, "b.wav", np.zeros((0, 1), np.float32))
    write(stems_dir, "c.wav", tone(0.1))
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    text = str(err.value)
    assert "2 stems cannot be used" in text and "a.wav: cannot be read" in text and "b.wav: is empty" in text
    assert not cache_dir.exists()


def test_silent_stem_is_an_error_unless_skipped(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", tone(0.2))
    write(stems_dir, "silence.flac", np.zeros((4410, 1), np.float32))
    write(stems_dir, "hiss.wav", np.full((4410, 1), db_to_gain(-100.0), np.float32), subtype="FLOAT")
    write(stems_dir, "quiet.wav", np.full((4410, 1), db_to_gain(-80.0), np.float32), subtype="FLOAT")
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    assert "hiss.wav: is silent" in str(err.value) and "--skip-silent" in str(err.value)

    stems, seen = load(stems_dir, cache_dir, skip_silent=True)
    assert stems.names == ("kick", "quiet")  # -80 dBFS is quiet, not silent
    assert sorted(seen) == ["kick", "quiet"]
    assert any(w.startswith("silence: silent") and "left out" in w for w in stems.warnings)
    assert any(w.startswith("hiss: silent") for w in stems.warnings)
    assert not (cache_dir / "silence.wav").exists()


def test_every_stem_silent(stems_dir, cache_dir):
    write(stems_dir, "a.wav", np.zeros((100, 1), np.float32))
    with pytest.raises(InputError, match="every stem is silent"):
        load(stems_dir, cache_dir, skip_silent=True)


def test_nan_samples(stems_dir, cache_dir):
    audio = tone(0.1)
    audio[10] = np.nan
    write(stems_dir, "bad.wav", audio, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load(stems_dir, cache_dir)


@pytest.mark.parametrize("filename, text", [
    ("vocal.m4a", "cannot read"), ("bass.aac", "cannot read"), ("gtr.wma", "cannot read"),
    ("keys.opus", "cannot read"), ("drums.mid", "MIDI"),
])
def test_unreadable_audio_formats(stems_dir, cache_dir, filename, text):
    write(stems_dir, "kick.wav", tone(0.1))
    (stems_dir / filename).write_bytes(b"\0\0\0 ftypM4A " + os.urandom(200))
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    assert filename in str(err.value) and text in str(err.value)
    assert "convert it to WAV or FLAC" in str(err.value)
    # leaving it out is the other fix
    stems, _ = load(stems_dir, cache_dir, exclude=[filename])
    assert stems.names == ("kick",)


def test_duplicate_names(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", tone(0.1))
    write(stems_dir, "kick.flac", tone(0.1))
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    assert "kick.flac, kick.wav have the same name 'kick'" in str(err.value)


def test_duplicate_names_differing_in_case(stems_dir, cache_dir):
    write(stems_dir, "Kick.wav", tone(0.1))
    write(stems_dir, "kick.wav", tone(0.1))
    if len(list(stems_dir.iterdir())) < 2:
        pytest.skip("this file system does not tell names apart by case")
    with pytest.raises(InputError, match=r"Kick\.wav, kick\.wav have the same name"):
        load(stems_dir, cache_dir)


# ------------------------------------------------------------------------------------------
# folders


def test_missing_folder(tmp_path, cache_dir):
    with pytest.raises(InputError, match="stems folder does not exist"):
        load(tmp_path / "nope", cache_dir)


def test_file_instead_of_folder(tmp_path, cache_dir):
    path = write(tmp_path, "kick.wav", tone(0.1))
    with pytest.raises(InputError, match="is a file, not a folder"):
        load(path, cache_dir)


def test_empty_folder(stems_dir, cache_dir):
    with pytest.raises(InputError) as err:
        load(stems_dir, cache_dir)
    assert "no audio stems found" in str(err.value)
    assert ".wav .wave .flac .aif .aiff .aifc .ogg .oga .mp3" in err.value.hint


def test_folder_without_audio_names_what_was_ignored(stems_dir):
    (stems_dir / "notes.txt").write_text("hi")
    (stems_dir / "sub").mkdir()
    write(stems_dir / "sub", "kick.wav", tone(0.1))
    with pytest.raises(InputError, match=r"ignored: notes\.txt, sub/"):
        discover_stems(stems_dir)


def test_discovery_ignores_other_files_and_sorts_by_name(stems_dir):
    for name in ["Tom 10.wav", "b.FLAC", "Tom 2.wav", "a.wav"]:
        write(stems_dir, name, tone(0.05), format="FLAC" if name.endswith("FLAC") else "WAV")
    (stems_dir / "notes.txt").write_text("x")
    (stems_dir / "plan.yaml").write_text("x: 1")
    (stems_dir / "README.md").write_text("x")
    (stems_dir / ".hidden.wav").write_bytes(b"junk")
    (stems_dir / "._a.wav").write_bytes(b"junk")  # macOS resource fork
    (stems_dir / "bounce").mkdir()
    write(stems_dir / "bounce", "mix.wav", tone(0.05))
    names = [p.name for p in discover_stems(stems_dir)]
    assert names == ["a.wav", "b.FLAC", "Tom 2.wav", "Tom 10.wav"]
    assert discover_stems(stems_dir) == discover_stems(stems_dir)
    assert all(p.is_absolute() for p in discover_stems(stems_dir))


def test_exclude(stems_dir):
    for name in ["kick.wav", "snare.wav", "click.wav", "guide_vox.wav"]:
        write(stems_dir, name, tone(0.05))
    kept = discover_stems(stems_dir, exclude=["click", "GUIDE_*", "snare.wav"])
    assert [p.name for p in kept] == ["kick.wav"]
    with pytest.raises(InputError, match="'metronome' matches no audio file"):
        discover_stems(stems_dir, exclude=["metronome"])
    with pytest.raises(InputError, match="all 4 audio files are excluded"):
        discover_stems(stems_dir, exclude=["*"])


def test_deterministic_order_and_result(tmp_path):
    sets = []
    for run, order in enumerate([["c", "a", "b"], ["b", "c", "a"]]):
        d = tmp_path / f"stems{run}"
        d.mkdir()
        for name in order:
            write(d, f"{name}.flac", tone(0.05, freq_hz=100.0 * (ord(name) - 96)), format="FLAC")
        stems, _ = load(d, tmp_path / f"cache{run}")
        sets.append(stems)
    assert sets[0].names == sets[1].names == ("a", "b", "c")
    for a, b in zip(sets[0], sets[1]):
        assert digest(a.render_path) == digest(b.render_path)  # byte-identical cache files


# ------------------------------------------------------------------------------------------
# roles


def test_roles_from_file_names(stems_dir):
    for name in ["01_Kick In.wav", "BGV 2.wav", "track07.wav"]:
        write(stems_dir, name, tone(0.05))
    probe = probe_stems(stems_dir)
    got = {s.name: (s.role, s.role_source) for s in probe.stems}
    assert got == {"01_Kick In": ("kick", "filename"), "BGV 2": ("backing_vocals", "filename"),
                   "track07": ("other", "default")}
    (warning,) = [s for s in probe.stems if s.name == "track07"][0].warnings
    assert "role not recognised from the name" in warning and "--role track07=ROLE" in warning


@pytest.mark.parametrize("key", ["track07.wav", "track07", "TRACK07.WAV"])
def test_role_override_by_file_or_stem_name(stems_dir, key):
    write(stems_dir, "track07.wav", tone(0.05))
    write(stems_dir, "kick.wav", tone(0.05))
    probe = probe_stems(stems_dir, role_overrides={key: "Lead Vocal"})
    got = {s.name: (s.role, s.role_source, s.warnings) for s in probe.stems}
    assert got == {"kick": ("kick", "filename", ()), "track07": ("lead_vocal", "user", ())}


def test_role_override_errors(stems_dir):
    write(stems_dir, "kick.wav", tone(0.05))
    write(stems_dir, "bass.wav", tone(0.05))
    with pytest.raises(InputError) as err:
        probe_stems(stems_dir, role_overrides={"snare": "snare"})
    assert "'snare' names no stem" in str(err.value) and "stems: bass, kick" in err.value.hint
    with pytest.raises(InputError) as err:
        probe_stems(stems_dir, role_overrides={"kick.wav": "kik"})
    assert "--role kick.wav=kik: unknown role 'kik' (did you mean 'kick'?)" in str(err.value)


def test_roles_file_and_precedence(stems_dir, tmp_path):
    for name in ["kick.wav", "808.wav", "track07.wav", "vox.wav"]:
        write(stems_dir, name, tone(0.05))
    roles = tmp_path / "roles.yaml"
    roles.write_text("# roles\n808: kick\ntrack07.wav: synth\nvox: backing_vocals\nmissing.wav: bass\n")
    probe = probe_stems(stems_dir, roles_file=roles, role_overrides={"vox.wav": "lead_vocal"})
    got = {s.name: (s.role, s.role_source) for s in probe.stems}
    assert got == {"808": ("kick", "roles_file"), "kick": ("kick", "filename"),
                   "track07": ("synth", "roles_file"), "vox": ("lead_vocal", "user")}
    assert any(f"{roles}:5: 'missing.wav' names no stem" in w for w in probe.warnings)


@pytest.mark.parametrize("text, line, message", [
    ("kick: kick\nsnare: snare\n  bad: x\n", 3, "is not valid YAML (line 3"),
    ("a: b\n\tc: d\n", 2, "is not valid YAML (line 2"),
    ("kick: kick\nkick.wav: snare\n", 2, "listed twice (also on line 1)"),
    ("\n\nkick: kik\n", 3, "unknown role 'kik' (did you mean 'kick'?)"),
    ("kick:\n  - kick\n", 1, "each entry must be 'name: role'"),
    ("- kick\n- snare\n", 1, "must map stem or file names to roles"),
])
def test_bad_roles_file_reports_the_line(stems_dir, tmp_path, text, line, message):
    write(stems_dir, "kick.wav", tone(0.05))
    roles = tmp_path / "roles.yaml"
    roles.write_text(text)
    with pytest.raises(InputError) as err:
        probe_stems(stems_dir, roles_file=roles)
    assert str(err.value).startswith(f"{roles}:{line}: ") and message in str(err.value)


def test_missing_roles_file(stems_dir, tmp_path):
    write(stems_dir, "kick.wav", tone(0.05))
    with pytest.raises(InputError, match="roles file does not exist"):
        probe_stems(stems_dir, roles_file=tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------
# safety, cache, bookkeeping


def test_inputs_are_byte_identical_and_cache_only_when_needed(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", tone(0.3), subtype="PCM_24")  # streamable: used in place
    write(stems_dir, "snare.aiff", tone(0.3, channels=2), format="AIFF", subtype="PCM_16")  # in place
    write(stems_dir, "bass.flac", tone(0.3), format="FLAC")  # not WAV/AIFF: cached
    write(stems_dir, "pad.wav", tone(0.3, sr=48000), 48000, subtype="FLOAT")  # other rate: cached
    write(stems_dir, "keys.wav", tone(0.3, channels=6), subtype="PCM_16")  # 6 channels: cached
    write(stems_dir, "gsm.wav", tone(0.3, sr=8000), SR, subtype="MS_ADPCM")  # not PCM/float: cached
    before = {p.name: (digest(p), p.stat().st_mtime_ns) for p in stems_dir.iterdir()}

    stems, _ = load(stems_dir, cache_dir)

    assert {p.name: (digest(p), p.stat().st_mtime_ns) for p in stems_dir.iterdir()} == before
    cached = {s.name for s in stems if s.cached}
    assert cached == {"bass", "pad", "keys", "gsm"}
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(f"{n}.wav" for n in cached)
    for stem in stems:
        info = sf.info(str(stem.render_path))
        assert (info.samplerate, info.channels, info.frames) == (SR, stem.channels, stem.frames)
        assert info.format in ("WAV", "WAVEX", "AIFF")


def test_no_cache_folder_when_nothing_needs_caching(stems_dir, cache_dir):
    path = write(stems_dir, "kick.wav", tone(0.1))
    stems, _ = load(stems_dir, cache_dir)
    assert stems.by_name("kick").render_path == path.resolve() and not cache_dir.exists()


@pytest.mark.parametrize("inside", ["", "cache"])
def test_cache_folder_inside_stems_folder_is_refused(stems_dir, inside):
    write(stems_dir, "kick.flac", tone(0.1), format="FLAC")
    with pytest.raises(InputError, match="must not be the stems folder or inside it"):
        load_stems(stems_dir, cache_dir=stems_dir / inside)
    assert [p.name for p in stems_dir.iterdir()] == ["kick.flac"]


def test_stemset_bookkeeping(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", tone(0.2))
    write(stems_dir, "vox.flac", tone(1.0, sr=22050), 22050, format="FLAC")
    calls = []
    stems, _ = load(stems_dir, cache_dir, progress=lambda *args: calls.append(args))
    assert calls == [("kick", 1, 2), ("vox", 2, 2)]
    assert stems.frames == SR and stems.by_name("VOX").frames == SR and stems.by_name("kick").frames == 8820
    assert stems.sample_rate_hz == SR and stems.source_dir == stems_dir.resolve()
    with pytest.raises(KeyError):
        stems.by_name("snare")
    # no length warning below 1 s of difference; every field dumps to YAML
    assert not any("lengths differ" in w for w in stems.warnings)
    dumped = yaml.safe_load(yaml.safe_dump(stems.to_dict()))
    assert dumped["stems"][1]["render_path"] == str(cache_dir.resolve() / "vox.wav")
    assert set(dumped["stems"][0]) == {
        "name", "path", "role", "role_source", "channels", "source_channels", "source_sample_rate_hz",
        "sample_rate_hz", "frames", "source_format", "render_path", "warnings"}


def test_length_mismatch_warning(stems_dir, cache_dir):
    write(stems_dir, "kick.wav", tone(0.1))
    write(stems_dir, "pad.wav", tone(1.2))
    stems, seen = load(stems_dir, cache_dir)
    (warning,) = [w for w in stems.warnings if "lengths differ" in w]
    assert "shortest kick (0.10 s)" in warning and "longest pad (1.20 s)" in warning
    assert len(seen["kick"]) == 4410  # never trimmed or padded here


@pytest.mark.parametrize("estimate", [10, 100_000])
def test_decode_does_not_trust_the_header_length(stems_dir, estimate):
    """Some MP3 headers only estimate the length: the decode grows or shrinks its buffer."""
    import dataclasses

    from expertmix.stems import decode_stem

    write(stems_dir, "vox.flac", tone(0.5, sr=48000, channels=2), 48000, format="FLAC")
    (info,) = probe_stems(stems_dir, sample_rate_hz=SR).stems
    audio = decode_stem(dataclasses.replace(info, frames=estimate))
    assert audio.shape == (SR // 2, 2) and audio.dtype == np.float32
    assert not audio.flags.writeable  # visit() cannot corrupt what is written to the cache
    np.testing.assert_array_equal(audio, decode_stem(info))
