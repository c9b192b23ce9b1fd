"""Prefill attention with plan/run wrappers, as flashinfer.prefill: ragged k / v, or a paged KV
cache.

``q``: ``[total_q, num_qo_heads, head_dim]`` (fp16 / bf16, head_dim 64 / 96 / 128 / 192 / 256, last
dim contiguous, 16-byte aligned rows); request b's queries are rows ``qo_indptr[b]..qo_indptr[b+1]``.
Ragged (``BatchPrefillWithRaggedKVCacheWrapper``): ``k`` ``[total_kv, num_kv_heads, head_dim]``,
``v`` ``[total_kv, num_kv_heads, head_dim_vo]``, request b's keys rows
``kv_indptr[b]..kv_indptr[b+1]``; the output is ``[total_q, num_qo_heads, head_dim_vo]``.
``head_dim_vo`` is ``head_dim_qk``, or 128 with ``head_dim_qk`` 192 (DeepSeek's qk 192 / v 128; the
softmax scale stays ``1 / sqrt(head_dim_qk)``). Paged
(``BatchPrefillWithPagedKVCacheWrapper``): request b's keys are the tokens of its pages in the cache
(docs/paged_kv.md: ``(k_cache, v_cache)`` or one ``[pages, 2, ...]`` tensor, NHD or HND, and the
CSR page table). A query row i of a request with q_len queries and kv_len keys sits at kv position
``i + kv_len - q_len`` (bottom-right causal alignment: chunked prefill, append). ``plan`` runs on
the host (give the indptrs as CPU tensors to avoid a copy); ``run`` only launches, and can be
captured in a CUDA graph.
"""

import math
from typing import Optional, Tuple, Union

import torch

from . import _C
from ._torch import c_dtype, c_layout, custom_op, dl, dl_opt, eager, stream, torch_dtype
from .page import PagedKVCache, unpack_paged_kv_cache

# What a captured run depends on besides tensor addresses and the batch's totals: a re-plan in
# CUDA-graph mode must keep these.
_CAPACITY_FIELDS = (
    "num_qo_heads",
    "num_kv_heads",
    "head_dim",
    "head_dim_v",
    "dtype",
    "causal",
    "window_left",
    "window_right",
    "page_size",
    "work_capacity",
    "batch_capacity",
    "grid",
    "workspace_bytes",
)


