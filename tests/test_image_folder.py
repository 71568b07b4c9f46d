"""A folder of images with a labels CSV and declared preprocessing (data.images).

Known answer: 60 of scikit-learn's digits, upscaled to 16x16 colour images (PNG and JPEG, some stored grey or with
an alpha channel, some in a subfolder), are judged by a real ONNX model taking (batch, 3, 8, 8) NCHW floats (a
nearest-class-mean classifier as one Conv); the gate, resizing to 8x8 and applying scale 255 and mean/std itself,
gives the numbers of the same preprocessing done by hand (Pillow's resize, then numpy) into an .npz. The NHWC
variant feeds the same values through a Transpose, so it gives the same numbers too.

Hostile files (a path out of the folder, a link out, a header over the pixel limit, a truncated JPEG, a text file
or a PostScript file named .png, a missing file) are each exit 2 naming the image and its CSV line.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits

from conftest import read_report, run_main, save_graph, write_policy
from gate.data import load_dataset
from gate.errors import GateInputError
from gate.imagefolder import ImageSpec

N = 60
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
PREPROCESS = {"size": [8, 8], "scale": 255, "mean": MEAN, "std": STD}
RULES = [{"metric": "accuracy", "max_drop": 0.2}, {"metric": "flip_rate", "max": 0.5},
         {"metric": "accuracy", "per": "group", "max_drop": 0.5, "min_samples": 5}]


def _picture(pixels: np.ndarray) -> np.ndarray:
    """An 8x8 digit (0..16) as a 16x16 RGB image whose three channels differ."""
    v = np.kron(pixels.reshape(8, 8), np.ones((2, 2))) * 15
    return np.stack([v, 255 - v, v // 2], axis=-1).astype(np.uint8)


def _by_hand(folder: Path, names: list[str]) -> np.ndarray:
    """The declared preprocessing, done without the gate: Pillow's convert and resize, then numpy, NCHW."""
    out = []
    for name in names:
        with Image.open(folder / name) as im:
            x = np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)).astype(np.float32)
        x = (x / np.float32(255) - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
        out.append(x.transpose(2, 0, 1))
    return np.stack(out)


def _conv(path: Path, means: np.ndarray, *, nhwc: bool = False) -> Path:
    """logits_k = x . m_k - |m_k|^2 / 2 over (3, 8, 8) samples; NHWC samples are transposed to NCHW first."""
    bias = (-0.5 * np.square(means.reshape(len(means), -1)).sum(axis=1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["nchw" if nhwc else "x", "W", "b"], ["c"]),
             helper.make_node("Flatten", ["c"], ["logits"])]
    if nhwc:
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]))
    shape = ["batch", 8, 8, 3] if nhwc else ["batch", 3, 8, 8]
    graph = helper.make_graph(nodes, "means", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializer=[numpy_helper.from_array(means.astype(np.float32), "W"),
                                           numpy_helper.from_array(bias, "b")])
    return save_graph(graph, path)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


def _write_csv(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["file", "label", "site"])
        out.writerows(rows)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    digits = load_digits()
    names, rows = [], []
    for i in range(N):
        rgb = Image.fromarray(_picture(digits.images[i]))
        if i % 7 == 3:
            rgb = rgb.convert("L")  # another mode: converted to RGB as declared
        name = f"{'sub/' if i % 4 == 0 else ''}{i:03d}.{'jpg' if i % 3 == 0 else 'png'}"
        if i % 7 == 5 and name.endswith(".png"):
            rgb = rgb.convert("RGBA")
        rgb.save(images / name, quality=90) if name.endswith(".jpg") else rgb.save(images / name)
        names.append(name)
        rows.append((name, int(digits.target[i]), "north" if i % 2 else "south"))
    _write_csv(images / "labels.csv", rows)
    x = _by_hand(images, names)
    y = digits.target[:N]
    np.savez(root / "by_hand.npz", x=x, label=y, site=np.array([r[2] for r in rows]))
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    _conv(root / "base.onnx", means)
    _conv(root / "coarse.onnx", np.round(means / 3) * 3)
    _conv(root / "base_nhwc.onnx", means, nhwc=True)
    _conv(root / "coarse_nhwc.onnx", np.round(means / 3) * 3, nhwc=True)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing written outside the test's folder


