"""Paged decode attention with a plan/run wrapper, as flashinfer.decode.

    wrapper = flashserve.BatchDecodeWithPagedKVCacheWrapper(kv_layout="NHD")
    wrapper.plan(kv_indptr, kv_indices, kv_last_page_len, 32, 8, 128, 16,
                 q_data_type=torch.bfloat16)
    out = wrapper.run(q, (k_cache, v_cache))        # every layer, every step; capturable

``plan`` reads the kv lengths on the host (give the page table's ``indptr`` / ``last_page_len``
as CPU tensors to avoid a device-to-host copy), builds the split-KV schedule and copies it into the
wrapper's workspace. ``run`` launches the kernels only: no synchronization, no allocation when
``out`` is given, so it can be captured in a CUDA graph.

CUDA graphs (``use_cuda_graph=True``): the wrapper owns fixed-size page-table buffers and a
workspace sized for a capacity (``max_batch_size``, or the size of ``paged_kv_indptr_buffer``), so a
graph captured around ``run`` replays correctly after ``plan`` wrote another batch. Keep ``q`` and
``out`` at fixed addresses sized for the capacity (``[max_q_tokens, heads, dim]``) and slice them.
"""

import math
from typing import Optional, Tuple, Union

import torch

from . import _C
from ._torch import c_dtype, c_layout, custom_op, dl, dl_opt, eager, stream, torch_dtype
from .page import PagedKVCache, unpack_paged_kv_cache

_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
# What a captured run depends on besides tensor addresses: a re-plan must keep these.
_CAPACITY_FIELDS = (
    "num_qo_heads",
    "num_kv_heads",
    "head_dim",
    "page_size",
    "q_dtype",
    "kv_dtype",
    "work_capacity",
    "merge_capacity",
    "partial_capacity",
    "num_sms",
    "workspace_bytes",
    "cta_warps",
)


# The workspace is scratch that only decode_plan and decode_run touch (work lists and fp32
# partials): it is not declared as mutated, so torch.compile does not clone it around each call.
@custom_op("decode_run", mutates_args=("out", "lse"))
def _decode_run(
    plan: torch.Tensor,
    workspace: torch.Tensor,
    q: torch.Tensor,
    out: torch.Tensor,
    lse: Optional[torch.Tensor],
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k_scale: float,
    v_scale: float,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    last_page_len: torch.Tensor,
    sm_scale: float,
    logits_soft_cap: float,
    window_left: int,
    sinks: Optional[torch.Tensor],
) -> None:
    _C.decode_run(
        dl(plan),
        dl(workspace),
        dl(q),
        dl(out),
        dl_opt(lse),
        dl(k_cache),
        dl(v_cache),
        k_scale,
        v_scale,
        dl(indptr),
        dl(indices),
        dl(last_page_len),
        sm_scale,
        logits_soft_cap,
        window_left,
        dl_opt(sinks),
        stream(q),
    )


def _host_int32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return t.to(device="cpu", dtype=torch.int32).contiguous()


