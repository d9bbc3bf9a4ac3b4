"""``tensorpng clean DIR``: remove tensorpng's own stale temporary files.

Every file tensorpng writes goes first to a temporary name beside its target and is moved
into place when complete (:func:`tensorpng.sinks.write_atomic`, APNG streams, fsspec
sinks); on failure the temporary file is removed. Only a process killed mid-write (SIGKILL,
power loss) leaves one behind. Their names are ``.NAME.tpng-TAG-N.tmp`` with a
hexadecimal ``TAG`` of 9 or more digits (:func:`tensorpng.sinks.temporary_name`, used by
every writer: files, APNG streams, ``pack-npz``, fsspec moves); ``clean`` removes regular
files with such names older than ``--older-than`` seconds (default one hour) that no live
process holds: an animation being streamed (``Writer.add_frame``, perhaps one frame an epoch)
keeps a lock on its file until it is finished. Nothing else is removed, and no symlink is
followed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .sinks import TEMP_NAME, in_use

DEFAULT_OLDER_THAN = 3600.0


def stale_temporaries(
    folder: str | os.PathLike[str], older_than: float = DEFAULT_OLDER_THAN
) -> Iterator[Path]:
    """Our temporary files under ``folder`` (recursively, symlinks not followed) whose last
    change is more than ``older_than`` seconds ago."""
    deadline = time.time() - older_than
    for directory, _folders, files in os.walk(folder, followlinks=False):
        for name in files:
            if not TEMP_NAME.match(name):
                continue
            path = Path(directory, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink() and info.st_mtime < deadline and not in_use(path):
                yield path


def clean(folder: str | os.PathLike[str], older_than: float = DEFAULT_OLDER_THAN) -> list[Path]:
    """Remove tensorpng's stale temporary files under ``folder``; returns those removed."""
    removed = []
    for path in stale_temporaries(folder, older_than):
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile
        removed.append(path)
    return removed


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        "clean",
        help="remove tensorpng's stale temporary files (left by a killed process)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", type=Path, metavar="DIR")
    parser.add_argument(
        "--older-than",
        type=float,
        default=DEFAULT_OLDER_THAN,
        metavar="SECONDS",
        help=f"remove only files older than this (default {DEFAULT_OLDER_THAN:g})",
    )
    parser.add_argument("-n", "--dry-run", action="store_true", help="list, do not remove")


def run_command(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        print(f"tensorpng clean: {args.folder} is no folder", file=sys.stderr)
        return 2
    if args.older_than < 0:
        print("tensorpng clean: --older-than must be >= 0", file=sys.stderr)
        return 2
    if args.dry_run:
        paths = list(stale_temporaries(args.folder, args.older_than))
    else:
        paths = clean(args.folder, args.older_than)
    for path in paths:
        print(path)
    return 0
