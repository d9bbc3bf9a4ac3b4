"""Internal module.

Command line: ``tensorpng convert INPUT... -o OUTDIR [options]``, ``tensorpng info``,
``tensorpng gallery DIR`` and ``tensorpng pack-npz DIR -o samples.npz`` (see :mod:`tensorpng._npz`).

Turns saved tensor files (``.pt``/``.pth``, ``.npy``, ``.npz``, ``.safetensors``) into PNG
files, loading them safely (see :mod:`tensorpng.loaders`). Exit codes: 0 success, 1 some
input could not be converted (the others still are), 2 usage error. Under ``torchrun``
(``RANK``/``WORLD_SIZE``) or ``srun`` (``SLURM_PROCID``/``SLURM_NTASKS``) each process
converts every WORLD_SIZE-th input of the sorted list, so no two processes write one file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _clean, _gallery, _npz
from ._api import write_batch
from ._encode import prepare_for
from ._names import parse_template, relative_name, sanitize_field
from ._options import check_workers, parse_image_options, parse_png_options
from ._png_text import MAX_TEXT_CHUNK
from .errors import LoadError, OptionError, PathError, TensorPNGError
from .layout import LAYOUTS
from .loaders import DEFAULT_MAX_VALUES, load_file
from .scaling import IMAGENET_MEAN, IMAGENET_STD
from .sinks import LocalSink

DEFAULT_NAME = "{key}/{index:05d}.png"
DEFAULT_GRID_NAME = "{key}.png"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _pair(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected lo,hi, got {text!r}")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorpng", description="Save tensors as PNG images.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="turn saved tensor files into PNG files",
        description="Turn .pt/.pth, .npy, .npz and .safetensors files into PNG files. A file holding "
        "several arrays converts each image-like one into a subfolder named after its key.",
    )
    convert.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    convert.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    convert.add_argument("--key", action="append", help="convert only this key (repeatable)")
    convert.add_argument("--layout", type=str.upper, choices=LAYOUTS)
    convert.add_argument("--mean", type=_floats, help="undo Normalize: mean, e.g. 0.5 or 0.485,0.456,0.406")
    convert.add_argument("--std", type=_floats, help="undo Normalize: std, e.g. 0.5 or 0.229,0.224,0.225")
    convert.add_argument("--imagenet", action="store_true", help="--mean and --std of ImageNet")
    convert.add_argument("--value-range", type=_pair, metavar="LO,HI", help="map LO to black, HI to white")
    convert.add_argument("--scale", choices=("image", "batch"), help="min-max scaling per image or batch")
    convert.add_argument("--bits", type=int, choices=(8, 16))
    convert.add_argument(
        "--grid", action="store_true", help="one grid per array instead of one file per image"
    )
    convert.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    convert.add_argument("--cmap", help="colormap for single-channel arrays (viridis, magma, turbo, ...)")
    convert.add_argument("--palette", help="write integer label maps as palette PNGs (voc)")
    convert.add_argument(
        "--name",
        help=f"file name template; fields: key, index, file (default {DEFAULT_NAME!r}, with --grid "
        f"{DEFAULT_GRID_NAME!r}); key is the array's name, prefixed with the file's stem when "
        "several files are converted",
    )
    convert.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a PNG text chunk to every file (repeatable); KEY: 1-79 Latin-1 characters",
    )
    convert.add_argument(
        "--metadata-file",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help=f"a text chunk whose value is the UTF-8 file PATH (up to {MAX_TEXT_CHUNK:,} bytes), "
        "e.g. a ComfyUI workflow (repeatable)",
    )
    convert.add_argument("--workers", type=int, help="encoding threads (default: one per CPU)")
    convert.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=True)
    convert.add_argument(
        "--max-values",
        type=int,
        default=DEFAULT_MAX_VALUES,
        help=f"most sample values one input file may expand to (default {DEFAULT_MAX_VALUES:,})",
    )
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    convert.add_argument("--debug", action="store_true", help="show tracebacks")
    commands.add_parser("info", help="show which encoders are active, and why", description=info.__doc__)
    _gallery.add_parser(commands)
    _npz.add_command(commands)
    _clean.add_command(commands)
    return parser


def info() -> int:
    """Print the version, the CPU encoder and deflate back ends in use, and why."""
    from . import _cpu_codec
    from ._version import __version__

    print(f"tensorpng {__version__}")
    for line in _cpu_codec.describe():
        print(line)
    return 0


def input_labels(inputs: list[Path]) -> dict[Path, str]:
    """A name per input for its output folder: its stem, or where stems repeat, its path
    from the inputs' common folder without the suffix (``run1/samples``)."""
    stems = [path.stem for path in inputs]
    labels = {}
    for path in inputs:
        if stems.count(path.stem) == 1:
            labels[path] = path.stem
            continue
        twins = [p.resolve() for p in inputs if p.stem == path.stem]
        common = Path(os.path.commonpath([p.parent for p in twins]))
        labels[path] = path.resolve().with_suffix("").relative_to(common).as_posix()
    return labels


