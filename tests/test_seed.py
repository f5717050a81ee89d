"""seed.toml validation: a bad manifest fails with a SeedError that names the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scientist import seed as seed_mod
from scientist.errors import SeedError
from scientist.seed import load_seed, resolve_seed_path


def test_toy_seed_loads(toy):
    s = load_seed(toy.path)
    assert s.name == "toy"
    assert s.metric == "neg_mse" and s.maximize
    assert s.editable == ("train.py",) and "evaluate.py" in s.protected
    assert s.scale("test").timeout == 20 and s.scale("test").training_seeds == 2
    assert [m.name for m in s.mutables] == ["lr", "steps", "use_bias"]
    assert s.evaluate_env == {"TOY_EVAL_ONLY": "1"}
    assert set(s.files()) == {"evaluate.py", "seed.toml", "train.py"}


def test_unknown_scale_names_the_ones_there(toy):
    with pytest.raises(SeedError, match="no scale 'huge'.*test"):
        load_seed(toy.path).scale("huge")


@pytest.mark.parametrize("old, new, field", [
    ('name = "toy"\n', "", "name"),
    ('direction = "max"', 'direction = "up"', "fitness.direction"),
    ('metric = "neg_mse"\n', "", "fitness.metric"),
    ('editable = ["train.py"]', 'editable = ["nope.py"]', "files.editable"),
    ('editable = ["train.py"]', 'editable = ["../train.py"]', "files.editable"),
    ('editable = ["train.py"]', "editable = []", "files.editable"),
    ('protected = ["evaluate.py", "seed.toml"]', 'protected = ["evaluate.py", "train.py"]',
     "both editable and protected"),
    ("--out {out}\"\nevaluate", "--out {out} --lr {learning_rate}\"\nevaluate", "commands.train"),
    ("--metrics {metrics}", "", "commands.evaluate"),
    ("--out {out}\"\nevaluate", "--out {out} --metrics {metrics}\"\nevaluate", "commands.train"),
    ("timeout = 20", "timeout = 0", "scales.test.timeout"),
    ("memory_mb = 400", "memory_mb = 10", "scales.test.memory_mb"),
    ("training_seeds = 2", 'training_seeds = "two"', "scales.test.training_seeds"),
    ("low = 1\nhigh = 200", "low = 200\nhigh = 200", "mutable[1]"),
    ("low = 1\nhigh = 200", "low = 300\nhigh = 200", "mutable[1]"),
    ('type = "bool"', 'type = "complex"', "mutable[2].type"),
    ('file = "train.py"\nname = "lr"', 'file = "evaluate.py"\nname = "lr"', "mutable[0].file"),
    ("low = 0.0001", "low = 0", "mutable[0].low"),
])
def test_bad_manifest_names_the_field(toy, old, new, field):
    toy.replace_manifest(old, new)
    with pytest.raises(SeedError, match=re.escape(field)):
        load_seed(toy.path)


def test_missing_scales(toy):
    text = toy.manifest.read_text()
    start = text.index("[scales.test]")
    toy.manifest.write_text(text[:start] + text[text.index("[[mutable]]"):])
    with pytest.raises(SeedError, match="scales"):
        load_seed(toy.path)


def test_invalid_toml_says_so(toy):
    toy.manifest.write_text(toy.manifest.read_text() + "\nthis is not toml\n")
    with pytest.raises(SeedError, match="not valid TOML"):
        load_seed(toy.path)


def test_a_seed_is_found_by_path(toy, monkeypatch):
    assert resolve_seed_path(str(toy.path)) == toy.path.resolve()
    monkeypatch.chdir(toy.path.parent)
    assert load_seed("toyseed").path == toy.path.resolve()  # relative to the cwd


def test_a_builtin_seed_is_found_by_name(tmp_path, toy, monkeypatch):
    # Built-in seeds live in SEEDS_DIR; use a private one so the test does not depend on
    # which seeds the repository holds.
    monkeypatch.setattr(seed_mod, "SEEDS_DIR", tmp_path / "seeds")
    (tmp_path / "seeds").mkdir()
    toy.path.rename(tmp_path / "seeds" / "toy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_seed("toy").path == tmp_path / "seeds" / "toy"


def test_an_unknown_seed_lists_the_builtin_ones(tmp_path, toy, monkeypatch):
    monkeypatch.setattr(seed_mod, "SEEDS_DIR", tmp_path / "seeds")
    (tmp_path / "seeds").mkdir()
    toy.path.rename(tmp_path / "seeds" / "toy")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SeedError, match=r"no seed 'nosuch'.*built-in: toy"):
        load_seed("nosuch")
    with pytest.raises(SeedError, match="no seed"):
        load_seed(str(Path("does/not/exist")))
