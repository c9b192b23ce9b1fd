"""The elementwise families against torch references (METHOD.md's rules): norms, activations,
RoPE, append_paged_kv_cache, merge_state(s); plus argument errors with real tensors."""

import math

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from accuracy import (  # noqa: E402
    assert_elementwise_close,
    assert_reduction_close,
    assert_written,
    poison,
)

pytestmark = requires_gpu
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def randn(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device="cuda", dtype=torch.float32).to(dtype)


# ---- norms ---------------------------------------------------------------------------------------


def rms_ref(x, w, eps, gemma=False):
    x64 = x.double()
    w64 = w.double() + (1.0 if gemma else 0.0)
    return x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps) * w64


def rms_base(x, w, eps, gemma=False):
    w = w + 1 if gemma else w
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 4096), (7, 113), (113, 1023), (16, 8192)])
@pytest.mark.parametrize("gemma", [False, True])
def test_rmsnorm(dtype, tokens, hidden, gemma):
    x, w = randn(tokens, hidden, dtype=dtype), randn(hidden, dtype=dtype)
    out = poison(torch.empty_like(x))
    fn = flashserve.gemma_rmsnorm if gemma else flashserve.rmsnorm
    assert fn(x, w, 1e-6, out=out) is out
    assert_written(out)
    assert_reduction_close(out, rms_ref(x, w, 1e-6, gemma), rms_base(x, w, 1e-6, gemma))


def test_rmsnorm_in_place_on_a_per_head_slice_of_packed_qkv():
    # q-norm of Qwen3-style models: [tokens, 32 + 2 * 8 heads, 128], normalize q heads in place.
    qkv = randn(9, 48, 128)
    ref_rest = qkv[:, 32:].clone()
    q = qkv[:, :32]
    w = randn(128)
    expect, base = rms_ref(q, w, 1e-6), rms_base(q, w, 1e-6)
    flashserve.rmsnorm(q, w, 1e-6, out=q)
    assert_reduction_close(q, expect, base)
    assert torch.equal(qkv[:, 32:], ref_rest), "rows outside the slice changed"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gemma", [False, True])
def test_fused_add_rmsnorm_in_place(dtype, gemma):
    x, r, w = randn(33, 4096, dtype=dtype), randn(33, 4096, dtype=dtype), randn(4096, dtype=dtype)
    s64 = x.double() + r.double()
    s_low = x + r
    fn = flashserve.gemma_fused_add_rmsnorm if gemma else flashserve.fused_add_rmsnorm
    assert fn(x, r, w, 1e-5) is None
    assert_elementwise_close(r, s64, dtype, "residual")
    ref = rms_ref(s64, w, 1e-5, gemma)
    assert_reduction_close(x, ref, rms_base(s_low, w, 1e-5, gemma), "input (normalized in place)")


