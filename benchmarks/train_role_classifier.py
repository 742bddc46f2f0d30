"""Train, cross-validate and evaluate the role classifier shipped in ``models/roles/``.

    python benchmarks/train_role_classifier.py                 # build rows (cached), CV, train, evaluate, save
    python benchmarks/train_role_classifier.py --check         # retrain and compare with the shipped files
    python benchmarks/train_role_classifier.py --out /tmp/m    # write the model elsewhere

Needs the Debian packages ``fluidsynth``, ``fluid-soundfont-gm``, ``sonic-pi-samples`` and
``espeak-ng`` (the rendered, sequenced and spoken training material) and ``/work/shared/corpus`` (or ``--corpus``).

Rows: every stem is cut into 8 s windows (hop 4 s); a window is kept when at least half of its
100 ms blocks are active (within 30 dB of the stem's loudest 400 ms, above -90 dBFS; 10 % for
tom tracks, which play only in fills); each kept
window is described with :func:`expertmix.descriptors.describe_audio` and turned into
:func:`expertmix.role_model.features`. Labels come from :func:`expertmix.roles.role_from_name` of
the file name, checked by hand against :data:`EXPECTED_LABELS` (the script stops if they differ),
then mapped to :data:`~expertmix.role_model.ROLE_CLASSES` (``backing_vocals`` -> ``lead_vocal``).

Training sources (only material that may be redistributed without conditions on the model):

* ``demo``: the bundled demo song (CC0 arrangement, CC0 drum samples, MIT FluidR3 instruments).
* ``corpus``: the permissive stems of the constructed corpus songs (CC0 / MIT sounds; the Mozart
  quartet score is public domain, its music21 encoding "may restrict commercial use": the model
  keeps no note of it, only window statistics). The GPL-2+ stems of the constructed songs
  (Hydrogen and LMMS drum samples, an LMMS filter sweep) are *not* trained on; they are a second
  held-out set.
* ``fluidr3``: songs written by this script (seeded random arrangements) rendered with
  fluidsynth and the FluidR3_GM SoundFont (MIT): every role, many GM programs and drum kits.
* ``sonicpi``: drum, percussion and effect stems sequenced from the Sonic Pi sample pack (CC0).
* ``espeak``: one "sung" voice per FluidR3 song: phrases of words, each on its own pitch, from
  espeak-ng, a rule-based formant synthesiser (GPL-3+ program; its output contains no recorded
  audio and is treated as program output, not as a copy of the program). Without it the only
  voices were FluidR3's choir "aah"/"ooh" samples, nothing like a real singer's consonants.
* ``numpy``: stems synthesised here (sine-sweep kicks, noise snares and hats, saw basses and
  pads, noise risers, a formant "voice").

Every synthetic stem gets a random tilt EQ, a little room and a noise floor, so that it is less
clean than a rendering. Groups for cross-validation are songs: no song has windows on both sides
of a fold. Held out: the MedleyDB songs (``real_musicdelta_*``, CC BY-NC-SA: evaluation only, never
trained on) and the GPL stems, scored per stem by majority vote over windows and by one
prediction on the whole stem (what the pipeline does).

Deterministic: fixed seeds, fluidsynth renders to float without dither, fixed LightGBM seeds and
one thread; ``--check`` retrains from scratch (cache ignored) and compares the model text.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import multiprocessing
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from expertmix import gbm  # noqa: E402
from expertmix.descriptor_specs import DESCRIPTOR_VERSION  # noqa: E402
from expertmix.descriptors import describe_audio  # noqa: E402
from expertmix.role_model import FEATURE_NAMES, MODEL_NAME, ROLE_CLASSES, TARGET, features  # noqa: E402
from expertmix.roles import ROLE_FAMILY, role_from_name  # noqa: E402

SR = 44100
SONG_S = 24.0
WINDOW_S = 8.0
HOP_S = 4.0
BLOCK_S = 0.1
ACTIVE_RANGE_DB = 30.0
ACTIVE_FLOOR_DBFS = -90.0
MIN_ACTIVE_SHARE = 0.5
#: Tom tracks play only in fills: a toms window needs only 10 % active blocks.
MIN_ACTIVE_SHARE_BY_LABEL = {"toms": 0.1}
SEED = 20240611
N_FLUID_SONGS = 24
N_SONICPI_SONGS = 12
N_NUMPY_SONGS = 8
CV_FOLDS = 8
#: LightGBM settings: small trees (7 leaves) and 150 rounds keep the shipped text near 2 MB; 15
#: leaves x 300 rounds (7 MB) was 1.5 points better in cross-validation, not worth the size.
PARAMS = {"learning_rate": 0.08, "num_leaves": 7, "max_depth": 3, "min_data_in_leaf": 5,
          "feature_fraction": 0.5, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0}
ROUNDS = 150
#: Bump when the generated material or the windowing changes (invalidates the row cache).
DATA_VERSION = 3

SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SF2_SHA256 = "74594e8f4250680adf590507a306655a299935343583256f3b722c48a1bc1cb0"
SONICPI = Path("/usr/share/sonic-pi/samples")
DEFAULT_CORPUS = Path("/work/shared/corpus")
DEMO = ROOT / "expertmix" / "demo"

#: Labels checked by hand, file -> role (role_from_name must agree, or the entry says why not).
EXPECTED_LABELS: dict[str, str] = {
    # demo (meta.json says which instrument each stem is)
    "demo/kick.flac": "kick", "demo/snare.flac": "snare", "demo/hats.flac": "hats",
    "demo/overheads.flac": "overheads", "demo/bass.flac": "bass", "demo/guitar.flac": "guitar",
    "demo/keys.flac": "keys", "demo/pad.flac": "pad", "demo/lead_vocal.flac": "lead_vocal",
    "demo/backing_vocals.flac": "backing_vocals",
    # constructed corpus songs (SOURCES.txt)
    "synth_electronic_techno/kick.flac": "kick", "synth_electronic_techno/clap.flac": "percussion",
    "synth_electronic_techno/hats.flac": "hats", "synth_electronic_techno/bass.flac": "bass",
    "synth_electronic_techno/synth_arp.flac": "synth", "synth_electronic_techno/synth_pad.flac": "pad",
    "synth_electronic_techno/fx.flac": "fx",
    "synth_hiphop_boombap/kick.flac": "kick", "synth_hiphop_boombap/snare.flac": "snare",
    "synth_hiphop_boombap/hats.flac": "hats", "synth_hiphop_boombap/bass.flac": "bass",
    "synth_hiphop_boombap/keys.flac": "keys", "synth_hiphop_boombap/fx_vinyl.flac": "fx",
    "synth_orchestral_mozart_k80_string_quartet/violin_1.flac": "strings",
    "synth_orchestral_mozart_k80_string_quartet/violin_2.flac": "strings",
    "synth_orchestral_mozart_k80_string_quartet/viola.flac": "strings",
    "synth_orchestral_mozart_k80_string_quartet/cello.flac": "strings",
    # MedleyDB (held out). MusicDelta_Beatles is a male/female duet: role_from_name reads
    # "vocals_female" as lead_vocal; both voices carry the tune in turn, and the model has one
    # vocal class, so the label only has to say "a voice".
    "real_musicdelta_beatles/bass.flac": "bass", "real_musicdelta_beatles/drums.flac": "drums",
    "real_musicdelta_beatles/guitar_acoustic.flac": "guitar",
    "real_musicdelta_beatles/guitar_clean_1.flac": "guitar",
    "real_musicdelta_beatles/guitar_clean_2.flac": "guitar",
    "real_musicdelta_beatles/guitar_clean_3.flac": "guitar",
    "real_musicdelta_beatles/vocals_female.flac": "lead_vocal",
    "real_musicdelta_beatles/vocals_male.flac": "lead_vocal",
    "real_musicdelta_country1/bass.flac": "bass", "real_musicdelta_country1/drums.flac": "drums",
    "real_musicdelta_country1/guitar_acoustic_1.flac": "guitar",
    "real_musicdelta_country1/guitar_acoustic_2.flac": "guitar",
    "real_musicdelta_country1/vocals_male.flac": "lead_vocal",
    "real_musicdelta_grunge/bass.flac": "bass", "real_musicdelta_grunge/drums.flac": "drums",
    "real_musicdelta_grunge/guitar_distorted_1.flac": "guitar",
    "real_musicdelta_grunge/guitar_distorted_2.flac": "guitar",
    "real_musicdelta_grunge/vocals_male.flac": "lead_vocal",
    "real_musicdelta_rock/bass.flac": "bass", "real_musicdelta_rock/drums.flac": "drums",
    "real_musicdelta_rock/guitar_clean_1.flac": "guitar", "real_musicdelta_rock/guitar_clean_2.flac": "guitar",
    "real_musicdelta_rock/vocals_male.flac": "lead_vocal",
}
#: Roles of the role table that the model folds into one of its classes.
CLASS_OF_ROLE = {"backing_vocals": "lead_vocal"}
#: Constructed-corpus stems made (in part) of GPL-2+ samples: held out, never trained on.
GPL_STEMS = {
    "synth_electronic_techno": ("kick.flac", "clap.flac", "hats.flac", "fx.flac"),
    "synth_hiphop_boombap": ("kick.flac", "snare.flac", "hats.flac"),
}
CONSTRUCTED_SONGS = ("synth_electronic_techno", "synth_hiphop_boombap",
                     "synth_orchestral_mozart_k80_string_quartet")
MEDLEYDB_SONGS = ("real_musicdelta_beatles", "real_musicdelta_country1", "real_musicdelta_grunge",
                  "real_musicdelta_rock")


@dataclass
class Stem:
    group: str      # song id (the cross-validation group)
    source: str     # demo | corpus | fluidr3 | sonicpi | numpy | medleydb | corpus_gpl
    name: str       # file-like name the label was read from
    label: str      # model class
    licence: str
    audio: np.ndarray  # float32 (frames, channels)


def to_class(role: str) -> str:
    c = CLASS_OF_ROLE.get(role, role)
    if c not in ROLE_CLASSES:
        raise SystemExit(f"label {role!r} maps to {c!r}, which is not among ROLE_CLASSES")
    return c


def checked_label(key: str, override: str | None = None) -> str:
    """The hand-checked role of ``key`` (``song/file``); stops when role_from_name disagrees."""
    by_name = role_from_name(Path(key).name)
    expected = EXPECTED_LABELS.get(key, override)
    if expected is None:
        raise SystemExit(f"{key}: no hand-checked label (role_from_name says {by_name!r}); add it to EXPECTED_LABELS")
    if by_name != expected:
        raise SystemExit(f"{key}: role_from_name says {by_name!r} but the hand-checked label is {expected!r}")
    return to_class(expected)


def read(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != SR:
        raise SystemExit(f"{path}: {sr} Hz, expected {SR}")
    return x


# ------------------------------------------------------------------------------------------------
# signal helpers (all seeded by the caller's rng)


def mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1, keepdims=True).astype(np.float32) if x.shape[1] > 1 else x


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros((n - len(x), x.shape[1]), x.dtype)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def butter(x: np.ndarray, kind: str, hz: float | tuple[float, float], order: int = 2) -> np.ndarray:
    sos = signal.butter(order, hz, btype=kind, fs=SR, output="sos")
    return signal.sosfilt(sos, x, axis=0).astype(np.float32)


def roughen(x: np.ndarray, rng: np.random.Generator, *, room: float = 0.5) -> np.ndarray:
    """Make a clean rendering more like a recording: a tilt EQ (+-4 dB around 300-3000 Hz), one or
    two peaking EQs (+-6 dB), sometimes a band limit (high-pass 20-100 Hz, low-pass 6-18 kHz), a
    short room (with probability ``room``), sometimes low rumble, and a noise floor 35-75 dB under
    the stem."""
    x = x.astype(np.float32)
    fc = float(np.exp(rng.uniform(np.log(300), np.log(3000))))
    lo = butter(x, "lowpass", fc, 1)
    tilt = float(rng.uniform(-4, 4))
    x = lo * 10 ** (-tilt / 40) + (x - lo) * 10 ** (tilt / 40)
    for _ in range(int(rng.integers(1, 3))):
        f0 = float(np.exp(rng.uniform(np.log(150), np.log(6000))))
        q = float(rng.uniform(0.7, 2.0))
        g = 10 ** (rng.uniform(-6, 6) / 20) - 1
        b, a = signal.iirpeak(f0, q, fs=SR)
        x = (x + g * signal.lfilter(b, a, x, axis=0)).astype(np.float32)
    if rng.random() < 0.5:
        x = butter(x, "highpass", float(rng.uniform(20, 100)), 2)
    if rng.random() < 0.5:
        x = butter(x, "lowpass", float(rng.uniform(6000, 18000)), int(rng.integers(2, 5)))
    if rng.random() < room:
        rt = rng.uniform(0.2, 0.9)
        n = int(rt * SR)
        t = np.arange(n) / SR
        ir = rng.standard_normal((n, x.shape[1])) * np.exp(-6.9 * t / rt)[:, None]
        ir = butter(ir.astype(np.float32), "lowpass", float(rng.uniform(3000, 9000)), 1)
        wet = signal.fftconvolve(x, ir, axes=0)[: len(x)]
        x = x + wet * (rms(x) / (rms(wet) + 1e-12)) * 10 ** (rng.uniform(-22, -10) / 20)
    if rng.random() < 0.2:
        rumble = butter(rng.standard_normal(x.shape).astype(np.float32), "lowpass", float(rng.uniform(25, 50)), 2)
        x = x + rumble * (rms(x) / rms(rumble)) * 10 ** (-rng.uniform(25, 45) / 20)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    if rng.random() < 0.5:
        noise = butter(noise, "lowpass", 2000.0, 1)  # darker, pink-ish hiss
    x = x + noise * (rms(x) / rms(noise)) * 10 ** (-rng.uniform(20, 75) / 20)
    return x.astype(np.float32)


def normalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to a random recording level (-30..-12 dBFS RMS); levels are not features anyway."""
    x = x * (10 ** (rng.uniform(-30, -12) / 20) / rms(x))
    peak = float(np.max(np.abs(x)))
    return (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)


