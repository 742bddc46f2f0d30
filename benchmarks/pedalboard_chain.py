"""The reference: expertmix's mix plan rendered with Spotify's pedalboard (JUCE effects).

Reads a ``plan.yaml`` written by expertmix and renders the same chain as closely as pedalboard's
plugin set allows, the way one would write it by hand with pedalboard and numpy:

* per track: trim (and polarity) -> DC high-pass -> rumble high-pass -> mains hum notches ->
  the plan's EQ bands (PeakFilter / LowShelfFilter / HighShelfFilter / high- and low-pass) ->
  NoiseGate -> Compressor (+ make-up; parallel when ``mix`` < 1) -> split-band de-esser
  (a high-passed copy through a Compressor, difference added back) -> sidechain ducking (numpy
  envelope of the trigger track) -> fader and pan/width matrix -> group bus, effect sends;
* group buses: EQ -> Compressor -> gain; effect returns: reverb (high-pass, pre-delay, low-pass,
  Reverb) and tempo-synced delay (high-pass, low-pass, Delay), each with its return level;
* mix-bus trim, then a master pass: gain to the chain reference level -> EQ -> glue Compressor
  -> drive -> look-ahead BrickwallLimiter at the ceiling. One pass (no measure-and-correct loudness loop).

Differences that do not change the amount of work much: pedalboard's HighpassFilter and
LowpassFilter are first order (6 dB/oct), so an n-th order filter is n of them in series (expertmix
uses biquads); notches are deep PeakFilters; the reverb is Freeverb (expertmix: pyo's STRev).

Tracks are read with ``pedalboard.io.AudioFile`` and processed two at a time in threads
(pedalboard releases the GIL while it processes); only the bus sums (mix, group buses, effect
sends) and the tracks in flight are held in memory, never all stems at once.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import lfilter

import pedalboard as pb
from pedalboard.io import AudioFile

from expertmix.plan import note_to_ms, pan_matrix  # the same note values and pan law as expertmix

#: Loudness the master chain is fed at (as expertmix.master.CHAIN_REFERENCE_LUFS).
CHAIN_REFERENCE_DB = -20.0


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def _highpass(freq: float, order: int) -> list[Any]:
    return [pb.HighpassFilter(cutoff_frequency_hz=freq) for _ in range(order)]


def _lowpass(freq: float, order: int) -> list[Any]:
    return [pb.LowpassFilter(cutoff_frequency_hz=freq) for _ in range(order)]


def _eq(bands: list[dict], sr: int) -> list[Any]:
    out: list[Any] = []
    for b in bands:
        if not b.get("enabled", True):
            continue
        f = min(b["freq_hz"], 0.45 * sr)
        kind = b["kind"]
        if kind == "highpass":
            out += _highpass(f, 2)
        elif kind == "lowpass":
            if b["freq_hz"] < 0.98 * sr / 2:
                out += _lowpass(f, 2)
        elif b["gain_db"] != 0.0:
            cls = {"peak": pb.PeakFilter, "low_shelf": pb.LowShelfFilter, "high_shelf": pb.HighShelfFilter}[kind]
            out.append(cls(cutoff_frequency_hz=f, gain_db=b["gain_db"], q=b["q"]))
    return out


def _compressor(c: dict) -> list[Any]:
    if not c["enabled"]:
        return []
    comp = [pb.Compressor(threshold_db=c["threshold_db"], ratio=c["ratio"], attack_ms=c["attack_ms"],
                          release_ms=c["release_ms"])]
    if c["makeup_db"]:
        comp.append(pb.Gain(gain_db=c["makeup_db"]))
    if c.get("mix", 1.0) < 1.0:  # parallel compression
        wet = pb.Chain(comp + [pb.Gain(gain_db=20 * math.log10(max(c["mix"], 1e-6)))])
        dry = pb.Gain(gain_db=20 * math.log10(max(1.0 - c["mix"], 1e-6)))
        return [pb.Mix([wet, dry])]
    return comp


def track_board(t: dict, sr: int) -> pb.Pedalboard:
    fx: list[Any] = [pb.Gain(gain_db=t["trim_db"])]
    if t.get("polarity_invert"):
        fx.append(pb.Invert())
    c = t["cleanup"]
    if c["dc_remove"]:
        fx += _highpass(5.0, 2)
    if c["highpass_hz"]:
        fx += _highpass(c["highpass_hz"], c["highpass_slope_db_per_oct"] // 6)
    if c["hum_notch_hz"]:
        for k in range(1, c["hum_harmonics"] + 1):
            f = c["hum_notch_hz"] * k
            if f < 0.45 * sr:
                fx.append(pb.PeakFilter(cutoff_frequency_hz=f, gain_db=-24.0, q=c["hum_notch_q"]))
    fx += _eq(t["eq"], sr)
    g = t["gate"]
    if g["enabled"]:
        fx.append(pb.NoiseGate(threshold_db=g["threshold_db"], ratio=10.0, attack_ms=g["attack_ms"],
                               release_ms=g["release_ms"]))
    fx += _compressor(t["compressor"])
    return pb.Pedalboard(fx)


def _deess(y: np.ndarray, d: dict, sr: int) -> np.ndarray:
    high = pb.Pedalboard(_highpass(d["freq_hz"], 2))(y, sr)
    squashed = pb.Compressor(threshold_db=d["threshold_db"], ratio=d["ratio"], attack_ms=0.5,
                             release_ms=d["release_ms"])(high, sr)
    y += squashed - high
    return y


def _detector_db(y: np.ndarray, release_ms: float, sr: int) -> np.ndarray:
    """Smoothed peak level of a track (max over channels), dBFS, float32."""
    det = np.max(np.abs(y), axis=0)
    a = math.exp(-1000.0 / (release_ms * sr))
    env = lfilter([1.0 - a], [1.0, -a], det).astype(np.float32)
    return (20.0 * np.log10(np.maximum(env, 1e-7))).astype(np.float32)


def _limiter(lim: dict) -> Any:
    """Look-ahead brick-wall limiter at the ceiling (pedalboard >= 0.9.17); else JUCE's Limiter."""
    if hasattr(pb, "BrickwallLimiter"):
        return pb.BrickwallLimiter(ceiling_db=lim["ceiling_dbtp"] - 0.3, release_ms=lim["release_ms"],
                                   lookahead_ms=lim["lookahead_ms"])
    # JUCE's Limiter adds make-up gain (min(3.75 dB, -threshold)) and clips at 0 dBFS
    return pb.Chain([pb.Limiter(threshold_db=-3.75, release_ms=lim["release_ms"]),
                     pb.Gain(gain_db=lim["ceiling_dbtp"] - 0.3 - 3.75)])


