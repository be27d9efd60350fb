"""The hostile-input catalogue, images, stimuli and brain data: huge images, bit depths and modes, empty and
broken stimulus arrays, unreadable class folders, undefined similarities, inf in brain RDMs, --n beyond the
test split (tests/hostile.py has the harness)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuro
from hostile import Case, check
from robust_kd.checkpoint import save_checkpoint
from robust_kd.cli import main
from robust_kd.data import load_dataset
from robust_kd.data.imagefile import MAX_PIXELS, read_image
from robust_kd.models import create_model
from robust_kd.stimuli import load_stimuli

NAMES = [str(i) for i in range(6)]
FAST = ["--n-bootstrap", "10", "--n-permutations", "10", "--device", "cpu", "--layers", "logits"]
ATTACK = ["--white-steps", "1", "--queries", "2"]
LIMIT = "over the limit of 89,478,485"
ROOT = os.geteuid() == 0
needs_permissions = pytest.mark.skipif(ROOT, reason="root reads folders whatever their permissions")


# ---------------------------------------------------------------------------------------------- writers
def png(array: np.ndarray, bit_depth: int = 8, color_type: int | None = None, chunks: tuple = ()) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit RGB): greyscale 0, RGB 2, grey+alpha 4, RGBA 6."""
    a = np.asarray(array)
    if color_type is None:
        color_type = {2: 0, 3: {2: 4, 3: 2, 4: 6}.get(a.shape[-1], 0)}[a.ndim]
    height, width = a.shape[:2]
    raw = a.astype(">u2").tobytes() if bit_depth == 16 else a.astype(np.uint8).tobytes()
    return _png(width, height, bit_depth, color_type, raw, chunks)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes, chunks: tuple = ()) -> bytes:
    row = len(raw) // height
    data = b"".join(b"\0" + raw[i * row:(i + 1) * row] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + b"".join(_chunk(*c) for c in chunks)
            + _chunk(b"IDAT", zlib.compress(data)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, side: int = 15000) -> Path:
    """A valid 1-bit PNG of side × side white pixels: about 30 KB on disk, side² pixels once decoded."""
    row = b"\0" + b"\xff" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def bmp_header(path: Path, width: int, height: int) -> Path:
    """A 1-bit BMP whose header promises width × height pixels, followed by 100 bytes of them."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, 0, 0, 0, 0, 0)
    offset = 14 + len(info) + 8
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + 100, 0, 0, offset) + info
                     + b"\0\0\0\0\xff\xff\xff\0" + b"\0" * 100)
    return path


def text_bomb_png(path: Path) -> Path:
    """A 4×4 PNG with a zTXt chunk of 8 MB of zeros (8 KB compressed), more than Pillow's MAX_TEXT_CHUNK."""
    text = b"Comment\0\0" + zlib.compress(b"\0" * (8 << 20), 9)
    path.write_bytes(png(np.zeros((4, 4), np.uint8), chunks=((b"zTXt", text),)))
    return path


def pillow_file(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def random_images(folder: Path, count: int = 6, side: int = 20, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def brain_rdm(path: Path, matrix: np.ndarray | None = None, seed: int = 1) -> Path:
    if matrix is None:
        r = np.random.default_rng(seed).random((6, 6))
        matrix = r + r.T
        np.fill_diagonal(matrix, 0)
    np.save(path, matrix)
    return path


def stimulus_array(path: Path, array: np.ndarray, names: list[str] | None = None) -> Path:
    np.save(path, array)
    if names is not None:
        path.with_suffix(".txt").write_text("\n".join(names) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module", autouse=True)
def tiny_run(tmp_path_factory):
    """An untrained resnet8 run on 16-px synthetic data with 6 test images (RSA needs no training);
    every case copies it into its scratch folder."""
    global RUN
    folder = tmp_path_factory.mktemp("run") / "run"
    torch.manual_seed(0)
    save_checkpoint(folder / "checkpoints" / "last.pt", create_model("resnet8", 2, in_channels=3, image_size=16),
                    metadata={"epoch": 0})
    (folder / "config.yaml").write_text("data:\n  name: synthetic\n  options: {size: 16, train: 8, test: 6, "
                                        "classes: 2}\n")
    RUN = folder
    return folder


RUN: Path


def run_copy(scratch: Path) -> str:
    target = scratch / "run"
    if not target.exists():
        shutil.copytree(RUN, target)
    return str(target)


def rsa(stimuli, brain=None):
    """A case's ``make``: rsa with the stimuli (and brain RDM) that ``stimuli(scratch)`` / ``brain(scratch)`` write."""
    def make(scratch: Path) -> list[str]:
        rdm = brain(scratch) if brain else brain_rdm(scratch / "brain.npy")
        return ["rsa", "--model", run_copy(scratch), "--stimuli", str(stimuli(scratch)), "--brain-rdm", str(rdm),
                "--out", str(scratch / "out"), *FAST]
    return make


def adversarial(stimuli, *extra: str, brain: bool = False):
    def make(scratch: Path) -> list[str]:
        spec = stimuli(scratch) if callable(stimuli) else stimuli
        rdm = ["--brain-rdm", str(brain_rdm(scratch / "brain.npy"))] if brain else []
        return ["rsa-adversarial", "--model", run_copy(scratch), "--stimuli", str(spec), "--out",
                str(scratch / "out"), *FAST, *ATTACK, *rdm, *extra]
    return make


def models(stimuli, *extra: str):
    def make(scratch: Path) -> list[str]:
        spec = stimuli(scratch) if callable(stimuli) else stimuli
        run = run_copy(scratch)
        return ["rsa-models", "--models", f"{run},{run}", "--stimuli", str(spec), "--out", str(scratch / "out"),
                "--n-bootstrap", "10", "--device", "cpu", *extra]
    return make


def imagefolder(build):
    """A case's ``make``: ``data --show imagefolder`` on the class folders ``build(root)`` writes beside two
    good classes (a cats/dogs folder of 3 images each)."""
    def make(scratch: Path) -> list[str]:
        root = scratch / "images"
        for name in ("cats", "dogs"):
            random_images(root / name, count=3, side=12)
        build(root)
        return ["data", "--show", "imagefolder", "--data-root", str(root)]
    return make


def folder_with(make_file):
    """Stimuli: the 6 good images and one more that ``make_file(folder)`` writes (named 'x...')."""
    def stimuli(scratch: Path) -> Path:
        folder = random_images(scratch / "stimuli")
        make_file(folder)
        return folder
    return stimuli


def good_array(scratch: Path) -> Path:
    return stimulus_array(scratch / "good.npy", np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), np.uint8),
                          NAMES)


def locked(folder: Path) -> None:
    folder.chmod(0)


# ---------------------------------------------------------------------------------------------- the cases
def _huge(scratch_folder: Path) -> None:
    huge_png(scratch_folder / "x_huge.png")


def _tif(image: Image.Image):
    return lambda folder: pillow_file(folder / "x_odd.tif", image)


CASES = [
    # 1. huge images: refused from the header, naming the file and the limit
    Case("imagefolder: a 15000×15000 PNG", imagefolder(lambda r: huge_png(r / "cats" / "huge.png")),
         rf"huge\.png': 225,000,000 pixels, {LIMIT}"),
    Case("imagefolder: a huge PNG in test/", lambda s: _presplit_huge(s), rf"test/dogs/huge\.png.*{LIMIT}"),
    Case("imagefolder: 10000×10000 (Pillow only warns)",
         imagefolder(lambda r: huge_png(r / "dogs" / "big.png", 10000)),
         rf"big\.png': 10000×10000 = 100,000,000 pixels, {LIMIT}", own_process=True),
    Case("imagefolder: a BMP header of 20000×20000",
         imagefolder(lambda r: bmp_header(r / "cats" / "b.bmp", 20000, 20000)),
         rf"b\.bmp': 400,000,000 pixels, {LIMIT}"),
    Case("imagefolder: a PNG text-chunk bomb", imagefolder(lambda r: text_bomb_png(r / "cats" / "t.png")),
         r"cannot read image '.*t\.png'.*remove or replace"),
    Case("rsa: a huge stimulus", rsa(folder_with(_huge)), rf"x_huge\.png.*{LIMIT}"),
    Case("rsa-adversarial: a huge stimulus", adversarial(folder_with(_huge)), rf"x_huge\.png.*{LIMIT}"),
    Case("rsa-models: a huge stimulus", models(folder_with(_huge)), rf"x_huge\.png.*{LIMIT}"),
    # 2. modes that cannot be converted right: refused in one line
    Case("imagefolder: a LAB TIFF",
         imagefolder(lambda r: pillow_file(r / "cats" / "lab.tif", Image.new("LAB", (8, 8)))),
         r"lab\.tif.*mode LAB is not read"),
    Case("imagefolder: float pixels beyond [0, 1]",
         imagefolder(lambda r: pillow_file(r / "dogs" / "f.tif", Image.fromarray(np.full((8, 8), 3, np.float32)))),
         r"f\.tif.*float pixels from 3 to 3"),
    Case("rsa: float pixels that are NaN",
         rsa(folder_with(_tif(Image.fromarray(np.full((8, 8), np.nan, np.float32))))), r"x_odd\.tif.*NaN or inf"),
    Case("rsa: 32-bit integers beyond 16 bits",
         rsa(folder_with(_tif(Image.fromarray(np.full((8, 8), 70000, np.int32))))),
         r"x_odd\.tif.*outside the 16-bit range"),
    Case("rsa: a truncated PNG", rsa(folder_with(lambda f: (f / "x_cut.png").write_bytes(
        png(np.zeros((64, 64, 3), np.uint8))[:60]))), r"cannot read image '.*x_cut\.png'"),
    # 3. empty and broken stimulus arrays
    Case("rsa: empty.npy (uint8)", rsa(lambda s: stimulus_array(s / "empty.npy", np.zeros((0, 16, 16, 3), np.uint8))),
         r"empty\.npy.*holds no pixels"),
    Case("rsa-adversarial: empty.npy (float, the min() case)",
         adversarial(lambda s: stimulus_array(s / "empty.npy", np.zeros((0, 16, 16), np.float32))),
         r"empty\.npy.*holds no pixels"),
    Case("rsa-models: empty.npy", models(lambda s: stimulus_array(s / "empty.npy", np.zeros((0, 3, 8, 8)))),
         r"empty\.npy.*holds no pixels"),
    Case("rsa: images of height 0", rsa(lambda s: stimulus_array(s / "flat.npy", np.zeros((6, 0, 16, 3), np.uint8))),
         r"flat\.npy.*holds no pixels"),
    Case("rsa-adversarial: a folder of 0 images", adversarial(lambda s: _mkdir(s / "nothing")),
         r"no images .* in folder"),
    Case("rsa: a folder of text files", rsa(lambda s: _with_text(s / "notes")), r"no images .* in folder"),
    Case("rsa: 2 images", rsa(lambda s: stimulus_array(s / "two.npy", np.zeros((2, 8, 8), np.uint8), ["0", "1"])),
         r"2 images; an RDM needs at least 3"),
    Case("rsa: a 2-D array", rsa(lambda s: stimulus_array(s / "flat.npy", np.zeros((16, 16), np.uint8))),
         r"flat\.npy.*got an array of shape \(16, 16\)"),
    Case("rsa-adversarial: a 5-D array",
         adversarial(lambda s: stimulus_array(s / "deep.npy", np.zeros((2, 6, 3, 8, 8)))),
         r"deep\.npy.*got an array of shape \(2, 6, 3, 8, 8\)"),
    Case("rsa: 2 channels", rsa(lambda s: stimulus_array(s / "two.npy", np.zeros((6, 16, 16, 2), np.uint8), NAMES)),
         r"two\.npy.*1, 3 or 4 channels"),
    Case("rsa: NaN in float stimuli", rsa(lambda s: stimulus_array(s / "nan.npy", _with(np.nan), NAMES)),
         r"nan\.npy.*NaN/inf"),
    Case("rsa-adversarial: inf in float stimuli", adversarial(lambda s: stimulus_array(s / "inf.npy", _with(np.inf))),
         r"inf\.npy.*NaN/inf"),
    Case("rsa: float stimuli in 0..255", rsa(lambda s: stimulus_array(s / "big.npy", _with(200.0), NAMES)),
         r"big\.npy.*must lie in \[0, 1\]"),
    Case("rsa: int64 pixels", rsa(lambda s: stimulus_array(s / "i.npy", np.zeros((6, 8, 8), np.int64), NAMES)),
         r"i\.npy.*dtype int64 are not read; save them as uint8"),
    Case("rsa-models: complex pixels", models(lambda s: stimulus_array(s / "c.npy", np.zeros((6, 8, 8), complex))),
         r"c\.npy.*dtype complex128 are not read"),
    Case("rsa: text in the array", rsa(lambda s: stimulus_array(s / "t.npy", np.full((6, 8, 8), "ab"), NAMES)),
         r"t\.npy.*dtype <U2 are not read"),
    Case("rsa-adversarial: --n 2 of the test split", adversarial("test", "--n", "2"), r"--n must be at least 3"),
    # 4. class folders that hold nothing a class could be made of
    Case("imagefolder: an empty class folder", imagefolder(lambda r: _mkdir(r / "birds")),
         r"class folder '.*birds' holds no images \(1 of 3 classes"),
    Case("imagefolder: a class of text files only", imagefolder(lambda r: _with_text(r / "fish")),
         r"class folder '.*fish' holds no images"),
    # 5-7. warnings: the run goes on and says so in one line
    Case("rsa: identical stimuli", rsa(lambda s: stimulus_array(s / "same.npy", _identical(), NAMES)),
         r"1 of 1 similarities are undefined.*the model RDM is constant", warning=True),
    Case("rsa: an all-zero brain RDM", rsa(good_array, lambda s: brain_rdm(s / "zero.npy", np.zeros((6, 6)))),
         r"1 of 1 similarities are undefined.*the brain RDM is constant", warning=True),
    Case("rsa-adversarial: identical stimuli",
         adversarial(lambda s: stimulus_array(s / "same.npy", _identical(), NAMES), brain=True),
         r"2 of 2 similarities are undefined.*the clean variant's RDM is constant", warning=True),
    Case("rsa: inf in the brain RDM", rsa(good_array, lambda s: brain_rdm(s / "inf.npy", _rdm_with(np.inf))),
         r"brain RDM 'inf': 1 of 15 dissimilarities are inf; they are left out as missing", warning=True),
    Case("rsa-adversarial: --n 100000000", adversarial("test", "--n", "100000000"),
         r"^--n 100000000: synthetic has 6 test points; using all 6$", warning=True),
    Case("rsa-models: --n 10**30", models("test", "--n", str(10 ** 30)),
         rf"^--n {10 ** 30}: synthetic has 6 test points; using all 6$", warning=True),
]

PERMISSION_CASES = [
    Case("imagefolder: an unreadable class folder", imagefolder(lambda r: _locked_class(r / "birds")),
         r"cannot list folder '.*birds' \(Permission denied\); make it readable"),
    Case("imagefolder: an unreadable folder inside a class", imagefolder(lambda r: locked(_mkdir(r / "cats" / "more"))),
         r"cannot list folder '.*cats/more' \(Permission denied\)"),
]


def _presplit_huge(scratch: Path) -> list[str]:
    root = scratch / "split"
    for split in ("train", "test"):
        for name in ("cats", "dogs"):
            random_images(root / split / name, count=2, side=12)
    huge_png(root / "test" / "dogs" / "huge.png")
    return ["data", "--show", "imagefolder", "--data-root", str(root)]


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _with_text(folder: Path) -> Path:
    _mkdir(folder)
    (folder / "readme.txt").write_text("no images here\n")
    (folder / "labels.csv").write_text("a,b\n")
    return folder


def _locked_class(folder: Path) -> None:
    random_images(folder, count=2, side=12)
    locked(folder)


def _with(value: float) -> np.ndarray:
    a = np.random.default_rng(0).random((6, 16, 16, 3)).astype(np.float32)
    a[2, 3, 4, 0] = value
    return a


def _identical() -> np.ndarray:
    return np.repeat(np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), np.uint8), 6, axis=0)


