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
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ._gallery_page import PAGE
from ._png_chunks import SIGNATURE as PNG_SIGNATURE
from ._png_chunks import TEXT_TAGS, Chunk
from ._png_text import MAX_TEXT_CHUNK, read_texts
from ._walk import open_regular, regular_files, skipped_message
from .errors import DecodeError, PathError, WriteError, warn_user
from .metadata import METADATA_KEY, MappingRecord

INDEX_NAME = "index.json"
INDEX_VERSION = 1
SUFFIXES = (".png", ".apng")
# step000100, step_100, step-100, step=100, step100 in a file or folder name (not "steps")
_STEP = re.compile(r"(?:^|[^a-z0-9])(?:step|it|iter|epoch)[=_-]?(\d+)(?![a-z])", re.IGNORECASE)
_MAX_TEXT_BYTES = MAX_TEXT_CHUNK  # a record chunk larger than this is skipped, not read
# the record's text inflated from one file, all chunks together: tensorpng writes one record
# of a few KiB; a file of many record chunks must not cost an inflate each
_MAX_TEXT_TOTAL = 4 * MAX_TEXT_CHUNK
_RECORD_KEYWORD = METADATA_KEY.encode("latin-1") + b"\x00"
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class Header:
    """What a PNG says before its image data: size, format, frame count and tensorpng's record."""

    width: int
    height: int
    bits: int
    channels: int
    frames: int  # 1 for a still image, acTL's count for an APNG
    texts: dict[str, str]  # the record's text (METADATA_KEY), when the file has a readable one


def read_header(path: Path) -> Header | None:
    """The chunks of ``path`` before ``IDAT`` (None when it is not a readable PNG).

    Only the text chunks of tensorpng's record are read, through the container's bounded
    text reader (:func:`read_texts`): other text is skipped unread, and the record's text is
    refused past :data:`_MAX_TEXT_BYTES` a chunk and :data:`_MAX_TEXT_TOTAL` in all (a file
    of many compressed chunks would otherwise inflate each one), leaving the image without
    a caption."""
    try:
        with open_regular(path) as file:  # a named pipe would block this read forever
            if file.read(8) != PNG_SIGNATURE:
                return None
            scan = _Scan()
            chunks = scan.record_chunks(file)
            try:
                texts = read_texts(
                    chunks, (METADATA_KEY,), max_chunk=_MAX_TEXT_BYTES, max_total=_MAX_TEXT_TOTAL
                )
            except DecodeError:  # a damaged or oversized record is no caption
                texts = {}
                scan.keep_text = False
                for _ in chunks:  # the rest of the header (acTL may follow the text)
                    pass
    except OSError:
        return None
    if scan.width == 0:
        return None
    return Header(scan.width, scan.height, scan.bits, _CHANNELS.get(scan.color, 0), scan.frames, texts)


class _Scan:
    """The chunks of a PNG up to its image data: IHDR and acTL are kept, and the text chunks
    whose keyword is tensorpng's are handed on (each read only once its keyword matched)."""

    def __init__(self) -> None:
        self.width = self.height = self.bits = self.color = 0
        self.frames = 1
        self.keep_text = True

    def record_chunks(self, file: BinaryIO) -> Iterator[Chunk]:
        while True:
            head = file.read(8)
            if len(head) < 8:
                return
            length, kind = struct.unpack(">I", head[:4])[0], head[4:]
            if kind in (b"IDAT", b"IEND"):
                return
            offset = file.tell() - 8
            if kind in TEXT_TAGS and self.keep_text and length <= _MAX_TEXT_BYTES:
                body = file.read(min(length, len(_RECORD_KEYWORD)))
                if body == _RECORD_KEYWORD:  # ours: read the rest; another key costs nothing
                    body += file.read(length - len(body))
                    file.seek(4, os.SEEK_CUR)  # CRC
                    yield Chunk(kind, memoryview(body), offset)
                    continue
                file.seek(length - len(body) + 4, os.SEEK_CUR)
            elif kind in (b"IHDR", b"acTL") and length <= 64:
                body = file.read(length)
                file.seek(4, os.SEEK_CUR)  # CRC
                if kind == b"IHDR" and length >= 13:
                    self.width, self.height, self.bits, self.color = struct.unpack(">IIBB", body[:10])
                elif kind == b"acTL" and length >= 8:
                    self.frames = struct.unpack(">I", body[:4])[0]
            else:
                file.seek(length + 4, os.SEEK_CUR)


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


def find_images(root: Path, skip: set[Path]) -> tuple[list[Path], list[str]]:
    """PNG files under ``root``, sorted, skipping hidden files and folders (our temporary
    files are dot-prefixed) and ``skip``; and the entries skipped as no regular file."""
    found, skipped = regular_files(root, SUFFIXES)
    return [path for path in found if path not in skip], skipped


def build_index(root: Path) -> list[dict[str, Any]]:
    """Entries of every PNG under ``root``, ordered by folder, step and name (a warning names
    the entries that are no regular file: a named pipe, a dangling link, ...)."""
    paths, skipped = find_images(root, set())
    if skipped:
        warn_user(f"{skipped_message(root, skipped)}; they are not in the gallery")
    entries = [entry for path in paths if (entry := image_entry(root, path))]
    entries.sort(key=lambda e: (e["folder"], e["step"] is not None, e["step"] or 0, e["name"]))
    return entries


def write_gallery(root: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write the gallery page of the PNGs under ``root`` and ``index.json`` beside it.

    Args:
        root: the folder to index (searched recursively; entries that are no regular file,
            such as a named pipe or a dangling symbolic link, are skipped with a warning).
        output: the page's path (default ``root/index.html``).

    Returns:
        The page's path.

    Raises:
        PathError: ``root`` is not a folder, or ``output`` is one.
        WriteError: the page or the index cannot be written (the path and reason named).
    """
    from .sinks import write_atomic  # the atomic write every file of tensorpng goes through

    folder = Path(root)
    if not folder.is_dir():
        raise PathError(f"gallery takes a folder of PNG files; {folder} is not a folder")
    page = Path(output) if output is not None else folder / "index.html"
    if page.is_dir() or not page.name:  # checked before index.json is written beside it
        raise PathError(f"the gallery page {page} is a folder; name the page, e.g. {page / 'index.html'}")
    try:
        resolved_folder, resolved_page = folder.resolve(), page.resolve()
    except (OSError, RuntimeError) as error:  # a symbolic link loop
        raise PathError(f"cannot resolve {page} or {folder}: {error}") from None
    images = build_index(folder)
    base = os.path.relpath(resolved_folder, resolved_page.parent).replace(os.sep, "/")
    index = {
        "version": INDEX_VERSION,
        "title": resolved_folder.name,
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
    with warnings.catch_warnings(record=True) as caught:  # shown as lines of ours
        warnings.simplefilter("always")
        try:
            page = write_gallery(args.root, args.output)
        finally:
            for warning in caught:
                print(f"tensorpng gallery: warning: {warning.message}", file=sys.stderr)
    try:
        count = len(json.loads((page.parent / INDEX_NAME).read_text())["images"])
    except (OSError, ValueError) as error:  # replaced or removed since: the page is written
        raise WriteError(f"{page.parent / INDEX_NAME} cannot be read back: {error}") from None
    print(f"{page}: {count} image{'s' if count != 1 else ''}")
    return 0
