"""Archive: variants, results and events in SQLite, and they survive reopening."""

from __future__ import annotations

import sqlite3
import time

import pytest

from scientist.archive import SCHEMA, Archive
from scientist.variant import (CLEAN, DONE, FAILED, PENDING, RUNNING, SEED_CRASH, SEED_OK, SUSPICIOUS,
                               VIOLATED, Result,
                               SeedResult)


def ok_result(*values: float, metric: str = "score") -> Result:
    return Result([SeedResult(i, SEED_OK, metrics={metric: v, "aux": 2.0 * v})
                   for i, v in enumerate(values)], metric)


def add_done(a: Archive, parent: int | None, value: float, iteration: int = 0) -> int:
    v = a.new_variant(parent, iteration, status=RUNNING)
    a.record_result(v.id, ok_result(value), DONE)
    return v.id


def test_ids_start_at_zero_and_count_up(archive):
    assert archive.next_id() == 0
    ids = [archive.new_variant(None if i == 0 else 0, i).id for i in range(3)]
    assert ids == [0, 1, 2]
    assert archive.next_id() == 3 and archive.count() == 3


def test_variant_fields_round_trip(archive):
    v = archive.new_variant(None, 0, status=RUNNING, hypothesis="bigger lr helps",
                            commit="abc123", diff="-a\n+b\n", proposer="offline")
    assert (v.hypothesis, v.commit, v.diff, v.status) == ("bigger lr helps", "abc123",
                                                           "-a\n+b\n", RUNNING)
    r = ok_result(1.0, 3.0)
    archive.record_result(v.id, r, DONE)
    got = archive.get(v.id)
    assert got.status == DONE
    assert got.fitness == pytest.approx(2.0) and got.fitness_n == 2
    assert got.fitness_stderr == pytest.approx(1.0)
    assert got.metrics == {"aux": pytest.approx(4.0), "score": pytest.approx(2.0)}
    assert got.result.to_dict() == r.to_dict()
    assert got.finished_at is not None


def test_a_failed_result_keeps_no_fitness_and_its_reason(archive):
    v = archive.new_variant(None, 0)
    r = Result([SeedResult(0, SEED_OK, metrics={"score": 1.0}),
                SeedResult(1, SEED_CRASH, reason="exit status 1", stderr_tail="Traceback...")],
               "score")
    archive.record_result(v.id, r, FAILED)
    got = archive.get(v.id)
    assert got.status == FAILED and got.fitness is None
    assert "seed 1: crash: exit status 1" in got.error
    assert got.result.seeds[1].stderr_tail == "Traceback..."
    assert archive.candidates() == [] and archive.best() == []


def test_unknown_field_and_unknown_id_are_errors(archive):
    v = archive.new_variant(None, 0)
    with pytest.raises(KeyError, match="nonsense"):
        archive.update(v.id, nonsense=1)
    with pytest.raises(KeyError, match="no variant 7"):
        archive.get(7)


def test_lineage_runs_from_the_baseline(archive):
    root = add_done(archive, None, 1.0)
    a = add_done(archive, root, 2.0, 1)
    add_done(archive, root, 0.5, 2)  # a sibling, not on the line
    b = add_done(archive, a, 3.0, 3)
    assert [v.id for v in archive.lineage(b)] == [root, a, b]
    assert [v.id for v in archive.lineage(root)] == [root]


def test_best_respects_direction(tmp_path):
    for maximize, expected in ((True, [2, 0, 1]), (False, [1, 0, 2])):
        a = Archive(tmp_path / f"{maximize}.sqlite", maximize=maximize)
        for i, value in enumerate((1.0, -5.0, 7.0)):
            add_done(a, None if i == 0 else 0, value, i)
        failed = a.new_variant(0, 3)
        a.record_result(failed.id, Result([SeedResult(0, SEED_CRASH)], "score"), FAILED)
        assert [v.id for v in a.best(3)] == expected
        assert failed.id not in [v.id for v in a.best(10)]
        a.close()


