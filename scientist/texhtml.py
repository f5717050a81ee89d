"""The report's LaTeX, in the subset `scientist.grounding` allows, as HTML.

The HTML report (`report.html`, for a reader without TeX) shows the same sections as the
PDF: the model's or the templated text is LaTeX, and this renders it: text formatting,
citations as numbered links to the bibliography, references to figures as their numbers,
itemize and enumerate, inline math with its symbols as Unicode, and every character
LaTeX-escaped by `scientist.latex.latex_escape` back to itself. Everything is HTML-escaped;
an unknown command is dropped (the checks never let one through).
"""

from __future__ import annotations

import html
import re
import unicodedata

from scientist.grounding import GREEK

_GREEK = {name: unicodedata.lookup(("GREEK CAPITAL LETTER " if name[0].isupper() else
                                    "GREEK SMALL LETTER ") + {"lambda": "LAMDA", "Lambda": "LAMDA"}
                                   .get(name, name.removeprefix("var")).upper())
          for name in GREEK}
_GREEK.update(varepsilon="ε", epsilon="ϵ", varphi="φ", phi="ϕ", vartheta="ϑ")
SYMBOLS = {**_GREEK, "pm": "±", "mp": "∓", "times": "×", "cdot": "·", "div": "÷", "approx": "≈",
           "sim": "∼", "simeq": "≃", "equiv": "≡", "propto": "∝", "leq": "≤", "le": "≤", "geq": "≥",
           "ge": "≥", "neq": "≠", "ne": "≠", "ll": "≪", "gg": "≫", "infty": "∞", "sum": "∑",
           "prod": "∏", "int": "∫", "rightarrow": "→", "to": "→", "leftarrow": "←", "mapsto": "↦",
           "Rightarrow": "⇒", "Leftarrow": "⇐", "leftrightarrow": "↔", "Leftrightarrow": "⇔",
           "uparrow": "↑", "downarrow": "↓", "in": "∈", "notin": "∉", "subset": "⊂", "subseteq": "⊆",
           "cup": "∪", "cap": "∩", "forall": "∀", "exists": "∃", "partial": "∂", "nabla": "∇",
           "circ": "∘", "cdots": "⋯", "ldots": "…", "dots": "…", "surd": "√", "neg": "¬", "wedge": "∧",
           "vee": "∨", "odot": "⊙", "otimes": "⊗", "oplus": "⊕", "ell": "ℓ", "emptyset": "∅",
           "quad": "\u2003", "qquad": "\u2003\u2003", "log": "log", "exp": "exp", "ln": "ln",
           "min": "min", "max": "max", "arg": "arg", "textendash": "–", "textemdash": "—",
           "textbackslash": "\\", "textasciicircum": "^", "textasciitilde": "~", "textless": "<",
           "textgreater": ">", "textbar": "|", "guillemotleft": "«", "guillemotright": "»",
           "textbullet": "•", "S": "§", "P": "¶", "copyright": "©", "pounds": "£", "ss": "ß",
           "ae": "æ", "AE": "Æ", "o": "ø", "O": "Ø", "oe": "œ", "OE": "Œ", "aa": "å", "AA": "Å",
           "l": "ł", "L": "Ł", "i": "ı"}
ESCAPED = {"%": "%", "_": "_", "&": "&", "#": "#", "$": "$", "{": "{", "}": "}", ",": "\u2009",
           ";": "\u2005", "!": "", " ": " ", "-": ""}
ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", '"': "\u0308", "=": "\u0304",
           ".": "\u0307", "c": "\u0327", "v": "\u030c", "r": "\u030a", "u": "\u0306", "H": "\u030b",
           "k": "\u0328"}
WRAP = {"emph": "em", "textit": "em", "mathit": "em", "textbf": "strong", "mathbf": "strong",
        "texttt": "code", "textsuperscript": "sup", "textsubscript": "sub", "paragraph": "strong"}
PLAIN = {"textsc", "textrm", "textsf", "mathrm", "ensuremath", "hat", "bar", "tilde", "overline"}


