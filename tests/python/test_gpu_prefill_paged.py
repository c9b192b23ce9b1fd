"""BatchPrefillWithPagedKVCacheWrapper against a torch reference (METHOD.md's accuracy rule): the
pages of each request gathered into contiguous k / v and fed to the ragged reference of
test_gpu_prefill. Page sizes 1 / 16 / 64, NHD and HND, GQA, causal (bottom-right: chunked
prefill over a cached prefix), the combined ``[pages, 2, ...]`` cache, LSE, variants, CUDA-graph
replay after a re-plan, torch.compile, and qk head_dim 192 with v head_dim 128 (a v cache of 128).
"""

import os

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from accuracy import assert_written, poison  # noqa: E402
from paged_ref import gather, make_cache, make_table  # noqa: E402
from test_gpu_prefill import check  # noqa: E402

pytestmark = requires_gpu

# q_len <= kv_len per request: the queries are the request's last kv positions.
Q_LENS = [1, 113, 0, 300, 64]
KV_LENS = [7, 113, 5, 1023, 64]


def contiguous_kv(k_cache, v_cache, host, page_size, layout):
    """The requests' keys and values gathered from their pages: ragged k, v and kv indptr."""
    indptr, indices, last = host
    ks, vs, kv = [], [], [0]
    for b in range(len(last)):
        pages = indices[indptr[b] : indptr[b + 1]].to(k_cache.device)
        n = int(indptr[b + 1] - indptr[b])
        length = 0 if n == 0 else (n - 1) * page_size + int(last[b])
        ks.append(gather(k_cache, pages, length, page_size, layout))
        vs.append(gather(v_cache, pages, length, page_size, layout))
        kv.append(kv[-1] + length)
    return torch.cat(ks), torch.cat(vs), kv


def paged_batch(q_lens, kv_lens, hq, hk, d, page_size, layout, dtype=torch.bfloat16, dv=None):
    host, dev, num_pages = make_table(kv_lens, page_size)
    kc, vc = make_cache(num_pages, page_size, hk, d, layout, dtype, head_dim_v=dv)
    qo = [0] + torch.tensor(q_lens).cumsum(0).tolist()
    q = torch.randn(qo[-1], hq, d, device="cuda").to(dtype)
    return q, qo, kc, vc, host, dev


def check_paged(out, lse, q, qo, kc, vc, host, page_size, layout, dtype, **kw):
    k, v, kv = contiguous_kv(kc, vc, host, page_size, layout)
    check(out, lse, q, k, v, qo, kv, dtype, **kw)


@pytest.mark.parametrize("page_size", [1, 16, 64])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("causal", [False, True])
def test_paged_prefill(page_size, layout, causal):
    hq, hk, d = 32, 8, 128  # GQA group 4
    q, qo, kc, vc, host, dev = paged_batch(Q_LENS, KV_LENS, hq, hk, d, page_size, layout)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout=layout)
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        host[0],  # host indptr / last_page_len: no device-to-host copy in plan
        dev[1],
        host[2],
        hq,
        hk,
        d,
        page_size,
        causal=causal,
        q_data_type=torch.bfloat16,
    )
    assert w.plan_info["page_size"] == page_size
    assert w.plan_info["total_kv"] == sum(KV_LENS)
    out = poison(torch.empty_like(q))
    got, lse = w.run(q, (kc, vc), out=out, return_lse=True)
    assert got is out
    check_paged(out, lse, q, qo, kc, vc, host, page_size, layout, torch.bfloat16, causal=causal)


