"""Internal module.

PNG encoding in torch operations, batched: on a GPU only compressed bytes leave the device.

Written with plain torch operations, so the same code runs on CUDA tensors in production and
on CPU tensors in tests. For a batch ``N x H x W x C`` of uint8/uint16 samples:

1. Scanlines: 16-bit samples as big-endian bytes; per image the filter (None, Sub, Up or
   Average) with the smallest sum of absolute signed residuals, with its type byte per row.
2. Tokens: every byte is a literal, except in runs of equal bytes (of any value): after
   the run's first byte, a literal, each full 258 repeats become one match (length 258,
   distance 1), as fpnge does for zeros; a remaining tail of 3 to 257 repeats becomes one
   match of its length (codes 257..284 with their extra bits), and a shorter tail stays
   literals.
3. One dynamic-Huffman deflate block per image. Code lengths: ``ceil(log2(total/f) - t)``
   clamped to 1..15, with ``t`` found by bisection as the largest offset whose Kraft sum is
   at most 1 (within a few percent of Huffman's optimum, and fully parallel); the remaining
   Kraft slack is spent shortening the most frequent of the longest codes by one bit, from
   length 15 down, until the code is complete (Kraft sum exactly 1), as zlib's inflate
   requires. Unused symbols get no code. The code-length code is fixed (symbols 0..15 at 4
   bits).
4. An exclusive prefix sum of the tokens' bit lengths gives each token its bit offset; the
   tokens, at most 16 bits each, are added into 32-bit words (their bits never overlap).
5. Adler-32 of the scanlines, by weighted sums modulo 65521.

Only the packed bytes (their lengths first) and the Adler-32 values are copied to the host,
where the zlib header and the PNG chunks and CRC-32 are added (:mod:`tensorpng._png_chunks`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._png_chunks import MAX_DIMENSION, SIGNATURE, ihdr, png_bytes
from ._png_text import text_chunks
from .arrays import torch_module
from .errors import DTypeError, OptionError, ShapeError
from .png import COLOR_TYPES

LITERALS = 256
END_OF_BLOCK = 256
MATCH_258 = 285  # length code for a match of 258 bytes (no extra bits)
LITLEN_SYMBOLS = 286
# Length codes 257..284 and their base lengths and extra bits (RFC 1951, 3.2.5).
TAIL_MIN = 3
TAIL_FIRST_CODE = 257
TAIL_BASE_LIST = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
    131, 163, 195, 227,
)  # fmt: skip
TAIL_EXTRA_LIST = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4
MAX_BITS = 15
MATCH_LENGTH = 258
ADLER_MOD = 65521
# Order in which the code-length code's lengths are stored (RFC 1951, 3.2.7).
CL_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
# Images per pass are chosen so that a pass handles at most this many stream bytes; each
# byte costs about 20 int64 temporaries (a 64 x 3 x 512 x 512 batch in one pass: ~8 GB).
MAX_ELEMENTS_PER_PASS = 1 << 24
ZLIB_HEADER = b"\x78\x01"  # deflate, 32K window, fastest-compression hint; (0x7801 % 31 == 0)


def _reverse_bits(values: Any, lengths: Any, torch: Any) -> Any:
    """Reverse the low ``lengths`` bits of ``values`` (deflate sends Huffman codes MSB first)."""
    result = torch.zeros_like(values)
    for bit in range(MAX_BITS):
        result |= ((values >> bit) & 1) << (MAX_BITS - 1 - bit)
    return result >> (MAX_BITS - lengths).clamp(min=0)


def _scanline_bytes(samples: Any, torch: Any) -> Any:
    """``N x H x W x C`` uint8/uint16 samples as ``N x H x n`` bytes in PNG (big-endian) order."""
    count, height = samples.shape[:2]
    if samples.dtype == torch.uint16:
        # reshape first: contiguous() may keep an odd stride on a size-1 channel axis
        rows = samples.reshape(count, height, -1).contiguous()
        as_bytes = rows.view(torch.uint8).reshape(count, height, -1, 2)
        little_endian = struct.pack("=H", 1) == b"\x01\x00"
        return (as_bytes.flip(-1) if little_endian else as_bytes).reshape(count, height, -1)
    return samples.reshape(count, height, -1)


def _filter_candidates(data: Any, bpp: int, torch: Any) -> Any:
    """Yield (type, ``N x H x n`` int16 residuals mod 256) for None, Sub, Up and Average."""
    wide = data.to(torch.int16)
    up = torch.nn.functional.pad(wide, (0, 0, 1, 0))[:, :-1]
    left = torch.nn.functional.pad(wide, (bpp, 0))[..., :-bpp]
    yield 0, wide
    yield 1, (wide - left) & 255
    yield 2, (wide - up) & 255
    yield 3, (wide - ((left + up) >> 1)) & 255


def filtered_scanlines(samples: Any) -> Any:
    """``N x H x (1+n)`` uint8 scanlines: per image the cheapest of None/Sub/Up/Average."""
    torch = torch_module()
    data = _scanline_bytes(samples, torch)
    bpp = samples.shape[-1] * samples.element_size()
    best = best_cost = best_type = None
    for kind, residual in _filter_candidates(data, bpp, torch):
        signed = torch.where(residual > 127, 256 - residual, residual)
        cost = signed.sum(dim=(1, 2), dtype=torch.int64)
        if best is None:
            best, best_cost = residual, cost
            best_type = torch.zeros_like(cost)
            continue
        better = cost < best_cost
        best = torch.where(better[:, None, None], residual, best)
        best_cost = torch.where(better, cost, best_cost)
        best_type = torch.where(better, torch.full_like(best_type, kind), best_type)
    assert best is not None and best_type is not None
    type_column = best_type[:, None, None].expand(-1, data.shape[1], 1)
    return torch.cat([type_column, best], dim=2).to(torch.uint8)


def _tokens(stream: Any, torch: Any) -> tuple[Any, Any, Any, Any]:
    """Deflate symbols for each byte of ``stream`` (``N x T`` uint8).

    A run of R equal bytes becomes one literal, ``(R-1) // 258`` matches of 258 and, when
    the tail is at least 3 bytes, one match of the tail's length; shorter tails stay
    literals. Matches use distance 1 (repeat the previous byte). Returns ``symbol`` (int64,
    -1 where a byte is covered by a match), the length's extra bits (value, count) and
    ``is_match``.
    """
    count, total = stream.shape
    # int32 positions: half the memory traffic of int64 (a stream is under 2**31 bytes)
    positions = torch.arange(total, dtype=torch.int32, device=stream.device).expand(count, total)
    bases, extras = _tables(stream.device, torch)
    repeat = torch.zeros_like(stream, dtype=torch.bool)
    repeat[:, 1:] = stream[:, 1:] == stream[:, :-1]  # equal to the byte before
    starts = ~repeat
    run_start = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
    next_start = torch.where(starts, positions, torch.full_like(positions, total))
    next_start = torch.nn.functional.pad(next_start[:, 1:], (0, 1), value=total)
    run_end = next_start.flip(1).cummin(dim=1).values.flip(1)
    offset = positions - run_start  # position within the run of equal bytes
    repeats = run_end - run_start - 1  # bytes after the run's first (literal) one
    full_matches = repeats // MATCH_LENGTH
    tail = repeats - full_matches * MATCH_LENGTH
    chunk_index = (offset - 1).div(MATCH_LENGTH, rounding_mode="floor")
    within = offset - 1 - chunk_index * MATCH_LENGTH
    in_full = repeat & (chunk_index < full_matches)
    in_tail = repeat & (chunk_index == full_matches) & (tail >= TAIL_MIN)
    is_match = (in_full | in_tail) & (within == 0)
    covered = (in_full | in_tail) & (within > 0)
    tail_code = torch.searchsorted(bases, tail.contiguous(), right=True, out_int32=True) - 1
    tail_code = tail_code.clamp(0, len(TAIL_BASE_LIST) - 1)
    symbol = stream.to(torch.int64)
    symbol = torch.where(in_full & is_match, torch.full_like(symbol, MATCH_258), symbol)
    symbol = torch.where(in_tail & is_match, TAIL_FIRST_CODE + tail_code, symbol)
    symbol = torch.where(covered, torch.full_like(symbol, -1), symbol)
    tail_start = in_tail & is_match
    extra_value = torch.where(tail_start, tail - bases[tail_code], torch.zeros_like(tail))
    extra_bits = torch.where(tail_start, extras[tail_code], torch.zeros_like(tail))
    return symbol, extra_value, extra_bits, is_match


def code_lengths(frequencies: Any) -> Any:
    """Complete, length-limited (1..15) code lengths for ``N x S`` symbol counts.

    Lengths ``ceil(log2(total / f) - t)`` clamped to 1..15, with the largest ``t`` whose
    Kraft sum is at most 1 (bisection, all images at once); the Kraft slack left is then
    spent shortening the most frequent of the longest codes. Symbols with a zero count get
    length 0. Needs at least two symbols with a nonzero count.
    """
    torch = torch_module()
    freq = frequencies.to(torch.float64)
    used = frequencies > 0
    total = freq.sum(dim=1, keepdim=True)
    information = torch.where(used, torch.log2(total / freq.clamp(min=1)), torch.zeros_like(freq))

    def lengths_at(offset: Any) -> Any:
        raw = torch.ceil(information - offset[:, None]).clamp(1, MAX_BITS)
        return torch.where(used, raw, torch.zeros_like(raw))

    low = torch.full((freq.shape[0],), -float(MAX_BITS + 2), dtype=torch.float64, device=freq.device)
    high = torch.full_like(low, 64.0)
    for _ in range(24):  # bisection: the largest offset whose code still fits (Kraft <= 1)
        middle = (low + high) / 2
        fits = kraft_units(lengths_at(middle)) <= 2**MAX_BITS
        low = torch.where(fits, middle, low)
        high = torch.where(fits, high, middle)
    lengths = lengths_at(low).to(torch.int64)
    slack = 2**MAX_BITS - kraft_units(lengths)
    # Fill the slack from the longest codes up: at length L, shorten the most frequent
    # min(count, slack // 2**(15-L)) codes by one bit. The slack is always a multiple of the
    # unit of the longest code, so it ends at exactly 0 (the code is complete).
    for length in range(MAX_BITS, 1, -1):
        unit = 1 << (MAX_BITS - length)
        at_length = lengths == length
        score = torch.where(at_length, frequencies, torch.full_like(frequencies, -1))
        rank = torch.empty_like(score).scatter_(
            1,
            score.argsort(dim=1, descending=True, stable=True),
            torch.arange(score.shape[1], device=score.device).expand_as(score),
        )
        take = torch.minimum(at_length.sum(dim=1), slack // unit)
        shorten = at_length & (rank < take[:, None])
        lengths = lengths - shorten.to(torch.int64)
        slack = slack - take * unit
    return lengths


def kraft_units(lengths: Any) -> Any:
    """Kraft sums of ``N x S`` code lengths in units of 2**-15 (length 0: no code)."""
    torch = torch_module()
    units = torch.where(lengths > 0, (1 << (MAX_BITS - lengths.to(torch.int64)).clamp(min=0)), 0)
    return units.sum(dim=1)


def canonical_codes(lengths: Any) -> Any:
    """Canonical Huffman codes (RFC 1951, 3.2.2) for ``N x S`` lengths, bit-reversed for
    deflate's LSB-first packing. Symbols of length 0 get code 0."""
    torch = torch_module()
    count, symbols = lengths.shape
    device = lengths.device
    length_ids = torch.arange(MAX_BITS + 1, device=device)
    per_length = (lengths[:, :, None] == length_ids).sum(dim=1)  # N x 16
    per_length[:, 0] = 0
    # first code of each length: code[l] = (code[l-1] + count[l-1]) << 1
    first_code = torch.zeros_like(per_length)
    for length in range(1, MAX_BITS + 1):
        first_code[:, length] = (first_code[:, length - 1] + per_length[:, length - 1]) << 1
    key = torch.where(
        lengths > 0,
        lengths * symbols + torch.arange(symbols, device=device),
        torch.full_like(lengths, 1 << 40),
    )
    order = key.argsort(dim=1)
    rank_sorted = torch.arange(symbols, device=device).expand(count, symbols)
    sorted_lengths = lengths.gather(1, order)
    first_index = torch.cumsum(per_length, dim=1) - per_length  # index of each length's first symbol
    codes_sorted = first_code.gather(1, sorted_lengths) + rank_sorted - first_index.gather(1, sorted_lengths)
    codes = torch.empty_like(codes_sorted).scatter_(1, order, codes_sorted)
    codes = torch.where(lengths > 0, codes, torch.zeros_like(codes))
    return _reverse_bits(codes, lengths, torch)


