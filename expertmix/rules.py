"""The rulebook: mix-engineering heuristics written in YAML, turned into a mix plan.

One rule is one heuristic. A rule file (``rules/*.yaml``) holds a list under ``rules:``::

    - id: lead-vocal-air
      summary: A gentle air shelf on the lead vocal
      rationale: Presence and air keep a vocal in front without more level.
      source: MIXING-FACTS.md, EQ
      scope: track                 # fx | track | pair | bus | mix (evaluation order)
      priority: 50                 # higher wins when two rules set the same slot
      when: {role: lead_vocal, descriptor: {high_energy_ratio: {lt: 0.05}}}
      then:
        - eq: {kind: high_shelf, freq_hz: 10000, gain_db: {param: air_db}, q: 0.707}
      params: {air_db: 1.5}
      refine: {}                   # slot -> [low, high]: how far a learned model may move a value
      genres: {hip-hop: {params: {air_db: 2.0}}}   # per-genre overrides
      examples:
        - {expect: fire, session: {stems: {vox: {role: lead_vocal}}}}
        - {expect: silent, session: {stems: {gtr: {role: guitar}}}}

Everything in ``when`` and ``then`` is a small closed vocabulary defined in this module
(:data:`CONDITIONS`, :data:`TERMS`, :data:`ACTIONS`, the slots in :data:`SLOTS`), listed by
``expertmix rules vocabulary``. Nothing is evaluated as code: a value is a number, or a sum of
named terms (a descriptor times a scale, a role table, a genre parameter, another slot ...), with
optional ``min``/``max``/``round``. Every name is resolved when the rulebook loads; a mistake is
reported with file, line, rule id, field and a "did you mean" suggestion.

Evaluation (:func:`evaluate`): for each scope in order, every rule's conditions are tested on
every target of its scope (tracks, track pairs, buses, effect buses, the mix). Each firing rule
*proposes* values for slots; for every slot the highest priority ``set`` wins (ties: the rule
listed first), then every ``add`` is summed onto it, then ``limit`` clamps it. The trace records
for every rule and target whether it fired (or which condition kept it silent), what it proposed
and which rule overrode it.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


from .descriptor_specs import BANDS_HZ, DESCRIPTORS
from .errors import RulebookError
from .genres import GenreProfile, read_yaml_file
from .plan import (Cleanup, Compressor, DeEsser, Decision, Ducking, EQBand, Finding, FxBus, Gate, GroupBus, Limiter,
                   MasterPlan, MixPlan, NOTE_VALUES, Send, TrackPlan, _line_index, note_to_ms)
from .resources import data_dir
from .roles import ROLE_FAMILY, ROLES, part_number

SCOPES = ("fx", "track", "pair", "bus", "mix")
FAMILIES = ("drums", "vocals", "music")
FX_NAMES = ("reverb", "delay")
#: Reference loudness every stem is trimmed to by the gain-staging rule (used by predictions).
STEM_REFERENCE_LUFS = -23.0
#: Loudness of the reverb return relative to its send at 1.6 s decay, and per doubling of decay
#: (measured on pink noise through the pyo chain: -7.2 / -4.5 / -2.6 dB at 0.8 / 1.6 / 2.6 s).
REVERB_GAIN_DB, REVERB_GAIN_DB_PER_OCTAVE = -4.5, 2.7


def reverb_gain_db(decay_s: float) -> float:
    """Return-to-send loudness of the reverb bus at a decay time."""
    return REVERB_GAIN_DB + REVERB_GAIN_DB_PER_OCTAVE * math.log2(decay_s / 1.6)


# ================================================================================ slots ====

@dataclass(frozen=True)
class SlotSpec:
    """One settable value of the plan, addressed by a dotted name within a scope."""

    name: str
    scope: str
    kind: str  # float | int | bool | note | mains
    low: float | None
    high: float | None
    doc: str


def _bounds(model: type, field_name: str) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in model.model_fields[field_name].metadata:
        lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
    return lo, hi


def _model_slots(scope: str, prefix: str, model: type, names: Iterable[str]) -> list[SlotSpec]:
    out = []
    for n in names:
        f = model.model_fields[n]
        ann = f.annotation
        kind = "bool" if ann is bool else "int" if ann is int else "float"
        lo, hi = _bounds(model, n)
        out.append(SlotSpec(f"{prefix}{n}", scope, kind, lo, hi, f.description or ""))
    return out


_COMP = ("enabled", "threshold_db", "ratio", "attack_ms", "release_ms", "knee_db", "makeup_db", "mix")


def _build_slots() -> dict[str, dict[str, SlotSpec]]:
    track = _model_slots("track", "", TrackPlan, ("trim_db", "gain_db", "pan", "width", "mute"))
    track += _model_slots("track", "cleanup.", Cleanup, ("dc_remove", "highpass_hz", "hum_harmonics", "hum_notch_q"))
    track.append(SlotSpec("cleanup.hum_notch_hz", "track", "mains", 50, 60, "mains frequency to notch (50 or 60)"))
    track += _model_slots("track", "compressor.", Compressor, _COMP)
    track += _model_slots("track", "gate.", Gate, ("enabled", "threshold_db", "range_db", "attack_ms", "release_ms"))
    track += _model_slots("track", "deesser.", DeEsser, ("enabled", "freq_hz", "threshold_db", "ratio", "release_ms"))
    for fx in FX_NAMES:
        track.append(SlotSpec(f"sends.{fx}", "track", "float", -96.0, 6.0, f"send level to the {fx} bus, dB"))
    track.append(SlotSpec("eq.max_boost_db", "track", "float", 0.0, 24.0, "largest EQ boost allowed (limit only)"))
    fx = []
    for name in FX_NAMES:
        fields = ["return_db", "highpass_hz", "lowpass_hz"] + (
            ["predelay_ms", "decay_s", "room_size"] if name == "reverb" else ["feedback", "time_ms"])
        fx += _model_slots("fx", f"{name}.", FxBus, fields)
        if name == "delay":
            fx.append(SlotSpec("delay.note", "fx", "note", None, None, f"delay note value: {', '.join(NOTE_VALUES)}"))
    pair = _model_slots("pair", "ducking.", Ducking, ("threshold_db", "depth_db", "ratio", "attack_ms", "release_ms"))
    bus = _model_slots("bus", "", GroupBus, ("gain_db",)) + _model_slots("bus", "compressor.", Compressor, _COMP)
    bus.append(SlotSpec("eq.max_boost_db", "bus", "float", 0.0, 24.0, "largest EQ boost allowed (limit only)"))
    mix = _model_slots("mix", "", MixPlan, ("mix_gain_db", "tail_s"))
    mix += _model_slots("mix", "master.", MasterPlan, ("target_lufs", "tolerance_lu"))
    mix += _model_slots("mix", "master.glue.", Compressor, _COMP)
    mix += _model_slots("mix", "master.limiter.", Limiter, ("ceiling_dbtp", "release_ms", "lookahead_ms"))
    mix.append(SlotSpec("eq.max_boost_db", "mix", "float", 0.0, 24.0, "largest master EQ boost allowed (limit only)"))
    return {s: {x.name: x for x in group} for s, group in
            (("track", track), ("fx", fx), ("pair", pair), ("bus", bus), ("mix", mix))}


SLOTS: dict[str, dict[str, SlotSpec]] = _build_slots()


# ============================================================================= context ====

@dataclass
class TrackContext:
    """What the rules know about one stem."""

    name: str
    file: str
    role: str
    channels: int
    values: dict[str, float]

    @property
    def family(self) -> str:
        return ROLE_FAMILY.get(self.role, "music")


@dataclass
class MaskingInfo:
    masker: str
    maskee: str
    band: str
    masking_db: float

    @property
    def center_hz(self) -> float:
        lo, hi = BANDS_HZ[self.band]
        return round(math.sqrt(lo * hi), 1)


@dataclass
class SessionContext:
    """Everything a rule can look at: the tracks, the genre, tempo and masking."""

    tracks: list[TrackContext]
    genre: GenreProfile
    tempo_bpm: float = 120.0
    tempo_confidence: float = 0.0
    masking: list[MaskingInfo] = field(default_factory=list)
    stems_dir: str = ""
    sample_rate_hz: int = 44100
    notes: list[str] = field(default_factory=list)

    def track(self, name: str) -> TrackContext:
        for t in self.tracks:
            if t.name == name:
                return t
        raise KeyError(name)

    def role_count(self, role: str) -> int:
        return sum(1 for t in self.tracks if t.role == role)

    def roles(self) -> set[str]:
        return {t.role for t in self.tracks}


# ======================================================================= compiled parts ====

class _Where:
    """Location of a YAML node for error messages."""

    def __init__(self, file: str, lines: dict[tuple, int], rule_path: tuple, rule_id: str | None):
        self.file, self.lines, self.rule_path, self.rule_id = file, lines, rule_path, rule_id

    def line(self, *sub: Any) -> int | None:
        path = self.rule_path + tuple(sub)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, message: str, *sub: Any, hint: str | None = None) -> RulebookError:
        fld = ".".join(str(p) for p in sub) if sub else None
        return RulebookError(message, file=self.file, line=self.line(*sub), rule_id=self.rule_id, field=fld, hint=hint)


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(where: _Where, what: str, name: Any, choices: Iterable[str], *sub: Any) -> RulebookError:
    choices = list(choices)
    return where.error(f"unknown {what} {name!r}{_suggest(name, choices)}", *sub,
                       hint=f"use one of: {', '.join(map(str, choices))}" if len(choices) <= 40 else
                       "see `expertmix rules vocabulary`")


def _number(where: _Where, value: Any, *sub: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.error(f"expected a number, got {value!r}", *sub)
    return float(value)


# --- comparisons ------------------------------------------------------------------------

_CMP_OPS: dict[str, Callable[[float, Any], bool]] = {
    "gt": lambda x, a: x > a, "ge": lambda x, a: x >= a, "lt": lambda x, a: x < a, "le": lambda x, a: x <= a,
    "eq": lambda x, a: x == a, "ne": lambda x, a: x != a, "between": lambda x, a: a[0] <= x <= a[1],
}


@dataclass(frozen=True)
class Comparison:
    tests: tuple[tuple[str, Any], ...]

    def __call__(self, x: float) -> bool:
        return all(_CMP_OPS[op](x, arg) for op, arg in self.tests)

    def text(self) -> str:
        sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
        return " and ".join(f"in [{a[0]:g}, {a[1]:g}]" if op == "between" else f"{sym[op]} {a:g}" for op, a in self.tests)


def _comparison(where: _Where, spec: Any, *sub: Any) -> Comparison:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Comparison((("eq", float(spec)),))
    if not isinstance(spec, dict) or not spec:
        raise where.error("expected a comparison such as {gt: 3} or {between: [1, 2]}", *sub)
    tests = []
    for op, arg in spec.items():
        if op not in _CMP_OPS:
            raise _unknown(where, "comparison", op, _CMP_OPS, *sub, op)
        if op == "between":
            if not isinstance(arg, list) or len(arg) != 2:
                raise where.error("between takes [low, high]", *sub, op)
            tests.append((op, (_number(where, arg[0], *sub, op), _number(where, arg[1], *sub, op))))
        else:
            tests.append((op, _number(where, arg, *sub, op)))
    return Comparison(tuple(tests))


# --- value terms --------------------------------------------------------------------------

@dataclass
class Eval:
    """Evaluation state for one target of one rule."""

    ctx: SessionContext
    scope: str
    target: str                      # track name, "target<-trigger", bus name, fx name or "mix"
    track: TrackContext | None = None
    trigger: TrackContext | None = None
    params: dict[str, float] = field(default_factory=dict)
    match: MaskingInfo | None = None
    slot: Callable[[str], Any] | None = None        # resolved slot of this target
    engine: "_Engine | None" = None
    placement: float = 0.0
    trace: "RuleTrace | None" = None


TERMS: dict[str, str] = {
    "const": "a number",
    "descriptor": "a descriptor of the track (see `expertmix rules vocabulary`)",
    "trigger_descriptor": "a descriptor of the trigger track (pair scope)",
    "by_role": "a table role -> number (with `default`)",
    "genre": "a genre profile parameter, e.g. lead_vocal_offset_db or reverb.decay_s",
    "param": "a parameter of this rule (`params:`, overridable per genre)",
    "slot": "another slot of the same target, already decided (e.g. trim_db)",
    "match": "the masking found by masks/masked_by: band_center_hz or masking_db",
    "log10_role_count": "log10 of the number of stems sharing this track's role",
    "note_ms": "the duration of a note value at the session tempo, e.g. '1/16'",
    "reverb_return_db": "loudness of the reverb return relative to its send at the decided decay",
    "placement": "this track's position (-1..1) among the tracks the rule fired on: spread or alternate",
    "predicted_mix_lufs": "predicted loudness of the mix from the decided track levels (mix scope)",
    "bus_peak_dbfs": "predicted peak of the bus from its members' levels (bus scope)",
    "tonal_gap_db": "genre target minus the predicted mix level in a band (mix scope)",
    "tempo_bpm": "the session tempo",
}
_TERM_SCOPES = {"descriptor": ("track", "pair"), "trigger_descriptor": ("pair",), "by_role": ("track", "pair"),
                "log10_role_count": ("track",), "placement": ("track",), "predicted_mix_lufs": ("mix",),
                "bus_peak_dbfs": ("bus",), "tonal_gap_db": ("mix",), "match": ("track",),
                "reverb_return_db": ("track",)}
_GENRE_NUMBERS = ("lead_vocal_offset_db", "low_end_offset_db", "drums_offset_db", "stereo_width",
                  "reverb.decay_s", "reverb.send_offset_db", "reverb.lowpass_hz", "master.glue_ratio",
                  "master.glue_threshold_db", "compression_ratio_scale")
_COMPRESSION_SCALE = {"gentle": 0.75, "moderate": 1.0, "heavy": 1.35}
_MATCH_FIELDS = ("band_center_hz", "masking_db", "band_low_hz", "band_high_hz")
_PLACEMENT = ("spread", "alternate", "spread_or_alternate")


def genre_number(genre: GenreProfile, name: str) -> float:
    if name == "compression_ratio_scale":
        return _COMPRESSION_SCALE[genre.compression]
    obj: Any = genre
    for part in name.split("."):
        obj = getattr(obj, part)
    return float(obj)


@dataclass
class Value:
    """A compiled value: a literal, or a clamped sum of terms."""

    literal: Any = None
    terms: list[tuple[str, Any, float]] = field(default_factory=list)   # (kind, arg, scale[, times])
    low: float | None = None
    high: float | None = None
    round_to: float | None = None

    def __call__(self, ev: Eval) -> Any:
        if not self.terms:
            return self.literal
        if self.terms[0][0] == "genre_note":
            return ev.ctx.genre.delay_note
        total = 0.0
        for term in self.terms:
            kind, arg, scale = term[:3]
            x = scale * _term(kind, arg, ev)
            if len(term) > 3:
                k2, a2, s2 = term[3]
                x *= s2 * _term(k2, a2, ev)
            total += x
        if self.low is not None:
            total = max(self.low, total)
        if self.high is not None:
            total = min(self.high, total)
        if self.round_to:
            total = round(total / self.round_to) * self.round_to
        return round(total, 4)


def _term(kind: str, arg: Any, ev: Eval) -> float:
    ctx = ev.ctx
    if kind == "const":
        return arg
    if kind == "descriptor":
        return ev.track.values[arg]
    if kind == "trigger_descriptor":
        return ev.trigger.values[arg]
    if kind == "by_role":
        table, default = arg
        return table.get(ev.track.role, default)
    if kind == "genre":
        return genre_number(ctx.genre, arg)
    if kind == "param":
        return ev.params[arg]
    if kind == "slot":
        v = ev.slot(arg) if ev.slot else None
        return 0.0 if v is None else float(v)
    if kind == "match":
        m = ev.match
        if m is None:
            return 0.0
        lo, hi = BANDS_HZ[m.band]
        return {"band_center_hz": m.center_hz, "masking_db": m.masking_db, "band_low_hz": lo, "band_high_hz": hi}[arg]
    if kind == "log10_role_count":
        return math.log10(max(1, ctx.role_count(ev.track.role)))
    if kind == "note_ms":
        return note_to_ms(arg, ctx.tempo_bpm)
    if kind == "tempo_bpm":
        return ctx.tempo_bpm
    if kind == "reverb_return_db":
        decay = ev.engine.fx_value("reverb", "reverb.decay_s", 1.6) if ev.engine else 1.6
        return reverb_gain_db(decay)
    if kind == "placement":
        return ev.placement
    if kind == "predicted_mix_lufs":
        return ev.engine.predicted_mix_lufs()
    if kind == "bus_peak_dbfs":
        return ev.engine.predicted_bus_peak_dbfs(ev.target)
    if kind == "tonal_gap_db":
        return ev.engine.tonal_gap_db(arg)
    raise AssertionError(kind)  # unreachable: names are checked at load


def _compile_value(where: _Where, spec: Any, scope: str, params: Mapping[str, float], *sub: Any,
                   kind: str = "float") -> Value:
    if kind in ("bool",):
        if not isinstance(spec, bool):
            raise where.error(f"expected true or false, got {spec!r}", *sub)
        return Value(literal=spec)
    if kind == "note":
        if spec == {"genre": "delay_note"}:
            return Value(terms=[("genre_note", None, 1.0)])
        if spec not in NOTE_VALUES:
            raise _unknown(where, "note value", spec, NOTE_VALUES, *sub)
        return Value(literal=spec)
    if kind == "mains" and not isinstance(spec, dict):
        if spec not in (50, 60):
            raise where.error(f"mains frequency must be 50 or 60, got {spec!r}", *sub)
        return Value(literal=int(spec))
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Value(literal=float(spec) if kind == "float" else int(spec))
    if not isinstance(spec, dict):
        raise where.error(f"expected a number or a value such as {{descriptor: crest_db, scale: 0.5}}, got {spec!r}", *sub)
    spec = dict(spec)
    low, high, rnd = spec.pop("min", None), spec.pop("max", None), spec.pop("round", None)
    v = Value(low=None if low is None else _number(where, low, *sub, "min"),
              high=None if high is None else _number(where, high, *sub, "max"),
              round_to=None if rnd is None else _number(where, rnd, *sub, "round"))
    if "sum" in spec:
        items = spec.pop("sum")
        if spec:
            raise where.error(f"a value with `sum` takes only min/max/round besides it; found {sorted(spec)}", *sub)
        if not isinstance(items, list) or not items:
            raise where.error("sum takes a list of terms", *sub, "sum")
        for i, item in enumerate(items):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                v.terms.append(("const", float(item), 1.0))
            else:
                v.terms.append(_compile_term(where, item, scope, params, *sub, "sum", i))
    else:
        v.terms.append(_compile_term(where, spec, scope, params, *sub))
    return v


def _compile_term(where: _Where, spec: Any, scope: str, params: Mapping[str, float], *sub: Any) -> tuple[str, Any, float]:
    if not isinstance(spec, dict):
        raise where.error(f"expected a term such as {{descriptor: crest_db}}, got {spec!r}", *sub)
    spec = dict(spec)
    scale = _number(where, spec.pop("scale", 1.0), *sub, "scale")
    default = spec.pop("default", None)
    times = spec.pop("times", None)
    if times is not None:
        if isinstance(times, dict) and "times" in times:
            raise where.error("`times` cannot be nested", *sub, "times")
        factor = _compile_term(where, times, scope, params, *sub, "times")
        return _compile_term(where, {**spec, "scale": scale, **({"default": default} if default is not None else {})},
                             scope, params, *sub) + (factor,)
    kinds = [k for k in spec if k in TERMS]
    extra = [k for k in spec if k not in TERMS]
    if extra:
        raise _unknown(where, "term", extra[0], list(TERMS) + ["scale", "times", "default", "min", "max", "round", "sum"], *sub, extra[0])
    if len(kinds) != 1:
        raise where.error(f"a term names exactly one source ({', '.join(TERMS)}); found {kinds or 'none'}", *sub)
    kind = kinds[0]
    arg = spec[kind]
    allowed = _TERM_SCOPES.get(kind)
    if allowed and scope not in allowed:
        raise where.error(f"the term {kind!r} is not available in scope {scope!r} (only {', '.join(allowed)})", *sub, kind)
    if kind in ("descriptor", "trigger_descriptor"):
        if arg not in DESCRIPTORS:
            raise _unknown(where, "descriptor", arg, DESCRIPTORS, *sub, kind)
    elif kind == "const":
        arg = _number(where, arg, *sub, kind)
    elif kind == "by_role":
        if not isinstance(arg, dict):
            raise where.error("by_role takes a mapping role -> number", *sub, kind)
        table = {}
        for role, num in arg.items():
            if role not in ROLES:
                raise _unknown(where, "role", role, ROLES, *sub, kind, role)
            table[role] = _number(where, num, *sub, kind, role)
        if default is None:
            missing = [r for r in ROLES if r not in table]
            if missing:
                raise where.error(f"by_role needs a `default` (no entry for {', '.join(missing[:4])}...)", *sub, kind)
        arg = (table, _number(where, default, *sub, "default") if default is not None else 0.0)
    elif kind == "genre":
        if arg not in _GENRE_NUMBERS:
            raise _unknown(where, "genre parameter", arg, _GENRE_NUMBERS, *sub, kind)
    elif kind == "param":
        if arg not in params:
            raise _unknown(where, "rule parameter", arg, params, *sub, kind)
    elif kind == "slot":
        if arg not in SLOTS[scope] or SLOTS[scope][arg].kind not in ("float", "int"):
            raise _unknown(where, f"numeric {scope} slot", arg,
                           [n for n, s in SLOTS[scope].items() if s.kind in ("float", "int")], *sub, kind)
    elif kind == "match":
        if arg not in _MATCH_FIELDS:
            raise _unknown(where, "match field", arg, _MATCH_FIELDS, *sub, kind)
    elif kind == "note_ms":
        if arg not in NOTE_VALUES:
            raise _unknown(where, "note value", arg, NOTE_VALUES, *sub, kind)
    elif kind == "tonal_gap_db":
        if arg not in BANDS_HZ:
            raise _unknown(where, "band", arg, BANDS_HZ, *sub, kind)
    elif kind == "placement":
        if arg not in _PLACEMENT:
            raise _unknown(where, "placement", arg, _PLACEMENT, *sub, kind)
    elif arg not in (True, None, 1):
        raise where.error(f"{kind} takes no argument: write `{kind}: true`", *sub, kind)
    return kind, arg, scale


# --- conditions ---------------------------------------------------------------------------

CONDITIONS: dict[str, str] = {
    "role": "the track's role is one of these",
    "role_not": "the track's role is none of these",
    "family": "the track's bus family (drums, vocals, music) is one of these",
    "channels": "the track has this many channels (1 or 2)",
    "descriptor": "descriptors of the track compare: {crest_db: {gt: 8}, ...}",
    "genre": "the genre is one of these",
    "genre_not": "the genre is none of these",
    "compression_style": "the genre's compression style is one of gentle, moderate, heavy",
    "session_has_role": "at least one stem of the session has one of these roles",
    "session_lacks_role": "no stem of the session has any of these roles",
    "role_count": "the number of stems sharing the track's role compares: {ge: 2}",
    "stem_count": "the number of stems compares",
    "part": "the part number in the stem's name compares (Violin I / violin_1 = 1, 2nd violin = 2; "
            "see `expertmix.roles.part_number`); a stem without one never matches: {eq: 1}",
    "role_rank": "the track ranks among the stems sharing its role by a descriptor: {descriptor: spectral_centroid_hz, order: highest, top: 1}",
    "tempo_bpm": "the session tempo compares",
    "session_stat": "a statistic of a descriptor over the active stems: {descriptor: onset_rate_hz, stat: median, gt: 4}",
    "masks": "the track masks another stem in an essential band: {roles: [lead_vocal], bands: [mid], min_db: 3}",
    "masked_by": "another stem masks the track in one of its essential bands: {roles: [...], bands: [...], min_db: 3}",
    "trigger_role": "(pair) the trigger track's role is one of these",
    "trigger_descriptor": "(pair) descriptors of the trigger track compare",
    "bus": "(bus) the bus is one of drums, vocals, music",
    "bus_has_role": "(bus) a member of the bus has one of these roles",
    "tonal_gap_db": "(mix) genre target minus predicted mix level per band compares: {bass: {gt: 2}}",
    "any": "at least one of these condition sets holds",
    "not": "this condition set does not hold",
}
_COND_SCOPES = {"role": ("track", "pair"), "role_not": ("track", "pair"), "family": ("track", "pair"),
                "channels": ("track", "pair"), "descriptor": ("track", "pair"), "role_count": ("track",), "role_rank": ("track",), "part": ("track",),
                "masks": ("track",), "masked_by": ("track",), "trigger_role": ("pair",),
                "trigger_descriptor": ("pair",), "bus": ("bus",), "tonal_gap_db": ("mix",), "bus_has_role": ("bus",)}
_STATS = ("median", "max", "min", "mean", "sum")


@dataclass
class Condition:
    """A compiled condition set (all must hold). ``test`` returns (ok, why-not, match)."""

    checks: list[tuple[str, Callable[[Eval], tuple[bool, str, MaskingInfo | None]]]]

    def test(self, ev: Eval) -> tuple[bool, str, MaskingInfo | None]:
        match = None
        for _name, check in self.checks:
            ok, why, m = check(ev)
            if not ok:
                return False, why, None
            match = m or match
        return True, "", match


def _names(where: _Where, spec: Any, choices: Iterable[str], what: str, *sub: Any) -> tuple[str, ...]:
    items = [spec] if isinstance(spec, (str, int)) else spec
    if not isinstance(items, list) or not items:
        raise where.error(f"expected a {what} or a list of them", *sub)
    choices = list(choices)
    for i, item in enumerate(items):
        if item not in choices:
            raise _unknown(where, what, item, choices, *sub)
    return tuple(items)


def _compile_condition(where: _Where, spec: Any, scope: str, *sub: Any) -> Condition:
    if spec is None:
        return Condition([])
    if not isinstance(spec, dict):
        raise where.error("`when` must be a mapping of conditions", *sub)
    checks = []
    for name, arg in spec.items():
        if name not in CONDITIONS:
            raise _unknown(where, "condition", name, CONDITIONS, *sub, name)
        allowed = _COND_SCOPES.get(name)
        if allowed and scope not in allowed:
            raise where.error(f"the condition {name!r} is not available in scope {scope!r} (only {', '.join(allowed)})",
                              *sub, name)
        checks.append((name, _compile_check(where, name, arg, scope, *sub, name)))
    return Condition(checks)


def _descr_checks(where: _Where, arg: Any, *sub: Any) -> list[tuple[str, Comparison]]:
    if not isinstance(arg, dict) or not arg:
        raise where.error("expected {descriptor_name: comparison, ...}", *sub)
    out = []
    for d, cmp in arg.items():
        if d not in DESCRIPTORS:
            raise _unknown(where, "descriptor", d, DESCRIPTORS, *sub, d)
        out.append((d, _comparison(where, cmp, *sub, d)))
    return out


def _compile_check(where: _Where, name: str, arg: Any, scope: str, *sub: Any):
    ok = (True, "", None)
    if name in ("role", "role_not", "trigger_role"):
        roles = _names(where, arg, ROLES, "role", *sub)
        if name == "role":
            return lambda ev: ok if ev.track.role in roles else (False, f"role {ev.track.role} not in {list(roles)}", None)
        if name == "role_not":
            return lambda ev: ok if ev.track.role not in roles else (False, f"role is {ev.track.role}", None)
        return lambda ev: ok if ev.trigger.role in roles else (False, f"trigger role {ev.trigger.role} not in {list(roles)}", None)
    if name == "family":
        fams = _names(where, arg, FAMILIES, "family", *sub)
        return lambda ev: ok if ev.track.family in fams else (False, f"family {ev.track.family}", None)
    if name == "channels":
        if arg not in (1, 2):
            raise where.error("channels is 1 or 2", *sub)
        return lambda ev: ok if ev.track.channels == arg else (False, f"{ev.track.channels} channel(s)", None)
    if name in ("descriptor", "trigger_descriptor"):
        tests = _descr_checks(where, arg, *sub)
        attr = "track" if name == "descriptor" else "trigger"

        def check_d(ev: Eval):
            t = getattr(ev, attr)
            for d, cmp in tests:
                x = t.values[d]
                if not cmp(x):
                    return False, f"{d} = {x:.4g}, not {cmp.text()}", None
            return ok
        return check_d
    if name in ("genre", "genre_not"):
        names = tuple(arg) if isinstance(arg, list) else (arg,)
        if not all(isinstance(n, str) for n in names):
            raise where.error("genre names are strings", *sub)
        if name == "genre":
            return lambda ev: ok if ev.ctx.genre.name in names else (False, f"genre {ev.ctx.genre.name}", None)
        return lambda ev: ok if ev.ctx.genre.name not in names else (False, f"genre {ev.ctx.genre.name}", None)
    if name == "compression_style":
        styles = _names(where, arg, _COMPRESSION_SCALE, "compression style", *sub)
        return lambda ev: ok if ev.ctx.genre.compression in styles else (False, f"style {ev.ctx.genre.compression}", None)
    if name in ("session_has_role", "session_lacks_role"):
        roles = _names(where, arg, ROLES, "role", *sub)
        if name == "session_has_role":
            return lambda ev: ok if ev.ctx.roles() & set(roles) else (False, f"no {'/'.join(roles)} in the session", None)
        return lambda ev: ok if not ev.ctx.roles() & set(roles) else (False, f"the session has {'/'.join(sorted(ev.ctx.roles() & set(roles)))}", None)
    if name in ("role_count", "stem_count", "tempo_bpm"):
        cmp = _comparison(where, arg, *sub)
        if name == "role_count":
            return lambda ev: ok if cmp(ev.ctx.role_count(ev.track.role)) else (False, f"{ev.ctx.role_count(ev.track.role)} {ev.track.role} stem(s)", None)
        if name == "stem_count":
            return lambda ev: ok if cmp(len(ev.ctx.tracks)) else (False, f"{len(ev.ctx.tracks)} stems", None)
        return lambda ev: ok if cmp(ev.ctx.tempo_bpm) else (False, f"tempo {ev.ctx.tempo_bpm:.0f} BPM, not {cmp.text()}", None)
    if name == "part":
        cmp = _comparison(where, arg, *sub)

        def check_part(ev: Eval):
            number = part_number(ev.track.name)
            if number is None:
                return False, "no part number in the name", None
            return ok if cmp(number) else (False, f"part {number}, not {cmp.text()}", None)
        return check_part
    if name == "role_rank":
        if not isinstance(arg, dict):
            raise where.error("role_rank takes {descriptor: NAME, order: highest|lowest, top: N}", *sub)
        unknown = set(arg) - {"descriptor", "order", "top"}
        if unknown:
            raise _unknown(where, "role_rank key", sorted(unknown)[0], ("descriptor", "order", "top"), *sub)
        d, order, top = arg.get("descriptor"), arg.get("order", "highest"), arg.get("top", 1)
        if d not in DESCRIPTORS:
            raise _unknown(where, "descriptor", d, DESCRIPTORS, *sub, "descriptor")
        if order not in ("highest", "lowest"):
            raise _unknown(where, "order", order, ("highest", "lowest"), *sub, "order")
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise where.error("top is a whole number >= 1", *sub, "top")

        def check_rank(ev: Eval):
            peers = [t for t in ev.ctx.tracks if t.role == ev.track.role]
            ordered = sorted(peers, key=lambda t: (-t.values[d] if order == "highest" else t.values[d], t.name))
            rank = [t.name for t in ordered].index(ev.track.name) + 1
            return (ok if rank <= top else (False, f"{order} {d} rank {rank} of {len(peers)} {ev.track.role}", None))
        return check_rank
    if name == "session_stat":
        if not isinstance(arg, dict):
            raise where.error("session_stat takes {descriptor: NAME, stat: median|max|min|mean|sum, <comparison>}", *sub)
        arg = dict(arg)
        d, stat = arg.pop("descriptor", None), arg.pop("stat", "median")
        if d not in DESCRIPTORS:
            raise _unknown(where, "descriptor", d, DESCRIPTORS, *sub, "descriptor")
        if stat not in _STATS:
            raise _unknown(where, "statistic", stat, _STATS, *sub, "stat")
        cmp = _comparison(where, arg, *sub)

        def check_s(ev: Eval):
            xs = sorted(t.values[d] for t in ev.ctx.tracks if t.values.get("active_fraction", 1.0) > 0)
            if not xs:
                return False, "no active stems", None
            x = {"median": xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]),
                 "max": xs[-1], "min": xs[0], "mean": sum(xs) / len(xs), "sum": sum(xs)}[stat]
            return (ok if cmp(x) else (False, f"{stat} {d} = {x:.4g}, not {cmp.text()}", None))
        return check_s
    if name in ("masks", "masked_by"):
        if not isinstance(arg, dict):
            raise where.error(f"{name} takes {{roles: [...], bands: [...], min_db: 3}}", *sub)
        unknown = set(arg) - {"roles", "bands", "min_db"}
        if unknown:
            raise _unknown(where, f"{name} key", sorted(unknown)[0], ("roles", "bands", "min_db"), *sub)
        roles = _names(where, arg["roles"], ROLES, "role", *sub, "roles") if "roles" in arg else None
        bands = _names(where, arg["bands"], BANDS_HZ, "band", *sub, "bands") if "bands" in arg else None
        min_db = _number(where, arg.get("min_db", 3.0), *sub, "min_db")

        def check_m(ev: Eval):
            best = None
            for m in ev.ctx.masking:
                me, other = (m.masker, m.maskee) if name == "masks" else (m.maskee, m.masker)
                if me != ev.track.name or m.masking_db < min_db:
                    continue
                if bands and m.band not in bands:
                    continue
                if roles and ev.ctx.track(other).role not in roles:
                    continue
                if best is None or m.masking_db > best.masking_db:
                    best = m
            if best is None:
                return False, f"no {'masking of' if name == 'masks' else 'masking by'} {'/'.join(roles) if roles else 'any stem'} >= {min_db:g} dB", None
            return True, "", best
        return check_m
    if name == "tonal_gap_db":
        if not isinstance(arg, dict) or not arg:
            raise where.error("tonal_gap_db takes {band: comparison}", *sub)
        tests = []
        for band, cmp in arg.items():
            if band not in BANDS_HZ:
                raise _unknown(where, "band", band, BANDS_HZ, *sub, band)
            tests.append((band, _comparison(where, cmp, *sub, band)))

        def check_gap(ev: Eval):
            for band, cmp in tests:
                gap = ev.engine.tonal_gap_db(band)
                if not cmp(gap):
                    return False, f"tonal gap in {band} {gap:+.1f} dB, not {cmp.text()}", None
            return ok
        return check_gap
    if name == "bus":
        buses = _names(where, arg, FAMILIES, "bus", *sub)
        return lambda ev: ok if ev.target in buses else (False, f"bus {ev.target}", None)
    if name == "bus_has_role":
        roles = _names(where, arg, ROLES, "role", *sub)
        return lambda ev: ok if any(t.role in roles for t in ev.engine.bus_members(ev.target)) else (False, f"no {'/'.join(roles)} on the bus", None)
    if name in ("any", "not"):
        if name == "any":
            if not isinstance(arg, list) or not arg:
                raise where.error("any takes a list of condition sets", *sub)
            subs = [_compile_condition(where, a, scope, *sub, i) for i, a in enumerate(arg)]

            def check_any(ev: Eval):
                whys = []
                for c in subs:
                    okk, why, m = c.test(ev)
                    if okk:
                        return True, "", m
                    whys.append(why)
                return False, "none of: " + "; ".join(whys), None
            return check_any
        inner = _compile_condition(where, arg, scope, *sub)

        def check_not(ev: Eval):
            okk, _why, _m = inner.test(ev)
            return (False, "excluded case holds", None) if okk else ok
        return check_not
    raise AssertionError(name)


# --- templates -----------------------------------------------------------------------------

_FIELD_RE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?::([+]?\.?\d*[fd%]?))?\}")
_TEMPLATE_NAMES = {"name", "role", "genre", "value", "tempo_bpm", "masker", "maskee", "band", "band_center_hz",
                   "masking_db", "trigger", "target"}


def _check_template(where: _Where, text: Any, *sub: Any) -> str:
    if not isinstance(text, str):
        raise where.error("expected text", *sub)
    for m in _FIELD_RE.finditer(text):
        n = m.group(1)
        if n not in _TEMPLATE_NAMES and n not in DESCRIPTORS and not n.startswith("slot.") and not n.startswith("param."):
            raise _unknown(where, "template field", n, sorted(_TEMPLATE_NAMES) + ["<descriptor>", "slot.<name>", "param.<name>"], *sub)
    stripped = _FIELD_RE.sub("", text)
    if "{" in stripped or "}" in stripped:
        raise where.error("a template field is written {name} or {name:.1f}; braces must come in pairs", *sub)
    return text


def render_template(text: str, ev: Eval, value: Any = None) -> str:
    def field_value(n: str) -> Any:
        t = ev.track
        if n == "name":
            return t.name if t else ev.target
        if n == "role":
            return t.role if t else ""
        if n == "genre":
            return ev.ctx.genre.name
        if n == "value":
            return value
        if n == "tempo_bpm":
            return ev.ctx.tempo_bpm
        if n == "target":
            return ev.target
        if n == "trigger":
            return ev.trigger.name if ev.trigger else ""
        if n in ("masker", "maskee", "band", "masking_db", "band_center_hz"):
            m = ev.match
            if m is None:
                return "?"
            return m.center_hz if n == "band_center_hz" else getattr(m, n)
        if n.startswith("slot."):
            return ev.slot(n[5:]) if ev.slot else None
        if n.startswith("param."):
            return ev.params.get(n[6:])
        return t.values.get(n) if t else None

    def sub(m: re.Match) -> str:
        v = field_value(m.group(1))
        spec = m.group(2) or ""
        if v is None:
            return "n/a"
        try:
            return format(v, spec)
        except (TypeError, ValueError):
            return str(v)
    return _FIELD_RE.sub(sub, text)


# --- actions ---------------------------------------------------------------------------------

ACTIONS: dict[str, str] = {
    "set": "set a slot: {set: gain_db, value: <value>}; the highest priority wins",
    "add": "add to a slot after the winning set: {add: gain_db, value: <value>}",
    "limit": "clamp a slot: {limit: gain_db, min: <value>, max: <value>} (eq.max_boost_db caps EQ boosts)",
    "eq": "add an EQ band: {eq: {kind: peak, freq_hz: <value>, gain_db: <value>, q: <value>}}",
    "finding": "report a defect: {finding: {kind: hum, action: repaired|flagged, measured: <value>, detail: <text>}}",
    "note": "add a remark for the engineer: {note: <text>}",
}
_EQ_KINDS = ("peak", "low_shelf", "high_shelf", "highpass", "lowpass")
_FINDING_KINDS = Finding.model_fields["kind"].annotation.__args__
_EQ_SCOPES = ("track", "bus", "mix")


@dataclass
class Action:
    op: str
    slot: str | None = None
    value: Value | None = None
    low: Value | None = None
    high: Value | None = None
    eq: dict[str, Value] | None = None
    eq_kind: str | None = None
    finding: dict[str, Any] | None = None
    text: str | None = None
    because: str | None = None


def _compile_action(where: _Where, spec: Any, scope: str, params: Mapping[str, float], *sub: Any) -> Action:
    if not isinstance(spec, dict):
        raise where.error("an action is a mapping such as {set: gain_db, value: 2}", *sub)
    ops = [k for k in spec if k in ACTIONS]
    if len(ops) != 1:
        unknown = [k for k in spec if k not in ACTIONS and k not in ("value", "min", "max", "because")]
        if unknown:
            raise _unknown(where, "action", unknown[0], ACTIONS, *sub, unknown[0])
        raise where.error(f"an action has exactly one of {', '.join(ACTIONS)}", *sub)
    op = ops[0]
    allowed_keys = {"set": {"set", "value", "because"}, "add": {"add", "value", "because"},
                    "limit": {"limit", "min", "max", "because"}, "eq": {"eq", "because"},
                    "finding": {"finding"}, "note": {"note"}}[op]
    extra = set(spec) - allowed_keys
    if extra:
        raise _unknown(where, f"key of a {op} action", sorted(extra)[0], sorted(allowed_keys), *sub)
    because = _check_template(where, spec["because"], *sub, "because") if "because" in spec else None
    if op in ("set", "add", "limit"):
        slot = spec[op]
        if slot not in SLOTS[scope]:
            raise _unknown(where, f"{scope} slot", slot, SLOTS[scope], *sub, op)
        s = SLOTS[scope][slot]
        if slot == "eq.max_boost_db" and op != "limit":
            raise where.error("eq.max_boost_db can only be limited: {limit: eq.max_boost_db, max: 3}", *sub, op)
        if op == "add" and s.kind not in ("float", "int"):
            raise where.error(f"cannot add to the {s.kind} slot {slot}", *sub, op)
        if op == "limit":
            if s.kind not in ("float", "int"):
                raise where.error(f"cannot limit the {s.kind} slot {slot}", *sub, op)
            if "min" not in spec and "max" not in spec:
                raise where.error("limit needs min, max or both", *sub)
            return Action(op, slot, low=_compile_value(where, spec["min"], scope, params, *sub, "min") if "min" in spec else None,
                          high=_compile_value(where, spec["max"], scope, params, *sub, "max") if "max" in spec else None,
                          because=because)
        if "value" not in spec:
            raise where.error(f"{op} needs a value", *sub)
        val = _compile_value(where, spec["value"], scope, params, *sub, "value", kind=s.kind)
        if val.literal is not None and s.kind in ("float", "int") and not val.terms:
            lo, hi = s.low, s.high
            if op == "set" and ((lo is not None and val.literal < lo) or (hi is not None and val.literal > hi)):
                raise where.error(f"{val.literal:g} is outside the range of {slot} [{lo:g}, {hi:g}]", *sub, "value")
        return Action(op, slot, value=val, because=because)
    if op == "eq":
        if scope not in _EQ_SCOPES:
            raise where.error(f"eq bands can be added in scopes {', '.join(_EQ_SCOPES)}, not {scope!r}", *sub)
        band = spec["eq"]
        if not isinstance(band, dict):
            raise where.error("eq takes {kind, freq_hz, gain_db, q}", *sub, "eq")
        kind = band.get("kind", "peak")
        if kind not in _EQ_KINDS:
            raise _unknown(where, "EQ kind", kind, _EQ_KINDS, *sub, "eq", "kind")
        extra = set(band) - {"kind", "freq_hz", "gain_db", "q"}
        if extra:
            raise _unknown(where, "EQ field", sorted(extra)[0], ("kind", "freq_hz", "gain_db", "q"), *sub, "eq")
        if "freq_hz" not in band:
            raise where.error("an EQ band needs freq_hz", *sub, "eq")
        vals = {k: _compile_value(where, band[k], scope, params, *sub, "eq", k) for k in ("freq_hz", "gain_db", "q") if k in band}
        for k, v in vals.items():
            if v.literal is not None:
                lo, hi = _bounds(EQBand, k)
                if not lo <= v.literal <= hi:
                    raise where.error(f"{k} {v.literal:g} is outside [{lo:g}, {hi:g}]", *sub, "eq", k)
        return Action(op, eq=vals, eq_kind=kind, because=because)
    if op == "finding":
        f = spec["finding"]
        if not isinstance(f, dict):
            raise where.error("finding takes {kind, action, measured, detail}", *sub, "finding")
        extra = set(f) - {"kind", "action", "measured", "detail"}
        if extra:
            raise _unknown(where, "finding field", sorted(extra)[0], ("kind", "action", "measured", "detail"), *sub, "finding")
        if f.get("kind") not in _FINDING_KINDS:
            raise _unknown(where, "finding kind", f.get("kind"), _FINDING_KINDS, *sub, "finding", "kind")
        if f.get("action") not in ("repaired", "flagged"):
            raise _unknown(where, "finding action", f.get("action"), ("repaired", "flagged"), *sub, "finding", "action")
        out = {"kind": f["kind"], "action": f["action"],
               "detail": _check_template(where, f.get("detail", ""), *sub, "finding", "detail"),
               "measured": _compile_value(where, f["measured"], scope, params, *sub, "finding", "measured") if "measured" in f else None}
        return Action(op, finding=out)
    return Action(op, text=_check_template(where, spec["note"], *sub, "note"))


# ============================================================================= rules ====

@dataclass
class Example:
    name: str
    expect: str                          # fire | silent
    stems: dict[str, dict[str, Any]]
    target: str | None
    trigger: str | None
    genre: str | None
    tempo_bpm: float
    masking: list[MaskingInfo]
    sets: dict[str, Any]
    tolerance: float
    line: int | None


@dataclass
class Rule:
    id: str
    summary: str
    rationale: str
    source: str
    scope: str
    priority: int
    when: Condition
    then: list[Action]
    params: dict[str, float]
    refine: dict[str, tuple[float, float]]
    genres: dict[str, dict[str, Any]]
    examples: list[Example]
    file: str
    line: int | None
    raw: dict[str, Any]
    enabled: bool = True
    trigger: Condition | None = None

    def for_genre(self, genre: str) -> "Rule":
        """This rule with its per-genre overrides applied (priority, params, refine, enabled)."""
        o = self.genres.get(genre)
        if not o:
            return self
        r = Rule(**{**self.__dict__})
        r.params = {**self.params, **o.get("params", {})}
        r.refine = {**self.refine, **o.get("refine", {})}
        r.priority = o.get("priority", self.priority)
        r.enabled = o.get("enabled", self.enabled)
        return r


_RULE_KEYS = {"id", "summary", "rationale", "source", "scope", "priority", "when", "trigger", "then", "params",
              "refine", "genres", "examples", "enabled"}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _compile_rule(data: Any, file: str, lines: dict[tuple, int], path: tuple) -> Rule:
    rid = data.get("id") if isinstance(data, dict) else None
    where = _Where(file, lines, path, rid if isinstance(rid, str) else None)
    if not isinstance(data, dict):
        raise where.error("a rule is a mapping with id, summary, when, then ...")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise where.error(f"a rule needs an id of lower-case letters, digits and dashes, got {rid!r}", "id")
    for k in data:
        if k not in _RULE_KEYS:
            raise _unknown(where, "rule key", k, sorted(_RULE_KEYS), k)
    for k in ("summary", "then"):
        if k not in data:
            raise where.error(f"missing {k!r}", k)
    scope = data.get("scope", "track")
    if scope not in SCOPES:
        raise _unknown(where, "scope", scope, SCOPES, "scope")
    priority = data.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 1000:
        raise where.error(f"priority is a whole number 0..1000, got {priority!r}", "priority")
    params_raw = data.get("params", {}) or {}
    if not isinstance(params_raw, dict):
        raise where.error("params is a mapping name -> number", "params")
    params = {k: _number(where, v, "params", k) for k, v in params_raw.items()}
    when = _compile_condition(where, data.get("when"), scope, "when")
    trigger = None
    if scope == "pair":
        trig_scope_when = data.get("trigger")
        if trig_scope_when is None:
            raise where.error("a pair rule needs `trigger:` conditions (on the track that drives the ducking)", "trigger")
        trigger = _compile_condition(where, trig_scope_when, "track", "trigger")
    elif "trigger" in data:
        raise where.error("`trigger` is only for scope: pair", "trigger")
    then_raw = data["then"]
    if not isinstance(then_raw, list) or not then_raw:
        raise where.error("then is a non-empty list of actions", "then")
    then = [_compile_action(where, a, scope, params, "then", i) for i, a in enumerate(then_raw)]
    refine: dict[str, tuple[float, float]] = {}
    for slot, rng in (data.get("refine") or {}).items():
        if slot not in SLOTS[scope] or SLOTS[scope][slot].kind not in ("float", "int"):
            raise _unknown(where, f"numeric {scope} slot", slot, [n for n, s in SLOTS[scope].items() if s.kind == "float"], "refine", slot)
        if not any(a.slot == slot and a.op in ("set", "add") for a in then):
            raise where.error(f"refine names {slot}, which this rule does not set", "refine", slot)
        if not isinstance(rng, list) or len(rng) != 2 or not _number(where, rng[0], "refine", slot) <= 0 <= _number(where, rng[1], "refine", slot):
            raise where.error("refine bounds are [low, high] around the rule's value, with low <= 0 <= high", "refine", slot)
        refine[slot] = (float(rng[0]), float(rng[1]))
    genres: dict[str, dict[str, Any]] = {}
    for g, o in (data.get("genres") or {}).items():
        if not isinstance(o, dict):
            raise where.error("a genre override is a mapping (priority, params, refine, enabled)", "genres", g)
        extra = set(o) - {"priority", "params", "refine", "enabled"}
        if extra:
            raise _unknown(where, "genre override key", sorted(extra)[0], ("priority", "params", "refine", "enabled"), "genres", g)
        for p in (o.get("params") or {}):
            if p not in params:
                raise _unknown(where, "rule parameter", p, params, "genres", g, "params", p)
            _number(where, o["params"][p], "genres", g, "params", p)
        for slot in (o.get("refine") or {}):
            if slot not in refine:
                raise where.error(f"genre override refines {slot}, which the rule does not refine", "genres", g, "refine", slot)
        genres[str(g)] = {**o, "refine": {k: tuple(v) for k, v in (o.get("refine") or {}).items()}}
    enabled = data.get("enabled", True)
    rule = Rule(id=rid, summary=str(data["summary"]), rationale=str(data.get("rationale", "")),
                source=str(data.get("source", "")), scope=scope, priority=priority, when=when, then=then,
                params=params, refine=refine, genres=genres, examples=[], file=file, line=where.line(), raw=data,
                enabled=bool(enabled), trigger=trigger)
    rule.examples = [_compile_example(where, e, rule, i) for i, e in enumerate(data.get("examples") or [])]
    return rule


#: Neutral descriptor values used where an example does not give one: a healthy, active
#: mid-range mono stem recorded at a sensible level.
NEUTRAL_DESCRIPTORS: dict[str, float] = {n: 0.0 for n in DESCRIPTORS}
NEUTRAL_DESCRIPTORS.update({
    "loudness_lufs": -23.0, "loudness_st_p10_lufs": -28.0, "loudness_st_p50_lufs": -23.0,
    "loudness_st_p95_lufs": -19.0, "loudness_range_lu": 6.0, "peak_dbfs": -8.0, "true_peak_dbtp": -7.8,
    "rms_dbfs": -22.0, "crest_db": 14.0, "dynamic_complexity_db": 3.0, "active_fraction": 0.9,
    "noise_floor_dbfs": -80.0, "signal_to_noise_db": 58.0, "spectral_centroid_hz": 1500.0,
    "spectral_rolloff_hz": 5000.0, "spectral_flatness": 0.1, "low_energy_ratio": 0.1, "sub_energy_ratio": 0.005,
    "sub_floor_dbfs": -80.0,
    "high_energy_ratio": 0.02, "band_sub_db": -25.0, "band_bass_db": -10.0, "band_low_mid_db": -7.0,
    "band_mid_db": -3.0, "band_high_mid_db": -9.0, "band_presence_db": -15.0, "band_air_db": -25.0,
    "onset_rate_hz": 2.0, "channels": 1.0, "stereo_correlation": 1.0, "duration_s": 180.0,
})


def _compile_example(where: _Where, data: Any, rule: Rule, i: int) -> Example:
    sub = ("examples", i)
    if not isinstance(data, dict):
        raise where.error("an example is a mapping {expect, session, ...}", *sub)
    extra = set(data) - {"name", "expect", "session", "target", "trigger", "genre", "sets", "tolerance"}
    if extra:
        raise _unknown(where, "example key", sorted(extra)[0], ("name", "expect", "session", "target", "trigger",
                                                                  "genre", "sets", "tolerance"), *sub)
    if data.get("expect") not in ("fire", "silent"):
        raise where.error("expect is fire or silent", *sub, "expect")
    session = data.get("session") or {}
    if not isinstance(session, dict) or not isinstance(session.get("stems"), dict) or not session["stems"]:
        raise where.error("an example needs session: {stems: {name: {role: ..., <descriptor>: ...}}}", *sub, "session")
    stems: dict[str, dict[str, Any]] = {}
    for name, s in session["stems"].items():
        if not isinstance(s, dict) or s.get("role") not in ROLES:
            raise where.error(f"example stem {name!r} needs a known role", *sub, "session", "stems", name)
        for k, v in s.items():
            if k != "role" and k not in DESCRIPTORS:
                raise _unknown(where, "descriptor", k, DESCRIPTORS, *sub, "session", "stems", name, k)
        stems[str(name)] = dict(s)
    masking = []
    for j, m in enumerate(session.get("masking") or []):
        try:
            masking.append(MaskingInfo(str(m["masker"]), str(m["maskee"]), str(m["band"]), float(m["masking_db"])))
        except (KeyError, TypeError, ValueError):
            raise where.error("masking entries are {masker, maskee, band, masking_db}", *sub, "session", "masking", j) from None
        if m["band"] not in BANDS_HZ:
            raise _unknown(where, "band", m["band"], BANDS_HZ, *sub, "session", "masking", j)
    target = data.get("target")
    if rule.scope in ("track", "pair"):
        target = target or next(iter(stems))
        if target not in stems:
            raise where.error(f"example target {target!r} is not one of its stems", *sub, "target")
    trigger = data.get("trigger")
    if rule.scope == "pair" and trigger not in stems:
        raise where.error("a pair example needs `trigger:` naming one of its stems", *sub, "trigger")
    sets = data.get("sets") or {}
    for slot in sets:
        if slot not in SLOTS[rule.scope] and slot not in ("eq", "finding"):
            raise _unknown(where, "slot", slot, list(SLOTS[rule.scope]) + ["eq", "finding"], *sub, "sets", slot)
    return Example(name=str(data.get("name", f"example {i + 1}")), expect=data["expect"], stems=stems, target=target,
                   trigger=trigger, genre=data.get("genre"), tempo_bpm=float(session.get("tempo_bpm", 120.0)),
                   masking=masking, sets=dict(sets), tolerance=float(data.get("tolerance", 0.05)),
                   line=where.line(*sub))


@dataclass
class Rulebook:
    rules: list[Rule]
    files: list[str]

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def ids(self) -> list[str]:
        return [r.id for r in self.rules]


def rule_dirs(extra: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    dirs = [data_dir("rules")]
    if extra:
        extras = [extra] if isinstance(extra, (str, os.PathLike)) else list(extra)
        dirs += [Path(e) for e in extras]
    return dirs


def load_rule_file(path: Path) -> list[Rule]:
    data, text = read_yaml_file(path)
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RulebookError("a rule file holds a list under `rules:`", file=str(path), line=1)
    lines = _line_index(text)
    return [_compile_rule(r, str(path), lines, ("rules", i)) for i, r in enumerate(data["rules"])]


def load_rulebook(extra: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None, *,
                  builtin: bool = True) -> Rulebook:
    """The bundled rules, then a user's folders (a rule with the same id replaces the bundled one)."""
    dirs = rule_dirs(extra) if builtin else [Path(e) for e in ([extra] if isinstance(extra, (str, os.PathLike)) else extra or [])]
    rules: dict[str, Rule] = {}
    files: list[str] = []
    for d in dirs:
        if not d.exists():
            raise RulebookError(f"rules folder {d} does not exist", file=str(d))
        paths = [d] if d.is_file() else sorted(d.rglob("*.yaml"))
        seen_here: dict[str, str] = {}
        for p in paths:
            files.append(str(p))
            for r in load_rule_file(p):
                if r.id in seen_here:
                    raise RulebookError(f"duplicate rule id (also in {seen_here[r.id]})", file=str(p), line=r.line,
                                        rule_id=r.id, field="id", hint="give each rule its own id; to replace a "
                                        "bundled rule, put yours in a --rules folder")
                seen_here[r.id] = str(p)
                rules[r.id] = r
    return Rulebook(rules=list(rules.values()), files=files)


