"""LaTeX: text escaped for it, and a .tex file compiled to PDF (latexmk or pdflatex).

The .tex file is pure ASCII: `latex_escape` writes accents, Greek letters, arrows and
math symbols from hypotheses as TeX commands, and anything it does not know as `?`, so
pdflatex with T1 fonts never meets a character it cannot set; `verbatim_safe` does the
same for the body of a listing. A TeX failure is a message in the `Report`, not an error.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

MAX_DIFF_LINES = 400  # longer diffs are cut, with a note saying how to see all of it
MAX_LINE_CHARS = 400  # a diff line longer than this (minified data, ...) is cut
WRAP = 116  # columns of a listing line (\scriptsize\ttfamily on A4 with 2.2 cm margins)
TEX_TIMEOUT = 180.0  # seconds for one TeX engine invocation
# Debian packages with everything the template uses (the figures are matplotlib PDFs, so no
# pgfplots; bibtex comes with texlive-latex-base; lmodern gives scalable T1 fonts; latexmk is
# optional: pdflatex alone works). Measured in a Debian 12 minbase container: 59 packages,
# 86 MB to download, about 150 MB on disk, 153 s to install on 2 busy cores.
TEX_PACKAGES = ("texlive-latex-base", "texlive-latex-recommended", "lmodern")
# TeX may read only files of the report's folder (no absolute paths, no `..`, no dot files)
# and write nothing outside it, and runs no shell commands, whatever the .tex says: the
# report's text is checked (scientist.grounding), this is the second wall.
SAFE_TEX_ENV = {"openin_any": "p", "openout_any": "p", "shell_escape": "f"}


class Tex(str):
    """A string that is LaTeX already: the template prints it without escaping."""


@dataclass(frozen=True)
class Report:
    """What writing a report produced: the .tex file, and the PDF or why there is none."""

    tex: Path
    pdf: Path | None
    message: str = ""
    """Why there is no PDF ('' when there is one): TeX missing or skipped, or its error."""
    log: Path | None = None
    """The TeX log of the last compilation, if one ran."""
    html: Path | None = None
    """The same report as one self-contained HTML page (no TeX needed)."""


# --- escaping ----------------------------------------------------------------------------

_ASCII = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
          "#": r"\#", "%": r"\%", "_": r"\_", "^": r"\textasciicircum{}",
          "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "|": r"\textbar{}"}
_GREEK = dict(zip("αβγδεϵζηθϑικλμνξπϖρϱσςτυφϕχψω", (
    r"\alpha \beta \gamma \delta \varepsilon \epsilon \zeta \eta \theta \vartheta \iota "
    r"\kappa \lambda \mu \nu \xi \pi \varpi \rho \varrho \sigma \varsigma \tau \upsilon "
    r"\varphi \phi \chi \psi \omega").split()))
_GREEK.update(zip("ΓΔΘΛΞΠΣΥΦΨΩ", (
    r"\Gamma \Delta \Theta \Lambda \Xi \Pi \Sigma \Upsilon \Phi \Psi \Omega").split()))
_GREEK_AS_LATIN = dict(zip("οΑΒΕΖΗΙΚΜΝΟΡΤΧ", "oABEZHIKMNOPTX"))  # same glyph as a Latin letter
_MATH = {"→": r"\rightarrow", "←": r"\leftarrow", "↔": r"\leftrightarrow", "⇒": r"\Rightarrow",
         "⇐": r"\Leftarrow", "⇔": r"\Leftrightarrow", "↑": r"\uparrow", "↓": r"\downarrow",
         "↦": r"\mapsto", "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "≈": r"\approx",
         "≃": r"\simeq", "≡": r"\equiv", "∼": r"\sim", "∝": r"\propto", "≪": r"\ll", "≫": r"\gg",
         "×": r"\times", "÷": r"\div", "±": r"\pm", "∓": r"\mp", "·": r"\cdot", "∘": r"\circ",
         "−": "-", "∞": r"\infty", "√": r"\surd", "∑": r"\sum", "∏": r"\prod", "∫": r"\int",
         "∂": r"\partial", "∇": r"\nabla", "∈": r"\in", "∉": r"\notin", "⊂": r"\subset",
         "⊆": r"\subseteq", "∪": r"\cup", "∩": r"\cap", "∀": r"\forall", "∃": r"\exists",
         "∅": r"\emptyset", "¬": r"\neg", "∧": r"\wedge", "∨": r"\vee", "⊙": r"\odot",
         "⊗": r"\otimes", "⊕": r"\oplus", "°": r"^\circ", "µ": r"\mu", "ℓ": r"\ell",
         "⋅": r"\cdot", "…": r"\ldots", "⋯": r"\cdots"}
_TEXT = {"–": "--", "—": "---", "‘": "`", "’": "'", "“": "``", "”": "''", "„": ",,",
         "«": r"\guillemotleft{}", "»": r"\guillemotright{}", "•": r"\textbullet{}",
         "§": r"\S{}", "¶": r"\P{}", "©": r"\copyright{}", "€": "EUR", "£": r"\pounds{}",
         "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "ø": r"\o{}", "Ø": r"\O{}", "œ": r"\oe{}",
         "Œ": r"\OE{}", "å": r"\aa{}", "Å": r"\AA{}", "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}",
         "¿": "?`", "¡": "!`", "′": "'", "″": "''", "∗": "*", "\u00a0": "~", "\u2009": r"\,",
         "\u200b": "", "\ufeff": ""}
_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"',
            "\u0304": "=", "\u0307": ".", "\u0327": "c", "\u030c": "v", "\u030a": "r",
            "\u0306": "u", "\u030b": "H", "\u0328": "k"}
_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿ", "0123456789+-n"))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋", "0123456789+-"))
_UNICODE = {**{c: rf"\ensuremath{{{m}}}" for c, m in {**_MATH, **_GREEK}.items()}, **_TEXT,
            **_GREEK_AS_LATIN,
            **{c: rf"\textsuperscript{{{d}}}" for c, d in _SUPER.items()},
            **{c: rf"\ensuremath{{_{{{d}}}}}" for c, d in _SUB.items()}}


def _char(c: str) -> str:
    """One character as pdflatex-safe ASCII LaTeX."""
    if c in _ASCII:
        return _ASCII[c]
    if " " <= c <= "~":
        return c
    if c in _UNICODE:
        return _UNICODE[c]
    decomposed = unicodedata.normalize("NFKD", c)
    if decomposed and all(" " <= d <= "~" for d in decomposed):  # ligatures, full-width
        return "".join(_ASCII.get(d, d) for d in decomposed)
    base, marks = decomposed[:1], decomposed[1:]
    if base and " " <= base <= "~" and all(m in _ACCENTS for m in marks):
        out = _ASCII.get(base, base)
        for m in marks:
            out = rf"\{_ACCENTS[m]}{{{out}}}"
        return out
    if unicodedata.category(c)[0] in "CZ":  # control, format, separator characters
        return " " if unicodedata.category(c) == "Zs" else ""
    return "?"


def latex_escape(text: object) -> Tex:
    """Any text (a hypothesis, an error message) as LaTeX that sets it literally.

    Whitespace, newlines included, becomes single spaces, so the result is safe in a
    table cell or a heading. Characters outside ASCII become TeX commands (accents,
    Greek letters, arrows, math symbols) or `?` when there is no sensible rendering.
    """
    s = re.sub(r"\s+", " ", str(text))
    # `{}` between ASCII hyphens keeps `--lr` from becoming an en dash (a T1 ligature)
    out = "".join(_char(c) + ("{}" if c + d == "--" else "") for c, d in zip(s, s[1:] + " "))
    return Tex(out.strip())


def verbatim_safe(text: str, max_lines: int = MAX_DIFF_LINES) -> tuple[str, int]:
    """The body of a `lstlisting` that shows `text`: ASCII only (other characters
    transliterated), tabs expanded, control characters dropped, at most `max_lines` lines,
    each cut at MAX_LINE_CHARS and wrapped at WRAP columns with a continuation mark (listings
    cannot break inside a word). The only TeX in it is written here, through the listing's
    escape `(*@ ... @*)`: the continuation mark, and the two character sequences that would
    otherwise end the listing (`\\end{lstlisting}`) or open an escape (`(*@`).
    Returns the body and the number of lines `text` had."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for line in lines[:max_lines]:
        line = "".join(c if " " <= c <= "~" else _ascii_fallback(c) for c in line.expandtabs(4))
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + f" [... {len(line) - MAX_LINE_CHARS} more characters]"
        chunks = [line[:WRAP]] + [line[i:i + WRAP - 2] for i in range(WRAP, len(line), WRAP - 2)]
        for k, chunk in enumerate(chunks):
            chunk = chunk.replace("(*@", r"(*@\reportopen@*)")
            chunk = chunk.replace(r"\end{lstlisting}", r"(*@\reportbs@*)end{lstlisting}")
            out.append((r"(*@\reportcont@*)" if k else "") + chunk)
    return "\n".join(out), len(lines)


