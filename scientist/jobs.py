"""Jobs: a run's seed-jobs, one row each in the archive (`jobs` table).

A seed-job trains and scores one variant on one training seed of one evaluation set:
a variant's own evaluation is one job per training seed (the baseline's, one per noise
seed); a confirmation's batch is one job per fresh seed for each side; the sealed test
likewise. The scheduler (`scientist.scheduler`) is the only writer:

    queued --submit--> running --result--> done

A job's result (a `SeedResult`) is stored the moment it arrives, so a Ctrl-C or `kill -9`
loses only the jobs then running; `resume` puts exactly those back in the queue and runs
them again (`runs` counts the submissions). A job lost by its executor (a Slurm node that
died) or whose sandbox failed is queued again too, up to the evaluator's `infra_retries`.
The timestamps say where a job's time went: queued, submitted, started on its machine,
ended there, archived here (`bench/slurm_overhead.py`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from scientist.variant import SeedResult

QUEUED, SUBMITTED, DONE = "queued", "running", "done"
JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, variant_id INTEGER NOT NULL, comparison_id INTEGER,
    seed INTEGER NOT NULL, eval_set TEXT NOT NULL DEFAULT 'fitness',
    status TEXT NOT NULL DEFAULT 'queued', runs INTEGER NOT NULL DEFAULT 0, result TEXT,
    executor TEXT NOT NULL DEFAULT '', external_id TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, submitted_at REAL,
    started_at REAL, ended_at REAL, archived_at REAL
);
"""
FIELDS = ("id", "variant_id", "comparison_id", "seed", "eval_set", "status", "runs", "result",
          "executor", "external_id", "host", "created_at", "submitted_at", "started_at",
          "ended_at", "archived_at")


@dataclass
class JobRecord:
    id: int
    variant_id: int
    comparison_id: int | None
    seed: int
    eval_set: str
    status: str
    runs: int
    result: SeedResult | None
    executor: str
    external_id: str  # the executor's id of its last run (a Slurm job id)
    host: str  # where it last ran
    created_at: float
    submitted_at: float | None
    started_at: float | None
    ended_at: float | None
    archived_at: float | None

    @property
    def prefix(self) -> str:
        """Folder prefix of its evaluation set: `seed-S`, `sealed-seed-S`."""
        return "" if self.eval_set == "fitness" else f"{self.eval_set}-"


def job(variant_id: int, seed: int, comparison_id: int | None = None,
        eval_set: str = "fitness") -> dict[str, Any]:
    """A job to insert (`Jobs.add`, `Archive.propose`)."""
    return dict(variant_id=variant_id, seed=seed, comparison_id=comparison_id, eval_set=eval_set)


class Jobs:
    """The `jobs` table of an archive (it shares the archive's connection and transactions)."""

    def __init__(self, db: sqlite3.Connection, tx: Callable):
        self.db, self._tx = db, tx

    def insert(self, db: sqlite3.Connection, jobs: Iterable[dict[str, Any]]) -> None:
        """Insert within a transaction the caller holds."""
        for j in jobs:
            db.execute("INSERT INTO jobs (variant_id, comparison_id, seed, eval_set, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (j["variant_id"], j.get("comparison_id"),
                                                  j["seed"], j.get("eval_set", "fitness"),
                                                  time.time()))

    def add(self, jobs: Iterable[dict[str, Any]]) -> None:
        with self._tx() as db:
            self.insert(db, jobs)

    def submitted(self, job_id: int, executor: str, external_id: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, runs = runs + 1, executor = ?, external_id = ?, "
                       "submitted_at = ?, started_at = NULL, ended_at = NULL WHERE id = ?",
                       (SUBMITTED, executor, external_id, time.time(), job_id))

    def started(self, job_id: int, external_id: str) -> None:
        """The executor's own id became known after submission (a Slurm job id)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET external_id = ? WHERE id = ?", (external_id, job_id))

    def done(self, job_id: int, result: SeedResult, started_at: float | None = None,
             ended_at: float | None = None, host: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, result = ?, started_at = ?, ended_at = ?, "
                       "host = ?, archived_at = ? WHERE id = ?",
                       (DONE, json.dumps(asdict(result)), started_at, ended_at, host, time.time(),
                        job_id))

    def queue_again(self, job_id: int) -> None:
        """Back in the queue: it was in flight when the run stopped, or it was lost."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ? WHERE id = ?", (QUEUED, job_id))

    def get(self, job_id: int) -> JobRecord:
        return self.where("id = ?", job_id)[0]

    def where(self, condition: str = "1", *args: Any) -> list[JobRecord]:
        rows = self.db.execute(f"SELECT {', '.join(FIELDS)} FROM jobs WHERE {condition} "
                               "ORDER BY id", args).fetchall()
        out = []
        for r in rows:
            d = dict(zip(FIELDS, r))
            d["result"] = SeedResult(**json.loads(d["result"])) if d["result"] else None
            out.append(JobRecord(**d))
        return out

    def unfinished(self) -> list[JobRecord]:
        return self.where("status != ?", DONE)

    def of_variant(self, variant_id: int) -> list[JobRecord]:
        """A variant's own evaluation (not its seeds in comparisons)."""
        return self.where("variant_id = ? AND comparison_id IS NULL", variant_id)

    def of_comparison(self, comparison_id: int) -> list[JobRecord]:
        return self.where("comparison_id = ?", comparison_id)
