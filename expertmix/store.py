"""The local training store: songs, their stems' descriptors and the engineer's decisions (SQLite).

One file, written only through :class:`TrainingStore`. Where it lives: ``--store PATH``, else
``$EXPERTMIX_STORE``, else ``$XDG_DATA_HOME/expertmix/store.sqlite``, else
``~/.local/share/expertmix/store.sqlite`` (:func:`default_store_path`).

Schema (:data:`SCHEMA_VERSION` in table ``schema_version``)::

    songs   (id (never reused), name, source 'reference'|'feedback'|'augmented', genre, licence, content_hash UNIQUE,
             parent_id -> songs.id (an augmented copy's original), meta JSON, created)
    stems   (song_id -> songs.id, name, role, descriptor_version, descriptors JSON {name: float})
    targets (song_id, stem -> stems, slot, value, rule_value (NULL if unknown), weight)

Slots are dotted plan paths of per-stem numbers: ``gain_db``, ``pan``, ``width``,
``eq.band_low_mid_db``, ``compressor.ratio``, ``sends.reverb`` ... (the training pipeline and the
rulebook agree on them; the store does not interpret them).

Every song is added in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): an exception, a
``KeyboardInterrupt`` or a killed process mid-add leaves the store exactly as it was. Foreign keys
are enforced; removing a song removes its stems, targets and augmented copies. Descriptor dicts
and metadata are JSON (never pickles). A song whose content hash is already stored is refused
unless the caller asks to replace it (or to skip it).

For cross-validation by song, :meth:`TrainingStore.dataset` gives each row a ``group``: the song
id, or for an augmented copy the id of the song it was made from, so a song and its augmentations
always fall in the same fold.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal

from .descriptor_specs import DESCRIPTOR_VERSION
from .errors import InputError

#: Version of the store's schema; bump on any incompatible change and migrate in ``_migrate``.
SCHEMA_VERSION = 1

SOURCES = ("reference", "feedback", "augmented")
Source = Literal["reference", "feedback", "augmented"]
OnDuplicate = Literal["error", "replace", "skip"]

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE songs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused
    name         TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('reference', 'feedback', 'augmented')),
    genre        TEXT,
    licence      TEXT,
    content_hash TEXT UNIQUE,
    parent_id    INTEGER REFERENCES songs(id) ON DELETE CASCADE,
    meta         TEXT NOT NULL DEFAULT '{}',
    created      TEXT NOT NULL
);
CREATE TABLE stems (
    song_id            INTEGER NOT NULL REFERENCES songs(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    role               TEXT NOT NULL,
    descriptor_version INTEGER NOT NULL,
    descriptors        TEXT NOT NULL,
    PRIMARY KEY (song_id, name)
);
CREATE TABLE targets (
    song_id    INTEGER NOT NULL,
    stem       TEXT NOT NULL,
    slot       TEXT NOT NULL,
    value      REAL NOT NULL,
    rule_value REAL,
    weight     REAL NOT NULL DEFAULT 1.0 CHECK (weight >= 0),
    PRIMARY KEY (song_id, stem, slot),
    FOREIGN KEY (song_id, stem) REFERENCES stems(song_id, name) ON DELETE CASCADE
);
CREATE INDEX targets_slot ON targets(slot);
CREATE INDEX songs_parent ON songs(parent_id);
"""

_STORE_FIX = "pass --store PATH to use another store file, or move the broken file away to start a new store"


