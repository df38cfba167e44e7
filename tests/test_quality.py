"""Quality estimators, gates, calibration, config round trip and input checks (petal_peft.quality)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import petal_peft.quality as Q
from petal_peft.quality.brisque_model import load_svr, read_plain_pickle
from petal_peft.quality.degrade import degrade, gaussian_blur
from petal_peft.registry import QUALITY_ESTIMATORS, QUALITY_GATES


def texture(n: int, size: int = 112, seed: int = 0) -> torch.Tensor:
    """Natural-like RGB images in [0, 1]: random phase, 1/f amplitude spectrum (like photographs)."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None]
    f = (fy**2 + fx**2).sqrt().clamp_min(1 / size)
    shape = (n, 3, size, size // 2 + 1)
    spec = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) / f
    img = torch.fft.irfft2(spec, s=(size, size))
    img = (img - img.mean((2, 3), keepdim=True)) / img.std((2, 3), keepdim=True)
    return (img * 0.18 + 0.5).clamp(0, 1)


RAW = {"image_mean": [0.0], "image_std": [1.0]}  # float input already in [0, 1]


# ---------------------------------------------------------------------------------------------- registry
def test_import_registers_estimators_and_gates():
    assert {"brisque", "resolution"} <= set(QUALITY_ESTIMATORS.names())
    assert {"sigmoid", "linear", "paper"} <= set(QUALITY_GATES.names())
    assert QUALITY_ESTIMATORS.build("brisque").higher_is_better is False
    assert QUALITY_ESTIMATORS.build("resolution").higher_is_better is True


def test_quality_package_does_not_import_the_tuner():
    # static check: importing `petal_peft` itself loads the tuner, so look at what our modules import
    import ast
    from pathlib import Path

    for path in Path(Q.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("tuner" in n for n in names), f"{path.name} imports the tuner: {names}"


# ---------------------------------------------------------------------------------------------- estimators
@pytest.mark.parametrize("name", ["resolution", "brisque"])
def test_score_monotone_in_resolution(name):
    est = QUALITY_ESTIMATORS.build(name, **RAW)
    x = texture(6)
    scores = torch.stack([est(degrade(x, level)) for level in (8, 16, 32, 64)])  # [levels, B]
    better = scores if est.higher_is_better else -scores
    if name == "resolution":
        assert (better[1:] > better[:-1]).all(), scores  # every image, every step
    else:
        assert (better.median(dim=1).values.diff() > 0).all(), scores


@pytest.mark.parametrize("name", ["resolution", "brisque"])
def test_score_monotone_in_blur(name):
    est = QUALITY_ESTIMATORS.build(name, **RAW)
    x = texture(6, seed=1)
    scores = torch.stack([est(gaussian_blur(x, s)) for s in (1.0, 2.0, 3.0)])
    better = scores if est.higher_is_better else -scores
    assert (better[:-1] > better[1:]).all(), scores


def test_resolution_flat_image_scores_zero_and_contrast_invariance():
    est = Q.ResolutionEstimator(**RAW)
    flat = torch.full((2, 3, 32, 32), 0.4)
    assert torch.equal(est(flat), torch.zeros(2))
    x = texture(3, size=64)
    low_contrast = 0.5 + 0.25 * (x - 0.5)
    torch.testing.assert_close(est(x), est(low_contrast), rtol=0.03, atol=0.0)


@pytest.mark.parametrize("name", ["resolution", "brisque"])
def test_input_forms_agree(name):
    x = texture(3, size=64, seed=2)
    u8 = (x * 255).round().to(torch.uint8)
    raw = QUALITY_ESTIMATORS.build(name)(u8)
    # the same pixels, normalised as a ViT/CLIP processor would, given its mean/std
    mean, std = [0.481, 0.458, 0.408], [0.269, 0.261, 0.276]
    normed = (u8.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    est = QUALITY_ESTIMATORS.build(name, image_mean=mean, image_std=std)
    torch.testing.assert_close(est(normed), raw, rtol=1e-3, atol=1e-2)
    # default normalisation (None = 0.5 / 0.5, ViT's) and float64 / bfloat16 inputs
    default = QUALITY_ESTIMATORS.build(name)
    out64 = default((u8.double() / 255 - 0.5) / 0.5)
    assert out64.dtype == torch.float32 and out64.shape == (3,)
    torch.testing.assert_close(out64, raw, rtol=1e-3, atol=1e-2)
    out16 = default(((u8.float() / 255 - 0.5) / 0.5).bfloat16())
    assert torch.isfinite(out16).all() and out16.dtype == torch.float32
    # one grey channel equals three equal channels
    grey = x.mean(1, keepdim=True)
    torch.testing.assert_close(
        QUALITY_ESTIMATORS.build(name, **RAW)(grey),
        QUALITY_ESTIMATORS.build(name, **RAW)(grey.expand(-1, 3, -1, -1)),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("name", ["resolution", "brisque"])
def test_any_size_and_batch_independence(name):
    est = QUALITY_ESTIMATORS.build(name, **RAW)
    x = texture(4, size=80, seed=3)[:, :, :75, :]  # odd, non-square
    together = est(x)
    alone = torch.cat([est(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["resolution", "brisque"])
@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (torch.zeros(0, 3, 32, 32), "empty"),
        (torch.zeros(2, 4, 32, 32), "channels"),
        (torch.zeros(2, 32, 32, 3), "channels"),
        (torch.zeros(3, 32, 32), "4 dimensions"),
        (torch.zeros(2, 3, 2, 2), "at least"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int32), "uint8"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.bool), "uint8"),
    ],
)
def test_bad_input_names_pixel_values(name, bad, match):
    est = QUALITY_ESTIMATORS.build(name)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        est(bad)
    assert "pixel_values" in str(info.value)


def test_bad_normalisation_settings():
    with pytest.raises(ValueError, match="image_std"):
        Q.ResolutionEstimator(image_mean=[0.5], image_std=[0.0])
    with pytest.raises(ValueError, match="1 or 3 values"):
        Q.ResolutionEstimator(image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="1 channel"):
        Q.ResolutionEstimator(image_mean=[0.5] * 3, image_std=[0.5] * 3)(torch.zeros(1, 1, 16, 16))


# ---------------------------------------------------------------------------------------------- BRISQUE pieces
def test_brisque_model_file_and_safe_pickle_reader(tmp_path):
    svr = load_svr()
    assert svr.support_vectors.shape == (770, 36) and svr.gamma == 0.05
    assert (svr.feature_max > svr.feature_min).all()
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"min_": [1.0], "f": pickle.dumps}))  # references a global function
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_plain_pickle(evil)
    plain = tmp_path / "plain.pickle"
    plain.write_bytes(pickle.dumps({"min_": [0.5, 1.0], "max_": [2.0, 3.0]}))
    assert read_plain_pickle(plain) == {"min_": [0.5, 1.0], "max_": [2.0, 3.0]}


