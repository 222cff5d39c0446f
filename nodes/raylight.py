"""SVG2 in Raylight's (komikndr/raylight) sequence-parallel runs: the "SVG2 Sparse Attention (Raylight)" node.

Raylight's USP path bypasses ComfyUI's attention override: each Wan self-attention calls xDiT's
`xFuserLongContextAttention`, whose Ulysses all-to-all leaves each rank the whole sequence for H / P heads and
hands them to yunchang's kernel for the attention type, or to `attn_processor` when the type is none of
yunchang's. For each sampling run this patch points those layers at svg2_core.ulysses' processor (the attention
type they had serves the dense calls) and puts them back afterwards. The step, layer, CFG branch and warm-up
come from the single-GPU patch's APPLY_MODEL wrapper; Raylight does not pass `transformer_options` to the
attention, so the forward's context travels in a context variable. Each rank keeps its own centroid cache.
"""
from __future__ import annotations

import contextvars
import logging
import os
import sys

from ..svg2_core import SVG2Config
from ..svg2_core.backends import FastPathError, fast_path_key
from ..svg2_core.ulysses import SparseCall, UlyssesSVG2Processor
from .attention_override import FORWARD_KEY, AttentionCall, Schedule
from .run_state import log_once
from .sampling_patch import SVG2Patch
from .svg2_patch import ADVANCED_WIDGETS, BACKENDS, REQUIRED_WIDGETS, SCHEDULE_WIDGETS, SVG2SparseAttention, _checked

# the ForwardContext of the model call in progress on this worker (set around the forward by the wrapper)
CURRENT_FORWARD: contextvars.ContextVar = contextvars.ContextVar("svg2_raylight_forward", default=None)
# not a member of yunchang's AttnType, so select_flash_attn_impl hands the call to attn_processor
SVG2_ATTN_TYPE = "svg2"
RAYLIGHT_MODULES = "raylight.diffusion_models."


def xfuser_attention_layers(modules=None) -> list:
    """The `xFuserLongContextAttention` objects Raylight's USP forwards call (one per model family module, held
    by the module's `xfuser_optimized_attention` closure); modules: the loaded modules (default sys.modules)."""
    found = []
    for name, module in list((modules if modules is not None else sys.modules).items()):
        function = getattr(module, "xfuser_optimized_attention", None) if name.startswith(RAYLIGHT_MODULES) else None
        for cell in getattr(function, "__closure__", None) or ():
            layer = cell.cell_contents
            if all(hasattr(layer, a) for a in ("ulysses_pg", "ring_pg", "attn_type", "attn_processor")):
                if not any(layer is seen for seen in found):
                    found.append(layer)
    return found


class RaylightSVG2Patch(SVG2Patch):
    """The single-GPU patch (override, wrappers, run state) plus the Ulysses processor on Raylight's layers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._replaced: list = []  # (layer, attn_type, attn_processor) to put back when the run ends
        self.find_layers = xfuser_attention_layers

    def apply_model_wrapper(self, executor, *args, **kwargs):
        if self.run is not None:
            self.install_processors()

        def forward(*forward_args, **forward_kwargs):
            options = forward_args[5] if len(forward_args) > 5 else forward_kwargs.get("transformer_options") or {}
            token = CURRENT_FORWARD.set(options.get(FORWARD_KEY))
            try:
                return executor(*forward_args, **forward_kwargs)
            finally:
                CURRENT_FORWARD.reset(token)

        forward.class_obj = executor.class_obj
        return super().apply_model_wrapper(forward, *args, **kwargs)

    def outer_sample_wrapper(self, executor, *args, **kwargs):
        try:
            return super().outer_sample_wrapper(executor, *args, **kwargs)
        finally:
            self.restore_processors()

    def install_processors(self) -> None:
        """Point every Raylight USP attention layer not yet replaced at an SVG2 processor (ValueError for ring
        attention). Raylight imports a model family's USP module when it loads the model, so this runs per forward."""
        import torch.distributed as dist

        for layer in self.find_layers():
            if any(layer is done for done, _, _ in self._replaced):
                continue
            processor = UlyssesSVG2Processor(
                self.override.config, self.route, rank=dist.get_rank(layer.ulysses_pg),
                world_size=dist.get_world_size(layer.ulysses_pg), ring_degree=dist.get_world_size(layer.ring_pg),
                backend="torch" if self.override.backend == "torch" else "triton",
                dense=_yunchang_kernel(layer.attn_type, layer.attn_processor))
            self._replaced.append((layer, layer.attn_type, layer.attn_processor))
            layer.attn_type, layer.attn_processor = SVG2_ATTN_TYPE, processor
            log_once(f"Raylight Ulysses: SVG2 serves ranks of {processor.world_size} (this one heads from "
                     f"rank {processor.rank} x H / {processor.world_size})")

    def restore_processors(self) -> None:
        while self._replaced:
            layer, attn_type, attn_processor = self._replaced.pop()
            layer.attn_type, layer.attn_processor = attn_type, attn_processor

    def route(self, q, k, v):
        """q, k, v: [B, H_local, N, D] after the all-to-all -> a SparseCall, or why the call stays dense."""
        context = CURRENT_FORWARD.get()
        if context is None or context.owner is not self:
            log_once("Raylight attention called outside an SVG2-patched sampling run: dense")
            return "outside an SVG2 sampling run"
        if context.geometry is not None and context.geometry.text_position is not None:
            reason = "joint text attention under Raylight (Wan only)"
            context.run.stats.record_dense(reason)
            return reason
        call = AttentionCall(q, k, v, None, True)
        reason = self.override.dense_reason(call, context, {})
        if reason is not None:
            context.run.stats.record_dense(reason)
            return reason
        tokens = q.shape[2]
        config = self.override._config_for(tokens)
        stats = context.run.stats

        def failed(error: FastPathError) -> None:
            cause = f"fast path failed on {error.device}: {error.reason}"
            if error.persistent:
                context.run.fast_path_failures[fast_path_key(q, config.qk_int8)] = cause
            log_once(f"{error} -- served by the attention it replaced", logging.WARNING)
            stats.record_dense(cause)

        # Raylight pads the tokens to a multiple of the Ulysses degree: the padding stays dense, unclustered
        return SparseCall(context.run.centroids, (call.layer_key, context.branch, tokens),
                          dense_suffix=max(0, tokens - context.video_tokens), config=config,
                          on_done=lambda info: stats.record_sparse(context.step, call.layer, info.density,
                                                                   info.backend),
                          on_fast_path_error=failed)


