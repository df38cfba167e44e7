"""FaceTransform and LowResolutionDegradation: shapes, normalisation, reproducibility, real degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from petal_peft.data import FaceImageFolder, FaceTransform, LowResolutionDegradation, sample_seed


def _sharp_image(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Pixel noise over a gradient: plenty of high-frequency energy, like a sharp textured face crop."""
    rng = np.random.default_rng(seed)
    w, h = size
    grad = np.linspace(0, 120, w)[None, :, None].repeat(h, 0).repeat(3, 2)
    return Image.fromarray((grad + rng.integers(0, 135, (h, w, 3))).astype(np.uint8))


def _high_freq_energy(img: Image.Image) -> float:
    """Spectral energy above half the Nyquist frequency (grey level, mean removed)."""
    x = np.asarray(img.convert("L"), dtype=np.float64)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean()))) ** 2
    h, w = x.shape
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    return float(spec[np.hypot(fy, fx) > 0.25].sum())


# ---- FaceTransform ---------------------------------------------------------------------------------------------
def test_face_transform_shape_and_normalisation():
    t = FaceTransform(image_size=32)
    white = t(Image.new("RGB", (50, 40), (255, 255, 255)))
    black = t(Image.new("L", (10, 10), 0))  # grey-scale input is converted to RGB
    assert white.shape == (3, 32, 32) and white.dtype == torch.float32
    torch.testing.assert_close(white, torch.ones(3, 32, 32))
    torch.testing.assert_close(black, -torch.ones(3, 32, 32))
    custom = FaceTransform(image_size=8, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))(
        Image.new("RGB", (8, 8), (255, 255, 255))
    )
    torch.testing.assert_close(custom[:, 0, 0], torch.tensor([1.0, 1.0, 0.0]))
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    assert FaceTransform(8)(arr).shape == (3, 8, 8)


def test_face_transform_flip_is_reproducible_and_mirrors():
    img = _sharp_image(1, (16, 16))
    plain = FaceTransform(16)(img)
    always = FaceTransform(16, horizontal_flip=True, flip_p=1.0)(img)
    torch.testing.assert_close(always, plain.flip(-1))
    t = FaceTransform(16, horizontal_flip=True, flip_p=0.5)
    flips = [bool(torch.equal(t(img, generator=torch.Generator().manual_seed(s)), plain.flip(-1))) for s in range(40)]
    again = [bool(torch.equal(t(img, generator=torch.Generator().manual_seed(s)), plain.flip(-1))) for s in range(40)]
    assert flips == again and 5 < sum(flips) < 35


def test_face_transform_from_image_processor():
    from transformers import ViTImageProcessor

    proc = ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6])
    t = FaceTransform.from_image_processor(proc)
    assert t.image_size == 24 and t.mean == pytest.approx([0.1, 0.2, 0.3]) and t.std == pytest.approx([0.4, 0.5, 0.6])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"image_size": 0}, "image_size"),
        ({"mean": (0.5, 0.5)}, "3 values"),
        ({"std": (0.5, 0.0, 0.5)}, "std values"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"interpolation": "magic"}, "interpolation"),
    ],
)
def test_face_transform_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        FaceTransform(**kwargs)


def test_face_transform_rejects_non_images():
    with pytest.raises(TypeError, match="PIL image"):
        FaceTransform(8)(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="float32"):
        FaceTransform(8)(np.zeros((8, 8, 3), dtype=np.float32))


# ---- LowResolutionDegradation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (112, 112), (50, 70), (20, 20), (6, 6)])
def test_degradation_keeps_size_and_mode(size):
    deg = LowResolutionDegradation(p_blur=1.0, p_noise=1.0, p_jpeg=1.0)
    for index in range(4):
        out = deg.degrade(_sharp_image(index, size), index=index)
        assert out.image.size == size and out.image.mode == "RGB"
        assert 0.0 < out.quality_level <= 1.0


def test_degradation_is_reproducible_per_sample_and_varies_across_samples():
    img = _sharp_image(2)
    a = LowResolutionDegradation(seed=7)
    b = LowResolutionDegradation(seed=7)
    for index, epoch in [(0, 0), (5, 0), (5, 3)]:
        ra, rb = a.degrade(img, index=index, epoch=epoch), b.degrade(img, index=index, epoch=epoch)
        assert np.array_equal(np.asarray(ra.image), np.asarray(rb.image))
        assert ra.quality_level == rb.quality_level and ra.params == rb.params
    outs = {np.asarray(a.degrade(img, index=i, epoch=e).image).tobytes() for i in range(4) for e in range(3)}
    assert len(outs) == 12, "each (index, epoch) should draw its own degradation"
    other_seed = LowResolutionDegradation(seed=8).degrade(img, index=0).image
    assert not np.array_equal(np.asarray(other_seed), np.asarray(a.degrade(img, index=0).image))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert np.array_equal(np.asarray(a(img, generator=g1)), np.asarray(a(img, generator=g2)))


