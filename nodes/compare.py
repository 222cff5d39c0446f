"""SVG2 Compare: PSNR and SSIM per frame between two IMAGE batches (dense vs SVG2 output).

IMAGE batches are ComfyUI's `[T, H, W, C]` float tensors in [0, 1]. The metrics follow the SVG2 paper's
evaluation: PSNR on [0, 1] RGB, SSIM with an 11x11 box window, C1 = 0.01^2, C2 = 0.03^2, averaged over the
valid window positions (no padding) and the three channels, both per frame.

The frames are measured in float32, several at a time, on the GPU when there is one (ComfyUI's decoded images
live on the CPU; a chunk is moved over, so the GPU holds one chunk at a time) and else on the images' device;
a chunk holds about CHUNK_ELEMENTS input values per video, so memory stays bounded whatever the video's
length.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
PSNR_CAP_DB = 100.0
# Input values per video in one chunk (3 frames of 832x480 RGB); the working set is about 20x this in float32.
CHUNK_ELEMENTS = 1 << 22


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


def _box_mean(maps: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over every valid `window x window` box of `maps: [n, c, H, W]` -> `[n, c, H-window+1, W-window+1]`.

    Two 1-D passes (rows, then columns): the same mean as one 2-D box, with 2 * window adds per value.
    """
    rows = F.avg_pool2d(maps, (1, window), stride=1)
    return F.avg_pool2d(rows, (window, 1), stride=1)


