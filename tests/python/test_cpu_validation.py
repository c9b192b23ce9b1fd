"""Argument validation through flashserve._C on DLPack producers, without torch or a GPU.

Each bad call must raise InvalidArgumentError whose message starts with "<op>: <argument>:" and
says what was expected. A call that passes validation stops at the device check on a machine
without a GPU (NoDeviceError naming the op); with a GPU it would launch on fake pointers, so those
cases skip there (the GPU tests cover them with real tensors).
"""

import pytest
from conftest import gpu_present
from dlpack_fake import FakeArray, host_int32, host_int64

import flashserve
from flashserve import _C


def invalid(fn, op, arg, detail=""):
    with pytest.raises(flashserve.InvalidArgumentError) as e:
        fn()
    msg = str(e.value)
    assert msg.startswith(f"{op}: {arg}:"), msg
    assert detail in msg, msg
    return msg


def accepted(fn, op):
    if gpu_present():
        pytest.skip("a device is present: a valid call on fake pointers would launch")
    with pytest.raises(flashserve.NoDeviceError) as e:
        fn()
    assert str(e.value).startswith(f"{op}: "), str(e.value)


def arr(shape, dtype="bfloat16", slot=0, **kw):
    return FakeArray(shape, dtype, slot=slot, **kw)


# ---- the binding's own checks: device type, element type, rank ---------------------------------


def test_host_tensor_is_rejected_naming_the_argument():
    x = arr((4, 128), slot=0)
    w = FakeArray((128,), "bfloat16", device="cpu")
    msg = invalid(lambda: _C.rmsnorm(x, x, w, 1e-6, None, 0), "rmsnorm", "weight", "CUDA tensor")
    assert "cpu" in msg and "never copied" in msg


def test_pinned_host_tensor_is_rejected():
    x = FakeArray((4, 128), "bfloat16", device="cuda_host")
    invalid(lambda: _C.silu_and_mul(x, x, 0), "silu_and_mul", "out", "cuda_host")


@pytest.mark.parametrize("dtype", ["float64", "int8", "complex64"])
def test_unsupported_element_type_is_named(dtype):
    x = arr((4, 128), dtype)
    invalid(
        lambda: _C.rmsnorm(arr((4, 128), slot=1), x, arr((128,), slot=2), 1e-6, None, 0),
        "rmsnorm",
        "input",
        f"got {dtype}",
    )


def test_too_many_dims():
    x = arr((1,) * 7)
    invalid(lambda: _C.silu_and_mul(x, x, 0), "silu_and_mul", "out", "at most 6 dims")


def test_no_implicit_conversion_of_python_objects():
    with pytest.raises(TypeError):
        _C.rmsnorm([[1.0]], [[1.0]], [1.0], 1e-6, None, 0)


def test_none_for_a_required_tensor():
    with pytest.raises(TypeError):
        _C.silu_and_mul(None, arr((2, 8)), 0)


# ---- the C++ API's checks, reached through the binding -------------------------------------------


def test_rmsnorm_weight_size():
    x, out, w = arr((4, 4096)), arr((4, 4096), slot=1), arr((4000,), slot=2)
    invalid(
        lambda: _C.rmsnorm(out, x, w, 1e-6, None, 0),
        "rmsnorm",
        "weight",
        "expected size 4096 (hidden) at dim 0",
    )


def test_rmsnorm_non_contiguous_last_dim():
    x = arr((4, 64), strides=(128, 2))
    invalid(
        lambda: _C.rmsnorm(arr((4, 64), slot=1), x, arr((64,), slot=2), 1e-6, None, 0),
        "rmsnorm",
        "input",
        "stride 1 in the last dim",
    )


def test_rmsnorm_strided_rows_and_3d_views_are_accepted():
    # A per-head norm on a slice of packed qkv: rows strided, last dim contiguous.
    x = arr((5, 8, 128), strides=(48 * 128, 128, 1))
    accepted(lambda: _C.rmsnorm(x, x, arr((128,), slot=2), 1e-6, None, 0), "rmsnorm")


def test_rmsnorm_fp8_out_needs_a_scale():
    x, out = arr((4, 256)), arr((4, 256), "float8_e4m3fn", slot=1)
    invalid(
        lambda: _C.rmsnorm(out, x, arr((256,), slot=2), 1e-6, None, 0),
        "rmsnorm",
        "options.out_scale",
        "float32 scalar",
    )
    scale = arr((1,), "float32", slot=3)
    accepted(lambda: _C.rmsnorm(out, x, arr((256,), slot=2), 1e-6, scale, 0), "rmsnorm")


def test_rmsnorm_negative_eps():
    x = arr((4, 64))
    invalid(
        lambda: _C.rmsnorm(x, x, arr((64,), slot=2), -1.0, None, 0),
        "rmsnorm",
        "options.eps",
        "finite value >= 0",
    )


def test_fused_add_rmsnorm_residual_shape():
    x, r = arr((4, 64)), arr((5, 64), slot=1)
    invalid(
        lambda: _C.fused_add_rmsnorm(x, x, r, arr((64,), slot=2), 1e-6, None, 0),
        "fused_add_rmsnorm",
        "residual",
        "expected the shape of input",
    )
    r = arr((4, 64), slot=1)
    accepted(
        lambda: _C.gemma_fused_add_rmsnorm(x, x, r, arr((64,), slot=2), 1e-6, None, 0),
        "gemma_fused_add_rmsnorm",
    )


