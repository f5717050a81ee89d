"""The approval queue on disk: how `scientist run --approve web` and `scientist serve` talk.

The run is the only writer of its archive, so the web app never writes it. Instead, each
proposal that waits for a human is a file in the run folder, and each decision another:

    approvals/v0005.request.json    written by the run: the proposal, its diff, a digest
    approvals/v0005.decision.json   written by the web app: approve or reject, a reason

A request is written whole (a temporary file renamed into place). A decision is created
exclusively (a temporary file hard-linked to its name), so two people deciding at once
cannot both win: the second is told the proposal was already decided. A decision names the
digest of the request it answers; the run takes only a decision whose digest matches the
proposal it is asking about, so a decision made for an earlier proposal of the same
iteration (a run stopped and resumed, its proposal made again differently) is never
applied to another one. A decision made while the run was stopped is taken when the
resumed run makes the same proposal again (an LLM's reply comes from the run's cache).

The run then records the decision in its archive (a rejection with its reason, as at the
terminal) and removes both files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scientist.errors import ScientistError
from scientist.gate import APPROVE, REJECT, Decision
from scientist.redaction import redact
from scientist.variant import Proposal

FOLDER = "approvals"
POLL_SECONDS = 0.5  # how often a waiting proposal looks for its decision
MAX_REASON = 2000
_NAME = re.compile(r"^v(\d{4,})\.(request|decision)\.json$")


class AlreadyDecided(ScientistError):
    """A decision for this proposal exists (someone else was quicker)."""


class NoSuchRequest(ScientistError):
    """No proposal with this id waits for a decision (decided, or the run moved on)."""


@dataclass(frozen=True)
class Request:
    variant_id: int
    label: str
    parent: str
    hypothesis: str
    rationale: str
    prediction: str
    predicted: float | None
    diff: str
    digest: str
    asked_at: float

    @property
    def name(self) -> str:
        return f"v{self.variant_id:04d}"


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER


def digest_of(variant_id: int, proposal: Proposal, diff: str) -> str:
    h = hashlib.sha256()
    for part in (str(variant_id), proposal.hypothesis, proposal.rationale, proposal.prediction,
                 diff):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _path(run_dir: Path, variant_id: int, kind: str) -> Path:
    return folder(run_dir) / f"v{variant_id:04d}.{kind}.json"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def post(run_dir: Path, variant_id: int, proposal: Proposal, diff: str, label: str,
         parent: str) -> Request:
    """The run: ask for a decision on `proposal` (texts redacted). A decision left for a
    different proposal of the same id is removed; one for this very proposal stays."""
    d = digest_of(variant_id, proposal, diff)
    old = _read(_path(run_dir, variant_id, "decision"))
    if old is not None and old.get("digest") != d:
        _path(run_dir, variant_id, "decision").unlink(missing_ok=True)
    req = Request(variant_id, redact(label), parent, redact(proposal.hypothesis),
                  redact(proposal.rationale), redact(proposal.prediction), proposal.predicted,
                  redact(diff), d, time.time())
    _write_atomic(_path(run_dir, variant_id, "request"), req.__dict__)
    return req


def clear(run_dir: Path) -> None:
    """The run, as it starts: requests of an earlier process are stale (made again, and
    asked again, when their proposals are); decisions stay until a request answers them."""
    for p in folder(run_dir).glob("v*.request.json"):
        p.unlink(missing_ok=True)


def requests(run_dir: Path) -> list[Request]:
    """The proposals waiting for a decision, oldest first (the web app)."""
    out = []
    for p in sorted(folder(run_dir).glob("v*.request.json")):
        data = _read(p)
        if data is None or _NAME.match(p.name) is None:
            continue
        try:
            req = Request(**{k: data[k] for k in Request.__dataclass_fields__})
        except (KeyError, TypeError):
            continue
        if not decided(run_dir, req):
            out.append(req)
    return sorted(out, key=lambda r: r.variant_id)


def request(run_dir: Path, variant_id: int) -> Request | None:
    return next((r for r in requests(run_dir) if r.variant_id == variant_id), None)


def decided(run_dir: Path, req: Request) -> bool:
    data = _read(_path(run_dir, req.variant_id, "decision"))
    return data is not None and data.get("digest") == req.digest


def decide(run_dir: Path, variant_id: int, digest: str, action: str, reason: str = "",
           by: str = "") -> None:
    """The web app: record a decision for the waiting proposal `variant_id` whose request
    has `digest`. Raises NoSuchRequest, AlreadyDecided, or ScientistError on bad input."""
    if action not in (APPROVE, REJECT):
        raise ScientistError(f"a decision is 'approve' or 'reject', not {action!r}")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise ScientistError(f"the reason is longer than {MAX_REASON} characters")
    req = _read(_path(run_dir, variant_id, "request"))
    if req is None or req.get("digest") != digest:
        raise NoSuchRequest(f"v{variant_id:04d} is not waiting for a decision "
                            "(decided already, or the run made a new proposal)")
    if action == REJECT and not reason:
        reason = "rejected without a reason"
    data = {"variant_id": variant_id, "digest": digest, "action": action, "reason": reason,
            "by": by, "at": time.time()}
    final = _path(run_dir, variant_id, "decision")
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        try:
            os.link(tmp, final)  # exclusive: fails if a decision is there
        except FileExistsError:
            old = _read(final)
            if old is not None and old.get("digest") == digest:
                raise AlreadyDecided(f"v{variant_id:04d} was already decided "
                                     f"({old.get('action')})") from None
            os.replace(tmp, final)  # a stale decision for an earlier proposal: replaced
            return
    finally:
        Path(tmp).unlink(missing_ok=True)


def take(run_dir: Path, req: Request) -> Decision | None:
    """The run: the decision on `req`, if one was made (both files are then removed)."""
    data = _read(_path(run_dir, req.variant_id, "decision"))
    if data is None or data.get("digest") != req.digest:
        return None
    action = data.get("action")
    if action not in (APPROVE, REJECT):
        return None
    reason = str(data.get("reason", ""))[:MAX_REASON]
    by = str(data.get("by", ""))[:100]
    _path(run_dir, req.variant_id, "request").unlink(missing_ok=True)
    _path(run_dir, req.variant_id, "decision").unlink(missing_ok=True)
    if action == REJECT:
        return Decision(REJECT, (reason or "rejected without a reason")
                        + (f" (on the web page, from {by})" if by else " (on the web page)"))
    return Decision(APPROVE, f"approved on the web page{f', from {by}' if by else ''}")


class WebGate:
    """`--approve web`: each proposal waits in the run folder's queue for a decision made on
    `scientist serve`'s page; many wait at once, each in a thread of its own, while approved
    variants run (`concurrent`: the scheduler does not ask them one at a time)."""

    interactive = True
    concurrent = True

    def __init__(self, run_dir: Path, poll: float = POLL_SECONDS):
        self.run_dir = Path(run_dir)
        self.poll = poll
        self.closed = threading.Event()
        clear(self.run_dir)

    def review(self, proposal: Proposal, diff: str, label: str, variant_id: int = 0,
               parent: str = "") -> Decision:
        req = post(self.run_dir, variant_id, proposal, diff, label, parent)
        while not self.closed.is_set():
            d = take(self.run_dir, req)
            if d is not None:
                return d
            self.closed.wait(self.poll)
        return Decision("quit", "the run stopped while the proposal waited")

    def close(self) -> None:
        self.closed.set()