def channels_for(label: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stereo for roles often recorded or produced in stereo (sometimes), mono otherwise."""
    stereo_p = {"pad": 0.7, "synth": 0.5, "keys": 0.5, "strings": 0.4, "overheads": 0.8, "drums": 0.6,
                "fx": 0.6, "percussion": 0.3, "guitar": 0.2, "brass": 0.2, "winds": 0.1}.get(label, 0.0)
    if x.shape[1] == 2 and rng.random() < stereo_p:
        return x
    return mono(x)


# ------------------------------------------------------------------------------------------------
# fluidsynth rendering of seeded arrangements (FluidR3_GM, MIT)


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


class Midi:
    """A one-track MIDI file with times in seconds (120 bpm, 480 ticks per beat: 960 ticks/s)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, bytes]] = []

    def _add(self, t: float, data: bytes, order: int) -> None:
        self.events.append((max(0, int(round(t * 960))), order, data))

    def program(self, ch: int, prog: int) -> None:
        self._add(0.0, bytes([0xC0 | ch, prog]), 0)

    def cc(self, t: float, ch: int, num: int, val: int) -> None:
        self._add(t, bytes([0xB0 | ch, num, int(np.clip(val, 0, 127))]), 1)

    def bend(self, t: float, ch: int, semis: float) -> None:  # default range +-2 semitones
        v = int(np.clip(8192 + semis / 2.0 * 8191, 0, 16383))
        self._add(t, bytes([0xE0 | ch, v & 0x7F, v >> 7]), 1)

    def note(self, t: float, dur: float, pitch: int, vel: int, ch: int = 0) -> None:
        pitch, vel = int(np.clip(pitch, 0, 127)), int(np.clip(vel, 1, 127))
        self._add(t, bytes([0x90 | ch, pitch, vel]), 3)
        self._add(t + max(dur, 0.01), bytes([0x80 | ch, pitch, 0]), 2)

    def to_bytes(self) -> bytes:
        evs = sorted(self.events, key=lambda e: (e[0], e[1]))
        data = _vlq(0) + b"\xff\x51\x03" + (500000).to_bytes(3, "big")
        last = 0
        for tick, _, b in evs:
            data += _vlq(tick - last) + b
            last = tick
        data += _vlq(0) + b"\xff\x2f\x00"
        return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(data)) + data


def render(midi: Midi, tmp: Path, n: int) -> np.ndarray:
    mid, wav = tmp / "x.mid", tmp / "x.wav"
    mid.write_bytes(midi.to_bytes())
    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SR),
                    "-O", "float", "-T", "wav", "-F", str(wav), str(SF2), str(mid)],
                   check=True, capture_output=True)
    x = read(wav)
    return fit_length(x, n)


