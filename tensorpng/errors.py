"""Internal module; its public names are re-exported by ``tensorpng``.

The one exception family of tensorpng.

Every error the library raises on bad input derives from :class:`TensorPNGError`; each
concrete error also derives from the builtin that fits (``ValueError`` or ``TypeError``),
so ``except ValueError`` keeps working in code that predates this library.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class TensorPNGError(Exception):
    """Base class of every error raised by tensorpng."""


class ShapeError(TensorPNGError, ValueError):
    """The input's shape cannot be read as an image (or batch of images) of the given layout."""


class DTypeError(TensorPNGError, TypeError):
    """The input's type or dtype is not supported."""


class OptionError(TensorPNGError, ValueError):
    """An option has a value that is not allowed (or that conflicts with the input)."""


class UnknownOptionError(OptionError, TypeError):
    """A public function got a keyword it does not take (the message suggests the closest);
    a ``TypeError`` as Python's own would be, and an :class:`OptionError`."""


class ValueRangeError(TensorPNGError, ValueError):
    """The input's values cannot be mapped to PNG samples as asked (e.g. negative integers)."""


class TargetExistsError(TensorPNGError, FileExistsError):
    """A target file exists and ``overwrite=False`` was given."""


class PathError(TensorPNGError, ValueError):
    """A file name template is malformed or would resolve outside its root folder."""


class WriteError(TensorPNGError, OSError):
    """Writing a file failed (disk full, permission denied, ...); no partial file was left."""


class ForkedWriterError(TensorPNGError, RuntimeError):
    """A :class:`~tensorpng.Writer` was used in a process forked from the one that made it."""


class QueueFullError(TensorPNGError, RuntimeError):
    """A :class:`~tensorpng.Writer` with ``on_full="error"`` had no room for more work."""


class DecodeError(TensorPNGError, ValueError):
    """A file is not a PNG that tensorpng reads: not a PNG, corrupt, past a size limit, or
    no installed decoder reads it."""


class LoadError(TensorPNGError, ValueError):
    """A tensor file could not be loaded (unsupported, corrupt, unsafe or too large)."""


class OutOfMemoryError(TensorPNGError, MemoryError):
    """An input too large for the memory available (also a ``MemoryError``)."""


def out_of_memory(function: str) -> OutOfMemoryError:
    """The error for a ``MemoryError`` inside the public ``function``."""
    return OutOfMemoryError(
        f"{function}() ran out of memory for this input; pass fewer or smaller images at a time "
        "(a broadcast or expanded view counts at its full size), or free memory"
    )


def names_memory_errors(label: str) -> Callable[[F], F]:
    """Decorate a public function: a raw ``MemoryError`` from inside it becomes an
    :class:`OutOfMemoryError` naming ``label`` (still a ``MemoryError``)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except MemoryError as error:
                if isinstance(error, TensorPNGError):
                    raise
                raise out_of_memory(label) from error

        return wrapper  # type: ignore[return-value]

    return decorate


class RecordWarning(UserWarning):
    """A PNG's ``tensorpng`` record was malformed or did not match the image: it was ignored
    and :func:`tensorpng.load` returned the raw samples."""


class ReadError(TensorPNGError, OSError):
    """Reading an input file failed (permission denied, a folder, an I/O error)."""


class MissingFileError(ReadError, FileNotFoundError):
    """An input file does not exist."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


PendingWarnings = list[tuple[str, type[Warning]]]
_thread = threading.local()


def defer_warnings(pending: PendingWarnings) -> None:
    """From now on, this thread's :func:`warn_user` warnings go to ``pending`` (a worker
    thread has no caller's line to point at); :func:`replay_warnings` issues them later, on
    the caller's thread."""
    _thread.pending = pending


def replay_warnings(pending: PendingWarnings, issued: set[tuple[str, type[Warning]]]) -> None:
    """Issue the deferred warnings, at the caller's line: each text once per ``issued`` set (a
    loop's saves replay at several lines, which Python's filter would each show once)."""
    while pending:
        message, category = pending.pop(0)
        if (message, category) not in issued:
            issued.add((message, category))
            warn_user(message, category)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the caller's line, outside tensorpng (not at the library
    frame that noticed the problem), whatever the depth of the call."""
    pending: PendingWarnings | None = getattr(_thread, "pending", None)
    if pending is not None:
        pending.append((message, category))
        return
    level = 2  # 1 is this function; 2 its caller, the first frame looked at
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)
