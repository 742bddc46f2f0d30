"""Mastering (expertmix.master.master_mix): loudness targets, true-peak ceilings, lengths.

The mixes are synthetic and music-like (decaying noise hits over a sine bed with a moving
envelope), long enough for the 3 s short-term windows. Loudness is checked with expertmix's
meter and, independently, with pyloudnorm; true peaks also with a plain 8x polyphase upsampling.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile as sf

from expertmix.loudness import measure_loudness_file, true_peak_dbtp
from expertmix.master import PRESETS, SILENT_MIX_LUFS, master_mix
from expertmix.plan import Limiter, MasterPlan
from expertmix.units import db_to_gain

pytestmark = pytest.mark.slow

SR = 44100


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo: a bass/mid sine bed with a slow swell and decaying noise hits every 0.25-0.5 s."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.15 * t) ** 2
    x = np.zeros((n, 2))
    x += (0.12 * np.sin(2 * np.pi * 55.0 * t) * swell)[:, None]
    x += (0.05 * np.sin(2 * np.pi * 330.0 * t + 1.0) * swell)[:, None] * np.array([1.0, 0.6])
    x += (0.03 * np.sin(2 * np.pi * 880.0 * t) * swell)[:, None] * np.array([0.5, 1.0])
    hit_len = int(0.15 * SR)
    decay = np.exp(-np.arange(hit_len) / SR / 0.04)
    # hits are band-limited noise (real drums carry little energy near Nyquist)
    sos = scipy.signal.butter(2, [60.0, 6000.0], btype="bandpass", fs=SR, output="sos")
    hits = scipy.signal.sosfilt(sos, rng.standard_normal((n, 2)), axis=0)
    hits /= np.std(hits)
    pos = 0.0
    while pos < seconds:
        a = int(pos * SR)
        m = min(hit_len, n - a)
        x[a:a + m] += rng.uniform(0.2, 0.5) * hits[a:a + m] * decay[:m, None]
        pos += rng.choice([0.25, 0.5])
    return (x * 0.5).astype(np.float32)


def with_intersample_peaks(x: np.ndarray, starts_s=(2.0, 5.0, 7.5)) -> np.ndarray:
    """Add bursts of an fs/4 sine at 45 degrees: every sample is at 0.707 of the true peak, so the
    true peak is 3 dB over the sample peak (here: samples at -1 dBFS, true peak +2 dBTP)."""
    y = x.astype(np.float64).copy()
    n = int(0.2 * SR)
    k = np.arange(n)
    amp = db_to_gain(-1.0) / math.cos(math.pi / 4)           # sample peak -1 dBFS
    burst = amp * np.sin(np.pi / 2 * k + np.pi / 4)
    for s in starts_s:
        a = int(s * SR)
        y[a:a + n] = burst[:, None]
    return y.astype(np.float32)


def write_mix(path: Path, x: np.ndarray) -> Path:
    sf.write(str(path), x, SR, subtype="FLOAT")
    return path


def master_plan(target_lufs: float, ceiling_dbtp: float, name: str = "custom") -> MasterPlan:
    return MasterPlan(preset=name, target_lufs=target_lufs, limiter=Limiter(ceiling_dbtp=ceiling_dbtp))


def run_master(tmp_path: Path, x: np.ndarray, plan: MasterPlan, tag: str = "m"):
    work = tmp_path / f"work-{tag}"
    work.mkdir()
    mix = write_mix(tmp_path / f"mix-{tag}.wav", x)
    out = tmp_path / f"master-{tag}.wav"
    result = master_mix(mix, out, plan, sample_rate_hz=SR, frames=len(x), work_dir=work)
    return result, out


def independent_true_peak_dbtp(y: np.ndarray) -> float:
    up = scipy.signal.resample_poly(y, 8, 1, axis=0)
    return 20.0 * math.log10(float(np.max(np.abs(up))))


@pytest.fixture(scope="module")
def mix_9s() -> np.ndarray:
    return music_like(9.0, seed=1)


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_master_meets_each_preset(tmp_path, mix_9s, preset_name):
    p = PRESETS[preset_name]
    result, out = run_master(tmp_path, mix_9s, master_plan(p.target_lufs, p.ceiling_dbtp, p.name))

    info = sf.info(str(out))
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (len(mix_9s), SR, 2, "PCM_24")
    stats = measure_loudness_file(str(out))
    assert stats.integrated_lufs == pytest.approx(p.target_lufs, abs=0.5)
    assert stats.true_peak_dbtp <= p.ceiling_dbtp + 0.05
    y, _ = sf.read(str(out))
    assert pyloudnorm.Meter(SR).integrated_loudness(y) == pytest.approx(p.target_lufs, abs=0.6)
    assert independent_true_peak_dbtp(y) <= p.ceiling_dbtp + 0.15
    # the result reports what the file measures
    assert result.within_target
    assert result.master["integrated_lufs"] == pytest.approx(stats.integrated_lufs, abs=0.01)
    assert result.target_lufs == p.target_lufs and result.ceiling_dbtp == p.ceiling_dbtp
    assert 1 <= result.passes
    assert not list(out.parent.glob(f".{out.stem}-pass-*"))   # only the chosen candidate remains


def test_master_keeps_the_music_in_place(tmp_path, mix_9s):
    """The limiter's look-ahead latency is trimmed: the master is time-aligned with the mix."""
    result, out = run_master(tmp_path, mix_9s, master_plan(-23.0, -1.0))
    y, _ = sf.read(str(out))
    x = mix_9s.astype(np.float64)
    lags = np.arange(-300, 301)
    a, b = x[SR:3 * SR, 0], y[SR:3 * SR, 0]
    corr = [float(np.dot(a[300:-300], np.roll(b, -lag)[300:-300])) for lag in lags]
    assert int(lags[int(np.argmax(corr))]) == 0


