"""Compile a Triton launch for a GPU this machine does not have (ptxas ships with the triton wheel), as the JIT
would: the divisibility hints it gives pointers and aligned integers, constexpr defaults filled in.

`metadata.shared` of the compiled kernel is the block's shared memory; a launch whose block needs more than
the GPU class allows fails there with OutOfResources. Run without TRITON_INTERPRET (the interpreter compiles
nothing).
"""
from __future__ import annotations

import triton

from .launches import KernelLaunch

# Integer arguments the JIT sees as multiples of 16 at the fast path's shapes (strides of [B, N, H * D] views,
# 75,600 tokens); like every pointer, they get the JIT's divisibility hint, so the compiled code is the GPU's
# (vector loads, cp.async) rather than the scalar loads of an unhinted compile.
ALIGNED_INTS = ("stride", "num_tokens", "num_points")


def aligned_attrs(kernel, constexprs: dict) -> dict:
    """ASTSource attrs: the divisibility hint on every pointer and aligned integer argument."""
    return {(index,): [["tt.divisibility", 16]] for index, name in enumerate(kernel.arg_names)
            if name not in constexprs and (name.endswith("_ptr") or any(part in name for part in ALIGNED_INTS))}


def compile_kernel(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None):
    """Compile one launch for sm_<capability> (e.g. 89) as the JIT would (constexpr parameters left out take
    their defaults, else they would compile as int32 arguments with both sides of every branch on them).
    Returns triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata.shared`)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {**{param.name: param.default for param in getattr(kernel, "params", [])
                     if param.is_constexpr and param.has_default}, **constexprs}
    signature = KernelLaunch("", kernel, constexprs, warps, stages, pointer_types or {}).signature()
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned_attrs(kernel, constexprs))
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": warps, "num_stages": stages})


def compile_launch(launch: KernelLaunch, capability: int):
    """Compile one production launch for sm_<capability>."""
    return compile_kernel(launch.kernel, launch.constexprs, launch.num_warps, launch.num_stages, capability,
                          launch.pointer_types)
