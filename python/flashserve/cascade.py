"""Merging attention states, as flashinfer.cascade: outputs computed over disjoint kv ranges
(split-KV, a shared prefix and per-request suffixes) combined with their log-sum-exps.

``v``: ``[tokens, heads, head_dim]`` (fp16 / bf16 / fp32), ``s``: float32 ``[tokens, heads]``,
the natural-log LSE as decode ``run(..., return_lse=True)`` writes it. A state with LSE ``-inf``
contributes nothing; all ``-inf`` gives 0 and ``-inf``.
"""

from typing import Optional, Tuple

import torch

from . import _C
from ._torch import custom_op, dl, dl_opt, eager, stream


@custom_op("merge_state", mutates_args=("v_out", "s_out"))
def _merge_state(
    v_a: torch.Tensor,
    s_a: torch.Tensor,
    v_b: torch.Tensor,
    s_b: torch.Tensor,
    v_out: torch.Tensor,
    s_out: Optional[torch.Tensor],
) -> None:
    _C.merge_state(dl(v_a), dl(s_a), dl(v_b), dl(s_b), dl(v_out), dl_opt(s_out), stream(v_a))


@custom_op("merge_states", mutates_args=("v_out", "s_out"))
def _merge_states(
    v: torch.Tensor, s: torch.Tensor, v_out: torch.Tensor, s_out: Optional[torch.Tensor]
) -> None:
    _C.merge_states(dl(v), dl(s), dl(v_out), dl_opt(s_out), stream(v))


def _pair(v_a, s_a, v_b, s_b, v_out, s_out):
    if eager(v_a):
        _C.merge_state(dl(v_a), dl(s_a), dl(v_b), dl(s_b), dl(v_out), dl_opt(s_out), stream(v_a))
    else:
        _merge_state(v_a, s_a, v_b, s_b, v_out, s_out)


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merges two states; returns ``(v_merged, s_merged)``. ``v_b`` and ``s_b`` must have the
    strides of ``v_a`` and ``s_a`` (the kernel walks the two as one stack)."""
    v_out = torch.empty_like(v_a)
    s_out = torch.empty_like(s_a)
    _pair(v_a, s_a, v_b, s_b, v_out, s_out)
    return v_out, s_out


def merge_state_in_place(
    v: torch.Tensor,
    s: torch.Tensor,
    v_other: torch.Tensor,
    s_other: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
) -> None:
    """Merges ``(v_other, s_other)`` into ``(v, s)`` in place. FlashInfer's ``mask`` is not
    supported (pass None)."""
    if mask is not None:
        raise _C.UnsupportedError("merge_state_in_place: mask: not supported, expected None")
    # v may be written in place (each element is read and written by one thread), but the LSE
    # of a row is written while other threads of the row may still read it: merge into a copy.
    s_merged = torch.empty_like(s)
    _pair(v, s, v_other, s_other, v, s_merged)
    s.copy_(s_merged)


def merge_states(v: torch.Tensor, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merges ``v [tokens, states, heads, head_dim]`` with ``s [tokens, states, heads]``; returns
    ``(v_merged [tokens, heads, head_dim], s_merged [tokens, heads])``."""
    v_out = v.new_empty((v.shape[0],) + tuple(v.shape[2:]))
    s_out = s.new_empty((s.shape[0],) + tuple(s.shape[2:]))
    if eager(v):
        _C.merge_states(dl(v), dl(s), dl(v_out), dl_opt(s_out), stream(v))
    else:
        _merge_states(v, s, v_out, s_out)
    return v_out, s_out
