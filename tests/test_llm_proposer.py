"""The LLM proposer without a network: reply parsing as input-string / expected cases, and
its conversation (corrections, repairs, prompts) with a client that answers from a script.

The whole path through litellm and a local HTTP server is tests/test_llm.py.
"""

from __future__ import annotations

import random

import jinja2
import pytest

from llm_server import block, reply
from scientist.editblocks import Edit
from scientist import llm_proposer
from scientist.errors import FormatError, ProposalError
from scientist.llm import Reply
from scientist.llm_proposer import MAX_PROTECTED_CHARS, LLMProposer, parse_prediction, parse_reply
from scientist.proposer import Context
from scientist.seed import load_seed
from scientist.variant import DONE, FAILED, Result, SeedResult, Variant

TRAIN = "    lr: float = 0.01  # step size"
GOOD = reply("Raise lr", block("train.py", TRAIN, TRAIN.replace("0.01", "0.03")), prediction="+1.5",
             rationale="Twenty steps stop short.")
EDIT = Edit("train.py", TRAIN + "\n", TRAIN.replace("0.01", "0.03") + "\n")


# --- parsing a reply -------------------------------------------------------------------


def test_a_well_formed_reply():
    r = parse_reply(GOOD)
    assert (r.hypothesis, r.rationale, r.prediction, r.predicted) == ("Raise lr", "Twenty steps stop short.",
                                                                      "+1.5", 1.5)
    assert r.edits == (EDIT,)


EDITS = block("a.py", "x = 1", "x = 2")


@pytest.mark.parametrize("text", [
    f"## Hypothesis\nH\n## Rationale\nR\n## Prediction\n+1\n## Edits\n{EDITS}",
    f"# Hypothesis\nH\n# Rationale\nR\n# Prediction\n+1\n# Edits\n{EDITS}",
    f"#### Hypothesis:\nH\n#### Rationale:\nR\n#### Prediction:\n+1\n#### Edits:\n{EDITS}",
    f"**Hypothesis:**\nH\n**Rationale:**\nR\n**Prediction:**\n+1\n**Edits:**\n{EDITS}",
    f"**Hypothesis**:\nH\n**Rationale**:\nR\n**Prediction**:\n+1\n**Edits**:\n{EDITS}",
    f"## **Hypothesis**\nH\n## **Rationale**\nR\n## **Prediction**\n+1\n## **Edits**\n{EDITS}",
    f"Hypothesis: H\nRationale: R\nPrediction: +1\nEdits:\n{EDITS}",
    f"## Hypothesis: H\n## Rationale: R\n## Prediction: +1\n## Edits\n{EDITS}",
    f"  hypothesis:\tH\nRATIONALE:\nR\n\n\nprediction:\n\n+1\nedits:\n{EDITS}",
    f"Sure! Here is my answer.\n\n## Hypothesis\nH\n## Rationale\nR\n## Prediction\n+1\n## Edits\n{EDITS}",
], ids=["h2", "h1", "h4_colon", "bold_colon_inside", "bold_colon_outside", "h2_bold", "plain_inline",
        "h2_inline", "case_and_blank_lines", "preamble"])
def test_heading_styles_models_use(text):
    r = parse_reply(text)
    assert (r.hypothesis, r.rationale, r.prediction, r.predicted) == ("H", "R", "+1", 1.0)
    assert r.edits == (Edit("a.py", "x = 1\n", "x = 2\n"),)


def test_sections_keep_their_lines_but_not_fence_lines():
    text = ("## Hypothesis\nFirst line.\nSecond line.\n```\n## Rationale\n```text\nBecause\n  indented\n~~~\n"
            f"## Prediction\n+0.5 (a guess)\nmore words\n## Edits\n{EDITS}")
    r = parse_reply(text)
    assert r.hypothesis == "First line.\nSecond line."
    assert r.rationale == "Because\n  indented"
    assert r.prediction == "+0.5 (a guess)\nmore words" and r.predicted == 0.5


def test_the_word_edits_later_in_prose_is_not_a_second_heading():
    text = GOOD.replace("## Edits\n", "## Edits\nThe edits: one block.\nEdits: as follows\n")
    assert parse_reply(text).edits == (EDIT,)