def chunk_metrics(rgb_a: torch.Tensor, rgb_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR (dB) and mean SSIM per frame of `rgb_a, rgb_b: [n, H, W, 3]` float32 in [0, 1] -> two `[n]` tensors.

    The SSIM window is SSIM_WINDOW pixels, clamped to the frame for frames smaller than that.
    """
    mse = (rgb_a - rgb_b).square().mean(dim=(1, 2, 3))
    psnr = torch.where(
        mse <= 10.0 ** (-PSNR_CAP_DB / 10.0),
        torch.full_like(mse, PSNR_CAP_DB),
        -10.0 * torch.log10(mse.clamp_min(1e-30)),
    )
    x = rgb_a.permute(0, 3, 1, 2)
    y = rgb_b.permute(0, 3, 1, 2)
    frames, channels, height, width = x.shape
    window = min(SSIM_WINDOW, height, width)
    # Variances and the covariance do not change when each plane is shifted by a constant; taken about
    # the plane's mean, E[x^2] - E[x]^2 cancels far fewer float32 digits (about the raw values, flat
    # bright areas lose ~1e-4 of SSIM next to C2 = 9e-4).
    shift_x = x.mean(dim=(2, 3), keepdim=True)
    shift_y = y.mean(dim=(2, 3), keepdim=True)
    moments = torch.empty(frames, 5 * channels, height, width, dtype=x.dtype, device=x.device)
    xc, yc, xx, yy, xy = moments.split(channels, dim=1)
    torch.sub(x, shift_x, out=xc)
    torch.sub(y, shift_y, out=yc)
    torch.mul(xc, xc, out=xx)
    torch.mul(yc, yc, out=yy)
    torch.mul(xc, yc, out=xy)
    means = _box_mean(moments, window)
    del moments, xc, yc, xx, yy, xy
    mu_x, mu_y, var_x, var_y, cov_xy = means.split(channels, dim=1)  # raw moments until updated in place
    var_x.addcmul_(mu_x, mu_x, value=-1.0)
    var_y.addcmul_(mu_y, mu_y, value=-1.0)
    cov_xy.addcmul_(mu_x, mu_y, value=-1.0)
    mu_x.add_(shift_x)
    mu_y.add_(shift_y)
    # (2 mu_x mu_y + C1) (2 cov + C2) / ((mu_x^2 + mu_y^2 + C1) (var_x + var_y + C2))
    numerator = (mu_x * mu_y).mul_(2.0).add_(SSIM_C1)
    numerator.mul_(cov_xy.mul_(2.0).add_(SSIM_C2))
    denominator = (mu_x * mu_x).addcmul_(mu_y, mu_y).add_(SSIM_C1)
    denominator.mul_(var_x.add_(var_y).add_(SSIM_C2))
    ssim_map = numerator.div_(denominator)
    return psnr, ssim_map.mean(dim=(1, 2, 3))


def video_metrics(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    on_frames_done: Callable[[int], None] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    device: torch.device | None = None,
) -> tuple[list[float], list[float]]:
    """Per-frame (psnr_db, ssim) lists for `images_a, images_b: [T, H, W, C]` in [0, 1].

    Only the first three channels (RGB) count, so an alpha channel is ignored. Computed in float32 on
    `device` (default: `images_a`'s), a chunk of frames at a time; `on_frames_done(n)` is called after each
    chunk with the number of frames it measured.
    """
    _check_images(images_a, images_b)
    frames, height, width, _ = images_a.shape
    device = images_a.device if device is None else device
    frames_per_chunk = max(1, chunk_elements // (height * width * 3))
    psnr: list[float] = []
    ssim: list[float] = []
    for start in range(0, frames, frames_per_chunk):
        stop = min(frames, start + frames_per_chunk)
        rgb_a = images_a[start:stop, ..., :3].to(device=device, dtype=torch.float32)
        rgb_b = images_b[start:stop, ..., :3].to(device=device, dtype=torch.float32)
        chunk_psnr, chunk_ssim = chunk_metrics(rgb_a, rgb_b)
        psnr += chunk_psnr.tolist()
        ssim += chunk_ssim.tolist()
        if on_frames_done is not None:
            on_frames_done(stop - start)
    return psnr, ssim


def format_report(psnr: list[float], ssim: list[float]) -> str:
    """Mean line, then one line per frame: `frame  PSNR dB  SSIM`."""
    lines = [f"mean PSNR {sum(psnr) / len(psnr):.2f} dB  SSIM {sum(ssim) / len(ssim):.4f}  ({len(psnr)} frames)"]
    lines += [f"frame {i:4d}  {p:6.2f} dB  {s:.4f}" for i, (p, s) in enumerate(zip(psnr, ssim))]
    return "\n".join(lines)


def _metrics_device(images: torch.Tensor) -> torch.device:
    """Where the metrics run: the images' GPU, else the GPU ComfyUI computes on when there is one, else the CPU."""
    if images.device.type != "cpu" or not torch.cuda.is_available():
        return images.device
    try:
        import comfy.model_management
        return comfy.model_management.get_torch_device()
    except ImportError:  # outside ComfyUI (tests)
        return torch.device("cuda")


def _progress_callback(total_frames: int) -> Callable[[int], None] | None:
    """ComfyUI's progress bar for the node (it also lets Cancel stop the node between chunks); None
    outside ComfyUI."""
    try:
        import comfy.utils
    except ImportError:
        return None
    return comfy.utils.ProgressBar(total_frames).update


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
        "Mean PSNR over frames in dB; identical frames count as 100. Higher is closer to images_a.",
        "Mean SSIM over frames (11x11 box window); 1.0 means identical.",
        "The means, then PSNR and SSIM of every frame, one line each.",
    )
    FUNCTION = "compare"
    OUTPUT_NODE = True
    CATEGORY = "image/video"
    SEARCH_ALIASES = ["psnr", "ssim", "sparse videogen", "svg2", "compare videos", "video quality"]
    DESCRIPTION = (
        "PSNR and SSIM per frame between two videos of the same shape, as in the SVG2 paper. "
        "Run the same seed through the dense and the SVG2 model to measure quality on your own prompts."
    )

    def compare(self, images_a, images_b):
        _check_images(images_a, images_b)
        psnr, ssim = video_metrics(images_a, images_b, on_frames_done=_progress_callback(images_a.shape[0]),
                                   device=_metrics_device(images_a))
        mean_psnr = sum(psnr) / len(psnr)
        mean_ssim = sum(ssim) / len(ssim)
        report = format_report(psnr, ssim)
        return {"ui": {"text": [report], "psnr": psnr, "ssim": ssim}, "result": (mean_psnr, mean_ssim, report)}


NODE_CLASS_MAPPINGS = {"SVG2Compare": SVG2Compare}
NODE_DISPLAY_NAME_MAPPINGS = {"SVG2Compare": "SVG2 Compare"}
