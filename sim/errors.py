"""Errors a user can cause and fix: each renders as one line naming the file, field and problem."""

from __future__ import annotations


class CapsimError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits with code 2."""


class ConfigError(CapsimError):
    """Invalid input: ``source`` is a file (or "--set"), ``field`` a dotted path, ``problem`` the reason."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # noqa: ANN204 - keep the three parts when sent between processes
        return (type(self), (self.source, self.field, self.problem))