def _rdm_with(value: float) -> np.ndarray:
    r = np.random.default_rng(1).random((6, 6))
    r = r + r.T
    np.fill_diagonal(r, 0)
    r[0, 3] = r[3, 0] = value
    return r


@pytest.fixture(autouse=True)
def _unlock(tmp_path):
    """Give back the permissions a case took away, so that pytest can remove its folder."""
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def test_the_catalogue_has_30_cases_or_more():
    assert len(CASES) + len(PERMISSION_CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_image_input_is_refused_or_warned_in_one_line(case, tmp_path, capsys):
    check(case, tmp_path, capsys)


@needs_permissions
@pytest.mark.parametrize("case", PERMISSION_CASES, ids=str)
def test_unreadable_class_folders_are_refused_in_one_line(case, tmp_path, capsys):
    check(case, tmp_path, capsys)


@pytest.mark.skipif(not ROOT, reason="the test above meets the real refusal")
@pytest.mark.parametrize("case", PERMISSION_CASES, ids=str)
def test_unreadable_class_folders_are_refused_as_root_too(case, tmp_path, capsys, monkeypatch):
    """Root may list any folder, so the refusal a user meets is simulated where it happens: os.scandir on a
    folder with mode 000 raises EACCES (pathlib's rglob then skips it without a word, as it does for a user)."""
    real = os.scandir

    def scandir(path="."):
        if os.path.isdir(path) and os.stat(path).st_mode & 0o777 == 0:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    check(case, tmp_path, capsys)


# ---------------------------------------------------------------------------------------------- the pixel limit
def test_the_pixel_limit_is_pillows_and_is_checked_from_the_header(tmp_path):
    from PIL import Image as PILImage

    from robust_kd.data.imagefile import open_image
    from robust_kd.errors import UserError

    assert MAX_PIXELS == PILImage.MAX_IMAGE_PIXELS == 89_478_485
    with open_image(bmp_header(tmp_path / "under.bmp", 9459, 9459)) as img:      # 89,472,681 pixels: allowed,
        assert img.size == (9459, 9459)                                             # and nothing is decoded
    with pytest.raises(UserError, match=r"over\.bmp': 9460×9460 = 89,491,600 pixels, over the limit"):
        open_image(bmp_header(tmp_path / "over.bmp", 9460, 9460))


# ---------------------------------------------------------------------------------------------- bit depths
def _levels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """16-bit pixels spread over the whole range (an 8-bit reading that clips would see almost only 255)."""
    return np.random.default_rng(seed).integers(0, 65536, shape).astype(np.uint16)


def _eight_bit(values16: np.ndarray) -> np.ndarray:
    return np.rint(values16 / 257.0).astype(np.uint8)


SIXTEEN_BIT_FILES = {
    "grey PNG": lambda v, path: path.write_bytes(png(v, 16)),
    "RGB PNG": lambda v, path: path.write_bytes(png(np.stack([v, v[::-1], v.T], -1), 16)),
    "RGBA PNG (opaque)": lambda v, path: path.write_bytes(png(np.stack([v, v.T, v, np.full_like(v, 65535)], -1), 16)),
    "grey TIFF (I;16)": lambda v, path: Image.fromarray(v).save(path),
    "32-bit TIFF of 16-bit values (I)": lambda v, path: Image.fromarray(v.astype(np.int32)).save(path),
}
EIGHT_BIT_TWINS = {
    "grey PNG": lambda v: _eight_bit(v),
    "RGB PNG": lambda v: np.stack([_eight_bit(v), _eight_bit(v[::-1]), _eight_bit(v.T)], -1),
    "RGBA PNG (opaque)": lambda v: np.stack([_eight_bit(v), _eight_bit(v.T), _eight_bit(v)], -1),
    "grey TIFF (I;16)": lambda v: _eight_bit(v),
    "32-bit TIFF of 16-bit values (I)": lambda v: _eight_bit(v),
}


@pytest.mark.parametrize("kind", list(SIXTEEN_BIT_FILES))
def test_a_16_bit_image_reads_as_its_8_bit_version_to_1_in_255(kind, tmp_path):
    values = _levels((24, 24))
    path = tmp_path / ("x.tif" if "TIFF" in kind else "x.png")
    SIXTEEN_BIT_FILES[kind](values, path)
    twin = EIGHT_BIT_TWINS[kind](values)
    mode = "L" if twin.ndim == 2 else "RGB"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = np.asarray(read_image(path, mode), dtype=np.int16)
    assert got.shape == twin.shape
    assert np.abs(got - twin).max() <= 1, kind
    assert got.std() > 40                      # the contrast is there (clipping gives a flat 255)


def test_an_image_folder_of_16_bit_images_equals_its_8_bit_twin(tmp_path):
    for depth in (8, 16):
        for c, name in enumerate(("cats", "dogs")):
            (tmp_path / str(depth) / name).mkdir(parents=True)
            for i in range(3):
                values = _levels((20, 28), seed=10 * c + i)
                data = png(values, 16) if depth == 16 else png(_eight_bit(values), 8)
                (tmp_path / str(depth) / name / f"{i}.png").write_bytes(data)
    sixteen = load_dataset("imagefolder", tmp_path / "16", size=16)
    eight = load_dataset("imagefolder", tmp_path / "8", size=16)
    assert sixteen.channels == 1 and sixteen.train_images.float().std() > 20       # clipped: all 255
    for a, b in ((sixteen.train_images, eight.train_images), (sixteen.test_images, eight.test_images)):
        assert (a.float() - b.float()).abs().max() <= 1          # uint8 pixels: 1 is 1/255


def test_16_bit_stimuli_equal_their_8_bit_twins(tmp_path):
    for depth in (8, 16):
        folder = tmp_path / str(depth)
        folder.mkdir()
        for i in range(4):
            values = _levels((20, 20, 3), seed=i)
            (folder / f"s{i}.png").write_bytes(png(values, 16) if depth == 16 else png(_eight_bit(values), 8))
    sixteen, eight = (load_stimuli(str(tmp_path / d), 3, 20).images for d in ("16", "8"))
    assert sixteen.shape == (4, 3, 20, 20) and sixteen.std() > 0.15
    assert (sixteen - eight).abs().max() <= 1 / 255 + 1e-6
    arrays = [np.stack([_levels((20, 20, 3), seed=i) for i in range(4)])]
    np.save(tmp_path / "s16.npy", arrays[0])
    np.save(tmp_path / "s8.npy", _eight_bit(arrays[0]))
    a16, a8 = (load_stimuli(str(tmp_path / f), 3, 20).images for f in ("s16.npy", "s8.npy"))
    assert (a16 - a8).abs().max() <= 1 / 255 + 1e-6


# ---------------------------------------------------------------------------------------------- odd modes
def _palette_image(transparent: bool) -> tuple[Image.Image, np.ndarray]:
    index = np.arange(16, dtype=np.uint8).reshape(4, 4) % 4
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]], np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    expected = palette[index]
    if transparent:
        img.info["transparency"] = 2                       # blue is transparent: dropped, as torchvision does
    return img, expected


