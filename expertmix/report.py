"""``report.md``: what was done to each stem, why, and what the master measures."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import __version__
from .defaults import SessionAnalysis
from .io import atomic_write_text
from .master import MasterResult
from .plan import Decision, MixPlan, TrackPlan
from .stems import StemSet


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return "" if v is None else str(v)


def _edited(d: Decision, current: Any) -> bool:
    return d.value is not None and isinstance(current, (int, float, str, bool)) and d.value != current


def _current(t: TrackPlan, key: str) -> Any:
    node: Any = t
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def _track_row(t: TrackPlan, stems: StemSet, analysis: SessionAnalysis | None) -> str:
    a = analysis.stems.get(t.name) if analysis else None
    comp = f"{t.compressor.ratio:g}:1 @ {t.compressor.threshold_db:.0f} dB" if t.compressor.enabled else "—"
    hp = f"{t.cleanup.highpass_hz:.0f} Hz" if t.cleanup.highpass_hz else "—"
    loud = f"{a.loudness_lufs:.1f}" if a else "—"
    pan = "C" if abs(t.pan) < 0.005 else (f"L{abs(t.pan) * 100:.0f}" if t.pan < 0 else f"R{t.pan * 100:.0f}")
    sends = ", ".join(f"{s.bus} {s.level_db:.0f}" for s in t.sends) or "—"
    return (f"| {t.name} | {t.role} | {loud} | {t.trim_db:+.1f} | {t.gain_db:+.1f} | {pan} | {hp} | {len(t.eq)} | "
            f"{comp} | {sends} | {t.bus} |")


def write_report(path: Path, plan: MixPlan, stems: StemSet, master: MasterResult,
                 analysis: SessionAnalysis | None, timings: dict[str, float]) -> None:
    m = master.master
    lines = [
        "# expertmix report", "",
        f"expertmix {__version__} · genre **{plan.genre}** · {len(plan.tracks)} stems · "
        f"{plan.sample_rate_hz} Hz · tempo {plan.tempo_bpm:.1f} BPM", "",
        "## Master", "",
        "| measure | value | target |", "|---|---:|---:|",
        f"| integrated loudness (BS.1770-4) | {m['integrated_lufs']:.2f} LUFS | {master.target_lufs:.1f} LUFS "
        f"± {plan.master.tolerance_lu} ({plan.master.preset}) |",
        f"| true peak (4× oversampled) | {m['true_peak_dbtp']:.2f} dBTP | ≤ {master.ceiling_dbtp:.1f} dBTP |",
        f"| loudness range (EBU Tech 3342) | {m['loudness_range_lu']:.1f} LU | |",
        f"| max short-term loudness | {m['short_term_max_lufs']:.1f} LUFS | |",
        f"| gain modulation by the master chain (pumping) | {master.gain_modulation_lu:.2f} LU | < 1.5 LU |",
        f"| unmastered mix | {master.mix['integrated_lufs']:.2f} LUFS, {master.mix['true_peak_dbtp']:.2f} dBTP, "
        f"LRA {master.mix['loudness_range_lu']:.1f} LU | |", "",
        f"Loudness loop: {master.passes} pass(es); gain into the chain {master.pre_gain_db:+.1f} dB, "
        f"drive into the limiter {master.drive_db:+.1f} dB, limiter threshold {master.limit_db:.1f} dBFS. "
        + ("Target met." if master.within_target else "**Target missed** (see notes)."), "",
        "## Tracks", "",
        "| stem | role | loudness LUFS | trim dB | fader dB | pan | high-pass | EQ bands | compressor | sends dB | bus |",
        "|---|---|---:|---:|---:|---|---|---:|---|---|---|",
    ]
    lines += [_track_row(t, stems, analysis) for t in plan.tracks]
    if plan.ducking:
        lines += ["", "## Sidechain", ""]
        lines += [f"- {d.target} ducks under {d.trigger}: up to {d.depth_db:.1f} dB, release {d.release_ms:.0f} ms"
                  for d in plan.ducking]
    if plan.buses or plan.fx:
        lines += ["", "## Buses", ""]
        for b in plan.buses:
            c = b.compressor
            lines.append(f"- **{b.name}** bus: " + (f"compressor {c.ratio:g}:1 @ {c.threshold_db:.0f} dB, "
                                                     f"attack {c.attack_ms:.0f} ms, release {c.release_ms:.0f} ms"
                                                     if c.enabled else "no compression"))
        for f in plan.fx:
            what = (f"reverb {f.decay_s:.1f} s, pre-delay {f.predelay_ms:.0f} ms, low-pass {f.lowpass_hz:.0f} Hz"
                    if f.kind == "reverb" else f"delay {f.note or ''} ({plan.delay_time_ms(f):.0f} ms), feedback {f.feedback:.2f}")
            lines.append(f"- **{f.name}**: {what}")
    refined = [(t.name, key, d) for t in plan.tracks for key, d in t.why.items() if d.model_delta is not None]
    if refined:
        lines += ["", "## Learned refinements", "",
                  "Values a learned model moved away from its rule's proposal, always within the rule's bounds "
                  "(`--no-learning` for rules alone).", "",
                  "| stem | value | rule | model | now | bounds |", "|---|---|---:|---:|---:|---|"]
        for name, key, d in refined:
            lo, hi = d.bounds if d.bounds else (None, None)
            bounds = f"{lo:g} .. {hi:g}" if lo is not None else ""
            rule = f"{d.rule_value:g}" if d.rule_value is not None else ""
            lines.append(f"| {name} | `{key}` | {rule} | {d.model_delta:+.2f} | {_fmt(d.value)} | {bounds} |")
    lines += ["", "## Decisions", "", "Every value the planner set, who set it and why. "
              "An *edited* mark means the plan was changed by hand after planning.", ""]
    for t in plan.tracks:
        lines.append(f"### {t.name} ({t.role})")
        for key, d in t.why.items():
            mark = " *edited*" if _edited(d, _current(t, key)) else ""
            value = _current(t, key)
            shown = f" = {_fmt(value)}" if isinstance(value, (int, float, str)) else ""
            lines.append(f"- `{key}`{shown}{mark} — {d.reason} [{d.source}]")
        lines.append("")
    mixwide = list(plan.why.items()) + [(f"master.{k}", d) for k, d in plan.master.why.items()]
    if mixwide:
        lines.append("### mix and master")
        lines += [f"- `{k}` — {d.reason} [{d.source}]" for k, d in mixwide]
        lines.append("")
    if plan.findings:
        lines += ["## Problems found in the stems", "", "| stem | problem | action | detail |", "|---|---|---|---|"]
        lines += [f"| {f.stem} | {f.kind} | {f.action} | {f.detail} |" for f in plan.findings] + [""]
    notes = plan.notes + master.notes
    if notes:
        lines += ["## Notes for the engineer", ""] + [f"- {n}" for n in notes] + [""]
    if timings:
        lines += ["## Timings", ""] + [f"- {k.removesuffix('_s').replace('_', ' ')}: {v:.2f} s"
                                       for k, v in timings.items()] + [""]
    lines += ["## Files", "", "- `mix.wav`: the unmastered mix (32-bit float, same length as `master.wav`)",
              "- `master.wav`: the master (24-bit PCM)",
              "- `stems/<stem>.wav`: each stem's processed contribution, post-fader and pan (32-bit float stereo); "
              "they sum to the mix before group-bus processing, effect returns and mix-bus trim",
              "- `plan.yaml`: the editable plan; re-render with `expertmix render plan.yaml -o OUT`",
              "- `analysis.yaml`: every stem's descriptors, the masking between stems and the tempo (`expertmix mix` only)",
              "- `rules-trace.yaml`: for every rule and target, whether it fired (or why not), what it proposed and "
              "what overrode it (`expertmix mix` only)", ""]
    atomic_write_text(path, "\n".join(lines))
