"""Internal: open the folder of a name below a root without following symlinks (openat-style).

A :class:`~tensorpng.Writer`'s names are checked textually to stay inside its root, but a
symlink below the root (made before or after that check) could still send a write outside.
So at the moment of writing each folder is opened relative to the previous one with
``O_NOFOLLOW``: a symlink anywhere below the root is refused with :class:`PathError`, and
the final component is checked too. The root itself is the caller's path and is followed.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import PathError, WriteError

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _refuse_link(root: str, name: str, part: str) -> PathError:
    return PathError(
        f"cannot write {name!r} under {root}: {part!r} is a symbolic link, and a Writer does not "
        "follow links below its root (they could lead outside it); write to the link's target "
        "as the root instead, or replace the link by a folder"
    )


def open_parent(root: str, name: str) -> tuple[int, str]:
    """A descriptor of the folder holding ``name`` (relative, ``/``-separated) below ``root``,
    made where missing, and the last component of ``name``. The caller closes the descriptor.

    Raises:
        PathError: a component is ``..``, or a symbolic link (folder or final component).
        WriteError: a folder cannot be opened or made.
    """
    *folders, leaf = name.split("/")
    if not leaf or leaf in (".", "..") or ".." in folders:
        raise PathError(f"{name!r} is no file name inside {root}")
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(root, _DIR_FLAGS)
    except OSError as error:
        raise WriteError(f"cannot open the folder {root}: {error.strerror or error}") from error
    try:
        for part in folders:
            if part in ("", "."):
                continue
            fd = _enter(fd, part, root, name)
        if _is_link(leaf, fd):
            raise _refuse_link(root, name, leaf)
    except BaseException:
        os.close(fd)
        raise
    return fd, leaf


def _enter(fd: int, part: str, root: str, name: str) -> int:
    """Open ``part`` inside ``fd`` without following a link (making it when missing); closes
    ``fd`` and returns the new descriptor."""
    for _ in range(2):
        try:
            child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass  # made by another writer meanwhile: open it
            except OSError as error:
                raise WriteError(f"cannot make {part!r} under {root}: {error.strerror}") from error
            continue
        except OSError as error:
            if error.errno == errno.ELOOP or _is_link(part, fd):
                raise _refuse_link(root, name, part) from None
            raise WriteError(f"cannot open {part!r} under {root}: {error.strerror}") from error
        os.close(fd)
        return child
    raise WriteError(f"cannot open {part!r} under {root}: it keeps disappearing")


def _is_link(part: str, fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode)
    except OSError:
        return False
