"""/restore --to TIME | --before INC-12 | --before-release N: the moment, resolved before anyone is asked, recovered
into a scratch instance (the request shows what it would change against live), replaced after approval.

A helper module of commands/backups.py (it declares no command): the moment needs the incidents' and the releases'
records, which only a command may read together (bot/backups knows neither).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable

from bot.backups.flows import Restore, recover as recover_restore
from bot.backups.pointintime import PointInTimeSource, Scratches, at_label, remove_after_kill
from bot.backups.recovery import RecoveryError
from bot.backups.swap import names
from bot.frame.registry import CommandError
from bot.stack.compose import StackError
from bot.store.engine import utcnow
from commands.context import Ctx

INCIDENT = re.compile(r"(?:INC-?|#)?([0-9]{1,9})", re.IGNORECASE)


def wanted(args) -> bool:
    """Whether the arguments ask for a point in time rather than a backup."""
    return any(value is not None for value in (args.to, args.before, args.before_release))


def parse_time(text: str, tz) -> datetime:
    """ISO 8601, with an offset or in the bot's zone; nothing relative (the moment must not move while it is approved)."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise CommandError(
            f"{text[:40]!r} is not a time; give ISO 8601 such as 2026-12-05T14:03:05 (in {tz}) or 2026-12-05T14:03:05+01:00."
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=tz)).astimezone(timezone.utc)


def _moment(ctx: Ctx, args) -> tuple[datetime, str]:
    if args.to is not None:
        at = parse_time(args.to, ctx.tz)
        return at, at_label(at)
    if args.before is not None:
        found = INCIDENT.fullmatch(args.before.strip())
        incident = ctx.incidents.timeline.get(int(found.group(1))) if found else None
        if incident is None:
            raise CommandError(f"There is no incident {args.before[:20]!r}; /incidents lists them, such as INC-12.")
        return incident.started_at, f"just before incident #{incident.id} started ({at_label(incident.started_at)})"
    number = args.before_release.strip().lstrip("#")
    release = ctx.releases_or_refuse().get(int(number)) if number.isdigit() and len(number) < 10 else None
    if release is None:
        raise CommandError(f"There is no release {args.before_release[:20]!r}; /releases lists them.")
    return release.started_at, f"just before release #{release.id} was deployed ({at_label(release.started_at)})"


def check(ctx: Ctx, args, services: Callable[[], None]) -> None:
    """Refuse a moment that cannot be reached and (with the request's job) recover it into the scratch instance the
    request shows. Each form names a fixed second (an ISO time, an incident's start, a release's deploy), so the moment
    read again when the approved request runs is the one that was shown."""
    at, _said = _moment(ctx, args)
    if at > utcnow():
        raise CommandError(f"{at_label(at)[13:]} is in the future; a restore can only go back.")
    services()  # the services it would stop, before the recovery
    scratches = Scratches(ctx.store, ctx.stack, ctx.settings.job_lease_seconds)
    try:
        if ctx.job_id is None:
            scratches.base_for(at)
        else:
            scratches.prepare(ctx.job_id, at, ctx.progress)
    except RecoveryError as error:
        raise CommandError(f"{at_label(at)[0].upper()}{at_label(at)[1:]} cannot be restored: {error}") from None


def describe(ctx: Ctx, args) -> list[str]:
    at, said = _moment(ctx, args)
    # What the recovery found, as it was stored: made once, by the check (given the request's job) or else by the
    # first description; never again (a description is read again and again, after the request has ended too).
    scratches = Scratches(ctx.store, ctx.stack, ctx.settings.job_lease_seconds)
    row = scratches.row(ctx.job_id) if ctx.job_id is not None else None
    if row is None and ctx.job_id is not None:
        try:
            scratches.prepare(ctx.job_id, at, ctx.progress)
        except RecoveryError:
            pass  # stored in the row, said below
        row = scratches.row(ctx.job_id)
    if row is not None and row.preview:
        new, _old = names(ctx.stack.config.database.name, ctx.job_id)
        lines = [*row.preview, f"The copy into `{new}` runs in the background while this waits."]
    elif row is not None and row.error:
        lines = [f"🔴 The recovery into a scratch instance failed: {row.error} Approving it changes nothing: the run refuses before anything stops."]
    else:
        lines = ["It is recovered into a scratch instance when the request is made; the run recovers it again if it is gone."]
    return [
        f"Replaces database `{ctx.stack.config.database.name}` on {ctx.stack.name} with *{said}*, recovered from the WAL archive.",
        *lines,
        f"The live database is kept beside it as `{ctx.stack.config.database.name}__before_{ctx.job_id}`; "
        f"{', '.join(ctx.settings.restore_services)} will be stopped only for the swap.",
    ]


def run(ctx: Ctx, args):
    """Swap's Restore with the point in time as its source: the new database filled from the scratch instance beside
    live, the services stopped only for the swap by rename (a point in time has no in-place fallback)."""
    at, _said = _moment(ctx, args)
    scratches = Scratches(ctx.store, ctx.stack, ctx.settings.job_lease_seconds)
    source = PointInTimeSource(scratches, ctx.job_id, at)
    try:
        restore = Restore(ctx.backups_or_refuse(), ctx.stack, ctx.store, ctx.settings.restore_services, ctx.fault,
                          ctx.job_id, ctx.invocation.user_id, ctx.progress)
    except StackError as error:
        source.close()
        raise CommandError(str(error)) from None
    return restore.run(source), source, restore.lines


def recover(ctx: Ctx, job) -> str | None:
    """A killed /restore --to: swap's recovery puts the names right and starts the services (one path for every
    restore), and the job's scratch instance is removed. None when this job was no point-in-time restore."""
    if not remove_after_kill(Scratches(ctx.store, ctx.stack, ctx.settings.job_lease_seconds), job):
        return None
    return recover_restore(ctx.backups_or_refuse(), ctx.stack, ctx.store, job)
