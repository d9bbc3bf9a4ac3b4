"""Text metadata as generative tools write it: one chunk per key, tEXt/iTXt by charset,
compressed from 1 KiB on, read back exactly by Pillow and by tensorpng.read_text."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tensorpng
from conftest import parse_chunks, pngcheck

IMAGE = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
PARAMETERS = (
    "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
    "Seed: 1234, Size: 512x512, Model: sd15"
)


def workflow_json(size: int) -> str:
    nodes = [
        {"id": i, "type": "KSampler", "widgets_values": [i, "fixed", 20, 7.5, "euler", "normal", 1.0]}
        for i in range(size // 100)
    ]
    return json.dumps({"nodes": nodes, "links": [], "version": 0.4})


def text_tags(data: bytes) -> dict[str, bytes]:
    """Key -> chunk type of each text chunk."""
    return {
        body.split(b"\x00", 1)[0].decode("latin-1"): tag
        for tag, body in parse_chunks(data)
        if tag in (b"tEXt", b"zTXt", b"iTXt")
    }


@pytest.mark.parametrize("encoder", ["cpu", "device"])
def test_generative_metadata_round_trips(encoder: str, tmp_path: Path) -> None:
    import torch

    workflow = workflow_json(81_000)
    assert len(workflow) >= 80_000
    metadata = {
        "parameters": PARAMETERS,
        "workflow": workflow,
        "prompt": '{"3": {"class_type": "KSampler"}}',
        "Title": "Ünïcödé café",  # Latin-1
        "Comment": "猫の写真 🐱",  # not Latin-1
        "Empty": "",
        "Big unicode": "ж" * 3000,  # compressed iTXt
    }
    x = torch.from_numpy(IMAGE).permute(2, 0, 1).contiguous()
    (path,) = tensorpng.save(x, tmp_path / "gen.png", metadata=metadata, encoder=encoder)
    data = path.read_bytes()
    pngcheck(path)
    tags = text_tags(data)
    assert tags["parameters"] == b"tEXt" and tags["prompt"] == b"tEXt" and tags["Empty"] == b"tEXt"
    assert tags["Title"] == b"tEXt" and tags["Comment"] == b"iTXt"
    assert tags["workflow"] == b"zTXt" and tags["Big unicode"] == b"iTXt"
    assert len(data) < 20_000, "the 80 KB workflow must be stored compressed"
    with Image.open(path) as image:
        pillow_text = dict(image.text)  # type: ignore[attr-defined]
    expected = {**metadata, "tensorpng": pillow_text["tensorpng"]}
    assert pillow_text == expected
    assert tensorpng.read_text(path) == expected
    assert tensorpng.read_text(data) == expected


def test_threshold_is_one_kibibyte(tmp_path: Path) -> None:
    for size, tag in ((1023, b"tEXt"), (1024, b"zTXt")):
        data = tensorpng.encode(IMAGE, metadata={"k": "a" * size})
        assert text_tags(data)["k"] == tag
        assert tensorpng.read_text(data)["k"] == "a" * size


@pytest.mark.parametrize(
    "key", ["", " lead", "trail ", "two  spaces", "x" * 80, "nul\x00", "tab\there", "Ω-not-latin1"]
)
def test_invalid_keys_are_refused_before_writing(key: str, tmp_path: Path) -> None:
    with pytest.raises(tensorpng.OptionError, match="key"):
        tensorpng.save(IMAGE, tmp_path / "k.png", metadata={key: "v"})
    assert not list(tmp_path.iterdir())


def test_values_readers_would_refuse_are_refused(tmp_path: Path) -> None:
    with pytest.raises(tensorpng.OptionError, match="NUL"):
        tensorpng.encode(IMAGE, metadata={"k": "a\x00b"})
    with pytest.raises(tensorpng.OptionError, match="bytes"):
        tensorpng.encode(IMAGE, metadata={"k": "a" * (1 << 20 + 1)})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b'{"nodes": []}', "decode it first"),
        (None, "NoneType"),
        ({"a": 1}, "json.dumps"),
        (["x"], "json.dumps"),
        (True, "bool"),
        ("a\ud800b", "lone surrogate"),
    ],
)
def test_values_that_are_not_text_are_refused_not_written_as_their_repr(
    value: object, match: str, tmp_path: Path
) -> None:
    for call in (
        lambda: tensorpng.save(IMAGE, tmp_path / "v.png", metadata={"k": value}),
        lambda: tensorpng.save_image(torch.zeros(3, 4, 4), tmp_path / "s.png", metadata={"k": value}),
        lambda: tensorpng.Writer(tmp_path / "w").save(IMAGE, "v.png", metadata={"k": value}),
    ):
        with pytest.raises(tensorpng.OptionError, match=match):
            call()
    assert not list(tmp_path.rglob("*.png"))


def test_numbers_are_written_as_str_writes_them() -> None:
    data = tensorpng.encode(
        IMAGE, metadata={"seed": 42, "cfg": 7.5, "steps": np.int64(20), "eta": np.float32(0.5)}
    )
    texts = tensorpng.read_text(data)
    assert (texts["seed"], texts["cfg"], texts["steps"], texts["eta"]) == ("42", "7.5", "20", "0.5")


def test_read_text_reads_other_writers_and_refuses_non_pngs(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("plain", "value")
    info.add_text("zipped", "z" * 5000, zip=True)
    info.add_itxt("intl", "Grüße 世界", lang="de", tkey="Gruss", zip=True)
    Image.fromarray(IMAGE).save(tmp_path / "p.png", pnginfo=info)
    assert tensorpng.read_text(tmp_path / "p.png") == {
        "plain": "value",
        "zipped": "z" * 5000,
        "intl": "Grüße 世界",
    }
    with pytest.raises(tensorpng.DecodeError, match="not a PNG"):
        tensorpng.read_text(b"GIF89a")


def test_read_text_limits_compressed_text() -> None:
    bomb = zlib.compress(b"a" * (2 << 20), 9)  # 2 MiB of text in ~2 KiB
    data = tensorpng.encode(IMAGE, metadata=False)
    from tensorpng._png_chunks import chunk

    end = data.index(b"IEND") - 4
    forged = data[:end] + chunk(b"zTXt", b"bomb\x00\x00" + bomb) + data[end:]
    with pytest.raises(tensorpng.DecodeError, match="more than 1,048,576 bytes"):
        tensorpng.read_text(forged)


def test_every_source_form_reads_alike(tmp_path: Path) -> None:
    """A path, bytes, bytearray, memoryview or binary file object: the same text and pixels;
    a message never holds the file's bytes."""
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = tensorpng.encode(image, metadata={"k": "v"})
    path = tmp_path / "f.png"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert tensorpng.read_text(source)["k"] == "v", type(source)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        np.testing.assert_array_equal(tensorpng.load(source, as_tensor=False), image)
    for bad, match in ((12, "got int"), (io.StringIO("x"), "binary mode")):
        with pytest.raises(tensorpng.ReadError, match=match):
            tensorpng.load(bad)  # type: ignore[arg-type]
    with pytest.raises(tensorpng.DecodeError) as info:
        tensorpng.load(b"\x89PNG\r\n\x1a\n" + b"x" * 5000)
    assert len(str(info.value)) < 300  # names the damage, not the bytes
