"""Report: a run folder becomes a LaTeX report a researcher can read (and a PDF with TeX).

The run folder is built with the real Archive and Workspace on a tiny seed; the report
must show the numbers as the archive holds them, the lineage in order, the diff, and
survive hypotheses full of LaTeX's special characters.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from scientist.archive import Archive
from scientist.errors import ScientistError
from scientist.promotion import NOT_CONFIRMED, PROMOTED, Design, Promotion
from scientist.latex import (MAX_DIFF_LINES, WRAP, Report, compile_tex, latex_escape, tex_engine,
                             verbatim_safe)
from scientist.report import num, write_report
from scientist.seed import load_seed
from scientist.variant import (DONE, FAILED, INVALID, REJECTED, RUNNING, SEED_CRASH, SEED_OK,
                               Result, SeedResult)
from scientist.workspace import Workspace

MANIFEST = """\
name = "tiny"
title = "Tiny seed: learning rates & {braces}"
summary = "Fits a constant; fitness is accuracy (50% is chance)."
[files]
editable = ["train.py"]
protected = ["evaluate.py", "seed.toml"]
[commands]
train = "{python} train.py --seed {seed} --out {out}"
evaluate = "{python} evaluate.py --out {out} --metrics {metrics}"
[fitness]
metric = "acc"
direction = "max"
[scales.test]
timeout = 10
memory_mb = 200
training_seeds = 3
"""
TRAIN = "lr: float = 0.1\nsteps: int = 10\nprint('training')\n"
HOSTILE = r"Raise lr to 50% & $x_1$ \alpha → ~{} # ^_^"
HOSTILE_TEX = (r"Raise lr to 50\% \& \$x\_1\$ \textbackslash{}alpha \ensuremath{\rightarrow} "
               r"\textasciitilde{}\{\} \# \textasciicircum{}\_\textasciicircum{}")
SECOND = "Use β₂ = 0.99 ≥ 0.9 for momentum"
REJECT_REASON = "touches the evaluator {sic} & wastes 100% of the budget"


def result(*accs: float, crash: int | None = None) -> Result:
    seeds = []
    for i, a in enumerate(accs):
        if i == crash:
            seeds.append(SeedResult(i, SEED_CRASH, reason="exit status 1: NaN loss"))
        else:
            seeds.append(SeedResult(i, SEED_OK, metrics={"acc": a, "adam_online_acc": a / 2}))
    return Result(seeds, "acc")


def result_at(values: dict[int, float]) -> Result:
    return Result([SeedResult(s, SEED_OK, metrics={"acc": x}) for s, x in values.items()], "acc")


class FakeRun:
    """A run folder built with the real Archive and Workspace, without running anything."""

    def __init__(self, root: Path, run_id: str = "20250101-120000-tiny"):
        seed_dir = root / "tiny"
        seed_dir.mkdir()
        (seed_dir / "seed.toml").write_text(MANIFEST)
        (seed_dir / "train.py").write_text(TRAIN)
        (seed_dir / "evaluate.py").write_text("print('evaluate')\n")
        self.seed = load_seed(seed_dir)
        self.dir = root / "runs" / run_id
        self.dir.mkdir(parents=True)
        (self.dir / "config.json").write_text(json.dumps({
            "run_id": run_id, "seed": str(seed_dir), "seed_path": str(seed_dir),
            "scale": "test", "iterations": 5, "selection": "greedy", "proposer": "offline",
            "sandbox": "local", "rng_seed": 7, "time_budget": None}))
        self.ws = Workspace.create(self.dir / "repo", self.seed)
        self.archive = Archive(self.dir / "archive.sqlite", maximize=True)
        for k, v in dict(status="finished", started_at=1.7e9, finished_at=1.7e9 + 754,
                         seed_name="tiny", seed_title=self.seed.title,
                         seed_summary=self.seed.summary, metric="acc", maximize=True,
                         proposer_uses_llm=False, elapsed_seconds=754.0,
                         proposer_description="offline hill-climbing, no LLM").items():
            self.archive.set_meta(k, v)
        self.baseline = self.add(None, 0, "", result(0.5, 0.52, 0.54))

    def add(self, parent: int | None, it: int, hypothesis: str, res: Result | None,
            train: str | None = None, status: str | None = None, **fields: object) -> int:
        vid = self.archive.next_id()
        commit = None
        if parent is None:
            commit = self.ws.head_of("v0000")
        elif train is not None:
            commit = self.ws.commit(self.archive.get(parent).commit, {"train.py": train},
                                    f"v{vid:04d}", f"v{vid:04d}")
        v = self.archive.new_variant(parent, it, status=status or RUNNING, commit=commit,
                                     hypothesis=hypothesis, **fields)
        if res is not None:
            self.archive.record_result(v.id, res, DONE if res.ok else FAILED)
        return v.id

    def promote(self, challenger: int, incumbent: int, diffs: tuple[float, ...] = (0.1, 0.11, 0.12, 0.1),
                decision: str = PROMOTED, sealed: tuple[float, ...] | None = None) -> None:
        """Record a confirmation of `challenger` against `incumbent` on fresh seeds (and, with
        `sealed`, the final sealed test against the baseline) as the loop would."""
        p = Promotion(self.archive, Design(max_seeds=4, batch=4, first_look=4, sealed_seeds=len(sealed or ())))
        c = p.open(self.archive.get(challenger))
        seeds = p.next_seeds(c)
        inc = {s: 0.5 + 0.01 * s for s in seeds}
        c = p.record(c, result_at({s: inc[s] + d for s, d in zip(seeds, diffs)}), result_at(inc))
        assert c.decision == decision, c.reason
        if sealed is not None:
            s = p.open_sealed()
            seeds = p.next_seeds(s)
            p.record(s, result_at({x: 0.6 + d for x, d in zip(seeds, sealed)}),
                     result_at({x: 0.6 for x in seeds}))

    def tex(self, **kw: object) -> str:
        rep = write_report(self.dir, compile_pdf=False, **kw)
        return rep.tex.read_text()


@pytest.fixture
def run(tmp_path: Path):
    r = FakeRun(tmp_path)
    yield r
    r.archive.close()


@pytest.fixture
def full_run(run: FakeRun) -> FakeRun:
    """Baseline, an improving child, a failure, a rejection, an invalid proposal, and a
    grandchild that is the best."""
    run.v1 = run.add(0, 1, HOSTILE, result(0.6, 0.62, 0.67),
                     train=TRAIN.replace("0.1", "0.3"), prediction="acc rises by ~5%")
    run.add(0, 2, "Divide by zero on purpose", result(0.1, 0.1, 0.1, crash=1),
            train=TRAIN.replace("steps: int = 10", "steps: int = 0"))
    rej = run.add(run.v1, 3, "Edit the evaluator", None, status=REJECTED)
    run.archive.log("rejected", REJECT_REASON, rej)
    run.add(run.v1, 4, "", None, status=INVALID, error="SEARCH block matched nothing")
    run.v5 = run.add(run.v1, 5, SECOND, result(0.7, 0.71, 0.75),
                     train=TRAIN.replace("0.1", "0.3").replace("10", "20"),
                     prediction="a steadier gradient → higher acc")
    run.promote(run.v1, 0)
    run.promote(run.v5, run.v1, sealed=(0.15, 0.17, 0.16, 0.2))
    return run


def pm(v) -> str:
    return f"{v.fitness:.4f} \\pm {v.fitness_stderr:.4f}"


# --- escaping ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, tex", [
    (HOSTILE, HOSTILE_TEX),
    ("α β Γ Ω", r"\ensuremath{\alpha} \ensuremath{\beta} \ensuremath{\Gamma} \ensuremath{\Omega}"),
    ("lr ≤ 1e-3, x² ≈ 4",
     r"lr \ensuremath{\leq} 1e-3, x\textsuperscript{2} \ensuremath{\approx} 4"),
    ("café naïve", r"caf\'{e} na\"{i}ve"),
    ("“quoted” — dash", r"``quoted'' --- dash"),
    ("a\nb\t\tc", "a b c"),
    ("python train.py --lr 0.1 --- x - y", r"python train.py -{}-lr 0.1 -{}-{}- x - y"),
    ("<<x>> |y|", r"\textless{}\textless{}x\textgreater{}\textgreater{} \textbar{}y\textbar{}"),
    ("emoji 😀 and bell \x07", "emoji ? and bell"),
])
def test_latex_escape(text, tex):
    assert latex_escape(text) == tex


def test_latex_escape_output_is_ascii_for_any_text():
    text = "".join(chr(c) for c in range(0, 0x3000, 7))
    assert latex_escape(text).isascii()


def test_verbatim_safe_keeps_a_listing_from_ending_early_and_cuts_long_diffs():
    text, n = verbatim_safe("+x = r'\\end{lstlisting}' # (*@ not TeX @*)\n+y = 'α→β'\n+\tz\x0c\n")
    assert "\\end{lstlisting}" not in text
    assert r"(*@\reportbs@*)end{lstlisting}" in text and r"# (*@\reportopen@*) not TeX" in text
    assert "+y = 'alpha->beta'" in text and "+   z" in text and n == 3
    long, n = verbatim_safe("".join(f"+line {i}\n" for i in range(MAX_DIFF_LINES + 50)))
    assert n == MAX_DIFF_LINES + 50 and len(long.splitlines()) == MAX_DIFF_LINES
    cut, _ = verbatim_safe("+" + "x" * 5000)
    assert len(cut) < 500 and cut.endswith("more characters]")
    assert all(len(line) <= WRAP + len(r"(*@\reportcont@*)") for line in cut.splitlines())
    assert cut.count(r"(*@\reportcont@*)") == len(cut.splitlines()) - 1 >= 3


@pytest.mark.parametrize("x, tex", [
    (0.51234, "0.5123"), (-2.99915, "-2.9992"), (0.0, "0.0000"), (1234.5, "1234.5000"),
    (6.5951e-05, r"6.595\times 10^{-5}"), (-3e7, r"-3.000\times 10^{7}"),
    (float("inf"), r"\infty"), (float("-inf"), r"-\infty"), (float("nan"), r"\mathrm{NaN}"),
])
def test_numbers_are_formatted_for_math_mode(x, tex):
    assert num(x) == tex


# --- what the report says ---------------------------------------------------------------

def test_report_shows_baseline_and_best_with_their_stderr(full_run):
    tex = full_run.tex()
    base, best = full_run.archive.get(0), full_run.archive.get(full_run.v5)
    assert full_run.archive.best(1)[0].id == best.id
    assert pm(base) in tex and pm(best) in tex
    assert "over 3 training seeds" in tex
    # the other metrics the evaluator reported, for both
    assert r"\texttt{adam\_online\_acc}" in tex
    assert f"{base.metrics['adam_online_acc']:.4f}" in tex
    assert f"{best.metrics['adam_online_acc']:.4f}" in tex
    assert f"+{best.fitness - base.fitness:.4f}" in tex


def test_report_states_the_setup_and_that_no_llm_was_used(full_run):
    tex = full_run.tex()
    assert r"Tiny seed: learning rates \& \{braces\}" in tex
    assert r"20250101-120000-tiny" in tex
    assert "no LLM was used" in tex
    assert r"\texttt{greedy}" in tex or "greedy" in tex
    assert "12 min 34 s" in tex  # elapsed_seconds = 754
    assert r"proposals after the baseline & 5 \\" in tex
    assert r"evaluated successfully & 2 \\" in tex
    assert r"rejected by a human & 1 \\" in tex
    assert r"invalid (edits could not be applied) & 1 \\" in tex


def test_lineage_lists_each_hypothesis_in_order_with_its_change(full_run):
    tex = full_run.tex()
    section = tex[tex.index("Lineage of the best variant"):tex.index(r"\section{Failures}")]
    first, second = section.index(HOSTILE_TEX), section.index(latex_escape(SECOND))
    assert section.index("v0000") < first < second
    assert "Divide by zero" not in section  # not an ancestor of the best
    v1, v5 = full_run.archive.get(full_run.v1), full_run.archive.get(full_run.v5)
    assert f"+{v5.fitness - v1.fitness:.4f}$ (better)" in section
    assert latex_escape("a steadier gradient → higher acc") in section


def test_escaping_holds_everywhere(full_run):
    tex = full_run.tex()
    assert tex.isascii()
    assert HOSTILE not in tex and HOSTILE_TEX[:40] in tex
    assert latex_escape(REJECT_REASON) in tex
    assert r"\ensuremath{\beta}\ensuremath{_{2}}" in tex


def test_report_shows_the_diff_of_the_best_against_the_baseline(full_run):
    tex = full_run.tex()
    listing = tex[tex.index(r"\begin{lstlisting}"):tex.index(r"\end{lstlisting}")]
    assert "-lr: float = 0.1" in listing and "+lr: float = 0.3" in listing
    assert "+steps: int = 20" in listing
    assert "diff --git a/train.py b/train.py" in listing


def test_failures_and_rejections_are_listed(full_run):
    tex = full_run.tex()
    failures = tex[tex.index(r"\section{Failures}"):tex.index(r"\section{Human rejections}")]
    assert r"crash (non-zero exit) & 1 \\" in failures
    assert r"invalid proposal (edits did not apply) & 1 \\" in failures
    assert "NaN loss" in failures and "SEARCH block matched nothing" in failures
    rejections = tex[tex.index(r"\section{Human rejections}"):]
    assert "v0003" in rejections and latex_escape(REJECT_REASON) in rejections


def fitness_axes(run_dir: Path):
    """The fitness figure's axes, drawn from the run folder as the report draws it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from scientist.figures import _fitness
    from scientist.figures import data

    fig = plt.figure()
    _fitness(fig, **data(run_dir), run_dir=run_dir)
    return fig.axes[0]


