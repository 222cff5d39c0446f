"""Installs SVG2 on a ModelPatcher clone: the attention override plus two keyed wrappers.

APPLY_MODEL (once per forward): step from `sample_sigmas` and the noise level, token geometry from the latent, CFG branch,
written into that forward's `transformer_options` as a `ForwardContext`. OUTER_SAMPLE (once per
sampling run): a fresh `RunState` and, for the run, a `memory_usage_factor` raised by SVG2's extra
activations and its centroid cache (ComfyUI sizes weight offloading and cond batching with it); a run whose
estimate is over model_geometry.MEMORY_SHARE of the GPU stays dense, with the numbers logged and in the stats;
then the `svg2.stats` report and the factor restored in a `finally`.
"""
from __future__ import annotations

import logging

import torch

from ..svg2_core import SVG2Config
from .attention_override import FORWARD_KEY, Schedule, SVG2AttentionOverride
from .model_geometry import (centroid_cache_factor_increase, geometry_of, memory_estimate, memory_refusal,
                             memory_usage_factor_increase)
from .run_state import ForwardContext, RunState, log_once, step_index
from .stats import publish, summary_text

log = logging.getLogger("svg2")

WRAPPER_KEY = "svg2"
OVERRIDE_KEY = "optimized_attention_override"


class SVG2Patch:
    """One node execution's SVG2 settings and the state of the sampling run in progress.

    `last_stats` keeps the payload of the most recent run (also sent as `svg2.stats`).
    """

    def __init__(self, config: SVG2Config, schedule: Schedule, backend: str, allow_compile: bool,
                 previous_override, node_id=None) -> None:
        self.node_id = node_id
        self.settings = {"top_p": config.top_p, "num_q_clusters": config.num_q_clusters,
                         "num_k_clusters": config.num_k_clusters, "backend": backend,
                         "dense_warmup_steps": schedule.dense_warmup_steps,
                         "dense_last_steps": schedule.dense_last_steps, "dense_layers": schedule.dense_layers,
                         "dense_warmup_percent": schedule.dense_warmup_percent,
                         "dense_last_percent": schedule.dense_last_percent}
        self.override = SVG2AttentionOverride(self, config, schedule, backend, previous_override, allow_compile)
        self.run: RunState | None = None
        self.last_stats: dict | None = None
        self._geometry: dict[int, object] = {}

    def __deepcopy__(self, memo):
        return self

    def install(self, model_patcher) -> None:
        """Put the override and the wrappers on `model_patcher` (a clone owned by the caller)."""
        import comfy.patcher_extension as extension

        model_patcher.model_options.setdefault("transformer_options", {})[OVERRIDE_KEY] = self.override
        for wrapper_type, wrapper in ((extension.WrappersMP.APPLY_MODEL, self.apply_model_wrapper),
                                      (extension.WrappersMP.OUTER_SAMPLE, self.outer_sample_wrapper)):
            model_patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
            model_patcher.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, wrapper)

    def geometry(self, diffusion_model):
        key = id(diffusion_model)
        if key not in self._geometry:
            self._geometry[key] = geometry_of(diffusion_model)
        return self._geometry[key]

    def outer_sample_wrapper(self, executor, *args, **kwargs):
        previous, self.run = self.run, RunState()
        base_model = self._base_model(executor)
        noise = args[0] if args else kwargs.get("noise")
        latent_shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) and noise.ndim == 5 else None
        branches = self._branches(getattr(executor, "class_obj", None))
        saved_factor = self._raise_memory_estimate(base_model, latent_shape, branches)
        self._check_memory(executor, base_model, latent_shape, branches)
        try:
            return executor(*args, **kwargs)
        finally:
            if saved_factor is not None:
                base_model.memory_usage_factor = saved_factor
            run, self.run = self.run, previous
            self._report(run)

    @staticmethod
    def _base_model(executor):
        guider = getattr(executor, "class_obj", None)
        return getattr(getattr(guider, "model_patcher", None), "model", None)

    @staticmethod
    def _branches(guider) -> int:
        """CFG branches per step: the guider's conds (positive, negative) unless cfg is 1."""
        conds = getattr(guider, "conds", None) or {}
        return 1 if getattr(guider, "cfg", 1.0) == 1.0 else max(1, len(conds))

    @staticmethod
    def _dtype_size(base_model) -> int:
        dtype = getattr(base_model, "manual_cast_dtype", None) or getattr(base_model, "get_dtype", lambda: None)()
        return torch.empty(0, dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 2

    def _check_memory(self, executor, base_model, latent_shape, branches) -> None:
        """Keep the run dense when SVG2 would hold more than its share of the GPU (the numbers in the reason)."""
        diffusion_model = getattr(base_model, "diffusion_model", None)
        device = getattr(getattr(getattr(executor, "class_obj", None), "model_patcher", None), "load_device", None)
        if latent_shape is None or diffusion_model is None or getattr(device, "type", None) != "cuda":
            return
        geometry = self.geometry(diffusion_model)
        if isinstance(geometry, str) or self.settings["backend"] == "torch":
            return
        estimate = memory_estimate(geometry, latent_shape, branches, self.settings["num_q_clusters"],
                                   self.settings["num_k_clusters"], self._dtype_size(base_model))
        refusal = memory_refusal(estimate, torch.cuda.get_device_properties(device).total_memory)
        if refusal is not None:
            self.run.refused = refusal
            log_once(f"{refusal}; this run uses the model's own attention", logging.WARNING)

    def _raise_memory_estimate(self, base_model, latent_shape=None, branches: int = 1):
        """Add SVG2's extra activations (and, with the run's latent shape, its centroid cache) to
        `base_model.memory_usage_factor`; returns the old value (None when nothing was changed: no base
        model, or a model SVG2 does not serve)."""
        factor = getattr(base_model, "memory_usage_factor", None)
        diffusion_model = getattr(base_model, "diffusion_model", None)
        if not isinstance(factor, (int, float)) or diffusion_model is None:
            return None
        geometry = self.geometry(diffusion_model)
        if isinstance(geometry, str):
            return None
        increase = memory_usage_factor_increase(geometry)
        if latent_shape is not None:
            increase += centroid_cache_factor_increase(
                geometry, latent_shape, branches, self.settings["num_q_clusters"], self.settings["num_k_clusters"],
                self._dtype_size(base_model))
        if increase <= 0:
            return None
        base_model.memory_usage_factor = factor + increase
        return factor

    def apply_model_wrapper(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options=None, **kwargs):
        options = dict(transformer_options or {})
        if self.run is None:
            log_once("model evaluated outside a sampler run: SVG2 stays off for that call")
        else:
            options[FORWARD_KEY] = self._forward_context(executor.class_obj, x, t, c_crossattn, options, kwargs)
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)

    def _forward_context(self, base_model, x, t, c_crossattn, options, kwargs) -> ForwardContext:
        geometry = self.geometry(base_model.diffusion_model)
        unsupported = geometry if isinstance(geometry, str) else self.run.refused
        if unsupported is None and x.ndim != 5:
            unsupported = f"latent of shape {tuple(x.shape)} is not a video [B, C, T, H, W]"
        if unsupported is not None:
            return ForwardContext(self, self.run, None, None, None, unsupported, 0, 0, ())
        schedule = options.get("sample_sigmas")
        sigma = options.get("sigmas", t)
        total_steps = len(schedule) - 1 if schedule is not None else None
        if total_steps is not None:
            self.run.total_steps = max(self.run.total_steps or 0, total_steps)
        video_tokens = geometry.video_tokens(x.shape)
        reference = kwargs.get("ref_latent")  # HunyuanVideo: reference frames join the video tokens
        if reference is not None and reference.ndim == 5:
            video_tokens += geometry.video_tokens(reference.shape)
        text_tokens = c_crossattn.shape[1] if c_crossattn is not None and c_crossattn.ndim == 3 else 0
        branch = (tuple(str(u) for u in options.get("uuids", ())), tuple(options.get("cond_or_uncond", ())))
        window = options.get("context_window")
        if window is not None:
            branch += (tuple(getattr(window, "index_list", ())),)
        sigma_value = _sigma_value(sigma)
        step = step_index(torch.tensor([sigma_value]), schedule) if sigma_value is not None else None
        return ForwardContext(self, self.run, step, total_steps, geometry, None, video_tokens, text_tokens, branch,
                              sigma=sigma_value, percent_to_sigma=_percent_to_sigma(base_model))

    def _report(self, run: RunState) -> None:
        try:
            payload = {"model": None, "steps": run.total_steps, "settings": self.settings, **run.stats.summary()}
            geometries = [g.family for g in self._geometry.values() if not isinstance(g, str)]
            payload["model"] = geometries[0] if geometries else None
            self.last_stats = payload
            log.info("%s", summary_text(payload))
            publish(payload, self.node_id)
        except Exception:  # reporting must never fail or mask the sampling result
            log.exception("SVG2: could not summarise the run")
        finally:
            run.reset()


def _sigma_value(sigma) -> float | None:
    """This forward's noise level as a float (one small device read per forward, none per attention call)."""
    if not isinstance(sigma, torch.Tensor) or sigma.numel() == 0:
        return None
    return float(sigma.detach().flatten()[0].float().cpu())


def _percent_to_sigma(base_model):
    """The model's `model_sampling.percent_to_sigma` (object patches such as ModelSamplingSD3's shift are in
    place while sampling), or None."""
    function = getattr(getattr(base_model, "model_sampling", None), "percent_to_sigma", None)
    return function if callable(function) else None
