"""One denoising step of a native ComfyUI video model, dense versus SVG2, on real-size models.

Builds ComfyUI's own `comfy.ldm.wan.model.WanModel` (Wan 2.1: both CFG branches, batch 2) or
`comfy.ldm.hunyuan_video.model.HunyuanVideo` (guidance-distilled: one branch, batch 1, 256 text tokens after
the video tokens) with random bf16 weights on the GPU and runs its forward with this pack's SVG2 patch (the
node's override and APPLY_MODEL/OUTER_SAMPLE wrappers), so the timed path is the one ComfyUI runs. Shapes:
Wan 1.3B at 480p x 81 frames (grid 21x30x52 = 32,760 tokens), Wan 14B at 720p x 81 frames (grid 21x45x80 =
75,600 tokens), Wan 2.2 TI2V 5B at 1280x704 x 121 frames (48-channel latent, grid 31x22x40 = 27,280 tokens;
its timestep per sample, as in text-to-video), HunyuanVideo 13B at 720p x 129 frames (grid 33x45x80 =
118,800 tokens + 256 text).

    python benchmarks/wan_step.py --comfyui .comfyui/0.19.3/ComfyUI --json bench-out/wan_step.json
    python benchmarks/wan_step.py --comfyui .comfyui/0.19.3/ComfyUI --models hunyuan
    python benchmarks/wan_step.py --comfyui .comfyui/0.19.3/ComfyUI --models 5b
    python benchmarks/wan_step.py --comfyui .comfyui/0.19.3/ComfyUI --tiny     # CPU smoke run (both families)
    python benchmarks/wan_step.py --comfyui .comfyui/0.19.3/ComfyUI --models 14b,5b --schedules 4:1,8:1,20:5 \
        --reps 2 --json bench-out/wan_schedules.json   # few-step schedules, dense against SVG2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_svg2"
# Hard imports in ComfyUI's module tree that the Wan forward never calls (memory mapping, image I/O,
# progress bars); stubbed only where the machine lacks them.
UNUSED_BY_WAN = ("comfy_aimdo", "comfy_aimdo.model_vbar", "comfy_aimdo.torch", "comfy_aimdo.host_buffer",
                 "comfy_aimdo.model_mmap", "PIL", "PIL.Image", "PIL.ImageOps", "tqdm", "tqdm.auto")


def _unavailable(module_name: str):
    def __getattr__(attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)

        def missing(*args, **kwargs):
            raise RuntimeError(f"{module_name}.{attribute} is not installed here (stubbed by wan_step.py)")
        return missing
    return __getattr__


def stub_missing_modules(names=UNUSED_BY_WAN) -> list[str]:
    """Empty stand-ins for the modules in `names` that cannot be imported; returns their names."""
    stubbed = []
    for name in names:
        parent = name.split(".")[0]
        if parent not in stubbed and importlib.util.find_spec(parent) is not None:
            continue
        module = types.ModuleType(name)
        module.__path__ = []
        module.__getattr__ = _unavailable(name)
        sys.modules[name] = module
        if "." in name:
            setattr(sys.modules[parent], name.split(".", 1)[1], module)
        stubbed.append(name)
    return stubbed


@dataclass(frozen=True)
class Case:
    name: str
    dim: int
    ffn_dim: int  # Wan: feed-forward width; HunyuanVideo: 4 x dim (mlp_ratio 4)
    layers: int  # Wan blocks; HunyuanVideo: double-stream blocks
    latent: tuple  # (T, H, W) of the latent; the grid is (T, H/2, W/2)
    family: str = "wan"
    single_layers: int = 0  # HunyuanVideo single-stream blocks
    text_tokens: int = 512
    channels: int = 16  # latent channels (Wan 2.2 TI2V 5B: 48, its VAE compresses 16x16 spatially)

    @property
    def attention_layers(self) -> int:
        return self.layers + self.single_layers

    @property
    def batch(self) -> int:
        """Wan runs cond and uncond in one batch; HunyuanVideo is guidance-distilled (no CFG branch)."""
        return 2 if self.family == "wan" else 1


CASES = {
    "1.3b": Case("Wan 2.1 1.3B 480p 81f", 1536, 8960, 30, (21, 60, 104)),
    "14b": Case("Wan 2.1 14B 720p 81f", 5120, 13824, 40, (21, 90, 160)),
    "5b": Case("Wan 2.2 TI2V 5B 1280x704 121f", 3072, 14336, 30, (31, 44, 80), channels=48),
    "hunyuan": Case("HunyuanVideo 13B 720p 129f", 3072, 12288, 20, (33, 90, 160), "hunyuan", 40, 256),
    "tiny": Case("tiny Wan (CPU smoke)", 256, 512, 3, (3, 16, 16)),
    "tiny-48ch": Case("tiny Wan 2.2 5B-like, 48 latent channels (CPU smoke)", 256, 512, 2, (3, 16, 16), channels=48),
    "tiny-hunyuan": Case("tiny HunyuanVideo (CPU smoke)", 256, 1024, 2, (3, 16, 16), "hunyuan", 2, 7),
}


def import_comfyui(path: Path):
    """ComfyUI's video model classes by family and its ops, importing only what their forwards need."""
    sys.path.insert(0, str(path))
    stubbed = stub_missing_modules()
    if stubbed:
        logging.info("not installed, stubbed (unused by the Wan forward): %s", ", ".join(stubbed))
    import comfy.cli_args
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import comfy.ldm.hunyuan_video.model
    import comfy.ldm.wan.model
    import comfy.ops
    classes = {"wan": comfy.ldm.wan.model.WanModel, "hunyuan": comfy.ldm.hunyuan_video.model.HunyuanVideo}
    return classes, comfy.ops.disable_weight_init


