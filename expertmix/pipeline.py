"""The mixing pipeline: stems -> analysis -> plan -> render -> master -> report.

Each step is a function from one plain object to the next; the CLI and the Python API
(:func:`expertmix.mix`, :func:`expertmix.plan`, :func:`expertmix.render`) both call these.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


from . import __version__
from .defaults import SessionAnalysis, master_for
from .errors import InputError, PlanError
from .genres import GenreProfile, load_genre
from .io import atomic_write_text, staged_output, yaml_dump
from .master import MasterResult, master_mix
from .plan import Decision, MixPlan, dump_plan, load_plan
from .stems import StemProbe, StemSet, load_stems, probe_stems
from .workers import DEFAULT_PROCESSES, WorkerPool

#: (stage, done, total) -> None; stage is a short label for a progress bar.
Progress = Callable[[str, int, int], None]

Planner = Callable[[StemSet, SessionAnalysis, GenreProfile], MixPlan]


def _noop(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class MixResult:
    """What a mix or render produced: the output folder, the plan and the master's measures."""

    out_dir: Path
    plan: MixPlan
    master: MasterResult
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def mix_path(self) -> Path:
        return self.out_dir / "mix.wav"

    @property
    def master_path(self) -> Path:
        return self.out_dir / "master.wav"


def analyse_session(stems_dir: str | Path, *, cache_dir: Path, role_overrides: Mapping[str, str] | None = None,
                    roles_file: str | Path | None = None, exclude: Sequence[str] = (),
                    sample_rate_hz: int | None = None, skip_silent: bool = False, processes: int = DEFAULT_PROCESSES,
                    pool: WorkerPool | None = None, probe: StemProbe | None = None,
                    progress: Progress = _noop) -> tuple[StemSet, SessionAnalysis]:
    """Probe every stem (all header errors first; or use ``probe``), then load (checks,
    resampling, cache for pyo) and describe each in worker processes, decoding it once
    (:func:`expertmix.descriptors.load_and_describe`): descriptors, masking, tempo."""
    from .descriptors import load_and_describe  # the only Essentia importer, loaded on demand

    if probe is None:
        probe = probe_stems(stems_dir, role_overrides=role_overrides, roles_file=roles_file, exclude=exclude,
                            sample_rate_hz=sample_rate_hz)
    total = len(probe.stems)
    progress("analysing", 0, total)
    stemset, desc = load_and_describe(probe, cache_dir, skip_silent=skip_silent, processes=processes, pool=pool,
                                      progress=lambda name, i, n: progress(f"analysing {name}", i, n))
    progress("analysed", total, total)
    stemset = _roles_from_audio(stemset, desc)
    return stemset, SessionAnalysis(stems={n: d.analysis for n, d in desc.stems.items()},
                                    tempo_bpm=desc.tempo_bpm, tempo_confidence=desc.tempo_confidence,
                                    descriptors=desc)


def _roles_from_audio(stemset: StemSet, desc: Any) -> StemSet:
    """Stems whose names said nothing get a role from the audio (the role classifier in
    ``models/roles``) when it is confident; a user's role always wins (it is never guessed)."""
    from dataclasses import replace

    unknown = {s.name: desc.stems[s.name].values for s in stemset.stems if s.role_source == "default"}
    if not unknown:
        return stemset
    from .role_model import guess_roles

    guesses = guess_roles(unknown, min_confidence=0.5)
    stems = []
    for s in stemset.stems:
        g = guesses.get(s.name)
        if g is None:
            stems.append(s)
            continue
        # the loader's "role not recognised" note is replaced by what the audio said
        kept = tuple(w for w in s.warnings if not w.startswith("role not recognised"))
        if g.accepted:
            note = (f"role {g.role} recognised from the audio (confidence {g.confidence:.2f}); "
                    f"set it with --role {s.path.name}=ROLE if that is wrong")
            stems.append(replace(s, role=g.role, role_source="audio", warnings=kept + (note,)))
            desc.roles[s.name] = g.role
        else:
            stems.append(replace(s, warnings=kept + (f"role not recognised from the name or the audio ({g.reason}); "
                                                     f"using 'other': set it with --role {s.path.name}=ROLE",)))
    return replace(stemset, stems=tuple(stems))