def shard() -> tuple[int, int]:
    """This process's (rank, world size) from torchrun's or Slurm's environment, else (0, 1)."""
    for rank_name, size_name in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_name in os.environ and size_name in os.environ:
            rank, size = int(os.environ[rank_name]), int(os.environ[size_name])
            if size >= 1 and 0 <= rank < size:
                return rank, size
    return 0, 1


def _key_and_rest(item: str, option: str, what: str) -> tuple[str, str]:
    key, sep, rest = item.partition("=")
    if not sep:
        raise OptionError(f"{option} takes KEY={what}, got {item!r}")
    return key, rest


def _read_value(path: str, key: str) -> str:
    """A ``--metadata-file`` value: the file's UTF-8 text, read no further than the limit."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_TEXT_CHUNK + 1)
    except OSError as error:
        raise OptionError(f"--metadata-file {key}={path}: {error.strerror or error}") from None
    if len(raw) > MAX_TEXT_CHUNK:
        raise OptionError(
            f"--metadata-file {key}={path} holds more than {MAX_TEXT_CHUNK:,} bytes, which PNG readers "
            "refuse as one text value; store it beside the images"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OptionError(
            f"--metadata-file {key}={path} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None


def text_metadata(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``--metadata`` and ``--metadata-file`` text chunks (key -> value), or None; the keys
    and values are checked by :func:`parse_png_options`, as the library checks them."""
    items = [(*_key_and_rest(item, "--metadata", "VALUE"), False) for item in args.metadata]
    items += [(*_key_and_rest(item, "--metadata-file", "PATH"), True) for item in args.metadata_file]
    texts: dict[str, str] = {}
    for key, rest, from_file in items:
        if key in texts:
            raise OptionError(f"the metadata key {key!r} is given twice")
        texts[key] = _read_value(rest, key) if from_file else rest
    return texts or None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    mean, std = args.mean, args.std
    if args.imagenet:
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    options = {
        "layout": args.layout,
        "mean": mean,
        "std": std,
        "value_range": args.value_range,
        "scale": args.scale,
        "bits": args.bits,
        "grid": args.grid,
        "nrow": args.nrow,
        "cmap": args.cmap,
        "palette": args.palette,
    }
    return {k: v for k, v in options.items() if v is not None}


