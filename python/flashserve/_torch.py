"""Glue between torch tensors and flashserve._C, shared by the op modules.

Every public op has two paths that run the same C++ entry point:

- eager (the common case): DLPack capsules straight into ``_C``. ``torch.utils.dlpack.to_dlpack``
  is a C function that wraps the tensor without copying and without the stream synchronization
  that ``Tensor.__dlpack__()`` performs (which would also break CUDA-graph capture), and the
  stream is torch's current raw stream, fetched without building a ``torch.cuda.Stream`` object.
- traced (torch.compile, FakeTensor and other tensor subclasses): the ``torch.ops.flashserve.*``
  custom op, whose fake implementation lets the tracer see the op without running it.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Union

import torch

from . import _C

# The C function itself (torch.utils.dlpack.to_dlpack is an alias of it in current releases).
to_dlpack = getattr(torch._C, "_to_dlpack", None) or torch.utils.dlpack.to_dlpack
# Absent from CPU-only torch builds, where no op can run anyway (the binding then rejects the
# tensors as not on a CUDA device, before the stream is used).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 0)
_is_compiling = torch.compiler.is_compiling
# nn.Parameter is a plain tensor for our purposes; other subclasses (FakeTensor, FunctionalTensor)
# must go through the dispatcher.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def eager(t: torch.Tensor) -> bool:
    """True when the call can skip the dispatcher and go straight to _C."""
    return type(t) in _PLAIN and not _is_compiling()


def stream(t: torch.Tensor) -> int:
    """torch's current stream on t's device, as the integer _C takes."""
    return _raw_stream(t.get_device())


def dl(t: torch.Tensor):
    return to_dlpack(t)


def dl_opt(t: Optional[torch.Tensor]):
    return None if t is None else to_dlpack(t)


_DTYPES = {
    torch.float32: _C.DType.float32,
    torch.float16: _C.DType.float16,
    torch.bfloat16: _C.DType.bfloat16,
    torch.float8_e4m3fn: _C.DType.float8_e4m3,
    torch.float8_e5m2: _C.DType.float8_e5m2,
}
_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "fp8_e5m2": torch.float8_e5m2,
}


def torch_dtype(name: str, value: Union[str, torch.dtype]) -> torch.dtype:
    """A torch dtype from a dtype or its name ('bfloat16', 'float16', 'float8_e4m3fn', ...)."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.replace("torch.", "") in _DTYPE_NAMES:
        return _DTYPE_NAMES[value.replace("torch.", "")]
    raise _C.InvalidArgumentError(
        f"{name}: expected a torch dtype or one of {sorted(_DTYPE_NAMES)}, got {value!r}"
    )


def c_dtype(name: str, value: Union[str, torch.dtype]) -> "_C.DType":
    dtype = torch_dtype(name, value)
    if dtype not in _DTYPES:
        raise _C.InvalidArgumentError(f"{name}: unsupported dtype {dtype}")
    return _DTYPES[dtype]


def c_layout(op: str, layout: str) -> "_C.KVLayout":
    if layout == "NHD":
        return _C.KVLayout.NHD
    if layout == "HND":
        return _C.KVLayout.HND
    raise _C.InvalidArgumentError(f"{op}: kv_layout: expected 'NHD' or 'HND', got {layout!r}")


def custom_op(name: str, mutates_args: Sequence[str]) -> Callable:
    """Registers ``fn`` as ``torch.ops.flashserve.<name>``.

    Every flashserve op writes into caller-provided tensors and returns nothing, so the fake
    (meta) implementation has nothing to compute: shapes are the caller's, and functionalization
    handles the mutation of ``mutates_args``.
    """

    def register(fn: Callable) -> Callable:
        op = torch.library.custom_op(f"flashserve::{name}", mutates_args=tuple(mutates_args))(fn)

        @functools.wraps(fn)
        def fake(*args, **kwargs) -> None:
            return None

        op.register_fake(fake)
        return op

    return register
