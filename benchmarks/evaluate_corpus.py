#!/usr/bin/env python3
"""Mix every song of the dev corpus and measure how far each approach is from the reference.

For every song folder in the corpus (default ``../shared/corpus`` next to the repository, or
``--corpus DIR``): run ``expertmix.mix`` (genre mapped from ``meta.json``), then
:func:`expertmix.evaluate.evaluate` against the reference, and report

* **balance error** (LU, RMS over stems of our-minus-reference stem loudness after removing the
  mean difference) for three approaches: (a) the plain sum of the raw stems, (b) every stem at
  equal loudness, (c) expertmix. The reference balance is the loudness of each stem in
  ``reference_stems/`` when present, else raw stem loudness + ``meta.json``
  ``gain_to_reference_balance_db``; songs with neither get master measures and defects only;
* **band error** (dB, RMS over the 7 broad bands at matched loudness) of each approach's mix
  against ``reference_mix.flac`` when present (the baselines are summed here in numpy with the
  constant-power pan law; expertmix's is its master);
* **defects**: every problem ``meta.json`` lists under ``degradations.problems`` of a
  constructed song, checked against the plan's ``findings`` (kind + action): found (repaired /
  flagged) or missed; findings of a defect kind on a stem without that injected defect are false
  alarms. A planner that writes no findings gets every defect missed. As extra information (not
  the score) the plan's free-text ``notes`` are searched for a mention of each defect.

Output: Markdown to stdout (and ``--out FILE.md``), everything as JSON with ``--json FILE``.
``--check`` exits 1 unless expertmix beats both baselines on every song with a reference balance
by ``--margin-lu`` and every required defect (DC, hum, rumble, clicks, clipping) is found.

Never run by the tests; it renders every song (about a minute for the dev corpus).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import expertmix  # noqa: E402
from expertmix.evaluate import (AUDIO_SUFFIXES, balance_differences, equal_loudness_gains, evaluate,  # noqa: E402
                                measure_file, rms_db, stem_loudness_from_gains)

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"

#: meta.json genre text -> expertmix genre (first keyword found wins; default pop).
GENRE_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("hip-hop", "hip-hop"), ("hip hop", "hip-hop"), ("rap", "hip-hop"), ("techno", "electronic"),
    ("electronic", "electronic"), ("house", "electronic"), ("edm", "electronic"), ("orchestral", "orchestral"),
    ("classical", "orchestral"), ("string quartet", "orchestral"), ("metal", "metal"), ("rock", "rock"),
    ("grunge", "rock"), ("jazz", "jazz"), ("reggae", "reggae"), ("r&b", "rnb"), ("rnb", "rnb"), ("soul", "rnb"),
    ("singer/songwriter", "acoustic"), ("folk", "acoustic"), ("country", "acoustic"), ("acoustic", "acoustic"),
    ("pop", "pop"),
)

#: Injected problem text (meta.json degradations.problems) -> defect kind, by keyword, in order.
PROBLEM_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("dc offset", "dc_offset"), ("hum", "hum"), ("rumble", "rumble"), ("click", "clicks"), ("clip", "clipping"),
    ("low recording level", "low_level"), ("low level", "low_level"), ("hiss", "noise"),
)
#: Finding kinds (expertmix.plan.FindingKind) that count as finding each defect kind.
ACCEPTED_FINDINGS: dict[str, set[str]] = {
    "dc_offset": {"dc_offset"}, "hum": {"hum"}, "rumble": {"rumble"}, "clicks": {"clicks"},
    "clipping": {"clipping", "hot_level"}, "low_level": {"low_level"}, "noise": {"noise"},
}
#: Defects the issue requires to be found and repaired or flagged.
REQUIRED_KINDS = ("dc_offset", "hum", "rumble", "clicks", "clipping")
#: Finding kinds that are defect reports (a false alarm when the stem has no such defect).
DEFECT_FINDING_KINDS = set().union(*ACCEPTED_FINDINGS.values())
#: Words in a plan note that mention a defect kind (informational only).
NOTE_PATTERNS: dict[str, str] = {
    "dc_offset": r"\bDC\b", "hum": r"\bhum\b", "rumble": r"rumble|below 40 Hz", "clicks": r"click",
    "clipping": r"clip|flat-topped", "low_level": r"low (recording )?level|very quiet|too quiet",
    "noise": r"hiss|noise floor|noisy",
}


def map_genre(text: str) -> str:
    t = (text or "").casefold()
    for key, genre in GENRE_KEYWORDS:
        if key in t:
            return genre
    return "pop"


def problem_kind(text: str) -> str | None:
    t = text.casefold()
    for key, kind in PROBLEM_KEYWORDS:
        if key in t:
            return kind
    return None


def stem_name(key: str) -> str:
    return Path(Path(key).name).stem


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- baselines mixed in numpy (for the spectrum comparison) ---------------------------------------

def baseline_mix(files: dict[str, Path], gains_db: dict[str, float], path: Path) -> Path | None:
    """Sum the raw stems with ``gains_db`` (constant-power centre for mono) into a stereo WAV."""
    total: np.ndarray | None = None
    rate = None
    for name, f in files.items():
        x, sr = sf.read(str(f), dtype="float64", always_2d=True)
        if rate is None:
            rate = sr
        elif sr != rate:
            return None  # stems at different rates: expertmix resamples, this quick sum does not
        x = x[:, :2] if x.shape[1] >= 2 else np.repeat(x, 2, axis=1) * np.sqrt(0.5)
        x = x * 10.0 ** (gains_db.get(name, 0.0) / 20.0)
        if total is None:
            total = x
        else:
            n = max(len(total), len(x))
            total = np.pad(total, ((0, n - len(total)), (0, 0))) + np.pad(x, ((0, n - len(x)), (0, 0)))
    if total is None:
        return None
    sf.write(str(path), total.astype(np.float32), rate, subtype="FLOAT")
    return path


# --- defects --------------------------------------------------------------------------------------

def check_defects(meta: dict[str, Any], ev: Any) -> dict[str, Any]:
    """Injected defects vs the plan's findings (and, informationally, its notes)."""
    findings = [{"stem": f.stem, "kind": f.kind, "action": f.action, "detail": f.detail} for f in ev.findings]
    by_stem: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_stem.setdefault(f["stem"].casefold(), []).append(f)
    notes_by_stem: dict[str, list[str]] = {}
    for n in ev.notes:
        head, _, rest = n.partition(":")
        notes_by_stem.setdefault(head.strip().casefold(), []).append(rest)
    injected: dict[str, set[str]] = {}
    rows: list[dict[str, Any]] = []
    constructed = False
    for key, info in (meta.get("stems") or {}).items():
        problems = ((info or {}).get("degradations") or {}).get("problems")
        if problems is None:
            continue
        constructed = True
        name = stem_name(key)
        injected[name.casefold()] = set()
        for text in problems:
            kind = problem_kind(text)
            row = {"stem": name, "problem": text, "kind": kind, "found": False, "action": None, "in_notes": False}
            if kind is None:
                row["kind"] = "unknown"
                rows.append(row)
                continue
            injected[name.casefold()].add(kind)
            hits = [f for f in by_stem.get(name.casefold(), []) if f["kind"] in ACCEPTED_FINDINGS[kind]]
            if hits:
                row["found"] = True
                row["action"] = "/".join(sorted({f["action"] for f in hits}))
            row["in_notes"] = any(re.search(NOTE_PATTERNS[kind], t, re.IGNORECASE)
                                  for t in notes_by_stem.get(name.casefold(), []))
            rows.append(row)
    false_alarms = []
    unverified = []
    for f in findings:
        if f["kind"] not in DEFECT_FINDING_KINDS:
            continue
        stem = f["stem"].casefold()
        if not constructed:
            unverified.append(f)
        elif not any(f["kind"] in ACCEPTED_FINDINGS[k] for k in injected.get(stem, set())):
            false_alarms.append(f)
    return {"constructed": constructed, "defects": rows, "findings": findings, "false_alarms": false_alarms,
            "unverified_findings": unverified}