def test_plot_has_every_variant_with_error_bars_by_claim_and_the_confirmed_best(full_run):
    unconfirmed = full_run.add(full_run.v5, 6, "Lucky", result(0.8, 0.85, 0.9),
                               train=TRAIN.replace("0.1", "0.35"))
    full_run.promote(unconfirmed, full_run.v5, diffs=(0.1, -0.2, 0.05, 0.0), decision=NOT_CONFIRMED)
    raw = full_run.add(full_run.v5, 7, "Untested", result(0.5, 0.5, 0.6),
                       train=TRAIN.replace("0.1", "0.4"))
    ax = fitness_axes(full_run.dir)
    get = full_run.archive.get
    groups = {c.get_label(): c for c in ax.containers}  # errorbar containers, by legend entry
    assert set(groups) == {"confirmed", "not confirmed", "raw"}

    def points(label):
        line, caps, (bars,) = groups[label]
        ys = [tuple(seg[:, 1]) for seg in bars.get_segments()]
        return sorted(zip(line.get_xdata(), line.get_ydata(), ys))

    def expected(*ids):
        return sorted((get(i).iteration, get(i).fitness, (get(i).fitness - get(i).fitness_stderr,
                                                          get(i).fitness + get(i).fitness_stderr)) for i in ids)
    assert [p[:2] for p in points("confirmed")] == [p[:2] for p in expected(0, full_run.v1, full_run.v5)]
    assert [p[:2] for p in points("not confirmed")] == [p[:2] for p in expected(unconfirmed)]
    assert [p[:2] for p in points("raw")] == [p[:2] for p in expected(raw)]
    # each error bar spans +- 1 standard error
    for (_x, _y, (lo, hi)), (_, _, (elo, ehi)) in zip(points("confirmed"), expected(0, full_run.v1, full_run.v5)):
        assert (lo, hi) == pytest.approx((elo, ehi))
    # the confirmed best moves at promotions only, not at v0006's higher raw mean
    (step,) = [ln for ln in ax.lines if ln.get_label() == "confirmed best"]
    assert list(step.get_xdata()) == [0, 1, 5, 7.5]
    assert list(step.get_ydata()) == pytest.approx([0.52, 0.63, 0.72, 0.72])
    (failed,) = [ln for ln in ax.lines if ln.get_label() == "failed (no fitness)"]
    assert list(failed.get_xdata()) == [2]


