"""``--genre auto``: guess the genre profile from the session's roles, tempo and spectrum.

A transparent scorer, not a trained model (there are far too few genre-labelled multitracks to
train one honestly): each genre collects points for the evidence an engineer would use --
which instruments are there (a string quartet is not hip-hop), the tempo range, distorted
guitars, and how close the session's combined spectrum (every stem at equal loudness) is to the
genre's target band balance. Scores become probabilities with a softmax; the top one is the
guess and its probability the confidence. The reasons are kept for the report.

Measured on the 7 dev-corpus songs and the bundled demo, see ``benchmarks/EVALUATION.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from .descriptor_specs import BANDS_HZ
from .genres import GenreProfile

#: Weight of the spectral distance (dB RMS over bands) in the score.
SPECTRUM_WEIGHT = 0.25


@dataclass
class GenreGuess:
    genre: str
    confidence: float
    scores: dict[str, float]
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        why = "; ".join(self.reasons.get(self.genre, [])) or "closest spectrum"
        return f"{self.genre} (confidence {self.confidence:.2f}: {why})"


def _session_bands(stems: Mapping[str, Mapping[str, float]]) -> dict[str, float] | None:
    """Band levels (dB re total) of the sum of all active stems at equal loudness."""
    total = {b: 0.0 for b in BANDS_HZ}
    n = 0
    for v in stems.values():
        if v.get("active_fraction", 0.0) <= 0:
            continue
        n += 1
        for b in BANDS_HZ:
            total[b] += 10 ** (v[f"band_{b}_db"] / 10.0)
    if not n:
        return None
    s = sum(total.values())
    return {b: 10 * math.log10(max(p / s, 1e-12)) for b, p in total.items()}


def guess_genre(stems: Mapping[str, Mapping[str, float]], roles: Mapping[str, str], tempo_bpm: float | None,
                profiles: Mapping[str, GenreProfile]) -> GenreGuess:
    """Score every profile (except ``base``) for a session; ``stems``: name -> descriptor values."""
    present = set(roles.values())
    count = {r: sum(1 for x in roles.values() if x == r) for r in present}
    tempo = tempo_bpm or 0.0
    kit = bool(present & {"kick", "snare", "drums", "hats", "overheads"})
    guitars = [n for n, r in roles.items() if r == "guitar"]
    distorted = [n for n in guitars if stems[n].get("spectral_flatness", 0) > 0.2 or stems[n].get("band_high_mid_db", -99) > -8]
    orchestral_parts = present & {"strings", "brass", "winds"}
    electronic_parts = present & {"synth", "pad"}
    bands = _session_bands(stems)
    scores: dict[str, float] = {}
    reasons: dict[str, list[str]] = {}

    def add(genre: str, points: float, why: str) -> None:
        scores[genre] = scores.get(genre, 0.0) + points
        reasons.setdefault(genre, []).append(why)

    for name in profiles:
        if name != "base":
            scores[name] = 0.0
    if orchestral_parts and not kit and "bass" not in present and not electronic_parts:
        add("orchestral", 4.0, f"{'/'.join(sorted(orchestral_parts))} without a kit")
    if electronic_parts and kit and not guitars:
        add("electronic", 2.0, "synths over a kit, no guitars")
        if 118 <= tempo <= 150:
            add("electronic", 1.0, f"{tempo:.0f} BPM")
    if kit and "bass" in present and not guitars and 70 <= tempo <= 105:
        add("hip-hop", 1.5, "kit and bass, no guitars, hip-hop tempo")
        if present & {"keys", "fx"}:
            add("hip-hop", 0.5, "keys/samples")
    if guitars and kit and "bass" in present:
        add("rock", 2.0, "guitars, kit and bass")
        if distorted:
            add("metal", 2.0, "distorted guitars with a kit")
            add("rock", 0.5, "distorted guitars")
            if tempo > 140:
                add("metal", 1.0, f"{tempo:.0f} BPM")
    if guitars and not kit and len(roles) <= 6:
        add("acoustic", 2.0, "guitars without a separate kit, small arrangement")
    if guitars and "lead_vocal" in present and not distorted and len(roles) <= 8:
        add("acoustic", 0.5, "clean guitars and a voice")
    if present & {"brass", "winds", "keys"} and kit and "bass" in present and not electronic_parts and not distorted:
        add("jazz", 1.0, "keys/horns with a rhythm section")
    if "lead_vocal" in present and kit and present & {"synth", "pad", "keys"}:
        add("pop", 1.5, "vocal over keys/synths and a kit")
    if "lead_vocal" in present and count.get("backing_vocals", 0) and "keys" in present and 60 <= tempo <= 100:
        add("rnb", 1.0, "vocals with harmonies over keys, slow")
    if guitars and "bass" in present and kit and 60 <= tempo <= 85 and not distorted:
        add("reggae", 0.5, f"guitar, bass and kit at {tempo:.0f} BPM")
    if bands is not None:
        for name, prof in profiles.items():
            if name == "base" or not prof.band_balance_db:
                continue
            d = math.sqrt(sum((bands[b] - prof.band_balance_db[b]) ** 2 for b in prof.band_balance_db)
                          / len(prof.band_balance_db))
            scores[name] = scores.get(name, 0.0) - SPECTRUM_WEIGHT * d
    # softmax
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    z = sum(exp.values())
    probs = {k: v / z for k, v in exp.items()}
    best = max(sorted(probs), key=lambda k: probs[k])
    return GenreGuess(genre=best, confidence=round(probs[best], 3), scores={k: round(v, 3) for k, v in scores.items()},
                      reasons=reasons)
