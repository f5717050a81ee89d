"""Workspace: each variant is a git commit on its parent's, inspectable with plain git."""

from __future__ import annotations

import subprocess

import pytest

from scientist.seed import load_seed
from scientist.workspace import Workspace


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def ws(tmp_path, toy):
    return Workspace.create(tmp_path / "repo", load_seed(toy.path))


def edited(ws: Workspace, commit: str, old: str, new: str) -> dict[str, str]:
    text = ws.read(commit, ["train.py"])["train.py"]
    assert old in text
    return {"train.py": text.replace(old, new)}


def test_the_baseline_is_the_pristine_seed(ws, toy):
    root = ws.head_of("v0000")
    assert git(ws.path, "rev-list", "--count", "v0000").strip() == "1"
    assert "baseline" in git(ws.path, "log", "-1", "--format=%s", "v0000")
    files = ws.read(root, ["train.py", "evaluate.py", "seed.toml", "missing.py"])
    assert set(files) == {"train.py", "evaluate.py", "seed.toml"}
    assert files["train.py"] == toy.train.read_text()


def test_each_variant_is_a_commit_on_its_parent(ws):
    root = ws.head_of("v0000")
    a = ws.commit(root, edited(ws, root, "lr: float = 0.01", "lr: float = 0.02"),
                  "v0001: a larger step size converges faster\n\nparent: v0000", "v0001")
    b = ws.commit(a, edited(ws, a, "steps: int = 20", "steps: int = 40"),
                  "v0002: more steps help", "v0002")
    c = ws.commit(root, edited(ws, root, "use_bias: bool = True", "use_bias: bool = False"),
                  "v0003: no intercept", "v0003")

    assert git(ws.path, "rev-parse", "v0001^").strip() == root
    assert git(ws.path, "rev-parse", "v0002^").strip() == a
    assert git(ws.path, "rev-parse", "v0003^").strip() == root
    assert ws.head_of("v0002") == b and ws.head_of("v0003") == c
    branches = git(ws.path, "branch", "--format=%(refname:short)").split()
    assert {"v0000", "v0001", "v0002", "v0003"} <= set(branches)
    assert "a larger step size converges faster" in git(ws.path, "log", "-1", "--format=%B", "v0001")

    # a variant's content carries its whole lineage, and nothing from its siblings
    text = ws.read(b, ["train.py"])["train.py"]
    assert "lr: float = 0.02" in text and "steps: int = 40" in text
    assert "use_bias: bool = True" in text

    log = git(ws.path, "log", "--format=%s", "v0002")
    assert log.splitlines() == ["v0002: more steps help",
                                "v0001: a larger step size converges faster",
                                git(ws.path, "log", "-1", "--format=%s", "v0000").strip()]
    diff = git(ws.path, "diff", "v0000", "v0002")
    assert "-    lr: float = 0.01" in diff and "+    steps: int = 40" in diff
    assert ws.diff(root, b) == diff


def test_commits_leave_the_work_tree_alone(ws):
    root = ws.head_of("v0000")
    before = (ws.path / "train.py").read_text()
    ws.commit(root, edited(ws, root, "lr: float = 0.01", "lr: float = 0.3"), "v0001: x", "v0001")
    assert (ws.path / "train.py").read_text() == before
    assert git(ws.path, "status", "--porcelain") == ""
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "v0000"


def test_export_writes_the_tree_of_a_commit(ws, tmp_path):
    root = ws.head_of("v0000")
    sha = ws.commit(root, {**edited(ws, root, "lr: float = 0.01", "lr: float = 0.3"),
                           "notes/new.txt": "a new file\n"}, "v0001: x", "v0001")
    dest = tmp_path / "export"
    ws.export(sha, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "evaluate.py", "notes/new.txt", "seed.toml", "train.py"]
    assert "lr: float = 0.3" in (dest / "train.py").read_text()
    assert not (dest / ".git").exists()


def test_tag_best_moves_a_branch(ws):
    root = ws.head_of("v0000")
    sha = ws.commit(root, edited(ws, root, "lr: float = 0.01", "lr: float = 0.3"), "v0001", "v0001")
    ws.tag_best(sha)
    assert git(ws.path, "rev-parse", "best").strip() == sha


def test_reopened_workspace_sees_the_variants(ws):
    root = ws.head_of("v0000")
    sha = ws.commit(root, edited(ws, root, "lr: float = 0.01", "lr: float = 0.3"), "v0001", "v0001")
    again = Workspace(ws.path)
    assert again.head_of("v0001") == sha