# --- one song -------------------------------------------------------------------------------------

def run_song(song: Path, work: Path) -> dict[str, Any]:
    meta = json.loads((song / "meta.json").read_text())
    genre = map_genre(meta.get("genre", ""))
    stem_files = {stem_name(k): song / Path(k).name for k in (meta.get("stems") or {})}
    audio = [p for p in song.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    exclude = [p.name for p in audio if p.stem not in stem_files]  # reference_mix.flac etc.
    out = work / song.name
    t0 = time.perf_counter()
    result = expertmix.mix(song, out, genre=genre, overwrite=True, exclude=exclude, learning=LEARNING[0])
    mix_s = time.perf_counter() - t0

    ref_mix = song / "reference_mix.flac"
    ref_mix = ref_mix if ref_mix.is_file() else None
    ref_stems = song / "reference_stems"
    kwargs: dict[str, Any] = {}
    if ref_stems.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in ref_stems.iterdir()):
        kwargs["reference_stems_dir"] = ref_stems
        source = "reference_stems/"
    else:
        gains = {stem_name(k): float(v["gain_to_reference_balance_db"]) for k, v in (meta.get("stems") or {}).items()
                 if isinstance(v, dict) and v.get("gain_to_reference_balance_db") is not None}
        if gains:
            kwargs["reference_gains"] = gains
            source = "meta.json gains"
        else:
            source = None
    ev = evaluate(song, out, reference_mix=ref_mix, **kwargs)

    row: dict[str, Any] = {
        "song": song.name, "genre_meta": meta.get("genre"), "genre": genre, "stems": len(stem_files),
        "mix_seconds": round(mix_s, 1), "reference_balance": source, "reference_mix": ref_mix is not None,
        "target_lufs": result.plan.master.target_lufs, "evaluation": ev.to_dict(),
    }
    raw = ev.loudness("raw_lufs")
    ref = ev.loudness("reference_lufs")
    if ref:
        approaches = {"plain_sum": stem_loudness_from_gains(raw),
                      "equal_loudness": stem_loudness_from_gains(raw, equal_loudness_gains(raw)),
                      "expertmix": ev.loudness("lufs")}
        row["balance_error_lu"] = {"plain_sum": ev.baseline_balance_error_lu.get("plain_sum"),
                                   "equal_loudness": ev.baseline_balance_error_lu.get("equal_loudness"),
                                   "expertmix": ev.balance_error_lu}
        diffs = {a: balance_differences(v, ref) for a, v in approaches.items()}
        ref_mean = float(np.mean(list(ref.values())))
        row["per_stem"] = [{"stem": n, "reference_rel_lu": ref[n] - ref_mean,
                            **{a: diffs[a].get(n) for a in approaches}} for n in ref]
    if ref_mix is not None:
        bands = {"expertmix": ev.band_error_db}
        files = {n: f for n, f in stem_files.items() if n in raw}
        ref_m = ev.reference_mix
        with tempfile.TemporaryDirectory(prefix="expertmix-eval-") as tmp:
            for name, gains in (("plain_sum", {}), ("equal_loudness", equal_loudness_gains(raw))):
                path = baseline_mix(files, gains, Path(tmp) / f"{name}.wav")
                if path is None:
                    bands[name] = None
                    continue
                m = measure_file(path)
                bands[name] = rms_db(m.spectrum_db[b] - ref_m.spectrum_db[b] for b in m.spectrum_db)
        row["band_error_db"] = bands
    row["defects"] = check_defects(meta, ev)
    m = ev.master
    row["master"] = {"integrated_lufs": m.integrated_lufs, "true_peak_dbtp": m.true_peak_dbtp,
                     "loudness_range_lu": m.loudness_range_lu, "width": m.width, "imbalance_db": m.imbalance_db}
    row["warnings"] = ev.warnings
    return row