def make_plan(stemset: StemSet, analysis: SessionAnalysis, *, genre: str | GenreProfile = "pop",
              preset: str | None = None, target_lufs: float | None = None, ceiling_dbtp: float | None = None,
              genres_dir: str | Path | None = None, planner: Planner | None = None,
              rules_dir: str | Path | None = None) -> MixPlan:
    """Run a planner (default: the rulebook, plus ``rules_dir``) and apply the delivery target;
    returns a validated plan."""
    from .decide import RulebookPlanner

    profile = genre if isinstance(genre, GenreProfile) else load_genre(genre, genres_dir)
    planner = planner if planner is not None else RulebookPlanner(rules_dir)
    plan = planner(stemset, analysis, profile)
    if preset is not None or target_lufs is not None:
        plan.master = master_for(profile, preset, target_lufs)
    if ceiling_dbtp is not None:
        plan.master.limiter.ceiling_dbtp = ceiling_dbtp
        plan.master.why["limiter.ceiling_dbtp"] = Decision(source="user", reason="set by --ceiling", value=ceiling_dbtp)
    plan.expertmix_version = __version__
    return MixPlan.model_validate(plan.model_dump())  # re-validate everything a planner set


def _genre_profile(genre: str, genres_dir: str | Path | None) -> GenreProfile | None:
    """The profile for ``genre``, or None for ``auto`` (decided after the analysis)."""
    if genre.strip().lower() == "auto":
        return None
    return load_genre(genre, genres_dir)


def resolve_genre(profile: GenreProfile | None, stemset: StemSet, analysis: SessionAnalysis,
                  genres_dir: str | Path | None = None) -> GenreProfile:
    """``--genre auto``: guess the profile from the analysed session (kept in ``analysis.extra``)."""
    if profile is not None:
        return profile
    from .genre_guess import guess_genre
    from .genres import available_genres

    profiles = {n: load_genre(n, genres_dir) for n in available_genres(genres_dir) if n != "base"}
    values = {n: d.values for n, d in analysis.descriptors.stems.items()}
    guess = guess_genre(values, {s.name: s.role for s in stemset.stems}, analysis.tempo_bpm, profiles)
    analysis.extra["genre_guess"] = {"genre": guess.genre, "confidence": guess.confidence, "scores": guess.scores,
                                     "reasons": guess.reasons.get(guess.genre, [])}
    return profiles[guess.genre]


def _note_genre_guess(plan: MixPlan, analysis: SessionAnalysis) -> None:
    g = analysis.extra.get("genre_guess")
    if g:
        why = "; ".join(g["reasons"]) or "closest spectrum"
        plan.notes.insert(0, f"genre guessed from the stems: {g['genre']} (confidence {g['confidence']:.2f}: {why}); "
                             "pass --genre to choose another")
        plan.why["genre"] = Decision(source="auto:genre", reason=f"guessed from roles, tempo and spectrum: {why}",
                                     value=g["genre"])


def _render_into(stage: Path, plan: MixPlan, stemset: StemSet, work: Path, progress: Progress,
                 timings: dict[str, float], analysis: SessionAnalysis | None,
                 trace: list[dict[str, Any]] | None = None, pool: WorkerPool | None = None) -> MasterResult:
    from .render import StemSource, render_mix  # the only pyo importer, loaded on demand
    from .report import write_report

    by_file = {s.path.name: s for s in stemset.stems}
    sources = {}
    for t in plan.tracks:
        stem = by_file.get(t.file)
        if stem is None:
            raise PlanError(f"track {t.name!r} refers to {t.file!r}, which is not in {stemset.source_dir}",
                            field=f"tracks[{t.name}].file", hint="fix the file name in the plan or pass --stems DIR")
        sources[t.name] = StemSource(path=stem.render_path, channels=stem.channels)
    progress("rendering mix", 0, 2)
    # the plan and the analysis do not depend on the render: written meanwhile, while this
    # process mostly waits for the workers
    with ThreadPoolExecutor(max_workers=1) as writer:
        written = writer.submit(_write_plan_files, stage, plan, analysis, trace)
        t0 = time.perf_counter()
        rendered = render_mix(plan, sources, stage, content_frames=stemset.frames, work_dir=work,
                              processes=DEFAULT_PROCESSES, pool=pool)
        timings["render_s"] = time.perf_counter() - t0
        progress("mastering", 1, 2)
        t0 = time.perf_counter()
        master = master_mix(rendered.mix_path, stage / "master.wav", plan.master, sample_rate_hz=plan.sample_rate_hz,
                            frames=rendered.frames, work_dir=work, pool=pool, mix_meter=rendered.mix_meter)
        timings["master_s"] = time.perf_counter() - t0
        written.result()
    progress("writing report", 2, 2)
    write_report(stage / "report.md", plan, stemset, master, analysis, timings)
    return master