def test_claims_list_every_attempt_and_the_abstract_states_the_sealed_test(full_run):
    tex = full_run.tex()
    claims = tex[tex.index(r"\section{Claims}"):tex.index(r"\section{Top variants}")]
    rows = [ln for ln in claims.splitlines() if ln.startswith("v000") and "&" in ln]
    assert [r.split(" & ")[:2] + [r.split(" & ")[-1]] for r in rows] == [
        ["v0001", "v0000", r"promoted \\"], ["v0005", "v0001", r"promoted \\"]]
    # attempt j at alpha / (j (j + 1)), one look (the fixture's design: 4 seeds in one batch)
    assert r"$0.0250$ & 4" in rows[0] and r"$0.0083$ & 4" in rows[1]
    assert r"Confirming cost 16 training runs" in claims and "the sealed test 8 more" in claims
    # the abstract: the improvement on the sealed set with its interval and p-value
    sealed = Promotion.of(full_run.archive).sealed().test(True)
    abstract = tex[tex.index(r"\begin{abstract}"):tex.index(r"\end{abstract}")]
    assert (r"\textbf{The confirmed best variant, v0005, improves \texttt{acc} over the unmodified "
            f"seed by ${sealed.mean:+.4f}$}}") in abstract
    assert f"$[{sealed.low:.4f}, {sealed.high:.4f}]$" in abstract and f"$p = $ ${num(sealed.p)}$" in abstract
    assert "over 4 fresh paired training seeds" in abstract


