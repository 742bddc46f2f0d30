"""expertmix.learning: targets, features, training, bounds, feedback, model loading errors.

Fast: synthetic sessions built from descriptor values (no audio) for everything but the one
end-to-end ``add_reference`` test, which uses three 3-second stems.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from expertmix import learning as L
from expertmix.descriptor_specs import DESCRIPTOR_NAMES
from expertmix.errors import InputError, ModelError
from expertmix.genres import load_genre
from expertmix.rules import NEUTRAL_DESCRIPTORS, SessionContext, TrackContext, evaluate, load_rulebook
from expertmix.store import SongRecord, StemRecord, TargetRecord, TrainingStore

RULEBOOK = load_rulebook()
ROLES_POOL = ["kick", "snare", "hats", "bass", "guitar", "keys", "pad", "backing_vocals"]


def make_ctx(seed: int, n: int = 6, genre: str = "pop", lead: bool = True) -> SessionContext:
    """A plausible session: random but valid descriptors, one lead vocal and n-1 others."""
    rng = np.random.default_rng(seed)
    roles = (["lead_vocal"] if lead else []) + [ROLES_POOL[(seed + i) % len(ROLES_POOL)] for i in range(n - int(lead))]
    tracks = []
    for i, role in enumerate(roles):
        v = dict(NEUTRAL_DESCRIPTORS)
        v.update({"loudness_lufs": float(rng.uniform(-35, -14)), "crest_db": float(rng.uniform(8, 20)),
                  "spectral_centroid_hz": float(rng.uniform(300, 6000)), "onset_rate_hz": float(rng.uniform(0.5, 8)),
                  "low_energy_ratio": float(rng.uniform(0, 0.6)), "high_energy_ratio": float(rng.uniform(0, 0.2)),
                  "mfcc_02": float(rng.normal()), "duration_s": 30.0})
        v["rms_dbfs"] = v["loudness_lufs"] + 1.0
        name = f"{role}_{i}"
        tracks.append(TrackContext(name=name, file=f"{name}.wav", role=role, channels=1, values=v))
    return SessionContext(tracks=tracks, genre=load_genre(genre), tempo_bpm=float(rng.uniform(80, 140)),
                          stems_dir="synthetic")


def rule_plan(ctx):
    return evaluate(RULEBOOK, ctx).plan


def ctx_meta(ctx) -> dict:
    return L._context_meta(ctx)


def feedback_song(store: TrainingStore, seed: int, edit) -> None:
    ctx = make_ctx(seed)
    orig = rule_plan(ctx)
    edited = orig.model_copy(deep=True)
    for t in edited.tracks:
        edit(t)
    rec, _ = L.feedback_record(orig, edited, {t.name: t.values for t in ctx.tracks}, ctx_meta(ctx),
                               name=f"song{seed}")
    store.add_song(rec)


def lead_up(t, db: float = 2.0) -> None:
    if t.role == "lead_vocal":
        t.gain_db += db


@pytest.fixture
def store(tmp_path):
    with TrainingStore(tmp_path / "store.sqlite") as st:
        yield st


@pytest.fixture(scope="module")
def lead_models(tmp_path_factory):
    """Models trained on four feedback songs that all raise the lead vocal by 2 dB."""
    d = tmp_path_factory.mktemp("lead")
    with TrainingStore(d / "store.sqlite") as st:
        for seed in range(4):
            feedback_song(st, seed, lead_up)
        rep = L.train(st, d / "models")
    return d / "models", rep


# --- features and targets --------------------------------------------------------------------

def test_feature_names_are_descriptors_then_role_genre_context_rule_value():
    names = L.feature_names()
    assert names[:len(DESCRIPTOR_NAMES)] == list(DESCRIPTOR_NAMES)
    assert names[len(DESCRIPTOR_NAMES):len(DESCRIPTOR_NAMES) + 3] == ["role", "family", "genre"]
    assert names[-1] == "rule_value" and len(set(names)) == len(names)
    feats = L.session_features(make_ctx(1))
    for row in feats.values():
        assert set(row) == set(names) - {"rule_value"}
        assert row["ctx.n_stems"] == 6 and row["ctx.has_lead_vocal"] == 1.0


def reference_record(ctx, rel: dict[str, float], pans: dict[str, float] | None = None, name="ref") -> SongRecord:
    stems = [StemRecord(t.name, t.role, dict(t.values)) for t in ctx.tracks]
    targets = [TargetRecord(n, "level.relative_lu", v) for n, v in rel.items()]
    targets += [TargetRecord(n, "pan", v) for n, v in (pans or {}).items()]
    return SongRecord(name=name, source="reference", stems=stems, targets=targets, genre=ctx.genre.name,
                      licence="test", content_hash=name, meta={"context": ctx_meta(ctx)})


def test_gain_target_is_the_balance_difference_with_song_means_removed(store):
    ctx = make_ctx(3)
    plan = rule_plan(ctx)
    rule = {t.name: t.why["gain_db"].rule_value for t in plan.tracks}
    # the engineer's balance equals the rules' up to a constant, except one stem 3 dB louder
    names = list(rule)
    rel = {n: rule[n] - 17.0 for n in names}
    rel[names[1]] += 3.0
    store.add_song(reference_record(ctx, rel))
    rows = L.collect(store, slots=["gain_db"]).rows["gain_db"]
    res = {r.stem: r.residual for r in rows}
    assert set(res) == set(names)
    expect = {n: (3.0 if n == names[1] else 0.0) - 3.0 / len(names) for n in names}
    for n in names:
        assert res[n] == pytest.approx(expect[n], abs=1e-9)
    assert abs(sum(res.values())) < 1e-9


def test_residual_targets_are_clipped_to_the_rule_bounds(store):
    ctx = make_ctx(4)
    plan = rule_plan(ctx)
    names = [t.name for t in plan.tracks]
    rel = {n: plan.track(n).why["gain_db"].rule_value for n in names}
    rel[names[0]] += 40.0
    store.add_song(reference_record(ctx, rel))
    for r in L.collect(store, slots=["gain_db"]).rows["gain_db"]:
        assert r.low - 1e-9 <= r.rule_value + r.residual <= r.high + 1e-9


def test_pan_from_a_reference_is_mirrored_onto_the_rules_side(store):
    ctx = make_ctx(5)
    plan = rule_plan(ctx)
    panned = [t for t in plan.tracks if t.why.get("pan") and t.why["pan"].bounds and abs(t.pan) > 0.05]
    assert panned, "the rules pan something off-centre in this session"
    t = panned[0]
    eng = -np.sign(t.pan) * (abs(t.pan) + 0.1)  # the engineer used the other side, 0.1 further out
    store.add_song(reference_record(ctx, {}, {t.name: float(eng)}))
    rows = L.collect(store, slots=["pan"]).rows["pan"]
    assert len(rows) == 1 and rows[0].residual == pytest.approx(np.sign(t.pan) * 0.1, abs=1e-6)


def test_feedback_targets_record_edits_and_refuse_unrelated_plans():
    ctx = make_ctx(6)
    orig = rule_plan(ctx)
    edited = orig.model_copy(deep=True)
    lead = next(t for t in edited.tracks if t.role == "lead_vocal")
    lead.gain_db += 2.0
    lead.trim_db += 0.5  # a trim change counts as gain
    targets, edits = L.feedback_targets(orig, edited)
    assert edits == [{"stem": lead.name, "slot": "gain_db", "suggested": orig.track(lead.name).gain_db,
                      "edited": pytest.approx(orig.track(lead.name).gain_db + 2.5), "change": pytest.approx(2.5)}]
    t = next(t for t in targets if t.stem == lead.name and t.slot == "gain_db")
    assert t.weight == 1.0 and t.value == pytest.approx(orig.track(lead.name).gain_db + 2.5)
    assert all(x.weight == L.FEEDBACK_ACCEPT_WEIGHT for x in targets if x is not t)
    other = rule_plan(make_ctx(7, n=4))
    with pytest.raises(InputError, match="not an edit of the original"):
        L.feedback_targets(orig, other)


# --- training, bounds, feedback -------------------------------------------------------------

def test_feedback_moves_the_next_suggestion_toward_the_engineers_taste(lead_models):
    models_dir, rep = lead_models
    assert [s.slot for s in rep.slots if s.model] == ["gain_db"]
    refiner = L.load_refiner(models_dir)
    ctx = make_ctx(42)  # a new song
    plan = rule_plan(ctx)
    refined, notes = refiner.refine(plan, ctx)
    lead = next(t for t in refined.tracks if t.role == "lead_vocal")
    d = lead.why["gain_db"]
    assert d.model_delta > 1.0, d  # toward the +2 dB the engineer kept asking for
    assert lead.gain_db == pytest.approx(d.rule_value + d.model_delta) and d.value == lead.gain_db
    assert "+model:refine.gain_db" in d.source and "learned refinement" in d.reason
    others = [t.why["gain_db"].model_delta for t in refined.tracks if t.role != "lead_vocal"]
    assert max(abs(x) for x in others if x is not None) < 0.5  # accepted suggestions stay put
    unseen = {t.role for t in refined.tracks if t.why["gain_db"].model_delta is None}
    assert unseen == {t.role for t in ctx.tracks} - set(json.loads(
        (models_dir / "refine.gain_db.card.json").read_text())["roles"])
    assert not unseen or any("no training examples" in n for n in notes)
    assert notes and notes[0].startswith("learning:")
    assert plan.track(lead.name).why["gain_db"].model_delta is None  # the input plan is untouched


def test_a_role_from_a_single_training_song_is_left_to_the_rules(lead_models):
    """The four training songs have a kick in one song only (make_ctx's role rotation): the
    model, trained on four songs, refines hats and bass (3 and 4 songs) but not the kick."""
    models_dir, _ = lead_models
    card = json.loads((models_dir / "refine.gain_db.card.json").read_text())
    assert card["min_role_songs"] == L.MIN_ROLE_SONGS == 2
    assert card["role_songs"]["kick"] == 1 and card["role_songs"]["hats"] == 3 and card["role_songs"]["bass"] == 4
    ctx = make_ctx(40, n=6)  # lead vocal + kick, snare, hats, bass, guitar
    assert {"kick", "hats", "bass"} <= {t.role for t in ctx.tracks}
    refined, notes = L.load_refiner(models_dir).refine(rule_plan(ctx), ctx)
    delta = {t.role: t.why["gain_db"].model_delta for t in refined.tracks}
    assert delta["kick"] is None and delta["hats"] is not None and delta["bass"] is not None
    assert any("kick" in n and "fewer than 2 training songs" in n for n in notes)


def test_refined_values_never_leave_the_rule_bounds(tmp_path):
    """Edits far beyond every rule's bounds, in both directions: the refined values stay inside."""
    def extreme(sign):
        def edit(t):
            t.gain_db = float(np.clip(t.gain_db + sign * 30, -96, 24))
            t.pan = float(np.clip(sign * 1.0, -1, 1))
            t.compressor.threshold_db = float(np.clip(t.compressor.threshold_db + sign * 20, -60, 0))
            t.compressor.ratio = float(np.clip(t.compressor.ratio + sign * 10, 1, 30))
            for s in t.sends:
                s.level_db = float(np.clip(s.level_db + sign * 20, -96, 6))
        return edit

    with TrainingStore(tmp_path / "s.sqlite") as st:
        for seed in range(6):
            feedback_song(st, seed, extreme(1 if seed % 2 else -1))
        rep = L.train(st, tmp_path / "m", require_improvement=False)
    trained = {s.slot for s in rep.slots if s.model}
    assert {"gain_db", "pan", "compressor.threshold_db", "compressor.ratio", "sends.reverb"} <= trained
    refiner = L.load_refiner(tmp_path / "m")
    checked = 0
    for seed in range(20, 26):
        ctx = make_ctx(seed, n=8)
        refined, _ = refiner.refine(rule_plan(ctx), ctx)
        for t in refined.tracks:
            for slot, d in t.why.items():
                if d.model_delta is None:
                    continue
                lo, hi = d.bounds
                v = L.get_slot(t, slot)
                assert lo - 1e-9 <= v <= hi + 1e-9, (t.name, slot, v, d.bounds)
                assert v == pytest.approx(d.rule_value + d.model_delta, abs=1e-6)
                checked += 1
    assert checked > 50


def test_training_is_deterministic_and_writes_cards_not_pickles(tmp_path, lead_models):
    models_dir, _ = lead_models
    with TrainingStore(tmp_path / "s.sqlite") as st:
        for seed in range(4):
            feedback_song(st, seed, lead_up)
        L.train(st, tmp_path / "again")
    for p in sorted(models_dir.iterdir()):
        assert (tmp_path / "again" / p.name).read_bytes() == p.read_bytes(), p.name
    assert sorted(p.suffix for p in models_dir.iterdir()) == [".json", ".json", ".txt"]
    card = json.loads((models_dir / "refine.gain_db.card.json").read_text())
    assert card["target"] == "gain_db" and card["feature_names"] == L.feature_names()
    assert card["descriptor_version"] and card["licence"] and card["libraries"]["lightgbm"]
    assert card["metrics"]["cv_by_song"]["n_songs"] == 4
    assert card["training"]["rows"]["feedback"] > 0


def test_cross_validation_is_by_song_and_scored_on_real_rows(tmp_path):
    rows = []
    ctxs = [make_ctx(s) for s in range(3)]
    for g, ctx in enumerate(ctxs):
        for src, w in (("reference", 1.0), ("augmented", L.AUGMENTED_WEIGHT)):
            for t in ctx.tracks:
                rows.append(L.Row("gain_db", g, g, src, f"s{g}", t.name,
                                  {**L.session_features(ctx)[t.name], "rule_value": 0.0},
                                  1.0 if t.role == "lead_vocal" else -0.2, 0.0, -4.0, 4.0, w))
    cv = L.cross_validate(rows, L._categories())
    assert cv["n_songs"] == 3 and cv["n_test_rows"] == sum(1 for r in rows if r.source == "reference")
    assert {e["song"] for e in cv["per_song"]} == {"s0", "s1", "s2"}
    assert cv["balance_error_model_lu"] < cv["balance_error_rules_lu"]


def test_training_chooses_its_model_by_cross_validation_and_says_so(lead_models):
    models_dir, rep = lead_models
    card = json.loads((models_dir / "refine.gain_db.card.json").read_text())
    sel = card["metrics"]["model_selection"]
    assert set(sel) == set(L.MODEL_CANDIDATES)
    order = list(L.MODEL_CANDIDATES)
    best = min(sel, key=lambda n: (sel[n]["selection_error"], order.index(n)))
    limit = sel[best]["selection_error"] + sel[best]["standard_error"]
    # the one-standard-error rule: the simplest candidate within one standard error of the best
    assert card["model_config"] == next(n for n in order if sel[n]["selection_error"] <= limit + 1e-3)
    assert card["model_params"] == L.MODEL_CANDIDATES[card["model_config"]]
    assert next(s for s in rep.slots if s.slot == "gain_db").config == card["model_config"]


def test_model_selection_takes_the_simplest_candidate_within_one_standard_error():
    def cv(*per_song):
        return {"mae": 0.0, "balance_error_model_lu": float(np.mean(per_song)),
                "per_song": [{"balance_error_model_lu": v} for v in per_song]}
    close = {"stumps-l1": cv(1.0, 1.2), "depth3-l2": cv(0.9, 1.1)}         # 1.1 vs 1.0 +- 0.1
    assert L._select(close) == "stumps-l1"
    clear = {"stumps-l1": cv(1.0, 1.2), "depth3-l2": cv(0.50, 0.54)}       # 1.1 vs 0.52 +- 0.02
    assert L._select(clear) == "depth3-l2"


def test_a_robust_candidate_resists_one_songs_outlier():
    """Five songs agree that the bass sits 0.5 dB under the rules, one reference has it 4 dB
    over: a squared-error fit drags the other songs' bass up; an absolute-error one does not."""
    rows = []
    for g in range(6):
        ctx = make_ctx(g)
        feats = L.session_features(ctx)
        for t in ctx.tracks:
            y = (4.0 if g == 0 else -0.5) if t.role == "bass" else (1.0 if t.role == "lead_vocal" else 0.0)
            rows.append(L.Row("gain_db", g, g, "reference", f"s{g}", t.name, {**feats[t.name], "rule_value": 0.0},
                              y, 0.0, -6.0, 6.0, 1.0))
    assert any(r.features["role"] == "bass" for r in rows)
    cats = L._categories()
    errors = {n: L.cross_validate(rows, cats, params=p)["balance_error_model_lu"] for n, p in L.MODEL_CANDIDATES.items()}
    assert min(errors["depth2-l1"], errors["stumps-l1"]) < errors["depth3-l2"], errors


def test_inference_adds_well_under_a_second(lead_models):
    models_dir, _ = lead_models
    t0 = time.perf_counter()
    refiner = L.load_refiner(models_dir)
    ctx = make_ctx(9, n=16)
    plan = rule_plan(ctx)
    refiner.refine(plan, ctx)
    assert time.perf_counter() - t0 < 0.5


# --- loading: missing, corrupt, mismatched ---------------------------------------------------

def copy_models(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_missing_models_raise_when_explicit_and_fall_back_otherwise(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="does not exist"):
        L.load_refiner(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model manifest"):
        L.load_refiner(tmp_path / "empty")
    monkeypatch.setattr(L, "bundled_models_dir", lambda: tmp_path / "empty")
    notes: list[str] = []
    with pytest.warns(L.LearningWarning, match="rules alone"):
        assert L.load_refiner(notes=notes) is None
    assert notes and "no bundled models" in notes[0]


def test_corrupt_model_names_what_differs(tmp_path, lead_models):
    d = copy_models(lead_models[0], tmp_path / "m")
    txt = d / "refine.gain_db.txt"
    txt.write_text(txt.read_text().replace("Tree=0", "Tree=0\n", 1))
    with pytest.raises(ModelError, match="corrupt or was changed") as e:
        L.load_refiner(d)
    assert e.value.exit_code == 4 and "--no-learning" in str(e.value)
    with pytest.warns(L.LearningWarning, match="corrupt"):
        assert L.load_refiner(d, strict=False) is None


def test_mismatched_descriptor_or_feature_version_is_refused(tmp_path, lead_models):
    d = copy_models(lead_models[0], tmp_path / "m")
    man = json.loads((d / "manifest.json").read_text())
    man["descriptor_version"] = 999
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="descriptor version 999"):
        L.load_refiner(d)
    man["descriptor_version"] = json.loads((lead_models[0] / "manifest.json").read_text())["descriptor_version"]
    man["feature_set_version"] = 0
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="feature set version 0"):
        L.load_refiner(d)
    man["feature_set_version"] = L.FEATURE_SET_VERSION
    man["models"] = {"gain_db": "refine.pan"}
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="missing"):
        L.load_refiner(d)