def test_a_heading_inside_an_edit_block_does_not_end_the_edits():
    edits = block("notes.md", "old", "## Rationale\nnew")
    text = f"## Hypothesis\nH\n## Rationale\nR\n## Prediction\n+1\n## Edits\n{edits}"
    with pytest.raises(FormatError, match="`## Rationale` twice"):  # a second Rationale heading
        parse_reply(text)


MISSING = ("The reply is missing the section heading(s) {}. Answer with the four headings ## Hypothesis, "
           "## Rationale, ## Prediction and ## Edits, in this order, each on its own line.")
ORDER = "The sections are out of order: use ## Hypothesis, ## Rationale, ## Prediction, ## Edits, in this order."


@pytest.mark.parametrize("text, message", [
    ("just prose", MISSING.format("`## Hypothesis`, `## Rationale`, `## Prediction`, `## Edits`")),
    (f"## Hypothesis\nH\n## Rationale\nR\n## Edits\n{EDITS}Edits: as above\n## Prediction\n+1\n", ORDER),
    (f"## Hypothesis\nH\n## Prediction\n+1\n## Edits\n{EDITS}", "missing the section heading(s) `## Rationale`. "),
    ("## Hypothesis\nH\n## Rationale\nR\n## Prediction\n+1\n", "missing the section heading(s) `## Edits`. "),
    (f"## Rationale\nR\n## Hypothesis\nH\n## Prediction\n+1\n## Edits\n{EDITS}", ORDER),
    (f"## Hypothesis\nH\n## Rationale\nR\n## Edits\n{EDITS}\n## Prediction\n+1\n", ORDER),
    (f"## Hypothesis\nH\n## Hypothesis\nH2\n## Rationale\nR\n## Prediction\n+1\n## Edits\n{EDITS}",
     "The reply has the heading `## Hypothesis` twice; give each of the four sections (Hypothesis, Rationale, "
     "Prediction, Edits) once."),
    (f"## Hypothesis\n\n## Rationale\nR\n## Prediction\n+1\n## Edits\n{EDITS}", "The `## Hypothesis` section is empty."),
    (f"## Hypothesis\nH\n## Rationale\n```\n```\n## Prediction\n+1\n## Edits\n{EDITS}", "The `## Rationale` section is empty."),
    (f"## Hypothesis\nH\n## Rationale\nR\n## Prediction\n\n## Edits\n{EDITS}", "The `## Prediction` section is empty."),
    ("## Hypothesis\nH\n## Rationale\nR\n## Prediction\n+1\n## Edits\nI would change a.py.", "no SEARCH/REPLACE blocks"),
    (f"## Hypothesis\nH\n## Rationale\nR\n## Prediction\nbetter\n## Edits\n{EDITS}", "must start with a signed number"),
])
def test_unusable_replies_say_what_is_wrong(text, message):
    with pytest.raises(FormatError) as e:
        parse_reply(text)
    assert message in str(e.value)


@pytest.mark.parametrize("text, value", [
    ("+0.012", 0.012), ("-0.5", -0.5), ("−0.5", -0.5), ("–0.25", -0.25), ("0", 0.0), ("3", 3.0),
    (".5", 0.5), ("-.5", -0.5), ("7.", 7.0), ("1e-3", 0.001), ("+2.5E+2", 250.0), ("-1e2", -100.0),
    ("+ 0.1", 0.1), ("**+0.3** because more steps", 0.3), ("> -0.2", -0.2), ("`-0.02`", -0.02),
    ("* +4", 4.0), ("+0.1\nsecond line -9", 0.1), ("  \n+0.7 leading blank", 0.7), ("+1.5e", 1.5),
])
def test_predictions(text, value):
    assert parse_prediction(text) == pytest.approx(value)


NOT_A_NUMBER = ("The `## Prediction` section must start with a signed number, the expected change of the metric "
                "(e.g. +0.012); it starts with ")
PERCENT = "Give the prediction in the metric's own units (e.g. +0.012), not as a percentage."


@pytest.mark.parametrize("text, message", [
    ("about +0.1", NOT_A_NUMBER + "'about +0.1'."),
    ("x" * 100, NOT_A_NUMBER + "'" + "x" * 80 + "'."),
    ("+5%", PERCENT),
    ("-0.5 %", PERCENT),
])
def test_predictions_that_are_refused(text, message):
    with pytest.raises(FormatError) as e:
        parse_prediction(text)
    assert str(e.value) == message