# --- report ---------------------------------------------------------------------------------------

def f(v: Any, digits: int = 2, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def three(x: dict[str, Any]) -> str:
    """"sum / equal / expertmix" of a per-approach dict."""
    return " / ".join(f(x.get(a)) for a in ("plain_sum", "equal_loudness", "expertmix")) if x else "–"


def summarise(rows: list[dict[str, Any]], margin_lu: float) -> dict[str, Any]:
    approaches = ("plain_sum", "equal_loudness", "expertmix")
    with_ref = [r for r in rows if r.get("balance_error_lu") and r["balance_error_lu"].get("expertmix") is not None]
    mean = {a: (float(np.mean([r["balance_error_lu"][a] for r in with_ref])) if with_ref else None) for a in approaches}
    with_mix = [r for r in rows if r.get("band_error_db") and r["band_error_db"].get("expertmix") is not None]
    band_mean = {a: (float(np.mean([r["band_error_db"][a] for r in with_mix if r["band_error_db"].get(a) is not None]))
                     if with_mix else None) for a in approaches}
    beats = [r["song"] for r in with_ref
             if r["balance_error_lu"]["expertmix"] + margin_lu <= min(r["balance_error_lu"]["plain_sum"],
                                                                    r["balance_error_lu"]["equal_loudness"])]
    defects = [d for r in rows if "defects" in r for d in r["defects"]["defects"]]
    per_kind: dict[str, dict[str, int]] = {}
    for d in defects:
        k = per_kind.setdefault(d["kind"], {"found": 0, "total": 0, "in_notes": 0})
        k["total"] += 1
        k["found"] += int(d["found"])
        k["in_notes"] += int(d["in_notes"])
    required = [d for d in defects if d["kind"] in REQUIRED_KINDS]
    false_alarms = sum(len(r["defects"]["false_alarms"]) for r in rows if "defects" in r)
    return {"songs": len(rows), "songs_with_reference_balance": len(with_ref), "mean_balance_error_lu": mean,
            "songs_with_reference_mix": len(with_mix), "mean_band_error_db": band_mean,
            "expertmix_beats_both_baselines_on": beats, "margin_lu": margin_lu,
            "defects_found": sum(d["found"] for d in defects), "defects_total": len(defects),
            "defects_in_notes": sum(d["in_notes"] for d in defects),
            "required_found": sum(d["found"] for d in required), "required_total": len(required),
            "false_alarms": false_alarms, "per_kind": per_kind,
            "failed": [r["song"] for r in rows if "error" in r]}


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], header: dict[str, str]) -> str:
    L = [f"## Corpus evaluation: {header['label']}", "",
         f"{header['date']} · expertmix {header['version']} (commit {header['commit']}) · corpus `{header['corpus']}`", "",
         "### Per song", "",
         "| song | genre | ref. balance | stems | balance error LU: sum / equal / expertmix | "
         "band error dB: sum / equal / expertmix | master LUFS / dBTP / LRA | defects found (findings) | "
         "in notes | false alarms |",
         "|---|---|---|---:|---|---|---|---|---|---:|"]
    for r in rows:
        if "error" in r:
            L.append(f"| {r['song']} | | | | **failed**: {r['error'].splitlines()[-1]} | | | | | |")
            continue
        b = r.get("balance_error_lu") or {}
        be = r.get("band_error_db") or {}
        m = r["master"]
        d = r["defects"]
        n_def = len(d["defects"])
        found = sum(x["found"] for x in d["defects"])
        notes = sum(x["in_notes"] for x in d["defects"])
        L.append(f"| {r['song']} | {r['genre']} | {r['reference_balance'] or 'none'} | {r['stems']} | {three(b)} | "
                 f"{three(be)} | {f(m['integrated_lufs'], 1)} / {f(m['true_peak_dbtp'], 1)} / "
                 f"{f(m['loudness_range_lu'], 1)} | "
                 + (f"{found}/{n_def}" if d["constructed"] else f"n/a ({len(d['unverified_findings'])} findings)")
                 + (f" | {notes}/{n_def} | " if d["constructed"] else " | – | ")
                 + (str(len(d["false_alarms"])) if d["constructed"] else "–") + " |")
    s = summary
    mb, mband = s["mean_balance_error_lu"], s["mean_band_error_db"]
    L += ["", "### Overall", "",
          f"* Mean balance error over the {s['songs_with_reference_balance']} songs with a reference balance: "
          f"plain sum **{f(mb['plain_sum'])} LU**, equal loudness **{f(mb['equal_loudness'])} LU**, "
          f"expertmix **{f(mb['expertmix'])} LU**.",
          f"* expertmix beats both baselines by at least {s['margin_lu']:.1f} LU on "
          f"{len(s['expertmix_beats_both_baselines_on'])}/{s['songs_with_reference_balance']} songs"
          + (f" ({', '.join(s['expertmix_beats_both_baselines_on'])})." if s["expertmix_beats_both_baselines_on"] else "."),
          f"* Mean band error against the reference mix ({s['songs_with_reference_mix']} songs): plain sum "
          f"{f(mband['plain_sum'])} dB, equal loudness {f(mband['equal_loudness'])} dB, expertmix "
          f"{f(mband['expertmix'])} dB.",
          f"* Injected defects found by the plan's findings: **{s['defects_found']}/{s['defects_total']}** "
          f"(required kinds DC/hum/rumble/clicks/clipping: {s['required_found']}/{s['required_total']}); "
          f"false alarms: {s['false_alarms']}; mentioned in the plan's free-text notes (informational, not "
          f"counted as found): {s['defects_in_notes']}/{s['defects_total']}.",
          "", "| defect kind | found | in notes | total |", "|---|---:|---:|---:|"]
    for k, v in sorted(s["per_kind"].items()):
        L.append(f"| {k} | {v['found']} | {v['in_notes']} | {v['total']} |")
    if s["failed"]:
        L += ["", f"Failed songs: {', '.join(s['failed'])}"]
    L += ["", "### Details", ""]
    for r in rows:
        if "error" in r:
            continue
        L += [f"#### {r['song']}", ""]
        if not r.get("per_stem") and not r["defects"]["defects"]:
            L += ["No reference balance and no injected defects: master measures only (table above).", ""]
        if r.get("per_stem"):
            L += ["Stem level minus reference, mean removed (LU); reference column: the reference's own balance "
                  "(stem loudness minus the mean over stems).", "",
                  "| stem | reference | plain sum | equal loudness | expertmix |", "|---|---:|---:|---:|---:|"]
            for p in r["per_stem"]:
                L.append(f"| {p['stem']} | {f(p['reference_rel_lu'], 1, True)} | {f(p['plain_sum'], 1, True)} | "
                         f"{f(p['equal_loudness'], 1, True)} | {f(p['expertmix'], 1, True)} |")
            L.append("")
        d = r["defects"]
        if d["defects"]:
            L += ["| stem | injected problem | kind | plan finding | mentioned in notes |", "|---|---|---|---|---|"]
            for x in d["defects"]:
                L.append(f"| {x['stem']} | {x['problem']} | {x['kind']} | "
                         f"{x['action'] if x['found'] else '**missed**'} | {'yes' if x['in_notes'] else 'no'} |")
            L.append("")
        if d["false_alarms"]:
            L.append("False alarms: " + "; ".join(f"{x['stem']} {x['kind']} ({x['action']})" for x in d["false_alarms"]))
            L.append("")
        if d["unverified_findings"]:
            L.append("Findings on a real recording (no injected ground truth): "
                     + "; ".join(f"{x['stem']} {x['kind']} ({x['action']})" for x in d["unverified_findings"]))
            L.append("")
    return "\n".join(L)


