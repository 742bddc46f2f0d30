"""The mix plan: every decision of a mix, readable, editable and re-renderable.

A :class:`MixPlan` is the seam of expertmix. The planner (built-in defaults today, the rulebook
and learned refinements later) writes one; the renderer reads one; a person can edit one in
between. Every parameter is declared once here, with its unit in its name, its range, its
default and its documentation; validation, CLI help and tests derive from these declarations.

Every decision records where it came from in the ``why`` map of the object that holds it:
``why["gain_db"] = Decision(source="default:gain-staging", reason="...")``. A value without an
entry in ``why`` is the schema default. Editing a value by hand keeps its ``why`` entry; the
report marks it as edited because the value no longer equals ``Decision.value``.

Plans round-trip through YAML (:func:`dump_plan`, :func:`load_plan`); a malformed or
out-of-range plan raises :class:`~expertmix.errors.PlanError` naming the file, line and the
dotted path of the bad field.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PlanError
from .io import SafeDumper, yaml_compose, yaml_load

#: Version of the plan format. Bump on any incompatible change and migrate in ``load_plan``.
PLAN_FORMAT_VERSION = 1

EQKind = Literal["peak", "low_shelf", "high_shelf", "highpass", "lowpass"]
NOTE_VALUES = ("1/1", "1/2", "1/4", "1/8", "1/16", "1/2.", "1/4.", "1/8.", "1/16.", "1/4t", "1/8t", "1/16t")


class _Model(BaseModel):
    """Strict base: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Decision(_Model):
    """Where one value came from and why."""

    source: str = Field(description="who decided: 'default:<heuristic>', 'rule:<id>', 'model:<name>' or 'user'")
    reason: str = Field("", description="one sentence a mix engineer would write")
    value: float | bool | str | None = Field(None, description="the value as decided (to tell a later hand edit)")
    rule_value: float | None = Field(None, description="the value the rule proposed, before any learned refinement")
    model_delta: float | None = Field(None, description="the learned refinement added to rule_value")
    bounds: tuple[float, float] | None = Field(None, description="the range the rule allows a model to move the value in")


Why = dict[str, Decision]


class EQBand(_Model):
    """One parametric EQ band."""

    kind: EQKind = Field("peak", description="peak, low_shelf, high_shelf, highpass or lowpass")
    freq_hz: float = Field(1000.0, ge=20.0, le=20000.0, description="centre, corner or cut-off frequency")
    gain_db: float = Field(0.0, ge=-24.0, le=24.0, description="boost (+) or cut (-); ignored by highpass/lowpass")
    q: float = Field(0.707, ge=0.1, le=30.0, description="bandwidth (peak) or slope/resonance (shelves, filters)")
    enabled: bool = True


class Cleanup(_Model):
    """Corrective processing applied first: DC removal, rumble high-pass, mains hum notches."""

    dc_remove: bool = Field(True, description="remove DC offset (5 Hz high-pass; the clean-up high-pass does it when set)")
    highpass_hz: float | None = Field(None, ge=10.0, le=1000.0, description="rumble high-pass corner; null = off")
    highpass_slope_db_per_oct: Literal[12, 24] = Field(24, description="high-pass steepness: 12 (Butterworth) or 24 (Linkwitz-Riley), both -3 dB at highpass_hz")
    hum_notch_hz: Literal[50, 60] | None = Field(None, description="mains frequency to notch; null = off")
    hum_harmonics: int = Field(4, ge=1, le=12, description="number of notched partials (f, 2f, ...)")
    hum_notch_q: float = Field(30.0, ge=5.0, le=100.0, description="notch sharpness")


class Compressor(_Model):
    """Feed-forward peak compressor, stereo-linked."""

    enabled: bool = False
    threshold_db: float = Field(-18.0, ge=-60.0, le=0.0, description="level above which gain is reduced (dBFS)")
    ratio: float = Field(3.0, ge=1.0, le=30.0, description="input:output ratio above threshold")
    attack_ms: float = Field(10.0, ge=0.1, le=300.0, description="time to react to a rise")
    release_ms: float = Field(120.0, ge=5.0, le=3000.0, description="time to recover")
    knee_db: float = Field(3.0, ge=0.0, le=9.0, description="approximate width of the soft knee")
    makeup_db: float = Field(0.0, ge=-12.0, le=24.0, description="gain after compression")
    mix: float = Field(1.0, ge=0.0, le=1.0, description="parallel compression: 0 = dry, 1 = fully compressed")