def _header_tokens(lengths: Any, torch: Any) -> tuple[Any, Any]:
    """Block header tokens (values, bit counts), ``N x K``: BFINAL, BTYPE, HLIT, HDIST, HCLEN,
    the fixed code-length code, 286 literal/length lengths and two distance lengths."""
    count = lengths.shape[0]
    device = lengths.device
    four_bit = torch.tensor([int(f"{v:04b}"[::-1], 2) for v in range(16)], device=device)
    # HDIST = 1: two distance codes (distances 1 and 2) of one bit each, a complete code;
    # matches use code 0. (A lone 1-bit code is legal but some inflaters reject it.)
    fixed = [(1 | (2 << 1), 3), (LITLEN_SYMBOLS - 257, 5), (1, 5), (len(CL_ORDER) - 4, 4)]
    fixed += [(0 if symbol >= 16 else 4, 3) for symbol in CL_ORDER]
    fixed_values = torch.tensor([v for v, _ in fixed], device=device).expand(count, -1)
    fixed_bits = torch.tensor([b for _, b in fixed], device=device).expand(count, -1)
    length_values = four_bit[lengths]
    distance_value = four_bit[torch.ones(count, 2, dtype=torch.int64, device=device)]
    values = torch.cat([fixed_values, length_values, distance_value], dim=1)
    bits = torch.cat(
        [fixed_bits, torch.full_like(length_values, 4), torch.full_like(distance_value, 4)], dim=1
    )
    return values, bits


