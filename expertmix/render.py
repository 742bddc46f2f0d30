"""Offline rendering with the pyo DSP server. The only module that imports pyo.

Design (see ``shared/ENGINE-NOTES.md`` for the pitfalls this avoids):

* One offline server per render (``audio="offline"``, no duplex); stems stream from disk with
  ``SfPlayer`` (WAV/AIFF at the session rate, prepared by :mod:`expertmix.stems`).
* Every output is written by a ``Record`` object, never by the server's own output, which fades
  in over the first 5 ms and applies a master amplitude. Records are stopped before shutdown.
* Every object of the graph is kept referenced in :class:`_Graph` until the render has finished
  (pyo renders silence for garbage-collected chains).
* All dynamics are *gain computers*: a gain signal computed from a level detector (the
  compressors' own envelope and static curve, ``Gate``/``Compress`` with ``outputAmp=True`` for
  the gate and the limiter), aligned with its input and applied to the undelayed signal. Track,
  bus and mix processing therefore have zero latency, so stems, buses and the mix stay
  sample-aligned with the raw stems. Only the master limiter looks ahead;
  :func:`render_master` reports that latency for the caller to trim.
* Render lengths are whole numbers of ``Record`` chunks (4 server buffers), so recorded files
  need no trimming.
* The mix renders on several cores in two phases (:func:`render_mix`): the tracks are split
  into two groups by estimated cost, ducking pairs kept together; worker processes (one server
  each, started by forkserver or spawn, never plain fork) render each group's stems, bus sums
  and effect sends; then the mix section runs in two parts (the group and effect buses shared
  out, each seeing its whole bus), also in the workers, and this process sums the parts into
  ``mix.wav``, metering its loudness on the way. A float32 WAV holds pyo's float32 samples
  exactly and every sum keeps its order, so the files are bit-identical to a one-process render
  (which renders the same groups and parts in turn).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import RenderError
from .io import _zero_peak_timestamp
from .loudness import LoudnessMeter
from .plan import Compressor, EQBand, MasterPlan, MixPlan, TrackPlan, pan_matrix
from .units import db_to_gain

#: The pyo module, imported by :func:`_load_pyo` when the first server boots: the main process
#: of a mix, which only hands renders to its workers, never loads it (16 MB and 30 ms saved).
pyo: Any = None


def _load_pyo() -> Any:
    global pyo
    if pyo is None:
        os.environ.setdefault("PYO_GUI_WX", "0")  # (must be set before the import)
        import pyo as module

        pyo = module
    return pyo

#: Frames per pyo buffer: every object runs once per buffer. 4096 renders a mix 3 % faster than
#: 1024 (per-buffer overheads: each player's seek and read, each object's call) and 8192 3 %
#: slower (the graph's buffers no longer fit the caches); measured end to end on the benchmark.
BUFFER_FRAMES = 4096
#: pyo's ``Record`` sample type for 32-bit float files.
_FLOAT32 = 3
#: ``Record`` writes every ``buffering`` server buffers (one write of 128 KB for a stereo file,
#: where 8 KB per write cost twice the CPU: ~60 -> ~35 ms per 180 s stereo file, most of it
#: system time) and drops a partial last chunk, so render lengths are whole chunks.
_RECORD_BUFFERING = 4
#: Render lengths are multiples of this many frames (0.37 s at 44.1 kHz): whole Record chunks.
RENDER_QUANTUM_FRAMES = BUFFER_FRAMES * _RECORD_BUFFERING
#: The limiter's running maximum is built from runs of this many one-sample delays.
_HOLD_RUN = 16
#: pyo's Compress and Gate clip their envelope at 1.0 (0 dBFS) before converting to dB, so a
#: detector above full scale (hot trims, sums, limiter drive) would be under-compressed. Their
#: detectors (the gate's, the limiter's) are therefore fed 48 dB down and their thresholds
#: lowered by the same amount. The compressors' own gain computers (``_compress_gain``) do not
#: clip and take the detector unscaled.
_DETECTOR_HEADROOM_DB = 48.0
_DETECTOR_SCALE = 10.0 ** (-_DETECTOR_HEADROOM_DB / 20.0)
_BUTTER2_Q = 0.7071
#: A 24 dB/oct high-pass is a 4th-order Linkwitz-Riley (two identical 2nd-order Butterworth
#: sections, one ``Biquadx`` with two stages: in pyo a second stage in the same object costs
#: almost nothing, a second ``Biquad`` as much as the first), tuned down by this factor so that
#: it is -3 dB at the cutoff like a Butterworth: |H|^2 = (w^4 / (1 + w^4))^2 = 1/2 at
#: w = f / f0 = (sqrt(2) + 1)^(1/4) = 1.2465. One octave under the cutoff it is -17.6 dB (a
#: 4th-order Butterworth: -24.1 dB), two octaves under -40.6 dB.
_LR4_F0_PER_CUTOFF = (math.sqrt(2.0) - 1.0) ** 0.25


def render_frames(content_frames: int, tail_frames: int) -> int:
    """Frames a render produces: content plus tail, rounded up to whole
    :data:`RENDER_QUANTUM_FRAMES`."""
    total = max(1, content_frames + tail_frames)
    return int(math.ceil(total / RENDER_QUANTUM_FRAMES) * RENDER_QUANTUM_FRAMES)


@dataclass
class StemSource:
    """What the renderer needs of one stem: a streamable file and its channel count."""

    path: Path
    channels: int


@dataclass
class _Graph:
    """Holds a reference to every pyo object until the render is over."""

    keep: list[Any] = field(default_factory=list)

    def k(self, obj: Any) -> Any:
        self.keep.append(obj)
        return obj


# -- small factories, one per declared effect ----------------------------------------------

def _sdelay(g: _Graph, sig: Any, frames: int, sr: int) -> Any:
    """Sample-exact delay (SDelay truncates, so aim half a sample late)."""
    return g.k(pyo.SDelay(sig, delay=(frames + 0.5) / sr, maxdelay=(frames + 2) / sr))


def _player(g: _Graph, path: Path, gain: float = 1.0) -> Any:
    """A file streamed from disk at the session rate (speed 1: no interpolation), times ``gain``."""
    return g.k(pyo.SfPlayer(str(path), speed=1, loop=False, interp=1, mul=gain))


def _filters(g: _Graph, chans: list[Any], kind: int, freq_hz: float, qs: Sequence[float]) -> list[Any]:
    out = chans
    for q in qs:
        out = [g.k(pyo.Biquad(c, freq=freq_hz, q=q, type=kind)) for c in out]
    return out


def _highpass(g: _Graph, chans: list[Any], freq_hz: float, slope_db_per_oct: int) -> list[Any]:
    """12 dB/oct: 2nd-order Butterworth; 24 dB/oct: 4th-order Linkwitz-Riley, -3 dB at ``freq_hz``."""
    if slope_db_per_oct >= 24:
        return [g.k(pyo.Biquadx(c, freq=freq_hz * _LR4_F0_PER_CUTOFF, q=_BUTTER2_Q, type=1, stages=2))
                for c in chans]
    return _filters(g, chans, 1, freq_hz, (_BUTTER2_Q,))


def _eq(g: _Graph, chans: list[Any], bands: Sequence[EQBand], sr: int) -> list[Any]:
    nyquist_hz = sr / 2.0
    for band in bands:
        if not band.enabled:
            continue
        freq = min(band.freq_hz, 0.45 * sr)
        if band.kind == "highpass":
            chans = _filters(g, chans, 1, freq, (band.q,))
        elif band.kind == "lowpass":
            if band.freq_hz >= nyquist_hz * 0.98:
                continue
            chans = _filters(g, chans, 0, freq, (band.q,))
        elif band.gain_db != 0.0:
            kind = {"peak": 0, "low_shelf": 1, "high_shelf": 2}[band.kind]
            chans = [g.k(pyo.EQ(c, freq=freq, q=band.q, boost=band.gain_db, type=kind)) for c in chans]
    return chans


def _detector(g: _Graph, chans: list[Any], scale: float = _DETECTOR_SCALE) -> Any:
    """Stereo-linked level detector: max(|L|, |R|) (|x| for mono), times ``scale``.

    With the default scale (for pyo's ``Gate`` and ``Compress``), thresholds passed to pyo must
    be lowered by ``_DETECTOR_HEADROOM_DB`` (see ``_thresh``).
    """
    if len(chans) == 1:
        return g.k(pyo.Abs(chans[0], mul=scale))
    return g.k(pyo.Max(g.k(pyo.Abs(chans[0], mul=scale)), comp=g.k(pyo.Abs(chans[1], mul=scale))))


def _thresh(threshold_db: float) -> float:
    """A threshold in dBFS as pyo must see it on a scaled detector."""
    return threshold_db - _DETECTOR_HEADROOM_DB


#: pyo's ``Follower2`` takes its times as periods (coefficient ``exp(-2 pi / (sr t))``), its
#: ``Compress`` as time constants (``exp(-1 / (sr t))``): times are multiplied by this.
_FOLLOWER_PERIOD_PER_TIME_CONSTANT = 2.0 * math.pi


def _compress_gain(g: _Graph, detector: Any, threshold_db: float, ratio: float, attack_ms: float,
                   release_ms: float, knee_db: float) -> Any:
    """Gain signal (0..1) of a peak compressor fed by an unscaled ``detector`` (zero latency).

    One gain computer: a peak envelope (attack/release one-pole follower on |x|, as pyo's
    ``Compress`` has: its output matches ``Compress(outputAmp=True)`` within 1e-4 dB for a hard
    knee), its level in dB (``AToDB``, floor -120 dB), the static curve in dB and ``DBToA``.
    The static curve has the quadratic soft knee of Giannoulis, Massberg and Reiss (2012): with
    ``x`` the level over the threshold and ``K`` the knee width, the gain change is
    ``(1/ratio - 1)`` times 0 for ``x <= -K/2``, ``(x + K/2)^2 / 2K`` inside the knee and ``x``
    above it. pyo's own ``knee`` does nothing below its threshold, and building the knee from two
    hard-knee ``Compress`` objects cost twice the CPU (each converts to and from dB per sample).
    """
    period = _FOLLOWER_PERIOD_PER_TIME_CONSTANT / 1000.0
    env = g.k(pyo.Follower2(detector, risetime=max(attack_ms, 0.001) * period,
                            falltime=max(release_ms, 0.001) * period))
    over = g.k(pyo.AToDB(env) - threshold_db)  # level over the threshold, dB
    slope = 1.0 / ratio - 1.0
    if knee_db < 0.5:
        change_db = g.k(pyo.Max(over, comp=0.0) * slope)
    else:
        half = knee_db / 2.0
        inside = g.k(pyo.Clip(over, min=-half, max=half, add=half))  # 0 .. K
        above = g.k(pyo.Max(over - half, comp=0.0))
        change_db = g.k((inside * inside * (1.0 / (2.0 * knee_db)) + above) * slope)
    return g.k(pyo.DBToA(change_db))


def _compressor(g: _Graph, chans: list[Any], comp: Compressor) -> list[Any]:
    if not comp.enabled:
        return chans
    gain = _compress_gain(g, _detector(g, chans, 1.0), comp.threshold_db, comp.ratio, comp.attack_ms,
                          comp.release_ms, comp.knee_db)
    makeup = db_to_gain(comp.makeup_db)
    if comp.mix < 1.0:  # parallel: dry*(1-mix) + compressed*mix
        gain = g.k(gain * (comp.mix * makeup) + (1.0 - comp.mix))
    elif makeup != 1.0:
        gain = g.k(gain * makeup)
    return [g.k(c * gain) for c in chans]


def _mono(g: _Graph, chans: list[Any]) -> Any:
    return chans[0] if len(chans) == 1 else g.k((chans[0] + chans[1]) * 0.5)


def _stereo(g: _Graph, left: Any, right: Any) -> Any:
    """One 2-stream object from two single-stream ones (stream i -> voice i % 2)."""
    return g.k(pyo.Mix([left, right], voices=2))


def _split(g: _Graph, obj: Any, channels: int) -> list[Any]:
    return [g.k(pyo.Sig(obj[i])) for i in range(channels)]


# -- a track ------------------------------------------------------------------------------

def _track_prefader(g: _Graph, t: TrackPlan, src: StemSource, sr: int) -> list[Any]:
    """Player -> trim/polarity -> clean-up -> EQ -> gate -> compressor -> de-esser."""
    trim = db_to_gain(t.trim_db) * (-1.0 if t.polarity_invert else 1.0)
    player = _player(g, src.path, trim)
    chans = [player] if src.channels == 1 else _split(g, player, 2)
    c = t.cleanup
    if c.dc_remove and not c.highpass_hz:  # a high-pass removes DC already
        chans = _filters(g, chans, 1, 5.0, (_BUTTER2_Q,))
    if c.highpass_hz:
        chans = _highpass(g, chans, c.highpass_hz, c.highpass_slope_db_per_oct)
    if c.hum_notch_hz:
        for k in range(1, c.hum_harmonics + 1):
            f = c.hum_notch_hz * k
            if f < 0.45 * sr:
                chans = _filters(g, chans, 3, f, (c.hum_notch_q,))
    chans = _eq(g, chans, t.eq, sr)
    if t.gate.enabled:
        # pyo's Gate smooths the *square* of its input and compares it with 10**(thresh/20):
        # the threshold it needs is twice the level in dB (of the scaled detector).
        gate = g.k(pyo.Gate(_detector(g, chans), thresh=2.0 * _thresh(t.gate.threshold_db), risetime=t.gate.attack_ms / 1000.0,
                            falltime=t.gate.release_ms / 1000.0, lookahead=0.0, outputAmp=True))
        floor = db_to_gain(-t.gate.range_db)
        gain = g.k(gate * (1.0 - floor) + floor)
        chans = [g.k(ch * gain) for ch in chans]
    chans = _compressor(g, chans, t.compressor)
    if t.deesser.enabled:
        d = t.deesser
        high = _filters(g, chans, 1, d.freq_hz, (_BUTTER2_Q,))
        gain = _compress_gain(g, _detector(g, high, 1.0), d.threshold_db, d.ratio, 0.5, d.release_ms, 2.0)
        reduction = g.k(gain - 1.0)
        chans = [g.k(ch + hi * reduction) for ch, hi in zip(chans, high)]
    return chans


def _pan(g: _Graph, chans: list[Any], pan: float, width: float, gain: float) -> Any:
    (ll, lr), (rl, rr) = pan_matrix(pan, width, len(chans))
    if len(chans) == 1:
        return _stereo(g, g.k(chans[0] * (ll * gain)), g.k(chans[0] * (rl * gain)))
    x, y = chans
    left = g.k(x * (ll * gain)) if lr == 0.0 else g.k(x * (ll * gain) + y * (lr * gain))
    right = g.k(y * (rr * gain)) if rl == 0.0 else g.k(x * (rl * gain) + y * (rr * gain))
    return _stereo(g, left, right)


# -- the whole mix ------------------------------------------------------------------------

@dataclass
class RenderedMix:
    """Files written by :func:`render_mix` and the length of each (frames)."""

    mix_path: Path
    stem_paths: dict[str, Path]
    frames: int
    sample_rate_hz: int
    #: per worker process (empty when rendered in-process): its tracks, wall and CPU seconds
    #: and peak RSS (MB), for benchmarks and reports
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: per part of the mix section (:func:`split_mix`): its group and effect buses, whether it
    #: has the direct tracks, wall and CPU seconds
    mix_parts: list[dict[str, Any]] = field(default_factory=list)
    #: the loudness meter that measured ``mix.wav`` as it was written (loudness only, no peaks)
    mix_meter: LoudnessMeter | None = None


def _server(sr: int) -> Any:
    _load_pyo()
    server = pyo.Server(sr=sr, nchnls=2, duplex=0, audio="offline", buffersize=BUFFER_FRAMES)
    server.setVerbosity(1)
    server.boot()
    if not server.getIsBooted():
        raise RenderError("the pyo offline server did not boot")
    return server


def _discard_to(scratch: Path) -> Path:
    """Where the offline server may write its own output, which no render uses (every output
    is a ``Record``): ``scratch`` made a link to the null device where there is one, so that
    the server's file (tens of MB of zeros per render) costs no disk and no page cache; else a
    plain scratch file."""
    scratch.unlink(missing_ok=True)
    if os.name == "posix" and os.path.exists(os.devnull):
        try:
            scratch.symlink_to(os.devnull)
        except OSError:
            pass
    return scratch


def _run(server: Any, frames: int, sr: int, scratch: Path, records: list[Any]) -> None:
    # pyo renders ceil(dur * sr / buffersize) buffers: aim inside the last buffer, or float
    # rounding (13 * 1024 / 44100 * 44100 / 1024 = 13.000000000000002) adds one more
    server.recordOptions(dur=(frames - 0.5) / sr, filename=str(_discard_to(scratch)), fileformat=0,
                         sampletype=_FLOAT32)
    try:
        server.start()  # offline: blocks until the whole duration is computed
    finally:
        for r in records:
            r.stop()
        server.shutdown()
        scratch.unlink(missing_ok=True)


def _check_file(path: Path, frames: int) -> None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # pyo prints errors and carries on: verify what it wrote
        raise RenderError(f"pyo did not write {path}: {exc}") from None
    if info.frames != frames:
        raise RenderError(f"{path} has {info.frames} frames, expected {frames}")
    _zero_peak_timestamp(path)


def _record(g: _Graph, obj: Any, path: Path) -> Any:
    return g.k(pyo.Record(obj, filename=str(path), chnls=2, fileformat=0, sampletype=_FLOAT32,
                          buffering=_RECORD_BUFFERING))


def _render_graph(sr: int, frames: int, scratch: Path, build: Any) -> None:
    """Boot a server, ``build(g, records)`` the graph, render ``frames`` frames, shut down.

    pyo's own exceptions (a stem it cannot open, a bad argument) become :class:`RenderError`.
    """
    server = _server(sr)
    g = _Graph()
    records: list[Any] = []
    try:
        build(g, records)
        _run(server, frames, sr, scratch, records)
    except BaseException as exc:
        if server.getIsBooted():
            for r in records:
                r.stop()
            server.shutdown()
        if isinstance(exc, pyo.PyoError):
            raise RenderError(f"pyo: {exc}") from exc
        raise


# -- the graph of a mix, in two halves ---------------------------------------------------
#
# The tracks are split into at most ``SUM_GROUPS`` groups (:func:`split_tracks`), whatever the
# number of processes. Each group renders its tracks (player -> ... -> de-esser, ducking,
# fader/pan -> stem file) and its *partials*: per group bus, the sum of its tracks on that bus;
# per effect bus, the sum of its tracks' sends; the sum of its tracks routed straight to the mix.
# The mix section then sums each bus's partials over the groups, runs the bus chains
# (compressors are not linear: they see the whole bus) and the effects (one instance each, fed
# by all the sends) and adds everything into the mix bus; it runs in up to ``MIX_PARTS`` parts
# (:func:`split_mix`: the group and effect buses shared out), each reading the
# partials it needs, and the parts are summed (and metered) in numpy. Partials and parts are
# float32 WAV files, which hold pyo's float32 samples exactly, and every sum is taken in the same
# order whether the groups and parts run in worker processes or one after the other here, so
# the files written are bit-identical whatever the number of processes.

#: Tracks are summed in this many groups (at most), so that two worker processes can share
#: the work; fixed, so the samples never depend on the number of processes.
SUM_GROUPS = 2


def _track_chains(g: _Graph, plan: MixPlan, names: set[str], sources: dict[str, StemSource],
                  sr: int) -> dict[str, list[Any]]:
    """Pre-fader chains (ducking applied) of the tracks in ``names``, which must hold both ends
    of every ducking that involves one of them."""
    prefader: dict[str, list[Any]] = {}
    for t in plan.tracks:
        if t.name in names:
            prefader[t.name] = _track_prefader(g, t, sources[t.name], sr)
    # Sidechain ducking: the trigger's processed, pre-fader level drives the target's gain.
    for d in plan.ducking:
        if d.target not in prefader:
            continue
        det = _detector(g, prefader[d.trigger], 1.0)
        gain = _compress_gain(g, det, d.threshold_db, d.ratio, d.attack_ms, d.release_ms, 0.0)
        gain = g.k(pyo.Max(gain, comp=db_to_gain(-d.depth_db)))
        prefader[d.target] = [g.k(ch * gain) for ch in prefader[d.target]]
    return prefader


def _fader(g: _Graph, t: TrackPlan, chans: list[Any]) -> Any:
    """The track's post-fader stereo output (what its stem file holds)."""
    return _pan(g, chans, t.pan, t.width, 0.0 if t.mute else db_to_gain(t.gain_db))


def _fx_return(g: _Graph, plan: MixPlan, f: Any, summed: Any, sr: int) -> Any:
    """An effect bus's return (2 streams) for the stereo sum of its sends."""
    ret = db_to_gain(f.return_db)
    if f.kind == "reverb":
        mono = _mono(g, _split(g, summed, 2))
        x = _highpass(g, [mono], f.highpass_hz, 12)[0]
        if f.predelay_ms > 0:
            x = _sdelay(g, x, int(round(f.predelay_ms * sr / 1000.0)), sr)
        return g.k(pyo.STRev(x, inpos=0.5, revtime=f.decay_s, cutoff=f.lowpass_hz, bal=1.0,
                             roomSize=f.room_size, firstRefGain=-3.0, mul=ret))
    chans = _highpass(g, _split(g, summed, 2), f.highpass_hz, 12)
    chans = _filters(g, chans, 0, min(f.lowpass_hz, 0.45 * sr), (_BUTTER2_Q,))
    t_s = plan.delay_time_ms(f) / 1000.0
    wet = [g.k(pyo.Delay(c, delay=t_s, feedback=f.feedback, maxdelay=t_s + 0.1, mul=ret)) for c in chans]
    return _stereo(g, wet[0], wet[1])


def _group(g: _Graph, plan: MixPlan, names: Sequence[str], sources: dict[str, StemSource],
           sr: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One group's tracks: (post-fader output per track, partial per key).

    Partial keys: ``bus:<name>`` (sum of the group's tracks on that group bus), ``send:<name>``
    (sum of the group's sends to that effect bus) and ``mix`` (tracks routed to the mix bus);
    keys without a contributing track are left out. Muted tracks contribute nothing.
    """
    chains = _track_chains(g, plan, set(names), sources, sr)
    outs: dict[str, Any] = {}
    bus_inputs: dict[str, list[Any]] = {}
    fx_inputs: dict[str, list[Any]] = {}
    for t in plan.tracks:
        if t.name not in chains:
            continue
        outs[t.name] = _fader(g, t, chains[t.name])
        if t.mute:
            continue
        bus_inputs.setdefault("mix" if t.bus == "mix" else f"bus:{t.bus}", []).append(outs[t.name])
        pre = _pan(g, chains[t.name], t.pan, t.width, 1.0) if _has_prefader_send(t) else None
        for s in t.sends:
            fx_inputs.setdefault(s.bus, []).append(g.k((pre if s.pre_fader else outs[t.name]) * db_to_gain(s.level_db)))
    partials: dict[str, Any] = {}
    for key in ["mix"] + [f"bus:{b.name}" for b in plan.buses]:
        if key in bus_inputs:
            partials[key] = g.k(pyo.Mix(bus_inputs[key], voices=2))
    for f in plan.fx:
        if f.name in fx_inputs:
            partials[f"send:{f.name}"] = g.k(pyo.Mix(fx_inputs[f.name], voices=2))
    return outs, partials


def _mix_part(g: _Graph, plan: MixPlan, sr: int, groups: list[dict[str, Any]], buses: Sequence[str],
              fxs: Sequence[str], direct: bool) -> Any:
    """One part of the mix bus (a 2-stream object, before the mix trim) from the groups'
    partials (see :func:`_group`): with ``direct``, the tracks routed straight to the mix; then
    each group bus of ``buses`` (its partials summed, then its chain); then each effect of
    ``fxs`` (its sends summed over the groups, then the effect: one instance per effect bus). The
    parts of :func:`split_mix` add up to the mix bus."""
    parts = [p["mix"] for p in groups if "mix" in p] if direct else []
    for b in plan.buses:
        inputs = [p[f"bus:{b.name}"] for p in groups if f"bus:{b.name}" in p]
        if b.name not in buses or not inputs:
            continue
        summed = g.k(pyo.Mix(inputs, voices=2))
        chans = _split(g, summed, 2)
        chans = _eq(g, chans, b.eq, sr)
        chans = _compressor(g, chans, b.compressor)
        gain = db_to_gain(b.gain_db)
        parts.append(_stereo(g, g.k(chans[0] * gain), g.k(chans[1] * gain)))
    for f in plan.fx:
        inputs = [p[f"send:{f.name}"] for p in groups if f"send:{f.name}" in p]
        if f.name in fxs and inputs:
            parts.append(_fx_return(g, plan, f, g.k(pyo.Mix(inputs, voices=2)), sr))
    if parts:
        return g.k(pyo.Mix(parts, voices=2))
    return g.k(pyo.Sig([0.0, 0.0]))  # nothing routed here (every track muted): silence


#: The mix bus is rendered in at most this many parts (:func:`split_mix`), summed afterwards.
MIX_PARTS = 2
#: Relative CPU cost of the mix section's pieces, in reads of one partial file (pyo 1.1.0,
#: measured on the benchmark session: a read is about 58 ms per 180 s of float32 stereo): a bus
#: chain (EQ, compressor, gain), a reverb (high-pass, pre-delay, STRev), a delay (filters, Delay).
_MIX_COST = {"bus": 3.0, "reverb": 10.0, "delay": 3.0}


def split_mix(plan: MixPlan, keys: Sequence[Sequence[str]]) -> list[tuple[list[str], list[str], bool]]:
    """Share the mix section between ``MIX_PARTS`` parts: ``(bus names, effect names, direct)``.

    Part 0 takes the tracks routed straight to the mix; each group bus and each effect bus
    (they need their whole sum: compressors are not linear, and one reverb instance serves all
    the sends) goes, costliest first, to the less loaded part. The cost is the partial files a
    piece reads plus its processing (:data:`_MIX_COST`). Deterministic; empty parts are dropped.
    """
    reads: dict[str, int] = {}
    for group in keys:
        for k in group:
            reads[k] = reads.get(k, 0) + 1
    loads = [float(reads.get("mix", 0))] + [0.0] * (MIX_PARTS - 1)
    pieces = [("bus", b.name, reads[f"bus:{b.name}"] + _MIX_COST["bus"])
              for b in plan.buses if f"bus:{b.name}" in reads]
    pieces += [("fx", f.name, reads[f"send:{f.name}"] + _MIX_COST[f.kind])
               for f in plan.fx if f"send:{f.name}" in reads]
    parts: list[tuple[list[str], list[str]]] = [([], []) for _ in range(MIX_PARTS)]
    for kind, name, cost in sorted(pieces, key=lambda piece: -piece[2]):  # stable among equals
        i = min(range(MIX_PARTS), key=lambda j: (loads[j], j))
        parts[i][0 if kind == "bus" else 1].append(name)
        loads[i] += cost
    return [(parts[0][0], parts[0][1], True)] + [(b, f, False) for b, f in parts[1:] if b or f]


@dataclass
class _MixJob:
    """One part of the mix section: read the groups' partials, write the part's sum."""

    plan: MixPlan
    buses: list[str]
    fxs: list[str]
    direct: bool
    partials: list[tuple[Path, list[str]]]  # per group: its folder and its partials' keys
    out_path: Path
    frames: int
    scratch: Path


def _render_mix_part(job: _MixJob) -> dict[str, Any]:
    """Render one part of the mix section (:func:`_mix_part`) to ``job.out_path``."""
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    plan, sr = job.plan, job.plan.sample_rate_hz

    wanted = {f"bus:{b}" for b in job.buses} | {f"send:{f}" for f in job.fxs} | ({"mix"} if job.direct else set())

    def build(g: _Graph, records: list[Any]) -> None:  # players only for the partials this part reads
        groups = [{key: _player(g, _partial_path(folder, key)) for key in keys if key in wanted}
                  for folder, keys in job.partials]
        records.append(_record(g, _mix_part(g, plan, sr, groups, job.buses, job.fxs, job.direct), job.out_path))

    try:
        _render_graph(sr, job.frames, job.scratch, build)
        _check_file(job.out_path, job.frames)
        for folder, keys in job.partials:  # each partial is read by one part only: done with it
            for key in keys:
                if key in wanted:
                    _partial_path(folder, key).unlink(missing_ok=True)
    except RenderError:
        raise
    except Exception as exc:
        raise RenderError(f"rendering the mix section failed: {type(exc).__name__}: {exc}") from None
    return {"buses": list(job.buses), "fx": list(job.fxs), "direct": job.direct, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0}


def _sum_parts(parts: Sequence[Path], mix_path: Path, gain_db: float, frames: int, sr: int,
               block_frames: int = 65536) -> LoudnessMeter:
    """``mix_path`` = (sum of the ``parts`` files, in order) x the mix trim, as 32-bit float (the
    same float32 arithmetic as pyo's ``Mix(mul=...)``), streamed in blocks; the returned
    loudness meter has measured its loudness on the way (so the master need not read it again;
    its peaks, which the master's loudness loop does not need, are left to a worker)."""
    import soundfile as sf

    gain = np.float32(db_to_gain(gain_db))
    meter = LoudnessMeter(sr, 2, track_peaks=False)
    readers = [sf.SoundFile(str(p)) for p in parts]
    try:
        with sf.SoundFile(str(mix_path), "w", samplerate=sr, channels=2, subtype="FLOAT", format="WAV") as out:
            for start in range(0, frames, block_frames):
                n = min(block_frames, frames - start)
                total = readers[0].read(n, dtype="float32", always_2d=True)
                for r in readers[1:]:
                    total += r.read(n, dtype="float32", always_2d=True)
                if len(total) != n:
                    raise RenderError(f"a part of the mix ended after {start + len(total)} of {frames} frames")
                total *= gain
                out.write(total)
                meter.process(total)
    finally:
        for r in readers:
            r.close()
    return meter


# -- splitting the tracks between worker processes ----------------------------------------

#: Estimated pyo CPU time of each processing block, in ms per second of audio (pyo 1.1.0, 2-core
#: VM: marginal costs measured on the benchmark's stems). Only the split's balance and the
#: in-process threshold use them, so rough is fine.
_COST_MS = {
    "track": 0.65,       # player, pan, stem file: once per track ...
    "channel": 0.24,     # ... plus this per stem channel
    "biquad": 0.22,      # one filter (clean-up, notch, EQ band, de-esser split), per channel
    "detector": 0.05,    # |x| (and max over channels), per channel
    "gain": 0.03,        # applying a gain signal, per channel
    "compress": 0.33,    # one gain computer (envelope, to dB, static curve, from dB)
    "gate": 0.25,        # one pyo Gate
    "send": 0.60,        # a pre-fader send's panned copy and its file
}
#: A render estimated (with ``_COST_MS``) under this much CPU time (s) stays in-process:
#: starting workers and re-reading the stems would cost more than the second core saves.
MIN_PARALLEL_CPU_S = 2.0


def _has_prefader_send(t: TrackPlan) -> bool:
    return not t.mute and any(s.pre_fader for s in t.sends)


def _dynamics_ms(channels: int, computers: int) -> float:
    return channels * (_COST_MS["detector"] + _COST_MS["gain"]) + computers * _COST_MS["compress"]


def track_cost(t: TrackPlan, channels: int, sr: int) -> float:
    """Estimated pyo CPU seconds per second of audio of one track's chain (player to stem file;
    ducking not included)."""
    c = t.cleanup
    biquads = 1 if c.dc_remove and not c.highpass_hz else 0
    if c.highpass_hz:
        biquads += 1  # a 24 dB/oct Biquadx costs about what one Biquad does
    if c.hum_notch_hz:
        biquads += sum(1 for k in range(1, c.hum_harmonics + 1) if c.hum_notch_hz * k < 0.45 * sr)
    for band in t.eq:
        if band.enabled and (band.kind in ("highpass", "lowpass") or band.gain_db != 0.0):
            biquads += 1
    ms = _COST_MS["track"] + channels * (_COST_MS["channel"] + biquads * _COST_MS["biquad"])
    if t.gate.enabled:
        ms += _dynamics_ms(channels, 0) + _COST_MS["gate"]
    if t.compressor.enabled:
        ms += _dynamics_ms(channels, 1)
    if t.deesser.enabled:
        ms += channels * _COST_MS["biquad"] + _dynamics_ms(channels, 1)
    if _has_prefader_send(t):
        ms += _COST_MS["send"]
    return ms / 1000.0


def split_tracks(plan: MixPlan, sources: dict[str, StemSource], workers: int) -> list[list[str]]:
    """Deterministic split of the tracks into at most ``workers`` groups of similar cost.

    Tracks tied by ducking stay together. Largest first onto the least loaded group (ties: the
    lower index), then each group in plan order; empty groups are dropped.
    """
    sr = plan.sample_rate_hz
    order = {t.name: i for i, t in enumerate(plan.tracks)}
    parent = {t.name: t.name for t in plan.tracks}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for d in plan.ducking:
        a, b = root(d.target), root(d.trigger)
        if a != b:
            parent[max(a, b, key=order.__getitem__)] = min(a, b, key=order.__getitem__)
    units: dict[str, list[str]] = {}
    for t in plan.tracks:
        units.setdefault(root(t.name), []).append(t.name)
    ducking_cost: dict[str, float] = {}
    for d in plan.ducking:
        ducking_cost[d.target] = ducking_cost.get(d.target, 0.0) + _dynamics_ms(sources[d.target].channels, 1) / 1000.0
    cost = {r: sum(track_cost(plan.track(n), sources[n].channels, sr) + ducking_cost.get(n, 0.0) for n in names)
            for r, names in units.items()}
    loads = [0.0] * max(1, workers)
    groups: list[list[str]] = [[] for _ in loads]
    for r in sorted(units, key=lambda r: (-cost[r], order[r])):
        i = min(range(len(loads)), key=lambda k: (loads[k], k))
        loads[i] += cost[r]
        groups[i].extend(units[r])
    return [sorted(g, key=order.__getitem__) for g in groups if g]


@dataclass
class _TrackJob:
    """One worker's share: render these tracks' stems and the group's partials."""

    plan: MixPlan
    names: list[str]
    sources: dict[str, StemSource]
    stems_dir: Path
    partials_dir: Path
    frames: int
    scratch: Path


def _partial_path(folder: Path, key: str) -> Path:
    return folder / (key.replace(":", "-") + ".wav")


def _render_tracks(job: _TrackJob) -> list[str]:
    """Render ``job.names`` to ``stems_dir/<track>.wav`` (post-fader) and the group's partials
    to ``partials_dir/<key>.wav`` (see :func:`_group`); returns the partials' keys. Runs in a
    worker process."""
    plan, sr = job.plan, job.plan.sample_rate_hz
    paths: list[Path] = []
    keys: list[str] = []

    def build(g: _Graph, records: list[Any]) -> None:
        outs, partials = _group(g, plan, job.names, job.sources, sr)
        for name, out in outs.items():
            paths.append(job.stems_dir / f"{name}.wav")
            records.append(_record(g, out, paths[-1]))
        for key, obj in partials.items():
            keys.append(key)
            paths.append(_partial_path(job.partials_dir, key))
            records.append(_record(g, obj, paths[-1]))

    _render_graph(sr, job.frames, job.scratch, build)
    for p in paths:
        _check_file(p, job.frames)
    return keys


def _track_worker(job: _TrackJob) -> dict[str, Any]:
    """Entry point of a worker process: every failure comes back as a :class:`RenderError`."""
    import resource
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        keys = _render_tracks(job)
        return {"tracks": list(job.names), "partials": keys, "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    except RenderError:
        raise
    except Exception as exc:
        raise RenderError(f"rendering tracks {', '.join(job.names)} failed in a worker process: "
                          f"{type(exc).__name__}: {exc}") from None


def _run_workers(jobs: Sequence[Any], pool: Any = None, fn: Any = None) -> list[dict[str, Any]]:
    """Run ``fn`` (default :func:`_track_worker`) on each job in ``pool`` (a
    :class:`expertmix.workers.WorkerPool`) or a new pool."""
    from concurrent.futures.process import BrokenProcessPool

    from .workers import worker_pool

    with worker_pool(len(jobs), pool) as workers:
        try:
            return workers.map_ordered(fn or _track_worker, [(job,) for job in jobs])
        except RenderError:
            raise
        except BrokenProcessPool as exc:
            raise RenderError(f"a render worker process died unexpectedly ({exc})") from None
        except Exception as exc:
            raise RenderError(f"a render worker process failed: {type(exc).__name__}: {exc}") from exc


# -- the whole mix ------------------------------------------------------------------------

def render_mix(plan: MixPlan, sources: dict[str, StemSource], out_dir: Path, *, content_frames: int,
               work_dir: Path, processes: int = 2, pool: Any = None) -> RenderedMix:
    """Render ``plan`` to ``out_dir/mix.wav`` and ``out_dir/stems/<track>.wav`` (32-bit float).

    ``sources`` maps track name -> streamable stem. ``content_frames`` is the longest stem.

    The tracks are split into ``SUM_GROUPS`` groups (:func:`split_tracks`); each group renders
    its stems and partials (bus and send sums), then the mix section renders in parts
    (:func:`split_mix`) from the partials, and this process sums the parts into ``mix.wav``
    (``RenderedMix.mix_meter`` has measured it). ``processes > 1`` renders the groups (and then
    the parts) at once in worker
    processes (in ``pool``, a running :class:`expertmix.workers.WorkerPool`, if given), unless
    the render is estimated under ``MIN_PARALLEL_CPU_S`` of CPU: then, as with ``processes=1``,
    one after the other in this process. The samples written do not depend on ``processes``.
    Workers start with forkserver (spawn where it does not exist): a script calling this needs
    the usual ``if __name__ == "__main__":``.
    """
    sr = plan.sample_rate_hz
    frames = render_frames(content_frames, int(round(plan.tail_s * sr)))
    stems_dir = out_dir / "stems"
    stems_dir.mkdir(parents=True, exist_ok=True)
    for t in plan.tracks:
        if t.name not in sources:
            raise RenderError(f"no stem file for track {t.name!r}")
    stem_paths = {t.name: stems_dir / f"{t.name}.wav" for t in plan.tracks}
    mix_path = out_dir / "mix.wav"

    groups = split_tracks(plan, sources, SUM_GROUPS)
    stats: list[dict[str, Any]] = []
    part_stats: list[dict[str, Any]] = []
    parallel = processes > 1 and len(groups) > 1
    if parallel:
        cpu_s = frames / sr * sum(track_cost(t, sources[t.name].channels, sr) for t in plan.tracks)
        parallel = cpu_s >= MIN_PARALLEL_CPU_S

    folders = [work_dir / f"partials-{i}" for i in range(len(groups))]
    part_paths = [work_dir / f"mix-part-{i}.wav" for i in range(MIX_PARTS)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [_TrackJob(plan=plan, names=names, sources={n: sources[n] for n in names}, stems_dir=stems_dir,
                      partials_dir=folders[i], frames=frames, scratch=work_dir / f"server-scratch-{i}.wav")
            for i, names in enumerate(groups)]
    try:
        if parallel:
            stats = _run_workers(jobs, pool)
            keys = [st["partials"] for st in stats]
        else:
            # one server per group (and per part below), as in the workers: pyo's random
            # generator (used by STRev) restarts with each server, so the reverb is the same here
            keys = [_render_tracks(job) for job in jobs]

        # the mix section in parts (group buses shared out; each in its own server), summed here
        mix_jobs = [_MixJob(plan=plan, buses=buses, fxs=fxs, direct=direct, partials=list(zip(folders, keys)),
                            out_path=part_paths[i], frames=frames, scratch=work_dir / f"server-scratch-mix-{i}.wav")
                    for i, (buses, fxs, direct) in enumerate(split_mix(plan, keys))]
        if parallel and len(mix_jobs) > 1:
            part_stats = _run_workers(mix_jobs, pool, _render_mix_part)
        else:
            part_stats = [_render_mix_part(job) for job in mix_jobs]
        meter = _sum_parts([job.out_path for job in mix_jobs], mix_path, plan.mix_gain_db, frames, sr)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        for path in part_paths:
            path.unlink(missing_ok=True)
    _check_file(mix_path, frames)
    return RenderedMix(mix_path=mix_path, stem_paths=stem_paths, frames=frames, sample_rate_hz=sr,
                       workers=stats, mix_parts=part_stats, mix_meter=meter)


# -- mastering ----------------------------------------------------------------------------

@dataclass
class MasterSettings:
    """The gains the loudness loop of :mod:`expertmix.master` chooses for one master render."""

    pre_gain_db: float     # brings the mix to the chain's reference level (glue threshold reference)
    drive_db: float        # gain into the limiter: sets the final loudness
    limit_db: float        # the limiter's sample-peak threshold (below the true-peak ceiling)
    release_ms: float      # the limiter's release (shortened by the loop for loud targets)


def _running_max(g: _Graph, det: Any, window_frames: int, sr: int) -> Any:
    """max(det[t - window_frames .. t]), sample-exact: a dense hold built from delays and maxima.

    A run of ``_HOLD_RUN`` one-sample delays gives the maximum over 16 samples; delayed copies of
    that every 16 samples extend it over the whole window (about 30 cheap objects for 5 ms).
    """
    short = det
    for k in range(1, _HOLD_RUN):
        short = g.k(pyo.Max(short, comp=_sdelay(g, det, k, sr)))
    held = short
    for j in range(1, int(math.ceil(max(0, window_frames - (_HOLD_RUN - 1)) / _HOLD_RUN)) + 1):
        held = g.k(pyo.Max(held, comp=_sdelay(g, short, j * _HOLD_RUN, sr)))
    return held


def limiter_latency_frames(master: MasterPlan, sr: int) -> int:
    """Latency of the master chain (the limiter's lookahead), in frames."""
    return int(round(master.limiter.lookahead_ms * sr / 1000.0))


def render_master_pre(mix_path: Path, out_path: Path, master: MasterPlan, pre_gain_db: float, *,
                      sample_rate_hz: int, content_frames: int, work_dir: Path) -> None:
    """First half of the master chain, rendered once: pre-gain -> EQ -> glue compressor.

    None of it depends on the drive or limiter settings the loudness loop adjusts, so
    :func:`render_master` loops over this file only (float32, lossless for pyo's float DSP).
    """
    sr = sample_rate_hz
    frames = render_frames(content_frames, 0)

    def build(g: _Graph, records: list[Any]) -> None:
        player = _player(g, mix_path, db_to_gain(pre_gain_db))
        chans = _compressor(g, _eq(g, _split(g, player, 2), master.eq, sr), master.glue)
        records.append(_record(g, _stereo(g, chans[0], chans[1]), out_path))

    _render_graph(sr, frames, work_dir / "server-scratch.wav", build)
    _check_file(out_path, frames)


def render_master(pre_path: Path, out_path: Path, master: MasterPlan, settings: MasterSettings, *,
                  sample_rate_hz: int, content_frames: int, work_dir: Path) -> int:
    """Second half of the master chain on the output of :func:`render_master_pre`:
    drive -> look-ahead peak limiter, into ``out_path`` (float, delayed by the latency).

    Returns the latency in frames; the caller trims it. The limiter's detector holds each peak
    over the look-ahead window (a dense running maximum), so the gain is fully down when the
    delayed peak passes; ``limit_db`` is a sample-peak threshold that the caller lowers until the
    true peak (BS.1770 oversampled) meets the ceiling. ``settings.pre_gain_db`` was applied by
    the first half.
    """
    sr = sample_rate_hz
    lat = limiter_latency_frames(master, sr)
    frames = render_frames(content_frames + lat, 0)

    def build(g: _Graph, records: list[Any]) -> None:
        player = _player(g, pre_path, db_to_gain(settings.drive_db))
        chans = _split(g, player, 2)
        held = _running_max(g, _detector(g, chans), lat, sr)
        # attack: 1/8 of the look-ahead, so the gain is fully down (e^-8) when the delayed peak passes
        gain = g.k(pyo.Compress(held, thresh=_thresh(settings.limit_db), ratio=100.0,
                                risetime=master.limiter.lookahead_ms / 1000.0 / 8.0,
                                falltime=settings.release_ms / 1000.0, lookahead=0.0, knee=0.0,
                                outputAmp=True))
        out = [g.k(_sdelay(g, c, lat, sr) * gain) for c in chans]
        records.append(_record(g, _stereo(g, out[0], out[1]), out_path))

    _render_graph(sr, frames, work_dir / "server-scratch.wav", build)
    _check_file(out_path, frames)
    return lat


def pyo_version() -> str:
    """Version of the pyo library (for reports and model cards), without importing it."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pyo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