def test_a_failing_model_leaves_the_rules_values_when_not_strict(lead_models):
    refiner = L.load_refiner(lead_models[0], strict=False)

    class Broken:
        def predict(self, rows):
            raise RuntimeError("boom")

    refiner.models["gain_db"] = Broken()
    ctx = make_ctx(11)
    plan = rule_plan(ctx)
    refined, notes = refiner.refine(plan, ctx)
    assert [t.gain_db for t in refined.tracks] == [t.gain_db for t in plan.tracks]
    assert any("failed" in n for n in notes)
    refiner.strict = True
    with pytest.raises(ModelError, match="boom"):
        refiner.refine(plan, ctx)


def test_training_without_data_says_how_to_get_some(tmp_path):
    with pytest.raises(InputError, match="not enough training data") as e:
        L.train(tmp_path / "empty.sqlite", tmp_path / "m")
    assert "learn add" in str(e.value)


# --- augmentation and the end-to-end add ------------------------------------------------------

def test_perturb_applies_gain_and_tilt():
    sr = 22050
    rng = np.random.default_rng(0)
    x = rng.normal(size=(sr, 1)).astype(np.float32) * 0.1
    y = L.perturb(x, sr, -6.0, 0.0)
    assert 20 * np.log10(np.std(y) / np.std(x)) == pytest.approx(-6.0, abs=0.01)
    z = L.perturb(x, sr, 0.0, 1.5)
    spec = lambda a, lo, hi: np.sum(np.abs(np.fft.rfft(a[:, 0])[int(lo * len(a) / sr):int(hi * len(a) / sr)]) ** 2)  # noqa: E731
    gain_hi = 10 * np.log10(spec(z, 4000, 8000) / spec(x, 4000, 8000))
    gain_lo = 10 * np.log10(spec(z, 100, 200) / spec(x, 100, 200))
    assert gain_hi == pytest.approx(1.5 * np.log2(5657 / 1000), abs=0.5)
    assert gain_lo < -4.0


