"""Result folders replaced all or nothing, one writer at a time.

A command that writes a result folder ``OUT`` (``capsim run``, ``size``, ``compare``) writes every file into a
sibling staging folder ``.OUT.tmp-<pid>/``, adds ``manifest.json`` (every file's size and SHA-256, one run id)
and then swaps the staging folder in:

* ``OUT`` absent: ``rename(staging, OUT)`` (atomic);
* ``OUT`` present: Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one atomic step, then the old
  set (now under the staging name) is deleted. Where the exchange is not supported, ``OUT`` is first renamed
  to ``.OUT.old-<pid>`` and the staging folder renamed in; a kill between the two renames leaves no ``OUT``,
  and the next run (or :func:`recover`) renames the old set back.

So after a kill at any instant ``OUT`` holds the complete old set or the complete new set. Folders nested
in ``OUT`` are not part of a set (other commands' results, e.g. ``out/size/`` beside ``capsim run``'s files in
``out/``): they are moved into the new ``OUT`` after the swap (after a kill at that instant, by the next
writer). Leftover staging and old folders of dead processes are removed by the next command that writes
there. A lock
(``fcntl.flock`` on ``.OUT.lock`` beside the folder) makes a second concurrent writer fail at once with one
line instead of mixing files. Files and folders follow the user's umask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.core.errors import FileError

MANIFEST = "manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# files a capsim command writes into a result folder: an existing folder holding anything else is not replaced
_KNOWN_SUFFIXES = (".json", ".parquet", ".csv", ".png", ".html", ".txt", ".yaml", ".tmp", ".lock")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _names(out: Path) -> tuple[Path, Path, Path]:
    """(lock file, staging prefix, old prefix) for result folder ``out``."""
    parent, name = out.parent, out.name
    return parent / f".{name}.lock", parent / f".{name}.tmp-", parent / f".{name}.old-"


def _leftovers(out: Path) -> list[tuple[str, int, Path]]:
    """Staging / old folders beside ``out``: (kind, pid, path)."""
    found = []
    pat = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)$")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pat.match(p.name)
        if m:
            found.append((m.group(1), int(m.group(2)), p))
    return found


def remove_stale_temporaries(folder: Path) -> int:
    """Delete ``.<name>.<pid>[-…].tmp`` files in ``folder`` left by processes that are no longer running
    (e.g. a killed ``capsim run --stream``); returns how many."""
    n = 0
    pat = re.compile(r"^\..+\.(\d+)(?:[-.][0-9a-z]+)?\.tmp$")
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for p in entries:
        m = pat.match(p.name)
        if m and not pid_alive(int(m.group(1))) and p.is_file():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def recover(out: Path) -> None:
    """Repair ``out`` after a killed writer: an old set renamed aside but not replaced is renamed back; staging
    and old folders of dead processes are deleted; stale temporary files inside ``out`` are removed."""
    out = Path(out)
    for kind, pid, path in sorted(_leftovers(out), key=lambda x: x[0] != "old"):
        if pid_alive(pid) and pid != os.getpid():
            continue
        if kind == "old" and not out.exists():
            os.rename(path, out)  # the kill fell between the two renames of the fallback swap
            continue
        # a previous set whose nested folders were not carried over yet (a staged set has none)
        if out.is_dir() and not _carry_over(path, out):
            continue
        shutil.rmtree(path, ignore_errors=True)
    if out.is_dir():
        remove_stale_temporaries(out)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _check_target(out: Path) -> None:
    """Refuse a path that is a file, or the working folder or one above it."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileError(out, "exists and is not a folder")
    cwd = Path.cwd().resolve()
    real = out.resolve()
    if real == cwd or real in cwd.parents:
        raise FileError(out, "is the working folder (or contains it); give a result folder of its own")


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a capsim result folder (or is the working folder)."""
    if not out.exists():
        return
    _check_target(out)
    if (out / MANIFEST).is_file():
        return
    foreign = [p.name for p in out.iterdir() if not (p.is_dir() or p.name.endswith(_KNOWN_SUFFIXES))]
    if foreign:
        raise FileError(out, f"exists and holds files capsim did not write (e.g. {sorted(foreign)[0]!r}); "
                        "choose a new or empty folder")


def _absolute(out: Path) -> Path:
    """``out`` as an absolute path without ``.``/``..`` parts (symlinks kept), so ``--out .`` has a name."""
    path = Path(os.path.abspath(out))
    if not path.name:
        raise FileError(out, "is the root folder; give a result folder of its own")
    return path


def write_manifest(folder: Path, run_id: str) -> dict:
    """``manifest.json``: the run id and every file's size and SHA-256 (the complete set of one run)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            files[p.relative_to(folder).as_posix()] = {"bytes": p.stat().st_size, "sha256": h.hexdigest()}
    manifest = {"run_id": run_id, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the lock of result folder ``out``; a second holder fails with one line (FileError)."""
    out = _absolute(out)
    lock_path, _, _ = _names(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise FileError.from_os(exc, out.parent) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileError(out, "another capsim command is writing this folder right now (lock "
                            f"{lock_path.name}); wait for it or choose another --out") from None
        yield
    finally:
        os.close(fd)


@contextmanager
def result_folder(out: Path) -> Iterator[Path]:
    """Yield a staging folder to write a complete result set into; on success it replaces ``out`` in one
    atomic step (see the module docstring). On any exception (Ctrl-C, SIGTERM, disk full) the staging folder
    is deleted and ``out`` is left as it was."""
    out = _absolute(out)
    try:
        _check_target(out)
    except OSError as exc:
        raise FileError.from_os(exc, out) from None
    with locked(out):
        try:
            recover(out)
            _check_replaceable(out)
        except OSError as exc:
            raise FileError.from_os(exc, out) from None
        _, tmp_prefix, old_prefix = _names(out)
        staging = Path(f"{tmp_prefix}{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
        except OSError as exc:
            raise FileError.from_os(exc, out.parent) from None
        try:
            yield staging
            write_manifest(staging, uuid.uuid4().hex)
            previous = _swap_in(staging, out, Path(f"{old_prefix}{os.getpid()}"))
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise FileError.from_os(exc, Path(exc.filename) if exc.filename else out) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _discard_previous(previous, out)


def _swap_in(staging: Path, out: Path, old: Path) -> Path | None:
    """Put the complete set ``staging`` in place of ``out``; return where the previous set now is (or None)."""
    if not out.exists():
        os.rename(staging, out)
        return None
    if _exchange(staging, out):
        return staging  # now holds the previous set
    os.rename(out, old)
    os.rename(staging, out)
    return old


def _carry_over(previous: Path, out: Path) -> bool:
    """Move folders nested in the previous set (other commands' results, e.g. ``out/size/`` or
    ``out/sweeps/``: never part of a set) into the new ``out``, merging entry by entry where the new ``out``
    already has one (its entries win). Returns whether everything was carried."""
    ok = True
    for entry in list(previous.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        target = out / entry.name
        try:
            if not target.exists():
                os.rename(entry, target)
            elif target.is_dir():
                ok = _merge(entry, target) and ok
        except OSError:
            ok = False
    return ok


def _merge(src: Path, dst: Path) -> bool:
    ok = True
    for entry in list(src.iterdir()):
        target = dst / entry.name
        try:
            if not target.exists():
                os.rename(entry, target)
            elif entry.is_dir() and target.is_dir() and not entry.is_symlink():
                ok = _merge(entry, target) and ok
        except OSError:
            ok = False
    return ok


def _discard_previous(previous: Path | None, out: Path) -> None:
    """After the swap: carry nested folders over, then delete the previous set (kept if carrying failed; the
    next writer retries)."""
    if previous is None:
        return
    if _carry_over(previous, out):
        shutil.rmtree(previous, ignore_errors=True)