def load_pack():
    spec = importlib.util.spec_from_file_location(PACK_MODULE, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def hunyuan_params(case: Case, model_class) -> dict:
    """HunyuanVideo constructor arguments (ComfyUI's detection of the 13B checkpoint, at case's sizes)."""
    params = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=case.dim,
                  mlp_ratio=case.ffn_dim / case.dim, num_heads=case.dim // 128, depth=case.layers,
                  depth_single_blocks=case.single_layers, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2],
                  qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False)
    fields = getattr(sys.modules[model_class.__module__].HunyuanVideoParams, "__dataclass_fields__", {})
    later = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}  # later ComfyUIs
    params.update({key: value for key, value in later.items() if key in fields})
    return params


@torch.no_grad()
def build_model(classes, operations, case: Case, device, dtype):
    """Random weights: matrices ~ N(0, 1/fan_in), norm scales 1, biases 0."""
    if case.family == "wan":
        model = classes["wan"](model_type="t2v", in_dim=case.channels, dim=case.dim, ffn_dim=case.ffn_dim,
                               out_dim=case.channels,
                               num_heads=case.dim // 128, num_layers=case.layers, device=device, dtype=dtype,
                               operations=operations)
    else:
        model = classes["hunyuan"](device=device, dtype=dtype, operations=operations,
                                   **hunyuan_params(case, classes["hunyuan"]))
    generator = torch.Generator(device=device).manual_seed(0)
    for name, parameter in model.named_parameters():
        if parameter.dim() == 1:
            parameter.fill_(1.0 if "norm" in name else 0.0)
        else:
            fan_in = parameter[0].numel()
            parameter.normal_(0.0, fan_in ** -0.5, generator=generator)
    return model.eval()


class ModelCall:
    """Stands in for ComfyUI's APPLY_MODEL executor: `class_obj.diffusion_model` and a call that runs
    the diffusion model's forward with the wrapper's transformer_options (`extra`: the model's other
    conditioning, e.g. HunyuanVideo's pooled CLIP vector `y` and `guidance`)."""

    def __init__(self, model, extra: dict | None = None) -> None:
        self.class_obj = types.SimpleNamespace(diffusion_model=model)
        self.extra = extra or {}

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        return self.class_obj.diffusion_model(x, t * 1000.0, context=c_crossattn,
                                              transformer_options=transformer_options, **self.extra)


