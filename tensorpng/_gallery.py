"""``tensorpng gallery DIR``: a static page of the PNGs under a folder, grouped by folder and step.

The index (every image by its path relative to ``DIR``, with its size, frame count, step and
caption) is written as ``index.json`` beside the page and inlined in the page, so the page
works from ``file://`` and other tools can read the index. Reading an image's record reads
only the chunks before its image data: no pixel is decoded, so 10,000 images index in seconds.
The page (see :mod:`tensorpng._gallery_page`) loads no script, font or style from elsewhere.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._gallery_page import PAGE
from ._png_chunks import SIGNATURE as PNG_SIGNATURE
from ._png_text import inflate_text
from .errors import PathError
from .metadata import METADATA_KEY, MappingRecord

INDEX_NAME = "index.json"
INDEX_VERSION = 1
SUFFIXES = (".png", ".apng")
# step000100, step_100, step-100, step=100, step100 in a file or folder name (not "steps")
_STEP = re.compile(r"(?:^|[^a-z0-9])(?:step|it|iter|epoch)[=_-]?(\d+)(?![a-z])", re.IGNORECASE)
_MAX_TEXT_BYTES = 1 << 20  # a text chunk larger than this is skipped, not read
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class Header:
    """What a PNG says before its image data: size, format, frame count and text chunks."""

    width: int
    height: int
    bits: int
    channels: int
    frames: int  # 1 for a still image, acTL's count for an APNG
    texts: dict[str, str]


def read_header(path: Path) -> Header | None:
    """The chunks of ``path`` before ``IDAT`` (None when it is not a readable PNG)."""
    try:
        with open(path, "rb") as file:
            if file.read(8) != PNG_SIGNATURE:
                return None
            width = height = bits = color = 0
            frames, texts = 1, {}
            while True:
                head = file.read(8)
                if len(head) < 8:
                    break
                length, kind = struct.unpack(">I", head[:4])[0], head[4:]
                if kind in (b"IDAT", b"IEND"):
                    break
                if kind in (b"IHDR", b"acTL", b"tEXt", b"iTXt", b"zTXt") and length <= _MAX_TEXT_BYTES:
                    body = file.read(length)
                    file.seek(4, os.SEEK_CUR)  # CRC
                else:
                    file.seek(length + 4, os.SEEK_CUR)
                    continue
                if kind == b"IHDR" and length >= 13:
                    width, height, bits, color = struct.unpack(">IIBB", body[:10])
                elif kind == b"acTL" and length >= 8:
                    frames = struct.unpack(">I", body[:4])[0]
                else:
                    entry = _text(kind, body)
                    if entry is not None:
                        texts[entry[0]] = entry[1]
    except OSError:
        return None
    if width == 0:
        return None
    return Header(width, height, bits, _CHANNELS.get(color, 0), frames, texts)


def _text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """A text chunk's keyword and value (None when malformed)."""
    key, _, rest = body.partition(b"\x00")
    try:
        if kind == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":  # inflated with a limit: a text bomb must not take the page down
            return key.decode("latin-1"), inflate_text(rest[1:], _MAX_TEXT_BYTES).decode("latin-1")
        compressed, rest = rest[:1] == b"\x01", rest[2:]
        _, _, rest = rest.partition(b"\x00")  # language tag
        _, _, rest = rest.partition(b"\x00")  # translated keyword
        value = inflate_text(rest, _MAX_TEXT_BYTES) if compressed else rest
        return key.decode("latin-1"), value.decode("utf-8")
    except (UnicodeDecodeError, ValueError, zlib.error):  # DecodeError is a ValueError
        return None


def step_of(relative: str, record: dict[str, Any] | None) -> int | None:
    """The training step of an image: the record's ``step``, else the last step-like field of
    its path (``step000100``, ``step=100``, ``epoch_3``, ...)."""
    if record is not None and isinstance(record.get("step"), int):
        return int(record["step"])
    found = _STEP.findall(os.path.splitext(relative)[0])
    return int(found[-1]) if found else None


