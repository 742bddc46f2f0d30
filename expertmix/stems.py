"""Discover, validate and prepare a folder of raw stems for analysis and rendering.

The renderer streams each stem from disk with pyo's ``SfPlayer``, which reads only WAV/AIFF and
does not resample properly. So every stem that is not already a PCM/float WAV or AIFF at the
session sample rate with 1 or 2 channels is decoded (downmixed, resampled) into a float32 WAV in
a cache folder; the others are streamed in place. Input files are only ever opened for reading.

Three steps, each usable on its own:

* :func:`discover_stems` lists the audio files directly inside a folder (sorted by name).
* :func:`probe_stems` reads headers only and reports *every* problem (unreadable, empty,
  duplicate names, bad roles ...) before any audio is decoded or any file written; it picks the
  session sample rate and each stem's role.
* :func:`load_stems` decodes each stem once, hands the float32 audio to a ``visit`` callback (so
  the caller can analyse that decode), writes the cache WAV when needed and returns a
  :class:`StemSet`.

Units: sample rates in Hz, lengths in frames (one frame = one sample per channel) unless the
name ends in ``_s`` (seconds), levels in dBFS (full scale = 1.0). Audio arrays are float32 shaped
(frames, channels).
"""
from __future__ import annotations

import collections
import fnmatch
import os
import shlex
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import soundfile as sf
import soxr
import yaml

from .errors import InputError, OutputError
from .io import BLOCK_FRAMES, _zero_peak_timestamp, yaml_compose, yaml_load
from .roles import check_role, role_from_name
from .units import db_to_gain, gain_to_db

#: File extensions read as stems (compared without case).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".mp3",
)
#: Audio formats that soundfile cannot decode: extension -> what the file is.
UNSUPPORTED_AUDIO_EXTENSIONS: dict[str, str] = {
    ".m4a": "an MPEG-4 audio file (AAC or ALAC)",
    ".aac": "an AAC file",
    ".wma": "a Windows Media Audio file",
    ".alac": "an Apple Lossless file",
    ".ape": "a Monkey's Audio file",
    ".opus": "an Opus file this soundfile build cannot decode",
}
#: Opus-in-Ogg is readable by recent libsndfile builds: such files are used when they open.
TRY_OPEN_EXTENSIONS: tuple[str, ...] = (".opus",)
#: MIDI holds notes, not audio.
MIDI_EXTENSIONS: tuple[str, ...] = (".mid", ".midi")