# Ragged runs pass k and v (the cache and table None), paged runs the cache and the device table
# (k and v None).
@custom_op("prefill_run", mutates_args=("out", "lse"))
def _prefill_run(
    plan: torch.Tensor,
    workspace: torch.Tensor,
    q: torch.Tensor,
    k: Optional[torch.Tensor],
    v: Optional[torch.Tensor],
    k_cache: Optional[torch.Tensor],
    v_cache: Optional[torch.Tensor],
    kv_layout: str,
    paged_kv_indptr: Optional[torch.Tensor],
    paged_kv_indices: Optional[torch.Tensor],
    paged_kv_last_page_len: Optional[torch.Tensor],
    out: torch.Tensor,
    lse: Optional[torch.Tensor],
    sm_scale: float,
    logits_soft_cap: float,
    alibi_slopes: Optional[torch.Tensor],
    sinks: Optional[torch.Tensor],
    custom_mask: Optional[torch.Tensor],
    mask_offsets: Optional[torch.Tensor],
) -> None:
    _C.prefill_run(
        dl(plan),
        dl(workspace),
        dl(q),
        dl_opt(k),
        dl_opt(v),
        dl_opt(k_cache),
        dl_opt(v_cache),
        c_layout("prefill_run", kv_layout),
        dl_opt(paged_kv_indptr),
        dl_opt(paged_kv_indices),
        dl_opt(paged_kv_last_page_len),
        dl(out),
        dl_opt(lse),
        sm_scale,
        logits_soft_cap,
        dl_opt(alibi_slopes),
        dl_opt(sinks),
        dl_opt(custom_mask),
        dl_opt(mask_offsets),
        stream(q),
    )


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Flat bool mask -> uint8, least significant bit first."""
    flat = mask.reshape(-1).to(torch.int32)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.int32, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(-1).to(torch.uint8)


def _host_int32(t: torch.Tensor) -> torch.Tensor:
    return t.to(device="cpu", dtype=torch.int32).contiguous()


class _BatchPrefillWrapper:
    """The machinery both prefill wrappers share: the workspace, the plan array, CUDA-graph
    capacity checks, custom masks and the two run paths (eager _C call, traced custom op)."""

    _name = "BatchPrefillWrapper"

    def _init_common(
        self,
        float_workspace_buffer: Optional[torch.Tensor],
        use_cuda_graph: bool,
        max_batch_size: Optional[int],
        max_q_tokens: Optional[int],
        device: Optional[Union[torch.device, str, int]],
    ) -> None:
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
        self._max_batch_size = int(max_batch_size or 0) if use_cuda_graph else 0
        self._max_q_tokens = int(max_q_tokens or 0) if use_cuda_graph else 0
        self._capacity = None  # graph mode: what the first plan fixed (_CAPACITY_FIELDS)
        self._plan_info = torch.zeros(len(_C.PREFILL_PLAN_FIELDS), dtype=torch.int64)
        self._planned = False

    @property
    def is_cuda_graph_enabled(self) -> bool:
        return self._use_cuda_graph

    @property
    def plan_info(self) -> dict:
        """The current plan's fields (batch, totals, tile, work items, FLOPs, workspace bytes)."""
        return dict(zip(_C.PREFILL_PLAN_FIELDS, self._plan_info.tolist())) if self._planned else {}

    def _workspace_for(self, nbytes: int) -> torch.Tensor:
        ws = self._workspace
        if ws is not None and ws.numel() >= nbytes:
            return ws
        if self._user_workspace or (self._use_cuda_graph and ws is not None):
            raise _C.InvalidArgumentError(
                f"{self._name}.plan: workspace: too small: {nbytes} bytes needed, got "
                f"{0 if ws is None else ws.numel()}"
            )
        self._workspace = torch.empty(nbytes, dtype=torch.uint8, device=self._device)
        return self._workspace

    def _new_out(self, q: torch.Tensor) -> torch.Tensor:
        """run()'s output when none is given: like q, with the planned head_dim_vo as last dim."""
        if q.shape[-1] == self._head_dim_vo:
            return torch.empty_like(q)
        return q.new_empty((*q.shape[:-1], self._head_dim_vo))

    def _check_plan_options(
        self,
        pos_encoding_mode: str,
        head_dim_qk: int,
        head_dim_vo: Optional[int],
        q_data_type: Union[str, torch.dtype],
        kv_data_type: Optional[Union[str, torch.dtype]],
        o_data_type: Optional[Union[str, torch.dtype]] = None,
    ) -> torch.dtype:
        """The FlashInfer plan arguments with a single supported value (``head_dim_vo``: that of
        ``head_dim_qk``, or 128 with 192); returns q's dtype."""
        op = f"{self._name}.plan"
        if pos_encoding_mode != "NONE":
            raise _C.UnsupportedError(
                f"{op}: pos_encoding_mode: expected 'NONE', got {pos_encoding_mode!r} (apply RoPE "
                "with flashserve.apply_rope_pos_ids first; ALiBi: pass alibi_slopes=)"
            )
        if head_dim_vo is not None and head_dim_vo != head_dim_qk:
            if not (head_dim_qk == 192 and head_dim_vo == 128):
                also = " or 128 (qk 192 / v 128)" if head_dim_qk == 192 else ""
                raise _C.UnsupportedError(
                    f"{op}: head_dim_vo: expected {head_dim_qk} (head_dim_qk){also}, got "
                    f"{head_dim_vo} (different qk and vo head dims: only 192 / 128)"
                )
        dtype = torch_dtype("q_data_type", q_data_type)
        if kv_data_type is not None and torch_dtype("kv_data_type", kv_data_type) != dtype:
            raise _C.UnsupportedError(f"{op}: kv_data_type: expected {dtype} (q_data_type)")
        if o_data_type is not None and torch_dtype("o_data_type", o_data_type) != dtype:
            raise _C.UnsupportedError(f"{op}: o_data_type: expected {dtype} (q_data_type)")
        return dtype

    def _request(
        self,
        dtype: torch.dtype,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim: int,
        head_dim_vo: Optional[int],
        page_size: int,
        causal: bool,
        window_left: int,
        window_right: int,
        num_sms: Optional[int],
    ) -> "_C.PrefillPlanRequest":
        return _C.PrefillPlanRequest(
            num_qo_heads=num_qo_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            head_dim_v=0 if head_dim_vo is None else int(head_dim_vo),
            page_size=int(page_size),
            dtype=c_dtype("q_data_type", dtype),
            causal=causal,
            window_left=int(window_left),
            window_right=int(window_right),
            num_sms=int(num_sms or 0),
            max_batch_size=self._max_batch_size,
            max_q_tokens=self._max_q_tokens,
        )

    def _plan_host(self, request, host_arrays, before_plan=None) -> None:
        """Sizes the workspace, plans into it and keeps the plan array. ``host_arrays``:
        (qo_indptr, kv_indptr, paged_kv_indptr, paged_kv_last_page_len), CPU int32 or None.
        ``before_plan`` runs between sizing (which validates the request) and planning."""
        nbytes = _C.prefill_workspace_size(request, *(dl_opt(a) for a in host_arrays))
        if self._use_cuda_graph and self._capacity is not None:
            # The request's part of the capacity first: a change there (head_dim_v, say) would
            # otherwise show as a workspace too small for the new plan.
            hv = request.head_dim_v or request.head_dim
            asked = (request.num_qo_heads, request.num_kv_heads, request.head_dim, hv,
                     int(request.dtype.value), int(request.causal), request.window_left,
                     request.window_right, request.page_size)
            self._check_capacity_unchanged(asked, len(asked))
        workspace = self._workspace_for(nbytes)
        if before_plan is not None:
            before_plan()
        fields = _C.prefill_plan(
            request, *(dl_opt(a) for a in host_arrays), dl(workspace), stream(workspace)
        )
        if self._use_cuda_graph:
            info = dict(zip(_C.PREFILL_PLAN_FIELDS, fields))
            capacity = tuple(info[k] for k in _CAPACITY_FIELDS)
            if self._capacity is None:
                self._capacity = capacity
            else:
                self._check_capacity_unchanged(capacity, len(capacity))
        self._plan_info.copy_(torch.tensor(fields, dtype=torch.int64))

    def _check_capacity_unchanged(self, capacity: tuple, n: int) -> None:
        """Raises if the first n fields of _CAPACITY_FIELDS differ from the first plan's."""
        if capacity[:n] == self._capacity[:n]:
            return
        changed = ", ".join(
            f"{k} {a} -> {b}"
            for k, a, b in zip(_CAPACITY_FIELDS[:n], self._capacity, capacity)
            if a != b
        )
        raise _C.InvalidArgumentError(
            f"{self._name}.plan: the plan's capacity changed ({changed}): captured "
            "graphs would be invalid; keep heads, head_dim, dtype, masks, page size and "
            "the capacity fixed in CUDA-graph mode"
        )

    def _set_options(
        self,
        qo_h: torch.Tensor,
        kv_lens: torch.Tensor,
        head_dim: int,
        head_dim_vo: Optional[int],
        custom_mask: Optional[torch.Tensor],
        packed_custom_mask: Optional[torch.Tensor],
        sm_scale: Optional[float],
        logits_soft_cap: Optional[float],
        alibi_slopes: Optional[torch.Tensor],
        non_blocking: bool,
    ) -> None:
        """The run arguments a plan fixes: the custom mask (request b's ``[q_len, kv_len]`` bits
        at an offset), the softmax scale (of ``head_dim``, q and k's), the soft-cap, the ALiBi
        slopes and the output's head dim."""
        self._mask, self._mask_offsets = None, None
        if custom_mask is not None or packed_custom_mask is not None:
            sizes = (qo_h[1:] - qo_h[:-1]).to(torch.int64) * kv_lens.to(torch.int64)
            if packed_custom_mask is not None:  # per-request segments padded to whole bytes
                seg = (sizes + 7) // 8 * 8
                self._mask = packed_custom_mask.to(self._device, torch.uint8)
            else:
                seg = sizes
                self._mask = _pack_bits(custom_mask.to(self._device, torch.bool))
            offsets = torch.cumsum(seg, 0) - seg
            self._mask_offsets = offsets.to(self._device, non_blocking=non_blocking)
        self._sm_scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(head_dim)
        self._logits_soft_cap = float(logits_soft_cap or 0.0)
        self._alibi = alibi_slopes
        self._head_dim_vo = int(head_dim if head_dim_vo is None else head_dim_vo)
        self._planned = True

    def _launch(self, q, k, v, k_cache, v_cache, table, out, lse, sm_scale, sinks) -> None:
        """One prefill_run: ragged (k, v) or paged (k_cache, v_cache and the device table)."""
        indptr, indices, last = table
        if eager(q):
            _C.prefill_run(
                dl(self._plan_info),
                dl(self._workspace),
                dl(q),
                dl_opt(k),
                dl_opt(v),
                dl_opt(k_cache),
                dl_opt(v_cache),
                self._layout,
                dl_opt(indptr),
                dl_opt(indices),
                dl_opt(last),
                dl(out),
                dl_opt(lse),
                sm_scale,
                self._logits_soft_cap,
                dl_opt(self._alibi),
                dl_opt(sinks),
                dl_opt(self._mask),
                dl_opt(self._mask_offsets),
                stream(q),
            )
        else:
            _prefill_run(
                self._plan_info,
                self._workspace,
                q,
                k,
                v,
                k_cache,
                v_cache,
                self._kv_layout,
                indptr,
                indices,
                last,
                out,
                lse,
                sm_scale,
                self._logits_soft_cap,
                self._alibi,
                sinks,
                self._mask,
                self._mask_offsets,
            )