def test_in_flight_lists_unfinished_variants(archive):
    done = add_done(archive, None, 1.0)
    pending = archive.new_variant(done, 1, status=PENDING)
    running = archive.new_variant(done, 2, status=RUNNING)
    assert [v.id for v in archive.in_flight()] == [pending.id, running.id]
    archive.record_result(running.id, ok_result(2.0), DONE)
    assert [v.id for v in archive.in_flight()] == [pending.id]


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "archive.sqlite"
    a = Archive(path, maximize=False)
    root = add_done(a, None, 4.0)
    child = add_done(a, root, 3.0, 1)
    a.new_variant(child, 2, status=RUNNING, hypothesis="in flight")
    a.set_meta("status", "running")
    a.log("rejected", "looks like a bug", child)
    a.close()

    b = Archive(path, maximize=False)
    try:
        assert [v.id for v in b.all()] == [0, 1, 2]
        assert b.get(child).fitness == pytest.approx(3.0)
        assert b.best()[0].id == child
        assert [v.hypothesis for v in b.in_flight()] == ["in flight"]
        assert b.get_meta("status") == "running"
        assert b.get_meta("missing", "dflt") == "dflt"
        assert [(e["kind"], e["text"]) for e in b.events(child)] == [("rejected",
                                                                     "looks like a bug")]
        assert b.next_id() == 3
    finally:
        b.close()


def test_touch_makes_a_variant_the_most_recently_used(archive):
    ids = [add_done(archive, None if i == 0 else 0, float(i), i) for i in range(3)]
    used = archive.last_used()
    assert used[ids[2]] > used[ids[1]] > used[ids[0]]  # creation counts as use
    archive.touch(ids[0])
    used = archive.last_used()
    assert used[ids[0]] > used[ids[2]]


class DiesAt:
    """The archive's SQLite connection, in a process that is interrupted (Ctrl-C) just as it
    is about to run the first statement that starts with `prefix`."""

    def __init__(self, db: sqlite3.Connection, prefix: str):
        self.db, self.prefix = db, prefix

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith(self.prefix):
            raise KeyboardInterrupt
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_new_variant_is_written_whole_or_not_at_all(tmp_path):
    # a variant is inserted with its commit in one transaction: a kill between the insert and
    # the fields must not leave a running row without a commit, which resume could not evaluate
    path = tmp_path / "archive.sqlite"
    a = Archive(path)
    with pytest.raises(KeyError, match="no variant field 'nonsense'"):
        a.new_variant(None, 0, status=RUNNING, commit="abc", nonsense=1)
    assert a.count() == 0
    a.db = DiesAt(a.db, "UPDATE")  # the insert went through; the process dies before the fields
    with pytest.raises(KeyboardInterrupt):
        a.new_variant(None, 0, status=RUNNING, commit="abc", hypothesis="h")
    a.close()
    b = Archive(path)  # what resume would find
    try:
        assert b.count() == 0 and b.in_flight() == []
        v = b.new_variant(None, 0, status=RUNNING, commit="abc", hypothesis="h")
        assert (v.id, b.get(v.id).commit, b.get(v.id).hypothesis) == (0, "abc", "h")
    finally:
        b.close()


# --- everything the archive stores, read back exactly -------------------------------------


def test_meta_values_are_json(archive):
    for key, value in (("n", 3), ("f", 0.25), ("s", "text"), ("d", {"a": [1, 2]}), ("none", None), ("b", False)):
        archive.set_meta(key, value)
        assert archive.get_meta(key, "default") == value
    archive.set_meta("n", 4)  # replaced, not added
    assert archive.get_meta("n") == 4
    assert archive.get_meta("absent") is None


def test_events_in_order_and_by_variant(archive):
    before = time.time()
    archive.log("rejected", "first", 1)
    archive.log("note", "run-wide")
    archive.log("integrity", "second", 1)
    archive.log("rejected", "other", 2)
    everything = archive.events()
    assert [(e["kind"], e["text"], e["variant_id"]) for e in everything] == [
        ("rejected", "first", 1), ("note", "run-wide", None), ("integrity", "second", 1), ("rejected", "other", 2)]
    assert all(before <= e["at"] <= time.time() for e in everything)
    assert [e["text"] for e in archive.events(1)] == ["first", "second"]
    assert [e["text"] for e in archive.events(0)] == []


def call(**fields):
    return {"at": 1.0, "iteration": 1, "purpose": "propose", "key": "k", "model": "m", **fields}


def test_llm_calls_are_counted_without_errors_and_cached_replies_cost_nothing(archive):
    archive.add_llm_call(call(prompt_tokens=100, completion_tokens=20, cost=0.5))
    archive.add_llm_call(call(prompt_tokens=1000, completion_tokens=200, cost=9.0, cached=True))
    archive.add_llm_call(call(prompt_tokens=7, completion_tokens=3, cost=0.0, priced=False))
    archive.add_llm_call(call(prompt_tokens=0, completion_tokens=0, cost=0.0, priced=True))
    archive.add_llm_call(call(prompt_tokens=50, cached=True, priced=False))  # cached: not unpriced either
    archive.add_llm_call(call(iteration=2, prompt_tokens=10, completion_tokens=1, cost=0.25))
    archive.add_llm_call(call(iteration=2, attempt=1, error="HTTP 500", prompt_tokens=5, cost=1.0))
    u = archive.llm_usage()
    assert (u.calls, u.cached_calls, u.prompt_tokens, u.completion_tokens, u.unpriced_calls) == (6, 2, 117, 24, 1)
    assert u.cost == pytest.approx(0.75)
    u1 = archive.llm_usage(1)
    assert (u1.calls, u1.cached_calls, u1.prompt_tokens, u1.completion_tokens, u1.cost) == (5, 2, 107, 23, 0.5)
    assert archive.llm_usage(3).calls == 0 and archive.llm_usage(3).cost == 0.0


