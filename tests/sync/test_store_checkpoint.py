"""The embedded store's checkpoints: ``entities`` brought up to date from history
every ``checkpoint_rows`` rows, reads overlaying the newer tail, crash safety, and
the upgrade of a schema version 3 store."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sync.test_store import T0, S, pev
from twin.errors import InputError, ParameterError
from twin.sync.store import SQLiteStore


def _key(e):
    return (e.id, e.revision, e.observed_ns, e.lon, e.status, e.attributes, e.event_id)


def _stream(n: int, n_ent: int, seed: int, prefix: str = "e") -> list:
    """Moves with ties, late events, duplicates, status and attribute changes."""
    rnd = random.Random(seed)
    evs = [
        pev(
            rnd.randrange(n_ent),
            f"{prefix}{k}",
            rnd.randrange(400) / 4,
            lon=round(rnd.uniform(100, 101), 4),
            status=rnd.choice(["walking", "idle"]),
            attrs={"v": rnd.randrange(5)} if rnd.random() < 0.2 else None,
        )
        for k in range(n)
    ]
    out = evs + rnd.sample(evs, n // 20)
    rnd.shuffle(out)
    return out


def _entities_table(s: SQLiteStore) -> dict:
    cols = "id, revision, observed_ns, event_id, lon, status, attributes"
    return {r[0]: r[1:] for r in s._con.execute(f"SELECT {cols} FROM entities")}


def _latest_history(s: SQLiteStore) -> dict:
    """Each entity's newest history row (by time, then event id), by hand."""
    out = {}
    for r in s._con.execute(
        "SELECT e.id, h.revision, h.observed_ns, h.event_id, h.lon, h.status, h.attributes "
        "FROM history AS h JOIN entities AS e ON e.k = h.k ORDER BY h.observed_ns, h.event_id"
    ):
        out[r[0]] = r[1:]
    return out


