"""Applying SEARCH/REPLACE edits in memory, showing them as a diff, writing them.

Everything here is text in, text out, except `write_files`, which writes contents that
`apply_edits` has already validated. The block format and its parser are
`scientist.editblocks`. SEARCH is matched as whole lines, exactly first, then with the
leading whitespace of every line shifted by the same amount; nothing fuzzier. Error
messages are written for the model that reads them next.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import posixpath
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from scientist.editblocks import Edit
from scientist.errors import EditError

FROZEN_BEGIN = "# scientist: frozen-begin"
FROZEN_END = "# scientist: frozen-end"
_MIN_SIMILARITY = 0.3  # below this, no lines are shown as "closest"
_CANDIDATES = 10  # windows per ranking whose exact similarity is computed


def _join_lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _terminated(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


# --- applying ------------------------------------------------------------------------


class _Reject(Exception):
    """One block cannot be applied; the message is the reason, for the model."""


def apply_edits(
    files: Mapping[str, str],
    edits: Sequence[Edit],
    *,
    editable: Collection[str],
    protected: Collection[str],
) -> dict[str, str]:
    """Apply `edits` in order to `files` (path -> content) and return the changed files.

    Nothing is returned unless every edit applies: otherwise EditError lists each failed
    block with its reason and the blocks that applied fine. `editable` and `protected`
    hold paths or glob patterns; protected wins. Result keys are normalised paths.
    """
    state: dict[str, str] = {}
    crlf: dict[str, bool] = {}
    for path, content in files.items():
        key = _canon(path)
        crlf[key] = "\r\n" in content and content.count("\r\n") == content.count("\n")
        state[key] = content.replace("\r\n", "\n") if crlf[key] else content
    original = dict(state)
    editable_set = {_canon(p) for p in editable}
    protected_set = {_canon(p) for p in protected}
    applied: list[tuple[int, str]] = []
    failed: list[tuple[int, str, str]] = []
    for number, edit in enumerate(edits, 1):
        try:
            path = _normalize_path(edit.path)
            _check_allowed(path, editable_set, protected_set)
            state[path] = _apply_one(state, path, edit)
            applied.append((number, path))
        except _Reject as reject:
            failed.append((number, edit.path, str(reject)))
    if failed:
        raise EditError(_failure_report(failed, applied, len(edits)))
    return {
        path: text.replace("\n", "\r\n") if crlf.get(path) else text
        for path, text in state.items()
        if text != original.get(path)
    }


def _canon(path: str) -> str:
    return posixpath.normpath(path.strip().replace("\\", "/"))


def _normalize_path(path: str) -> str:
    """`path` as a clean relative posix path; absolute or escaping paths are rejected."""
    raw = path.strip().replace("\\", "/")
    if raw.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", raw):
        raise _Reject(f"{path!r} is an absolute path; use a path relative to the project root.")
    parts: list[str] = []
    for part in raw.split("/"):
        if part == "..":
            if not parts:
                raise _Reject(f"{path!r} points outside the project; use a path inside it.")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if not parts:
        raise _Reject(f"{path!r} is not a file path.")
    return "/".join(parts)


def _check_allowed(path: str, editable: set[str], protected: set[str]) -> None:
    def matches(patterns: set[str]) -> bool:
        return path in patterns or any(fnmatch.fnmatchcase(path, p) for p in patterns)

    if matches(protected):
        raise _Reject(f"{path} is protected and must not be changed; leave it as it is.")
    if not matches(editable):
        listed = ", ".join(sorted(editable)) or "(none)"
        raise _Reject(f"{path} is not an editable file. The editable files are: {listed}.")


def _apply_one(state: Mapping[str, str], path: str, edit: Edit) -> str:
    """The new text of `path` after `edit`, given the current texts in `state`."""
    search = edit.search.replace("\r\n", "\n")
    replace = edit.replace.replace("\r\n", "\n")
    if path not in state:
        if search.strip():
            raise _Reject(
                f"{path} does not exist. To create it, leave the SEARCH section empty; "
                "to change an existing file, check its path."
            )
        return replace
    text = state[path]
    if not search.strip():
        if text.strip():
            raise _Reject(
                f"the SEARCH section is empty but {path} already exists. An empty SEARCH only "
                "creates new files: copy the exact lines you want to change into SEARCH."
            )
        new = replace  # an existing but empty file can only be filled this way
    else:
        new = _replace_in(text, _terminated(search), _terminated(replace), path, state)
    _check_frozen(text, new)
    return new


def _replace_in(text: str, search: str, replace: str, path: str, state: Mapping[str, str]) -> str:
    """Replace the one place `search` matches in `text` (whole lines)."""
    missing_newline = not text.endswith("\n")
    padded = text + "\n" if missing_newline else text
    new = _exact_replace(padded, search, replace, path)
    if new is None:
        new = _shifted_replace(padded, search, replace, path)
    if new is None:
        raise _Reject(_no_match_message(text, search, replace, path, state))
    return new[:-1] if missing_newline and new.endswith("\n") else new


def _too_many(count: int, path: str, how: str) -> _Reject:
    return _Reject(
        f"SEARCH matches {count} times in {path}{how}; include more surrounding lines to make it unique."
    )


def _exact_hits(text: str, search: str) -> list[int]:
    """Offsets where `search` occurs in `text` starting at a line start (overlaps count)."""
    hits, at = [], text.find(search)
    while at != -1:
        if at == 0 or text[at - 1] == "\n":
            hits.append(at)
        at = text.find(search, at + 1)
    return hits


def _exact_replace(text: str, search: str, replace: str, path: str) -> str | None:
    hits = _exact_hits(text, search)
    if len(hits) > 1:
        raise _too_many(len(hits), path, "")
    if not hits:
        return None
    return text[: hits[0]] + replace + text[hits[0] + len(search) :]


def _shifted_replace(text: str, search: str, replace: str, path: str) -> str | None:
    """Match with every SEARCH line's indentation shifted alike; shift REPLACE the same."""
    body = text.split("\n")[:-1]
    wanted = search.split("\n")[:-1]
    k = len(wanted)
    hits = []
    for j in range(len(body) - k + 1):
        shift = _window_shift(body[j : j + k], wanted)
        if shift is not None:
            hits.append((j, shift))
    if len(hits) > 1:
        raise _too_many(len(hits), path, " (ignoring a shift of indentation)")
    if not hits:
        return None
    j, shift = hits[0]
    new = [_reindent(line, shift) for line in replace.split("\n")[:-1]]
    return _join_lines(body[:j] + new + body[j + k :])