def test_llm_call_fields_default_sensibly(archive):
    archive.add_llm_call(call(attempt=None, prompt_tokens=None, completion_tokens=None, cost=None, cached=None,
                              priced=None))
    row = archive.db.execute("SELECT attempt, prompt_tokens, completion_tokens, cost, cached, priced, seconds, "
                             "finish_reason, error FROM llm_calls").fetchone()
    assert row == (0, 0, 0, 0, 0, 1, None, None, None)
    archive.add_llm_call(call(priced=False, cached=True, seconds=1.5, finish_reason="length"))
    row = archive.db.execute("SELECT priced, cached, seconds, finish_reason FROM llm_calls WHERE id = 2").fetchone()
    assert row == (0, 1, 1.5, "length")


def test_llm_errors_in_order_and_by_iteration(archive):
    archive.add_llm_call(call(iteration=1, attempt=0, error="429"))
    archive.add_llm_call(call(iteration=1, prompt_tokens=5))
    archive.add_llm_call(call(iteration=2, attempt=1, error="500"))
    assert [(e["at"], e["iteration"], e["attempt"], e["error"], e["purpose"]) for e in archive.llm_errors()] == [
        (1.0, 1, 0, "429", "propose"), (1.0, 2, 1, "500", "propose")]
    assert [e["error"] for e in archive.llm_errors(2)] == ["500"]
    assert archive.llm_errors(3) == []


def test_a_new_variant_starts_pending_and_most_recently_used(archive):
    t0 = time.time()
    a = archive.new_variant(None, 0)
    b = archive.new_variant(0, 1, hypothesis="h", predicted=0.5)
    assert (a.status, a.parent_id, a.iteration, a.fitness, a.fitness_n, a.metrics, a.result) == (
        PENDING, None, 0, None, 0, {}, None)
    assert (b.parent_id, b.hypothesis, b.predicted, b.integrity) == (0, "h", 0.5, CLEAN)
    assert t0 <= a.created_at <= b.created_at <= time.time() and a.finished_at is None
    used = archive.last_used()
    assert used == {0: 1, 1: 2}
    archive.touch(0)
    archive.touch(0)
    assert archive.last_used() == {0: 4, 1: 2}


def test_update_sets_only_what_it_is_given(archive):
    v = archive.new_variant(None, 0, hypothesis="h", commit="abc")
    archive.update(v.id)  # nothing to set
    archive.update(v.id, commit="def", metrics={"a": 1.5}, status=DONE)
    got = archive.get(v.id)
    assert (got.commit, got.metrics, got.status, got.hypothesis) == ("def", {"a": 1.5}, DONE, "h")
    archive.update(v.id, result=ok_result(1.0))
    archive.update(v.id, result=None)
    assert archive.get(v.id).result is None
    with pytest.raises(KeyError, match="no variant field 'id'"):
        archive.update(v.id, id=5)
    with pytest.raises(KeyError, match="no variant field 'commit_shaa'"):
        archive.update(v.id, commit_shaa="x")


def test_record_result_stores_the_outcome_and_the_integrity_label(archive):
    v = archive.new_variant(None, 0, status=RUNNING)
    t0 = time.time()
    archive.record_result(v.id, ok_result(2.0, 4.0, 6.0), DONE, (SUSPICIOUS, "fitness 4 above the ceiling 3"))
    got = archive.get(v.id)
    assert (got.status, got.fitness, got.fitness_n, got.error) == (DONE, 4.0, 3, "")
    assert got.fitness_stderr == pytest.approx(2.0 / 3 ** 0.5)
    assert got.metrics == {"score": 4.0, "aux": 8.0}
    assert (got.integrity, got.integrity_reason) == (SUSPICIOUS, "fitness 4 above the ceiling 3")
    assert t0 <= got.finished_at <= time.time()
    w = archive.new_variant(0, 1, status=RUNNING)
    archive.record_result(w.id, Result([SeedResult(0, SEED_CRASH, "exit status 2")], "score"), FAILED)
    got = archive.get(w.id)
    assert (got.fitness, got.fitness_stderr, got.fitness_n, got.error, got.integrity) == (
        None, None, 0, "seed 0: crash: exit status 2", CLEAN)