@pytest.mark.parametrize("preset_name", ["streaming", "loud"])
def test_limiter_holds_the_ceiling_on_intersample_peaks(tmp_path, preset_name):
    x = with_intersample_peaks(music_like(9.0, seed=2))
    # the test signal really has 3 dB of inter-sample overshoot
    assert true_peak_dbtp(x, SR) == pytest.approx(2.0, abs=0.2)
    assert 20 * math.log10(float(np.max(np.abs(x)))) == pytest.approx(-1.0, abs=0.01)
    p = PRESETS[preset_name]
    result, out = run_master(tmp_path, x, master_plan(p.target_lufs, p.ceiling_dbtp, p.name))
    y, _ = sf.read(str(out))
    assert measure_loudness_file(str(out)).true_peak_dbtp <= p.ceiling_dbtp + 0.05
    assert independent_true_peak_dbtp(y) <= p.ceiling_dbtp + 0.15
    assert result.master["true_peak_dbtp"] <= p.ceiling_dbtp + 0.05


@pytest.mark.parametrize("seconds", [8.0, 8.5, 9.0, 10.0])
def test_master_length_equals_mix_length(tmp_path, seconds):
    x = music_like(seconds, seed=3)
    result, out = run_master(tmp_path, x, master_plan(-16.0, -1.0))
    assert sf.info(str(out)).frames == len(x)


def test_silent_mix_is_copied_not_normalised(tmp_path):
    x = np.zeros((3 * SR, 2), dtype=np.float32)
    result, out = run_master(tmp_path, x, master_plan(-14.0, -1.0))
    y, _ = sf.read(str(out))
    info = sf.info(str(out))
    assert (info.frames, info.subtype) == (len(x), "PCM_24")
    assert np.all(y == 0.0)
    assert not result.within_target
    assert result.passes == 0
    assert any("silent" in n for n in result.notes)
    assert result.mix["integrated_lufs"] < SILENT_MIX_LUFS


def test_nearly_silent_mix_is_copied_unchanged(tmp_path):
    """Below the -70 LUFS absolute gate a mix counts as silent: copied at its own level."""
    t = np.arange(2 * SR) / SR
    x = np.stack([db_to_gain(-85.0) * np.sin(2 * np.pi * 1000 * t)] * 2, axis=1).astype(np.float32)
    result, out = run_master(tmp_path, x, master_plan(-14.0, -1.0))
    y, _ = sf.read(str(out))
    np.testing.assert_allclose(y, x, atol=2.0 ** -23)      # 24-bit quantisation only
    assert any("silent" in n for n in result.notes)


def test_the_worker_pool_renders_the_same_master(tmp_path, mix_9s):
    """The loop's candidates do not depend on the pool: rendered at once in worker processes or
    one after the other here, the master is byte-identical, with the same passes."""
    from expertmix.workers import WorkerPool

    plan = master_plan(-9.0, -1.0)  # loud: the limiter works, more than one round
    here, out_here = run_master(tmp_path, mix_9s, plan, tag="here")
    work = tmp_path / "work-pool"
    work.mkdir()
    mix = write_mix(tmp_path / "mix-pool.wav", mix_9s)
    with WorkerPool(2) as pool:
        pooled = master_mix(mix, tmp_path / "master-pool.wav", plan, sample_rate_hz=SR, frames=len(mix_9s),
                            work_dir=work, pool=pool)
    assert (tmp_path / "master-pool.wav").read_bytes() == out_here.read_bytes()
    assert (pooled.passes, pooled.drive_db, pooled.limit_db) == (here.passes, here.drive_db, here.limit_db)
    assert pooled.passes >= 2 and pooled.within_target
    assert not any(work.iterdir())  # pass folders and raw files removed
