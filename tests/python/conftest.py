"""pytest setup for the Python package's tests.

CPU tests (test_cpu_*.py) need neither torch nor a GPU: they drive flashserve._C with DLPack
producers from dlpack_fake.py and check imports, argument validation and error messages. GPU
tests (test_gpu_*.py) need torch with a CUDA device and skip, with the reason, without one.
"""

import pytest


def _cuda_reason():
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    major, _ = torch.cuda.get_device_capability()
    if major != 9:
        return f"flashserve kernels need Hopper (sm_90a), got sm_{major}x"
    return None


CUDA_SKIP_REASON = _cuda_reason()
requires_gpu = pytest.mark.skipif(CUDA_SKIP_REASON is not None, reason=str(CUDA_SKIP_REASON))


def gpu_present() -> bool:
    import flashserve

    return flashserve.device_count() > 0


@pytest.fixture(autouse=True)
def _fresh_seed():
    """GPU tests draw fresh random inputs each run (METHOD.md); the seed is in the captured
    output, which pytest shows when the test fails."""
    try:
        import torch
    except ImportError:
        return
    print(f"torch seed: {torch.seed()}")
