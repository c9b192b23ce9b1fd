"""Host-side cost of one op call from Python (the issue's target: <= 10 us per op).

Each op is called back to back with preallocated outputs while a spin kernel holds the GPU, so the
wall time per call is the host path: DLPack export, the nanobind call, validation and the launch. bench/python_parity.py --overhead prints the same figures beside a
torch op.
"""

import time

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from paged_ref import make_cache, make_table  # noqa: E402

pytestmark = requires_gpu
LIMIT_US = 10.0
# The 10 us holds for the host the GPU machine usually gets, where torch.add(x, x, out=o)
# itself takes 5.4 us from Python (measured with per_call_us). Hosts differ by up to ~1.7x in
# single-thread speed from one machine to the next, so the limit scales with torch's own call
# measured in the same run, never below 10 us.
TORCH_ADD_REFERENCE_US = 5.4


def host_limit_us():
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(x)
    torch_us = per_call_us(lambda: torch.add(x, x, out=out))
    return LIMIT_US * max(1.0, torch_us / TORCH_ADD_REFERENCE_US), torch_us


def per_call_us(fn, calls=200, repeats=20):
    """Host µs per call. A spin kernel (torch.cuda._sleep) keeps the GPU busy for longer than the
    loop runs, so every launch only queues: the figure is the host path alone, not the kernels'
    time (a GPU-bound loop would measure the kernels, and a full launch queue would block)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda._sleep(40_000_000)  # ~20 ms at 2 GHz; the loop below takes ~2-4 ms
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return best


def cases():
    bf = dict(device="cuda", dtype=torch.bfloat16)
    x, w, out = torch.randn(1, 4096, **bf), torch.randn(4096, **bf), torch.empty(1, 4096, **bf)
    r = torch.randn(1, 4096, **bf)
    gate, act = torch.randn(1, 2 * 14336, **bf), torch.empty(1, 14336, **bf)
    q, k = torch.randn(1, 32, 128, **bf), torch.randn(1, 8, 128, **bf)
    pos = torch.zeros(1, device="cuda", dtype=torch.int64)
    # A short context keeps the decode kernel (one launch, no split) shorter than the host path.
    host, dev, num_pages = make_table([16], 16)
    kc, vc = make_cache(num_pages, 16, 8, 128, "NHD", torch.bfloat16)
    append_indptr = torch.tensor([0, 1], device="cuda", dtype=torch.int32)
    wrapper = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    wrapper.plan(host[0], dev[1], host[2], 32, 8, 128, 16, q_data_type=torch.bfloat16)
    attn = torch.empty_like(q)
    return {
        "rmsnorm": lambda: flashserve.rmsnorm(x, w, out=out),
        "fused_add_rmsnorm": lambda: flashserve.fused_add_rmsnorm(x, r, w, out=out),
        "silu_and_mul": lambda: flashserve.silu_and_mul(gate, out=act),
        "apply_rope_pos_ids_inplace": lambda: flashserve.apply_rope_pos_ids_inplace(q, k, pos),
        "append_paged_kv_cache": lambda: flashserve.append_paged_kv_cache(
            k, k, append_indptr, (kc, vc), dev[1], dev[0], dev[2]
        ),
        "decode run": lambda: wrapper.run(q, (kc, vc), out=attn),
    }


NAMES = [
    "rmsnorm",
    "fused_add_rmsnorm",
    "silu_and_mul",
    "apply_rope_pos_ids_inplace",
    "append_paged_kv_cache",
    "decode run",
]


@pytest.mark.parametrize("name", NAMES)
def test_call_overhead(name):
    fn = cases()[name]
    us = per_call_us(fn)
    limit, torch_us = host_limit_us()
    print(f"{name}: {us:.2f} us per call (torch.add {torch_us:.2f} us; limit {limit:.1f} us)")
    assert us <= limit, (
        f"{name}: {us:.2f} us per call from Python (limit {limit:.1f} us on this host, where "
        f"torch.add takes {torch_us:.2f} us)"
    )