# ============================================================================ engine ====

@dataclass
class Proposal:
    rule: Rule
    action: Action
    ev: Eval
    order: int


@dataclass
class RuleTrace:
    rule_id: str
    target: str
    fired: bool
    reason: str = ""
    proposed: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule_id, "target": self.target, "fired": self.fired}
        if self.reason:
            d["reason"] = self.reason
        if self.proposed:
            d["proposed"] = self.proposed
        if self.overridden:
            d["overridden_by"] = self.overridden
        return d


@dataclass
class Resolved:
    value: Any
    rule: Rule
    reason: str
    contributors: list[str]


class _Engine:
    def __init__(self, rulebook: Rulebook, ctx: SessionContext, only: set[str] | None = None):
        self.ctx = ctx
        self.rules = [r.for_genre(ctx.genre.name) for r in rulebook.rules if only is None or r.id in only]
        self.rules = [r for r in self.rules if r.enabled]
        self.order = {r.id: i for i, r in enumerate(self.rules)}
        self.proposals: dict[tuple[str, str], dict[str, list[Proposal]]] = {}
        self.eqs: dict[tuple[str, str], list[Proposal]] = {}
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.trace: list[RuleTrace] = []
        self.resolved: dict[tuple[str, str], dict[str, Resolved | None]] = {}
        self.resolving: set[tuple[str, str, str]] = set()
        self._balance = 0.0  # running left/right balance of the alternate placements

    # -- resolution ---------------------------------------------------------------------
    def value(self, scope: str, target: str, slot: str) -> Any:
        r = self.resolve(scope, target, slot)
        return None if r is None else r.value

    def fx_value(self, fx: str, slot: str, default: Any) -> Any:
        v = self.value("fx", fx, slot)
        return default if v is None else v

    def resolve(self, scope: str, target: str, slot: str) -> Resolved | None:
        key = (scope, target)
        done = self.resolved.setdefault(key, {})
        if slot in done:
            return done[slot]
        if (scope, target, slot) in self.resolving:
            raise RulebookError(f"slot {slot} of {target} depends on itself through the rules "
                                f"{', '.join(p.rule.id for p in self.proposals.get(key, {}).get(slot, []))}",
                                hint="remove the circular `slot:` reference")
        self.resolving.add((scope, target, slot))
        props = self.proposals.get(key, {}).get(slot, [])
        sets = [p for p in props if p.action.op == "set"]
        adds = [p for p in props if p.action.op == "add"]
        limits = [p for p in props if p.action.op == "limit"]
        result: Resolved | None = None
        if slot == "eq.max_boost_db" and limits:
            caps = [(p.action.high(p.ev), p) for p in limits if p.action.high is not None]
            if caps:
                cap, p = min(caps, key=lambda c: c[0])
                result = Resolved(cap, p.rule, self._reason(p, cap), [p.rule.id])
        elif sets or adds:
            spec = SLOTS[scope][slot]
            if sets:
                win = sorted(sets, key=lambda p: (-p.rule.priority, p.order))[0]
                value = win.action.value(win.ev)
                base_rule, contributors = win.rule, [win.rule.id]
                reason = self._reason(win, value)
                for p in sets:
                    if p is not win:
                        self._trace_of(p).overridden[slot] = win.rule.id
            else:
                value, base_rule, contributors, reason = 0.0 if spec.kind == "float" else 0, adds[0].rule, [], ""
            for p in sorted(adds, key=lambda p: (-p.rule.priority, p.order)):
                delta = p.action.value(p.ev)
                value = value + delta
                contributors.append(p.rule.id)
                reason = "; ".join(x for x in (reason, self._reason(p, delta)) if x)
            for p in sorted(limits, key=lambda p: (-p.rule.priority, p.order)):
                lo = p.action.low(p.ev) if p.action.low else None
                hi = p.action.high(p.ev) if p.action.high else None
                clamped = min(max(value, lo) if lo is not None else value, hi) if hi is not None else (max(value, lo) if lo is not None else value)
                if clamped != value:
                    contributors.append(p.rule.id)
                    reason = "; ".join(x for x in (reason, self._reason(p, clamped)) if x)
                value = clamped
            if spec.kind == "float":
                lo, hi = spec.low, spec.high
                value = float(value)
                if lo is not None:
                    value = max(lo, value)
                if hi is not None:
                    value = min(hi, value)
                value = round(value, 3)
            elif spec.kind == "int":
                value = int(round(value))
            elif spec.kind == "mains":
                value = 50 if float(value) < 55.0 else 60
            result = Resolved(value, base_rule, reason, contributors)
        done[slot] = result
        self.resolving.discard((scope, target, slot))
        return result

    def _reason(self, p: Proposal, value: Any) -> str:
        text = p.action.because or p.rule.summary
        return render_template(text, p.ev, value)

    def _trace_of(self, p: Proposal) -> RuleTrace:
        return p.ev.trace

    # -- predictions ----------------------------------------------------------------------
    def track_level_db(self, t: TrackContext) -> float | None:
        """Predicted loudness of a track after trim and fader (None when silent or muted)."""
        if t.values.get("active_fraction", 0.0) <= 0 or self.value("track", t.name, "mute"):
            return None
        return t.values["loudness_lufs"] + (self.value("track", t.name, "trim_db") or 0.0) + (
            self.value("track", t.name, "gain_db") or 0.0)

    def predicted_mix_lufs(self) -> float:
        power = 0.0
        for t in self.ctx.tracks:
            lvl = self.track_level_db(t)
            if lvl is not None:
                power += 10 ** (lvl / 10.0) * max(t.values.get("active_fraction", 1.0), 0.05)
        return 10.0 * math.log10(power) if power > 0 else -70.0

    def bus_members(self, bus: str) -> list[TrackContext]:
        return [t for t in self.ctx.tracks if self.track_bus(t) == bus]

    def track_bus(self, t: TrackContext) -> str:
        return t.family

    def predicted_bus_peak_dbfs(self, bus: str) -> float:
        peaks = []
        for t in self.bus_members(bus):
            if self.track_level_db(t) is None:
                continue
            peaks.append(t.values["peak_dbfs"] + (self.value("track", t.name, "trim_db") or 0.0)
                         + (self.value("track", t.name, "gain_db") or 0.0) - (3.0 if t.channels == 1 else 0.0))
        return max(peaks) + math.log2(len(peaks)) if peaks else -60.0

    def tonal_gap_db(self, band: str) -> float:
        """Genre target band level minus the predicted mix's band level (both relative to the total)."""
        target = self.ctx.genre.band_balance_db.get(band)
        if target is None:
            return 0.0
        total = 0.0
        in_band = 0.0
        for t in self.ctx.tracks:
            lvl = self.track_level_db(t)
            if lvl is None:
                continue
            p = 10 ** (lvl / 10.0)
            total += p
            in_band += p * 10 ** (t.values[f"band_{band}_db"] / 10.0)
        if total <= 0 or in_band <= 0:
            return 0.0
        return target - 10.0 * math.log10(in_band / total)

    # -- running -----------------------------------------------------------------------
    def _targets(self, scope: str) -> list[tuple[str, TrackContext | None, TrackContext | None]]:
        ctx = self.ctx
        if scope == "track":
            return [(t.name, t, None) for t in ctx.tracks]
        if scope == "pair":
            return [(f"{a.name}<-{b.name}", a, b) for a in ctx.tracks for b in ctx.tracks if a is not b]
        if scope == "bus":
            return [(f, None, None) for f in FAMILIES if self.bus_members(f)]
        if scope == "fx":
            return [("fx", None, None)]
        return [("mix", None, None)]

    def run(self) -> None:
        counter = 0
        for scope in SCOPES:
            for rule in self.rules:
                if rule.scope != scope:
                    continue
                fired: list[tuple[Eval, RuleTrace]] = []
                for target, track, trigger in self._targets(scope):
                    ev = Eval(ctx=self.ctx, scope=scope, target=target, track=track, trigger=trigger,
                              params=rule.params, engine=self)
                    ev.slot = (lambda s, _sc=scope, _t=target: self.value(_sc, _t, s))
                    ok, why, match = rule.when.test(ev)
                    if ok and rule.trigger is not None:
                        tev = Eval(ctx=self.ctx, scope="track", target=trigger.name, track=trigger, engine=self)
                        ok, why, _m = rule.trigger.test(tev)
                        why = f"trigger {trigger.name}: {why}" if not ok else why
                    ev.match = match
                    tr = RuleTrace(rule.id, target, ok, "" if ok else why)
                    ev.trace = tr
                    self.trace.append(tr)
                    if ok:
                        fired.append((ev, tr))
                self._place(rule, fired)
                for ev, tr in fired:
                    key = (scope, ev.target)
                    for action in rule.then:
                        counter += 1
                        p = Proposal(rule, action, ev, counter)
                        if action.op in ("set", "add", "limit"):
                            self.proposals.setdefault(key, {}).setdefault(action.slot, []).append(p)
                        elif action.op == "eq":
                            self.eqs.setdefault(key, []).append(p)
                        elif action.op == "finding":
                            self._finding(p)
                        elif action.op == "note":
                            self.notes.append(render_template(action.text, ev))
            # resolve everything of this scope before the next (later scopes read these values)
            for key, slots in list(self.proposals.items()):
                if key[0] == scope:
                    for slot in slots:
                        self.resolve(key[0], key[1], slot)
        self._fill_trace()

    def _fill_trace(self) -> None:
        by_key: dict[tuple[str, str], RuleTrace] = {}
        for tr in self.trace:
            by_key[(tr.rule_id, tr.target)] = tr
        for (scope, target), slots in self.proposals.items():
            for slot, props in slots.items():
                res = self.resolved.get((scope, target), {}).get(slot)
                for p in props:
                    tr = by_key[(p.rule.id, target)]
                    if p.action.op == "set":
                        tr.proposed[slot] = p.action.value(p.ev)
                    elif p.action.op == "add":
                        tr.proposed[f"{slot} (+)"] = p.action.value(p.ev)
                    elif res is not None and p.rule.id in res.contributors:
                        tr.proposed[f"{slot} (limit)"] = res.value
        for (scope, target), props in self.eqs.items():
            for p in props:
                tr = by_key[(p.rule.id, target)]
                tr.proposed.setdefault("eq", []).append(self._eq_band(p).model_dump())

    def _place(self, rule: Rule, fired: list[tuple[Eval, RuleTrace]]) -> None:
        kinds = {t[1] for a in rule.then if a.value for t in a.value.terms if t[0] == "placement"}
        if not kinds:
            return
        kind = sorted(kinds)[0]
        groups: dict[str, list[Eval]] = {}
        for ev, _tr in fired:
            groups.setdefault(ev.track.role, []).append(ev)
        balance = self._balance
        for role, evs in groups.items():
            if len(evs) > 1 and kind in ("spread", "spread_or_alternate"):
                n = len(evs)
                for i, ev in enumerate(evs):
                    ev.placement = -1.0 + 2.0 * i / (n - 1)
            else:
                for ev in evs:
                    side = 1.0 if balance < 0 else -1.0
                    ev.placement = side
                    balance += side
        self._balance = balance

    def _finding(self, p: Proposal) -> None:
        f = p.action.finding
        measured = f["measured"](p.ev) if f["measured"] is not None else None
        self.findings.append(Finding(stem=p.ev.track.name if p.ev.track else p.ev.target, kind=f["kind"],
                                     action=f["action"], measured=None if measured is None else round(float(measured), 6),
                                     detail=render_template(f["detail"], p.ev, measured), source=f"rule:{p.rule.id}"))

    def _eq_band(self, p: Proposal) -> EQBand:
        vals = {k: v(p.ev) for k, v in p.action.eq.items()}
        for k, (lo, hi) in (("freq_hz", _bounds(EQBand, "freq_hz")), ("gain_db", _bounds(EQBand, "gain_db")),
                            ("q", _bounds(EQBand, "q"))):
            if k in vals:
                vals[k] = round(min(hi, max(lo, float(vals[k]))), 3)
        return EQBand(kind=p.action.eq_kind, **vals)


