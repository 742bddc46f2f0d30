#!/usr/bin/env python3
"""Leave-one-song-out evaluation of the learned refinements on the dev corpus; writes LEARNING.md.

For every corpus song with a reference mix (``reference_mix.flac``), ``expertmix learn add``
(:func:`expertmix.learning.add_reference`) estimates the engineer's decisions from the raw stems
and that mix and stores them, with ``--augment`` perturbed copies, in a training store (cached in
``--work``; the corpus is CC BY-NC-SA / GPL material: these models are for evaluation only and
are never shipped). Then, for each such song:

1. models are trained on the *other* songs only (``train(..., exclude_groups=[song])``; with
   ``--with-demo`` the bundled CC0/MIT demo song is added to every training set);
2. the song is mixed three times, identical except for the plan: rules alone, rules + the LOSO
   models, rules + the shipped models in ``models/`` (trained on the demo only);
3. each mix is evaluated like ``benchmarks/evaluate_corpus.py`` does: the per-stem balance error
   (LU) of the rendered stems against the reference balance (``reference_stems/`` loudness, else
   raw loudness + ``meta.json`` ``gain_to_reference_balance_db``).

Also reported: that no refined value left its rule's bounds (checked on every plan), how far
the values moved, the estimate's fit residual per song, training and inference times.

    python benchmarks/learning_eval.py [--corpus DIR] [--augment 8] [--out benchmarks/LEARNING.md]

About 6-8 minutes on the shared 2-core machine (analysis and rendering dominate).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from evaluate_corpus import AUDIO_SUFFIXES, git_commit, map_genre, stem_name  # noqa: E402

from expertmix import learning as L  # noqa: E402
from expertmix.descriptor_specs import DESCRIPTOR_VERSION  # noqa: E402
from expertmix.decide import RulebookPlanner  # noqa: E402
from expertmix.errors import InputError  # noqa: E402
from expertmix.evaluate import balance_differences, evaluate  # noqa: E402
from expertmix.pipeline import run_mix  # noqa: E402
from expertmix.store import TrainingStore  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"


class LearningPlanner(RulebookPlanner):
    """The rulebook planner followed by a refiner (what the lead wires into RulebookPlanner)."""

    def __init__(self, refiner: L.Refiner | None):
        super().__init__(learning=False)  # the refiner below is the only learning applied
        self.refiner = refiner
        self.refine_s = 0.0
        self.notes: list[str] = []
        self.rule_plan = None

    def __call__(self, stems, analysis, genre):  # type: ignore[override]
        plan = super().__call__(stems, analysis, genre)
        self.rule_plan = plan.model_copy(deep=True)
        if self.refiner is None:
            return plan
        t0 = time.perf_counter()
        plan, notes = self.refiner.refine(plan, self.context)
        self.refine_s = time.perf_counter() - t0
        plan.notes.extend(notes)
        self.notes = notes
        return plan


def reference_kwargs(song: Path, meta: dict[str, Any]) -> dict[str, Any]:
    ref_stems = song / "reference_stems"
    if ref_stems.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in ref_stems.iterdir()):
        return {"reference_stems_dir": ref_stems}
    gains = {stem_name(k): float(v["gain_to_reference_balance_db"]) for k, v in (meta.get("stems") or {}).items()
             if isinstance(v, dict) and v.get("gain_to_reference_balance_db") is not None}
    return {"reference_gains": gains} if gains else {}


def check_bounds(plan) -> list[str]:
    bad = []
    for t in plan.tracks:
        for slot, d in t.why.items():
            if d.bounds is None or d.model_delta is None:
                continue
            v = L.get_slot(t, slot)
            if v is None or not (d.bounds[0] - 1e-9 <= v <= d.bounds[1] + 1e-9):
                bad.append(f"{t.name}.{slot}={v} outside {d.bounds}")
    return bad


def moves(plan) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in plan.tracks:
        for slot, d in t.why.items():
            if d.model_delta is not None:
                out.setdefault(slot, []).append(float(d.model_delta))
    return out


def mix_and_score(song: Path, meta: dict, refiner, work: Path, label: str) -> dict[str, Any]:
    genre = map_genre(meta.get("genre", ""))
    stem_files = {stem_name(k) for k in (meta.get("stems") or {})}
    exclude = [p.name for p in song.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
               and p.stem not in stem_files]
    planner = LearningPlanner(refiner)
    out = work / f"{song.name}-{label}"
    t0 = time.perf_counter()
    result = run_mix(song, out, genre=genre, exclude=exclude, overwrite=True, planner=planner)
    secs = time.perf_counter() - t0
    ev = evaluate(song, out, **reference_kwargs(song, meta))
    plan = result.plan
    return {"balance_error_lu": ev.balance_error_lu, "seconds": secs, "refine_s": planner.refine_s,
            "bounds_violations": check_bounds(plan), "moves": moves(plan), "notes": planner.notes,
            "per_stem": balance_differences(ev.loudness("lufs"), ev.loudness("reference_lufs"))}


def build_store(corpus: Path, store_path: Path, augment: int, with_demo: bool) -> dict[str, int]:
    """Add every corpus song with a reference mix (and the demo); cached by content hash."""
    ids: dict[str, int] = {}
    songs = sorted(p for p in corpus.iterdir() if (p / "reference_mix.flac").is_file())
    with TrainingStore(store_path) as st:
        stored = {s.name: s.id for s in st.list_songs(source="reference")}
        for song in songs:
            if song.name in stored:  # cached from an earlier run
                ids[song.name] = stored[song.name]
                continue
            meta = json.loads((song / "meta.json").read_text())
            t0 = time.perf_counter()
            r = L.add_reference(song, song / "reference_mix.flac", store=st, genre=map_genre(meta.get("genre", "")),
                                licence=(meta.get("licence") or "see SOURCES.txt (corpus: evaluation only)"),
                                name=song.name, augment=augment, on_duplicate="skip")
            ids[song.name] = r.song_id
            print(f"  stored {song.name}: residual {r.residual_db} dB, {r.augmented} copies, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if with_demo and "paper_lanterns_demo" in stored:
            ids["paper_lanterns_demo"] = stored["paper_lanterns_demo"]
        elif with_demo:
            demo = REPO / "expertmix" / "demo"
            r = L.add_reference(demo, demo / "reference" / "reference_mix.flac", store=st, genre="pop",
                                licence="CC0-1.0 (arrangement, balance, drum samples) + MIT (FluidR3_GM)",
                                name="paper_lanterns_demo", augment=augment, on_duplicate="skip")
            ids["paper_lanterns_demo"] = r.song_id
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "expertmix-learning-eval")
    ap.add_argument("--augment", type=int, default=8)
    ap.add_argument("--no-demo", action="store_true", help="do not add the demo song to the LOSO training sets")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "LEARNING.md")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--label", default="learned refinements, leave one song out")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    # the store holds descriptors: a new analysis version needs a new store
    store_path = args.work / f"corpus-aug{args.augment}-descriptors-v{DESCRIPTOR_VERSION}.sqlite"
    t0 = time.perf_counter()
    ids = build_store(args.corpus, store_path, args.augment, not args.no_demo)
    build_s = time.perf_counter() - t0
    shipped = L.load_refiner(None, strict=False)
    rows = []
    train_times = []
    cv_tables = {}
    for song_name, sid in ids.items():
        if song_name == "paper_lanterns_demo":
            continue
        song = args.corpus / song_name
        meta = json.loads((song / "meta.json").read_text())
        mdir = args.work / f"models-loso-{song_name}"
        t1 = time.perf_counter()
        try:
            rep = L.train(store_path, mdir, exclude_groups=[sid], cv=True)
            slots = [s.slot for s in rep.slots if s.model]
            skipped = {s.slot: s.skipped for s in rep.slots if s.skipped and s.cv}
        except InputError as exc:  # no slot beat the rules alone in the inner cross-validation
            rep, slots, skipped = None, [], {"all": exc.message}
        train_times.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        loso = L.load_refiner(mdir, strict=True) if rep is not None else None
        load_s = time.perf_counter() - t1
        res = {"song": song_name, "genre": map_genre(meta.get("genre", "")), "load_s": load_s,
               "train_s": train_times[-1], "slots": slots, "skipped": skipped}
        for label, ref in (("rules", None), ("loso", loso), ("shipped", shipped)):
            if label == "shipped" and ref is None:
                continue
            if label == "loso" and ref is None:  # no model: learning leaves the plan to the rules
                res[label] = {**res["rules"], "refine_s": 0.0}
                continue
            res[label] = mix_and_score(song, meta, ref, args.work, label)
            print(f"  {song_name} {label}: balance error {res[label]['balance_error_lu']:.2f} LU", file=sys.stderr)
        with TrainingStore(store_path) as st:
            res["fit_residual_db"] = st.song(sid).meta.get("residual_db")
        rows.append(res)
    with TrainingStore(store_path) as st:
        summary = st.summary()
    write_report(args, rows, summary, build_s, train_times, shipped)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=str))
    bad = [v for r in rows for k in ("loso", "shipped") if k in r for v in r[k]["bounds_violations"]]
    return 1 if bad else 0


def _f(v: Any, nd: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def write_report(args, rows, summary, build_s, train_times, shipped) -> None:
    import datetime as _dt

    lines = [f"## {_dt.date.today().isoformat()}: {args.label}", "",
             f"expertmix commit {git_commit()} · corpus `{args.corpus}` · augmentation {args.augment} copies per song"
             + ("" if args.no_demo else " · the CC0/MIT demo song added to every training set"), "",
             "Balance error (LU, RMS over stems of rendered-stem loudness minus reference, mean removed; lower is "
             "better) of three renders of the same song that differ only in the plan:", "",
             "| song | genre | fit residual dB | rules alone | + LOSO models | + shipped models | values moved (LOSO) | max move gain_db | out of bounds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mv = r["loso"]["moves"]
        n_moved = sum(1 for v in mv.values() for x in v if abs(x) > 1e-9)
        gmax = max((abs(x) for x in mv.get("gain_db", [])), default=0.0)
        oob = len(r["loso"]["bounds_violations"]) + len(r.get("shipped", {}).get("bounds_violations", []))
        lines.append(f"| {r['song']} | {r['genre']} | {_f(r['fit_residual_db'], 1)} | {_f(r['rules']['balance_error_lu'])} | "
                     f"**{_f(r['loso']['balance_error_lu'])}** | {_f(r.get('shipped', {}).get('balance_error_lu'))} | "
                     f"{n_moved} | {gmax:.2f} | {oob} |")
    mean = lambda k: float(np.mean([r[k]["balance_error_lu"] for r in rows if k in r]))  # noqa: E731
    lines.append(f"| **mean** | | | {mean('rules'):.2f} | **{mean('loso'):.2f}** | "
                 f"{_f(mean('shipped')) if all('shipped' in r for r in rows) else '–'} | | | |")
    lines += ["", "The models of each held-out song (trained on the other songs; a slot gets a model only when the "
              "inner leave-one-song-out cross-validation beats the rules alone), training time, and the time "
              "`Refiner.refine` and `load_refiner` added to the plan:", ""]
    lines.append("| held-out song | slots with a model | train s | inference s (refine) | load s |")
    lines.append("|---|---|---:|---:|---:|")
    for r in rows:
        lines.append(f"| {r['song']} | {', '.join(r['slots']) or 'none (inner CV: no gain over the rules)'} | {r['train_s']:.1f} | {r['loso']['refine_s']:.3f} | "
                     f"{r['load_s']:.3f} |")
    lines += ["", f"Training store: {summary['songs']} songs ({json.dumps(summary['by_source'])}); built in "
              f"{build_s:.0f} s (analysis, estimate and augmentation; cached afterwards).", ""]
    (args.out.parent).mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    old = args.out.read_text() if args.out.exists() else ""
    head = "# Learned refinements: evaluation\n\n"
    if old.startswith(head):
        old = old[len(head):]
    args.out.write_text(head + text + "\n" + old)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