_TABLES: dict[str, tuple[Any, Any]] = {}


def _tables(device: Any, torch: Any) -> tuple[Any, Any]:
    """The length codes' base lengths and extra bits as int32 tensors on ``device`` (cached)."""
    key = str(device)
    if key not in _TABLES:
        _TABLES[key] = (
            torch.tensor(TAIL_BASE_LIST, dtype=torch.int32, device=device),
            torch.tensor(TAIL_EXTRA_LIST, dtype=torch.int32, device=device),
        )
    return _TABLES[key]


def _adler32(stream: Any, torch: Any) -> Any:
    """Adler-32 of each row of ``stream`` (``N x T`` uint8), as int64."""
    total = stream.shape[1]
    data = stream.to(torch.int64)
    weights = (total - torch.arange(total, device=stream.device)) % ADLER_MOD
    a = (1 + data.sum(dim=1)) % ADLER_MOD
    b = (total + (data * weights).sum(dim=1)) % ADLER_MOD
    return (b << 16) | a


def deflate_batch(stream: Any) -> tuple[Any, Any, Any]:
    """Deflate each row of ``stream`` (``N x T`` uint8) as one dynamic-Huffman block.

    Returns ``(packed, byte_counts, adler)``: ``packed`` is ``N x B`` uint8 (each row's first
    ``byte_counts[i]`` bytes are its raw deflate stream), and the Adler-32 of each row.
    """
    torch = torch_module()
    count, total = stream.shape
    device = stream.device
    symbol, extra_value, extra_bits, is_match = _tokens(stream, torch)
    emitted = symbol >= 0
    frequencies = torch.zeros(count, LITLEN_SYMBOLS, dtype=torch.int64, device=device)
    frequencies.scatter_add_(1, symbol.clamp(min=0), emitted.to(torch.int64))
    frequencies[:, END_OF_BLOCK] += 1
    lengths = code_lengths(frequencies)
    codes = canonical_codes(lengths)
    safe_symbol = symbol.clamp(min=0)
    code_bits = lengths.gather(1, safe_symbol)
    values = torch.where(
        emitted, codes.gather(1, safe_symbol) | (extra_value << code_bits), torch.zeros_like(safe_symbol)
    )
    # a match is followed by distance code 0: one more bit, of value 0
    bits = torch.where(emitted, code_bits + extra_bits + is_match.to(torch.int64), torch.zeros_like(values))
    header_values, header_bits = _header_tokens(lengths, torch)
    values = torch.cat([header_values, values, codes[:, END_OF_BLOCK : END_OF_BLOCK + 1]], dim=1)
    bits = torch.cat([header_bits, bits, lengths[:, END_OF_BLOCK : END_OF_BLOCK + 1]], dim=1)
    ends = torch.cumsum(bits, dim=1)
    offsets = ends - bits
    total_bits = ends[:, -1]
    words = (int(header_bits.shape[1]) * 5 + total * (MAX_BITS + 1) + MAX_BITS) // 32 + 2
    word = offsets >> 5
    shift = offsets & 31
    low = (values << shift) & 0xFFFFFFFF
    high = values >> (32 - shift)
    packed_words = torch.zeros(count, words + 1, dtype=torch.int64, device=device)
    packed_words.scatter_add_(1, word, low)
    packed_words.scatter_add_(1, word + 1, high)
    byte_shifts = torch.arange(0, 32, 8, device=device)
    packed = ((packed_words[:, :, None] >> byte_shifts) & 255).to(torch.uint8).reshape(count, -1)
    return packed, (total_bits + 7) // 8, _adler32(stream, torch)


