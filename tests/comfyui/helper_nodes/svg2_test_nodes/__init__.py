"""Test-only ComfyUI nodes: conditioning without a text encoder, and an output node for a latent."""
import torch


class SVG2TestConditioning:
    """Random 4096-wide text embeddings (+ pooled output for HunyuanVideo), seeded."""

    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tokens": ("INT", {"default": 7, "min": 1, "max": 512}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "family": (["wan", "hunyuan_video"],)}}

    def make(self, tokens, seed, family):
        generator = torch.Generator().manual_seed(seed)
        extras = {"pooled_output": torch.randn(1, 768, generator=generator)} if family == "hunyuan_video" else {}
        return ([[torch.randn(1, tokens, 4096, generator=generator), extras]],)


class SVG2TestLatentSink:
    """Output node: reports the latent's mean absolute value."""

    CATEGORY = "testing"
    FUNCTION = "sink"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def sink(self, samples):
        return {"ui": {"abs_mean": [float(samples["samples"].abs().mean())]}}


NODE_CLASS_MAPPINGS = {"SVG2TestConditioning": SVG2TestConditioning, "SVG2TestLatentSink": SVG2TestLatentSink}