def _yunchang_kernel(attn_type, attn_processor):
    """The forward-only kernel yunchang would have run for `attn_type` (the dense calls)."""
    from yunchang.kernels import select_flash_attn_impl

    return select_flash_attn_impl(attn_type, stage="fwd-only", attn_processor=attn_processor)


def patch_model(model, top_p, num_q_clusters, num_k_clusters, dense_warmup_steps, dense_layers, backend,
                dense_last_steps=0, min_k_cluster_ratio=0.10, kmeans_iters=2, min_tokens=8192, qk_int8=True,
                dense_warmup_percent=0.2, dense_last_percent=0.0):
    """A clone of a Raylight worker's ModelPatcher with SVG2 (runs on every worker)."""
    config, schedule = settings_of(locals())
    patched = model.clone()
    RaylightSVG2Patch(config, schedule, backend, False, None).install(patched)
    return patched


def settings_of(values: dict) -> tuple[SVG2Config, Schedule]:
    """The node's widget values -> (SVG2Config, Schedule); ValueError naming a value out of its range."""
    for name, spec in {**REQUIRED_WIDGETS, **ADVANCED_WIDGETS, **SCHEDULE_WIDGETS}.items():
        _checked(name, values[name], spec)
    if values["backend"] not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {values['backend']!r}")
    config = SVG2Config(top_p=float(values["top_p"]), num_q_clusters=values["num_q_clusters"],
                        num_k_clusters=values["num_k_clusters"],
                        min_k_cluster_ratio=float(values["min_k_cluster_ratio"]),
                        kmeans_iters=values["kmeans_iters"], qk_int8=bool(values["qk_int8"]))
    schedule = Schedule(values["dense_warmup_steps"], values["dense_last_steps"], values["dense_layers"],
                        values["min_tokens"], float(values["dense_warmup_percent"]),
                        float(values["dense_last_percent"]))
    return config, schedule


def worker_patch(pack_dir: str, package: str, settings: dict):
    """The function Raylight's workers run on their model. Ray pickles it by value (a local function), and it
    imports this pack from its directory, since a worker has not imported ComfyUI's custom nodes."""

    def patch_worker_model(model):
        import importlib
        import importlib.util

        if package not in sys.modules:
            spec = importlib.util.spec_from_file_location(package, os.path.join(pack_dir, "__init__.py"),
                                                          submodule_search_locations=[pack_dir])
            module = importlib.util.module_from_spec(spec)
            sys.modules[package] = module
            spec.loader.exec_module(module)
        return importlib.import_module(f"{package}.nodes.raylight").patch_model(model, **settings)

    return patch_worker_model


class RaySVG2SparseAttention:
    """SVG2 on the models of Raylight's workers (Wan under Ulysses sequence parallelism)."""

    DESCRIPTION = ("SVG2 sparse attention for Raylight's multi-GPU runs: place it after Raylight's model loader, on "
                   "its RAY_ACTORS. Ulysses only (ring degree 1); each GPU clusters its share of the heads. Wan "
                   "models; others stay dense.")
    CATEGORY = "model_patches/attention"
    FUNCTION = "patch"
    RETURN_TYPES = ("RAY_ACTORS",)
    RETURN_NAMES = ("ray_actors",)

    @classmethod
    def INPUT_TYPES(cls):
        inputs = SVG2SparseAttention.INPUT_TYPES()
        required = {"ray_actors": ("RAY_ACTORS", {"tooltip": "Raylight's workers (from its model loader)."})}
        required.update({name: spec for name, spec in inputs["required"].items() if name != "model"})
        optional = {name: spec for name, spec in inputs["optional"].items() if name != "allow_compile"}
        return {"required": required, "optional": optional}

    def patch(self, ray_actors, **values):
        import ray  # Raylight's dependency: the node runs only where Raylight does

        defaults = {"dense_last_steps": 0, "min_k_cluster_ratio": 0.10, "kmeans_iters": 2, "min_tokens": 8192,
                    "qk_int8": True, "dense_warmup_percent": 0.2, "dense_last_percent": 0.0}
        settings = {**defaults, **values}
        settings_of(settings)  # bad values fail here, before any worker is touched
        package = __name__.rsplit(".nodes.", 1)[0]
        pack_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        function = worker_patch(pack_dir, package, settings)
        ray.get([actor.model_function_runner.remote(function) for actor in ray_actors["workers"]])
        return (ray_actors,)


NODE_CLASS_MAPPINGS = {"RaySVG2SparseAttention": RaySVG2SparseAttention}
NODE_DISPLAY_NAME_MAPPINGS = {"RaySVG2SparseAttention": "SVG2 Sparse Attention (Raylight)"}