class Gate(_Model):
    """Downward expander/gate: attenuates by ``range_db`` when the signal falls below threshold."""

    enabled: bool = False
    threshold_db: float = Field(-40.0, ge=-90.0, le=0.0, description="opening level (dBFS)")
    range_db: float = Field(18.0, ge=0.0, le=90.0, description="attenuation when closed")
    attack_ms: float = Field(1.0, ge=0.1, le=100.0, description="opening time")
    release_ms: float = Field(120.0, ge=5.0, le=3000.0, description="closing time")


class DeEsser(_Model):
    """Split-band de-esser: compresses only the band above ``freq_hz``."""

    enabled: bool = False
    freq_hz: float = Field(6000.0, ge=2000.0, le=16000.0, description="split frequency")
    threshold_db: float = Field(-30.0, ge=-70.0, le=0.0, description="sibilance level above which the band is reduced")
    ratio: float = Field(4.0, ge=1.0, le=20.0)
    release_ms: float = Field(60.0, ge=5.0, le=1000.0)


class Send(_Model):
    """A send from a track to an effect bus."""

    bus: str = Field(description="name of an effect bus in ``MixPlan.fx``")
    level_db: float = Field(-18.0, ge=-96.0, le=6.0, description="send level relative to the track's output")
    pre_fader: bool = Field(False, description="take the send before the fader")


class TrackPlan(_Model):
    """Everything done to one stem, in signal-flow order."""

    name: str = Field(description="stem name (the file name without extension); unique")
    file: str = Field(description="stem file name inside ``MixPlan.stems_dir``")
    role: str = Field("other", description="instrument role (see `expertmix roles`)")
    bus: str = Field("mix", description="group bus the track feeds, or 'mix' for the mix bus directly")
    mute: bool = False
    trim_db: float = Field(0.0, ge=-60.0, le=40.0, description="input gain staging before any processing")
    polarity_invert: bool = False
    cleanup: Cleanup = Field(default_factory=Cleanup)
    eq: list[EQBand] = Field(default_factory=list, max_length=12, description="parametric EQ, in order")
    gate: Gate = Field(default_factory=Gate)
    compressor: Compressor = Field(default_factory=Compressor)
    deesser: DeEsser = Field(default_factory=DeEsser)
    gain_db: float = Field(0.0, ge=-96.0, le=24.0, description="fader")
    pan: float = Field(0.0, ge=-1.0, le=1.0, description="-1 left, 0 centre, +1 right (constant power for mono, balance for stereo)")
    width: float = Field(1.0, ge=0.0, le=2.0, description="stereo width of a stereo stem: 0 mono, 1 as recorded, 2 wider")
    sends: list[Send] = Field(default_factory=list)
    why: Why = Field(default_factory=dict)


class GroupBus(_Model):
    """A group bus (drums, vocals, music ...) with its own chain; feeds the mix bus."""

    name: str
    eq: list[EQBand] = Field(default_factory=list, max_length=12)
    compressor: Compressor = Field(default_factory=Compressor)
    gain_db: float = Field(0.0, ge=-60.0, le=24.0)
    why: Why = Field(default_factory=dict)


class FxBus(_Model):
    """An effect return: a reverb or a delay fed by track sends."""

    name: str
    kind: Literal["reverb", "delay"]
    return_db: float = Field(0.0, ge=-60.0, le=12.0, description="return level into the mix bus")
    highpass_hz: float = Field(200.0, ge=20.0, le=2000.0, description="high-pass on the effect input (keeps lows dry)")
    lowpass_hz: float = Field(6000.0, ge=1000.0, le=20000.0, description="low-pass on the effect (darker = lower)")
    predelay_ms: float = Field(20.0, ge=0.0, le=500.0, description="reverb pre-delay")
    decay_s: float = Field(1.8, ge=0.1, le=12.0, description="reverb decay time (RT60)")
    room_size: float = Field(1.0, ge=0.25, le=4.0, description="reverb room size factor")
    note: str | None = Field(None, description=f"delay time as a note value at the plan tempo: one of {', '.join(NOTE_VALUES)}")
    time_ms: float | None = Field(None, ge=1.0, le=4000.0, description="delay time when not tempo-synced")
    feedback: float = Field(0.3, ge=0.0, le=0.95, description="delay feedback")
    why: Why = Field(default_factory=dict)

    @model_validator(mode="after")
    def _delay_time(self) -> "FxBus":
        if self.kind == "delay":
            if (self.note is None) == (self.time_ms is None):
                raise ValueError("a delay needs exactly one of 'note' (tempo-synced) or 'time_ms'")
            if self.note is not None and self.note not in NOTE_VALUES:
                raise ValueError(f"unknown note value {self.note!r}; use one of {', '.join(NOTE_VALUES)}")
        return self


