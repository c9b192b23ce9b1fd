"""BatchDecodeWithPagedKVCacheWrapper against a torch reference (METHOD.md's accuracy rule), its
variants, determinism, and CUDA-graph capture of run() replayed after a re-plan."""

import math

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from accuracy import assert_reduction_close, assert_written, poison  # noqa: E402
from paged_ref import decode_reference, make_cache, make_table  # noqa: E402

pytestmark = requires_gpu

RAGGED = [1, 7, 113, 0, 1023, 4097, 16]


def check(out, lse, q, kc, vc, host, page_size, layout, low_dtype, **kw):
    ref_out, ref_lse = decode_reference(q, kc, vc, host, page_size, layout, **kw)
    base_out, base_lse = decode_reference(q, kc, vc, host, page_size, layout, dtype=low_dtype, **kw)
    assert_written(out)
    assert_reduction_close(out, ref_out, base_out, "out")
    if lse is not None:
        assert_reduction_close(lse, ref_lse, base_lse, "lse")


@pytest.mark.parametrize(
    "heads,head_dim,layout,dtype,page_size",
    [
        ((32, 8), 128, "NHD", torch.bfloat16, 16),  # Llama-3-8B
        ((28, 4), 128, "HND", torch.float16, 16),  # Qwen2.5-7B
        ((40, 8), 128, "NHD", torch.bfloat16, 5),  # Qwen3-14B (group 5), odd page size
        ((8, 8), 64, "NHD", torch.bfloat16, 16),  # MHA, head_dim 64
        ((16, 2), 256, "HND", torch.bfloat16, 64),  # head_dim 256
    ],
)
def test_decode_matches_reference(heads, head_dim, layout, dtype, page_size):
    hq, hk = heads
    host, dev, num_pages = make_table(RAGGED, page_size)
    kc, vc = make_cache(num_pages, page_size, hk, head_dim, layout, dtype)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper(kv_layout=layout)
    w.plan(dev[0], dev[1], dev[2], hq, hk, head_dim, page_size, q_data_type=dtype)
    q = torch.randn(len(RAGGED), hq, head_dim, device="cuda").to(dtype)
    out = poison(torch.empty_like(q))
    got, lse = w.run(q, (kc, vc), out=out, return_lse=True)
    assert got is out
    check(out, lse, q, kc, vc, host, page_size, layout, dtype)
    empty = RAGGED.index(0)
    assert bool((out[empty] == 0).all()) and bool((lse[empty] == -math.inf).all())


def test_plan_from_host_tables_and_unified_cache_tensor():
    page_size, hq, hk, d = 16, 32, 8, 128
    host, dev, num_pages = make_table([300, 5, 77], page_size)
    both = torch.randn(num_pages, 2, page_size, hk, d, device="cuda").to(torch.bfloat16)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    # Host indptr / last_page_len: no device-to-host copy in plan; indices go to the device.
    w.plan(host[0], dev[1], host[2], hq, hk, d, page_size, q_data_type="bfloat16")
    q = torch.randn(3, hq, d, device="cuda").to(torch.bfloat16)
    out = w.run(q, both)
    check(out, None, q, both[:, 0], both[:, 1], host, page_size, "NHD", torch.bfloat16)
    assert w.plan_info["batch_size"] == 3


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_cache(fp8):
    page_size, hq, hk, d = 16, 32, 8, 128
    host, dev, num_pages = make_table([1, 200, 2049], page_size)
    kc, vc = make_cache(num_pages, page_size, hk, d, "NHD", fp8, scale=0.25)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    w.plan(
        dev[0], dev[1], dev[2], hq, hk, d, page_size, q_data_type=torch.bfloat16, kv_data_type=fp8
    )
    q = torch.randn(3, hq, d, device="cuda").to(torch.bfloat16)
    out, lse = w.run(q, (kc, vc), k_scale=0.25, v_scale=0.25, return_lse=True)
    check(out, lse, q, kc, vc, host, page_size, "NHD", torch.bfloat16, k_scale=0.25, v_scale=0.25)


def test_variants_window_soft_cap_sinks_and_scales():
    page_size, hq, hk, d = 16, 16, 4, 128
    lengths = [700, 33, 1]
    host, dev, num_pages = make_table(lengths, page_size)
    kc, vc = make_cache(num_pages, page_size, hk, d, "NHD", torch.bfloat16)
    sinks = torch.randn(hq, device="cuda")
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    w.plan(
        dev[0],
        dev[1],
        dev[2],
        hq,
        hk,
        d,
        page_size,
        window_left=64,
        logits_soft_cap=30.0,
        q_data_type=torch.bfloat16,
        sm_scale=0.1,
    )
    q = torch.randn(3, hq, d, device="cuda").to(torch.bfloat16)
    out, lse = w.run(q, (kc, vc), q_scale=0.5, sinks=sinks, return_lse=True)
    check(
        out,
        lse,
        q,
        kc,
        vc,
        host,
        page_size,
        "NHD",
        torch.bfloat16,
        sm_scale=0.05,
        soft_cap=30.0,
        window_left=64,
        sinks=sinks,
    )
    # run(window_left=...) overrides the plan's; a 16-bit cache's v_scale scales the output.
    out2 = w.run(q, (kc, vc), q_scale=0.5, window_left=-1, v_scale=2.0)
    check(
        out2 / 2.0,
        None,
        q,
        kc,
        vc,
        host,
        page_size,
        "NHD",
        torch.bfloat16,
        sm_scale=0.05,
        soft_cap=30.0,
    )


