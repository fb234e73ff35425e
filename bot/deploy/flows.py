"""The deploy as the commands ask for it: the check before a request (a clean checkout, git answering), what an
approver is shown, the run and its report. /restart with no service is this deploy; /rollback shares its lines."""

from __future__ import annotations

from bot.deploy.git import GitError
from bot.deploy.model import DEPLOY, Release
from bot.deploy.service import DeployError, Releases
from bot.frame import blocks
from bot.frame.humanize import ago
from bot.frame.registry import CommandError, Reply
from bot.store.engine import utcnow


def head(releases: Releases) -> str:
    """The commit checked out now (recorded as the first release if the ledger has none)."""
    try:
        releases.record_checked_out()
        return releases.repo.head()
    except GitError as error:
        raise CommandError(str(error)) from None


def commit_line(releases: Releases, sha: str) -> str:
    try:
        commit = releases.repo.commit(sha)
    except GitError:
        return f"`{sha[:10]}` (no longer in the repository)"
    return f"`{commit.short}` {blocks.escape(commit.subject[:100])} · {blocks.escape(commit.author[:60])} · {ago(commit.when, utcnow())}"


def runs(releases: Releases) -> str:
    """What runs, where, and as whom when that is not the bot's own user."""
    deploy = releases.deploy
    user = f" as user `{deploy.run_as}`" if deploy.run_as else ""
    return f"Runs `{' '.join(deploy.command)}` in `{deploy.workdir}`{user}"


def report(title: str, result, release: Release | None) -> Reply:
    lines = list(result.lines)
    if release is not None:
        lines.append(f"Release #{release.id} in the ledger (/releases); the script's whole output is kept with it.")
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=not result.ok)


def check_deploy(releases: Releases) -> None:
    head(releases)


def describe_deploy(releases: Releases) -> list[str]:
    return [
        f"{runs(releases)} (at most {releases.deploy.timeout:g} s), "
        f"then waits until every app service is healthy.",
        "Deploys the commit checked out now: " + commit_line(releases, releases.repo.head()),
    ]


def run_deploy(releases: Releases, job_id: int | None, requested_by: str, approved_by: str | None, progress) -> Reply:
    try:
        result = releases.run(DEPLOY, target=None, ref=None, job_id=job_id, requested_by=requested_by,
                              approved_by=approved_by, progress=progress)
    except (DeployError, GitError) as error:
        raise CommandError(str(error)) from None
    title = "✅ Deployed" if result.ok else "❌ The deploy failed"
    return report(f"{title} {result.release.short}", result, result.release)
