"""Test-only ComfyUI nodes for the browser test: conditioning without a text encoder, and a latent "decoder"
that turns a video latent `[B, C, T, H, W]` into IMAGE frames `[T, 8H, 8W, 3]` without a VAE."""
import torch


class SVG2TestConditioning:
    """Random UMT5-sized embeddings `[1, tokens, 4096]`, the shape Wan's text projection expects."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tokens": ("INT", {"default": 7, "min": 1, "max": 512}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing/svg2"

    def make(self, tokens, seed):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=generator), {}]],)


class SVG2TestLatentImages:
    """The first three latent channels of the first video, squashed to [0, 1] and upscaled 8x."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "testing/svg2"

    def decode(self, samples):
        latent = samples["samples"][0, :3].float()  # [3, T, H, W]
        frames = torch.sigmoid(latent).permute(1, 2, 3, 0)  # [T, H, W, 3]
        frames = frames.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
        return (frames.contiguous(),)


NODE_CLASS_MAPPINGS = {"SVG2TestConditioning": SVG2TestConditioning, "SVG2TestLatentImages": SVG2TestLatentImages}
NODE_DISPLAY_NAME_MAPPINGS = {"SVG2TestConditioning": "SVG2 Test Conditioning",
                              "SVG2TestLatentImages": "SVG2 Test Latent Images"}
