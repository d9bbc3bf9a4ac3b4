"""Deflate one big buffer on several cores, as one valid zlib stream (the pigz technique).

A zlib stream is a 2-byte header, deflate blocks, and the Adler-32 of the uncompressed
bytes. Deflate blocks need not end on a byte boundary, and only the last one carries the
"final" bit; but a *sync flush* ends the blocks so far with an empty stored block, which
leaves the stream byte-aligned with the final bit unset. So the buffer is cut into slices,
each slice is deflated by its own compressor (raw deflate, no header) that ends with a sync
flush (the last one: with a finish), and the outputs are concatenated behind one header.
Each slice is deflated with no history from the one before: a few hundred bytes lost per
slice (under 0.1% on a 1 MiB slice), in exchange for independent work that runs on one
thread per slice with the GIL released. The Adler-32 values of the slices are combined
with the arithmetic below (zlib's ``adler32_combine``, which Python does not expose).

Used by :func:`tensorpng.png.finish_png` for images above :data:`PARALLEL_MIN_BYTES`.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from types import ModuleType

_isal_zlib: ModuleType | None
try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised by a subprocess test with isal hidden
    _isal_zlib = None

_ADLER_BASE = 65521  # the largest prime below 2**16
PARALLEL_MIN_BYTES = 4 << 20  # below ~4 MiB a deflate takes ~10 ms: threads would not pay
SLICE_BYTES = 1 << 20  # per task; small enough to balance 2-16 cores, big enough to lose < 0.1%

_pool: ThreadPoolExecutor | None = None
_pool_lock = Lock()


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def shared_pool() -> ThreadPoolExecutor:
    """One thread per core, for work that releases the GIL and never waits on this pool."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(cpu_count(), 1), thread_name_prefix="tensorpng-deflate")
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: it makes its own pool (and lock)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, Lock()


# Not tensorpng.files' pool: its threads call finish_png, and would wait here on themselves.
os.register_at_fork(after_in_child=_forget_pool_after_fork)


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of ``a + b`` from ``adler32(a)``, ``adler32(b)`` and ``len(b)``.

    Adler-32 is ``B << 16 | A`` with ``A = 1 + sum(bytes)`` and ``B = sum of A after each
    byte``, both mod 65521. Appending ``b`` adds ``A_b - 1`` to A; B gains ``B_b`` plus
    ``A_a - 1`` once per byte of ``b`` (each running A over ``b`` starts from ``A_a``, not 1).
    """
    a_first, b_first = first & 0xFFFF, first >> 16
    a_second, b_second = second & 0xFFFF, second >> 16
    a_total = (a_first + a_second - 1) % _ADLER_BASE
    b_total = (b_first + b_second + (second_length % _ADLER_BASE) * (a_first - 1)) % _ADLER_BASE
    return (b_total << 16) | a_total


def _deflate_slice(data: memoryview, level: int, window_bits: int, last: bool) -> tuple[bytes, int]:
    """Raw deflate of ``data`` ending byte-aligned (sync flush) or final, and its Adler-32."""
    if _isal_zlib is not None:
        compressor = _isal_zlib.compressobj(level, _isal_zlib.DEFLATED, -window_bits)
        flush = _isal_zlib.Z_FINISH if last else _isal_zlib.Z_SYNC_FLUSH
        checksum = _isal_zlib.adler32(data)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
        flush = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
        checksum = zlib.adler32(data)
    return compressor.compress(data) + compressor.flush(flush), checksum


def slice_bounds(size: int, unit: int, slice_bytes: int = SLICE_BYTES) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive slices of ``size`` bytes, cut at multiples of ``unit``
    (a scanline, so that a slice's matches stay within whole rows) of about ``slice_bytes``."""
    step = max(unit, slice_bytes // unit * unit)
    return [(start, min(start + step, size)) for start in range(0, size, step)] or [(0, 0)]


def _zlib_header(level: int, window_bits: int) -> bytes:
    """CMF and FLG of RFC 1950: deflate with a ``2**window_bits`` window, and a level hint."""
    cmf = 0x08 | ((window_bits - 8) << 4)
    flevel = 0 if level <= 1 else (1 if level < 6 else (2 if level == 6 else 3))
    flg = flevel << 6
    flg |= 31 - ((cmf << 8) | flg) % 31  # FCHECK: CMF*256 + FLG is a multiple of 31
    return bytes((cmf, flg))


def deflate_parallel(
    data: memoryview | bytes,
    *,
    unit: int = 1,
    level: int = 1,
    window_bits: int = 15,
    workers: int | None = None,
    slice_bytes: int = SLICE_BYTES,
) -> bytes:
    """A zlib stream (RFC 1950) of ``data``, deflated in slices on ``workers`` threads.

    Args:
        data: the bytes to compress (a C-contiguous buffer).
        unit: slices are cut at multiples of this many bytes (a PNG scanline).
        level: compression level (ISA-L: 0-3; zlib without ``isal``: 0-9).
        window_bits: log2 of the match window, 9 to 15; written into the header.
        workers: threads (default: one per core, from a pool shared by all calls).
        slice_bytes: about how many bytes each slice holds.

    Returns:
        Bytes that ``zlib.decompress`` turns back into ``data``.
    """
    view = memoryview(data).cast("B")
    bounds = slice_bounds(len(view), unit, slice_bytes)
    last = len(bounds) - 1
    jobs = [(view[start:stop], level, window_bits, i == last) for i, (start, stop) in enumerate(bounds)]
    if workers == 1 or len(jobs) == 1:
        results = [_deflate_slice(*job) for job in jobs]
    elif workers is None:
        results = list(shared_pool().map(lambda job: _deflate_slice(*job), jobs))
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda job: _deflate_slice(*job), jobs))
    checksum = 1
    for (start, stop), (_, part) in zip(bounds, results, strict=True):
        checksum = adler32_combine(checksum, part, stop - start)
    blocks = [block for block, _ in results]
    return b"".join([_zlib_header(level, window_bits), *blocks, checksum.to_bytes(4, "big")])