class _Progress:
    """A tqdm bar over input files, with the images written so far (when tqdm is installed)."""

    def __init__(self, enabled: bool, files: int) -> None:
        self.bar = None
        self.images = 0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=files, unit="file", file=sys.stderr, dynamic_ncols=True)

    def add_images(self, count: int) -> None:
        self.images += count
        if self.bar is not None:
            self.bar.set_postfix(images=self.images, refresh=False)

    def file_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def convert(args: argparse.Namespace) -> int:
    """Run ``tensorpng convert``; returns the exit code."""
    options = _options(args)
    image_options = parse_image_options(options)
    texts = args.texts if hasattr(args, "texts") else text_metadata(args)  # main() read them already
    png_options = parse_png_options({"metadata": texts})
    template = parse_template(args.name or (DEFAULT_GRID_NAME if args.grid else DEFAULT_NAME))
    sink = LocalSink(args.output)
    rank, world = shard()
    inputs = sorted(set(args.inputs), key=str)
    several = len(inputs) > 1
    labels = input_labels(inputs)
    mine = inputs[rank::world]
    targets: dict[Path, Path] = {}  # every file this run writes, and the input it came from
    progress = _Progress(not args.quiet and sys.stderr.isatty(), len(mine))
    started = time.perf_counter()
    failures = files_written = bytes_written = images = 0
    for path in mine:
        try:
            entries = load_file(path, args.max_values)
            if args.key:
                missing = [key for key in args.key if key not in {e.key for e in entries}]
                if missing:
                    raise LoadError(f"{path} has no key {missing[0]!r}; keys: {[e.key for e in entries]}")
                entries = [e for e in entries if e.key in args.key]
            prepared = []  # each array prepared once: validated, planned, its encoder chosen
            for entry in entries:
                try:
                    prepared.append((entry, *prepare_for(entry.data, image_options, png_options)))
                except TensorPNGError:
                    if len(entries) == 1 or args.key:
                        raise
                    # a file of several arrays: skip what is no image (labels, scalars)
            if not prepared:
                raise LoadError(f"{path} holds no image-like array")
            for entry, batch, on_device in prepared:
                single = len(prepared) == 1 and entry.key == path.stem
                key = entry.key if not several else labels[path] if single else f"{labels[path]}/{entry.key}"
                key = "/".join(str(sanitize_field(part)) for part in key.split("/"))
                count = 1 if batch.writes_grid else batch.count
                fields = {"key": key, "file": sanitize_field(path.stem)}
                batched = batch.layout.batched and not batch.writes_grid
                names = template.names(count, batched, fields, folders=frozenset({"key"}))
                names = [relative_name(name) for name in names]
                paths = [args.output / name for name in names]
                clash = next((p for p in paths if p in targets), None)
                if clash is not None:
                    raise PathError(
                        f"{clash} is written from {targets[clash]} already; "
                        "give --name a template that tells the inputs apart (fields: key, index, file)"
                    )
                targets.update(dict.fromkeys(paths, path))
                write_batch(
                    batch, on_device, names, sink, png_options, overwrite=args.overwrite, workers=args.workers
                )
                files_written += len(paths)
                bytes_written += sum(p.stat().st_size for p in paths)
                count = batch.count if batch.layout.batched else 1
                images += count
                progress.add_images(count)
        except (TensorPNGError, OSError) as error:
            failures += 1
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"tensorpng: {path}: {error}", file=sys.stderr)
        progress.file_done()
    progress.close()
    seconds = time.perf_counter() - started
    shard_note = f" (rank {rank} of {world})" if world > 1 else ""
    if not args.quiet:
        print(
            f"{len(mine) - failures} of {len(mine)} inputs converted{shard_note}: {files_written} files, "
            f"{images} images, {bytes_written:,} bytes in {seconds:.2f} s "
            f"({images / seconds if seconds else 0:.0f} images/s)",
            file=sys.stderr,
        )
    return 1 if failures else 0


NAME_FIELDS = ("key", "index", "file")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tensorpng`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "gallery":
        try:
            return _gallery.run(args)
        except TensorPNGError as error:
            parser.error(str(error))
    if args.command == "pack-npz":
        return _npz.run_command(args)
    if args.command == "clean":
        return _clean.run_command(args)
    try:
        if args.workers is not None and args.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {args.workers}")
        check_workers(args.workers)
        if args.max_values < 1:
            raise OptionError(f"--max-values must be at least 1, got {args.max_values}")
        parse_image_options(_options(args))
        args.texts = text_metadata(args)
        parse_png_options({"metadata": args.texts})  # keys and values checked before any file is written
        unknown = parse_template(args.name or DEFAULT_NAME).fields - set(NAME_FIELDS)
        if unknown:
            raise PathError(
                f"--name uses unknown field(s) {sorted(unknown)}; fields: {', '.join(NAME_FIELDS)}"
            )
    except TensorPNGError as error:
        parser.error(str(error))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # restored when the block ends
        return convert(args)


# The library's warnings name its keywords; a command-line user needs the flags.
_CLI_SPELLING = (
    (r"value_range=\(([^,()]+), ([^,()]+)\)", r"--value-range \1,\2"),
    (r"mean=/std=", "--mean/--std"),
    (r"tensorpng\.IMAGENET_MEAN, tensorpng\.IMAGENET_STD", "--imagenet"),
    (r"scale='(\w+)'", r"--scale \1"),
)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Print a warning as the CLI's own line, in the flags' spelling (no library source line)."""
    text = str(message)
    for library, flag in _CLI_SPELLING:
        text = re.sub(library, flag, text)
    print(f"tensorpng: warning: {text}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