def test_layernorm_bias_dtype():
    x = arr((4, 64))
    invalid(
        lambda: _C.layernorm(
            x, x, arr((64,), slot=2), arr((64,), "float32", slot=3), 1e-5, None, 0
        ),
        "layernorm",
        "bias",
        "expected dtype bfloat16",
    )
    accepted(lambda: _C.layernorm(x, x, arr((64,), slot=2), None, 1e-5, None, 0), "layernorm")


@pytest.mark.parametrize("fn", ["silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"])
def test_activation_output_width(fn):
    x, out = arr((3, 2 * 113)), arr((3, 112), slot=1)
    invalid(lambda: getattr(_C, fn)(out, x, 0), fn, "out", "")
    accepted(lambda: getattr(_C, fn)(arr((3, 113), slot=1), x, 0), fn)


def test_activation_overlap():
    x = arr((3, 256))
    out = arr((3, 128), strides=(256, 1))  # the first half of each input row
    invalid(lambda: _C.silu_and_mul(out, x, 0), "silu_and_mul", "out", "overlap")


def rope_args(pos_dtype="int64"):
    q, k = arr((7, 32, 128)), arr((7, 8, 128), slot=1)
    return q, k, arr((7,), pos_dtype, slot=4)


def test_rope_positions_dtype():
    q, k, pos = rope_args("float32")
    opts = _C.RopeOptions()
    invalid(lambda: _C.apply_rope(q, k, q, k, pos, opts, 0), "apply_rope", "positions", "int32")


def test_rope_rotary_dim_and_theta():
    q, k, pos = rope_args()
    invalid(
        lambda: _C.apply_rope(q, k, q, k, pos, _C.RopeOptions(rotary_dim=7), 0),
        "apply_rope",
        "options.rotary_dim",
    )
    invalid(
        lambda: _C.apply_rope(q, k, q, k, pos, _C.RopeOptions(theta=-1.0), 0),
        "apply_rope",
        "options.theta",
    )
    opts = _C.RopeOptions(rotary_dim=64, interleave=True, llama31=True, theta=5e5)
    assert (opts.rotary_dim, opts.interleave, opts.llama31) == (64, True, True)
    accepted(lambda: _C.apply_rope(q, k, q, k, pos, opts, 0), "apply_rope")


def test_rope_options_are_keyword_only():
    with pytest.raises(TypeError):
        _C.RopeOptions(64)


def test_rope_cos_sin_cache_width():
    q, k, pos = rope_args()
    cache = arr((4096, 64), "float32", slot=5)
    invalid(
        lambda: _C.apply_rope_cos_sin_cache(
            q, k, q, k, pos, cache, _C.RopeOptions(rotary_dim=128), 0
        ),
        "apply_rope_cos_sin_cache",
        "options.rotary_dim",
    )
    accepted(
        lambda: _C.apply_rope_cos_sin_cache(q, k, q, k, pos, cache, _C.RopeOptions(), 0),
        "apply_rope_cos_sin_cache",
    )


def append_args(layout=_C.KVLayout.NHD, append_dtype="int32"):
    kc = arr((10, 16, 8, 128), slot=0)
    vc = arr((10, 16, 8, 128), slot=1)
    if layout == _C.KVLayout.HND:
        kc, vc = arr((10, 8, 16, 128), slot=0), arr((10, 8, 16, 128), slot=1)
    k, v = arr((5, 8, 128), slot=2), arr((5, 8, 128), slot=3)
    table = (arr((4,), "int32", slot=4), arr((6,), "int32", slot=5), arr((3,), "int32", slot=6))
    return kc, vc, layout, 1.0, 1.0, *table, k, v, arr((4,), append_dtype, slot=7), 0


def test_append_indptr_dtype():
    invalid(
        lambda: _C.append_paged_kv_cache(*append_args(append_dtype="int64")),
        "append_paged_kv_cache",
        "append_indptr",
        "expected dtype int32",
    )


def test_append_cache_heads_in_the_layout():
    args = list(append_args())
    args[2] = _C.KVLayout.HND  # an NHD-shaped cache read as HND: dim 1 holds 16, not 8 heads
    invalid(
        lambda: _C.append_paged_kv_cache(*args),
        "append_paged_kv_cache",
        "cache.k_cache",
        "kv_heads = 8",
    )
    accepted(lambda: _C.append_paged_kv_cache(*append_args()), "append_paged_kv_cache")
    accepted(
        lambda: _C.append_paged_kv_cache(*append_args(_C.KVLayout.HND)), "append_paged_kv_cache"
    )


def test_append_scale_must_be_positive():
    args = list(append_args())
    args[3] = 0.0
    invalid(lambda: _C.append_paged_kv_cache(*args), "append_paged_kv_cache", "cache.k_scale")