def write_session(folder, sr=22050, seconds=3.0):
    """Three stems (kick-like bursts, a bass line, a vocal-like tone) and their mix at known gains."""
    folder.mkdir()
    n = int(sr * seconds)
    t = np.arange(n) / sr
    rng = np.random.default_rng(1)
    env = np.exp(-((t % 0.5) * 30.0))
    stems = {
        "kick": (np.sin(2 * np.pi * 60 * t) * env + 0.02 * rng.normal(size=n)) * 0.5,
        "bass": 0.3 * np.sin(2 * np.pi * (55 + 27.5 * (t > 1.5)) * t),
        "lead_vocal": 0.2 * np.sin(2 * np.pi * 220 * t + 2 * np.sin(2 * np.pi * 5 * t)) * (1 + 0.3 * np.sin(t))
                      + 0.05 * np.sin(2 * np.pi * 660 * t) + 0.01 * rng.normal(size=n),
    }
    gains = {"kick": -3.0, "bass": -6.0, "lead_vocal": 2.0}
    mix = np.zeros((n, 2))
    for name, x in stems.items():
        sf.write(folder / f"{name}.wav", x.astype(np.float32), sr, subtype="FLOAT")
        mix += (10 ** (gains[name] / 20) * x * np.sqrt(0.5))[:, None]
    return stems, mix


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    stems, mix = write_session(d / "stems")
    sf.write(d / "mix.wav", mix.astype(np.float32), 22050, subtype="FLOAT")
    other = np.random.default_rng(5).normal(size=mix.shape) * 0.1
    sf.write(d / "other_mix.wav", other.astype(np.float32), 22050, subtype="FLOAT")
    return d


