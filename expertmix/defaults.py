"""Shared plain objects between analysis and planning: the session analysis and the delivery
defaults of the master.

(The spine's built-in default planner that lived here was replaced by the YAML rulebook:
:mod:`expertmix.rules` and :mod:`expertmix.decide`.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .analysis import StemAnalysis
from .genres import GenreProfile
from .master import preset as master_preset
from .plan import Compressor, Decision, MasterPlan


def _d(heuristic: str, reason: str, value: Any) -> Decision:
    v = round(value, 3) if isinstance(value, float) else value
    return Decision(source=f"default:{heuristic}", reason=reason, value=v)


@dataclass
class SessionAnalysis:
    """What the planner knows about a session: per-stem measures and the session tempo."""

    stems: dict[str, StemAnalysis]
    tempo_bpm: float | None = None
    tempo_confidence: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the full descriptors (:class:`expertmix.descriptors.SessionDescriptors`), when analysed
    descriptors: Any = None

    def to_dict(self) -> dict[str, Any]:
        if self.descriptors is not None:
            return {**self.descriptors.to_dict(), **self.extra}
        return {"tempo_bpm": self.tempo_bpm, "tempo_confidence": self.tempo_confidence,
                "stems": {k: v.to_dict() for k, v in self.stems.items()}, **self.extra}



def master_for(genre: GenreProfile, preset_name: str | None = None, target_lufs: float | None = None) -> MasterPlan:
    """The master plan for a genre, optionally overridden by a preset or an explicit target."""
    p = master_preset(preset_name or genre.master.preset)
    target = target_lufs if target_lufs is not None else (
        genre.master.target_lufs if preset_name is None and genre.master.target_lufs is not None else p.target_lufs)
    ceiling = genre.master.ceiling_dbtp if preset_name is None and genre.master.ceiling_dbtp is not None else p.ceiling_dbtp
    m = MasterPlan(preset=p.name if target_lufs is None else "custom", target_lufs=target)
    m.limiter.ceiling_dbtp = ceiling
    m.glue = Compressor(enabled=True, threshold_db=genre.master.glue_threshold_db, ratio=genre.master.glue_ratio,
                        attack_ms=30.0, release_ms=200.0, knee_db=6.0)
    m.why["target_lufs"] = _d("delivery", f"{p.name}: {p.doc}" if target_lufs is None else "set by --target-lufs", target)
    m.why["limiter.ceiling_dbtp"] = _d("delivery", "true-peak ceiling of the delivery target", ceiling)
    m.why["glue"] = _d("glue", f"{genre.name}: ratio {genre.master.glue_ratio} on the mix at -20 LUFS, slow attack", True)
    return m
