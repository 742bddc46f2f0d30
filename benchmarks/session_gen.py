"""Deterministic synthetic multitrack session for the expertmix benchmark.

A 120 BPM pop song (intro, verse, chorus, verse, chorus, bridge, chorus, outro, scaled to the
requested length) played by up to 16 stems whose file names expertmix maps to roles: drums with
decays and mic bleed, a bass line, a sung-like lead with vibrato, formants and sibilants, backing
vocals, strummed and muted guitars, piano-like keys, an arpeggiated synth, a pad, strings, shaker
and tambourine, risers and impacts. Parts rest in some sections (digital silence for the
synthetic parts, a low noise floor for the "microphone" parts) so that the analysis, gates and
compressors see realistic material.

Everything comes from one numpy seed: the same arguments give bit-identical files. Notes are
built from a small cache of pre-computed templates (one per pitch and length) and placed by
overlap-add, so 16 x 180 s takes well under a minute to generate.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

#: Bump when the generated audio changes (invalidates cached sessions).
GENERATOR_VERSION = 1
SR = 44100
BPM = 120.0
BEAT_S = 60.0 / BPM
BAR_S = 4 * BEAT_S

#: The 16 stems: file name (without .wav), channels. Names are recognised by expertmix.roles.
STEMS: list[tuple[str, int]] = [
    ("kick", 1), ("snare", 1), ("hats", 1), ("toms", 1), ("overheads", 2), ("bass", 1),
    ("lead_vocal", 1), ("backing_vocals", 2), ("guitar_1", 1), ("guitar_2", 1), ("keys", 2),
    ("synth", 2), ("pad", 2), ("strings", 2), ("percussion", 2), ("fx", 2),
]
#: Sample peak of each part after normalisation, dBFS (a plausible spread of recording levels).
PEAK_DBFS = {
    "kick": -2.0, "snare": -3.0, "hats": -11.0, "toms": -5.0, "overheads": -8.0, "bass": -4.0,
    "lead_vocal": -3.5, "backing_vocals": -9.0, "guitar_1": -6.0, "guitar_2": -8.0, "keys": -7.0,
    "synth": -9.0, "pad": -13.0, "strings": -10.0, "percussion": -15.0, "fx": -6.0,
}
#: Parts recorded "with a microphone": a -78 dBFS noise floor instead of digital silence.
MIC_PARTS = {"kick", "snare", "hats", "toms", "overheads", "lead_vocal", "backing_vocals", "guitar_1",
             "guitar_2", "percussion"}

#: Song form for 180 s (90 bars); other lengths are scaled onto it.
FORM: list[tuple[str, int]] = [("intro", 8), ("verse", 16), ("chorus", 16), ("verse", 16), ("chorus", 16),
                               ("bridge", 8), ("chorus", 8), ("outro", 2)]
FORM_BARS = sum(n for _, n in FORM)
#: Chord per bar (MIDI root, minor?) for the main sections and the bridge.
MAIN_CHORDS = [(48, False), (43, False), (45, True), (41, False)]   # C G Am F
BRIDGE_CHORDS = [(50, True), (52, True), (41, False), (43, False)]  # Dm Em F G


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


class Song:
    """Bar grid, sections and chords of the song for a given length."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.frames = int(round(seconds * SR))
        self.bars = int(math.ceil(seconds / BAR_S))
        starts, acc = [], 0
        for name, n in FORM:
            starts.append((acc, name))
            acc += n
        self._starts = starts

    def section(self, bar: int) -> str:
        pos = bar * FORM_BARS / max(1, self.bars)
        name = self._starts[0][1]
        for start, n in self._starts:
            if pos >= start:
                name = n
        return name

    def section_start(self, bar: int) -> bool:
        return bar == 0 or self.section(bar) != self.section(bar - 1)

    def section_end(self, bar: int) -> bool:
        return bar == self.bars - 1 or self.section(bar) != self.section(bar + 1)

    def chord(self, bar: int) -> tuple[int, list[int]]:
        """Root (MIDI) and triad (MIDI, close position above the root) of a bar."""
        prog = BRIDGE_CHORDS if self.section(bar) == "bridge" else MAIN_CHORDS
        root, minor = prog[bar % 4]
        return root, [root, root + (3 if minor else 4), root + 7]

    @staticmethod
    def t(bar: int, beat: float = 0.0) -> int:
        """Frame of a bar/beat position."""
        return int(round((bar * BAR_S + beat * BEAT_S) * SR))


