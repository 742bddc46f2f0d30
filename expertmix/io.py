"""Safe file output: atomic writes, staged output folders, deterministic WAV files.

Nothing here ever opens an input stem for writing. An output folder is built next to its final
place and moved in with one rename, so a crash leaves either the old folder or the new one,
never a half-written mix.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import yaml

from .errors import OutputError

#: File that marks a folder as written by expertmix (only such folders may be replaced).
OUTPUT_MARKER = ".expertmix-output"

#: Frames per block when streaming audio through numpy (about 1.5 s at 44.1 kHz).
BLOCK_FRAMES = 65536

#: PyYAML's safe loader and dumper, in C (libyaml) where PyYAML was built with it: the same
#: safe constructors and representers, about ten times faster on the rulebook and plans.
SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def yaml_load(text: str) -> object:
    """``yaml.safe_load`` through :data:`SafeLoader` (only plain YAML types, never objects)."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - SafeLoader is a safe loader


def yaml_compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (with line marks), through :data:`SafeLoader`."""
    return yaml.compose(text, Loader=SafeLoader)


def yaml_dump(data: object, **kwargs: object) -> str:
    """``yaml.safe_dump`` through :data:`SafeDumper`."""
    return yaml.dump(data, Dumper=SafeDumper, **kwargs)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_dir(out_dir: Path, *, overwrite: bool, protected: tuple[Path, ...] = ()) -> Path:
    """Refuse an output folder that would lose data; return its resolved path.

    ``protected`` folders (the stems) may neither be the output nor lie inside it.
    """
    out = Path(out_dir).expanduser().resolve()
    for p in protected:
        pr = Path(p).expanduser().resolve()
        if out == pr or _is_within(pr, out):
            raise OutputError(f"output folder {out} would contain or replace the stems folder {pr}",
                              hint="choose an output folder outside the stems folder, e.g. OUT=./mix-out")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{out} exists and is not a folder", hint="choose another output path")
        if any(out.iterdir()):
            if not overwrite:
                raise OutputError(f"output folder {out} already exists and is not empty",
                                  hint="pass --overwrite to replace an earlier expertmix output, or choose another folder")
            if not (out / OUTPUT_MARKER).exists():
                raise OutputError(f"{out} was not written by expertmix; refusing to replace it",
                                  hint="choose an empty or new output folder")
    if not out.parent.exists():
        raise OutputError(f"the parent folder of {out} does not exist", hint=f"create {out.parent} first")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"cannot write in {out.parent}", hint="choose a writable location")
    return out


@contextlib.contextmanager
def staged_output(out_dir: Path, *, overwrite: bool, protected: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a private folder to fill; on success it replaces ``out_dir`` in one rename.

    On any exception the staging folder is removed and ``out_dir`` is left as it was.
    """
    out = check_output_dir(out_dir, overwrite=overwrite, protected=protected)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    os.chmod(stage, 0o777 & ~_umask())
    try:
        yield stage
        (stage / OUTPUT_MARKER).write_text("written by expertmix; safe to replace with --overwrite\n")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _zero_peak_timestamp(path: Path) -> None:
    """Zero the time stamp libsndfile writes in a float WAV's PEAK chunk (for bit-identical files)."""
    with open(path, "r+b") as fh:
        head = fh.read(4096)
        pos = head.find(b"PEAK")
        if pos >= 0 and head[:4] == b"RIFF":
            fh.seek(pos + 12)  # 'PEAK', chunk size, version -> time stamp
            fh.write(b"\0\0\0\0")


def write_wav(path: Path, audio: np.ndarray, sample_rate_hz: int, *, subtype: str = "FLOAT") -> None:
    """Write a whole array as WAV, byte-deterministically."""
    sf.write(str(path), audio, sample_rate_hz, subtype=subtype, format="WAV")
    if subtype in ("FLOAT", "DOUBLE"):
        _zero_peak_timestamp(path)


def copy_wav(src: Path, dst: Path, *, start_frame: int, frames: int, subtype: str = "FLOAT",
             gain: float = 1.0, tap: Callable[[np.ndarray], None] | None = None) -> None:
    """Stream ``frames`` frames of ``src`` from ``start_frame`` into ``dst`` (block by block).

    Missing frames at the end (a source shorter than asked) are written as silence. ``tap``, if
    given, sees every float32 block written (before ``subtype`` rounding), e.g. a meter's
    ``process``.
    """
    with sf.SoundFile(str(src)) as fin:
        channels, sr = fin.channels, fin.samplerate
        fin.seek(min(start_frame, fin.frames))
        with sf.SoundFile(str(dst), "w", samplerate=sr, channels=channels, subtype=subtype, format="WAV") as fout:
            left = frames
            while left > 0:
                block = fin.read(min(BLOCK_FRAMES, left), dtype="float32", always_2d=True)
                if len(block) == 0:
                    block = np.zeros((min(BLOCK_FRAMES, left), channels), dtype=np.float32)
                if gain != 1.0:
                    block = block * np.float32(gain)
                if tap is not None:
                    tap(block)
                fout.write(block)
                left -= len(block)
    if subtype in ("FLOAT", "DOUBLE"):
        _zero_peak_timestamp(dst)


def iter_blocks(path: Path, block_frames: int = BLOCK_FRAMES, dtype: str = "float32") -> Iterator[np.ndarray]:
    """Yield blocks shaped (frames, channels) of an audio file."""
    with sf.SoundFile(str(path)) as f:
        while True:
            block = f.read(block_frames, dtype=dtype, always_2d=True)
            if len(block) == 0:
                return
            yield block
