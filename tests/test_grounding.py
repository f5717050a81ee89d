"""The checks on model-written report sections: one case per hostile reply, named after it.

Each case is an input text and what the check must say about it (pure functions, no
model). The writer's own tests (tests/test_paper.py) serve such replies through a local
LLM server and check that the report never carries them.
"""

from __future__ import annotations

import pytest

from scientist.grounding import (Context, check, check_claims, check_numbers, check_tex, numbers_in,
                                 sanitize)

VALUES = (0.485534, 0.0032, 0.4630, 0.0106, 2.0, 4.0, 0.05, 95.0, 2021.0, 0.313, 1351.0)
KEYS = frozenset({"kirsch2021meta"})
LABELS = frozenset({"fig:fitness"})


def ctx(**kw) -> Context:
    base = dict(values=VALUES, cite_keys=KEYS, labels=LABELS, claimable=frozenset({"v0001"}),
                improvement_confirmed=True, reported=("online Adam",), max_words=200)
    return Context(**{**base, **kw})


# --- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "reached 0.4855", "reached 0.486", "reached 0.49", "about 48.6\\% online accuracy",
    "$0.4855 \\pm 0.0032$", "over 4 seeds", "fell by $-0.0032$", "a 95\\% interval",
    "Kirsch 2021", "1,351 training runs", "v0005 and v0017 are names", "\\cite{kirsch2021meta}",
    "\\texttt{acc\\_at\\_10}", "Figure~\\ref{fig:fitness}", "3.2\\times 10^{-3}", "3.2e-3",
])
def test_numbers_from_the_digest_pass_within_rounding(text):
    assert check_numbers(text, VALUES) == []


@pytest.mark.parametrize("text, bad", [
    ("online accuracy rose to 0.91", "0.91"),  # invented
    ("reached 0.4856", "0.4856"),  # not 0.485534 rounded
    ("an improvement of 12\\%", "12"),
    ("reached 0", "0"),  # 0.0032 is not 0 at the precision a reader assumes
    ("over 7 seeds", "7"),
    ("p = .03", ".03"),
    ("3.3\\times 10^{-3}", "3.3"),
])
def test_an_invented_number_is_caught(text, bad):
    (problem,) = check_numbers(text, VALUES)
    assert f"`{bad}" in problem and "not values of the digest" in problem


def test_numbers_in_reads_what_a_reader_sees():
    got = [(n.value, n.percent) for n in numbers_in(r"46.3\% of $1.5\times 10^{2}$, v0003, x_1 and 10^{-3}")]
    assert got == [(46.3, True), (150.0, False), (0.001, False)]


# --- claims -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "v0001 improves \\texttt{online\\_acc} over the baseline by 0.0032.",  # confirmed: may be claimed
    "v0003 had a higher raw mean, which was not confirmed on fresh seeds.",
    "The baseline v0000 outperforms online Adam on the same streams.",
    "We expected v0003 to improve accuracy.",
    "Higher is better for this metric.",
])
def test_allowed_statements_pass(text):
    assert check_claims(text, ctx()) == []


def test_an_unconfirmed_improvement_is_caught():
    (p,) = check_claims("Our variant v0003 improves online accuracy by 0.02 over the baseline.", ctx())
    assert "v0003" in p and "not confirmed" in p


def test_a_claim_in_a_run_that_confirmed_nothing_is_caught():
    c = ctx(claimable=frozenset(), improvement_confirmed=False)
    (p,) = check_claims("The proposed change clearly outperforms the original method.", c)
    assert "confirmed no improvement" in p
    assert check_claims("No variant improved on the baseline.", c) == []
    assert check_claims("VSML beats online Adam by a wide margin.", c) == []  # a reported baseline


# --- LaTeX --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, says", [
    ("unbalanced open brace", r"\textbf{strong text", "never closed"),
    ("unbalanced close brace", r"text} more", "never opened"),
    ("bare percent", "rose by 5% overall", r"write `\%`"),
    ("bare underscore", "the metric online_acc", r"write `\_`"),
    ("bare ampersand", "Adam & SGD", r"write `\&`"),
    ("bare hash", "run #3", r"write `\#`"),
    ("input", r"\input{/etc/passwd}", r"`\input` is not allowed"),
    ("include", r"\include{secrets}", r"`\include` is not allowed"),
    ("write18", r"\immediate\write18{rm -rf ~}", r"`\immediate` is not allowed"),
    ("openout", r"\openout1=x.tex", r"`\openout` is not allowed"),
    ("def", r"\def\x{y}\x", r"`\def` is not allowed"),
    ("catcode", r"\catcode`\%=12", r"`\catcode` is not allowed"),
    ("csname", r"\csname input\endcsname{/etc/passwd}", r"`\csname` is not allowed"),
    ("char code escape", r"^^5cinput{/etc/passwd}", "`^^` is not allowed"),
    ("verbatim environment", r"\begin{verbatim}x\end{verbatim}", "environment `verbatim` is not allowed"),
    ("unclosed math", r"$x = 0.05", "never closed"),
    ("display math", r"$$x$$", "display math"),
    ("math command in text", r"0.4855 \pm 0.0032", r"only works in math"),
    ("unknown citation", r"\cite{nobody2020}", "no reference with that key"),
    ("unknown label", r"Figure~\ref{fig:nothing}", "no such label"),
    ("line break", r"one\\two", r"`\\` is not allowed"),
    ("heading", r"\section{Results}", r"`\section` is not allowed"),
])
def test_broken_or_unsafe_latex_is_caught(name, text, says):
    problems = check_tex(text, KEYS, LABELS)
    assert any(says in p for p in problems), problems


def test_the_allowed_subset_passes():
    text = (r"\paragraph{Result.} The \emph{best} (\textbf{v0001}, \texttt{online\_acc}) reached "
            r"$0.4855 \pm 0.0032$, about 48.6\% \cite{kirsch2021meta}; see Figure~\ref{fig:fitness}."
            "\n\n\\begin{itemize}\n\\item $\\alpha = 0.05$ -- one-sided\n\\end{itemize}")
    assert check(text, ctx()) == []


def test_too_long_is_caught():
    (p,) = check("word " * 301, ctx(max_words=300))
    assert "301 words; the limit is 300" in p


def test_sanitize_makes_ascii_and_drops_a_code_fence():
    out = sanitize("```latex\nAccuracy ≈ 0.49 — with α\x07 and\r\nmore\n```")
    assert out == "Accuracy \\ensuremath{\\approx} 0.49 --- with \\ensuremath{\\alpha} and\nmore"
    assert check_tex(out, KEYS, LABELS) == []
