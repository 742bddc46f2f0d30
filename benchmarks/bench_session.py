#!/usr/bin/env python3
"""Speed and memory benchmark of expertmix on a full-size session, against pedalboard.

Builds (once, cached) a deterministic 16-stem x 180 s session at 44.1 kHz (see session_gen.py),
then measures, each in a fresh process so that peak RSS is per stage:

  load        expertmix.stems.load_stems: probe + decode every stem once (no analysis)
  analysis    expertmix.pipeline.analyse_session: decode + per-stem analysis + tempo
  planning    expertmix.pipeline.make_plan (genre pop) + dump_plan
  render      expertmix.render.render_mix: the pyo mix render (mix.wav + 16 stem files)
  master      expertmix.master.master_mix: the measure-and-correct mastering loop
  cli         `expertmix mix STEMS -o OUT --quiet`, end to end (process wall time)
  pedalboard  the same chain (read from the plan expertmix wrote) rendered with pedalboard:
              mix.wav + master.wav                    <- the reference of the speed target
  pedalboard+stems  the same, also writing the 16 processed stem files expertmix writes

Stages run interleaved (every stage once per round, --repeat rounds) so that machine load hits
both sides alike; medians are reported. Targets (spine issue, 2 cores): `expertmix mix` wall
time <= 2x the pedalboard render; peak RSS <= 500 MB; the render does not hold all stems in RAM.

    python benchmarks/bench_session.py                        # 16 x 180 s, 3 rounds
    python benchmarks/bench_session.py --seconds 20 --repeat 1  # quick check (< 1 min)
    python benchmarks/bench_session.py --json results.json --workdir /data/bench

Never run by the test suite (it lives outside tests/ and needs pedalboard: pip install ".[bench]").
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STAGES = ["load", "analysis", "planning", "render", "master", "pedalboard", "cli", "pedalboard_stems"]
LABELS = {
    "load": "load (probe + decode all stems)",
    "analysis": "analysis (decode + analyse + tempo)",
    "planning": "planning (make_plan + plan.yaml)",
    "render": "render (pyo: mix + 16 stem files)",
    "master": "mastering (loudness loop)",
    "cli": "**`expertmix mix` end to end**",
    "pedalboard": "**pedalboard chain render (mix + master)**",
    "pedalboard_stems": "pedalboard chain render + 16 stem files",
}
SPEED_TARGET = 2.0      # expertmix mix / pedalboard render
RSS_TARGET_MB = 500.0


# --------------------------------------------------------------------------------------------
# child side: one stage in this (fresh) process


def _child(stage: str, session: Path, work: Path, result: Path) -> None:
    import resource

    out: dict = {}
    t_import = time.perf_counter()
    if stage == "load":
        from expertmix.stems import load_stems
        out["import_s"] = time.perf_counter() - t_import
        cache = work / "cache-load"
        t0 = time.perf_counter()
        stemset = load_stems(session, cache_dir=cache)
        out["stage_s"] = time.perf_counter() - t0
        out["cached_stems"] = sum(1 for s in stemset.stems if s.cached)
        shutil.rmtree(cache, ignore_errors=True)
    elif stage == "analysis":
        from expertmix.pipeline import analyse_session
        out["import_s"] = time.perf_counter() - t_import
        cache = work / "cache-analysis"
        t0 = time.perf_counter()
        stemset, analysis = analyse_session(session, cache_dir=cache)
        out["stage_s"] = time.perf_counter() - t0
        out["tempo_bpm"] = analysis.tempo_bpm
        with open(work / "analysis.pkl", "wb") as fh:
            pickle.dump((stemset, analysis), fh)
        shutil.rmtree(cache, ignore_errors=True)
    elif stage == "planning":
        from expertmix.pipeline import make_plan
        from expertmix.plan import dump_plan
        out["import_s"] = time.perf_counter() - t_import
        with open(work / "analysis.pkl", "rb") as fh:
            stemset, analysis = pickle.load(fh)
        t0 = time.perf_counter()
        plan = make_plan(stemset, analysis, genre="pop")
        dump_plan(plan, work / "plan.yaml")
        out["stage_s"] = time.perf_counter() - t0
        out["eq_bands"] = sum(len(t.eq) for t in plan.tracks)
        out["compressors"] = sum(t.compressor.enabled for t in plan.tracks)
    elif stage == "render":
        from expertmix.plan import load_plan
        from expertmix.render import StemSource, render_mix
        from expertmix.stems import probe_stems
        out["import_s"] = time.perf_counter() - t_import
        plan = load_plan(work / "plan.yaml")
        probe = probe_stems(session)
        by_file = {s.path.name: s for s in probe.stems}
        assert not any(s.needs_cache for s in probe.stems), "stems should stream in place"
        sources = {t.name: StemSource(path=by_file[t.file].path, channels=by_file[t.file].channels)
                   for t in plan.tracks}
        dest = work / "render"
        shutil.rmtree(dest, ignore_errors=True)
        scratch = work / "render-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        rendered = render_mix(plan, sources, dest, content_frames=max(s.frames for s in probe.stems),
                              work_dir=scratch)
        out["stage_s"] = time.perf_counter() - t0
        out["frames"] = rendered.frames
    elif stage == "master":
        import soundfile as sf

        from expertmix.master import master_mix
        from expertmix.plan import load_plan
        out["import_s"] = time.perf_counter() - t_import
        plan = load_plan(work / "plan.yaml")
        mix = work / "render" / "mix.wav"
        dest = work / "master"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        t0 = time.perf_counter()
        res = master_mix(mix, dest / "master.wav", plan.master, sample_rate_hz=plan.sample_rate_hz,
                         frames=sf.info(str(mix)).frames, work_dir=dest)
        out["stage_s"] = time.perf_counter() - t0
        out["passes"] = res.passes
        out["master_lufs"] = res.master["integrated_lufs"]
        out["master_dbtp"] = res.master["true_peak_dbtp"]
    elif stage in ("pedalboard", "pedalboard_stems"):
        import pedalboard

        from pedalboard_chain import render_plan
        out["import_s"] = time.perf_counter() - t_import
        out["pedalboard_version"] = pedalboard.__version__
        dest = work / stage
        shutil.rmtree(dest, ignore_errors=True)
        timings = render_plan(work / "plan.yaml", dest, write_stems=stage == "pedalboard_stems")
        out["stage_s"] = timings.pop("render_s")
        out.update(timings)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    if "expertmix" in sys.modules:
        out["expertmix_file"] = sys.modules["expertmix"].__file__
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["self_maxrss_mb"] = ru.ru_maxrss / 1024.0
    result.write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------
# parent side


def _self_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _expertmix_cmd() -> list[str]:
    """`expertmix` as its console script runs it, importing expertmix from the benchmarked source."""
    return [sys.executable, "-c", "import sys, expertmix; print('expertmix_file=' + expertmix.__file__, file=sys.stderr); "
            "from expertmix.__main__ import main; sys.argv[0] = 'expertmix'; sys.exit(main())"]


def _prepare_source(args: argparse.Namespace, root: Path) -> tuple[Path, dict]:
    """The folder to put first on the children's PYTHONPATH, and what it is (for the results)."""
    repo = HERE.parent
    info: dict = {}
    if args.ref:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", args.ref], capture_output=True, text=True,
                             check=True).stdout.strip()
        src = root / f"src-{sha[:12]}"
        if not (src / "expertmix" / "__init__.py").exists():
            src.mkdir(parents=True, exist_ok=True)
            names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", sha], capture_output=True,
                                   text=True, check=True).stdout.split()
            wanted = [n for n in ("expertmix", "rules", "genres", "models") if n in names]
            archive = subprocess.run(["git", "-C", str(repo), "archive", sha, *wanted], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        # byte-compile it, as `pip install` does: with PYTHONDONTWRITEBYTECODE set (as on the CI
        # machines) every run would otherwise compile the package from source, in the main
        # process and in the workers' fork server (~0.3 s of a mix)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "expertmix")], check=True)
        info.update(source=f"git {args.ref} = {sha}", commit=sha, dirty=False, byte_compiled=True)
    else:
        src = (args.src or repo).resolve()
        info["source"] = str(src)
        git = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
        if git.returncode == 0:
            info["commit"] = git.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "expertmix"],
                                   capture_output=True, text=True).stdout
            info["dirty"] = bool(dirty.strip())
    if not (src / "expertmix" / "__init__.py").exists():
        raise SystemExit(f"no expertmix package in {src}")
    init = (src / "expertmix" / "__init__.py").read_text()
    for line in init.splitlines():
        if line.startswith("__version__"):
            info["expertmix_version"] = line.split("=", 1)[1].strip().strip("\"'")
    return src, info