# --------------------------------------------------------------------------------------------
# building blocks


def _add(buf: np.ndarray, start: int, sig: np.ndarray, gain: float = 1.0) -> None:
    """Overlap-add ``sig`` (frames[, channels]) into ``buf`` at ``start``, clipped to the buffer."""
    if start >= len(buf) or start + len(sig) <= 0:
        return
    a, b = max(0, start), min(len(buf), start + len(sig))
    buf[a:b] += gain * sig[a - start:b - start]


def _decay(n: int, tau_s: float, attack_s: float = 0.002) -> np.ndarray:
    t = np.arange(n) / SR
    env = np.exp(-t / tau_s)
    na = max(1, int(attack_s * SR))
    env[:na] *= np.linspace(0.0, 1.0, na, endpoint=False)
    return env


def _adsr(n: int, attack_s: float, release_s: float, sustain: float = 0.8, decay_s: float = 0.15) -> np.ndarray:
    t = np.arange(n) / SR
    env = sustain + (1.0 - sustain) * np.exp(-t / decay_s)
    na = min(n, max(1, int(attack_s * SR)))
    env[:na] *= np.linspace(0.0, 1.0, na, endpoint=False)
    nr = min(n, max(1, int(release_s * SR)))
    env[n - nr:] *= np.linspace(1.0, 0.0, nr)
    return env


def _harmonic(n: int, f0: float, amps, vibrato_cents: float = 0.0, vibrato_hz: float = 5.5,
              phase_seed: int = 0, detune_cents: float = 0.0) -> np.ndarray:
    """Sum of harmonics k*f0 with amplitudes ``amps(k)`` (band-limited to 0.45 SR)."""
    t = np.arange(n) / SR
    f = f0 * 2.0 ** (detune_cents / 1200.0)
    if vibrato_cents:
        onset = np.clip(t / 0.25, 0.0, 1.0)  # vibrato fades in over 250 ms
        ratio = 2.0 ** (vibrato_cents * onset * np.sin(2 * np.pi * vibrato_hz * t) / 1200.0)
        phase = 2 * np.pi * np.cumsum(f * ratio) / SR
    else:
        phase = 2 * np.pi * f * t
    rng = np.random.default_rng(abs(int(phase_seed)))
    out = np.zeros(n)
    kmax = int(0.45 * SR / f)
    for k in range(1, kmax + 1):
        a = amps(k, k * f)
        if a < 1e-4:
            continue
        out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _formants(centres: list[tuple[float, float, float]]):
    """Amplitude function for _harmonic: a 1/k source through gaussian formant bumps."""
    def amps(k: int, fk: float) -> float:
        g = 0.15
        for fc, bw, gain in centres:
            g += gain * math.exp(-0.5 * ((fk - fc) / bw) ** 2)
        return g / k ** 0.7
    return amps