class BatchPrefillWithRaggedKVCacheWrapper(_BatchPrefillWrapper):
    """Prefill attention for a batch of requests with ragged q and kv lengths.

    As FlashInfer's wrapper; ``float_workspace_buffer`` may be None (the wrapper then owns a
    workspace of the size the plan needs). CUDA-graph mode keeps the workspace layout fixed for a
    capacity (``max_batch_size`` / ``max_q_tokens``, or the sizes of ``qo_indptr_buf``): a graph
    captured around ``run`` replays correctly after a re-plan with the same heads, tensors and
    total token counts.
    """

    _name = "BatchPrefillWithRaggedKVCacheWrapper"

    def __init__(
        self,
        float_workspace_buffer: Optional[torch.Tensor] = None,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        qo_indptr_buf: Optional[torch.Tensor] = None,
        kv_indptr_buf: Optional[torch.Tensor] = None,
        *,
        max_batch_size: Optional[int] = None,
        max_q_tokens: Optional[int] = None,
        device: Optional[Union[torch.device, str, int]] = None,
    ) -> None:
        if kv_layout != "NHD":
            raise _C.InvalidArgumentError(
                f"BatchPrefillWithRaggedKVCacheWrapper: kv_layout: expected 'NHD' (k, v are "
                f"[tokens, heads, dim]), got {kv_layout!r}"
            )
        self._kv_layout, self._layout = "NHD", _C.KVLayout.NHD
        if use_cuda_graph and qo_indptr_buf is not None:
            max_batch_size = qo_indptr_buf.numel() - 1
        self._init_common(
            float_workspace_buffer, use_cuda_graph, max_batch_size, max_q_tokens, device
        )

    def plan(
        self,
        qo_indptr: torch.Tensor,
        kv_indptr: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim_qk: int,
        head_dim_vo: Optional[int] = None,
        custom_mask: Optional[torch.Tensor] = None,
        packed_custom_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        pos_encoding_mode: str = "NONE",
        use_fp16_qk_reduction: bool = False,
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        sm_scale: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        q_data_type: Union[str, torch.dtype] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        non_blocking: bool = True,
        *,
        window_right: int = -1,
        alibi_slopes: Optional[torch.Tensor] = None,
        num_sms: Optional[int] = None,
    ) -> None:
        """Plans one batch composition (outside graph capture).

        ``custom_mask``: bool, request b's ``[q_len, kv_len]`` mask flattened and concatenated
        (True = visible); ``packed_custom_mask``: the same packed per request with
        ``flashinfer.segment_packbits(..., bitorder="little")``. ``window_right`` and
        ``alibi_slopes`` (float32 ``[num_qo_heads]``) are extensions; RoPE inside attention is
        not supported (``pos_encoding_mode`` must be "NONE")."""
        dtype = self._check_plan_options(
            pos_encoding_mode, head_dim_qk, head_dim_vo, q_data_type, kv_data_type
        )
        qo_h, kv_h = _host_int32(qo_indptr), _host_int32(kv_indptr)
        request = self._request(
            dtype,
            num_qo_heads,
            num_kv_heads,
            head_dim_qk,
            head_dim_vo,
            0,
            causal,
            window_left,
            window_right,
            num_sms,
        )
        self._plan_host(request, (qo_h, kv_h, None, None))
        self._set_options(
            qo_h,
            kv_h[1:] - kv_h[:-1],
            head_dim_qk,
            head_dim_vo,
            custom_mask,
            packed_custom_mask,
            sm_scale,
            logits_soft_cap,
            alibi_slopes,
            non_blocking,
        )

    def run(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        enable_pdl: Optional[bool] = None,
        *,
        sinks: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Attention output ``[total_q, num_qo_heads, head_dim_vo]`` (and the natural-log LSE with
        ``return_lse``). ``sinks``: float32 ``[num_qo_heads]`` gpt-oss sink logits."""
        if not self._planned:
            raise _C.Error("BatchPrefillWithRaggedKVCacheWrapper.run: call plan() first")
        if out is None:
            out = self._new_out(q)
        if return_lse and lse is None:
            lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        self._launch(q, k, v, None, None, (None, None, None), out, lse, self._sm_scale, sinks)
        return (out, lse) if return_lse else out

    forward = run


class BatchPrefillWithPagedKVCacheWrapper(_BatchPrefillWrapper):
    """Prefill (and append / chunked prefill) attention over a paged KV cache.

    As FlashInfer's wrapper: ``plan`` takes the page table (``paged_kv_indptr [batch + 1]``,
    ``paged_kv_indices``, ``paged_kv_last_page_len [batch]``, int32; the indptr and last-page
    lengths are read on the host, so give them as CPU tensors to skip a device-to-host copy) and
    ``run`` the cache, ``(k_cache, v_cache)`` or one ``[pages, 2, ...]`` tensor (split into views,
    never copied), in ``kv_layout`` NHD ``[pages, page_size, kv_heads, head_dim]`` or HND
    ``[pages, kv_heads, page_size, head_dim]``, of q's dtype. Any page size. With
    ``head_dim_vo`` 128 at ``head_dim_qk`` 192 the v cache's last dim is 128 (give the pair).

    ``float_workspace_buffer`` may be None (the wrapper then owns a workspace of the size the plan
    needs). CUDA graphs (``use_cuda_graph=True``): the wrapper owns fixed-size device page-table
    buffers (or uses ``paged_kv_*_buf``; capacity from their sizes, else ``max_batch_size`` and
    ``max_num_pages``) and a workspace laid out for the capacity (``max_q_tokens``: the query
    tokens), so a graph captured around ``run`` replays correctly after a re-plan with the same
    heads, tensors and total token counts. Keep ``q`` and ``out`` at fixed addresses.
    """

    _name = "BatchPrefillWithPagedKVCacheWrapper"

    def __init__(
        self,
        float_workspace_buffer: Optional[torch.Tensor] = None,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        qo_indptr_buf: Optional[torch.Tensor] = None,
        paged_kv_indptr_buf: Optional[torch.Tensor] = None,
        paged_kv_indices_buf: Optional[torch.Tensor] = None,
        paged_kv_last_page_len_buf: Optional[torch.Tensor] = None,
        *,
        max_batch_size: Optional[int] = None,
        max_num_pages: Optional[int] = None,
        max_q_tokens: Optional[int] = None,
        device: Optional[Union[torch.device, str, int]] = None,
    ) -> None:
        op = "BatchPrefillWithPagedKVCacheWrapper"
        self._layout = c_layout(op, kv_layout)
        self._kv_layout = kv_layout
        if use_cuda_graph:
            if paged_kv_indptr_buf is not None:
                max_batch_size = paged_kv_indptr_buf.numel() - 1
            elif qo_indptr_buf is not None:
                max_batch_size = qo_indptr_buf.numel() - 1
            if max_batch_size is None or max_batch_size < 1:
                raise _C.InvalidArgumentError(
                    f"{op}: use_cuda_graph: expected paged_kv_indptr_buf, qo_indptr_buf or "
                    "max_batch_size >= 1 (the graph's capacity)"
                )
            if paged_kv_indices_buf is None and max_num_pages is None:
                raise _C.InvalidArgumentError(
                    f"{op}: use_cuda_graph: expected paged_kv_indices_buf or max_num_pages (the "
                    "graph's page capacity)"
                )
        self._init_common(
            float_workspace_buffer, use_cuda_graph, max_batch_size, max_q_tokens, device
        )
        if use_cuda_graph:
            i32 = dict(dtype=torch.int32, device=self._device)
            batch = self._max_batch_size
            self._indptr = (
                paged_kv_indptr_buf
                if paged_kv_indptr_buf is not None
                else torch.zeros(batch + 1, **i32)
            )
            self._indices = (
                paged_kv_indices_buf
                if paged_kv_indices_buf is not None
                else torch.zeros(int(max_num_pages), **i32)
            )
            self._last_page_len = (
                paged_kv_last_page_len_buf
                if paged_kv_last_page_len_buf is not None
                else torch.zeros(batch, **i32)
            )
        else:
            self._indptr = self._indices = self._last_page_len = None

    def _check_capacity(self, indptr, indices, last_page_len) -> None:
        """Graph mode: the page table must fit the fixed buffers."""
        op = "BatchPrefillWithPagedKVCacheWrapper.plan"
        batch = indptr.numel() - 1
        if batch > self._max_batch_size or last_page_len.numel() > self._last_page_len.numel():
            raise _C.InvalidArgumentError(
                f"{op}: paged_kv_indptr: batch {batch} exceeds the CUDA-graph capacity "
                f"{self._max_batch_size}"
            )
        if indices.numel() > self._indices.numel():
            raise _C.InvalidArgumentError(
                f"{op}: paged_kv_indices: {indices.numel()} pages exceed the CUDA-graph capacity "
                f"{self._indices.numel()}"
            )

    def _device_table(self, indptr, indices, last_page_len, non_blocking) -> None:
        """The device page table that run() passes: the caller's tensors (on the device, int32,
        contiguous: no copy), or in graph mode copies into the fixed buffers."""
        if not self._use_cuda_graph:
            dev = dict(device=self._device, dtype=torch.int32, non_blocking=non_blocking)
            self._indptr = indptr.to(**dev).contiguous()
            self._indices = indices.to(**dev).contiguous()
            self._last_page_len = last_page_len.to(**dev).contiguous()
            return
        self._indptr[: indptr.numel()].copy_(indptr, non_blocking=non_blocking)
        self._indices[: indices.numel()].copy_(indices, non_blocking=non_blocking)
        self._last_page_len[: last_page_len.numel()].copy_(last_page_len, non_blocking=non_blocking)

    def plan(
        self,
        qo_indptr: torch.Tensor,
        paged_kv_indptr: torch.Tensor,
        paged_kv_indices: torch.Tensor,
        paged_kv_last_page_len: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim_qk: int,
        page_size: int,
        head_dim_vo: Optional[int] = None,
        custom_mask: Optional[torch.Tensor] = None,
        packed_custom_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        pos_encoding_mode: str = "NONE",
        use_fp16_qk_reduction: bool = False,
        sm_scale: Optional[float] = None,
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        q_data_type: Union[str, torch.dtype] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        o_data_type: Optional[Union[str, torch.dtype]] = None,
        non_blocking: bool = True,
        *,
        window_right: int = -1,
        alibi_slopes: Optional[torch.Tensor] = None,
        num_sms: Optional[int] = None,
    ) -> None:
        """Plans one batch composition (outside graph capture).

        Request b's kv length is ``(pages - 1) * page_size + paged_kv_last_page_len[b]`` (0
        without pages); its queries are its last kv positions (bottom-right alignment). The
        masks, ``custom_mask`` / ``packed_custom_mask`` (over ``[q_len, kv_len]`` per request),
        ``window_right`` and ``alibi_slopes`` are as for the ragged wrapper; RoPE inside
        attention is not supported (``pos_encoding_mode`` must be "NONE")."""
        dtype = self._check_plan_options(
            pos_encoding_mode, head_dim_qk, head_dim_vo, q_data_type, kv_data_type, o_data_type
        )
        if self._use_cuda_graph:
            self._check_capacity(paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len)
        qo_h = _host_int32(qo_indptr)
        indptr_h, last_h = _host_int32(paged_kv_indptr), _host_int32(paged_kv_last_page_len)
        request = self._request(
            dtype,
            num_qo_heads,
            num_kv_heads,
            head_dim_qk,
            head_dim_vo,
            page_size,
            causal,
            window_left,
            window_right,
            num_sms,
        )
        # The device table once the request and the host arrays are known to be valid.
        self._plan_host(
            request,
            (qo_h, None, indptr_h, last_h),
            lambda: self._device_table(
                paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, non_blocking
            ),
        )
        pages = indptr_h[1:] - indptr_h[:-1]
        kv_lens = torch.where(pages > 0, (pages - 1) * int(page_size) + last_h, 0)
        self._set_options(
            qo_h,
            kv_lens,
            head_dim_qk,
            head_dim_vo,
            custom_mask,
            packed_custom_mask,
            sm_scale,
            logits_soft_cap,
            alibi_slopes,
            non_blocking,
        )

    def run(
        self,
        q: torch.Tensor,
        paged_kv_cache: PagedKVCache,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        enable_pdl: Optional[bool] = None,
        *,
        q_scale: Optional[float] = None,
        k_scale: Optional[float] = None,
        v_scale: Optional[float] = None,
        sinks: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Attention output ``[total_q, num_qo_heads, head_dim_vo]`` (and the natural-log LSE
        ``[total_q, num_qo_heads]`` with ``return_lse``) for the planned batch.

        ``q_scale`` and ``k_scale`` multiply the softmax scale, ``v_scale`` the output (as
        FlashInfer does for 16-bit caches). ``sinks``: float32 ``[num_qo_heads]`` gpt-oss sink
        logits."""
        op = "BatchPrefillWithPagedKVCacheWrapper.run"
        if not self._planned:
            raise _C.Error(f"{op}: call plan() first")
        if type(paged_kv_cache) is tuple and len(paged_kv_cache) == 2:
            k_cache, v_cache = paged_kv_cache  # the common case, without a call
        else:
            k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, op)
        sm_scale, post_scale = self._sm_scale, 1.0
        if q_scale is not None or k_scale is not None or v_scale is not None:
            sm_scale *= (1.0 if q_scale is None else float(q_scale)) * (
                1.0 if k_scale is None else float(k_scale)
            )
            post_scale = 1.0 if v_scale is None else float(v_scale)
            if not (math.isfinite(sm_scale) and sm_scale > 0):
                raise _C.InvalidArgumentError(
                    f"{op}: q_scale, k_scale: expected finite values > 0 (they multiply the "
                    f"softmax scale), got {q_scale}, {k_scale}"
                )
        if out is None:
            out = self._new_out(q)
        if return_lse and lse is None:
            lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        table = (self._indptr, self._indices, self._last_page_len)
        self._launch(q, None, None, k_cache, v_cache, table, out, lse, sm_scale, sinks)
        if post_scale != 1.0:
            out.mul_(post_scale)
        return (out, lse) if return_lse else out

    forward = run