def test_a_sealed_test_that_fails_is_said_plainly(run):
    run.add(0, 1, "Better", result(0.9, 0.91, 0.92), train=TRAIN.replace("0.1", "0.2"))
    run.promote(1, 0, sealed=(0.1, -0.1, 0.05, -0.04))
    tex = run.tex()
    assert r"\textbf{The sealed test did not confirm the improvement.}" in tex


def test_report_says_plainly_when_the_best_is_the_baseline(run):
    run.add(0, 1, "Halve the learning rate", result(0.3, 0.31, 0.35),
            train=TRAIN.replace("0.1", "0.05"))
    tex = run.tex()
    assert "No improvement was confirmed" in tex and "No variant's raw mean beat it" in tex
    assert "The best variant is the unmodified seed" in tex
    assert r"\begin{lstlisting}" not in tex
    assert pm(run.archive.get(0)) in tex


def test_report_of_a_run_where_nothing_succeeded(tmp_path):
    r = FakeRun(tmp_path)
    r.archive.update(0, status=FAILED, fitness=None, fitness_stderr=None)
    tex = r.tex()
    r.archive.close()
    assert "not even the unmodified seed" in tex
    assert "Figures left out: fitness (no variant has a fitness)" in tex


def test_lower_is_better_runs_rank_by_the_lowest_fitness(run):
    run.archive.set_meta("maximize", False)
    run.archive.maximize = False
    low = run.add(0, 1, "Shrink the loss", result(0.2, 0.25, 0.3),
                  train=TRAIN.replace("0.1", "0.2"))
    run.add(0, 2, "Grow the loss", result(0.8, 0.8, 0.9), train=TRAIN.replace("0.1", "0.4"))
    run.promote(low, 0, diffs=(-0.3, -0.31, -0.3, -0.32), sealed=(-0.3, -0.28, -0.31, -0.3))
    tex = run.tex()
    assert (r"\textbf{The confirmed best variant, v0001, improves \texttt{acc} over the unmodified "
            r"seed by $-0.2975$}") in tex and "lower is better" in tex
    section = tex[tex.index("Lineage of the best variant"):]
    v = run.archive.get(low)
    assert f"${v.fitness - run.archive.get(0).fitness:.4f}$ (better)" in section


