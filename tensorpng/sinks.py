"""Internal: sinks, where ``save`` and :class:`~tensorpng.Writer` put their files (a local
folder or an fsspec URL).

A name given to a sink is relative to its root and has already been checked to stay inside
it. Each sink writes a file completely or not at all:

- ``LocalSink``: temporary file + ``os.replace`` (:func:`write_atomic`); ``save`` uses one
  with an empty root, so its names are paths as the caller gave them.
- ``FsspecSink``: object stores (S3, GCS, Azure) make an object visible only once its upload
  completed, so bytes are put directly; other file systems get a temporary name and a move.
"""

from __future__ import annotations

import errno
import itertools
import os
import posixpath
import re
import secrets
import threading
from collections.abc import Iterable
from contextlib import suppress
from types import ModuleType
from typing import Any, Protocol

from .errors import OptionError, TargetExistsError, WriteError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, `clean` goes by age alone
    fcntl = None

TEMP_SUFFIX = ".tmp"

OBJECT_STORE_PROTOCOLS = frozenset(("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"))


class Sink(Protocol):
    """Where files go: ``write(name, data, overwrite)`` with ``name`` relative to the root."""

    root: str

    def write(self, name: str, data: bytes, overwrite: bool) -> int: ...

    def check_absent(self, names: list[str]) -> None: ...


class LocalSink:
    """Files under a local folder (``""``: names are paths), written atomically."""

    def __init__(self, root: str | os.PathLike[str] = "") -> None:
        self.root = os.fspath(root)

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        if not self.root:  # save(): the caller's own paths, symlinks followed
            return write_atomic(name, data, overwrite=overwrite)
        # A Writer's root: confine the write at the moment of writing (a symlink below the
        # root, even one made after the name was checked, is refused, not followed)
        from ._confined import open_parent

        dir_fd, leaf = open_parent(self.root, name)
        try:
            return _write_in(dir_fd, "", leaf, data, overwrite=overwrite, label=os.path.join(self.root, name))
        finally:
            os.close(dir_fd)

    def check_absent(self, names: list[str]) -> None:
        check_targets([os.path.join(self.root, name) for name in names], overwrite=False)


class FsspecSink:
    """Files under an fsspec URL such as ``s3://bucket/run`` or ``memory://run``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:
            raise OptionError(
                f"writing to {url!r} needs fsspec: pip install 'tensorpng[s3]' "
                "(fsspec and s3fs), or pass a local folder"
            ) from None
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self.atomic_put = bool(protocols & OBJECT_STORE_PROTOCOLS)

    def _full(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        path = self._full(name)
        if overwrite:
            return self._put(path, data, create=False)
        # overwrite=False: check and write under a lock per name, so that writers in this
        # process never both write one name; across processes the put itself is conditional
        # (mode="create": S3 If-None-Match, memory and local "xb") where the store has it.
        with _name_lock(path):
            if self.fs.exists(path):
                raise TargetExistsError(f"{path} exists and overwrite=False")
            return self._put(path, data, create=True)

    def _put(self, path: str, data: bytes, create: bool) -> int:
        parent = posixpath.dirname(path)
        try:
            if self.atomic_put:
                self.fs.pipe_file(path, data, mode="create" if create else "overwrite")
            else:
                if parent:
                    self.fs.makedirs(parent, exist_ok=True)
                temp = posixpath.join(parent, temporary_name(posixpath.basename(path)))
                try:
                    self.fs.pipe_file(temp, data)
                    if create and self.fs.exists(path):
                        raise FileExistsError(path)
                    self.fs.mv(temp, path)
                finally:
                    if self.fs.exists(temp):
                        self.fs.rm(temp)
        except FileExistsError:
            raise TargetExistsError(f"{path} exists and overwrite=False") from None
        except Exception as error:
            raise WriteError(f"cannot write {self.fs.unstrip_protocol(path)}: {error}") from error
        return len(data)

    def url(self, name: str) -> str:
        """The URL of ``name`` (what ``save`` returns for URL targets)."""
        return str(self.fs.unstrip_protocol(self._full(name)))

    def check_absent(self, names: list[str]) -> None:
        existing = [name for name in names if self.fs.exists(self._full(name))]
        if existing:
            raise TargetExistsError(
                f"{', '.join(existing[:3])} exist(s) under {self.root} and overwrite=False"
            )


_NAME_LOCKS = tuple(threading.Lock() for _ in range(64))


def _name_lock(path: str) -> threading.Lock:
    """One of a few locks, chosen by name: writes of one name in this process are serialized."""
    return _NAME_LOCKS[hash(path) % len(_NAME_LOCKS)]


def open_sink(root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Sink:
    """A sink for a local folder, a ``file://`` URL, or another fsspec URL."""
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        return FsspecSink(text, storage_options)
    return LocalSink(text.removeprefix("file://"))


