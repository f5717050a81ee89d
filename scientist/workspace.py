"""Workspace: the run's git repository; each variant is a commit on its parent's commit.

Commits are written with git plumbing into a private index, so the repository's work
tree is never touched and a user can inspect a run with plain git:
`git -C runs/RUN/repo log --graph --all` or `git -C runs/RUN/repo diff v0000 v0007`.
Each variant gets a branch named after it (`v0007`).
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


class Workspace:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.repo = git.Repo(self.path)

    @classmethod
    def create(cls, path: Path, seed: Seed) -> Workspace:
        """A new repository whose root commit (branch v0000) is the pristine seed."""
        path = Path(path)
        path.mkdir(parents=True)
        repo = git.Repo.init(path, initial_branch="v0000")
        for rel in seed.files():
            dst = path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(seed.path / rel, dst)
        repo.git.add("--all")
        with repo.git.custom_environment(**AUTHOR):
            repo.git.commit("-q", "-m", f"v0000 baseline: the unmodified seed {seed.name}")
        return cls(path)

    def head_of(self, branch: str) -> str:
        return self.repo.commit(branch).hexsha

    def read(self, commit: str, paths: list[str] | tuple[str, ...]) -> dict[str, str]:
        """Contents of `paths` at `commit` (missing files are left out)."""
        out = {}
        for p in paths:
            try:
                out[p] = self.repo.git.show(f"{commit}:{p}", strip_newline_in_stdout=False)
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
        return self.repo.git.diff(a, b, stdout_as_string=True, strip_newline_in_stdout=False)

    def export(self, commit: str, dest: Path) -> None:
        """Write the tree of `commit` into `dest` (a fresh working copy for the sandbox)."""
        dest.mkdir(parents=True, exist_ok=True)
        data = self.repo.git.archive(commit, stdout_as_string=False)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")

    def tag_best(self, commit: str) -> None:
        self.repo.git.update_ref("refs/heads/best", commit)
