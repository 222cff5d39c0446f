"""Backends that run the two heavy stages of SVG2: k-means and the variable-block sparse attention.

`torch` is the reference and runs anywhere; `triton` is the fast path (svg2_core.triton_backend).
Both take points / q, k, v as `[G, N, D]` with G = batch x heads and a `ClusterPlan` (below).
A backend's `unsupported_reason(q)` returns why it cannot serve a call, or None.

The fast path never fails a caller with Triton's own exceptions: anything raised while the Triton backend
compiles or launches a kernel (resources, compiler, driver, a broken install) comes out as a
`FastPathError` naming the stage, the device and the cause (`FastPathOutOfResources` when the tiles did
not fit, the place to retry with smaller tiles). A failed import of the backend is remembered, not retried.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from .attention_torch import block_sparse_attention_torch
from .kmeans import KMeansResult, kmeans_torch
from .problems import flat_problems
from .quantize import quantize_dequantize_qk
from .layout import attention_density, block_mask_with_dense, block_sizes_with_dense, cluster_order
from .selection import select_blocks

log = logging.getLogger("svg2")

BACKEND_NAMES = ("auto", "triton", "torch")


@dataclass
class ClusterPlan:
    """What the sparse attention needs, before any permutation (G = batch x heads, Nc clustered tokens).

    q_labels, k_labels: [G, Nc] int32; q_cluster_sizes: [G, Cq] int32; k_cluster_sizes: [G, Ck] int32;
    block_mask: [G, Cq, Ck] bool; the first dense_prefix and last dense_suffix tokens are not clustered.
    q_label_sort, k_label_sort: the k-means' last label sorts ([G * Nc] int32, `KMeansResult.label_sort`),
    which the fast path's plan reuses; None: the plan sorts the labels itself.
    """

    q_labels: torch.Tensor
    k_labels: torch.Tensor
    q_cluster_sizes: torch.Tensor
    k_cluster_sizes: torch.Tensor
    block_mask: torch.Tensor
    dense_prefix: int
    dense_suffix: int
    q_label_sort: torch.Tensor | None = None
    k_label_sort: torch.Tensor | None = None

    def density(self) -> torch.Tensor:
        """Fraction of the N x N attention map this plan computes, dense tokens included: [G] fp32."""
        return attention_density(block_sizes_with_dense(self.q_cluster_sizes, self.dense_prefix, self.dense_suffix),
                                 block_sizes_with_dense(self.k_cluster_sizes, self.dense_prefix, self.dense_suffix),
                                 block_mask_with_dense(self.block_mask))


class Backend(Protocol):
    name: str

    def unsupported_reason(self, q: torch.Tensor) -> str | None: ...

    def kmeans(self, points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
        """points: [G, N, D] or [B, H, N, D] -> labels [G, N], centroids [G, C, D], sizes [G, C]."""

    def cluster(self, q_points: torch.Tensor, q_init: torch.Tensor, k_points: torch.Tensor, k_init: torch.Tensor,
                iterations: int, overlap: bool = False) -> tuple[KMeansResult, KMeansResult]:
        """k-means of q_points and of k_points ([G, Nc, D] or [B, H, Nc, D]) from q_init [G, Cq, D] and k_init
        [G, Ck, D]; overlap: the backend may run the two concurrently (warm calls)."""

    def select_blocks(self, q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                      top_p: float, min_kept: int, scale: float) -> torch.Tensor:
        """[G, Cq, D], [G, Ck, D], [G, Ck] -> block_mask [G, Cq, Ck] bool (svg2_core.selection's rule)."""

    def sparse_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: ClusterPlan,
                         scale: float, qk_int8: bool = False) -> torch.Tensor:
        """q, k, v: [G, N, D] or [B, H, N, D] in original order -> out in q's shape and dtype.
        qk_int8: scores from int8 codes of q and k (svg2_core.quantize)."""


