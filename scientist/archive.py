"""Archive: every variant of a run in an embedded SQLite file inside the run folder.

Each write is its own committed transaction (WAL journal), so a Ctrl-C or `kill -9`
loses at most the variant in flight. Parent selection reads the archive through a
policy from `scientist.selection`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scientist.llm import Usage
from scientist.variant import CLEAN, DONE, PENDING, RUNNING, Fitness, Result, Variant

SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES variants(id),
    iteration INTEGER NOT NULL,
    status TEXT NOT NULL,
    hypothesis TEXT NOT NULL DEFAULT '',
    rationale TEXT NOT NULL DEFAULT '',
    prediction TEXT NOT NULL DEFAULT '',
    proposer TEXT NOT NULL DEFAULT '',
    commit_sha TEXT,
    diff TEXT NOT NULL DEFAULT '',
    fitness REAL,
    fitness_stderr REAL,
    fitness_n INTEGER NOT NULL DEFAULT 0,
    metrics TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    finished_at REAL,
    last_used INTEGER NOT NULL DEFAULT 0,
    predicted REAL,
    integrity TEXT NOT NULL DEFAULT 'clean',
    integrity_reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, iteration INTEGER NOT NULL, purpose TEXT NOT NULL,
    key TEXT NOT NULL, model TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0,
    priced INTEGER NOT NULL DEFAULT 1, seconds REAL, finish_reason TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, variant_id INTEGER, kind TEXT NOT NULL,
    text TEXT NOT NULL
);
"""
# Paired comparisons of two variants on fresh training seeds (scientist.promotion): a
# promotion attempt (`confirm`) or the final test on the sealed set (`sealed`). The seeds'
# results are kept whole (JSON of a Result), as the variants' own are.
COMPARISONS = """
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, challenger_id INTEGER NOT NULL,
    incumbent_id INTEGER NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, level REAL NOT NULL,
    seeds TEXT NOT NULL DEFAULT '[]', challenger_result TEXT, incumbent_result TEXT,
    decision TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL, finished_at REAL, seconds REAL NOT NULL DEFAULT 0
);
"""
COMPARISON_FIELDS = ("id", "kind", "challenger_id", "incumbent_id", "attempt", "level", "seeds",
                     "challenger_result", "incumbent_result", "decision", "reason", "started_at",
                     "finished_at", "seconds")

COLUMNS = ("id", "parent_id", "iteration", "status", "hypothesis", "rationale", "prediction",
           "proposer", "commit_sha", "diff", "fitness", "fitness_stderr", "fitness_n",
           "metrics", "result", "error", "created_at", "finished_at", "predicted", "integrity",
           "integrity_reason")
# columns added after the first release, with their type: older archives get them on open
ADDED_COLUMNS = {"predicted": "REAL", "integrity": "TEXT NOT NULL DEFAULT 'clean'",
                 "integrity_reason": "TEXT NOT NULL DEFAULT ''"}
LLM_CALL_FIELDS = ("at", "iteration", "purpose", "key", "model", "attempt", "prompt_tokens",
                   "completion_tokens", "cost", "cached", "priced", "seconds", "finish_reason",
                   "error")


