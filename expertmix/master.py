"""Mastering for delivery: loudness targets, true-peak ceilings and the measure-and-correct loop.

The master chain itself (EQ, glue compressor, look-ahead limiter) is rendered by pyo in
:func:`expertmix.render.render_master`. This module chooses its gains: the mix is first brought
to :data:`CHAIN_REFERENCE_LUFS` (so the glue compressor's threshold means the same on every
song), then driven into the limiter until the master's integrated loudness (ITU-R BS.1770-4)
is within ``tolerance_lu`` of the target, with the limiter's threshold lowered until the true
peak (4x oversampled) is at or below the ceiling.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError, RenderError
import numpy as np

from .io import copy_wav
from .loudness import LoudnessMeter, LoudnessStats, file_peaks, meter_file
from .plan import MasterPlan
from .render import MasterSettings, render_master, render_master_pre
from .workers import WorkerPool

#: Loudness the master chain sees at its input (the glue threshold is relative to it).
CHAIN_REFERENCE_LUFS = -20.0
#: Integrated loudness below which a mix counts as silent and is not mastered.
SILENT_MIX_LUFS = -70.0
#: Extra lowering of the limiter threshold when a pass overshoots the true-peak ceiling, dB.
_OVER_MARGIN_DB = 0.35
#: The first round's candidates: (drive in dB above the nominal drive, i.e. target minus the
#: chain's reference; limiter threshold in dB under the true-peak ceiling). Limiting takes some
#: loudness away (0.3-0.5 LU at -14 LUFS on the demo and the benchmark session) and inter-sample
#: overs run 0.1-1.3 dB over the sample-peak threshold, so one candidate is cautious and one
#: expects a dense mix.
_FIRST_CANDIDATES = ((0.25, 0.6), (0.75, 1.45))
#: Drives tried in later rounds, dB around the estimate from the previous passes.
_NEXT_DRIVES_DB = (-0.15, 0.15)
#: Limiter renders per round (at once with a worker pool).
CANDIDATES = len(_FIRST_CANDIDATES)
#: A pass is kept when it lands this close to the target (the promise is +-``tolerance_lu``).
_AIM_LU = 0.3
_MAX_ROUNDS = 5
#: Largest change of limiter drive per pass, and most drive beyond the plain loudness gain.
_MAX_STEP_DB, _MAX_EXTRA_DRIVE_DB = 4.0, 12.0
#: Shortest limiter release the loop may use for loud targets (faster distorts lows).
_MIN_RELEASE_MS = 5.0


@dataclass(frozen=True)
class Preset:
    """A delivery target."""

    name: str
    target_lufs: float
    ceiling_dbtp: float
    doc: str


#: Delivery presets (MIXING-FACTS.md "Delivery": Spotify/YouTube -14, Apple -16, EBU R128 -23;
#: Spotify advises 2 dB of true-peak headroom for masters louder than -14 LUFS).
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("streaming", -14.0, -1.0, "Spotify, YouTube, Tidal, Amazon: -14 LUFS, -1 dBTP"),
        Preset("apple", -16.0, -1.0, "Apple Music / AES TD1008: -16 LUFS, -1 dBTP"),
        Preset("loud", -9.0, -1.0, "club and loud masters: -9 LUFS, -1 dBTP (Spotify advises -2 dBTP above -14 LUFS: "
                               "pass --ceiling -2 for that)"),
        Preset("broadcast", -23.0, -1.0, "EBU R128 broadcast: -23 LUFS, -1 dBTP"),
    )
}


def preset(name: str) -> Preset:
    """The preset called ``name`` or an :class:`InputError` listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown master preset {name!r}",
                         hint=f"use one of {', '.join(PRESETS)} or --target-lufs") from None


#: Master-minus-mix gain spread (p5..p95 over the loud 400 ms blocks) above which pumping is audible.
PUMPING_LU = 1.5


def _momentary(path: Path) -> np.ndarray:
    return meter_file(str(path), track_peaks=False).momentary_lufs()


def gain_modulation_lu(mix_path: Path, master_path: Path) -> float:
    """How much the master chain's gain moves: the p5..p95 spread of master minus mix momentary
    loudness over the blocks within 20 LU of the loudest. A static gain reads ~0; pumping reads
    several LU."""
    return modulation_lu(_momentary(mix_path), _momentary(master_path))


def modulation_lu(mix_momentary_lufs: np.ndarray, master_momentary_lufs: np.ndarray) -> float:
    """:func:`gain_modulation_lu` from the two momentary loudness series (LUFS per 100 ms)."""
    a, b = mix_momentary_lufs, master_momentary_lufs
    n = min(len(a), len(b))
    if n == 0:
        return 0.0
    a, b = a[:n], b[:n]
    active = a > a.max() - 20.0
    if not active.any():
        return 0.0
    p5, p95 = np.percentile((b - a)[active], [5, 95])
    return round(float(p95 - p5), 2)


