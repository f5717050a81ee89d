"""The SEARCH/REPLACE block format: what a model writes, and what it is shown again.

`parse_edits` reads the blocks of a reply into `Edit`s; `render_edit` writes one back.
Text in, text out. A block names its file on the line before it::

    path/to/file.py
    <<<<<<< SEARCH
    exact existing lines
    =======
    replacement lines
    >>>>>>> REPLACE

An empty SEARCH section creates a new file. Applying blocks is `scientist.edits`.
Error messages are written for the model that reads them next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scientist.errors import FormatError

_HEAD = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_TAIL = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(?:```|~~~)(.*)$")
_PATHLIKE = re.compile(r"/|\.[A-Za-z]\w*$")
_MAX_GAP = 4  # blank or fence lines tolerated between the filename and <<<<<<< SEARCH

FORMAT_REMINDER = """\
Each edit must be one SEARCH/REPLACE block, with the file's path alone on the line above:

path/to/file.py
<<<<<<< SEARCH
exact existing lines
=======
replacement lines
>>>>>>> REPLACE
"""


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: replace the lines `search` in `path` by `replace`.

    An empty `search` creates a new file. Parsed edits use "\\n" line endings, and a
    non-empty section always ends with a newline.
    """

    path: str
    search: str
    replace: str



def parse_edits(text: str) -> list[Edit]:
    """Return the SEARCH/REPLACE blocks of a model reply, in order; prose is ignored.

    Raises FormatError, with a message for the model, when a block is malformed or
    truncated, has no filename, or the reply holds no block at all.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    edits: list[Edit] = []
    prev_end = -1  # index of the previous block's REPLACE line
    i = 0
    while i < len(lines):
        if _TAIL.match(lines[i]):
            raise FormatError(
                f"Reply line {i + 1}: `>>>>>>> REPLACE` without an opening `<<<<<<< SEARCH` "
                f"and `=======` above it.\n\n{FORMAT_REMINDER}"
            )
        if _HEAD.match(lines[i]):
            number = len(edits) + 1
            path = _find_filename(lines, i, prev_end, edits, number)
            search, replace, prev_end = _read_block(lines, i, f"Block {number} ({path})")
            edits.append(Edit(path, search, replace))
            i = prev_end
        i += 1
    if not edits:
        raise FormatError(
            "The reply contains no SEARCH/REPLACE blocks, so nothing can be changed.\n\n" + FORMAT_REMINDER
        )
    return edits


def _read_block(lines: list[str], head: int, where: str) -> tuple[str, str, int]:
    """Read the block whose SEARCH marker is at `head`: (search, replace, tail index)."""
    where = f"{where}, starting at reply line {head + 1}"
    search, i = _section(
        lines, head + 1, _DIVIDER, (_HEAD, _TAIL), where,
        "the `=======` line that ends the SEARCH section",
        "the SEARCH section has no `=======` line after it; the reply looks cut off.")
    replace, i = _section(
        lines, i + 1, _TAIL, (_HEAD, _DIVIDER), where,
        "the `>>>>>>> REPLACE` line that ends the block",
        "the block never reaches its `>>>>>>> REPLACE` line; the reply looks truncated.")
    return _join_lines(search), _join_lines(replace), i


def _section(lines: list[str], i: int, end: re.Pattern[str], stray: tuple[re.Pattern[str], ...],
             where: str, end_line: str, cut_off: str) -> tuple[list[str], int]:
    """The lines from `i` up to the `end` marker, and the marker's index."""
    out: list[str] = []
    while i < len(lines) and not end.match(lines[i]):
        if any(p.match(lines[i]) for p in stray):
            raise FormatError(
                f"{where}: found `{lines[i].strip()}` at reply line {i + 1} before "
                f"{end_line}.\n\n{FORMAT_REMINDER}"
            )
        out.append(lines[i])
        i += 1
    if i == len(lines):
        raise FormatError(f"{where}: {cut_off} Send the complete block again.")
    return out, i


def _find_filename(lines: list[str], head: int, prev_end: int, edits: list[Edit], number: int) -> str:
    """The path named just above the SEARCH marker at `head`, skipping blank and fence
    lines; a block that directly follows another block reuses that block's path."""
    j = head - 1
    while j > prev_end and head - j <= _MAX_GAP:
        fence = _FENCE.match(lines[j])
        if fence is None and lines[j].strip():
            break
        named = _fence_filename(fence.group(1)) if fence else None
        if named:
            return named
        j -= 1
    if j == prev_end and edits:
        return edits[-1].path
    name = _clean_filename(lines[j]) if j > prev_end else None
    if name is None:
        found = f" (found {lines[j].strip()!r} there)" if j > prev_end else ""
        raise FormatError(
            f"Block {number} (reply line {head + 1}) has no file path: put the path alone on "
            f"the line right before `<<<<<<< SEARCH`{found}.\n\n{FORMAT_REMINDER}"
        )
    return name


def _clean_filename(line: str) -> str | None:
    """`line` as a path with markdown decoration removed, or None if it is not one."""
    name, previous = line.strip().lstrip("#"), None
    while name != previous:
        previous = name
        name = name.strip().strip("*`'\"").rstrip(":")
    if not name or any(c.isspace() for c in name) or name[0] in "<=>":
        return None
    return name


def _fence_filename(info: str) -> str | None:
    """A path given as a fence's info string, as in ```python train.py."""
    words = info.split()
    if words and _PATHLIKE.search(words[-1]):
        return _clean_filename(words[-1])
    return None


def _join_lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _terminated(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def render_edit(edit: Edit) -> str:
    """The block text of `edit`, so that parse_edits(render_edit(e)) == [e] for parsed edits.

    Raises ValueError if the edit cannot survive the trip (a marker line in its text, or a
    path the parser would read differently).
    """
    for label, text in (("SEARCH", edit.search), ("REPLACE", edit.replace)):
        for line in text.splitlines():
            if _HEAD.match(line) or _DIVIDER.match(line) or _TAIL.match(line):
                raise ValueError(f"{label} text for {edit.path} contains marker line {line!r}")
    if _clean_filename(edit.path) != edit.path:
        raise ValueError(f"path {edit.path!r} cannot stand alone on a filename line")
    return (
        f"{edit.path}\n<<<<<<< SEARCH\n{_terminated(edit.search)}"
        f"=======\n{_terminated(edit.replace)}>>>>>>> REPLACE\n"
    )