@pytest.mark.parametrize(
    "hq,hk,d,dtype,layout",
    [
        (16, 16, 64, torch.float16, "NHD"),  # MHA, head_dim 64
        (8, 2, 256, torch.bfloat16, "HND"),  # head_dim 256
        (28, 4, 128, torch.float16, "HND"),  # group 7
    ],
)
def test_paged_prefill_heads_dims_dtypes(hq, hk, d, dtype, layout):
    page_size = 16
    q, qo, kc, vc, host, dev = paged_batch(Q_LENS, KV_LENS, hq, hk, d, page_size, layout, dtype)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout=layout)
    # Device page table: plan copies indptr / last_page_len to the host itself.
    w.plan(
        torch.tensor(qo, dtype=torch.int32, device="cuda"),
        *dev,
        hq,
        hk,
        d,
        page_size,
        causal=True,
        q_data_type=dtype,
    )
    out, lse = w.run(q, (kc, vc), return_lse=True)
    check_paged(out, lse, q, qo, kc, vc, host, page_size, layout, dtype, causal=True)


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_combined_cache_tensor(layout):
    """FlashInfer's one-tensor cache, [pages, 2, page_size, heads, dim] (NHD) or [pages, 2, heads,
    page_size, dim] (HND): split into strided views, never copied."""
    hq, hk, d, page_size = 32, 8, 128, 16
    host, dev, num_pages = make_table([300, 5, 77], page_size)
    inner = (page_size, hk, d) if layout == "NHD" else (hk, page_size, d)
    both = torch.randn(num_pages, 2, *inner, device="cuda").to(torch.bfloat16)
    qo = [0, 200, 205, 282]
    q = torch.randn(qo[-1], hq, d, device="cuda").to(torch.bfloat16)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout=layout)
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        host[0],
        dev[1],
        host[2],
        hq,
        hk,
        d,
        page_size,
        causal=True,
        q_data_type="bfloat16",
    )
    out = poison(torch.empty_like(q))
    w.run(q, both, out=out)
    expect = w.run(q, (both[:, 0], both[:, 1]))
    assert torch.equal(out, expect)
    kc, vc = both[:, 0], both[:, 1]
    check_paged(out, None, q, qo, kc, vc, host, page_size, layout, torch.bfloat16, causal=True)


def test_paged_matches_ragged_on_the_gathered_kv():
    hq, hk, d, page_size = 32, 8, 128, 16
    q, qo, kc, vc, host, dev = paged_batch([77, 256], [300, 256], hq, hk, d, page_size, "NHD")
    k, v, kv = contiguous_kv(kc, vc, host, page_size, "NHD")
    paged = flashserve.BatchPrefillWithPagedKVCacheWrapper()
    paged.plan(
        torch.tensor(qo, dtype=torch.int32),
        *host,
        hq,
        hk,
        d,
        page_size,
        causal=True,
        q_data_type=torch.bfloat16,
    )
    ragged = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    ragged.plan(
        torch.tensor(qo, dtype=torch.int32),
        torch.tensor(kv, dtype=torch.int32),
        hq,
        hk,
        d,
        causal=True,
        q_data_type=torch.bfloat16,
    )
    out_p, lse_p = paged.run(q, (kc, vc), return_lse=True)
    out_r, lse_r = ragged.run(q, k, v, return_lse=True)
    torch.testing.assert_close(out_p, out_r, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse_p, lse_r, atol=1e-3, rtol=1e-3)