def test_merge_state_lse_dtype():
    v = arr((3, 8, 128), slot=0)
    s = arr((3, 8), "bfloat16", slot=1)
    invalid(
        lambda: _C.merge_state(
            v, s, arr((3, 8, 128), slot=2), s, arr((3, 8, 128), slot=3), None, 0
        ),
        "merge_state",
        "s_a",
        "expected dtype float32",
    )


def test_merge_states_accepts_a_stack():
    v, s = arr((3, 4, 8, 128), slot=0), arr((3, 4, 8), "float32", slot=1)
    out, s_out = arr((3, 8, 128), slot=2), arr((3, 8), "float32", slot=3)
    accepted(lambda: _C.merge_states(v, s, out, s_out, 0), "merge_states")


# ---- decode plan / run ---------------------------------------------------------------------------


def request(**kw):
    base = dict(num_qo_heads=32, num_kv_heads=8, head_dim=128, page_size=16, num_sms=132)
    base.update(kw)
    return _C.DecodePlanRequest(**base)


def table(lengths, page_size=16):
    indptr, last = [0], []
    for n in lengths:
        pages = (n + page_size - 1) // page_size
        indptr.append(indptr[-1] + pages)
        last.append(0 if n == 0 else (n - 1) % page_size + 1)
    return host_int32(indptr), host_int32(last)


def test_workspace_size_without_a_device():
    indptr, last = table([100, 4096, 0, 37])
    small = _C.decode_workspace_size(request(), indptr, last, None)
    assert small > 0
    indptr, last = table([100, 4096, 0, 37])
    # Capacity for CUDA-graph replay: at least as much as the batch itself needs.
    big = _C.decode_workspace_size(request(max_batch_size=256), indptr, last, None)
    assert big >= small


def test_plan_request_validation_names_the_field():
    indptr, last = table([10])
    invalid(
        lambda: _C.decode_workspace_size(request(head_dim=96), indptr, last, None),
        "decode_workspace_size",
        "req.head_dim",
        "64, 128 or 256",
    )
    indptr, last = table([10])
    invalid(
        lambda: _C.decode_workspace_size(
            request(num_qo_heads=12, num_kv_heads=8), indptr, last, None
        ),
        "decode_workspace_size",
        "req.num_qo_heads",
        "multiple of num_kv_heads",
    )
    indptr, last = table([10])
    invalid(
        lambda: _C.decode_workspace_size(request(q_dtype=_C.DType.float32), indptr, last, None),
        "decode_workspace_size",
        "req.q_dtype",
    )


def test_plan_host_arrays_are_checked_by_length_and_device():
    indptr, _ = table([10, 20])
    invalid(
        lambda: _C.decode_workspace_size(request(), indptr, host_int32([5]), None),
        "decode_workspace_size",
        "last_page_len",
        "expected 2 elements",
    )
    invalid(
        lambda: _C.decode_workspace_size(request(), arr((3,), "int32"), host_int32([5, 5]), None),
        "decode_workspace_size",
        "indptr",
        "host (CPU) tensor",
    )
    indptr, last = table([10, 20])
    invalid(
        lambda: _C.decode_workspace_size(request(), indptr, last, host_int32([0, 1])),
        "decode_workspace_size",
        "q_indptr",
        "expected 3 elements",
    )
    invalid(
        lambda: _C.decode_workspace_size(request(), host_int64([0, 1]), host_int32([5]), None),
        "decode_workspace_size",
        "indptr",
        "int32",
    )


def test_plan_table_contents_are_checked():
    # last_page_len must lie in 1..page_size for a request that owns pages.
    with pytest.raises(flashserve.InvalidArgumentError, match="decode_plan"):
        _C.decode_plan(
            request(), host_int32([0, 2]), host_int32([17]), None, arr((1 << 20,), "uint8"), 0
        )


def test_plan_workspace_checks():
    indptr, last = table([100])
    invalid(
        lambda: _C.decode_plan(request(), indptr, last, None, arr((64,), "uint8"), 0),
        "decode_plan",
        "workspace",
        "too small",
    )
    indptr, last = table([100])
    invalid(
        lambda: _C.decode_plan(request(), indptr, last, None, arr((64, 64), "uint8"), 0),
        "decode_plan",
        "workspace",
        "1-D",
    )


DECODE_MAGIC = 0x4653504400000002  # "FSPD", format 2 (cta_warps in the last field)


def fake_plan(**fields):
    base = dict(
        magic=DECODE_MAGIC,
        batch_size=2,
        q_tokens=2,
        num_qo_heads=32,
        num_kv_heads=8,
        head_dim=128,
        page_size=16,
        q_dtype=int(_C.DType.bfloat16.value),
        kv_dtype=int(_C.DType.bfloat16.value),
        layout=0,
        work_capacity=64,
        num_sms=132,
        workspace_bytes=1 << 20,
        cta_warps=4,
    )
    base.update(fields)
    return host_int64([base.get(name, 0) for name in _C.DECODE_PLAN_FIELDS])


