"""Normalizations: RMSNorm, fused residual-add RMSNorm, the Gemma forms and LayerNorm.

Shapes follow flashinfer.norm: ``input`` is ``[tokens, hidden]`` or ``[outer, inner, hidden]``
(per-head norms on a slice of a packed qkv tensor work in place: only the last dim must be
contiguous). fp32 / fp16 / bf16 in; the output has the input's dtype, or float8_e4m3fn when ``out``
is such a tensor and ``out_scale`` (a float32 device scalar, out = y / scale) is given.
``enable_pdl`` is accepted for FlashInfer compatibility and ignored.
"""

from typing import Optional

import torch

from . import _C
from ._torch import custom_op, dl, dl_opt, eager, stream


@custom_op("rmsnorm", mutates_args=("out",))
def _rmsnorm(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    out_scale: Optional[torch.Tensor],
    gemma: bool,
) -> None:
    fn = _C.gemma_rmsnorm if gemma else _C.rmsnorm
    fn(dl(out), dl(input), dl(weight), eps, dl_opt(out_scale), stream(input))


@custom_op("fused_add_rmsnorm", mutates_args=("out", "residual"))
def _fused_add_rmsnorm(
    out: torch.Tensor,
    input: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    out_scale: Optional[torch.Tensor],
    gemma: bool,
) -> None:
    fn = _C.gemma_fused_add_rmsnorm if gemma else _C.fused_add_rmsnorm
    fn(dl(out), dl(input), dl(residual), dl(weight), eps, dl_opt(out_scale), stream(input))


@custom_op("layernorm", mutates_args=("out",))
def _layernorm(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    eps: float,
    out_scale: Optional[torch.Tensor],
) -> None:
    _C.layernorm(
        dl(out), dl(input), dl(weight), dl_opt(bias), eps, dl_opt(out_scale), stream(input)
    )


def _norm(input, weight, eps, out, out_scale, gemma):
    if out is None:
        out = torch.empty_like(input)
    if eager(input):
        fn = _C.gemma_rmsnorm if gemma else _C.rmsnorm
        fn(dl(out), dl(input), dl(weight), eps, dl_opt(out_scale), stream(input))
    else:
        _rmsnorm(out, input, weight, eps, out_scale, gemma)
    return out


def _fused(input, residual, weight, eps, out, out_scale, gemma):
    out = input if out is None else out
    if eager(input):
        fn = _C.gemma_fused_add_rmsnorm if gemma else _C.fused_add_rmsnorm
        fn(dl(out), dl(input), dl(residual), dl(weight), eps, dl_opt(out_scale), stream(input))
    else:
        _fused_add_rmsnorm(out, input, residual, weight, eps, out_scale, gemma)


def rmsnorm(
    input: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    out: Optional[torch.Tensor] = None,
    enable_pdl: Optional[bool] = None,
    *,
    out_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``input / sqrt(mean(input**2) + eps) * weight``; returns ``out`` (new unless given; may be
    ``input`` itself)."""
    return _norm(input, weight, eps, out, out_scale, False)


def gemma_rmsnorm(
    input: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    out: Optional[torch.Tensor] = None,
    enable_pdl: Optional[bool] = None,
    *,
    out_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Gemma's RMSNorm: the weight is applied as ``(1 + weight)``."""
    return _norm(input, weight, eps, out, out_scale, True)


def fused_add_rmsnorm(
    input: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    enable_pdl: Optional[bool] = None,
    *,
    out: Optional[torch.Tensor] = None,
    out_scale: Optional[torch.Tensor] = None,
) -> None:
    """In place, as in FlashInfer: ``residual += input``, then ``input = rmsnorm(residual)``.

    With ``out`` the normalized rows go there instead and ``input`` is left unchanged (an fp8
    ``out`` with ``out_scale`` quantizes on the way out)."""
    _fused(input, residual, weight, eps, out, out_scale, False)


def gemma_fused_add_rmsnorm(
    input: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    enable_pdl: Optional[bool] = None,
    *,
    out: Optional[torch.Tensor] = None,
    out_scale: Optional[torch.Tensor] = None,
) -> None:
    """fused_add_rmsnorm with the weight applied as ``(1 + weight)``."""
    _fused(input, residual, weight, eps, out, out_scale, True)


def layernorm(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
    out: Optional[torch.Tensor] = None,
    *,
    out_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``(input - mean) / sqrt(var + eps) * weight + bias`` (FlashInfer's ``gemma``/``beta`` are
    ``weight``/``bias``; positional calls are the same)."""
    if out is None:
        out = torch.empty_like(input)
    if eager(input):
        _C.layernorm(
            dl(out), dl(input), dl(weight), dl_opt(bias), eps, dl_opt(out_scale), stream(input)
        )
    else:
        _layernorm(out, input, weight, bias, eps, out_scale)
    return out
