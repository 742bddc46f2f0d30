"""Learned refinements: LightGBM models that nudge the numbers the rules propose, within their bounds.

The rules decide; the models refine. A rule that declares ``refine: {slot: [low, high]}`` lets a
model move the value it proposed by at most that much; :func:`expertmix.rules.evaluate` writes the
rule's value and the resulting absolute bounds into the plan's :class:`~expertmix.plan.Decision`.
This module

* turns past work into training data in the :class:`~expertmix.store.TrainingStore`:
  :func:`add_reference` (raw stems + the engineer's final mix, via
  :func:`expertmix.estimate.estimate_decisions`, with augmented copies) and :func:`add_feedback`
  (a suggested plan and the engineer's edit of it);
* trains one LightGBM regressor per plan slot (:func:`train`), cross-validated by song against
  "rules alone", and saves them as LightGBM text files with cards (:mod:`expertmix.gbm`) plus a
  ``manifest.json``;
* applies them (:func:`load_refiner`, :meth:`Refiner.refine`): every refinable value whose slot has
  a model becomes ``clip(rule_value + predicted delta, bounds)``.

Slots (per track; the keys of ``TrackPlan.why``): :data:`REFINED_SLOTS` - ``gain_db``, ``pan``,
``width``, ``sends.reverb``, ``sends.delay``, ``compressor.threshold_db``, ``compressor.ratio``,
``cleanup.highpass_hz``, ``deesser.threshold_db``. A model is trained for a slot only when the
store holds enough targets for it (:data:`MIN_ROWS`). EQ band gains are not refined: the
rulebook proposes EQ bands as a list with one decision and no per-band ``refine`` bounds.

Features (one row per track, :func:`feature_names`, in this order)
------------------------------------------------------------------
1. the stem's descriptors, :data:`~expertmix.descriptor_specs.DESCRIPTOR_NAMES` (version
   :data:`~expertmix.descriptor_specs.DESCRIPTOR_VERSION`), as the rules see them;
2. categorical: ``role``, ``family`` (drums / vocals / music) and ``genre`` (the profile name);
3. context (the other stems of the session): ``ctx.n_stems``, ``ctx.n_same_role``,
   ``ctx.n_drums``, ``ctx.n_vocals``, ``ctx.n_music``, ``ctx.has_lead_vocal``, ``ctx.tempo_bpm``,
   and the stem against the session's median over active stems: ``ctx.centroid_rel_oct``
   (log2 of the centroid ratio), ``ctx.low_energy_rel``, ``ctx.high_energy_rel``,
   ``ctx.onset_rate_rel`` (Hz), ``ctx.crest_rel_db``;
4. ``rule_value``: the value the rules proposed for this slot.

Targets: the residual the model learns
--------------------------------------
A model predicts ``engineer's value - rule's value`` (the *residual*); "rules alone" predicts 0.
Rule values are recomputed at training time by running the current rulebook on the stored
descriptors, roles, genre, tempo and masking of every song, so stored data outlives rule
changes. The engineer's value, per source:

* **gain_db from a reference mix.** After the gain-staging rule every stem sits at -23 LUFS, so
  the rules put stem *i* at ``-23 + gain_db_i`` LUFS in the mix (before processing): the rule's
  gain *is* its balance. The estimate gives the engineer's balance as the stem's loudness in the
  mix relative to the mix, ``rel_i`` (``level.relative_lu``). A common offset is arbitrary (mix
  bus and master gain), so both balances are compared with their song mean removed::

      target_i   = rel_i - mean_j(rel_j) + mean_j(rule_j)
      residual_i = (rel_i - mean_j rel_j) - (rule_i - mean_j rule_j)

  over the song's stems that have both. This is exactly the quantity the balance error of
  :func:`expertmix.evaluate.balance_error_lu` measures (per-stem difference, mean removed).
* **pan from a reference mix**: the rules choose the side (they alternate to keep left and right
  balanced); the model learns how far off-centre. The engineer's pan is mirrored onto the rule's
  side (``sign(rule) * |pan|``) when the rule pans off-centre; taken as is when the rule centres.
* **width** from a reference mix as estimated; compressor ratios are *not* taken from references
  (the estimate under-reads them: 8:1 reads 4-5:1), nor threshold or sends (not estimable).
* **feedback**: the edited plan's value of every refinable slot (``gain_db`` plus any change of
  ``trim_db`` from the suggestion); an edited value weighs 1, an accepted one
  :data:`FEEDBACK_ACCEPT_WEIGHT`.

Every residual is clipped to the rule's bounds (``[low - rule, high - rule]``): a value outside
them can never be produced, so the clipped value is the best reachable target.

Augmentation (``learn add --augment N``): the raw stems of a reference song are perturbed N times
with a random gain (uniform +-:data:`AUG_GAIN_DB` dB) and a spectral tilt (uniform
+-:data:`AUG_TILT_DB_PER_OCT` dB/octave around 1 kHz, capped at +-9 dB) and described again. The
engineer's balance stays the same - restoring it is the task - so the copy keeps the song's
``level.relative_lu``, pan and width targets, its ``gain_db`` target becomes ``gain - g`` and its
EQ targets ``eq - tilt``. Since the gain-staging rule already restores level, what the copies
teach is that the residual does not depend on the recording's level or tone: the model must use
what survives those changes (role, genre, timbre, context). Copies are stored as source
``augmented`` with their song as parent (same cross-validation fold) and weigh
:data:`AUGMENTED_WEIGHT` each.

Cross-validation: leave one song out (or ``n_folds`` folds of whole songs); augmented copies of a
test song are never trained on in its fold, and scores are computed on the test song's real rows
only (reference rows and edited feedback). For ``gain_db`` the song-level balance error (RMS over
stems, mean removed, LU) with and without the model is reported too. "How much each source
contributes": rows and weight per source, and the cross-validated error when each source is left
out of training (:class:`TrainReport`). A slot whose cross-validated error does not beat the rules
alone gets no model (``require_improvement``).

Shrinkage and unseen roles
--------------------------
With a handful of songs a model's prediction is a noisy estimate of the next song's residual, so
it is scaled toward 0 (the rules) by a factor calibrated on the out-of-fold predictions of the
cross-validation (least squares ``s = sum(y p) / sum(p^2)``, clipped to [0, 1]) and recorded on the
card as ``prediction_scale``; a model trained on a single song cannot be calibrated and gets
:data:`SINGLE_SONG_SCALE`. At inference ``delta = prediction_scale * prediction``, then the bounds
apply. A track whose role has no training row from a real song (card ``roles``: reference rows and
feedback, edited or accepted; augmented copies do not count) is left to the rules: the
model has no evidence about it (a note says so). Nor is a role whose real rows come from fewer
than :data:`MIN_ROLE_SONGS` training songs (card ``role_songs``, ``min_role_songs``; a model
trained on one song refines every role of it): what a model learned about a role from a single
song was never tested on another, and the cross-validation applies the same rule.

Model selection
---------------
Per slot, :func:`train` cross-validates (by song) each configuration of :data:`MODEL_CANDIDATES`
- stumps on the absolute or the Huber error, depth-2 trees on the absolute error, depth-3 trees on
the squared error (the configuration used without cross-validation) - and keeps, by the
one-standard-error rule, the simplest whose error (the balance error for gain balances of
reference songs, else the MAE) is within one standard error over the songs of the best one's:
with four or five songs the candidates' errors often differ by less than their noise. With a handful
of songs whose targets are estimates, one song's outlier (a bass 4 dB hotter than the rules in
one reference mix) can dominate a squared-error fit and move every other song's bass; robust,
shallow models resist that. The choice and every candidate's error go on the card
(``model_config``, ``metrics.model_selection``). The selection uses only the training songs, so an
outer evaluation that holds a song out (``benchmarks/learning_eval.py``) stays honest.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings as _warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .descriptor_specs import BANDS_HZ, DESCRIPTOR_NAMES, DESCRIPTOR_VERSION
from .errors import ExpertmixError, InputError, ModelError
from .plan import Decision, MixPlan, TrackPlan
from .roles import ROLE_FAMILY, ROLES
from .store import (SongInfo, SongRecord, StemRecord, TargetRecord, TrainingStore, content_hash_files,
                    content_hash_json)

#: Bump when a feature is added, removed or changes meaning (models record it; a mismatch is refused).
FEATURE_SET_VERSION = 1
#: Identifies the manifest of a model folder.
MANIFEST_FORMAT = "expertmix-refiner"
MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"

#: Track slots a model may refine, in training order (balance first).
REFINED_SLOTS: tuple[str, ...] = ("gain_db", "pan", "sends.reverb", "compressor.threshold_db", "compressor.ratio",
                                  "width", "sends.delay", "cleanup.highpass_hz", "deesser.threshold_db")
CATEGORICAL_FEATURES: tuple[str, ...] = ("role", "family", "genre")
CONTEXT_FEATURES: tuple[str, ...] = (
    "ctx.n_stems", "ctx.n_same_role", "ctx.n_drums", "ctx.n_vocals", "ctx.n_music", "ctx.has_lead_vocal",
    "ctx.tempo_bpm", "ctx.centroid_rel_oct", "ctx.low_energy_rel", "ctx.high_energy_rel", "ctx.onset_rate_rel",
    "ctx.crest_rel_db")
FAMILIES: tuple[str, ...] = ("drums", "vocals", "music")

#: Weight of one augmented copy's row (an original row weighs 1).
AUGMENTED_WEIGHT = 0.25
#: Weight of a feedback value the engineer left as suggested.
FEEDBACK_ACCEPT_WEIGHT = 0.3
#: A feedback value counts as edited when it moved by more than this (slot units).
EDIT_TOLERANCE = 1e-3
#: Augmentation ranges.
AUG_GAIN_DB = 6.0
AUG_TILT_DB_PER_OCT = 1.5
AUG_TILT_CAP_DB = 9.0
#: Default number of augmented copies per reference song.
DEFAULT_AUGMENT = 8
#: A slot gets a model only with at least this many rows of weight 1 (reference or edited feedback).
MIN_ROWS = 4
#: A model refines a role only if real rows of it come from at least this many training songs (or
#: from every training song, when there are fewer): a role-specific correction learned from one
#: song has never been tested on another by the cross-validation by song.
MIN_ROLE_SONGS = 2
#: Boosting rounds and parameter overrides of the refinement models (see expertmix.gbm for the rest).
NUM_BOOST_ROUND = 150
MODEL_PARAMS: dict[str, Any] = {"learning_rate": 0.05, "num_leaves": 7, "max_depth": 3, "min_data_in_leaf": 3,
                                "lambda_l2": 1.0}
#: The model configurations :func:`train` chooses from, per slot, by the cross-validation by song
#: (see "Model selection" in the module documentation), simplest first. Shallow trees and robust
#: losses (L1, Huber) for a handful of songs whose targets carry estimation noise and outliers.
MODEL_CANDIDATES: dict[str, dict[str, Any]] = {  # simplest first
    "stumps-l1": {**MODEL_PARAMS, "num_leaves": 2, "max_depth": 1, "objective": "regression_l1"},
    "stumps-huber": {**MODEL_PARAMS, "num_leaves": 2, "max_depth": 1, "objective": "huber", "alpha": 1.0},
    "depth2-l1": {**MODEL_PARAMS, "num_leaves": 3, "max_depth": 2, "objective": "regression_l1"},
    "depth3-l2": dict(MODEL_PARAMS),
}
#: The configuration used without cross-validation (a single song).
DEFAULT_MODEL_CONFIG = "depth3-l2"
#: Prediction scale of a model trained on a single song (no cross-validation to calibrate it): the
#: rules' proposal counts as much as that one song (see "Shrinkage" in the module documentation).
SINGLE_SONG_SCALE = 0.5
#: Rounding of refined values (slot units).
_ROUND = {"pan": 3, "width": 3, "compressor.ratio": 2}

#: Slots a reference mix's estimate provides (estimate slot -> plan slot).
_REFERENCE_SLOTS = {"pan": "pan", "width": "width"}

DATA_FIX = "add songs with `expertmix learn add STEMS MIX` or edits with `expertmix learn feedback ORIGINAL EDITED`"


class LearningWarning(UserWarning):
    """Learning was switched off for this run (models absent or unusable); the rules alone decide."""


# ============================================================================ features ====

def _categories(genres_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    from .genres import available_genres

    genres = sorted(g for g in available_genres(genres_dir) if g != "base")
    return {"role": list(ROLES), "family": list(FAMILIES), "genre": genres}


def feature_names() -> list[str]:
    """The ordered feature names of every refinement model (see the module documentation)."""
    return [*DESCRIPTOR_NAMES, *CATEGORICAL_FEATURES, *CONTEXT_FEATURES, "rule_value"]


def _median(values: list[float], default: float) -> float:
    return float(np.median(values)) if values else default


def session_features(ctx: Any) -> dict[str, dict[str, Any]]:
    """Features of every track of a :class:`~expertmix.rules.SessionContext` (all but ``rule_value``).

    Returns ``{track name: {feature: value}}``; categorical features are strings.
    """
    tracks = list(ctx.tracks)
    active = [t for t in tracks if t.values.get("active_fraction", 0.0) > 0.0] or tracks
    med = {k: _median([float(t.values.get(k, 0.0)) for t in active], 0.0)
           for k in ("low_energy_ratio", "high_energy_ratio", "onset_rate_hz", "crest_db")}
    cents = [float(t.values.get("spectral_centroid_hz", 0.0)) for t in active]
    med_cent = _median([c for c in cents if c > 0], 1000.0)
    fam_count = {f: sum(1 for t in tracks if ROLE_FAMILY.get(t.role, "music") == f) for f in FAMILIES}
    has_lead = 1.0 if any(t.role == "lead_vocal" for t in tracks) else 0.0
    genre = getattr(ctx.genre, "name", str(ctx.genre))
    out: dict[str, dict[str, Any]] = {}
    for t in tracks:
        v = t.values
        row: dict[str, Any] = {n: float(v.get(n, 0.0)) for n in DESCRIPTOR_NAMES}
        cent = float(v.get("spectral_centroid_hz", 0.0))
        row.update({
            "role": t.role, "family": ROLE_FAMILY.get(t.role, "music"), "genre": genre,
            "ctx.n_stems": float(len(tracks)),
            "ctx.n_same_role": float(sum(1 for u in tracks if u.role == t.role)),
            "ctx.n_drums": float(fam_count["drums"]), "ctx.n_vocals": float(fam_count["vocals"]),
            "ctx.n_music": float(fam_count["music"]), "ctx.has_lead_vocal": has_lead,
            "ctx.tempo_bpm": float(ctx.tempo_bpm or 120.0),
            "ctx.centroid_rel_oct": math.log2(cent / med_cent) if cent > 0 and med_cent > 0 else 0.0,
            "ctx.low_energy_rel": float(v.get("low_energy_ratio", 0.0)) - med["low_energy_ratio"],
            "ctx.high_energy_rel": float(v.get("high_energy_ratio", 0.0)) - med["high_energy_ratio"],
            "ctx.onset_rate_rel": float(v.get("onset_rate_hz", 0.0)) - med["onset_rate_hz"],
            "ctx.crest_rel_db": float(v.get("crest_db", 0.0)) - med["crest_db"],
        })
        out[t.name] = row
    return out


# ======================================================================= plan helpers ====

def get_slot(track: TrackPlan, slot: str) -> float | None:
    """The value of a track slot (``gain_db``, ``compressor.ratio``, ``sends.reverb`` ...); None if absent."""
    if slot.startswith("sends."):
        bus = slot.split(".", 1)[1]
        for s in track.sends:
            if s.bus == bus:
                return float(s.level_db)
        return None
    obj: Any = track
    for part in slot.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return None if isinstance(obj, bool) or not isinstance(obj, (int, float)) else float(obj)


def set_slot(track: TrackPlan, slot: str, value: float) -> None:
    """Set a track slot (validated by the plan schema)."""
    if slot.startswith("sends."):
        bus = slot.split(".", 1)[1]
        for s in track.sends:
            if s.bus == bus:
                s.level_db = value
                return
        raise KeyError(slot)
    parts = slot.split(".")
    obj: Any = track
    for p in parts[:-1]:
        obj = getattr(obj, p)
    setattr(obj, parts[-1], value)


def _refinable(d: Decision | None) -> bool:
    return (d is not None and d.bounds is not None and d.rule_value is not None
            and isinstance(d.rule_value, (int, float)) and not isinstance(d.rule_value, bool))


# =========================================================================== inference ====

@dataclass
class Refiner:
    """Loaded refinement models: ``models`` slot -> :class:`~expertmix.gbm.Regressor`."""

    directory: Path
    models: dict[str, Any]
    names: dict[str, str]
    manifest: dict[str, Any] = field(default_factory=dict)
    strict: bool = False

    @property
    def slots(self) -> list[str]:
        return list(self.models)

    def predict(self, slot: str, rows: list[dict[str, Any]]) -> np.ndarray:
        """Raw predicted residuals for feature rows (no clipping)."""
        return self.models[slot].predict(rows)

    def refine(self, plan: MixPlan, ctx: Any) -> tuple[MixPlan, list[str]]:
        """Refine every refinable value of ``plan`` whose slot has a model; return (new plan, notes).

        For each track and slot with a model, where the plan's Decision has ``rule_value`` and
        ``bounds``: ``value = clip(rule_value + predicted residual, bounds)`` (rounded), written to
        the track and to ``Decision.value``; ``Decision.model_delta = value - rule_value`` (the prediction is
        scaled by the card's ``prediction_scale``; tracks of a role the model never saw are skipped);
        ``Decision.source`` gains ``+model:<name>``. ``plan`` itself is not changed. Tracks not in
        ``ctx`` are left alone. A model that fails to predict raises :class:`ModelError` when the
        refiner is strict, else the rules' values stay and a note says why. Note: the mix-bus
        trim was predicted from the unrefined gains; mastering normalises the loudness anyway.
        """
        new = plan.model_copy(deep=True)
        notes: list[str] = []
        try:
            feats = session_features(ctx)
        except Exception as exc:  # noqa: BLE001 - features from a malformed context
            if self.strict:
                raise ModelError(f"cannot compute the learning features of this session ({exc})") from None
            return plan, [f"learning skipped: cannot compute its features ({exc}); the rules alone decide"]
        moved = 0
        unseen: set[str] = set()
        few: set[str] = set()
        biggest: tuple[float, str] = (0.0, "")
        for slot, model in self.models.items():
            todo: list[tuple[TrackPlan, Decision, dict[str, Any]]] = []
            card = getattr(model, "card", {}) or {}
            scale = float(card.get("prediction_scale", 1.0))
            role_songs = card.get("role_songs")
            if role_songs is None and card.get("roles") is not None:  # a card written before role_songs
                role_songs = {role: 1 for role in card["roles"]}
            needed = int(card.get("min_role_songs", 1))
            for t in new.tracks:
                d = t.why.get(slot)
                if not _refinable(d) or t.name not in feats:
                    continue
                if role_songs is not None and role_songs.get(t.role, 0) < needed:
                    (few if t.role in role_songs else unseen).add(t.role)
                    continue
                todo.append((t, d, {**feats[t.name], "rule_value": float(d.rule_value)}))
            if not todo:
                continue
            try:
                pred = model.predict([r for _, _, r in todo])
            except ExpertmixError as exc:
                if self.strict:
                    raise
                notes.append(f"learning: model {self.names[slot]} failed ({exc}); {slot} keeps the rules' values")
                continue
            except Exception as exc:  # noqa: BLE001 - LightGBM errors
                if self.strict:
                    raise ModelError(f"model {self.names[slot]} failed to predict ({exc})") from None
                notes.append(f"learning: model {self.names[slot]} failed ({exc}); {slot} keeps the rules' values")
                continue
            for (t, d, _), delta in zip(todo, pred):
                delta = scale * float(delta)
                if not math.isfinite(delta):
                    continue
                lo, hi = d.bounds
                value = round(min(hi, max(lo, d.rule_value + delta)), _ROUND.get(slot, 2))
                value = min(hi, max(lo, value))
                set_slot(t, slot, value)
                applied = round(value - float(d.rule_value), 4) + 0.0
                clipped = " (clipped to the rule's bounds)" if abs(applied - delta) > 1e-3 else ""
                d.value = value
                d.model_delta = applied
                name = self.names[slot]
                if f"model:{name}" not in d.source:
                    d.source = f"{d.source}+model:{name}"
                d.reason = (f"{d.reason}; learned refinement {applied:+.2f} "
                            f"(model {name}, bounds {lo:g}..{hi:g}){clipped}").lstrip("; ")
                if abs(applied) > 1e-9:
                    moved += 1
                    if abs(applied) > abs(biggest[0]):
                        biggest = (applied, f"{t.name} {slot}")
        if unseen:
            notes.append(f"learning: no training examples of the role(s) {', '.join(sorted(unseen))}: "
                         "the rules alone decide their values")
        if few:
            notes.append(f"learning: the role(s) {', '.join(sorted(few))} occur in fewer than {MIN_ROLE_SONGS} "
                         "training songs: the rules alone decide their values")
        refined = MixPlan.model_validate(new.model_dump())
        big = f"; largest move {biggest[1]} {biggest[0]:+.2f}" if biggest[1] else ""
        notes.insert(0, f"learning: {moved} value(s) refined by {len(self.models)} model(s) from "
                        f"{self.directory}{big}")
        return refined, notes


def bundled_models_dir() -> Path:
    """The bundled ``models/`` folder."""
    from .resources import data_dir

    return data_dir("models")


def read_manifest(models_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a model folder; :class:`ModelError` if missing or malformed."""
    d = Path(models_dir)
    path = d / MANIFEST_FILE
    if not d.is_dir():
        raise ModelError(f"model folder {d} does not exist",
                         hint="pass a folder written by `expertmix learn train -o DIR`")
    if not path.is_file():
        raise ModelError(f"{path}: no model manifest in this folder",
                         hint="pass a folder written by `expertmix learn train -o DIR`")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: model manifest is not valid JSON ({exc})",
                         hint="retrain with `expertmix learn train`") from None
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path}: not an expertmix refiner manifest", hint="retrain with `expertmix learn train`")
    if man.get("version") != MANIFEST_VERSION:
        raise ModelError(f"{path}: manifest version {man.get('version')}, this expertmix reads {MANIFEST_VERSION}",
                         hint="retrain with `expertmix learn train`")
    if not isinstance(man.get("models"), dict):
        raise ModelError(f"{path}: manifest lists no models", hint="retrain with `expertmix learn train`")
    return man