def run_args(plan, q_heads=32, lse=None):
    q = arr((2, q_heads, 128), slot=0)
    out = arr((2, q_heads, 128), slot=1)
    kc, vc = arr((10, 16, 8, 128), slot=2), arr((10, 16, 8, 128), slot=3)
    ws = arr((1 << 20,), "uint8", slot=4)
    indptr, indices, last = (
        arr((3,), "int32", slot=5),
        arr((4,), "int32", slot=6),
        arr((2,), "int32", slot=7),
    )
    return (plan, ws, q, out, lse, kc, vc, 1.0, 1.0, indptr, indices, last, 0.0, 0.0, -1, None, 0)


def test_run_rejects_a_foreign_plan():
    bad = host_int64([1] * len(_C.DECODE_PLAN_FIELDS))
    invalid(lambda: _C.decode_run(*run_args(bad)), "decode_run", "plan", "returned by decode_plan")
    short = host_int64([DECODE_MAGIC, 1, 2])
    invalid(lambda: _C.decode_run(*run_args(short)), "decode_run", "plan", "int64[")


def test_run_checks_tensors_against_the_plan():
    invalid(
        lambda: _C.decode_run(*run_args(fake_plan(), q_heads=28)),
        "decode_run",
        "q",
        "plan.num_qo_heads",
    )
    lse = arr((2, 32), "bfloat16", slot=8)
    invalid(lambda: _C.decode_run(*run_args(fake_plan(), lse=lse)), "decode_run", "lse", "float32")
    accepted(lambda: _C.decode_run(*run_args(fake_plan())), "decode_run")
    accepted(lambda: _C.decode_run(*run_args(fake_plan(cta_warps=8))), "decode_run")
    invalid(
        lambda: _C.decode_run(*run_args(fake_plan(cta_warps=6))), "decode_run", "plan", "cta_warps"
    )


def test_plan_field_names_are_stable():
    fields = _C.DECODE_PLAN_FIELDS
    assert fields[0] == "magic" and len(fields) == 25
    assert {"split_tokens", "num_work", "work_capacity", "workspace_bytes", "cta_warps"} <= set(
        fields
    )


# ---- prefill plan / run --------------------------------------------------------------------------

PREFILL_MAGIC = 0x4653505000000004  # "FSPP", format 4 (page_size, head_dim_v, then split_capacity)


def prefill_request(**kw):
    base = dict(num_qo_heads=32, num_kv_heads=8, head_dim=128, num_sms=132)
    base.update(kw)
    return _C.PrefillPlanRequest(**base)


def test_prefill_workspace_size_without_a_device():
    qo, kv = host_int32([0, 100, 612, 613]), host_int32([0, 300, 812, 1000])
    assert _C.prefill_workspace_size(prefill_request(causal=True), qo, kv, None, None) > 0


def test_prefill_request_validation():
    qo, kv = host_int32([0, 10]), host_int32([0, 10])
    invalid(
        lambda: _C.prefill_workspace_size(prefill_request(head_dim=80), qo, kv, None, None),
        "prefill_workspace_size",
        "req.head_dim",
    )
    qo, kv = host_int32([0, 10]), host_int32([0, 10, 20])
    invalid(
        lambda: _C.prefill_workspace_size(prefill_request(), qo, kv, None, None),
        "prefill_workspace_size",
        "kv_indptr",
        "expected 2 elements",
    )
    invalid(
        lambda: _C.prefill_workspace_size(prefill_request(), host_int32([0, 10]), None, None, None),
        "prefill_workspace_size",
        "kv_indptr",
        "got None",
    )


def test_prefill_run_rejects_a_foreign_plan():
    plan = host_int64([7] * len(_C.PREFILL_PLAN_FIELDS))
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(plan)),
        "prefill_run",
        "plan",
        "returned by prefill_plan",
    )
    # Plans of the formats before page_size (24 fields, format 1), before head_dim_v (25
    # fields, format 2) and before split_capacity (26 fields, format 3).
    for old in (
        host_int64([0x4653505000000001] + [1] * 23),
        host_int64([0x4653505000000002] + [1] * 24),
        host_int64([0x4653505000000003] + [1] * 25),
    ):
        invalid(lambda: _C.prefill_run(**prefill_run_args(old)), "prefill_run", "plan", "int64[26]")


def test_prefill_plan_field_names():
    fields = _C.PREFILL_PLAN_FIELDS
    assert fields[0] == "magic" and len(fields) == 26
    assert {"page_size", "total_kv", "num_work", "work_capacity", "workspace_bytes"} <= set(fields)
    # head_dim_v was appended: the fields of format 2 keep their indexes.
    assert fields.index("head_dim") == 6 and fields.index("page_size") == 11
    assert fields.index("work_offset") == 23 and fields[24] == "split_capacity"
    assert fields[25] == "head_dim_v"


# ---- prefill: qk head_dim 192 with v head_dim 128 ------------------------------------------------


def test_prefill_request_head_dim_v_round_trips():
    req = prefill_request(head_dim=192, head_dim_v=128)
    assert (req.head_dim, req.head_dim_v) == (192, 128)
    assert prefill_request().head_dim_v == 0  # 0: head_dim
    req.head_dim_v = 0
    assert req.head_dim_v == 0