_VERB = {"→": "->", "←": "<-", "↔": "<->", "⇒": "=>", "≤": "<=", "≥": ">=", "≠": "!=",
         "≈": "~=", "×": "x", "±": "+/-", "−": "-", "–": "-", "—": "--", "‘": "'", "’": "'",
         "“": '"', "”": '"', "…": "...", "·": "*", "∞": "inf", "\u00a0": " "}


def _ascii_fallback(c: str) -> str:
    """A non-ASCII character of a diff line as readable ASCII (`→` as `->`, `α` as `alpha`)."""
    if c in _VERB:
        return _VERB[c]
    if unicodedata.category(c)[0] == "C":
        return ""
    if c in _GREEK or c in _GREEK_AS_LATIN:
        return unicodedata.name(c).split()[-1].lower()
    ascii_ = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
    return ascii_ if ascii_.isprintable() and ascii_ else "?"


# --- compiling ---------------------------------------------------------------------------

def tex_engine() -> list[str] | None:
    """The command that compiles report.tex here: latexmk if present, else pdflatex."""
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    if shutil.which("pdflatex") is None:
        return None
    if shutil.which("latexmk"):
        return ["latexmk", "-pdf", "-norc", "-no-shell-escape", *flags, "report.tex"]
    return ["pdflatex", "-no-shell-escape", *flags, "report.tex"]


