"""Checks on a section of the report written by a model: safe LaTeX, grounded numbers,
no unconfirmed claims, a bounded length. Pure functions: text in, problems out.

Each problem is a sentence written for the model that will rewrite the section (what is
wrong, where, what to do instead). The writer (`scientist.writer`) sends them back a
bounded number of times, then falls back to the templated section.

**LaTeX.** Model-written TeX is never trusted to be harmless: TeX can read and write files
(`\\input`, `\\openout`, `\\write18`) and redefine anything (`\\def`, `\\catcode`). So the
text may use only the commands in `ALLOWED` (formatting, citations, references, inline
math) and the environments itemize and enumerate; every other control sequence, `^^`
(TeX's character-code escape), unbalanced braces or `$`, and the characters that mean
something to TeX outside their place (`%` starts a comment, `&` and `#`, `_` and `^`
outside math) are problems. A whitelist, not a blacklist: there is no list of dangerous
commands to keep complete. (The compiler also runs with `openin_any=p`, `openout_any=p`
and no shell escape: `scientist.latex`.)

**Numbers.** Every number in the text must be one of the digest's values as written
(within rounding at the precision the text shows: 0.4855 or 0.486 or 0.49 for 0.485534),
or that value as a percentage, and not off by more than a tenth of it (so `0` is not
0.4 rounded). Signs are not compared: "fell by 0.02" reports -0.02. Numbers in citation
keys, labels, `\\texttt` identifiers and variant names (v0005) are not numbers.

**Claims.** A sentence that says something improved (improves, better, outperforms,
beats, higher, gain, ...) without a negation or a hedge (not, no, raw, could, predicted,
...) is a claim. It may name only variants whose improvement was confirmed (promoted on
fresh seeds, and not refuted by the sealed test); a claim that names no variant is
allowed only when the run confirmed an improvement, or when it compares with the
seed's reported baselines (online Adam, TD3, ...). This is a heuristic on words: it
catches the usual overclaim ("v0003 improves accuracy by 0.02"), not every paraphrase.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scientist.latex import _char

# --- LaTeX --------------------------------------------------------------------------------

TEXT_COMMANDS = {
    "emph", "textbf", "textit", "texttt", "textsc", "textrm", "textsf", "cite", "citep", "citet",
    "ref", "paragraph", "item", "begin", "end", "ldots", "dots", "textendash", "textemdash",
    "ensuremath", "textsuperscript", "textsubscript",
    # what latex_escape writes for special and non-ASCII characters
    "textbackslash", "textasciicircum", "textasciitilde", "textless", "textgreater", "textbar",
    "guillemotleft", "guillemotright", "textbullet", "S", "P", "copyright", "pounds", "ss", "ae",
    "AE", "o", "O", "oe", "OE", "aa", "AA", "l", "L", "i", "c", "v", "r", "u", "H", "k",
}
GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
         "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "pi", "varpi", "rho", "varrho",
         "sigma", "varsigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma",
         "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
MATH_COMMANDS = GREEK | {
    "pm", "mp", "times", "cdot", "div", "approx", "sim", "simeq", "equiv", "propto", "leq", "geq",
    "le", "ge", "neq", "ne", "ll", "gg", "infty", "sqrt", "mathrm", "mathbf", "mathit", "sum",
    "prod", "log", "exp", "ln", "min", "max", "arg", "rightarrow", "leftarrow", "to", "mapsto",
    "Rightarrow", "leftrightarrow", "quad", "qquad", "hat", "bar", "tilde", "overline", "in",
    "notin", "subset", "subseteq", "cup", "cap", "forall", "exists", "partial", "nabla", "circ",
    "uparrow", "downarrow", "cdots", "ldots", "surd", "int", "neg", "wedge", "vee", "odot",
    "otimes", "oplus", "ell", "emptyset", "Leftarrow", "Leftrightarrow", "varepsilon", "epsilon",
}
ALLOWED = TEXT_COMMANDS | MATH_COMMANDS
SYMBOLS = set("%_&#${} ,;!'`^~\"=.-")  # \% \_ ... \, \; \! \  and the accents \' \` \^ ...
ENVIRONMENTS = {"itemize", "enumerate"}
CITES = {"cite", "citep", "citet"}

_COMMAND = re.compile(r"\\([A-Za-z]+|.?)", re.S)


@dataclass(frozen=True)
class Context:
    """What a section may refer to."""

    values: tuple[float, ...]  # the digest's numbers
    cite_keys: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()  # figures and tables: fig:fitness, ...
    claimable: frozenset[str] = frozenset()  # variants whose improvement was confirmed
    improvement_confirmed: bool = False
    reported: tuple[str, ...] = ()  # the seed's reported baselines (adam, sgd, td3, ...)
    baseline: str = "v0000"
    max_words: int = 400


def check(text: str, ctx: Context) -> list[str]:
    """Every problem of a model-written section (empty: it may go into the report)."""
    problems = check_tex(text, ctx.cite_keys, ctx.labels)
    if not text.strip():
        return ["The section is empty: write it."]
    words = len(plain(text).split())
    if words > ctx.max_words:
        problems.append(f"The section has {words} words; the limit is {ctx.max_words}. Shorten it.")
    problems += check_numbers(text, ctx.values)
    problems += check_claims(text, ctx)
    return problems


def check_tex(text: str, cite_keys: frozenset[str] | set[str] = frozenset(),
              labels: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Problems that would make the LaTeX unsafe or break the document."""
    problems: list[str] = []
    if "^^" in text:
        problems.append("`^^` is not allowed (TeX reads it as a character code).")
    stack: list[bool] = []  # open braces: True for the argument of \ensuremath (math)
    math_on, envs, ensure = False, [], False
    i, n = 0, len(text)
    line = 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            if math_on and i + 1 < n and text[i + 1] == "\n":
                problems.append(f"Line {line}: a `$` math formula runs into the next paragraph; close it.")
                math_on = False
        if c == "\\":
            m = _COMMAND.match(text, i)
            name = m[1]
            i = m.end()
            if len(name) <= 1:
                if name not in SYMBOLS:
                    problems.append(f"Line {line}: `\\{name}` is not allowed (line breaks and "
                                    "other control symbols are the template's business).")
                continue
            if name not in ALLOWED:
                problems.append(f"Line {line}: the command `\\{name}` is not allowed. Use only "
                                "\\emph, \\textbf, \\texttt, \\cite, \\ref, itemize/enumerate and "
                                "inline math ($...$ with \\pm, \\times, \\approx, \\leq, Greek letters).")
                continue
            if name == "ensuremath":
                ensure = True
                continue
            if name in MATH_COMMANDS - TEXT_COMMANDS and not (math_on or any(stack)):
                problems.append(f"Line {line}: `\\{name}` only works in math: write `$\\{name}$`.")
            arg = _argument(text, i)
            if name in ("begin", "end"):
                env = arg or ""
                if env not in ENVIRONMENTS:
                    problems.append(f"Line {line}: the environment `{env}` is not allowed "
                                    "(only itemize and enumerate).")
                elif name == "begin":
                    envs.append(env)
                elif not envs or envs.pop() != env:
                    problems.append(f"Line {line}: `\\end{{{env}}}` does not close the open environment.")
            elif name in CITES:
                for key in (k.strip() for k in (arg or "").split(",")):
                    if key not in cite_keys:
                        problems.append(f"Line {line}: `\\{name}{{{key}}}`: there is no reference "
                                        f"with that key; the keys are {sorted(cite_keys) or 'none'}.")
            elif name == "ref" and (arg or "") not in labels:
                problems.append(f"Line {line}: `\\ref{{{arg}}}`: there is no such label; the labels "
                                f"are {sorted(labels) or 'none'}.")
            continue
        if c == "{":
            stack.append(ensure)
        elif c == "}":
            if not stack:
                problems.append(f"Line {line}: a `}}` closes a brace that was never opened.")
            else:
                stack.pop()
        elif c == "$":
            if text.startswith("$$", i):
                problems.append(f"Line {line}: display math `$$` is not allowed; use inline `$...$`.")
                i += 2
                continue
            math_on = not math_on
        elif c == "%":
            problems.append(f"Line {line}: a bare `%` starts a TeX comment that swallows the rest "
                            "of the line; write `\\%` for a percent sign.")
        elif c in "&#":
            problems.append(f"Line {line}: a bare `{c}` is an error in LaTeX text; write `\\{c}`.")
        elif c in "_^" and not (math_on or any(stack)):
            problems.append(f"Line {line}: `{c}` outside math is an error in LaTeX; write `\\{c}` "
                            "in text (e.g. \\texttt{online\\_acc}) or put the formula in `$...$`.")
        if c != " ":
            ensure = False
        i += 1
    if stack:
        problems.append(f"The braces are unbalanced: {len(stack)} `{{` never closed.")
    if math_on:
        problems.append("A `$` math formula is never closed.")
    if envs:
        problems.append(f"The environment `{envs[-1]}` is never closed with `\\end{{{envs[-1]}}}`.")
    return problems