@pytest.mark.parametrize(
    "head_dim,head_dim_v",
    [(192, 128), (192, 0), (192, 192), (128, 0), (128, 128), (64, 64), (96, 0), (256, 256)],
)
def test_prefill_head_dim_v_accepted(head_dim, head_dim_v):
    qo, kv = host_int32([0, 100, 612, 613]), host_int32([0, 300, 812, 1000])
    req = prefill_request(head_dim=head_dim, head_dim_v=head_dim_v, causal=True)
    assert _C.prefill_workspace_size(req, qo, kv, None, None) > 0
    paged = prefill_request(head_dim=head_dim, head_dim_v=head_dim_v, page_size=16)
    assert _C.prefill_workspace_size(paged, qo, **paged_host([300, 812, 1000])) > 0


@pytest.mark.parametrize(
    "head_dim,head_dim_v", [(128, 64), (256, 128), (192, 64), (64, 128), (128, 192), (192, -1)]
)
def test_prefill_head_dim_v_rejected(head_dim, head_dim_v):
    qo, kv = host_int32([0, 10]), host_int32([0, 10])
    req = prefill_request(head_dim=head_dim, head_dim_v=head_dim_v)
    invalid(
        lambda: _C.prefill_workspace_size(req, qo, kv, None, None),
        "prefill_workspace_size",
        "req.head_dim_v",
        str(head_dim_v),
    )
    invalid(
        lambda: _C.prefill_plan(
            req, qo, kv, None, None, workspace=arr((1 << 20,), "uint8", slot=5), stream=0
        ),
        "prefill_plan",
        "req.head_dim_v",
        str(head_dim_v),
    )


def qk192_v128_run_args(paged, **kw):
    """A 192 / 128 plan with q and k (or the k cache) of 192 per row, v (or the v cache) and out of
    128; `kw` replaces any of them."""
    plan = fake_prefill_plan(head_dim=192, head_dim_v=128, block_n=64, page_size=16 if paged else 0)
    args = prefill_run_args(
        plan,
        q=arr((10, 32, 192), slot=0),
        out=arr((10, 32, 128), slot=3),
        k_cache=arr((10, 16, 8, 192), slot=1),
        v_cache=arr((10, 16, 8, 128), slot=2),
    )
    if not paged:
        args.update(k=arr((40, 8, 192), slot=9), v=arr((40, 8, 128), slot=10), k_cache=None)
        args.update(v_cache=None, paged_kv_indptr=None, paged_kv_indices=None)
        args.update(paged_kv_last_page_len=None)
    args.update(kw)
    return args


def test_prefill_run_qk192_v128_checks_v_and_out():
    op = "prefill_run"
    for paged in (False, True):
        out192 = dict(out=arr((10, 32, 192), slot=3))
        invalid(lambda: _C.prefill_run(**qk192_v128_run_args(paged, **out192)), op, "out", "128")
        q128 = dict(q=arr((10, 32, 128), slot=0))
        invalid(lambda: _C.prefill_run(**qk192_v128_run_args(paged, **q128)), op, "q", "192")
    v192 = dict(v=arr((40, 8, 192), slot=10))
    invalid(lambda: _C.prefill_run(**qk192_v128_run_args(False, **v192)), op, "v", "128")
    k128 = dict(k=arr((40, 8, 128), slot=9))
    invalid(lambda: _C.prefill_run(**qk192_v128_run_args(False, **k128)), op, "k", "192")
    vc192 = dict(v_cache=arr((10, 16, 8, 192), slot=2))
    invalid(
        lambda: _C.prefill_run(**qk192_v128_run_args(True, **vc192)), op, "cache.v_cache", "128"
    )
    # A 192 / 192 plan given the 128-wide out of a 192 / 128 problem.
    same = fake_prefill_plan(head_dim=192, head_dim_v=192, block_n=64, page_size=0)
    invalid(lambda: _C.prefill_run(**qk192_v128_run_args(False, plan=same)), op, "out", "192")
    for paged in (False, True):  # last: with a device present, accepted() skips the test
        accepted(lambda: _C.prefill_run(**qk192_v128_run_args(paged)), op)


# ---- paged prefill -------------------------------------------------------------------------------


def paged_host(lengths, page_size=16):
    indptr, last = table(lengths, page_size)
    return dict(kv_indptr=None, paged_kv_indptr=indptr, paged_kv_last_page_len=last)


def paged_size(req, qo, **kv):
    return lambda: _C.prefill_workspace_size(req, qo, **kv)


def test_paged_prefill_workspace_size_without_a_device():
    qo = host_int32([0, 100, 612, 613])
    req = prefill_request(page_size=16, causal=True)
    assert _C.prefill_workspace_size(req, qo, **paged_host([300, 812, 1000])) > 0
    assert req.page_size == 16
    one = prefill_request(page_size=1)
    assert _C.prefill_workspace_size(one, qo, **paged_host([300, 812, 1000], 1)) > 0


def test_paged_prefill_host_arrays_follow_the_page_size():
    op = "prefill_workspace_size"
    qo = host_int32([0, 10, 20])
    paged = prefill_request(page_size=16)
    kv = paged_host([10, 20])
    kv["kv_indptr"] = host_int32([0, 10, 30])
    invalid(
        paged_size(paged, qo, **kv), op, "kv_indptr", "expected None with request.page_size > 0"
    )
    kv = paged_host([10, 20])
    kv["paged_kv_last_page_len"] = None
    invalid(paged_size(paged, qo, **kv), op, "paged_kv_last_page_len", "got None")
    kv = paged_host([10, 20])
    kv["kv_indptr"] = host_int32([0, 10, 30])
    invalid(paged_size(prefill_request(), qo, **kv), op, "paged_kv_indptr", "expected None")


