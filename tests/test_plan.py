"""The mix plan: YAML round trip, the rulebook planner's golden behaviour, validation errors and
the parameter table.

The default plan is built from a real (tiny, synthetic) session: kick, bass, lead vocal and
guitar stems analysed by :func:`expertmix.pipeline.analyse_session`.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from signals import kick_pattern
import yaml

from expertmix.errors import PlanError
from expertmix.genres import load_genre
from expertmix.pipeline import analyse_session, make_plan
from expertmix.plan import (Compressor, Decision, MixPlan, TrackPlan, dump_plan, load_plan, note_to_ms,
                            parameter_table, plan_from_dict)

SR = 44100


# -- a small synthetic session ---------------------------------------------------------------

def synth_session(folder: Path, seconds: float = 3.0) -> Path:
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kick = kick_pattern(seconds, SR)
    bass = 0.4 * np.sin(2 * np.pi * 55 * t) + 0.1 * np.sin(2 * np.pi * 110 * t)
    f0 = 220 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    vocal = sum(0.3 / h * np.sin(h * phase) for h in range(1, 10)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t) ** 2)
    vocal += 0.01 * rng.standard_normal(n)
    guitar = sum(0.2 / h * np.sin(2 * np.pi * 196 * h * t) for h in range(1, 8)) * np.exp(-(t % 0.75) / 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in {"kick": kick, "bass": bass, "lead_vocal": vocal, "guitar": guitar}.items():
        sf.write(str(folder / f"{name}.wav"), x.astype(np.float32), SR, subtype="PCM_24")
    return folder


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return synth_session(tmp_path_factory.mktemp("session") / "stems")


@pytest.fixture(scope="module")
def plan(session, tmp_path_factory) -> MixPlan:
    stemset, analysis = analyse_session(session, cache_dir=tmp_path_factory.mktemp("cache"))
    return make_plan(stemset, analysis, genre="pop")


# -- round trip ------------------------------------------------------------------------------

def test_dump_load_round_trip_is_lossless(plan, tmp_path):
    path = tmp_path / "plan.yaml"
    text = dump_plan(plan, path)
    assert path.read_text(encoding="utf-8") == text
    loaded = load_plan(path)
    assert loaded.model_dump() == plan.model_dump()
    assert dump_plan(loaded) == text                      # stable: dumping again changes nothing


def test_relative_stems_dir_is_resolved_against_the_plan_file(plan, tmp_path, session):
    data = plan.model_dump(mode="json")
    (tmp_path / "plans").mkdir()
    data["stems_dir"] = str(Path("..") / "s")
    (tmp_path / "s").mkdir()
    path = tmp_path / "plans" / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert Path(load_plan(path).stems_dir) == (tmp_path / "s").resolve()


def test_plan_from_dict_equals_model(plan):
    assert plan_from_dict(plan.model_dump(mode="json")).model_dump() == plan.model_dump()


# -- golden behaviour of the default plan ----------------------------------------------------

def test_roles_are_recognised_from_the_file_names(plan):
    assert {t.name: t.role for t in plan.tracks} == {
        "kick": "kick", "bass": "bass", "lead_vocal": "lead_vocal", "guitar": "guitar"}


def test_lead_vocal_fader_is_above_kick_and_guitar(plan):
    lead = plan.track("lead_vocal").gain_db
    assert lead > plan.track("kick").gain_db
    assert lead > plan.track("guitar").gain_db


@pytest.mark.parametrize("name", ["kick", "bass", "lead_vocal"])
def test_low_end_and_lead_are_centred(plan, name):
    assert plan.track(name).pan == 0.0


def test_mono_guitar_is_off_centre(plan):
    assert abs(plan.track("guitar").pan) >= 0.2


@pytest.mark.parametrize("name", ["lead_vocal", "guitar"])
def test_non_low_end_tracks_are_high_passed(plan, name):
    hp = plan.track(name).cleanup.highpass_hz
    assert hp is not None and hp >= 40.0


@pytest.mark.parametrize("name", ["kick", "bass"])
def test_low_end_tracks_get_only_a_rumble_filter(plan, name):
    hp = plan.track(name).cleanup.highpass_hz
    assert hp is None or hp < 40.0


def test_bass_is_ducked_by_kick(plan):
    assert any(d.target == "bass" and d.trigger == "kick" and d.depth_db > 0 for d in plan.ducking)


def test_sends_and_buses_point_to_existing_targets(plan):
    fx = {f.name for f in plan.fx}
    buses = {b.name for b in plan.buses} | {"mix"}
    for t in plan.tracks:
        assert t.bus in buses
        assert all(s.bus in fx for s in t.sends)


def test_master_follows_the_genre_preset(plan):
    from expertmix.master import PRESETS

    genre = load_genre("pop")
    p = PRESETS[plan.master.preset]
    assert plan.master.preset == genre.master.preset
    assert plan.master.target_lufs == (genre.master.target_lufs if genre.master.target_lufs is not None
                                       else p.target_lufs)


def _decisions(plan: MixPlan) -> list[tuple[str, str, Decision]]:
    out = [("plan", k, d) for k, d in plan.why.items()]
    out += [("master", k, d) for k, d in plan.master.why.items()]
    for t in plan.tracks:
        out += [(f"tracks[{t.name}]", k, d) for k, d in t.why.items()]
    for group in (plan.buses, plan.fx):
        for b in group:
            out += [(b.name, k, d) for k, d in b.why.items()]
    for d in plan.ducking:
        out += [(f"ducking[{d.target}]", k, dd) for k, dd in d.why.items()]
    return out


def test_every_decision_has_a_reason_and_names_its_rule(plan):
    from expertmix.rules import load_rulebook

    ids = set(load_rulebook().ids())
    decisions = _decisions(plan)
    assert len(decisions) >= 20
    for owner, key, d in decisions:
        assert d.reason.strip(), f"{owner}.{key} has no reason"
        if d.source.startswith("rule:"):
            named = d.source.removeprefix("rule:").split("+model:")[0].split("+")
            assert set(named) <= ids, f"{owner}.{key} source {d.source!r} names unknown rules"
        else:  # the delivery target comes from the genre's preset
            assert d.source.startswith("default:delivery") or d.source.startswith("default:glue"), f"{owner}.{key} {d.source!r}"


@pytest.mark.parametrize("name", ["kick", "bass", "lead_vocal", "guitar"])
def test_every_track_explains_its_level_and_pan(plan, name):
    why = plan.track(name).why
    for key in ("trim_db", "gain_db", "pan", "cleanup.highpass_hz"):
        assert key in why, f"{name}: no decision recorded for {key}"
    assert why["gain_db"].value == pytest.approx(plan.track(name).gain_db)


# -- validation errors -----------------------------------------------------------------------

BASE = """\
format_version: 1
stems_dir: /tmp
tracks:
- name: kick
  file: kick.wav