#: Environment of every child: set by main() (PYTHONPATH to the benchmarked source, BLAS threads).
CHILD_ENV: dict[str, str] = {}


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc), those that exist right now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB, or (0, 0) once it has gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


class _TreeMemory:
    """Samples the memory of a process and all its descendants (the workers, their fork server)
    every ``interval_s`` while it runs: the peak of the summed PSS (shared pages counted once
    overall: what the whole job costs the machine) and of the summed RSS (shared pages counted in
    every process: an upper bound). Linux only; elsewhere both stay None."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid, self.interval_s = pid, interval_s
        self.pss_mb: float | None = None
        self.rss_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if os.path.exists(f"/proc/{pid}/smaps_rollup"):
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pss = rss = 0
            for p in _process_tree(self.pid):
                a, b = _memory_kb(p)
                pss, rss = pss + a, rss + b
            if pss:
                self.pss_mb = max(self.pss_mb or 0.0, pss / 1024.0)
                self.rss_mb = max(self.rss_mb or 0.0, rss / 1024.0)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _spawn(argv: list[str], log: Path, cwd: Path, sample_memory: bool = False) -> dict:
    """Run ``argv`` to completion; wall time, the child's own rusage (os.wait4) and, with
    ``sample_memory``, the peak memory of its whole process tree (:class:`_TreeMemory`: the
    worker processes included). Sampling reads every process's page tables (smaps_rollup), which
    holds up its page faults: timed runs do not sample.

    ``cwd`` must not hold an ``expertmix`` package: ``python -c`` puts the current folder first on
    sys.path, ahead of PYTHONPATH.
    """
    env = dict(os.environ, PYO_GUI_WX="0", **CHILD_ENV)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        tree = _TreeMemory(proc.pid) if sample_memory else None
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            if tree is not None:
                tree.stop()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"process_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024.0,
           "returncode": proc.returncode}
    if tree is not None and tree.pss_mb is not None:
        out["tree_pss_mb"], out["tree_rss_mb"] = tree.pss_mb, tree.rss_mb
    return out


def _report_timings(report: Path) -> dict[str, float]:
    """The '## Timings' section of expertmix's report.md."""
    out: dict[str, float] = {}
    if not report.exists():
        return out
    on = False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            on = line.strip() == "## Timings"
        elif on and line.startswith("- ") and line.endswith(" s") and ":" in line:
            key, val = line[2:].rsplit(":", 1)
            out[key.strip().replace(" ", "_") + "_s"] = float(val.strip()[:-2])
    return out