def test_paged_prefill_host_arrays_are_checked_by_length_and_device():
    op = "prefill_workspace_size"
    req = prefill_request(page_size=16)
    qo = host_int32([0, 10, 20])
    kv = paged_host([10, 20])
    kv["paged_kv_last_page_len"] = host_int32([10])
    invalid(paged_size(req, qo, **kv), op, "paged_kv_last_page_len", "expected 2 elements")
    kv = paged_host([10, 20, 30])
    invalid(paged_size(req, qo, **kv), op, "paged_kv_indptr", "expected 3 elements")
    kv = paged_host([10, 20])
    kv["paged_kv_indptr"] = arr((3,), "int32")
    invalid(paged_size(req, qo, **kv), op, "paged_kv_indptr", "host (CPU) tensor")
    kv = paged_host([10, 20])
    kv["paged_kv_indptr"] = host_int64([0, 1, 3])
    invalid(paged_size(req, qo, **kv), op, "paged_kv_indptr", "int32")


def test_paged_prefill_table_contents_are_checked_by_the_plan():
    op = "prefill_workspace_size"
    req = prefill_request(page_size=16)
    qo = host_int32([0, 10, 20])
    last = dict(kv_indptr=None, paged_kv_indptr=host_int32([0, 1, 3]))
    invalid(
        paged_size(req, qo, **last, paged_kv_last_page_len=host_int32([5, 17])),
        op,
        "req.paged_kv_last_page_len",
        "request 1: expected a value in [1, 16], got 17",
    )
    invalid(
        paged_size(req, qo, **last, paged_kv_last_page_len=host_int32([0, 4])),
        op,
        "req.paged_kv_last_page_len",
        "request 0",
    )
    invalid(
        paged_size(
            req,
            qo,
            kv_indptr=None,
            paged_kv_indptr=host_int32([0, 2, 1]),
            paged_kv_last_page_len=host_int32([5, 5]),
        ),
        op,
        "req.paged_kv_indptr",
        "non-decreasing",
    )
    invalid(
        paged_size(prefill_request(page_size=-1), qo, **paged_host([10, 20])),
        op,
        "req.page_size",
        ">= 0",
    )


def test_paged_prefill_plan_workspace_checks():
    req = prefill_request(page_size=16)
    invalid(
        lambda: _C.prefill_plan(
            req, host_int32([0, 10]), **paged_host([100]), workspace=arr((64,), "uint8"), stream=0
        ),
        "prefill_plan",
        "workspace",
        "too small",
    )


def fake_prefill_plan(**fields):
    base = dict(
        magic=PREFILL_MAGIC,
        batch_size=2,
        total_q=10,
        total_kv=40,
        num_qo_heads=32,
        num_kv_heads=8,
        head_dim=128,
        head_dim_v=128,
        dtype=int(_C.DType.bfloat16.value),
        causal=1,
        window_left=-1,
        window_right=-1,
        page_size=16,
        block_m=128,
        block_n=128,
        num_work=4,
        work_capacity=64,
        batch_capacity=2,
        num_sms=132,
        grid=4,
        workspace_bytes=1 << 16,
    )
    base.update(fields)
    return host_int64([base.get(name, 0) for name in _C.PREFILL_PLAN_FIELDS])


def prefill_run_args(plan, layout=_C.KVLayout.NHD, **kw):
    """Arguments of a paged prefill_run: q / out [10, 32, 128], a 10-page NHD cache of 16-token
    pages with 8 heads, a 2-request table."""
    args = dict(
        plan=plan,
        workspace=arr((1 << 16,), "uint8", slot=5),
        q=arr((10, 32, 128), slot=0),
        k=None,
        v=None,
        k_cache=arr((10, 16, 8, 128), slot=1),
        v_cache=arr((10, 16, 8, 128), slot=2),
        layout=layout,
        paged_kv_indptr=arr((3,), "int32", slot=6),
        paged_kv_indices=arr((4,), "int32", slot=7),
        paged_kv_last_page_len=arr((2,), "int32", slot=8),
        out=arr((10, 32, 128), slot=3),
        lse=None,
        sm_scale=0.0,
        logits_soft_cap=0.0,
        alibi_slopes=None,
        sinks=None,
        custom_mask=None,
        mask_offsets=None,
        stream=0,
    )
    args.update(kw)
    return args


def test_paged_prefill_run_takes_the_cache_not_k_and_v():
    op = "prefill_run"
    k = arr((40, 8, 128), slot=9)
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), k=k)),
        op,
        "k",
        "expected undefined with a paged plan",
    )
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), k_cache=None)),
        op,
        "cache.k_cache",
    )
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), paged_kv_indptr=None)),
        op,
        "table.indptr",
    )