def time_ms(fn, reps: int, cuda: bool) -> list[float]:
    """Wall time of each call of fn (CUDA events on a GPU)."""
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1000.0)
    return times


def run_case(case: Case, pack, classes, operations, args, device, dtype, batch: int | None = None) -> dict:
    """batch: CFG branches in one forward (default the case's: Wan 2 = cfg > 1, HunyuanVideo 1); 1 = cfg 1."""
    model = build_model(classes, operations, case, device, dtype)
    generator = torch.Generator(device=device).manual_seed(1)
    batch = batch or case.batch
    x = torch.randn(batch, case.channels, *case.latent, generator=generator, device=device, dtype=dtype)
    context = torch.randn(batch, case.text_tokens, 4096, generator=generator, device=device, dtype=dtype)
    extra = {}
    if case.family == "hunyuan":
        extra = {"y": torch.randn(batch, 768, generator=generator, device=device, dtype=dtype),
                 "guidance": torch.full((batch,), 6.0, device=device, dtype=dtype)}
    schedule = torch.linspace(1.0, 0.0, args.steps + 1, device=device)
    step = args.warmup_steps  # the first sparse step of the schedule
    sigma = schedule[step].repeat(batch)
    branches = {"cond_or_uncond": [1, 0], "uuids": ["uncond", "cond"]} if batch == 2 else \
        {"cond_or_uncond": [0], "uuids": ["cond"]}
    options = {"sample_sigmas": schedule, "sigmas": sigma, **branches}

    nodes = pack.nodes
    config = pack.svg2_core.SVG2Config(top_p=args.top_p, num_q_clusters=args.q_clusters,
                                       num_k_clusters=args.k_clusters)
    schedule_settings = nodes.attention_override.Schedule(dense_warmup_steps=args.warmup_steps, dense_last_steps=0,
                                                          dense_layers=args.dense_layers, min_tokens=args.min_tokens)
    patch = nodes.sampling_patch.SVG2Patch(config, schedule_settings, args.backend, False, None)
    call = ModelCall(model, extra)
    cuda = device.type == "cuda"

    def dense_step():
        return call(x, sigma, None, context, None, dict(options))

    def sparse_step():
        return patch.apply_model_wrapper(call, x, sigma, None, context, None,
                                         {**options, "optimized_attention_override": patch.override})

    with torch.no_grad():
        dense_times = time_ms(dense_step, args.warmup_reps + args.reps, cuda)[args.warmup_reps:]
        logging.info("%s: dense step %s ms", case.name, ", ".join(f"{ms:.1f}" for ms in dense_times))
        measured = {}

        def sampling_run():
            measured["cold"] = time_ms(sparse_step, 1, cuda)[0]  # k-means from scratch
            measured["warm"] = time_ms(sparse_step, args.warmup_reps + args.reps, cuda)[args.warmup_reps:]

        # A first sampling run compiles the Triton kernels; the timed run below starts from cold centroids
        # (the library's kmeans_init_iters per layer) but with compiled kernels, as every run after the first does.
        measured["compile_run"] = time_ms(lambda: patch.outer_sample_wrapper(sparse_step), 1, cuda)[0]
        patch.outer_sample_wrapper(sparse_step)  # one cold step alone: its attention time
        cold_attention_ms = patch.last_stats["svg2_time_ms"]
        patch.outer_sample_wrapper(sampling_run)
    stats = patch.last_stats
    warm_attention_ms = (stats["svg2_time_ms"] - cold_attention_ms) / max(1, args.warmup_reps + args.reps)
    calls_per_step = stats["sparse_calls"] / max(1, 1 + args.warmup_reps + args.reps)
    dense_ms, sparse_ms = statistics.median(dense_times), statistics.median(measured["warm"])
    sparse_steps = args.steps - args.warmup_steps
    total_dense = args.steps * dense_ms
    total_svg2 = args.warmup_steps * dense_ms + sparse_steps * sparse_ms + (measured["cold"] - sparse_ms)
    tokens = case.latent[0] * (case.latent[1] // 2) * (case.latent[2] // 2)
    del model
    return {
        "case": case.name, "grid": [case.latent[0], case.latent[1] // 2, case.latent[2] // 2], "tokens": tokens,
        "text_tokens_in_the_sequence": case.text_tokens if case.family == "hunyuan" else 0,
        "heads": case.dim // 128, "layers": case.attention_layers, "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "top_p": args.top_p, "num_q_clusters": args.q_clusters, "num_k_clusters": args.k_clusters,
        "dense_layers": args.dense_layers, "backend": args.backend, "svg2_backends": stats["backends"],
        "measured_density": stats["mean_density"], "sparse_calls_per_step": calls_per_step,
        "dense_reasons": stats["dense_reasons"],
        "dense_step_ms": round(dense_ms, 2), "sparse_step_ms": round(sparse_ms, 2),
        "first_sparse_step_ms": round(measured["cold"], 2),
        "first_step_of_the_process_ms": round(measured["compile_run"], 2), "step_speedup": round(dense_ms / sparse_ms, 3),
        "svg2_attention_ms_per_step": round(stats["svg2_time_ms"] / (1 + args.warmup_reps + args.reps), 2),
        "first_sparse_attention_ms": round(cold_attention_ms, 2),
        "warm_svg2_attention_ms_per_step": round(warm_attention_ms, 2),
        "projected_speedup": {"steps": args.steps, "dense_warmup_steps": args.warmup_steps,
                              "speedup": round(total_dense / total_svg2, 3)},
    }


def parse_schedules(text: str) -> list[tuple[int, float]]:
    """"4:1,8:1,20:5" -> [(4, 1.0), (8, 1.0), (20, 5.0)]; ValueError naming a bad entry."""
    schedules = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        steps, _, cfg = entry.partition(":")
        try:
            schedules.append((int(steps), float(cfg or 1.0)))
        except ValueError:
            raise ValueError(f"--schedules entries are STEPS:CFG (e.g. 4:1), got {entry!r}") from None
        if schedules[-1][0] < 2:
            raise ValueError(f"--schedules: a schedule needs at least 2 steps, got {entry!r}")
    return schedules


def run_schedules(case: Case, schedules, pack, classes, operations, args, device, dtype) -> dict:
    """Times one dense step, the cold first sparse step and a warm sparse step per CFG batch, then totals each
    schedule: its dense warm-up steps (the node's default dense_warmup_percent on a simple / normal schedule),
    one cold sparse step and warm sparse steps for the rest."""
    rule = pack.nodes.attention_override.Schedule(-1, -1, args.dense_layers, args.min_tokens)
    by_batch = {}
    for batch in sorted({1 if cfg == 1.0 else 2 for _, cfg in schedules}):
        if case.family != "wan" and batch == 2:
            continue  # HunyuanVideo is guidance-distilled: one branch whatever the cfg
        by_batch[batch] = run_case(case, pack, classes, operations, args, device, dtype, batch=batch)
    rows = []
    for steps, cfg in schedules:
        batch = 1 if cfg == 1.0 or case.family != "wan" else 2
        step = by_batch[batch]
        dense_steps = sum(rule.phase(i, steps, None, None) == "warm-up step" for i in range(steps))
        sparse_steps = steps - dense_steps
        dense_total = steps * step["dense_step_ms"]
        svg2_total = (dense_steps * step["dense_step_ms"] + step["first_sparse_step_ms"]
                      + (sparse_steps - 1) * step["sparse_step_ms"])
        attention_total = step["first_sparse_attention_ms"] + (sparse_steps - 1) * step["warm_svg2_attention_ms_per_step"]
        rows.append({"steps": steps, "cfg": cfg, "branches": batch, "dense_warmup_percent": rule.dense_warmup_percent,
                     "dense_steps": dense_steps, "sparse_steps": sparse_steps,
                     "dense_run_ms": round(dense_total, 1), "svg2_run_ms": round(svg2_total, 1),
                     "speedup": round(dense_total / svg2_total, 3),
                     "svg2_attention_ms_of_the_sparse_steps": round(attention_total, 1)})
        logging.info("%s, %d steps cfg %g: %d dense + %d sparse (first cold): dense %.0f ms, SVG2 %.0f ms -> %.2fx",
                     case.name, steps, cfg, dense_steps, sparse_steps, dense_total, svg2_total, dense_total / svg2_total)
    return {"case": case.name, "steps_by_branches": {str(b): r for b, r in by_batch.items()}, "schedules": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI source tree (its comfy/ package)")
    parser.add_argument("--models", default="1.3b,14b", help="comma list of 1.3b, 14b, 5b, hunyuan")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized Wan and HunyuanVideo, backend torch (smoke run)")
    parser.add_argument("--top-p", type=float, default=0.3,
                        help="random weights make attention flat, so density follows top_p: 0.3 -> ~30%%")
    parser.add_argument("--q-clusters", type=int, default=300)
    parser.add_argument("--k-clusters", type=int, default=1000)
    parser.add_argument("--dense-layers", type=int, default=1)
    parser.add_argument("--backend", default="triton", choices=["auto", "triton", "torch"])
    parser.add_argument("--steps", type=int, default=50, help="steps of the projected run")
    parser.add_argument("--warmup-steps", type=int, default=10, help="dense warm-up steps of the projected run")
    parser.add_argument("--min-tokens", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--warmup-reps", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--schedules", default="",
                        help="comma list of STEPS:CFG, e.g. 4:1,8:1,20:5: per schedule, dense against SVG2 with the "
                             "node's default dense_warmup_percent, the cold first sparse step included, from steps "
                             "timed once per CFG batch (cfg 1: one branch, else two); replaces the --steps projection")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    classes, operations = import_comfyui(args.comfyui.resolve())
    pack = load_pack()
    if args.tiny:
        cases = [CASES["tiny"], CASES["tiny-48ch"], CASES["tiny-hunyuan"]]
        device, dtype = torch.device("cpu"), torch.float32
        args.q_clusters, args.k_clusters, args.min_tokens = min(args.q_clusters, 16), min(args.k_clusters, 32), 0
        args.reps, args.backend = min(args.reps, 2), "torch"
    else:
        if not torch.cuda.is_available():
            parser.error("the real-size run needs a CUDA GPU (use --tiny on CPU)")
        cases, device, dtype = [CASES[name.strip()] for name in args.models.split(",")], torch.device("cuda"), torch.bfloat16
    results = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "cases": []}
    schedules = parse_schedules(args.schedules)
    for case in cases:
        if schedules:
            results["cases"].append(run_schedules(case, schedules, pack, classes, operations, args, device, dtype))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        result = run_case(case, pack, classes, operations, args, device, dtype)
        results["cases"].append(result)
        logging.info("%s: tokens %d, density %.3f (top_p %.2f, backends %s), dense step %.1f ms, SVG2 step %.1f ms "
                     "(first %.1f ms) -> step %.2fx, projected %d steps with %d dense: %.2fx; dense calls %s",
                     result["case"], result["tokens"], result["measured_density"] or 0.0, args.top_p,
                     result["svg2_backends"], result["dense_step_ms"], result["sparse_step_ms"],
                     result["first_sparse_step_ms"], result["step_speedup"], args.steps, args.warmup_steps,
                     result["projected_speedup"]["speedup"], result["dense_reasons"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