class BatchDecodeWithPagedKVCacheWrapper:
    """Decode attention over a paged KV cache for a batch of requests (1..8 query tokens each).

    Arguments mirror FlashInfer's wrapper. ``float_workspace_buffer`` may be None: the wrapper then
    allocates (and owns) a workspace of the size the plan needs. ``use_tensor_cores`` is accepted
    and ignored (the kernel picks tensor cores itself). Extra keyword-only arguments:
    ``max_batch_size`` / ``max_num_pages`` / ``max_q_tokens`` size the CUDA-graph buffers when
    the page-table buffers are not given; ``device`` defaults to the current CUDA device.
    """

    def __init__(
        self,
        float_workspace_buffer: Optional[torch.Tensor] = None,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        use_tensor_cores: bool = False,
        paged_kv_indptr_buffer: Optional[torch.Tensor] = None,
        paged_kv_indices_buffer: Optional[torch.Tensor] = None,
        paged_kv_last_page_len_buffer: Optional[torch.Tensor] = None,
        *,
        max_batch_size: Optional[int] = None,
        max_num_pages: Optional[int] = None,
        max_q_tokens: Optional[int] = None,
        device: Optional[Union[torch.device, str, int]] = None,
    ) -> None:
        self._kv_layout = kv_layout
        self._layout = c_layout("BatchDecodeWithPagedKVCacheWrapper", kv_layout)
        if device is None:
            buf = float_workspace_buffer
            device = buf.device if buf is not None else torch.cuda.current_device()
        self._device = (
            torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        )
        self._user_workspace = float_workspace_buffer is not None
        self._workspace = None
        if float_workspace_buffer is not None:
            self._workspace = float_workspace_buffer.view(-1).view(torch.uint8)
        self._use_cuda_graph = use_cuda_graph
        self._max_batch_size = 0
        self._max_q_tokens = int(max_q_tokens or 0)
        self._capacity = (
            None  # graph mode: the first plan's workspace layout, which must not change
        )
        if use_cuda_graph:
            if paged_kv_indptr_buffer is not None:
                max_batch_size = paged_kv_indptr_buffer.numel() - 1
            if max_batch_size is None or max_batch_size < 1:
                raise _C.InvalidArgumentError(
                    "BatchDecodeWithPagedKVCacheWrapper: use_cuda_graph: expected "
                    "paged_kv_indptr_buffer or max_batch_size >= 1 (the graph's capacity)"
                )
            if paged_kv_indices_buffer is None and max_num_pages is None:
                raise _C.InvalidArgumentError(
                    "BatchDecodeWithPagedKVCacheWrapper: use_cuda_graph: expected "
                    "paged_kv_indices_buffer or max_num_pages (the graph's page capacity)"
                )
            self._max_batch_size = int(max_batch_size)
            i32 = dict(dtype=torch.int32, device=self._device)
            self._indptr = (
                paged_kv_indptr_buffer
                if paged_kv_indptr_buffer is not None
                else torch.zeros(self._max_batch_size + 1, **i32)
            )
            self._indices = (
                paged_kv_indices_buffer
                if paged_kv_indices_buffer is not None
                else torch.zeros(int(max_num_pages), **i32)
            )
            self._last_page_len = (
                paged_kv_last_page_len_buffer
                if paged_kv_last_page_len_buffer is not None
                else torch.zeros(self._max_batch_size, **i32)
            )
            self._plan_info = torch.zeros(len(_C.DECODE_PLAN_FIELDS), dtype=torch.int64)
        else:
            self._indptr = self._indices = self._last_page_len = None
            self._plan_info = None
        self._planned = False

    @property
    def is_cuda_graph_enabled(self) -> bool:
        return self._use_cuda_graph

    @property
    def plan_info(self) -> dict:
        """The current plan's fields (batch, splits, work items, capacities, workspace bytes)."""
        if not self._planned:
            return {}
        return dict(zip(_C.DECODE_PLAN_FIELDS, self._plan_info.tolist()))

    def reset_workspace_buffer(
        self,
        float_workspace_buffer: torch.Tensor,
        int_workspace_buffer: Optional[torch.Tensor] = None,
    ) -> None:
        """Use another workspace from the next ``plan`` on (``int_workspace_buffer`` is ignored:
        one buffer holds both the work lists and the partials)."""
        self._workspace = float_workspace_buffer.view(-1).view(torch.uint8)
        self._user_workspace = True
        self._planned = False

    def _workspace_for(self, nbytes: int) -> torch.Tensor:
        ws = self._workspace
        if ws is not None and ws.numel() >= nbytes:
            return ws
        if self._user_workspace or (self._use_cuda_graph and ws is not None):
            have = 0 if ws is None else ws.numel()
            raise _C.InvalidArgumentError(
                f"BatchDecodeWithPagedKVCacheWrapper.plan: workspace: too small: {nbytes} bytes "
                f"needed, got {have}"
            )
        self._workspace = torch.empty(nbytes, dtype=torch.uint8, device=self._device)
        return self._workspace

    def _check_capacity(self, indptr, indices):
        batch = indptr.numel() - 1
        op = "BatchDecodeWithPagedKVCacheWrapper.plan"
        if batch > self._max_batch_size:
            raise _C.InvalidArgumentError(
                f"{op}: indptr: batch {batch} exceeds the CUDA-graph capacity "
                f"{self._max_batch_size}"
            )
        if indices.numel() > self._indices.numel():
            raise _C.InvalidArgumentError(
                f"{op}: indices: {indices.numel()} pages exceed the CUDA-graph capacity "
                f"{self._indices.numel()}"
            )

    def _device_table(self, indptr, indices, last_page_len, non_blocking):
        if not self._use_cuda_graph:
            dev = dict(device=self._device, dtype=torch.int32, non_blocking=non_blocking)
            self._indptr = indptr.to(**dev).contiguous()
            self._indices = indices.to(**dev).contiguous()
            self._last_page_len = last_page_len.to(**dev).contiguous()
            return
        batch = indptr.numel() - 1
        self._indptr[: batch + 1].copy_(indptr, non_blocking=non_blocking)
        self._indices[: indices.numel()].copy_(indices, non_blocking=non_blocking)
        self._last_page_len[:batch].copy_(last_page_len, non_blocking=non_blocking)

    def plan(
        self,
        indptr: torch.Tensor,
        indices: torch.Tensor,
        last_page_len: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim: int,
        page_size: int,
        pos_encoding_mode: str = "NONE",
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        q_data_type: Union[str, torch.dtype] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        data_type: Optional[Union[str, torch.dtype]] = None,
        sm_scale: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        non_blocking: bool = True,
        *,
        q_indptr: Optional[torch.Tensor] = None,
        deterministic: bool = False,
        fixed_split_size: Optional[int] = None,
        max_kv_tokens: Optional[int] = None,
        num_sms: Optional[int] = None,
    ) -> None:
        """Plans decode attention for one batch composition (outside graph capture).

        ``q_indptr`` (extension): request b's query tokens are rows ``q_indptr[b]..q_indptr[b+1]``
        of ``q`` (0..8 each, its last kv positions, causal among themselves); None means one each.
        ``deterministic``: a fixed split length (``fixed_split_size``, default 512), so a request's
        output is bitwise identical across batch compositions (give ``max_kv_tokens`` with CUDA
        graphs). RoPE inside attention (``pos_encoding_mode`` other than "NONE") is not supported:
        rotate q and k with flashserve.apply_rope_pos_ids before appending.
        """
        op = "BatchDecodeWithPagedKVCacheWrapper.plan"
        if pos_encoding_mode != "NONE":
            raise _C.UnsupportedError(
                f"{op}: pos_encoding_mode: expected 'NONE', got {pos_encoding_mode!r} (apply RoPE "
                "with flashserve.apply_rope_pos_ids before appending to the cache)"
            )
        if self._use_cuda_graph:
            self._check_capacity(indptr, indices)
        q_dtype = torch_dtype("q_data_type", q_data_type)
        kv_dtype = torch_dtype("kv_data_type", kv_data_type or data_type or q_dtype)
        indptr_h, last_h = _host_int32(indptr), _host_int32(last_page_len)
        q_indptr_h = _host_int32(q_indptr)
        request = _C.DecodePlanRequest(
            num_qo_heads=num_qo_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            page_size=page_size,
            q_dtype=c_dtype("q_data_type", q_dtype),
            kv_dtype=c_dtype("kv_data_type", kv_dtype),
            layout=self._layout,
            deterministic=deterministic,
            fixed_split_tokens=int(fixed_split_size or 0),
            num_sms=int(num_sms or 0),
            max_batch_size=self._max_batch_size,
            max_q_tokens=self._max_q_tokens,
            max_kv_tokens=int(max_kv_tokens or 0),
        )
        host = (dl(indptr_h), dl(last_h), dl_opt(q_indptr_h))
        nbytes = _C.decode_workspace_size(request, *host)
        workspace = self._workspace_for(nbytes)
        self._device_table(indptr, indices, last_page_len, non_blocking)
        host = (dl(indptr_h), dl(last_h), dl_opt(q_indptr_h))  # capsules are consumed once
        fields = _C.decode_plan(request, *host, dl(workspace), stream(workspace))
        if self._use_cuda_graph:
            info = dict(zip(_C.DECODE_PLAN_FIELDS, fields))
            capacity = tuple(info[k] for k in _CAPACITY_FIELDS)
            if self._capacity is None:
                self._capacity = capacity
            elif capacity != self._capacity:
                raise _C.InvalidArgumentError(
                    f"{op}: the plan's capacity changed ({self._capacity} -> {capacity}): captured "
                    "graphs would be invalid; keep heads, head_dim, page size, dtypes and "
                    "max_kv_tokens fixed in CUDA-graph mode"
                )
            self._plan_info.copy_(torch.tensor(fields, dtype=torch.int64))
        else:
            self._plan_info = torch.tensor(fields, dtype=torch.int64)
        self._head_dim = head_dim
        self._sm_scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(head_dim)
        self._logits_soft_cap = float(logits_soft_cap or 0.0)
        self._window_left = int(window_left)
        self._num_qo_heads = num_qo_heads
        # The plan, workspace and device page table converted once: run() converts only q, out,
        # lse, the cache and sinks (each DLPack conversion is ~0.5 us of the per-call budget).
        self._bound = _C.DecodeBound(
            dl(self._plan_info),
            dl(workspace),
            dl(self._indptr),
            dl(self._indices),
            dl(self._last_page_len),
        )
        self._planned = True

    def run(
        self,
        q: torch.Tensor,
        paged_kv_cache: PagedKVCache,
        q_scale: Optional[float] = None,
        k_scale: Optional[float] = None,
        v_scale: Optional[float] = None,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        enable_pdl: Optional[bool] = None,
        window_left: Optional[int] = None,
        sinks: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Attention output ``[q_tokens, num_qo_heads, head_dim]`` (and the natural-log LSE
        ``[q_tokens, num_qo_heads]`` with ``return_lse``) for the planned batch.

        ``q_scale`` multiplies the softmax scale; ``k_scale`` / ``v_scale`` dequantize an fp8
        cache (for 16-bit caches they scale the logits / the output, as in FlashInfer).
        ``sinks``: float32 ``[num_qo_heads]`` gpt-oss sink logits."""
        if not self._planned:
            raise _C.Error("BatchDecodeWithPagedKVCacheWrapper.run: call plan() first")
        if type(paged_kv_cache) is tuple and len(paged_kv_cache) == 2:
            k_cache, v_cache = paged_kv_cache  # the common case, without a call
        else:
            k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, "decode_run")
        sm_scale, ks, vs, post_scale = self._sm_scale, 1.0, 1.0, 1.0
        if q_scale is not None or k_scale is not None or v_scale is not None:
            sm_scale *= 1.0 if q_scale is None else float(q_scale)
            ks = 1.0 if k_scale is None else float(k_scale)
            vs = 1.0 if v_scale is None else float(v_scale)
            if k_cache.dtype not in _FP8:
                # The kernel applies the scales only to fp8 caches; fold them in for 16-bit ones.
                sm_scale, ks, post_scale, vs = sm_scale * ks, 1.0, vs, 1.0
        if out is None:
            out = torch.empty_like(q)
        if return_lse and lse is None:
            lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        wl = self._window_left if window_left is None else int(window_left)
        if eager(q):
            self._bound.run(
                dl(q),
                dl(out),
                dl_opt(lse),
                dl(k_cache),
                dl(v_cache),
                ks,
                vs,
                sm_scale,
                self._logits_soft_cap,
                wl,
                dl_opt(sinks),
                stream(q),
            )
        else:
            _decode_run(
                self._plan_info,
                self._workspace,
                q,
                out,
                lse,
                k_cache,
                v_cache,
                ks,
                vs,
                self._indptr,
                self._indices,
                self._last_page_len,
                sm_scale,
                self._logits_soft_cap,
                wl,
                sinks,
            )
        if post_scale != 1.0:
            out.mul_(post_scale)
        return (out, lse) if return_lse else out

    forward = run