def _argument(text: str, i: int) -> str | None:
    """The `{...}` argument right after position i (optional `[..]` and spaces skipped)."""
    m = re.compile(r"\s*(?:\[[^\]]*\])?\s*\{([^{}]*)\}").match(text, i)
    return m[1] if m else None


def sanitize(text: str) -> str:
    """Model text as the report prints it: ASCII (other characters as TeX commands, from
    `scientist.latex`), no control characters, no code fence around it, paragraphs kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    fence = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", text, re.S)
    if fence:
        text = fence[1].strip()
    out = []
    for c in text:
        if c == "\n" or " " <= c <= "~":
            out.append(c)
        elif c == "\t":
            out.append(" ")
        else:
            out.append(_char(c))
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def unfence(text: str) -> str:
    text = text.strip()
    m = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", text, re.S)
    return m[1].strip() if m else text


# --- numbers ------------------------------------------------------------------------------

_SKIP = re.compile(r"\\(?:cite[pt]?|ref|label|texttt|begin|end)\s*(?:\[[^\]]*\])?\{[^{}]*\}")
_NUM = re.compile(
    r"(?<![\w.\\])(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s*(?:\\times|\\cdot|x|×)\s*10\s*\^\s*\{?\s*(?P<exp1>[-+−]?\d+)\s*\}?"
    r"|[eE](?P<exp2>[-+]?\d+)(?![\w])"
    r"|(?P<pow>\s*\^\s*\{?\s*[-+−]?\d+\s*\}?))?"
    r"(?P<pct>\s*\\?%)?")


@dataclass(frozen=True)
class Number:
    text: str
    value: float  # as written (magnitude)
    tolerance: float  # half a unit of the last digit shown
    percent: bool


def numbers_in(text: str, plain: bool = False) -> list[Number]:
    """The numbers a reader sees in `text` (LaTeX, or plain text with `plain`)."""
    if not plain:
        text = _SKIP.sub(" ", text)
    out = []
    for m in _NUM.finditer(text):
        if not (m["int"] or m["frac"]) or (m["frac"] and m["frac"] == "."):
            continue
        whole = (m["int"] or "0").replace(",", "")
        frac = m["frac"] or ""
        decimals = len(frac) - 1 if frac else 0
        mant = float(whole + frac)
        exp = m["exp1"] or m["exp2"]
        if m["pow"] and whole == "10" and not frac:  # 10^{-3}
            e = int(re.sub(r"[^\d+-]", "", m["pow"].replace("−", "-")))
            out.append(Number(m[0], 10.0 ** e, 0.5 * 10.0 ** e * 1e-6, bool(m["pct"])))
            continue
        if exp:
            e = int(exp.replace("−", "-"))
            out.append(Number(m[0], mant * 10.0 ** e, 0.5 * 10.0 ** (e - decimals), bool(m["pct"])))
        else:
            out.append(Number(m[0], mant, 0.5 * 10.0 ** -decimals, bool(m["pct"])))
    return out


def grounded(x: Number, values: tuple[float, ...] | list[float]) -> bool:
    """`x` is one of `values` as written (within rounding, and within a tenth of it), or
    that value as a percentage."""
    candidates = [(x.value, x.tolerance)]
    if x.percent:
        candidates.append((x.value / 100, x.tolerance / 100))
    for v in values:
        a = abs(v)
        for val, tol in candidates:
            err = abs(val - a)
            if err <= tol * (1 + 1e-9) + 1e-12 and (err <= 0.1 * a or err <= 1e-12):
                return True
    return False


def check_numbers(text: str, values: tuple[float, ...] | list[float]) -> list[str]:
    bad = [x.text.strip() for x in numbers_in(text) if not grounded(x, values)]
    if not bad:
        return []
    shown = ", ".join(f"`{b}`" for b in dict.fromkeys(bad))
    return [f"These numbers are not values of the digest (within rounding): {shown}. Use only "
            "numbers from the digest, rounded as you like (0.4855 -> 0.486), or say it in words."]


def plain(text: str) -> str:
    """The words of LaTeX text (commands dropped), for counting."""
    return re.sub(r"\\[A-Za-z]+|[{}$\\]", " ", text)


# --- claims -------------------------------------------------------------------------------

_IMPROVE = re.compile(
    r"\b(improv\w*|better|outperform\w*|beat|beats|beating|surpass\w*|exceed\w*|superior|"
    r"gain|gains|gained|boost\w*|increas\w*|rais(?:e|es|ed|ing)|higher|advanc\w*|"
    r"significant(?:ly)?)\b", re.I)
_HEDGE = re.compile(
    r"\b(not|no|never|neither|nor|none|without|fail\w*|unconfirmed|raw|noise|noisy|luck\w*|"
    r"chance|could|would|might|may|should|if|whether|predict\w*|expect\w*|hypothes\w*|goal|"
    r"aims?|seeks?|detectable|smallest|cannot|insignificant|untested|unclear|whereas)\b|n't\b",
    re.I)
_DIRECTION = re.compile(r"\b(higher|lower) (values )?(is|are) better\b", re.I)
_VARIANT = re.compile(r"\bv\d{4}\b")


def sentences(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", re.sub(r"\\item\b", ". ", text))
    return [s.strip() for s in re.split(r"(?<=[.!?;:])\s+(?=[A-Z\\$(`])|\n\n", flat) if s.strip()]


def check_claims(text: str, ctx: Context) -> list[str]:
    problems = []
    for s in sentences(text):
        words = _DIRECTION.sub(" ", s)
        m = _IMPROVE.search(words)
        if not m or _HEDGE.search(words):
            continue
        named = set(_VARIANT.findall(s)) - {ctx.baseline}
        wrong = sorted(named - ctx.claimable)
        if wrong:
            problems.append(f"This sentence claims an improvement (`{m[0]}`) for {', '.join(wrong)}, "
                            "whose improvement was not confirmed on fresh seeds: \"" + _clip(s) + "\". "
                            "Say that it was not confirmed (a raw mean), or drop the claim.")
        elif not named and not ctx.improvement_confirmed and not _mentions(s, ctx.reported):
            problems.append("This run confirmed no improvement, but this sentence claims one "
                            f"(`{m[0]}`): \"" + _clip(s) + "\". State plainly that no improvement "
                            "was confirmed, or drop the claim.")
    return problems


def _mentions(s: str, names: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", s, re.I) for n in names)


def _clip(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def finite(values: list[float]) -> tuple[float, ...]:
    return tuple(v for v in values if math.isfinite(v))