#: Containers pyo's SfPlayer streams directly (soundfile ``format`` names).
STREAMABLE_FORMATS = frozenset({"WAV", "WAVEX", "AIFF"})
#: Sample encodings streamed in place (soundfile ``subtype`` names); others are cached.
STREAMABLE_SUBTYPES = frozenset({"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})
#: A stem whose sample peak is below this is all-silent, dBFS.
SILENT_PEAK_DBFS = -90.0
#: Stems whose lengths differ by more than this get a StemSet warning, s.
LENGTH_MISMATCH_S = 1.0
#: Accepted session sample rates, Hz.
MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 384000
#: soxr quality recipe for all resampling.
RESAMPLE_QUALITY = "VHQ"
#: Where a stem's role came from, strongest first.
ROLE_SOURCES: tuple[str, ...] = ("user", "roles_file", "filename", "audio", "default")
#: ITU-R BS.775 gain of the centre and surround channels in a 5.1 -> stereo downmix (-3 dB).
_ITU_SIDE_GAIN = np.float32(0.70710677)

_CONVERT_HINT = "convert it to WAV or FLAC, or move it out of the folder (or leave it out with --exclude NAME)"


# --------------------------------------------------------------------------------------------
# data


def _plain(value: Any) -> Any:
    """Paths -> str, tuples -> lists, recursively (for YAML/JSON dumping)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class StemInfo:
    """What the headers say about one stem and what loading it will do (no audio decoded yet).

    ``source_frames`` is the header's frame count at ``source_sample_rate_hz`` (an estimate for
    some MP3s); ``frames`` is the expected length at the session rate ``sample_rate_hz``.
    ``needs_cache``: the file must be decoded into a cache WAV for pyo.
    """

    name: str
    path: Path
    role: str
    role_source: str
    channels: int
    source_channels: int
    source_sample_rate_hz: int
    sample_rate_hz: int
    source_frames: int
    frames: int
    source_format: str
    needs_cache: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str paths, lists) for YAML/JSON."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class StemProbe:
    """Result of :func:`probe_stems`: validated stems in order and the session sample rate (Hz)."""

    stems: tuple[StemInfo, ...]
    sample_rate_hz: int
    source_dir: Path
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str paths, lists) for YAML/JSON."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class Stem:
    """One prepared stem.

    ``name``: file name without extension (unique, case-insensitively). ``path``: the original
    file (never written). ``role``: see :mod:`expertmix.roles`; ``role_source`` is one of
    :data:`ROLE_SOURCES`. ``channels``: 1 or 2 after any downmix; ``source_channels``: as in the
    file. ``source_sample_rate_hz``/``sample_rate_hz``: the file's and the session's rate, Hz.
    ``frames``: length at the session rate. ``source_format``: soundfile format/subtype, e.g.
    ``"WAV/PCM_24"``. ``render_path``: a WAV/AIFF at the session rate with ``channels`` channels
    that pyo can stream (the original file, or the cache WAV). ``warnings``: notes for the user.
    """

    name: str
    path: Path
    role: str
    role_source: str
    channels: int
    source_channels: int
    source_sample_rate_hz: int
    sample_rate_hz: int
    frames: int
    source_format: str
    render_path: Path
    warnings: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate_hz

    @property
    def cached(self) -> bool:
        """True when ``render_path`` is a decoded cache file rather than the original."""
        return self.render_path != self.path

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str paths, lists) for YAML/JSON."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class StemSet:
    """All prepared stems of a session, in file-name order.

    ``sample_rate_hz``: the session rate, Hz; ``frames``: length of the longest stem at that
    rate; ``source_dir``: the stems folder (absolute); ``warnings``: session-wide notes.
    """

    stems: tuple[Stem, ...]
    sample_rate_hz: int
    frames: int
    source_dir: Path
    warnings: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Stem names in order."""
        return tuple(s.name for s in self.stems)

    @property
    def duration_s(self) -> float:
        """Length of the longest stem, s."""
        return self.frames / self.sample_rate_hz

    def by_name(self, name: str) -> Stem:
        """The stem called ``name`` (exact, else case-insensitive); ``KeyError`` if none."""
        for stem in self.stems:
            if stem.name == name:
                return stem
        for stem in self.stems:
            if stem.name.casefold() == name.casefold():
                return stem
        raise KeyError(f"no stem named {name!r}; stems: {', '.join(self.names)}")

    def __iter__(self):
        return iter(self.stems)

    def __len__(self) -> int:
        return len(self.stems)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str paths, lists) for YAML/JSON."""
        return _plain(asdict(self))


# --------------------------------------------------------------------------------------------
# discovery


def _natural_key(name: str) -> tuple:
    """Sort key: case-insensitive, numbers by value ("Tom 2" before "Tom 10"), then exact name."""
    parts: list[tuple[int, Any]] = []
    run = ""
    for ch in name:
        if run and run[-1].isdigit() != ch.isdigit():
            parts.append((0, int(run)) if run.isdigit() else (1, run.casefold()))
            run = ""
        run += ch
    if run:
        parts.append((0, int(run)) if run.isdigit() else (1, run.casefold()))
    return (tuple(parts), name)


def _matches(pattern: str, path: Path) -> bool:
    """``pattern`` (file name, stem name or glob, case-insensitive) matches ``path``."""
    pat = pattern.casefold()
    return any(candidate.casefold() == pat or fnmatch.fnmatchcase(candidate.casefold(), pat)
               for candidate in (path.name, path.stem))


def _raise_problems(problems: list[InputError], where: Path) -> None:
    """Raise the one problem, or one error listing them all."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    lines = []
    for p in problems:
        lines.append(f"  - {p.message}")
        if p.hint:
            lines.append(f"      fix: {p.hint}")
    raise InputError(f"{len(problems)} stems cannot be used:\n" + "\n".join(lines), path=str(where),
                     hint="fix or remove each file listed above")