- name: vox
  file: vox.wav
  gain_db: 0
"""


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


def test_out_of_range_value_names_field_and_line(tmp_path):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE.replace("gain_db: 0", "gain_db: 50"))
    err = info.value
    assert err.field == "tracks[vox].gain_db"
    assert err.line == 8
    assert "tracks[vox].gain_db" in str(err) and ":8" in str(err)
    assert "24" in str(err)                    # says the allowed maximum
    assert err.exit_code == 3


@pytest.mark.parametrize("snippet, field, line", [
    ("  cleanup:\n    highpass_hz: 5", "tracks[vox].cleanup.highpass_hz", 9),
    ("  sends:\n  - bus: verb\n    level_db: 20", "tracks[vox].sends", None),
    ("  pan: 1.5", "tracks[vox].pan", 8),
    ("  eq:\n  - kind: peak\n    freq_hz: 5", "tracks[vox].eq", None),
])
def test_nested_out_of_range_values_name_their_path(tmp_path, snippet, field, line):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE.replace("  gain_db: 0", snippet))
    assert info.value.field.startswith(field)
    if line is not None:
        assert info.value.line == line


def test_unknown_key_is_rejected_by_name(tmp_path):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE.replace("gain_db: 0", "gian_db: 0"))
    assert "gian_db" in str(info.value)
    assert info.value.field == "tracks[vox].gian_db"
    assert info.value.line == 8


@pytest.mark.parametrize("bad, line", [
    ("   gain_db: 3", 8),           # wrong indentation
    ("  gain_db: : 3", 8),
    ("  - gain_db 3", 8),
])
def test_malformed_yaml_reports_a_line(tmp_path, bad, line):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE.replace("  gain_db: 0", bad) + "tail_s: 1\n")
    assert "YAML" in str(info.value)
    assert info.value.line == line
    assert f":{line}" in str(info.value)


@pytest.mark.parametrize("extra, name", [
    ("  sends:\n  - bus: verb", "verb"),                                        # unknown fx bus
    ("  bus: drumz", "drumz"),                                                  # unknown group bus
    ("ducking:\n- target: vox\n  trigger: snare", "snare"),                     # unknown trigger
    ("ducking:\n- target: bass\n  trigger: kick", "bass"),                      # unknown target
    ("- name: kick\n  file: kick2.wav", "kick"),                                # duplicate track
])
def test_broken_references_are_rejected_with_the_name(tmp_path, extra, name):
    text = BASE.replace("  gain_db: 0\n", "") + extra + "\n"
    if extra.startswith("  "):
        text = BASE.replace("  gain_db: 0", extra)
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, text)
    assert repr(name) in str(info.value) or name in str(info.value)


def test_a_track_cannot_duck_itself(tmp_path):
    with pytest.raises(PlanError, match="kick"):
        load_text(tmp_path, BASE + "ducking:\n- target: kick\n  trigger: kick\n")


@pytest.mark.parametrize("timing", ["  note: 1/8\n  time_ms: 250\n", "", "  note: 1/5\n"])
def test_delay_needs_exactly_one_valid_time(tmp_path, timing):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE + "fx:\n- name: dly\n  kind: delay\n" + timing)
    assert info.value.field == "fx[dly]"


def test_valid_delay_and_reverb_load(tmp_path):
    plan = load_text(tmp_path, BASE + "fx:\n- name: dly\n  kind: delay\n  note: 1/8.\n- name: verb\n  kind: reverb\n")
    assert plan.delay_time_ms(plan.fx_bus("dly")) == pytest.approx(375.0)


@pytest.mark.parametrize("note, tempo, ms", [
    ("1/8.", 120, 375.0), ("1/4", 120, 500.0), ("1/8", 120, 250.0), ("1/8t", 120, 500.0 / 3),
    ("1/1", 60, 4000.0), ("1/16", 90, 60000.0 / 90 / 4), ("1/2.", 100, 1800.0),
])
def test_note_to_ms(note, tempo, ms):
    assert note_to_ms(note, tempo) == pytest.approx(ms)


def test_unsupported_format_version_is_rejected(tmp_path):
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, BASE.replace("format_version: 1", "format_version: 99"))
    assert info.value.field == "format_version"


def test_plan_must_be_a_mapping(tmp_path):
    with pytest.raises(PlanError):
        load_text(tmp_path, "- just\n- a list\n")


def test_missing_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError):
        load_plan(tmp_path / "nope.yaml")


def test_assignment_is_validated_too():
    t = TrackPlan(name="a", file="a.wav")
    with pytest.raises(Exception):
        t.gain_db = 100.0
    with pytest.raises(Exception):
        Compressor(ratio=0.5)


# -- the parameter table ---------------------------------------------------------------------

TABLE = parameter_table()
NUMERIC_ROWS = [r for r in TABLE if isinstance(r["default"], (int, float)) and not isinstance(r["default"], bool)
                and (r["min"] is not None or r["max"] is not None)]


def _is_number_annotation(ann) -> bool:
    if ann in (int, float):
        return True
    if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
        return any(_is_number_annotation(a) for a in typing.get_args(ann) if a is not type(None))
    return False


def test_table_lists_every_numeric_field():
    import expertmix.plan as P

    listed = {(r["model"], r["field"]) for r in TABLE}
    models = {r["model"] for r in TABLE}
    expected = {(m, name) for m in models for name, info in getattr(P, m).model_fields.items()
                if _is_number_annotation(info.annotation)}
    assert expected <= listed
    # every number but the format version has a declared range
    unbounded = sorted(f"{m}.{f}" for m, f in expected
                       if next(r for r in TABLE if (r["model"], r["field"]) == (m, f))["min"] is None
                       or next(r for r in TABLE if (r["model"], r["field"]) == (m, f))["max"] is None)
    assert unbounded == ["MixPlan.format_version"]


@pytest.mark.parametrize("row", NUMERIC_ROWS, ids=[f"{r['model']}.{r['field']}" for r in NUMERIC_ROWS])
def test_numeric_default_lies_inside_its_range(row):
    """min < max, and the default is a valid value (it may sit on a limit: Compressor.mix = 1.0
    means 'fully compressed, no parallel blend', the natural default)."""
    assert row["min"] < row["max"]
    assert row["min"] <= row["default"] <= row["max"]


@pytest.mark.parametrize("row", [r for r in TABLE if r["min"] is not None],
                         ids=[f"{r['model']}.{r['field']}" for r in TABLE if r["min"] is not None])
def test_range_limits_are_enforced(row):
    import expertmix.plan as P

    model = getattr(P, row["model"])
    info = model.model_fields[row["field"]]
    below = row["min"] - 1 if info.annotation is int else row["min"] - abs(row["min"]) * 0.01 - 0.01
    required = {"TrackPlan": dict(name="a", file="a.wav"), "Send": dict(bus="fx"), "GroupBus": dict(name="g"),
                "FxBus": dict(name="f", kind="reverb"), "Ducking": dict(target="a", trigger="b"),
                "MixPlan": dict(stems_dir="/tmp", tracks=[])}.get(row["model"], {})
    with pytest.raises(Exception):
        model(**required, **{row["field"]: below})
    model(**required, **{row["field"]: row["min"]})          # the limit itself is allowed