# --- building the plan -------------------------------------------------------------------

def _decision(engine: _Engine, scope: str, target: str, slot: str, res: Resolved) -> Decision:
    rule = res.rule
    bounds = None
    rule_value = None
    if slot in rule.refine and isinstance(res.value, (int, float)) and not isinstance(res.value, bool):
        lo, hi = rule.refine[slot]
        spec = SLOTS[scope][slot]
        blo = res.value + lo if spec.low is None else max(spec.low, res.value + lo)
        bhi = res.value + hi if spec.high is None else min(spec.high, res.value + hi)
        bounds = (round(blo, 3), round(bhi, 3))
        rule_value = float(res.value)
    src = f"rule:{rule.id}" if len(res.contributors) <= 1 else "rule:" + "+".join(res.contributors)
    return Decision(source=src, reason=res.reason, value=res.value, rule_value=rule_value, bounds=bounds)


def _apply(obj: Any, slot: str, value: Any) -> None:
    parts = slot.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    setattr(obj, parts[-1], value)


_PROCESSORS = ("compressor", "gate", "deesser", "glue")


def _apply_slots(engine: _Engine, scope: str, target: str, obj: Any, why: dict[str, Decision],
                 skip: Iterable[str] = ()) -> None:
    resolved = engine.resolved.get((scope, target), {})
    enabled_set = {s for s in resolved if s.endswith(".enabled") and resolved[s] is not None}
    for slot, res in resolved.items():
        if res is None or slot in skip or slot.startswith("sends.") or slot == "eq.max_boost_db":
            continue
        holder, path, why_map = obj, slot, why
        if scope == "mix" and slot.startswith("master."):
            holder, path, why_map = obj.master, slot[len("master."):], obj.master.why
        elif scope == "pair" and slot.startswith("ducking."):
            path = slot[len("ducking."):]
        _apply(holder, path, res.value)
        why_map[path] = _decision(engine, scope, target, slot, res)
        head = slot.rsplit(".", 1)[0]
        proc = head.split(".")[-1]
        if proc in _PROCESSORS and "." in path and f"{head}.enabled" not in enabled_set and not slot.endswith(".enabled"):
            # setting a processor's parameter switches it on unless a rule decided otherwise
            sub_obj = holder
            for p in path.split(".")[:-1]:
                sub_obj = getattr(sub_obj, p)
            sub_obj.enabled = True