#: whether expertmix.mix applies the learned refinements (set from --no-learning)
LEARNING = [True]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder (one folder per song)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "expertmix-corpus-eval",
                    help="where the mixes are written (kept, to listen to)")
    ap.add_argument("--songs", nargs="*", help="only these song folders")
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write every figure as JSON here")
    ap.add_argument("--no-learning", action="store_true", help="rules alone (no learned refinements)")
    ap.add_argument("--label", default="built-in default planner", help="what is being evaluated (report title)")
    ap.add_argument("--revision", help="code revision for the report header (default: git HEAD of this checkout)")
    ap.add_argument("--margin-lu", type=float, default=0.5, help="how much lower expertmix's balance error must be")
    ap.add_argument("--check", action="store_true", help="exit 1 unless expertmix beats both baselines on every "
                                                         "song with a reference and finds every required defect")
    args = ap.parse_args(argv)
    LEARNING[0] = not args.no_learning
    corpus = args.corpus.resolve()
    songs = sorted(p for p in corpus.iterdir() if (p / "meta.json").is_file())
    if args.songs:
        songs = [p for p in songs if p.name in set(args.songs)]
    if not songs:
        print(f"no songs (folders with meta.json) in {corpus}", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for song in songs:
        print(f"… {song.name}", file=sys.stderr, flush=True)
        try:
            rows.append(run_song(song, args.work))
        except Exception as exc:  # report and carry on with the next song
            rows.append({"song": song.name, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()})
            print(f"   failed: {exc}", file=sys.stderr)
    summary = summarise(rows, args.margin_lu)
    header = {"label": args.label, "date": _dt.date.today().isoformat(), "version": expertmix.__version__,
              "commit": args.revision or git_commit(), "corpus": str(corpus)}
    text = markdown(rows, summary, header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "summary": summary, "songs": rows}, indent=2, default=str))
    if args.check:
        ok = (not summary["failed"]
              and len(summary["expertmix_beats_both_baselines_on"]) == summary["songs_with_reference_balance"]
              and summary["required_found"] == summary["required_total"])
        return 0 if ok else 1
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
