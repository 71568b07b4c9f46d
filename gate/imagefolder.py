"""A folder of images with a labels CSV, and the preprocessing the policy declares (data.images).

The CSV (labels.csv in the folder by default) has a `file` column, each image's path relative to the folder, and
the labels and group columns. The images become one column, `image`, that decodes a batch's images when the batch
is read (Pillow), so a folder of 100k images is never held in memory; the CSV's other columns are ordinary columns.

Image files are hostile input: a path that leaves the folder (absolute, `..`, a link out) is refused before any
file is opened; only raster formats whose decoders are Pillow's own are tried (never EPS, which runs
Ghostscript); an image over `max_pixels` is refused from its header, before it is decoded (Pillow's
decompression-bomb warning is an error too); a file that is not an image, or is truncated, is exit 2 naming the
file and its CSV line.

Preprocessing, in this order: convert to `channels` (RGB, BGR or L, with Pillow's convert); if `resize`, scale the
shorter side to it (the longer in proportion, rounded down); `crop: center` takes the centred `size` (odd margins
leave the extra pixel right and below), `crop: none` resizes to `size` exactly; then values = (pixels / scale -
mean) / std per channel in float32 (uint8 pixels as they are when none of the three is given); `layout` NCHW or
NHWC.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gate.columns import LazyColumn
from gate.errors import GateInputError
from gate.files import MB

FILE_COLUMN = "file"  # the CSV column of image paths
IMAGE_KEY = "image"  # the data key of the decoded images
LAYOUTS = ("NCHW", "NHWC")
CHANNELS = ("RGB", "BGR", "L")
CROPS = ("center", "none")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")
DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB: far beyond an edge model's input
PILLOW_MAX_PIXELS = 89_478_485  # Pillow's own default warning limit; a policy may not go beyond it
MAX_SIDE = 16_384  # size and resize: no edge model takes more
# raster formats with Pillow's own decoders; never EPS/PDF/PSD-style formats that call out or carry programs
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# decoded batches kept (at least the last one): base and every candidate read the same batch in turn
RECENT_BYTES = 256 * MB


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """The policy's data.images, validated (gate/policy.py)."""
    size: tuple[int, int]  # (height, width) of every sample
    labels: str = "labels.csv"  # relative to the image folder, inside it
    resize: int | None = None  # the shorter side first scaled to this
    crop: str = "none"  # "center" | "none"
    interpolation: str = "bilinear"
    scale: float | None = None  # pixels are divided by this
    mean: tuple[float, ...] | None = None  # per channel (one value: every channel), after scale
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    channels: str = "RGB"
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_block(cls, block: dict) -> ImageSpec:
        given = {k: v for k, v in block.items() if v is not None}
        given["size"] = tuple(given["size"])
        for key in ("mean", "std"):
            if key in given:
                given[key] = tuple(float(v) for v in given[key])
        if "scale" in given:
            given["scale"] = float(given["scale"])
        given.setdefault("crop", "center" if given.get("resize") else "none")
        return cls(**given)

    @property
    def channel_count(self) -> int:
        return 1 if self.channels == "L" else 3

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        h, w = self.size
        c = self.channel_count
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.scale is None and self.mean is None and self.std is None else np.float32)

    def bounds(self) -> tuple[float, float]:
        """The lowest and highest value a sample can hold after preprocessing (pixels 0..255)."""
        if self.dtype == np.uint8:
            return 0.0, 255.0
        top = 255.0 / (self.scale or 1.0)
        mean = np.broadcast_to(np.asarray(self.mean or (0.0,), dtype=np.float64), (self.channel_count,))
        std = np.broadcast_to(np.asarray(self.std or (1.0,), dtype=np.float64), (self.channel_count,))
        ends = np.stack([(0.0 - mean) / std, (top - mean) / std])
        return float(ends.min()), float(ends.max())


def labels_path(folder: Path, name: str) -> Path:
    """data.images.labels, which must stay inside the folder (it is part of the data, hashed with it)."""
    path = folder / name
    if Path(name).is_absolute() or not Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(folder))):
        raise GateInputError(f"data.images.labels {name!r} leads out of the image folder", path=folder,
                             fix="keep the labels CSV inside the image folder and give its path relative to it "
                             "(default labels.csv)")
    return path