def _stems_folder(stems_dir: str | os.PathLike) -> Path:
    folder = Path(stems_dir).expanduser()
    if not folder.exists():
        raise InputError("stems folder does not exist", path=str(folder),
                         hint="check the path; pass the folder that holds the stem audio files")
    if not folder.is_dir():
        raise InputError("is a file, not a folder", path=str(folder),
                         hint=f"pass the folder that holds the stems, e.g. {folder.parent}")
    return folder.resolve()


def discover_stems(stems_dir: str | os.PathLike, *, exclude: Iterable[str] = ()) -> list[Path]:
    """Audio files directly inside ``stems_dir``, sorted by name (absolute paths).

    Reads :data:`SUPPORTED_EXTENSIONS` (case-insensitive). Hidden files, subfolders and other
    files (.txt, .json ...) are ignored. ``exclude``: file names, stem names or glob patterns
    (case-insensitive) to leave out; each must match at least one audio file.

    Raises :class:`InputError` for a missing folder, a known audio format that cannot be read
    (.m4a .aac .wma .alac .ape, .opus when soundfile cannot open it, .mid/.midi), an
    ``exclude`` entry that matches nothing, or a folder without stems.
    """
    folder = _stems_folder(stems_dir)
    if isinstance(exclude, str):
        exclude = (exclude,)
    exclude = tuple(exclude)
    known = SUPPORTED_EXTENSIONS + tuple(UNSUPPORTED_AUDIO_EXTENSIONS) + MIDI_EXTENSIONS
    try:
        entries = sorted(os.scandir(folder), key=lambda e: _natural_key(e.name))
    except OSError as exc:
        raise InputError(f"cannot list the stems folder ({exc.strerror or exc})", path=str(folder),
                         hint="check that the folder is readable") from exc
    candidates: list[Path] = []
    ignored: list[str] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files, incl. macOS "._name.wav" resource forks
        path = folder / entry.name
        if not entry.is_file():
            ignored.append(entry.name + ("/" if entry.is_dir() else ""))
        elif path.suffix.lower() in known:
            candidates.append(path)
        else:
            ignored.append(entry.name)

    unused = [pat for pat in exclude if not any(_matches(pat, p) for p in candidates)]
    if unused:
        listing = ", ".join(p.name for p in candidates) or "(none)"
        raise InputError(f"--exclude {', '.join(map(repr, unused))} matches no audio file", path=str(folder),
                         hint=f"use a file name, stem name or glob pattern; audio files: {listing}")
    kept = [p for p in candidates if not any(_matches(pat, p) for pat in exclude)]

    problems: list[InputError] = []
    stems: list[Path] = []
    for path in kept:
        ext = path.suffix.lower()
        if ext in SUPPORTED_EXTENSIONS:
            stems.append(path)
        elif ext in MIDI_EXTENSIONS:
            problems.append(InputError(
                "is a MIDI file (notes, not audio)", path=str(path),
                hint="render it to audio in your DAW, convert it to WAV or FLAC, "
                     "or move it out of the folder (or leave it out with --exclude NAME)"))
        elif ext in TRY_OPEN_EXTENSIONS and _opens(path):
            stems.append(path)
        else:
            what = UNSUPPORTED_AUDIO_EXTENSIONS[ext]
            problems.append(InputError(f"is {what}, which expertmix cannot read", path=str(path),
                                       hint=_CONVERT_HINT))
    _raise_problems(problems, folder)
    if not stems:
        exts = " ".join(SUPPORTED_EXTENSIONS)
        if candidates:
            msg = f"all {len(candidates)} audio files are excluded"
        elif ignored:
            shown = ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else "")
            msg = f"no audio stems found (ignored: {shown})"
        else:
            msg = "no audio stems found (the folder is empty)"
        raise InputError(msg, path=str(folder),
                         hint=f"put the stems directly in this folder (not in subfolders); expertmix reads {exts}")
    return stems


