"""Proposers turn a parent variant (and what the run has learned so far) into a Proposal.

Backends are chosen by short name from `PROPOSERS` and imported only when used. The
offline proposer is the default when no LLM is configured.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field
from typing import Protocol

from scientist.seed import Seed
from scientist.variant import Proposal, Variant


@dataclass(frozen=True)
class Context:
    """Everything a proposer may look at for one proposal."""

    seed: Seed
    parent: Variant
    files: dict[str, str]  # the parent's editable files: path -> content
    history: list[Variant]  # every variant of the run so far, oldest first
    rng: random.Random
    iteration: int = 0
    total: int = 0  # iterations planned (0: unknown)
    notebook: str = ""  # the lab notebook, rendered within its token budget
    lineage: tuple[Variant, ...] = ()  # baseline ... parent
    protected_files: dict[str, str] = field(default_factory=dict)  # read-only context


class Proposer(Protocol):
    name: str
    uses_llm: bool

    def describe(self) -> str:
        """One line for the run banner: what proposes the edits."""
        ...

    def propose(self, ctx: Context) -> Proposal: ...


class Repairer(Proposer, Protocol):
    """A proposer that can also fix a variant that crashed or timed out."""

    def repair(self, ctx: Context, failed: Variant, attempt: int, max_attempts: int) -> Proposal: ...


PROPOSERS = {
    "offline": "scientist.offline:OfflineProposer",
    "llm": "scientist.llm_proposer:LLMProposer",
}


def make_proposer(name: str, **kwargs: object) -> Proposer:
    if name not in PROPOSERS:
        raise ValueError(f"unknown proposer {name!r}; available: {', '.join(PROPOSERS)}")
    module, cls = PROPOSERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
