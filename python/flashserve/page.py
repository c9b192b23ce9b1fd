"""The paged KV cache (docs/paged_kv.md), as flashinfer.page.

A cache is ``(k_cache, v_cache)``, or one tensor holding both: NHD
``[num_pages, 2, page_size, kv_heads, head_dim]`` / HND ``[num_pages, 2, kv_heads, page_size,
head_dim]`` (split here into two strided views, never copied). The page table is FlashInfer's
CSR: ``kv_indptr [batch + 1]``, ``kv_indices``, ``kv_last_page_len [batch]``, int32 on the device.
"""

from typing import Tuple, Union

import torch

from . import _C
from ._torch import c_layout, custom_op, dl, eager, stream

PagedKVCache = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def unpack_paged_kv_cache(
    paged_kv_cache: PagedKVCache, op: str = "paged_kv_cache"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(k_cache, v_cache)`` views of a cache given as a pair or as one ``[pages, 2, ...]``
    tensor."""
    if isinstance(paged_kv_cache, (tuple, list)):
        if len(paged_kv_cache) != 2:
            raise _C.InvalidArgumentError(
                f"{op}: paged_kv_cache: expected (k_cache, v_cache), got {len(paged_kv_cache)} "
                "tensors"
            )
        return paged_kv_cache[0], paged_kv_cache[1]
    if paged_kv_cache.dim() != 5 or paged_kv_cache.shape[1] != 2:
        raise _C.InvalidArgumentError(
            f"{op}: paged_kv_cache: expected (k_cache, v_cache) or one tensor of shape "
            f"[num_pages, 2, ...] (5 dims), got shape {list(paged_kv_cache.shape)}"
        )
    return paged_kv_cache[:, 0], paged_kv_cache[:, 1]


@custom_op("append_paged_kv_cache", mutates_args=("k_cache", "v_cache"))
def _append(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    append_key: torch.Tensor,
    append_value: torch.Tensor,
    append_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_last_page_len: torch.Tensor,
    kv_layout: str,
    k_scale: float,
    v_scale: float,
) -> None:
    _append_c(
        k_cache,
        v_cache,
        append_key,
        append_value,
        append_indptr,
        kv_indices,
        kv_indptr,
        kv_last_page_len,
        kv_layout,
        k_scale,
        v_scale,
    )


def _append_c(k_cache, v_cache, k, v, append_indptr, indices, indptr, last, layout, ks, vs):
    _C.append_paged_kv_cache(
        dl(k_cache),
        dl(v_cache),
        c_layout("append_paged_kv_cache", layout),
        ks,
        vs,
        dl(indptr),
        dl(indices),
        dl(last),
        dl(k),
        dl(v),
        dl(append_indptr),
        stream(k),
    )


def append_paged_kv_cache(
    append_key: torch.Tensor,
    append_value: torch.Tensor,
    append_indptr: torch.Tensor,
    paged_kv_cache: PagedKVCache,
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_last_page_len: torch.Tensor,
    kv_layout: str = "NHD",
    *,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> None:
    """Writes ``append_key`` / ``append_value`` ``[new_tokens, kv_heads, head_dim]`` into the
    cache. Request b's new tokens are rows ``append_indptr[b]..append_indptr[b+1]`` (int32
    ``[batch + 1]`` on the device) and become its last tokens: the page table already counts them,
    as in FlashInfer. FlashInfer's ``(batch_indices, positions)`` pair is replaced by
    ``append_indptr``, from which the kernel derives both. fp8 caches store
    ``value / scale``."""
    k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, "append_paged_kv_cache")
    args = (
        k_cache,
        v_cache,
        append_key,
        append_value,
        append_indptr,
        kv_indices,
        kv_indptr,
        kv_last_page_len,
        kv_layout,
        float(k_scale),
        float(v_scale),
    )
    if eager(append_key):
        _append_c(*args)
    else:
        _append(*args)
