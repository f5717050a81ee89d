"""Gate: a human may approve, reject (with a reason) or stop before a variant runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from scientist.variant import Proposal

APPROVE, REJECT, QUIT = "approve", "reject", "quit"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str = ""


class Gate(Protocol):
    def review(self, proposal: Proposal, diff: str, label: str) -> Decision: ...


class AutoGate:
    """Autonomous mode (the default): everything is approved."""

    interactive = False

    def review(self, proposal: Proposal, diff: str, label: str) -> Decision:
        return Decision(APPROVE)


class TerminalGate:
    """Shows the hypothesis and a coloured diff, then asks: approve, reject or quit. The
    scheduler asks from a thread of its own, one proposal at a time, while evaluations go on."""

    interactive = True

    def __init__(self, console: Console):
        self.console = console

    def review(self, proposal: Proposal, diff: str, label: str) -> Decision:
        c = self.console
        body = (f"[bold]Hypothesis:[/] {proposal.hypothesis}\n[bold]Rationale:[/] "
                f"{proposal.rationale}\n[bold]Predicted:[/] {proposal.prediction}")
        c.print(Panel(body, title=f"proposal for {label}", title_align="left"), markup=True)
        c.print(Syntax(diff or "(empty diff)", "diff", theme="ansi_dark", word_wrap=True))
        while True:
            try:
                answer = c.input("[bold]\\[a]pprove, \\[r]eject, \\[q]uit?[/] ").strip().lower()
            except EOFError:
                return Decision(QUIT, "no answer (end of input)")
            if answer in ("a", "approve", "y", "yes"):
                return Decision(APPROVE)
            if answer in ("q", "quit"):
                return Decision(QUIT, "stopped by the user at the approval prompt")
            if answer in ("r", "reject", "n", "no"):
                try:
                    reason = c.input("Reason (recorded in the run's notebook): ").strip()
                except EOFError:
                    reason = ""
                return Decision(REJECT, reason or "rejected without a reason")
            c.print("Please answer a, r or q.")