def test_brisque_aggd_fit_recovers_known_shapes():
    feats = Q.BrisqueFeatures().double()
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(1, 200_000, generator=g, dtype=torch.float64)  # GGD shape 2
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((1, 200_000)).double()  # shape 1
    alpha_g, mean_g, left_g, right_g = feats.aggd_fit(gauss)
    alpha_l, *_ = feats.aggd_fit(laplace)
    assert abs(alpha_g.item() - 2.0) < 0.05 and abs(alpha_l.item() - 1.0) < 0.05
    assert abs(mean_g.item()) < 0.02 and abs(left_g.item() - 1) < 0.02 and abs(right_g.item() - 1) < 0.02


def _reference_brisque():
    brisque = pytest.importorskip("brisque", reason="the `brisque` reference package is not installed")
    return brisque.BRISQUE(url=False)


def test_brisque_matches_reference_package():
    ref = _reference_brisque()
    import cv2
    import numpy as np
    import skimage.color

    def reference_score(rgb_uint8):  # BRISQUE.score, with its numpy-2 scalar conversion fixed
        gray = skimage.color.rgb2gray(rgb_uint8)
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        parts = [ref.calculate_brisque_features(img, kernel_size=7, sigma=7 / 6) for img in (gray, half)]
        features = np.array([np.asarray(v, dtype=float).item() for v in np.concatenate(parts)])
        return ref.calculate_image_quality_score(features)

    x = torch.cat([texture(2, seed=5), degrade(texture(2, seed=6), 24), gaussian_blur(texture(2, seed=7), 1.5)])
    u8 = (x * 255).round().to(torch.uint8)
    expected = torch.tensor([reference_score(img.permute(1, 2, 0).numpy()) for img in u8], dtype=torch.float32)
    torch.testing.assert_close(Q.BrisqueEstimator()(u8), expected, rtol=0, atol=0.05)


