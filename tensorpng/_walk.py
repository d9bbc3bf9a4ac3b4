"""Input folders of the commands that read every PNG under a folder (``pack-npz``, ``gallery``).

A folder of samples may hold more than files: a named pipe (FIFO) whose ``open`` blocks until
some writer appears, so a reader hangs forever; a socket or a device; a symbolic link to
nothing. Only regular files are read (a symbolic link is followed when it ends at a regular
file, as a dataset of links into a shared store is common); everything else is skipped and
named, so the caller can say what was left out. A file is opened without blocking and
checked again on its descriptor, as a regular file may be swapped for a pipe between the
walk and the read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import MissingFileError, ReadError

_SHOWN = 5  # skipped entries named in a message; the rest are counted


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not read (None: a regular file, or a symbolic link to one)."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return error.strerror or str(error)
    if stat.S_ISREG(info.st_mode):
        return None
    if not stat.S_ISLNK(info.st_mode):
        return _kind(info.st_mode)
    try:
        target = os.stat(path)
    except OSError:
        return "a symbolic link to nothing (dangling)"
    return None if stat.S_ISREG(target.st_mode) else f"a symbolic link to {_kind(target.st_mode)}"


def regular_files(root: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """The regular files under ``root`` whose names end in ``suffixes`` (any case; hidden files
    and folders skipped, as the temporary files of atomic writers are hidden), sorted by
    relative POSIX path; and each entry left out (``"relative/path: why"``), in walk order."""
    found: list[Path] = []
    skipped: list[str] = []

    def unreadable(error: OSError) -> None:  # os.walk skips a folder it cannot list: say so
        where = os.path.relpath(error.filename, root) if error.filename else str(root)
        skipped.append(f"{where}: {error.strerror or error}")

    for directory, folders, files in os.walk(root, onerror=unreadable):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            path = Path(directory, name)
            why = not_regular(path)
            if why is None:
                found.append(path)
            else:
                skipped.append(f"{path.relative_to(root).as_posix()}: {why}")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix()), skipped


def skipped_message(root: Path, skipped: list[str]) -> str:
    """One line naming what :func:`regular_files` left out (the first few, then a count)."""
    shown = "; ".join(skipped[:_SHOWN]) + (
        f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    )
    entries = "entry" if len(skipped) == 1 else "entries"
    return f"skipped {len(skipped)} {entries} under {root} that are not regular files: {shown}"


def check_regular(descriptor: int, label: object, hint: str = "") -> None:
    """Raise :class:`ReadError` unless the open ``descriptor`` is a regular file: a device
    (``/dev/zero``) never ends, a pipe may block forever."""
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        raise ReadError(f"cannot read {label}: it is {_kind(mode)}, not a regular file{hint}")


def open_regular(path: Path) -> BinaryIO:
    """``path`` open for reading, refused unless it is a regular file (checked on the open
    descriptor, so a pipe swapped in since the walk cannot block the read).

    Raises:
        MissingFileError: ``path`` does not exist (or is a dangling link).
        ReadError: it cannot be opened, or it is no regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist (anymore)") from None
    except OSError as error:
        raise ReadError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        check_regular(descriptor, path)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
