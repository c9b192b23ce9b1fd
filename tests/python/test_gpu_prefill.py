"""BatchPrefillWithRaggedKVCacheWrapper and single_prefill_with_kv_cache against a torch reference
(METHOD.md's accuracy rule): ragged lengths, GQA, causal (bottom-right), window, soft-cap, custom
masks, LSE, CUDA-graph replay, and qk head_dim 192 with v head_dim 128 (``head_dim_vo``)."""

import math

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from accuracy import assert_reduction_close, assert_written, poison  # noqa: E402

pytestmark = requires_gpu


def reference(
    q,
    k,
    v,
    qo,
    kv,
    causal=False,
    window_left=-1,
    soft_cap=0.0,
    sm_scale=None,
    masks=None,
    dtype=torch.float64,
):
    heads, dim = q.shape[1], q.shape[2]
    scale = sm_scale or 1.0 / math.sqrt(dim)  # of the qk dim, whatever v's is
    out = torch.zeros((*q.shape[:2], v.shape[2]), dtype=dtype, device=q.device)
    lse = torch.full(q.shape[:2], -math.inf, dtype=torch.float64, device=q.device)
    for b in range(len(qo) - 1):
        qs, ks, vs = (
            q[qo[b] : qo[b + 1]].to(dtype),
            k[kv[b] : kv[b + 1]].to(dtype),
            v[kv[b] : kv[b + 1]].to(dtype),
        )
        n, m = qs.shape[0], ks.shape[0]
        if n == 0 or m == 0:
            continue
        g = heads // ks.shape[1]
        ks, vs = ks.repeat_interleave(g, 1), vs.repeat_interleave(g, 1)
        s = torch.einsum("nhd,mhd->hnm", qs, ks) * scale
        if soft_cap > 0:
            s = soft_cap * torch.tanh(s / soft_cap)
        qpos = torch.arange(n, device=q.device)[:, None] + (m - n)
        kpos = torch.arange(m, device=q.device)[None, :]
        visible = torch.ones(n, m, dtype=torch.bool, device=q.device)
        if causal:
            visible &= kpos <= qpos
        if window_left >= 0:
            visible &= kpos >= qpos - window_left
        if masks is not None:
            visible &= masks[b]
        s64 = s.double().masked_fill(~visible[None], -math.inf)
        row_lse = torch.logsumexp(s64, -1)
        p = torch.exp(s64 - row_lse[..., None]).nan_to_num(0.0)
        out[qo[b] : qo[b + 1]] = torch.einsum("hnm,mhd->nhd", p.to(dtype), vs)
        lse[qo[b] : qo[b + 1]] = row_lse.transpose(0, 1)
    return out, lse


def ragged(q_lens, kv_lens, hq, hk, d, dtype=torch.bfloat16, dv=None):
    """q, k of head dim d, v of dv (default d), and the indptrs as lists."""
    qo = [0] + torch.tensor(q_lens).cumsum(0).tolist()
    kv = [0] + torch.tensor(kv_lens).cumsum(0).tolist()
    q = torch.randn(qo[-1], hq, d, device="cuda").to(dtype)
    k = torch.randn(kv[-1], hk, d, device="cuda").to(dtype)
    v = torch.randn(kv[-1], hk, dv or d, device="cuda").to(dtype)
    return q, k, v, qo, kv


def check(out, lse, q, k, v, qo, kv, dtype, **kw):
    ref_o, ref_l = reference(q, k, v, qo, kv, **kw)
    base_o, base_l = reference(q, k, v, qo, kv, dtype=dtype, **kw)
    assert_written(out)
    assert_reduction_close(out, ref_o, base_o, "out")
    if lse is not None:
        assert_reduction_close(lse, ref_l, base_l, "lse")