def _alpha(mode: str) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (4, 4, 3 if mode == "RGBA" else 1), dtype=np.uint8)
    alpha = rng.integers(0, 256, (4, 4, 1), dtype=np.uint8)
    img = Image.fromarray(np.concatenate([colour, alpha], -1), mode)
    return img, (np.repeat(colour, 3, -1) if mode == "LA" else colour)      # alpha dropped, as torchvision does


def _cmyk() -> tuple[Image.Image, np.ndarray]:
    cmyk = np.array([[[255, 0, 0, 0], [0, 255, 0, 0]], [[0, 0, 255, 0], [0, 0, 0, 255]]], np.uint8)
    rgb = np.array([[[0, 255, 255], [255, 0, 255]], [[255, 255, 0], [0, 0, 0]]], np.uint8)
    return Image.fromarray(cmyk, "CMYK"), rgb


def _bilevel() -> tuple[Image.Image, np.ndarray]:
    bits = np.array([[0, 1], [1, 0]], bool)
    return Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, -1)


def _floats() -> tuple[Image.Image, np.ndarray]:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    grey = np.rint(values * 255).astype(np.uint8)
    return Image.fromarray(values), np.repeat(grey[..., None], 3, -1)


MODES = {"P": lambda: _palette_image(False), "P with a transparent index": lambda: _palette_image(True),
         "LA": lambda: _alpha("LA"), "RGBA": lambda: _alpha("RGBA"), "CMYK": _cmyk, "1": _bilevel, "F": _floats}


