"""Small pictures of image inputs, so a reviewer sees which samples a candidate got wrong.

An input is drawn when one sample of it is image-shaped: (H, W), (C, H, W) or (H, W, C) with
C in 1, 3, 4 and both sides at least MIN_SIDE. Each picture is scaled to 0..255 on its own range
(calibration data is often normalised floats), shrunk by block means to at most SIDE pixels a
side, and kept as a base64 PNG (Pillow, which matplotlib requires) for a data: URI in report.html.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

SIDE = 64
MIN_SIDE = 4
CHANNELS = (1, 3, 4)


def as_image(sample: np.ndarray) -> np.ndarray | None:
    """One sample as (H, W) or (H, W, C), or None when it is not image-shaped."""
    a = np.asarray(sample)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a):
        return None
    if a.ndim == 3 and a.shape[0] in CHANNELS and min(a.shape[1:]) >= MIN_SIDE:
        a = np.moveaxis(a, 0, -1)  # channels first (torch, ONNX)
    elif not (a.ndim == 3 and a.shape[2] in CHANNELS and min(a.shape[:2]) >= MIN_SIDE) and \
            not (a.ndim == 2 and min(a.shape) >= MIN_SIDE):
        return None
    return a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0..255 over the image's own range (all channels together); a constant image is mid-grey."""
    if image.dtype == np.uint8:
        return image
    x = image.astype(np.float64)
    low, high = float(np.nanmin(x)), float(np.nanmax(x))
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return np.full(image.shape, 128, dtype=np.uint8)
    return np.round(np.nan_to_num((x - low) / (high - low)) * 255).astype(np.uint8)


def shrink(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Block means by one whole factor for both axes (the aspect ratio kept): at most `side` a side."""
    factor = math.ceil(max(image.shape[:2]) / side)
    if factor <= 1:
        return image
    h, w = image.shape[:2]
    pad = [(0, -h % factor), (0, -w % factor)] + [(0, 0)] * (image.ndim - 2)
    x = np.pad(image.astype(np.float64), pad, mode="edge")
    x = x.reshape(x.shape[0] // factor, factor, x.shape[1] // factor, factor, *x.shape[2:]).mean(axis=(1, 3))
    return np.round(x).astype(np.uint8)


def png_base64(sample: np.ndarray) -> str | None:
    """A sample's thumbnail as base64 PNG text, or None when it is not an image."""
    image = as_image(sample)
    if image is None:
        return None
    from PIL import Image

    pixels = np.ascontiguousarray(shrink(to_uint8(image)))  # uint8 (H, W), (H, W, 3), (H, W, 4): L, RGB, RGBA
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_input(samples: dict[str, np.ndarray]) -> str | None:
    """The first input (in the model's order) whose samples are image-shaped."""
    return next((name for name, sample in samples.items() if as_image(sample) is not None), None)
