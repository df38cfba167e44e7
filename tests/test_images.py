"""One image reader for every command: bit depths, colour modes, EXIF orientation, one list of file types, and a
cap on the decoded size (decompression bombs refused per image, big photos shrunk on load)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petal_peft import images
from petal_peft.images import IMAGE_EXTENSIONS, ImageReadError, ImageTooLargeError, read_image

GRADIENT16 = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)


def _grey_levels(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and array.dtype == np.uint8
    return array[..., 0].astype(np.float64)


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that declares ``width`` x ``height`` (a decompression bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


# ---- bit depth ------------------------------------------------------------------------------------------------
def _readers():
    """Every command's way of decoding an image file into RGB."""
    from petal_peft.benchmark.sources.real_faces import _read as benchmark_read
    from petal_peft.data.base import open_rgb
    from petal_peft.embedding.images import _open as eval_open

    return {
        "read_image": read_image,
        "train (open_rgb)": open_rgb,
        "eval/embed (embedding.images)": lambda p: eval_open(str(p), str(p)),
        "benchmark": lambda p: benchmark_read(Path(p)),
    }


@pytest.mark.parametrize("reader", list(_readers()))
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path, reader, suffix):
    path = tmp_path / f"face16{suffix}"
    Image.fromarray(GRADIENT16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    levels = _grey_levels(_readers()[reader](path))
    expected = np.rint(GRADIENT16 / 257.0)
    assert np.abs(levels - expected).max() <= 1
    assert 120 < levels.mean() < 135  # Pillow's convert("RGB") gives ~252 (almost all white)


def test_32_bit_integer_and_float_images_are_scaled(tmp_path):
    Image.fromarray(GRADIENT16.astype(np.int32)).save(tmp_path / "i32_16bit.tif")
    Image.fromarray(GRADIENT16.astype(np.int32) * 1000).save(tmp_path / "i32_wide.tif")
    Image.fromarray(GRADIENT16.astype(np.float32) / 65535).save(tmp_path / "float_unit.tif")
    Image.fromarray(GRADIENT16.astype(np.float32) / 257).save(tmp_path / "float_255.tif")
    for name in ("i32_16bit.tif", "i32_wide.tif", "float_unit.tif", "float_255.tif"):
        levels = _grey_levels(read_image(tmp_path / name))
        assert levels.min() == 0 and levels.max() >= 247, name
        assert 110 < levels.mean() < 135, name


def test_colour_modes_become_rgb(tmp_path):
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert tuple(np.asarray(read_image(tmp_path / "palette.png"))[0, 0]) == (200, 10, 20)
    Image.new("LA", (8, 8), (200, 0)).save(tmp_path / "transparent.png")  # fully transparent grey
    assert np.asarray(read_image(tmp_path / "transparent.png")).max() == 0  # composited onto black
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = np.asarray(read_image(tmp_path / "cmyk.jpg"))[0, 0].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").size == (20, 40)


# ---- one list of file types -----------------------------------------------------------------------------------
def test_one_extension_list_everywhere():
    from petal_peft.data import IMAGE_EXTENSIONS as data_extensions
    from petal_peft.data.real_faces import IMAGE_SUFFIXES
    from petal_peft.embedding.images import IMAGE_EXTENSIONS as eval_extensions

    for listed in (data_extensions, eval_extensions, IMAGE_SUFFIXES):
        assert listed is IMAGE_EXTENSIONS
    for suffix in (".tif", ".tiff", ".webp", ".pgm", ".ppm", ".bmp", ".png", ".jpg", ".jpeg"):
        assert suffix in IMAGE_EXTENSIONS


def test_embed_and_search_list_every_image_type(tmp_path):
    from petal_peft.inference.embed import list_face_images

    saved = []
    for k, suffix in enumerate(IMAGE_EXTENSIONS):
        path = tmp_path / f"id{k}" / f"face{suffix.upper() if k % 2 else suffix}"
        path.parent.mkdir()
        Image.new("L" if suffix == ".pgm" else "RGB", (16, 16), 90).save(path)
        saved.append(path.relative_to(tmp_path).as_posix())
    root, files = list_face_images(tmp_path)
    assert sorted(files) == sorted(saved)
    for file in files:
        assert read_image(root / file).size == (16, 16)


# ---- size cap -------------------------------------------------------------------------------------------------
def test_decompression_bomb_is_a_clear_error_per_image(tmp_path):
    bomb = write_png_header(tmp_path / "bomb.png", 50000, 50000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: image too large"):
        read_image(bomb)
    legal_but_large = write_png_header(tmp_path / "large.png", 10000, 10000)  # 100 MP: over the 80 MP cap
    with pytest.raises(ImageTooLargeError, match=r"10000x10000"):
        read_image(legal_but_large)
    assert issubclass(ImageTooLargeError, ImageReadError) and issubclass(ImageReadError, ValueError)


def test_the_cap_is_a_setting(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "5000")
    with pytest.raises(ImageTooLargeError, match="5000|0 megapixel"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=images.MAX_PIXELS_ENV):
        read_image(tmp_path / "a.png")


def test_big_photos_are_reduced_on_load(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (400, 600, 3), dtype=np.uint8))
    photo.save(tmp_path / "big.jpg", quality=90)
    photo.save(tmp_path / "big.png")
    jpeg = read_image(tmp_path / "big.jpg", target_pixels=15000)  # JPEG: decoded at 1/4 scale (draft)
    assert jpeg.size == (150, 100)
    png = read_image(tmp_path / "big.png", target_pixels=15000)  # PNG: decoded, then reduced by 4
    assert png.size == (150, 100)
    # a JPEG over the cap at full size, but within it at 1/8 scale, is read (never decoded at full size)
    assert read_image(tmp_path / "big.jpg", max_pixels=20000, target_pixels=5000).size[0] <= 150


def test_broken_symlink_and_folder_are_named(tmp_path):
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageReadError, match="dangling.jpg: broken symbolic link"):
        read_image(tmp_path / "dangling.jpg")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(b"not an image")


def test_training_data_check_reports_a_bomb_instead_of_crashing(tmp_path):
    from petal_peft.data import DataValidationError, check_image_file
    from petal_peft.data.base import open_rgb

    bomb = write_png_header(tmp_path / "bomb.png", 50000, 50000)
    assert "too large" in check_image_file(str(bomb), str(bomb))
    assert "too large" in check_image_file("large", str(write_png_header(tmp_path / "l.png", 10000, 10000)))
    with pytest.raises(DataValidationError, match="too large"):
        open_rgb(bomb)


def test_in_memory_16_bit_images_are_scaled_by_the_transforms():
    """Images that arrive decoded (Hugging Face datasets, the benchmark, --align) go through the same conversion."""
    from petal_peft.data.transforms import FaceTransform
    from petal_peft.embedding.images import ImageTransform

    image = Image.fromarray(GRADIENT16)
    train_pixels = FaceTransform(image_size=32, horizontal_flip=False)(image)
    eval_pixels = ImageTransform(size=32)(image)
    for pixels in (train_pixels, eval_pixels):  # normalised with mean 0.5 / std 0.5: white would be +1
        assert abs(float(pixels.mean())) < 0.1