def test_paged_prefill_run_checks_the_cache_against_the_plan():
    op = "prefill_run"
    # The NHD cache read as HND: dim 1 holds 16 slots, not 8 heads.
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), layout=_C.KVLayout.HND)),
        op,
        "cache.k_cache",
        "plan.num_kv_heads",
    )
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(page_size=32))),
        op,
        "cache.k_cache",
        "plan.page_size",
    )
    f16 = dict(k_cache=arr((10, 16, 8, 128), "float16", slot=1))
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), **f16)),
        op,
        "cache.k_cache",
        "expected dtype bfloat16",
    )
    v = dict(v_cache=arr((10, 16, 8, 64), slot=2))
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), **v)),
        op,
        "cache.v_cache",
    )
    # K and V as two strided views of one [pages, 2, page_size, heads, dim] tensor are accepted.
    both = dict(
        k_cache=arr((10, 16, 8, 128), strides=(2 * 16 * 8 * 128, 8 * 128, 128, 1), slot=1),
        v_cache=arr(
            (10, 16, 8, 128),
            strides=(2 * 16 * 8 * 128, 8 * 128, 128, 1),
            slot=1,
            byte_offset=16 * 8 * 128 * 2,
        ),
    )
    hnd = dict(
        k_cache=arr((10, 8, 16, 128), slot=1),
        v_cache=arr((10, 8, 16, 128), slot=2),
        layout=_C.KVLayout.HND,
    )
    for extra in ({}, both, hnd):
        accepted(lambda: _C.prefill_run(**prefill_run_args(fake_prefill_plan(), **extra)), op)


def test_ragged_prefill_run_takes_k_and_v():
    ragged = fake_prefill_plan(page_size=0)
    k, v = arr((40, 8, 128), slot=9), arr((40, 8, 128), slot=10)
    invalid(
        lambda: _C.prefill_run(**prefill_run_args(ragged, k_cache=None, v_cache=None)),
        "prefill_run",
        "k",
    )
    no_cache = dict(k_cache=None, v_cache=None, paged_kv_indptr=None)
    no_cache.update(paged_kv_indices=None, paged_kv_last_page_len=None)
    accepted(
        lambda: _C.prefill_run(**prefill_run_args(ragged, k=k, v=v, **no_cache)), "prefill_run"
    )


# ---- sampling ------------------------------------------------------------------------------------


def filter_args(**kw):
    """The flat SamplingArgs of _C.sample_from_probs after (out_ids, probs): no filter, scalar seed
    and offset."""
    a = dict(
        top_k=None,
        top_k_value=0,
        top_p=None,
        top_p_value=1.0,
        min_p=None,
        min_p_value=0.0,
        order=_C.FilterOrder.top_k_first,
        seed=None,
        offset=None,
        seed_value=0,
        offset_value=0,
        stream=0,
    )
    a.update(kw)
    return a


def from_probs(ids, probs, **kw):
    return lambda: _C.sample_from_probs(ids, probs, **filter_args(**kw))


def from_logits(ids, logits, temperature=None, temperature_value=1.0, **kw):
    a = filter_args(**kw)
    a["temperature"], a["temperature_value"] = temperature, temperature_value
    return lambda: _C.sample_from_logits(ids, logits, **a)


def test_sampling_ids_dtype():
    probs = arr((4, 100), "float32")
    invalid(
        from_probs(arr((4,), "float32", slot=1), probs),
        "sample_from_probs",
        "out_ids",
        "expected dtype one of {int32, int64}",
    )
    accepted(from_probs(arr((4,), "int64", slot=1), probs), "sample_from_probs")
    accepted(from_probs(arr((4,), "int32", slot=1), probs), "sample_from_probs")


def test_sampling_probs_must_be_2d_float32():
    ids = arr((4,), "int32", slot=1)
    invalid(
        from_probs(ids, arr((4, 100, 2), "float32")), "sample_from_probs", "probs", "2-D tensor"
    )
    invalid(
        from_probs(ids, arr((4, 100), "bfloat16")),
        "sample_from_probs",
        "probs",
        "expected dtype float32",
    )
    # Logits take any float dtype; a stride-0 row (many draws from one row) is accepted.
    accepted(from_logits(ids, arr((4, 100), "bfloat16")), "sample_from_logits")
    accepted(from_probs(ids, arr((4, 100), "float32", strides=(0, 1))), "sample_from_probs")


def test_sampling_per_row_parameters():
    ids, probs = arr((4,), "int32", slot=1), arr((4, 100), "float32")
    invalid(
        from_probs(ids, probs, top_k=arr((4,), "int64", slot=2)),
        "sample_from_probs",
        "args.top_k",
        "expected dtype int32",
    )
    invalid(
        from_probs(ids, probs, top_p=arr((3,), "float32", slot=2)),
        "sample_from_probs",
        "args.top_p",
        "(batch) at dim 0",
    )
    invalid(
        from_logits(ids, arr((4, 100), "float16"), temperature=arr((4, 1), "float32", slot=2)),
        "sample_from_logits",
        "args.temperature",
        "1-D",
    )
    per_row = dict(
        top_k=arr((4,), "int32", slot=2),
        top_p=arr((4,), "float32", slot=3),
        min_p=arr((4,), "float32", slot=4),
        order=_C.FilterOrder.joint,
    )
    accepted(from_probs(ids, probs, **per_row), "sample_from_probs")