def _bandpass_noise(rng: np.random.Generator, n: int, lo: float, hi: float | None, order: int = 2) -> np.ndarray:
    x = rng.standard_normal(n)
    if hi is None:
        sos = signal.butter(order, lo, "highpass", fs=SR, output="sos")
    else:
        sos = signal.butter(order, [lo, hi], "bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, x)


class _Cache(dict):
    def get_or(self, key, make):
        if key not in self:
            self[key] = make()
        return self[key]


# --------------------------------------------------------------------------------------------
# drum sounds


def _kick_hit(rng, n=int(0.45 * SR)) -> np.ndarray:
    t = np.arange(n) / SR
    f = 48.0 + 110.0 * np.exp(-t / 0.035)
    body = np.sin(2 * np.pi * np.cumsum(f) / SR) * _decay(n, 0.22, 0.001)
    click = _bandpass_noise(rng, n, 1500, 6000) * _decay(n, 0.004, 0.0005) * 0.5
    return body + click


def _snare_hit(rng, n=int(0.4 * SR)) -> np.ndarray:
    t = np.arange(n) / SR
    tone = np.sin(2 * np.pi * 185.0 * t) * _decay(n, 0.06) + 0.5 * np.sin(2 * np.pi * 330.0 * t) * _decay(n, 0.04)
    noise = _bandpass_noise(rng, n, 1200, 9000) * _decay(n, 0.13, 0.001)
    return 0.6 * tone + noise


def _hat_hit(rng, open_: bool) -> np.ndarray:
    n = int((0.5 if open_ else 0.09) * SR)
    return _bandpass_noise(rng, n, 7000, None, 4) * _decay(n, 0.22 if open_ else 0.025, 0.0005)


def _tom_hit(rng, f0: float) -> np.ndarray:
    n = int(0.8 * SR)
    t = np.arange(n) / SR
    f = f0 * (1.0 + 0.35 * np.exp(-t / 0.05))
    return np.sin(2 * np.pi * np.cumsum(f) / SR) * _decay(n, 0.28) + 0.25 * _bandpass_noise(rng, n, 300, 4000) * _decay(n, 0.05)


def _crash(rng) -> np.ndarray:
    n = int(3.5 * SR)
    return _bandpass_noise(rng, n, 3000, 16000) * _decay(n, 1.1, 0.001)


def _ride(rng) -> np.ndarray:
    n = int(1.2 * SR)
    t = np.arange(n) / SR
    partials = [3120.0, 4410.0, 5270.0, 6890.0, 8310.0]
    tone = sum(np.sin(2 * np.pi * p * t + rng.uniform(0, 6.28)) / (i + 1) for i, p in enumerate(partials))
    return (0.5 * tone + 0.4 * _bandpass_noise(rng, n, 5000, 15000)) * _decay(n, 0.45, 0.0005)


# --------------------------------------------------------------------------------------------
# the parts


def _drums(song: Song, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = song.frames
    kick, snare, hats, toms = (np.zeros(n) for _ in range(4))
    crash = np.zeros(n)
    ride = np.zeros(n)
    kick_t = [_kick_hit(rng) for _ in range(4)]
    snare_t = [_snare_hit(rng) for _ in range(6)]
    hat_c = [_hat_hit(rng, False) for _ in range(6)]
    hat_o = [_hat_hit(rng, True) for _ in range(2)]
    tom_t = {f: _tom_hit(rng, f) for f in (196.0, 147.0, 98.0)}
    crash_t = _crash(rng)
    ride_t = _ride(rng)
    for bar in range(song.bars):
        sec = song.section(bar)
        intro_quiet = sec == "intro" and bar < song.bars * 4 / FORM_BARS
        if sec == "outro" and bar > 0 and song.section_end(bar):
            pass
        if song.section_start(bar) and sec in ("verse", "chorus", "outro", "bridge"):
            _add(crash, song.t(bar), crash_t, rng.uniform(0.8, 1.0))
        if not intro_quiet:
            pattern = [0.0, 2.0, 2.5] if sec != "chorus" else [0.0, 1.0, 2.0, 3.0]
            if sec == "bridge":
                pattern = [0.0]
            for b in pattern:
                _add(kick, song.t(bar, b), kick_t[rng.integers(4)], rng.uniform(0.85, 1.0))
            if sec != "bridge":
                for b in (1.0, 3.0):
                    _add(snare, song.t(bar, b), snare_t[rng.integers(6)], rng.uniform(0.85, 1.0))
                for b in (1.75, 3.25):  # ghost notes
                    if rng.random() < 0.4:
                        _add(snare, song.t(bar, b), snare_t[rng.integers(6)], rng.uniform(0.08, 0.18))
            if sec in ("verse", "chorus", "intro"):
                for e in range(8):
                    if e == 7 and bar % 2 == 1:
                        _add(hats, song.t(bar, e / 2), hat_o[rng.integers(2)], 0.8)
                    else:
                        _add(hats, song.t(bar, e / 2), hat_c[rng.integers(6)], (1.0 if e % 2 == 0 else 0.6) * rng.uniform(0.85, 1.0))
            if sec == "chorus":
                for b in range(4):
                    _add(ride, song.t(bar, b), ride_t, rng.uniform(0.6, 0.8))
        if song.section_end(bar) and sec in ("verse", "chorus", "bridge"):  # tom fill on beats 3-4
            for i, f in enumerate([196.0, 196.0, 147.0, 147.0, 98.0, 98.0, 98.0, 98.0]):
                _add(toms, song.t(bar, 2.0 + i * 0.25), tom_t[f], rng.uniform(0.8, 1.0))
    # microphone bleed: every close mic hears the rest of the kit
    snare_mic = snare + 0.06 * kick + 0.05 * hats
    tom_mic = toms + 0.05 * snare + 0.04 * kick + 0.02 * hats
    kick_mic = kick + 0.03 * snare
    hats_mic = hats + 0.08 * snare + 0.01 * kick
    d = int(0.0004 * SR)
    left = 0.25 * kick + 0.55 * snare + 0.25 * hats + 0.45 * toms + crash + 0.4 * ride
    right = 0.25 * kick + 0.45 * snare + 0.55 * hats + 0.3 * toms + 0.8 * crash + 0.6 * ride
    right = np.concatenate([np.zeros(d), right[:-d]])
    overheads = np.stack([left, right], axis=1)
    return {"kick": kick_mic, "snare": snare_mic, "hats": hats_mic, "toms": tom_mic, "overheads": overheads}


def _bass(song: Song, rng) -> np.ndarray:
    out = np.zeros(song.frames)
    cache = _Cache()

    def note(m: int, dur: int) -> np.ndarray:
        def make():
            amps = lambda k, fk: (1.0 / k) * math.exp(-fk / 700.0)  # noqa: E731 (a dark saw)
            return _harmonic(dur, midi_hz(m), amps, phase_seed=m) * _adsr(dur, 0.004, 0.02, 0.6, 0.12)
        return cache.get_or((m, dur), make)

    for bar in range(song.bars):
        sec = song.section(bar)
        if sec == "intro" and bar < song.bars * 4 / FORM_BARS:
            continue
        root, _ = song.chord(bar)
        m = root - 12
        if sec == "bridge":
            _add(out, song.t(bar), note(m, int(BAR_S * SR * 0.95)), 0.9)
            continue
        for e in range(8):
            mm = m + (12 if (sec == "chorus" and e in (3, 7)) else 0)
            _add(out, song.t(bar, e / 2), note(mm, int(BEAT_S / 2 * SR * 0.9)), rng.uniform(0.8, 1.0))
    return out


_VOWELS = [[(700, 130, 1.0), (1220, 160, 0.6), (2600, 250, 0.3)],   # a
           [(400, 100, 1.0), (2000, 200, 0.5), (2800, 250, 0.35)],  # e
           [(300, 80, 1.0), (870, 120, 0.4), (2250, 250, 0.15)],    # u
           [(500, 100, 1.0), (900, 130, 0.6), (2500, 250, 0.2)]]    # o


def _lead_vocal(song: Song, rng) -> np.ndarray:
    out = np.zeros(song.frames)
    cache = _Cache()
    sib = [_bandpass_noise(rng, int(0.09 * SR), 5000, 11000, 4) * _adsr(int(0.09 * SR), 0.01, 0.03, 1.0, 1.0) for _ in range(4)]
    breath = _bandpass_noise(rng, int(0.3 * SR), 800, 6000) * _adsr(int(0.3 * SR), 0.1, 0.15, 1.0, 1.0)
    scale = [0, 2, 4, 5, 7, 9, 11]

    def note(m: int, dur: int, vowel: int) -> np.ndarray:
        def make():
            sig = _harmonic(dur, midi_hz(m), _formants(_VOWELS[vowel]), vibrato_cents=35.0, phase_seed=m + 100 * vowel)
            return sig * _adsr(dur, 0.035, 0.06, 0.85, 0.2)
        return cache.get_or((m, dur, vowel), make)

    for bar in range(song.bars):
        sec = song.section(bar)
        if sec not in ("verse", "chorus") or bar % 4 == 3:  # a breath every fourth bar
            continue
        _, triad = song.chord(bar)
        base = 60 if sec == "verse" else 64
        beat = 0.0
        if bar % 4 == 0:
            _add(out, song.t(bar) - int(0.35 * SR), breath, 0.08)
        while beat < 3.75:
            dur_beats = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            dur_beats = min(dur_beats, 4.0 - beat)
            if rng.random() < 0.6:
                m = int(rng.choice(triad)) + 12 + (base - 60)
            else:
                m = 60 + scale[rng.integers(7)] + (base - 60)
            m = max(55, min(79, m))
            dur = int(dur_beats * BEAT_S * SR * 0.92)
            start = song.t(bar, beat)
            _add(out, start, note(m, dur, int(rng.integers(4))), rng.uniform(0.7, 1.0))
            if rng.random() < 0.3:  # an 's' or 't' at the onset
                _add(out, start - int(0.04 * SR), sib[rng.integers(4)], rng.uniform(0.25, 0.5))
            beat += dur_beats
    return out


def _backing_vocals(song: Song, rng) -> np.ndarray:
    out = np.zeros((song.frames, 2))
    cache = _Cache()

    def voice(m: int, dur: int, detune: float) -> np.ndarray:
        def make():
            sig = _harmonic(dur, midi_hz(m), _formants(_VOWELS[2]), vibrato_cents=20.0, vibrato_hz=5.0,
                            phase_seed=m + int(detune * 10), detune_cents=detune)
            return sig * _adsr(dur, 0.15, 0.3, 0.9, 0.3)
        return cache.get_or((m, dur, detune), make)

    dur = int(BAR_S * SR * 0.97)
    for bar in range(song.bars):
        if song.section(bar) != "chorus":
            continue
        _, triad = song.chord(bar)
        for i, m in enumerate(triad):
            _add(out[:, 0], song.t(bar), voice(m + 12, dur, -7.0), 0.5 + 0.15 * i)
            _add(out[:, 1], song.t(bar) + int(0.012 * SR), voice(m + 12, dur, 6.0), 0.65 - 0.15 * i)
    return out


def _pluck(m: int, dur: int, bright: float, seed: int) -> np.ndarray:
    """A plucked string: harmonics whose decay shortens with frequency."""
    t = np.arange(dur) / SR
    f0 = midi_hz(m)
    rng = np.random.default_rng(seed)
    out = np.zeros(dur)
    for k in range(1, min(24, int(0.45 * SR / f0)) + 1):
        tau = 1.2 / (1.0 + (k * f0 / 900.0) ** 1.2)
        out += (bright ** (k - 1)) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) * np.exp(-t / tau)
    na = int(0.002 * SR)
    out[:na] *= np.linspace(0, 1, na, endpoint=False)
    nr = min(dur, int(0.02 * SR))
    out[dur - nr:] *= np.linspace(1, 0, nr)
    return out


def _guitar_1(song: Song, rng) -> np.ndarray:
    out = np.zeros(song.frames)
    cache = _Cache()
    strum = [0.0, 1.0, 1.5, 2.5, 3.0, 3.5]  # D . D U . U D U

    def chord(root: int, triad: tuple[int, ...], down: bool) -> np.ndarray:
        def make():
            voicing = [root - 12, root - 5, triad[0], triad[1], triad[2], triad[0] + 12]
            if not down:
                voicing = voicing[::-1][:4]
            n = int(BEAT_S * SR * 1.1)
            sig = np.zeros(n + 6 * int(0.012 * SR))
            for i, m in enumerate(voicing):
                _add(sig, i * int(0.012 * SR), _pluck(m, n, 0.75, m + i), 1.0)
            return sig
        return cache.get_or((root, triad, down), make)

    for bar in range(song.bars):
        if song.section(bar) not in ("verse", "chorus", "outro"):
            continue
        root, triad = song.chord(bar)
        for j, b in enumerate(strum):
            down = b == int(b)
            _add(out, song.t(bar, b), chord(root, tuple(triad), down), rng.uniform(0.6, 1.0) * (1.0 if down else 0.7))
    return out


def _guitar_2(song: Song, rng) -> np.ndarray:
    out = np.zeros(song.frames)
    cache = _Cache()
    first_chorus = next((b for b in range(song.bars) if song.section(b) == "chorus"), song.bars)

    def mute(m: int) -> np.ndarray:
        def make():
            n = int(0.2 * SR)
            sig = _pluck(m, n, 0.6, m) + 0.7 * _pluck(m + 7, n, 0.6, m + 7)
            return sig * _decay(n, 0.05, 0.001)
        return cache.get_or(m, make)

    for bar in range(first_chorus, song.bars):
        if song.section(bar) not in ("verse", "chorus"):
            continue
        root, _ = song.chord(bar)
        for e in range(8):
            _add(out, song.t(bar, e / 2), mute(root - 12 + (0 if e % 4 else 12)), rng.uniform(0.7, 1.0))
    return out


def _keys(song: Song, rng) -> np.ndarray:
    out = np.zeros((song.frames, 2))
    cache = _Cache()

    def piano(m: int) -> np.ndarray:
        def make():
            n = int(2.0 * SR)
            t = np.arange(n) / SR
            f0 = midi_hz(m)
            sig = np.zeros(n)
            for k in range(1, min(16, int(0.45 * SR / f0)) + 1):
                fk = k * f0 * math.sqrt(1 + 0.0004 * k * k)  # slight inharmonicity
                sig += 0.8 ** k * np.sin(2 * np.pi * fk * t + k) * np.exp(-t / (1.6 / k ** 0.6))
            sig *= _adsr(n, 0.002, 0.25, 1.0, 1.0)
            return sig
        return cache.get_or(m, make)

    for bar in range(song.bars):
        sec = song.section(bar)
        if sec not in ("intro", "verse", "bridge", "outro"):
            continue
        root, triad = song.chord(bar)
        for b in (0.0, 2.0) if sec != "intro" else (0.0, 1.0, 2.0, 3.0):
            for m in [root - 12] + [x + 12 for x in triad]:
                pan = (m - 48) / 36.0  # low notes left, high notes right
                g = rng.uniform(0.6, 0.9)
                start = song.t(bar, b) + int(rng.uniform(0, 0.01) * SR)
                _add(out[:, 0], start, piano(m), g * (0.6 - 0.4 * pan))
                _add(out[:, 1], start, piano(m), g * (0.6 + 0.4 * pan))
    return out


def _synth(song: Song, rng) -> np.ndarray:
    out = np.zeros((song.frames, 2))
    cache = _Cache()

    def blip(m: int) -> np.ndarray:
        def make():
            n = int(0.2 * SR)
            amps = lambda k, fk: (1.0 / k) * math.exp(-fk / 3000.0)  # noqa: E731
            return _harmonic(n, midi_hz(m), amps, phase_seed=m) * _decay(n, 0.07, 0.002)
        return cache.get_or(m, make)

    for bar in range(song.bars):
        if song.section(bar) not in ("chorus", "outro", "bridge"):
            continue
        _, triad = song.chord(bar)
        seq = [triad[0], triad[1], triad[2], triad[1] + 12, triad[2] + 12, triad[1] + 12, triad[2], triad[1]]
        for s in range(16):
            m = seq[s % 8] + 12
            g = 0.8 if s % 4 == 0 else 0.55
            side = 0.8 if s % 2 == 0 else 0.3
            start = song.t(bar, s / 4)
            _add(out[:, 0], start, blip(m), g * side)
            _add(out[:, 1], start + int(0.003 * SR), blip(m), g * (1.1 - side))
    return out


def _sustained(song: Song, rng, sections: tuple[str, ...], octave: int, amps, attack_s: float,
               vibrato: float, detunes: tuple[float, float]) -> np.ndarray:
    out = np.zeros((song.frames, 2))
    cache = _Cache()
    dur = int(BAR_S * SR) + int(0.6 * SR)

    def tone(m: int, det: float) -> np.ndarray:
        def make():
            sig = _harmonic(dur, midi_hz(m), amps, vibrato_cents=vibrato, vibrato_hz=4.8, phase_seed=m + 1000 + int(det),
                            detune_cents=det)
            return sig * _adsr(dur, attack_s, 0.6, 1.0, 1.0)
        return cache.get_or((m, det), make)

    for bar in range(song.bars):
        if song.section(bar) not in sections:
            continue
        _, triad = song.chord(bar)
        for m in triad:
            _add(out[:, 0], song.t(bar), tone(m + octave, detunes[0]), 0.33)
            _add(out[:, 1], song.t(bar), tone(m + octave, detunes[1]), 0.33)
    return out


def _pad(song: Song, rng) -> np.ndarray:
    amps = lambda k, fk: (1.0 / k) * math.exp(-fk / 1200.0)  # noqa: E731
    return _sustained(song, rng, ("intro", "verse", "chorus", "bridge", "outro"), 0, amps, 0.5, 0.0, (-9.0, 9.0))


def _strings(song: Song, rng) -> np.ndarray:
    amps = _formants([(500, 200, 0.6), (1500, 400, 0.4), (3000, 600, 0.3)])
    return _sustained(song, rng, ("chorus", "bridge"), 12, amps, 0.35, 18.0, (-5.0, 4.0))


def _percussion(song: Song, rng) -> np.ndarray:
    """A stereo pair on shaker (chorus, left of centre) and tambourine (bridge, right of centre)."""
    out = np.zeros((song.frames, 2))
    shaker = [_bandpass_noise(rng, int(0.08 * SR), 4000, 12000, 3) * _adsr(int(0.08 * SR), 0.015, 0.05, 1.0, 1.0) for _ in range(4)]
    tamb = _bandpass_noise(rng, int(0.35 * SR), 6000, 14000, 3) * _decay(int(0.35 * SR), 0.09, 0.001)
    d = int(0.0007 * SR)  # the far microphone hears each hit 0.7 ms later
    for bar in range(song.bars):
        sec = song.section(bar)
        if sec == "chorus":
            for s in range(16):
                g = (1.0 if s % 2 else 0.6) * rng.uniform(0.8, 1.0)
                hit = shaker[rng.integers(4)]
                _add(out[:, 0], song.t(bar, s / 4), hit, g)
                _add(out[:, 1], song.t(bar, s / 4) + d, hit, 0.6 * g)
        elif sec == "bridge":
            for b in (1.0, 3.0):
                g = rng.uniform(0.8, 1.0)
                _add(out[:, 0], song.t(bar, b) + d, tamb, 0.6 * g)
                _add(out[:, 1], song.t(bar, b), tamb, g)
    return out


def _fx(song: Song, rng) -> np.ndarray:
    out = np.zeros((song.frames, 2))
    for bar in range(1, song.bars):
        if song.section(bar) == "chorus" and song.section_start(bar):
            # a two-bar riser: a noise sweep and a rising chirp
            n = int(2 * BAR_S * SR)
            start = song.t(bar) - n
            t = np.arange(n) / SR
            ramp = (t / t[-1]) ** 2
            f = 200.0 + 3800.0 * ramp
            chirp = np.sin(2 * np.pi * np.cumsum(f) / SR)
            for ch in range(2):
                noise = _bandpass_noise(rng, n, 2000, 12000)
                _add(out[:, ch], start, (0.6 * noise + 0.3 * chirp) * ramp)
            # an impact on the downbeat
            m = int(2.5 * SR)
            tt = np.arange(m) / SR
            boom = np.sin(2 * np.pi * np.cumsum(38.0 + 40.0 * np.exp(-tt / 0.08)) / SR) * _decay(m, 0.6, 0.001)
            for ch in range(2):
                hit = boom + 0.4 * _bandpass_noise(rng, m, 500, 8000) * _decay(m, 0.3, 0.001)
                _add(out[:, ch], song.t(bar), hit)
    return out


_PARTS = {
    "bass": _bass, "lead_vocal": _lead_vocal, "backing_vocals": _backing_vocals, "guitar_1": _guitar_1,
    "guitar_2": _guitar_2, "keys": _keys, "synth": _synth, "pad": _pad, "strings": _strings,
    "percussion": _percussion, "fx": _fx,
}
_DRUMS = ("kick", "snare", "hats", "toms", "overheads")


def stem_list(count: int) -> list[tuple[str, str, int]]:
    """(file name, part, channels) of ``count`` stems: the 16 parts, then numbered doubles."""
    out = []
    for i in range(count):
        part, ch = STEMS[i % len(STEMS)]
        lap = i // len(STEMS)
        name = part if lap == 0 else f"{part}_{lap + 1}" if not part[-1].isdigit() else f"{part}{chr(ord('a') + lap)}"
        out.append((name, part, ch))
    return out


def _finish(audio: np.ndarray, part: str, rng: np.random.Generator) -> np.ndarray:
    """Normalise to the part's peak, add the noise floor of a microphone part, float32 (frames, ch)."""
    if audio.ndim == 1:
        audio = audio[:, None]
    peak = float(np.max(np.abs(audio)))
    audio = audio * (10 ** (PEAK_DBFS[part] / 20.0) / peak)
    if part in MIC_PARTS:
        audio += rng.standard_normal(audio.shape) * 10 ** (-78.0 / 20.0)
    return audio.astype(np.float32)


def generate(folder: Path, *, seconds: float = 180.0, stems: int = 16, seed: int = 20240601,
             log=print) -> Path:
    """Write the session into ``folder`` (cached: skipped when ``session.json`` matches)."""
    folder = Path(folder)
    meta = {"generator_version": GENERATOR_VERSION, "seconds": seconds, "stems": stems, "seed": seed,
            "sample_rate_hz": SR, "frames": int(round(seconds * SR)),
            "files": [f"{n}.wav" for n, _, _ in stem_list(stems)],
            "channels": [ch for _, _, ch in stem_list(stems)]}
    marker = folder / "session.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == meta and all((folder / f).exists() for f in meta["files"]):
                return folder
        except (OSError, ValueError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for old in folder.glob("*.wav"):
        old.unlink()
    song = Song(seconds)
    wanted = stem_list(stems)
    parts_needed = {p for _, p, _ in wanted}
    done: dict[str, np.ndarray] = {}
    for name, part, channels in wanted:
        rng = np.random.default_rng([seed, hash_part(name)])
        if part in _DRUMS:
            if part not in done:
                drums = _drums(song, np.random.default_rng([seed, 1]))
                done.update({k: v for k, v in drums.items() if k in parts_needed})
            audio = done[part]
            if name != part:  # a double of a drum part: same hits, different level and noise
                audio = audio * 0.8
        else:
            audio = _PARTS[part](song, rng)
        audio = _finish(audio, part, rng)
        assert audio.shape[1] == channels, (name, audio.shape)
        sf.write(str(folder / f"{name}.wav"), audio, SR, subtype="PCM_24")
        log(f"  generated {name}.wav ({channels} ch, {seconds:g} s)")
    marker.write_text(json.dumps(meta, indent=1))
    return folder


def hash_part(name: str) -> int:
    """A stable small integer for a name (Python's hash() is salted per process)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % 2_147_483_647
    return h


if __name__ == "__main__":  # python session_gen.py FOLDER SECONDS STEMS
    import sys

    generate(Path(sys.argv[1]), seconds=float(sys.argv[2]), stems=int(sys.argv[3]),
             log=lambda line: print(line, flush=True))