def test_a_long_diff_is_cut_with_a_note(run):
    long = TRAIN + "".join(f"x{i} = {i}\n" for i in range(MAX_DIFF_LINES + 100))
    run.add(0, 1, "Add many constants", result(0.9, 0.91, 0.92), train=long)
    run.promote(1, 0)
    tex = run.tex()
    assert f"the first {MAX_DIFF_LINES} of its" in tex
    assert f"+x{MAX_DIFF_LINES - 20} =" in tex and f"+x{MAX_DIFF_LINES + 50} =" not in tex


def test_a_report_mid_run_and_without_its_repo_still_renders(run):
    run.archive.set_meta("status", "running")
    run.add(0, 1, "Better", result(0.9, 0.91, 0.92), train=TRAIN.replace("0.1", "0.2"))
    run.promote(1, 0)
    run.add(1, 2, "Still being evaluated", None, train=TRAIN.replace("0.1", "0.25"))
    shutil.rmtree(run.dir / "repo")
    tex = run.tex()
    assert "Status of the run: running" in tex
    assert r"not finished (pending or running) & 1 \\" in tex
    assert "diff of v0001 against the baseline is not available" in tex


def test_a_real_run_of_the_toy_seed(toy, make_run):
    """The run folder as the loop writes it: config, meta and repo all as the report reads them."""
    run, _ = make_run(toy, iterations=3)
    run.execute()
    tex = write_report(run.dir, compile_pdf=False).tex.read_text()
    best, base = run.archive.best(1)[0], run.archive.get(0)
    assert "Toy regression seed" in tex and r"\texttt{toy}" in tex and r"\texttt{test}" in tex
    assert "fme (fitness-monotonic" in tex and "no LLM was used" in tex
    assert pm(base) in tex and pm(best) in tex
    assert r"proposals after the baseline & 3 \\" in tex


