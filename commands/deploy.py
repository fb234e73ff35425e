"""/releases [N] and /rollback [REF], and the deploy that /restart with no service runs: the operator guide's
emergency procedure (run the deploy script; if a recent change is the cause, deploy an earlier commit)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from bot.deploy.flows import commit_line, head, report, runs
from bot.deploy.git import GitError, check_ref
from bot.deploy.model import ROLLBACK
from bot.deploy.service import DeployError, recover
from bot.frame import blocks
from bot.frame.registry import CommandError, Option, Reply, SetByCheck, command
from bot.frame.roles import Role
from bot.stack.compose import StackError
from commands.context import Ctx

RELEASES_SHOWN, RELEASES_LIMIT = 10, 50
ANY_COMMIT = "--any-commit"


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
def releases_list(ctx: Ctx, args: ReleasesArgs) -> Reply:
    releases = ctx.releases_or_refuse()
    head(releases)
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
        when = f"{r.started_at.astimezone(ctx.tz):%Y-%m-%d %H:%M %Z}"
        lines.append(f"{mark}*#{r.id}* {r.kind} · {commit_line(releases, r.commit)} · {when}{who} · {health}{ran}{replaced}{note}")
    title = f"Releases of {ctx.stack.name}, newest first"
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


def _check_rollback(ctx: Ctx, args: RollbackArgs) -> None:
    """Resolve what the rollback goes to, before anyone is asked to approve it; refuse what cannot be deployed."""
    releases = ctx.releases_or_refuse()
    checked_out = head(releases)
    try:
        releases.refuse_dirty()
        if args.ref is None:
            previous = releases.previous_good()
            if previous is None:
                raise CommandError(
                    f"No release with good health is older than {checked_out[:10]}, the commit running now, so there is nothing to go "
                    "back to; name the commit to deploy: /rollback REF (/releases lists the released ones)."
                )
            target = previous.commit
        else:
            target = releases.repo.resolve(args.ref)
            if target is None:
                raise CommandError(f"'{blocks.escape(args.ref)}' is not a commit of the repository {releases.deploy.workdir}; /releases lists the deployed ones.")
    except (DeployError, GitError) as error:
        raise CommandError(str(error)) from None
    if target == checked_out:
        raise CommandError(f"{target[:10]} is the commit checked out now; /restart with no service deploys it again.")
    try:
        # Where the stack has been: a commit deployed here before, or one in the history of what runs.
        known = releases.released(target) or releases.repo.is_ancestor(target, checked_out)
    except GitError as error:
        raise CommandError(str(error)) from None
    if not known and not args.any_commit:
        raise CommandError(
            f"{target[:10]} has never been released on this stack and is not an ancestor of {checked_out[:10]}, the commit checked out; "
            f"/releases lists the released ones, and /rollback {blocks.escape(args.ref)} {ANY_COMMIT} asks for it anyway."
        )
    args.ref, args.replacing, args.any_commit = target, checked_out, not known


def _describe_rollback(ctx: Ctx, args: RollbackArgs) -> list[str]:
    releases = ctx.releases_or_refuse()
    lines = [f"*From* {commit_line(releases, args.replacing)}", f"*To* {commit_line(releases, args.ref)}"]
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
    lines.append(f"{runs(releases)}; if the services are not healthy "
                 "afterwards, it goes back to the commit it started from and deploys that again.")
    return lines + _previous_specs(ctx)


def _previous_specs(ctx: Ctx) -> list[str]:
    """On Swarm: the spec each service had before its last update, which `docker service rollback` would go back to."""
    runtime = ctx.stack.compose
    try:
        kept = runtime.previous_specs() if runtime is not None else {}
    except StackError:
        return []  # the engine's answer is a detail of the description, not a reason to refuse
    return [f"Swarm kept {blocks.escape(service)}'s spec before its last update: {blocks.escape(text)}." for service, text in sorted(kept.items())]


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
    recover=lambda ctx, job: recover(ctx.releases, ctx.store, job),
)
def rollback(ctx: Ctx, args: RollbackArgs) -> Reply:
    releases = ctx.releases_or_refuse()
    checked_out = head(releases)
    if args.replacing is not None and checked_out != args.replacing:
        raise CommandError(
            f"The checkout moved since this rollback was asked for (it is at {checked_out[:10]}, not {args.replacing[:10]}); nothing ran. Ask again."
        )
    typed = ctx.invocation.text.strip() or None
    try:
        result = releases.run(ROLLBACK, target=args.ref, ref=typed, job_id=ctx.job_id, requested_by=ctx.invocation.user_id,
                              approved_by=ctx.approver(), progress=ctx.progress)
    except (DeployError, GitError) as error:
        raise CommandError(f"{error} Nothing was checked out or deployed.") from None
    release = result.release
    title = f"✅ Rolled back to {release.short}" if result.ok else f"❌ The rollback to {release.short} failed"
    return report(title, result, release)