def image_files(folder: Path, labels_csv: Path, cells: np.ndarray, lines: np.ndarray, max_mb: float
                ) -> tuple[list[Path], int]:
    """The image of every CSV row, each checked before any is opened: inside the folder (no absolute path, no
    `..`, no link out), present, a non-empty file within max_file_mb. -> (paths, their total size in bytes)."""
    inside = Path(os.path.realpath(folder))
    files, total, sizes = [], 0, {}
    for cell, line in zip(cells.tolist(), lines.tolist()):
        cell = str(cell)

        def refuse(problem: str, fix: str):
            raise GateInputError(f"lists the image {cell[:200]!r}, {problem}", path=labels_csv, line=int(line),
                                 fix=fix)

        if not cell.strip():
            refuse("an empty path", f"give every row's image path in the column {FILE_COLUMN!r}")
        parts = cell.replace("\\", "/").split("/")
        if cell.startswith(("/", "\\")) or (len(cell) > 1 and cell[1] == ":") or ".." in parts:
            refuse("which leads out of the image folder (an absolute path or '..')",
                   "give image paths relative to the image folder, inside it (e.g. cats/001.png)")
        path = folder / cell
        try:
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(inside):
                refuse(f"a link to {real}, outside the image folder",
                       "copy the image into the folder instead of linking to it")
            if not path.exists():
                refuse("which does not exist", "add the image to the folder, or drop its row from the CSV")
            if not path.is_file():
                refuse("which is not a file", "list image files, not folders")
            size = sizes.get(real)
            if size is None:
                size = sizes[real] = path.stat().st_size
                total += size
        except (OSError, ValueError) as exc:  # a name too long, a loop of links
            refuse(f"which cannot be opened: {getattr(exc, 'strerror', None) or exc}", "check the path")
        if size == 0:
            refuse("an empty file (0 bytes)", "copy the image again completely")
        if size > max_mb * MB:
            refuse(f"a file of {size / MB:,.1f} MB, over the limit of {max_mb:g} MB",
                   "raise max_file_mb in the policy if images this large are expected")
        files.append(path)
    return files, total


def _pillow(labels_csv: Path):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib, a core dependency, needs Pillow
        raise GateInputError("is a folder of images, which needs Pillow, and Pillow is not installed",
                             path=labels_csv, fix="pip install pillow") from None
    return Image


