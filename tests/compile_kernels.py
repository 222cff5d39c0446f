"""Compile every production Triton launch for real GPUs without one (ptxas ships with the triton wheel).

The CPU interpreter runs kernels as Python, so it accepts things the compiler refuses (a plain global read
inside a kernel, a type mismatch across a loop). This compiles each launch of
`svg2_core.triton_kernels.launches.production_launches()` for Hopper (sm_90), and those whose code depends on
the GPU's tensor cores and shared memory (attention, assignment) also for Ampere (sm_80); it prints one line
per launch. Run without TRITON_INTERPRET:

    python tests/compile_kernels.py          # exit status 1 and the compiler's message on a failure
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("unset TRITON_INTERPRET: the interpreter does not compile kernels")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from svg2_core.triton_kernels.launches import KernelLaunch, production_launches  # noqa: E402

# Integer arguments the JIT sees as multiples of 16 at the fast path's shapes (strides of [B, N, H * D] views,
# 75,600 tokens); like every pointer, they get the JIT's divisibility hint, so the compiled code is the GPU's
# (vector loads, cp.async) rather than the scalar loads of an unhinted compile.
ALIGNED_INTS = ("stride", "num_tokens", "num_points")
# Shared memory a block may use: sm_90 227 KiB, sm_80 163 KiB (a launch above it fails with OutOfResources).
SHARED_LIMIT = {90: 232448, 80: 166912}


def aligned_attrs(kernel, constexprs: dict) -> dict:
    """ASTSource attrs: the divisibility hint on every pointer and aligned integer argument."""
    return {(index,): [["tt.divisibility", 16]] for index, name in enumerate(kernel.arg_names)
            if name not in constexprs and (name.endswith("_ptr") or any(part in name for part in ALIGNED_INTS))}


def compile_kernel(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None):
    """Compile one launch for sm_<capability> as the JIT would (divisibility hints; constexpr parameters left
    out take their defaults, else they would compile as int32 arguments with both sides of every branch on
    them). Returns triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata.shared`)."""
    constexprs = {**{param.name: param.default for param in getattr(kernel, "params", [])
                     if param.is_constexpr and param.has_default}, **constexprs}
    signature = KernelLaunch("", kernel, constexprs, warps, stages, pointer_types or {}).signature()
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned_attrs(kernel, constexprs))
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": warps, "num_stages": stages})


def compile_launch(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None) -> int:
    """Compile one launch for sm_<capability>; returns its shared memory in bytes. Raises the compiler's error,
    or RuntimeError when the block needs more shared memory than the GPU gives one."""
    compiled = compile_kernel(kernel, constexprs, warps, stages, capability, pointer_types)
    shared = compiled.metadata.shared
    if shared > SHARED_LIMIT[capability]:
        raise RuntimeError(f"{shared} B of shared memory, over the {SHARED_LIMIT[capability]} B a block may use")
    return shared


def checked_launches() -> list[tuple[int, KernelLaunch]]:
    """(capability, launch): every production launch for sm_90, the tensor-core ones again for sm_80."""
    launches = production_launches()
    return [(90, launch) for launch in launches] + [
        (80, launch) for launch in launches if launch.tensor_cores and launch.min_capability <= 80]


def _check(index: int) -> str:
    capability, launch = checked_launches()[index]
    label = f"sm_{capability} {launch.name}"
    try:
        shared = compile_launch(launch.kernel, launch.constexprs, launch.num_warps, launch.num_stages, capability,
                                launch.pointer_types)
        return f"ok   {label}: {shared} B shared"
    except Exception as error:  # report every launch, then fail
        return f"FAIL {label}: {type(error).__name__}: {error}"


def main() -> int:
    count = len(checked_launches())
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        lines = list(pool.map(_check, range(count)))
    for line in lines:
        print(line, flush=True)
    print(f"{count} launches checked")
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