def _opens(path: Path) -> bool:
    try:
        sf.info(str(path))
        return True
    except Exception:  # noqa: BLE001 - any failure means "cannot read it"
        return False


# --------------------------------------------------------------------------------------------
# roles


def _name_lookup(paths: list[Path]) -> dict[str, str]:
    """casefolded file name or stem name -> stem name (file names win on a clash)."""
    lookup = {p.stem.casefold(): p.stem for p in paths}
    lookup.update({p.name.casefold(): p.stem for p in paths})
    return lookup


def _resolve_overrides(overrides: Mapping[str, str], paths: list[Path]) -> dict[str, str]:
    """User ``--role`` overrides -> {stem name: role}; every key must name a stem."""
    lookup = _name_lookup(paths)
    result: dict[str, str] = {}
    names = ", ".join(p.stem for p in paths)
    for key, value in overrides.items():
        where = f"--role {key}={value}"
        stem = lookup.get(str(key).casefold())
        if stem is None:
            raise InputError(f"{key!r} names no stem", path=where,
                             hint=f"use a file name or stem name; stems: {names}")
        role = check_role(value, where=where)
        if stem in result and result[stem] != role:
            raise InputError(f"stem {stem!r} is given two roles ({result[stem]!r} and {role!r})",
                             path=where, hint="give each stem one --role")
        result[stem] = role
    return result


def _read_roles_file(roles_file: str | os.PathLike, paths: list[Path]) -> tuple[dict[str, str], list[str]]:
    """Parse a YAML roles file (name -> role) -> ({stem name: role}, warnings)."""
    file = Path(roles_file).expanduser()
    if not file.is_file():
        raise InputError("roles file does not exist" if not file.exists() else "roles file is not a file",
                         path=str(file), hint="check the path of --roles-file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the roles file ({exc})", path=str(file),
                         hint="save it as UTF-8 text") from exc
    example = "one 'name: role' per line, e.g.  Kick In.wav: kick"
    try:
        data = yaml_load(text)
        # Raw scalars and line numbers (names like 808 or 01 must stay strings).
        root = yaml_compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
            raise InputError(f"is not valid YAML (line {line}, column {column}): {problem}",
                             path=f"{file}:{line}",
                             hint=f"the roles file maps stem or file names to roles, {example}; "
                                  "quote names that contain ':' or '#'") from exc
        raise InputError(f"is not valid YAML: {problem}", path=str(file), hint=example) from exc
    if data is None:
        return {}, []
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise InputError("must map stem or file names to roles", path=f"{file}:{root.start_mark.line + 1}",
                         hint=example)
    lookup = _name_lookup(paths)
    names = ", ".join(p.stem for p in paths)
    roles: dict[str, str] = {}
    seen: dict[str, int] = {}
    warnings: list[str] = []
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        where = f"{file}:{line}"
        if not isinstance(key_node, yaml.ScalarNode) or not isinstance(value_node, yaml.ScalarNode):
            raise InputError("each entry must be 'name: role'", path=where, hint=example)
        key = key_node.value
        stem = lookup.get(key.casefold())
        if stem is None:
            warnings.append(f"roles file {where}: {key!r} names no stem; ignored (stems: {names})")
            continue
        role = check_role(value_node.value, where=where)
        if stem in seen:
            raise InputError(f"stem {stem!r} is listed twice (also on line {seen[stem]})", path=where,
                             hint="keep one entry per stem")
        seen[stem] = line
        roles[stem] = role
    return roles, warnings


# --------------------------------------------------------------------------------------------
# probing


def _check_session_rate(sample_rate_hz: object) -> int:
    ok = isinstance(sample_rate_hz, (int, np.integer)) and not isinstance(sample_rate_hz, bool)
    if not ok or not MIN_SAMPLE_RATE_HZ <= int(sample_rate_hz) <= MAX_SAMPLE_RATE_HZ:  # type: ignore[arg-type]
        raise InputError(f"session sample rate {sample_rate_hz!r} Hz is not usable",
                         hint=f"use a whole number of Hz between {MIN_SAMPLE_RATE_HZ} and "
                              f"{MAX_SAMPLE_RATE_HZ}, e.g. 44100 or 48000")
    return int(sample_rate_hz)  # type: ignore[arg-type]


