"""The seed's `references` as BibTeX entries with stable keys, for the report to cite.

A seed lists its references as one line each, "Authors Year, Title, Venue" (seed.toml).
Each becomes a `@misc` entry whose key is the first author's surname, the year and the
first word of the title (`kirsch2021meta`); a line that does not have that shape keeps its
whole text as the entry's note, under the key `ref1`, `ref2`, ... The fields are
LaTeX-escaped, so any text compiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scientist.latex import latex_escape

_SHAPE = re.compile(r"^(?P<authors>.+?)\s+(?P<year>(?:19|20)\d\d)[a-z]?\s*,\s*(?P<rest>.+)$")
_STOP = {"a", "an", "the", "on", "of", "and", "towards", "toward"}


@dataclass(frozen=True)
class Reference:
    key: str
    text: str  # the seed's line, as written
    authors: str = ""
    year: str = ""
    title: str = ""
    venue: str = ""

    def bibtex(self) -> str:
        if not self.title:
            return f"@misc{{{self.key},\n  note = {{{latex_escape(self.text)}}}\n}}\n"
        fields = [("author", self.authors), ("title", "{" + latex_escape(self.title) + "}"),
                  ("year", self.year), ("howpublished", self.venue)]
        body = ",\n".join(f"  {k} = {{{v if k == 'title' else latex_escape(v)}}}"
                          for k, v in fields if v)
        return f"@misc{{{self.key},\n{body}\n}}\n"

    def plain(self) -> str:
        """One line for the HTML report and the model: authors (year). Title. Venue."""
        if not self.title:
            return self.text
        return f"{self.authors} ({self.year}). {self.title}." + (f" {self.venue}." if self.venue else "")


def parse_references(lines: list[str] | tuple[str, ...]) -> list[Reference]:
    out: list[Reference] = []
    used: set[str] = set()
    for i, line in enumerate(lines, 1):
        text = " ".join(str(line).split())
        m = _SHAPE.match(text)
        if not m:
            out.append(Reference(_unique(f"ref{i}", used), text))
            continue
        parts = [p.strip() for p in m["rest"].split(", ")]
        title, venue = parts[0], ", ".join(parts[1:])
        names = [a.strip() for a in re.split(r"\s*(?:,|&|\band\b)\s*", m["authors"]) if a.strip()]
        etal = any(n.lower().startswith("et al") for n in names) or m["authors"].endswith("et al.")
        names = [re.sub(r"\s+et al\.?$", "", n) for n in names if not n.lower().startswith("et al")]
        authors = " and ".join(names + (["others"] if etal else []))
        surname = re.sub(r"[^a-z]", "", names[0].split()[-1].lower()) if names else "ref"
        word = next((re.sub(r"[^a-z]", "", w.lower()) for w in title.split()
                     if re.sub(r"[^a-z]", "", w.lower()) not in _STOP | {""}), "")
        key = _unique(f"{surname or 'ref'}{m['year']}{word}", used)
        out.append(Reference(key, text, authors, m["year"], title, venue))
    return out


def _unique(key: str, used: set[str]) -> str:
    k, n = key, 1
    while k in used:
        n += 1
        k = f"{key}{chr(ord('a') + n - 2)}"
    used.add(k)
    return k


def bibtex(refs: list[Reference]) -> str:
    return "".join(r.bibtex() + "\n" for r in refs)
