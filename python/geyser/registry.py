"""Job classes by ``JOB_TYPE``, and the modules a worker imports to find them.

``JOB_MODULES`` is read each time it is used, so users may reassign it:
``geyser.registry.JOB_MODULES = geyser.registry.JOB_MODULES + ["jobs.my_job"]``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from geyser.errors import UnknownJobType

if TYPE_CHECKING:
    from geyser.jobs import BaseJob

__all__ = ["JOB_MODULES", "import_job_modules", "job_class", "job_classes", "register"]

JOB_MODULES: list[str] = []

log = logging.getLogger("geyser.registry")
_classes: dict[str, type[BaseJob]] = {}


def register(cls: type[BaseJob]) -> None:
    """Make ``cls`` the class for its ``JOB_TYPE`` (called when a subclass is defined)."""
    previous = _classes.get(cls.JOB_TYPE)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        log.warning("job type %r was %s, now %s", cls.JOB_TYPE, previous.__qualname__, cls.__qualname__)
    _classes[cls.JOB_TYPE] = cls


def job_class(job_type: str) -> type[BaseJob]:
    """The class registered for ``job_type``; ``UnknownJobType`` names it if there is none."""
    try:
        return _classes[job_type]
    except KeyError:
        known = ", ".join(sorted(_classes)) or "none"
        raise UnknownJobType(
            f"unknown job type {job_type!r} (registered: {known}); "
            "import its module or add it to geyser.registry.JOB_MODULES"
        ) from None


def job_classes() -> dict[str, type[BaseJob]]:
    """A copy of the registry: job type → class."""
    return dict(_classes)


def import_job_modules(extra: list[str] | None = None) -> None:
    """Import ``extra`` modules, then every module in ``JOB_MODULES`` as it is now."""
    for name in list(extra or []):
        importlib.import_module(name)
    for name in list(JOB_MODULES):
        importlib.import_module(name)