def compile_tex(tex: Path, command: list[str], timeout: float = TEX_TIMEOUT) -> Report:
    """Compile `tex` in its folder; a TeX failure is a message in the Report, not an error."""
    folder, pdf, log = tex.parent, tex.with_suffix(".pdf"), tex.with_suffix(".log")
    for suffix in (".pdf", ".aux", ".fls", ".fdb_latexmk", ".bbl", ".blg"):  # nothing stale survives
        tex.with_suffix(suffix).unlink(missing_ok=True)
    env = {**os.environ, "max_print_line": "1000", "error_line": "254", "half_error_line": "238",
           **SAFE_TEX_ENV}
    runs = 1 if command[0] == "latexmk" else 3
    for k in range(runs):
        if k == 1 and _wants_bibtex(tex) and shutil.which("bibtex"):  # pdflatex alone: bibtex between
            _run(["bibtex", tex.stem], folder, env, timeout)
        code, output = _run(command, folder, env, timeout)
        (folder / "compile.log").write_text(output)
        if code != 0:
            what = f"timed out after {timeout:.0f} s" if code is None else f"exit code {code}"
            return Report(tex, None, f"{command[0]} failed ({what}); see {log}:\n"
                                     f"{_tex_error(log, output)}", log if log.exists() else None)
        if (k > 0 or not _wants_bibtex(tex)) and "Rerun to get" not in _read(log) \
                and "Label(s) may have changed" not in _read(log):
            break
    if not pdf.is_file():
        return Report(tex, None, f"{command[0]} wrote no PDF; see {log}", log)
    return Report(tex, pdf, "", log)


def _wants_bibtex(tex: Path) -> bool:
    return "\\bibdata{" in _read(tex.with_suffix(".aux"))


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float
         ) -> tuple[int | None, str]:
    """Run `command` with no input; on timeout kill its whole process group (latexmk's
    children included). Returns the exit code (None on timeout) and the output."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, errors="replace")
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None, proc.communicate()[0]
    except BaseException:  # Ctrl-C: the new session does not get it, so end it here
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tex_error(log: Path, output: str, lines: int = 12) -> str:
    """The first TeX error in the log and the lines after it, or the tail of the output."""
    text = _read(log).splitlines() or output.splitlines()
    start = next((i for i, line in enumerate(text)
                  if line.startswith("!") or re.match(r"^\S+\.tex:\d+: ", line)), None)
    excerpt = text[-lines:] if start is None else text[start:start + lines]
    return "\n".join(line if len(line) <= 240 else line[:237] + "..." for line in excerpt)