def test_multi_token_queries_are_causal():
    page_size, hq, hk, d = 16, 32, 8, 128
    lengths = [50, 9, 300]
    host, dev, num_pages = make_table(lengths, page_size)
    kc, vc = make_cache(num_pages, page_size, hk, d, "NHD", torch.bfloat16)
    q_indptr = torch.tensor([0, 3, 4, 12], dtype=torch.int32)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    w.plan(
        dev[0], dev[1], dev[2], hq, hk, d, page_size, q_data_type=torch.bfloat16, q_indptr=q_indptr
    )
    q = torch.randn(12, hq, d, device="cuda").to(torch.bfloat16)
    out, lse = w.run(q, (kc, vc), return_lse=True)
    check(out, lse, q, kc, vc, host, page_size, "NHD", torch.bfloat16, q_indptr=q_indptr)


def test_deterministic_across_runs_and_batch_compositions():
    page_size, hq, hk, d = 16, 32, 8, 128
    host, dev, num_pages = make_table([5000, 17, 3000], page_size, num_pages=1000)
    kc, vc = make_cache(num_pages, page_size, hk, d, "NHD", torch.bfloat16)
    q = torch.randn(3, hq, d, device="cuda").to(torch.bfloat16)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    w.plan(
        dev[0], dev[1], dev[2], hq, hk, d, page_size, q_data_type=torch.bfloat16, deterministic=True
    )
    a, b = w.run(q, (kc, vc)).clone(), w.run(q, (kc, vc))
    assert torch.equal(a, b)
    # Request 0 alone, same pages: bitwise the same output in deterministic mode.
    w.plan(
        dev[0][:2],
        dev[1],
        dev[2][:1],
        hq,
        hk,
        d,
        page_size,
        q_data_type=torch.bfloat16,
        deterministic=True,
    )
    alone = w.run(q[:1].contiguous(), (kc, vc))
    assert torch.equal(alone[0], a[0])


def test_cuda_graph_replay_after_replan():
    page_size, hq, hk, d, cap = 16, 32, 8, 128, 8
    num_pages = 2048
    kc, vc = make_cache(num_pages, page_size, hk, d, "HND", torch.bfloat16)
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper(
        kv_layout="HND", use_cuda_graph=True, max_batch_size=cap, max_num_pages=num_pages
    )
    q_buf = torch.zeros(cap, hq, d, device="cuda", dtype=torch.bfloat16)
    out_buf = torch.zeros_like(q_buf)
    lse_buf = torch.zeros(cap, hq, device="cuda")

    def plan(lengths):
        host, dev, _ = make_table(lengths, page_size, num_pages=num_pages)
        w.plan(host[0], dev[1], host[2], hq, hk, d, page_size, q_data_type=torch.bfloat16)
        q_buf.copy_(torch.randn(cap, hq, d, device="cuda").to(torch.bfloat16))
        return host

    host = plan([4096, 3, 700])
    w.run(q_buf, (kc, vc), out=out_buf, lse=lse_buf, return_lse=True)  # warm-up outside capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w.run(q_buf, (kc, vc), out=out_buf, lse=lse_buf, return_lse=True)
    for lengths in ([4096, 3, 700], [1, 8000, 16, 0, 129, 2, 5000, 31], [20000], [64, 64]):
        host = plan(lengths)
        poison(out_buf)
        g.replay()
        torch.cuda.synchronize()
        n = len(lengths)
        check(out_buf[:n], lse_buf[:n], q_buf[:n], kc, vc, host, page_size, "HND", torch.bfloat16)
    with pytest.raises(flashserve.InvalidArgumentError, match="capacity"):
        plan([1] * (cap + 1))


def test_errors():
    w = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    q = torch.randn(2, 32, 128, device="cuda").to(torch.bfloat16)
    with pytest.raises(flashserve.Error, match="call plan"):
        w.run(q, (q, q))
    host, dev, num_pages = make_table([10, 20], 16)
    with pytest.raises(flashserve.UnsupportedError, match="pos_encoding_mode"):
        w.plan(dev[0], dev[1], dev[2], 32, 8, 128, 16, pos_encoding_mode="ROPE_LLAMA")
    w.plan(dev[0], dev[1], dev[2], 32, 8, 128, 16, q_data_type=torch.bfloat16)
    kc, vc = make_cache(num_pages, 16, 8, 128, "NHD", torch.bfloat16)
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"decode_run: q: expected dtype bfloat16"
    ):
        w.run(q.half(), (kc, vc))
    with pytest.raises(flashserve.InvalidArgumentError, match=r"decode_run: cache.k_cache"):
        w.run(q, (kc[:, :, :4], vc[:, :, :4]))
    with pytest.raises(flashserve.InvalidArgumentError, match=r"kv_layout"):
        flashserve.BatchDecodeWithPagedKVCacheWrapper(kv_layout="NDH")
    small = torch.empty(64, dtype=torch.uint8, device="cuda")
    w2 = flashserve.BatchDecodeWithPagedKVCacheWrapper(small)
    with pytest.raises(flashserve.InvalidArgumentError, match="workspace: too small"):
        w2.plan(dev[0], dev[1], dev[2], 32, 8, 128, 16, q_data_type=torch.bfloat16)