MAJOR = (0, 2, 4, 5, 7, 9, 11)
PROGRESSIONS = ((0, 7, 9, 5), (9, 5, 0, 7), (0, 5, 7, 5), (2, 7, 0, 9), (0, 9, 5, 7), (0, 4, 5, 7))
MINOR_DEGREES = {2, 4, 9}
PROGRAMS = {
    "bass": (32, 33, 34, 35, 36, 37, 38, 39),
    "guitar": (24, 25, 26, 27, 28, 29, 30),
    "keys": (0, 1, 2, 4, 5, 6, 7, 11, 12, 16, 17, 18, 19),
    "synth": (80, 81, 82, 83, 84, 86, 87),
    "pad": (88, 89, 90, 91, 92, 93, 94, 95),
    "strings": (40, 41, 42, 44, 45, 48, 49, 50),
    "brass": (56, 57, 58, 59, 60, 61),
    "winds": (64, 65, 66, 68, 69, 71, 72, 73, 74, 22),
    "lead_vocal": (52, 53, 54),
    "fx": (96, 97, 98, 99, 100, 101, 102, 103, 122, 123, 125, 126),
}
#: Playing range (lowest, highest MIDI note) of a melodic line per role.
RANGES = {"strings": (43, 84), "brass": (50, 77), "winds": (55, 88), "lead_vocal": (48, 77), "synth": (55, 88)}
#: Level of the rest of the kit in a close microphone, dB relative to the close signal's RMS.
BLEED_DB = {"kick": (-24, -14), "snare": (-22, -12), "hats": (-26, -16), "toms": (-26, -16)}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)
KICK, SNARE, HATS, TOMS, CYMBALS = (35, 36), (37, 38, 40), (42, 44, 46), (41, 43, 45, 47, 48, 50), (49, 51, 52, 55, 57, 59)
PERC_NOTES = (39, 54, 56, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 73, 75, 76, 77, 80, 81, 82)


