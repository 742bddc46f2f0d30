"""expertmix.gbm: deterministic LightGBM training, group CV, model cards and load errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from expertmix import gbm
from expertmix.descriptor_specs import DESCRIPTOR_VERSION
from expertmix.errors import InputError, ModelError

FEATURES = ["x0", "x1", "x2", "x3"]


def synthetic(n_groups: int = 12, per_group: int = 25, seed: int = 0):
    """y = 2*x0 - x1 + noise, rows grouped in 'songs' with a per-song shift of the features."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    X = rng.standard_normal((len(groups), len(FEATURES))) + 0.3 * rng.standard_normal((n_groups, 1))[groups]
    y = 2 * X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(len(groups))
    return X, y, groups


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def model(data):
    X, y, _ = data
    return gbm.train_regressor(X, y, FEATURES, num_boost_round=150)


def test_training_is_bit_identical(data, model):
    X, y, _ = data
    again = gbm.train_regressor(X, y, FEATURES, num_boost_round=150)
    assert again.model_text() == model.model_text()
    assert "deterministic: 1" in model.model_text() or "[deterministic: 1]" in model.model_text()


def test_a_different_seed_is_still_a_valid_model(data):
    X, y, _ = data
    m = gbm.train_regressor(X, y, FEATURES, num_boost_round=20, seed=3, params={"bagging_fraction": 0.8,
                                                                                 "bagging_freq": 1})
    assert m.predict(X).shape == (len(y),)


def test_learnable_target_beats_rules_alone(data):
    X, y, groups = data
    report = gbm.cross_validate_by_group(X, y, groups, FEATURES, n_folds=4, num_boost_round=150)
    m = report.metrics
    assert m["mae"] < 0.3 * m["baseline_mae"]
    assert m["rmse"] < 0.3 * m["baseline_rmse"]
    assert m["improvement"] > 0.7
    assert len(report.folds) == 4 and report.n_groups == 12
    json.dumps(report.to_dict(), allow_nan=False)


def test_noise_target_does_not_beat_rules_alone_by_much():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 4))
    y = 0.5 * rng.standard_normal(120)
    report = gbm.cross_validate_by_group(X, y, np.repeat(np.arange(6), 20), FEATURES, num_boost_round=50)
    assert report.metrics["improvement"] < 0.15


@pytest.mark.parametrize("n_folds", [None, 3, 5])
def test_group_cv_never_shares_a_group(data, n_folds):
    X, y, groups = data
    report = gbm.cross_validate_by_group(X, y, groups, FEATURES, n_folds=n_folds, num_boost_round=10)
    tested = []
    for fold in report.folds:
        assert not set(fold.test_groups) & set(fold.train_groups)
        assert set(fold.test_groups) | set(fold.train_groups) == set(np.unique(groups).tolist())
        assert fold.n_test == int(np.isin(groups, fold.test_groups).sum())
        assert fold.n_train + fold.n_test == len(y)
        tested += fold.test_groups
    assert sorted(tested) == sorted(np.unique(groups).tolist())  # every group tested exactly once
    assert len(report.folds) == (12 if n_folds is None else n_folds)


def test_group_folds_are_balanced_and_deterministic():
    groups = np.array([0] * 50 + [1] * 10 + [2] * 10 + [3] * 30 + [4] * 20)
    folds = gbm.group_folds(groups, 2)
    assert [f.tolist() for f in folds] == [f.tolist() for f in gbm.group_folds(groups, 2)]
    sizes = [int(np.isin(groups, f).sum()) for f in folds]
    assert sorted(sizes) == [60, 60]
    with pytest.raises(InputError, match="at least 2 songs"):
        gbm.group_folds(np.zeros(10), 2)


