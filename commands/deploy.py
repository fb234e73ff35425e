"""/releases [N] and /rollback [REF], and the deploy that /restart with no service runs: the operator guide's
emergency procedure (run the deploy script; if a recent change is the cause, deploy an earlier commit)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from bot.frame import blocks
from bot.deploy.git import GitError, check_ref
from bot.deploy.model import DEPLOY, ROLLBACK, Release
from bot.deploy.releases import DeployError, Releases, recover as recover_deploy
from bot.frame.humanize import ago
from bot.frame.registry import CommandError, Context, Option, Reply, SetByCheck, command
from bot.frame.roles import Role
from bot.store.engine import utcnow

RELEASES_SHOWN, RELEASES_LIMIT = 10, 50
ANY_COMMIT = "--any-commit"


def _releases(runtime) -> Releases:
    try:
        return Releases(runtime)
    except DeployError as error:
        raise CommandError(str(error)) from None


def _head(releases: Releases) -> str:
    try:
        releases.record_checked_out()
        return releases.repo.head()
    except GitError as error:
        raise CommandError(str(error)) from None


def _commit_line(releases: Releases, sha: str) -> str:
    try:
        commit = releases.repo.commit(sha)
    except GitError:
        return f"`{sha[:10]}` (no longer in the repository)"
    return f"`{commit.short}` {blocks.escape(commit.subject[:100])} · {blocks.escape(commit.author[:60])} · {ago(commit.when, utcnow())}"


def _runs(releases: Releases) -> str:
    """What runs, where, and as whom when that is not the bot's own user."""
    deploy = releases.deploy
    user = f" as user `{deploy.run_as}`" if deploy.run_as else ""
    return f"Runs `{' '.join(deploy.command)}` in `{deploy.workdir}`{user}"


def _approver(ctx: Context) -> str | None:
    job = ctx.runtime.jobs.get(ctx.job_id) if ctx.job_id else None
    return job.approver if job else None


def _report(title: str, result, release: Release | None) -> Reply:
    lines = list(result.lines)
    if release is not None:
        lines.append(f"Release #{release.id} in the ledger (/releases); the script's whole output is kept with it.")
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=not result.ok)


# ---- /restart with no service -----------------------------------------------------------------------------


def check_deploy(runtime) -> None:
    _head(_releases(runtime))


def describe_deploy(runtime) -> list[str]:
    releases = _releases(runtime)
    return [
        f"{_runs(releases)} (at most {releases.deploy.timeout:g} s), "
        f"then waits until every app service is healthy.",
        "Deploys the commit checked out now: " + _commit_line(releases, releases.repo.head()),
    ]


def run_deploy(ctx: Context) -> Reply:
    releases = _releases(ctx.runtime)
    try:
        result = releases.run(DEPLOY, target=None, ref=None, job_id=ctx.job_id, requested_by=ctx.invocation.user_id,
                              approved_by=_approver(ctx), progress=ctx.progress)
    except (DeployError, GitError) as error:
        raise CommandError(str(error)) from None
    title = "✅ Deployed" if result.ok else "❌ The deploy failed"
    return _report(f"{title} {result.release.short}", result, result.release)


# ---- /releases [N] ---------------------------------------------------------------------------------------


class ReleasesArgs(BaseModel):
    count: int = Field(RELEASES_SHOWN, description=f"how many releases, 1 to {RELEASES_LIMIT}")

    @field_validator("count")
    @classmethod
    def _bounded(cls, count: int) -> int:
        if not 1 <= count <= RELEASES_LIMIT:
            raise ValueError(f"count is between 1 and {RELEASES_LIMIT}")
        return count


@command("releases", summary="The releases the bot deployed, newest first, marking the current one.", usage="/releases [N]",
         role=Role.viewer, args=ReleasesArgs, needs=("deploy",))
def releases_list(ctx: Context, args: ReleasesArgs) -> Reply:
    releases = _releases(ctx.runtime)
    _head(releases)
    current = releases.current()
    lines = []
    for r in releases.latest(args.count):
        mark = "▶️ *current* · " if current is not None and r.id == current.id else ""
        health = {"good": "🟢 good", "bad": "🔴 bad"}.get(r.health, "⚪ unknown")
        who = f" · by <@{r.requested_by}>" if r.requested_by else ""
        who += f", approved by <@{r.approved_by}>" if r.approved_by else ""
        ran = f" · exit {r.exit_code}" if r.exit_code is not None else ""
        ran += f" in {r.duration_ms / 1000:.1f} s" if r.duration_ms is not None else ""
        replaced = f" · replaced #{r.replaced_id}" if r.replaced_id else ""
        note = f" · {blocks.escape(r.note)}" if r.note else (" · running" if r.finished_at is None else "")
        when = f"{r.started_at.astimezone(ctx.runtime.settings.tz):%Y-%m-%d %H:%M %Z}"
        lines.append(f"{mark}*#{r.id}* {r.kind} · {_commit_line(releases, r.commit)} · {when}{who} · {health}{ran}{replaced}{note}")
    title = f"Releases of {ctx.runtime.stack_name}, newest first"
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)])


# ---- /rollback [REF] -------------------------------------------------------------------------------------


