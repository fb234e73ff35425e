"""The operated stack as one object, built once by the composition root (bot/runtime.py): its runtime (Compose or
Swarm, bot/stack/runtime.py), the app's
database, its Redis, its users table, the probes, the check pool they share and the stack file's settings, flat.

Handlers, the health evaluation and the domains take this object (or tests' FakeStack, tests/fakes.py) instead of
building clients per call from the stack file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bot.frame.config import StackConfig
from bot.frame.registry import CommandError
from bot.stack.compose import ComposeStack, StackError
from bot.stack.database import StackDatabase
from bot.stack.redis import StackRedis
from bot.stack.runtime import StackRuntime
from bot.stack.swarm import SwarmStack
from bot.stack.users import StackUsers

# One pool for every check, kept warm: starting threads per /health cost more than the checks themselves.
# A hung check holds a thread only until its own socket timeout.
CHECK_THREADS = 32


class Stack:
    def __init__(
        self,
        config: StackConfig,
        compose: StackRuntime | None,
        database: StackDatabase | None = None,
        redis: StackRedis | None = None,
        users: StackUsers | None = None,
        pool: ThreadPoolExecutor | None = None,
    ):
        self.config = config  # the stack file's sections (database, edge, thresholds, probes...)
        # The runtime the services run on: a ComposeStack or a SwarmStack (the name is older than the seam); None when the
        # stack file names neither a Compose project nor a Swarm stack.
        self.compose = compose
        self.database = database  # None without a [database] section
        self.redis = redis  # None without a [redis] section
        self.users = users  # the app's users table, in the [database] section's database
        self.pool = pool or ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check")
        settings = config.stack
        self.compose_project = settings.project  # the Compose project or the Swarm stack's namespace
        self.app_services = list(settings.app_services)
        self.check_timeout = settings.check_timeout
        self.healthy_timeout = settings.healthy_timeout
        self.stable_seconds = settings.stable_seconds
        # The operated stack, as the one-change lock and the messages name it.
        self.name = settings.project or config.source or "the stack"

    @classmethod
    def build(cls, config: StackConfig, docker_url: str | None = None) -> "Stack":
        settings, database = config.stack, config.database
        docker_url = settings.docker_host or docker_url
        if settings.runtime == "swarm":
            runtime: StackRuntime | None = SwarmStack(settings.namespace, docker_url, converge_timeout=settings.healthy_timeout)
        else:
            runtime = ComposeStack(settings.compose_project, docker_url) if settings.compose_project else None
        return cls(
            config,
            runtime,
            StackDatabase(database.dsn, settings.check_timeout) if database else None,
            StackRedis(config.redis.url, settings.check_timeout) if config.redis else None,
            StackUsers(database.dsn, settings.check_timeout) if database else None,
        )

    @property
    def runtime(self) -> StackRuntime | None:
        return self.compose

    def refuse_unknown_services(self, services: list[str], without_compose: str) -> None:
        """A service that is not the stack's is refused with the ones that are (/restart, /logs), before any request."""
        if self.compose is None:
            raise CommandError(f"The stack file names no Compose project, so {without_compose}.")
        try:
            known = self.compose.services()
        except StackError as error:
            raise CommandError(str(error)) from None
        unknown = [name for name in services if name not in known]
        if unknown:
            raise CommandError(
                f"{', '.join(unknown)} {'is not a service' if len(unknown) == 1 else 'are not services'} of "
                f"{self.compose.project}; the services are {', '.join(known) or 'none'}."
            )

    def close(self) -> None:
        if self.compose is not None:
            self.compose.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
