"""The built-in default planner: a plain, sound first mix from cheap measurements.

This is the seam the YAML rulebook replaces: a planner is any callable
``(stems: StemSet, analysis: SessionAnalysis, genre: GenreProfile) -> MixPlan``. Each decision
here is one named heuristic (``default:<id>``) recorded in the plan's ``why`` maps with its
reason, and every number comes from a published practice in ``shared/MIXING-FACTS.md``:

* gain staging: every stem to a common loudness first (Mansbridge et al. 2012);
* balance: instrument level templates after loudness normalisation (Diff-MST, ISMIR 2024),
  lead vocal on top, genre offsets;
* clean-up: DC removal, high-pass on everything (rumble-only on kick and bass), hum notches;
* low end centred, other sources spread by role and alternated to keep left/right balanced
  (Perez-Gonzalez & Reiss 2010; Mansbridge 2012);
* compression by role from the measured crest factor; sidechain ducking of bass under kick;
* group buses (drums, vocals, music) with gentle glue; reverb ~9 LU under the dry signal with
  tempo-derived pre-delay (Pestana & Reiss 2014; Moffat & Sandler 2019);
* the master target from the genre's delivery preset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .analysis import StemAnalysis
from .genres import GenreProfile
from .master import preset as master_preset
from .plan import (Compressor, Cleanup, DeEsser, Decision, Ducking, EQBand, FxBus, Gate, GroupBus, MasterPlan,
                   MixPlan, Send, TrackPlan, note_to_ms)
from .roles import ROLE_FAMILY
from .stems import StemSet

#: Loudness every stem is trimmed to before balancing (LUFS, BS.1770 over active parts).
STEM_REFERENCE_LUFS = -23.0
#: Integrated loudness the unmastered mix is aimed at (headroom for mastering).
MIX_TARGET_LUFS = -20.0

#: Relative level templates after loudness normalisation: the middle of Diff-MST's ranges (dB).
ROLE_LEVEL_DB: dict[str, float] = {
    "lead_vocal": -7.5, "backing_vocals": -9.5, "kick": -12.0, "snare": -10.5, "toms": -11.5,
    "hats": -12.0, "overheads": -11.5, "drums": -9.0, "percussion": -14.0, "bass": -10.0,
    "guitar": -10.0, "keys": -11.5, "synth": -11.5, "pad": -13.0, "strings": -11.5, "brass": -11.0,
    "winds": -11.0, "fx": -16.0, "other": -12.0,
}

#: High-pass corner by role (Hz); kick, bass and full kits get a subsonic (rumble) filter only.
ROLE_HIGHPASS_HZ: dict[str, float] = {
    "lead_vocal": 90.0, "backing_vocals": 130.0, "kick": 25.0, "snare": 90.0, "toms": 60.0, "hats": 300.0,
    "overheads": 120.0, "drums": 25.0, "percussion": 150.0, "bass": 25.0, "guitar": 90.0, "keys": 70.0,
    "synth": 40.0, "pad": 120.0, "strings": 40.0, "brass": 70.0, "winds": 90.0, "fx": 80.0, "other": 40.0,
}

#: Pan magnitude by role for mono stems that are not centred (0..1).
ROLE_PAN: dict[str, float] = {
    "backing_vocals": 0.5, "hats": 0.3, "percussion": 0.6, "guitar": 0.6, "keys": 0.45, "synth": 0.4,
    "pad": 0.6, "strings": 0.5, "brass": 0.4, "winds": 0.4, "fx": 0.35, "other": 0.3,
}
CENTRED_ROLES = {"lead_vocal", "kick", "snare", "bass", "drums"}

#: Compression by role: ratio, attack_ms, release_ms, threshold position in the crest (0 = RMS,
#: 1 = peak). Ranges follow Diff-MST's per-group compressor settings.
ROLE_COMPRESSION: dict[str, tuple[float, float, float, float]] = {
    "lead_vocal": (3.0, 5.0, 80.0, 0.35), "backing_vocals": (3.0, 10.0, 100.0, 0.4),
    "bass": (4.0, 15.0, 120.0, 0.35), "kick": (4.0, 20.0, 80.0, 0.5), "snare": (3.0, 10.0, 100.0, 0.5),
    "drums": (3.0, 15.0, 100.0, 0.5), "guitar": (2.5, 15.0, 150.0, 0.5), "keys": (2.0, 20.0, 150.0, 0.5),
    "synth": (2.0, 15.0, 150.0, 0.6), "strings": (1.8, 30.0, 200.0, 0.6), "brass": (2.0, 20.0, 150.0, 0.5),
    "winds": (1.8, 30.0, 200.0, 0.6),
}
STYLE_RATIO_SCALE = {"gentle": 0.75, "moderate": 1.0, "heavy": 1.35}
#: Below this crest factor a stem is already dense: leave it uncompressed.
MIN_CREST_TO_COMPRESS_DB = 8.0

#: Roles whose own notes sit on mains harmonics (G1 = 49 Hz, ...): a hum notch needs stronger evidence.
LOW_REGISTER_ROLES = {"bass", "kick", "drums", "toms", "synth"}
#: Hum prominence (dB over the local floor) needed to notch a low-register stem.
LOW_REGISTER_HUM_DB = 20.0

#: Reverb level under the dry signal by role (LU); None = no send. ~9 LU for the lead (Pestana 2014).
ROLE_REVERB_UNDER_LU: dict[str, float | None] = {
    "lead_vocal": 9.0, "backing_vocals": 8.0, "snare": 11.0, "toms": 13.0, "overheads": 15.0, "drums": 16.0,
    "percussion": 13.0, "guitar": 12.0, "keys": 11.0, "synth": 13.0, "pad": 10.0, "strings": 9.0,
    "brass": 11.0, "winds": 10.0, "fx": 12.0, "other": 13.0, "kick": None, "hats": None, "bass": None,
}
#: Loudness of our reverb's return relative to its send, at 1.6 s decay, and per doubling of decay
#: (measured on pink noise through the pyo chain: -7.2 / -4.5 / -2.6 dB at 0.8 / 1.6 / 2.6 s).
REVERB_GAIN_DB, REVERB_GAIN_DB_PER_OCTAVE = -4.5, 2.7


@dataclass
class SessionAnalysis:
    """What the planner knows about a session: per-stem measures and the session tempo."""

    stems: dict[str, StemAnalysis]
    tempo_bpm: float | None = None
    tempo_confidence: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tempo_bpm": self.tempo_bpm, "tempo_confidence": self.tempo_confidence,
                "stems": {k: v.to_dict() for k, v in self.stems.items()}, **self.extra}


def _d(heuristic: str, reason: str, value: Any) -> Decision:
    v = round(value, 3) if isinstance(value, float) else value
    return Decision(source=f"default:{heuristic}", reason=reason, value=v)


def reverb_gain_db(decay_s: float) -> float:
    """Return-to-send loudness of the reverb bus at a decay time (see REVERB_GAIN_DB)."""
    return REVERB_GAIN_DB + REVERB_GAIN_DB_PER_OCTAVE * math.log2(decay_s / 1.6)


def predelay_ms(tempo_bpm: float) -> float:
    """Shortest of 1/64, 1/32, 1/16 notes that lasts at least 30 ms (Moffat & Sandler 2019)."""
    for note in ("1/64", "1/32", "1/16"):
        ms = note_to_ms(note, tempo_bpm)
        if ms >= 30.0:
            return round(ms, 1)
    return round(note_to_ms("1/16", tempo_bpm), 1)


def default_plan(stems: StemSet, analysis: SessionAnalysis, genre: GenreProfile) -> MixPlan:
    """A complete plan for ``stems`` from the built-in heuristics (see the module docstring)."""
    tracks: list[TrackPlan] = []
    notes: list[str] = list(stems.warnings)
    role_count: dict[str, int] = {}
    for s in stems.stems:
        role_count[s.role] = role_count.get(s.role, 0) + 1
    tempo = analysis.tempo_bpm or 120.0
    style_scale = STYLE_RATIO_SCALE[genre.compression]
    has_kick = "kick" in role_count
    lead_ref = ROLE_LEVEL_DB["lead_vocal"]

    for s in stems.stems:
        a = analysis.stems[s.name]
        notes.extend(f"{s.name}: {w}" for w in s.warnings)
        t = TrackPlan(name=s.name, file=s.path.name, role=s.role, bus=ROLE_FAMILY.get(s.role, "music"))
        why = t.why
        # -- gain staging
        trim = max(-60.0, min(40.0, STEM_REFERENCE_LUFS - a.loudness_lufs)) if not a.is_silent else 0.0
        t.trim_db = round(trim, 2)
        why["trim_db"] = _d("gain-staging", f"brings the stem from {a.loudness_lufs:.1f} to {STEM_REFERENCE_LUFS:.0f} LUFS "
                            "so every decision starts from equal loudness", t.trim_db)
        # -- balance
        gain = ROLE_LEVEL_DB.get(s.role, ROLE_LEVEL_DB["other"]) - lead_ref
        reasons = [f"{s.role} template {gain:+.1f} dB against the lead vocal (Diff-MST)"]
        if s.role == "lead_vocal" and genre.lead_vocal_offset_db:
            gain += genre.lead_vocal_offset_db
            reasons.append(f"{genre.name} puts the lead {genre.lead_vocal_offset_db:+.1f} dB")
        if s.role in ("kick", "bass") and genre.low_end_offset_db:
            gain += genre.low_end_offset_db
            reasons.append(f"{genre.name} low end {genre.low_end_offset_db:+.1f} dB")
        if ROLE_FAMILY.get(s.role) == "drums" and genre.drums_offset_db:
            gain += genre.drums_offset_db
            reasons.append(f"{genre.name} drums {genre.drums_offset_db:+.1f} dB")
        n = role_count[s.role]
        if n > 1:
            share = -5.0 * math.log10(n)
            gain += share
            reasons.append(f"{n} {s.role} stems share the role level ({share:+.1f} dB each)")
        t.gain_db = round(gain, 2)
        why["gain_db"] = _d("balance", "; ".join(reasons), t.gain_db)
        # -- clean-up
        hp = ROLE_HIGHPASS_HZ.get(s.role, 40.0)
        hum = a.hum_hz in (50.0, 60.0)
        if hum and s.role in LOW_REGISTER_ROLES and a.hum_excess_db < LOW_REGISTER_HUM_DB:
            hum = False
            notes.append(f"{s.name}: a possible {a.hum_hz:.0f} Hz hum ({a.hum_excess_db:.1f} dB over the floor) was not "
                         f"notched: {s.role} notes sit on mains harmonics; notch it in the plan if you hear hum")
        t.cleanup = Cleanup(dc_remove=True, highpass_hz=hp, hum_notch_hz=int(a.hum_hz) if hum else None)
        why["cleanup.highpass_hz"] = _d("high-pass", f"{s.role}: nothing useful below {hp:.0f} Hz"
                                        + (" (rumble filter only: the low end is this stem's job)" if hp <= 30 else ""), hp)
        why["cleanup.dc_remove"] = _d("dc", f"DC offset measured {a.dc_offset:.4f}" if a.dc_offset > 1e-3 else
                                      "a 5 Hz DC filter costs nothing and protects the headroom", True)
        if t.cleanup.hum_notch_hz:
            why["cleanup.hum_notch_hz"] = _d("hum", f"{a.hum_hz:.0f} Hz mains hum {a.hum_excess_db:.1f} dB above the "
                                             "noise floor: notch it and its harmonics", t.cleanup.hum_notch_hz)
            notes.append(f"{s.name}: {a.hum_hz:.0f} Hz hum found and notched")
        if a.dc_offset > 1e-3:
            notes.append(f"{s.name}: DC offset {a.dc_offset:.4f} removed")
        if a.clipped:
            notes.append(f"{s.name}: {a.clipped_fraction * 100:.3f}% of samples are flat-topped (clipped in recording); "
                         "the mix cannot restore them: ask for a clean take or de-clip the stem")
        if a.sub_energy_ratio > 0.05 and hp <= 30:
            notes.append(f"{s.name}: {a.sub_energy_ratio * 100:.0f}% of the energy is below 40 Hz (rumble?); "
                         f"the {hp:.0f} Hz high-pass removes the subsonic part")
        # -- EQ: cut before boost
        eq: list[EQBand] = []
        eq_why: list[str] = []
        if s.role == "kick":
            eq.append(EQBand(kind="peak", freq_hz=400.0, gain_db=-3.0, q=1.4))
            eq_why.append("kick: -3 dB at 400 Hz takes out the cardboard box tone")
        if s.role == "bass" and has_kick:
            eq.append(EQBand(kind="peak", freq_hz=55.0, gain_db=-2.0, q=1.2))
            eq_why.append("bass: -2 dB at 55 Hz leaves the sub to the kick (kick and bass split the low end)")
        if s.role in ("guitar", "keys", "pad", "backing_vocals") and a.low_energy_ratio > 0.15:
            eq.append(EQBand(kind="peak", freq_hz=300.0, gain_db=-2.0, q=1.0))
            eq_why.append(f"{s.role}: -2 dB at 300 Hz against low-mid build-up ({a.low_energy_ratio * 100:.0f}% "
                          "of the energy below 150 Hz)")
        if s.role == "lead_vocal":
            eq.append(EQBand(kind="high_shelf", freq_hz=10000.0, gain_db=1.5, q=0.707))
            eq_why.append("lead vocal: +1.5 dB air shelf at 10 kHz")
        if eq:
            t.eq = eq
            why["eq"] = _d("eq", "; ".join(eq_why), len(eq))
        # -- dynamics (levels the processors see: after trim)
        peak_t, rms_t = a.peak_dbfs + t.trim_db, a.rms_dbfs + t.trim_db
        comp = ROLE_COMPRESSION.get(s.role)
        if comp and not a.is_silent and a.crest_db >= MIN_CREST_TO_COMPRESS_DB:
            ratio, attack, release, pos = comp
            ratio = round(min(10.0, max(1.2, ratio * style_scale)), 2)
            thr = round(max(-60.0, min(-1.0, rms_t + pos * a.crest_db)), 1)
            mid = rms_t + a.crest_db / 2.0
            makeup = round(min(6.0, 0.5 * max(0.0, mid - thr) * (1.0 - 1.0 / ratio)), 1)
            t.compressor = Compressor(enabled=True, threshold_db=thr, ratio=ratio, attack_ms=attack,
                                      release_ms=release, knee_db=3.0, makeup_db=makeup)
            why["compressor"] = _d("compression", f"{s.role}, crest {a.crest_db:.1f} dB: threshold {pos:.0%} of the way "
                                   f"from RMS to peak, {genre.compression} style ratio {ratio}", True)
        elif comp:
            why["compressor"] = _d("compression", f"crest {a.crest_db:.1f} dB < {MIN_CREST_TO_COMPRESS_DB:.0f} dB: "
                                   "already dense, left uncompressed", False)
        if s.role in ("lead_vocal", "backing_vocals") and not a.is_silent:
            band_db = rms_t + 10.0 * math.log10(max(a.high_energy_ratio, 1e-6))
            thr = round(max(-70.0, min(-1.0, band_db + 6.0)), 1)
            t.deesser = DeEsser(enabled=True, freq_hz=6000.0, threshold_db=thr, ratio=4.0, release_ms=60.0)
            why["deesser"] = _d("de-ess", f"the band above 5 kHz sits at {band_db:.1f} dBFS RMS: reduce its peaks "
                                "more than 6 dB above that", True)
        if s.role == "toms" and not a.is_silent:
            t.gate = Gate(enabled=True, threshold_db=round(max(-90.0, peak_t - 30.0), 1), range_db=18.0,
                          attack_ms=1.0, release_ms=150.0)
            why["gate"] = _d("gate", "toms ring and carry bleed between hits: gate 30 dB under the hits", True)
        # -- stereo
        if s.channels == 2:
            width = 1.0
            if s.role in ("overheads", "pad", "keys", "strings", "synth"):
                width = genre.stereo_width
            if s.role in ("bass", "kick") or a.low_energy_ratio > 0.5:
                width = min(width, 0.5)
            t.width = round(width, 2)
            why["width"] = _d("width", "low end stays centred: narrowed" if width < 1 else
                              f"{genre.name} width on {s.role}" if width != 1 else "stereo image as recorded", t.width)
        tracks.append(t)

    _place(tracks, analysis)
    # built unvalidated (buses and sends are added below), validated as a whole at the end
    plan = MixPlan.model_construct(**{**MixPlan(stems_dir="", tracks=[]).__dict__,
                                      "stems_dir": str(stems.source_dir), "sample_rate_hz": stems.sample_rate_hz,
                                      "genre": genre.name, "tempo_bpm": round(tempo, 1), "tracks": tracks,
                                      "notes": notes, "buses": [], "fx": [], "ducking": [], "why": {}})
    plan.why["tempo_bpm"] = _d("tempo", f"estimated from the onsets (confidence {analysis.tempo_confidence:.2f})"
                               if analysis.tempo_bpm else "no clear rhythm found: 120 BPM assumed", plan.tempo_bpm)
    _buses(plan, stems, analysis)
    _space(plan, genre)
    _ducking(plan, analysis)
    _mix_gain(plan, analysis)
    plan.master = master_for(genre)
    return MixPlan.model_validate(plan.model_dump())


def _place(tracks: list[TrackPlan], analysis: SessionAnalysis) -> None:
    """Pan: low end and lead centred; others by role, same-role stems spread, sides alternated."""
    balance = 0.0
    by_role: dict[str, list[TrackPlan]] = {}
    for t in tracks:
        by_role.setdefault(t.role, []).append(t)
    for role, group in by_role.items():
        mono = [t for t in group if analysis.stems[t.name].channels == 1]
        for t in group:
            if t not in mono:
                t.pan = 0.0
                t.why["pan"] = _d("pan", "stereo stem: its own image, centred", 0.0)
        if not mono:
            continue
        if role in CENTRED_ROLES:
            for t in mono:
                t.pan = 0.0
                t.why["pan"] = _d("pan", f"{role} stays centred (low end and lead in the middle)", 0.0)
            continue
        p = ROLE_PAN.get(role, 0.3)
        if role == "toms" or len(mono) > 1:
            span = p if role != "toms" else 0.5
            n = len(mono)
            for i, t in enumerate(mono):
                pos = -span + 2 * span * i / (n - 1) if n > 1 else 0.0
                t.pan = round(pos, 2)
                t.why["pan"] = _d("pan", f"{n} {role} stems spread evenly across {span:.2f} of each side", t.pan)
            continue
        t = mono[0]
        side = 1.0 if balance < 0 else -1.0
        if role == "hats":
            side = -1.0
        lows = analysis.stems[t.name].low_energy_ratio
        mag = min(p, 0.2) if lows > 0.5 else p
        t.pan = round(side * mag, 2)
        balance += t.pan
        t.why["pan"] = _d("pan", f"{role} off-centre by {mag:.2f}" + (" (kept near the centre: mostly low end)" if mag < p else "")
                          + ", on the side that keeps left/right balanced", t.pan)


def _predicted_lufs(tracks: list[TrackPlan], analysis: SessionAnalysis) -> float:
    power = 0.0
    for t in tracks:
        a = analysis.stems[t.name]
        if a.is_silent or t.mute:
            continue
        power += 10 ** ((STEM_REFERENCE_LUFS + t.gain_db) / 10.0) * max(a.active_fraction, 0.05)
    return 10.0 * math.log10(power) if power > 0 else -200.0


def _predicted_peak_db(tracks: list[TrackPlan], analysis: SessionAnalysis) -> float:
    """Rough peak of a sum of tracks: the loudest member's peak after trim and fader, plus 1 dB
    per doubling of the member count (peaks of different sources rarely coincide)."""
    peaks = [analysis.stems[t.name].peak_dbfs + t.trim_db + t.gain_db
             - (3.0 if analysis.stems[t.name].channels == 1 else 0.0) for t in tracks if not t.mute]
    if not peaks:
        return -200.0
    return max(peaks) + math.log2(len(peaks))


def _buses(plan: MixPlan, stems: StemSet, analysis: SessionAnalysis) -> None:
    styles = {"drums": (2.0, 30.0, 150.0, 5.0, "drum bus glue: 2-3 dB on the hits, attack lets the transients through"),
              "vocals": (1.5, 20.0, 150.0, 4.0, "vocal bus: gentle glue for lead and backing vocals"),
              "music": (1.5, 30.0, 200.0, 4.0, "music bus: gentle glue for the band")}
    for family in ("drums", "vocals", "music"):
        members = [t for t in plan.tracks if t.bus == family]
        if not members:
            continue
        ratio, attack, release, under, reason = styles[family]
        peak = _predicted_peak_db(members, analysis)
        thr = round(max(-60.0, min(-1.0, peak - under)), 1)
        bus = GroupBus(name=family, compressor=Compressor(enabled=True, threshold_db=thr, ratio=ratio, attack_ms=attack,
                                                          release_ms=release, knee_db=6.0))
        bus.why["compressor"] = _d("bus-glue", f"{reason}; threshold {under:.0f} dB under the predicted bus peak ({peak:.1f} dBFS)", True)
        plan.buses.append(bus)


def _space(plan: MixPlan, genre: GenreProfile) -> None:
    decay = genre.reverb.decay_s
    reverb = FxBus(name="reverb", kind="reverb", decay_s=decay, predelay_ms=predelay_ms(plan.tempo_bpm),
                   lowpass_hz=genre.reverb.lowpass_hz, highpass_hz=200.0, return_db=0.0)
    reverb.why["predelay_ms"] = _d("space", f"shortest note value of at least 30 ms at {plan.tempo_bpm:.0f} BPM",
                                   reverb.predelay_ms)
    reverb.why["decay_s"] = _d("space", f"{genre.name} reverb decay", decay)
    delay = FxBus(name="delay", kind="delay", note=genre.delay_note, feedback=0.25, highpass_hz=300.0, lowpass_hz=4500.0)
    delay.why["note"] = _d("space", f"{genre.name}: {genre.delay_note} delay, tempo-synced", genre.delay_note)
    rgain = reverb_gain_db(decay)
    used_reverb = used_delay = False
    for t in plan.tracks:
        under = ROLE_REVERB_UNDER_LU.get(t.role)
        if under is None:
            continue
        level = round(max(-96.0, min(6.0, -under - rgain + genre.reverb.send_offset_db)), 1)
        t.sends.append(Send(bus="reverb", level_db=level))
        t.why["sends.reverb"] = _d("space", f"reverb about {under - genre.reverb.send_offset_db:.0f} LU under the dry "
                                   f"{t.role} (return gain {rgain:.1f} dB at {decay} s)", level)
        used_reverb = True
        if t.role == "lead_vocal":
            t.sends.append(Send(bus="delay", level_db=-18.0))
            t.why["sends.delay"] = _d("space", "a quiet tempo-synced echo behind the lead vocal", -18.0)
            used_delay = True
    if used_reverb:
        plan.fx.append(reverb)
    if used_delay:
        plan.fx.append(delay)


def _ducking(plan: MixPlan, analysis: SessionAnalysis) -> None:
    kicks = [t for t in plan.tracks if t.role == "kick"]
    basses = [t for t in plan.tracks if t.role == "bass"]
    if not kicks or not basses:
        return
    kick = kicks[0]
    a = analysis.stems[kick.name]
    thr = round(max(-80.0, min(-1.0, a.peak_dbfs + kick.trim_db - 12.0)), 1)
    release = round(min(120.0, note_to_ms("1/16", plan.tempo_bpm)), 1)
    for bass in basses:
        d = Ducking(target=bass.name, trigger=kick.name, threshold_db=thr, depth_db=3.0, ratio=4.0,
                    attack_ms=2.0, release_ms=release)
        d.why["depth_db"] = _d("sidechain", "bass dips 3 dB on each kick hit so the two share the low end", 3.0)
        d.why["release_ms"] = _d("sidechain", "recovers within a sixteenth note", release)
        plan.ducking.append(d)


def _mix_gain(plan: MixPlan, analysis: SessionAnalysis) -> None:
    predicted = _predicted_lufs(plan.tracks, analysis)
    if predicted > -199:
        plan.mix_gain_db = round(max(-40.0, min(24.0, MIX_TARGET_LUFS - predicted)), 1)
        plan.why["mix_gain_db"] = _d("headroom", f"the tracks add up to about {predicted:.1f} LUFS: trim the mix bus "
                                     f"to {MIX_TARGET_LUFS:.0f} LUFS to leave headroom for mastering", plan.mix_gain_db)


def master_for(genre: GenreProfile, preset_name: str | None = None, target_lufs: float | None = None) -> MasterPlan:
    """The master plan for a genre, optionally overridden by a preset or an explicit target."""
    p = master_preset(preset_name or genre.master.preset)
    target = target_lufs if target_lufs is not None else (
        genre.master.target_lufs if preset_name is None and genre.master.target_lufs is not None else p.target_lufs)
    ceiling = genre.master.ceiling_dbtp if preset_name is None and genre.master.ceiling_dbtp is not None else p.ceiling_dbtp
    m = MasterPlan(preset=p.name if target_lufs is None else "custom", target_lufs=target)
    m.limiter.ceiling_dbtp = ceiling
    m.glue = Compressor(enabled=True, threshold_db=genre.master.glue_threshold_db, ratio=genre.master.glue_ratio,
                        attack_ms=30.0, release_ms=200.0, knee_db=6.0)
    m.why["target_lufs"] = _d("delivery", f"{p.name}: {p.doc}" if target_lufs is None else "set by --target-lufs", target)
    m.why["limiter.ceiling_dbtp"] = _d("delivery", "true-peak ceiling of the delivery target", ceiling)
    m.why["glue"] = _d("glue", f"{genre.name}: ratio {genre.master.glue_ratio} on the mix at -20 LUFS, slow attack", True)
    return m