def default_store_path() -> Path:
    """``$EXPERTMIX_STORE``, else ``$XDG_DATA_HOME/expertmix/store.sqlite``, else ``~/.local/share/...``."""
    env = os.environ.get("EXPERTMIX_STORE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "expertmix" / "store.sqlite"


def content_hash_files(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over the bytes of files, in the order given (e.g. the sorted stems, then the mix).

    File names do not enter the hash: a renamed copy of the same project is the same song.
    """
    h = hashlib.sha256()
    for p in paths:
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                fh.update(chunk)
        h.update(fh.digest())
    return h.hexdigest()


def content_hash_json(obj: Any) -> str:
    """sha256 of a canonical JSON dump (for songs that come from plans rather than files)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# records


@dataclass
class StemRecord:
    """One stem of a song: its role and descriptors (``{descriptor name: float}``)."""

    name: str
    role: str
    descriptors: dict[str, float]
    descriptor_version: int = DESCRIPTOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TargetRecord:
    """One decision on one stem: ``value`` is what the engineer did; ``rule_value`` what the rules
    proposed (None when unknown, e.g. for a reference mix before the rules were run on it)."""

    stem: str
    slot: str
    value: float
    rule_value: float | None = None
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SongRecord:
    """Everything added to the store for one song, in one transaction.

    ``content_hash``: identifies the song's source material (see :func:`content_hash_files`); a
    song with a hash already stored is a duplicate. ``parent_id``: for an augmented copy, the id
    of the stored song it was derived from. ``meta``: JSON-able facts (fit residual, offset,
    warnings, the command that added it ...).
    """

    name: str
    source: Source
    stems: list[StemRecord]
    targets: list[TargetRecord] = field(default_factory=list)
    genre: str | None = None
    licence: str | None = None
    content_hash: str | None = None
    parent_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SongInfo:
    """A stored song, as listed by :meth:`TrainingStore.list_songs`."""

    id: int
    name: str
    source: str
    genre: str | None
    licence: str | None
    content_hash: str | None
    parent_id: int | None
    created: str
    n_stems: int
    n_targets: int
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetRow:
    """One training example for one slot: a stem of a song and the engineer's value.

    ``group``: the song for cross-validation (an augmented copy carries its original's id).
    ``residual``: ``target - rule_value``, or None when the rule value is unknown.
    """

    song_id: int
    group: int
    song: str
    source: str
    genre: str | None
    stem: str
    role: str
    descriptor_version: int
    descriptors: dict[str, float]
    slot: str
    target: float
    rule_value: float | None
    weight: float

    @property
    def residual(self) -> float | None:
        return None if self.rule_value is None else self.target - self.rule_value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# validation


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{what} is {v}; only finite numbers can be stored")
    return v


def _check_record(rec: SongRecord) -> None:
    if rec.source not in SOURCES:
        raise InputError(f"song source must be one of {', '.join(SOURCES)}, got {rec.source!r}")
    if not rec.name:
        raise InputError("a song needs a name")
    if rec.source == "augmented" and rec.parent_id is None:
        raise InputError("an augmented song must name the song it was derived from (parent_id)")
    if not rec.stems:
        raise InputError(f"song {rec.name!r} has no stems")
    try:
        json.dumps(rec.meta, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InputError(f"song {rec.name!r}: metadata cannot be stored as JSON ({exc})") from None
    names = [s.name for s in rec.stems]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"song {rec.name!r}: stem names repeat: {', '.join(dup)}")
    for s in rec.stems:
        for k, v in s.descriptors.items():
            _finite(v, f"song {rec.name!r}, stem {s.name!r}, descriptor {k}")
    seen = set()
    for t in rec.targets:
        if t.stem not in names:
            raise InputError(f"song {rec.name!r}: target {t.slot} names stem {t.stem!r}, which is not among "
                             f"its stems ({', '.join(names)})")
        if (t.stem, t.slot) in seen:
            raise InputError(f"song {rec.name!r}: two targets for {t.stem}.{t.slot}")
        seen.add((t.stem, t.slot))
        _finite(t.value, f"target {t.stem}.{t.slot}")
        if t.rule_value is not None:
            _finite(t.rule_value, f"rule value of {t.stem}.{t.slot}")
        if _finite(t.weight, f"weight of {t.stem}.{t.slot}") < 0:
            raise InputError(f"weight of {t.stem}.{t.slot} is negative")


# --------------------------------------------------------------------------------------------
# the store


class TrainingStore:
    """A SQLite training store. Use as a context manager, or call :meth:`close`.

    ``path``: the database file (created with its folder if missing); None = :func:`default_store_path`.
    Raises :class:`InputError` for a file that is not an expertmix store or has a newer schema.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the store folder {self.path.parent} ({exc.strerror})",
                             hint=_STORE_FIX) from None
        try:
            # isolation_level=None: no implicit transactions; every write is an explicit BEGIN..COMMIT.
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            raise InputError(f"is not a readable expertmix training store ({exc})", path=str(self.path),
                             hint=_STORE_FIX) from None

    # -- lifecycle

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "TrainingStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _init_schema(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self._conn.execute(stmt)
                self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return
        if "schema_version" not in tables or not {"songs", "stems", "targets"} <= tables:
            raise InputError("is an SQLite file but not an expertmix training store "
                             f"(tables: {', '.join(sorted(tables))})", path=str(self.path), hint=_STORE_FIX)
        row = self._conn.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else None
        if version != SCHEMA_VERSION:
            raise InputError(f"training store schema version {version}, but this expertmix uses version "
                             f"{SCHEMA_VERSION}", path=str(self.path),
                             hint="upgrade expertmix, or " + _STORE_FIX)

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    # -- writing

    def find_by_hash(self, content_hash: str) -> int | None:
        """Id of the song with this content hash, or None."""
        row = self._conn.execute("SELECT id FROM songs WHERE content_hash = ?", (content_hash,)).fetchone()
        return None if row is None else int(row[0])

    def add_song(self, record: SongRecord, *, on_duplicate: OnDuplicate = "error") -> int:
        """Add a song with its stems and targets in one transaction; return its id.

        ``on_duplicate`` when a song with the same ``content_hash`` is stored: ``"error"`` raises
        :class:`InputError` naming it, ``"replace"`` removes it (with its targets and augmented
        copies) and adds this one in the same transaction, ``"skip"`` leaves the store alone and
        returns the existing id. On any exception nothing is written.
        """
        _check_record(record)
        if on_duplicate not in ("error", "replace", "skip"):
            raise InputError(f"on_duplicate must be 'error', 'replace' or 'skip', got {on_duplicate!r}")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if record.content_hash is not None:
                row = conn.execute("SELECT id, name, source FROM songs WHERE content_hash = ?",
                                   (record.content_hash,)).fetchone()
                if row is not None:
                    if on_duplicate == "skip":
                        conn.execute("ROLLBACK")
                        return int(row[0])
                    if on_duplicate == "error":
                        raise InputError(f"this song is already in the training store as song {row[0]} "
                                         f"({row[1]!r}, {row[2]}): same stems and mix",
                                         path=str(self.path),
                                         hint="pass --replace to replace it, or `expertmix learn remove "
                                              f"{row[0]}` first")
                    conn.execute("DELETE FROM songs WHERE id = ?", (row[0],))
            if record.parent_id is not None:
                if conn.execute("SELECT 1 FROM songs WHERE id = ?", (record.parent_id,)).fetchone() is None:
                    raise InputError(f"parent song {record.parent_id} is not in the store")
            song_id = self._insert_song(record)
            self._insert_stems(song_id, record.stems)
            self._insert_targets(song_id, record.targets)
            conn.execute("COMMIT")
            return song_id
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _insert_song(self, rec: SongRecord) -> int:
        created = rec.created or datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        cur = self._conn.execute(
            "INSERT INTO songs (name, source, genre, licence, content_hash, parent_id, meta, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.name, rec.source, rec.genre, rec.licence, rec.content_hash, rec.parent_id,
             json.dumps(rec.meta, sort_keys=True, allow_nan=False, default=_json_default), created))
        return int(cur.lastrowid)

    def _insert_stems(self, song_id: int, stems: list[StemRecord]) -> None:
        self._conn.executemany(
            "INSERT INTO stems (song_id, name, role, descriptor_version, descriptors) VALUES (?, ?, ?, ?, ?)",
            [(song_id, s.name, s.role, int(s.descriptor_version),
              json.dumps({k: float(v) for k, v in s.descriptors.items()}, sort_keys=True, allow_nan=False))
             for s in stems])

    def _insert_targets(self, song_id: int, targets: list[TargetRecord]) -> None:
        self._conn.executemany(
            "INSERT INTO targets (song_id, stem, slot, value, rule_value, weight) VALUES (?, ?, ?, ?, ?, ?)",
            [(song_id, t.stem, t.slot, float(t.value), None if t.rule_value is None else float(t.rule_value),
              float(t.weight)) for t in targets])

    def remove_song(self, song_id: int) -> int:
        """Remove a song, its stems and targets, and its augmented copies; return how many songs went.

        Raises :class:`InputError` if there is no such song.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM songs WHERE id = ?", (int(song_id),)).fetchone() is None:
                raise InputError(f"there is no song {song_id} in the training store", path=str(self.path),
                                 hint="`expertmix learn list` shows the stored songs")
            before = conn.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
            conn.execute("DELETE FROM songs WHERE id = ?", (int(song_id),))
            after = conn.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
            conn.execute("COMMIT")
            return int(before - after)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reading

    def list_songs(self, *, source: str | None = None) -> list[SongInfo]:
        """Stored songs by id, optionally of one source kind."""
        sql = ("SELECT s.id, s.name, s.source, s.genre, s.licence, s.content_hash, s.parent_id, s.created, s.meta, "
               "(SELECT COUNT(*) FROM stems WHERE song_id = s.id), "
               "(SELECT COUNT(*) FROM targets WHERE song_id = s.id) FROM songs s")
        args: tuple = ()
        if source is not None:
            sql += " WHERE s.source = ?"
            args = (source,)
        return [SongInfo(id=r[0], name=r[1], source=r[2], genre=r[3], licence=r[4], content_hash=r[5],
                         parent_id=r[6], created=r[7], meta=json.loads(r[8]), n_stems=r[9], n_targets=r[10])
                for r in self._conn.execute(sql + " ORDER BY s.id", args)]

    def song(self, song_id: int) -> SongInfo:
        """One stored song; :class:`InputError` if missing."""
        for s in self.list_songs():
            if s.id == int(song_id):
                return s
        raise InputError(f"there is no song {song_id} in the training store", path=str(self.path))

    def song_stems(self, song_id: int) -> list[StemRecord]:
        """The stems of a song (for context features: the other stems of the same song)."""
        return [StemRecord(name=r[0], role=r[1], descriptor_version=r[2], descriptors=json.loads(r[3]))
                for r in self._conn.execute("SELECT name, role, descriptor_version, descriptors FROM stems "
                                            "WHERE song_id = ? ORDER BY name", (int(song_id),))]

    def song_targets(self, song_id: int) -> list[TargetRecord]:
        """The targets of a song, by stem then slot."""
        return [TargetRecord(stem=r[0], slot=r[1], value=r[2], rule_value=r[3], weight=r[4])
                for r in self._conn.execute("SELECT stem, slot, value, rule_value, weight FROM targets "
                                            "WHERE song_id = ? ORDER BY stem, slot", (int(song_id),))]

    def slots(self) -> list[str]:
        """Every slot with at least one target, sorted."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT slot FROM targets ORDER BY slot")]

    def dataset(self, slot: str, *, sources: Iterable[str] | None = None,
                descriptor_version: int | None = None, require_rule_value: bool = False) -> list[DatasetRow]:
        """Training rows for one slot, ordered by song id then stem name (deterministic).

        ``sources``: only these source kinds; ``descriptor_version``: only stems described with
        this version; ``require_rule_value``: leave out rows whose rule value is unknown.
        """
        sql = ("SELECT t.song_id, COALESCE(s.parent_id, s.id), s.name, s.source, s.genre, t.stem, st.role, "
               "st.descriptor_version, st.descriptors, t.slot, t.value, t.rule_value, t.weight "
               "FROM targets t JOIN songs s ON s.id = t.song_id "
               "JOIN stems st ON st.song_id = t.song_id AND st.name = t.stem WHERE t.slot = ?")
        args: list[Any] = [slot]
        if sources is not None:
            src = list(sources)
            bad = [x for x in src if x not in SOURCES]
            if bad:
                raise InputError(f"unknown source kind(s) {', '.join(bad)}; use {', '.join(SOURCES)}")
            sql += f" AND s.source IN ({', '.join('?' for _ in src)})"
            args += src
        if descriptor_version is not None:
            sql += " AND st.descriptor_version = ?"
            args.append(int(descriptor_version))
        if require_rule_value:
            sql += " AND t.rule_value IS NOT NULL"
        sql += " ORDER BY t.song_id, t.stem"
        return [DatasetRow(song_id=r[0], group=r[1], song=r[2], source=r[3], genre=r[4], stem=r[5], role=r[6],
                           descriptor_version=r[7], descriptors=json.loads(r[8]), slot=r[9], target=r[10],
                           rule_value=r[11], weight=r[12])
                for r in self._conn.execute(sql, args)]

    def summary(self) -> dict[str, Any]:
        """Counts: songs, stems and targets per source kind, targets per slot, descriptor versions,
        licences, and the schema version. Plain dict for the CLI and model cards."""
        c = self._conn
        per_source = {k: {"songs": 0, "stems": 0, "targets": 0} for k in SOURCES}
        for src, n in c.execute("SELECT source, COUNT(*) FROM songs GROUP BY source"):
            per_source[src]["songs"] = n
        for src, n in c.execute("SELECT s.source, COUNT(*) FROM stems st JOIN songs s ON s.id = st.song_id "
                                "GROUP BY s.source"):
            per_source[src]["stems"] = n
        for src, n in c.execute("SELECT s.source, COUNT(*) FROM targets t JOIN songs s ON s.id = t.song_id "
                                "GROUP BY s.source"):
            per_source[src]["targets"] = n
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "songs": sum(v["songs"] for v in per_source.values()),
            "by_source": per_source,
            "targets_by_slot": dict(c.execute("SELECT slot, COUNT(*) FROM targets GROUP BY slot ORDER BY slot")),
            "descriptor_versions": {str(k): n for k, n in c.execute(
                "SELECT descriptor_version, COUNT(*) FROM stems GROUP BY descriptor_version ORDER BY 1")},
            "genres": {str(k): n for k, n in c.execute(
                "SELECT COALESCE(genre, ''), COUNT(*) FROM songs GROUP BY 1 ORDER BY 1")},
            "licences": {str(k): n for k, n in c.execute(
                "SELECT COALESCE(licence, ''), COUNT(*) FROM songs GROUP BY 1 ORDER BY 1")},
        }

    def check_integrity(self) -> list[str]:
        """SQLite's integrity and foreign-key checks; an empty list means the store is sound."""
        problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key violation in {r[0]} row {r[1]}"
                     for r in self._conn.execute("PRAGMA foreign_key_check")]
        return problems


def _json_default(v: Any) -> Any:
    """numpy scalars/arrays and paths in ``meta``."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    raise TypeError(f"cannot store {type(v).__name__} in song metadata")


__all__ = ["TrainingStore", "SongRecord", "StemRecord", "TargetRecord", "SongInfo", "DatasetRow",
           "default_store_path", "content_hash_files", "content_hash_json", "SCHEMA_VERSION", "SOURCES"]
