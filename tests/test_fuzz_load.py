"""Fuzzing load: hypothesis mutates valid PNGs (truncation, byte flips, duplicated, dropped
and reordered chunks, forged records, huge declared sizes); every mutant must load as an
array or raise a TensorPNGError, quickly. It runs in a subprocess under RLIMIT_AS, so that a
regression that allocates without bound fails the test instead of taking the machine down."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 3 << 30  # bytes of address space for the fuzzing process
EXAMPLES = int(os.environ.get("TENSORPNG_FUZZ_EXAMPLES", "1000"))
SECONDS_PER_LOAD = 3.0
SUITE = Path(__file__).parent / "data" / "pngsuite"


def seeds() -> list[bytes]:
    import tensorpng

    rng = np.random.default_rng(0)
    out = [
        tensorpng.encode(rng.random((9, 7, 3)).astype(np.float32)),
        tensorpng.encode(rng.random((9, 7)), bits=16),
        tensorpng.encode(rng.integers(0, 20, (9, 7)).astype(np.uint8), palette="voc"),
        tensorpng.encode(rng.random((9, 7)), cmap="viridis"),
        tensorpng.encode(rng.random((3, 9, 7, 4)).astype(np.float32), layout="NHWC", grid=True, nrow=2),
        tensorpng.encode(
            rng.integers(0, 65536, (9, 7, 2), dtype=np.uint16), metadata={"Comment": "é" * 1500}
        ),
    ]
    out += [
        (SUITE / name).read_bytes()
        for name in ("basi0g01.png", "tbbn1g04.png", "basi3p08.png", "tbrn2c08.png")
    ]
    return out


def split(data: bytes) -> list[bytes]:
    """The chunks of a PNG as whole byte strings (lengths trusted as far as they go)."""
    out, offset = [], 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        out.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return out


def recrc(piece: bytes) -> bytes:
    if len(piece) < 12:
        return piece
    body = piece[4:-4]
    return piece[:4] + body + struct.pack(">I", zlib.crc32(body))


def own_record(chunks: list[bytes]) -> dict[str, object] | None:
    for piece in chunks:
        if piece[4:8] == b"tEXt" and piece[8:18] == b"tensorpng\x00":
            return json.loads(piece[18:-4])  # type: ignore[no-any-return]
        if piece[4:8] == b"zTXt" and piece[8:19] == b"tensorpng\x00\x00":
            return json.loads(zlib.decompress(piece[19:-4]))  # type: ignore[no-any-return]
    return None


def forged_record(chunks: list[bytes], d: object) -> list[bytes]:
    """The chunks with the tensorpng record replaced by a mutated one: the file's own record,
    or one that fits its IHDR, with a few fields changed, so that most forgeries pass the
    parse and reach the code that undoes a mapping (values near the valid ones, and odd ones)."""
    from hypothesis import strategies as st

    draw = d  # type: ignore[assignment]
    record = own_record(chunks)
    if record is None and chunks and chunks[0][4:8] == b"IHDR" and len(chunks[0]) == 25:
        width, height, _, color = struct.unpack(">IIBB", chunks[0][8:18])
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color, 1)
        shape = [height, width, channels] if channels > 1 else [height, width]
        record = {
            "version": "0.1.0", "framework": "numpy", "dtype": "float32", "shape": shape,
            "layout": "HWC" if channels > 1 else "HW", "mapping": "affine", "bits": 8,
            "value_range": [0.0, 1.0], "min": 0.0, "max": 1.0,
        }  # fmt: skip
    record = dict(record or {})
    numbers = (
        st.integers(-3, 300)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from([0, 1, 2, 8, 16, 255, 65535, 2**31, 1e-310, 1e38, 3.4e38, -1e308])
    )
    names = st.sampled_from(
        ["float32", "float16", "bfloat16", "int8", "uint8", "bool", "uint16", "float128", "HW", "CHW",
         "HWC", "NCHW", "affine", "copy", "bool", "widen", "narrow", "colormap", "palette", "viridis",
         "image", "batch", "torch", "numpy"]
    )  # fmt: skip
    values = st.recursive(
        st.none() | st.booleans() | numbers | names | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.dictionaries(
                st.sampled_from(["count", "nrow", "padding"]) | st.text(max_size=6), inner, max_size=4
            )
        ),
        max_leaves=24,
    )
    keys = ["dtype", "shape", "layout", "mapping", "bits", "value_range", "mean", "std", "grid", "cmap",
            "index", "scale", "min", "max", "per_image_range", "frames", "fps", "loop"]  # fmt: skip
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3)):
        record[key] = draw(values)
    body = b"tensorpng\x00" + json.dumps(record).encode("latin-1", "replace")
    piece = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    kept = [c for c in chunks if c[8:18] != b"tensorpng\x00" or c[4:8] not in (b"tEXt", b"zTXt", b"iTXt")]
    return [*kept[:1], piece, *kept[1:]]


def mutate(data: bytes, draw: object) -> bytes:
    from hypothesis import strategies as st

    d = draw  # type: ignore[assignment]
    kind = d(st.sampled_from(["truncate", "flip", "duplicate", "drop", "swap", "record", "size", "idat"]))
    chunks = split(data)
    if kind == "truncate":
        return data[: d(st.integers(0, len(data) - 1))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(d(st.integers(1, 4))):
            out[d(st.integers(0, len(out) - 1))] ^= d(st.integers(1, 255))
        fixed = d(st.booleans())  # past the CRC check, so the flip reaches deeper
        return b"\x89PNG\r\n\x1a\n" + b"".join(recrc(c) for c in split(bytes(out))) if fixed else bytes(out)
    if kind in ("duplicate", "drop", "swap") and len(chunks) > 1:
        i, j = d(st.integers(0, len(chunks) - 1)), d(st.integers(0, len(chunks) - 1))
        if kind == "duplicate":
            chunks.insert(j, chunks[i])
        elif kind == "drop":
            del chunks[i]
        else:
            chunks[i], chunks[j] = chunks[j], chunks[i]
        return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)
    if kind == "record":
        return b"\x89PNG\r\n\x1a\n" + b"".join(forged_record(chunks, d))
    if kind == "size" and chunks and chunks[0][4:8] == b"IHDR" and len(chunks[0]) == 25:
        head = bytearray(chunks[0])
        struct.pack_into(">II", head, 8, d(st.integers(1, 2**31 - 1)), d(st.integers(1, 2**31 - 1)))
        return b"\x89PNG\r\n\x1a\n" + recrc(bytes(head)) + b"".join(chunks[1:])
    if kind == "idat":  # image data replaced by a stream of some length, declared size kept
        size = d(st.integers(0, 1 << 22))
        stream = zlib.compress(bytes(size) if size < 1 << 22 else b"\x00" * size, 1)
        piece = (
            struct.pack(">I", len(stream))
            + b"IDAT"
            + stream
            + struct.pack(">I", zlib.crc32(b"IDAT" + stream))
        )
        kept = [c for c in chunks if c[4:8] != b"IDAT"]
        return b"\x89PNG\r\n\x1a\n" + b"".join(kept[:-1]) + piece + b"".join(kept[-1:])
    return data


def run() -> None:
    """The fuzz loop (called in the limited subprocess)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import tensorpng

    bases = seeds()
    outcomes = {"loaded": 0, "refused": 0, "records used": 0}
    path = Path(os.environ["TENSORPNG_FUZZ_DIR"]) / "mutant.png"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(bases), st.data())
    def check(base: bytes, data: st.DataObject) -> None:
        mutant = mutate(base, data.draw)
        path.write_bytes(mutant)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = tensorpng.load(path, as_tensor=False)
        except tensorpng.TensorPNGError:
            result = None
        outcomes["refused" if result is None else "loaded"] += 1
        ignored = any(issubclass(w.category, tensorpng.RecordWarning) for w in caught)
        if result is not None and b"tensorpng\x00" in mutant and not ignored:
            outcomes["records used"] += 1  # a record, forged or not, undone into the result
        elapsed = time.perf_counter() - start
        assert elapsed < SECONDS_PER_LOAD, f"load took {elapsed:.1f} s"
        if result is not None:
            assert isinstance(result, np.ndarray) and result.size > 0
            assert result.ndim in (2, 3)

    check()
    print(json.dumps(outcomes))


def test_mutated_pngs_load_or_raise_tensorpng_errors(tmp_path: Path) -> None:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "TENSORPNG_FUZZ_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import test_fuzz_load; test_fuzz_load.run()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env=env,
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    # the mutations reach both ends: files that still load and files that are refused
    assert outcomes["loaded"] >= EXAMPLES // 20 and outcomes["refused"] >= EXAMPLES // 4, outcomes
    assert outcomes["records used"] >= EXAMPLES // 20, outcomes  # forgeries reach the undoing code