def test_changing_one_probability_keeps_the_other_draws():
    img = _sharp_image(3)
    with_jpeg = LowResolutionDegradation(p_jpeg=1.0, p_blur=0.0, p_noise=0.0)
    without = LowResolutionDegradation(p_jpeg=0.0, p_blur=0.0, p_noise=0.0)
    for index in range(5):
        pa, pb = with_jpeg.degrade(img, index=index).params, without.degrade(img, index=index).params
        assert pa["size"] == pb["size"] and "jpeg_quality" in pa and "jpeg_quality" not in pb


@pytest.mark.parametrize(
    "kwargs, bound",
    [
        ({"p_blur": 0.0, "p_noise": 0.0, "p_jpeg": 0.0}, 0.2),  # downsample only
        ({"p_downsample": 0.0, "p_blur": 1.0, "p_noise": 0.0, "p_jpeg": 0.0}, 0.3),  # blur only
        ({"p_downsample": 0.0, "p_blur": 0.0, "p_noise": 0.0, "p_jpeg": 1.0, "jpeg_quality": (10, 30)}, 0.8),
        ({}, 0.2),  # the default mix
    ],
)
def test_degradation_removes_high_frequency_energy(kwargs, bound):
    deg = LowResolutionDegradation(**kwargs)
    ratios = []
    for index in range(6):
        img = _sharp_image(index, (96, 96))
        ratios.append(_high_freq_energy(deg.degrade(img, index=index).image) / _high_freq_energy(img))
    assert max(ratios) < bound, ratios


def test_quality_level_reflects_strength():
    img = _sharp_image(4, (112, 112))
    untouched = LowResolutionDegradation(p=0.0).degrade(img, index=0)
    assert untouched.quality_level == 1.0 and np.array_equal(np.asarray(untouched.image), np.asarray(img))
    tiny = LowResolutionDegradation(min_size=8, max_size=8, p_blur=0, p_noise=0, p_jpeg=0).degrade(img, index=0)
    mild = LowResolutionDegradation(min_size=48, max_size=48, p_blur=0, p_noise=0, p_jpeg=0).degrade(img, index=0)
    assert tiny.params["size"] == 8 and mild.params["size"] == 48
    assert tiny.quality_level == pytest.approx(8 / 112) and mild.quality_level == pytest.approx(48 / 112)
    assert _high_freq_energy(tiny.image) < _high_freq_energy(mild.image)
    # Images already smaller than the drawn size are not "downsampled" up.
    small = LowResolutionDegradation(min_size=40, max_size=48, p_blur=0, p_noise=0, p_jpeg=0)
    out = small.degrade(_sharp_image(0, (30, 30)), index=0)
    assert "size" not in out.params and out.quality_level == 1.0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"min_size": 0}, "min_size"),
        ({"min_size": 50, "max_size": 40}, "min_size <= max_size"),
        ({"p_blur": -0.1}, "p_blur"),
        ({"p": 2.0}, "p must be"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
        ({"noise_std": (1.0,)}, "noise_std"),
        ({"jpeg_quality": (0, 50)}, "jpeg_quality"),
        ({"seed": -1}, "seed"),
    ],
)
def test_degradation_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        LowResolutionDegradation(**kwargs)


def test_sample_seed_is_stable_and_checks_input():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(0, i, e) for i in range(10) for e in range(10)}) == 100
    with pytest.raises(ValueError, match="index"):
        sample_seed(0, -1)


# ---- seeding through a dataset and DataLoader workers -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    for c in range(3):
        (root / f"id{c}").mkdir()
        for j in range(4):
            _sharp_image(10 * c + j, (40, 40)).save(root / f"id{c}" / f"{j}.png")
    return root


def _all_batches(ds, workers: int, persistent: bool = False, epochs=(0,)):
    loader = DataLoader(ds, batch_size=5, num_workers=workers, persistent_workers=persistent)
    out = []
    for epoch in epochs:
        ds.set_epoch(epoch)
        out.append([b for b in loader])
    return out


def test_items_do_not_depend_on_worker_count_and_follow_the_epoch(tiny_folder):
    ds = FaceImageFolder(
        tiny_folder,
        transform=FaceTransform(24, horizontal_flip=True),
        degradation=LowResolutionDegradation(min_size=8, max_size=20, seed=1),
        seed=5,
    )
    item = ds[0]
    assert set(item) == {"pixel_values", "labels", "quality_level"}
    assert item["quality_level"].dtype == torch.float32 and 0 < item["quality_level"] <= 1
    single = _all_batches(ds, 0, epochs=(0, 1))
    multi = _all_batches(ds, 2, persistent=True, epochs=(0, 1))
    for e in range(2):
        for b0, b1 in zip(single[e], multi[e], strict=True):
            for key in b0:
                assert torch.equal(b0[key], b1[key]), key
    # A new epoch draws new degradations, also inside persistent workers.
    assert not torch.equal(single[0][0]["pixel_values"], single[1][0]["pixel_values"])
    ds.set_epoch(0)
    assert torch.equal(ds[0]["pixel_values"], single[0][0]["pixel_values"][0])
