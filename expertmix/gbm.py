"""LightGBM models for the learned refinements: training, group cross-validation, model cards.

This is the only module of expertmix that imports :mod:`lightgbm`. Everything else sees two
small classes, :class:`Regressor` and :class:`Classifier`, and four functions:

* :func:`train_regressor` / :func:`train_classifier`: deterministic training (fixed seeds,
  ``deterministic=True``, ``force_row_wise=True``, a fixed thread count): the same data gives a
  bit-identical model text.
* :func:`cross_validate_by_group` / :func:`cross_validate_classifier_by_group`: folds are made of
  whole groups (songs), never of rows, so no song is ever in both the training and the test part
  of a fold. A regressor is scored against the zero-residual baseline, "rules alone".
* :func:`save_model` / :func:`load_model`: a model is two files, ``<name>.txt`` (LightGBM's own
  text format) and ``<name>.card.json`` (what it predicts, its ordered feature names, the
  descriptor version, the training data, licence, metrics, library versions and the sha256 of the
  text). Models are never pickled. A missing, corrupt or mismatched model raises
  :class:`~expertmix.errors.ModelError` naming exactly what differs and how to fix it.

Features are numbers, except *categorical* features (a stem's role, the genre): these are given
as strings, encoded as integer codes in the order of the ``categories`` lists recorded in the
card, and handled by LightGBM's native categorical splits. A category not seen in training reads
as missing.

Small-data defaults (:data:`DEFAULT_REGRESSOR_PARAMS`): a few hundred rows from a handful of songs
is the normal case, so trees are shallow (7 leaves, depth 3), leaves may hold 3 rows, the
learning rate is 0.05 and an L2 penalty keeps residual predictions near zero when the data say
little.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightgbm as lgb
import numpy as np

from .descriptor_specs import DESCRIPTOR_VERSION
from .errors import InputError, ModelError
from .io import atomic_write_text

#: Identifies a card file written by this module; bump :data:`CARD_VERSION` on incompatible change.
CARD_FORMAT = "expertmix-model-card"
CARD_VERSION = 1

#: Threads used by training and prediction: fixed, so results never depend on the machine. One
#: thread: the data sets are small (hundreds to thousands of rows), where OpenMP synchronisation
#: costs far more than it saves (measured: 20k rows x 150 trees, 0.06 s on 1 thread, 2.6 s on 2
#: threads of a busy 2-core machine). The trees are identical for any thread count; only the
#: ``[num_threads: N]`` line of the model text differs. ``params={"num_threads": 2}`` overrides it.
NUM_THREADS = 1

#: How to repair a model problem (appended to every ModelError).
MODEL_FIX = ("retrain with `expertmix learn train`, or mix with --no-learning to use the rules alone")

_DETERMINISM: dict[str, Any] = {
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": NUM_THREADS,
    "verbosity": -1,
}

#: Defaults for small data sets (tens of songs, hundreds of rows). Any key may be overridden.
DEFAULT_REGRESSOR_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "max_depth": 3,
    "min_data_in_leaf": 3,
    "min_sum_hessian_in_leaf": 1e-3,
    "min_data_per_group": 3,
    "cat_smooth": 5.0,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "max_bin": 63,
    "min_data_in_bin": 1,
}
DEFAULT_CLASSIFIER_PARAMS: dict[str, Any] = {**DEFAULT_REGRESSOR_PARAMS, "objective": "multiclass"}

#: Default number of boosting rounds (trees per class for a classifier).
DEFAULT_ROUNDS = 200

# LightGBM refuses these characters in feature names (they would break its JSON dump).
_BAD_NAME = re.compile(r'[\s,:"\[\]{}]')


# --------------------------------------------------------------------------------------------
# features


def _check_feature_names(feature_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in feature_names]
    if not names:
        raise InputError("a model needs at least one feature")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"feature names must be unique; repeated: {', '.join(dup)}")
    bad = [n for n in names if not n or _BAD_NAME.search(n)]
    if bad:
        raise InputError(f"feature names may not be empty or contain spaces or any of , : \" [ ] {{ }}: "
                         f"{', '.join(repr(b) for b in bad)}", hint="rename the features, e.g. with '.' or '_'")
    return names


def _check_categories(categories: Mapping[str, Sequence[str]] | None,
                      feature_names: Sequence[str]) -> dict[str, list[str]]:
    cats = {str(k): [str(v) for v in vals] for k, vals in (categories or {}).items()}
    unknown = [k for k in cats if k not in feature_names]
    if unknown:
        raise InputError(f"categorical features not among the features: {', '.join(unknown)}")
    for k, vals in cats.items():
        if len(set(vals)) != len(vals):
            raise InputError(f"categories of {k} repeat a value: {vals}")
    return cats


def encode_rows(rows: Any, feature_names: Sequence[str],
                categories: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """Turn rows into a float64 matrix (rows, features) in ``feature_names`` order.

    ``rows``: a 2-D array (already encoded, columns in ``feature_names`` order), one mapping
    ``{feature: value}`` or a sequence of mappings. In mappings, categorical features (keys of
    ``categories``) take their category string (encoded as its index; an unknown category or
    ``None`` becomes NaN, i.e. missing); other features take numbers (``None`` is missing).
    Keys that are not features are ignored; a missing feature raises :class:`ModelError`.
    """
    cats = {k: {v: i for i, v in enumerate(vals)} for k, vals in (categories or {}).items()}
    if isinstance(rows, Mapping):
        rows = [rows]
    if isinstance(rows, np.ndarray) or (isinstance(rows, Sequence) and rows and not isinstance(rows[0], Mapping)):
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != len(feature_names):
            raise ModelError(f"expected rows with {len(feature_names)} features ({', '.join(feature_names[:5])}"
                             f"{', ...' if len(feature_names) > 5 else ''}), got an array shaped {x.shape}",
                             hint="pass one column per feature, in the model's feature order, or pass dicts")
        return x
    rows = list(rows)
    out = np.empty((len(rows), len(feature_names)), dtype=np.float64)
    for r, row in enumerate(rows):
        missing = [n for n in feature_names if n not in row]
        if missing:
            raise ModelError(f"row {r} lacks the feature(s) {', '.join(missing)}",
                             hint="compute every feature the model card lists, or " + MODEL_FIX)
        for c, name in enumerate(feature_names):
            v = row[name]
            if name in cats:
                code = cats[name].get(str(v)) if v is not None else None
                out[r, c] = np.nan if code is None else float(code)
            else:
                out[r, c] = np.nan if v is None else float(v)
    return out


def _as_xy(X: Any, y: Any, feature_names: Sequence[str],
           categories: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    x = encode_rows(X, feature_names, categories)
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(yy) != len(x):
        raise InputError(f"{len(x)} rows of features but {len(yy)} targets")
    if len(x) == 0:
        raise InputError("no training rows")
    if not np.all(np.isfinite(yy)):
        raise InputError(f"{int(np.sum(~np.isfinite(yy)))} target value(s) are NaN or infinite")
    return x, yy


def _params(base: Mapping[str, Any], params: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    p = dict(base)
    p.update(params or {})
    threads = int(p.get("num_threads", NUM_THREADS))
    p.update(_DETERMINISM)  # never overridable: determinism is a promise
    p["num_threads"] = threads
    p.update({"seed": seed, "bagging_seed": seed + 1, "feature_fraction_seed": seed + 2,
              "data_random_seed": seed + 3, "extra_seed": seed + 4, "objective_seed": seed + 5})
    return p


def _dataset(x: np.ndarray, y: np.ndarray, feature_names: list[str], categories: Mapping[str, Any],
             params: Mapping[str, Any], weight: np.ndarray | None) -> "lgb.Dataset":
    return lgb.Dataset(x, label=y, weight=weight, feature_name=feature_names,
                       categorical_feature=[n for n in feature_names if n in categories] or "auto",
                       params={k: params[k] for k in ("max_bin", "min_data_in_bin", "verbosity",
                                                      "data_random_seed", "min_data_in_leaf") if k in params},
                       free_raw_data=True)


# --------------------------------------------------------------------------------------------
# models


@dataclass
class _Model:
    booster: "lgb.Booster"
    feature_names: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    def _raw(self, rows: Any) -> np.ndarray:
        x = encode_rows(rows, self.feature_names, self.categories)
        return self.booster.predict(x, num_threads=int(self.params.get("num_threads", NUM_THREADS)))

    def model_text(self) -> str:
        """The LightGBM text model (deterministic for deterministic training)."""
        return self.booster.model_to_string()

    @property
    def num_trees(self) -> int:
        return int(self.booster.num_trees())


@dataclass
class Regressor(_Model):
    """A trained LightGBM regressor. ``predict`` takes dict rows or an encoded 2-D array."""

    def predict(self, rows: Any) -> np.ndarray:
        """Predictions, one float per row (shape (rows,)). See :func:`encode_rows` for ``rows``."""
        return np.asarray(self._raw(rows), dtype=np.float64).reshape(-1)


@dataclass
class Classifier(_Model):
    """A trained multiclass LightGBM classifier over ``classes`` (strings)."""

    classes: list[str] = field(default_factory=list)

    def predict_proba(self, rows: Any) -> np.ndarray:
        """Class probabilities shaped (rows, classes), columns in ``classes`` order."""
        p = np.asarray(self._raw(rows), dtype=np.float64)
        return p.reshape(len(p), -1) if p.ndim == 2 else p.reshape(-1, len(self.classes))

    def predict(self, rows: Any) -> list[str]:
        """The most probable class of each row."""
        return [self.classes[i] for i in np.argmax(self.predict_proba(rows), axis=1)]


def train_regressor(X: Any, y: Any, feature_names: Sequence[str], *, groups: Any = None,
                    categories: Mapping[str, Sequence[str]] | None = None, weight: Any = None,
                    params: Mapping[str, Any] | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                    seed: int = 0) -> Regressor:
    """Train a deterministic LightGBM regressor.

    ``X``: 2-D array (rows, features) in ``feature_names`` order, or a list of ``{feature: value}``
    dicts; ``y``: targets (rows,) - for a refinement, the residual ``engineer value - rule value``.
    ``groups`` is accepted for symmetry with :func:`cross_validate_by_group` and only checked for
    length (a single model is trained on all rows). ``categories``: for each categorical feature,
    its category strings (their order defines the codes; store it, it is part of the model).
    ``weight``: optional per-row weights. ``params`` override :data:`DEFAULT_REGRESSOR_PARAMS`;
    the determinism settings and seeds cannot be overridden (``num_threads`` can). Same inputs,
    same seed: bit-identical
    :meth:`Regressor.model_text`.
    """
    names = _check_feature_names(feature_names)
    cats = _check_categories(categories, names)
    x, yy = _as_xy(X, y, names, cats)
    if groups is not None and len(np.asarray(groups)) != len(x):
        raise InputError(f"{len(x)} rows but {len(np.asarray(groups))} group labels")
    w = None if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    p = _params(DEFAULT_REGRESSOR_PARAMS, params, seed)
    booster = lgb.train(p, _dataset(x, yy, names, cats, p, w), num_boost_round=int(num_boost_round))
    return Regressor(booster=booster, feature_names=names, categories=cats, params=p)


def train_classifier(X: Any, labels: Sequence[str], feature_names: Sequence[str], *,
                     classes: Sequence[str] | None = None,
                     categories: Mapping[str, Sequence[str]] | None = None, weight: Any = None,
                     params: Mapping[str, Any] | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                     seed: int = 0) -> Classifier:
    """Train a deterministic multiclass LightGBM classifier (e.g. a stem's role).

    ``labels``: one class string per row. ``classes``: the class list (order = output columns);
    by default the sorted distinct labels. Other arguments as in :func:`train_regressor`.
    """
    names = _check_feature_names(feature_names)
    cats = _check_categories(categories, names)
    labels = [str(v) for v in labels]
    cls = [str(c) for c in classes] if classes is not None else sorted(set(labels))
    unknown = sorted(set(labels) - set(cls))
    if unknown:
        raise InputError(f"labels not among the classes: {', '.join(unknown)}")
    if len(cls) < 2:
        raise InputError(f"a classifier needs at least two classes, got {cls}")
    index = {c: i for i, c in enumerate(cls)}
    x, yy = _as_xy(X, [index[v] for v in labels], names, cats)
    w = None if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    p = _params(DEFAULT_CLASSIFIER_PARAMS, {**(params or {}), "num_class": len(cls)}, seed)
    p["objective"] = "multiclass"
    booster = lgb.train(p, _dataset(x, yy, names, cats, p, w), num_boost_round=int(num_boost_round))
    return Classifier(booster=booster, feature_names=names, categories=cats, params=p, classes=cls)


def feature_importance(model: _Model, top: int = 10) -> list[tuple[str, float]]:
    """The ``top`` features by total split gain, as (name, share of the total gain), largest first.

    Ties are broken by feature order. Shares sum to 1 over all features (0 for a model without
    splits).
    """
    gain = np.asarray(model.booster.feature_importance(importance_type="gain"), dtype=np.float64)
    total = float(gain.sum())
    share = gain / total if total > 0 else np.zeros_like(gain)
    order = sorted(range(len(share)), key=lambda i: (-share[i], i))
    return [(model.feature_names[i], float(share[i])) for i in order[:top]]


# --------------------------------------------------------------------------------------------
# cross-validation by group


def group_folds(groups: Any, n_folds: int | None = None) -> list[np.ndarray]:
    """Split the distinct groups into folds; returns the test groups of each fold.

    ``n_folds`` None, or at least the number of groups: leave one group out. Otherwise a
    deterministic GroupKFold: groups sorted by size (largest first, then by value) are dealt to
    the fold with the fewest rows so far. Every group is in exactly one test fold.
    """
    g = np.asarray(groups)
    uniq, counts = np.unique(g, return_counts=True)
    if len(uniq) < 2:
        raise InputError(f"cross-validation by song needs at least 2 songs (groups), got {len(uniq)}",
                         hint="add more songs to the training store (`expertmix learn add`)")
    if n_folds is None or n_folds >= len(uniq):
        return [np.array([u]) for u in uniq]
    if n_folds < 2:
        raise InputError(f"n_folds must be at least 2, got {n_folds}")
    order = sorted(range(len(uniq)), key=lambda i: (-counts[i], i))
    sizes = [0] * n_folds
    members: list[list[Any]] = [[] for _ in range(n_folds)]
    for i in order:
        f = min(range(n_folds), key=lambda k: (sizes[k], k))
        members[f].append(uniq[i])
        sizes[f] += int(counts[i])
    return [np.array(sorted(m)) for m in members]


@dataclass
class FoldReport:
    """One fold: which groups were trained and tested on, and the test errors."""

    fold: int
    test_groups: list[Any]
    train_groups: list[Any]
    n_train: int
    n_test: int
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass
class CVReport:
    """Cross-validation by group. ``metrics`` are over all out-of-fold predictions pooled.

    Regressor metrics: ``mae``, ``rmse`` (the model), ``baseline_mae``, ``baseline_rmse`` (rules
    alone: a zero residual), ``mean_baseline_mae`` (predicting the training mean residual) and
    ``improvement`` = 1 - mae / baseline_mae (> 0: the model beats the rules alone).
    Classifier metrics: ``accuracy``, ``baseline_accuracy`` (the majority class of the training
    part), ``log_loss``.
    """

    kind: str
    n_rows: int
    n_groups: int
    folds: list[FoldReport]
    metrics: dict[str, float]
    oof_predictions: list[Any]

    def to_dict(self, *, with_predictions: bool = False) -> dict[str, Any]:
        d = _plain(asdict(self))
        if not with_predictions:
            d.pop("oof_predictions")
        return d


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _reg_metrics(y: np.ndarray, pred: np.ndarray, train_mean: np.ndarray | float = 0.0) -> dict[str, float]:
    err = pred - y
    mae, rmse = float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err ** 2)))
    bmae, brmse = float(np.mean(np.abs(y))), float(np.sqrt(np.mean(y ** 2)))
    return {"mae": mae, "rmse": rmse, "baseline_mae": bmae, "baseline_rmse": brmse,
            "mean_baseline_mae": float(np.mean(np.abs(y - train_mean))),
            "improvement": float(1.0 - mae / bmae) if bmae > 0 else 0.0}


def _fold_iter(groups: Any, n_rows: int, n_folds: int | None):
    g = np.asarray(groups)
    if len(g) != n_rows:
        raise InputError(f"{n_rows} rows but {len(g)} group labels")
    for k, test_groups in enumerate(group_folds(g, n_folds)):
        test = np.isin(g, test_groups)
        yield k, test_groups, np.unique(g[~test]), ~test, test


def cross_validate_by_group(X: Any, y: Any, groups: Any, feature_names: Sequence[str], *,
                            n_folds: int | None = None,
                            categories: Mapping[str, Sequence[str]] | None = None, weight: Any = None,
                            params: Mapping[str, Any] | None = None,
                            num_boost_round: int = DEFAULT_ROUNDS, seed: int = 0) -> CVReport:
    """Cross-validate :func:`train_regressor` by group (song) against "rules alone".

    ``groups``: one label per row (the song id; augmented copies of a song must carry the id of
    the song they came from). Folds from :func:`group_folds` (leave-one-song-out by default).
    ``y`` is the residual the model learns, so the "rules alone" baseline predicts 0. Each fold
    records its test and training groups, so one can check that they never overlap.
    """
    names = _check_feature_names(feature_names)
    cats = _check_categories(categories, names)
    x, yy = _as_xy(X, y, names, cats)
    w = None if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    oof = np.zeros(len(yy))
    train_means = np.zeros(len(yy))
    folds = []
    for k, test_groups, train_groups, tr, te in _fold_iter(groups, len(yy), n_folds):
        model = train_regressor(x[tr], yy[tr], names, categories=cats, params=params,
                                weight=None if w is None else w[tr], num_boost_round=num_boost_round, seed=seed)
        oof[te] = model.predict(x[te])
        train_means[te] = float(np.mean(yy[tr]))
        folds.append(FoldReport(k, test_groups.tolist(), train_groups.tolist(), int(tr.sum()), int(te.sum()),
                                _reg_metrics(yy[te], oof[te], train_means[te])))
    return CVReport("regressor", len(yy), len(np.unique(np.asarray(groups))), folds,
                    _reg_metrics(yy, oof, train_means), oof.tolist())


def cross_validate_classifier_by_group(X: Any, labels: Sequence[str], groups: Any,
                                       feature_names: Sequence[str], *, n_folds: int | None = None,
                                       classes: Sequence[str] | None = None,
                                       categories: Mapping[str, Sequence[str]] | None = None,
                                       params: Mapping[str, Any] | None = None,
                                       num_boost_round: int = DEFAULT_ROUNDS, seed: int = 0) -> CVReport:
    """Cross-validate :func:`train_classifier` by group; scored by accuracy vs the majority class."""
    names = _check_feature_names(feature_names)
    cats = _check_categories(categories, names)
    labels = [str(v) for v in labels]
    cls = [str(c) for c in classes] if classes is not None else sorted(set(labels))
    x = encode_rows(X, names, cats)
    lab = np.asarray(labels, dtype=object)
    pred = np.empty(len(lab), dtype=object)
    base = np.empty(len(lab), dtype=object)
    logp = np.zeros(len(lab))
    folds = []
    for k, test_groups, train_groups, tr, te in _fold_iter(groups, len(lab), n_folds):
        model = train_classifier(x[tr], list(lab[tr]), names, classes=cls, categories=cats, params=params,
                                 num_boost_round=num_boost_round, seed=seed)
        proba = model.predict_proba(x[te])
        pred[te] = [cls[i] for i in np.argmax(proba, axis=1)]
        vals, counts = np.unique(lab[tr], return_counts=True)
        base[te] = vals[np.argmax(counts)]
        idx = np.array([cls.index(v) for v in lab[te]])
        logp[te] = np.log(np.clip(proba[np.arange(len(idx)), idx], 1e-15, 1.0))
        folds.append(FoldReport(k, test_groups.tolist(), train_groups.tolist(), int(tr.sum()), int(te.sum()),
                                {"accuracy": float(np.mean(pred[te] == lab[te])),
                                 "baseline_accuracy": float(np.mean(base[te] == lab[te]))}))
    metrics = {"accuracy": float(np.mean(pred == lab)), "baseline_accuracy": float(np.mean(base == lab)),
               "log_loss": float(-np.mean(logp))}
    return CVReport("classifier", len(lab), len(np.unique(np.asarray(groups))), folds, metrics, list(pred))


# --------------------------------------------------------------------------------------------
# saving and loading


def library_versions() -> dict[str, str]:
    """Versions recorded in every card."""
    from . import __version__

    return {"lightgbm": lgb.__version__, "numpy": np.__version__, "expertmix": __version__,
            "python": platform.python_version()}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """``(<directory>/<name>.txt, <directory>/<name>.card.json)``."""
    d = Path(directory)
    return d / f"{name}.txt", d / f"{name}.card.json"


def save_model(model: _Model, directory: str | Path, name: str,
               card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<name>.txt`` and ``<name>.card.json`` atomically; return the card as written.

    ``card``: what the caller knows, typically ``target`` (the slot, e.g. ``"gain_db"``),
    ``descriptor_version`` (default :data:`~expertmix.descriptor_specs.DESCRIPTOR_VERSION`),
    ``training`` (rows, songs, sources, date range), ``licence`` (of the training data), ``metrics``
    (a :meth:`CVReport.to_dict`). This function fills in ``format``, ``card_version``, ``name``,
    ``kind``, ``feature_names`` (in order), ``categories``, ``classes`` (classifier), ``params``,
    ``num_trees``, ``libraries`` and ``model_sha256``; these cannot be overridden. The model text is
    written before the card, so an interruption leaves a card that does not match (a clear error
    at load time), never a card that vouches for the wrong text. No timestamps are added: the same
    model and card give byte-identical files.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"model name {name!r} must be letters, digits, '.', '_' or '-'")
    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"model folder {d} does not exist", hint=f"create {d} first")
    text = model.model_text()
    kind = "classifier" if isinstance(model, Classifier) else "regressor"
    full: dict[str, Any] = {"descriptor_version": DESCRIPTOR_VERSION, "target": None, "training": {},
                            "licence": None, "metrics": {}}
    full.update(_plain(dict(card or {})))
    full.update({
        "format": CARD_FORMAT, "card_version": CARD_VERSION, "name": name, "kind": kind,
        "feature_names": list(model.feature_names), "categories": model.categories,
        "params": _plain(model.params), "num_trees": model.num_trees,
        "libraries": library_versions(), "model_sha256": _sha256(text),
    })
    if isinstance(model, Classifier):
        full["classes"] = list(model.classes)
    txt_path, card_path = model_paths(d, name)
    atomic_write_text(txt_path, text)
    atomic_write_text(card_path, json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return full


def _feature_difference(have: Sequence[str], want: Sequence[str]) -> str | None:
    """One sentence on how two ordered feature lists differ, or None if identical."""
    have, want = list(have), list(want)
    if have == want:
        return None
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    parts = []

    def _few(xs: list[str]) -> str:
        return ", ".join(xs[:8]) + (f" (+{len(xs) - 8} more)" if len(xs) > 8 else "")

    if missing:
        parts.append(f"the model lacks {len(missing)} expected feature(s): {_few(missing)}")
    if extra:
        parts.append(f"the model has {len(extra)} feature(s) not expected: {_few(extra)}")
    if not parts:
        i = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
        parts.append(f"the features are in a different order: position {i} is {have[i]!r} in the model "
                     f"but {want[i]!r} expected")
    return "; ".join(parts)


def load_model(directory: str | Path, name: str, *, expected_features: Sequence[str] | None = None,
               expected_descriptor_version: int | None = None,
               expected_target: str | None = None) -> Regressor | Classifier:
    """Load a model saved by :func:`save_model` and check it is the model the caller expects.

    Checks, in order: both files exist; the card is JSON written by this module; the sha256 of the
    text matches the card (else the text was changed or the save was interrupted); LightGBM parses
    the text; its feature names equal the card's; then, when given, ``expected_features`` (same
    names in the same order), ``expected_descriptor_version`` and ``expected_target``. Any failure
    raises :class:`ModelError` saying what differs and how to fix it. Returns a
    :class:`Regressor` or :class:`Classifier` with ``card`` set.
    """
    txt_path, card_path = model_paths(directory, name)
    for p, what in ((txt_path, "model text"), (card_path, "model card")):
        if not p.is_file():
            raise ModelError(f"{p}: {what} of model {name!r} is missing", hint=MODEL_FIX)
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path}: model card is not valid JSON ({exc})", hint=MODEL_FIX) from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        fmt = card.get("format") if isinstance(card, dict) else None
        raise ModelError(f"{card_path}: not an expertmix model card (format {fmt!r})", hint=MODEL_FIX)
    if card.get("card_version") != CARD_VERSION:
        raise ModelError(f"{card_path}: card version {card.get('card_version')} but this expertmix reads "
                         f"version {CARD_VERSION}", hint=MODEL_FIX)
    for key in ("feature_names", "model_sha256", "kind"):
        if key not in card:
            raise ModelError(f"{card_path}: model card lacks {key!r}", hint=MODEL_FIX)
    try:
        text = txt_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{txt_path}: cannot read the model text ({exc})", hint=MODEL_FIX) from None
    sha = _sha256(text)
    if sha != card["model_sha256"]:
        raise ModelError(f"{txt_path}: model text is corrupt or was changed after its card was written "
                         f"(sha256 {sha[:12]}... but the card says {str(card['model_sha256'])[:12]}...)",
                         hint=MODEL_FIX)
    try:
        booster = lgb.Booster(model_str=text)
    except Exception as exc:  # LightGBMError and friends: a text that does not parse
        raise ModelError(f"{txt_path}: LightGBM cannot read the model text ({exc})", hint=MODEL_FIX) from None
    names = list(card["feature_names"])
    diff = _feature_difference(booster.feature_name(), names)
    if diff:
        raise ModelError(f"{txt_path}: model text and card disagree: {diff}", hint=MODEL_FIX)
    if expected_features is not None:
        diff = _feature_difference(names, expected_features)
        if diff:
            raise ModelError(f"{card_path}: model {name!r} does not match the features expertmix computes: {diff}",
                             hint=MODEL_FIX)
    if expected_descriptor_version is not None and card.get("descriptor_version") != expected_descriptor_version:
        raise ModelError(f"{card_path}: model {name!r} was trained on descriptor version "
                         f"{card.get('descriptor_version')}, but expertmix computes version "
                         f"{expected_descriptor_version}", hint=MODEL_FIX)
    if expected_target is not None and card.get("target") != expected_target:
        raise ModelError(f"{card_path}: model {name!r} predicts {card.get('target')!r}, not {expected_target!r}",
                         hint=MODEL_FIX)
    cats = {str(k): list(v) for k, v in (card.get("categories") or {}).items()}
    params = dict(card.get("params") or {})
    if card["kind"] == "classifier":
        classes = list(card.get("classes") or [])
        if len(classes) != booster.num_model_per_iteration():
            raise ModelError(f"{card_path}: card lists {len(classes)} classes but the model predicts "
                             f"{booster.num_model_per_iteration()}", hint=MODEL_FIX)
        return Classifier(booster=booster, feature_names=names, categories=cats, params=params, card=card,
                          classes=classes)
    if card["kind"] != "regressor":
        raise ModelError(f"{card_path}: unknown model kind {card['kind']!r}", hint=MODEL_FIX)
    return Regressor(booster=booster, feature_names=names, categories=cats, params=params, card=card)


def model_names(directory: str | Path) -> list[str]:
    """Names of the models (card files) in a folder, sorted."""
    d = Path(directory)
    return sorted(p.name[: -len(".card.json")] for p in d.glob("*.card.json")) if d.is_dir() else []


__all__ = ["Regressor", "Classifier", "CVReport", "FoldReport", "train_regressor", "train_classifier",
           "cross_validate_by_group", "cross_validate_classifier_by_group", "group_folds",
           "feature_importance", "save_model", "load_model", "model_names", "model_paths",
           "encode_rows", "library_versions", "DEFAULT_REGRESSOR_PARAMS", "DEFAULT_CLASSIFIER_PARAMS",
           "DEFAULT_ROUNDS", "NUM_THREADS", "CARD_FORMAT", "CARD_VERSION"]
