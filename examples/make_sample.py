"""Make ``examples/sample.safetensors``: the bundled sample for ``tensorpng convert``.

Eight public-domain photos bundled with scikit-image (astronaut, coffee, chelsea, rocket,
camera, immunohistochemistry, hubble_deep_field, retina), center-cropped, resized to 96x96 RGB uint8,
then normalized as a torchvision pipeline would (``ToTensor`` then ``Normalize`` with
ImageNet mean/std) and stored as one float16 ``images`` array of shape 8x3x96x96 (NCHW).
float16 keeps these values to within 0.06 of a pixel step, so converting them back gives
exactly the uint8 pixels.

    python examples/make_sample.py   # needs scikit-image and safetensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from safetensors.numpy import load_file, save_file
from skimage.color import gray2rgb
from skimage.transform import resize

SIZE = 96
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def square(photo: np.ndarray) -> np.ndarray:
    photo = photo[0] if isinstance(photo, tuple) else photo
    photo = gray2rgb(photo) if photo.ndim == 2 else photo[..., :3]
    side = min(photo.shape[:2])
    top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    crop = photo[top : top + side, left : left + side]
    return np.round(resize(crop, (SIZE, SIZE), anti_aliasing=True, preserve_range=True)).astype(np.uint8)


def main() -> None:
    pixels = np.stack([square(getattr(skimage.data, name)()) for name in PHOTOS])
    tensors = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255  # ToTensor: NCHW in [0, 1]
    normalized = (tensors - MEAN[:, None, None]) / STD[:, None, None]  # Normalize
    target = Path(__file__).with_name("sample.safetensors")
    save_file(
        # contiguous: safetensors stores the buffer in memory order, whatever the strides say
        {"images": np.ascontiguousarray(normalized, dtype=np.float16)},
        str(target),
        metadata={"photos": ",".join(PHOTOS), "normalize": "imagenet", "layout": "NCHW"},
    )
    stored = load_file(str(target))["images"].astype(np.float64)
    restored = np.rint((stored * STD[:, None, None] + MEAN[:, None, None]) * 255)
    assert np.array_equal(restored.transpose(0, 2, 3, 1), pixels), "float16 lost a pixel"
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
