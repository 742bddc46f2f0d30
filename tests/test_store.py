"""expertmix.store: the SQLite training store (schema, atomic adds, duplicates, queries)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from expertmix import store as S
from expertmix.descriptor_specs import DESCRIPTOR_VERSION
from expertmix.errors import InputError


def song(name: str = "song-a", *, source: str = "reference", content_hash: str | None = "hash-a",
         genre: str | None = "rock", parent_id: int | None = None, gain: float = -3.0) -> S.SongRecord:
    stems = [S.StemRecord("kick", "kick", {"loudness_lufs": -18.0, "crest_db": 14.5}),
             S.StemRecord("vox", "lead_vocal", {"loudness_lufs": -22.0, "crest_db": 11.0})]
    targets = [S.TargetRecord("kick", "gain_db", gain, rule_value=-2.0),
               S.TargetRecord("vox", "gain_db", 1.5, rule_value=0.0),
               S.TargetRecord("vox", "eq.band_presence_db", 2.0),
               S.TargetRecord("kick", "pan", 0.0, rule_value=0.0, weight=0.5)]
    return S.SongRecord(name=name, source=source, stems=stems, targets=targets, genre=genre, licence="CC0",
                        content_hash=content_hash, parent_id=parent_id, meta={"residual_db": -18.2})


@pytest.fixture
def store(tmp_path):
    with S.TrainingStore(tmp_path / "store.sqlite") as st:
        yield st


def counts(path) -> tuple[int, int, int]:
    con = sqlite3.connect(str(path))
    try:
        return tuple(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("songs", "stems", "targets"))
    finally:
        con.close()


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPERTMIX_STORE", str(tmp_path / "x.sqlite"))
    assert S.default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("EXPERTMIX_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert S.default_store_path() == tmp_path / "xdg" / "expertmix" / "store.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert S.default_store_path() == tmp_path / "home" / ".local" / "share" / "expertmix" / "store.sqlite"
    with S.TrainingStore() as st:  # creates the folders
        assert st.path.is_file() and st.schema_version == S.SCHEMA_VERSION


def test_schema_and_pragmas(store):
    con = store._conn
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "songs", "stems", "targets"} <= tables
    assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version == S.SCHEMA_VERSION
    assert store.check_integrity() == []


def test_add_list_and_dataset(store):
    sid = store.add_song(song())
    [info] = store.list_songs()
    assert (info.id, info.name, info.source, info.genre, info.licence) == (sid, "song-a", "reference", "rock", "CC0")
    assert (info.n_stems, info.n_targets) == (2, 4)
    assert info.meta == {"residual_db": -18.2}
    rows = store.dataset("gain_db")
    assert [(r.stem, r.role, r.target, r.rule_value) for r in rows] == [("kick", "kick", -3.0, -2.0),
                                                                      ("vox", "lead_vocal", 1.5, 0.0)]
    assert rows[0].residual == pytest.approx(-1.0)
    assert rows[0].group == sid and rows[0].genre == "rock"
    assert rows[0].descriptors == {"crest_db": 14.5, "loudness_lufs": -18.0}
    assert rows[0].descriptor_version == DESCRIPTOR_VERSION
    assert store.dataset("eq.band_presence_db")[0].rule_value is None
    assert store.dataset("eq.band_presence_db", require_rule_value=True) == []
    assert store.dataset("pan")[0].weight == 0.5
    assert store.slots() == ["eq.band_presence_db", "gain_db", "pan"]
    assert [s.name for s in store.song_stems(sid)] == ["kick", "vox"]
    assert len(store.song_targets(sid)) == 4


def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "s.sqlite"
    with S.TrainingStore(path) as st:
        st.add_song(song())
    with S.TrainingStore(path) as st:
        assert len(st.list_songs()) == 1


def test_an_exception_mid_add_leaves_nothing(store, monkeypatch):
    store.add_song(song("first", content_hash="h1"))

    def boom(song_id, targets):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_insert_targets", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.add_song(song("second", content_hash="h2"))
    assert counts(store.path) == (1, 2, 4)  # only the first song
    assert not store._conn.in_transaction
    monkeypatch.undo()
    store.add_song(song("second", content_hash="h2"))  # the store still works
    assert counts(store.path) == (2, 4, 8)


def test_a_killed_process_mid_add_leaves_nothing(tmp_path):
    path = tmp_path / "s.sqlite"
    with S.TrainingStore(path) as st:
        st.add_song(song("first", content_hash="h1"))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_store import song
        from expertmix import store as S
        st = S.TrainingStore({str(path)!r})
        def die(song_id, targets):
            os._exit(9)  # no cleanup, no rollback: like kill -9 in the middle of the add
        st._insert_targets = die
        st.add_song(song("second", content_hash="h2"))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    with S.TrainingStore(path) as st:  # the hot journal is rolled back on open
        assert [s.name for s in st.list_songs()] == ["first"]
        assert st.check_integrity() == []
    assert counts(path) == (1, 2, 4)


def test_invalid_records_are_refused_before_writing(store):
    bad = song()
    bad.targets.append(S.TargetRecord("bass", "gain_db", 0.0))
    with pytest.raises(InputError, match="names stem 'bass'"):
        store.add_song(bad)
    bad = song()
    bad.stems[0].descriptors["crest_db"] = float("nan")
    with pytest.raises(InputError, match="only finite numbers"):
        store.add_song(bad)
    with pytest.raises(InputError, match="source must be one of"):
        store.add_song(song(source="scraped"))
    with pytest.raises(InputError, match="derived from"):
        store.add_song(song(source="augmented"))
    assert counts(store.path) == (0, 0, 0)


def test_duplicates_are_refused_replaced_or_skipped(store):
    first = store.add_song(song(gain=-3.0))
    with pytest.raises(InputError, match=rf"already in the training store as song {first}") as err:
        store.add_song(song(name="same-song-renamed", gain=-4.0))
    assert "--replace" in str(err.value)
    assert store.add_song(song(gain=-5.0), on_duplicate="skip") == first
    assert store.dataset("gain_db")[0].target == -3.0
    second = store.add_song(song(gain=-6.0), on_duplicate="replace")
    assert second != first
    assert [s.id for s in store.list_songs()] == [second]
    assert store.dataset("gain_db")[0].target == -6.0
    assert store.find_by_hash("hash-a") == second


def test_augmented_songs_share_their_parent_group_and_go_with_it(store):
    parent = store.add_song(song())
    child = store.add_song(song("song-a+aug1", source="augmented", content_hash="aug1", parent_id=parent))
    other = store.add_song(song("song-b", content_hash="hash-b"))
    groups = {(r.song_id, r.group) for r in store.dataset("gain_db")}
    assert groups == {(parent, parent), (child, parent), (other, other)}
    assert {r.source for r in store.dataset("gain_db", sources=["augmented"])} == {"augmented"}
    with pytest.raises(InputError, match="not in the store"):
        store.add_song(song("orphan", source="augmented", content_hash="aug2", parent_id=999))
    assert store.remove_song(parent) == 2  # the song and its augmented copy
    assert [s.id for s in store.list_songs()] == [other]
    assert counts(store.path) == (1, 2, 4)
    with pytest.raises(InputError, match="no song 12345"):
        store.remove_song(12345)


def test_summary(store):
    parent = store.add_song(song())
    store.add_song(song("fb", source="feedback", content_hash="fb1", genre=None))
    store.add_song(song("aug", source="augmented", content_hash="aug1", parent_id=parent))
    s = store.summary()
    assert s["songs"] == 3
    assert s["by_source"]["reference"] == {"songs": 1, "stems": 2, "targets": 4}
    assert s["by_source"]["feedback"]["songs"] == 1 and s["by_source"]["augmented"]["targets"] == 4
    assert s["targets_by_slot"] == {"eq.band_presence_db": 3, "gain_db": 6, "pan": 3}
    assert s["descriptor_versions"] == {str(DESCRIPTOR_VERSION): 6}
    assert s["genres"] == {"": 1, "rock": 2}


def test_dataset_filters_by_descriptor_version(store):
    rec = song()
    rec.stems[1].descriptor_version = DESCRIPTOR_VERSION + 1
    store.add_song(rec)
    assert [r.stem for r in store.dataset("gain_db", descriptor_version=DESCRIPTOR_VERSION)] == ["kick"]
    with pytest.raises(InputError, match="unknown source"):
        store.dataset("gain_db", sources=["nope"])


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(InputError, match="not a readable expertmix training store") as err:
        S.TrainingStore(junk)
    assert "--store" in str(err.value)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(str(other))
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="not an expertmix training store"):
        S.TrainingStore(other)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    S.TrainingStore(path).close()
    con = sqlite3.connect(str(path))
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="schema version 99"):
        S.TrainingStore(path)


def test_content_hashes(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"stem bytes")
    b.write_bytes(b"mix bytes")
    h = S.content_hash_files([a, b])
    assert h == S.content_hash_files([a, b]) and h != S.content_hash_files([b, a])
    c = tmp_path / "renamed.wav"
    c.write_bytes(b"stem bytes")
    assert S.content_hash_files([c, b]) == h  # names do not matter, bytes do
    assert S.content_hash_json({"b": 1, "a": 2}) == S.content_hash_json({"a": 2, "b": 1})
