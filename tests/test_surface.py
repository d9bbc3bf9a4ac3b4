"""The public surface: typed keyword-only options, one name rule, friendly misuse."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tensorpng
from conftest import GatedSink, decode_imagecodecs
from tensorpng import OptionError, PathError, ShapeError, TensorPNGError, UnknownOptionError


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: tensorpng.save(np.zeros((4, 4)), "a.png", sdt=1), "tensorpng.save"),
        (lambda: tensorpng.encode(np.zeros((4, 4)), value_rnage=(0, 1)), "tensorpng.encode"),
        (lambda: tensorpng.to_array(np.zeros((4, 4)), lay_out="HW"), "tensorpng.to_array"),
        (lambda: tensorpng.Writer("w", meen=0.5), "tensorpng.Writer"),
        (lambda: tensorpng.make_grid(np.zeros((2, 3, 4, 4)), nrwo=2), "tensorpng.make_grid"),
        (lambda: tensorpng.save_image(np.zeros((3, 4, 4)), "a.png", paddin=1), "tensorpng.save_image"),
        (lambda: tensorpng.save_animation(np.zeros((2, 4, 4)), "a.png", fsp=3), "tensorpng.save_animation"),
    ],
)
def test_a_misspelled_option_names_the_function_and_the_closest_option(call: object, name: str) -> None:
    with pytest.raises(UnknownOptionError, match=rf"{name}\(\) got an unknown option .*did you mean") as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, TypeError) and isinstance(info.value, TensorPNGError)


def test_writer_save_catches_a_misspelled_option_among_the_fields(tmp_path: Path) -> None:
    with tensorpng.Writer(tmp_path) as writer, pytest.raises(UnknownOptionError, match="did you mean 'std'"):
        writer.save(np.zeros((4, 4), np.float32), "a.png", sdt=0.5)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        ({"workers": 2}, r"option of tensorpng.Writer\(...\) and tensorpng.save"),
        ({"on_full": "drop"}, r"option of tensorpng.Writer\(...\)"),
        ({"max_pending": 1}, r"option of tensorpng.Writer\(...\)"),
        ({"fps": 5}, "option of Writer.add_frame"),
    ],
)
def test_writer_save_refuses_options_of_other_calls(tmp_path: Path, keywords: dict, match: str) -> None:
    """Not taken silently as name fields that the name does not use."""
    with tensorpng.Writer(tmp_path) as writer, pytest.raises(UnknownOptionError, match=match):
        writer.save(np.zeros((4, 4), np.float32), "a{index}.png", **keywords)
    assert not any(tmp_path.iterdir())


def test_save_to_a_file_object_points_to_encode() -> None:
    with pytest.raises(PathError, match=r"write tensorpng.encode\(x\) to it"):
        tensorpng.save(np.zeros((4, 4)), io.BytesIO())  # type: ignore[arg-type]


def test_a_callers_index_is_refused_not_overwritten(tmp_path: Path) -> None:
    with tensorpng.Writer(tmp_path) as writer:
        with pytest.raises(tensorpng.PathError, match="position in the batch"):
            writer.save(np.zeros((4, 4), np.float32), "c{index}.png", index=5)
        with pytest.raises(tensorpng.PathError, match="position in the batch"):
            writer.add_frame(np.zeros((4, 4), np.float32), "c{index}.png", fields={"index": 5})
        writer.save(np.zeros((4, 4), np.float32), "w{workers}.png", workers=3)  # a field it uses: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w3.png"]


def test_positional_options_are_refused_with_a_hint() -> None:
    with pytest.raises(UnknownOptionError, match="by keyword"):
        tensorpng.encode(np.zeros((4, 4)), "HW")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"overwrite": "False"}, "overwrite must be True or False"), ({"bits": 16.0}, "bits must be 8 or 16")],
)
def test_option_values_are_checked_strictly(options: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=message):
        tensorpng.save(np.zeros((4, 4), np.float32), tmp_path / "a.png", **options)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_save_and_writer_name_a_batch_the_same_way(tmp_path: Path) -> None:
    batch = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    saved = tensorpng.save(batch, tmp_path / "a" / "img.png")
    with tensorpng.Writer(tmp_path / "b") as writer:
        writer.save(batch, "img.png")
    assert [p.name for p in saved] == ["img_0.png", "img_1.png", "img_2.png"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [p.name for p in saved]
    for index, path in enumerate(saved):
        assert np.array_equal(decode_imagecodecs(path.read_bytes()), batch[index])


def test_a_batch_of_one_is_written_to_the_path_itself(tmp_path: Path) -> None:
    depth = torch.rand(1, 1, 12, 16)
    assert tensorpng.save(depth, tmp_path / "depth.png", cmap="turbo", scale="image") == [
        tmp_path / "depth.png"
    ]
    assert tensorpng.load(tmp_path / "depth.png").shape == (1, 12, 16)
    with tensorpng.Writer(tmp_path) as writer:
        writer.save(depth, "w.png", cmap="turbo", scale="image")
    assert (tmp_path / "w.png").is_file()


@pytest.mark.parametrize("count", [2, 3, 4])
def test_label_batches_of_two_to_four_are_batches(count: int, tmp_path: Path) -> None:
    labels = torch.randint(0, 21, (count, 6, 7))
    paths = tensorpng.save(labels, tmp_path / "seg" / "{index}.png", palette="voc")
    assert len(paths) == count
    for path, expected in zip(paths, labels, strict=True):
        assert np.array_equal(tensorpng.load(path), expected.numpy())


def test_a_png_suffix_is_required(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"has \.jpg; end it with \.png"):
        tensorpng.save(np.zeros((4, 4), np.uint8), tmp_path / "a.jpg")
    assert not any(tmp_path.iterdir())


def test_images_of_different_sizes_get_a_clear_error() -> None:
    with pytest.raises(ShapeError, match="different shapes.*one by one"):
        tensorpng.to_array([np.zeros((4, 4)), np.zeros((5, 4))])


def test_five_dimensional_input_suggests_flatten() -> None:
    with pytest.raises(ShapeError, match=r"flatten\(0, 1\)"):
        tensorpng.to_array(torch.zeros(2, 3, 3, 8, 8))


@pytest.mark.parametrize(
    ("values", "options", "fix"),
    [
        (
            np.linspace(0, 255, 3 * 32 * 32, dtype=np.float32).reshape(32, 32, 3),
            {},
            "value_range=\\(0, 255\\)",
        ),
        ((np.random.default_rng(1).random((3, 32, 32), np.float32) - 0.45) / 0.22, {}, "mean=/std="),
    ],
)
def test_the_two_common_mistakes_warn_once(values: np.ndarray, options: dict[str, object], fix: str) -> None:
    batch = np.stack([values] * 5)  # one warning for the call, not one per image
    with pytest.warns(UserWarning, match=fix) as record:
        tensorpng.to_array(batch, **options)  # type: ignore[arg-type]
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    assert record[0].filename == __file__  # points at the caller's line


def test_save_animation_warns_once_like_save(tmp_path: Path) -> None:
    frames = torch.rand(4, 3, 16, 16) * 255  # 0..255 floats: the common mistake
    with pytest.warns(UserWarning, match="value_range=\\(0, 255\\)") as record:
        tensorpng.save_animation(frames, tmp_path / "a.png")
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensorpng.save_animation(frames, tmp_path / "b.png", value_range=(0, 255))


def test_a_loop_gets_the_warning_once_not_at_every_step() -> None:
    """The text names the share in coarse steps, so Python's filter shows it once per line."""
    rng = np.random.default_rng(4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        for step in range(20):  # a different share of clamped values at every step
            tensorpng.to_array(rng.random((3, 16, 16), np.float32) * (120 + 10 * step))
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1


def test_float_slivers_above_one_do_not_warn() -> None:
    image = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    image[::3] = np.float32(1.0000001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensorpng.encode(image)
        tensorpng.encode(image, mean=0.0, std=1.0)


def test_the_writer_warns_from_its_workers_for_device_style_inputs(tmp_path: Path) -> None:
    """The batch is sampled on a worker (not in save, which returns sooner); the warning comes
    at the caller's next call, pointing at its line."""
    with pytest.warns(UserWarning, match="value_range") as record, tensorpng.Writer(tmp_path) as writer:
        writer.save(torch.rand(2, 3, 16, 16) * 255, "{index}.png")
        writer.flush()
    assert [w.filename for w in record if issubclass(w.category, UserWarning)] == [__file__]


@pytest.mark.parametrize(
    "x", [np.full((2, 4, 4), np.nan, np.float32), torch.full((2, 3, 4, 4), float("nan"))]
)
def test_warnings_from_the_writers_workers_point_at_the_callers_line(tmp_path: Path, x: object) -> None:
    """Noticed on a worker thread, issued at the caller's next call (here flush), at its line."""
    with tensorpng.Writer(tmp_path) as writer, pytest.warns(RuntimeWarning, match="NaN") as record:
        writer.save(x, "{index}.png")
        writer.flush()
    assert {w.filename for w in record} == {__file__}


def test_save_to_an_fsspec_url(tmp_path: Path) -> None:
    import fsspec  # installed with the tests (the s3 extra)

    batch = np.random.default_rng(3).integers(0, 255, (2, 8, 8), dtype=np.uint8)
    urls = tensorpng.save(batch, "memory://surface/run/{index:02d}.png", layout="NHW")
    assert urls == ["memory:///surface/run/00.png", "memory:///surface/run/01.png"]
    fs = fsspec.filesystem("memory")
    assert np.array_equal(decode_imagecodecs(fs.cat("/surface/run/01.png")), batch[1])


def test_a_sink_is_injected_through_the_constructor(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path)
    sink.gate.set()
    with tensorpng.Writer("unused-root", sink=sink) as writer:
        writer.save(np.zeros((4, 4), np.uint8), "x.png")
    assert (tmp_path / "x.png").is_file() and not Path("unused-root").exists()


def test_every_public_name_is_listed() -> None:
    assert sorted(tensorpng.__all__) == sorted(set(tensorpng.__all__))
    for name in tensorpng.__all__:
        assert hasattr(tensorpng, name)


def test_a_writer_loop_gets_a_workers_warning_once(tmp_path: Path) -> None:
    """Deferred warnings replay at different lines (a later save, then close): once a Writer."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        writer = tensorpng.Writer(tmp_path)
        for step in range(20):
            writer.save(torch.rand(4, 3, 16, 16) * 255, "s{step}_{index}.png", step=step)
        writer.close()
    caught = [w for w in record if issubclass(w.category, UserWarning)]
    assert len(caught) == 1 and caught[0].filename == __file__