def test_paged_variants_window_soft_cap_scales_and_custom_mask():
    hq, hk, d, page_size = 16, 4, 128, 16
    q_lens, kv_lens = [50, 9, 33], [200, 9, 40]
    q, qo, kc, vc, host, dev = paged_batch(q_lens, kv_lens, hq, hk, d, page_size, "NHD")
    qo_t = torch.tensor(qo, dtype=torch.int32)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper()
    w.plan(
        qo_t,
        *dev,
        hq,
        hk,
        d,
        page_size,
        causal=True,
        sm_scale=0.07,
        window_left=32,
        logits_soft_cap=20.0,
        q_data_type=torch.bfloat16,
    )
    common = dict(causal=True, window_left=32, soft_cap=20.0)
    out = w.run(q, (kc, vc))
    check_paged(
        out, None, q, qo, kc, vc, host, page_size, "NHD", torch.bfloat16, sm_scale=0.07, **common
    )
    # q_scale * k_scale multiply the softmax scale, v_scale the output (16-bit cache).
    scaled = w.run(q, (kc, vc), q_scale=0.5, k_scale=2.0, v_scale=1.0)
    assert torch.equal(scaled, out)
    scaled = w.run(q, (kc, vc), k_scale=0.5, v_scale=2.0)
    k, v, kv = contiguous_kv(kc, vc, host, page_size, "NHD")
    check(scaled, None, q, k * 0.5, v * 2.0, qo, kv, torch.bfloat16, sm_scale=0.07, **common)
    # Custom masks are over each request's [q_len, kv_len], kv_len from the page table.
    masks = [torch.rand(n, m, device="cuda") < 0.7 for n, m in zip(q_lens, kv_lens)]
    flat = torch.cat([m.reshape(-1) for m in masks])
    w.plan(qo_t, *dev, hq, hk, d, page_size, custom_mask=flat, q_data_type=torch.bfloat16)
    out = w.run(q, (kc, vc))
    check_paged(out, None, q, qo, kc, vc, host, page_size, "NHD", torch.bfloat16, masks=masks)


def test_cuda_graph_replay_after_replan():
    hq, hk, d, page_size = 32, 8, 128, 16
    max_pages = 64
    pool = make_cache(max_pages, page_size, hk, d, "HND", torch.bfloat16)
    q = torch.randn(128, hq, d, device="cuda").to(torch.bfloat16)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(
        kv_layout="HND",
        use_cuda_graph=True,
        max_batch_size=4,
        max_num_pages=max_pages,
        max_q_tokens=q.shape[0],
    )
    out = torch.empty_like(q)

    def plan(q_lens, kv_lens):
        host, _, _ = make_table(kv_lens, page_size, num_pages=max_pages)
        qo = [0] + torch.tensor(q_lens).cumsum(0).tolist()
        w.plan(
            torch.tensor(qo, dtype=torch.int32),
            *host,
            hq,
            hk,
            d,
            page_size,
            causal=True,
            q_data_type=torch.bfloat16,
        )
        return qo, host

    plan([100, 28], [400, 300])
    w.run(q, pool, out=out)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w.run(q, pool, out=out)
    # Same totals (128 queries, 700 keys), another split between requests and other pages.
    for q_lens, kv_lens in (([100, 28], [400, 300]), ([1, 120, 7], [200, 450, 50])):
        qo, host = plan(q_lens, kv_lens)
        poison(out)
        g.replay()
        torch.cuda.synchronize()
        check_paged(out, None, q, qo, *pool, host, page_size, "HND", torch.bfloat16, causal=True)


def test_cuda_graph_capacity_errors():
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(
        use_cuda_graph=True, max_batch_size=2, max_num_pages=4
    )
    host, _, _ = make_table([16, 16, 16], 16)
    with pytest.raises(flashserve.InvalidArgumentError, match="CUDA-graph capacity"):
        w.plan(torch.tensor([0, 1, 2, 3], dtype=torch.int32), *host, 8, 8, 128, 16)
    with pytest.raises(flashserve.InvalidArgumentError, match="max_num_pages"):
        flashserve.BatchPrefillWithPagedKVCacheWrapper(use_cuda_graph=True, max_batch_size=2)


def test_compile_traces_the_custom_op():
    torch._dynamo.reset()
    hq, hk, d, page_size = 32, 8, 128, 16
    q, qo, kc, vc, host, dev = paged_batch([40, 60], [100, 60], hq, hk, d, page_size, "NHD")
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper()
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        *host,
        hq,
        hk,
        d,
        page_size,
        causal=True,
        q_data_type=torch.bfloat16,
    )
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def attend(q, kc, vc):
        return w.run(q, (kc, vc), return_lse=True)

    expect = attend(q, kc, vc)
    got = torch.compile(attend, fullgraph=True, backend=recording_backend)(q, kc, vc)
    assert len(graphs) == 1 and "flashserve.prefill_run" in graphs[0]
    for e, g in zip(expect, got):
        assert torch.equal(e, g)


