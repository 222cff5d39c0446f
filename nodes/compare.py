"""SVG2 Compare: PSNR and SSIM per frame between two IMAGE batches (dense vs SVG2 output).

IMAGE batches are ComfyUI's `[T, H, W, C]` float tensors in [0, 1]. The metrics follow the SVG2 paper's
evaluation: PSNR on [0, 1] RGB, SSIM with an 11x11 box window, C1 = 0.01^2, C2 = 0.03^2, both per frame.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
PSNR_CAP_DB = 100.0


def _check_images(images_a: torch.Tensor, images_b: torch.Tensor) -> None:
    if images_a.ndim != 4 or images_b.ndim != 4:
        raise ValueError(
            "images must be IMAGE batches [frames, height, width, channels], "
            f"got shapes {tuple(images_a.shape)} and {tuple(images_b.shape)}"
        )
    if images_a.shape != images_b.shape:
        raise ValueError(
            "both videos must have the same frames, height, width and channels, got "
            f"{tuple(images_a.shape)} (a) and {tuple(images_b.shape)} (b); use the same length, "
            "resolution and seed for both branches"
        )
    if images_a.shape[0] == 0:
        raise ValueError("the videos have no frames")


def frame_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of one frame pair `a, b: [H, W, C]` in [0, 1]; identical frames give PSNR_CAP_DB."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return 10.0 * math.log10(1.0 / mse)


def frame_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of one frame pair `a, b: [H, W, C]` in [0, 1] over channels and valid window positions.

    Box window of SSIM_WINDOW pixels (clamped to the frame for tiny frames), no padding.
    """
    x = a.double().permute(2, 0, 1).unsqueeze(0)
    y = b.double().permute(2, 0, 1).unsqueeze(0)
    window = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    mu_x = F.avg_pool2d(x, window, stride=1)
    mu_y = F.avg_pool2d(y, window, stride=1)
    var_x = F.avg_pool2d(x * x, window, stride=1) - mu_x**2
    var_y = F.avg_pool2d(y * y, window, stride=1) - mu_y**2
    cov_xy = F.avg_pool2d(x * y, window, stride=1) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)) / (
        (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    return ssim_map.mean().item()


def video_metrics(images_a: torch.Tensor, images_b: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-frame (psnr_db, ssim) lists for `images_a, images_b: [T, H, W, C]` in [0, 1].

    Only the first three channels (RGB) count, so an alpha channel is ignored.
    """
    _check_images(images_a, images_b)
    psnr, ssim = [], []
    for frame_a, frame_b in zip(images_a, images_b):
        rgb_a, rgb_b = frame_a[..., :3], frame_b[..., :3]
        psnr.append(frame_psnr(rgb_a, rgb_b))
        ssim.append(frame_ssim(rgb_a, rgb_b))
    return psnr, ssim


def format_report(psnr: list[float], ssim: list[float]) -> str:
    """Mean line, then one line per frame: `frame  PSNR dB  SSIM`."""
    lines = [f"mean PSNR {sum(psnr) / len(psnr):.2f} dB  SSIM {sum(ssim) / len(ssim):.4f}  ({len(psnr)} frames)"]
    lines += [f"frame {i:4d}  {p:6.2f} dB  {s:.4f}" for i, (p, s) in enumerate(zip(psnr, ssim))]
    return "\n".join(lines)


class SVG2Compare:
    """Measures how close the SVG2 video is to the dense one, per frame and on average."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images_a": ("IMAGE", {"tooltip": "Reference frames, e.g. the dense model's decoded video."}),
                "images_b": ("IMAGE", {"tooltip": "Frames to test, e.g. the SVG2 model's video from the same seed."}),
            }
        }

    RETURN_TYPES = ("FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("mean_psnr", "mean_ssim", "report")
    OUTPUT_TOOLTIPS = (
        "Mean PSNR over frames in dB (identical frames count as 100). The SVG2 paper reports 25-30 dB at 720p.",
        "Mean SSIM over frames (11x11 box window, 1.0 = identical). The paper reports 0.85-0.91 at 720p.",
        "The means, then PSNR and SSIM of every frame, one line each.",
    )
    FUNCTION = "compare"
    OUTPUT_NODE = True
    CATEGORY = "sampling/svg2"
    DESCRIPTION = (
        "PSNR and SSIM per frame between two videos of the same shape, as in the SVG2 paper. "
        "Run the same seed through the dense and the SVG2 model to measure quality on your own prompts."
    )

    def compare(self, images_a, images_b):
        psnr, ssim = video_metrics(images_a, images_b)
        mean_psnr = sum(psnr) / len(psnr)
        mean_ssim = sum(ssim) / len(ssim)
        report = format_report(psnr, ssim)
        return {"ui": {"text": [report], "psnr": psnr, "ssim": ssim}, "result": (mean_psnr, mean_ssim, report)}


NODE_CLASS_MAPPINGS = {"SVG2Compare": SVG2Compare}
NODE_DISPLAY_NAME_MAPPINGS = {"SVG2Compare": "SVG2 Compare"}
