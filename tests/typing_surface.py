"""Checked by mypy in .ci/run, never run: the public options are typed for type checkers.

Valid calls carry no comment; each misspelled option or wrong value carries the ignore for the
error mypy must report. With --warn-unused-ignores (strict), an ignore that no longer matches
an error fails the check: mypy no longer catches that mistake. A valid call that mypy rejects
fails it too. (The name does not start with ``test_``: pytest does not collect it.)
"""

from __future__ import annotations

import numpy as np

import tensorpng
from tensorpng.lightning import ImageSaver
from tensorpng.tensorboard import add_image, add_images

image = np.zeros((4, 4), np.float32)

# Valid calls: every option group, type checked and unmarked.
tensorpng.save(image, "a.png", layout="HW", mean=0.5, std=(0.2,), value_range=(0, 1), bits=16)
tensorpng.save(image, "a.png", grid=True, nrow=4, padding=1, pad_value=0.5, cmap="viridis")
tensorpng.save(image, "a.png", compression="small", metadata={"k": "v"}, encoder="cpu")
tensorpng.save(image, "a.png", overwrite=False, workers=2, storage_options={"anon": True})
tensorpng.encode(image, scale="image", palette=None, metadata=False)
tensorpng.to_array(image, layout="HW", grid=False, palette="voc")
tensorpng.Writer("out", workers=1, on_full="drop", std=0.5, compression="none", overwrite=False)
tensorpng.save_animation(image[None], "a.png", fps=5, loop=1, scale="batch", overwrite=True)
tensorpng.save_image(image, "a.png", nrow=2, normalize=True, bits=16, compression="fast")
add_images(object(), "tag", image, 1, None, nrow=2, cmap="gray", metadata=None)
add_image(object(), "tag", image, 1, layout="HW", palette=True)
ImageSaver("out", every_n_steps=10, max_pending=1, grid=True, encoder="device")

# Misspelled options.
tensorpng.save(image, "a.png", sdt=0.5)  # type: ignore[call-arg]
tensorpng.encode(image, value_rnage=(0, 1))  # type: ignore[call-arg]
tensorpng.to_array(image, lay_out="HW")  # type: ignore[call-arg]
tensorpng.to_array(image, compression="fast")  # type: ignore[call-arg]
tensorpng.Writer("out", meen=0.5)  # type: ignore[call-arg]
tensorpng.save_animation(image[None], "a.png", grid=True)  # type: ignore[call-arg]
tensorpng.save_image(image, "a.png", normalise=True)  # type: ignore[call-arg]
add_images(object(), "tag", image, grid=True)  # type: ignore[call-arg]
add_image(object(), "tag", image, nrow=2)  # type: ignore[call-arg]
ImageSaver("out", worker=2)  # type: ignore[call-arg]

# Wrong values.
tensorpng.save(image, "a.png", compression="best")  # type: ignore[arg-type]
tensorpng.save(image, "a.png", overwrite="False")  # type: ignore[arg-type]
tensorpng.encode(image, scale="global")  # type: ignore[arg-type]
tensorpng.to_array(image, nrow="8")  # type: ignore[arg-type]
tensorpng.Writer("out", encoder="gpu")  # type: ignore[arg-type]
tensorpng.save_image(image, "a.png", bits=12)  # type: ignore[arg-type]
