"""Compile a Triton launch for a GPU this machine does not have (ptxas ships with the triton wheel), as the JIT
would: the divisibility hints it gives pointers and aligned integers, constexpr defaults filled in.

`metadata.shared` of the compiled kernel is the block's shared memory; a launch whose block needs more than
the GPU class allows fails there with OutOfResources. Run without TRITON_INTERPRET (the interpreter compiles
nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from .launches import KernelLaunch

# Integer arguments the JIT sees as multiples of 16 at the fast path's shapes (strides of [B, N, H * D] views,
# 75,600 tokens); like every pointer, they get the JIT's divisibility hint, so the compiled code is the GPU's
# (vector loads, cp.async) rather than the scalar loads of an unhinted compile.
ALIGNED_INTS = ("stride", "num_tokens", "num_points")


def aligned_indices(kernel, constexprs: dict) -> list[int]:
    """Positions (in the kernel's argument list) of every pointer and aligned integer argument."""
    return [index for index, name in enumerate(kernel.arg_names)
            if name not in constexprs and (name.endswith("_ptr") or any(part in name for part in ALIGNED_INTS))]


def aligned_attrs(kernel, constexprs: dict) -> dict:
    """ASTSource attrs (triton >= 3.3): the divisibility hint on every pointer and aligned integer argument."""
    return {(index,): [["tt.divisibility", 16]] for index in aligned_indices(kernel, constexprs)}


def ast_source_arguments(kernel, signature: dict, constexprs: dict, parameters, attrs_descriptor=None) -> dict:
    """Keyword arguments of triton's ASTSource (besides fn) for one launch, in the form its version takes.

    parameters: the names ASTSource.__init__ accepts. Triton >= 3.3 takes `constexprs` (by argument name), a
    signature that marks them "constexpr", and attrs {(position,): [["tt.divisibility", 16]]}. Triton 3.2 takes
    `constants`, a signature of the other arguments only, and an AttrsDescriptor (attrs_descriptor: its class,
    triton.backends.compiler.AttrsDescriptor) built from {position: 16} hints."""
    if "constexprs" in parameters:
        return dict(signature=signature, constexprs=constexprs, attrs=aligned_attrs(kernel, constexprs))
    if "constants" not in parameters or attrs_descriptor is None:
        raise RuntimeError(f"compile check: triton {triton.__version__}'s ASTSource takes {sorted(parameters)}, "
                           "neither constexprs (triton >= 3.3) nor constants with an AttrsDescriptor (3.2)")
    hints = {index: 16 for index in aligned_indices(kernel, constexprs)}
    return dict(signature={name: kind for name, kind in signature.items() if name not in constexprs},
                constants=constexprs, attrs=attrs_descriptor.from_hints(hints))


def _ast_source(kernel, signature: dict, constexprs: dict):
    import inspect

    from triton.compiler import ASTSource

    parameters = set(inspect.signature(ASTSource.__init__).parameters)
    attrs_descriptor = None
    if "constexprs" not in parameters:
        try:
            from triton.backends.compiler import AttrsDescriptor as attrs_descriptor
        except ImportError:
            pass
    return ASTSource(fn=kernel, **ast_source_arguments(kernel, signature, constexprs, parameters, attrs_descriptor))


def compile_kernel(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None):
    """Compile one launch for sm_<capability> (e.g. 89) as the JIT would (constexpr parameters left out take
    their defaults, else they would compile as int32 arguments with both sides of every branch on them).
    Returns triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata.shared`)."""
    from triton.backends.compiler import GPUTarget

    constexprs = {**{param.name: param.default for param in getattr(kernel, "params", [])
                     if param.is_constexpr and param.has_default}, **constexprs}
    signature = KernelLaunch("", kernel, constexprs, warps, stages, pointer_types or {}).signature()
    source = _ast_source(kernel, signature, constexprs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": warps, "num_stages": stages})


def compile_launch(launch: KernelLaunch, capability: int):
    """Compile one production launch for sm_<capability>."""
    return compile_kernel(launch.kernel, launch.constexprs, launch.num_warps, launch.num_stages, capability,
                          launch.pointer_types)


@triton.jit
def _dot_probe_kernel(a_ptr, b_ptr, out_ptr, BLOCK: tl.constexpr):
    """out = a @ b for one BLOCK x BLOCK tile: the smallest kernel that takes the GPU's MMA path."""
    rows = tl.arange(0, BLOCK)[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(out_ptr + rows, tl.dot(tl.load(a_ptr + rows), tl.load(b_ptr + rows)))


def compile_probe(capability: int):
    """Compile a bf16 tensor-core dot for sm_<capability>. A Triton that does not know the architecture fails
    here (an error, or an assertion that aborts the process: run it in a process of its own)."""
    return compile_kernel(_dot_probe_kernel, dict(BLOCK=16), 1, 1, capability,
                          {"a_ptr": "*bf16", "b_ptr": "*bf16", "out_ptr": "*fp32"})


def is_mma(opcode: str) -> bool:
    """A tensor-core MMA's SASS opcode: HMMA / IMMA / QMMA (mma.sync), HGMMA / IGMMA / QGMMA (sm_90 wgmma)..."""
    return opcode.endswith("MMA")


@dataclass(frozen=True)
class LoopProfile:
    """What the GPU runs for one compiled kernel: registers per thread, stack bytes per thread (spills), and
    its hottest loop (the most MMA instructions; of equals, the one that closes first: an inner loop, or the
    first-tile max's loop before its fallback): instructions per iteration and their opcodes.
    Where the tensor cores outpace issue (an H100 running sm_8x code), time follows the instruction count;
    where the MMA rate bounds the loop (GeForce fp32 accumulation), it follows the MMA count."""

    registers: int
    stack_bytes: int
    loop_instructions: int
    loop_opcodes: dict

    def mma_counts(self) -> dict:
        return {op: count for op, count in self.loop_opcodes.items() if is_mma(op)}

    def describe(self) -> str:
        mma = ", ".join(f"{count} {op}" for op, count in self.mma_counts().items())
        return (f"{self.registers} registers, {self.stack_bytes} B stack; hottest loop {self.loop_instructions} "
                f"instructions per iteration ({mma or 'no MMA'})")


def cuobjdump() -> str | None:
    """The cuobjdump that ships with the triton wheel (or one on PATH), None when there is none."""
    import shutil
    from pathlib import Path

    for name in ("cuobjdump", "cuobjdump.exe"):
        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if bundled.exists():
            return str(bundled)
    return shutil.which("cuobjdump")


def parse_loop_profile(sass: str, resource_usage: str) -> LoopProfile:
    """LoopProfile from `cuobjdump -sass` and `cuobjdump -res-usage` text of one kernel: loops are the spans
    from a backward branch's target to the branch (an iteration's instructions, whichever paths it takes)."""
    import collections
    import re

    registers = re.search(r"REG:(\d+)", resource_usage)
    stack = re.search(r"STACK:(\d+)", resource_usage)
    instructions = [(int(address, 16), text.strip())
                    for address, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    position = {address: index for index, (address, _) in enumerate(instructions)}
    best = None
    for index, (address, text) in enumerate(instructions):
        branch = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        target = int(branch.group(1), 16) if branch else None
        if target is None or target >= address or target not in position:
            continue
        body = instructions[position[target]:index + 1]
        opcodes = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", line).split()[0].split(".")[0]
                                      for _, line in body)
        mma = sum(count for op, count in opcodes.items() if is_mma(op))
        if best is None or mma > best[0]:  # ties: the loop that closes first (an inner loop, the main loop)
            best = (mma, len(body), opcodes)
    _, length, opcodes = best if best else (None, 0, collections.Counter())
    return LoopProfile(int(registers.group(1)) if registers else 0, int(stack.group(1)) if stack else 0, length,
                       dict(opcodes.most_common()))


def loop_profile(compiled) -> LoopProfile:
    """LoopProfile of a compiled kernel (`compile_kernel` / `compile_launch`), read with cuobjdump."""
    import subprocess
    import tempfile
    from pathlib import Path

    tool = cuobjdump()
    if tool is None:
        raise RuntimeError("no cuobjdump: neither the triton wheel (backends/nvidia/bin) nor PATH has one")
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass, usage = (subprocess.run([tool, flag, str(cubin)], capture_output=True, text=True, check=True).stdout
                       for flag in ("-sass", "-res-usage"))
    return parse_loop_profile(sass, usage)