def test_errors():
    hq, hk, d, page_size = 8, 8, 128, 16
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper()
    q = torch.randn(4, hq, d, device="cuda", dtype=torch.bfloat16)
    kc, vc = make_cache(4, page_size, hk, d, "NHD", torch.bfloat16)
    qo = torch.tensor([0, 2, 4], dtype=torch.int32)
    with pytest.raises(flashserve.Error, match="call plan"):
        w.run(q, (kc, vc))
    with pytest.raises(flashserve.InvalidArgumentError, match="kv_layout"):
        flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout="NDH")
    with pytest.raises(flashserve.UnsupportedError, match="kv_data_type"):
        w.plan(
            qo,
            torch.tensor([0, 1, 2]),
            torch.tensor([0, 1]),
            torch.tensor([5, 5]),
            hq,
            hk,
            d,
            page_size,
            q_data_type=torch.bfloat16,
            kv_data_type=torch.float16,
        )
    with pytest.raises(
        flashserve.InvalidArgumentError,
        match=r"req\.paged_kv_last_page_len: request 1: expected a value in \[1, 16\]",
    ):
        w.plan(
            qo,
            torch.tensor([0, 1, 2]),
            torch.tensor([0, 1]),
            torch.tensor([5, 17]),
            hq,
            hk,
            d,
            page_size,
            q_data_type=torch.bfloat16,
        )
    w.plan(
        qo,
        torch.tensor([0, 1, 2]),
        torch.tensor([0, 1]),
        torch.tensor([5, 16]),
        hq,
        hk,
        d,
        page_size,
        q_data_type=torch.bfloat16,
    )
    with pytest.raises(flashserve.InvalidArgumentError, match="prefill_run: cache.k_cache"):
        w.run(q, (kc.transpose(1, 2), vc.transpose(1, 2)))  # an HND cache in an NHD wrapper
    with pytest.raises(flashserve.InvalidArgumentError, match="paged_kv_cache"):
        w.run(q, (kc, vc, kc))
    with pytest.raises(flashserve.InvalidArgumentError, match="q_scale, k_scale"):
        w.run(q, (kc, vc), k_scale=0.0)
    assert_written(w.run(q, (kc, vc)))


# ---- qk head_dim 192 with v head_dim 128 (DeepSeek): the v cache's rows have 128 elements ------

Q_LENS_192, KV_LENS_192 = [1, 113, 0, 300, 64, 1], [7, 203, 5, 1023, 64, 4096]


def plan_paged_192_128(w, qo, table, hq, hk, page_size, dtype, head_dim_vo=128, **kw):
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        *table,
        hq,
        hk,
        192,
        page_size,
        head_dim_vo=head_dim_vo,
        q_data_type=dtype,
        **kw,
    )


@pytest.mark.parametrize("page_size", [1, 16, 64])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("causal", [False, True])
def test_paged_prefill_qk192_v128(page_size, layout, causal):
    hq, hk = 16, 2
    dtype = torch.float16 if page_size == 64 else torch.bfloat16
    q, qo, kc, vc, host, dev = paged_batch(
        Q_LENS_192, KV_LENS_192, hq, hk, 192, page_size, layout, dtype, dv=128
    )
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout=layout)
    plan_paged_192_128(w, qo, (host[0], dev[1], host[2]), hq, hk, page_size, dtype, causal=causal)
    assert (w.plan_info["head_dim"], w.plan_info["head_dim_v"]) == (192, 128)
    out = poison(torch.empty(q.shape[0], hq, 128, dtype=dtype, device="cuda"))
    got, lse = w.run(q, (kc, vc), out=out, return_lse=True)
    assert got is out
    check_paged(out, lse, q, qo, kc, vc, host, page_size, layout, dtype, causal=causal)
    alloc = w.run(q, (kc, vc))
    assert alloc.shape == (q.shape[0], hq, 128)
    assert torch.equal(alloc, out)