def _write_plan_files(stage: Path, plan: MixPlan, analysis: SessionAnalysis | None,
                      trace: list[dict[str, Any]] | None) -> None:
    """plan.yaml, and analysis.yaml and rules-trace.yaml when there is one."""
    dump_plan(plan, stage / "plan.yaml")
    if analysis is not None:
        atomic_write_text(stage / "analysis.yaml", yaml_dump(analysis.to_dict(), sort_keys=False))
    if trace:
        atomic_write_text(stage / "rules-trace.yaml", yaml_dump(trace, sort_keys=False, allow_unicode=True, width=110))


def _session_pool(pool: WorkerPool | None, processes: int) -> Any:
    """The caller's ``pool`` (left running), else a new pool for ``processes`` > 1, else none."""
    if pool is not None:
        return contextlib.nullcontext(pool)
    return WorkerPool(processes) if processes > 1 else contextlib.nullcontext()


def run_mix(stems_dir: str | Path, out_dir: str | Path, *, genre: str = "pop", preset: str | None = None,
            target_lufs: float | None = None, ceiling_dbtp: float | None = None, role_overrides: Mapping[str, str] | None = None,
            roles_file: str | Path | None = None, exclude: Sequence[str] = (), sample_rate_hz: int | None = None,
            skip_silent: bool = False, overwrite: bool = False, genres_dir: str | Path | None = None,
            rules_dir: str | Path | None = None, learning: bool = True, models_dir: str | Path | None = None,
            planner: Planner | None = None, progress: Progress = _noop, pool: WorkerPool | None = None) -> MixResult:
    """Analyse, plan, render and master ``stems_dir`` into ``out_dir`` (atomically).

    ``pool``: a running :class:`expertmix.workers.WorkerPool` to use (left running), e.g. one
    started before the caller's imports (:func:`expertmix.workers.started_pool`); by default
    the workers start here, once the stems' headers have been checked."""
    from .decide import RulebookPlanner

    stems_dir = Path(stems_dir)
    profile = _genre_profile(genre, genres_dir)  # fail on a bad genre or rule before any work
    planner = planner if planner is not None else RulebookPlanner(rules_dir, learning=learning, models_dir=models_dir)
    timings: dict[str, float] = {}
    # every header error first (cheap), before any worker starts
    probe = probe_stems(stems_dir, role_overrides=role_overrides, roles_file=roles_file, exclude=exclude,
                        sample_rate_hz=sample_rate_hz)
    processes = min(DEFAULT_PROCESSES, len(probe.stems))
    if isinstance(planner, RulebookPlanner):
        planner.start_loading()  # its models load while this process waits for the analysis
    with staged_output(Path(out_dir), overwrite=overwrite, protected=(stems_dir,)) as stage, \
            _session_pool(pool, processes) as pool:
        if pool is not None:
            pool.warm()
        work = Path(tempfile.mkdtemp(prefix="expertmix-work-"))
        try:
            t0 = time.perf_counter()
            stemset, analysis = analyse_session(stems_dir, cache_dir=work / "cache", skip_silent=skip_silent,
                                                pool=pool, probe=probe, progress=progress)
            timings["load_and_analyse_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            profile = resolve_genre(profile, stemset, analysis, genres_dir)
            plan = make_plan(stemset, analysis, genre=profile, preset=preset, target_lufs=target_lufs,
                             ceiling_dbtp=ceiling_dbtp, planner=planner)
            _note_genre_guess(plan, analysis)
            timings["plan_s"] = time.perf_counter() - t0
            trace = planner.trace_dict() if hasattr(planner, "trace_dict") else None
            master = _render_into(stage, plan, stemset, work, progress, timings, analysis, trace, pool)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return MixResult(out_dir=Path(out_dir).resolve(), plan=plan, master=master, timings_s=timings)


def run_render(plan_or_path: MixPlan | str | Path, out_dir: str | Path, *, stems_dir: str | Path | None = None,
               overwrite: bool = False, progress: Progress = _noop, pool: WorkerPool | None = None) -> MixResult:
    """Re-render an (edited) plan without re-analysing (``pool``: as for :func:`run_mix`)."""
    plan = load_plan(plan_or_path) if not isinstance(plan_or_path, MixPlan) else plan_or_path
    if stems_dir is not None:
        plan.stems_dir = str(Path(stems_dir).resolve())
    src = Path(plan.stems_dir)
    if not src.is_dir():
        raise InputError(f"stems folder {src} (from the plan) does not exist", hint="pass --stems DIR")
    timings: dict[str, float] = {}
    processes = min(DEFAULT_PROCESSES, len(plan.tracks))
    with staged_output(Path(out_dir), overwrite=overwrite, protected=(src,)) as stage, \
            _session_pool(pool, processes) as pool:
        if pool is not None:
            pool.warm()  # the workers start while the stems are checked
        work = Path(tempfile.mkdtemp(prefix="expertmix-work-"))
        try:
            from .stems import discover_stems

            wanted = {t.file for t in plan.tracks}
            others = [p.name for p in discover_stems(src) if p.name not in wanted]
            t0 = time.perf_counter()
            stemset = load_stems(src, cache_dir=work / "cache", exclude=others, sample_rate_hz=plan.sample_rate_hz,
                                 progress=lambda n, i, k: progress(f"loading {n}", i - 1, k))
            timings["load_s"] = time.perf_counter() - t0
            master = _render_into(stage, plan, stemset, work, progress, timings, None, pool=pool)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return MixResult(out_dir=Path(out_dir).resolve(), plan=plan, master=master, timings_s=timings)


def run_plan(stems_dir: str | Path, plan_path: str | Path, *, genre: str = "pop", preset: str | None = None,
             target_lufs: float | None = None, ceiling_dbtp: float | None = None, role_overrides: Mapping[str, str] | None = None,
             roles_file: str | Path | None = None, exclude: Sequence[str] = (), sample_rate_hz: int | None = None,
             skip_silent: bool = False, genres_dir: str | Path | None = None, rules_dir: str | Path | None = None,
             learning: bool = True, models_dir: str | Path | None = None, progress: Progress = _noop) -> MixPlan:
    """Analyse and plan only; write the plan YAML to ``plan_path`` (atomically)."""
    from .decide import RulebookPlanner

    profile = _genre_profile(genre, genres_dir)
    planner = RulebookPlanner(rules_dir, learning=learning, models_dir=models_dir)
    planner.start_loading()  # its models load while the analysis runs
    work = Path(tempfile.mkdtemp(prefix="expertmix-work-"))
    try:
        stemset, analysis = analyse_session(stems_dir, cache_dir=work / "cache", role_overrides=role_overrides,
                                            roles_file=roles_file, exclude=exclude, sample_rate_hz=sample_rate_hz,
                                            skip_silent=skip_silent, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    profile = resolve_genre(profile, stemset, analysis, genres_dir)
    plan = make_plan(stemset, analysis, genre=profile, preset=preset, target_lufs=target_lufs,
                     ceiling_dbtp=ceiling_dbtp, planner=planner)
    _note_genre_guess(plan, analysis)
    dump_plan(plan, plan_path)
    return plan


def run_analyse(stems_dir: str | Path, out_file: str | Path, *, role_overrides: Mapping[str, str] | None = None,
                roles_file: str | Path | None = None, exclude: Sequence[str] = (), sample_rate_hz: int | None = None,
                skip_silent: bool = False, processes: int = DEFAULT_PROCESSES, progress: Progress = _noop) -> SessionAnalysis:
    """Describe every stem (descriptors, masking, tempo) and write them as YAML (atomically)."""
    work = Path(tempfile.mkdtemp(prefix="expertmix-work-"))
    try:
        _stemset, analysis = analyse_session(stems_dir, cache_dir=work / "cache", role_overrides=role_overrides,
                                             roles_file=roles_file, exclude=exclude, sample_rate_hz=sample_rate_hz,
                                             skip_silent=skip_silent, processes=processes, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(Path(out_file), yaml_dump(analysis.to_dict(), sort_keys=False))
    return analysis


def explain_session(stems_dir: str | Path, *, genre: str = "pop", role_overrides: Mapping[str, str] | None = None,
                    roles_file: str | Path | None = None, exclude: Sequence[str] = (),
                    rules_dir: str | Path | None = None, genres_dir: str | Path | None = None,
                    progress: Progress = _noop) -> list:
    """Analyse a session and run the rulebook; the trace of every rule on every target."""
    from .decide import RulebookPlanner

    profile = _genre_profile(genre, genres_dir)
    planner = RulebookPlanner(rules_dir)
    work = Path(tempfile.mkdtemp(prefix="expertmix-work-"))
    try:
        stemset, analysis = analyse_session(stems_dir, cache_dir=work / "cache", role_overrides=role_overrides,
                                            roles_file=roles_file, exclude=exclude, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    planner(stemset, analysis, resolve_genre(profile, stemset, analysis, genres_dir))
    return planner.last.trace


def describe(result: MixResult) -> dict[str, Any]:
    """A short, plain summary (for --json output and logs)."""
    m = result.master
    return {"out_dir": str(result.out_dir), "master_lufs": m.master["integrated_lufs"],
            "master_true_peak_dbtp": m.master["true_peak_dbtp"], "master_lra_lu": m.master["loudness_range_lu"],
            "target_lufs": m.target_lufs, "within_target": m.within_target, "tracks": len(result.plan.tracks)}