# --- the conversation -------------------------------------------------------------------


class ScriptedClient:
    """Answers chat calls from a list of replies; records what it was sent."""

    def __init__(self, *texts: str | Reply):
        self.replies = [t if isinstance(t, Reply) else Reply(t, "stop", 100, 20, 0.001) for t in texts]
        self.calls: list[dict] = []

    def chat(self, messages, *, iteration, purpose):
        self.calls.append({"messages": [dict(m) for m in messages], "iteration": iteration, "purpose": purpose})
        return self.replies[len(self.calls) - 1]

    def describe(self):
        return "scripted-model"


@pytest.fixture
def seed(toy):
    return load_seed(toy.path)


def variant(vid, parent, fitness=None, status=DONE, **kw) -> Variant:
    return Variant(vid, parent, vid, status, fitness=fitness, **kw)


def context(seed, parent=None, history=None, **kw) -> Context:
    parent = parent or variant(0, None, 0.5, fitness_stderr=0.01, metrics={"neg_mse": 0.5, "w": 2.9})
    files = {"train.py": (seed.path / "train.py").read_text()}
    return Context(seed, parent, files, history or [parent], random.Random(0), iteration=3, total=5, **kw)


def proposer(seed, client, **kw) -> LLMProposer:
    return LLMProposer(client, seed, seed.scale("test"), **kw)


def test_a_good_first_reply_is_the_proposal(seed):
    client = ScriptedClient(GOOD)
    p = proposer(seed, client)
    got = p.propose(context(seed))
    assert (got.hypothesis, got.rationale, got.prediction, got.predicted, got.proposer) == (
        "Raise lr", "Twenty steps stop short.", "+1.5", 1.5, "llm")
    assert got.edits == (EDIT,)
    assert [(c["iteration"], c["purpose"]) for c in client.calls] == [(3, "propose")]
    roles = [m["role"] for m in client.calls[0]["messages"]]
    assert roles == ["system", "user"]
    # the model is sent the system prompt and this iteration's prompt, as they are
    assert client.calls[0]["messages"] == [{"role": "system", "content": p.system_prompt()},
                                           {"role": "user", "content": p.propose_prompt(context(seed))}]
    assert (p.last_usage.calls, p.last_usage.tokens) == (1, 120)


