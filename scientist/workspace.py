"""Workspace: the run's git repository; each variant is a commit on its parent's commit.

Commits are written with git plumbing into a private index, so the repository's work
tree is never touched and a user can inspect a run with plain git:
`git -C runs/RUN/repo log --graph --all` or `git -C runs/RUN/repo diff v0000 v0007`.
Each variant gets a branch named after it (`v0007`).

git runs with a fixed configuration (`GIT_ENV`): no system or global config (a user's
`excludesFile` could leave files out of a commit, `commit.gpgsign` could make it fail,
`core.hooksPath` or `core.fsmonitor` could run programs), no hooks, no templates, and no
`replace` refs (`git replace` would swap the pristine evaluator for both `git show` and
`git archive`). The repository itself is out of every step's reach (the sandboxes do not
mount the run folder); the evaluator also checks the pristine files against hashes recorded
when the run was made.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

import git
from gitdb import IStream

from scientist.seed import Seed

AUTHOR = {"GIT_AUTHOR_NAME": "scientist", "GIT_AUTHOR_EMAIL": "scientist@localhost",
          "GIT_COMMITTER_NAME": "scientist", "GIT_COMMITTER_EMAIL": "scientist@localhost"}
# settings that win over any config file, the repository's own included (git >= 2.31)
FIXED = {"core.hooksPath": "/dev/null", "core.fsmonitor": "false", "core.excludesFile": "/dev/null",
         "core.attributesFile": "/dev/null", "core.autocrlf": "false", "core.safecrlf": "false",
         "commit.gpgSign": "false", "tag.gpgSign": "false", "gc.auto": "0"}
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_NO_REPLACE_OBJECTS": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_ATTR_NOSYSTEM": "1",
           "GIT_TEMPLATE_DIR": "", "GIT_CONFIG_COUNT": str(len(FIXED)),
           **{f"GIT_CONFIG_KEY_{i}": k for i, k in enumerate(FIXED)},
           **{f"GIT_CONFIG_VALUE_{i}": v for i, v in enumerate(FIXED.values())}}


def _git(path: Path) -> git.Git:
    g = git.Git(str(path))
    g.update_environment(**GIT_ENV)
    return g


class Workspace:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.repo = git.Repo(self.path)
        self.repo.git.update_environment(**GIT_ENV)

    @classmethod
    def create(cls, path: Path, seed: Seed) -> Workspace:
        """A new repository whose root commit (branch v0000) is the pristine seed."""
        path = Path(path)
        path.mkdir(parents=True)
        g = _git(path)
        g.init("-q", "--initial-branch=v0000", "--template=")
        for rel in seed.files():
            dst = path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(seed.path / rel, dst)
        g.add("--all")  # the seed's own .gitignore applies; no global or system one does
        with g.custom_environment(**AUTHOR):
            g.commit("-q", "--no-verify", "-m", f"v0000 baseline: the unmodified seed {seed.name}")
        return cls(path)

    def head_of(self, branch: str) -> str:
        return self.repo.commit(branch).hexsha

    def read(self, commit: str, paths: list[str] | tuple[str, ...]) -> dict[str, str]:
        """Text of `paths` at `commit` (missing files are left out; a file that is not
        UTF-8 text is shown as a placeholder, as a prompt would show it)."""
        out = {}
        for p, data in self.read_bytes(commit, paths).items():
            try:
                out[p] = data.decode()
            except UnicodeDecodeError:
                out[p] = f"(binary file, {len(data)} bytes)"
        return out

    def read_bytes(self, commit: str, paths: list[str] | tuple[str, ...]) -> dict[str, bytes]:
        """Contents of `paths` at `commit`, byte for byte (missing files are left out)."""
        out = {}
        for p in paths:
            try:
                out[p] = self.repo.git.show(f"{commit}:{p}", stdout_as_string=False,
                                            strip_newline_in_stdout=False)
            except git.GitCommandError:
                continue
        return out

    def commit(self, parent: str, files: Mapping[str, str], message: str, branch: str) -> str:
        """Commit `files` (path -> new content) on top of `parent`; returns the new sha."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {**AUTHOR, "GIT_INDEX_FILE": os.path.join(tmp, "index")}
            g = self.repo.git
            tree = self.repo.commit(parent).tree
            with g.custom_environment(**env):
                g.read_tree(parent)
                for rel, text in files.items():
                    data = text.encode()
                    blob = self.repo.odb.store(IStream(b"blob", len(data), io.BytesIO(data)))
                    mode = tree[rel].mode if rel in tree else 0o100644  # keep executable bits
                    g.update_index("--add", "--cacheinfo", f"{mode:o},{blob.hexsha.decode()},{rel}")
                sha = g.commit_tree(g.write_tree(), "-p", parent, "-m", message)
        self.repo.git.update_ref(f"refs/heads/{branch}", sha)
        return sha

    def diff(self, a: str, b: str) -> str:
        # keep the final newline: without it the diff is not a patch `git apply` accepts
        return self.repo.git.diff("--no-ext-diff", "--no-textconv", a, b, stdout_as_string=True,
                                  strip_newline_in_stdout=False)

    def export(self, commit: str, dest: Path) -> None:
        """Write the tree of `commit` into `dest` (a fresh working copy for the sandbox)."""
        dest.mkdir(parents=True, exist_ok=True)
        data = self.repo.git.archive(commit, stdout_as_string=False)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.12, and 3.10.12 / 3.11.4 onwards
                tar.extractall(dest, filter="data")
            else:  # git archive writes no absolute, `..` or device entries to filter out
                tar.extractall(dest)

    def tag_best(self, commit: str) -> None:
        self.repo.git.update_ref("refs/heads/best", commit)