def run_stage(stage: str, session: Path, work: Path, logs: Path, rnd: int | str, keep: bool,
              sample_memory: bool = False) -> dict:
    log = logs / f"{stage}-{rnd}.log"
    if stage == "cli":
        dest = work / "cli-out"
        shutil.rmtree(dest, ignore_errors=True)
        rec = _spawn(_expertmix_cmd() + ["mix", str(session), "-o", str(dest), "--quiet"], log, work, sample_memory)
        for line in log.read_text().splitlines():
            if line.startswith("expertmix_file="):
                rec["expertmix_file"] = line.split("=", 1)[1]
        rec["stage_s"] = rec["process_s"]
        rec.update({"cli_" + k: v for k, v in _report_timings(dest / "report.md").items()})
        if rec["returncode"] == 0 and not (dest / "master.wav").exists():
            rec["returncode"] = -1
        if not keep:
            shutil.rmtree(dest, ignore_errors=True)
    else:
        result = work / f"result-{stage}.json"
        result.unlink(missing_ok=True)
        rec = _spawn([sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--session", str(session),
                      "--work", str(work), "--result", str(result)], log, work, sample_memory)
        if rec["returncode"] == 0 and result.exists():
            rec.update(json.loads(result.read_text()))
        if not keep and stage == "master":
            shutil.rmtree(work / "render", ignore_errors=True)
            shutil.rmtree(work / "render-scratch", ignore_errors=True)
            shutil.rmtree(work / "master", ignore_errors=True)
        if not keep and stage.startswith("pedalboard"):
            shutil.rmtree(work / stage, ignore_errors=True)
    rec["stage"] = stage
    rec["round"] = rnd
    if rec["returncode"] != 0:
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise SystemExit(f"stage {stage} failed (exit {rec['returncode']}); log {log}:\n{tail}")
    return rec


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return statistics.median(vals) if vals else None


