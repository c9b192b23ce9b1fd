"""DLPack producers for tests that run without torch or a GPU.

``FakeArray(shape, dtype, device="cuda")`` describes device memory at a fake address that nothing
dereferences: flashserve validates arguments before it touches the device, so these reach every
check of the C++ API (the Python counterpart of tests/util/arg_validation.h). With
``device="cpu"`` the array owns a real host buffer (e.g. a page table's host copy).
"""

import ctypes
from typing import Optional, Sequence


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", _DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),  # NULL: the producer (this object) owns everything
    ]


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_CAPSULE_NAME = b"dltensor"

# name -> (DLPack type code, bits)
DTYPES = {
    "float32": (2, 32),
    "float16": (2, 16),
    "bfloat16": (4, 16),
    "float8_e4m3fn": (10, 8),
    "float8_e5m2": (12, 8),
    "int32": (0, 32),
    "int64": (0, 64),
    "uint8": (1, 8),
    "float64": (2, 64),
    "int8": (0, 8),
    "complex64": (5, 64),
}
_DEVICES = {"cpu": 1, "cuda": 2, "cuda_host": 3}
_BASE = 0x100000
_GAP = 1 << 24  # distinct fake tensors live 16 MiB apart: far more than any test view spans


class FakeArray:
    def __init__(
        self,
        shape: Sequence[int],
        dtype: str = "float16",
        *,
        strides: Optional[Sequence[int]] = None,
        device: str = "cuda",
        slot: int = 0,
        byte_offset: int = 0,
        values: Optional[Sequence[int]] = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        code, bits = DTYPES[dtype]
        if strides is None:
            strides, acc = [], 1
            for s in reversed(self.shape):
                strides.insert(0, acc)
                acc *= max(s, 1)
        self.strides = tuple(int(s) for s in strides)
        self._dtype = (code, bits)
        self._device = _DEVICES[device]
        self._keep = []
        if device == "cuda":
            self._ptr = _BASE + slot * _GAP + byte_offset
        else:
            count = 1
            for s in self.shape:
                count *= s
            ctype = {64: ctypes.c_int64, 32: ctypes.c_int32, 16: ctypes.c_int16, 8: ctypes.c_int8}
            buf = (ctype[bits] * max(count, 1))(*(values or []))
            self._keep.append(buf)
            self._ptr = ctypes.addressof(buf)

    def __dlpack_device__(self):
        return (self._device, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*self.strides)
        mt = _DLManagedTensor()
        mt.dl_tensor.data = self._ptr
        mt.dl_tensor.device = _DLDevice(self._device, 0)
        mt.dl_tensor.ndim = ndim
        mt.dl_tensor.dtype = _DLDataType(self._dtype[0], self._dtype[1], 1)
        mt.dl_tensor.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        mt.dl_tensor.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
        mt.dl_tensor.byte_offset = 0
        self._keep += [shape, strides, mt]
        return _PyCapsule_New(ctypes.addressof(mt), _CAPSULE_NAME, None)


def host_int32(values: Sequence[int]) -> FakeArray:
    """A real host int32 1-D array (the host copy of a page table array)."""
    return FakeArray((len(values),), "int32", device="cpu", values=list(values))


def host_int64(values: Sequence[int]) -> FakeArray:
    return FakeArray((len(values),), "int64", device="cpu", values=list(values))
