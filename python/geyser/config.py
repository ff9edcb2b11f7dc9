"""Which queue and store this process talks to.

``configure(queue=..., store=...)`` wins over the environment
(``GEYSER_QUEUE_URL``, ``GEYSER_STORE_URL``); with neither, both are the embedded
SQLite file shared by every process of this user (see ``default_sqlite_path``).
"""

from __future__ import annotations

import os
import threading

from geyser import _core

__all__ = ["client", "configure", "default_sqlite_path"]

default_sqlite_path: str = _core.default_sqlite_path

_lock = threading.Lock()
_urls: dict[str, str | None] = {"queue": None, "store": None}
_client: _core.Client | None = None


def configure(queue: str | None = None, store: str | None = None) -> None:
    """Point this process at a queue and a store by URL.

    ``queue``: ``sqlite:///path.db`` or ``beanstalkd://host:port[,host:port...]``;
    ``store``: ``sqlite:///path.db``. ``None`` leaves that part to the environment
    or the embedded default. Takes effect for the next job operation.
    """
    global _client
    with _lock:
        _urls["queue"] = queue
        _urls["store"] = store
        _client = None


def client() -> _core.Client:
    """The native client for the configured backends, opened on first use."""
    global _client
    with _lock:
        if _client is None:
            queue = _urls["queue"] or os.environ.get("GEYSER_QUEUE_URL") or None
            store = _urls["store"] or os.environ.get("GEYSER_STORE_URL") or None
            _client = _core.Client(queue, store)
        return _client