@pytest.mark.parametrize(
    ("checkpoint_rows", "index_rows"), [(1, None), (37, None), (10**9, None), (10**9, 23), (71, 9)]
)
def test_reads_equal_with_any_checkpoint_interval(
    tmp_path, monkeypatch, checkpoint_rows, index_rows
):
    """Whatever the checkpoint interval (and the history index's, which may be
    updated between checkpoints), every read (current state cached, from a fresh
    connection, query with filters, as of a time, history) equals a store that
    checkpoints after every batch, and after a checkpoint ``entities`` holds the
    newest history row."""
    if index_rows is not None:
        monkeypatch.setattr("twin.sync.store.INDEX_ROWS", index_rows)
        monkeypatch.setattr("twin.sync.store.INDEX_ROWS_PER_ENTITY", 0)
    evs = _stream(600, 25, seed=checkpoint_rows % 97)
    a = SQLiteStore(tmp_path / "a.sqlite", checkpoint_rows=checkpoint_rows)
    ref = SQLiteStore(tmp_path / "ref.sqlite", checkpoint_rows=1)
    reader = SQLiteStore(tmp_path / "a.sqlite")  # another connection, reads only
    for j in range(0, len(evs), 50):
        oa, orf = a.apply(evs[j : j + 50]), ref.apply(evs[j : j + 50])
        assert oa == orf
        # the other connection follows every batch
        ids = sorted({e.entity_id for e in evs[j : j + 50]})
        assert [_key(reader.state(i)) for i in ids] == [_key(ref.state(i)) for i in ids]
        # as-of reads and history see rows before and after the checkpoint alike,
        # from the writer (its cache and tail) and from the other connection
        t = T0 + (j // 2) * S
        want = [_key(x) if (x := ref.state(i, at=t)) else None for i in ids]
        for s in (a, reader):
            assert [_key(x) if (x := s.state(i, at=t)) else None for i in ids] == want
        i = ids[j % len(ids)]
        assert a.history(i) == reader.history(i) == ref.history(i)
        assert reader.history(i, t0=t) == ref.history(i, t0=t)
    ck = int(a._con.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()[0])
    n_hist = a.history_count()
    if checkpoint_rows < n_hist:
        assert ck >= n_hist - checkpoint_rows - 50  # the writer checkpointed
    else:
        assert ck == 0
    assert a._con.execute("SELECT last FROM head").fetchone()[0] == n_hist  # kept by batches
    ix = int(a._con.execute("SELECT value FROM meta WHERE key='indexed'").fetchone()[0])
    assert a._con.execute("SELECT count(*) FROM history_index").fetchone()[0] == ix >= ck
    if index_rows is not None:
        assert ix >= n_hist - index_rows - 50  # indexed between checkpoints too
    # entities not changed since the checkpoint hold their newest history row
    table, latest = _entities_table(a), _latest_history(a)
    changed = {
        r[0]
        for r in a._con.execute(
            "SELECT DISTINCT e.id FROM history AS h JOIN entities AS e ON e.k = h.k "
            "WHERE h.rowid > ?",
            (ck,),
        )
    }
    assert table.keys() == latest.keys()
    for i in table.keys() - changed:
        assert table[i] == latest[i]
    if checkpoint_rows == 1:
        assert not changed and table == latest
    fresh = SQLiteStore(tmp_path / "a.sqlite")
    for q in (
        {},
        {"bbox": (100.2, 29.0, 100.7, 30.0)},
        {"status": "idle"},
        {"types": ["person"], "status": "walking"},
    ):
        want = [_key(x) for x in ref.query(**q)]
        assert want and [_key(x) for x in a.query(**q)] == want
        assert [_key(x) for x in fresh.query(**q)] == want
    ids = [x.id for x in ref.query()]
    assert [_key(fresh.state(i)) for i in ids] == [_key(ref.state(i)) for i in ids]
    t = T0 + 50 * S
    assert [_key(fresh.state(i, at=t)) if fresh.state(i, at=t) else None for i in ids] == [
        _key(ref.state(i, at=t)) if ref.state(i, at=t) else None for i in ids
    ]
    for t in (T0 + 20 * S, T0 + 60 * S, T0 + 99 * S):
        want = [_key(x) for x in ref.query(at=t)]
        assert want and [_key(x) for x in a.query(at=t)] == want
        assert [_key(x) for x in fresh.query(at=t, status="idle")] == [
            _key(x) for x in ref.query(at=t, status="idle")
        ]
    for s in (a, ref, reader, fresh):
        s.close()


def test_as_of_tie_in_the_tail_goes_to_the_greater_event_id(tmp_path):
    """Two events of one entity at the same time, neither indexed yet: the greater
    event id is the newer one, for the writer and for another connection."""
    db = tmp_path / "tie.sqlite"
    s = SQLiteStore(db)
    s.apply([pev(1, "a", 5.0, lon=101.0)])
    s.apply([pev(1, "b", 5.0, lon=102.0), pev(1, "0", 5.0, lon=100.0)])
    r = SQLiteStore(db)
    for store in (s, r):
        assert store.state("urn:ngsi-ld:Person:X0001", at=T0 + 5 * S).lon == 102.0
        assert store.state("urn:ngsi-ld:Person:X0001", at=T0 + 4 * S) is None
    s.close()
    r.close()


def test_other_writer_checkpoints_between_batches(tmp_path):
    """Two connections write in turn, each checkpointing: neither loses the other's
    tail, and revisions count every applied event."""
    a = SQLiteStore(tmp_path / "w.sqlite", checkpoint_rows=7)
    b = SQLiteStore(tmp_path / "w.sqlite", checkpoint_rows=5)
    n = 0
    for j in range(12):
        w = a if j % 2 else b
        out = w.apply([pev(i, f"w{j}-{i}", float(j), lon=100 + j) for i in range(4)])
        n += 1
        assert [o.revision for o in out] == [n] * 4
    for s in (a, b):
        assert {x.lon for x in s.query()} == {111.0}
        assert s.state("urn:ngsi-ld:Person:X0002").revision == 12
    a.close()
    b.close()


def test_killed_after_a_checkpoint(tmp_path):
    """kill -9 after batches that checkpointed and a tail after them, in the middle of
    the next batch: on reopening every committed batch is there, nothing of the
    killed one, and the state equals the last committed batch."""
    db = tmp_path / "k.sqlite"
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from tests.sync.test_store import pev
from twin.sync.store import SQLiteStore
s = SQLiteStore({str(db)!r}, checkpoint_rows=120)
for b in range(5):
    s.apply([pev(i, f"e{{b}}-{{i}}", float(b), lon=121.0 + b) for i in range(50)])
s._con.execute("BEGIN IMMEDIATE")
s._con.execute("UPDATE entities SET lon = -1")
s._con.execute("UPDATE meta SET value = '999999' WHERE key = 'checkpoint'")
os._exit(9)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    s = SQLiteStore(db)
    ck = int(s._con.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()[0])
    assert 0 < ck < 250 and s.history_count() == 250  # checkpointed, with a tail
    assert {x.lon for x in s.query()} == {125.0} and s.count() == 50
    assert s.state("urn:ngsi-ld:Person:X0007").revision == 5
    s.close()


@pytest.mark.parametrize("close", [True, False])
def test_two_writer_processes_at_once(tmp_path, close):
    """Two processes write batches (ties in time, late events, duplicates) into one
    store at the same time, indexing every 97 rows and checkpointing every 331 (and
    now and then by hand), closing or not (a tail stays): every read afterwards
    (current, as of many times, history, query as of a time) equals one writer's
    store of the same events, in what does not depend on delivery order."""
    db = tmp_path / "two.sqlite"
    code = f"""
import random, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
import twin.sync.store as st
from tests.sync.test_store_checkpoint import _stream
st.INDEX_ROWS, st.INDEX_ROWS_PER_ENTITY = 97, 0
s = st.SQLiteStore({str(db)!r}, checkpoint_rows=331)
evs = _stream(3000, 120, int(sys.argv[1]), sys.argv[2])
rnd = random.Random(sys.argv[1])
for j in range(0, len(evs), 40):
    s.apply(evs[j : j + 40])
    if rnd.random() < 0.05:
        s.checkpoint()
if {close!r}:
    s.close()
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(seed), prefix], stderr=subprocess.PIPE)
        for seed, prefix in ((1, "a"), (2, "b"))
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    ref = SQLiteStore(tmp_path / "ref.sqlite", checkpoint_rows=1)
    evs = _stream(3000, 120, 1, "a") + _stream(3000, 120, 2, "b")
    for j in range(0, len(evs), 500):
        ref.apply(evs[j : j + 500])
    s = SQLiteStore(db)
    assert s.history_count() == 6000
    assert s._con.execute("SELECT last FROM head").fetchone()[0] == 6000

    def key(e):  # what does not depend on the order the two deliveries met in
        return None if e is None else (e.id, e.observed_ns, e.event_id, e.lon, e.status)

    def rows(h):
        return sorted((x["observed_ns"], x["event_id"], x["lon"]) for x in h)

    for i in sorted({e.entity_id for e in evs}):
        assert key(s.state(i)) == key(ref.state(i))
        for t in range(0, 105, 5):
            assert key(s.state(i, at=T0 + t * S)) == key(ref.state(i, at=T0 + t * S))
        assert rows(s.history(i)) == rows(ref.history(i))
    for t in (20, 50, 90):
        assert [key(e) for e in s.query(at=T0 + t * S)] == [
            key(e) for e in ref.query(at=T0 + t * S)
        ]
    s.close()
    ref.close()


def test_schema_3_store_is_upgraded_and_newer_refused(tmp_path):
    db = tmp_path / "old.sqlite"
    s = SQLiteStore(db, checkpoint_rows=1)  # entities current after every batch, as in 3
    for b in range(3):
        s.apply([pev(i, f"o{b}-{i}", float(b), lon=110.0 + b) for i in range(10)])
    want = [(x.id, x.revision, x.lon) for x in s.query()]
    s.close()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.execute("DELETE FROM meta WHERE key = 'checkpoint'")
    con.execute("DELETE FROM history_index")  # version 3 indexed history row by row
    con.execute("CREATE INDEX history_entity_time ON history (k, observed_ns, event_id)")
    con.close()
    s = SQLiteStore(db)
    meta = dict(s._con.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "5" and int(meta["checkpoint"]) == s.history_count()
    assert s._con.execute("SELECT count(*) FROM history_index").fetchone()[0] == 30
    assert [(x.id, x.revision, x.lon) for x in s.query()] == want
    assert s.state("urn:ngsi-ld:Person:X0003", at=T0 + S).lon == 111.0
    assert s.apply([pev(1, "new", 9.0, lon=1.0)])[0].revision == 4
    s.close()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(InputError, match="schema version 6") as exc:
        SQLiteStore(db)
    assert "old.sqlite" in str(exc.value)
    for bad in (0, -5, True, 2.5, "100"):
        with pytest.raises(ParameterError, match="checkpoint_rows"):
            SQLiteStore(tmp_path / "p.sqlite", checkpoint_rows=bad)


def test_schema_4_store_is_upgraded(tmp_path):
    """Version 4 indexed history row by row: the upgrade indexes the rows up to its
    checkpoint (the newer tail stays as it is) and drops the old index."""
    db = tmp_path / "v4.sqlite"
    evs = _stream(300, 12, seed=4)
    s = SQLiteStore(db, checkpoint_rows=10**9)
    ref = SQLiteStore(tmp_path / "ref.sqlite", checkpoint_rows=1)
    for j in range(0, 200, 50):
        s.apply(evs[j : j + 50])
        ref.apply(evs[j : j + 50])
    s.checkpoint()
    s.apply(evs[200:])  # a tail after the checkpoint
    ref.apply(evs[200:])
    ck = int(s._con.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()[0])
    s._con.close()  # as a crash would leave it: no closing checkpoint
    s._con = None
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.execute("DELETE FROM history_index")
    con.execute("CREATE INDEX history_entity_time ON history (k, observed_ns, event_id)")
    con.close()
    s = SQLiteStore(db)
    assert s._con.execute("SELECT count(*) FROM history_index").fetchone()[0] == ck
    names = {r[0] for r in s._con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "history_entity_time" not in names
    ids = sorted({e.entity_id for e in evs})
    for t in (None, T0 + 30 * S, T0 + 70 * S):
        assert [_key(s.state(i, at=t)) if s.state(i, at=t) else None for i in ids] == [
            _key(ref.state(i, at=t)) if ref.state(i, at=t) else None for i in ids
        ]
    assert [s.history(i) for i in ids] == [ref.history(i) for i in ids]
    s.close()
    ref.close()


def test_store_without_an_indexed_mark_counts_its_checkpoint(tmp_path):
    """A schema 5 store written before the ``indexed`` mark existed indexed history
    at checkpoints only: its mark is taken to be the checkpoint."""
    db = tmp_path / "m.sqlite"
    s = SQLiteStore(db)
    s.apply([pev(i, f"a{i}", 1.0, lon=100.0 + i) for i in range(5)])
    s.close()  # checkpointed and indexed
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DELETE FROM meta WHERE key = 'indexed'")
    con.close()
    s = SQLiteStore(db, checkpoint_rows=1)  # the next batch indexes its row
    meta = dict(s._con.execute("SELECT key, value FROM meta"))
    assert meta["indexed"] == meta["checkpoint"] == "5"
    assert [o.result for o in s.apply([pev(1, "b", 2.0, lon=1.0)])] == ["applied"]
    assert s.state("urn:ngsi-ld:Person:X0001", at=T0 + S).lon == 101.0
    s.close()


def test_close_checkpoints_what_it_wrote(tmp_path):
    db = tmp_path / "c.sqlite"

    def ck(s):
        return int(s._con.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()[0])

    w = SQLiteStore(db, checkpoint_rows=1000)
    w.apply([pev(i, f"a{i}", 1.0, lon=100.0 + i) for i in range(5)])
    r = SQLiteStore(db)  # a reader: its close writes nothing
    assert r.state("urn:ngsi-ld:Person:X0003").lon == 103.0
    r.close()
    assert ck(w) == 0
    w.apply([pev(i, f"b{i}", 2.0, lon=110.0 + i) for i in range(5)])
    w.checkpoint()
    assert ck(w) == 10
    assert {x[0] for x in w._con.execute("SELECT lon FROM entities")} == {
        110.0 + i for i in range(5)
    }
    w.apply([pev(1, "c1", 3.0, lon=-5.0)])
    w.close()
    s = SQLiteStore(db)
    assert ck(s) == 11 and s.state("urn:ngsi-ld:Person:X0001").lon == -5.0
    s.close()


def test_default_interval_grows_with_the_entities(tmp_path, monkeypatch):
    """By default a checkpoint comes every CHECKPOINT_ROWS history rows or every
    CHECKPOINT_ROWS_PER_ENTITY rows per entity, whichever is more."""
    import twin.sync.store as store

    monkeypatch.setattr(store, "CHECKPOINT_ROWS", 30)
    s = SQLiteStore(tmp_path / "d.sqlite")
    assert s.checkpoint_rows is None

    def ck() -> int:
        return int(s._con.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()[0])

    # 5 entities: every 30 rows (5 x 4 = 20 is less); batches of 10 rows
    for j in range(0, 60, 10):
        s.apply([pev(k % 5, f"a{j + k}", j + k) for k in range(10)])
        assert ck() == (30 if j + 10 >= 30 else 0) + (30 if j + 10 >= 60 else 0)
    # 20 entities: every 80 rows from the last checkpoint (row 60)
    s.apply([pev(k, f"b{k}", 100 + k) for k in range(5, 20)])  # rows 61..75
    assert ck() == 60
    for j in range(0, 60, 10):  # rows 76..135: the mark is crossed at 140
        s.apply([pev(k, f"c{j + k}", 200 + j + k) for k in range(10)])
    assert ck() == 60
    s.apply([pev(k, f"d{k}", 300 + k) for k in range(10)])  # rows 136..145
    assert ck() == 145
    r = SQLiteStore(tmp_path / "d.sqlite")  # another connection reads the same
    assert r.state("urn:ngsi-ld:Person:X0019").revision == 1
    r.close()
    s.close()