def _apply_eq(engine: _Engine, scope: str, target: str, current: list[EQBand], why: dict[str, Decision]) -> list[EQBand]:
    props = engine.eqs.get((scope, target), [])
    if not props:
        return current
    bands = list(current)
    reasons, ids = [], []
    for p in sorted(props, key=lambda p: (-p.rule.priority, p.order)):
        band = engine._eq_band(p)
        bands.append(band)
        reasons.append(render_template(p.action.because or p.rule.summary, p.ev, band.gain_db))
        ids.append(p.rule.id)
    cap = engine.value(scope, target, "eq.max_boost_db")
    if cap is not None:
        capped = []
        for b in bands:
            if b.kind not in ("highpass", "lowpass") and b.gain_db > cap:
                capped.append(b.model_copy(update={"gain_db": cap}))
            else:
                capped.append(b)
        if capped != bands:
            res = engine.resolve(scope, target, "eq.max_boost_db")
            reasons.append(res.reason)
            ids.extend(res.contributors)
        bands = capped
    # cut before boost: cuts first, then boosts, each in frequency order (stable)
    bands = sorted(bands, key=lambda b: (b.kind in ("peak", "low_shelf", "high_shelf") and b.gain_db > 0, b.freq_hz))
    bands = bands[:12]
    why["eq"] = Decision(source="rule:" + "+".join(dict.fromkeys(ids)), reason="; ".join(reasons), value=len(bands))
    return bands