def _describe_os_error(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if error.errno == errno.EFBIG:
        return "the file is larger than this process may write (RLIMIT_FSIZE)"
    return error.strerror or str(error)


def write_atomic(path: str | os.PathLike[str], data: bytes | memoryview, *, overwrite: bool = True) -> int:
    """Write ``data`` to ``path`` so that ``path`` is either complete or untouched.

    The bytes go to a temporary file (:func:`temporary_name`) beside ``path`` (dot-prefixed,
    so readers skip it; it is removed on failure), then the file is moved into place.
    Returns the bytes written.

    Raises:
        TargetExistsError: ``overwrite=False`` and ``path`` exists.
        WriteError: the write failed (disk full, permissions, ...); nothing is left behind.
    """
    target = os.fspath(path)  # strings, not pathlib: this runs once a file, on the caller
    directory, name = os.path.split(target)
    return _write_in(None, directory, name, data, overwrite=overwrite, label=target)


def _write_in(
    dir_fd: int | None, directory: str, name: str, data: bytes | memoryview, *, overwrite: bool, label: str
) -> int:
    """:func:`write_atomic` of ``name`` in ``directory``, or, with ``dir_fd``, in the folder
    open as ``dir_fd`` (every path below is then relative to that descriptor, openat-style)."""
    file = TempFile(directory, name, dir_fd=dir_fd, label=label)
    try:
        file.write(data)
        file.move_into_place(overwrite)
    except BaseException:
        file.remove()
        raise
    return len(data)


class TempFile:
    """A file written under a :func:`temporary_name` beside its target, then moved into place:
    the target is complete or untouched. Used by :func:`write_atomic` (one write) and by
    animations (appended frame by frame, then patched).

    ``directory``/``name``: the target; with ``dir_fd``, ``name`` is relative to that open
    folder (openat-style, the Writer's confined writes) and ``directory`` is ignored; without
    it, a missing ``directory`` is created. ``label`` names the target in messages. ``lock``:
    hold an advisory lock (``flock``) until the file is moved or removed, which
    :func:`in_use` sees (the kernel drops it when the process dies, however it dies).
    """

    def __init__(
        self, directory: str, name: str, *, dir_fd: int | None, label: str, lock: bool = False
    ) -> None:
        temp_name = temporary_name(name)
        self.temp = temp_name if dir_fd is not None else os.path.join(directory, temp_name)
        self.target = name if dir_fd is not None else os.path.join(directory, name)
        self.label, self._dir_fd = label, dir_fd
        try:
            try:
                self._descriptor: int | None = os.open(self.temp, _WRITE_FLAGS, 0o666, **_at(dir_fd))
            except FileNotFoundError:  # the folder is missing: make it (once, not per file)
                if dir_fd is not None:
                    raise
                os.makedirs(directory or os.curdir, exist_ok=True)
                self._descriptor = os.open(self.temp, _WRITE_FLAGS, 0o666)
        except OSError as error:
            raise WriteError(f"cannot write {label}: {_describe_os_error(error)}") from error
        if lock and fcntl is not None:  # a long write (an animation): `clean` leaves it alone
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new (O_EXCL): never held

    def write(self, data: bytes | memoryview, offset: int | None = None) -> None:
        """Write all of ``data`` at the end (or at ``offset``); on failure, remove the file."""
        assert self._descriptor is not None
        try:
            if offset is not None:
                os.lseek(self._descriptor, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(self._descriptor, view) :]
        except OSError as error:
            self.remove()
            raise WriteError(
                f"cannot write {self.label}: {_describe_os_error(error)}; no partial file was left"
            ) from error

    def move_into_place(self, overwrite: bool) -> None:
        """Close the file and move it to the target (``overwrite=False``: only where no file
        is, atomically where the file system has hard links); on failure, remove it."""
        try:
            self._close()
            if overwrite:
                os.replace(self.temp, self.target, **_at2(self._dir_fd))  # replaces a symlink itself
            else:
                _link_no_clobber(self.temp, self.target, self._dir_fd)
        except FileExistsError:
            self.remove()
            raise TargetExistsError(f"{self.label} exists and overwrite=False") from None
        except OSError as error:
            self.remove()
            raise WriteError(
                f"cannot write {self.label}: {_describe_os_error(error)}; no partial file was left"
            ) from error

    def remove(self) -> None:
        """Close and remove the temporary file; safe to call twice."""
        with suppress(OSError):
            self._close()
        _remove(self.temp, self._dir_fd)

    def _close(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_temp_counter = itertools.count()
_PROCESS_TAG = secrets.token_hex(4)
# Every temporary file tensorpng makes is named by temporary_name(), and `tensorpng clean`
# removes only names of exactly this form (the "tpng-" marker keeps it off other tools' files).
TEMP_NAME = re.compile(r"^\..+\.tpng-[0-9a-f]{9,}-[0-9]+\.tmp$", re.DOTALL)
_process_prefix = f"{_PROCESS_TAG}{os.getpid():x}-"  # kept, not a getpid() call per file


def _refresh_prefix_after_fork() -> None:
    global _process_prefix
    _process_prefix = f"{_PROCESS_TAG}{os.getpid():x}-"


os.register_at_fork(after_in_child=_refresh_prefix_after_fork)


def temporary_name(name: str) -> str:
    """The temporary file name for a file ``name``: ``.NAME.tpng-TAG-N.tmp``, dot-prefixed
    (readers skip it), unique to this process (a random tag and the pid) and this write (a
    counter). ``O_EXCL`` still refuses a name that exists, so a clash fails, never overwrites.

    NAME_MAX (255 bytes) must hold the tag and the dots too: at most 120 bytes of ``name``
    are kept, cut at a character boundary (a cut by characters fails on long non-ASCII names).
    """
    short = os.fsencode(name)[:120].decode("utf-8", "ignore") if len(name) > 30 else name
    return f".{short}.tpng-{_process_prefix}{next(_temp_counter)}{TEMP_SUFFIX}"


def _at(dir_fd: int | None) -> dict[str, Any]:
    """``dir_fd=`` only when given (plain calls stay plain: tests and platforms without it)."""
    return {} if dir_fd is None else {"dir_fd": dir_fd}


def _at2(dir_fd: int | None) -> dict[str, Any]:
    return {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}


def _link_no_clobber(temp: str, path: str, dir_fd: int | None = None) -> None:
    try:
        os.link(temp, path, **_at2(dir_fd))  # atomic, fails if path exists
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if lexists(path, dir_fd):  # a file system without hard links: check, then replace
            raise FileExistsError(path) from None
        os.replace(temp, path, **_at2(dir_fd))
        return
    _remove(temp, dir_fd)


def lexists(path: str, dir_fd: int | None) -> bool:
    """Whether ``path`` (in the folder ``dir_fd``, if given) exists; a link counts as itself."""
    try:
        os.lstat(path, **_at(dir_fd))
    except OSError:
        return False
    return True


def _remove(path: str, dir_fd: int | None = None) -> None:
    with suppress(OSError):
        os.unlink(path, **_at(dir_fd))


def check_targets(paths: Iterable[str | os.PathLike[str]], overwrite: bool) -> None:
    """Raise :class:`TargetExistsError` before anything is written when a target exists."""
    if overwrite:
        return
    existing = [os.fspath(p) for p in paths if os.path.lexists(p)]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise TargetExistsError(f"{', '.join(existing[:3])}{more} exist(s) and overwrite=False")


def target_sink(path: str, storage_options: dict[str, Any] | None = None) -> tuple[Sink, str]:
    """``save``'s target as a sink and a name template relative to it: a local path stays as
    given (a sink with an empty root), a URL splits at its last folder without fields."""
    if "://" not in path or path.startswith("file://"):
        return LocalSink(), path.removeprefix("file://")
    head = path[: path.find("{")] if "{" in path else path
    folder = head.rsplit("/", 1)[0]
    return FsspecSink(folder, storage_options), path[len(folder) + 1 :]


def in_use(path: str | os.PathLike[str]) -> bool:
    """Whether a live process holds the lock of a :class:`TempFile` made with ``lock=True``
    (False where ``flock`` does not exist)."""
    if fcntl is None:
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)  # also releases our own lock, if we took it
    return False