def test_predict_accepts_dicts(model):
    row = {"x0": 1.0, "x1": -1.0, "x2": 0.0, "x3": 0.0, "unused": 5.0}
    by_dict = model.predict(row)
    by_array = model.predict(np.array([[1.0, -1.0, 0.0, 0.0]]))
    assert by_dict.shape == (1,) and by_dict[0] == by_array[0]
    assert by_dict[0] == pytest.approx(3.0, abs=0.6)
    with pytest.raises(ModelError, match="lacks the feature"):
        model.predict({"x0": 1.0})
    with pytest.raises(ModelError, match="4 features"):
        model.predict(np.zeros((2, 3)))


def test_categorical_features_are_encoded_from_strings():
    rng = np.random.default_rng(2)
    roles = ["bass", "kick", "vocal"]
    offsets = {"bass": 1.0, "kick": -2.0, "vocal": 0.5}
    rows = [{"role": roles[i % 3], "level": float(rng.standard_normal())} for i in range(150)]
    y = [offsets[r["role"]] + 0.2 * r["level"] for r in rows]
    m = gbm.train_regressor(rows, y, ["role", "level"], categories={"role": roles}, num_boost_round=150)
    pred = m.predict([{"role": r, "level": 0.0} for r in roles])
    assert pred == pytest.approx([offsets[r] for r in roles], abs=0.3)
    assert np.isfinite(m.predict({"role": "unseen-role", "level": 0.0})).all()


def test_feature_importance(model):
    top = gbm.feature_importance(model, top=2)
    assert [n for n, _ in top] == ["x0", "x1"]
    assert sum(s for _, s in gbm.feature_importance(model, top=10)) == pytest.approx(1.0)


@pytest.mark.parametrize("names, match", [
    (["a", "a", "b", "c"], "unique"),
    (["a b", "c", "d", "e"], "may not"),
    (["a", "b:c", "d", "e"], "may not"),
])
def test_bad_feature_names(data, names, match):
    X, y, _ = data
    with pytest.raises(InputError, match=match):
        gbm.train_regressor(X, y, names, num_boost_round=2)


# ---------------------------------------------------------------- save / load


CARD = {"target": "gain_db", "training": {"songs": 12, "rows": 300}, "licence": "CC-BY-4.0",
        "metrics": {"mae": 0.1}}


@pytest.fixture
def saved(tmp_path, model):
    card = gbm.save_model(model, tmp_path, "gain_db", CARD)
    return tmp_path, card


def test_save_and_load_round_trip(saved, model, data):
    d, card = saved
    assert (d / "gain_db.txt").read_text() == model.model_text()
    on_disk = json.loads((d / "gain_db.card.json").read_text())
    assert on_disk == card
    for key in ("target", "feature_names", "descriptor_version", "training", "licence", "metrics",
                "libraries", "model_sha256", "num_trees", "params"):
        assert key in on_disk, key
    assert on_disk["feature_names"] == FEATURES
    assert on_disk["descriptor_version"] == DESCRIPTOR_VERSION
    assert set(on_disk["libraries"]) >= {"lightgbm", "numpy", "expertmix"}
    loaded = gbm.load_model(d, "gain_db", expected_features=FEATURES,
                            expected_descriptor_version=DESCRIPTOR_VERSION, expected_target="gain_db")
    assert isinstance(loaded, gbm.Regressor)
    X, _, _ = data
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert gbm.model_names(d) == ["gain_db"]
    assert not list(d.glob("*.pkl")) and not list(d.glob("*.tmp"))