@dataclass
class MasterResult:
    """What the loudness loop did and what the master measures."""

    path: Path
    target_lufs: float
    ceiling_dbtp: float
    mix: dict[str, float]
    master: dict[str, float]
    pre_gain_db: float
    drive_db: float
    limit_db: float
    release_ms: float
    passes: int
    within_target: bool
    notes: list[str] = field(default_factory=list)
    gain_modulation_lu: float = 0.0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = self.path.name
        for k in ("pre_gain_db", "drive_db", "limit_db"):
            d[k] = round(d[k], 2)
        return d


@dataclass
class _Pass:
    """One render of the limiter half and what it measured (delivered part only)."""

    settings: MasterSettings
    raw_path: Path
    stats: LoudnessStats
    momentary_lufs: np.ndarray
    delivered_path: Path


def _limiter_pass(pre_path: Path, plan: MasterPlan, settings: MasterSettings, sample_rate_hz: int,
                  frames: int, work_dir: Path, delivered_path: Path) -> _Pass:
    """Render drive + limiter into ``work_dir/master-raw.wav``, then write the delivered part
    (the latency trimmed, the mix's length) as 24-bit ``delivered_path`` and meter it on the way
    (the float samples, before the 24-bit rounding). Runs in a worker process or in this one."""
    work_dir.mkdir(parents=True, exist_ok=True)
    raw_path = work_dir / "master-raw.wav"
    latency = render_master(pre_path, raw_path, plan, settings, sample_rate_hz=sample_rate_hz,
                            content_frames=frames, work_dir=work_dir)
    meter = LoudnessMeter(sample_rate_hz, 2)  # (render_master writes stereo at the session rate)
    copy_wav(raw_path, delivered_path, start_frame=latency, frames=frames, subtype="PCM_24", tap=meter.process)
    return _Pass(settings, raw_path, meter.stats(), meter.momentary_lufs(), delivered_path)


