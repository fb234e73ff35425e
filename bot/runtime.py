"""Everything a command may use, wired once from settings and the stack file."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.audit import AuditLog
from bot.authz import Authorizer, GroupMembers
from bot.config import Settings, StackConfig
from bot.dispatcher import Dispatcher
from bot.docker_stack import ComposeStack
from bot.registry import Command, load_commands
from bot.store import Store


@dataclass
class Runtime:
    settings: Settings
    stack: StackConfig
    store: Store
    authz: Authorizer
    audit: AuditLog
    commands: dict[str, Command]
    docker: ComposeStack | None = None  # None when the stack file names no Compose project
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(self)

    @classmethod
    def build(
        cls,
        settings: Settings,
        stack: StackConfig,
        *,
        group_members: GroupMembers | None = None,
        local_admins: frozenset[str] = frozenset(),
        migrate: bool = True,
    ) -> "Runtime":
        store = Store(settings.effective_database_url)
        if migrate:
            store.migrate()
        return cls(
            settings=settings,
            stack=stack,
            store=store,
            authz=Authorizer(store, settings, group_members, local_admins),
            audit=AuditLog(store),
            commands=load_commands(),
            docker=ComposeStack(stack.stack.compose_project, settings.docker_url) if stack.stack.compose_project else None,
        )

    def close(self) -> None:
        if self.docker is not None:
            self.docker.close()
        self.store.dispose()