def render_plan(plan_path: str | Path, out_dir: str | Path, *, write_stems: bool = False,
                threads: int = 2) -> dict[str, float]:
    """Render ``plan_path`` into ``out_dir/mix.wav`` and ``master.wav`` (and ``stems/``). Returns timings, s."""
    plan_path, out_dir = Path(plan_path), Path(out_dir)
    plan = yaml.safe_load(plan_path.read_text())
    t_start = time.perf_counter()
    stems_dir = Path(plan["stems_dir"])
    if not stems_dir.is_absolute():
        stems_dir = (plan_path.parent / stems_dir).resolve()
    sr = int(plan["sample_rate_hz"])
    tracks = plan["tracks"]
    frames = {}
    for t in tracks:
        with AudioFile(str(stems_dir / t["file"])) as f:
            assert f.samplerate == sr, "resampling is not part of this benchmark"
            frames[t["name"]] = f.frames
    total = max(frames.values()) + int(round(plan["tail_s"] * sr))
    out_dir.mkdir(parents=True, exist_ok=True)
    if write_stems:
        (out_dir / "stems").mkdir(exist_ok=True)

    sums = {name: np.zeros((2, total), np.float32) for name in ["mix"] + [b["name"] for b in plan["buses"]]}
    sends = {f["name"]: np.zeros((2, total), np.float32) for f in plan["fx"]}
    lock = threading.Lock()
    duck_by_target = {d["target"]: d for d in plan["ducking"]}
    triggers = {d["trigger"] for d in plan["ducking"]}
    envelopes: dict[str, Any] = {}

    def run_track(t: dict) -> None:
        name = t["name"]
        with AudioFile(str(stems_dir / t["file"])) as f:
            x = f.read(f.frames)  # (channels, frames) float32
        y = track_board(t, sr)(x, sr)
        del x
        if t["deesser"]["enabled"]:
            y = _deess(y, t["deesser"], sr)
        if name in triggers:
            for d in plan["ducking"]:
                if d["trigger"] == name:
                    envelopes[(name, d["target"])] = _detector_db(y, d["release_ms"], sr)
        d = duck_by_target.get(name)
        if d is not None:
            lvl = envelopes_wait(d["trigger"], name)
            gr = np.minimum(np.maximum(lvl[: y.shape[1]] - d["threshold_db"], 0.0) * (1.0 - 1.0 / d["ratio"]),
                            d["depth_db"])
            y *= np.power(np.float32(10.0), -gr / np.float32(20.0))
        (ll, lr), (rl, rr) = pan_matrix(t["pan"], t["width"], y.shape[0])
        fader = 0.0 if t["mute"] else _db(t["gain_db"])
        x0 = y[0]
        x1 = y[1] if y.shape[0] > 1 else None
        pre = np.empty((2, y.shape[1]), np.float32)
        pre[0] = x0 * np.float32(ll) if x1 is None else x0 * np.float32(ll) + x1 * np.float32(lr)
        pre[1] = x0 * np.float32(rl) if x1 is None else x0 * np.float32(rl) + x1 * np.float32(rr)
        del y
        post = pre * np.float32(fader)
        if write_stems:
            sf.write(str(out_dir / "stems" / f"{name}.wav"), post.T, sr, subtype="FLOAT")
        if t["mute"]:
            return
        n = post.shape[1]
        with lock:
            sums[t["bus"]][:, :n] += post
            for s in t["sends"]:
                src = pre if s["pre_fader"] else post
                sends[s["bus"]][:, :n] += src * np.float32(_db(s["level_db"]))

    done_events: dict[str, threading.Event] = {t["name"]: threading.Event() for t in tracks}

    def envelopes_wait(trigger: str, target: str) -> np.ndarray:
        done_events[trigger].wait()
        return envelopes[(trigger, target)]

    def task(t: dict) -> None:
        try:
            run_track(t)
        finally:
            done_events[t["name"]].set()

    # triggers first, so a ducked track never waits on a track that has not started
    order = sorted(tracks, key=lambda t: 0 if t["name"] in triggers else 1)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for fut in [pool.submit(task, t) for t in order]:
            fut.result()
    timings = {"tracks_s": time.perf_counter() - t0}

    t0 = time.perf_counter()
    mix = sums.pop("mix")
    buses = {b["name"]: b for b in plan["buses"]}

    def run_bus(name: str) -> np.ndarray:
        b = buses[name]
        board = pb.Pedalboard(_eq(b["eq"], sr) + _compressor(b["compressor"]) + [pb.Gain(gain_db=b["gain_db"])])
        return board(sums[name], sr)

    def run_fx(f: dict) -> np.ndarray:
        ret = pb.Gain(gain_db=f["return_db"])
        if f["kind"] == "reverb":
            board = _highpass(f["highpass_hz"], 2)
            if f["predelay_ms"] > 0:
                board.append(pb.Delay(delay_seconds=f["predelay_ms"] / 1000.0, feedback=0.0, mix=1.0))
            board += [pb.LowpassFilter(cutoff_frequency_hz=f["lowpass_hz"]),
                      pb.Reverb(room_size=min(0.95, 0.35 + 0.12 * f["decay_s"] * f["room_size"]), damping=0.5,
                                wet_level=1.0, dry_level=0.0, width=1.0), ret]
        else:
            t_ms = f["time_ms"] if f.get("time_ms") else note_to_ms(f.get("note") or "1/4", plan["tempo_bpm"])
            board = _highpass(f["highpass_hz"], 2) + _lowpass(min(f["lowpass_hz"], 0.45 * sr), 2) + [
                pb.Delay(delay_seconds=t_ms / 1000.0, feedback=f["feedback"], mix=1.0), ret]
        return pb.Pedalboard(board)(sends[f["name"]], sr)

    jobs = [(run_bus, n) for n in buses if np.any(sums[n])] + [(run_fx, f) for f in plan["fx"] if np.any(sends[f["name"]])]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for y in pool.map(lambda job: job[0](job[1]), jobs):
            mix += y
            del y
    sums.clear()
    sends.clear()
    mix *= np.float32(_db(plan["mix_gain_db"]))
    sf.write(str(out_dir / "mix.wav"), mix.T, sr, subtype="FLOAT")
    timings["buses_fx_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    m = plan["master"]
    rms_db = 10.0 * math.log10(float(np.mean(np.square(mix[:, ::16], dtype=np.float64))) + 1e-20)
    board = [pb.Gain(gain_db=CHAIN_REFERENCE_DB - rms_db)] + _eq(m["eq"], sr) + _compressor(m["glue"]) + [
        pb.Gain(gain_db=m["target_lufs"] - CHAIN_REFERENCE_DB),
        _limiter(m["limiter"])]
    master = pb.Pedalboard(board)(mix, sr)
    sf.write(str(out_dir / "master.wav"), master.T, sr, subtype="PCM_24")
    timings["master_s"] = time.perf_counter() - t0
    timings["render_s"] = time.perf_counter() - t_start
    return timings