def _downmix_warning(channels: int) -> str:
    if channels == 6:
        return ("6 channels (read as 5.1: L R C LFE Ls Rs) downmixed to stereo "
                "(ITU-R BS.775: C and surrounds at -3 dB, LFE dropped)")
    return (f"{channels} channels downmixed to stereo: channels 1, 3, 5 ... averaged to the left, "
            "2, 4, 6 ... to the right")


def probe_stems(stems_dir: str | os.PathLike, *, role_overrides: Mapping[str, str] | None = None,
                roles_file: str | os.PathLike | None = None, exclude: Iterable[str] = (),
                sample_rate_hz: int | None = None) -> StemProbe:
    """Validate a stems folder from the file headers alone; decode nothing, write nothing.

    ``role_overrides``: {file name or stem name: role} from the user (each must name a stem).
    ``roles_file``: YAML file mapping file or stem names to roles (entries naming no stem are
    ignored with a warning). Role precedence: user > roles file > file name > ``"other"``.
    ``sample_rate_hz``: session rate in Hz; default: the most common rate among the stems
    (ties -> the higher). Raises :class:`InputError` listing every unreadable, empty or
    duplicate-named stem at once, or for a bad override or roles file.
    """
    paths = discover_stems(stems_dir, exclude=exclude)
    source_dir = paths[0].parent

    problems: list[InputError] = []
    headers: list[tuple[Path, Any]] = []
    for path in paths:
        try:
            info = sf.info(str(path))
        except Exception as exc:  # noqa: BLE001 - libsndfile/OS errors: the file is unusable
            reason = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
            problems.append(InputError(f"cannot be read as audio ({reason})", path=str(path),
                                       hint="re-export it as WAV or FLAC; check that it is complete "
                                            "(not truncated or still copying)"))
            continue
        if info.frames <= 0:
            problems.append(InputError("is empty (no audio frames)", path=str(path),
                                       hint="re-export it, or remove it from the folder"))
        elif info.channels < 1 or info.samplerate <= 0:
            problems.append(InputError(f"has a broken header ({info.channels} channels, "
                                       f"{info.samplerate} Hz)", path=str(path),
                                       hint="re-export it as WAV or FLAC"))
        else:
            headers.append((path, info))

    by_name: dict[str, list[Path]] = collections.defaultdict(list)
    for path in paths:
        by_name[path.stem.casefold()].append(path)
    for same in by_name.values():
        if len(same) > 1:
            files = ", ".join(p.name for p in same)
            problems.append(InputError(
                f"stems {files} have the same name {same[0].stem!r} (names are file names "
                "without extension, compared without case)", path=str(source_dir),
                hint="rename or remove all but one of them"))
    _raise_problems(problems, source_dir)

    user_roles = _resolve_overrides(role_overrides or {}, paths)
    file_roles, warnings = _read_roles_file(roles_file, paths) if roles_file is not None else ({}, [])

    if sample_rate_hz is not None:
        session_rate = _check_session_rate(sample_rate_hz)
    else:
        counts = collections.Counter(int(info.samplerate) for _, info in headers)
        session_rate = max(counts, key=lambda rate: (counts[rate], rate))

    stems: list[StemInfo] = []
    for path, info in headers:
        name = path.stem
        notes: list[str] = []
        if name in user_roles:
            role, source = user_roles[name], "user"
        elif name in file_roles:
            role, source = file_roles[name], "roles_file"
        elif (guess := role_from_name(path.name)) is not None:
            role, source = guess, "filename"
        else:
            role, source = "other", "default"
            notes.append("role not recognised from the name, using 'other'; set it with "
                         f"--role {shlex.quote(name + '=ROLE')}")
        channels = min(info.channels, 2)
        if info.channels > 2:
            notes.append(_downmix_warning(info.channels))
        rate = int(info.samplerate)
        needs_cache = (info.format not in STREAMABLE_FORMATS or info.subtype not in STREAMABLE_SUBTYPES
                       or rate != session_rate or info.channels > 2)
        stems.append(StemInfo(
            name=name, path=path, role=role, role_source=source, channels=channels,
            source_channels=int(info.channels), source_sample_rate_hz=rate, sample_rate_hz=session_rate,
            source_frames=int(info.frames), frames=int(round(info.frames * session_rate / rate)),
            source_format=f"{info.format}/{info.subtype}", needs_cache=needs_cache, warnings=tuple(notes)))

    resampled = [f"{s.name} ({s.source_sample_rate_hz} Hz)" for s in stems
                 if s.source_sample_rate_hz != session_rate]
    if resampled:
        warnings.append(f"resampling {len(resampled)} stem(s) to the session rate of {session_rate} Hz: "
                        + ", ".join(resampled))
    return StemProbe(stems=tuple(stems), sample_rate_hz=session_rate, source_dir=source_dir,
                     warnings=tuple(warnings))