def single_prefill_with_kv_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    custom_mask: Optional[torch.Tensor] = None,
    packed_custom_mask: Optional[torch.Tensor] = None,
    causal: bool = False,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_fp16_qk_reduction: bool = False,
    sm_scale: Optional[float] = None,
    window_left: int = -1,
    logits_soft_cap: Optional[float] = None,
    rope_scale: Optional[float] = None,
    rope_theta: Optional[float] = None,
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One request: ``q [q_len, heads, dim]``, ``k [kv_len, kv_heads, dim]``, ``v [kv_len,
    kv_heads, dim_v]`` (dim_v: dim, or 128 with dim 192); returns ``[q_len, heads, dim_v]``. Plans
    on every call (host work, no device sync); use the wrapper to plan once per batch."""
    w = BatchPrefillWithRaggedKVCacheWrapper(kv_layout=kv_layout, device=q.device)
    qo = torch.tensor([0, q.shape[0]], dtype=torch.int32)
    kv = torch.tensor([0, k.shape[0]], dtype=torch.int32)
    w.plan(
        qo,
        kv,
        q.shape[1],
        k.shape[1],
        q.shape[2],
        v.shape[2],
        custom_mask,
        packed_custom_mask,
        causal,
        pos_encoding_mode,
        use_fp16_qk_reduction,
        window_left,
        logits_soft_cap,
        sm_scale,
        rope_scale,
        rope_theta,
        q.dtype,
    )
    return w.run(q, k, v, return_lse=return_lse)
