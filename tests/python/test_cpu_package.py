"""The installed package without torch or a GPU: import, runtime facts, exceptions, CLI entry."""

import os
import re
import subprocess
import sys

import pytest
from conftest import gpu_present

import flashserve
from flashserve import _C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cmake_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(flashserve VERSION ([0-9.]+)", f.read()).group(1)


def test_version_matches_cmake_project():
    assert flashserve.__version__ == cmake_version()
    assert flashserve.version() == flashserve.__version__


def test_build_info_names_cuda_and_abi():
    info = flashserve.build_info()
    assert info["version"] == flashserve.__version__
    assert "90a" in info["cuda_archs"]
    assert re.match(r"\d+\.\d+", info["cuda_version"])
    expected_abi = (
        "abi3" if sys.version_info >= (3, 12) else f"cp{sys.version_info[0]}{sys.version_info[1]}"
    )
    assert info["python_abi"].startswith(expected_abi)


def test_device_queries_without_a_device():
    if gpu_present():
        pytest.skip("a CUDA device is present")
    assert flashserve.device_count() == 0
    with pytest.raises(flashserve.NoDeviceError):
        flashserve.device_info(0)


def test_exception_hierarchy():
    assert issubclass(flashserve.InvalidArgumentError, flashserve.Error)
    assert issubclass(flashserve.InvalidArgumentError, ValueError)
    assert issubclass(flashserve.UnsupportedError, NotImplementedError)
    assert issubclass(flashserve.NoDeviceError, flashserve.Error)
    assert issubclass(flashserve.CudaError, flashserve.Error)
    assert issubclass(flashserve.Error, RuntimeError)


def test_log_level_round_trip():
    old = flashserve.log_level()
    try:
        flashserve.set_log_level(3)
        assert flashserve.log_level() == 3
    finally:
        flashserve.set_log_level(old)
    assert flashserve.log_level() == old


def test_log_destination_unopenable_names_the_argument():
    with pytest.raises(flashserve.InvalidArgumentError, match="set_log_destination: destination"):
        flashserve.set_log_destination("/nonexistent-dir/for/sure/log.txt")


def test_debug_checks_round_trip():
    old = flashserve.debug_checks()
    try:
        flashserve.set_debug_checks(not old)
        assert flashserve.debug_checks() == (not old)
    finally:
        flashserve.set_debug_checks(old)


def test_ops_without_torch_raise_import_error_naming_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs PyTorch"):
            flashserve.rmsnorm
        with pytest.raises(ImportError, match="needs PyTorch"):
            flashserve.BatchDecodeWithPagedKVCacheWrapper
    else:
        assert callable(flashserve.rmsnorm)
    with pytest.raises(AttributeError):
        flashserve.no_such_op


def test_package_ships_type_information():
    pkg = os.path.dirname(flashserve.__file__)
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    stub = os.path.join(pkg, "_C.pyi")
    if not os.path.exists(stub):
        pytest.skip("built with FLASHSERVE_PYTHON_STUBS=OFF")
    with open(stub) as f:
        text = f.read()
    assert "def rmsnorm(" in text and "def decode_run(" in text


def test_c_functions_carry_docstrings_and_signatures():
    for name in ("rmsnorm", "apply_rope", "append_paged_kv_cache", "decode_plan", "decode_run"):
        doc = getattr(_C, name).__doc__
        assert doc and name in doc, name


def run_module(*args):
    return subprocess.run(
        [sys.executable, "-m", "flashserve", *args], capture_output=True, text=True, timeout=120
    )


def test_module_info_prints_version_build_and_ops():
    r = run_module("info")
    assert r.returncode == 0, r.stderr
    assert f"flashserve {flashserve.__version__}" in r.stdout
    assert "sm_90a" in r.stdout
    assert "rmsnorm" in r.stdout and "BatchDecodeWithPagedKVCacheWrapper" in r.stdout
    if not gpu_present():
        assert "device: none" in r.stdout


def test_module_usage_and_unknown_command():
    assert run_module("--help").returncode == 0
    r = run_module("frobnicate")
    assert r.returncode == 2
    assert "unknown command 'frobnicate'" in r.stderr


def test_module_bench_runs_the_installed_cli():
    r = run_module("bench", "--routine", "rmsnorm", "--tokens", "1", "--hidden", "128")
    if flashserve.cli_path() is None:
        assert r.returncode == 1
        assert "CLI was not installed" in r.stderr
    elif not gpu_present():
        # The C++ CLI's own behaviour without a device: one line, non-zero exit.
        assert r.returncode != 0
        assert "device" in (r.stdout + r.stderr).lower()
    else:
        assert r.returncode == 0, r.stderr
        assert "rmsnorm" in r.stdout
