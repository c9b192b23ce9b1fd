"""Rotary position embedding, as flashinfer.rope.

``q``: ``[tokens, q_heads, head_dim]``, ``k``: ``[tokens, kv_heads, head_dim]`` (fp32 / fp16 /
bf16, last dim contiguous; token and head strides free, so slices of a packed qkv tensor work in
place). ``pos_ids``: int32 or int64 ``[tokens]``. The first ``rotary_dim`` dims of each head are
rotated (NeoX halves, or GPT-J pairs with ``interleave=True``); the rest are copied (out of place)
or left alone (in place). Frequencies: ``1 / rope_theta ** (2i / rotary_dim)``, positions divided
by ``rope_scale``; the Llama-3.1 forms apply its frequency scaling.
"""

import functools
from typing import Optional, Tuple

import torch

from . import _C
from ._torch import custom_op, dl, eager, stream


@functools.lru_cache(maxsize=64)
def _options(rotary_dim, interleave, theta, scale, llama31, factor, low, high, original):
    return _C.RopeOptions(
        rotary_dim=rotary_dim,
        interleave=interleave,
        theta=theta,
        scale=scale,
        llama31=llama31,
        llama31_factor=factor,
        low_freq_factor=low,
        high_freq_factor=high,
        original_max_position=original,
    )


@custom_op("apply_rope", mutates_args=("q_out", "k_out"))
def _apply_rope(
    q_out: torch.Tensor,
    k_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    pos_ids: torch.Tensor,
    rotary_dim: int,
    interleave: bool,
    theta: float,
    scale: float,
    llama31: bool,
    factor: float,
    low: float,
    high: float,
    original: float,
) -> None:
    opts = _options(rotary_dim, interleave, theta, scale, llama31, factor, low, high, original)
    _C.apply_rope(dl(q_out), dl(k_out), dl(q), dl(k), dl(pos_ids), opts, stream(q))


@custom_op("apply_rope_cos_sin_cache", mutates_args=("q_out", "k_out"))
def _apply_rope_cache(
    q_out: torch.Tensor,
    k_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    interleave: bool,
) -> None:
    opts = _options(0, interleave, 1e4, 1.0, False, 8.0, 1.0, 4.0, 8192.0)
    _C.apply_rope_cos_sin_cache(
        dl(q_out), dl(k_out), dl(q), dl(k), dl(positions), dl(cos_sin_cache), opts, stream(q)
    )


def _rope(q, k, pos_ids, q_out, k_out, rotary_dim, interleave, theta, scale, llama31=None):
    factor, low, high, original = llama31 if llama31 is not None else (8.0, 1.0, 4.0, 8192.0)
    args = (
        int(rotary_dim or 0),
        bool(interleave),
        float(theta),
        float(scale),
        llama31 is not None,
        float(factor),
        float(low),
        float(high),
        float(original),
    )
    if eager(q):
        opts = _options(*args)
        _C.apply_rope(dl(q_out), dl(k_out), dl(q), dl(k), dl(pos_ids), opts, stream(q))
    else:
        _apply_rope(q_out, k_out, q, k, pos_ids, *args)


def apply_rope_pos_ids(
    q: torch.Tensor,
    k: torch.Tensor,
    pos_ids: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns rotated copies ``(q_rope, k_rope)``."""
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    _rope(q, k, pos_ids, q_out, k_out, rotary_dim, interleave, rope_theta, rope_scale)
    return q_out, k_out


def apply_rope_pos_ids_inplace(
    q: torch.Tensor,
    k: torch.Tensor,
    pos_ids: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> None:
    """Rotates ``q`` and ``k`` in place."""
    _rope(q, k, pos_ids, q, k, rotary_dim, interleave, rope_theta, rope_scale)


def apply_llama31_rope_pos_ids(
    q: torch.Tensor,
    k: torch.Tensor,
    pos_ids: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 8,
    rope_theta: float = 5e5,
    low_freq_factor: float = 1,
    high_freq_factor: float = 4,
    old_context_len: int = 8192,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Llama-3.1 RoPE (``rope_scale`` is the frequency scaling factor); returns rotated copies."""
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    scaling = (rope_scale, low_freq_factor, high_freq_factor, old_context_len)
    _rope(q, k, pos_ids, q_out, k_out, rotary_dim, interleave, rope_theta, 1.0, scaling)
    return q_out, k_out


def apply_llama31_rope_pos_ids_inplace(
    q: torch.Tensor,
    k: torch.Tensor,
    pos_ids: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 8,
    rope_theta: float = 5e5,
    low_freq_factor: float = 1,
    high_freq_factor: float = 4,
    old_context_len: int = 8192,
) -> None:
    """Llama-3.1 RoPE in place."""
    scaling = (rope_scale, low_freq_factor, high_freq_factor, old_context_len)
    _rope(q, k, pos_ids, q, k, rotary_dim, interleave, rope_theta, 1.0, scaling)


def _ragged_positions(q: torch.Tensor, indptr: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    # Token i of request b sits at offsets[b] + i - indptr[b]. output_size keeps
    # repeat_interleave free of a device-to-host synchronization (and so capturable).
    tokens = q.shape[0]
    lengths = indptr[1:] - indptr[:-1]
    start = (offsets.to(indptr.dtype) - indptr[:-1]).repeat_interleave(lengths, output_size=tokens)
    return torch.arange(tokens, device=q.device, dtype=indptr.dtype) + start


def apply_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    indptr: torch.Tensor,
    offsets: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ragged form (FlashInfer's ``apply_rope``): request b's tokens are rows
    ``indptr[b]..indptr[b+1]`` and start at position ``offsets[b]``."""
    pos_ids = _ragged_positions(q, indptr, offsets)
    return apply_rope_pos_ids(q, k, pos_ids, rotary_dim, interleave, rope_scale, rope_theta)


def apply_rope_inplace(
    q: torch.Tensor,
    k: torch.Tensor,
    indptr: torch.Tensor,
    offsets: torch.Tensor,
    rotary_dim: Optional[int] = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> None:
    """Ragged form, in place."""
    pos_ids = _ragged_positions(q, indptr, offsets)
    apply_rope_pos_ids_inplace(q, k, pos_ids, rotary_dim, interleave, rope_scale, rope_theta)


def _cos_sin(positions, query, key, head_size, cos_sin_cache, is_neox, inplace):
    # vLLM layout: query [tokens, heads * head_size] (or already [tokens, heads, head_size]).
    q = query.view(query.shape[0], -1, head_size)
    k = key.view(key.shape[0], -1, head_size)
    q_out, k_out = (q, k) if inplace else (torch.empty_like(q), torch.empty_like(k))
    if eager(q):
        opts = _options(0, not is_neox, 1e4, 1.0, False, 8.0, 1.0, 4.0, 8192.0)
        _C.apply_rope_cos_sin_cache(
            dl(q_out), dl(k_out), dl(q), dl(k), dl(positions), dl(cos_sin_cache), opts, stream(q)
        )
    else:
        _apply_rope_cache(q_out, k_out, q, k, positions, cos_sin_cache, not is_neox)
    return q_out.view(query.shape), k_out.view(key.shape)


def apply_rope_with_cos_sin_cache(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The vLLM-compatible form: angles from ``cos_sin_cache [max_position, rotary_dim]`` (cos in
    the first half of each row, sin in the second); returns rotated copies."""
    return _cos_sin(positions, query, key, head_size, cos_sin_cache, is_neox, False)


def apply_rope_with_cos_sin_cache_inplace(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """The vLLM-compatible form, in place."""
    _cos_sin(positions, query, key, head_size, cos_sin_cache, is_neox, True)