class TorchBackend:
    """The reference: exact, any device, O(N^2 / chunk) memory."""

    name = "torch"

    def unsupported_reason(self, q: torch.Tensor) -> str | None:
        return None

    def kmeans(self, points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
        """points: [G, N, D] or [B, H, N, D]; init_centroids: [G, C, D]."""
        return kmeans_torch(flat_problems(points), init_centroids, iterations)

    def cluster(self, q_points: torch.Tensor, q_init: torch.Tensor, k_points: torch.Tensor, k_init: torch.Tensor,
                iterations: int, overlap: bool = False) -> tuple[KMeansResult, KMeansResult]:
        """One k-means after the other."""
        return self.kmeans(q_points, q_init, iterations), self.kmeans(k_points, k_init, iterations)

    def select_blocks(self, q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                      top_p: float, min_kept: int, scale: float) -> torch.Tensor:
        """block_mask [G, Cq, Ck] bool from centroids [G, Cq, D], [G, Ck, D] and key cluster sizes [G, Ck]."""
        return select_blocks(q_centroids, k_centroids, k_cluster_sizes, top_p, min_kept, scale)

    def sparse_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: ClusterPlan,
                         scale: float, qk_int8: bool = False) -> torch.Tensor:
        """q, k, v: [G, N, D] or [B, H, N, D] in original order; returns q's shape in q's dtype, original order.
        qk_int8: q and k replaced by their int8 codes x scales first, in fp32 (what the Triton kernel computes)."""
        shape, dtype = q.shape, q.dtype
        q, k, v = flat_problems(q), flat_problems(k), flat_problems(v)
        if qk_int8:
            q, k = quantize_dequantize_qk(q, k)
        head_dim = q.shape[-1]
        q_order = cluster_order(plan.q_labels, plan.dense_prefix, plan.dense_suffix)
        k_order = cluster_order(plan.k_labels, plan.dense_prefix, plan.dense_suffix)
        gather_q = q_order.unsqueeze(-1).expand(-1, -1, head_dim)
        gather_k = k_order.unsqueeze(-1).expand(-1, -1, head_dim)
        out_permuted = block_sparse_attention_torch(
            q.gather(1, gather_q), k.gather(1, gather_k), v.gather(1, gather_k),
            block_sizes_with_dense(plan.q_cluster_sizes, plan.dense_prefix, plan.dense_suffix),
            block_sizes_with_dense(plan.k_cluster_sizes, plan.dense_prefix, plan.dense_suffix),
            block_mask_with_dense(plan.block_mask), scale)
        out = torch.empty_like(out_permuted).scatter_(1, gather_q, out_permuted)
        return out.to(dtype).view(shape)


_BACKENDS: dict[str, Backend] = {"torch": TorchBackend()}
# why the Triton backend could not be imported; set once, never retried in this process
_import_failure: str | None = None

INSTALL_HINT = ("install the Triton build that matches your torch (Linux: `pip install triton`; Windows: "
                "`pip install \"triton-windows<3.5\"` for torch 2.8, the newest for later torch) and restart")
_HINTS = {
    "out of resources": "the kernel's tiles need more shared memory or registers than this GPU has; update "
                        "ComfyUI-SVG2 and report the GPU model if it persists",
    "compiler": "Triton compiles its kernels on first use and needs a C compiler (gcc or clang; MSVC build "
                "tools on Windows) and a Triton that matches torch; check `python -c \"import triton\"` and the "
                "error above",
    "out of memory": "the GPU ran out of memory inside the fast path; lower num_q_clusters / num_k_clusters, the "
                     "resolution or the frame count",
    "error": "report it with this log line",
}


class FastPathError(RuntimeError):
    """The Triton fast path failed while compiling or launching a kernel.

    stage: what ran ("k-means", "block selection", "sparse attention"); device: the GPU (name and
    capability) or "CPU (Triton interpreter)"; cause: the original exception (also `__cause__`);
    kind: "out of resources", "compiler", "out of memory" or "error"; persistent: the same call would fail
    again (everything but running out of memory); hint: what the user can do.
    """

    def __init__(self, stage: str, device: str, cause: BaseException) -> None:
        self.stage, self.device, self.cause = stage, device, cause
        self.kind = failure_kind(cause)
        self.persistent = self.kind != "out of memory"
        self.hint = _HINTS[self.kind]
        super().__init__(f"SVG2's Triton fast path failed in {stage} on {device}: {self.reason}. What to do: "
                         f"{self.hint}")

    @property
    def reason(self) -> str:
        """`<exception type>: <first line of its message>` (short, for stats and logs)."""
        message = str(self.cause).strip().splitlines()
        first = message[0] if message else ""
        if len(first) > 200:
            first = first[:197] + "..."
        return f"{type(self.cause).__name__}: {first}" if first else type(self.cause).__name__


class FastPathOutOfResources(FastPathError):
    """A kernel's tiles did not fit the GPU (Triton's OutOfResources): a caller may retry with smaller tiles."""


def failure_kind(error: BaseException) -> str:
    """How a fast-path exception is reported: "out of resources", "compiler", "out of memory" or "error"."""
    name = type(error).__name__
    module = type(error).__module__ or ""
    if name == "OutOfResources":
        return "out of resources"
    if isinstance(error, _OUT_OF_MEMORY):
        return "out of memory"
    text = str(error)
    if (module.startswith("triton.compiler") or name in ("CompilationError", "PTXASError", "CalledProcessError")
            or "C compiler" in text or "ptxas" in text.lower()):
        return "compiler"
    return "error"


_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
_device_names: dict[str, str] = {}


def device_description(device: torch.device) -> str:
    """"NVIDIA GeForce RTX 4090 (sm_89)" for a CUDA device (no device sync), "CPU (Triton interpreter)" else."""
    key = str(device)
    if key not in _device_names:
        if device.type == "cuda":
            try:
                major, minor = torch.cuda.get_device_capability(device)
                _device_names[key] = f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
            except Exception:  # describing the device must not hide the failure being described
                _device_names[key] = key
        else:
            _device_names[key] = f"{device.type.upper()} (Triton interpreter)"
    return _device_names[key]


def fast_path_error(stage: str, device: torch.device, error: BaseException) -> FastPathError:
    """The typed error for `error` raised by the Triton backend in `stage` on `device`."""
    if isinstance(error, FastPathError):
        return error
    error_type = FastPathOutOfResources if failure_kind(error) == "out of resources" else FastPathError
    return error_type(stage, device_description(device), error)