def test_not_a_run_folder_is_an_error(tmp_path):
    with pytest.raises(ScientistError, match="not a run folder"):
        write_report(tmp_path)


# --- compiling --------------------------------------------------------------------------

def fake_engine(folder: Path, script: str) -> list[str]:
    path = folder / "fake-pdflatex"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return [str(path), "report.tex"]


def test_a_tex_failure_is_a_message_with_the_log_not_a_crash(full_run, tmp_path):
    tex = Path(write_report(full_run.dir, compile_pdf=False).tex)
    cmd = fake_engine(tmp_path, "printf 'This is TeX\\n! Undefined control sequence.\\n"
                                "l.42 \\\\oops\\n' > report.log\nexit 1\n")
    rep = compile_tex(tex, cmd)
    assert rep.pdf is None and rep.log == tex.with_suffix(".log")
    assert "exit code 1" in rep.message and "! Undefined control sequence." in rep.message


def test_a_hanging_tex_engine_is_stopped(full_run, tmp_path):
    tex = Path(write_report(full_run.dir, compile_pdf=False).tex)
    rep = compile_tex(tex, fake_engine(tmp_path, "sleep 60\n"), timeout=1)
    assert rep.pdf is None and "timed out" in rep.message


def test_required_pdf_without_tex_raises_after_writing_the_tex(full_run, monkeypatch):
    monkeypatch.setattr("scientist.report.tex_engine", lambda: None)
    with pytest.raises(ScientistError, match="no TeX engine"):
        write_report(full_run.dir, compile_pdf=True)
    assert (full_run.dir / "report" / "report.tex").is_file()
    rep = write_report(full_run.dir)
    assert isinstance(rep, Report) and rep.pdf is None and "apt-get install" in rep.message


