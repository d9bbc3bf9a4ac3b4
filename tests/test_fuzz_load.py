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
        values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        )
        keys = [
            "dtype",
            "shape",
            "layout",
            "mapping",
            "bits",
            "value_range",
            "mean",
            "std",
            "grid",
            "cmap",
            "index",
        ]
        record = {"mapping": "affine", "bits": 8, "layout": "HWC", "dtype": "float32", "shape": [9, 7, 3]}
        for key in d(st.lists(st.sampled_from(keys), max_size=4)):
            record[key] = d(values)
        text = json.dumps(record)
        body = b"tensorpng\x00" + text.encode("latin-1", "replace")
        piece = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        return b"\x89PNG\r\n\x1a\n" + chunks[0] + piece + b"".join(chunks[1:])
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
    outcomes = {"loaded": 0, "refused": 0}
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = tensorpng.load(path, as_tensor=False)
        except tensorpng.TensorPNGError:
            result = None
        outcomes["refused" if result is None else "loaded"] += 1
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