def test_sampling_scalar_ranges():
    ids, probs = arr((4,), "int32", slot=1), arr((4, 100), "float32")
    invalid(
        from_probs(ids, probs, top_p_value=1.5), "sample_from_probs", "args.top_p_value", "(0, 1]"
    )
    invalid(
        from_probs(ids, probs, min_p_value=-0.1), "sample_from_probs", "args.min_p_value", "[0, 1]"
    )
    invalid(
        from_logits(ids, arr((4, 100), "float32"), temperature_value=-1.0),
        "sample_from_logits",
        "args.temperature_value",
        ">= 0",
    )
    # top_k outside [1, vocab) is no filter, not an error.
    accepted(from_probs(ids, probs, top_k_value=-5), "sample_from_probs")
    accepted(from_probs(ids, probs, top_k_value=1 << 30), "sample_from_probs")


def test_sampling_seed_and_offset_are_device_scalars():
    ids, probs = arr((4,), "int32", slot=1), arr((4, 100), "float32")
    invalid(
        from_probs(ids, probs, seed=arr((2,), "int64", slot=2)),
        "sample_from_probs",
        "args.seed",
        "1 element(s)",
    )
    invalid(
        from_probs(ids, probs, offset=arr((1,), "int32", slot=2)),
        "sample_from_probs",
        "args.offset",
        "expected dtype int64",
    )
    host = FakeArray((1,), "int64", device="cpu")
    invalid(from_probs(ids, probs, seed=host), "sample_from_probs", "args.seed", "CUDA tensor")
    seeds = dict(seed=arr((1,), "int64", slot=2), offset=arr((), "int64", slot=3))
    accepted(from_probs(ids, probs, **seeds), "sample_from_probs")


def test_sampling_seed_values_are_64_bit():
    ids, probs = arr((4,), "int32", slot=1), arr((4, 100), "float32")
    accepted(from_probs(ids, probs, seed_value=(1 << 64) - 1), "sample_from_probs")
    with pytest.raises(TypeError):  # the Python layer reduces ints modulo 2^64 first
        from_probs(ids, probs, seed_value=-1)()


def test_renorm_and_mask_checks():
    probs = arr((4, 100), "float32")
    invalid(
        lambda: _C.top_k_renorm_probs(arr((4, 100), "float32", slot=1), arr((4, 100)), None, 5, 0),
        "top_k_renorm_probs",
        "probs",
        "expected dtype float32",
    )
    invalid(
        lambda: _C.top_p_renorm_probs(arr((4, 100), "float32", slot=1), probs, None, 0.0, 0),
        "top_p_renorm_probs",
        "args.top_p_value",
        "(0, 1]",
    )
    invalid(
        lambda: _C.top_k_mask_logits(arr((4, 100), "float16", slot=1), arr((4, 100)), None, 5, 0),
        "top_k_mask_logits",
        "out",
        "expected dtype bfloat16",
    )
    accepted(lambda: _C.top_p_renorm_probs(probs, probs, None, 0.9, 0), "top_p_renorm_probs")
    k = arr((4,), "int32", slot=2)
    accepted(lambda: _C.top_k_mask_logits(probs, probs, k, 0, 0), "top_k_mask_logits")


def test_top_k_checks():
    x = arr((4, 100), "bfloat16")
    values, indices = arr((4, 8), "bfloat16", slot=1), arr((4, 8), "int32", slot=2)
    invalid(lambda: _C.top_k(values, indices, x, 0, 0), "top_k", "k", "1 <= k <= 100")
    invalid(
        lambda: _C.top_k(values, arr((4, 8), "float32", slot=2), x, 8, 0),
        "top_k",
        "indices",
        "expected dtype one of {int32, int64}",
    )
    invalid(
        lambda: _C.top_k(arr((4, 8), "float32", slot=1), indices, x, 8, 0),
        "top_k",
        "values",
        "expected dtype bfloat16",
    )
    accepted(lambda: _C.top_k(values, indices, x, 8, 0), "top_k")


def chain_args(n=3, ids_dtype="int32", draft_positions=None):
    draft_positions = n if draft_positions is None else draft_positions
    return [
        arr((4, n), ids_dtype, slot=1),
        arr((4, draft_positions, 100), "float32", slot=2),
        arr((4, n + 1, 100), "float32", slot=3),
        arr((4, n + 1), "int32", slot=4),
        arr((4,), "int32", slot=5),
        None,
        None,
        0,
        0,
        0,
    ]


def test_chain_speculative_sampling_checks():
    op = "chain_speculative_sampling"
    invalid(
        lambda: _C.chain_speculative_sampling(*chain_args(ids_dtype="int64")),
        op,
        "args.draft_token_ids",
        "expected dtype int32",
    )
    invalid(
        lambda: _C.chain_speculative_sampling(*chain_args(draft_positions=2)),
        op,
        "args.draft_probs",
        "one less than target_probs' positions",
    )
    args = chain_args()
    args[5] = arr((1,), "int64", slot=6)
    args[6] = arr((1,), "int64", slot=7)
    accepted(lambda: _C.chain_speculative_sampling(*args), op)
