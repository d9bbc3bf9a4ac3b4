"""``Writer(..., metadata=)`` and ``Writer.save(..., metadata=)`` write the text chunks that
``tensorpng.save(..., metadata=)`` writes, byte for byte, on every capture path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tensorpng
from conftest import decode_imagecodecs, parse_chunks, pngcheck
from tensorpng import Writer

TEXT_TAGS = (b"tEXt", b"zTXt", b"iTXt")
METADATA = {
    "parameters": "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1",
    "workflow": json.dumps({"nodes": [{"id": i, "type": "KSampler"} for i in range(3000)]}),  # ~80 KB
    "Comment": "猫の写真 🐱",
    "Empty": "",
}
OTHER = {"prompt": '{"3": {"class_type": "KSampler"}}', "Title": "Café"}


def texts(path: Path) -> list[tuple[bytes, bytes]]:
    """The text chunks, in file order, as (type, data)."""
    return [(tag, body) for tag, body in parse_chunks(path.read_bytes()) if tag in TEXT_TAGS]


def pillow_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        return dict(image.text)  # type: ignore[attr-defined]


def batch() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(2).random((2, 3, 12, 10), dtype=np.float32))


@pytest.mark.parametrize("encoder", ["cpu", "device"])
def test_writer_writes_the_chunks_save_writes(tmp_path: Path, encoder: str) -> None:
    x = batch()
    assert len(METADATA["workflow"]) >= 80_000
    reference = tensorpng.save(x, tmp_path / "ref" / "{index}.png", metadata=METADATA, encoder=encoder)
    other = tensorpng.save(x, tmp_path / "other" / "{index}.png", metadata=OTHER, encoder=encoder)
    with Writer(tmp_path / "w", metadata=METADATA, encoder=encoder) as writer:
        writer.save(x, "default/{index}.png")  # the Writer's default
        writer.save(x, "call/{index}.png", metadata=OTHER)  # this call's own
        writer.save(x, "none/{index}.png", metadata=False)  # no text at all
    for index, (ref, oth) in enumerate(zip(reference, other, strict=True)):
        default, call = tmp_path / "w" / "default" / f"{index}.png", tmp_path / "w" / "call" / f"{index}.png"
        pngcheck(default, call)
        assert texts(default) == texts(ref) and texts(call) == texts(oth)
        assert {tag for tag, _ in texts(default)} == set(TEXT_TAGS)  # tEXt, zTXt and iTXt all there
        for path, expected in ((default, METADATA), (call, OTHER)):
            found = pillow_text(path)
            assert found.pop("tensorpng") and found == expected
            assert {k: v for k, v in tensorpng.read_text(path).items() if k != "tensorpng"} == expected
            np.testing.assert_array_equal(
                decode_imagecodecs(path.read_bytes()), decode_imagecodecs(ref.read_bytes())
            )
        assert texts(tmp_path / "w" / "none" / f"{index}.png") == []


def test_writer_refuses_bad_metadata_before_queueing(tmp_path: Path) -> None:
    with pytest.raises(tensorpng.OptionError, match="key"):
        Writer(tmp_path / "a", metadata={"bad  key": "x"})
    with Writer(tmp_path / "b") as writer:
        with pytest.raises(tensorpng.OptionError, match="NUL"):
            writer.save(batch(), "{index}.png", metadata={"k": "a\x00b"})
        with pytest.raises(tensorpng.OptionError, match="own record"):
            writer.save(batch(), "{index}.png", metadata={"tensorpng": "x"})
    assert not list((tmp_path / "b").rglob("*.png"))


def test_save_image_writes_the_chunks_save_writes(tmp_path: Path) -> None:
    """torchvision's drop-in: the same user chunks (the mapping record describes its grid)."""
    (reference,) = tensorpng.save(batch()[0], tmp_path / "ref.png", metadata=METADATA)
    in_memory = io.BytesIO()
    tensorpng.save_image(batch(), in_memory, metadata=METADATA)
    tensorpng.save_image(batch(), tmp_path / "grid.png", metadata=METADATA)
    (tmp_path / "memory.png").write_bytes(in_memory.getvalue())
    for path in (tmp_path / "grid.png", tmp_path / "memory.png"):
        pngcheck(path)
        ours = [(tag, body) for tag, body in texts(path) if not body.startswith(b"tensorpng\x00")]
        assert ours == [
            (tag, body) for tag, body in texts(reference) if not body.startswith(b"tensorpng\x00")
        ]
        found = pillow_text(path)
        assert found.pop("tensorpng") and found == METADATA
        assert {k: v for k, v in tensorpng.read_text(path).items() if k != "tensorpng"} == METADATA
    tensorpng.save_image(batch(), tmp_path / "bare.png", metadata=False)
    assert texts(tmp_path / "bare.png") == []
