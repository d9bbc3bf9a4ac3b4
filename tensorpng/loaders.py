"""Internal module.

Loading saved tensor files safely: ``.pt``/``.pth``, ``.npy``, ``.npz``, ``.safetensors``.

No loader runs code from the file: ``torch.load`` is always called with
``weights_only=True`` (passed explicitly, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot
override), NumPy files with ``allow_pickle=False``, and safetensors holds no code. Before any
array data is read, the values each file would expand to are counted from its headers
(``.npy``/``.npz`` headers, safetensors' JSON header, ``torch.load(mmap=True)``) and checked
against ``max_values``, so a small hostile file cannot exhaust memory or disk.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LoadError

DEFAULT_MAX_VALUES = 1 << 29  # 536,870,912 sample values (2 GiB of float32) per input file
SUFFIXES = (".pt", ".pth", ".npy", ".npz", ".safetensors")
MIN_TORCH = (2, 6)  # weights_only=True could still run code before torch 2.6


@dataclass(frozen=True)
class Entry:
    """One array of a file: its key (the file's stem for a file holding one array) and data."""

    key: str
    data: Any


def _check_size(path: Path, shapes: Iterator[tuple[int, ...]], max_values: int) -> None:
    total = 0
    for shape in shapes:
        total += math.prod(int(d) for d in shape)
        if total > max_values:
            raise LoadError(
                f"{path} would expand to more than {max_values:,} values; "
                "pass --max-values N to allow larger inputs"
            )


def _npy_header_shape(stream: Any, label: object) -> tuple[int, ...]:
    """The shape in a ``.npy`` header; refuses dtypes that are no image data (so that one
    "value" of a 300 MB void dtype cannot pass the value count)."""
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(stream)
    if dtype.kind == "O":
        raise LoadError(
            f"{label} holds pickled Python objects; refused: it is read with allow_pickle=False, "
            "since unpickling can run code"
        )
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise LoadError(f"{label} holds an array of dtype {dtype}, which is no image data")
    return tuple(shape)


def _load_npy(path: Path, max_values: int) -> list[Entry]:
    with path.open("rb") as stream:
        shape = _npy_header_shape(stream, path)
    _check_size(path, iter([shape]), max_values)
    return [Entry(path.stem, np.load(path, allow_pickle=False))]


_NPY_MAGIC = b"\x93NUMPY"


def _load_npz(path: Path, max_values: int) -> list[Entry]:
    # NumPy reads a member by key whatever its name (``.npy`` suffix or not) and decides by
    # its magic bytes whether it is an array: so count every member that starts with the
    # .npy magic, not only those whose names end in ``.npy``.
    with zipfile.ZipFile(path) as archive:
        names = []
        shapes = []
        for name in archive.namelist():
            with archive.open(name) as stream:
                if stream.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                    continue  # NumPy returns such members as raw bytes: no image data
            with archive.open(name) as stream:
                shapes.append(_npy_header_shape(stream, f"{path}:{name}"))
            names.append(name)
    _check_size(path, iter(shapes), max_values)
    with np.load(path, allow_pickle=False) as archive:  # only the members counted above
        return [Entry(name.removesuffix(".npy"), archive[name]) for name in names]


def _load_safetensors(path: Path, max_values: int) -> list[Entry]:
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        if length > 100_000_000:
            raise LoadError(f"{path} has a {length}-byte safetensors header: not a safetensors file")
        header = json.loads(stream.read(length))
    shapes = (tuple(v["shape"]) for k, v in header.items() if k != "__metadata__")
    _check_size(path, shapes, max_values)
    from safetensors import safe_open

    entries = []
    needs_torch = any(v.get("dtype") == "BF16" for k, v in header.items() if k != "__metadata__")
    framework = "pt" if needs_torch else "np"
    if needs_torch:
        _import_torch(path)
    with safe_open(str(path), framework=framework) as file:
        for key in file.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
            entries.append(Entry(key, file.get_tensor(key)))
    return entries


def _import_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise LoadError(f"reading {path} needs PyTorch: pip install torch") from None
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise LoadError(
            f"refusing to read {path} with torch {torch.__version__}: torch.load could run code "
            "from a file before torch 2.6 even with weights_only=True; upgrade torch"
        )
    return torch


def _flatten(key: str, value: Any, torch: Any) -> Iterator[Entry]:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        yield Entry(key, value)
    elif isinstance(value, dict):
        for sub, item in value.items():
            yield from _flatten(f"{key}/{sub}" if key else str(sub), item, torch)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _flatten(f"{key}/{index}" if key else str(index), item, torch)


def _load_torch(path: Path, max_values: int) -> list[Entry]:
    torch = _import_torch(path)
    try:
        try:  # mmap: tensor data stays on disk until read, so sizes are checked first
            loaded = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error) and "zip" not in str(error):
                raise
            loaded = torch.load(path, weights_only=True, map_location="cpu")  # legacy format
    except Exception as error:
        text = str(error)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            reason = text.split("\n\n")[0].split("Please file an issue")[0].strip()
            raise LoadError(
                f"refused {path}: it is not a plain tensor file (loading it would run code: {reason[:300]})"
            ) from error
        raise LoadError(
            f"cannot read {path}: {text.splitlines()[0] if text else type(error).__name__}"
        ) from error
    if isinstance(loaded, torch.Tensor):
        entries = [Entry(path.stem, loaded)]
    else:
        entries = list(_flatten("", loaded, torch))
    _check_size(path, (tuple(entry.data.shape) for entry in entries), max_values)
    return entries


def load_file(path: str | Path, max_values: int = DEFAULT_MAX_VALUES) -> list[Entry]:
    """Load every array of a saved tensor file, safely.

    Args:
        path: a ``.pt``/``.pth`` (``torch.save``), ``.npy``, ``.npz`` or ``.safetensors`` file.
        max_values: most sample values the file may expand to.

    Returns:
        Its arrays as entries: NumPy arrays or CPU torch tensors; nested dicts and lists in
        ``.pt`` files are flattened with ``/``-joined keys.

    Raises:
        LoadError: unsupported suffix, corrupt or truncated file, pickled code, too large.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    loader = {
        ".pt": _load_torch,
        ".pth": _load_torch,
        ".npy": _load_npy,
        ".npz": _load_npz,
        ".safetensors": _load_safetensors,
    }.get(suffix)
    if loader is None:
        raise LoadError(f"cannot read {path}: the suffix is not one of {', '.join(SUFFIXES)}")
    try:
        return loader(path, max_values)
    except LoadError:
        raise
    except Exception as error:  # corrupt or truncated files fail in many ways
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoadError(f"cannot read {path}: {text}") from error