class Ducking(_Model):
    """Sidechain ducking: ``target`` (a track) is turned down while ``trigger`` (a track) plays."""

    target: str = Field(description="track that is ducked")
    trigger: str = Field(description="track whose level drives the ducking (pre-fader)")
    threshold_db: float = Field(-30.0, ge=-80.0, le=0.0, description="trigger level where ducking starts")
    depth_db: float = Field(4.0, ge=0.0, le=30.0, description="maximum attenuation of the target")
    ratio: float = Field(4.0, ge=1.0, le=30.0)
    attack_ms: float = Field(2.0, ge=0.1, le=100.0)
    release_ms: float = Field(80.0, ge=5.0, le=2000.0)
    why: Why = Field(default_factory=dict)


class Limiter(_Model):
    """True-peak limiter at the end of the master chain."""

    ceiling_dbtp: float = Field(-1.0, ge=-9.0, le=0.0, description="highest true peak allowed")
    release_ms: float = Field(80.0, ge=5.0, le=2000.0)
    lookahead_ms: float = Field(5.0, ge=1.0, le=20.0)


class MasterPlan(_Model):
    """Mastering: EQ, glue compression, loudness normalisation and true-peak limiting."""

    preset: str = Field("streaming", description="delivery preset the target came from")
    target_lufs: float = Field(-14.0, ge=-36.0, le=-5.0, description="integrated loudness of the master (BS.1770-4)")
    tolerance_lu: float = Field(0.5, ge=0.1, le=3.0, description="allowed miss of the loudness target")
    eq: list[EQBand] = Field(default_factory=list, max_length=12)
    glue: Compressor = Field(default_factory=lambda: Compressor(enabled=True, threshold_db=-18.0, ratio=2.0,
                                                                 attack_ms=30.0, release_ms=200.0, knee_db=6.0))
    limiter: Limiter = Field(default_factory=Limiter)
    why: Why = Field(default_factory=dict)


FindingKind = Literal["dc_offset", "hum", "rumble", "clicks", "clipping", "low_level", "hot_level", "noise",
                      "silent", "phase", "imbalance", "other"]


class Finding(_Model):
    """A problem found in a raw stem, and what the plan does about it."""

    stem: str = Field(description="stem name")
    kind: FindingKind = Field(description="what was found")
    action: Literal["repaired", "flagged"] = Field(description="repaired by the plan, or flagged for the engineer")
    measured: float | None = Field(None, description="the measurement that found it (unit in ``detail``)")
    detail: str = Field("", description="one sentence: what, how much, what was done")
    source: str = Field("", description="rule or heuristic that found it")