def test_add_reference_stores_the_song_and_its_copies(tiny_session, tmp_path):
    r = L.add_reference(tiny_session / "stems", tiny_session / "mix.wav", store=tmp_path / "s.sqlite",
                        genre="rock", licence="CC0", augment=2, processes=1)
    assert r.residual_db < -30 and r.augmented == 2 and r.stems == 3
    table = {row["stem"]: row for row in r.table}
    # relative levels in the mix: kick -3, bass -6, lead +2 dB around their raw levels
    assert table["lead_vocal"]["gain_db"] - table["bass"]["gain_db"] == pytest.approx(8.0, abs=0.2)
    with TrainingStore(tmp_path / "s.sqlite") as st:
        songs = st.list_songs()
        assert [s.source for s in songs] == ["reference", "augmented", "augmented"]
        assert all(s.parent_id == songs[0].id for s in songs[1:])
        rows = L.collect(st, slots=["gain_db"]).rows["gain_db"]
    assert {r.source for r in rows} == {"reference", "augmented"} and len(rows) == 9
    orig = {r.stem: r.residual for r in rows if r.source == "reference"}
    for row in rows:  # a copy restores the same balance: the same residual (up to rule changes)
        assert abs(row.residual - orig[row.stem]) < 1.0
    with pytest.raises(InputError, match="already in the training store"):
        L.add_reference(tiny_session / "stems", tiny_session / "mix.wav", store=tmp_path / "s.sqlite",
                        genre="rock", augment=0, processes=1)