def require_tex() -> None:
    """Skip without TeX, unless CI says TeX must be there (then a skip would hide a defect)."""
    if tex_engine() is None:
        msg = "no TeX engine (latexmk or pdflatex) on PATH"
        strict = [k for k in ("SCIENTIST_REQUIRE_TEX", "SCIENTIST_STRICT") if os.environ.get(k) == "1"]
        if strict:
            pytest.fail(f"{strict[0]}=1 but {msg}")
        pytest.skip(msg)


def test_report_compiles_to_pdf(full_run):
    require_tex()
    # a diff no TeX would survive unprotected: unicode, a listing terminator, a huge line
    nasty = TRAIN + "s = '→ α \\end{lstlisting} (*@ $^_%&#~{'\nt = '" + "y" * 3000 + "'\n\x0c\n"
    v6 = full_run.add(full_run.v5, 6, "Nasty ✓ ünïcödé → \\input{/etc/passwd} %",
                      result(0.9, 0.9, 0.92), train=nasty, prediction="⚡ $$ }{")
    full_run.promote(v6, full_run.v5, sealed=(0.3, 0.31, 0.29, 0.3))
    rep = write_report(full_run.dir, compile_pdf=True)
    assert rep.message == "" and rep.pdf is not None
    assert rep.pdf.read_bytes()[:5] == b"%PDF-" and rep.pdf.stat().st_size > 20_000
    if shutil.which("pdftotext"):  # poppler-utils: check what a reader sees
        text = subprocess.run(["pdftotext", "-layout", str(rep.pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert "no LLM was used" in text and "v0006" in text
        assert "\\input{/etc/passwd}" in text  # shown, not executed
        assert r"Raise lr to 50% & $x_1$ \alpha" in text
        assert r"+s = '-> alpha \end{lstlisting} (*@ $^_%&#~{'" in text  # the diff, intact


def test_report_compiles_with_pdflatex_alone(full_run, monkeypatch):
    require_tex()
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "latexmk" else which(name))
    assert tex_engine()[0] == "pdflatex"
    rep = write_report(full_run.dir, compile_pdf=True)
    assert rep.message == "" and rep.pdf is not None and rep.pdf.stat().st_size > 20_000
    assert (full_run.dir / "report" / "report.log").is_file()


def best_is_baseline(r: FakeRun) -> None:
    r.add(0, 1, "Halve the learning rate", result(0.3, 0.31, 0.35),
          train=TRAIN.replace("0.1", "0.05"))


def nothing_succeeded(r: FakeRun) -> None:
    r.archive.update(0, status=FAILED, fitness=None, fitness_stderr=None)
    r.add(0, 1, "Crash", result(0.1, 0.2, crash=0), train=TRAIN.replace("0.1", "0.2"))


def no_variants_yet(r: FakeRun) -> None:
    r.archive.db.execute("DELETE FROM variants")
    r.archive.set_meta("status", "created")


def one_seed_and_no_meta(r: FakeRun) -> None:
    r.archive.db.execute("DELETE FROM meta")
    r.add(0, 1, "One seed only", result(0.9), train=TRAIN.replace("0.1", "0.2"))


@pytest.mark.parametrize("scenario", [best_is_baseline, nothing_succeeded, no_variants_yet,
                                      one_seed_and_no_meta])
def test_every_kind_of_run_compiles(run, scenario):
    require_tex()
    scenario(run)
    rep = write_report(run.dir, compile_pdf=True)
    assert rep.message == "" and rep.pdf is not None
