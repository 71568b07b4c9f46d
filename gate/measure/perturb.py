"""Perturbed copies of the inputs (the policy's `perturbations:`): what an edge device's noisy sensor, dropped
features, coarse digitizer or changed lighting do to the data the models see.

Pure and deterministic. The perturbed value of sample i depends only on the clean sample, the policy's seed,
the perturbation's index and the data key it comes from, never on the batch the sample runs in: base and
candidates see the very same perturbed samples (the comparison stays paired), and a run at another batch
size sees them too. Random draws come in fixed blocks of BLOCK samples, each from its own seed.

The transforms (x: a batch of clean samples, as floats):
- gaussian_noise: x + N(0, s²) with s² = mean(x_i²) / 10^(snr_db/10), the power taken over each sample's own
  values, so the sample's signal-to-noise ratio is snr_db (a sample of zeros stays zero);
- dropout: each value set to `value` (0 by default) with probability `rate`: a missing feature, as the
  device fills it;
- quantize: each value rounded to one of 2^bits levels spread evenly over its observed range (per feature
  for flat samples, over the whole input for samples of several axes);
- brightness: x + delta × (observed range), clipped to the observed range (a saturating sensor);
- contrast: m_i + factor × (x - m_i), m_i the sample's mean, clipped to the observed range.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

# kind -> its parameters; the first is required. Policy validation (gate/policy.py) reads this table.
KINDS: dict[str, tuple[str, ...]] = {
    "gaussian_noise": ("snr_db",),
    "dropout": ("rate", "value"),
    "quantize": ("bits",),
    "brightness": ("delta",),
    "contrast": ("factor",),
}
IMAGE_ONLY = ("brightness", "contrast")  # defined on image-shaped inputs: lighting has no meaning elsewhere
BLOCK = 64  # samples per block of random draws


def default_name(kind: str, params: dict[str, Any]) -> str:
    """How reports name a perturbation the policy did not name."""
    if kind == "gaussian_noise":
        return f"gaussian_noise snr {params['snr_db']:g} dB"
    if kind == "dropout":
        value = params.get("value", 0)
        return f"dropout rate {params['rate']:g}" + (f" value {value:g}" if value else "")
    if kind == "quantize":
        return f"quantize {params['bits']} bits"
    if kind == "brightness":
        return f"brightness {params['delta']:+g}"
    return f"contrast x{params['factor']:g}"


def is_image_shaped(column: np.ndarray) -> bool:
    """Samples of two or three axes: (H, W), (C, H, W) or (H, W, C)."""
    return column.ndim in (3, 4)


def observed_range(column: np.ndarray, *, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the clean data: per feature (each position of a flat sample) or over the whole input."""
    if per_feature and column.ndim == 2:
        return column.min(axis=0).astype(np.float64), column.max(axis=0).astype(np.float64)
    return np.float64(column.min()), np.float64(column.max())


def _per_sample(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    return values.reshape((-1,) + (1,) * (x.ndim - 1))


def gaussian_noise(x: np.ndarray, z: np.ndarray, snr_db: float) -> np.ndarray:
    """x plus standard normals z scaled so that each sample's signal-to-noise ratio is snr_db."""
    power = np.mean(np.square(x, dtype=np.float64).reshape(len(x), -1), axis=1)
    scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (x + _per_sample(scale, x) * z).astype(x.dtype, copy=False)


def dropout(x: np.ndarray, u: np.ndarray, rate: float, value: float) -> np.ndarray:
    """x with each value where the uniform draw u is below rate replaced by value."""
    return np.where(u < rate, np.asarray(value, dtype=x.dtype), x)


def quantize(x: np.ndarray, low, high, bits: int) -> np.ndarray:
    """x rounded to 2^bits evenly spaced levels from low to high (a constant feature stays as it is)."""
    step = (np.asarray(high, dtype=np.float64) - low) / (2 ** bits - 1)
    safe = np.where(step > 0, step, 1.0)
    levels = np.round((x - low) / safe)
    out = np.where(step > 0, low + levels * safe, x)
    return np.clip(out, low, high).astype(x.dtype, copy=False)


def brightness(x: np.ndarray, low: float, high: float, delta: float) -> np.ndarray:
    return np.clip(x + delta * (high - low), low, high).astype(x.dtype, copy=False)


def contrast(x: np.ndarray, low: float, high: float, factor: float) -> np.ndarray:
    mean = _per_sample(np.mean(x.reshape(len(x), -1), axis=1, dtype=np.float64), x)
    return np.clip(mean + factor * (x - mean), low, high).astype(x.dtype, copy=False)


def block_draws(seed: int, index: int, key: str, block: int, sample_shape: tuple, draw: str) -> np.ndarray:
    """The random draws (standard normal or uniform [0, 1)) of samples [block*BLOCK, (block+1)*BLOCK) of one
    data key under one perturbation: a function of its arguments alone."""
    rng = np.random.default_rng([seed, index, zlib.crc32(key.encode("utf-8")), block])
    size = (BLOCK,) + tuple(sample_shape)
    return rng.standard_normal(size, dtype=np.float32) if draw == "normal" else rng.random(size, dtype=np.float32)


class Perturber:
    """The rows one perturbation feeds in place of the data's (the `transform` of Binding.transformed).

    columns: data key -> the whole clean column of every input it perturbs (other keys pass unchanged); the
    observed ranges are taken from them once. The one state is a cache of the last blocks of draws, so the
    base and every candidate running the same batch draw them once."""

    def __init__(self, perturbation, *, seed: int, columns: dict[str, np.ndarray]) -> None:
        self.kind, self.index, self.seed = perturbation.kind, perturbation.index, seed
        self.params = dict(perturbation.parameters)
        self.keys = frozenset(columns)
        self._ranges = {}
        if self.kind == "quantize" or self.kind in IMAGE_ONLY:
            self._ranges = {key: observed_range(col, per_feature=self.kind == "quantize")
                            for key, col in columns.items()}
        self._blocks: dict[tuple[str, int], np.ndarray] = {}

    def __call__(self, key: str, rows: np.ndarray, first: int) -> np.ndarray:
        if key not in self.keys or len(rows) == 0:
            return rows
        x = np.asarray(rows, dtype=rows.dtype if np.issubdtype(rows.dtype, np.floating) else np.float32)
        p = self.params
        if self.kind == "gaussian_noise":
            return gaussian_noise(x, self._draws(key, first, x.shape, "normal"), p["snr_db"])
        if self.kind == "dropout":
            return dropout(x, self._draws(key, first, x.shape, "uniform"), p["rate"], p.get("value", 0.0))
        low, high = self._ranges[key]
        if self.kind == "quantize":
            return quantize(x, low, high, int(p["bits"]))
        if self.kind == "brightness":
            return brightness(x, low, high, p["delta"])
        return contrast(x, low, high, p["factor"])

    def _draws(self, key: str, first: int, shape: tuple, draw: str) -> np.ndarray:
        count, sample = shape[0], shape[1:]
        b0, b1 = first // BLOCK, (first + count - 1) // BLOCK
        for old in [k for k in self._blocks if k[0] == key and k[1] < b0]:
            del self._blocks[old]  # samples run in order: blocks before this batch are done
        blocks = []
        for b in range(b0, b1 + 1):
            if (key, b) not in self._blocks:
                self._blocks[(key, b)] = block_draws(self.seed, self.index, key, b, sample, draw)
            blocks.append(self._blocks[(key, b)])
        joined = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        lo = first - b0 * BLOCK
        return joined[lo:lo + count]
