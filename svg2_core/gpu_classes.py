"""GPU classes: what the fast path's tile choices depend on, per NVIDIA compute capability.

A class carries the compute capability, the shared memory one block may use (opt-in), the SM count, whether the
tensor cores take fp8 operands, and whether an fp16 MMA that accumulates in fp16 runs at twice the rate of one
accumulating in fp32 (GeForce cards of the classes 8.6, 8.9 and 12.0; a forced class acts as a GeForce card).
`gpu_class(device)` reads it from the device once per device; `SVG2_GPU_CLASS=8.9` (or the bench's / doctor's
`--gpu-class`, `--arch`) makes tile selection act as that class on any GPU. Kernels choose tiles by
`tile_family`: "large" (sm_80, sm_90, sm_100: the tiles measured on the H200), "consumer" (101,376 B of shared
memory: sm_86, sm_89, sm_120) or "small" (any class with less; also what a launch that ran out of resources is
retried with).

Imports neither Triton nor a GPU driver.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

ENV_VAR = "SVG2_GPU_CLASS"

# shared memory per block (opt-in) of the classes with tuned tables
HOPPER_SHARED = 232_448
AMPERE_SHARED = 166_912
CONSUMER_SHARED = 101_376


@dataclass(frozen=True)
class GpuClass:
    """capability: 89 for compute capability 8.9; shared_memory: bytes one block may use (opt-in);
    fp8_dots: float8 e4m3 tensor-core dots; fp16_accumulate_double_rate: an fp16 MMA accumulating in fp16 runs
    at twice the fp32-accumulate rate; sm_count: the device's SMs (0 for a class named without a device);
    tuned: its tiles come from a measured table (else derived from its shared memory)."""

    capability: int
    name: str
    examples: str
    shared_memory: int
    fp8_dots: bool
    fp16_accumulate_double_rate: bool
    sm_count: int = 0
    tuned: bool = True

    @property
    def arch(self) -> str:
        """"8.9"."""
        return f"{self.capability // 10}.{self.capability % 10}"

    @property
    def tile_family(self) -> str:
        """"large", "consumer" or "small": which table of tiles a kernel takes for this class."""
        # the large tiles need up to 229,920 B where the compiler uses wgmma / tcgen05 (sm_90 and newer),
        # 163,840 B with mma.sync (sm_8x)
        if self.shared_memory >= HOPPER_SHARED or (self.capability < 90 and self.shared_memory >= AMPERE_SHARED):
            return "large"
        if self.shared_memory >= CONSUMER_SHARED:
            return "consumer"
        return "small"

    def describe(self) -> str:
        """"sm_89 (Ada: RTX 4060-4090, L4, L40S), 101,376 B shared memory per block, 128 SMs, fp8 dots"."""
        parts = [f"{self.shared_memory:,} B shared memory per block"]
        if self.sm_count:
            parts.append(f"{self.sm_count} SMs")
        parts.append("fp8 dots" if self.fp8_dots else "no fp8 dots")
        if self.fp16_accumulate_double_rate:
            parts.append("double-rate fp16-accumulate MMA")
        tiles = f"{self.tile_family} tiles" + ("" if self.tuned else ", derived from its shared memory")
        return f"sm_{self.capability} ({self.name}: {self.examples}), {', '.join(parts)}; {tiles}"


CLASSES = {cls.capability: cls for cls in (
    GpuClass(80, "Ampere datacenter", "A100, A30", AMPERE_SHARED, False, False),
    GpuClass(86, "Ampere consumer", "RTX 3060-3090, A40, A6000", CONSUMER_SHARED, False, True),
    GpuClass(89, "Ada", "RTX 4060-4090, L4, L40S, RTX 6000 Ada", CONSUMER_SHARED, True, True),
    GpuClass(90, "Hopper", "H100, H200, GH200", HOPPER_SHARED, True, False),
    GpuClass(100, "Blackwell datacenter", "B200, GB200", HOPPER_SHARED, True, False),
    GpuClass(120, "Blackwell consumer", "RTX 5070-5090, RTX PRO 6000 Blackwell", CONSUMER_SHARED, True, True),
)}
# the class a machine without a GPU acts as (the tables measured on the H100 / H200)
DEFAULT_CAPABILITY = 90


def parse_arch(text: str) -> int:
    """"8.9", "89", "sm_89" or "sm89" -> 89. Raises ValueError naming the value and the form allowed."""
    value = str(text).strip().lower().removeprefix("sm_").removeprefix("sm")
    major, dot, minor = value.partition(".")
    try:
        capability = int(major) * 10 + int(minor) if dot else int(value)
    except ValueError:
        raise ValueError(f"GPU class {text!r} is not a compute capability; use e.g. 8.6, 8.9, 9.0 or 12.0 "
                         f"(tuned: {', '.join(cls.arch for cls in CLASSES.values())})") from None
    if dot and not 0 <= int(minor) <= 9 or capability < 80:
        raise ValueError(f"GPU class {text!r}: the fast path needs compute capability 8.0 or newer (e.g. 8.6, "
                         "8.9, 9.0, 12.0)")
    return capability


def class_for(capability: int, shared_memory: int | None = None, sm_count: int = 0) -> GpuClass:
    """The class of compute capability `capability` (89 for 8.9): its table's entry, or (another capability,
    or a device whose shared memory differs from its table's) one derived from `shared_memory` (default:
    that of the nearest tuned class below)."""
    known = CLASSES.get(capability)
    if known is not None and shared_memory in (None, known.shared_memory):
        return replace(known, sm_count=sm_count)
    if shared_memory is None:
        below = [cls for cls in CLASSES.values() if cls.capability <= capability]
        shared_memory = max(below, key=lambda cls: cls.capability).shared_memory
    return GpuClass(capability, known.name if known else "derived", known.examples if known else "other GPUs",
                    shared_memory, fp8_dots=capability >= 89, fp16_accumulate_double_rate=False,
                    sm_count=sm_count, tuned=False)


def forced_class() -> GpuClass | None:
    """The class SVG2_GPU_CLASS names ("8.9"), or None when it is unset or empty."""
    text = os.environ.get(ENV_VAR, "").strip()
    return class_for(parse_arch(text)) if text else None


_DETECTED: dict[int, GpuClass] = {}


def halves_fp32_accumulate(device_name: str) -> bool:
    """Whether a card of a GeForce class runs the fp32-accumulate MMA at half the fp16-accumulate rate: GeForce
    cards do; the workstation and datacenter cards of the same chips (RTX A6000, L40S, RTX 6000 Ada, RTX PRO
    Blackwell) run both at one rate, where fp16 accumulation only adds its conversions."""
    return "geforce" in device_name.lower()


def detect(index: int) -> GpuClass:
    """The class of CUDA device `index` from its properties (read once per device)."""
    if index not in _DETECTED:
        props = torch.cuda.get_device_properties(index)
        shared = getattr(props, "shared_memory_per_block_optin", 0) or None
        found = class_for(props.major * 10 + props.minor, shared, props.multi_processor_count)
        if found.fp16_accumulate_double_rate and not halves_fp32_accumulate(props.name):
            found = replace(found, fp16_accumulate_double_rate=False)
        _DETECTED[index] = found
    return _DETECTED[index]


def gpu_class(device: torch.device | str | None = None) -> GpuClass:
    """The class tile selection acts as for `device`: SVG2_GPU_CLASS when set (with the device's SM count),
    else the CUDA device's own class; a CPU device or a machine without a GPU acts as sm_90."""
    forced = forced_class()
    device = torch.device(device) if device is not None else None
    cuda = (device is None or device.type == "cuda") and torch.cuda.is_available()
    if cuda:
        index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
        detected = detect(index)
        return replace(forced, sm_count=detected.sm_count) if forced else detected
    return forced or CLASSES[DEFAULT_CAPABILITY]