def summarise(runs: list[dict], seconds: float, stages: list[str], decoded_mb: float,
              memory_runs: list[dict] | None = None) -> dict:
    med: dict[str, dict] = {}
    for st in stages:
        rs = [r for r in runs if r["stage"] == st]
        if not rs:
            continue
        keys = sorted({k for r in rs for k in r if k not in ("stage", "round", "returncode")})
        med[st] = {k: _median(rs, k) for k in keys if _median(rs, k) is not None}
        med[st]["rtf"] = seconds / med[st]["stage_s"] if med[st].get("stage_s") else None
        for r in memory_runs or []:  # the untimed memory round
            if r["stage"] == st and r.get("tree_pss_mb") is not None:
                med[st]["tree_pss_mb"], med[st]["tree_rss_mb"] = r["tree_pss_mb"], r["tree_rss_mb"]
    summary: dict = {"median": med}
    if "cli" in med and "pedalboard" in med:
        # ratio per round (interleaved runs), then the median of the ratios
        ratios = []
        for rnd in sorted({r["round"] for r in runs}):
            c = [r for r in runs if r["round"] == rnd and r["stage"] == "cli"]
            p = [r for r in runs if r["round"] == rnd and r["stage"] == "pedalboard"]
            if c and p:
                ratios.append(c[0]["stage_s"] / p[0]["stage_s"])
        ratio = statistics.median(ratios)
        summary["ratio_cli_vs_pedalboard"] = ratio
        summary["ratio_cli_vs_pedalboard_per_round"] = ratios
        if "pedalboard_stems" in med:
            summary["ratio_cli_vs_pedalboard_stems"] = med["cli"]["stage_s"] / med["pedalboard_stems"]["stage_s"]
        summary["speed_target_pass"] = ratio <= SPEED_TARGET
    ex_stages = [s for s in ("load", "analysis", "planning", "render", "master", "cli") if s in med]
    if ex_stages:
        peak = max(med[s]["rss_mb"] for s in ex_stages)
        summary["expertmix_peak_rss_mb"] = peak
        # the verdict counts every process of the job (workers and fork server too) when known
        tree = [med[s]["tree_pss_mb"] for s in ex_stages if med[s].get("tree_pss_mb") is not None]
        if tree:
            summary["expertmix_peak_tree_pss_mb"] = max(tree)
            summary["expertmix_peak_tree_rss_mb"] = max(med[s]["tree_rss_mb"] for s in ex_stages
                                                        if med[s].get("tree_rss_mb") is not None)
        summary["rss_target_pass"] = (max(tree) if tree else peak) <= RSS_TARGET_MB
    if "render" in med:
        # what the render holds: all its processes when known (the workers render the tracks)
        held = med["render"].get("tree_pss_mb") or med["render"]["rss_mb"]
        summary["render_rss_mb"] = held
        summary["decoded_session_mb"] = decoded_mb
        # meaningful only when the decoded session dwarfs the interpreter and libraries
        summary["streaming_pass"] = None if decoded_mb < 400 else held < 0.5 * decoded_mb
    return summary