def test_paged_qk192_v128_variants_and_ragged_match():
    hq, hk, page_size = 16, 4, 16
    q_lens, kv_lens = [50, 9, 33], [200, 9, 40]
    q, qo, kc, vc, host, dev = paged_batch(q_lens, kv_lens, hq, hk, 192, page_size, "HND", dv=128)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout="HND")
    common = dict(causal=True, window_left=32)
    plan_paged_192_128(
        w, qo, dev, hq, hk, page_size, torch.bfloat16, logits_soft_cap=20.0, **common
    )
    out, lse = w.run(q, (kc, vc), return_lse=True)
    check_paged(
        out, lse, q, qo, kc, vc, host, page_size, "HND", torch.bfloat16, soft_cap=20.0, **common
    )
    # The ragged wrapper on the gathered tokens gives the same result.
    k, v, kv = contiguous_kv(kc, vc, host, page_size, "HND")
    assert k.shape[-1] == 192 and v.shape[-1] == 128
    ragged = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    ragged.plan(
        torch.tensor(qo, dtype=torch.int32),
        torch.tensor(kv, dtype=torch.int32),
        hq,
        hk,
        192,
        128,
        q_data_type=torch.bfloat16,
        logits_soft_cap=20.0,
        **common,
    )
    out_r, lse_r = ragged.run(q, k, v, return_lse=True)
    torch.testing.assert_close(out, out_r, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, lse_r, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("page_size,layout", [(16, "NHD"), (64, "HND")])
def test_paged_qk192_v128_tma_equals_gather(page_size, layout):
    """Page sizes that load K and V by TMA give the same bits as the gather path
    (FLASHSERVE_PREFILL_PAGED_GATHER=1, read at each run)."""
    hq, hk = 16, 2
    q, qo, kc, vc, host, dev = paged_batch(
        Q_LENS_192, KV_LENS_192, hq, hk, 192, page_size, layout, dv=128
    )
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper(kv_layout=layout)
    plan_paged_192_128(w, qo, host, hq, hk, page_size, torch.bfloat16, causal=True)
    tma, lse_tma = w.run(q, (kc, vc), return_lse=True)
    os.environ["FLASHSERVE_PREFILL_PAGED_GATHER"] = "1"
    try:
        gather, lse_gather = w.run(q, (kc, vc), return_lse=True)
        torch.cuda.synchronize()
    finally:
        del os.environ["FLASHSERVE_PREFILL_PAGED_GATHER"]
    assert torch.equal(tma, gather)
    assert torch.equal(lse_tma, lse_gather)


def test_paged_qk192_v128_errors():
    hq, hk, page_size = 8, 2, 16
    q, qo, kc, vc, host, dev = paged_batch([4, 6], [40, 20], hq, hk, 192, page_size, "NHD", dv=128)
    w = flashserve.BatchPrefillWithPagedKVCacheWrapper()
    with pytest.raises(flashserve.UnsupportedError, match=r"head_dim_vo: .*got 64"):
        plan_paged_192_128(w, qo, host, hq, hk, page_size, torch.bfloat16, head_dim_vo=64)
    plan_paged_192_128(w, qo, host, hq, hk, page_size, torch.bfloat16)
    with pytest.raises(flashserve.InvalidArgumentError, match=r"prefill_run: cache.v_cache: .*128"):
        w.run(q, (kc, kc))  # a v cache of 192
    with pytest.raises(flashserve.InvalidArgumentError, match=r"prefill_run: out: .*128"):
        w.run(q, (kc, vc), out=torch.empty_like(q))