@pytest.mark.parametrize("mode", list(MODES))
def test_odd_modes_convert_right_without_a_warning(mode, tmp_path):
    img, expected = MODES[mode]()
    path = tmp_path / ("x.tif" if mode in ("CMYK", "F") else "x.png")
    img.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # Pillow's palette-transparency warning included
        got = np.asarray(read_image(path, "RGB"))
    assert np.array_equal(got, expected), (got, expected)


# ---------------------------------------------------------------------------------------------- undefined statistics
def _rdm(seed: int, n: int = 6) -> np.ndarray:
    r = np.random.default_rng(seed).random((n, n))
    r = r + r.T
    np.fill_diagonal(r, 0)
    return r


def test_a_constant_brain_rdm_has_an_undefined_p_value_not_1_over_n_plus_1():
    layers = neuro.RDMs.from_matrices(np.stack([_rdm(1), _rdm(2)]), names=["a", "b"])
    flat = neuro.RDMs.from_matrices(np.zeros((6, 6)))
    test = neuro.permutation_test(layers, flat, "spearman", n=20)
    assert np.isnan(test.observed).all() and np.isnan(test.p).all()          # was 1/21 = 0.0476
    brain = neuro.RDMs.from_matrices(_rdm(3))
    result = neuro.rsa(layers, {"flat": flat, "real": brain}, "spearman", n_bootstrap=20, n_permutations=20)
    for row in (result.row("a", "flat"), result.row("b", "flat")):
        assert all(np.isnan(row[k]) for k in ("similarity", "ci_low", "ci_high", "p", "p_fdr"))
        assert row["undefined"] == "the brain RDM is constant"
    real = [result.row("a", "real"), result.row("b", "real")]
    assert all(r["undefined"] is None and 0 < r["p"] <= 1 for r in real)
    assert [r["p_fdr"] for r in real] == pytest.approx(list(neuro.fdr(np.array([r["p"] for r in real]))))