def encode_batch(
    samples: Any, *, text: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None
) -> list[bytes]:
    """Encode ``N x H x W x C`` uint8/uint16 torch samples (any device) as N PNG files.

    The filter, Huffman coding, bit packing and Adler-32 run where the samples are; only
    the compressed bytes are copied to the host. ``text``: chunks for every file, or a
    sequence with each file's own.
    """
    torch = torch_module()
    if torch is None or not isinstance(samples, torch.Tensor):
        raise DTypeError(f"encode_batch takes a torch.Tensor, got {type(samples).__name__}")
    if samples.dtype not in (torch.uint8, torch.uint16):
        raise DTypeError(f"PNG samples are uint8 or uint16, got {samples.dtype}")
    if samples.ndim != 4 or samples.shape[-1] not in COLOR_TYPES or 0 in samples.shape:
        raise ShapeError(
            f"encode_batch takes a non-empty N x H x W x C batch, C in 1..4, got {tuple(samples.shape)}"
        )
    count, height, width, channels = (int(d) for d in samples.shape)
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise ShapeError(f"PNG width and height are at most 2**31-1, got {tuple(samples.shape)}")
    per_pass = max(1, MAX_ELEMENTS_PER_PASS // (height * (width * channels * samples.element_size() + 1)))
    counts_parts, payload_parts, adler_parts = [], [], []
    for first in range(0, count, per_pass):  # bounded device memory: about 20 int64 passes
        stream = filtered_scanlines(samples[first : first + per_pass]).reshape(
            -1, height * (1 + width * channels * samples.element_size())
        )
        packed, byte_counts, adler = deflate_batch(stream)
        used = torch.arange(packed.shape[1], device=packed.device)[None, :] < byte_counts[:, None]
        payload_parts.append(packed[used].cpu().numpy())  # only the compressed bytes cross over
        counts_parts.append(byte_counts.cpu())
        adler_parts.append(adler.cpu().numpy())
    counts = torch.cat(counts_parts)
    payload = np.concatenate(payload_parts)
    adler_host = np.concatenate(adler_parts)
    bit_depth = 8 * samples.element_size()
    header = SIGNATURE + ihdr(width, height, bit_depth, COLOR_TYPES[channels])
    per_file = list(text) if isinstance(text, Sequence) else [text] * count
    if len(per_file) != count:
        raise OptionError(f"got {len(per_file)} text mappings for {count} images")
    results = []
    start = 0
    for index, size in enumerate(counts.tolist()):
        deflated = payload[start : start + size]
        start += size
        idat = b"".join((ZLIB_HEADER, deflated.tobytes(), struct.pack(">I", int(adler_host[index]))))
        results.append(png_bytes((header, text_chunks(per_file[index])), idat))
    return results


def encode_image(image: np.ndarray, *, text: Mapping[str, str] | None = None) -> bytes:
    """Encode one ``H x W [x C]`` NumPy image through the batched torch path (for tests)."""
    torch = torch_module()
    if torch is None:
        raise DTypeError("the torch encoder needs torch to be imported")
    samples = torch.from_numpy(np.ascontiguousarray(image.reshape(*image.shape[:2], -1)))[None]
    return encode_batch(samples, text=text)[0]