def build_plan(engine: _Engine) -> MixPlan:
    ctx = engine.ctx
    from .defaults import master_for  # the genre's delivery target

    tracks: list[TrackPlan] = []
    for t in ctx.tracks:
        tp = TrackPlan(name=t.name, file=t.file, role=t.role, bus=t.family)
        _apply_slots(engine, "track", t.name, tp, tp.why)
        tp.eq = _apply_eq(engine, "track", t.name, tp.eq, tp.why)
        for fx in FX_NAMES:
            res = engine.resolve("track", t.name, f"sends.{fx}")
            if res is not None:
                tp.sends.append(Send(bus=fx, level_db=res.value))
                tp.why[f"sends.{fx}"] = _decision(engine, "track", t.name, f"sends.{fx}", res)
        tracks.append(tp)
    used_fx = {s.bus for tp in tracks for s in tp.sends}
    fxs = []
    for name in FX_NAMES:
        if name not in used_fx:
            continue
        bus = FxBus(name=name, kind=name, note="1/8." if name == "delay" else None)
        resolved = engine.resolved.get(("fx", "fx"), {})
        for slot, res in resolved.items():
            if res is None or not slot.startswith(name + "."):
                continue
            field_name = slot[len(name) + 1:]
            setattr(bus, field_name, res.value)
            bus.why[field_name] = _decision(engine, "fx", "fx", slot, res)
        if name == "delay" and bus.time_ms is not None and resolved.get("delay.note") is None:
            bus.note = None
        fxs.append(FxBus.model_validate(bus.model_dump()))
    buses = []
    for fam in FAMILIES:
        if not any(tp.bus == fam for tp in tracks):
            continue
        gb = GroupBus(name=fam)
        gb.compressor.enabled = False
        _apply_slots(engine, "bus", fam, gb, gb.why)
        gb.eq = _apply_eq(engine, "bus", fam, gb.eq, gb.why)
        buses.append(gb)
    ducking = []
    for (scope, target), slots in engine.resolved.items():
        if scope != "pair" or not any(v is not None for v in slots.values()):
            continue
        tgt, trig = target.split("<-")
        d = Ducking(target=tgt, trigger=trig)
        _apply_slots(engine, "pair", target, d, d.why)
        ducking.append(d)
    ducking.sort(key=lambda d: ([t.name for t in ctx.tracks].index(d.target), [t.name for t in ctx.tracks].index(d.trigger)))
    plan = MixPlan(stems_dir=ctx.stems_dir, sample_rate_hz=ctx.sample_rate_hz, genre=ctx.genre.name,
                   tempo_bpm=round(min(300.0, max(30.0, ctx.tempo_bpm)), 1), tracks=tracks, buses=buses, fx=fxs,
                   ducking=ducking, master=master_for(ctx.genre), notes=list(ctx.notes) + engine.notes,
                   findings=engine.findings)
    _apply_slots(engine, "mix", "mix", plan, plan.why)
    plan.master.eq = _apply_eq(engine, "mix", "mix", plan.master.eq, plan.master.why)
    return MixPlan.model_validate(plan.model_dump())