class MixPlan(_Model):
    """The whole mix."""

    format_version: int = Field(PLAN_FORMAT_VERSION, description="plan format version")
    expertmix_version: str = Field("", description="version that wrote the plan")
    stems_dir: str = Field(description="folder of the raw stems (absolute, or relative to the plan file)")
    sample_rate_hz: int = Field(44100, ge=8000, le=192000, description="session sample rate")
    genre: str = "pop"
    tempo_bpm: float = Field(120.0, ge=30.0, le=300.0, description="tempo used by synced delays and pre-delays")
    mix_gain_db: float = Field(0.0, ge=-40.0, le=24.0, description="mix bus trim (headroom before mastering)")
    tail_s: float = Field(1.5, ge=0.0, le=20.0, description="time rendered after the longest stem (reverb tails)")
    tracks: list[TrackPlan]
    buses: list[GroupBus] = Field(default_factory=list)
    fx: list[FxBus] = Field(default_factory=list)
    ducking: list[Ducking] = Field(default_factory=list)
    master: MasterPlan = Field(default_factory=MasterPlan)
    notes: list[str] = Field(default_factory=list, description="warnings and remarks for the engineer")
    findings: list[Finding] = Field(default_factory=list, description="defects found in the raw stems")
    why: Why = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> "MixPlan":
        names = [t.name for t in self.tracks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"track names must be unique; repeated: {', '.join(dup)}")
        bus_names = {b.name for b in self.buses}
        fx_names = {f.name for f in self.fx}
        if bus_names & fx_names or "mix" in bus_names | fx_names:
            raise ValueError("bus and fx names must be distinct from each other and from 'mix'")
        for t in self.tracks:
            if t.bus != "mix" and t.bus not in bus_names:
                raise ValueError(f"track {t.name!r} feeds unknown bus {t.bus!r}; buses: {sorted(bus_names) or 'none'}")
            for s in t.sends:
                if s.bus not in fx_names:
                    raise ValueError(f"track {t.name!r} sends to unknown fx bus {s.bus!r}; fx: {sorted(fx_names) or 'none'}")
        for d in self.ducking:
            for ref in (d.target, d.trigger):
                if ref not in names:
                    raise ValueError(f"ducking refers to unknown track {ref!r}; tracks: {', '.join(names)}")
            if d.target == d.trigger:
                raise ValueError(f"track {d.target!r} cannot duck itself")
        return self

    # -- convenience ---------------------------------------------------------------------
    def track(self, name: str) -> TrackPlan:
        for t in self.tracks:
            if t.name == name:
                return t
        raise KeyError(name)

    def fx_bus(self, name: str) -> FxBus:
        for f in self.fx:
            if f.name == name:
                return f
        raise KeyError(name)

    def delay_time_ms(self, bus: FxBus) -> float:
        """Delay time of a delay bus, from its note value at the plan tempo or its ``time_ms``."""
        if bus.time_ms is not None:
            return bus.time_ms
        return note_to_ms(bus.note or "1/4", self.tempo_bpm)