class _Parser:
    def __init__(self, text: str, cites: dict[str, int], refs: dict[str, str]):
        self.s, self.i = text, 0
        self.cites, self.refs = cites, refs

    def run(self) -> str:
        out = self.until(None, math=False)
        paras = [p.strip() for p in re.split(r"\n\s*\n", out) if p.strip()]
        return "".join(p if p.startswith(("<ul>", "<ol>")) else f"<p>{p}</p>" for p in paras)

    def group(self, math: bool) -> str:
        """A `{...}` argument (or a single character) at the cursor."""
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1
        if self.s.startswith("[", self.i):  # an optional argument: skipped
            end = self.s.find("]", self.i)
            self.i = end + 1 if end >= 0 else len(self.s)
        if self.i < len(self.s) and self.s[self.i] == "{":
            self.i += 1
            return self.until("}", math)
        if self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            return html.escape(c)
        return ""

    def raw_group(self) -> str:
        m = re.compile(r"\s*(?:\[[^\]]*\])?\s*\{([^{}]*)\}").match(self.s, self.i)
        if not m:
            return ""
        self.i = m.end()
        return m[1]

    def until(self, stop: str | None, math: bool) -> str:
        out: list[str] = []
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if stop is not None and c == stop:
                self.i += 1
                break
            if c == "\\":
                out.append(self.command(math))
                continue
            self.i += 1
            if c == "{":
                out.append(self.until("}", math))
            elif c == "$":
                if math:
                    break
                out.append('<span class="math">' + self.until("$", True) + "</span>")
            elif math and c in "^_":
                tag = "sup" if c == "^" else "sub"
                out.append(f"<{tag}>{self.group(True)}</{tag}>")
            elif c == "~":
                out.append("\u00a0")
            elif not math and s.startswith("---", self.i - 1):
                out.append("—")
                self.i += 2
            elif not math and s.startswith("--", self.i - 1):
                out.append("–")
                self.i += 1
            elif not math and s.startswith("``", self.i - 1):
                out.append("“")
                self.i += 1
            elif not math and s.startswith("''", self.i - 1):
                out.append("”")
                self.i += 1
            else:
                out.append(html.escape(c))
        return "".join(out)

    def command(self, math: bool) -> str:
        m = re.compile(r"\\([A-Za-z]+|.?)").match(self.s, self.i)
        self.i = m.end()
        name = m[1]
        if len(name) == 1 and not name.isalpha() or name == "":
            if name in ACCENTS:
                return self.accent(name, math)
            return html.escape(ESCAPED.get(name, name))
        if name in ACCENTS and len(name) == 1:
            return self.accent(name, math)
        if name in WRAP:
            tag = WRAP[name]
            return f"<{tag}>{self.group(math)}</{tag}>"
        if name in PLAIN:
            return self.group(math)
        if name in ("cite", "citep", "citet"):
            keys = [k.strip() for k in self.raw_group().split(",")]
            links = ", ".join(f'<a href="#ref-{html.escape(k)}">{self.cites.get(k, "?")}</a>' for k in keys)
            return f"[{links}]"
        if name == "ref":
            label = self.raw_group()
            anchor = html.escape(label.replace(":", "-"))
            return f'<a href="#{anchor}">{html.escape(self.refs.get(label, "?"))}</a>'
        if name == "sqrt":
            return "√(" + self.group(math) + ")"
        if name == "begin":
            env = self.raw_group()
            return {"itemize": "\n\n<ul>", "enumerate": "\n\n<ol>"}.get(env, "")
        if name == "end":
            env = self.raw_group()
            return {"itemize": "</ul>\n\n", "enumerate": "</ol>\n\n"}.get(env, "")
        if name == "item":
            return "<li>"
        if name in SYMBOLS:
            return html.escape(SYMBOLS[name])
        return ""

    def accent(self, mark: str, math: bool) -> str:
        base = html.unescape(self.group(math))
        return html.escape(unicodedata.normalize("NFC", base[:1] + ACCENTS[mark] + base[1:]))


def to_html(tex: str, cites: dict[str, int] | None = None, refs: dict[str, str] | None = None,
            paragraphs: bool = True) -> str:
    """`tex` (the allowed subset) as HTML; `cites` numbers the bibliography keys, `refs` maps
    labels to what a reference prints (a figure's number)."""
    p = _Parser(str(tex), cites or {}, refs or {})
    if paragraphs:
        return p.run()
    return p.until(None, math=False).strip()