@dataclass
class RulebookResult:
    plan: MixPlan
    trace: list[RuleTrace]


def evaluate(rulebook: Rulebook, ctx: SessionContext, *, only: Iterable[str] | None = None) -> RulebookResult:
    """Run the rulebook on a session: the plan and the trace of every rule on every target."""
    engine = _Engine(rulebook, ctx, set(only) if only is not None else None)
    engine.run()
    return RulebookResult(plan=build_plan(engine), trace=engine.trace)


# ========================================================================== examples ====

def example_context(ex: Example, genre: GenreProfile) -> SessionContext:
    tracks = []
    for name, s in ex.stems.items():
        values = dict(NEUTRAL_DESCRIPTORS)
        values.update({k: float(v) for k, v in s.items() if k != "role"})
        tracks.append(TrackContext(name=name, file=f"{name}.wav", role=s["role"], channels=int(values["channels"]),
                                   values=values))
    return SessionContext(tracks=tracks, genre=genre, tempo_bpm=ex.tempo_bpm, masking=list(ex.masking),
                          stems_dir="example")


def run_example(rule: Rule, ex: Example, genre: GenreProfile) -> list[str]:
    """Problems with one example of a rule (empty when it behaves as written)."""
    ctx = example_context(ex, genre)
    book = Rulebook(rules=[rule], files=[rule.file])
    engine = _Engine(book, ctx)
    engine.run()
    target = {"track": ex.target, "pair": f"{ex.target}<-{ex.trigger}", "bus": ex.target, "fx": "fx",
              "mix": "mix"}[rule.scope]
    traces = [t for t in engine.trace if t.target == target]
    if not traces and rule.for_genre(genre.name).enabled and rule.scope != "bus":
        return [f"{ex.name}: no target {target!r} in scope {rule.scope}"]
    fired = bool(traces) and traces[0].fired
    problems = []
    if ex.expect == "fire" and not fired:
        problems.append(f"{ex.name}: expected the rule to fire on {target}, it stayed silent"
                        + (f" ({traces[0].reason})" if traces and traces[0].reason else ""))
    if ex.expect == "silent" and fired:
        problems.append(f"{ex.name}: expected the rule to stay silent on {target}, it fired")
    if fired:
        for slot, want in ex.sets.items():
            if slot == "eq":
                got = [engine._eq_band(p).model_dump() for p in engine.eqs.get((rule.scope, target), [])]
                for w in (want if isinstance(want, list) else [want]):
                    if not any(all(abs(g.get(k, 0) - v) <= ex.tolerance if isinstance(v, (int, float)) else g.get(k) == v
                                   for k, v in w.items()) for g in got):
                        problems.append(f"{ex.name}: expected an EQ band {w}, got {got}")
                continue
            if slot == "finding":
                kinds = [f.kind for f in engine.findings]
                if want not in kinds:
                    problems.append(f"{ex.name}: expected a {want} finding, got {kinds}")
                continue
            res = engine.resolve(rule.scope, target, slot)
            got = None if res is None else res.value
            if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(got, (int, float)):
                if abs(got - want) > ex.tolerance:
                    problems.append(f"{ex.name}: expected {slot} = {want}, got {got}")
            elif got != want:
                problems.append(f"{ex.name}: expected {slot} = {want!r}, got {got!r}")
    return problems


