"""The rulebook: loading, load-time errors, the closed vocabulary, conflict resolution, the
trace, genre overrides, user rules, and every bundled rule's own examples."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from expertmix.errors import RulebookError
from expertmix.genres import available_genres, load_genre
from expertmix.rules import (NEUTRAL_DESCRIPTORS, SessionContext, TrackContext, evaluate, load_rule_file, load_rulebook,
                             run_example, test_rulebook as run_rulebook_examples, vocabulary)

BOOK = load_rulebook()


def _write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def _ctx(stems: dict[str, dict], genre: str = "pop", tempo_bpm: float = 120.0) -> SessionContext:
    tracks = []
    for name, s in stems.items():
        values = dict(NEUTRAL_DESCRIPTORS)
        values.update({k: float(v) for k, v in s.items() if k != "role"})
        tracks.append(TrackContext(name=name, file=f"{name}.wav", role=s["role"], channels=int(values["channels"]),
                                   values=values))
    return SessionContext(tracks=tracks, genre=load_genre(genre), tempo_bpm=tempo_bpm, stems_dir="/tmp/stems")


# --- the bundled rulebook ------------------------------------------------------------------

def test_rulebook_loads_with_at_least_40_rules_covering_every_family():
    assert len(BOOK.rules) >= 40
    files = {Path(f).stem for f in BOOK.files}
    assert {"cleanup", "balance", "lowend", "eq", "dynamics", "stereo", "space", "master"} <= files
    assert len(set(BOOK.ids())) == len(BOOK.ids())


@pytest.mark.parametrize("rule_id", BOOK.ids())
def test_every_rule_behaves_as_its_examples_say(rule_id):
    rule = BOOK.get(rule_id)
    assert rule.examples, f"{rule_id} has no examples"
    assert any(e.expect == "fire" for e in rule.examples)
    if rule.when.checks:
        assert any(e.expect == "silent" for e in rule.examples), f"{rule_id} needs a must-stay-silent example"
    problems = []
    for ex in rule.examples:
        problems += run_example(rule, ex, load_genre(ex.genre or "pop"))
    assert not problems, "\n".join(problems)


def test_every_rule_has_a_summary_and_rationale():
    for r in BOOK.rules:
        assert r.summary.strip() and r.rationale.strip(), r.id


@pytest.mark.parametrize("genre", sorted(n for n in available_genres() if n != "base"))
def test_the_full_rulebook_runs_on_every_genre(genre):
    ctx = _ctx({"vox": {"role": "lead_vocal"}, "kick": {"role": "kick", "crest_db": 18}, "bass": {"role": "bass"},
                "g1": {"role": "guitar"}, "g2": {"role": "guitar"}, "pad": {"role": "pad", "channels": 2}}, genre)
    result = evaluate(BOOK, ctx)
    plan = result.plan
    assert plan.genre == genre
    assert plan.track("vox").gain_db > plan.track("g1").gain_db
    assert plan.track("bass").pan == 0.0 and plan.track("kick").pan == 0.0
    assert plan.track("g1").pan == -plan.track("g2").pan != 0.0


def test_example_runner_catches_a_wrong_expectation():
    rule = BOOK.get("balance-template")
    ex = rule.examples[0]
    wrong = type(ex)(**{**ex.__dict__, "sets": {"gain_db": 5.0}})
    problems = run_example(rule, wrong, load_genre("pop"))
    assert problems and "expected gain_db = 5.0" in problems[0]
    silent = type(ex)(**{**ex.__dict__, "expect": "silent", "sets": {}})
    assert run_example(rule, silent, load_genre("pop"))


def test_test_rulebook_reports_nothing_for_the_bundled_rules():
    assert run_rulebook_examples(BOOK) == {}


# --- load-time errors ----------------------------------------------------------------------

def _load_error(tmp_path: Path, text: str) -> RulebookError:
    p = _write(tmp_path, text)
    with pytest.raises(RulebookError) as info:
        load_rule_file(p)
    return info.value


def test_unknown_descriptor_names_file_line_rule_field_and_suggests(tmp_path):
    e = _load_error(tmp_path, """\
        rules:
          - id: my-rule
            summary: x
            when: {descriptor: {crest_dbb: {gt: 3}}}
            then: [{set: gain_db, value: 1}]
        """)
    msg = str(e)
    assert "mine.yaml:4" in msg and "rule my-rule" in msg and "when.descriptor.crest_dbb" in msg
    assert "did you mean 'crest_db'" in msg
    assert e.rule_id == "my-rule" and e.line == 4


def test_unknown_slot_condition_action_and_scope_are_rejected(tmp_path):
    assert "unknown track slot 'gain'" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{set: gain, value: 1}]}
        """))
    assert "unknown condition 'rol'" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, when: {rol: bass}, then: [{set: gain_db, value: 1}]}
        """))
    assert "unknown action 'sett'" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{sett: gain_db, value: 1}]}
        """))
    assert "unknown scope" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, scope: tracks, summary: x, then: [{set: gain_db, value: 1}]}
        """))
    assert "unknown role 'vocals'" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, when: {role: vocals}, then: [{set: gain_db, value: 1}]}
        """))