def _fmt(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def markdown(summary: dict, meta: dict) -> str:
    med = summary["median"]
    lines = [f"Session: {meta['stems']} stems ({meta['mono']} mono, {meta['stereo']} stereo) x {meta['seconds']:g} s "
             f"at 44.1 kHz, 24-bit WAV; {meta['repeat']} round(s), medians; {meta['date']}; "
             f"{meta['cpus']} CPUs; load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end.",
             f"expertmix {meta.get('expertmix_version', '?')} from {meta.get('source')}"
             + (f" (commit {meta['commit'][:10]}{', with uncommitted edits' if meta.get('dirty') else ''})"
                if meta.get("commit") and not str(meta.get("source", "")).startswith("git") else "")
             + (" (byte-compiled, as pip install does)" if meta.get("byte_compiled") else "")
             + f"; pedalboard {meta.get('pedalboard_version', '?')}, pyo {meta.get('pyo_version', '?')}, "
               f"numpy {meta.get('numpy_version', '?')}; BLAS threads: {meta.get('blas_threads') or 'library default'}.",
             "",
             "| stage | wall s | realtime × | CPU s | peak RSS MB | all processes: peak PSS MB (RSS) |",
             "|---|---:|---:|---:|---:|---:|"]
    for st in STAGES:
        if st not in med:
            continue
        m = med[st]
        tree = (f"{_fmt(m.get('tree_pss_mb'), 0)} ({_fmt(m.get('tree_rss_mb'), 0)})"
                if m.get("tree_pss_mb") is not None else "—")
        lines.append(f"| {LABELS[st]} | {_fmt(m['stage_s'])} | {_fmt(m['rtf'], 1)} | {_fmt(m['cpu_s'], 1)} | "
                     f"{_fmt(m['rss_mb'], 0)} | {tree} |")
    lines.append("")
    lines.append("Wall s is the stage function alone, timed inside its process (imports excluded), except for "
                 "`expertmix mix`, which is the whole process. Realtime × = audio seconds / wall seconds. CPU s "
                 "and peak RSS are the main process's own (os.wait4: worker processes, children of a fork "
                 "server, are not in it). The last column sums every process of the job (main, fork server, "
                 "workers), sampled every 20 ms in an extra, untimed round (sampling slows a process's page "
                 "faults): PSS counts shared pages once, RSS in every process.")
    if "analysis" in med and "load" in med:
        lines.append(f"Analysis alone (analysis - load): {med['analysis']['stage_s'] - med['load']['stage_s']:.2f} s.")
    if "cli" in med:
        c = med["cli"]
        parts = ", ".join(f"{k[4:-2].replace('_', ' ')} {v:.2f} s" for k, v in c.items() if k.startswith("cli_"))
        if parts:
            lines.append(f"Inside `expertmix mix` (its report.md): {parts}.")
    if "master" in med and "passes" in med["master"]:
        lines.append(f"Mastering loop: {med['master']['passes']:.0f} pyo passes (median).")
    lines.append("")
    if "ratio_cli_vs_pedalboard" in summary:
        r = summary["ratio_cli_vs_pedalboard"]
        per = ", ".join(f"{x:.2f}" for x in summary["ratio_cli_vs_pedalboard_per_round"])
        ok = "PASS" if summary["speed_target_pass"] else "FAIL"
        lines.append(f"- Speed: `expertmix mix` / pedalboard render = **{r:.2f}×** (per round: {per}); target ≤ "
                     f"{SPEED_TARGET:g}× → **{ok}**")
        if "ratio_cli_vs_pedalboard_stems" in summary:
            lines.append(f"  (against pedalboard also writing the 16 stem files: "
                         f"{summary['ratio_cli_vs_pedalboard_stems']:.2f}×)")
    if "expertmix_peak_tree_pss_mb" in summary:
        ok = "PASS" if summary["rss_target_pass"] else "FAIL"
        lines.append(f"- Memory: expertmix peak, all processes summed (largest stage, incl. `expertmix mix`) = "
                     f"**{summary['expertmix_peak_tree_pss_mb']:.0f} MB PSS** "
                     f"({summary['expertmix_peak_tree_rss_mb']:.0f} MB RSS counting shared pages in every "
                     f"process; the main process alone peaks at {summary['expertmix_peak_rss_mb']:.0f} MB); "
                     f"target ≤ {RSS_TARGET_MB:g} MB → **{ok}**")
    elif "expertmix_peak_rss_mb" in summary:
        ok = "PASS" if summary["rss_target_pass"] else "FAIL"
        lines.append(f"- Memory: expertmix peak RSS of the main process (largest stage, incl. `expertmix mix`; "
                     f"worker processes not measured on this platform) = "
                     f"**{summary['expertmix_peak_rss_mb']:.0f} MB**; target ≤ {RSS_TARGET_MB:g} MB → **{ok}**")
    if "render" in med:
        decoded = meta["decoded_session_mb"]
        held = summary["render_rss_mb"]
        verdict = summary.get("streaming_pass")
        ok = "n/a (session too small to tell; run at full size)" if verdict is None else "PASS" if verdict else "FAIL"
        lines.append(f"- Streaming: render peak memory {held:.0f} MB (all its processes when measured) vs "
                     f"{decoded:.0f} MB for all stems decoded "
                     f"(float32) → **{ok}**")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="session length, s (default 180)")
    ap.add_argument("--stems", type=int, default=16, help="number of stems (default 16)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the session (cached) and scratch outputs go (default: $TMPDIR/expertmix-bench)")
    ap.add_argument("--json", type=Path, default=None, help="also write all results as JSON here")
    ap.add_argument("--only", default=None, help="comma-separated subset of stages: " + ",".join(STAGES))
    ap.add_argument("--keep", action="store_true", help="keep rendered outputs (several GB at full size)")
    ap.add_argument("--src", type=Path, default=None,
                    help="folder holding the expertmix package to benchmark (default: this repository's working tree)")
    ap.add_argument("--ref", default=None,
                    help="benchmark a git commit instead: `git archive REF` of expertmix/ rules/ genres/ models/ "
                         "into the workdir (e.g. HEAD; ignores uncommitted edits)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OPENBLAS/OMP/MKL_NUM_THREADS for every child (default: the libraries' own default)")
    # internal: run one stage in this process
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--session", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stage:
        _child(args.stage, args.session, args.work, args.result)
        return 0

    stages = STAGES if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(sorted(unknown))}")
    if any(s in stages for s in ("render", "master", "pedalboard", "pedalboard_stems")) and "planning" not in stages:
        stages = ["analysis", "planning"] + [s for s in stages if s not in ("analysis", "planning")]
    if "planning" in stages and "analysis" not in stages:
        stages = ["analysis"] + stages
    if "master" in stages and "render" not in stages:
        stages.insert(stages.index("master"), "render")
    stages = [s for s in STAGES if s in stages]

    root = (args.workdir or Path(tempfile.gettempdir()) / "expertmix-bench").resolve()
    session = root / f"session-{args.stems}x{args.seconds:g}s"
    work = root / "work"
    logs = root / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)

    src, src_info = _prepare_source(args, root)
    CHILD_ENV["PYTHONPATH"] = os.pathsep.join([str(src)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            CHILD_ENV[var] = str(args.blas_threads)
    print(f"expertmix from: {src_info['source']}" + (" (uncommitted edits)" if src_info.get("dirty") else ""),
          flush=True)

    # Generate in a child process: this parent stays small (no numpy), because a child's peak RSS
    # as the kernel reports it can never be below its parent's RSS at fork time.
    t0 = time.perf_counter()
    print(f"session: {session}", flush=True)
    gen = subprocess.run([sys.executable, str(HERE / "session_gen.py"), str(session), repr(args.seconds), str(args.stems)])
    if gen.returncode != 0:
        raise SystemExit("generating the session failed")
    gen_s = time.perf_counter() - t0
    info = json.loads((session / "session.json").read_text())
    channels = info["channels"]
    mono = sum(1 for ch in channels if ch == 1)
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": args.seconds, "stems": args.stems, "mono": mono, "stereo": args.stems - mono,
        "repeat": args.repeat, "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "session_dir": str(session), "stages": stages,
        "decoded_session_mb": info["frames"] * sum(channels) * 4 / 2 ** 20,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "generate_s": gen_s,
        "parent_maxrss_mb": _self_rss_mb(),
    }
    meta.update(src_info)
    meta["blas_threads"] = args.blas_threads
    for dist in ("pedalboard", "pyo", "numpy"):
        try:
            meta[f"{dist}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass

    runs: list[dict] = []
    for rnd in range(1, args.repeat + 1):
        for st in stages:
            rec = run_stage(st, session, work, logs, rnd, args.keep)
            runs.append(rec)
            print(f"round {rnd}/{args.repeat}  {st:<17} {rec['stage_s']:7.2f} s  process {rec['process_s']:7.2f} s  "
                  f"cpu {rec['cpu_s']:7.2f} s  rss {rec['rss_mb']:7.0f} MB", flush=True)
    # one more, untimed round that samples the memory of every process of each stage
    memory_runs: list[dict] = []
    for st in stages:
        rec = run_stage(st, session, work, logs, "memory", args.keep, sample_memory=True)
        memory_runs.append(rec)
        print(f"memory round    {st:<17} all processes: peak PSS {rec.get('tree_pss_mb') or 0:7.0f} MB, "
              f"RSS {rec.get('tree_rss_mb') or 0:7.0f} MB", flush=True)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(runs, args.seconds, stages, meta["decoded_session_mb"], memory_runs)
    text = markdown(summary, meta)
    print()
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs,
                                         "memory_runs": memory_runs}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