@pytest.mark.parametrize("hq,hk,d", [(32, 8, 128), (16, 16, 64), (8, 2, 256)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ragged_prefill(hq, hk, d, causal, dtype):
    q_lens, kv_lens = [1, 113, 0, 300, 64], [7, 113, 5, 1023, 64]
    q, k, v, qo, kv = ragged(q_lens, kv_lens, hq, hk, d, dtype)
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        torch.tensor(kv, dtype=torch.int32),
        hq,
        hk,
        d,
        causal=causal,
        q_data_type=dtype,
    )
    out = poison(torch.empty_like(q))
    got, lse = w.run(q, k, v, out=out, return_lse=True)
    assert got is out
    check(out, lse, q, k, v, qo, kv, dtype, causal=causal)


def test_variants_window_soft_cap_scale_and_custom_mask():
    hq, hk, d = 16, 4, 128
    q_lens, kv_lens = [50, 9], [200, 9]
    q, k, v, qo, kv = ragged(q_lens, kv_lens, hq, hk, d)
    indptrs = (torch.tensor(qo, dtype=torch.int32), torch.tensor(kv, dtype=torch.int32))
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    w.plan(
        *indptrs,
        hq,
        hk,
        d,
        causal=True,
        window_left=32,
        logits_soft_cap=20.0,
        sm_scale=0.07,
        q_data_type=torch.bfloat16,
    )
    check(
        w.run(q, k, v),
        None,
        q,
        k,
        v,
        qo,
        kv,
        torch.bfloat16,
        causal=True,
        window_left=32,
        soft_cap=20.0,
        sm_scale=0.07,
    )
    masks = [torch.rand(n, m, device="cuda") < 0.7 for n, m in zip(q_lens, kv_lens)]
    flat = torch.cat([m.reshape(-1) for m in masks])
    w.plan(*indptrs, hq, hk, d, custom_mask=flat, q_data_type=torch.bfloat16)
    check(w.run(q, k, v), None, q, k, v, qo, kv, torch.bfloat16, masks=masks)


def test_single_prefill():
    q, k, v, qo, kv = ragged([77], [300], 32, 8, 128)
    out, lse = flashserve.single_prefill_with_kv_cache(q, k, v, causal=True, return_lse=True)
    check(out, lse, q, k, v, qo, kv, torch.bfloat16, causal=True)


def test_cuda_graph_replay_after_replan():
    hq, hk, d = 32, 8, 128
    q, k, v, qo, kv = ragged([100, 28], [400, 300], hq, hk, d)
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper(
        use_cuda_graph=True, max_batch_size=4, max_q_tokens=q.shape[0]
    )
    out = torch.empty_like(q)

    def plan(q_lens, kv_lens):
        qo = [0] + torch.tensor(q_lens).cumsum(0).tolist()
        kv = [0] + torch.tensor(kv_lens).cumsum(0).tolist()
        w.plan(
            torch.tensor(qo, dtype=torch.int32),
            torch.tensor(kv, dtype=torch.int32),
            hq,
            hk,
            d,
            causal=True,
            q_data_type=torch.bfloat16,
        )
        return qo, kv

    plan([100, 28], [400, 300])
    w.run(q, k, v, out=out)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w.run(q, k, v, out=out)
    # Same totals (128 queries, 700 keys), another split between requests.
    for q_lens, kv_lens in (([100, 28], [400, 300]), ([1, 120, 7], [200, 450, 50])):
        qo, kv = plan(q_lens, kv_lens)
        poison(out)
        g.replay()
        torch.cuda.synchronize()
        check(out, None, q, k, v, qo, kv, torch.bfloat16, causal=True)


def test_errors():
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    q = torch.randn(4, 8, 128, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(flashserve.Error, match="call plan"):
        w.run(q, q, q)
    with pytest.raises(flashserve.UnsupportedError, match="pos_encoding_mode"):
        w.plan(
            torch.tensor([0, 4]), torch.tensor([0, 4]), 8, 8, 128, pos_encoding_mode="ROPE_LLAMA"
        )
    w.plan(torch.tensor([0, 4]), torch.tensor([0, 4]), 8, 8, 128, q_data_type=torch.bfloat16)
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"prefill_run: q: expected dtype bfloat16"
    ):
        w.run(q.half(), q, q)


# ---- qk head_dim 192 with v head_dim 128 (DeepSeek) ---------------------------------------------

Q_LENS_192, KV_LENS_192 = [1, 113, 0, 300, 64, 1, 65], [7, 113, 5, 1023, 64, 4096, 64]


def plan_192_128(w, qo, kv, hq, hk, dtype, **kw):
    w.plan(
        torch.tensor(qo, dtype=torch.int32),
        torch.tensor(kv, dtype=torch.int32),
        hq,
        hk,
        192,
        128,
        q_data_type=dtype,
        **kw,
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ragged_prefill_qk192_v128(causal, dtype):
    hq, hk = 16, 2
    q, k, v, qo, kv = ragged(Q_LENS_192, KV_LENS_192, hq, hk, 192, dtype, dv=128)
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    plan_192_128(w, qo, kv, hq, hk, dtype, causal=causal)
    info = w.plan_info
    assert (info["head_dim"], info["head_dim_v"]) == (192, 128)
    assert info["flops"] > 0
    out = poison(torch.empty(q.shape[0], hq, 128, dtype=dtype, device="cuda"))
    got, lse = w.run(q, k, v, out=out, return_lse=True)
    assert got is out
    check(out, lse, q, k, v, qo, kv, dtype, causal=causal)
    # Without out=, the wrapper allocates [total_q, heads, 128].
    alloc = w.run(q, k, v)
    assert alloc.shape == (q.shape[0], hq, 128) and alloc.dtype == dtype
    assert torch.equal(alloc, out)


def test_ragged_prefill_qk192_v128_variants():
    hq, hk = 16, 4
    q_lens, kv_lens = [50, 9, 0, 200], [200, 9, 3, 700]
    q, k, v, qo, kv = ragged(q_lens, kv_lens, hq, hk, 192, dv=128)
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    common = dict(causal=True, window_left=32)
    plan_192_128(w, qo, kv, hq, hk, torch.bfloat16, logits_soft_cap=20.0, **common)
    out, lse = w.run(q, k, v, return_lse=True)
    check(out, lse, q, k, v, qo, kv, torch.bfloat16, soft_cap=20.0, **common)
    masks = [torch.rand(n, m, device="cuda") < 0.7 for n, m in zip(q_lens, kv_lens)]
    flat = torch.cat([m.reshape(-1) for m in masks])
    plan_192_128(w, qo, kv, hq, hk, torch.bfloat16, custom_mask=flat, sm_scale=0.05)
    check(w.run(q, k, v), None, q, k, v, qo, kv, torch.bfloat16, masks=masks, sm_scale=0.05)


def test_single_prefill_qk192_v128():
    q, k, v, qo, kv = ragged([77], [300], 16, 2, 192, torch.float16, dv=128)
    out, lse = flashserve.single_prefill_with_kv_cache(q, k, v, causal=True, return_lse=True)
    assert out.shape == (77, 16, 128)
    check(out, lse, q, k, v, qo, kv, torch.float16, causal=True)


def test_qk192_v128_errors():
    hq, hk = 8, 2
    q, k, v, qo, kv = ragged([4, 6], [10, 6], hq, hk, 192, dv=128)
    qo_t, kv_t = torch.tensor(qo, dtype=torch.int32), torch.tensor(kv, dtype=torch.int32)
    w = flashserve.BatchPrefillWithRaggedKVCacheWrapper()
    for qk, vo in ((128, 64), (256, 128), (192, 64), (128, 192)):
        with pytest.raises(flashserve.UnsupportedError, match=rf"head_dim_vo: .*got {vo}"):
            w.plan(qo_t, kv_t, hq, hk, qk, vo, q_data_type=torch.bfloat16)
    plan_192_128(w, qo, kv, hq, hk, torch.bfloat16)
    with pytest.raises(flashserve.InvalidArgumentError, match=r"prefill_run: v: .*128"):
        w.run(q, k, k)  # v with k's 192
    with pytest.raises(flashserve.InvalidArgumentError, match=r"prefill_run: out: .*128"):
        w.run(q, k, v, out=torch.empty_like(q))
    # Planned as 192 / 192 (head_dim_vo None), the 128-wide v does not fit.
    w.plan(qo_t, kv_t, hq, hk, 192, q_data_type=torch.bfloat16)
    assert w.plan_info["head_dim_v"] == 192
    with pytest.raises(flashserve.InvalidArgumentError, match=r"prefill_run: v: .*192"):
        w.run(q, k, v)
    # In CUDA-graph mode the output's head dim is part of the fixed capacity.
    g = flashserve.BatchPrefillWithRaggedKVCacheWrapper(use_cuda_graph=True, max_batch_size=4)
    plan_192_128(g, qo, kv, hq, hk, torch.bfloat16)
    with pytest.raises(flashserve.InvalidArgumentError, match="head_dim_v 128 -> 192"):
        g.plan(qo_t, kv_t, hq, hk, 192, 192, q_data_type=torch.bfloat16)