@dataclass
class Song:
    rng: np.random.Generator
    bpm: float
    key: int
    prog: tuple[int, ...]

    @property
    def beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def bars(self) -> int:
        return int((SONG_S - 0.5) / (4 * self.beat))

    def chord(self, bar: int, base: int, n: int = 3, seventh: bool = False) -> list[int]:
        deg = self.prog[bar % len(self.prog)]
        root = base + (self.key + deg) % 12
        third = 3 if deg in MINOR_DEGREES else 4
        tones = [root, root + third, root + 7] + ([root + (10 if deg in (7, 2, 4, 9) else 11)] if seventh else [])
        out = []
        i = 0
        while len(out) < n:
            out.append(tones[i % len(tones)] + 12 * (i // len(tones)))
            i += 1
        return out

    def scale_note(self, lo: int, hi: int, prev: int | None) -> int:
        cands = [p for p in range(lo, hi + 1) if (p - self.key) % 12 in MAJOR]
        if prev is None:
            return int(self.rng.choice(cands[len(cands) // 3: 2 * len(cands) // 3] or cands))
        near = [p for p in cands if abs(p - prev) <= 5]
        return int(self.rng.choice(near or cands))


def part_bass(s: Song, m: Midi) -> None:
    style = s.rng.integers(5)
    legato = 0.9 if s.rng.random() < 0.6 else float(s.rng.uniform(0.25, 0.5))  # or staccato
    for bar in range(s.bars):
        root = s.chord(bar, 28)[0]
        t0 = bar * 4 * s.beat
        steps = ((0, 1, 2, 3), (0, .5, 1, 1.5, 2, 2.5, 3, 3.5), (0, .75, 1.5, 2, 3, 3.5), (0, 2),
                 (0, 1.5, 2.75))[style]  # the last: sparse, boom-bap style
        for i, st in enumerate(steps):
            nxt = steps[i + 1] if i + 1 < len(steps) else 4
            p = root + (12 if s.rng.random() < 0.15 else 7 if s.rng.random() < 0.15 else 0)
            m.note(t0 + st * s.beat, min(nxt - st, 1.0) * s.beat * legato, p, int(s.rng.integers(70, 115)))


def part_guitar(s: Song, m: Midi, prog: int) -> None:
    style = "strum" if prog in (25, 29, 30) and s.rng.random() < 0.7 else ("arp" if s.rng.random() < 0.5 else "strum")
    for bar in range(s.bars):
        t0 = bar * 4 * s.beat
        if style == "strum":
            voicing = s.chord(bar, 40, n=6)
            hits = (0, 1, 1.5, 2.5, 3) if s.rng.random() < 0.5 else (0, 2)
            for i, h in enumerate(hits):
                nxt = hits[i + 1] if i + 1 < len(hits) else 4
                down = s.rng.random() < 0.6
                order = voicing if down else voicing[::-1]
                for k, p in enumerate(order):
                    m.note(t0 + h * s.beat + k * 0.012, (nxt - h) * s.beat * 0.95, p, int(s.rng.integers(60, 110)))
        else:
            tones = s.chord(bar, 48, n=5)
            for i in range(8):
                m.note(t0 + i * 0.5 * s.beat, 0.5 * s.beat * (1.6 if prog != 28 else 0.4),
                       tones[int(s.rng.integers(len(tones)))], int(s.rng.integers(60, 105)))


def part_keys(s: Song, m: Midi) -> None:
    style = s.rng.integers(3)
    for bar in range(s.bars):
        t0 = bar * 4 * s.beat
        chord = s.chord(bar, 48, n=4, seventh=s.rng.random() < 0.5)
        if style == 0:
            for h in (0, 2):
                for p in chord:
                    m.note(t0 + h * s.beat, 1.9 * s.beat, p, int(s.rng.integers(55, 100)))
        elif style == 1:
            for h in (0, 1.5, 2.5):
                for p in chord:
                    m.note(t0 + h * s.beat, 0.8 * s.beat, p, int(s.rng.integers(55, 100)))
            m.note(t0, 3.8 * s.beat, chord[0] - 12, 80)
        else:
            for i in range(8):
                m.note(t0 + i * 0.5 * s.beat, 0.9 * s.beat, chord[i % len(chord)] + 12 * (i // 4), int(s.rng.integers(55, 100)))


def part_synth(s: Song, m: Midi) -> None:
    lead = s.rng.random() < 0.35
    if lead:
        part_melody(s, m, "synth", legato=False)
        return
    div = int(s.rng.choice((2, 4)))
    for bar in range(s.bars):
        tones = s.chord(bar, 60, n=4)
        for i in range(4 * div):
            m.note(bar * 4 * s.beat + i * s.beat / div, s.beat / div * 0.7, tones[i % 4], int(s.rng.integers(70, 110)))


def part_pad(s: Song, m: Midi) -> None:
    for bar in range(s.bars):
        for p in s.chord(bar, 48, n=4, seventh=s.rng.random() < 0.4):
            m.note(bar * 4 * s.beat, 4 * s.beat + 0.2, p, int(s.rng.integers(60, 95)))


def part_strings(s: Song, m: Midi, prog: int) -> None:
    if prog in (48, 49, 50) and s.rng.random() < 0.6:
        part_pad(s, m)
    elif prog == 45:  # pizzicato
        for bar in range(s.bars):
            tones = s.chord(bar, 48, n=4)
            for i in range(8):
                if s.rng.random() < 0.7:
                    m.note(bar * 4 * s.beat + i * s.beat / 2, s.beat / 2, tones[i % 4], int(s.rng.integers(60, 110)))
    else:
        part_melody(s, m, "strings", legato=True)


def part_melody(s: Song, m: Midi, role: str, legato: bool, voice: bool = False) -> None:
    lo, hi = RANGES[role]
    span = int(s.rng.integers(12, 20))
    lo = int(s.rng.integers(lo, max(lo + 1, hi - span)))
    hi = lo + span
    t, prev = 0.0, None
    end = s.bars * 4 * s.beat
    while t < end - s.beat:
        phrase_end = t + s.beat * float(s.rng.choice((4, 6, 8)))
        while t < min(phrase_end, end - s.beat):
            dur = s.beat * float(s.rng.choice((0.5, 1, 1, 1.5, 2)))
            p = s.scale_note(lo, hi, prev)
            prev = p
            if voice:
                if s.rng.random() < 0.4:  # scoop into the note
                    m.bend(t, 0, -1.0)
                    m.bend(t + 0.04, 0, -0.5)
                    m.bend(t + 0.08, 0, 0.0)
                m.cc(t, 0, 1, int(s.rng.integers(20, 70)))
            m.note(t, dur * (1.0 if legato else 0.8), p, int(s.rng.integers(60, 110)))
            t += dur
        t += s.beat * float(s.rng.choice((1, 2, 2, 4)))


def part_fx(s: Song, m: Midi) -> None:
    t = float(s.rng.uniform(0, 2))
    while t < SONG_S - 3:
        dur = float(s.rng.uniform(2.0, 7.0))
        m.note(t, dur, int(s.rng.integers(48, 84)), int(s.rng.integers(70, 120)))
        t += dur + float(s.rng.uniform(0.0, 2.0))


def drum_pattern(s: Song) -> list[tuple[float, int, int]]:
    """(time s, GM note, velocity) of a kit pattern with fills and crashes."""
    style = s.rng.integers(3)
    hat_div = int(s.rng.choice((2, 2, 4)))
    ride = s.rng.random() < 0.25
    ev: list[tuple[float, int, int]] = []
    kick = int(s.rng.choice(KICK))
    snare = int(s.rng.choice((38, 40)))
    for bar in range(s.bars):
        t0 = bar * 4 * s.beat
        fill = bar % 4 == 3 or (bar % 2 == 1 and s.rng.random() < 0.5)
        kicks = ((0, 2, 2.5), (0, 1, 2, 3), (0, 0.75, 2.5))[style]
        for k in kicks:
            ev.append((t0 + k * s.beat, kick, int(s.rng.integers(90, 127))))
        for sn in (1, 3):
            ev.append((t0 + sn * s.beat, snare, int(s.rng.integers(90, 127))))
        if s.rng.random() < 0.5:
            ev.append((t0 + 2.75 * s.beat, snare, int(s.rng.integers(30, 60))))  # ghost note
        for i in range(4 * hat_div):
            if fill and i >= 2 * hat_div:
                break
            note = 51 if ride else (46 if i == 4 * hat_div - 1 and s.rng.random() < 0.3 else 42)
            ev.append((t0 + i * s.beat / hat_div, note, int(s.rng.integers(50, 110))))
            if ride and i % (2 * hat_div) == hat_div:  # pedal hi-hat on 2 and 4 under a ride
                ev.append((t0 + i * s.beat / hat_div, 44, int(s.rng.integers(60, 100))))
        if fill:
            toms = list(TOMS)[:: -1 if s.rng.random() < 0.5 else 1]
            for i in range(8):
                ev.append((t0 + 2 * s.beat + i * s.beat / 4, toms[(i * len(toms)) // 8], int(s.rng.integers(80, 127))))
        if bar % 4 == 0:
            ev.append((t0, int(s.rng.choice((49, 57, 55))), int(s.rng.integers(90, 127))))
    return ev


def kit_midi(kit: int, ev: list[tuple[float, int, int]], keep) -> Midi:
    m = Midi()
    m.program(9, kit)
    for t, note, vel in ev:
        if keep(note):
            m.note(t, 0.2, note, vel, ch=9)
    return m


def fluid_song(k: int, tmp: Path) -> list[Stem]:
    rng = np.random.default_rng([SEED, 1, k])
    s = Song(rng, float(rng.uniform(72, 150)), int(rng.integers(12)), PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))])
    n = int(SONG_S * SR)
    group = f"fluidr3_{k:02d}"
    out: list[Stem] = []
    lic = "MIT (FluidR3_GM SoundFont, Debian fluid-soundfont-gm); arrangement generated by this script"

    def add(label: str, x: np.ndarray, name: str, source: str = "fluidr3", licence: str = lic) -> None:
        if rms(x) < 1e-5:  # nothing rendered (a note the kit or program lacks)
            print(f"  {group}: {name} is silent, skipped", flush=True)
            return
        x = channels_for(label, x, rng)
        out.append(Stem(group, source, name, label, licence, normalise(roughen(x, rng), rng)))

    for role in ("bass", "guitar", "guitar", "keys", "synth", "pad", "strings", "brass", "winds", "lead_vocal", "fx"):
        prog = int(rng.choice(PROGRAMS[role]))
        m = Midi()
        m.program(0, prog)
        if role == "bass":
            part_bass(s, m)
        elif role == "guitar":
            part_guitar(s, m, prog)
        elif role == "keys":
            part_keys(s, m)
        elif role == "synth":
            part_synth(s, m)
        elif role == "pad":
            part_pad(s, m)
        elif role == "strings":
            part_strings(s, m, prog)
        elif role in ("brass", "winds"):
            part_melody(s, m, role, legato=role == "winds")
        elif role == "lead_vocal":
            part_melody(s, m, role, legato=True, voice=True)
        else:
            part_fx(s, m)
        add(role, render(m, tmp, n), f"{role}_gm{prog}")
    add("lead_vocal", espeak_voice(rng, n, tmp), "vocal_espeak", "espeak", ESPEAK_LICENCE)

    kit = int(rng.choice(DRUM_KITS))
    ev = drum_pattern(s)
    full = render(kit_midi(kit, ev, lambda nt: True), tmp, n)
    pieces = {"kick": KICK, "snare": SNARE, "hats": HATS, "toms": TOMS, "cymbals": CYMBALS}
    close_mics = {}
    for label, notes in pieces.items():
        close = render(kit_midi(kit, ev, lambda nt, notes=notes: nt in notes), tmp, n)
        close_mics[label] = close
        if label == "cymbals":
            continue
        x = mono(close) + mono(full) * (rms(close) / rms(full)) * 10 ** (rng.uniform(*BLEED_DB[label]) / 20)
        add(label, x, f"{label}_kit{kit}")
    oh = butter(full, "highpass", float(rng.uniform(80, 300)), int(rng.choice((1, 2))))
    add("overheads", oh, f"overheads_kit{kit}")
    # a kit on one stem: the pieces at a random balance (+-6 dB each) over the whole kit
    kit_mix = full * 10 ** (rng.uniform(-12, 0) / 20)
    for label, close in close_mics.items():
        kit_mix = kit_mix + close * 10 ** (rng.uniform(-6, 6) / 20)
    add("drums", kit_mix, f"drums_kit{kit}")
    m = Midi()
    m.program(9, 0)
    notes = [int(v) for v in rng.choice(PERC_NOTES, size=int(rng.integers(1, 3)), replace=False)]
    div = int(rng.choice((2, 4)))
    for bar in range(s.bars):
        for i in range(4 * div):
            if rng.random() < 0.75:
                m.note(bar * 4 * s.beat + i * s.beat / div, 0.2, notes[i % len(notes)], int(rng.integers(50, 120)), ch=9)
    add("percussion", render(m, tmp, n), "percussion_" + "_".join(map(str, notes)))
    return out


# ------------------------------------------------------------------------------------------------
# Sonic Pi samples (CC0)

SP = {
    "kick": ("drum_bass_hard", "drum_bass_soft", "drum_heavy_kick", "bd_808", "bd_ada", "bd_boom", "bd_fat",
             "bd_gas", "bd_haus", "bd_klub", "bd_pure", "bd_tek", "bd_zome", "bd_zum", "elec_soft_kick",
             "elec_hollow_kick"),
    "snare": ("drum_snare_hard", "drum_snare_soft", "sn_dolf", "sn_dub", "sn_generic", "sn_zome", "elec_snare",
              "elec_hi_snare", "elec_lo_snare", "elec_mid_snare", "elec_filt_snare"),
    "hats": ("drum_cymbal_closed", "drum_cymbal_pedal"),
    "open_hat": ("drum_cymbal_open",),
    "toms": ("drum_tom_hi_hard", "drum_tom_hi_soft", "drum_tom_mid_hard", "drum_tom_mid_soft",
             "drum_tom_lo_hard", "drum_tom_lo_soft"),
    "cymbals": ("drum_cymbal_hard", "drum_cymbal_soft", "drum_splash_hard", "drum_splash_soft"),
    "percussion": ("tabla_dhec", "tabla_ghe1", "tabla_ke1", "tabla_na", "tabla_na_o", "tabla_re", "tabla_te1",
                   "tabla_tun1", "drum_cowbell", "elec_triangle", "elec_wood", "perc_snap", "perc_snap2",
                   "elec_tick", "perc_bell"),
    "drum_loops": ("loop_amen", "loop_amen_full", "loop_breakbeat"),
    "perc_loops": ("loop_tabla", "loop_safari"),
    "fx": ("ambi_choir", "ambi_dark_woosh", "ambi_drone", "ambi_glass_hum", "ambi_glass_rub", "ambi_haunted_hum",
           "ambi_lunar_land", "ambi_soft_buzz", "ambi_swoosh", "vinyl_hiss", "vinyl_scratch", "vinyl_backspin",
           "vinyl_rewind", "misc_cineboom", "perc_swoosh", "perc_impact1", "perc_impact2", "elec_blip",
           "elec_ping", "glitch_robot1", "mehackit_phone1"),
    "bass": ("bass_dnb_f", "bass_hard_c", "bass_hit_c", "bass_thick_c", "bass_trance_c", "bass_voxy_c",
             "bass_woodsy_c"),
}
_sample_cache: dict[str, np.ndarray] = {}


def sample(name: str) -> np.ndarray:
    if name not in _sample_cache:
        x, sr = sf.read(str(SONICPI / f"{name}.flac"), dtype="float32", always_2d=True)
        if sr != SR:
            x = signal.resample_poly(x, SR, sr, axis=0).astype(np.float32)
        _sample_cache[name] = x if x.shape[1] == 2 else np.repeat(x, 2, axis=1)
    return _sample_cache[name]


def place(out: np.ndarray, x: np.ndarray, t: float, gain: float, pan: float = 0.0) -> None:
    i = int(t * SR)
    if i >= len(out):
        return
    seg = x[: len(out) - i] * gain
    g = np.array([math.cos((pan + 1) * math.pi / 4), math.sin((pan + 1) * math.pi / 4)], np.float32) * math.sqrt(2)
    out[i: i + len(seg)] += seg * g


def sonicpi_song(k: int) -> list[Stem]:
    rng = np.random.default_rng([SEED, 2, k])
    s = Song(rng, float(rng.uniform(75, 150)), int(rng.integers(12)), PROGRESSIONS[0])
    n = int(SONG_S * SR)
    group = f"sonicpi_{k:02d}"
    lic = "CC0-1.0 (Sonic Pi samples from freesound.org, Debian sonic-pi-samples); pattern generated by this script"
    pick = {r: str(rng.choice(SP[r])) for r in ("kick", "snare", "hats", "open_hat", "cymbals")}
    toms = [str(v) for v in rng.choice(SP["toms"], size=3, replace=False)]
    tracks = {r: np.zeros((n, 2), np.float32) for r in ("kick", "snare", "hats", "toms", "cymbals")}
    pans = {"kick": 0.0, "snare": 0.05, "hats": -0.4, "toms": 0.3, "cymbals": 0.4}
    for t, note, vel in drum_pattern(s):
        g = (vel / 127.0) ** 1.5
        if note in KICK:
            place(tracks["kick"], sample(pick["kick"]), t, g, pans["kick"])
        elif note in SNARE:
            place(tracks["snare"], sample(pick["snare"]), t, g, pans["snare"])
        elif note in (42, 44):
            place(tracks["hats"], sample(pick["hats"]), t, g, pans["hats"])
        elif note == 46:
            place(tracks["hats"], sample(pick["open_hat"])[: int(0.4 * SR)], t, g, pans["hats"])
        elif note in TOMS:
            place(tracks["toms"], sample(toms[TOMS.index(note) % 3]), t, g, -0.5 + 0.5 * (TOMS.index(note) % 3))
        else:  # ride, crash, splash
            place(tracks["cymbals"], sample(pick["cymbals"]), t, g * 0.7, pans["cymbals"])
    full = sum(tracks.values())
    out: list[Stem] = []

    def add(label: str, x: np.ndarray, name: str) -> None:
        x = channels_for(label, x, rng)
        out.append(Stem(group, "sonicpi", name, label, lic, normalise(roughen(x, rng), rng)))

    for label in ("kick", "snare", "hats", "toms"):
        close = tracks[label]
        bleed_db = BLEED_DB[label]
        add(label, mono(close) + mono(full) * (rms(close) / rms(full)) * 10 ** (rng.uniform(*bleed_db) / 20),
            f"{label}_{pick.get(label, 'toms')}")
    add("overheads", butter(full, "highpass", float(rng.uniform(80, 300)), 2), "overheads")
    add("drums", full, "drums")
    # a drum loop, a percussion part, a percussion loop, an effects track and a sampled bass line
    loop = sample(str(rng.choice(SP["drum_loops"])))
    add("drums", fit_length(np.tile(loop, (n // len(loop) + 1, 1)), n), "drums_loop")
    perc = np.zeros((n, 2), np.float32)
    names = [str(v) for v in rng.choice(SP["percussion"], size=2, replace=False)]
    div = int(rng.choice((2, 4)))
    for i in range(int(SONG_S / s.beat * div) - 2):
        if rng.random() < 0.7:
            place(perc, sample(names[i % 2]), i * s.beat / div, float(rng.uniform(0.3, 1.0)), float(rng.uniform(-0.5, 0.5)))
    add("percussion", perc, "percussion_" + "_".join(names))
    loop = sample(str(rng.choice(SP["perc_loops"])))
    add("percussion", fit_length(np.tile(loop, (n // len(loop) + 1, 1)), n), "percussion_loop")
    fx = np.zeros((n, 2), np.float32)
    t = float(rng.uniform(0, 1.5))
    while t < SONG_S - 1:
        x = sample(str(rng.choice(SP["fx"])))
        place(fx, x, t, float(rng.uniform(0.4, 1.0)), float(rng.uniform(-0.6, 0.6)))
        t += max(1.0, len(x) / SR * float(rng.uniform(0.4, 1.0)))
    add("fx", fx, "fx")
    bs = sample(str(rng.choice(SP["bass"])))
    bass = np.zeros((n, 2), np.float32)
    for bar in range(s.bars):
        for st in (0, 1.5, 2, 3):
            semis = (s.chord(bar, 0)[0] % 12) - (12 if s.chord(bar, 0)[0] % 12 > 6 else 0)
            x = signal.resample(bs[: int(0.8 * SR)], int(0.8 * SR / 2 ** (semis / 12)), axis=0).astype(np.float32)
            place(bass, x[: int(s.beat * 0.95 * SR)], bar * 4 * s.beat + st * s.beat, 0.8)
    add("bass", bass, "bass_" + "sampled")
    return out


# ------------------------------------------------------------------------------------------------
# numpy synthesis


def env_hits(times: list[float], n: int, make) -> np.ndarray:
    out = np.zeros((n, 1), np.float32)
    for t in times:
        x = make()
        place1(out, x, t)
    return out


def place1(out: np.ndarray, x: np.ndarray, t: float) -> None:
    i = int(t * SR)
    if i < len(out):
        seg = x[: len(out) - i]
        out[i: i + len(seg), 0] += seg


def numpy_song(k: int) -> list[Stem]:
    rng = np.random.default_rng([SEED, 3, k])
    s = Song(rng, float(rng.uniform(80, 150)), int(rng.integers(12)), PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))])
    n = int(SONG_S * SR)
    group = f"numpy_{k:02d}"
    lic = "CC0-1.0 (synthesised by this script)"
    beats = [i * s.beat for i in range(int((SONG_S - 0.5) / s.beat))]
    out: list[Stem] = []

    def add(label: str, x: np.ndarray, name: str) -> None:
        out.append(Stem(group, "numpy", name, label, lic, normalise(roughen(x.astype(np.float32), rng), rng)))

    f0, f1, dec = rng.uniform(45, 65), rng.uniform(120, 250), rng.uniform(0.15, 0.5)

    def kick() -> np.ndarray:
        t = np.arange(int(0.6 * SR)) / SR
        f = f0 + (f1 - f0) * np.exp(-t / 0.03)
        return (np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / dec)).astype(np.float32)

    hp = rng.uniform(5000, 9000)
    hat_dec = rng.uniform(0.02, 0.08)

    def hat() -> np.ndarray:
        t = np.arange(int(0.25 * SR)) / SR
        x = rng.standard_normal(len(t)) * np.exp(-t / hat_dec)
        return butter(x[:, None].astype(np.float32), "highpass", hp, 2)[:, 0]

    sn_tone = rng.uniform(160, 240)

    def snare() -> np.ndarray:
        t = np.arange(int(0.4 * SR)) / SR
        noise = butter((rng.standard_normal(len(t)) * np.exp(-t / 0.12))[:, None].astype(np.float32),
                       "bandpass", (800.0, 9000.0), 2)[:, 0]
        return (noise + 0.6 * np.sin(2 * np.pi * sn_tone * t) * np.exp(-t / 0.05)).astype(np.float32)

    kick_beats = [b for i, b in enumerate(beats) if i % 2 == 0 or rng.random() < 0.3]
    add("kick", env_hits(kick_beats, n, kick), "kick_sweep")
    add("snare", env_hits([b for i, b in enumerate(beats) if i % 2 == 1], n, snare), "snare_noise")
    add("hats", env_hits([b + h * s.beat / 2 for b in beats for h in (0, 1)], n, hat), "hats_noise")

    t = np.arange(n) / SR
    # saw bass (one-pole low-passed), root notes on eighths
    freq = np.zeros(n)
    gate = np.zeros(n)
    for bar in range(s.bars):
        p = s.chord(bar, 28)[0]
        for e in range(8):
            i0 = int((bar * 4 + e * 0.5) * s.beat * SR)
            i1 = int((bar * 4 + e * 0.5 + 0.4) * s.beat * SR)
            freq[i0:i1] = 440 * 2 ** ((p - 69) / 12)
            gate[i0:i1] = np.exp(-np.arange(i1 - i0) / SR / rng.uniform(0.1, 0.4))
    saw = 2 * ((np.cumsum(freq) / SR) % 1.0) - 1
    add("bass", butter((saw * gate)[:, None].astype(np.float32), "lowpass", float(rng.uniform(300, 900)), 2), "bass_saw")
    # detuned saw pad, slow attack, one chord per bar
    pad = np.zeros(n)
    for bar in range(s.bars):
        i0, i1 = int(bar * 4 * s.beat * SR), int((bar + 1) * 4 * s.beat * SR)
        tt = np.arange(i1 - i0) / SR
        envl = np.minimum(1, tt / 0.4) * np.minimum(1, (tt[::-1] + 0.05) / 0.3)
        for p in s.chord(bar, 48, n=4):
            for det in (-0.08, 0.0, 0.08):
                fr = 440 * 2 ** ((p + det - 69) / 12)
                pad[i0:i1] += (2 * ((fr * tt + rng.random()) % 1.0) - 1) * envl
    add("pad", butter(pad[:, None].astype(np.float32), "lowpass", float(rng.uniform(1200, 4000)), 2), "pad_saw")
    # riser / sweep effects
    fx = np.zeros(n)
    start = float(rng.uniform(0, 2))
    while start < SONG_S - 3:
        dur = float(rng.uniform(2, 6))
        i0, i1 = int(start * SR), min(n, int((start + dur) * SR))
        noise = rng.standard_normal(i1 - i0)
        fc = np.geomspace(float(rng.uniform(200, 800)), float(rng.uniform(4000, 12000)), i1 - i0)
        if rng.random() < 0.4:
            fc = fc[::-1]
        y = np.zeros(i1 - i0)
        st = 0.0
        a = 1 - np.exp(-2 * np.pi * fc / SR)
        for j in range(0, i1 - i0, 256):  # block-wise one-pole low-pass with a moving cutoff
            seg = noise[j:j + 256]
            yy, _ = signal.lfilter([a[j]], [1, a[j] - 1], seg, zi=[st * (1 - a[j])])
            y[j:j + 256] = yy
            st = yy[-1]
        fx[i0:i1] += (y - butter(y[:, None].astype(np.float32), "lowpass", 150.0, 1)[:, 0]) * np.linspace(0.2, 1, i1 - i0)
        start += dur + float(rng.uniform(0.5, 2))
    add("fx", fx[:, None], "fx_riser")
    # a formant "voice": glottal pulses with vibrato through vowel formants, phrases and consonants
    add("lead_vocal", formant_voice(s, rng, n), "vocal_formant")
    return out


ESPEAK_LICENCE = ("synthetic speech from espeak-ng (GPL-3+ program, rule-based formant synthesis: the audio "
                  "contains no recording; treated like the output of any program, not a copy of it)")
WORDS = ("oh", "baby", "love", "you", "yeah", "night", "walking", "down", "the", "road", "heart", "tonight", "never",
         "going", "home", "light", "fire", "hold", "me", "tell", "why", "dreaming", "away", "stay", "forever",
         "sunshine", "rain", "falling", "somebody", "feel", "alive", "ooh", "la", "my", "world", "dance", "time",
         "running", "back", "again", "together", "alone", "whoa", "city", "lights", "river", "summer", "gone")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+m1", "en-us+m3", "en-us+m5", "en-us+m7",
          "en-us+f1", "en-us+f2", "en-us+f3", "en-us+f4", "en-gb+f5", "en-gb+m2", "en-gb+m4")


def espeak_voice(rng: np.random.Generator, n: int, tmp: Path) -> np.ndarray:
    """Phrases of words 'sung' by espeak-ng (a formant synthesiser): each word on its own pitch,
    slow, with gaps between phrases; resampled to the session rate."""
    voice = str(rng.choice(VOICES))
    base = int(rng.integers(20, 80))
    out = np.zeros((n, 1), np.float32)
    t = float(rng.uniform(0.2, 1.0))
    k = 0
    while t < SONG_S - 1.5:
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 9)))]
        body = " ".join(f'<prosody pitch="{int(rng.integers(-30, 60)):+d}%">{w}</prosody>' for w in words)
        rate = int(rng.integers(40, 90))
        ssml = tmp / f"v{k}.xml"
        wav = tmp / f"v{k}.wav"
        ssml.write_text(f'<speak><prosody rate="{rate}%">{body}</prosody></speak>')
        subprocess.run(["espeak-ng", "-m", "-v", voice, "-p", str(base), "-f", str(ssml), "-w", str(wav)],
                       check=True, capture_output=True)
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        x = signal.resample_poly(x, SR, sr, axis=0).astype(np.float32)
        place1(out, x[:, 0], t)
        t += len(x) / SR + float(rng.uniform(0.3, 2.0))
        k += 1
    return out


VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (660, 1720, 2410), (490, 1350, 1690))


def formant_voice(s: Song, rng: np.random.Generator, n: int) -> np.ndarray:
    shift = float(rng.choice((1.0, 1.15)))  # male / female formant scale
    lo = 45 if shift == 1.0 else 57
    f0 = np.zeros(n)
    amp = np.zeros(n)
    vowel_at = np.zeros(n, int)
    t, prev = 0.3, None
    cons: list[float] = []
    while t < SONG_S - 1.0:
        phrase_end = t + float(rng.uniform(2, 5))
        while t < min(phrase_end, SONG_S - 1.0):
            dur = s.beat * float(rng.choice((0.5, 1, 1, 1.5, 2)))
            p = s.scale_note(lo, lo + 16, prev)
            prev = p
            i0, i1 = int(t * SR), min(n, int((t + dur) * SR))
            tt = np.arange(i1 - i0) / SR
            scoop = -1.0 * np.exp(-tt / 0.06) if rng.random() < 0.4 else 0.0
            vib = 0.3 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * tt) * np.minimum(1, tt / 0.3)
            f0[i0:i1] = 440 * 2 ** ((p + scoop + vib - 69) / 12)
            amp[i0:i1] = np.minimum(1, tt / 0.03) * np.minimum(1, (tt[::-1] + 0.01) / 0.05) * rng.uniform(0.5, 1)
            vowel_at[i0:i1] = int(rng.integers(len(VOWELS)))
            if rng.random() < 0.6:
                cons.append(t)
            t += dur
        t += float(rng.uniform(0.5, 2.0))
    f0 *= 1 + 0.003 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(f0) / SR
    pulses = np.diff(np.floor(phase), prepend=0.0) * amp
    src = signal.lfilter([1.0], [1, -0.97], pulses) + 0.02 * rng.standard_normal(n) * amp  # glottal tilt + breath
    out = np.zeros(n)
    for v, fmts in enumerate(VOWELS):
        mask = vowel_at == v
        if not mask.any():
            continue
        part = np.zeros(n)
        for k, (f, g) in enumerate(zip(fmts, (1.0, 0.5, 0.25))):
            b, a = signal.iirpeak(min(f * shift, SR / 2 - 100), f * shift / (60 + 40 * k), fs=SR)
            part += g * signal.lfilter(b, a, src)
        out += part * mask
    out = butter(out[:, None].astype(np.float32), "lowpass", 8000.0, 2)[:, 0]
    level = rms(out[:, None])
    for c in cons:  # fricatives and plosives
        m = int(rng.uniform(0.04, 0.12) * SR)
        i0 = int(c * SR)
        x = rng.standard_normal(m) * np.hanning(m)
        band = (3000.0, 9000.0) if rng.random() < 0.6 else (1000.0, 5000.0)
        x = butter(x[:, None].astype(np.float32), "bandpass", band, 2)[:, 0]
        out[i0:i0 + m] += x[: max(0, min(m, n - i0))] * level * rng.uniform(0.3, 1.0)
    return out[:, None].astype(np.float32)


# ------------------------------------------------------------------------------------------------
# real stems


def demo_stems() -> list[Stem]:
    lic = "CC0-1.0 arrangement and drum samples, MIT FluidR3_GM instruments (expertmix/demo/LICENSE-AUDIO.txt)"
    return [Stem("demo", "demo", f"demo/{p.name}", checked_label(f"demo/{p.name}"), lic, read(p))
            for p in sorted(DEMO.glob("*.flac"))]


def corpus_stems(corpus: Path) -> tuple[list[Stem], list[Stem]]:
    """(permissive training stems, GPL held-out stems) of the constructed songs."""
    train, gpl = [], []
    for song in CONSTRUCTED_SONGS:
        for p in sorted((corpus / song).glob("*.flac")):
            if p.name == "reference_mix.flac":
                continue
            key = f"{song}/{p.name}"
            label = checked_label(key)
            if p.name in GPL_STEMS.get(song, ()):
                gpl.append(Stem(song, "corpus_gpl", key, label, "GPL-2+ samples (see SOURCES.txt)", read(p)))
            else:
                train.append(Stem(song, "corpus", key, label, "CC0 / MIT (see SOURCES.txt)", read(p)))
    return train, gpl


def medleydb_stems(corpus: Path) -> list[Stem]:
    out = []
    for song in MEDLEYDB_SONGS:
        for p in sorted((corpus / song).glob("*.flac")):
            if p.name == "reference_mix.flac":
                continue
            key = f"{song}/{p.name}"
            out.append(Stem(song, "medleydb", key, checked_label(key), "CC BY-NC-SA 4.0 (evaluation only)", read(p)))
    return out


# ------------------------------------------------------------------------------------------------
# windows and rows


def active_windows(x: np.ndarray, min_share: float = MIN_ACTIVE_SHARE) -> list[int]:
    """Start frames of the windows of which at least ``min_share`` of the 100 ms blocks are active."""
    blk = int(BLOCK_S * SR)
    nb = len(x) // blk
    if nb == 0:
        return []
    p = np.mean(np.square(x[: nb * blk].astype(np.float64)).reshape(nb, blk, -1), axis=(1, 2))
    mom = np.convolve(p, np.ones(4) / 4, mode="valid") if nb >= 4 else p
    ref = float(mom.max())
    if ref <= 0:
        return []
    active = (p > ref * 10 ** (-ACTIVE_RANGE_DB / 10)) & (p > 10 ** (ACTIVE_FLOOR_DBFS / 10))
    win, hop = int(WINDOW_S / BLOCK_S), int(HOP_S / BLOCK_S)
    starts = list(range(0, max(1, nb - win + 1), hop))
    return [s0 * blk for s0 in starts if active[s0: s0 + win].mean() >= min_share]


def stem_rows(stem: Stem) -> list[dict]:
    n = int(WINDOW_S * SR)
    rows = []
    for start in active_windows(stem.audio, MIN_ACTIVE_SHARE_BY_LABEL.get(stem.label, MIN_ACTIVE_SHARE)):
        v = describe_audio(stem.audio[start: start + n], SR).values
        rows.append({"group": stem.group, "source": stem.source, "stem": stem.name, "label": stem.label,
                     "start_s": start / SR, "values": v})
    return rows


def whole_row(stem: Stem) -> dict:
    v = describe_audio(stem.audio, SR).values
    return {"group": stem.group, "source": stem.source, "stem": stem.name, "label": stem.label, "values": v}


def _song_job(job: tuple[str, int]) -> tuple[list[dict], list[dict]]:
    kind, k = job
    if kind == "fluidr3":
        with tempfile.TemporaryDirectory() as tmp:
            stems = fluid_song(k, Path(tmp))
    elif kind == "sonicpi":
        stems = sonicpi_song(k)
    else:
        stems = numpy_song(k)
    rows = [r for s in stems for r in stem_rows(s)]
    info = [{"group": s.group, "source": s.source, "stem": s.name, "label": s.label, "licence": s.licence}
            for s in stems]
    return rows, info


def cache_key(extra: str = "") -> str:
    h = hashlib.sha256(json.dumps([DATA_VERSION, DESCRIPTOR_VERSION, SEED, N_FLUID_SONGS,
                                   N_SONICPI_SONGS, N_NUMPY_SONGS, WINDOW_S, HOP_S, extra]).encode()).hexdigest()
    return h[:16]


def build_rows(corpus: Path, cache: Path | None, processes: int) -> dict:
    """All rows: training windows, and held-out windows plus whole stems. Cached as JSON."""
    path = cache / f"rows-{cache_key(str(corpus))}.json" if cache else None
    if path and path.is_file():
        print(f"rows from cache {path}")
        return json.loads(path.read_text())
    t0 = time.time()
    train: list[dict] = []
    stems_info: list[dict] = []
    for s in demo_stems():
        train += stem_rows(s)
        stems_info.append({"group": s.group, "source": s.source, "stem": s.name, "label": s.label, "licence": s.licence})
    permissive, gpl = corpus_stems(corpus)
    for s in permissive:
        train += stem_rows(s)
        stems_info.append({"group": s.group, "source": s.source, "stem": s.name, "label": s.label, "licence": s.licence})
    jobs = ([("fluidr3", k) for k in range(N_FLUID_SONGS)] + [("sonicpi", k) for k in range(N_SONICPI_SONGS)]
            + [("numpy", k) for k in range(N_NUMPY_SONGS)])
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for i, (rows, info) in enumerate(pool.imap(_song_job, jobs)):
            train += rows
            stems_info += info
            print(f"  {jobs[i][0]} {jobs[i][1]:2d}: {len(rows)} rows ({time.time() - t0:.0f} s)", flush=True)
    held: dict[str, dict] = {}
    for name, stems in (("medleydb", medleydb_stems(corpus)), ("corpus_gpl", gpl)):
        held[name] = {"windows": [r for s in stems for r in stem_rows(s)], "stems": [whole_row(s) for s in stems]}
    data = {"train": train, "stems": stems_info, "held_out": held}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    print(f"rows built in {time.time() - t0:.0f} s")
    return data


# ------------------------------------------------------------------------------------------------
# training and evaluation


def class_weights(labels: list[str]) -> np.ndarray:
    """Each class weighs the same in total (balanced)."""
    counts = collections.Counter(labels)
    k = len(counts)
    return np.array([len(labels) / (k * counts[c]) for c in labels])


def matrix(rows: list[dict]) -> np.ndarray:
    feats = [features(r["values"]) for r in rows]
    return np.array([[f[n] for n in FEATURE_NAMES] for f in feats], dtype=np.float64)


def train(x: np.ndarray, labels: list[str]) -> gbm.Classifier:
    return gbm.train_classifier(x, labels, list(FEATURE_NAMES), classes=list(ROLE_CLASSES),
                                weight=class_weights(labels), params=PARAMS, num_boost_round=ROUNDS, seed=SEED % 10000)


def fam(role: str) -> str:
    return ROLE_FAMILY[role]


def confusion(truth: list[str], pred: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, pred):
        out.setdefault(t, {})
        out[t][p] = out[t].get(p, 0) + 1
    return {t: dict(sorted(v.items(), key=lambda kv: -kv[1])) for t, v in sorted(out.items())}


def scores(truth: list[str], pred: list[str], baseline: str) -> dict:
    t, p = np.array(truth), np.array(pred)
    maj = collections.Counter(truth).most_common(1)[0][0]
    return {"n": len(t), "accuracy": float(np.mean(t == p)),
            "family_accuracy": float(np.mean([fam(a) == fam(b) for a, b in zip(truth, pred)])),
            "baseline_accuracy": float(np.mean(t == baseline)), "baseline_class": baseline,
            "set_majority_accuracy": float(np.mean(t == maj)), "set_majority_class": maj,
            "balanced_accuracy": float(np.mean([np.mean(p[t == c] == c) for c in sorted(set(truth))]))}


def cross_validate(data: dict) -> dict:
    rows = data["train"]
    x = matrix(rows)
    labels = [r["label"] for r in rows]
    groups = np.array([r["group"] for r in rows])
    pred = np.empty(len(rows), dtype=object)
    conf = np.zeros(len(rows))
    base = np.empty(len(rows), dtype=object)
    folds = gbm.group_folds(groups, CV_FOLDS)
    for k, test_groups in enumerate(folds):
        te = np.isin(groups, test_groups)
        tr = ~te
        assert not set(groups[te]) & set(groups[tr])
        model = train(x[tr], [labels[i] for i in np.flatnonzero(tr)])
        proba = model.predict_proba(x[te])
        pred[te] = [model.classes[i] for i in np.argmax(proba, axis=1)]
        conf[te] = proba.max(axis=1)
        base[te] = collections.Counter(labels[i] for i in np.flatnonzero(tr)).most_common(1)[0][0]
        print(f"  fold {k}: {int(te.sum())} rows, accuracy {np.mean(pred[te] == np.array(labels)[te]):.3f}", flush=True)
    lab = np.array(labels, dtype=object)
    out = {"folds": len(folds), "groups": int(len(np.unique(groups))), "rows": len(rows),
           "windows": {"accuracy": float(np.mean(pred == lab)),
                       "baseline_accuracy": float(np.mean(base == lab)),
                       "family_accuracy": float(np.mean([fam(a) == fam(b) for a, b in zip(labels, pred)])),
                       "balanced_accuracy": float(np.mean([np.mean(pred[lab == c] == c) for c in ROLE_CLASSES if (lab == c).any()]))}}
    # per stem: majority vote over the stem's windows
    votes: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    truth: dict[tuple[str, str], str] = {}
    for r, p in zip(rows, pred):
        key = (r["group"], r["stem"])
        votes[key].append(p)
        truth[key] = r["label"]
    keys = sorted(votes)
    sp = [vote(votes[k]) for k in keys]
    st = [truth[k] for k in keys]
    out["stems"] = scores(st, sp, collections.Counter(labels).most_common(1)[0][0])
    by_source: dict[str, dict] = {}
    for src in sorted({r["source"] for r in rows}):
        m = np.array([r["source"] == src for r in rows])
        by_source[src] = {"rows": int(m.sum()), "accuracy": float(np.mean(pred[m] == lab[m]))}
    out["by_source"] = by_source
    # accepted at the default confidence threshold
    ok = conf >= 0.5
    out["windows"]["accepted_share_at_0.5"] = float(np.mean(ok))
    out["windows"]["accuracy_when_accepted_at_0.5"] = float(np.mean(pred[ok] == lab[ok])) if ok.any() else None
    out["confusion_windows"] = confusion(labels, list(pred))
    real = [i for i, r in enumerate(rows) if r["source"] in ("demo", "corpus")]
    out["real_stems"] = {"rows": len(real), "accuracy": float(np.mean(pred[real] == lab[real])),
                         "family_accuracy": float(np.mean([fam(labels[i]) == fam(pred[i]) for i in real])),
                         "confusion": confusion([labels[i] for i in real], [pred[i] for i in real])}
    return out


def vote(preds: list[str]) -> str:
    c = collections.Counter(preds)
    best = max(c.values())
    return next(p for p in preds if c[p] == best)  # ties: the earliest window's class


def accepted_scores(truth: list[str], pred: list[str], conf: np.ndarray, threshold: float) -> dict:
    """What guess_roles would do at ``threshold``: share accepted, accuracy among the accepted."""
    ok = np.asarray(conf) >= threshold
    t, p = np.array(truth)[ok], np.array(pred)[ok]
    return {"accepted": int(ok.sum()), "of": len(truth),
            "accuracy_when_accepted": float(np.mean(t == p)) if ok.any() else None,
            "family_accuracy_when_accepted": float(np.mean([fam(a) == fam(b) for a, b in zip(t, p)])) if ok.any() else None}


def evaluate_held_out(model: gbm.Classifier, held: dict, train_majority: str) -> dict:
    out = {}
    for name, part in held.items():
        wins = part["windows"]
        wpred = model.predict(matrix(wins)) if wins else []
        votes: dict[str, list[str]] = collections.defaultdict(list)
        truth: dict[str, str] = {}
        for r, p in zip(wins, wpred):
            votes[r["stem"]].append(p)
            truth[r["stem"]] = r["label"]
        keys = sorted(votes)
        whole = part["stems"]
        proba = model.predict_proba(matrix(whole))
        whole_pred = [model.classes[i] for i in np.argmax(proba, axis=1)]
        out[name] = {
            "windows": scores([r["label"] for r in wins], list(wpred), train_majority),
            "stems_majority_vote": scores([truth[k] for k in keys], [vote(votes[k]) for k in keys], train_majority),
            "stems_whole": scores([r["label"] for r in whole], whole_pred, train_majority),
            "stems_whole_by_threshold": {f"{th:.1f}": accepted_scores([r["label"] for r in whole], whole_pred,
                                                                     proba.max(axis=1), th)
                                         for th in (0.3, 0.5, 0.7)},
            "per_stem": {r["stem"]: {"label": r["label"], "vote": vote(votes[r["stem"]]) if r["stem"] in votes else None,
                                     "whole": p, "whole_confidence": round(float(pr.max()), 3),
                                     "windows": len(votes.get(r["stem"], []))}
                         for r, p, pr in zip(whole, whole_pred, proba)},
        }
    return out


def summarise_training(data: dict) -> dict:
    rows = data["train"]
    by_source = collections.Counter(r["source"] for r in rows)
    stems = collections.Counter(s["source"] for s in data["stems"])
    songs = {src: len({r["group"] for r in rows if r["source"] == src}) for src in by_source}
    licences = {}
    for s in data["stems"]:
        licences.setdefault(s["source"], s["licence"] if s["source"] != "corpus" else "CC0-1.0 / MIT (constructed corpus, permissive stems only)")
    per_class = collections.Counter(r["label"] for r in rows)
    return {"rows": len(rows), "songs": len({r["group"] for r in rows}),
            "by_source": {src: {"rows": by_source[src], "stems": stems[src], "songs": songs[src],
                                "share": round(by_source[src] / len(rows), 4), "licence": licences[src]}
                          for src in sorted(by_source)},
            "rows_per_class": {c: per_class.get(c, 0) for c in ROLE_CLASSES},
            "corpus_stems": sorted(s["stem"] for s in data["stems"] if s["source"] == "corpus"),
            "window_s": WINDOW_S, "hop_s": HOP_S, "min_active_share": MIN_ACTIVE_SHARE,
            "min_active_share_by_label": MIN_ACTIVE_SHARE_BY_LABEL,
            "excluded": {"medleydb": "CC BY-NC-SA 4.0: held-out evaluation only",
                         "corpus_gpl": "GPL-2+ samples (Hydrogen, LMMS): held-out evaluation only, "
                                       "so the shipped model carries no GPL question",
                         **{f"{song}/{f}": "GPL-2+" for song, fs in GPL_STEMS.items() for f in fs}}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "roles")
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "role_training")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--skip-cv", action="store_true", help="train and evaluate only (no card metrics from CV)")
    ap.add_argument("--check", action="store_true",
                    help="rebuild everything without the cache into a temporary folder and compare with --out")
    ap.add_argument("--report", type=Path, default=None, help="also write the full metrics JSON here")
    args = ap.parse_args(argv)

    if not SF2.is_file() or hashlib.sha256(SF2.read_bytes()).hexdigest() != SF2_SHA256:
        raise SystemExit(f"{SF2}: missing or not the expected FluidR3_GM.sf2 (apt-get install fluid-soundfont-gm)")
    if shutil.which("fluidsynth") is None or shutil.which("espeak-ng") is None or not SONICPI.is_dir():
        raise SystemExit("needs fluidsynth, espeak-ng and sonic-pi-samples: "
                         "apt-get install fluidsynth espeak-ng sonic-pi-samples")

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            rc = main(["--corpus", str(args.corpus), "--out", tmp, "--no-cache", "--processes", str(args.processes)])
            if rc:
                return rc
            same = all((Path(tmp) / f).read_bytes() == (args.out / f).read_bytes()
                       for f in (f"{MODEL_NAME}.txt", f"{MODEL_NAME}.card.json"))
            print("reproduced bit for bit" if same else "DIFFERENT from the shipped model")
            return 0 if same else 1

    data = build_rows(args.corpus, None if args.no_cache else args.cache, args.processes)
    training = summarise_training(data)
    print(json.dumps({k: training[k] for k in ("rows", "songs", "by_source", "rows_per_class")}, indent=1))
    metrics: dict = {}
    if not args.skip_cv:
        print("cross-validation by song ...")
        metrics["cv_by_song"] = cross_validate(data)
    rows = data["train"]
    labels = [r["label"] for r in rows]
    model = train(matrix(rows), labels)
    train_majority = collections.Counter(labels).most_common(1)[0][0]
    metrics["held_out"] = evaluate_held_out(model, data["held_out"], train_majority)
    metrics["feature_importance"] = [[n, round(s, 4)] for n, s in gbm.feature_importance(model, top=15)]
    card = {
        "target": TARGET,
        "descriptor_version": DESCRIPTOR_VERSION,
        "description": "role of a stem from its level-independent descriptors (expertmix.role_model.features); "
                       "used only for stems whose name, the user and the roles file say nothing",
        "training": {**training, "script": "benchmarks/train_role_classifier.py", "seed": SEED,
                     "rounds": ROUNDS, "class_weights": "balanced (each class weighs the same in total)",
                     "tools": {"fluidsynth": subprocess.run(["fluidsynth", "--version"], capture_output=True,
                                                            text=True).stdout.split("\n")[0].strip(),
                               "espeak-ng": subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                                           text=True).stdout.strip(),
                               "FluidR3_GM.sf2 sha256": SF2_SHA256}},
        "licence": "Trained only on material free of conditions: CC0-1.0 (demo arrangement and drum samples, "
                   "Sonic Pi samples, numpy synthesis), MIT (FluidR3_GM instruments, with its notice in "
                   "models/roles/README.md) and synthetic speech generated by espeak-ng (a GPL-3+ program; "
                   "its rule-based formant output contains no recording and is treated as program output). "
                   "No GPL, share-alike or non-commercial audio recording or sample was trained on: "
                   "MedleyDB (CC BY-NC-SA) and the GPL-2+ corpus stems are evaluation only.",
        "metrics": metrics,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    gbm.save_model(model, args.out, MODEL_NAME, card)
    print(json.dumps({k: v for k, v in metrics.items() if k != "feature_importance"}, indent=1)[:20000])
    if args.report:
        args.report.write_text(json.dumps(metrics, indent=1))
    print(f"wrote {args.out}/{MODEL_NAME}.txt and .card.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
