"""The "SVG2 Sparse Attention" node: MODEL in, a clone whose video self-attention runs through SVG2 out.

V1 node API (works from ComfyUI 0.3.64 on). The node only validates widgets and installs an `SVG2Patch`;
the work happens while sampling (see sampling_patch.py and attention_override.py).
"""
from __future__ import annotations

from ..svg2_core import SVG2Config
from ..svg2_core.backends import BACKEND_NAMES
from .attention_override import QK_INT8_MIN_TOKENS, Schedule, SVG2AttentionOverride
from .run_state import log_once
from .sampling_patch import OVERRIDE_KEY, SVG2Patch

BACKENDS = list(BACKEND_NAMES)

# name -> (type, default, min, max, step, tooltip); the ranges are also what execute() enforces.
REQUIRED_WIDGETS = {
    "top_p": ("FLOAT", 0.9, 0.01, 1.0, 0.01,
              "Share of each query cluster's estimated attention mass to keep; 0.9 is the official setting. "
              "Lower computes fewer blocks: faster and less faithful to dense attention. 1.0 keeps every block, "
              "so the model's own attention serves the calls (SVG2 off)."),
    "num_q_clusters": ("INT", 300, 1, 4096, 1,
                       "k-means clusters for the queries, per head: 300 for 720p, 200 for 480p. More clusters "
                       "select more finely but cost more k-means time."),
    "num_k_clusters": ("INT", 1000, 1, 8192, 1,
                       "k-means clusters for the keys, per head; 1000 in the official scripts."),
    "dense_warmup_steps": ("INT", -1, -1, 10000, 1,
                           "-1 (default): dense_warmup_percent sets the warm-up. 0 or more: the first N steps of "
                           "this sampler stay dense instead (what workflows saved before dense_warmup_percent "
                           "use)."),
    "dense_layers": ("INT", 1, 0, 1000, 1,
                     "First transformer blocks kept dense at every step; 1 is the official setting."),
}
ADVANCED_WIDGETS = {
    "dense_last_steps": ("INT", -1, -1, 10000, 1,
                         "-1 (default): dense_last_percent sets the dense tail. 0 or more: the last N steps of this "
                         "sampler stay dense instead."),
    "min_k_cluster_ratio": ("FLOAT", 0.10, 0.0, 1.0, 0.01,
                            "Every query cluster keeps at least this share of the key clusters (0.10 = 100 of "
                            "1000): a floor on density."),
    "kmeans_iters": ("INT", 2, 1, 100, 1,
                     "k-means iterations per sparse step (2 by default), warm-started from the previous step; the "
                     "first sparse step clusters from scratch with a few more."),
    "min_tokens": ("INT", 8192, 0, 10_000_000, 1,
                   "Attention calls with fewer tokens (8192 by default) stay dense: short sequences gain little "
                   "or lose time."),
}
# Added after the widgets above, at the end: a saved workflow's widgets_values are positional, so the older
# widgets keep their places, and an older workflow's step counts (0 or more) take precedence over these.
SCHEDULE_WIDGETS = {
    "dense_warmup_percent": ("FLOAT", 0.2, 0.0, 1.0, 0.01,
                             "Start of the denoising schedule kept dense while the video's layout forms, as a share "
                             "placed by noise level (like ComfyUI's start_percent). 0.2 keeps 1 of 4 steps dense, 2 "
                             "of 8, 4 of 20 and 10 of 50. The same value on both Wan 2.2 experts: the low-noise "
                             "one starts past it."),
    "dense_last_percent": ("FLOAT", 0.0, 0.0, 1.0, 0.01,
                           "End of the schedule kept dense, a share placed by noise level; 0.1 keeps the last 5 of "
                           "50 steps, 2 of 20, none of 8 or 4 dense. Can restore fine detail that flickers."),
}
BACKEND_TOOLTIP = ("auto / triton: the Triton fast path; a call it cannot serve, or a fast-path error, falls back "
                   "to the model's own attention with one warning. torch: the slow PyTorch reference on any "
                   "device (tests).")
QK_INT8_TOOLTIP = (f"On: in calls of {QK_INT8_MIN_TOKENS:,}+ tokens (720p), attention scores from int8 codes of q "
                   "and k, a little faster; at low density it adds noticeably to the error. Off for the model's "
                   "dtype throughout.")
COMPILE_TOOLTIP = ("Off: SVG2 runs outside torch.compile, so a compiled model does not recompile per step. "
                   "On: let torch.compile trace the sparse path (experimental).")