def test_identical_stimuli_give_undefined_similarities_and_p_values_in_the_variant_analysis():
    from neuro.variants import variant_analysis

    rng = np.random.default_rng(0)
    same = np.repeat(rng.standard_normal((1, 10)), 6, axis=0)                 # clean: 6 identical patterns
    acts = {"clean": {"l": same}, "white": {"l": same + rng.standard_normal((6, 10))},
            "black": {"l": same + rng.standard_normal((6, 10))}}
    out = variant_analysis(acts, NAMES, n_bootstrap=20, pairs=[("white", "black")])   # was an IndexError
    assert all(np.isnan(r["similarity"]) and "clean variant's RDM is constant" in r["undefined"]
               for r in out["similarity"])
    (row,) = out["differences"]
    assert np.isnan(row["p_bootstrap"]) and np.isnan(row["p_bootstrap_fdr"]) and row["undefined"]
    assert 0 < row["p_wilcoxon"] <= 1                      # each stimulus' displacement is still defined


def test_inf_in_an_rdm_is_missing_and_does_not_switch_off_the_symmetry_check():
    r = _rdm(4)
    r[0, 1] = r[1, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rdm = neuro.RDMs.from_matrices(r)
    assert np.isinf(rdm.vectors).sum() == 1
    r[2, 3] += 0.5                                         # asymmetric: an inf used to set the tolerance to inf
    with pytest.raises(neuro.NeuroError, match="not symmetric"):
        neuro.RDMs.from_matrices(r)


def test_undefined_similarities_are_flagged_in_the_table_files_and_report(tmp_path, capsys):
    run = run_copy(tmp_path)
    stimuli = stimulus_array(tmp_path / "same.npy", _identical(), NAMES)
    code = main(["rsa", "--model", run, "--stimuli", str(stimuli), "--brain-rdm", str(brain_rdm(tmp_path / "b.npy")),
                 *FAST, "--layers", "logits,net.layer1.0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 of 2 similarities are undefined" in err
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    assert header.split()[-1] == "undefined" and out.count("the model RDM is constant") == 2
    (folder,) = (Path(run) / "rsa").iterdir()
    payload = json.loads((folder / "rsa.json").read_text())
    for row in payload["rows"]:
        assert np.isnan(row["p"]) and np.isnan(row["p_fdr"]) and row["undefined"].startswith("the model RDM")
    csv_rows = (folder / "rsa.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",undefined") and all(",," in line for line in csv_rows[1:])
    assert "| n/a | n/a |" in (folder / "README.md").read_text()
    assert main(["report", run, "--out", str(tmp_path / "report")]) == 0
    capsys.readouterr()
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert "undefined" in html and "the model RDM is constant" in html