def _window_shift(window: list[str], wanted: list[str]) -> tuple[str, str] | None:
    """The shift ("+" or "-", whitespace prefix) that turns `wanted` into `window`.

    Blank lines match blank lines whatever their whitespace; None if no single shift fits.
    """
    shift = None
    for have, want in zip(window, wanted):
        if not want.strip():
            if have.strip():
                return None
            continue
        this = _line_shift(have, want)
        if this is None or (shift is not None and this != shift):
            return None
        shift = this
    return shift


def _line_shift(have: str, want: str) -> tuple[str, str] | None:
    if have.endswith(want) and not have[: len(have) - len(want)].strip():
        return ("+", have[: len(have) - len(want)])
    if want.endswith(have) and not want[: len(want) - len(have)].strip():
        return ("-", want[: len(want) - len(have)])
    return None


def _reindent(line: str, shift: tuple[str, str]) -> str:
    sign, prefix = shift
    if not line.strip():
        return line
    if sign == "+":
        return prefix + line
    return line[len(prefix) :] if line.startswith(prefix) else line.lstrip()


# --- messages for the model ----------------------------------------------------------


def _no_match_message(text: str, search: str, replace: str, path: str, state: Mapping[str, str]) -> str:
    parts = [f"SEARCH does not match any lines in {path}."]
    if replace.strip() and _exact_hits(_terminated(text), replace):
        parts.append("Its REPLACE lines are already in the file: drop this block if it was applied.")
    closest = _closest_lines(text, search)
    if closest is None:
        parts.append(f"Nothing in {path} resembles the SEARCH text.")
    else:
        first, window = closest
        last = first + window.count("\n") - 1
        parts.append(f"The closest lines in {path} (lines {first}-{last}) are:\n```\n{window}```")
    elsewhere = [p for p, t in sorted(state.items()) if p != path and _exact_hits(t, search)]
    if elsewhere:
        parts.append(f"The SEARCH lines do appear in {', '.join(elsewhere)}; is that the file?")
    parts.append(
        "SEARCH must repeat existing lines exactly, with their comments and blank lines; "
        "only a uniform change of indentation is tolerated."
    )
    return "\n".join(parts)


