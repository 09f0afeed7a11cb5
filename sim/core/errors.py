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

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str]]:  # keep the parts across processes
        return (type(self), (self.source, self.field, self.problem))


# exit codes of the ``capsim`` command (documented in README.md)
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in capsim (the traceback is printed); also `capsim sweep` when a point failed
EXIT_BAD_INPUT = 2  # bad input or a file-system fault: one line on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)

_OS_PROBLEMS = {
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "read-only file system",
    "ENOSPC": "no space left on device",
    "EDQUOT": "disk quota exceeded",
    "ENOENT": "no such file or folder",
    "ENOTDIR": "a parent is not a folder",
    "EISDIR": "is a folder",
    "EEXIST": "already exists",
    "ENAMETOOLONG": "name too long",
    "EMFILE": "too many open files",
    "EIO": "input/output error",
}


class FileError(CapsimError):
    """A file-system problem with ``path`` (read-only, no space, permission, missing parent, …)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[FileError], tuple[str, str]]:
        return (type(self), (self.path, self.problem))

    @classmethod
    def from_os(cls, exc: OSError, fallback: object = "") -> FileError:
        """One line from an OSError: its path (or ``fallback``) and the problem in words."""
        import errno as _errno
        import re

        code = exc.errno
        if code is None:  # e.g. pyarrow: "... [errno 28] No space left on device"
            m = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
            code = int(m.group(1)) if m else None
        name = _errno.errorcode.get(code or 0, "")
        problem = _OS_PROBLEMS.get(name) or " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
        path = exc.filename if exc.filename is not None else fallback
        return cls(path, problem)