def test_expressions_are_never_evaluated(tmp_path):
    e = _load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{set: gain_db, value: "__import__('os').system('true')"}]}
        """)
    assert "expected a number" in str(e)
    e = _load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{note: "{name.__class__}"}]}
        """)
    assert "template field" in str(e)


def test_out_of_range_literal_and_bad_refine_are_rejected(tmp_path):
    assert "outside the range of pan" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{set: pan, value: 3}]}
        """))
    assert "does not set" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{set: pan, value: 0.5}], refine: {gain_db: [-1, 1]}}
        """))
    assert "low <= 0 <= high" in str(_load_error(tmp_path, """\
        rules:
          - {id: a, summary: x, then: [{set: pan, value: 0.5}], refine: {pan: [0.1, 1]}}
        """))


def test_malformed_yaml_reports_the_line(tmp_path):
    e = _load_error(tmp_path, "rules:\n  - id: a\n    summary: [unclosed\n")
    assert e.line is not None and "not valid YAML" in str(e)


def test_term_not_available_in_scope(tmp_path):
    e = _load_error(tmp_path, """\
        rules:
          - {id: a, scope: mix, summary: x, then: [{set: mix_gain_db, value: {descriptor: crest_db}}]}
        """)
    assert "not available in scope 'mix'" in str(e)


def test_duplicate_ids_in_one_folder_are_rejected(tmp_path):
    _write(tmp_path, "rules:\n  - {id: a, summary: x, then: [{set: pan, value: 0.1}]}\n", "one.yaml")
    _write(tmp_path, "rules:\n  - {id: a, summary: y, then: [{set: pan, value: 0.2}]}\n", "two.yaml")
    with pytest.raises(RulebookError, match="duplicate rule id"):
        load_rulebook(tmp_path / "rules", builtin=False)


# --- engine ------------------------------------------------------------------------------

def test_priority_resolves_conflicts_and_the_trace_says_who_overrode(tmp_path):
    _write(tmp_path, """\
        rules:
          - {id: low, summary: low, priority: 10, then: [{set: gain_db, value: -3}]}
          - {id: high, summary: high, priority: 90, then: [{set: gain_db, value: 2}]}
          - {id: plus, summary: plus, then: [{add: gain_db, value: 0.5}]}
          - {id: cap, summary: cap, when: {role: guitar}, then: [{limit: gain_db, max: 1}]}
        """)
    book = load_rulebook(tmp_path / "rules", builtin=False)
    res = evaluate(book, _ctx({"g": {"role": "guitar"}, "b": {"role": "bass"}}))
    assert res.plan.track("g").gain_db == 1.0          # 2 + 0.5, capped at 1
    assert res.plan.track("b").gain_db == 2.5
    low = next(t for t in res.trace if t.rule_id == "low" and t.target == "g")
    assert low.fired and low.overridden == {"gain_db": "high"}
    cap_b = next(t for t in res.trace if t.rule_id == "cap" and t.target == "b")
    assert not cap_b.fired and "role bass" in cap_b.reason
    why = res.plan.track("g").why["gain_db"]
    assert why.source == "rule:high+plus+cap"


def test_refine_bounds_are_recorded_in_the_plan():
    res = evaluate(BOOK, _ctx({"vox": {"role": "lead_vocal"}, "g": {"role": "guitar"}}))
    d = res.plan.track("g").why["gain_db"]
    assert d.rule_value == res.plan.track("g").gain_db
    assert d.bounds == (round(d.rule_value - 4, 3), round(d.rule_value + 4, 3))