class GuardedBackend:
    """Wraps a fast backend: any exception of a stage comes out as a `FastPathError` (from the original). A
    stage that runs out of resources (Triton's OutOfResources) is retried once with smaller tiles where the
    backend has them (`use_smaller_tiles(device)`: kept for that device from then on, so it happens once)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    def unsupported_reason(self, q: torch.Tensor) -> str | None:
        return self.backend.unsupported_reason(q)

    def _run(self, stage: str, device: torch.device, call):
        try:
            return call()
        except Exception as error:
            smaller = getattr(self.backend, "use_smaller_tiles", None)
            if failure_kind(error) != "out of resources" or smaller is None or not smaller(device):
                raise fast_path_error(stage, device, error) from error
            reason = fast_path_error(stage, device, error).reason
            log.info("SVG2: %s ran out of resources on %s (%s); retrying with smaller tiles, kept for this GPU "
                     "from now on", stage, device_description(device), reason)
        try:
            return call()
        except Exception as error:
            raise fast_path_error(stage, device, error) from error

    def kmeans(self, points, init_centroids, iterations):
        return self._run("k-means", points.device,
                         lambda: self.backend.kmeans(points, init_centroids, iterations))

    def cluster(self, q_points, q_init, k_points, k_init, iterations, overlap=False):
        return self._run("k-means", q_points.device,
                         lambda: self.backend.cluster(q_points, q_init, k_points, k_init, iterations, overlap=overlap))

    def select_blocks(self, q_centroids, k_centroids, k_cluster_sizes, top_p, min_kept, scale):
        return self._run("block selection", q_centroids.device, lambda: self.backend.select_blocks(
            q_centroids, k_centroids, k_cluster_sizes, top_p, min_kept, scale))

    def sparse_attention(self, q, k, v, plan, scale, qk_int8=False):
        return self._run("sparse attention", q.device,
                         lambda: self.backend.sparse_attention(q, k, v, plan, scale, qk_int8))


def _triton_backend() -> Backend | str:
    """The Triton backend (guarded), or the reason it cannot be loaded. An import that fails in any way
    (triton missing, a driver piece missing, an older Triton's API) is remembered, not retried per call."""
    global _import_failure
    if "triton" not in _BACKENDS:
        if _import_failure is not None:
            return _import_failure
        try:
            from .triton_backend import TritonBackend
        except Exception as error:  # noqa: BLE001  (any failure to import means: no fast path here)
            _import_failure = (f"the Triton backend cannot be imported ({type(error).__name__}: "
                               f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})")
            log.warning("SVG2: %s; attention stays dense (auto) or raises (backend='triton'). What to do: %s",
                        _import_failure, INSTALL_HINT)
            return _import_failure
        _BACKENDS["triton"] = GuardedBackend(TritonBackend())
    return _BACKENDS["triton"]


def triton_unsupported_reason(q: torch.Tensor) -> str | None:
    """Why the Triton fast path cannot serve a call on `q` ([B, H, N, D] or [G, N, D]), or None."""
    backend = _triton_backend()
    if isinstance(backend, str):
        return backend
    return backend.unsupported_reason(q)


def fast_path_key(q: torch.Tensor, qk_int8: bool) -> tuple:
    """What decides whether a fast-path failure repeats: device, dtype, head dim (the tiles), int8 scores."""
    return (str(q.device), str(q.dtype), int(q.shape[-1]), bool(qk_int8))


# backend="auto": fast-path failures that would repeat, by fast_path_key; those calls go to the reference
_auto_failures: dict[tuple, FastPathError] = {}


def remember_failure(key: tuple, error: FastPathError) -> None:
    """backend="auto" stops trying the fast path for `key` (when the failure would repeat); logged once."""
    if error.persistent and key not in _auto_failures:
        _auto_failures[key] = error
    if key not in _logged_failures:
        _logged_failures.add(key)
        when = "from now on" if error.persistent else "while it lasts"
        log.warning("SVG2: %s; backend='auto' serves these calls with the PyTorch reference %s", error, when)


_logged_failures: set[tuple] = set()


def remembered_failure(key: tuple) -> FastPathError | None:
    return _auto_failures.get(key)


def forget_failures() -> None:
    """Try the fast path again (after the cause was fixed, and in tests), with the GPU class's own tiles again
    where a launch ran out of resources; a failed import stays remembered."""
    _auto_failures.clear()
    _logged_failures.clear()
    fast = _BACKENDS.get("triton")
    getattr(getattr(fast, "backend", None), "smallest_tiles", set()).clear()


def resolve_backend(name: str, q: torch.Tensor) -> Backend:
    """`torch`, `triton` (raises ValueError with the reason when it cannot serve q), or `auto`
    (Triton where it can serve q, else the reference)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    if name == "torch":
        return _BACKENDS["torch"]
    reason = triton_unsupported_reason(q)
    if reason is None:
        return _BACKENDS["triton"]
    if name == "triton":
        raise ValueError(f"backend='triton' cannot serve this call: {reason}")
    return _BACKENDS["torch"]