def test_a_variant_diff_is_a_patch_git_applies(ws, tmp_path):
    root = ws.head_of("v0000")
    # the last changed line is followed by a blank context line: the case a stripped
    # trailing newline turns into a corrupt patch
    sha = ws.commit(root, edited(ws, root, 'mode: str = "normal"', 'mode: str = "cheat"'),
                    "v0001", "v0001")
    patch = tmp_path / "v0001.patch"
    patch.write_text(ws.diff(root, sha))
    copy = tmp_path / "copy"
    ws.export(root, copy)
    subprocess.run(["git", "apply", str(patch)], cwd=copy, check=True, capture_output=True)
    assert (copy / "train.py").read_text() == ws.read(sha, ["train.py"])["train.py"]


def test_an_edit_keeps_the_file_mode(tmp_path, toy):
    toy.train.chmod(0o755)  # an executable training script stays executable when edited
    ws = Workspace.create(tmp_path / "repo", load_seed(toy.path))
    root = ws.head_of("v0000")
    files = edited(ws, root, "lr: float = 0.01", "lr: float = 0.02")
    files["notes.md"] = "a new file\n"
    sha = ws.commit(root, files, "v0001: faster", "v0001")
    rows = [line.split(None, 3) for line in git(ws.path, "ls-tree", sha).splitlines()]
    modes = {path: mode for mode, _, _, path in rows}
    assert modes["train.py"] == "100755"
    assert modes["notes.md"] == "100644"
    assert modes["evaluate.py"] == "100644"


def test_the_users_git_configuration_changes_nothing(tmp_path, toy, monkeypatch):
    """A global config that ignores the evaluator, signs commits with a key that is not
    there and runs a hook that refuses every commit: the run's repository is the same."""
    home = tmp_path / "home"
    (home / "hooks").mkdir(parents=True)
    hook = home / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho refused by the user's hook >&2\nexit 1\n")
    hook.chmod(0o755)
    (home / "ignore").write_text("evaluate.py\n")
    (home / ".gitconfig").write_text(
        f"[core]\n\texcludesFile = {home / 'ignore'}\n\thooksPath = {home / 'hooks'}\n"
        "[commit]\n\tgpgSign = true\n[user]\n\tsigningKey = DEADBEEF\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    ws = Workspace.create(tmp_path / "repo", load_seed(toy.path))
    root = ws.head_of("v0000")
    assert set(ws.read(root, ["train.py", "evaluate.py", "seed.toml"])) == {
        "train.py", "evaluate.py", "seed.toml"}
    sha = ws.commit(root, edited(ws, root, "lr: float = 0.01", "lr: float = 0.02"), "v0001", "v0001")
    assert ws.read(sha, ["evaluate.py"])["evaluate.py"] == (toy.path / "evaluate.py").read_text()


def test_replace_refs_do_not_swap_the_pristine_evaluator(ws, toy, tmp_path):
    """`git replace` makes git show another object in place of one; the run's git never
    honours it, for reads or exports."""
    root = ws.head_of("v0000")
    real = git(ws.path, "rev-parse", f"{root}:evaluate.py").strip()
    forged = tmp_path / "forged.py"
    forged.write_text("import json, sys\njson.dump({'neg_mse': 1e9}, open(sys.argv[-1], 'w'))\n")
    fake = git(ws.path, "hash-object", "-w", str(forged)).strip()
    git(ws.path, "replace", real, fake)
    assert git(ws.path, "show", f"{root}:evaluate.py") == forged.read_text()  # plain git is fooled
    assert ws.read(root, ["evaluate.py"])["evaluate.py"] == (toy.path / "evaluate.py").read_text()
    ws.export(root, tmp_path / "export")
    assert (tmp_path / "export" / "evaluate.py").read_text() == (toy.path / "evaluate.py").read_text()


def test_binary_files_are_read_byte_for_byte(tmp_path, toy):
    blob = bytes(range(256)) * 4 + b"\x00\xff\r\n"
    (toy.path / "weights.bin").write_bytes(blob)
    ws = Workspace.create(tmp_path / "repo", load_seed(toy.path))
    root = ws.head_of("v0000")
    assert ws.read_bytes(root, ["weights.bin"]) == {"weights.bin": blob}
    assert ws.read(root, ["weights.bin"]) == {"weights.bin": f"(binary file, {len(blob)} bytes)"}