def _load(models_dir: Path, strict: bool) -> Refiner:
    from . import gbm

    man = read_manifest(models_dir)
    if man.get("feature_set_version") != FEATURE_SET_VERSION:
        raise ModelError(f"{models_dir / MANIFEST_FILE}: models use feature set version "
                         f"{man.get('feature_set_version')}, this expertmix computes version {FEATURE_SET_VERSION}",
                         hint=gbm.MODEL_FIX)
    if man.get("descriptor_version") != DESCRIPTOR_VERSION:
        raise ModelError(f"{models_dir / MANIFEST_FILE}: models were trained on descriptor version "
                         f"{man.get('descriptor_version')}, this expertmix computes version {DESCRIPTOR_VERSION}",
                         hint=gbm.MODEL_FIX)
    models, names = {}, {}
    want = feature_names()
    for slot, name in man["models"].items():
        if slot not in REFINED_SLOTS:
            raise ModelError(f"{models_dir / MANIFEST_FILE}: model {name!r} refines {slot!r}, which expertmix "
                             f"does not refine (refinable: {', '.join(REFINED_SLOTS)})", hint=gbm.MODEL_FIX)
        m = gbm.load_model(models_dir, name, expected_features=want, expected_descriptor_version=DESCRIPTOR_VERSION,
                           expected_target=slot)
        if not isinstance(m, gbm.Regressor):
            raise ModelError(f"{models_dir}: model {name!r} is a {m.card.get('kind')}, not a regressor",
                             hint=gbm.MODEL_FIX)
        cats = _categories()
        for k in ("role", "family"):
            if m.categories.get(k) != cats[k]:
                raise ModelError(f"{models_dir}: model {name!r} encodes {k} as {m.categories.get(k)}, "
                                 f"this expertmix as {cats[k]}", hint=gbm.MODEL_FIX)
        models[slot], names[slot] = m, name
    return Refiner(directory=models_dir, models=models, names=names, manifest=man, strict=strict)