def test_brisque_half_resize_matches_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    feats = Q.BrisqueFeatures().double()
    for h, w in [(112, 112), (37, 50), (9, 8)]:
        img = torch.rand(h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h))
        ours = feats.downscale(img[None, None])[0, 0].numpy()
        theirs = cv2.resize(img.numpy(), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        assert ours.shape == theirs.shape
        assert abs(ours - theirs).max() < 1e-9


# ---------------------------------------------------------------------------------------------- gates
@pytest.mark.parametrize("mode", ["sigmoid", "linear"])
@pytest.mark.parametrize("higher", [True, False])
def test_gate_bounds_and_direction(mode, higher):
    gate = Q.build_gate(mode, threshold=30.0, temperature=5.0, higher_is_better=higher)
    scores = torch.tensor([-1e30, -1e3, 0.0, 25.0, 30.0, 35.0, 1e3, 1e30])
    q = gate(scores)
    assert q.dtype == torch.float32 and ((q >= 0) & (q <= 1)).all()
    assert q[4].item() == pytest.approx(0.5)
    steps = q.diff()
    assert (steps >= 0).all() if higher else (steps <= 0).all()
    assert (q[-1] == 1 and q[0] == 0) if higher else (q[-1] == 0 and q[0] == 1)


def test_paper_gate_is_the_reference_rule_clamped():
    gate = Q.build_gate("paper", threshold=30.0, temperature=123.0, higher_is_better=False)
    q = gate(torch.tensor([10.0, 29.8, 30.0, 30.3, 40.0]))
    torch.testing.assert_close(q, torch.tensor([0.0, 0.3, 0.5, 0.8, 1.0]))  # unsigned; temperature ignored


def test_gate_rejects_bad_settings_and_scores():
    with pytest.raises(ValueError, match="temperature"):
        Q.build_gate("sigmoid", temperature=0.0)
    with pytest.raises(ValueError, match="threshold"):
        Q.build_gate("sigmoid", threshold=float("nan"))
    with pytest.raises(KeyError, match="Unknown quality gate"):
        Q.build_gate("step")
    gate = Q.build_gate("sigmoid")
    with pytest.raises(ValueError, match="NaN"):
        gate(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        gate(torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------- calibration
def test_calibration_recovers_threshold_from_two_sets():
    g = torch.Generator().manual_seed(0)
    high = 40.0 + 3.0 * torch.randn(4000, generator=g)
    low = 20.0 + 3.0 * torch.randn(4000, generator=g)
    d = Q.calibrate_gate(high, low, higher_is_better=True)
    assert d["gate_mode"] == "sigmoid"
    assert d["gate_threshold"] == pytest.approx(30.0, abs=0.3)
    gate = Q.build_gate(d["gate_mode"], d["gate_threshold"], d["gate_temperature"], higher_is_better=True)
    assert gate(high).median() > 0.9 and gate(low).median() < 0.1
    # lower-is-better (BRISQUE-like): same threshold, q still 1 for the high-quality set
    d2 = Q.calibrate_gate(-high + 100, -low + 100, higher_is_better=False)
    assert d2["gate_threshold"] == pytest.approx(70.0, abs=0.3)
    gate2 = Q.build_gate("sigmoid", d2["gate_threshold"], d2["gate_temperature"], higher_is_better=False)
    assert gate2(-high + 100).median() > 0.9


def test_calibration_recovers_threshold_and_temperature_from_labels():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(40_000, generator=g) * 40.0  # uniform over [0, 40]
    labels = torch.bernoulli(torch.sigmoid((scores - 17.0) / 2.5), generator=g)
    d = Q.calibrate_gate(scores=scores, labels=labels, higher_is_better=True, regularization=0.0, balanced=False)
    assert d["gate_threshold"] == pytest.approx(17.0, abs=0.3)
    assert d["gate_temperature"] == pytest.approx(2.5, rel=0.1)
    linear = Q.calibrate_gate(scores=scores, labels=labels, mode="linear", regularization=0.0, balanced=False)
    assert linear["gate_temperature"] == pytest.approx(4 * d["gate_temperature"], rel=1e-6)


def test_calibration_errors():
    high, low = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="check which set is which"):
        Q.calibrate_gate(high, low, higher_is_better=True)
    with pytest.raises(ValueError, match="both"):
        Q.calibrate_gate(high, None)
    with pytest.raises(ValueError, match="empty"):
        Q.calibrate_gate(torch.tensor([]), low)
    with pytest.raises(ValueError, match="NaN"):
        Q.calibrate_gate(torch.tensor([float("nan")]), low)
    with pytest.raises(ValueError, match="one class"):
        Q.calibrate_gate(scores=high, labels=torch.ones(3))
    with pytest.raises(ValueError, match="estimator"):
        Q.calibrate_gate(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))


def test_calibration_from_images_with_an_estimator():
    x = texture(12, size=64, seed=8)
    d = Q.calibrate_gate(x, degrade(x, 12), estimator="resolution", **RAW)
    fn = Q.build_quality_fn("resolution", None, d["gate_mode"], d["gate_threshold"], d["gate_temperature"], **RAW)
    assert (fn(x) > 0.5).all() and (fn(degrade(x, 12)) < 0.5).all()
    # BRISQUE: lower is better, the gate still gives q = 1 to the sharp set
    d = Q.calibrate_gate(x, degrade(x, 12), estimator="brisque", **RAW)
    fn = Q.build_quality_fn("brisque", None, "sigmoid", d["gate_threshold"], d["gate_temperature"], **RAW)
    assert fn(x).mean() > 0.5 > fn(degrade(x, 12)).mean()


# ---------------------------------------------------------------------------------------------- round trip
def test_gate_settings_round_trip_through_json_gives_same_quality():
    x = texture(4, size=64, seed=9)
    d = Q.calibrate_gate(x, degrade(x, 16), estimator="resolution")
    settings = {"quality_estimator": "resolution", "quality_estimator_kwargs": {}, **d, "image_mean": None}
    restored = json.loads(json.dumps(settings))
    first = Q.build_quality_fn("resolution", {}, d["gate_mode"], d["gate_threshold"], d["gate_temperature"])
    second = Q.build_quality_fn(
        restored["quality_estimator"],
        restored["quality_estimator_kwargs"],
        restored["gate_mode"],
        restored["gate_threshold"],
        restored["gate_temperature"],
        restored["image_mean"],
    )
    batch = degrade(x, 24) * 2 - 1
    assert torch.equal(first(batch), second(batch))
    assert first.gate.settings() == d


def test_quality_function_has_no_gradient_and_keeps_device():
    fn = Q.build_quality_fn("resolution", threshold=10.0, temperature=2.0)
    x = (texture(2, size=32) * 2 - 1).requires_grad_(True)
    q = fn(x)
    assert not q.requires_grad and q.device == x.device and q.shape == (2,)
    assert all(not b.requires_grad for b in fn.buffers())
    assert list(fn.state_dict()) == []  # nothing leaks into an adapter's saved weights


def test_caller_supplied_functions():
    def contrast(images: torch.Tensor) -> torch.Tensor:
        return images.std(dim=(1, 2, 3))

    fn = Q.build_quality_fn(contrast, threshold=0.1, temperature=0.01)
    x = texture(2, size=32)
    assert fn.higher_is_better and fn(x * 2 - 1).shape == (2,)
    Q.register_quality_function("test_contrast", contrast, higher_is_better=True, overwrite=True)
    by_name = Q.build_quality_fn("test_contrast", threshold=0.1, temperature=0.01)
    assert torch.equal(by_name(x * 2 - 1), fn(x * 2 - 1))
    bad = Q.build_quality_fn(lambda images: torch.zeros(5))
    with pytest.raises(ValueError, match="one score per image"):
        bad(x)


def test_plot_quality_histogram(tmp_path):
    gate = Q.build_gate("sigmoid", 30.0, 3.0, higher_is_better=True)
    out = Q.plot_quality_histogram(torch.randn(50) + 35, torch.randn(60) + 25, tmp_path / "sub" / "h.png", gate=gate)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "sub").iterdir()) == [out]  # no temp file left behind
    with pytest.raises(ValueError, match="empty"):
        Q.plot_quality_histogram([], [1.0], tmp_path / "x.png")