class Archive:
    """SQLite-backed store of a run's variants, run metadata and event log."""

    def __init__(self, path: Path, maximize: bool = True):
        self.path = Path(path)
        self.maximize = maximize
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.executescript(COMPARISONS)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(variants)")}
        for col, kind in ADDED_COLUMNS.items():
            if col not in have:
                self.db.execute(f"ALTER TABLE variants ADD COLUMN {col} {kind}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- run metadata -------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def log(self, kind: str, text: str, variant_id: int | None = None) -> None:
        """Append to the run's event log (decisions, rejections, errors)."""
        with self._tx() as db:
            db.execute("INSERT INTO events (at, variant_id, kind, text) VALUES (?, ?, ?, ?)",
                       (time.time(), variant_id, kind, text))

    def events(self, variant_id: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT at, variant_id, kind, text FROM events"
        args: tuple = ()
        if variant_id is not None:
            q, args = q + " WHERE variant_id = ?", (variant_id,)
        rows = self.db.execute(q + " ORDER BY id", args).fetchall()
        return [dict(zip(("at", "variant_id", "kind", "text"), r)) for r in rows]

    # --- LLM calls ----------------------------------------------------------------
    def add_llm_call(self, entry: dict[str, Any]) -> None:
        """Store the counts of one LLM call (or failed attempt); texts go to the transcript."""
        row = {k: entry.get(k) for k in LLM_CALL_FIELDS}
        row["attempt"] = row["attempt"] or 0
        for k in ("prompt_tokens", "completion_tokens", "cost", "cached"):
            row[k] = row[k] or 0
        row["priced"] = 1 if row["priced"] is None else int(bool(row["priced"]))
        with self._tx() as db:
            db.execute(f"INSERT INTO llm_calls ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       tuple(row.values()))

    def llm_usage(self, iteration: int | None = None) -> Usage:
        """Calls, tokens and cost of the run's LLM calls (of one iteration, if given).
        Failed attempts are not calls; cached replies count as calls but cost nothing."""
        q = ("SELECT COUNT(*), COALESCE(SUM(cached), 0), "
             "COALESCE(SUM(CASE WHEN cached = 0 THEN prompt_tokens END), 0), "
             "COALESCE(SUM(CASE WHEN cached = 0 THEN completion_tokens END), 0), "
             "COALESCE(SUM(CASE WHEN cached = 0 THEN cost END), 0), "
             "COALESCE(SUM(CASE WHEN cached = 0 AND priced = 0 THEN 1 END), 0) "
             "FROM llm_calls WHERE error IS NULL")
        args: tuple = ()
        if iteration is not None:
            q, args = q + " AND iteration = ?", (iteration,)
        calls, cached, pt, ct, cost, unpriced = self.db.execute(q, args).fetchone()
        return Usage(calls, cached, pt, ct, float(cost), unpriced)

    def llm_errors(self, iteration: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT at, iteration, purpose, attempt, error FROM llm_calls WHERE error IS NOT NULL"
        args: tuple = ()
        if iteration is not None:
            q, args = q + " AND iteration = ?", (iteration,)
        rows = self.db.execute(q + " ORDER BY id", args).fetchall()
        return [dict(zip(("at", "iteration", "purpose", "attempt", "error"), r)) for r in rows]

    # --- paired comparisons -------------------------------------------------------
    def add_comparison(self, **fields: Any) -> int:
        """Insert a comparison row (JSON-encodes lists and Results); returns its id."""
        row = _comparison_row(fields)
        with self._tx() as db:
            cur = db.execute(f"INSERT INTO comparisons ({', '.join(row)}) "
                             f"VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return cur.lastrowid

    def update_comparison(self, comparison_id: int, **fields: Any) -> None:
        row = _comparison_row(fields)
        with self._tx() as db:
            db.execute(f"UPDATE comparisons SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?",
                       (*row.values(), comparison_id))

    def comparisons(self) -> list[dict[str, Any]]:
        """Every comparison, oldest first, with seeds and results decoded."""
        rows = self.db.execute(f"SELECT {', '.join(COMPARISON_FIELDS)} FROM comparisons "
                               "ORDER BY id").fetchall()
        out = []
        for r in rows:
            d = dict(zip(COMPARISON_FIELDS, r))
            d["seeds"] = json.loads(d["seeds"] or "[]")
            for k in ("challenger_result", "incumbent_result"):
                d[k] = Result.from_dict(json.loads(d[k])) if d[k] else None
            out.append(d)
        return out

    # --- variants -----------------------------------------------------------------
    def new_variant(self, parent_id: int | None, iteration: int, *, status: str = PENDING,
                    **fields: Any) -> Variant:
        """Insert a variant with its fields in one transaction: a kill never leaves a row
        that is, say, running but has no commit yet."""
        sets, args = _assignments(fields)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO variants (id, parent_id, iteration, status, created_at, last_used) "
                "VALUES ((SELECT COALESCE(MAX(id) + 1, 0) FROM variants), ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(last_used), 0) + 1 FROM variants))",
                (parent_id, iteration, status, time.time()))
            vid = cur.lastrowid
            if sets:
                db.execute(f"UPDATE variants SET {', '.join(sets)} WHERE id = ?", (*args, vid))
        return self.get(vid)

    def update(self, variant_id: int, **fields: Any) -> None:
        sets, args = _assignments(fields)
        if not sets:
            return
        with self._tx() as db:
            db.execute(f"UPDATE variants SET {', '.join(sets)} WHERE id = ?", (*args, variant_id))

    def record_result(self, variant_id: int, result: Result, status: str,
                      integrity: tuple[str, str] = (CLEAN, "")) -> None:
        """Store a variant's evaluation outcome, its aggregated fitness and its integrity
        label with the reason (`scientist.integrity`)."""
        self.update(variant_id, status=status, result=result, metrics=result.mean_metrics(),
                    fitness=result.mean, fitness_stderr=result.stderr,
                    fitness_n=len(result.values), error=result.reason if not result.ok else "",
                    finished_at=time.time(), integrity=integrity[0], integrity_reason=integrity[1])

    def touch(self, variant_id: int) -> None:
        """Mark a variant as just used (selected as parent): LRU order for selection pools."""
        with self._tx() as db:
            db.execute("UPDATE variants SET last_used = (SELECT MAX(last_used) + 1 FROM variants)"
                       " WHERE id = ?", (variant_id,))

    def get(self, variant_id: int) -> Variant:
        row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM variants WHERE id = ?",
                              (variant_id,)).fetchone()
        if row is None:
            raise KeyError(f"no variant {variant_id} in {self.path}")
        return _variant(row)

    def all(self) -> list[Variant]:
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM variants ORDER BY id")
        return [_variant(r) for r in rows.fetchall()]

    def with_status(self, *statuses: str) -> list[Variant]:
        marks = ", ".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM variants WHERE status IN ({marks}) ORDER BY id",
            statuses)
        return [_variant(r) for r in rows.fetchall()]

    def last_used(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT id, last_used FROM variants").fetchall())

    def candidates(self) -> list[Variant]:
        """Variants that may be parents: evaluated successfully, with a fitness and a clean
        integrity label. A violated variant broke the judge's protocol; a suspicious one has a
        fitness its seed calls implausible, or one far above its held-out score: building on
        it would spend the run on (and pass on) what is likely a cheat or an overfit."""
        return [v for v in self.with_status(DONE) if v.fitness is not None and v.integrity == CLEAN]

    def fitness(self, v: Variant) -> Fitness:
        return Fitness(v.fitness, self.maximize)

    def best(self, n: int = 1) -> list[Variant]:
        return sorted(self.candidates(), key=lambda v: self.fitness(v).key, reverse=True)[:n]

    def lineage(self, variant_id: int) -> list[Variant]:
        """The chain from the root (baseline) to this variant, root first."""
        chain, vid = [], variant_id
        while vid is not None:
            v = self.get(vid)
            chain.append(v)
            vid = v.parent_id
        return chain[::-1]

    def in_flight(self) -> list[Variant]:
        """Variants a crash left unfinished; resume evaluates them again."""
        return self.with_status(PENDING, RUNNING)

    def next_id(self) -> int:
        """The id the next variant will get (the baseline is 0)."""
        return self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM variants").fetchone()[0]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM variants").fetchone()[0]


def _assignments(fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """`col = ?` clauses and their values for variant fields (KeyError on unknown ones)."""
    cols = {"commit": "commit_sha"}
    sets, args = [], []
    for k, v in fields.items():
        col = cols.get(k, k)
        if col not in COLUMNS or col == "id":
            raise KeyError(f"archive has no variant field {k!r}")
        if col == "metrics":
            v = json.dumps(v)
        elif col == "result":
            v = None if v is None else json.dumps(v.to_dict())
        sets.append(f"{col} = ?")
        args.append(v)
    return sets, args


def _comparison_row(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(COMPARISON_FIELDS) - {"id"}
    if unknown or "id" in fields:
        raise KeyError(f"archive has no comparison field(s) {sorted(unknown) or ['id']}")
    row = dict(fields)
    if "seeds" in row:
        row["seeds"] = json.dumps(list(row["seeds"]))
    for k in ("challenger_result", "incumbent_result"):
        if k in row:
            row[k] = None if row[k] is None else json.dumps(row[k].to_dict())
    return row


def _variant(row: tuple) -> Variant:
    d = dict(zip(COLUMNS, row))
    d["commit"] = d.pop("commit_sha")
    d["metrics"] = json.loads(d["metrics"] or "{}")
    d["result"] = Result.from_dict(json.loads(d["result"])) if d["result"] else None
    return Variant(**d)