# --------------------------------------------------------------------------------------------
# decoding


def downmix_to_stereo(block: np.ndarray) -> np.ndarray:
    """Fold (frames, channels>2) float32 audio to (frames, 2); 1-2 channels pass through.

    6 channels are read as 5.1 (L R C LFE Ls Rs) and downmixed per ITU-R BS.775 without LFE:
    ``L' = L + 0.707 C + 0.707 Ls``, ``R' = R + 0.707 C + 0.707 Rs``. Any other count: the mean
    of channels 0, 2, 4 ... goes left, of 1, 3, 5 ... right.
    """
    if block.shape[1] <= 2:
        return block
    if block.shape[1] == 6:
        centre = _ITU_SIDE_GAIN * block[:, 2]
        left = block[:, 0] + centre + _ITU_SIDE_GAIN * block[:, 4]
        right = block[:, 1] + centre + _ITU_SIDE_GAIN * block[:, 5]
    else:
        left = block[:, 0::2].mean(axis=1, dtype=np.float32)
        right = block[:, 1::2].mean(axis=1, dtype=np.float32)
    return np.stack([left, right], axis=1).astype(np.float32, copy=False)


class _Buffer:
    """Append-only (frames, channels) float32 buffer that grows when an estimate was short."""

    def __init__(self, capacity: int, channels: int):
        self.data = np.empty((max(capacity, 1), channels), dtype=np.float32)
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.data):
            bigger = np.empty((max(end, int(len(self.data) * 1.5)), self.data.shape[1]), dtype=np.float32)
            bigger[: self.size] = self.data[: self.size]
            self.data = bigger
        self.data[self.size:end] = block
        self.size = end

    def take(self, frames: int) -> np.ndarray:
        """The first ``frames`` frames (zero-padded if fewer were appended), without a copy."""
        if frames > len(self.data):
            self.append(np.zeros((frames - self.size, self.data.shape[1]), dtype=np.float32))
        elif frames > self.size:
            self.data[self.size:frames] = 0.0
        self.data.resize((frames, self.data.shape[1]), refcheck=False)
        out, self.data, self.size = self.data, np.empty((0, 0), np.float32), 0
        return out


def decode_stem(info: StemInfo) -> np.ndarray:
    """Decode one stem once, in blocks: downmix to ≤2 channels, resample to the session rate.

    Returns read-only float32 audio shaped (frames, channels) at ``info.sample_rate_hz``, with
    exactly ``round(frames_in * sr_out / sr_in)`` frames and no added delay (soxr ``VHQ``
    streaming resampler; its output is delay-compensated). Raises :class:`InputError` when the
    file cannot be decoded or holds NaN/infinite samples.
    """
    sr_in, sr_out = info.source_sample_rate_hz, info.sample_rate_hz
    resampler = (soxr.ResampleStream(sr_in, sr_out, info.channels, dtype="float32", quality=RESAMPLE_QUALITY)
                 if sr_in != sr_out else None)
    buffer = _Buffer(info.frames + 64, info.channels)
    frames_in = 0
    try:
        with sf.SoundFile(str(info.path), mode="r") as f:
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) == 0
                if not last and not np.isfinite(block).all():
                    raise InputError("contains NaN or infinite samples", path=str(info.path),
                                     hint="re-export it from your DAW as 24-bit WAV or FLAC")
                frames_in += len(block)
                block = downmix_to_stereo(block) if not last else np.zeros((0, info.channels), np.float32)
                if resampler is not None:
                    block = resampler.resample_chunk(block, last=last)
                buffer.append(block)
                if last:
                    break
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile/OS errors mid-file
        raise InputError(f"could not be decoded ({exc})", path=str(info.path),
                         hint="re-export it as WAV or FLAC; check that it is complete") from exc
    if frames_in == 0:
        raise InputError("holds no decodable audio", path=str(info.path),
                         hint="re-export it as WAV or FLAC")
    frames_out = int(round(frames_in * sr_out / sr_in))
    audio = buffer.take(frames_out)
    audio.flags.writeable = False
    return audio


