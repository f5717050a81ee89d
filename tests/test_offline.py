"""Offline proposer: one declared knob at a time, as edits the real applier accepts."""

from __future__ import annotations

import ast
import json
import random

import pytest

from scientist.edits import apply_edits, unified_diff
from scientist.offline import OfflineProposer, find_line
from scientist.proposer import Context, make_proposer
from scientist.seed import load_seed
from scientist.variant import DONE, Variant

KNOBS = """
[[mutable]]
file = "train.py"
name = "lr"
type = "float"
low = 0.0001
high = 0.5
log = true

[[mutable]]
file = "train.py"
name = "steps"
type = "int"
low = 1
high = 200

[[mutable]]
file = "train.py"
name = "use_bias"
type = "bool"

[[mutable]]
file = "train.py"
name = "mode"
type = "choice"
values = ["normal", "cheat", "secret"]
"""


def knob(name: str, type: str, **extra: object) -> str:
    lines = ['file = "train.py"', f'name = "{name}"', f'type = "{type}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]  # JSON values are TOML
    return "[[mutable]]\n" + "\n".join(lines) + "\n"


def baseline(fitness: float = -3.0) -> Variant:
    return Variant(id=0, parent_id=None, iteration=0, status=DONE, fitness=fitness)


def value_of(text: str, name: str):
    m = find_line(text, name)
    assert m is not None
    return ast.literal_eval(m["value"].strip())


def child(vid: int, parent: Variant, files: dict[str, str], fitness: float | None,
          **values: object) -> tuple[Variant, dict[str, str]]:
    """A variant of `parent` with these knob values, its diff as the workspace records it."""
    text = files["train.py"]
    for name, value in values.items():
        m = find_line(text, name)
        text = text[: m.start("value")] + repr(value) + text[m.end("value"):]
    new = {"train.py": text}
    v = Variant(id=vid, parent_id=parent.id, iteration=vid, status=DONE, fitness=fitness,
                diff=unified_diff(files, new))
    return v, new


def propose(seed, parent, files, history, rng_seed=0):
    ctx = Context(seed, parent, files, history, random.Random(rng_seed))
    return OfflineProposer().propose(ctx)


@pytest.fixture
def four_knobs(toy):
    toy.only_mutable(KNOBS)
    seed = load_seed(toy.path)
    return seed, {"train.py": toy.train.read_text()}


def test_proposals_are_edits_that_change_exactly_the_declared_literals(four_knobs):
    seed, files = four_knobs
    for rng_seed in range(40):
        p = propose(seed, baseline(), files, [baseline()], rng_seed)
        assert p.proposer == "offline" and p.hypothesis and p.rationale and p.prediction
        new = apply_edits(files, p.edits, editable=seed.editable, protected=seed.protected)
        assert set(new) == {"train.py"}
        old_lines, new_lines = files["train.py"].splitlines(), new["train.py"].splitlines()
        assert len(old_lines) == len(new_lines)
        changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
        assert 1 <= len(changed) <= 2
        for a, b in changed:
            name = a.split(":")[0].strip()
            assert name in {"lr", "steps", "use_bias", "mode"}
            # only the literal changed: the name, annotation and comment are kept
            ma, mb = find_line(a, name), find_line(b, name)
            assert (ma["indent"], ma["type"], ma["comment"]) == (mb["indent"], mb["type"],
                                                                 mb["comment"])
            assert ma["value"] != mb["value"]
            assert name in p.hypothesis


def test_values_respect_type_and_bounds(four_knobs):
    seed, files = four_knobs
    seen = set()
    for rng_seed in range(60):
        p = propose(seed, baseline(), files, [baseline()], rng_seed)
        text = apply_edits(files, p.edits, editable=seed.editable,
                           protected=seed.protected)["train.py"]
        lr, steps = value_of(text, "lr"), value_of(text, "steps")
        use_bias, mode = value_of(text, "use_bias"), value_of(text, "mode")
        assert type(lr) is float and 0.0001 <= lr <= 0.5
        assert type(steps) is int and 1 <= steps <= 200
        assert type(use_bias) is bool
        assert mode in ("normal", "cheat", "secret")
        seen |= {n for n, v, old in (("lr", lr, 0.01), ("steps", steps, 20),
                                     ("use_bias", use_bias, True), ("mode", mode, "normal"))
                 if v != old}
        if use_bias is not True:
            assert use_bias is False
    assert seen == {"lr", "steps", "use_bias", "mode"}  # every knob gets its turn


@pytest.mark.parametrize("field, value, toml, check", [
    ("lr", 0.5, knob("lr", "float", low=0.0001, high=0.5, log=True), lambda v: v < 0.5),
    ("lr", 0.0001, knob("lr", "float", low=0.0001, high=0.5, log=True), lambda v: v > 0.0001),
    ("steps", 200, knob("steps", "int", low=1, high=200), lambda v: 1 <= v < 200),
    ("steps", 1, knob("steps", "int", low=1, high=200), lambda v: 1 < v <= 200),
], ids=["float-high", "float-low", "int-high", "int-low"])
def test_at_the_edge_of_the_range_the_only_way_is_back(toy, field, value, toml, check):
    toy.set_field(field, value).only_mutable(toml)
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    for rng_seed in range(15):
        p = propose(seed, baseline(), files, [baseline()], rng_seed)
        new = apply_edits(files, p.edits, editable=seed.editable, protected=seed.protected)
        assert check(value_of(new["train.py"], field))


def test_a_change_tried_from_the_same_parent_is_not_proposed_again(toy):
    toy.only_mutable(knob("mode", "choice", values=["normal", "cheat", "secret"]))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    root = baseline()
    tried, _ = child(1, root, files, -2.0, mode="cheat")
    for rng_seed in range(20):
        p = propose(seed, root, files, [root, tried], rng_seed)
        new = apply_edits(files, p.edits, editable=seed.editable, protected=seed.protected)
        assert value_of(new["train.py"], "mode") == "secret"


def test_when_every_change_was_tried_it_says_so(toy):
    toy.only_mutable(knob("use_bias", "bool"))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    root = baseline()
    flipped, flipped_files = child(1, root, files, -2.0, use_bias=False)
    with pytest.raises(ValueError, match="no untried change"):
        propose(seed, root, files, [root, flipped])
    # from the child, flipping back is a new change
    p = propose(seed, flipped, flipped_files, [root, flipped])
    new = apply_edits(flipped_files, p.edits, editable=seed.editable, protected=seed.protected)
    assert value_of(new["train.py"], "use_bias") is True


def test_a_float_literal_already_tried_is_not_proposed_again(toy):
    # A narrow linear range from its lower edge: every step goes up, and only about 20
    # literals (3 significant digits) are reachable, so repeats are likely unless the
    # proposer compares what it writes with what was written before.
    toy.set_field("lr", 1.0).only_mutable(knob("lr", "float", low=1.0, high=2.0))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    root = baseline()
    history, written = [root], []
    for i in range(1, 11):
        p = propose(seed, root, files, history, rng_seed=i)
        new = apply_edits(files, p.edits, editable=seed.editable, protected=seed.protected)
        literal = find_line(new["train.py"], "lr")["value"]
        assert literal not in written, f"proposal {i} repeats lr = {literal}"
        assert literal in p.hypothesis  # the hypothesis names the value the code gets
        written.append(literal)
        history.append(Variant(id=i, parent_id=0, iteration=i, status=DONE, fitness=-3.0,
                               diff=unified_diff(files, new)))


def test_a_change_too_small_to_show_in_the_code_is_not_proposed(toy):
    # every step in this range rounds back to the same 3-digit literal: proposing it
    # would evaluate a copy of the parent
    toy.set_field("lr", 100.0).only_mutable(knob("lr", "float", low=100.0, high=100.1))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    with pytest.raises(ValueError, match="no untried change"):
        propose(seed, baseline(), files, [baseline()])


@pytest.mark.parametrize("maximize, child_fitness, goes_up", [
    (True, -2.0, True),    # raising lr raised the fitness: raise it again
    (True, -4.0, False),   # raising lr lowered the fitness: turn back
    (False, -4.0, True),   # minimising: a lower value is the improvement
    (False, -2.0, False),
])
def test_follows_the_direction_that_helped_along_the_lineage(toy, maximize, child_fitness,
                                                             goes_up):
    toy.only_mutable(knob("lr", "float", low=0.0001, high=0.5, log=True))
    if not maximize:
        toy.replace_manifest('direction = "max"', 'direction = "min"')
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    root = baseline(-3.0)
    parent, parent_files = child(1, root, files, child_fitness, lr=0.02)
    for rng_seed in range(15):
        p = propose(seed, parent, parent_files, [root, parent], rng_seed)
        new = apply_edits(parent_files, p.edits, editable=seed.editable,
                          protected=seed.protected)
        lr = value_of(new["train.py"], "lr")
        assert (lr > 0.02) == goes_up, (rng_seed, lr)
        # the rationale says what it learned from the lineage
        assert f"in v0001 (0.01 → 0.02), moved neg_mse by {child_fitness + 3.0:+.4f}" in p.rationale
        way = "continues that way" if (lr > 0.02) == (0.02 > 0.01) else "goes the other way"
        assert way in p.rationale


def test_changes_outside_the_lineage_do_not_steer(toy):
    toy.only_mutable(knob("lr", "float", low=0.0001, high=0.5, log=True))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    root = baseline(-3.0)
    sibling, _ = child(1, root, files, -1.0, lr=0.02)  # helped, but not an ancestor
    other, other_files = child(2, root, files, -3.0, steps=30)
    ups = set()
    for rng_seed in range(30):
        p = propose(seed, other, other_files, [root, sibling, other], rng_seed)
        new = apply_edits(other_files, p.edits, editable=seed.editable,
                          protected=seed.protected)
        ups.add(value_of(new["train.py"], "lr") > 0.01)
    assert ups == {True, False}


def test_no_findable_knob_is_a_clear_error(toy):
    toy.only_mutable(knob("momentum", "float", low=0.0, high=1.0))
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    with pytest.raises(ValueError, match="no \\[\\[mutable\\]\\] field"):
        propose(seed, baseline(), files, [baseline()])


def test_no_declared_knob_is_a_clear_error(toy):
    toy.only_mutable("")
    seed, files = load_seed(toy.path), {"train.py": toy.train.read_text()}
    assert seed.mutables == ()
    with pytest.raises(ValueError, match="nothing to vary"):
        propose(seed, baseline(), files, [baseline()])


def test_make_proposer_by_name():
    p = make_proposer("offline")
    assert p.name == "offline" and p.uses_llm is False and "no LLM" in p.describe()
    with pytest.raises(ValueError, match="unknown proposer 'gpt'"):
        make_proposer("gpt")