def master_mix(mix_path: Path, out_path: Path, plan: MasterPlan, *, sample_rate_hz: int, frames: int,
               work_dir: Path, pool: WorkerPool | None = None, mix_meter: LoudnessMeter | None = None) -> MasterResult:
    """Master ``mix_path`` into ``out_path`` (24-bit WAV, same length as the mix).

    The loudness loop renders :data:`CANDIDATES` limiter drives per round and keeps the best
    one within tolerance; ``pool`` (a :class:`expertmix.workers.WorkerPool`) renders them at
    once. The candidates do not depend on ``pool``, so neither does the master. ``mix_meter``:
    a :class:`~expertmix.loudness.LoudnessMeter` that has measured the whole of ``mix_path``
    already (the renderer's), else the mix is measured here.
    """
    if mix_meter is None:
        mix_meter = meter_file(str(mix_path))
    # the mix's peaks are only reported: a meter without them gets them from a worker, meanwhile
    peaks_job = (pool.submit(file_peaks, str(mix_path)) if pool is not None and not mix_meter.tracks_peaks
                 else None)

    def mix_stats_now() -> LoudnessStats:
        if mix_meter.tracks_peaks:
            return mix_meter.stats()
        return mix_meter.stats(peaks_job.result() if peaks_job is not None else file_peaks(str(mix_path)))

    mix_lufs = mix_meter.integrated_lufs()
    target, ceiling = plan.target_lufs, plan.limiter.ceiling_dbtp
    notes: list[str] = []
    if mix_lufs < SILENT_MIX_LUFS:
        mix_stats = mix_stats_now()
        copy_wav(mix_path, out_path, start_frame=0, frames=frames, subtype="PCM_24")
        notes.append("the mix is silent: the master is a copy of it, not normalised")
        return MasterResult(out_path, target, ceiling, mix_stats.to_dict(), mix_stats.to_dict(), 0.0, 0.0, 0.0,
                            plan.limiter.release_ms, 0, False, notes, 0.0)

    pre = CHAIN_REFERENCE_LUFS - mix_lufs
    pre_path = work_dir / "master-pre.wav"
    pre_args = (mix_path, pre_path, plan, pre)
    pre_kwargs = {"sample_rate_hz": sample_rate_hz, "content_frames": frames, "work_dir": work_dir}
    if pool is not None:  # in a worker, which has pyo loaded already (this process need not)
        pool.submit(render_master_pre, *pre_args, **pre_kwargs).result()
    else:
        render_master_pre(*pre_args, **pre_kwargs)
    nominal = target - CHAIN_REFERENCE_LUFS  # the drive if the limiter took no loudness away
    candidates = [(nominal + drive, ceiling - margin) for drive, margin in _FIRST_CANDIDATES]
    release = plan.limiter.release_ms
    history: list[_Pass] = []
    chosen: _Pass | None = None
    aim = min(_AIM_LU, 0.6 * plan.tolerance_lu)  # well inside the promise

    def closeness(r: _Pass) -> tuple[float, float]:  # nearest the target; ties: less drive
        return abs(target - r.stats.integrated_lufs), r.settings.drive_db

    for rnd in range(1, _MAX_ROUNDS + 1):
        jobs = [(pre_path, plan, MasterSettings(pre_gain_db=pre, drive_db=drive, limit_db=limit, release_ms=release),
                 sample_rate_hz, frames, work_dir / f"pass-{rnd}-{i}",
                 out_path.with_name(f".{out_path.stem}-pass-{rnd}-{i}.wav")) for i, (drive, limit) in enumerate(candidates)]
        try:
            results = (pool.map_ordered(_limiter_pass, jobs) if pool is not None
                       else [_limiter_pass(*job) for job in jobs])
        except BaseException:  # leave no candidate beside the output
            for path in [job[-1] for job in jobs] + [r.delivered_path for r in history]:
                path.unlink(missing_ok=True)
            raise
        history += results
        if os.environ.get("EXPERTMIX_DEBUG_MASTER"):
            for r in results:
                print(f"round {rnd}: drive {r.settings.drive_db:.2f} limit {r.settings.limit_db:.2f} "
                      f"release {r.settings.release_ms:.0f} -> {r.stats.integrated_lufs:.2f} LUFS "
                      f"{r.stats.true_peak_dbtp:.2f} dBTP {r.stats.sample_peak_dbfs:.2f} dBFS")
        ok = [r for r in results
              if abs(target - r.stats.integrated_lufs) <= aim and r.stats.true_peak_dbtp <= ceiling]
        if ok:
            chosen = min(ok, key=closeness)
            break
        # the next limiter threshold: low enough for every pass of this round (inter-sample
        # overs grow as the limiter works harder: correct an over with a margin)
        limit = min(r.settings.limit_db - (r.stats.true_peak_dbtp - ceiling + _OVER_MARGIN_DB
                                           if r.stats.true_peak_dbtp > ceiling else 0.0) for r in results)
        # LU of loudness per dB of drive, from the two nearest measured drives (< 1 when the
        # limiter works hard)
        best = min(history, key=closeness)
        others = [r for r in history if abs(r.settings.drive_db - best.settings.drive_db) > 1e-6]
        slope = 1.0
        if others:
            near = min(others, key=lambda r: (abs(r.settings.drive_db - best.settings.drive_db), r.settings.drive_db))
            slope = ((best.stats.integrated_lufs - near.stats.integrated_lufs)
                     / (best.settings.drive_db - near.settings.drive_db))
            slope = min(1.2, max(0.2, slope))
        err = target - best.stats.integrated_lufs
        if err > aim and others and slope < 0.35 and release > _MIN_RELEASE_MS:
            # more drive no longer adds loudness: the release holds the gain down between peaks
            release = max(_MIN_RELEASE_MS, release / 2.0)
            slope = 1.0
        step = max(-_MAX_STEP_DB, min(_MAX_STEP_DB, err / slope))
        centre = min(best.settings.drive_db + step, nominal + _MAX_EXTRA_DRIVE_DB)
        candidates = [(centre + d, limit) for d in _NEXT_DRIVES_DB]
    if chosen is None:  # no round hit the aim: the closest that respects the ceiling, if any
        chosen = min(history, key=lambda r: (r.stats.true_peak_dbtp > ceiling, *closeness(r)))
    settings, passes = chosen.settings, len(history)
    os.replace(chosen.delivered_path, out_path)
    # what was measured is what is delivered, but for the 24-bit rounding (< 1e-6 dB)
    final = chosen.stats
    for r in history:
        shutil.rmtree(r.raw_path.parent, ignore_errors=True)
        if r is not chosen:
            r.delivered_path.unlink(missing_ok=True)
    pre_path.unlink(missing_ok=True)
    ok = abs(final.integrated_lufs - target) <= plan.tolerance_lu and final.true_peak_dbtp <= ceiling + 0.05
    if not ok:
        notes.append(f"master missed its target: {final.integrated_lufs:.2f} LUFS / {final.true_peak_dbtp:.2f} dBTP "
                     f"for {target:.1f} LUFS / {ceiling:.1f} dBTP after {passes} passes")
    mix_stats = mix_stats_now()
    gr = settings.drive_db + pre + mix_stats.integrated_lufs - final.integrated_lufs
    modulation = modulation_lu(mix_meter.momentary_lufs(), chosen.momentary_lufs)
    if modulation > PUMPING_LU:
        notes.append(f"the master's gain moves by {modulation:.1f} LU between loud and quiet moments (pumping): "
                     "a lower loudness target would keep the mix's dynamics")
    if settings.release_ms < plan.limiter.release_ms:
        notes.append(f"to reach {target:.1f} LUFS the limiter release was shortened from {plan.limiter.release_ms:.0f} "
                     f"to {settings.release_ms:.0f} ms: listen for distortion in the low end")
    if gr > 6.0:
        notes.append(f"the limiter removes about {gr:.1f} dB of loudness-relevant level: a lower target or more "
                     "mix-bus compression would pump less")
    if final.true_peak_dbtp > ceiling + 0.05:
        raise RenderError(f"master true peak {final.true_peak_dbtp:.2f} dBTP exceeds the ceiling {ceiling:.1f} dBTP")
    return MasterResult(out_path, target, ceiling, mix_stats.to_dict(), final.to_dict(), settings.pre_gain_db,
                        settings.drive_db, settings.limit_db, settings.release_ms, passes, ok, notes, modulation)
