"""Library facts and switches; needs no torch and no GPU."""

import os
from typing import Optional

from . import _C

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def version() -> str:
    """The C++ library's version (the package's ``__version__``)."""
    return _C.version()


def build_info() -> dict:
    """How the library was built (CUDA version, architectures, flags) and the binding's ABI."""
    info = dict(_C.build_info())
    info.update(_C.binding_info())
    return info


def device_count() -> int:
    """Number of CUDA devices; 0 when there is none (never raises)."""
    return _C.device_count()


def device_info(device: int = 0) -> dict:
    """Name, compute capability, SM count, L2 and memory size, driver and runtime versions."""
    return dict(_C.device_info(device))


def log_level() -> int:
    """The API log level (``FLASHSERVE_LOGLEVEL``): 0 off, 1 op names, 3 arguments, 5 stats."""
    return _C.log_level()


def set_log_level(level: int) -> None:
    """Sets the API log level; level 5 synchronizes the stream after each call (debug only)."""
    _C.set_log_level(level)


def set_log_destination(destination: str) -> None:
    """``'stdout'``, ``'stderr'`` (default) or a file path, appended to."""
    _C.set_log_destination(destination)


def debug_checks() -> bool:
    """Whether entry points verify device index data on the host (``FLASHSERVE_DEBUG_CHECKS``)."""
    return _C.debug_checks()


def set_debug_checks(enabled: bool) -> None:
    """Turns the host-side page-table / position checks on or off (costs a sync per call)."""
    _C.set_debug_checks(enabled)


def cli_path() -> Optional[str]:
    """The ``flashserve`` CLI installed with the package (None when it was built without it)."""
    path = os.path.join(_PACKAGE_DIR, "bin", "flashserve")
    return path if os.access(path, os.X_OK) else None


def cmake_prefix_path() -> str:
    """Prefix for ``find_package(flashserve)`` against the C++ SDK shipped in the wheel."""
    return _PACKAGE_DIR
