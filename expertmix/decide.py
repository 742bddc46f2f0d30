"""The rulebook planner: analysed stems + genre -> rule evaluation -> mix plan (+ trace).

This is the planner the pipeline uses (the seam the spine left for it): a callable
``(StemSet, SessionAnalysis, GenreProfile) -> MixPlan``. It turns the session's descriptors
into the rule engine's :class:`~expertmix.rules.SessionContext`, runs the rulebook and keeps the
trace of the last run for ``report.md``, ``rules-trace.yaml`` and ``expertmix rules explain``.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterable

from .defaults import SessionAnalysis
from .errors import PlanError
from .genres import GenreProfile
from .plan import MixPlan
from .rules import MaskingInfo, Rulebook, RulebookResult, SessionContext, TrackContext, evaluate, load_rulebook
from .stems import StemSet


def session_context(stems: StemSet, analysis: SessionAnalysis, genre: GenreProfile) -> SessionContext:
    """What the rules see of a session: per-stem descriptors, masking, tempo and genre."""
    desc = analysis.descriptors
    if desc is None:
        raise PlanError("the session has no descriptors: analyse it with expertmix.pipeline.analyse_session")
    tracks = []
    notes: list[str] = list(stems.warnings)
    for s in stems.stems:
        values = dict(desc.stems[s.name].values)
        tracks.append(TrackContext(name=s.name, file=s.path.name, role=s.role, channels=s.channels, values=values))
        notes.extend(f"{s.name}: {w}" for w in s.warnings)
    masking = [MaskingInfo(m.masker, m.maskee, m.band, float(m.masking_db)) for m in desc.masking]
    return SessionContext(tracks=tracks, genre=genre, tempo_bpm=analysis.tempo_bpm or 120.0,
                          tempo_confidence=analysis.tempo_confidence, masking=masking,
                          stems_dir=str(stems.source_dir), sample_rate_hz=stems.sample_rate_hz, notes=notes)


class RulebookPlanner:
    """A planner backed by the YAML rulebook (bundled rules + a user's ``rules_dir``)."""

    def __init__(self, rules_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                 rulebook: Rulebook | None = None, *, learning: bool = True,
                 models_dir: str | os.PathLike[str] | None = None):
        self.rulebook = rulebook if rulebook is not None else load_rulebook(rules_dir)
        self.learning = learning
        self.models_dir = models_dir
        self.last: RulebookResult | None = None
        self.context: SessionContext | None = None
        self._refiner: Any = None
        self._refiner_loaded = False
        self._refiner_notes: list[str] = []
        self._refiner_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        if learning and models_dir is not None:
            self._load_refiner()  # a broken --models folder fails before any audio work

    def _load_refiner(self) -> Any:
        """The learned refiner (None when there is none), loaded once per planner."""
        with self._refiner_lock:
            if not self._refiner_loaded:
                from .learning import load_refiner  # the learned refinements (LightGBM, via gbm.py)

                self._refiner = load_refiner(self.models_dir, strict=self.models_dir is not None,
                                             notes=self._refiner_notes)
                self._refiner_loaded = True
        return self._refiner

    def start_loading(self) -> None:
        """Load the learned refiner (LightGBM and the models: ~0.2 s) in a background thread.

        The pipeline calls this before the analysis, which leaves this process waiting on its
        workers, so that planning does not wait for it. A failure there is left for the planning
        step, which loads again and reports it."""
        if self.learning and not self._refiner_loaded and self._loader is None:
            self._loader = threading.Thread(target=self._load_in_background, name="expertmix-load-models",
                                            daemon=True)
            self._loader.start()

    def _load_in_background(self) -> None:
        try:
            self._load_refiner()
        except Exception:  # noqa: BLE001 - raised again, clearly, when the plan is made
            pass

    def __call__(self, stems: StemSet, analysis: SessionAnalysis, genre: GenreProfile) -> MixPlan:
        self.context = session_context(stems, analysis, genre)
        self.last = evaluate(self.rulebook, self.context)
        plan = self.last.plan
        if self.learning:
            refiner = self._load_refiner()
            plan.notes.extend(self._refiner_notes)
            if refiner is not None:
                plan, notes = refiner.refine(plan, self.context)
                plan.notes.extend(notes)
                self.last.plan = plan
        if analysis.tempo_bpm is None:
            plan.notes.append("no clear rhythm found: 120 BPM assumed for delays and pre-delay")
        return plan

    def trace_dict(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.last.trace] if self.last else []
