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

Used by :func:`tensorpng.png.finish_png` for images above :data:`PARALLEL_MIN_BYTES`, and
(:func:`native_sliced`) to join the native encoder's streams of slices of such an image.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from types import ModuleType

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# The native encoder's streams, spliced

_PROBE_BYTES = 64  # a row whose first bytes are all zero is checked whole
_CHECKS_PER_CUT = 8  # rows checked whole near each cut, at most
_CL_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)


def native_sliced(
    lines: np.ndarray, deflate: Callable[[np.ndarray], bytes | None], *, slices: int | None = None
) -> bytes | None:
    """The zlib stream of ``H x n`` unfiltered scanline bytes, made by ``deflate`` (the native
    encoder: one complete zlib stream of the rows it is given, which it filters) on slices of
    rows on every core; None where it cannot be sliced (no all-zero row to cut after, a slice
    that ``deflate`` declines, a stream of an unexpected form): the caller deflates it whole.

    The native encoder filters an image's first row against a row of zeros, as PNG does. A
    slice that starts after an all-zero row (a grid's padding, a black band) is therefore
    filtered exactly as it is within the whole image, and its blocks decode to the same
    bytes. The streams are joined as in :func:`deflate_parallel`: the final bit of every
    slice's block but the last is cleared and an empty stored block aligns it to a byte; the
    Adler-32 values are combined. ``slices``: how many (default: one per core, of at least
    :data:`SLICE_BYTES`, deflated on the shared pool; given: deflated on this thread).
    """
    height, row_bytes = (int(n) for n in lines.shape)
    count = min(cpu_count(), lines.nbytes // SLICE_BYTES) if slices is None else slices
    starts = _starts_after_zero_rows(lines, count) if count > 1 else []
    if not starts:
        return None
    bounds = list(zip([0, *starts], [*starts, height], strict=True))
    last = len(bounds) - 1

    def slice_blocks(index: int) -> tuple[bytes, list[bytes | memoryview]] | None:
        # Parsed on the worker: its Python runs while other slices deflate without the GIL.
        start, stop = bounds[index]
        stream = deflate(lines[start:stop])
        blocks = None if stream is None else _blocks(stream, last=index == last)
        return None if stream is None or blocks is None else (stream, blocks)

    jobs = range(len(bounds))
    results = (
        list(shared_pool().map(slice_blocks, jobs)) if slices is None else [slice_blocks(i) for i in jobs]
    )
    pieces: list[bytes | memoryview] = []
    checksum = 1
    for (start, stop), result in zip(bounds, results, strict=True):
        if result is None:
            return None
        stream, blocks = result
        pieces += [stream[:2], *blocks] if not pieces else blocks  # the first slice's zlib header
        checksum = adler32_combine(
            checksum, int.from_bytes(stream[-4:], "big"), (stop - start) * (1 + row_bytes)
        )
    return b"".join([*pieces, checksum.to_bytes(4, "big")])


def _starts_after_zero_rows(lines: np.ndarray, count: int) -> list[int]:
    """Rows that follow an all-zero row, one near each ``k / count`` of the height (fewer
    where there are none), in increasing order. Each is the first row after a run of zero
    rows: a slice that began inside the run would sample its rows of zeros for its Huffman
    code (3% larger files, measured on a grid of photos)."""
    height = int(lines.shape[0])
    zero_start = np.logical_not(lines[:, :_PROBE_BYTES].any(axis=1))  # cheap: each row's first bytes
    maybe = np.flatnonzero(zero_start[:-1] & ~zero_start[1:])
    starts: list[int] = []
    least = max(1, height // (2 * count))
    for k in range(1, count):
        target = k * height // count
        nearest = maybe[np.argsort(np.abs(maybe + 1 - target), kind="stable")[:_CHECKS_PER_CUT]]
        row = next((int(r) for r in nearest if not lines[r].any()), None)
        # no slice under half its share: one of the grid's edge alone would be all zeros
        if row is not None and row + 1 - max(starts, default=0) >= least and height - row - 1 >= least:
            starts.append(row + 1)
    return starts


def _blocks(stream: bytes, *, last: bool) -> list[bytes | memoryview] | None:
    """The deflate blocks of a native zlib stream (no header, no Adler-32), for splicing:
    unchanged for the ``last`` slice, else ending byte-aligned without the final bit. None
    for a form the native encoder does not write."""
    if len(stream) < 7 or stream[0] & 0x0F != 8:
        return None
    data = memoryview(stream)[2:-4]
    kind = (data[0] >> 1) & 3
    if kind == 2:  # one dynamic Huffman block, final (nothing may follow it)
        end = _dynamic_block_end(data)
        if end is None:
            return None
        if last:
            return [data]
        # The bits after the end-of-block code are zeros: the 3-bit header (not final,
        # stored) of an empty stored block, if they are 3 or more; else one more zero byte.
        align = b"\x00" if end + 3 > 8 * len(data) else b""
        return [bytes([data[0] & 0xFE]), data[1:], align + b"\x00\x00\xff\xff"]
    if kind == 0:  # stored blocks, each header a byte of its own
        final = _final_stored_block(data)
        if final is None:
            return None
        if last:
            return [data]
        return [data[:final], bytes([data[final] & 0xFE]), data[final + 1 :]]
    return None


def _final_stored_block(data: memoryview) -> int | None:
    """Where the header byte of the final block is, in stored blocks that fill ``data``."""
    position = 0
    while position + 5 <= len(data):
        header, size, check = (
            data[position],
            int.from_bytes(data[position + 1 : position + 3], "little"),
            int.from_bytes(data[position + 3 : position + 5], "little"),
        )
        if header > 1 or size ^ check != 0xFFFF:
            return None
        if header == 1:
            return position if position + 5 + size == len(data) else None
        position += 5 + size
    return None


def _dynamic_block_end(data: memoryview) -> int | None:
    """The bit just past the end-of-block code of ``data``, one final dynamic Huffman block
    followed by zero bits up to a byte boundary; None unless exactly one position fits."""
    head = int.from_bytes(data[:640], "little")  # the block header: at most 4,500 bits
    size = 8 * min(len(data), 640)
    position = 0

    def take(bits: int) -> int:
        nonlocal position
        position += bits
        return (head >> (position - bits)) & ((1 << bits) - 1)

    if take(3) != 0b101:  # BFINAL 1, BTYPE 2
        return None
    literals, distances, code_lengths = take(5) + 257, take(5) + 1, take(4) + 4
    lengths_of_lengths = [0] * 19
    for symbol in _CL_ORDER[:code_lengths]:
        lengths_of_lengths[symbol] = take(3)
    table = _lookup_table(lengths_of_lengths, 7)
    lengths: list[int] = []
    while len(lengths) < literals + distances and position <= size:
        entry = table[(head >> position) & 0x7F]
        if entry is None:
            return None
        symbol, bits = entry
        position += bits
        if symbol < 16:
            lengths.append(symbol)
        elif symbol == 16 and lengths:
            lengths += [lengths[-1]] * (3 + take(2))
        elif symbol == 17:
            lengths += [0] * (3 + take(3))
        elif symbol == 18:
            lengths += [0] * (11 + take(7))
        else:
            return None
    if len(lengths) != literals + distances or not lengths[256]:
        return None
    width = lengths[256]
    code = _canonical_code(lengths[:literals], 256)
    wanted = int(format(code, f"0{width}b")[::-1], 2)  # codes go into the stream from their top bit
    total = 8 * len(data)
    tail = int.from_bytes(data[-4:], "little")  # the last 32 bits; the code is at most 15 long
    ends = [
        end
        for end in range(total - 7, total + 1)
        if tail >> (end - total + 32) == 0
        and (tail >> (end - width - total + 32)) & ((1 << width) - 1) == wanted
    ]
    return ends[0] if len(ends) == 1 else None


def _canonical_code(lengths: list[int], symbol: int) -> int:
    """The Huffman code of ``symbol`` in the canonical code of ``lengths`` (RFC 1951 3.2.2)."""
    code = 0
    for bits in range(1, lengths[symbol]):
        code = (code + lengths.count(bits)) << 1
    return code + sum(1 for length in lengths[:symbol] if length == lengths[symbol])


def _lookup_table(lengths: list[int], bits: int) -> list[tuple[int, int] | None]:
    """For every ``bits``-bit value read from the stream: the symbol whose code it starts
    with, and the code's length."""
    table: list[tuple[int, int] | None] = [None] * (1 << bits)
    for symbol, length in enumerate(lengths):
        if length:
            reversed_code = int(format(_canonical_code(lengths, symbol), f"0{length}b")[::-1], 2)
            for high in range(1 << (bits - length)):
                table[reversed_code | high << length] = (symbol, length)
    return table