def test_candidates_best_and_statuses(archive):
    base = add_done(archive, None, 1.0)
    ids = [add_done(archive, base, v, i) for i, v in enumerate((5.0, 3.0, 9.0, 7.0), 1)]
    archive.update(ids[2], integrity=VIOLATED)  # 9.0, but it broke the protocol
    archive.update(ids[3], integrity=SUSPICIOUS)
    running = archive.new_variant(base, 5, status=RUNNING)
    assert [v.id for v in archive.candidates()] == [base, ids[0], ids[1]]
    assert [v.id for v in archive.best(2)] == [ids[0], ids[1]]
    assert [v.id for v in archive.best()] == [ids[0]]
    assert [v.id for v in archive.with_status(RUNNING, PENDING)] == [running.id]
    assert [v.id for v in archive.with_status(DONE)] == [base] + ids
    assert archive.fitness(archive.get(ids[0])).key == 5.0
    done_without_fitness = archive.new_variant(base, 6, status=DONE)
    assert done_without_fitness.id not in [v.id for v in archive.candidates()]


def test_an_archive_from_before_the_integrity_columns_gets_them(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    old_schema = SCHEMA.replace(",\n    predicted REAL,\n    integrity TEXT NOT NULL DEFAULT 'clean',\n"
                                "    integrity_reason TEXT NOT NULL DEFAULT ''\n", "\n")
    assert "integrity" not in old_schema.split("CREATE TABLE IF NOT EXISTS meta")[0]
    db.executescript(old_schema)
    db.execute("INSERT INTO variants (id, iteration, status, created_at, fitness) VALUES (0, 0, 'done', 1.0, 2.5)")
    db.commit()
    db.close()
    a = Archive(path)
    try:
        v = a.get(0)
        assert (v.fitness, v.predicted, v.integrity, v.integrity_reason) == (2.5, None, CLEAN, "")
        assert [c.id for c in a.candidates()] == [0]
    finally:
        a.close()
    Archive(path).close()  # and opening it again adds nothing twice


def test_the_archive_is_in_wal_mode(archive):
    assert archive.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- the record as it stood: sequence numbers (what a proposal made ahead was made from) -----


def test_the_record_as_it_stood_when_each_parent_was_selected(archive):
    from scientist.jobs import job

    a = archive
    base = a.new_variant(None, 0, status=RUNNING, commit="c0")
    a.finish(base.id, ok_result(1.0), DONE)
    assert a.seq() == 1 and a.seen(base.id) is None  # the baseline is not selected
    v1 = a.select(0, 1, rng_state=[3, [1, 2], None])
    v2 = a.select(0, 2)
    assert (v1.status, v1.parent_id, v1.iteration, a.seen(v1.id), a.seen(v2.id)) == (PENDING, 0, 1, 1, 1)
    assert a.rng_state(v1.id) == [3, [1, 2], None] and a.rng_state(v2.id) is None
    assert a.seen(99) is None and a.rng_state(99) is None
    assert a.history(1) == [a.get(0)]  # selected, nothing proposed yet: not in the record
    a.propose(v2.id, "invalid", error="no edit blocks")  # proposed first; finished at once: not run
    a.propose(v1.id, RUNNING, jobs=[job(v1.id, 0), job(v1.id, 1)], commit="c1", hypothesis="h1")
    assert a.rng_state(v1.id) is None  # the proposal has drawn from the stream: nothing to replay
    assert [(j.variant_id, j.seed) for j in a.jobs.of_variant(v1.id)] == [(v1.id, 0), (v1.id, 1)]
    assert a.seq() == 3
    v3 = a.select(0, 3)
    assert a.seen(v3.id) == 3
    assert a.staleness() == {v1.id: 0, v2.id: 1, v3.id: 1}  # v1 still running when v2, v3 were selected
    a.finish(v1.id, ok_result(2.0), DONE)
    a.propose(v3.id, RUNNING, commit="c3")
    assert a.seq() == 5 and a.last_iteration() == 3
    # v1's result (4) came after v2's and v3's selections (1, 3): neither saw it; v2's (2) v3 did
    assert a.staleness() == {v1.id: 0, v2.id: 1, v3.id: 1}

    def seen_as(n):
        return [(v.id, v.status, v.fitness, v.commit) for v in a.history(n)]

    assert seen_as(1) == [(0, DONE, 1.0, "c0")]
    assert seen_as(2) == [(0, DONE, 1.0, "c0"), (2, "invalid", None, None)]  # v1 was proposed at 3
    assert seen_as(3) == [(0, DONE, 1.0, "c0"), (1, RUNNING, None, "c1"), (2, "invalid", None, None)]
    assert seen_as(4) == [(0, DONE, 1.0, "c0"), (1, DONE, 2.0, "c1"), (2, "invalid", None, None)]
    assert seen_as(5) == seen_as(None) == [(v.id, v.status, v.fitness, v.commit) for v in a.all()]
    running = a.history(3)[1]
    assert (running.result, running.metrics, running.fitness_n, running.finished_at) == (None, {}, 0, None)
    assert running.hypothesis == "h1"  # what was proposed is shown, the result is not
    assert a.history(2)[1].error == "no edit blocks"


def test_variants_from_before_sequence_numbers_are_always_in_the_record(archive):
    a = archive
    assert a.last_iteration() == 0
    done = a.new_variant(None, 0, status=RUNNING, commit="c0")
    a.record_result(done.id, ok_result(1.0), DONE)  # no sequence number: finished before any
    a.new_variant(0, 1)  # pending, never proposed (no commit): not in the record
    running = a.new_variant(0, 2, status=RUNNING, commit="c2")  # in flight, proposed
    assert a.seq() == 0 and a.last_iteration() == 2
    assert [(v.id, v.status, v.fitness) for v in a.history(0)] == [(0, DONE, 1.0), (running.id, RUNNING, None)]
    assert a.staleness() == {}  # none was selected with a `seen`


def test_comparisons_round_trip_and_unknown_fields_are_errors(archive):
    from scientist.jobs import job

    cid = archive.add_comparison(kind="confirm", challenger_id=1, incumbent_id=0, level=0.01, started_at=1.0)
    archive.update_comparison(cid, seeds=[4, 5], challenger_result=ok_result(2.0, 3.0), incumbent_result=None,
                              decision="promoted")
    (c,) = archive.comparisons()
    assert (c["id"], c["seeds"], c["decision"], c["incumbent_result"], c["challenger_result"].values) == (
        cid, [4, 5], "promoted", None, [2.0, 3.0])
    with pytest.raises(KeyError) as e:
        archive.add_comparison(kind="confirm", nonsense=1, other=2)
    assert str(e.value) == "\"archive has no comparison field(s) ['nonsense', 'other']\""
    with pytest.raises(KeyError) as e:
        archive.update_comparison(cid, id=7)
    assert str(e.value) == "\"archive has no comparison field(s) ['id']\""
    with pytest.raises(KeyError) as e:  # the id is a field, only not one to set: the unknown one is named
        archive.update_comparison(cid, id=7, nonsense=1)
    assert str(e.value) == "\"archive has no comparison field(s) ['nonsense']\""
    archive.jobs.add([job(1, 4, cid)])  # the jobs table shares the archive's transactions
    assert [(j.variant_id, j.seed, j.comparison_id) for j in archive.jobs.of_comparison(cid)] == [(1, 4, cid)]


def test_a_write_waits_for_a_readers_lock_instead_of_failing(archive):
    # `scientist show` reads while the run writes: a lock held by it must not fail the run's write
    assert archive.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


class StaleColumns:
    """A connection that saw the variants table before another process (a reader opening the
    same old archive) added the new columns to it; or whose ALTER TABLE fails otherwise."""

    def __init__(self, db, old_columns, alter_error=None):
        self.db, self.old, self.alter_error = db, old_columns, alter_error

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA table_info(variants)"):
            return iter(self.old)
        if sql.startswith("ALTER TABLE") and self.alter_error:
            raise sqlite3.OperationalError(self.alter_error)
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_columns_another_process_added_meanwhile_are_not_an_error(tmp_path, monkeypatch):
    import scientist.archive as archive_mod

    path = tmp_path / "old.sqlite"
    Archive(path).close()
    db = sqlite3.connect(path)
    old = [r for r in db.execute("PRAGMA table_info(variants)") if r[1] not in ("seen", "rng_state")]
    db.close()
    connect = sqlite3.connect
    monkeypatch.setattr(archive_mod.sqlite3, "connect", lambda *a, **k: StaleColumns(connect(*a, **k), old))
    Archive(path).close()  # ALTER TABLE says "duplicate column": someone else added it
    monkeypatch.setattr(archive_mod.sqlite3, "connect",
                        lambda *a, **k: StaleColumns(connect(*a, **k), old, "disk I/O error"))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        Archive(path)