def test_genre_overrides_change_the_rule(tmp_path):
    book = load_rulebook()
    pop = evaluate(book, _ctx({"b": {"role": "bass"}, "k": {"role": "kick"}}, "pop")).plan
    edm = evaluate(book, _ctx({"b": {"role": "bass"}, "k": {"role": "kick"}}, "electronic")).plan
    jazz = evaluate(book, _ctx({"b": {"role": "bass"}, "k": {"role": "kick"}}, "jazz")).plan
    assert pop.ducking[0].depth_db == 3.0 and edm.ducking[0].depth_db == 5.0
    assert jazz.ducking == []


def test_user_rules_override_and_extend_without_python(tmp_path):
    _write(tmp_path, """\
        rules:
          - id: delay-on-lead
            summary: my louder delay
            rationale: I like it wet
            when: {role: lead_vocal}
            then: [{set: sends.delay, value: -10}]
            examples:
              - {expect: fire, session: {stems: {v: {role: lead_vocal}}}, sets: {sends.delay: -10}}
              - {expect: silent, session: {stems: {g: {role: guitar}}}}
          - id: guitar-darker
            summary: guitars a bit darker
            rationale: taste
            when: {role: guitar}
            then: [{eq: {kind: high_shelf, freq_hz: 6000, gain_db: -1.5}}]
            examples:
              - {expect: fire, session: {stems: {g: {role: guitar}}}, sets: {eq: {gain_db: -1.5}}}
              - {expect: silent, session: {stems: {v: {role: lead_vocal}}}}
        """)
    book = load_rulebook(tmp_path / "rules")
    assert len(book.rules) == len(BOOK.rules) + 1
    assert run_rulebook_examples(book) == {}
    plan = evaluate(book, _ctx({"v": {"role": "lead_vocal"}, "g": {"role": "guitar"}})).plan
    assert next(s for s in plan.track("v").sends if s.bus == "delay").level_db == -10.0
    assert any(b.kind == "high_shelf" and b.gain_db == -1.5 for b in plan.track("g").eq)


def test_evaluation_is_deterministic_and_round_trips():
    from expertmix.plan import dump_plan, plan_from_dict

    ctx = _ctx({"vox": {"role": "lead_vocal"}, "kick": {"role": "kick"}, "bass": {"role": "bass"},
                "hat": {"role": "hats"}, "g": {"role": "guitar"}})
    a, b = evaluate(BOOK, ctx).plan, evaluate(BOOK, ctx).plan
    assert dump_plan(a) == dump_plan(b)
    assert plan_from_dict(yaml.safe_load(dump_plan(a))) == a


def test_cut_before_boost_caps_and_orders_the_eq():
    ctx = _ctx({"v": {"role": "lead_vocal", "band_high_mid_db": -20, "band_low_mid_db": -4, "high_energy_ratio": 0.01}})
    eq = evaluate(BOOK, ctx).plan.track("v").eq
    gains = [b.gain_db for b in eq]
    assert max(gains) <= 3.0
    first_boost = next(i for i, g in enumerate(gains) if g > 0)
    assert all(g <= 0 for g in gains[:first_boost]) and all(g > 0 for g in gains[first_boost:])


def test_findings_report_the_injected_defects():
    ctx = _ctx({"k": {"role": "kick", "dc_offset": 0.02}, "fx": {"role": "fx", "hum_hz": 50, "hum_excess_db": 15},
                "s": {"role": "snare", "click_count": 3, "clicks_per_min": 5}, "h": {"role": "hats", "clipped_fraction": 0.01},
                "p": {"role": "pad", "sub_energy_ratio": 0.3}})
    plan = evaluate(BOOK, ctx).plan
    found = {(f.stem, f.kind, f.action) for f in plan.findings}
    assert {("k", "dc_offset", "repaired"), ("fx", "hum", "repaired"), ("s", "clicks", "flagged"),
            ("h", "clipping", "flagged"), ("p", "rumble", "repaired")} <= found
    assert plan.track("fx").cleanup.hum_notch_hz == 50


def test_vocabulary_lists_everything_a_rule_may_name():
    v = vocabulary()
    assert {"conditions", "terms", "actions", "slots", "descriptors"} <= set(v)
    assert "gain_db" in v["slots"]["track"] and "crest_db" in v["descriptors"]