def default_models_dir() -> Path:
    """Where ``expertmix learn train`` writes a user's models: ``$EXPERTMIX_MODELS``, else
    ``$XDG_DATA_HOME/expertmix/models`` (else ``~/.local/share/expertmix/models``)."""
    if os.environ.get("EXPERTMIX_MODELS"):
        return Path(os.environ["EXPERTMIX_MODELS"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "expertmix" / "models"


def load_refiner(models_dir: str | os.PathLike | None = None, *, strict: bool | None = None,
                 notes: list[str] | None = None) -> Refiner | None:
    """Load the refinement models of a folder (default: the user's models from
    ``expertmix learn train`` in :func:`default_models_dir` if there are any, else the bundled
    ``models/``).

    ``strict`` (default: True when ``models_dir`` is given, False for the bundled models): a
    missing, corrupt or mismatched model raises :class:`~expertmix.errors.ModelError` naming what
    differs. Not strict: the problem is reported as a :class:`LearningWarning` (and appended to
    ``notes`` if given) and None is returned: the rules alone decide. A folder without models
    (bundled models not installed) also returns None with a warning.
    """
    explicit = models_dir is not None
    strict = explicit if strict is None else bool(strict)
    d = Path(models_dir).expanduser() if explicit else bundled_models_dir()
    if not explicit and (default_models_dir() / MANIFEST_FILE).is_file():
        # the user's own models (trained with `expertmix learn train`) come before the bundled ones
        try:
            refiner = _load(default_models_dir(), False)
            if notes is not None:
                notes.append(f"learned refinements from your models in {default_models_dir()}")
            return refiner
        except ModelError as exc:
            msg = f"your models in {default_models_dir()} do not load ({exc.message}); using the bundled ones"
            _warnings.warn(msg, LearningWarning, stacklevel=2)
            if notes is not None:
                notes.append(msg)
    try:
        if not explicit and not (d / MANIFEST_FILE).is_file():
            raise ModelError(f"no bundled models in {d}")
        return _load(d, strict)
    except ModelError as exc:
        if strict:
            raise
        msg = f"learning off: {exc.message}; the rules alone decide (retrain with `expertmix learn train`)"
        _warnings.warn(msg, LearningWarning, stacklevel=2)
        if notes is not None:
            notes.append(msg)
        return None


# ====================================================================== training data ====

def _context_meta(ctx: Any) -> dict[str, Any]:
    """What is needed besides the stems' descriptors to rebuild a SessionContext later."""
    return {"tempo_bpm": float(ctx.tempo_bpm or 120.0), "tempo_confidence": float(ctx.tempo_confidence or 0.0),
            "sample_rate_hz": int(ctx.sample_rate_hz),
            "masking": [[m.masker, m.maskee, m.band, round(float(m.masking_db), 3)] for m in ctx.masking],
            "files": {t.name: t.file for t in ctx.tracks}, "order": [t.name for t in ctx.tracks]}


def context_from_store(stems: Sequence[StemRecord], genre: str | None, meta: Mapping[str, Any],
                       genres_dir: str | os.PathLike | None = None, _cache: dict | None = None) -> Any:
    """Rebuild the rules' SessionContext of a stored song."""
    from .genres import load_genre
    from .rules import NEUTRAL_DESCRIPTORS, MaskingInfo, SessionContext, TrackContext

    cache = _cache if _cache is not None else {}
    gname = genre or "pop"
    if gname not in cache:
        try:
            cache[gname] = load_genre(gname, genres_dir)
        except ExpertmixError:
            cache[gname] = load_genre("pop", genres_dir)
    c = dict(meta.get("context") or {})
    files = c.get("files") or {}
    order = {n: i for i, n in enumerate(c.get("order") or [])}
    tracks = []
    # the rules' placement (pan sides) depends on the track order: restore the session's
    for s in sorted(stems, key=lambda s: (order.get(s.name, len(order)), s.name)):
        values = dict(NEUTRAL_DESCRIPTORS)
        values.update({k: float(v) for k, v in s.descriptors.items()})
        tracks.append(TrackContext(name=s.name, file=files.get(s.name, f"{s.name}.wav"), role=s.role,
                                   channels=int(values.get("channels", 1.0)) or 1, values=values))
    names = {s.name for s in stems}
    masking = [MaskingInfo(a, b, band, float(db)) for a, b, band, db in c.get("masking") or []
               if a in names and b in names and band in BANDS_HZ]
    return SessionContext(tracks=tracks, genre=cache[gname], tempo_bpm=float(c.get("tempo_bpm") or 120.0),
                          tempo_confidence=float(c.get("tempo_confidence") or 0.0), masking=masking,
                          stems_dir="store", sample_rate_hz=int(c.get("sample_rate_hz") or 44100))


@dataclass
class Row:
    """One training example: a track's features, the residual, its song group and weight."""

    slot: str
    song_id: int
    group: int
    source: str
    song: str
    stem: str
    features: dict[str, Any]
    residual: float
    rule_value: float
    low: float
    high: float
    weight: float


def _mirror_pan(eng: float, rule: float) -> float:
    return math.copysign(abs(eng), rule) if abs(rule) > 1e-6 else eng


def song_rows(info: SongInfo, stems: Sequence[StemRecord], targets: Sequence[TargetRecord], rulebook: Any,
              *, genres_dir: str | os.PathLike | None = None, slots: Iterable[str] = REFINED_SLOTS,
              genre_cache: dict | None = None) -> list[Row]:
    """Training rows of one stored song (see the module documentation for the targets)."""
    from .rules import evaluate

    ctx = context_from_store(stems, info.genre, info.meta, genres_dir, genre_cache)
    plan = evaluate(rulebook, ctx).plan
    feats = session_features(ctx)
    tmap: dict[tuple[str, str], TargetRecord] = {(t.stem, t.slot): t for t in targets}
    weight_src = AUGMENTED_WEIGHT if info.source == "augmented" else 1.0
    rows: list[Row] = []
    slots = list(slots)
    by_track = {t.name: t for t in plan.tracks}

    def add(slot: str, stem: str, d: Decision, value: float, weight: float) -> None:
        lo, hi = d.bounds
        rv = float(d.rule_value)
        res = min(hi - rv, max(lo - rv, value - rv))
        rows.append(Row(slot=slot, song_id=info.id, group=info.parent_id or info.id, source=info.source,
                        song=info.name, stem=stem, features={**feats[stem], "rule_value": rv}, residual=float(res),
                        rule_value=rv, low=float(lo), high=float(hi), weight=float(weight)))

    # gain_db from a reference balance: mean-aligned relative loudness
    if "gain_db" in slots and info.source in ("reference", "augmented"):
        pairs = [(s, tmap[(s, "level.relative_lu")].value, by_track[s].why["gain_db"])
                 for s in by_track if (s, "level.relative_lu") in tmap and _refinable(by_track[s].why.get("gain_db"))]
        if len(pairs) >= 2:
            m_rel = float(np.mean([p[1] for p in pairs]))
            m_rule = float(np.mean([float(p[2].rule_value) for p in pairs]))
            for s, rel, d in pairs:
                add("gain_db", s, d, rel - m_rel + m_rule, weight_src * tmap[(s, "level.relative_lu")].weight)
    for stem, tp in by_track.items():
        for slot in slots:
            d = tp.why.get(slot)
            if not _refinable(d):
                continue
            if info.source == "feedback":
                t = tmap.get((stem, slot))
                if t is not None:
                    add(slot, stem, d, t.value, t.weight)
                continue
            est_slot = {v: k for k, v in _REFERENCE_SLOTS.items()}.get(slot)
            if est_slot is None or (stem, est_slot) not in tmap:
                continue
            t = tmap[(stem, est_slot)]
            value = _mirror_pan(t.value, float(d.rule_value)) if slot == "pan" else t.value
            add(slot, stem, d, value, weight_src * t.weight)
    return rows


@dataclass
class TrainingData:
    """Rows per slot from a store, plus what they came from."""

    rows: dict[str, list[Row]]
    songs: list[SongInfo]
    summary: dict[str, Any]


def collect(store: TrainingStore, *, rules_dir: str | os.PathLike | None = None,
            genres_dir: str | os.PathLike | None = None, slots: Iterable[str] | None = None,
            sources: Iterable[str] | None = None, exclude_groups: Iterable[int] = ()) -> TrainingData:
    """Every training row of a store, recomputing rule values with the current rulebook.

    ``sources``: only songs of these kinds; ``exclude_groups``: leave out these songs (ids) and
    their augmented copies (for held-out evaluation).
    """
    from .rules import load_rulebook

    slots = list(slots) if slots is not None else list(REFINED_SLOTS)
    unknown = [s for s in slots if s not in REFINED_SLOTS]
    if unknown:
        raise InputError(f"unknown slot(s) {', '.join(unknown)}; refinable: {', '.join(REFINED_SLOTS)}")
    rulebook = load_rulebook(rules_dir)
    songs = store.list_songs()
    if sources is not None:
        keep = set(sources)
        songs = [s for s in songs if s.source in keep]
    drop = {int(g) for g in exclude_groups}
    songs = [s for s in songs if (s.parent_id or s.id) not in drop]
    rows: dict[str, list[Row]] = {s: [] for s in slots}
    skipped_version = 0
    cache: dict = {}
    for info in songs:
        stems = store.song_stems(info.id)
        if any(s.descriptor_version != DESCRIPTOR_VERSION for s in stems):
            skipped_version += 1
            continue
        for r in song_rows(info, stems, store.song_targets(info.id), rulebook, genres_dir=genres_dir, slots=slots,
                           genre_cache=cache):
            rows[r.slot].append(r)
    summary = store.summary()
    summary["skipped_descriptor_version"] = skipped_version
    return TrainingData(rows=rows, songs=songs, summary=summary)


# ============================================================================ training ====

def _xyw(rows: Sequence[Row]) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    return ([r.features for r in rows], np.array([r.residual for r in rows], dtype=np.float64),
            np.array([r.weight for r in rows], dtype=np.float64))


def _fit(rows: Sequence[Row], cats: Mapping[str, list[str]], seed: int, params: Mapping[str, Any] | None = None):
    from . import gbm

    x, y, w = _xyw(rows)
    return gbm.train_regressor(x, y, feature_names(), categories=cats, weight=w,
                               params=MODEL_PARAMS if params is None else params,
                               num_boost_round=NUM_BOOST_ROUND, seed=seed)


def _role_songs(rows: Sequence[Row]) -> tuple[dict[str, int], int]:
    """For real (non-augmented) rows: the number of distinct songs per role, and the number of
    songs a role needs to be refined (:data:`MIN_ROLE_SONGS`, or all the songs when fewer)."""
    songs: dict[str, set[int]] = {}
    for r in rows:
        if r.source != "augmented":
            songs.setdefault(str(r.features["role"]), set()).add(r.group)
    n_songs = len({g for gs in songs.values() for g in gs})
    return {role: len(gs) for role, gs in sorted(songs.items())}, min(MIN_ROLE_SONGS, max(1, n_songs))


def _is_test(r: Row) -> bool:
    return r.source != "augmented" and r.weight >= 1.0


def _balance_rms(res: np.ndarray) -> float:
    return float(np.sqrt(np.mean((res - res.mean()) ** 2))) if len(res) else 0.0


def cross_validate(rows: Sequence[Row], cats: Mapping[str, list[str]], *, n_folds: int | None = None,
                   seed: int = 0, exclude_sources: Iterable[str] = (),
                   params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Cross-validation by song (groups); None with fewer than 2 songs that have test rows.

    ``params``: the LightGBM parameters to fit with (default :data:`MODEL_PARAMS`).

    Training rows of other songs (minus ``exclude_sources``); test rows: the held-out songs' real
    rows; as at inference, a test row whose role has no real training row is predicted 0 (rules
    alone). Returns pooled metrics ``mae`` (model, predictions clipped to the bounds),
    ``baseline_mae`` (rules alone), ``improvement``, per-song figures and, for rows that are
    balances (gain_db of reference songs), the balance error with and without the model.
    """
    from . import gbm

    test_groups = sorted({r.group for r in rows if _is_test(r)})
    if len(test_groups) < 2:
        return None
    folds = gbm.group_folds(np.array(test_groups), n_folds)
    excl = set(exclude_sources)
    pred_all: dict[int, float] = {}
    per_song: list[dict[str, Any]] = []
    for test in folds:
        tset = set(int(g) for g in test)
        train = [r for r in rows if r.group not in tset and r.source not in excl]
        test_rows = [(i, r) for i, r in enumerate(rows) if r.group in tset and _is_test(r)]
        if not test_rows:
            continue
        role_songs, needed = _role_songs(train)
        if len(train) < 2:
            preds = np.zeros(len(test_rows))
        else:
            model = _fit(train, cats, seed, params)
            preds = model.predict([r.features for _, r in test_rows])
            # as at inference: a role without examples from enough training songs is left to the rules
            preds = np.where([role_songs.get(r.features["role"], 0) >= needed for _, r in test_rows], preds, 0.0)
        for (i, r), p in zip(test_rows, preds):
            pred_all[i] = min(r.high - r.rule_value, max(r.low - r.rule_value, float(p)))
    idx = sorted(pred_all)
    y = np.array([rows[i].residual for i in idx])
    p = np.array([pred_all[i] for i in idx])
    mae, base = float(np.mean(np.abs(p - y))), float(np.mean(np.abs(y)))
    denom = float(np.sum(p * p))
    scale = min(1.0, max(0.0, float(np.sum(y * p)) / denom)) if denom > 0 else 0.0
    out: dict[str, Any] = {"n_test_rows": len(idx), "n_songs": len(test_groups), "mae": mae, "baseline_mae": base,
                           "scale": scale,
                           "rmse": float(np.sqrt(np.mean((p - y) ** 2))), "baseline_rmse": float(np.sqrt(np.mean(y ** 2))),
                           "improvement": float(1.0 - mae / base) if base > 0 else 0.0}
    by_song: dict[int, list[int]] = {}
    for i in idx:
        by_song.setdefault(rows[i].group, []).append(i)
    bal_rules, bal_model = [], []
    for g, ii in sorted(by_song.items()):
        yy = np.array([rows[i].residual for i in ii])
        pp = np.array([pred_all[i] for i in ii])
        entry = {"song": rows[ii[0]].song, "group": g, "rows": len(ii), "baseline_mae": float(np.mean(np.abs(yy))),
                 "mae": float(np.mean(np.abs(pp - yy)))}
        if rows[ii[0]].slot == "gain_db" and rows[ii[0]].source == "reference" and len(ii) >= 2:
            entry["balance_error_rules_lu"] = _balance_rms(yy)
            entry["balance_error_model_lu"] = _balance_rms(yy - pp)
            bal_rules.append(entry["balance_error_rules_lu"])
            bal_model.append(entry["balance_error_model_lu"])
        per_song.append(entry)
    out["per_song"] = per_song
    if bal_rules:
        out["balance_error_rules_lu"] = float(np.mean(bal_rules))
        out["balance_error_model_lu"] = float(np.mean(bal_model))
    return out


def _selection_error(cv: Mapping[str, Any]) -> float:
    """What model selection minimises: the balance error (LU) for balances, else the MAE."""
    return float(cv.get("balance_error_model_lu", cv["mae"]))


def _selection_se(cv: Mapping[str, Any]) -> float:
    """Standard error of :func:`_selection_error` over the cross-validation's songs."""
    key = "balance_error_model_lu" if "balance_error_model_lu" in cv else "mae"
    per = [float(e[key]) for e in cv.get("per_song", []) if key in e]
    return float(np.std(per, ddof=1) / math.sqrt(len(per))) if len(per) >= 2 else 0.0


def _select(candidates: Mapping[str, Mapping[str, Any]]) -> str:
    """The one-standard-error rule: the simplest candidate (:data:`MODEL_CANDIDATES` order)
    whose cross-validated error is within one standard error of the best one's."""
    best = min(candidates, key=lambda n: (_selection_error(candidates[n]), list(MODEL_CANDIDATES).index(n)))
    limit = _selection_error(candidates[best]) + _selection_se(candidates[best])
    return next(n for n in MODEL_CANDIDATES if n in candidates and _selection_error(candidates[n]) <= limit + 1e-12)


@dataclass
class SlotReport:
    """Training of one slot: data, cross-validation, contributions, the saved model's name."""

    slot: str
    model: str | None
    rows: dict[str, int]
    weight: dict[str, float]
    songs: int
    cv: dict[str, Any] | None
    contributions: dict[str, Any]
    top_features: list[tuple[str, float]] = field(default_factory=list)
    skipped: str | None = None
    #: the model configuration chosen by the cross-validation (a :data:`MODEL_CANDIDATES` key)
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainReport:
    """What :func:`train` did; ``slots`` in training order."""

    out_dir: Path
    slots: list[SlotReport]
    summary: dict[str, Any]
    train_seconds: float
    licence: str

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "slots": [s.to_dict() for s in self.slots], "summary": self.summary,
                "train_seconds": self.train_seconds, "licence": self.licence}


def stale_songs_message(summary: Mapping[str, Any]) -> str:
    """What to tell the user about songs a dataset ``summary`` left out because another analysis
    version described them ("" when there are none)."""
    stale = int(summary.get("skipped_descriptor_version", 0))
    if not stale:
        return ""
    return (f"{stale} song(s) in the store were described by another analysis version and were left out: "
            "remove them with `expertmix learn remove` and add them again with `expertmix learn add`")


def model_name(slot: str) -> str:
    """File name stem of a slot's model: ``refine.gain_db``, ``refine.sends.reverb`` ..."""
    return f"refine.{slot}"


def _licence_of(songs: Sequence[SongInfo]) -> str:
    lic = sorted({s.licence or "unknown" for s in songs if s.source != "augmented"})
    return "; ".join(lic) if lic else "unknown"


def _sources(rows: Sequence[Row]) -> tuple[dict[str, int], dict[str, float]]:
    n: dict[str, int] = {}
    w: dict[str, float] = {}
    for r in rows:
        n[r.source] = n.get(r.source, 0) + 1
        w[r.source] = round(w.get(r.source, 0.0) + r.weight, 4)
    return n, w


def train(store: TrainingStore | str | os.PathLike | None, out_dir: str | os.PathLike, *,
          slots: Iterable[str] | None = None, rules_dir: str | os.PathLike | None = None,
          genres_dir: str | os.PathLike | None = None, n_folds: int | None = None, seed: int = 0,
          licence: str | None = None, data_note: str | None = None, cv: bool = True,
          sources: Iterable[str] | None = None, exclude_groups: Iterable[int] = (),
          require_improvement: bool = True,
          progress: Callable[[str, int, int], None] | None = None) -> TrainReport:
    """Train, cross-validate and save one model per slot that has data; write ``manifest.json``.

    ``store``: a :class:`TrainingStore`, a path, or None (the default store). ``licence``: the
    training data's licence for the cards (default: the stored songs' licences). ``data_note``:
    free text for the cards (where the data came from). ``require_improvement``: a slot whose
    cross-validation by song does not beat the rules alone gets no model (reported as skipped);
    without cross-validation (one song) the model is kept. Deterministic: the same store and
    arguments give byte-identical files. Raises :class:`InputError` when no slot has enough data.
    """
    from . import gbm

    t0 = time.perf_counter()
    own = not isinstance(store, TrainingStore)
    st = TrainingStore(store) if own else store
    try:
        data = collect(st, rules_dir=rules_dir, genres_dir=genres_dir, slots=slots, sources=sources,
                       exclude_groups=exclude_groups)
    finally:
        if own:
            st.close()
    out = Path(out_dir).expanduser()
    cats = _categories(genres_dir)
    lic = licence or _licence_of(data.songs)
    reports: list[SlotReport] = []
    pending: list[tuple[str, Any, dict[str, Any]]] = []
    report = progress or (lambda stage, done, total: None)
    for k, (slot, rows) in enumerate(data.rows.items()):
        report(f"training {slot}", k, len(data.rows))
        n_src, w_src = _sources(rows)
        real = [r for r in rows if _is_test(r)]
        groups = sorted({r.group for r in rows})
        if len(real) < MIN_ROWS:
            reports.append(SlotReport(slot, None, n_src, w_src, len(groups), None, {},
                                      skipped=f"{len(real)} real target(s), at least {MIN_ROWS} needed"))
            continue
        config = DEFAULT_MODEL_CONFIG
        candidates: dict[str, Any] = {}
        cvr = None
        if cv:  # model selection: every candidate cross-validated by song (see _select)
            for name, params in MODEL_CANDIDATES.items():
                result = cross_validate(rows, cats, n_folds=n_folds, seed=seed, params=params)
                if result is not None:
                    candidates[name] = result
            if candidates:
                config = _select(candidates)
                cvr = candidates[config]
        params = MODEL_CANDIDATES[config]
        contrib: dict[str, Any] = {}
        if cvr is not None:
            for src in sorted(n_src):
                if src == "augmented" or any(r.source != src for r in real):
                    abl = cross_validate(rows, cats, n_folds=n_folds, seed=seed, exclude_sources=[src], params=params)
                    if abl is not None:
                        contrib[f"without_{src}"] = {"mae": abl["mae"], "baseline_mae": abl["baseline_mae"],
                                                     **({"balance_error_model_lu": abl["balance_error_model_lu"]}
                                                        if "balance_error_model_lu" in abl else {})}
        if cvr is not None and require_improvement and cvr["mae"] >= cvr["baseline_mae"]:
            reports.append(SlotReport(slot, None, n_src, w_src, len(groups), cvr, contrib,
                                      skipped=f"cross-validated error {cvr['mae']:.3f} is not below the rules "
                                              f"alone ({cvr['baseline_mae']:.3f}): no model, the rules decide",
                                      config=config))
            continue
        model = _fit(rows, cats, seed, params)
        top = gbm.feature_importance(model, top=10)
        scale = float(cvr["scale"]) if cvr is not None else SINGLE_SONG_SCALE
        role_songs, needed = _role_songs(rows)
        roles_seen: dict[str, int] = {}
        for r in rows:
            if r.source == "augmented":
                continue
            roles_seen[str(r.features["role"])] = roles_seen.get(str(r.features["role"]), 0) + 1
        card = {
            "target": slot,
            "descriptor_version": DESCRIPTOR_VERSION,
            "feature_set_version": FEATURE_SET_VERSION,
            "predicts": f"residual {slot}: engineer's value - rule's value (clipped to the rule's refine bounds)",
            "training": {"rows": n_src, "weight": w_src, "songs": len(groups),
                         "song_names": sorted({r.song for r in rows if r.source != "augmented"}),
                         "genres": sorted({str(r.features.get('genre')) for r in rows}),
                         "note": data_note or "", "num_boost_round": NUM_BOOST_ROUND,
                         "augmented_weight": AUGMENTED_WEIGHT, "feedback_accept_weight": FEEDBACK_ACCEPT_WEIGHT},
            "prediction_scale": round(scale, 4),
            "model_config": config,
            "model_params": {k: v for k, v in params.items()},
            "roles": dict(sorted(roles_seen.items())),
            "role_songs": role_songs,
            "min_role_songs": needed,
            "licence": lic,
            "metrics": {"cv_by_song": cvr, "contributions": contrib,
                        "model_selection": {n: {"selection_error": round(_selection_error(c), 4),
                                                "standard_error": round(_selection_se(c), 4), "mae": c["mae"],
                                                "baseline_mae": c["baseline_mae"]} for n, c in candidates.items()}}
                       if cvr is not None else
                       {"cv_by_song": None, "note": "fewer than 2 songs with real targets: no cross-validation"},
            "top_features": top,
        }
        name = model_name(slot)
        pending.append((name, model, card))
        reports.append(SlotReport(slot, name, n_src, w_src, len(groups), cvr, contrib, top, config=config))
    if not pending:
        stale = stale_songs_message(data.summary)
        raise InputError("not enough training data for any slot: " + "; ".join(
            f"{r.slot}: {r.skipped}" for r in reports if r.skipped) + (f" ({stale})" if stale else ""), hint=DATA_FIX)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_FILE
    if manifest_path.exists():
        manifest_path.unlink()  # a half-written folder must not look valid
    for name, model, card in pending:
        gbm.save_model(model, out, name, card)
    train_s = time.perf_counter() - t0
    from .io import atomic_write_text

    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "feature_set_version": FEATURE_SET_VERSION,
        "descriptor_version": DESCRIPTOR_VERSION, "feature_names": feature_names(),
        "models": {r.slot: r.model for r in reports if r.model},
        "skipped": {r.slot: r.skipped for r in reports if r.skipped},
        "licence": lic, "data_note": data_note or "",
        "training": {k: data.summary[k] for k in ("songs", "by_source", "targets_by_slot", "genres", "licences")},
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report("trained", len(data.rows), len(data.rows))
    return TrainReport(out_dir=out, slots=reports, summary=data.summary, train_seconds=train_s, licence=lic)


# =========================================================================== inspect ====

def inspect(models_dir: str | os.PathLike) -> dict[str, Any]:
    """Manifest, and per model its card: target, features, metrics, top features (loads every model)."""
    from . import gbm

    d = Path(models_dir).expanduser()
    ref = _load(d, strict=True)
    out = {"directory": str(d), "manifest": ref.manifest, "models": {}}
    for slot, m in ref.models.items():
        card = dict(m.card)
        out["models"][slot] = {"name": ref.names[slot], "card": card,
                               "top_features": gbm.feature_importance(m, top=10), "num_trees": m.num_trees}
    return out


# ============================================================== adding reference songs ====

@dataclass
class AddResult:
    """What :func:`add_reference` / :func:`add_feedback` stored."""

    song_id: int
    name: str
    source: str
    stems: int
    targets: int
    augmented: int = 0
    residual_db: float | None = None
    offset_ms: float | None = None
    warnings: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tilt_gain(freqs: np.ndarray, tilt_db_per_oct: float) -> np.ndarray:
    db = tilt_db_per_oct * np.log2(np.maximum(freqs, 20.0) / 1000.0)
    return 10.0 ** (np.clip(db, -AUG_TILT_CAP_DB, AUG_TILT_CAP_DB) / 20.0)


def perturb(audio: np.ndarray, sample_rate_hz: int, gain_db: float, tilt_db_per_oct: float) -> np.ndarray:
    """A stem with a gain and a spectral tilt (dB/octave around 1 kHz, capped at +-AUG_TILT_CAP_DB)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    spec = np.fft.rfft(x, axis=0)
    spec *= _tilt_gain(np.fft.rfftfreq(n, 1.0 / sample_rate_hz), tilt_db_per_oct)[:, None]
    y = np.fft.irfft(spec, n=n, axis=0) * 10.0 ** (gain_db / 20.0)
    return y.astype(np.float32)


def _band_tilt_db(tilt: float) -> dict[str, float]:
    out = {}
    for b, (lo, hi) in BANDS_HZ.items():
        db = tilt * math.log2(math.sqrt(lo * hi) / 1000.0)
        out[b] = max(-AUG_TILT_CAP_DB, min(AUG_TILT_CAP_DB, db))
    return out


def augment_song(audio: Mapping[str, np.ndarray], sample_rate_hz: int, targets: Sequence[TargetRecord],
                 roles: Mapping[str, str], n: int, seed: int) -> list[tuple[list[StemRecord], list[TargetRecord], dict]]:
    """``n`` perturbed copies of a reference song: (stems, targets, meta) each (see the module doc)."""
    from .descriptors import compute_masking, describe_audio

    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        params = {s: (float(rng.uniform(-AUG_GAIN_DB, AUG_GAIN_DB)), float(rng.uniform(-AUG_TILT_DB_PER_OCT,
                                                                                        AUG_TILT_DB_PER_OCT)))
                  for s in audio}
        described = {s: describe_audio(perturb(a, sample_rate_hz, *params[s]), sample_rate_hz) for s, a in audio.items()}
        masking = compute_masking(described)
        stems = [StemRecord(name=s, role=roles[s], descriptors=dict(d.values)) for s, d in described.items()]
        tg = []
        for t in targets:
            g, tilt = params[t.stem]
            if t.slot == "gain_db":
                tg.append(TargetRecord(t.stem, t.slot, t.value - g, weight=t.weight))
            elif t.slot.startswith("eq.band_"):
                band = t.slot[len("eq.band_"):-len("_db")]
                tg.append(TargetRecord(t.stem, t.slot, t.value - _band_tilt_db(tilt).get(band, 0.0), weight=t.weight))
            elif t.slot in ("level.relative_lu", "pan", "width"):
                tg.append(TargetRecord(t.stem, t.slot, t.value, weight=t.weight))
        meta = {"augmentation": {s: {"gain_db": round(g, 3), "tilt_db_per_oct": round(tl, 3)}
                                 for s, (g, tl) in params.items()},
                "masking": [[m.masker, m.maskee, m.band, round(float(m.masking_db), 3)] for m in masking]}
        out.append((stems, tg, meta))
    return out


def _read_mix(path: Path, sample_rate_hz: int) -> np.ndarray:
    import soundfile as sf

    try:
        mix, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:
        raise InputError(f"cannot read the mix: {exc}", path=str(path)) from None
    if mix.shape[1] > 2:
        from .stems import downmix_to_stereo

        mix = downmix_to_stereo(mix)
    if sr != sample_rate_hz:
        import soxr

        mix = soxr.resample(mix, sr, sample_rate_hz, quality="VHQ").astype(np.float32)
    return mix


def add_reference(stems_dir: str | os.PathLike, mix_file: str | os.PathLike, *,
                  store: TrainingStore | str | os.PathLike | None = None, genre: str = "pop",
                  licence: str | None = None, name: str | None = None, augment: int = DEFAULT_AUGMENT,
                  role_overrides: Mapping[str, str] | None = None, roles_file: str | os.PathLike | None = None,
                  exclude: Sequence[str] = (), rules_dir: str | os.PathLike | None = None,
                  genres_dir: str | os.PathLike | None = None, on_duplicate: str = "error", seed: int = 0,
                  processes: int = 2, progress: Callable[[str, int, int], None] | None = None) -> AddResult:
    """Estimate the engineer's decisions from raw stems and their final mix; store them.

    The stems are analysed as ``expertmix mix`` would (roles, descriptors, masking, tempo); the
    mix is aligned and fitted (:func:`expertmix.estimate.estimate_decisions`, which refuses pairs
    that do not match with an :class:`InputError` saying why); the song, its targets and ``augment``
    perturbed copies are stored. Everything is computed before anything is written; the song and
    its copies are then written, and removed again if the writing is interrupted, so an
    interrupted add leaves the store as it was.
    """
    import soundfile as sf

    from .decide import session_context
    from .estimate import estimate_decisions
    from .genres import load_genre
    from .pipeline import analyse_session
    from .rules import evaluate, load_rulebook

    t0 = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    stems_dir, mix_file = Path(stems_dir).expanduser(), Path(mix_file).expanduser()
    if not mix_file.is_file():
        raise InputError("the mix file does not exist", path=str(mix_file))
    if augment < 0 or augment > 100:
        raise InputError(f"--augment must be 0..100, got {augment}")
    profile = load_genre(genre, genres_dir)
    rulebook = load_rulebook(rules_dir)
    excl = list(exclude)
    try:
        if mix_file.resolve().parent == stems_dir.resolve():
            excl.append(mix_file.name)  # the mix lives beside its stems
    except OSError:
        pass
    work = Path(tempfile.mkdtemp(prefix="expertmix-learn-"))
    try:
        stemset, analysis = analyse_session(stems_dir, cache_dir=work / "cache", role_overrides=role_overrides,
                                            roles_file=roles_file, exclude=excl, processes=processes,
                                            progress=progress or (lambda s, d, t: None))
        sr = stemset.sample_rate_hz
        audio = {}
        for s in stemset.stems:
            x, _ = sf.read(str(s.render_path), dtype="float32", always_2d=True)
            audio[s.name] = x
        report("reading the mix", 0, 1)
        mix = _read_mix(mix_file, sr)
        report("estimating the engineer's decisions", 0, 1)
        est = estimate_decisions(audio, mix, sr)
        ctx = session_context(stemset, analysis, profile)
        plan = evaluate(rulebook, ctx).plan
        roles = {s.name: s.role for s in stemset.stems}
        targets: list[TargetRecord] = []
        for stem, slot, value in est.targets():
            rv = None
            if slot in _REFERENCE_SLOTS:
                d = plan.track(stem).why.get(_REFERENCE_SLOTS[slot])
                rv = float(d.rule_value) if _refinable(d) else None
            targets.append(TargetRecord(stem, slot, float(value), rule_value=rv))
        stems = [StemRecord(name=n, role=roles[n], descriptors=dict(analysis.descriptors.stems[n].values))
                 for n in roles]
        chash = content_hash_files([s.path for s in sorted(stemset.stems, key=lambda s: s.name)] + [mix_file])
        meta = {"kind": "reference", "residual_db": est.residual_db, "offset_ms": est.offset_ms,
                "mix_lufs": est.mix_lufs, "warnings": list(est.warnings), "stems_dir": str(stems_dir.resolve()),
                "mix_file": str(mix_file.resolve()), "context": _context_meta(ctx),
                "raw_loudness_lufs": {n: float(analysis.descriptors.stems[n].values["loudness_lufs"]) for n in roles}}
        # the table the CLI shows: engineer's balance vs the rules'
        rel = {t.stem: t.value for t in targets if t.slot == "level.relative_lu"}
        gains = {tp.name: tp.why["gain_db"] for tp in plan.tracks if _refinable(tp.why.get("gain_db"))}
        common = [n for n in rel if n in gains]
        m_rel = float(np.mean([rel[n] for n in common])) if common else 0.0
        m_rule = float(np.mean([float(gains[n].rule_value) for n in common])) if common else 0.0
        table = []
        for n in roles:
            se = est.stems[n]
            row = {"stem": n, "role": roles[n], "gain_db": se.gain_db, "relative_lu": se.relative_loudness_lu,
                   "pan": se.pan, "rule_gain_db": float(gains[n].rule_value) if n in gains else None,
                   "residual_db": (rel[n] - m_rel) - (float(gains[n].rule_value) - m_rule) if n in common else None}
            table.append(row)
        copies = []
        if augment:
            report("augmenting", 0, augment)
            seed_k = int(chash[:8], 16) ^ int(seed)
            copies = augment_song(audio, sr, targets, roles, augment, seed_k)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    song_name = name or stems_dir.resolve().name
    rec = SongRecord(name=song_name, source="reference", stems=stems, targets=targets, genre=profile.name,
                     licence=licence, content_hash=chash, meta=meta)
    own = not isinstance(store, TrainingStore)
    st = TrainingStore(store) if own else store
    song_id = None
    existing = None
    try:
        existing = st.find_by_hash(chash)
        song_id = st.add_song(rec, on_duplicate=on_duplicate)  # type: ignore[arg-type]
        if existing is not None and on_duplicate == "skip":
            return AddResult(song_id, song_name, "reference", len(stems), len(targets), 0, est.residual_db,
                             est.offset_ms, ["already in the store: skipped"], table, time.perf_counter() - t0)
        for k, (cstems, ctargets, cmeta) in enumerate(copies):
            cm = {"kind": "augmented", "context": {**meta["context"], "masking": cmeta["masking"]},
                  "augmentation": cmeta["augmentation"]}
            st.add_song(SongRecord(name=f"{song_name}#aug{k + 1}", source="augmented", stems=cstems, targets=ctargets,
                                   genre=profile.name, licence=licence, content_hash=f"{chash}:aug{k + 1}:{seed}",
                                   parent_id=song_id, meta=cm), on_duplicate="replace")
    except BaseException:
        if song_id is not None and (existing is None or on_duplicate == "replace"):
            try:
                st.remove_song(song_id)  # the copies go with it
            except Exception:  # noqa: BLE001 - best effort; the original error matters
                pass
        raise
    finally:
        if own:
            st.close()
    return AddResult(song_id, song_name, "reference", len(stems), len(targets), len(copies), est.residual_db,
                     est.offset_ms, list(est.warnings), table, time.perf_counter() - t0)


# ============================================================================ feedback ====

def feedback_targets(original: MixPlan, edited: MixPlan) -> tuple[list[TargetRecord], list[dict[str, Any]]]:
    """Targets from a suggested plan and the engineer's edit of it, and the list of edits.

    Every refinable slot of the original (a Decision with ``rule_value`` and ``bounds``) gives a
    target: the edited plan's value (for ``gain_db`` plus the change of ``trim_db``), weight 1 if
    it moved by more than :data:`EDIT_TOLERANCE`, :data:`FEEDBACK_ACCEPT_WEIGHT` if it was kept.
    Raises :class:`InputError` when the plans are not of the same session.
    """
    a = {t.name: t for t in original.tracks}
    b = {t.name: t for t in edited.tracks}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise InputError("the edited plan is not an edit of the original: its tracks differ "
                         f"(only in the original: {', '.join(only_a) or 'none'}; only in the edit: "
                         f"{', '.join(only_b) or 'none'})", hint="pass the plan expertmix suggested and your edit of it")
    diff_files = [n for n in a if a[n].file != b[n].file]
    if diff_files:
        raise InputError(f"the edited plan refers to other stem files for {', '.join(diff_files)}",
                         hint="pass the plan expertmix suggested and your edit of it")
    targets, edits = [], []
    for n, ta in a.items():
        tb = b[n]
        for slot in REFINED_SLOTS:
            d = ta.why.get(slot)
            if not _refinable(d):
                continue
            va, vb = get_slot(ta, slot), get_slot(tb, slot)
            if va is None or vb is None:
                continue
            if slot == "gain_db":
                vb = vb + (tb.trim_db - ta.trim_db)
            edited_ = abs(vb - va) > EDIT_TOLERANCE
            targets.append(TargetRecord(n, slot, float(vb), rule_value=float(d.rule_value),
                                        weight=1.0 if edited_ else FEEDBACK_ACCEPT_WEIGHT))
            if edited_:
                edits.append({"stem": n, "slot": slot, "suggested": va, "edited": vb, "change": vb - va})
    return targets, edits


def _descriptors_for_plan(plan_path: Path | None, plan: MixPlan, stems_dir: Path | None, processes: int,
                          progress) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Descriptors of a plan's stems: ``analysis.yaml`` beside the plan, else a fresh analysis."""
    import yaml

    if plan_path is not None and stems_dir is None:
        cand = plan_path.parent / "analysis.yaml"
        if cand.is_file():
            try:
                from .descriptors import SessionDescriptors

                sd = SessionDescriptors.from_dict(yaml.safe_load(cand.read_text(encoding="utf-8")))
                if set(sd.stems) >= {t.name for t in plan.tracks}:
                    ctx = {"tempo_bpm": sd.tempo_bpm or plan.tempo_bpm, "tempo_confidence": sd.tempo_confidence,
                           "sample_rate_hz": sd.sample_rate_hz,
                           "masking": [[m.masker, m.maskee, m.band, round(m.masking_db, 3)] for m in sd.masking],
                           "files": {t.name: t.file for t in plan.tracks}, "order": [t.name for t in plan.tracks]}
                    return {n: dict(sd.stems[n].values) for n in sd.stems}, ctx
            except (ExpertmixError, yaml.YAMLError, KeyError, TypeError, ValueError):
                pass
    from .pipeline import analyse_session

    src = stems_dir or Path(plan.stems_dir)
    if not src.is_dir():
        raise InputError(f"the plan's stems folder {src} does not exist and there is no analysis.yaml beside the plan",
                         hint="pass --stems DIR")
    wanted = {t.file for t in plan.tracks}
    from .stems import discover_stems

    others = [p.name for p in discover_stems(src) if p.name not in wanted]
    roles = {t.file: t.role for t in plan.tracks}
    work = Path(tempfile.mkdtemp(prefix="expertmix-learn-"))
    try:
        stemset, analysis = analyse_session(src, cache_dir=work / "cache", role_overrides=roles, exclude=others,
                                            sample_rate_hz=plan.sample_rate_hz, processes=processes,
                                            progress=progress or (lambda s, d, t: None))
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    desc = analysis.descriptors
    ctx = {"tempo_bpm": desc.tempo_bpm or plan.tempo_bpm, "tempo_confidence": desc.tempo_confidence,
           "sample_rate_hz": desc.sample_rate_hz,
           "masking": [[m.masker, m.maskee, m.band, round(m.masking_db, 3)] for m in desc.masking],
           "files": {t.name: t.file for t in plan.tracks}, "order": [t.name for t in plan.tracks]}
    return {n: dict(desc.stems[n].values) for n in desc.stems}, ctx


def feedback_record(original: MixPlan, edited: MixPlan, descriptors: Mapping[str, Mapping[str, float]],
                    context: Mapping[str, Any], *, name: str | None = None,
                    licence: str | None = "user's own edits") -> tuple[SongRecord, list[dict[str, Any]]]:
    """The store record of one feedback pair (descriptors per track name; ``context`` as stored)."""
    targets, edits = feedback_targets(original, edited)
    missing = [t.name for t in original.tracks if t.name not in descriptors]
    if missing:
        raise InputError(f"no descriptors for the track(s) {', '.join(missing)}", hint="pass --stems DIR")
    stems = [StemRecord(name=t.name, role=t.role, descriptors={k: float(descriptors[t.name][k])
                                                              for k in DESCRIPTOR_NAMES if k in descriptors[t.name]})
             for t in original.tracks]
    chash = content_hash_json({"original": original.model_dump(mode="json"), "edited": edited.model_dump(mode="json")})
    rec = SongRecord(name=name or Path(original.stems_dir).name or "feedback", source="feedback", stems=stems,
                     targets=targets, genre=original.genre, licence=licence, content_hash=chash,
                     meta={"kind": "feedback", "edits": edits, "context": dict(context)})
    return rec, edits


def add_feedback(original_plan: str | os.PathLike | MixPlan, edited_plan: str | os.PathLike | MixPlan, *,
                 store: TrainingStore | str | os.PathLike | None = None, stems_dir: str | os.PathLike | None = None,
                 name: str | None = None, on_duplicate: str = "error", processes: int = 2,
                 progress: Callable[[str, int, int], None] | None = None) -> AddResult:
    """Store an engineer's edit of a suggested plan as training targets (one transaction).

    Descriptors come from ``analysis.yaml`` beside the original plan (written by ``expertmix
    mix``) when it matches, else from analysing the plan's stems (``stems_dir`` overrides the
    folder recorded in the plan).
    """
    from .plan import load_plan

    t0 = time.perf_counter()
    p_orig = None if isinstance(original_plan, MixPlan) else Path(original_plan)
    orig = original_plan if isinstance(original_plan, MixPlan) else load_plan(original_plan)
    edit = edited_plan if isinstance(edited_plan, MixPlan) else load_plan(edited_plan)
    if not any(_refinable(d) for t in orig.tracks for d in t.why.values()):
        raise InputError("the original plan records no rule values or bounds (written by an older expertmix or "
                         "by hand)", hint="pass the plan expertmix suggested (`expertmix plan` / `expertmix mix`)")
    feedback_targets(orig, edit)  # refuse unrelated plans before any analysis
    desc, ctx = _descriptors_for_plan(p_orig, orig, Path(stems_dir) if stems_dir else None, processes, progress)
    rec, edits = feedback_record(orig, edit, desc, ctx, name=name)
    own = not isinstance(store, TrainingStore)
    st = TrainingStore(store) if own else store
    try:
        song_id = st.add_song(rec, on_duplicate=on_duplicate)  # type: ignore[arg-type]
    finally:
        if own:
            st.close()
    warn = [] if edits else ["no refinable value was edited: stored as accepted suggestions "
                             f"(weight {FEEDBACK_ACCEPT_WEIGHT})"]
    return AddResult(song_id, rec.name, "feedback", len(rec.stems), len(rec.targets), 0, None, None, warn,
                     edits, time.perf_counter() - t0)


__all__ = ["Refiner", "load_refiner", "read_manifest", "bundled_models_dir", "feature_names", "session_features",
           "train", "collect", "cross_validate", "inspect", "add_reference", "add_feedback", "feedback_targets",
           "feedback_record", "augment_song", "perturb", "get_slot", "set_slot", "model_name", "TrainReport",
           "SlotReport", "AddResult", "Row", "LearningWarning", "REFINED_SLOTS", "FEATURE_SET_VERSION"]
