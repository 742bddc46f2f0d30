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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError, RenderError
import numpy as np

from .io import copy_wav
from .loudness import LoudnessMeter, LoudnessStats, meter_file
from .plan import MasterPlan
from .render import MasterSettings, render_master, render_master_pre

#: Loudness the master chain sees at its input (the glue threshold is relative to it).
CHAIN_REFERENCE_LUFS = -20.0
#: Integrated loudness below which a mix counts as silent and is not mastered.
SILENT_MIX_LUFS = -70.0
#: Extra margin under the true-peak ceiling for the limiter's first sample-peak threshold.
_FIRST_MARGIN_DB = 0.6
#: Extra lowering of the limiter threshold when a pass overshoots the true-peak ceiling, dB.
_OVER_MARGIN_DB = 0.35
_MAX_PASSES = 10
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


def master_mix(mix_path: Path, out_path: Path, plan: MasterPlan, *, sample_rate_hz: int, frames: int,
               work_dir: Path) -> MasterResult:
    """Master ``mix_path`` into ``out_path`` (24-bit WAV, same length as the mix)."""
    mix_meter = meter_file(str(mix_path))
    mix_stats = mix_meter.stats()
    target, ceiling = plan.target_lufs, plan.limiter.ceiling_dbtp
    notes: list[str] = []
    raw = work_dir / "master-raw.wav"
    if mix_stats.integrated_lufs < SILENT_MIX_LUFS:
        copy_wav(mix_path, out_path, start_frame=0, frames=frames, subtype="PCM_24")
        notes.append("the mix is silent: the master is a copy of it, not normalised")
        return MasterResult(out_path, target, ceiling, mix_stats.to_dict(), mix_stats.to_dict(), 0.0, 0.0, 0.0,
                            plan.limiter.release_ms, 0, False, notes, 0.0)

    pre = CHAIN_REFERENCE_LUFS - mix_stats.integrated_lufs
    settings = MasterSettings(pre_gain_db=pre, drive_db=target - CHAIN_REFERENCE_LUFS,
                              limit_db=ceiling - _FIRST_MARGIN_DB, release_ms=plan.limiter.release_ms)
    pre_path = work_dir / "master-pre.wav"
    render_master_pre(mix_path, pre_path, plan, pre, sample_rate_hz=sample_rate_hz, content_frames=frames,
                      work_dir=work_dir)
    history: list[tuple[float, float]] = []  # (drive_db, measured lufs)
    meter: LoudnessMeter | None = None
    stats: LoudnessStats | None = None
    latency = 0
    passes = 0
    for passes in range(1, _MAX_PASSES + 1):
        latency = render_master(pre_path, raw, plan, settings, sample_rate_hz=sample_rate_hz,
                                content_frames=frames, work_dir=work_dir)
        # the delivered part only: the limiter's latency is trimmed, the length is the mix's
        meter = meter_file(str(raw), start_frame=latency, frames=frames)
        stats = meter.stats()
        err_lu = target - stats.integrated_lufs
        over_db = stats.true_peak_dbtp - ceiling
        history.append((settings.drive_db, stats.integrated_lufs))
        if os.environ.get("EXPERTMIX_DEBUG_MASTER"):
            print(f"pass {passes}: drive {settings.drive_db:.2f} limit {settings.limit_db:.2f} "
                  f"release {settings.release_ms:.0f} -> "
                  f"{stats.integrated_lufs:.2f} LUFS {stats.true_peak_dbtp:.2f} dBTP {stats.sample_peak_dbfs:.2f} dBFS")
        # aim for the middle of the tolerance: 0.2 LU, well inside the +-0.5 promise
        if abs(err_lu) <= min(0.2, plan.tolerance_lu) and over_db <= 0.0:
            break
        # inter-sample overs grow as the limiter works harder (measured 1.0 -> 1.3 dB over the
        # sample-peak threshold on a 16-stem session): correct with a margin, so one more pass does
        limit = settings.limit_db - (over_db + _OVER_MARGIN_DB if over_db > 0 else 0.0)
        slope = 1.0  # LU of loudness per dB of drive; < 1 when the limiter works hard
        if len(history) >= 2 and abs(history[-1][0] - history[-2][0]) > 1e-6:
            slope = (history[-1][1] - history[-2][1]) / (history[-1][0] - history[-2][0])
            slope = min(1.2, max(0.2, slope))
        release = settings.release_ms
        if err_lu > 0.2 and len(history) >= 2 and slope < 0.35 and release > _MIN_RELEASE_MS:
            # more drive no longer adds loudness: the release holds the gain down between peaks
            release = max(_MIN_RELEASE_MS, release / 2.0)
            slope = 1.0
        step = max(-_MAX_STEP_DB, min(_MAX_STEP_DB, err_lu / slope))
        drive = min(settings.drive_db + step, target - CHAIN_REFERENCE_LUFS + _MAX_EXTRA_DRIVE_DB)
        settings = MasterSettings(pre_gain_db=pre, drive_db=drive, limit_db=limit, release_ms=release)
    assert stats is not None and meter is not None
    copy_wav(raw, out_path, start_frame=latency, frames=frames, subtype="PCM_24")
    # what was measured is what is delivered, but for the 24-bit rounding (< 1e-6 dB)
    final = stats
    raw.unlink(missing_ok=True)
    pre_path.unlink(missing_ok=True)
    ok = abs(final.integrated_lufs - target) <= plan.tolerance_lu and final.true_peak_dbtp <= ceiling + 0.05
    if not ok:
        notes.append(f"master missed its target: {final.integrated_lufs:.2f} LUFS / {final.true_peak_dbtp:.2f} dBTP "
                     f"for {target:.1f} LUFS / {ceiling:.1f} dBTP after {passes} passes")
    gr = settings.drive_db + pre + mix_stats.integrated_lufs - final.integrated_lufs
    modulation = modulation_lu(mix_meter.momentary_lufs(), meter.momentary_lufs())
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
