"""Gated activations, as flashinfer.activation: ``out = act(input[..., :d]) * input[..., d:]``.

``input`` is ``[..., 2d]`` (2-D or 3-D, last dim contiguous, other strides free); ``out`` is
``[..., d]`` of the same dtype (fp32 / fp16 / bf16) and must not overlap ``input``.
``enable_pdl`` is accepted for FlashInfer compatibility and ignored.
"""

from typing import Optional

import torch

from . import _C
from ._torch import custom_op, dl, eager, stream

_KERNELS = {
    "silu": _C.silu_and_mul,
    "gelu": _C.gelu_and_mul,
    "gelu_tanh": _C.gelu_tanh_and_mul,
}


@custom_op("act_and_mul", mutates_args=("out",))
def _act_and_mul(out: torch.Tensor, input: torch.Tensor, act: str) -> None:
    _KERNELS[act](dl(out), dl(input), stream(input))


def _run(act: str, input: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    if out is None:
        out = input.new_empty(input.shape[:-1] + (input.shape[-1] // 2,))
    if eager(input):
        _KERNELS[act](dl(out), dl(input), stream(input))
    else:
        _act_and_mul(out, input, act)
    return out


def silu_and_mul(
    input: torch.Tensor, out: Optional[torch.Tensor] = None, enable_pdl: Optional[bool] = None
) -> torch.Tensor:
    """``silu(input[..., :d]) * input[..., d:]`` (SwiGLU)."""
    return _run("silu", input, out)


def gelu_and_mul(
    input: torch.Tensor, out: Optional[torch.Tensor] = None, enable_pdl: Optional[bool] = None
) -> torch.Tensor:
    """``gelu(input[..., :d]) * input[..., d:]`` with the exact (erf) GELU."""
    return _run("gelu", input, out)


def gelu_tanh_and_mul(
    input: torch.Tensor, out: Optional[torch.Tensor] = None, enable_pdl: Optional[bool] = None
) -> torch.Tensor:
    """``gelu_tanh(input[..., :d]) * input[..., d:]`` (the tanh approximation)."""
    return _run("gelu_tanh", input, out)