def test_saving_twice_gives_identical_files(tmp_path, model):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    gbm.save_model(model, a, "m", CARD)
    gbm.save_model(model, b, "m", CARD)
    for f in ("m.txt", "m.card.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_tampered_text_is_refused(saved):
    d, _ = saved
    p = d / "gain_db.txt"
    p.write_text(p.read_text().replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(ModelError, match="corrupt or was changed") as err:
        gbm.load_model(d, "gain_db")
    assert "expertmix learn train" in str(err.value) and "--no-learning" in str(err.value)


def test_wrong_feature_order_is_named(saved):
    d, _ = saved
    with pytest.raises(ModelError, match=r"different order: position 0 is 'x0' in the model but 'x1' expected"):
        gbm.load_model(d, "gain_db", expected_features=["x1", "x0", "x2", "x3"])


def test_missing_and_extra_features_are_named(saved):
    d, _ = saved
    with pytest.raises(ModelError, match=r"lacks 1 expected feature\(s\): x9.*not expected: x3"):
        gbm.load_model(d, "gain_db", expected_features=["x0", "x1", "x2", "x9"])


def test_wrong_descriptor_version_is_named(saved):
    d, _ = saved
    with pytest.raises(ModelError, match=rf"descriptor version {DESCRIPTOR_VERSION}, but expertmix computes version 99"):
        gbm.load_model(d, "gain_db", expected_descriptor_version=99)


def test_wrong_target_is_named(saved):
    d, _ = saved
    with pytest.raises(ModelError, match="predicts 'gain_db', not 'pan'"):
        gbm.load_model(d, "gain_db", expected_target="pan")


def test_missing_card_or_text(saved):
    d, _ = saved
    (d / "gain_db.card.json").unlink()
    with pytest.raises(ModelError, match="model card of model 'gain_db' is missing"):
        gbm.load_model(d, "gain_db")
    with pytest.raises(ModelError, match="model text of model 'nope' is missing"):
        gbm.load_model(d, "nope")


def test_corrupt_card(saved):
    d, _ = saved
    (d / "gain_db.card.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        gbm.load_model(d, "gain_db")
    (d / "gain_db.card.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not an expertmix model card"):
        gbm.load_model(d, "gain_db")


def test_card_that_disagrees_with_the_text(saved):
    d, card = saved
    card = dict(card, feature_names=["x0", "x1", "x2", "renamed"])
    (d / "gain_db.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="model text and card disagree"):
        gbm.load_model(d, "gain_db")


def test_unparseable_text_with_a_matching_hash(saved):
    d, card = saved
    text = "tree\nthis is not a lightgbm model\n"
    (d / "gain_db.txt").write_text(text)
    import hashlib
    card = dict(card, model_sha256=hashlib.sha256(text.encode()).hexdigest())
    (d / "gain_db.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="LightGBM cannot read"):
        gbm.load_model(d, "gain_db")


# ---------------------------------------------------------------- classifier


def separable(seed: int = 0):
    rng = np.random.default_rng(seed)
    classes = ["bass", "kick", "vocal"]
    centres = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    labels = [classes[i % 3] for i in range(180)]
    X = centres[[classes.index(c) for c in labels]] + 0.7 * rng.standard_normal((180, 2))
    return X, labels, np.arange(180) // 15


def test_classifier_learns_separable_classes(tmp_path):
    X, labels, groups = separable()
    clf = gbm.train_classifier(X, labels, ["a", "b"], num_boost_round=60)
    assert np.mean(np.array(clf.predict(X)) == np.array(labels)) > 0.95
    proba = clf.predict_proba(X[:3])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
    again = gbm.train_classifier(X, labels, ["a", "b"], num_boost_round=60)
    assert again.model_text() == clf.model_text()
    report = gbm.cross_validate_classifier_by_group(X, labels, groups, ["a", "b"], n_folds=4, num_boost_round=60)
    assert report.metrics["accuracy"] > 0.9 > report.metrics["baseline_accuracy"]
    for fold in report.folds:
        assert not set(fold.test_groups) & set(fold.train_groups)
    card = gbm.save_model(clf, tmp_path, "role", {"target": "role"})
    assert card["classes"] == ["bass", "kick", "vocal"] and card["kind"] == "classifier"
    loaded = gbm.load_model(tmp_path, "role", expected_features=["a", "b"])
    assert isinstance(loaded, gbm.Classifier)
    assert loaded.predict(X) == clf.predict(X)


def test_classifier_needs_two_classes():
    with pytest.raises(InputError, match="two classes"):
        gbm.train_classifier(np.zeros((5, 1)), ["a"] * 5, ["f"])