def _write_cache(audio: np.ndarray, target: Path, sample_rate_hz: int, protected: frozenset[Path] | set[Path]) -> None:
    """Write ``audio`` as a float32 WAV at ``target`` in blocks, via a temp file and one rename."""
    if target.resolve() in protected:  # cannot happen with a separate cache folder; never risk it
        raise OutputError(f"refusing to overwrite the input stem {target}",
                          hint="choose a cache folder outside the stems folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".wav.tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write the stem cache in {target.parent} ({exc.strerror or exc})",
                          hint="choose a writable cache folder") from exc
    tmp = Path(tmp_name)
    try:
        with sf.SoundFile(str(tmp), "w", samplerate=sample_rate_hz, channels=audio.shape[1],
                          subtype="FLOAT", format="WAV") as out:
            for start in range(0, len(audio), BLOCK_FRAMES):
                out.write(audio[start:start + BLOCK_FRAMES])
        _zero_peak_timestamp(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            raise OutputError(f"cannot write the stem cache file {target} ({exc})",
                              hint="check free disk space and that the cache folder is writable") from exc
        raise


def _check_cache_dir(cache_dir: str | os.PathLike, source_dir: Path) -> Path:
    cache = Path(cache_dir).expanduser().resolve()
    if cache == source_dir or source_dir in cache.parents:
        raise InputError("the cache folder must not be the stems folder or inside it", path=str(cache),
                         hint="choose a cache folder outside the stems folder (input stems are never modified)")
    if cache.exists() and not cache.is_dir():
        raise InputError("cache folder exists and is not a folder", path=str(cache),
                         hint="choose another cache folder")
    return cache


def load_stems(stems_dir: str | os.PathLike, *, cache_dir: str | os.PathLike,
               role_overrides: Mapping[str, str] | None = None,
               roles_file: str | os.PathLike | None = None, exclude: Iterable[str] = (),
               sample_rate_hz: int | None = None, skip_silent: bool = False,
               visit: Callable[[Stem, np.ndarray], None] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> StemSet:
    """Probe (all errors first), then decode every stem once and prepare it for pyo.

    For each stem in name order: ``progress(name, index, total)`` (index 1-based, before
    decoding), decode to float32 (frames, channels) at the session rate (see
    :func:`decode_stem`), reject or skip it if silent (peak < :data:`SILENT_PEAK_DBFS`),
    ``visit(stem, audio)`` (``audio`` is read-only; copy it to keep it), then write
    ``cache_dir/<name>.wav`` (float32) unless the original is a PCM/float WAV/AIFF at the
    session rate with ≤2 channels, which is streamed in place. Stems keep their own lengths.

    ``cache_dir`` must lie outside the stems folder; it is created only when a file is cached.
    ``skip_silent``: leave silent stems out with a warning instead of raising. Other arguments
    as in :func:`probe_stems`. Raises :class:`InputError` (bad stems) or :class:`OutputError`
    (cache not writable).
    """
    probe = probe_stems(stems_dir, role_overrides=role_overrides, roles_file=roles_file,
                        exclude=exclude, sample_rate_hz=sample_rate_hz)
    cache, protected = prepare_cache(cache_dir, probe)
    prepared: list[tuple[Stem | None, str | None]] = []
    total = len(probe.stems)
    for index, info in enumerate(probe.stems, start=1):
        if progress is not None:
            progress(info.name, index, total)
        stem, warning, audio = prepare_stem(info, cache, protected, skip_silent=skip_silent)
        if stem is not None and visit is not None:
            visit(stem, audio)
        del audio
        prepared.append((stem, warning))
    return assemble_stemset(probe, prepared)


def prepare_cache(cache_dir: str | os.PathLike, probe: StemProbe) -> tuple[Path, frozenset[Path]]:
    """The checked cache folder for ``probe``'s stems, and the input paths it must never write."""
    cache = _check_cache_dir(cache_dir, probe.source_dir)
    return cache, frozenset(info.path.resolve() for info in probe.stems)


def prepare_stem(info: StemInfo, cache: Path, protected: frozenset[Path] | set[Path], *,
                 skip_silent: bool = False) -> tuple[Stem | None, str | None, np.ndarray | None]:
    """Decode one probed stem, check it is not silent and write its cache file if it needs one.

    Returns ``(stem, None, audio)``, or ``(None, warning, None)`` for a silent stem left out
    (``skip_silent``). ``audio`` is the read-only float32 decode at the session rate. Raises
    :class:`InputError` for a bad or silent stem. Pure per stem: worker processes may run it.
    """
    audio = decode_stem(info)
    peak = max(float(audio.max()), -float(audio.min())) if audio.size else 0.0  # (no |x| copy)
    if peak < db_to_gain(SILENT_PEAK_DBFS):
        level = f"peak {gain_to_db(peak):.0f} dBFS" if peak > 0 else "all samples zero"
        if not skip_silent:
            raise InputError(f"is silent ({level}, below {SILENT_PEAK_DBFS:.0f} dBFS); "
                             "remove it or pass --skip-silent", path=str(info.path),
                             hint="move it out of the stems folder, leave it out with --exclude NAME, "
                                  "or pass --skip-silent to leave silent stems out")
        return None, f"{info.name}: silent ({level}); left out (--skip-silent)", None
    stem = Stem(
        name=info.name, path=info.path, role=info.role, role_source=info.role_source,
        channels=info.channels, source_channels=info.source_channels,
        source_sample_rate_hz=info.source_sample_rate_hz, sample_rate_hz=info.sample_rate_hz,
        frames=len(audio), source_format=info.source_format,
        render_path=cache / f"{info.name}.wav" if info.needs_cache else info.path,
        warnings=info.warnings)
    if info.needs_cache:
        _write_cache(audio, stem.render_path, stem.sample_rate_hz, protected)
    return stem, None, audio


def assemble_stemset(probe: StemProbe, prepared: Iterable[tuple[Stem | None, str | None]]) -> StemSet:
    """The session from :func:`prepare_stem`'s results, in ``probe`` order: every stem silent is
    an error; stem lengths that differ by more than :data:`LENGTH_MISMATCH_S` a warning."""
    warnings = list(probe.warnings)
    stems: list[Stem] = []
    for stem, warning in prepared:
        if warning:
            warnings.append(warning)
        if stem is not None:
            stems.append(stem)
    if not stems:
        raise InputError("every stem is silent", path=str(probe.source_dir),
                         hint="check that the stems were exported with audio in them")
    sr = probe.sample_rate_hz
    shortest = min(stems, key=lambda s: s.frames)
    longest = max(stems, key=lambda s: s.frames)
    spread_s = (longest.frames - shortest.frames) / sr
    if spread_s > LENGTH_MISMATCH_S:
        warnings.append(
            f"stem lengths differ by {spread_s:.2f} s: shortest {shortest.name} ({shortest.duration_s:.2f} s), "
            f"longest {longest.name} ({longest.duration_s:.2f} s); shorter stems are padded with silence "
            "at the end - check that all stems were exported from the same start point")
    return StemSet(stems=tuple(stems), sample_rate_hz=sr, frames=longest.frames,
                   source_dir=probe.source_dir, warnings=tuple(warnings))