def _check(root: Path, name: str, data: dict, *, base="base.onnx", coarse="coarse.onnx"):
    policy = write_policy(root / f"{name}.yaml", RULES, base=base, candidates={"coarse": coarse},
                          data={"groups": ["site"], **data}, diagnostics={"layers": False}, bootstrap=100)
    return run_main("check", "--policy", policy, "--out", root / name, "--no-progress")


def _numbers(report: dict) -> list:
    return [(c["name"], c["verdict"], [(r["metric"], r["status"], r["observed"], r["threshold"]) for r in c["rules"]])
            for c in report["candidates"]]


@pytest.fixture(scope="module")
def from_npz(folder):
    result = _check(folder, "npz", {"path": "by_hand.npz"})
    assert result.code in (0, 1), result
    return result.code, read_report(folder / "npz")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_gate_preprocessing_gives_the_numbers_of_the_same_preprocessing_by_hand(folder, from_npz, layout):
    suffix = "" if layout == "NCHW" else "_nhwc"
    result = _check(folder, layout, {"path": "images", "images": {**PREPROCESS, "layout": layout}},
                    base=f"base{suffix}.onnx", coarse=f"coarse{suffix}.onnx")
    code, report = from_npz
    assert result.code == code, result
    got = read_report(folder / layout)
    assert _numbers(got) == _numbers(report)
    flips = [r for c in got["candidates"] for r in c["rules"] if r["metric"] == "flip_rate"]
    assert flips[0]["observed"] > 0  # the coarse candidate does change predictions: not 0 == 0
    assert got["provenance"]["data"]["sha256"] != report["provenance"]["data"]["sha256"]


def _spec(**given) -> ImageSpec:
    return ImageSpec.from_block({**PREPROCESS, **given})


def _dataset(path: Path, spec: ImageSpec, **data):
    from gate.policy import DataSpec

    return load_dataset(DataSpec(path=path, images=spec, groups=("site",), **data), max_mb=10)


def test_images_are_decoded_batch_by_batch_and_the_digest_covers_the_csv_and_every_image(folder, tmp_path):
    images = tmp_path / "images"
    os.symlink(folder / "images", tmp_path / "link")  # a folder reached through a link is fine: files stay inside
    rows = _rows(folder / "images" / "labels.csv")
    images.mkdir()
    for name, _, _ in rows[:12]:
        (images / Path(name).name).write_bytes((folder / "images" / name).read_bytes())
    (images / "999.png").write_text("not an image", encoding="utf-8")
    listed = [(Path(r[0]).name, r[1], r[2]) for r in rows[:12]]
    _write_csv(images / "labels.csv", listed[:10] + [("999.png", 1, "north")] + listed[10:])
    dataset = _dataset(images, _spec())  # loading decodes nothing: the broken image is not seen yet
    column = dataset.columns["image"]
    assert (column.shape, column.dtype) == ((13, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(column[2:6], _by_hand(images, [n for n, _, _ in listed[2:6]]))
    with pytest.raises(GateInputError) as caught:
        column[8:12]
    assert "labels.csv:12" in str(caught.value) and "'999.png'" in str(caught.value)
    files = sorted([n for n, _, _ in listed] + ["999.png"])
    manifest = f"labels.csv\t{hashlib.sha256((images / 'labels.csv').read_bytes()).hexdigest()}\n" + "".join(
        f"{n}\t{hashlib.sha256((images / n).read_bytes()).hexdigest()}\n" for n in files)
    assert dataset.sha256 == hashlib.sha256(manifest.encode()).hexdigest()
    assert _dataset(tmp_path / "link", _spec()).columns["image"][0].shape == (3, 8, 8)


def test_channels_layout_crop_and_raw_pixels_are_applied_as_declared(folder):
    images = folder / "images"
    names = [r[0] for r in _rows(images / "labels.csv")[:4]]
    rgb = _by_hand(images, names)
    bgr = _dataset(images, _spec(channels="BGR", mean=[MEAN[2], MEAN[1], MEAN[0]],
                                 std=[STD[2], STD[1], STD[0]])).columns["image"][0:4]
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])
    nhwc = _dataset(images, _spec(layout="NHWC")).columns["image"][0:4]
    np.testing.assert_array_equal(nhwc, rgb.transpose(0, 2, 3, 1))
    raw = _dataset(images, ImageSpec.from_block({"size": [6, 4], "resize": 10, "channels": "L",
                                                 "interpolation": "nearest"})).columns["image"]
    assert raw.dtype == np.uint8 and raw.shape == (N, 1, 6, 4)
    for i, name in enumerate(names):
        with Image.open(images / name) as im:  # 16x16 -> 10x10, then the centred 4 wide, 6 high
            want = np.asarray(im.convert("L").resize((10, 10), Image.Resampling.NEAREST))[2:8, 3:7]
        np.testing.assert_array_equal(raw[i][0], want)


