"""PSNR / SSIM of the SVG2 Compare node against an independent float64 computation of the README's
definitions (PSNR on [0, 1] RGB; SSIM with an 11x11 box window, C1 = 0.01^2, C2 = 0.03^2, mean over the
valid window positions and the channels), plus closed forms, chunking and the ComfyUI progress bar."""
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "svg2_compare", Path(__file__).resolve().parent.parent / "nodes" / "compare.py"
)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

# The node computes in float32; the references below in float64. Measured gaps on noisy 832x480 frames
# are below 1e-7 (SSIM) and 1e-5 dB (PSNR); the bounds leave a decade or more.
SSIM_ABS_TOL = 1e-5
PSNR_ABS_TOL_DB = 1e-4
# Worst case of float32 SSIM: perfectly flat areas far from the frame's mean, where E[x^2] - E[x]^2 of
# values up to 0.25 (about the mean) cancels to 0 and a few float32 ulps (~1.5e-8 each) meet C2 = 9e-4.
SSIM_FLAT_ABS_TOL = 3e-4


def _ssim_direct(a: np.ndarray, b: np.ndarray, window: int = 11) -> float:
    """SSIM by visiting every valid window position and channel, float64, `[H, W, C]` inputs."""
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


def _box_means_sat(plane: np.ndarray, window: int) -> np.ndarray:
    """Means of every valid `window x window` box of a 2-D float64 array, from a summed-area table."""
    sat = np.zeros((plane.shape[0] + 1, plane.shape[1] + 1))
    sat[1:, 1:] = plane.cumsum(0).cumsum(1)
    w = window
    return (sat[w:, w:] - sat[:-w, w:] - sat[w:, :-w] + sat[:-w, :-w]) / (w * w)