def _record(texts: dict[str, str]) -> dict[str, Any] | None:
    """The file's record as checked by :meth:`MappingRecord.from_json` (untrusted input)."""
    if METADATA_KEY not in texts:
        return None
    try:
        entry = json.loads(MappingRecord.from_json(texts[METADATA_KEY]).to_json())
    except ValueError:  # RecordError: a record tensorpng did not write is no caption
        return None
    return entry if isinstance(entry, dict) else None


def image_entry(root: Path, path: Path) -> dict[str, Any] | None:
    """One image's entry in the index (None when the file is not a readable PNG)."""
    header = read_header(path)
    if header is None:
        return None
    relative = path.relative_to(root).as_posix()
    record = _record(header.texts)
    folder = os.path.dirname(relative)
    entry: dict[str, Any] = {
        "path": relative,
        "folder": folder,
        "name": os.path.basename(relative),
        "step": step_of(relative, record),
        "width": header.width,
        "height": header.height,
        "bits": header.bits,
        "channels": header.channels,
        "frames": header.frames,
    }
    if record is not None:
        shape = record.get("shape")
        layout = str(record.get("layout") or "")
        if isinstance(shape, list) and record.get("index") is not None and layout.startswith("N"):
            shape = shape[1:]  # one image of a saved batch
        entry["shape"] = shape
        entry["mapping"] = record.get("mapping")
        if record.get("cmap"):
            entry["cmap"] = record["cmap"]
        if record.get("fps"):
            entry["fps"] = record["fps"]
    return entry


def find_images(root: Path, skip: set[Path]) -> list[Path]:
    """PNG files under ``root``, sorted, skipping hidden files and folders (our temporary
    files are dot-prefixed) and ``skip``."""
    found = []
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                path = Path(directory, name)
                if path not in skip:
                    found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def build_index(root: Path) -> list[dict[str, Any]]:
    """Entries of every PNG under ``root``, ordered by folder, step and name."""
    entries = [entry for path in find_images(root, set()) if (entry := image_entry(root, path))]
    entries.sort(key=lambda e: (e["folder"], e["step"] is not None, e["step"] or 0, e["name"]))
    return entries


def write_gallery(root: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write the gallery page of the PNGs under ``root`` and ``index.json`` beside it.

    Args:
        root: the folder to index (searched recursively).
        output: the page's path (default ``root/index.html``).

    Returns:
        The page's path.
    """
    from .sinks import write_atomic  # the atomic write every file of tensorpng goes through

    folder = Path(root)
    if not folder.is_dir():
        raise PathError(f"gallery takes a folder of PNG files; {folder} is not a folder")
    page = Path(output) if output is not None else folder / "index.html"
    images = build_index(folder)
    base = os.path.relpath(folder.resolve(), page.resolve().parent).replace(os.sep, "/")
    index = {
        "version": INDEX_VERSION,
        "title": folder.resolve().name,
        "base": "" if base == "." else base + "/",  # from the page to DIR
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "images": images,
    }
    data = json.dumps(index, separators=(",", ":"))
    # inline: "</" would end the script element; "<\/" is the same JSON string
    inline = data.replace("</", "<\\/").replace("<!--", "<\\!--")
    text = PAGE.replace("{{TITLE}}", html.escape(str(index["title"]))).replace("{{INDEX}}", inline)
    write_atomic(page.parent / INDEX_NAME, data.encode())
    write_atomic(page, text.encode())
    return page


def add_parser(commands: Any) -> None:
    """The ``gallery`` subcommand's arguments."""
    gallery = commands.add_parser(
        "gallery",
        help="write a static HTML page of the PNGs under a folder",
        description="Write DIR/index.html (and index.json beside it): the PNGs under DIR grouped by "
        "folder and training step, with their tensorpng captions; animations play.",
    )
    gallery.add_argument("root", type=Path, metavar="DIR")
    gallery.add_argument("-o", "--output", type=Path, metavar="PAGE", help="default: DIR/index.html")


def run(args: argparse.Namespace) -> int:
    """Run ``tensorpng gallery``."""
    page = write_gallery(args.root, args.output)
    count = len(json.loads((page.parent / INDEX_NAME).read_text())["images"])
    print(f"{page}: {count} image{'s' if count != 1 else ''}")
    return 0