def test_an_unusable_reply_goes_back_with_its_error_until_one_works(seed):
    bad = reply("Raise", block("train.py", "    lr: float = 0.5", "    lr: float = 1.0"))  # matches nothing
    client = ScriptedClient("no sections at all", bad, GOOD)
    said = []
    p = proposer(seed, client, on_attempt=said.append)
    got = p.propose(context(seed))
    assert got.hypothesis == "Raise lr"
    assert [c["purpose"] for c in client.calls] == ["propose", "propose-correction", "propose-correction"]
    third = client.calls[2]["messages"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[2]["content"] == "no sections at all" and third[4]["content"] == bad
    assert "missing the section heading(s)" in third[3]["content"] and "correction 1 of 3" in third[3]["content"]
    assert "SEARCH does not match any lines in train.py" in third[5]["content"]
    assert "correction 2 of 3" in third[5]["content"] and "cut off" not in third[5]["content"]
    first = ("The reply is missing the section heading(s) `## Hypothesis`, `## Rationale`, `## Prediction`, "
             "`## Edits`. Answer with the four headings ## H")  # the first 140 characters of the first line
    assert said == [f"reply 1 unusable ({first}); sending the error back (1/3)",
                    "reply 2 unusable (1 of 1 SEARCH/REPLACE blocks failed, so no file was changed.); sending the "
                    "error back (2/3)"]
    assert p.last_usage.calls == 3


def test_a_reply_cut_off_at_the_output_limit_is_told_so(seed):
    cut = Reply(GOOD[:-30], "length", 100, 8192, 0.01)
    client = ScriptedClient(cut, GOOD)
    proposer(seed, client).propose(context(seed))  # the default output limit
    retry = client.calls[1]["messages"][-1]["content"]
    assert "it was cut off at the output limit of 8192 tokens" in retry


def test_after_the_last_correction_the_proposal_fails_with_every_error(seed):
    client = ScriptedClient("one", "two", reply("H", "no blocks"))
    p = proposer(seed, client, format_retries=2)
    with pytest.raises(ProposalError) as e:
        p.propose(context(seed))
    assert len(client.calls) == 3
    msg = str(e.value)
    assert msg.startswith("no usable reply after 3 attempt(s); last error: The reply contains no SEARCH/REPLACE blocks")
    assert msg.count("\n  attempt ") == 3 and "\n  attempt 3: The reply contains no SEARCH" in msg
    assert [line.split(":")[0] for line in msg.split("\n")[1:]] == ["  attempt 1", "  attempt 2", "  attempt 3"]
    with pytest.raises(FormatError) as first:
        parse_reply("one")
    assert msg.split("\n")[1] == "  attempt 1: " + str(first.value).splitlines()[0]  # each line is its error
    assert p.last_usage.calls == 3


def test_before_any_call_the_usage_is_zero(seed):
    p = proposer(seed, ScriptedClient())
    assert (p.last_usage.calls, p.last_usage.tokens) == (0, 0)


def test_no_corrections_when_they_are_switched_off(seed):
    client = ScriptedClient("nothing usable")
    with pytest.raises(ProposalError, match=r"after 1 attempt\(s\)"):
        proposer(seed, client, format_retries=0).propose(context(seed))
    assert len(client.calls) == 1


def test_edits_to_a_protected_file_are_unusable(seed):
    cheat = reply("Cheat", block("evaluate.py", "import json", "import json, os"))
    client = ScriptedClient(cheat, GOOD)
    assert proposer(seed, client).propose(context(seed)).hypothesis == "Raise lr"
    assert "evaluate.py is protected" in client.calls[1]["messages"][-1]["content"]


def test_a_repair_is_labelled_and_names_what_it_repairs(seed):
    crashed = Result([SeedResult(0, "crash", "exit status 1", stderr_tail="Traceback\nValueError: bad lr\n")],
                     "neg_mse")
    base = variant(0, None, 0.5)
    failed = variant(1, 0, status=FAILED, hypothesis="Try lr 10", result=crashed, error="seed 0: crash",
                     diff="-a\n+b\n")
    client = ScriptedClient(GOOD)
    got = proposer(seed, client).repair(context(seed, failed, [base, failed]), failed, 2, 3)
    assert got.hypothesis == "Repair of v0001: Raise lr" and got.proposer == "llm-repair"
    assert got.edits == (EDIT,) and got.predicted == 1.5
    assert (got.rationale, got.prediction) == ("Twenty steps stop short.", "+1.5")  # kept from the reply
    assert client.calls[0]["purpose"] == "repair"
    prompt = client.calls[0]["messages"][1]["content"]
    for words in ("A failed experiment to repair: v0001", "derived from v0000", "It failed: seed 0: crash",
                  "training seed 0, stderr (last lines):\n```\nTraceback\nValueError: bad lr\n```",
                  "Repair attempt 2 of 3", "relative to v0000, the\nnearest working ancestor (neg_mse = 0.5000)"):
        assert words in prompt, words


def test_a_repair_of_a_variant_without_a_result_shows_no_tails_but_the_notebook(seed):
    failed = variant(1, None, status=FAILED, hypothesis="H", error="e")
    client = ScriptedClient(GOOD)
    proposer(seed, client).repair(context(seed, failed, [failed], notebook="NOTEBOOK TEXT"), failed, 1, 2)
    prompt = client.calls[0]["messages"][1]["content"]
    assert "(last lines)" not in prompt and "# Lab notebook (what this run has tried so far)\nNOTEBOOK TEXT\n" in prompt


def test_a_repair_shows_stdout_when_stderr_is_empty_and_only_the_first_failed_seed(seed):
    crashed = Result([SeedResult(0, "ok", metrics={"neg_mse": 1.0}),
                      SeedResult(1, "timeout", "time limit", stdout_tail="step 9 of 10\n"),
                      SeedResult(2, "crash", "exit status 1", stderr_tail="second failure")], "neg_mse")
    failed = variant(1, None, status=FAILED, hypothesis="H", result=crashed, error="e")
    client = ScriptedClient(GOOD)
    proposer(seed, client).repair(context(seed, failed, [failed]), failed, 1, 2)
    prompt = client.calls[0]["messages"][1]["content"]
    assert "training seed 1, stdout (last lines):\n```\nstep 9 of 10\n```" in prompt
    assert "second failure" not in prompt
    assert "derived from the baseline" in prompt and "relative to the baseline, the\nnearest working ancestor (no fitness)" in prompt


def test_the_propose_prompt_shows_lineage_metrics_knobs_and_protected_files(seed):
    base = variant(0, None, 0.5, fitness_stderr=0.01)
    broken = variant(1, 0, status=FAILED, hypothesis="Break it")
    child = variant(2, 1, 0.75, hypothesis="Fix and raise lr", metrics={"neg_mse": 0.75, "w": 2.95})
    ctx = context(seed, child, [base, broken, child], lineage=(base, broken, child), notebook="NOTEBOOK TEXT",
                  protected_files={"evaluate.py": "x" * (MAX_PROTECTED_CHARS + 5), "seed.toml": "name = 'toy'"})
    prompt = proposer(seed, ScriptedClient()).propose_prompt(ctx)
    assert "- v0000: the baseline, neg_mse = 0.5000 ± 0.0100\n" in prompt
    assert "- v0001: Break it → — (no fitness)\n" in prompt
    assert "- v0002: Fix and raise lr → 0.7500 (+0.2500)\n" in prompt  # against the nearest ancestor with a fitness
    assert "neg_mse = 0.7500; other metrics (mean over seeds): neg_mse=0.75, w=2.95" in prompt
    assert "NOTEBOOK TEXT" in prompt and "Iteration 3 of 5." in prompt
    assert "- train.py: `lr`: the step size decides" in prompt
    assert "x" * MAX_PROTECTED_CHARS + "\n... (5 more characters)\n```" in prompt
    assert "x" * (MAX_PROTECTED_CHARS + 1) not in prompt
    assert "seed.toml\n```\nname = 'toy'\n```" in prompt


def test_a_protected_file_of_exactly_the_cap_is_shown_whole(seed):
    ctx = context(seed, protected_files={"evaluate.py": "y" * MAX_PROTECTED_CHARS})
    prompt = proposer(seed, ScriptedClient()).propose_prompt(ctx)
    assert "evaluate.py\n```\n" + "y" * MAX_PROTECTED_CHARS + "\n```" in prompt
    assert "more characters" not in prompt


def test_every_prompt_is_sent_to_its_last_newline(seed):
    # the templates end with a newline, and the model gets them as written (jinja drops it by default)
    p = proposer(seed, ScriptedClient())
    ctx = context(seed)
    failed = variant(1, 0, status=FAILED, hypothesis="Break it")
    texts = [p.system_prompt(), p.propose_prompt(ctx), p.repair_prompt(ctx, failed, 1, 2)]
    assert [t.endswith("\n") for t in texts] == [True, True, True]


def test_a_template_that_names_a_value_the_code_does_not_pass_fails_loudly(seed):
    # rather than sending the model a prompt with a silent hole in it
    p = proposer(seed, ScriptedClient())
    with pytest.raises(jinja2.UndefinedError):
        p.env.from_string("the parent scored {{ parent_fitnes }}").render(parent_fitness="0.5")


def test_an_error_without_a_message_is_named_by_its_type(seed, monkeypatch):
    def no_message(text):
        raise FormatError()
    monkeypatch.setattr(llm_proposer, "parse_reply", no_message)
    with pytest.raises(ProposalError) as e:
        proposer(seed, ScriptedClient(GOOD), format_retries=0).propose(context(seed))
    assert str(e.value) == "no usable reply after 1 attempt(s); last error: FormatError\n  attempt 1: FormatError"


def test_the_propose_prompt_of_a_first_iteration(seed):
    prompt = proposer(seed, ScriptedClient()).propose_prompt(context(seed))
    assert "- v0000: the baseline, neg_mse = 0.5000 ± 0.0100\n" in prompt  # no lineage given: the parent
    assert "Protected files" not in prompt


def test_the_system_prompt_states_the_format_and_the_editable_files(seed):
    p = proposer(seed, ScriptedClient())
    text = p.system_prompt()
    assert "<<<<<<< SEARCH" in text and "## Prediction" in text and "train.py" in text
    assert p.describe() == "LLM scripted-model"
