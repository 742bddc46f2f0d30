"""A stem's role from its audio, for stems whose file name says nothing (``track07.wav``).

Role precedence stays as in :mod:`expertmix.stems`: the user's ``--role`` override, then the
roles file, then the file name; only a stem whose role came from none of these
(``Stem.role_source == "default"``, role ``"other"``) is a candidate for :func:`guess_roles`, and
even then the guess is only *accepted* when the model is confident enough. The user always has
the last word: a guess never replaces a role that a person or a name gave.

The model is a LightGBM multiclass classifier (through :mod:`expertmix.gbm`, the only lightgbm
importer) over :func:`features`: a level-independent subset of the per-stem descriptors
(:mod:`expertmix.descriptor_specs`): spectral shape, band and Bark-band balance (relative to the
whole spectrum), onset rate, crest factor, dynamics, short-term loudness spread and stereo image.
Absolute levels (loudness, peak, RMS, noise floor) are left out on purpose: they tell how hot a
stem was recorded, not what it is. So are the MFCCs: with descriptor version 1 every coefficient,
not only the first, moves with the recording level for band-limited sounds (the mel bands that
hold no energy sit on a fixed floor; measured: a kick 20 dB quieter moves ``mfcc_02`` from 68 to
45), and the 24 Bark bands already describe the spectral envelope. Defect measures (hum, clicks,
DC, clipping) and the stem's duration are left out too.

It ships as ``models/roles/role_classifier.txt`` + ``role_classifier.card.json`` (see
``models/roles/README.md`` for its training data, licences and accuracy) and is trained by
``benchmarks/train_role_classifier.py``, which reproduces the shipped files bit for bit.

Public API
----------
* :data:`ROLE_CLASSES`: the roles the model can predict.
* :func:`features` (descriptor values) -> model features.
* :func:`load_role_model` / :func:`load_role_model_with_reason` -> :class:`RoleModel` or None.
* :meth:`RoleModel.predict` (descriptor values) -> ``[(role, probability), ...]``, most likely first.
* :func:`guess_roles` ({stem: descriptor values}) -> {stem: :class:`RoleGuess`}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .descriptor_specs import BANDS_HZ, DESCRIPTOR_VERSION, N_BARK
from .errors import ModelError
from .roles import ROLE_FAMILY, ROLES

#: Name of the shipped model (``<name>.txt`` and ``<name>.card.json``).
MODEL_NAME = "role_classifier"
#: Sub-folder of the models folder that holds it.
MODEL_SUBDIR = "roles"
#: What the model predicts (the card's ``target``).
TARGET = "role"

#: The roles the shipped model can predict (the card's ``classes``, in this order). One class per
#: role that has training material. ``backing_vocals`` is not among them: lead and backing voices
#: sound alike stem by stem (which one leads is a matter of the arrangement), so every voice is
#: predicted as ``lead_vocal`` (same bus family, ``vocals``). ``other`` is never predicted: it is
#: what a stem keeps when the model is not confident.
ROLE_CLASSES: tuple[str, ...] = (
    "lead_vocal",
    "kick", "snare", "hats", "toms", "overheads", "drums", "percussion",
    "bass", "guitar", "keys", "synth", "pad", "strings", "brass", "winds",
    "fx",
)

#: Default confidence (probability of the top class) below which a guess is not accepted.
DEFAULT_MIN_CONFIDENCE = 0.5

#: Descriptors used as they are (all independent of the recording level).
_DIRECT: tuple[str, ...] = (
    "crest_db",
    "dynamic_complexity_db",
    "spectral_centroid_hz",
    "spectral_rolloff_hz",
    "spectral_flatness",
    "low_energy_ratio",
    "sub_energy_ratio",
    "high_energy_ratio",
    *[f"band_{b}_db" for b in BANDS_HZ],
    *[f"bark_{i:02d}_db" for i in range(1, N_BARK + 1)],
    "onset_rate_hz",
    "stereo_width",
    "stereo_correlation",
)
#: Derived features: name -> doc.
_DERIVED: dict[str, str] = {
    "st_spread_lu": "loudness_st_p95_lufs - loudness_st_p10_lufs (0 when either is silence): "
                    "how much the short-term loudness moves, independent of the recording level",
}
#: Ordered model feature names (the card's ``feature_names``).
FEATURE_NAMES: tuple[str, ...] = (*_DIRECT, *_DERIVED)
#: Descriptors that :func:`features` reads.
REQUIRED_DESCRIPTORS: tuple[str, ...] = (*_DIRECT, "loudness_st_p10_lufs", "loudness_st_p95_lufs")

_SILENCE = -199.0  # descriptors read -200 where a level has no value


def features(values: Mapping[str, float]) -> dict[str, float]:
    """Model features (:data:`FEATURE_NAMES`, in order) from one stem's descriptor values.

    ``values``: ``StemDescriptors.values`` (a mapping descriptor name -> float, see
    :mod:`expertmix.descriptor_specs`). Raises :class:`ModelError` naming any missing descriptor.
    """
    missing = [n for n in REQUIRED_DESCRIPTORS if n not in values]
    if missing:
        raise ModelError(f"role features need the descriptor(s) {', '.join(missing)}",
                         hint="pass StemDescriptors.values from expertmix.descriptors.describe_audio")
    out = {n: float(values[n]) for n in _DIRECT}
    p10, p95 = float(values["loudness_st_p10_lufs"]), float(values["loudness_st_p95_lufs"])
    out["st_spread_lu"] = p95 - p10 if p10 > _SILENCE and p95 > _SILENCE else 0.0
    return out


def is_silent(values: Mapping[str, float]) -> bool:
    """True when the descriptors describe a silent stem (nothing for the model to hear)."""
    lufs = float(values.get("loudness_lufs", 0.0))
    active = float(values.get("active_fraction", 1.0))
    return lufs <= _SILENCE or active <= 0.0


@dataclass(frozen=True)
class RoleGuess:
    """The model's guess for one stem.

    role: the role to use: ``predicted`` when ``accepted``, else ``"other"``.
    confidence: probability of ``predicted`` (0..1; 0 when there was no prediction).
    alternatives: the next most likely roles, ``((role, probability), ...)``, most likely first.
    accepted: True when ``confidence >= min_confidence`` (and a model and sound were there).
    predicted: the model's most likely role (``"other"`` when there was no prediction).
    reason: one sentence for the report: what was guessed and why it was or was not used.
    """

    role: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...]
    accepted: bool
    predicted: str = "other"
    reason: str = ""

    @property
    def family(self) -> str:
        """Bus family of ``role`` (``drums``, ``vocals`` or ``music``)."""
        return ROLE_FAMILY[self.role]

    def to_dict(self) -> dict[str, object]:
        return {"role": self.role, "confidence": round(self.confidence, 3), "accepted": self.accepted,
                "predicted": self.predicted,
                "alternatives": [[r, round(p, 3)] for r, p in self.alternatives], "reason": self.reason}


@dataclass
class RoleModel:
    """The role classifier and its card. ``classes``: the roles it predicts, in output order."""

    classifier: object  # expertmix.gbm.Classifier
    card: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.classes)  # type: ignore[attr-defined]

    def predict_many(self, stem_values: list[Mapping[str, float]]) -> list[list[tuple[str, float]]]:
        """:meth:`predict` for several stems at once (one LightGBM call)."""
        if not stem_values:
            return []
        rows = [features(v) for v in stem_values]
        proba = self.classifier.predict_proba(rows)  # type: ignore[attr-defined]
        out = []
        for p in proba:
            pairs = [(c, float(p[i])) for i, c in enumerate(self.classes)]
            pairs.sort(key=lambda cp: (-cp[1], self.classes.index(cp[0])))
            out.append(pairs)
        return out

    def predict(self, values: Mapping[str, float]) -> list[tuple[str, float]]:
        """Every class with its probability, most likely first (ties in class order).

        ``values``: one stem's descriptor values (``StemDescriptors.values``).
        """
        return self.predict_many([values])[0]


def default_models_dir() -> Path:
    """The bundled role model folder: ``<data_dir("models")>/roles``."""
    from .resources import data_dir

    return data_dir("models") / MODEL_SUBDIR


def _model_folder(models_dir: str | Path) -> Path:
    """``models_dir`` itself when it holds the model, else ``models_dir/roles``."""
    d = Path(models_dir)
    if (d / f"{MODEL_NAME}.card.json").exists() or (d / f"{MODEL_NAME}.txt").exists():
        return d
    return d / MODEL_SUBDIR


def load_role_model_with_reason(models_dir: str | Path | None = None) -> tuple[RoleModel | None, str | None]:
    """Load the role model -> ``(model, None)``, or ``(None, reason)`` when there is none.

    ``models_dir``: a folder holding ``role_classifier.txt`` + ``.card.json``, or a models folder
    with a ``roles/`` sub-folder that does; None: the bundled model. A missing model is not an
    error (the stems simply keep the role ``"other"``): the reason says where it was looked for.
    A model that is there but broken (corrupt text, a card that does not match, features or
    descriptor version that differ from what this expertmix computes) raises
    :class:`~expertmix.errors.ModelError` when ``models_dir`` was given explicitly; the bundled
    model, if broken, gives ``(None, reason)`` so a mix can still run.
    """
    from . import gbm  # lightgbm is imported only when a model is loaded

    explicit = models_dir is not None
    folder = _model_folder(models_dir) if explicit else default_models_dir()
    txt, card = gbm.model_paths(folder, MODEL_NAME)
    if not txt.is_file() and not card.is_file():
        return None, f"no role model in {folder} (looked for {txt.name} and {card.name})"
    try:
        clf = gbm.load_model(folder, MODEL_NAME, expected_features=list(FEATURE_NAMES),
                             expected_descriptor_version=DESCRIPTOR_VERSION, expected_target=TARGET)
        if not isinstance(clf, gbm.Classifier):
            raise ModelError(f"{card}: model {MODEL_NAME!r} is a {clf.card.get('kind')}, not a classifier",
                             hint=gbm.MODEL_FIX)
        unknown = [c for c in clf.classes if c not in ROLES]
        if unknown:
            raise ModelError(f"{card}: model {MODEL_NAME!r} predicts unknown role(s) {', '.join(unknown)}",
                             hint=gbm.MODEL_FIX)
    except ModelError as exc:
        if explicit:
            raise
        return None, f"the bundled role model cannot be used: {exc.message}"
    return RoleModel(classifier=clf, card=dict(clf.card), path=folder), None


def load_role_model(models_dir: str | Path | None = None) -> RoleModel | None:
    """Load the role model, or None when there is none (see :func:`load_role_model_with_reason`,
    which also says why)."""
    return load_role_model_with_reason(models_dir)[0]


def _pct(p: float) -> str:
    return f"{100.0 * p:.0f} %"


def guess_roles(stem_values: Mapping[str, Mapping[str, float]], models_dir: str | Path | None = None,
                min_confidence: float = DEFAULT_MIN_CONFIDENCE, *, model: RoleModel | None = None,
                n_alternatives: int = 3) -> dict[str, RoleGuess]:
    """Guess the role of each stem from its descriptors.

    ``stem_values``: {stem name: descriptor values} for the stems whose role is still unknown
    (``Stem.role_source == "default"``); pass only those: a guess is never meant to replace a
    role from the user, a roles file or a file name. ``models_dir``: as in
    :func:`load_role_model_with_reason` (ignored when ``model`` is given). ``min_confidence``
    (0..1): a guess whose probability is below it is not accepted and the stem keeps ``"other"``.

    Returns {stem name: :class:`RoleGuess`} for every stem given, in the given order. Without a
    model (none found) every guess is ``"other"``, not accepted, with the reason. A silent stem is
    not guessed. Raises :class:`ModelError` for an explicit ``models_dir`` with a broken model.
    """
    if not 0.0 <= float(min_confidence) <= 1.0 or math.isnan(float(min_confidence)):
        raise ValueError(f"min_confidence must be within 0..1, got {min_confidence!r}")
    names = list(stem_values)
    if not names:
        return {}
    reason = None
    if model is None:
        model, reason = load_role_model_with_reason(models_dir)
    if model is None:
        return {n: RoleGuess("other", 0.0, (), False, "other", f"role not guessed: {reason}") for n in names}
    sounding = [n for n in names if not is_silent(stem_values[n])]
    predictions = dict(zip(sounding, model.predict_many([stem_values[n] for n in sounding])))
    out: dict[str, RoleGuess] = {}
    for n in names:
        if n not in predictions:
            out[n] = RoleGuess("other", 0.0, (), False, "other", "role not guessed: the stem is silent")
            continue
        ranked = predictions[n]
        top, p = ranked[0]
        alts = tuple(ranked[1:1 + max(0, int(n_alternatives))])
        alt_text = ", ".join(f"{r} {_pct(q)}" for r, q in alts)
        if p >= min_confidence:
            out[n] = RoleGuess(top, p, alts, True, top,
                               f"role guessed from the audio: {top} ({_pct(p)}; next: {alt_text})")
        else:
            out[n] = RoleGuess("other", p, alts, False, top,
                               f"role kept as other: the audio suggests {top} but only at {_pct(p)} "
                               f"(below {_pct(min_confidence)}; next: {alt_text}); set it with --role")
    return out


__all__ = ["ROLE_CLASSES", "FEATURE_NAMES", "REQUIRED_DESCRIPTORS", "MODEL_NAME", "MODEL_SUBDIR", "TARGET",
           "DEFAULT_MIN_CONFIDENCE", "RoleGuess", "RoleModel", "features", "is_silent", "default_models_dir",
           "load_role_model", "load_role_model_with_reason", "guess_roles"]
