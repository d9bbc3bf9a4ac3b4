"""tensorpng.lightning.ImageSaver: a tiny LightningModule trained for a few steps on CPU."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tensorpng
from conftest import decode_imagecodecs, decode_pillow, pngcheck
from tensorpng import OptionError
from tensorpng.lightning import ImageSaver


class Painter(pl.LightningModule):
    """Learns nothing useful: each step returns its loss and images that depend on the step."""

    def __init__(self, images: str = "tensor") -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.kind = images

    def make(self, batch_idx: int) -> torch.Tensor:
        base = torch.linspace(-1, 1, 3 * 6 * 5).reshape(1, 3, 6, 5)
        return (
            (base * (batch_idx + 1) / 8 + self.weight).expand(4, 3, 6, 5)
            * torch.arange(1, 5).view(4, 1, 1, 1)
            / 4
        )

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        loss = (self.weight - batch[0].mean()) ** 2
        fake = self.make(batch_idx)
        if self.kind == "dict":
            return {"loss": loss, "images": {"fake": fake, "real": fake.flip(0)}}
        return {"loss": loss, "images": fake}

    def train_dataloader(self) -> torch.utils.data.DataLoader[Any]:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 1)), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)  # lr 0: the images are known in advance


def fit(
    module: pl.LightningModule, callback: ImageSaver, steps: int, logger: Any = False, **kwargs: Any
) -> None:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(num_workers|does not have many workers|log_every_n_steps).*")
        trainer.fit(module)


def test_saves_every_n_steps_and_every_file_exists_when_fit_returns(tmp_path: Path) -> None:
    module = Painter()
    fit(module, ImageSaver(tmp_path / "images", every_n_steps=3, mean=0.5, std=0.5), steps=7)
    files = sorted(
        p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*.png")
    )
    # global_step after the 3rd and 6th steps (batch_idx 2 and 5); 4 images each
    assert files == [f"{step:06d}_{index:03d}.png" for step in (3, 6) for index in range(4)]
    for step in (3, 6):
        expected = tensorpng.to_array(module.make(step - 1), mean=0.5, std=0.5)
        for index in range(4):
            path = tmp_path / "images" / f"{step:06d}_{index:03d}.png"
            pngcheck(path)
            np.testing.assert_array_equal(decode_pillow(path.read_bytes()), expected[index])


def test_dict_of_images_goes_to_folders_and_tensorboard(tmp_path: Path) -> None:
    logger = pl.loggers.TensorBoardLogger(tmp_path / "logs", name="", version=0)
    saver = ImageSaver(tmp_path / "images", every_n_steps=2, value_range=(-1, 1), nrow=2, max_images=3)
    module = Painter("dict")
    fit(module, saver, steps=4, logger=logger)
    for folder in ("fake", "real"):
        files = sorted(p.name for p in (tmp_path / "images" / folder).iterdir())
        assert files == [f"{step:06d}_{index:03d}.png" for step in (2, 4) for index in range(3)]
    accumulator = EventAccumulator(str(tmp_path / "logs" / "version_0"), size_guidance={"images": 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()["images"]) == ["images/fake", "images/real"]
    events = accumulator.Images("images/real")
    assert [event.step for event in events] == [2, 4]
    for event in events:
        fake = module.make(event.step - 1)
        expected = tensorpng.to_array(fake.flip(0)[:3], grid=True, value_range=(-1, 1), nrow=2)
        np.testing.assert_array_equal(decode_imagecodecs(event.encoded_image_string), expected)
        assert (event.height, event.width) == (2 * (6 + 2) + 2, 2 * (5 + 2) + 2)


def test_gradient_accumulation_saves_once_a_step(tmp_path: Path) -> None:
    saver = ImageSaver(tmp_path, every_n_steps=1, name="{step}_{batch_idx}_{index}.png", max_images=1)
    fit(Painter(), saver, steps=2, accumulate_grad_batches=2)
    # batches 0,1 make step 1 and 2,3 step 2: saved at the batch that completed the step
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["1_1_0.png", "2_3_0.png"]


def fake_trainer(rank: int, step: int) -> Any:
    return SimpleNamespace(global_step=step, global_rank=rank, current_epoch=0, loggers=[])


def test_ddp_rank_zero_only_unless_name_has_rank(tmp_path: Path) -> None:
    images = {"images": torch.rand(2, 3, 4, 4)}
    for rank in (0, 1):
        saver = ImageSaver(tmp_path / "zero", every_n_steps=1)
        saver.on_train_batch_end(fake_trainer(rank, 1), None, images, None, 0)
        saver.on_fit_end(fake_trainer(rank, 1), None)
        every = ImageSaver(tmp_path / "every", every_n_steps=1, name="{rank}_{step:06d}_{index:03d}.png")
        every.on_train_batch_end(fake_trainer(rank, 1), None, images, None, 0)
        every.on_fit_end(fake_trainer(rank, 1), None)
    assert sorted(p.name for p in (tmp_path / "zero").iterdir()) == ["000001_000.png", "000001_001.png"]
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == [
        f"{rank}_000001_{index:03d}.png" for rank in (0, 1) for index in (0, 1)
    ]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="every_n_steps"):
        ImageSaver(tmp_path, every_n_steps=0)
    with pytest.raises(OptionError, match=r"\['sample'\]"):
        ImageSaver(tmp_path, name="{sample}.png")
    with pytest.raises(OptionError, match="nrow"):
        ImageSaver(tmp_path, nrow=0)
    with pytest.raises(OptionError, match="compression"):
        ImageSaver(tmp_path, compression="best")  # type: ignore[arg-type]
    saver = ImageSaver(tmp_path / "x", every_n_steps=1)
    with pytest.raises(OptionError, match=r"'images'.*\['loss'\]"):
        saver.on_train_batch_end(fake_trainer(0, 1), None, {"loss": torch.zeros(())}, None, 0)
    saver.close()
    assert not (tmp_path / "x").exists()


def test_either_lightning_package_takes_the_callback(tmp_path: Path) -> None:
    import pytorch_lightning

    saver = ImageSaver(tmp_path)
    assert isinstance(saver, pl.Callback)
    assert isinstance(saver, pytorch_lightning.Callback)


def test_under_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """A real DDP run (ddp_spawn, gloo): rank 0 alone, or every rank with {rank} in the name."""
    savers = [
        ImageSaver(tmp_path / "zero", every_n_steps=1, max_images=2),
        ImageSaver(
            tmp_path / "every", every_n_steps=1, max_images=2, name="{rank}_{step:06d}_{index:03d}.png"
        ),
    ]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        callbacks=savers,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(num_workers|does not have many workers|log_every_n_steps).*")
        trainer.fit(Painter())
    steps, indices = (1, 2), (0, 1)
    assert sorted(p.name for p in (tmp_path / "zero").iterdir()) == [
        f"{step:06d}_{index:03d}.png" for step in steps for index in indices
    ]
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == [
        f"{rank}_{step:06d}_{index:03d}.png" for rank in (0, 1) for step in steps for index in indices
    ]


def test_tensorboard_grid_is_a_copy_and_its_errors_surface(tmp_path: Path) -> None:
    """The grid is encoded on a worker thread from a copy: changing the batch after the step
    does not change it; an error writing it is raised by close (fit's end)."""
    logger = pl.loggers.TensorBoardLogger(tmp_path / "logs", name="", version=0)
    trainer = SimpleNamespace(global_step=5, global_rank=0, current_epoch=0, loggers=[logger])
    images = torch.rand(3, 3, 6, 7)
    original = images.clone()
    saver = ImageSaver(tmp_path / "images", every_n_steps=5, nrow=3)
    saver.on_train_batch_end(trainer, None, {"images": images}, None, 0)
    images.mul_(0)  # the next training step reuses the buffer
    saver.on_fit_end(trainer, None)
    logger.experiment.flush()
    accumulator = EventAccumulator(str(tmp_path / "logs" / "version_0"), size_guidance={"images": 0})
    accumulator.Reload()
    (event,) = accumulator.Images("images")
    assert event.step == 5
    expected = tensorpng.to_array(original, grid=True, nrow=3)
    np.testing.assert_array_equal(decode_imagecodecs(event.encoded_image_string), expected)

    class Broken:
        def _get_file_writer(self) -> Any:
            raise OSError("disk full")

    broken = SimpleNamespace(global_step=5, global_rank=0, current_epoch=0, loggers=[logger])
    saver = ImageSaver(tmp_path / "images2", every_n_steps=5)
    logger._experiment = Broken()
    saver.on_train_batch_end(broken, None, {"images": original}, None, 0)
    with pytest.raises(OSError, match="disk full"):
        saver.close()
    assert len(list((tmp_path / "images2").iterdir())) == 3  # the files were still written
