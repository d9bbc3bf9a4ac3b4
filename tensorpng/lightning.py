"""Lightning: a callback that saves the images ``training_step`` returns, every n steps.

>>> from tensorpng.lightning import ImageSaver
>>> trainer = Trainer(callbacks=[ImageSaver("runs/exp1/images", every_n_steps=500,
...                                         mean=0.5, std=0.5)])  # doctest: +SKIP

with ``training_step`` returning ``{"loss": loss, "images": fake}`` (or
``{"loss": loss, "images": {"real": x, "fake": fake}}``: one folder per key).

Needs ``lightning`` (``pip install 'tensorpng[lightning]'``) or ``pytorch_lightning``; the
callback derives from the ``Callback`` of each one installed, so either's ``Trainer`` takes it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import string
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, Unpack

import numpy as np

from ._options import SummaryKeywords, WriterKeywords, takes_options
from .arrays import torch_module
from .errors import OptionError
from .tensorboard import add_images
from .writer import Writer

__all__ = ["ImageSaver"]

_PACKAGES = ("lightning.pytorch", "pytorch_lightning")
DEFAULT_NAME = "{step:06d}_{index:03d}.png"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _callback_base() -> type:
    # Trainer checks isinstance(callback, <its own package's Callback>); deriving from both
    # packages' Callback (plain classes of no-op hooks) lets either Trainer take the callback.
    bases = tuple(importlib.import_module(name).Callback for name in _PACKAGES if _installed(name))
    if not bases:
        raise ImportError(
            "tensorpng.lightning needs Lightning: pip install 'tensorpng[lightning]' (or pytorch_lightning)"
        )
    return type("_LightningCallback", bases, {})


def _tensorboard_logger_types() -> tuple[type, ...]:
    return tuple(
        importlib.import_module(f"{name}.loggers").TensorBoardLogger for name in _PACKAGES if _installed(name)
    )


if TYPE_CHECKING:
    _Callback = object
else:
    _Callback = _callback_base()


def _fields(template: str) -> set[str]:
    try:
        return {
            name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name
        }
    except ValueError as error:
        raise OptionError(f"name {template!r} is not a valid format template: {error}") from None


class ImageSaver(_Callback):
    """Save ``outputs[key]`` every ``every_n_steps`` training steps through a tensorpng Writer.

    Args:
        root: folder (or fsspec URL) the files go under.
        every_n_steps: save after every n-th optimizer step (``trainer.global_step`` = n, 2n,
            ...); the images are those of the batch that made that step.
        key: the entry of what ``training_step`` returned that holds the images: an
            ``N x C x H x W`` tensor (or one image, or anything :func:`tensorpng.save` takes), or a
            dict of them, each written into a folder named after its key.
        name: file name template under ``root``. Fields: ``step`` (``trainer.global_step``),
            ``epoch``, ``batch_idx``, ``index`` (the image's position in the batch), ``rank``
            and ``key`` (the dict key; ``key`` itself for a tensor). When the images are a dict
            and ``name`` has no ``{key}``, the files go into ``<key>/`` folders. Under DDP only
            rank 0 saves, unless ``name`` has ``{rank}``: then every rank saves its own batch.
        max_images: save at most this many images of each batch (the first ones).
        tensorboard: also log each batch as one grid image (see
            :func:`tensorpng.tensorboard.add_images`) to the trainer's TensorBoard loggers, on
            rank 0, tagged ``key`` (``key/<dict key>`` for a dict). The grid is encoded on a
            worker thread from a copy of the batch (a device copy for CUDA tensors), one grid
            batch at a time: the next save step waits for the previous grid.
        workers, max_pending, on_full: as for :class:`tensorpng.Writer`.
        layout, mean, std, value_range, scale, bits, grid, nrow, padding, pad_value, cmap,
            palette, compression, metadata, encoder, overwrite: as for :func:`tensorpng.save`
            (``grid=True`` writes one grid per save: give a ``name`` without ``{index}``).

    The Writer is closed when fitting ends (or fails), so every file exists when
    ``trainer.fit`` returns; an error writing a file is raised there.
    """

    @takes_options(WriterKeywords)
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        every_n_steps: int = 100,
        key: str = "images",
        name: str = DEFAULT_NAME,
        max_images: int | None = None,
        tensorboard: bool = True,
        workers: int | None = None,
        max_pending: int | None = None,
        on_full: Literal["block", "drop", "error"] = "block",
        **options: Unpack[WriterKeywords],
    ) -> None:
        super().__init__()
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise OptionError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        if max_images is not None and (
            not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1
        ):
            raise OptionError(f"max_images must be an integer >= 1 or None, got {max_images!r}")
        unknown = _fields(name) - {"step", "epoch", "batch_idx", "index", "rank", "key"}
        if unknown:
            raise OptionError(
                f"name {name!r} uses unknown field(s) {sorted(unknown)}; "
                "fields: step, epoch, batch_idx, index, rank, key"
            )
        self.root = os.fspath(root)
        self.every_n_steps = every_n_steps
        self.key = key
        self.name = name
        self.max_images = max_images
        self.tensorboard = tensorboard
        self.every_rank = "rank" in _fields(name)
        # The mapping options shared by the files and the TensorBoard grid.
        self._image_options: dict[str, Any] = {
            key: value for key, value in options.items() if key in SummaryKeywords.__annotations__
        }
        self._writer_options: dict[str, Any] = {
            "workers": workers,
            "max_pending": max_pending,
            "on_full": on_full,
            **options,
        }
        # Bad options fail here, when the callback is made, not at the first save mid-run: a
        # Writer checks them when made (it starts no thread before its first save).
        Writer(root, **self._writer_options).close()
        self._writer: Writer | None = None
        self._last_step: int | None = None
        self._warned_tensorboard = False
        self._background = _Background()

    # ------------------------------------------------------------------------------ hooks

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return  # not a save step, or a second batch of one step (gradient accumulation)
        if outputs is None:
            return  # training_step skipped this batch
        self._last_step = step
        groups = self._images(outputs)
        rank = int(trainer.global_rank)
        if rank == 0 or self.every_rank:
            writer = self._open()
            for group, images in groups.items():
                name = self.name
                if group is not None and "key" not in _fields(name):
                    name = "{key}/" + name
                writer.save(
                    images,
                    name,
                    step=step,
                    epoch=int(trainer.current_epoch),
                    batch_idx=batch_idx,
                    rank=rank,
                    key=self.key if group is None else group,
                )
        if rank == 0 and self.tensorboard:
            self._log_tensorboard(trainer, groups, step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # still write what was queued; an error of our own must not hide the one raised
        try:
            self.close()
        except Exception as error:
            warnings.warn(f"tensorpng ImageSaver failed while closing: {error}", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        """Write everything queued, stop the Writer and the TensorBoard thread (``fit`` does this
        when it ends); raise the first error either met."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            self._background.close()

    # ------------------------------------------------------------------------------ internals

    def _open(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(self.root, **self._writer_options)
        return self._writer

    def _images(self, outputs: Any) -> dict[str | None, Any]:
        if not isinstance(outputs, Mapping) or self.key not in outputs:
            keys = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise OptionError(
                f"ImageSaver(key={self.key!r}) needs training_step to return a dict with {self.key!r} "
                f"(an N x C x H x W tensor or a dict of them); got {keys}"
            )
        value = outputs[self.key]
        groups: dict[str | None, Any] = (
            {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {None: value}
        )
        if self.max_images is not None:
            groups = {k: _first(v, self.max_images) for k, v in groups.items()}
        return groups

    def _log_tensorboard(self, trainer: Any, groups: Mapping[str | None, Any], step: int) -> None:
        loggers: list[Any] = [
            logger for logger in trainer.loggers if isinstance(logger, _tensorboard_logger_types())
        ]
        if loggers and not _installed("tensorboard"):  # a logger on tensorboardX alone
            if not self._warned_tensorboard:
                self._warned_tensorboard = True
                warnings.warn(
                    "ImageSaver logs images to TensorBoard with the tensorboard package: "
                    "pip install 'tensorpng[tensorboard]'",
                    stacklevel=2,
                )
            return
        if not loggers:
            return
        # Encoding a grid takes a while (~0.5 s for 64 x 3 x 256 x 256 on a busy 2-core VM): it
        # runs on a worker thread from a copy, one grid batch at a time.
        captured = {group: _capture(images) for group, images in groups.items()}
        experiments = [logger.experiment for logger in loggers]
        self._background.submit(self._write_grids, experiments, captured, step)

    def _write_grids(
        self, experiments: list[Any], captured: Mapping[str | None, tuple[Any, Any]], step: int
    ) -> None:
        for group, (images, ready) in captured.items():
            if ready is not None:
                ready.synchronize()  # the device copy is complete
            tag = self.key if group is None else f"{self.key}/{group}"
            for experiment in experiments:
                add_images(experiment, tag, images, step, **self._image_options)


class _Background:
    """Runs one task at a time on a worker thread (made on first use, so the callback pickles
    for ``ddp_spawn``); a task's error is raised by the next ``submit`` or by ``close``."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tensorpng-tensorboard")
        self._future = self._pool.submit(function, *args)

    def wait(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True)


def _capture(images: Any) -> tuple[Any, Any]:
    """A copy of ``images`` the training loop cannot change, and for a CUDA tensor an event
    recorded after the copy (on the caller's stream) that the worker waits on."""
    torch = torch_module()
    if torch is not None and isinstance(images, torch.Tensor):
        copy = images.detach().clone()
        if copy.is_cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(copy.device))
            return copy, event
        return copy, None
    if isinstance(images, np.ndarray):
        return images.copy(), None
    return images, None


def _first(images: Any, count: int) -> Any:
    """The first ``count`` images of a batch (a batch is anything 4-D here, or a list)."""
    shape = getattr(images, "shape", None)
    if shape is not None and len(shape) == 4:
        return images[:count]
    return images