class ImageColumn(LazyColumn):
    """The `image` column of an image folder: samples [start, stop) are decoded and preprocessed when read."""

    def __init__(self, files: list[Path], lines: np.ndarray, *, folder: Path, labels_csv: Path,
                 spec: ImageSpec) -> None:
        self.files, self.lines, self.folder, self.labels_csv, self.spec = files, lines, folder, labels_csv, spec
        self.shape = (len(files),) + spec.sample_shape
        self.dtype = spec.dtype
        self._recent: OrderedDict = OrderedDict()
        self._mean = None if spec.mean is None else np.asarray(spec.mean, dtype=np.float32)
        self._std = None if spec.std is None else np.asarray(spec.std, dtype=np.float32)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        key = (start, stop)
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        out = np.empty((stop - start,) + self.shape[1:], dtype=self.dtype)
        for j in range(start, stop):
            out[j - start] = self._sample(j)
        out.flags.writeable = False  # shared by every model that reads this batch
        self._recent[key] = out
        while len(self._recent) > 1 and sum(a.nbytes for a in self._recent.values()) > RECENT_BYTES:
            self._recent.popitem(last=False)
        return out

    def check_cast(self, want, *, used_by: str) -> None:
        """Every value preprocessing can give fits the model's input type (an fp16 or int8 input)."""
        want = np.dtype(want)
        if want == self.dtype or np.can_cast(self.dtype, want, casting="safe"):
            return
        info = np.iinfo(want) if want.kind in "iu" else np.finfo(want) if want.kind == "f" else None
        lo, hi = self.spec.bounds()
        if info is not None and (lo < info.min or hi > info.max):
            raise GateInputError(f"images after preprocessing range over {lo:g} to {hi:g}, which {used_by} takes "
                                 f"as {want.name} ({info.min:g} to {info.max:g})", path=self.labels_csv,
                                 fix="declare the preprocessing the model was trained with (data.images: scale, "
                                 "mean, std)")

    # ---------------------------------------------------------------- one image

    def _sample(self, i: int) -> np.ndarray:
        spec = self.spec
        picture = self._open(i)
        try:
            picture = self._geometry(picture, i)
            x = np.asarray(picture)
        finally:
            picture.close()
        if x.ndim == 2:
            x = x[:, :, None]
        if spec.channels == "BGR":
            x = x[:, :, ::-1]
        if self.dtype != np.uint8:
            x = x.astype(np.float32)
            if spec.scale is not None:
                x = x / np.float32(spec.scale)
            if self._mean is not None:
                x = x - self._mean
            if self._std is not None:
                x = x / self._std
        return x.transpose(2, 0, 1) if spec.layout == "NCHW" else x

    def _refuse(self, i: int, problem: str, fix: str) -> GateInputError:
        name = self.files[i].relative_to(self.folder).as_posix()
        return GateInputError(f"lists the image {name!r} (sample {i}), {problem}", path=self.labels_csv,
                              line=int(self.lines[i]), fix=fix)

    def _open(self, i: int):
        """The image, decoded and converted to the declared channels, or exit 2 naming the file and line."""
        Image = _pillow(self.labels_csv)
        mode = "L" if self.spec.channels == "L" else "RGB"
        limit = self.spec.max_pixels
        bomb_fix = ("raise data.images.max_pixels in the policy if images this large are expected (a small file "
                    "that declares a huge image is a decompression bomb)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(self.files[i], formats=FORMATS) as raw:
                    w, h = raw.size
                    if w * h > limit:
                        raise self._refuse(i, f"which declares {w}x{h} = {w * h:,} pixels, over the limit of "
                                           f"{limit:,} (data.images.max_pixels)", bomb_fix)
                    if raw.mode in WIDE_MODES:  # convert() clips 16-bit and float pixels to 0 or 255, silently
                        raise self._refuse(i, f"which has {raw.mode} pixels (16-bit or float), which the gate would "
                                           "have to clip to 8 bits", "convert the images to 8-bit (RGB or L) "
                                           "with the scaling the model was trained with")
                    raw.load()
                    return raw.convert(mode) if raw.mode != mode else raw.copy()
        except GateInputError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise self._refuse(i, f"which Pillow refuses as a decompression bomb: {exc}",
                               f"this process lowered Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS = "
                               f"{Image.MAX_IMAGE_PIXELS}) below data.images.max_pixels ({limit:,}); a small file "
                               "that declares a huge image is a decompression bomb") from None
        except Exception as exc:  # hostile files reach any corner of a decoder: every failure is this file's
            what = "is not an image of a supported format" if isinstance(exc, Image.UnidentifiedImageError) \
                else "cannot be decoded (truncated or corrupt)"
            raise self._refuse(i, f"which {what}: {str(exc).strip()[:200]}",
                               f"replace it with a complete {', '.join(FORMATS)} image, or drop its row from the "
                               "CSV") from None

    def _geometry(self, picture, i: int):
        from PIL import Image

        spec = self.spec
        resample = getattr(Image.Resampling, spec.interpolation.upper())
        height, width = spec.size
        if spec.resize is not None:
            w, h = picture.size
            if w <= h:
                target = (spec.resize, max(1, int(spec.resize * h / w)))
            else:
                target = (max(1, int(spec.resize * w / h)), spec.resize)
            if target[0] * target[1] > spec.max_pixels:  # a thin image resized by its short side grows huge
                picture.close()
                raise self._refuse(i, f"which is {w}x{h} pixels: resized to {spec.resize} on its shorter side it "
                                   f"would be {target[0]}x{target[1]} = {target[0] * target[1]:,} pixels, over the "
                                   f"limit of {spec.max_pixels:,} (data.images.max_pixels)",
                                   "drop the image, or resize without keeping the aspect (no resize:, only size:)")
            if target != picture.size:
                picture = _replace(picture, picture.resize(target, resample))
        if spec.crop == "center":
            w, h = picture.size
            if w < width or h < height:
                picture.close()
                raise self._refuse(i, f"which is {w}x{h} pixels{' after resize' if spec.resize else ''}, smaller "
                                   f"than the crop {width}x{height} (data.images.size is [height, width])",
                                   "set data.images.resize to at least the crop's larger side, or crop: none")
            left, top = (w - width) // 2, (h - height) // 2
            return _replace(picture, picture.crop((left, top, left + width, top + height)))
        if picture.size != (width, height):
            return _replace(picture, picture.resize((width, height), resample))
        return picture


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # Pillow modes wider than 8 bits per channel


def _replace(old, new):
    old.close()
    return new

