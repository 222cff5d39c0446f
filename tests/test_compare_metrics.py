"""PSNR / SSIM of the SVG2 Compare node, checked against closed forms and a slow numpy reference."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "svg2_compare", Path(__file__).resolve().parent.parent / "nodes" / "compare.py"
)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _ssim_reference(a: np.ndarray, b: np.ndarray, window: int = 11) -> float:
    """Direct SSIM over every valid window position and channel, float64, [H, W, C] inputs."""
    c1, c2 = 0.01**2, 0.03**2
    height, width, channels = a.shape
    values = []
    for c in range(channels):
        for i in range(height - window + 1):
            for j in range(width - window + 1):
                x = a[i : i + window, j : j + window, c]
                y = b[i : i + window, j : j + window, c]
                mx, my = x.mean(), y.mean()
                vx, vy = (x * x).mean() - mx**2, (y * y).mean() - my**2
                cov = (x * y).mean() - mx * my
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_identical_videos_are_perfect():
    video = torch.rand(3, 16, 20, 3)
    psnr, ssim = compare.video_metrics(video, video.clone())
    assert psnr == [compare.PSNR_CAP_DB] * 3
    assert ssim == pytest.approx([1.0] * 3, abs=1e-12)


def test_psnr_of_a_constant_offset():
    a = torch.full((2, 12, 12, 3), 0.5)
    b = a + 0.1
    psnr, _ = compare.video_metrics(a, b)
    assert psnr == pytest.approx([20.0, 20.0], abs=1e-4)  # mse = 0.01 -> 20 dB


def test_ssim_of_two_flat_frames_matches_closed_form():
    a = torch.full((1, 12, 14, 3), 0.2)
    b = torch.full((1, 12, 14, 3), 0.6)
    _, ssim = compare.video_metrics(a, b)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)  # no variance: the contrast term is 1
    assert ssim[0] == pytest.approx(expected, rel=1e-6)  # inputs are float32


def test_ssim_matches_a_direct_window_loop():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 17, 19, 3, generator=gen)
    b = (a + 0.15 * torch.randn(2, 17, 19, 3, generator=gen)).clamp(0, 1)
    psnr, ssim = compare.video_metrics(a, b)
    for t in range(2):
        assert ssim[t] == pytest.approx(_ssim_reference(a[t].double().numpy(), b[t].double().numpy()), rel=1e-9)
        mse = float(((a[t].double() - b[t].double()) ** 2).mean())
        assert psnr[t] == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)


def test_alpha_channel_is_ignored():
    a = torch.rand(1, 12, 12, 4)
    b = a.clone()
    b[..., 3] = 1.0 - b[..., 3]
    psnr, ssim = compare.video_metrics(a, b)
    assert psnr == [compare.PSNR_CAP_DB] and ssim[0] == pytest.approx(1.0)


def test_frames_smaller_than_the_window_still_work():
    a = torch.rand(1, 6, 8, 3)
    _, ssim = compare.video_metrics(a, a)
    assert ssim[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3, 8, 8, 3), (4, 8, 8, 3)), ((3, 8, 8, 3), (3, 8, 16, 3)), ((8, 8, 3), (8, 8, 3))],
)
def test_mismatched_shapes_raise_a_clear_error(shape_a, shape_b):
    with pytest.raises(ValueError, match="got"):
        compare.video_metrics(torch.zeros(shape_a), torch.zeros(shape_b))


def test_node_returns_means_report_and_ui_text():
    a = torch.full((2, 12, 12, 3), 0.5)
    b = a + 0.1
    out = compare.SVG2Compare().compare(a, b)
    mean_psnr, mean_ssim, report = out["result"]
    assert mean_psnr == pytest.approx(20.0, abs=1e-4)
    assert 0.0 < mean_ssim < 1.0
    assert out["ui"]["text"] == [report]
    assert out["ui"]["psnr"] == pytest.approx([20.0, 20.0], abs=1e-4) and len(out["ui"]["ssim"]) == 2
    assert report.splitlines()[0].startswith("mean PSNR 20.00 dB")
    assert len(report.splitlines()) == 3
