"""Roles, ordered: each role may do everything the roles below it may."""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer


class Role(IntEnum):
    viewer = 1
    operator = 2
    approver = 3
    admin = 4

    @classmethod
    def parse(cls, value: object) -> "Role":
        if isinstance(value, Role):
            return value
        name = str(value).strip().lower()
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {value!r}; roles are {cls.names()}") from None

    @classmethod
    def names(cls) -> str:
        return ", ".join(role.name for role in cls)

    def __str__(self) -> str:
        return self.name


# A role as users type it and as the audit shows it: by name, never by number.
RoleName = Annotated[Role, BeforeValidator(Role.parse), PlainSerializer(lambda role: role.name, return_type=str)]