def _closest_lines(text: str, search: str) -> tuple[int, str] | None:
    """(1-based first line, text) of the window of `text` most similar to `search`.

    Exact difflib ratios are costly, so they are computed only for the windows that rank
    best by difflib's cheap upper bound (quick_ratio) or share the most unchanged lines.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    k = min(search.count("\n"), len(lines))
    if k == 0:
        return None
    windows = [_join_lines(lines[j : j + k]) for j in range(len(lines) - k + 1)]
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(search)

    def similarity(j: int, exact: bool) -> float:
        matcher.set_seq1(windows[j])
        return matcher.ratio() if exact else matcher.quick_ratio()

    by_bound = sorted(range(len(windows)), key=lambda j: -similarity(j, False))
    candidates = set(by_bound[:_CANDIDATES]) | _anchored_windows(lines, search, len(windows))
    best = max(sorted(candidates), key=lambda j: similarity(j, True))
    if similarity(best, True) < _MIN_SIMILARITY:
        return None
    return best + 1, windows[best]


def _anchored_windows(lines: list[str], search: str, count: int) -> set[int]:
    """Starts of the windows that keep the most SEARCH lines (stripped) in place."""
    where: dict[str, list[int]] = {}
    for n, line in enumerate(lines):
        if line.strip():
            where.setdefault(line.strip(), []).append(n)
    votes: Counter[int] = Counter()
    for i, line in enumerate(search.split("\n")):
        for n in where.get(line.strip(), ()):
            if 0 <= n - i < count:
                votes[n - i] += 1
    return {j for j, _ in votes.most_common(_CANDIDATES)}


def _failure_report(failed: list[tuple[int, str, str]], applied: list[tuple[int, str]], total: int) -> str:
    parts = [f"{len(failed)} of {total} SEARCH/REPLACE blocks failed, so no file was changed."]
    parts += [f"Block {number} ({path}) failed: {reason}" for number, path, reason in failed]
    if applied:
        parts.append(
            "\n".join(f"Block {number} ({path}) applied fine." for number, path in applied)
            + "\nThose were not written either, because a proposal applies as a whole: send "
            "them again unchanged together with the fixed blocks."
        )
    else:
        parts.append("Fix the failed blocks and send them again.")
    return "\n\n".join(parts)


def _check_frozen(before: str, after: str) -> None:
    """Every frozen region of `before` must still be in `after`, byte for byte."""
    kept = Counter(region for _, region in _frozen_regions(after))
    for line_no, region in _frozen_regions(before):
        if kept[region]:
            kept[region] -= 1
            continue
        first = region.split("\n", 1)[0].strip()
        raise _Reject(
            f"it changes or removes the frozen region that starts at line {line_no} "
            f"(`{first}`). Lines from `{FROZEN_BEGIN}` to `{FROZEN_END}` must stay exactly "
            "as they are; edit only outside them."
        )


def _frozen_regions(text: str) -> list[tuple[int, str]]:
    """(1-based first line, text) of each frozen region; an unclosed one runs to the end."""
    lines = text.split("\n")
    regions: list[tuple[int, str]] = []
    start = None
    for n, line in enumerate(lines):
        if start is None and FROZEN_BEGIN in line:
            start = n
        elif start is not None and FROZEN_END in line:
            regions.append((start + 1, "\n".join(lines[start : n + 1])))
            start = None
    if start is not None:
        regions.append((start + 1, "\n".join(lines[start:])))
    return regions


# --- display and writing -------------------------------------------------------------


def unified_diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A git-style unified diff from `old` to `new` (path -> content).

    Paths missing from `new` are unchanged (as in apply_edits' result); paths missing
    from `old` are new files.
    """
    chunks = []
    for path in sorted(new):
        before, after = old.get(path), new[path]
        if before == after:
            continue
        header = f"diff --git a/{path} b/{path}\n"
        if before is None:
            header += "new file mode 100644\n"
        lines = difflib.unified_diff(
            (before or "").splitlines(keepends=True),
            after.splitlines(keepends=True),
            "/dev/null" if before is None else f"a/{path}",
            f"b/{path}",
        )
        body = "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )
        chunks.append(header + body)
    return "".join(chunks)


def write_files(root: str | os.PathLike[str], contents: Mapping[str, str]) -> list[Path]:
    """Write `contents` (validated by apply_edits) under `root`; return the paths written.

    The only function in this module that touches the disk. Each file is written to a
    temporary sibling and renamed into place; paths that would land outside `root`
    (absolute, `..`, or through a symlink) raise EditError before anything is written.
    """
    base = Path(root).resolve()
    targets = []
    for rel, text in contents.items():
        try:
            target = (base / _normalize_path(rel)).resolve()
        except _Reject as reject:
            raise EditError(str(reject)) from None
        if not target.is_relative_to(base):
            raise EditError(f"{rel!r} resolves outside {base}; refusing to write it.")
        targets.append((target, text))
    for target, text in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, target)
    return [target for target, _ in targets]
