"""Archive: variants, results and events in SQLite, and they survive reopening."""

from __future__ import annotations

import sqlite3

import pytest

from scientist.archive import Archive
from scientist.variant import (DONE, FAILED, PENDING, RUNNING, SEED_CRASH, SEED_OK, Result,
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