def pan_matrix(pan: float, width: float, channels: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Coefficients ((L<-in0, L<-in1), (R<-in0, R<-in1)) of the pan/width stage.

    Mono: constant-power sine/cosine law, -3 dB per side at centre. Stereo: mid/side width, then
    balance (the opposite channel is scaled by 1 - |pan|), unity at centre.
    """
    if channels == 1:
        theta = (pan + 1.0) * math.pi / 4.0
        return ((math.cos(theta), 0.0), (math.sin(theta), 0.0))
    a, b = (1.0 + width) / 2.0, (1.0 - width) / 2.0
    left_gain = 1.0 - pan if pan > 0 else 1.0
    right_gain = 1.0 + pan if pan < 0 else 1.0
    return ((a * left_gain, b * left_gain), (b * right_gain, a * right_gain))


def note_to_ms(note: str, tempo_bpm: float) -> float:
    """Duration of a note value (``1/8``, ``1/8.`` dotted, ``1/8t`` triplet) at a tempo, in ms."""
    base = note.rstrip(".t")
    num, den = base.split("/")
    whole_ms = 4 * 60000.0 / tempo_bpm
    ms = whole_ms * int(num) / int(den)
    if note.endswith("."):
        ms *= 1.5
    elif note.endswith("t"):
        ms *= 2.0 / 3.0
    return ms


# -- YAML round trip ----------------------------------------------------------------------

def plan_to_dict(plan: MixPlan) -> dict[str, Any]:
    """Plain dict (YAML/JSON-ready) of a plan, in declaration order."""
    return plan.model_dump(mode="json")


def _yaml_dumper() -> type[yaml.SafeDumper]:
    class Dumper(SafeDumper):
        pass

    def repr_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
        text = repr(round(value, 6))
        return dumper.represent_scalar("tag:yaml.org,2002:float", text)

    Dumper.add_representer(float, repr_float)
    return Dumper


def dump_plan(plan: MixPlan, path: str | os.PathLike[str] | None = None) -> str:
    """YAML text of a plan; written atomically to ``path`` if given."""
    text = "# expertmix mix plan: edit any value and run `expertmix render plan.yaml -o OUT`.\n"
    text += "# Units are in the field names (_db, _hz, _ms, _s, _lufs). 'why' records who decided each value.\n"
    text += yaml.dump(plan_to_dict(plan), Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True, width=100)
    if path is not None:
        from .io import atomic_write_text

        atomic_write_text(Path(path), text)
    return text


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map every dotted path in a YAML document to its 1-based line number."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                index[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
                index[path + (key.value,)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    try:
        root = yaml_compose(text)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, ())
    return index


def _field_label(loc: tuple[Any, ...], data: Any) -> str:
    """Dotted path of a pydantic error location, naming tracks by name: ``tracks[kick].gain_db``."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and key < len(node) and isinstance(node[key], dict) else None
            parts[-1] = f"{parts[-1]}[{name if name else key}]" if parts else f"[{key}]"
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def plan_from_dict(data: Any, *, file: str | None = None, text: str | None = None) -> MixPlan:
    """Validate a plain dict into a plan; errors name the field (and line, given the YAML text)."""
    if not isinstance(data, dict):
        raise PlanError("a mix plan must be a YAML mapping", file=file)
    version = data.get("format_version", PLAN_FORMAT_VERSION)
    if version != PLAN_FORMAT_VERSION:
        raise PlanError(f"plan format version {version} is not supported (this expertmix reads {PLAN_FORMAT_VERSION})",
                        file=file, field="format_version", hint="re-create the plan with `expertmix plan`")
    try:
        return MixPlan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(k for k in err["loc"] if not (isinstance(k, str) and "[" in k))
        lines = _line_index(text) if text else {}
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        label = _field_label(loc, data) or "(plan)"
        msg = err["msg"]
        if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise PlanError(msg + more, file=file, field=label, line=line,
                        hint=_hint_for(loc)) from None


def _hint_for(loc: tuple[Any, ...]) -> str | None:
    """The declared range and doc of the field at ``loc``, to say how to fix it."""
    model: Any = MixPlan
    info = None
    for key in loc:
        if isinstance(key, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or key not in fields:
            return f"'{key}' is not a field here; see `expertmix plan-schema` for the fields"
        info = fields[key]
        ann = info.annotation
        model = _inner_model(ann)
    if info is None:
        return None
    bounds = [f"{type(m).__name__.lower()} {getattr(m, type(m).__name__.lower(), '')}" for m in info.metadata]
    doc = info.description or ""
    rng = ", ".join(b for b in bounds if b.strip())
    return "; ".join(p for p in (doc, f"allowed: {rng}" if rng else "") if p) or None


def _inner_model(ann: Any) -> Any:
    """The pydantic model inside an annotation like ``list[EQBand]`` or ``Compressor | None``."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def load_plan(path: str | os.PathLike[str]) -> MixPlan:
    """Read and validate a plan file (YAML, safe loader only)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the plan: {exc.strerror}", file=str(p)) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlanError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(p),
                        line=mark.line + 1 if mark else None) from None
    plan = plan_from_dict(data, file=str(p), text=text)
    stems = Path(plan.stems_dir)
    if not stems.is_absolute():
        plan.stems_dir = str((p.parent / stems).resolve())
    return plan


def parameter_table() -> list[dict[str, Any]]:
    """Every declared parameter: model, field, default, range, doc (for help and docs)."""
    rows: list[dict[str, Any]] = []
    for model in (TrackPlan, Cleanup, EQBand, Gate, Compressor, DeEsser, Send, GroupBus, FxBus, Ducking, Limiter, MasterPlan, MixPlan):
        for name, info in model.model_fields.items():
            if name == "why":
                continue
            lo = hi = None
            for m in info.metadata:
                lo = getattr(m, "ge", lo)
                hi = getattr(m, "le", hi)
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel) or isinstance(default, list):
                default = None
            rows.append({"model": model.__name__, "field": name, "default": default, "min": lo, "max": hi,
                         "doc": info.description or ""})
    return rows


#: Annotated helper for external modules that declare numbers the same way.
Gain_dB = Annotated[float, Field(ge=-96.0, le=24.0)]
