"""torch.compile(fullgraph=True) traces the flashserve ops as custom ops (no graph breaks), and the
compiled function computes what the eager one does."""

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from paged_ref import make_cache, make_table  # noqa: E402

pytestmark = requires_gpu

HQ, HK, D, PAGE = 32, 8, 128, 16


def layer(x, residual, w_norm, w_qkv, w_up, pos, k_cache, v_cache, table, append_indptr, wrapper):
    """One decode layer's flashserve calls around plain torch matmuls."""
    flashserve.fused_add_rmsnorm(x, residual, w_norm)
    qkv = (x @ w_qkv).view(x.shape[0], HQ + 2 * HK, D)
    q, k, v = qkv[:, :HQ], qkv[:, HQ : HQ + HK], qkv[:, HQ + HK :]
    flashserve.apply_rope_pos_ids_inplace(q, k, pos)
    indptr, indices, last = table
    flashserve.append_paged_kv_cache(k, v, append_indptr, (k_cache, v_cache), indices, indptr, last)
    attn, lse = wrapper.run(q, (k_cache, v_cache), return_lse=True)
    h = flashserve.rmsnorm(attn.reshape(x.shape[0], -1), w_norm)
    up = flashserve.silu_and_mul(h @ w_up)
    merged, _ = flashserve.merge_state(attn, lse, attn, lse)
    return up, merged, flashserve.layernorm(h, w_norm, None, 1e-5)


def inputs():
    lengths = [40, 300, 7]
    host, dev, num_pages = make_table(lengths, PAGE)
    kc, vc = make_cache(num_pages, PAGE, HK, D, "NHD", torch.bfloat16)
    batch, hidden = len(lengths), HQ * D
    bf = dict(device="cuda", dtype=torch.bfloat16)
    x, residual = torch.randn(batch, hidden, **bf), torch.randn(batch, hidden, **bf)
    w_norm = torch.randn(hidden, **bf)
    w_qkv = torch.randn(hidden, (HQ + 2 * HK) * D, **bf) / 64
    w_up = torch.randn(hidden, 2 * 512, **bf) / 64
    pos = torch.tensor([n - 1 for n in lengths], device="cuda")
    append_indptr = torch.arange(batch + 1, device="cuda", dtype=torch.int32)
    wrapper = flashserve.BatchDecodeWithPagedKVCacheWrapper()
    wrapper.plan(host[0], dev[1], host[2], HQ, HK, D, PAGE, q_data_type=torch.bfloat16)
    return [x, residual, w_norm, w_qkv, w_up, pos, kc, vc, tuple(dev), append_indptr, wrapper]


def clone(args):
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


def test_custom_ops_are_registered_with_fake_impls():
    for name in (
        "rmsnorm",
        "fused_add_rmsnorm",
        "layernorm",
        "act_and_mul",
        "apply_rope",
        "apply_rope_cos_sin_cache",
        "append_paged_kv_cache",
        "merge_state",
        "merge_states",
        "decode_run",
    ):
        assert hasattr(torch.ops.flashserve, name), name
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(4, 256, device="cuda", dtype=torch.bfloat16)
        out = flashserve.rmsnorm(x, torch.empty(256, device="cuda", dtype=torch.bfloat16))
        assert out.shape == x.shape
        act = flashserve.silu_and_mul(x)
        assert act.shape == (4, 128)


def test_fullgraph_compile_traces_the_ops_and_matches_eager():
    torch._dynamo.reset()
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    args = inputs()
    expect = layer(*clone(args))
    got = torch.compile(layer, fullgraph=True, backend=recording_backend)(*clone(args))
    assert len(graphs) == 1, f"expected one graph, got {len(graphs)}"
    for op in (
        "fused_add_rmsnorm",
        "apply_rope",
        "append_paged_kv_cache",
        "decode_run",
        "rmsnorm",
        "act_and_mul",
        "merge_state",
        "layernorm",
    ):
        assert f"flashserve.{op}" in graphs[0], f"{op} not in the traced graph"
    for e, g in zip(expect, got):
        assert torch.equal(e, g)


def test_inductor_compile_matches_eager():
    torch._dynamo.reset()
    args = inputs()
    expect = layer(*clone(args))
    got = torch.compile(layer, fullgraph=True)(*clone(args))
    for e, g in zip(expect, got):
        torch.testing.assert_close(g, e, atol=2e-2, rtol=2e-2)