def _ssim_sat(a: np.ndarray, b: np.ndarray, window: int = 11) -> float:
    """The same SSIM in float64 through summed-area tables (fast enough for full-size frames)."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(3):
        x, y = a[..., c] - 0.5, b[..., c] - 0.5  # centred: the table sums stay small
        mx, my = _box_means_sat(x, window), _box_means_sat(y, window)
        vx = _box_means_sat(x * x, window) - mx**2
        vy = _box_means_sat(y * y, window) - my**2
        cov = _box_means_sat(x * y, window) - mx * my
        mx, my = mx + 0.5, my + 0.5
        values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def _psnr_reference(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a[..., :3] - b[..., :3]) ** 2))
    return compare.PSNR_CAP_DB if mse <= 1e-10 else 10 * math.log10(1 / mse)


def _noisy_pair(frames, height, width, noise, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(frames, height, width, 3, generator=gen)
    a = torch.nn.functional.avg_pool2d(a.permute(0, 3, 1, 2), 5, stride=1, padding=2).permute(0, 2, 3, 1)  # some structure
    b = (a + noise * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    return a.contiguous(), b.contiguous()


def test_identical_videos_are_perfect():
    video = torch.rand(3, 16, 20, 3)
    psnr, ssim = compare.video_metrics(video, video.clone())
    assert psnr == [compare.PSNR_CAP_DB] * 3
    assert ssim == pytest.approx([1.0] * 3, abs=1e-6)


def test_psnr_of_a_constant_offset():
    a = torch.full((2, 12, 12, 3), 0.5)
    b = a + 0.1
    psnr, _ = compare.video_metrics(a, b)
    assert psnr == pytest.approx([20.0, 20.0], abs=PSNR_ABS_TOL_DB)  # mse = 0.01 -> 20 dB


def test_ssim_of_two_flat_frames_matches_closed_form():
    a = torch.full((1, 12, 14, 3), 0.2)
    b = torch.full((1, 12, 14, 3), 0.6)
    _, ssim = compare.video_metrics(a, b)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)  # no variance: the contrast term is 1
    assert ssim[0] == pytest.approx(expected, abs=SSIM_ABS_TOL)


def test_flat_high_contrast_areas_stay_within_the_float32_bound():
    a = torch.full((1, 64, 96, 3), 0.05)
    a[:, :, 48:] = 0.95  # two flat halves, 0.45 from the frame's mean
    b = a * 0.999
    psnr, ssim = compare.video_metrics(a, b)
    ref_a, ref_b = a[0].double().numpy(), b[0].double().numpy()
    assert ssim[0] == pytest.approx(_ssim_sat(ref_a, ref_b), abs=SSIM_FLAT_ABS_TOL)
    assert psnr[0] == pytest.approx(_psnr_reference(ref_a, ref_b), abs=PSNR_ABS_TOL_DB)


def test_small_frames_match_a_direct_window_loop():
    a, b = _noisy_pair(2, 17, 19, 0.15)
    psnr, ssim = compare.video_metrics(a, b)
    for t in range(2):
        ref_a, ref_b = a[t].double().numpy(), b[t].double().numpy()
        assert ssim[t] == pytest.approx(_ssim_direct(ref_a, ref_b), abs=SSIM_ABS_TOL)
        assert psnr[t] == pytest.approx(_psnr_reference(ref_a, ref_b), abs=PSNR_ABS_TOL_DB)


def test_summed_area_reference_agrees_with_the_direct_loop():
    a, b = _noisy_pair(1, 15, 23, 0.1, seed=3)
    ref_a, ref_b = a[0].double().numpy(), b[0].double().numpy()
    assert _ssim_sat(ref_a, ref_b) == pytest.approx(_ssim_direct(ref_a, ref_b), abs=1e-12)


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.2])
def test_full_size_frames_match_float64(noise):
    """832x480 frames, several per chunk and a chunk boundary inside the video."""
    a, b = _noisy_pair(3, 480, 832, noise, seed=1)
    psnr, ssim = compare.video_metrics(a, b, chunk_elements=2 * 480 * 832 * 3)
    for t in range(3):
        ref_a, ref_b = a[t].double().numpy(), b[t].double().numpy()
        assert ssim[t] == pytest.approx(_ssim_sat(ref_a, ref_b), abs=SSIM_ABS_TOL)
        assert psnr[t] == pytest.approx(_psnr_reference(ref_a, ref_b), abs=PSNR_ABS_TOL_DB)


def test_chunking_does_not_change_the_values():
    a, b = _noisy_pair(7, 24, 40, 0.1, seed=2)
    whole = compare.video_metrics(a, b)
    done = []
    chunked = compare.video_metrics(a, b, on_frames_done=done.append, chunk_elements=2 * 24 * 40 * 3)
    assert done == [2, 2, 2, 1]
    assert chunked[0] == pytest.approx(whole[0], abs=1e-6)
    assert chunked[1] == pytest.approx(whole[1], abs=1e-7)


def test_half_precision_input_is_measured_in_float32():
    a, b = _noisy_pair(2, 20, 24, 0.1, seed=4)
    a16, b16 = a.half(), b.half()
    psnr, ssim = compare.video_metrics(a16, b16)
    for t in range(2):
        ref_a, ref_b = a16[t].double().numpy(), b16[t].double().numpy()
        assert ssim[t] == pytest.approx(_ssim_direct(ref_a, ref_b), abs=SSIM_ABS_TOL)
        assert psnr[t] == pytest.approx(_psnr_reference(ref_a, ref_b), abs=PSNR_ABS_TOL_DB)


def test_alpha_channel_is_ignored():
    a = torch.rand(1, 12, 12, 4)
    b = a.clone()
    b[..., 3] = 1.0 - b[..., 3]
    psnr, ssim = compare.video_metrics(a, b)
    assert psnr == [compare.PSNR_CAP_DB] and ssim[0] == pytest.approx(1.0, abs=1e-6)


def test_frames_smaller_than_the_window_still_work():
    a = torch.rand(1, 6, 8, 3)
    _, ssim = compare.video_metrics(a, a)
    assert ssim[0] == pytest.approx(1.0, abs=1e-6)


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
    assert mean_psnr == pytest.approx(20.0, abs=PSNR_ABS_TOL_DB)
    assert 0.0 < mean_ssim < 1.0
    assert out["ui"]["text"] == [report]
    assert out["ui"]["psnr"] == pytest.approx([20.0, 20.0], abs=PSNR_ABS_TOL_DB) and len(out["ui"]["ssim"]) == 2
    assert report.splitlines()[0].startswith("mean PSNR 20.00 dB")
    assert len(report.splitlines()) == 3


def test_node_reports_progress_through_comfyui(monkeypatch):
    updates = []

    class ProgressBar:
        def __init__(self, total):
            updates.append(("total", total))

        def update(self, value):
            updates.append(("update", value))

    comfy = types.ModuleType("comfy")
    comfy.utils = types.ModuleType("comfy.utils")
    comfy.utils.ProgressBar = ProgressBar
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", comfy.utils)
    frames = 5
    a, b = _noisy_pair(frames, 640, 640, 0.1)  # 640 x 640 x 3 -> 3 frames per chunk
    compare.SVG2Compare().compare(a, b)
    assert updates == [("total", frames), ("update", 3), ("update", 2)]


def test_node_is_found_where_users_look():
    assert not compare.SVG2Compare.CATEGORY.startswith("sampling")
    assert {"psnr", "ssim", "sparse videogen"} <= set(compare.SVG2Compare.SEARCH_ALIASES)


def test_metrics_run_where_asked_and_stay_on_the_cpu_without_a_gpu(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(4, 24, 32, 3, generator=generator)
    b = (a + 0.05 * torch.randn(4, 24, 32, 3, generator=generator)).clamp(0, 1)
    assert compare.video_metrics(a, b, device=torch.device("cpu")) == compare.video_metrics(a, b)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compare._metrics_device(a) == torch.device("cpu")
