"""Sinks: where a :class:`~tensorpng.Writer` puts its files (a local folder or an fsspec URL).

A name given to a sink is relative to its root and has already been checked to stay inside
it. Each sink writes a file completely or not at all:

- ``LocalSink``: temporary file + ``os.replace`` (see :func:`tensorpng.files.write_atomic`).
- ``FsspecSink``: object stores (S3, GCS, Azure) make an object visible only once its upload
  completed, so bytes are put directly; other file systems get a temporary name and a move.
"""

from __future__ import annotations

import os
import posixpath
import secrets
from pathlib import Path
from typing import Any, Protocol

from .errors import OptionError, TargetExistsError, WriteError
from .files import check_targets, write_atomic

OBJECT_STORE_PROTOCOLS = frozenset(("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"))


class Sink(Protocol):
    """Where files go: ``write(name, data, overwrite)`` with ``name`` relative to the root."""

    root: str

    def write(self, name: str, data: bytes, overwrite: bool) -> int: ...

    def check_absent(self, names: list[str]) -> None: ...


class LocalSink:
    """Files under a local folder, written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._root_path = Path(self.root)

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        return write_atomic(self._root_path / name, data, overwrite=overwrite)

    def check_absent(self, names: list[str]) -> None:
        check_targets([self._root_path / name for name in names], overwrite=False)


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
        if not overwrite and self.fs.exists(path):
            raise TargetExistsError(f"{path} exists and overwrite=False")
        parent = posixpath.dirname(path)
        try:
            if self.atomic_put:
                self.fs.pipe_file(path, data)
            else:
                if parent:
                    self.fs.makedirs(parent, exist_ok=True)
                temp = posixpath.join(parent, f".{posixpath.basename(path)}.{secrets.token_hex(6)}.tmp")
                try:
                    self.fs.pipe_file(temp, data)
                    self.fs.mv(temp, path)
                finally:
                    if self.fs.exists(temp):
                        self.fs.rm(temp)
        except TargetExistsError:
            raise
        except Exception as error:
            raise WriteError(f"cannot write {self.fs.unstrip_protocol(path)}: {error}") from error
        return len(data)

    def check_absent(self, names: list[str]) -> None:
        existing = [name for name in names if self.fs.exists(self._full(name))]
        if existing:
            raise TargetExistsError(
                f"{', '.join(existing[:3])} exist(s) under {self.root} and overwrite=False"
            )


def open_sink(root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Sink:
    """A sink for a local folder, a ``file://`` URL, or another fsspec URL."""
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        return FsspecSink(text, storage_options)
    return LocalSink(text.removeprefix("file://"))