def test_add_reference_refuses_a_mix_of_other_stems(tiny_session, tmp_path):
    with pytest.raises(InputError, match="does not look like a mix of these stems"):
        L.add_reference(tiny_session / "stems", tiny_session / "other_mix.wav", store=tmp_path / "s.sqlite",
                        augment=0, processes=1)
    with TrainingStore(tmp_path / "s.sqlite") as st:
        assert st.list_songs() == []


def test_an_interrupted_add_leaves_the_store_as_it_was(tiny_session, tmp_path, monkeypatch):
    real = TrainingStore.add_song
    calls = {"n": 0}

    def flaky(self, rec, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the song is written; interrupted while writing its first copy
            raise KeyboardInterrupt
        return real(self, rec, **kw)

    monkeypatch.setattr(TrainingStore, "add_song", flaky)
    with pytest.raises(KeyboardInterrupt):
        L.add_reference(tiny_session / "stems", tiny_session / "mix.wav", store=tmp_path / "s.sqlite",
                        augment=1, processes=1)
    monkeypatch.setattr(TrainingStore, "add_song", real)
    with TrainingStore(tmp_path / "s.sqlite") as st:
        assert st.list_songs() == [] and st.check_integrity() == []


def test_a_users_trained_models_are_used_by_default(tmp_path, monkeypatch):
    import shutil

    from expertmix.learning import bundled_models_dir, load_refiner

    mine = tmp_path / "my-models"
    shutil.copytree(bundled_models_dir(), mine)
    monkeypatch.setenv("EXPERTMIX_MODELS", str(mine))
    notes: list[str] = []
    assert load_refiner(notes=notes) is not None
    assert any("your models" in n and str(mine) in n for n in notes)
    (mine / "refine.gain_db.txt").write_text("corrupt")          # broken: fall back to the bundled ones
    notes.clear()
    with pytest.warns(Warning):
        assert load_refiner(notes=notes) is not None
    assert any("do not load" in n for n in notes)


def test_the_planner_can_load_its_models_in_the_background(monkeypatch):
    """run_mix starts loading the models before the analysis; the planner then has what it would
    have loaded itself, and a failure there is raised by the planning step, not lost."""
    from expertmix import learning
    from expertmix.decide import RulebookPlanner

    early = RulebookPlanner()
    early.start_loading()
    early._loader.join()
    assert early._refiner_loaded
    late = RulebookPlanner()
    assert type(early._load_refiner()) is type(late._load_refiner()) and early._load_refiner() is not None
    assert early._refiner_notes == late._refiner_notes

    def broken(*args, **kwargs):
        raise ModelError("models unreadable")

    failing = RulebookPlanner()
    monkeypatch.setattr(learning, "load_refiner", broken)
    failing.start_loading()
    failing._loader.join()
    assert not failing._refiner_loaded
    with pytest.raises(ModelError, match="unreadable"):
        failing._load_refiner()