def test_fused_add_rmsnorm_out_of_place_leaves_input():
    x, r, w = randn(5, 1024), randn(5, 1024), randn(1024)
    x0, s64 = x.clone(), x.double() + r.double()
    out = poison(torch.empty_like(x))
    flashserve.fused_add_rmsnorm(x, r, w, out=out)
    assert torch.equal(x, x0)
    assert_reduction_close(out, rms_ref(s64, w, 1e-6), rms_base(x0 + r, w, 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm(dtype, bias):
    x, w = randn(17, 2048, dtype=dtype), randn(2048, dtype=dtype)
    b = randn(2048, dtype=dtype) if bias else None
    out = flashserve.layernorm(x, w, b, 1e-5)
    x64 = x.double()
    ref = (
        (x64 - x64.mean(-1, keepdim=True))
        * torch.rsqrt(x64.var(-1, unbiased=False, keepdim=True) + 1e-5)
        * w.double()
    )
    base = torch.nn.functional.layer_norm(x, (2048,), w, b, 1e-5)
    if bias:
        ref = ref + b.double()
    assert_written(out)
    assert_reduction_close(out, ref, base)


def test_rmsnorm_fp8_out():
    x, w = randn(64, 4096), randn(4096)
    scale = torch.tensor([0.05], device="cuda", dtype=torch.float32)
    out = poison(torch.empty(64, 4096, device="cuda", dtype=torch.float8_e4m3fn))
    flashserve.rmsnorm(x, w, out=out, out_scale=scale)
    ref = (rms_ref(x, w, 1e-6) / 0.05).clamp(-448, 448)
    got = out.double()
    assert_written(got)
    err = (got - ref).abs()
    assert bool((err <= 0.07 * ref.abs() + 2.0**-9).all()), f"max fp8 error {err.max().item():.3g}"


# ---- activations ---------------------------------------------------------------------------------

ACTS = {
    "silu_and_mul": lambda a: a * torch.sigmoid(a),
    "gelu_and_mul": lambda a: 0.5 * a * (1 + torch.erf(a / math.sqrt(2))),
    "gelu_tanh_and_mul": lambda a: 0.5
    * a
    * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
}


@pytest.mark.parametrize("name", sorted(ACTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d", [(1, 14336), (7, 113), (129, 1), (16, 4096)])
def test_act_and_mul(name, dtype, rows, d):
    x = randn(rows, 2 * d, dtype=dtype)
    out = poison(x.new_empty(rows, d))
    assert getattr(flashserve, name)(x, out=out) is out
    x64 = x.double()
    assert_written(out)
    assert_elementwise_close(out, ACTS[name](x64[:, :d]) * x64[:, d:], dtype)


def test_act_and_mul_strided_rows_allocates_out():
    big = randn(8, 3 * 256)
    x = big[:, : 2 * 256]  # rows strided by 768
    out = flashserve.silu_and_mul(x)
    assert out.shape == (8, 256)
    x64 = x.double()
    assert_elementwise_close(out, ACTS["silu_and_mul"](x64[:, :256]) * x64[:, 256:], torch.bfloat16)


# ---- RoPE ----------------------------------------------------------------------------------------


def inv_freq(rot, theta, llama31=None):
    # The library's float32 definition (rope.h), computed on the host like the library does.
    exps = torch.arange(0, rot, 2, dtype=torch.float32) / torch.tensor(
        float(rot), dtype=torch.float32
    )
    f = 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float32), exps)
    if llama31:
        factor, low, high, old = llama31
        wavelen = 2 * math.pi / f
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * f / factor + smooth * f
        f = torch.where(wavelen < old / high, f, torch.where(wavelen > old / low, f / factor, mid))
    return f


def rope_ref(x, pos, rot, theta, scale=1.0, interleave=False, llama31=None):
    f = inv_freq(rot, theta, llama31)
    angle = (pos.cpu().float() / scale)[:, None] * f[None, :]  # float32 steps, as the kernel
    cos, sin = angle.double().cos().cuda()[:, None, :], angle.double().sin().cuda()[:, None, :]
    return rotate(x.double(), cos, sin, rot, interleave)


def rotate(x64, cos, sin, rot, interleave):
    out = x64.clone()
    if interleave:
        a, b = x64[..., 0:rot:2], x64[..., 1:rot:2]
        out[..., 0:rot:2] = a * cos - b * sin
        out[..., 1:rot:2] = b * cos + a * sin
    else:
        h = rot // 2
        a, b = x64[..., :h], x64[..., h:rot]
        out[..., :h] = a * cos - b * sin
        out[..., h:rot] = b * cos + a * sin
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleave", [False, True])
@pytest.mark.parametrize("rot", [None, 64])
@pytest.mark.parametrize("tokens", [1, 7, 113])
def test_apply_rope_pos_ids(dtype, interleave, rot, tokens):
    q, k = randn(tokens, 32, 128, dtype=dtype), randn(tokens, 8, 128, dtype=dtype)
    max_pos = 64 if dtype == torch.float32 else 8192
    pos = torch.randint(0, max_pos, (tokens,), device="cuda", dtype=torch.int32)
    q_rope, k_rope = flashserve.apply_rope_pos_ids(q, k, pos, rot, interleave, 2.0, 1e4)
    r = rot or 128
    assert_elementwise_close(q_rope, rope_ref(q, pos, r, 1e4, 2.0, interleave), dtype, "q")
    assert_elementwise_close(k_rope, rope_ref(k, pos, r, 1e4, 2.0, interleave), dtype, "k")
    if rot:  # dims past rotary_dim are copied
        assert torch.equal(q_rope[..., rot:], q[..., rot:])


def test_apply_rope_in_place_on_packed_qkv_and_llama31():
    qkv = randn(19, 48, 128)
    q, k = qkv[:, :32], qkv[:, 32:40]
    v0 = qkv[:, 40:].clone()
    pos = torch.randint(0, 8192, (19,), device="cuda", dtype=torch.int64)
    scaling = (8.0, 1.0, 4.0, 8192)
    q_ref = rope_ref(q, pos, 128, 5e5, llama31=scaling)
    k_ref = rope_ref(k, pos, 128, 5e5, llama31=scaling)
    flashserve.apply_llama31_rope_pos_ids_inplace(q, k, pos)
    assert_elementwise_close(q, q_ref, torch.bfloat16, "q")
    assert_elementwise_close(k, k_ref, torch.bfloat16, "k")
    assert torch.equal(qkv[:, 40:], v0), "v heads changed"
    q2, k2 = randn(3, 8, 64), randn(3, 2, 64)
    p2 = torch.arange(3, device="cuda")
    a, b = flashserve.apply_llama31_rope_pos_ids(q2, k2, p2)
    assert_elementwise_close(a, rope_ref(q2, p2, 64, 5e5, llama31=scaling), torch.bfloat16)


def test_ragged_apply_rope_matches_pos_ids():
    q, k = randn(10, 4, 64), randn(10, 2, 64)
    indptr = torch.tensor([0, 3, 3, 10], device="cuda", dtype=torch.int32)
    offsets = torch.tensor([5, 0, 100], device="cuda", dtype=torch.int32)
    pos = torch.tensor(
        [5, 6, 7, 100, 101, 102, 103, 104, 105, 106], device="cuda", dtype=torch.int32
    )
    a = flashserve.apply_rope(q, k, indptr, offsets)
    b = flashserve.apply_rope_pos_ids(q, k, pos)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    flashserve.apply_rope_inplace(q, k, indptr, offsets)
    assert torch.equal(q, b[0]) and torch.equal(k, b[1])


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_with_cos_sin_cache(is_neox, cache_dtype):
    tokens, hq, hk, d = 11, 8, 2, 128
    rot = 128
    f = inv_freq(rot, 1e4).double()
    angles = torch.arange(4096, dtype=torch.float64)[:, None] * f[None, :]
    cache = torch.cat([angles.cos(), angles.sin()], -1).to(cache_dtype).cuda()
    q, k = randn(tokens, hq * d), randn(tokens, hk * d)  # vLLM's flattened layout
    pos = torch.randint(0, 4096, (tokens,), device="cuda")
    qo, ko = flashserve.apply_rope_with_cos_sin_cache(pos, q, k, d, cache, is_neox)
    assert qo.shape == q.shape
    c = cache.double()[pos]
    cos, sin = c[:, None, : rot // 2], c[:, None, rot // 2 :]
    q_ref = rotate(q.view(tokens, hq, d).double(), cos, sin, rot, not is_neox).view(tokens, -1)
    assert_elementwise_close(qo, q_ref, torch.bfloat16, "query")
    flashserve.apply_rope_with_cos_sin_cache_inplace(pos, q, k, d, cache, is_neox)
    assert torch.equal(q, qo) and torch.equal(k, ko)


# ---- append_paged_kv_cache -----------------------------------------------------------------------


def page_table(lengths, page_size, num_pages):
    perm = torch.randperm(num_pages).tolist()
    indptr, indices, last = [0], [], []
    for n in lengths:
        pages = (n + page_size - 1) // page_size
        indices += [perm.pop() for _ in range(pages)]
        indptr.append(len(indices))
        last.append(0 if n == 0 else (n - 1) % page_size + 1)
    as_t = lambda v: torch.tensor(v, dtype=torch.int32, device="cuda")  # noqa: E731
    return as_t(indptr), as_t(indices), as_t(last)


def slot(layout, cache, page, off):
    return cache[page, off] if layout == "NHD" else cache[page, :, off]


@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("page_size", [16, 5])
@pytest.mark.parametrize("cache_dtype", [None, torch.float8_e4m3fn])
@pytest.mark.parametrize("unified", [False, True])
def test_append_paged_kv_cache(layout, page_size, cache_dtype, unified):
    heads, d, num_pages = 4, 64, 64
    lengths, new = [37, 0, 5, 16, 1], [3, 0, 5, 1, 1]
    indptr, indices, last = page_table(lengths, page_size, num_pages)
    append_indptr = torch.tensor(
        [0] + torch.tensor(new).cumsum(0).tolist(), dtype=torch.int32, device="cuda"
    )
    k, v = randn(sum(new), heads, d), randn(sum(new), heads, d)
    dtype = cache_dtype or k.dtype
    shape = (
        (num_pages, page_size, heads, d) if layout == "NHD" else (num_pages, heads, page_size, d)
    )
    if unified:
        both = poison(torch.empty((num_pages, 2) + shape[1:], device="cuda", dtype=dtype))
        cache, kc, vc = both, both[:, 0], both[:, 1]
    else:
        kc = poison(torch.empty(shape, device="cuda", dtype=dtype))
        vc = poison(torch.empty(shape, device="cuda", dtype=dtype))
        cache = (kc, vc)
    ks, vs = (0.5, 2.0) if cache_dtype else (1.0, 1.0)
    flashserve.append_paged_kv_cache(
        k, v, append_indptr, cache, indices, indptr, last, layout, k_scale=ks, v_scale=vs
    )
    written = torch.zeros(num_pages, page_size, dtype=torch.bool)
    row = 0
    for b, (n, m) in enumerate(zip(lengths, new)):
        for j in range(m):
            p = n - m + j
            page = int(indices[int(indptr[b]) + p // page_size])
            written[page, p % page_size] = True
            for src, dst, s in ((k, kc, ks), (v, vc, vs)):
                expect = (src[row + j].float() / s).to(dtype) if cache_dtype else src[row + j]
                got = slot(layout, dst, page, p % page_size)
                assert torch.equal(
                    got.view(torch.uint8) if cache_dtype else got,
                    expect.view(torch.uint8) if cache_dtype else expect,
                ), (b, j)
        row += m
    for dst in (kc, vc):  # everything else keeps its NaN poison
        as_nhd = dst if layout == "NHD" else dst.transpose(1, 2)
        untouched = as_nhd[~written.cuda()].float()
        assert bool(torch.isnan(untouched).all())


# ---- merge_state(s) ------------------------------------------------------------------------------


def merge_ref(vs, ss):
    s64 = torch.stack([s.double() for s in ss], 0)
    lse = torch.logsumexp(s64, 0)
    w = torch.exp(s64 - lse).nan_to_num(0.0)
    out = sum(w[i][..., None] * vs[i].double() for i in range(len(vs)))
    return out, lse


def merge_base(vs, ss):
    s = torch.stack(ss, 0)
    w = torch.softmax(s, 0).nan_to_num(0.0).to(vs[0].dtype)
    return sum(w[i][..., None] * vs[i] for i in range(len(vs)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state(dtype):
    t, h, d = 13, 8, 128
    va, vb = randn(t, h, d, dtype=dtype), randn(t, h, d, dtype=dtype)
    sa, sb = torch.randn(t, h, device="cuda") * 3, torch.randn(t, h, device="cuda") * 3
    sa[0, 0] = sb[0, 0] = -math.inf  # a row that saw nothing: 0 and -inf, never NaN
    sb[1, 1] = -math.inf
    v, s = flashserve.merge_state(va, sa, vb, sb)
    ref_v, ref_s = merge_ref([va, vb], [sa, sb])
    ref_v[0, 0] = 0
    assert_reduction_close(v, ref_v, merge_base([va, vb], [sa, sb]), "v")
    assert_reduction_close(s, ref_s, torch.logsumexp(torch.stack([sa, sb]), 0), "s")
    assert s[0, 0].item() == -math.inf and bool((v[0, 0] == 0).all())
    flashserve.merge_state_in_place(va, sa, vb, sb)
    assert torch.equal(va, v) and torch.equal(sa, s)


def test_merge_states_stack():
    t, n, h, d = 5, 7, 4, 64
    v, s = randn(t, n, h, d), torch.randn(t, n, h, device="cuda") * 2
    out, lse = flashserve.merge_states(v, s)
    ref_v, ref_s = merge_ref(list(v.unbind(1)), list(s.unbind(1)))
    assert out.shape == (t, h, d) and lse.shape == (t, h)
    assert_reduction_close(out, ref_v, merge_base(list(v.unbind(1)), list(s.unbind(1))))
    assert_reduction_close(lse, ref_s, torch.logsumexp(s, 1))  # fp32, naively


# ---- errors with real tensors --------------------------------------------------------------------


def test_cpu_tensor_is_rejected_not_copied():
    x = randn(4, 128)
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"rmsnorm: weight: expected a CUDA tensor"
    ):
        flashserve.rmsnorm(x, torch.ones(128, dtype=torch.bfloat16))


def test_wrong_dtype_names_the_argument():
    x = randn(4, 128)
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"rmsnorm: weight: expected dtype bfloat16"
    ):
        flashserve.rmsnorm(x, randn(128, dtype=torch.float16))
    with pytest.raises(flashserve.InvalidArgumentError, match=r"rmsnorm: input: expected float32"):
        flashserve.rmsnorm(x.double(), randn(128), out=torch.empty_like(x))


def test_non_contiguous_last_dim_is_rejected():
    x = randn(128, 4).t()  # last-dim stride 4
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"silu_and_mul: input: expected stride 1"
    ):
        flashserve.silu_and_mul(x, out=torch.empty(4, 64, device="cuda", dtype=torch.bfloat16))


def test_ops_run_on_the_current_stream_and_capture_in_a_graph():
    # torch captures on a side stream: an op launched anywhere else would not be recorded (or
    # would invalidate the capture), so a replay that recomputes proves the stream is honoured.
    x, w = randn(64, 4096), randn(4096)
    out, act = torch.empty_like(x), torch.empty(64, 2048, device="cuda", dtype=torch.bfloat16)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        flashserve.rmsnorm(x, w, out=out)
        flashserve.silu_and_mul(out, out=act)
    for _ in range(2):
        x.copy_(randn(64, 4096))
        g.replay()
        torch.cuda.synchronize()
        assert_reduction_close(out, rms_ref(x, w, 1e-6), rms_base(x, w, 1e-6))
        o64 = out.double()
        assert_elementwise_close(
            act, ACTS["silu_and_mul"](o64[:, :2048]) * o64[:, 2048:], torch.bfloat16
        )