def _widget(spec) -> tuple:
    kind, default, low, high, step, tooltip = spec
    options = {"default": default, "min": low, "max": high, "step": step, "tooltip": tooltip}
    if kind == "FLOAT":
        options.update(round=0.001, display="slider")
    return (kind, options)


def _checked(name: str, value, spec):
    """value, if it is a number in the widget's range; else a ValueError naming the range."""
    kind, _, low, high, _, _ = spec
    number_types = (int,) if kind == "INT" else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types) or not low <= value <= high:
        raise ValueError(f"{name} must be {'an int' if kind == 'INT' else 'a number'} in [{low}, {high}], "
                         f"got {value!r}")
    return value


class SVG2SparseAttention:
    """Patch a Wan 2.1/2.2 or HunyuanVideo MODEL so its video self-attention runs through SVG2."""

    DESCRIPTION = ("Sparse VideoGen2 attention for Wan 2.1/2.2 and HunyuanVideo: clusters queries and keys with "
                   "k-means and computes only the attention blocks that carry top_p of the attention mass. "
                   "Place it between the model loader and the sampler, after any Sage/Flash attention patch "
                   "(that one keeps serving the dense calls). Statistics appear on the node after sampling.")
    CATEGORY = "model_patches/attention"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with SVG2 self-attention; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls):
        required = {"model": ("MODEL", {"tooltip": "A Wan 2.1/2.2 or HunyuanVideo model; others pass through."})}
        required.update({name: _widget(spec) for name, spec in REQUIRED_WIDGETS.items()})
        required["dense_warmup_steps"][1]["advanced"] = True  # kept for older workflows; the percent sets it
        required["backend"] = (BACKENDS, {"default": "auto", "tooltip": BACKEND_TOOLTIP})
        optional = {name: (_widget(spec)[0], {**_widget(spec)[1], "advanced": True})
                    for name, spec in ADVANCED_WIDGETS.items()}
        optional["allow_compile"] = ("BOOLEAN", {"default": False, "advanced": True, "tooltip": COMPILE_TOOLTIP})
        optional["qk_int8"] = ("BOOLEAN", {"default": True, "advanced": True, "tooltip": QK_INT8_TOOLTIP})
        optional.update({name: _widget(spec) for name, spec in SCHEDULE_WIDGETS.items()})
        optional["dense_last_percent"][1]["advanced"] = True
        return {"required": required, "optional": optional, "hidden": {"unique_id": "UNIQUE_ID"}}

    def patch(self, model, top_p, num_q_clusters, num_k_clusters, dense_warmup_steps, dense_layers, backend,
              dense_last_steps=0, min_k_cluster_ratio=0.10, kmeans_iters=2, min_tokens=8192,
              allow_compile=False, qk_int8=True, dense_warmup_percent=0.2, dense_last_percent=0.0,
              unique_id=None):
        # dense_last_steps defaults to 0 here, not -1: a prompt without it predates the percent widgets
        values = {"top_p": top_p, "num_q_clusters": num_q_clusters, "num_k_clusters": num_k_clusters,
                  "dense_warmup_steps": dense_warmup_steps, "dense_layers": dense_layers,
                  "dense_last_steps": dense_last_steps, "min_k_cluster_ratio": min_k_cluster_ratio,
                  "kmeans_iters": kmeans_iters, "min_tokens": min_tokens,
                  "dense_warmup_percent": dense_warmup_percent, "dense_last_percent": dense_last_percent}
        specs = {**REQUIRED_WIDGETS, **ADVANCED_WIDGETS, **SCHEDULE_WIDGETS}
        for name, value in values.items():
            _checked(name, value, specs[name])
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        config = SVG2Config(top_p=float(top_p), num_q_clusters=num_q_clusters, num_k_clusters=num_k_clusters,
                            min_k_cluster_ratio=float(min_k_cluster_ratio), kmeans_iters=kmeans_iters,
                            qk_int8=qk_int8)
        schedule = Schedule(dense_warmup_steps, dense_last_steps, dense_layers, min_tokens,
                            float(dense_warmup_percent), float(dense_last_percent))

        patched = model.clone()
        previous = patched.model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
        if isinstance(previous, SVG2AttentionOverride):
            log_once("an SVG2 node follows another SVG2 node: the later settings replace the earlier ones")
            previous = previous.previous
        SVG2Patch(config, schedule, backend, bool(allow_compile), previous, unique_id).install(patched)
        return (patched,)


NODE_CLASS_MAPPINGS = {"SVG2SparseAttention": SVG2SparseAttention}
NODE_DISPLAY_NAME_MAPPINGS = {"SVG2SparseAttention": "SVG2 Sparse Attention"}