def test_rulebook(rulebook: Rulebook, genres_dir: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Run every rule's examples; rule id -> problems (only rules with problems are listed)."""
    from .genres import load_genre

    cache: dict[str, GenreProfile] = {}

    def genre(name: str) -> GenreProfile:
        if name not in cache:
            cache[name] = load_genre(name, genres_dir)
        return cache[name]

    out: dict[str, list[str]] = {}
    for rule in rulebook.rules:
        problems = []
        if not rule.examples:
            problems.append("no examples: add at least one that must fire and one that must stay silent")
        elif not any(e.expect == "fire" for e in rule.examples):
            problems.append("needs at least one example that must fire")
        elif rule.when.checks and not any(e.expect == "silent" for e in rule.examples):
            problems.append("needs at least one example that must stay silent (only a rule without conditions may lack one)")
        for ex in rule.examples:
            problems += run_example(rule, ex, genre(ex.genre or "pop"))
        if problems:
            out[rule.id] = problems
    return out


def vocabulary() -> dict[str, Any]:
    """Everything a rule may name, for `expertmix rules vocabulary`."""
    return {"scopes": list(SCOPES), "conditions": dict(CONDITIONS), "terms": dict(TERMS), "actions": dict(ACTIONS),
            "slots": {scope: {n: {"kind": s.kind, "range": [s.low, s.high], "doc": s.doc} for n, s in slots.items()}
                      for scope, slots in SLOTS.items()},
            "descriptors": {n: f"{d.doc} [{d.unit}]" for n, d in DESCRIPTORS.items()},
            "genre_parameters": list(_GENRE_NUMBERS), "bands": {b: list(r) for b, r in BANDS_HZ.items()},
            "finding_kinds": list(_FINDING_KINDS), "eq_kinds": list(_EQ_KINDS), "note_values": list(NOTE_VALUES)}