def _hostile(root: Path, folder: Path, case: str) -> tuple[Path, str, int]:
    """A copy of three good images plus one bad entry at CSV line 4; -> (folder, the bad name, its line)."""
    images = root / case
    images.mkdir()
    good = [f"{i:03d}.png" for i in (1, 2, 5)]
    for name in good:
        (images / name).write_bytes((folder / "images" / name).read_bytes())
    bad = {"traversal": "../outside.png", "absolute": str(root / "outside.png"), "link": "link.png",
           "truncated": "cut.jpg", "text": "text.png", "postscript": "ps.png", "missing": "gone.png",
           "bomb": "big.png", "thin": "thin.png", "16-bit": "deep.png"}[case]
    (root / "outside.png").write_bytes((folder / "images" / good[0]).read_bytes())
    if case == "link":
        os.symlink(root / "outside.png", images / bad)
    elif case == "truncated":
        whole = (folder / "images" / "sub" / "000.jpg").read_bytes()
        (images / bad).write_bytes(whole[: len(whole) // 2])
    elif case == "text":
        (images / bad).write_text("label,file\nnot,an image\n", encoding="utf-8")
    elif case == "bomb":  # 4096 pixels declared, over the policy's max_pixels of 1000 (the others have 256)
        Image.new("RGB", (64, 64)).save(images / bad)
    elif case == "thin":  # 2x400 = 800 pixels, under the limit; resized by its short side it would be 16x3200
        Image.new("RGB", (2, 400)).save(images / bad)
    elif case == "16-bit":  # converting to 8 bits would clip every value to 0 or 255
        Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(images / bad)
    elif case == "postscript":  # Pillow's EPS plugin would run Ghostscript on it: never tried
        (images / bad).write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    rows = [(good[0], 1, "north"), (good[1], 2, "south"), (bad, 0, "north"), (good[2], 5, "south")]
    _write_csv(images / "labels.csv", rows)
    return images, bad, 4


@pytest.mark.parametrize("case, words", [
    ("traversal", "leads out of the image folder"),
    ("absolute", "leads out of the image folder"),
    ("link", "outside the image folder"),
    ("missing", "does not exist"),
    ("truncated", "cannot be decoded (truncated or corrupt)"),
    ("text", "is not an image of a supported format"),
    ("postscript", "is not an image of a supported format"),
    ("bomb", "declares 64x64 = 4,096 pixels, over the limit of 1,000 (data.images.max_pixels)"),
    ("thin", "would be 16x3200 = 51,200 pixels, over the limit of 1,000"),
    ("16-bit", "which the gate would have to clip to 8 bits"),
])
def test_a_hostile_image_entry_is_exit_2_naming_the_image_and_its_csv_line(folder, tmp_path, case, words):
    images, bad, line = _hostile(tmp_path, folder, case)
    preprocess = {**PREPROCESS, **({"max_pixels": 1000} if case in ("bomb", "thin") else {}),
                  **({"resize": 16} if case == "thin" else {})}
    policy = write_policy(tmp_path / "policy.yaml", RULES[:1], base=str(folder / "base.onnx"),
                          candidates={"coarse": str(folder / "coarse.onnx")},
                          data={"path": case, "images": preprocess})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert f"labels.csv:{line}:" in result.stderr and repr(bad[:200]) in result.stderr, result
    assert words in result.stderr and "fix:" in result.stderr, result
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("images, key, words", [
    ({"size": [8, 8], "normalize": True}, "normalize", "unknown key 'normalize'"),
    ({"size": [8, 8, 3]}, "size", "must be [height, width]"),
    ({"size": [8, 8], "mean": [0.5, 0.5]}, "mean", "has 2 values for 3 channel(s)"),
    ({"size": [8, 8], "std": [0.5, 0.5, 0]}, "std", "must be a number > 0"),
    ({"size": [8, 8], "resize": 6}, "resize", "smaller than the crop"),
    ({"size": [8, 8], "resize": 16, "crop": "none"}, "crop", "is none, but resize is set"),
    ({"size": [8, 8], "layout": "CHW"}, "layout", "must be one of NCHW, NHWC"),
    ({"size": [8, 8], "scale": 0.0039}, "scale", "must be a number >= 1"),
    ({"size": [8, 8], "max_pixels": 10**9}, "max_pixels", "must be an integer >= 1 and <="),
    ({"resize": 8}, "images", "missing the required key 'size'"),
    ({"size": [16384, 16384]}, "size", "the gate feeds at most 16,777,216"),
])
def test_a_wrong_images_block_is_refused_with_its_policy_line(tmp_path, images, key, words):
    policy = write_policy(tmp_path / "p.yaml", RULES[:1], base="b.onnx", candidates={"c": "c.onnx"},
                          data={"path": "images", "images": images})
    lines = policy.read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith(f"{key}:"))
    line += 3 * (key == "std")  # the third value of the list (one per line) is the wrong one
    result = run_main("policy", "check", policy)
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert f"p.yaml:{line}:" in result.stderr and words in result.stderr, result


@pytest.mark.parametrize("case, words", [
    ("outside", "data.images.labels '../labels.csv' leads out of the image folder"),
    ("no-file-column", "has no column 'file' (the image of each row)"),
    ("not-a-folder", "is not a folder, but data.images in the policy describes a folder of images"),
])
def test_a_labels_csv_that_cannot_describe_the_folder_is_exit_2(folder, tmp_path, case, words):
    images = tmp_path / "images"
    images.mkdir()
    (images / "001.png").write_bytes((folder / "images" / "001.png").read_bytes())
    (tmp_path / "labels.csv").write_text("file,label\n001.png,1\n", encoding="utf-8")
    (images / "labels.csv").write_text("path,label\n001.png,1\n", encoding="utf-8")
    (tmp_path / "data.bin").write_bytes(b"not a folder")
    data = {"path": "data.bin" if case == "not-a-folder" else "images",
            "images": {**PREPROCESS, **({"labels": "../labels.csv"} if case == "outside" else {})}}
    policy = write_policy(tmp_path / "policy.yaml", RULES[:1], base=str(folder / "base.onnx"),
                          candidates={"coarse": str(folder / "coarse.onnx")}, data=data)
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert words in result.stderr and "fix:" in result.stderr, result


def test_images_declared_for_a_data_file_are_refused_by_the_policy_check(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", RULES[:1], base="b.onnx", candidates={"c": "c.onnx"},
                          data={"path": "data.npz", "images": PREPROCESS})
    result = run_main("policy", "check", policy)
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert "data.images describes a folder of images, but data.path 'data.npz' is a data file" in result.stderr


@pytest.mark.parametrize("limit", [200, 100])
def test_pillows_own_bomb_limit_is_an_exit_2_too(folder, tmp_path, monkeypatch, limit):
    """A process whose Pillow limit is lower than the policy's (another library set it): Pillow's warning (over the
    limit) and its error (over twice the limit) on a 16x16 image are each exit 2 naming the image and line."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "001.png").write_bytes((folder / "images" / "001.png").read_bytes())
    _write_csv(images / "labels.csv", [("001.png", 1, "north")])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(GateInputError) as caught:
        _dataset(images, _spec()).columns["image"][0]
    text = str(caught.value)
    assert "labels.csv:2:" in text and "'001.png'" in text and "decompression bomb" in text, text
    assert "exceeds limit of 200 pixels" in text and f"PIL.Image.MAX_IMAGE_PIXELS = {limit}" in text, text
