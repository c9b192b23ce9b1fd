"""flashserve: LLM-serving kernels for NVIDIA Hopper, for torch tensors.

A thin layer over the C++ library (``flashserve._C``, nanobind): tensors cross zero-copy through
DLPack, every kernel runs on torch's current stream, nothing is copied or allocated behind the
caller's back (outputs are allocated only when ``out`` is not given), and bad arguments raise
``InvalidArgumentError`` naming the op and the argument. Names and signatures follow FlashInfer
(docs/python.md has the migration table). Each op is also a torch custom op,
``torch.ops.flashserve.*``, with a fake implementation, used under torch.compile.

The runtime functions work without torch; the ops need it.
"""

from . import _C
from ._C import CudaError, Error, InvalidArgumentError, NoDeviceError, UnsupportedError
from .runtime import (
    build_info,
    cli_path,
    cmake_prefix_path,
    debug_checks,
    device_count,
    device_info,
    log_level,
    set_debug_checks,
    set_log_destination,
    set_log_level,
    version,
)

__version__ = _C.version()

# Public name -> the module that defines it (all of them need torch).
_TORCH_API = {
    "norm": (
        "rmsnorm",
        "fused_add_rmsnorm",
        "gemma_rmsnorm",
        "gemma_fused_add_rmsnorm",
        "layernorm",
    ),
    "activation": ("silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"),
    "rope": (
        "apply_rope",
        "apply_rope_inplace",
        "apply_rope_pos_ids",
        "apply_rope_pos_ids_inplace",
        "apply_llama31_rope_pos_ids",
        "apply_llama31_rope_pos_ids_inplace",
        "apply_rope_with_cos_sin_cache",
        "apply_rope_with_cos_sin_cache_inplace",
    ),
    "page": ("append_paged_kv_cache",),
    "cascade": ("merge_state", "merge_state_in_place", "merge_states"),
    "decode": ("BatchDecodeWithPagedKVCacheWrapper",),
    "prefill": (
        "BatchPrefillWithRaggedKVCacheWrapper",
        "BatchPrefillWithPagedKVCacheWrapper",
        "single_prefill_with_kv_cache",
    ),
    "sampling": (
        "sampling_from_probs",
        "sampling_from_logits",
        "top_p_sampling_from_probs",
        "top_k_sampling_from_probs",
        "min_p_sampling_from_probs",
        "top_k_top_p_sampling_from_probs",
        "top_k_top_p_sampling_from_logits",
        "top_p_renorm_probs",
        "top_k_renorm_probs",
        "top_k_mask_logits",
        "top_k",
        "chain_speculative_sampling",
    ),
}

try:
    import torch as _torch  # noqa: F401
except ImportError as _error:  # the runtime functions stay usable
    _TORCH_MISSING: "ImportError | None" = _error
else:
    _TORCH_MISSING = None
    from .activation import gelu_and_mul, gelu_tanh_and_mul, silu_and_mul
    from .cascade import merge_state, merge_state_in_place, merge_states
    from .decode import BatchDecodeWithPagedKVCacheWrapper
    from .norm import fused_add_rmsnorm, gemma_fused_add_rmsnorm, gemma_rmsnorm, layernorm, rmsnorm
    from .page import append_paged_kv_cache
    from .prefill import (
        BatchPrefillWithPagedKVCacheWrapper,
        BatchPrefillWithRaggedKVCacheWrapper,
        single_prefill_with_kv_cache,
    )
    from .rope import (
        apply_llama31_rope_pos_ids,
        apply_llama31_rope_pos_ids_inplace,
        apply_rope,
        apply_rope_inplace,
        apply_rope_pos_ids,
        apply_rope_pos_ids_inplace,
        apply_rope_with_cos_sin_cache,
        apply_rope_with_cos_sin_cache_inplace,
    )
    from .sampling import (
        chain_speculative_sampling,
        min_p_sampling_from_probs,
        sampling_from_logits,
        sampling_from_probs,
        top_k,
        top_k_mask_logits,
        top_k_renorm_probs,
        top_k_sampling_from_probs,
        top_k_top_p_sampling_from_logits,
        top_k_top_p_sampling_from_probs,
        top_p_renorm_probs,
        top_p_sampling_from_probs,
    )


def __getattr__(name: str):
    if _TORCH_MISSING is not None and any(name in names for names in _TORCH_API.values()):
        raise ImportError(
            f"flashserve.{name} needs PyTorch, which is not installed ({_TORCH_MISSING}); the "
            "runtime functions (version, build_info, device_info, ...) work without it"
        )
    raise AttributeError(f"module 'flashserve' has no attribute {name!r}")


__all__ = [
    "CudaError",
    "Error",
    "InvalidArgumentError",
    "NoDeviceError",
    "UnsupportedError",
    "__version__",
    "build_info",
    "cli_path",
    "cmake_prefix_path",
    "debug_checks",
    "device_count",
    "device_info",
    "log_level",
    "set_debug_checks",
    "set_log_destination",
    "set_log_level",
    "version",
] + [name for names in _TORCH_API.values() for name in names]
