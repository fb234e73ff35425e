"""The application's Git checkout, through `git -C WORKDIR ...` argument lists: no shell, no prompt, no user text as an option."""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REF_LIMIT = 200
GIT_TIMEOUT = 60.0
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


class GitError(Exception):
    """Git could not do what was asked; the message is one sentence for the user."""


def check_ref(ref: str) -> str:
    """A REF a user typed, refused before git sees it when it could be an option or is not one word."""
    if not ref:
        raise ValueError("give a commit, tag or branch, such as HEAD~1 or v1.4.2")
    if len(ref) > REF_LIMIT:
        raise ValueError(f"a ref is at most {REF_LIMIT} characters")
    if ref.startswith("-"):
        raise ValueError("a ref may not start with -; give a commit, tag or branch, such as HEAD~1")
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in ref):
        raise ValueError("a ref is one word: no spaces or control characters")
    return ref


def minimal_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What git and the deploy script see: enough to run, none of the bot's own settings or tokens."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "DOCKER_HOST") if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return {**env, **(extra or {})}


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    when: datetime

    @property
    def short(self) -> str:
        return self.sha[:10]


class Repo:
    def __init__(self, workdir: Path):
        self.workdir = workdir

    def _git(self, *args: str, check: bool = True, accept: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        """Run git; unless `check` is off, an exit code outside `accept` is a GitError."""
        env = minimal_env({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
        try:
            done = subprocess.run(
                ["git", "-C", str(self.workdir), *args], capture_output=True, text=True, env=env,
                stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT, errors="replace",
            )
        except FileNotFoundError:
            raise GitError("git is not installed where the bot runs.") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} did not answer within {GIT_TIMEOUT:.0f} s in {self.workdir}.") from None
        if check and done.returncode not in accept:
            said = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
            raise GitError(f"git {args[0]} failed in {self.workdir}: {said}")
        return done

    def head(self) -> str:
        """The commit checked out now."""
        if not self.workdir.is_dir():
            raise GitError(f"The deploy directory {self.workdir} does not exist.")
        return self._git("rev-parse", "--verify", "HEAD^{commit}").stdout.strip()

    def resolve(self, ref: str) -> str | None:
        """The full sha a user's REF names, or None; `--end-of-options` keeps even a checked REF from being an option."""
        check_ref(ref)
        done = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
        sha = done.stdout.strip()
        return sha if done.returncode == 0 and _SHA.fullmatch(sha) else None

    def commit(self, sha: str) -> Commit:
        out = self._git("show", "-s", "--format=%H%x00%s%x00%an%x00%ct", sha, "--").stdout
        full, subject, author, when = out.rstrip("\n").split("\x00")
        return Commit(full, subject, author, datetime.fromtimestamp(int(when), timezone.utc))

    def count_between(self, a: str, b: str) -> int:
        """Commits in one and not the other, either way (a rollback goes back, a named commit may be on another branch)."""
        left, right = self._git("rev-list", "--left-right", "--count", f"{a}...{b}", "--").stdout.split()
        return int(left) + int(right)

    def subjects(self, a: str, b: str, limit: int) -> list[str]:
        """The subjects of the commits in `b` and not in `a`, newest first, at most `limit`."""
        out = self._git("log", f"--max-count={limit}", "--format=%h %s", "--end-of-options", f"{a}..{b}", "--").stdout
        return out.splitlines()

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is in the history of `descendant` (a commit is its own ancestor)."""
        return self._git("merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant, accept=(0, 1)).returncode == 0

    def changed(self, a: str, b: str, paths: list[str]) -> list[str]:
        """The files under `paths` that differ between two commits."""
        if not paths:
            return []
        return self._git("diff", "--name-only", a, b, "--", *paths).stdout.split("\n")[:-1]

    def uncommitted(self) -> list[str]:
        """Files with uncommitted changes (untracked ones too): a checkout would mix them into what is deployed."""
        lines = self._git("status", "--porcelain", "--untracked-files=normal").stdout.splitlines()
        return [line[3:] for line in lines if line.strip()]

    def checkout(self, sha: str) -> None:
        if not _SHA.fullmatch(sha):
            raise GitError(f"{sha[:40]!r} is not a full commit id.")
        self._git("checkout", "--quiet", "--detach", sha)