class RollbackArgs(BaseModel):
    # As typed, then (by the check, before the request is made) the full commit it resolves to: what is approved.
    ref: str | None = Field(
        None, description="a commit, tag or HEAD~N (default: the previous release with good health)", examples=["HEAD~1"]
    )
    # The commit checked out when the request was made (set by the check): the run refuses if the checkout moved since.
    replacing: Annotated[str | None, SetByCheck()] = None
    # Asks for a REF that was never released here and is no ancestor of the checkout; the check keeps it only then,
    # so the line an approver approves says it.
    any_commit: Annotated[bool, Option(ANY_COMMIT)] = Field(
        False, description="allows a commit never released here and no ancestor of the checkout (the request says so in red)"
    )

    @field_validator("any_commit", mode="before")
    @classmethod
    def _stored(cls, value: object) -> object:
        """A request stored before the flag was a bool held the flag's text, or None: it must still run when approved."""
        return False if value is None else True if value == ANY_COMMIT else value

    @field_validator("ref")
    @classmethod
    def _ref(cls, ref: str | None) -> str | None:
        return None if ref is None else check_ref(ref)

    @field_validator("replacing")
    @classmethod
    def _sha(cls, sha: str | None) -> str | None:
        if sha is not None and not (len(sha) == 40 and all(ch in "0123456789abcdef" for ch in sha)):
            raise ValueError("/rollback takes one REF, such as /rollback HEAD~1")
        return sha


def _check_rollback(runtime, args: RollbackArgs) -> None:
    """Resolve what the rollback goes to, before anyone is asked to approve it; refuse what cannot be deployed."""
    releases = _releases(runtime)
    head = _head(releases)
    try:
        releases.refuse_dirty()
        if args.ref is None:
            previous = releases.previous_good()
            if previous is None:
                raise CommandError(
                    f"No release with good health is older than {head[:10]}, the commit running now, so there is nothing to go "
                    "back to; name the commit to deploy: /rollback REF (/releases lists the released ones)."
                )
            target = previous.commit
        else:
            target = releases.repo.resolve(args.ref)
            if target is None:
                raise CommandError(f"'{blocks.escape(args.ref)}' is not a commit of the repository {releases.deploy.workdir}; /releases lists the deployed ones.")
    except (DeployError, GitError) as error:
        raise CommandError(str(error)) from None
    if target == head:
        raise CommandError(f"{target[:10]} is the commit checked out now; /restart with no service deploys it again.")
    try:
        # Where the stack has been: a commit deployed here before, or one in the history of what runs.
        known = releases.released(target) or releases.repo.is_ancestor(target, head)
    except GitError as error:
        raise CommandError(str(error)) from None
    if not known and not args.any_commit:
        raise CommandError(
            f"{target[:10]} has never been released on this stack and is not an ancestor of {head[:10]}, the commit checked out; "
            f"/releases lists the released ones, and /rollback {blocks.escape(args.ref)} {ANY_COMMIT} asks for it anyway."
        )
    args.ref, args.replacing, args.any_commit = target, head, not known


def _describe_rollback(runtime, args: RollbackArgs) -> list[str]:
    releases = _releases(runtime)
    lines = [f"*From* {_commit_line(releases, args.replacing)}", f"*To* {_commit_line(releases, args.ref)}"]
    if args.any_commit:
        lines.append(
            f"🔴 *Not a release*: `{args.ref[:10]}` has never been released on this stack and is not an ancestor of "
            f"`{args.replacing[:10]}`; it is asked for with {ANY_COMMIT}: check what it holds before approving."
        )
    try:
        between = releases.repo.count_between(args.replacing, args.ref)
        lines.append(f"{between} commit{'' if between == 1 else 's'} between them.")
        migrations = releases.repo.changed(args.replacing, args.ref, releases.deploy.migration_paths)
    except GitError as error:
        return [*lines, f"⚠️ {error}"]
    if migrations:
        shown = ", ".join(f"`{blocks.escape(path)}`" for path in migrations[:5]) + (" …" if len(migrations) > 5 else "")
        lines.append(
            f"⚠️ Migration files differ between them ({shown}): the database does not roll back with the code; "
            "a /restore may be needed."
        )
    lines.append(f"{_runs(releases)}; if the services are not healthy "
                 "afterwards, it goes back to the commit it started from and deploys that again.")
    return lines


@command(
    "rollback",
    summary="Deploy an earlier commit (default: the previous release with good health), gated on health.",
    usage="/rollback [REF] [--any-commit]",
    role=Role.operator,
    args=RollbackArgs,
    needs_approval=True,
    needs=("deploy",),
    check=_check_rollback,
    describe=_describe_rollback,
    recover=recover_deploy,
)
def rollback(ctx: Context, args: RollbackArgs) -> Reply:
    releases = _releases(ctx.runtime)
    head = _head(releases)
    if args.replacing is not None and head != args.replacing:
        raise CommandError(
            f"The checkout moved since this rollback was asked for (it is at {head[:10]}, not {args.replacing[:10]}); nothing ran. Ask again."
        )
    typed = ctx.invocation.text.strip() or None
    try:
        result = releases.run(ROLLBACK, target=args.ref, ref=typed, job_id=ctx.job_id, requested_by=ctx.invocation.user_id,
                              approved_by=_approver(ctx), progress=ctx.progress)
    except (DeployError, GitError) as error:
        raise CommandError(f"{error} Nothing was checked out or deployed.") from None
    release = result.release
    title = f"✅ Rolled back to {release.short}" if result.ok else f"❌ The rollback to {release.short} failed"
    return _report(title, result, release)
