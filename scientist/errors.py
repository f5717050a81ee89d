"""Typed exceptions raised by scientist.

One small module so callers can catch exactly what they mean to handle. Messages of
`FormatError` and `EditError` are written for the model that will read them next.
A failed experiment is not an exception: it is recorded as a result.
"""

from __future__ import annotations

import threading


class ScientistError(Exception):
    """Base class of every error scientist raises on purpose."""


class FormatError(ScientistError):
    """A model reply is not well-formed SEARCH/REPLACE blocks (missing marker, no
    filename, truncated reply, no blocks at all). The message says what and where."""


class EditError(ScientistError):
    """Parsed edits cannot be applied: a SEARCH text matches nothing or more than once,
    a path is protected, unknown or outside the project, or a frozen region would change.
    The message names each failed block, the closest real lines, and the blocks that
    applied fine; no file has been written when this is raised."""


class SeedError(ScientistError):
    """A seed's `seed.toml` is missing or invalid; the message names the field."""


class BudgetExceeded(ScientistError):
    """A run has used up its allowed budget (tokens, money, time or evaluations)."""


class SandboxError(ScientistError):
    """The sandbox that runs a variant could not be set up or used (not the variant's
    own failure, which is a result)."""


class ProposalError(ScientistError):
    """The proposer could not produce a usable proposal (e.g. an LLM whose replies still
    did not parse or apply after the allowed corrections). Recorded as an invalid variant;
    the loop goes on."""


class Stop(Exception):
    """The loop stops early (user quit, budget reached, something broke); the archive is
    intact. `failed`: the run cannot go on (exit status 1). `drain`: let what started finish."""

    def __init__(self, message: str, failed: bool = False, drain: bool = True):
        super().__init__(message)
        self.failed, self.drain = failed, drain


INTERRUPTED = threading.Event()
"""Set by a Ctrl-C or SIGTERM during a run (`scientist.run`). The KeyboardInterrupt its
handler raises can be swallowed where Python cannot deliver it (raised inside an at-fork
callback while the main thread starts a subprocess, it is printed and dropped), so the
scheduler's loop also checks this and raises it again (`Scheduler.wait`)."""
