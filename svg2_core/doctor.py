"""`python -m svg2_core.doctor`: can SVG2's fast path run here, and with which tiles.

    python -m svg2_core.doctor               # this machine's GPU: class, versions, tiles per kernel at the
                                             # model shapes, a compile of each, one sparse call against dense
    python -m svg2_core.doctor --arch 8.9    # any machine: every launch the fast path makes on that GPU
                                             # class (and the smaller tiles it retries with), compiled with
                                             # the Triton wheel's ptxas at the class's shared-memory limit

With --arch (one or more classes: 8.0 8.6 8.9 9.0 10.0 12.0, or any other capability >= 8.0): one line per
launch, `ok` or `over` (needs more shared memory than the class gives a block) or `FAIL` (the compiler's error),
with the kernel, its tiles, its shared bytes and the limit; exit status 1 when any launch fails or does not fit.
On 8.6 / 8.9 / 12.0 the attention is compiled with both P V accumulations (fp16 on GeForce cards, fp32 on the
others). --sass adds, per tensor-core launch, its registers, stack (spill) bytes and the instructions and MMAs
of its hottest loop: what to compare when tuning a class's tiles without its GPU. A class that the installed
Triton cannot compile for at all (an architecture newer than it knows) is named as not supported by this Triton
and its launches are skipped (exit status 1). Without a GPU and without --arch it says so and exits with status
2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

PROGRAM = "python -m svg2_core.doctor"


def _launches(capability: int, shared_memory: int | None, retry: bool):
    from .gpu_classes import class_for
    from .triton_kernels.launches import production_launches

    gpu_class = class_for(capability, shared_memory)
    if not retry:
        return gpu_class, production_launches(gpu_class)
    # the out-of-resources retry: the launches whose tiles change (attention, row table, key plan, assign)
    return gpu_class, [launch for launch in production_launches(gpu_class, smallest=True)
                       if launch.name.startswith(RETRY_LAUNCHES)]


# the MMA of an fp16 product accumulated in fp16 (sm_8x / sm_120), what a P V in fp16 must compile to
FP16_ACCUMULATE_MMA = "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16"
# the launches whose tiles the out-of-resources retry changes
RETRY_LAUNCHES = ("attention ", "row table ", "key plan ", "assign hd")


def _check(job: tuple) -> tuple[str, int | None, str]:
    """One launch of one class compiled: (name, shared bytes or None when it failed, its report line)."""
    capability, shared_memory, retry, index, sass = job
    from .triton_kernels.compile_check import compile_launch, loop_profile

    gpu_class, launches = _launches(capability, shared_memory, retry)
    launch = launches[index]
    name = f"{'retry ' if retry else ''}{launch.name}"
    label = f"sm_{capability} {name}"
    limit = gpu_class.shared_memory
    try:
        compiled = compile_launch(launch, capability)
        shared = compiled.metadata.shared
    except Exception as error:  # report every launch, then fail
        message = str(error).strip().splitlines()
        return name, None, f"FAIL {label}: {type(error).__name__}: {message[0] if message else ''}"
    if launch.constexprs.get("PV_FP16") and FP16_ACCUMULATE_MMA not in compiled.asm["ptx"]:
        return name, None, f"FAIL {label}: P V should accumulate in fp16, the PTX has no {FP16_ACCUMULATE_MMA}"
    status = "ok  " if shared <= limit else "over"
    line = f"{status} {label}: {shared:,} B shared of {limit:,} B"
    if sass and launch.tensor_cores:
        try:
            line += f"; {loop_profile(compiled).describe()}"
        except Exception as error:  # the compile is what the check is about
            line += f"; no SASS profile ({type(error).__name__}: {error})"
    return name, shared, line


def triton_supports(capability: int) -> str | None:
    """None when the installed Triton compiles a tensor-core dot for sm_<capability>, else why not (its first
    error line). The probe runs in a process of its own: an old Triton aborts on an architecture it does not
    know."""
    import subprocess
    from pathlib import Path

    package = Path(__file__).resolve().parent
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    probe = (f"from {package.name}.triton_kernels.compile_check import compile_probe; "
             f"compile_probe({int(capability)})")
    result = subprocess.run([sys.executable, "-c", probe], cwd=package.parent, env=env, capture_output=True,
                            text=True)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def first_tile_max_note() -> str | None:
    """The line that says int8 scores run the online softmax, when the installed Triton is older than the
    first-tile max needs."""
    import triton

    from .triton_kernels.attention import FIRST_TILE_MAX_TRITON, first_tile_max_compiles
    if first_tile_max_compiles():
        return None
    return (f"Triton {triton.__version__}: int8 scores run the online softmax (the first-tile-max loop needs "
            f"Triton >= {'.'.join(map(str, FIRST_TILE_MAX_TRITON))})")


def check_classes(capabilities: list[int], shared_memory: int | None = None, workers: int = 2,
                  out=sys.stdout, record: str | None = None, sass: bool = False) -> int:
    """Compile every launch of each class (and of its retry tiles) and print one line each; 1 when any fails or
    does not fit, or when the installed Triton does not support a class, else 0. record: a JSON file that gets
    each class's shared bytes per launch (what the compile-free tests check tile choices against). sass: each
    tensor-core launch's line also gives its registers, stack bytes and hottest loop's instructions and MMAs
    (`compile_check.LoopProfile`)."""
    import triton

    from .gpu_classes import class_for

    note = first_tile_max_note()
    if note:
        print(note, file=out, flush=True)
    jobs, unsupported = [], []
    for capability in capabilities:
        print(class_for(capability, shared_memory).describe(), file=out, flush=True)
        reason = triton_supports(capability)
        if reason:
            unsupported.append(capability)
            print(f"  not supported by this Triton ({triton.__version__}): a dot for sm_{capability} does not "
                  f"compile ({reason[:200]}); its launches are skipped", file=out, flush=True)
            continue
        for retry in (False, True):
            count = len(_launches(capability, shared_memory, retry)[1])
            jobs += [(capability, shared_memory, retry, index, sass) for index in range(count)]
    start = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_check, jobs))
    else:
        results = [_check(job) for job in jobs]
    lines = [line for _, _, line in results]
    if record:
        _record(record, [(job[0], name, shared) for job, (name, shared, _) in zip(jobs, results)])
    for line in lines:
        print(line, file=out)
    failed = [line for line in lines if not line.startswith("ok")]
    compiled = [c for c in capabilities if c not in unsupported]
    print(f"{len(lines)} launches compiled for {', '.join(f'sm_{c}' for c in compiled) or 'no class'} in "
          f"{time.perf_counter() - start:.0f} s: {len(lines) - len(failed)} ok, {len(failed)} over the limit or "
          "failed" + (f"; not supported by Triton {triton.__version__}: "
                      f"{', '.join(f'sm_{c}' for c in unsupported)}" if unsupported else ""), file=out, flush=True)
    return 1 if failed or unsupported else 0


def _record(path: str, measured: list[tuple[int, str, int | None]]) -> None:
    import json
    from pathlib import Path

    file = Path(path)
    table = json.loads(file.read_text()) if file.exists() else {}
    for capability in {capability for capability, _, _ in measured}:
        table[f"sm_{capability}"] = {}
    for capability, name, shared in measured:
        if shared is not None:
            table[f"sm_{capability}"][name] = shared
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")


def _versions() -> str:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except Exception as error:  # noqa: BLE001 (a broken Triton is what the doctor reports)
        triton_version = f"not importable ({type(error).__name__}: {error})"
    return f"torch {torch.__version__}, Triton {triton_version}, Python {sys.version.split()[0]}"


def check_this_gpu(out=sys.stdout) -> int:
    """The GPU of this machine: class, versions, tiles at the model shapes, a compile of each launch for it,
    one sparse call against dense attention. 0 when everything works, 1 otherwise."""
    import torch

    from .gpu_classes import ENV_VAR, gpu_class

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    print(f"GPU: {props.name}, compute capability {props.major}.{props.minor}, "
          f"{getattr(props, 'shared_memory_per_block_optin', 0):,} B shared memory per block, "
          f"{props.multi_processor_count} SMs, {props.total_memory / 2 ** 30:.1f} GiB", file=out)
    print(_versions(), file=out)
    cls = gpu_class(device)
    forced = os.environ.get(ENV_VAR)
    print(f"tiles act as {cls.describe()}" + (f" ({ENV_VAR}={forced})" if forced else ""), file=out)
    note = first_tile_max_note()
    if note:
        print(note, file=out)
    if props.major < 8:
        print("the fast path needs compute capability 8.0 or newer: SVG2 serves calls with the model's attention",
              file=out)
        return 1
    from .synthetic import MODEL_SHAPES
    from .triton_kernels.attention import class_config
    from .triton_kernels.kmeans import assign_tiles

    for name, (_, heads, grid, head_dim, _) in MODEL_SHAPES.items():
        if name in ("tiny", "small"):
            continue
        tokens = math.prod(grid)
        for qk_int8 in (False, True):
            config = class_config(head_dim, qk_int8, cls)
            print(f"  {name} ({heads} heads x {tokens} tokens x {head_dim}), {'int8' if qk_int8 else 'bf16'} "
                  f"scores: attention {config.describe()}; P V accumulates in "
                  f"{'fp16 per key tile' if config.pv_fp16_accumulate else 'fp32'}", file=out)
    print(f"  k-means assignment autotunes over {len(assign_tiles(cls))} tiles "
          f"({'fp8' if cls.fp8_dots else 'bf16'} operands)", file=out, flush=True)
    status = 0
    try:
        from .triton_kernels.compile_check import compile_launch
        from .triton_kernels.launches import production_launches
        for launch in production_launches(cls):
            start = time.perf_counter()
            try:
                shared = compile_launch(launch, props.major * 10 + props.minor).metadata.shared
                fits = shared <= cls.shared_memory
                status |= 0 if fits else 1
                print(f"{'ok  ' if fits else 'over'} {launch.name}: {shared:,} B shared of {cls.shared_memory:,} B, "
                      f"compiled in {time.perf_counter() - start:.1f} s", file=out, flush=True)
            except Exception as error:  # noqa: BLE001 (report every launch)
                status = 1
                print(f"FAIL {launch.name}: {type(error).__name__}: {str(error).strip()[:300]}", file=out, flush=True)
    except Exception as error:  # noqa: BLE001
        print(f"FAIL the compile check cannot run: {type(error).__name__}: {error}", file=out)
        return 1
    return status | sparse_call_check(device, out)


def sparse_call_check(device, out=sys.stdout) -> int:
    """One small SVG2 call on the fast path (backend="triton") against dense attention in fp32: its error and
    time. 0 when it runs and its error is that of a sparse call (under 0.1 at top_p 0.98), else 1."""
    import torch

    from .api import svg2_attention
    from .config import SVG2Config
    from .synthetic import structured_qkv

    q, k, v = structured_qkv(1, 4, (4, 16, 32), 128, device=device, dtype=torch.bfloat16)
    config = SVG2Config(top_p=0.98, num_q_clusters=32, num_k_clusters=64, kmeans_init_iters=10)
    try:
        svg2_attention(q, k, v, config, backend="triton")  # compiles
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        out_sparse = svg2_attention(q, k, v, config, backend="triton")
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001
        print(f"FAIL sparse call: {type(error).__name__}: {error}", file=out)
        return 1
    dense = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    error = float((out_sparse.float() - dense).norm() / dense.norm())
    ok = error < 0.1
    print(f"{'ok  ' if ok else 'FAIL'} sparse call [1, 4, {q.shape[2]}, 128] bf16 against fp32 dense attention: "
          f"relative error {error:.4f}, {elapsed * 1e3:.1f} ms", file=out)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", metavar="CAPABILITY",
                        help="compile every launch for these GPU classes (e.g. 8.6 8.9 12.0) with the Triton "
                             "wheel's ptxas, on any machine")
    parser.add_argument("--shared-memory", type=int, default=None, metavar="BYTES",
                        help="with --arch: the shared memory per block to act as (default: the class's)")
    parser.add_argument("--record", metavar="JSON",
                        help="with --arch: also write each launch's shared bytes per class to this file (the "
                             "tests' tests/data/launch_shared_memory.json)")
    parser.add_argument("--sass", action="store_true",
                        help="with --arch: also give each tensor-core launch's registers, stack bytes and the "
                             "instructions and MMAs of its hottest loop (read with the wheel's cuobjdump)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="compiles at once (default: 2, or 1 on one core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.arch:
        if os.environ.get("TRITON_INTERPRET") == "1":
            print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
            return 1
        from .gpu_classes import parse_arch
        try:
            capabilities = [parse_arch(arch) for arch in args.arch]
        except ValueError as error:
            print(f"{PROGRAM}: {error}", file=sys.stderr)
            return 2
        return check_classes(capabilities, args.shared_memory, max(1, args.workers), record=args.record,
                             sass=args.sass)
    import torch
    if not torch.cuda.is_available():
        print(f"No CUDA GPU is visible here ({_versions()}), so SVG2's fast path cannot run on this machine. "
              f"To check what a GPU class would compile, run `{PROGRAM} --arch 8.9` (any of 8.0 8.6 8.9 9.0 "
              "10.0 12.0).")
        return 2
    return check_this_gpu()


if __name__ == "__main__":
    raise SystemExit(main())
