"""Redaction: secrets replaced by `[redacted]` in every text that leaves a step, and in
everything written about LLM calls.

What counts as a secret: the value of every environment variable whose name looks secret
(…KEY, …TOKEN, …SECRET, …PASSWORD, …CREDENTIAL), of at least 6 characters, plus values
the caller adds (the run's API key from `api_key_env`, its secret evaluation seed). Each is
matched as it is and in the forms serialisation gives it (JSON-escaped, with and without
ASCII escapes), so that a secret with quotes, backslashes, newlines or non-ASCII letters
is caught in a log the step wrote as JSON, too.

Where it runs: the evaluator passes every step's stdout and stderr files (in place, as
soon as the step ends), the tails it keeps, the reasons and error messages through
`Redactor` before a `SeedResult` leaves it; the LLM client redacts each request and reply
before it serialises them into the transcript and cache. Redaction runs on the text,
never on its escaped form: `json.dumps` comes after.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MIN_LENGTH = 6  # shorter values ("1", "true") would redact half of every log
MARK = "[redacted]"
CHUNK = 1 << 20

T = TypeVar("T")


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Values of environment variables whose names look secret, and `extra`, longest first."""
    vals = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_LENGTH}
    vals.update(v for v in extra if v and len(v) >= MIN_LENGTH)
    return sorted(vals, key=len, reverse=True)


def forms(value: str) -> set[str]:
    """The value and how serialisers write it: JSON with and without ASCII escapes, repr."""
    out = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
           repr(value)[1:-1]}
    return {f for f in out if len(f) >= MIN_LENGTH}


@dataclass(frozen=True)
class Redactor:
    """Replaces a fixed set of secrets (in all their forms) by [redacted]."""

    secrets: tuple[str, ...]

    @classmethod
    def from_environment(cls, extra: Iterable[str] = ()) -> Redactor:
        found = set()
        for v in secret_values(extra):
            found |= forms(v)
        return cls(tuple(sorted(found, key=len, reverse=True)))

    def text(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MARK)
        return text

    def bytes(self, data: bytes) -> bytes:
        for s in self.secrets:
            b = s.encode("utf-8", "surrogatepass")
            if b in data:
                data = data.replace(b, MARK.encode())
        return data

    def obj(self, value: T) -> T:
        """Every string inside dicts, lists and tuples redacted (keys too)."""
        if isinstance(value, str):
            return self.text(value)  # type: ignore[return-value]
        if isinstance(value, dict):
            return {self.obj(k): self.obj(v) for k, v in value.items()}  # type: ignore[return-value]
        if isinstance(value, (list, tuple)):
            return type(value)(self.obj(v) for v in value)  # type: ignore[return-value]
        return value

    def dataclass(self, value: T) -> T:
        """A copy of a dataclass with every string field (and strings in containers) redacted."""
        changes = {k: self.obj(v) for k, v in vars(value).items() if isinstance(v, (str, list, dict))}
        return replace(value, **changes)  # type: ignore[type-var]

    def file(self, path: Path) -> bool:
        """Redact a file in place (in chunks, so a large log does not fill memory);
        returns whether it held a secret. Untouched if it held none."""
        if not self.secrets:
            return False
        longest = max(len(s.encode()) for s in self.secrets)
        try:
            with open(path, "rb") as f:
                found, carry = False, b""
                while chunk := f.read(CHUNK):
                    window = carry + chunk
                    if self.bytes(window) != window:
                        found = True
                        break
                    carry = window[-longest:]
        except OSError:
            return False
        if found:
            tmp = path.with_name(f".{path.name}.redacting")
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                carry = b""
                while chunk := src.read(CHUNK):
                    window = self.bytes(carry + chunk)
                    # keep back what could be the start of a secret cut by the chunk's end
                    cut = max(0, len(window) - longest)
                    dst.write(window[:cut])
                    carry = window[cut:]
                dst.write(self.bytes(carry))
            os.replace(tmp, path)
        return found


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """`text` with every secret from the environment (and `extra`) replaced by [redacted]."""
    return Redactor.from_environment(extra).text(text)
