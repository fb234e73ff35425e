"""The operated application's Redis: the AI worker's queue."""

from __future__ import annotations

import redis

_LENGTH = {"list": "llen", "zset": "zcard", "stream": "xlen"}


class StackRedis:
    def __init__(self, url: str, timeout: float = 5.0):
        self._url = url
        self._timeout = timeout

    def queue_lengths(self, keys: list[str], kind: str) -> dict[str, int]:
        """Length of each queue key; a key of another type than configured is an error, not a zero."""
        client = redis.Redis.from_url(self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout)
        try:
            lengths = {}
            for key in keys:
                actual = client.type(key).decode()
                if actual not in ("none", kind):
                    raise ValueError(f"key {key} is a {actual}, but the stack file says the queue is a {kind}")
                lengths[key] = getattr(client, _LENGTH[kind])(key) if actual == kind else 0
            return lengths
        finally:
            client.close()
