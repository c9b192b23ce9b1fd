"""Ragged (varlen) prefill attention with a plan/run wrapper, as flashinfer.prefill.

``q``: ``[total_q, num_qo_heads, head_dim]``, ``k`` / ``v``: ``[total_kv, num_kv_heads,
head_dim]`` (fp16 / bf16, head_dim 64 / 128 / 256, last dim contiguous, 16-byte aligned rows).
Request b's queries are rows ``qo_indptr[b]..qo_indptr[b+1]`` of ``q`` and its keys rows
``kv_indptr[b]..kv_indptr[b+1]`` of ``k`` / ``v``. A query row i of a request with q_len queries and
kv_len keys sits at kv position ``i + kv_len - q_len`` (bottom-right causal alignment: chunked
prefill). ``plan`` runs on the host (give the indptrs as CPU tensors to avoid a copy);
``run`` only launches, and can be captured in a CUDA graph.
"""

import math
from typing import Optional, Tuple, Union

import torch

from . import _C
from ._torch import c_dtype, custom_op, dl, dl_opt, eager, stream, torch_dtype


@custom_op("prefill_run", mutates_args=("out", "lse"))
def _prefill_run(
    plan: torch.Tensor,
    workspace: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
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
        dl(k),
        dl(v),
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


class BatchPrefillWithRaggedKVCacheWrapper:
    """Prefill attention for a batch of requests with ragged q and kv lengths.

    As FlashInfer's wrapper; ``float_workspace_buffer`` may be None (the wrapper then owns a
    workspace of the size the plan needs). CUDA-graph mode keeps the workspace layout fixed for a
    capacity (``max_batch_size`` / ``max_q_tokens``, or the sizes of ``qo_indptr_buf``): a graph
    captured around ``run`` replays correctly after a re-plan with the same heads, tensors and
    total token counts.
    """

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
        if use_cuda_graph and qo_indptr_buf is not None:
            max_batch_size = qo_indptr_buf.numel() - 1
        self._max_batch_size = int(max_batch_size or 0) if use_cuda_graph else 0
        self._max_q_tokens = int(max_q_tokens or 0) if use_cuda_graph else 0
        self._capacity = None
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
                f"BatchPrefillWithRaggedKVCacheWrapper.plan: workspace: too small: {nbytes} bytes "
                f"needed, got {0 if ws is None else ws.numel()}"
            )
        self._workspace = torch.empty(nbytes, dtype=torch.uint8, device=self._device)
        return self._workspace

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
        op = "BatchPrefillWithRaggedKVCacheWrapper.plan"
        if pos_encoding_mode != "NONE":
            raise _C.UnsupportedError(
                f"{op}: pos_encoding_mode: expected 'NONE', got {pos_encoding_mode!r} (apply RoPE "
                "with flashserve.apply_rope_pos_ids first; ALiBi: pass alibi_slopes=)"
            )
        if head_dim_vo is not None and head_dim_vo != head_dim_qk:
            raise _C.UnsupportedError(f"{op}: head_dim_vo: expected {head_dim_qk} (head_dim_qk)")
        dtype = torch_dtype("q_data_type", q_data_type)
        if kv_data_type is not None and torch_dtype("kv_data_type", kv_data_type) != dtype:
            raise _C.UnsupportedError(f"{op}: kv_data_type: expected {dtype} (q_data_type)")
        qo_h = qo_indptr.to(device="cpu", dtype=torch.int32).contiguous()
        kv_h = kv_indptr.to(device="cpu", dtype=torch.int32).contiguous()
        request = _C.PrefillPlanRequest(
            num_qo_heads=num_qo_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim_qk,
            dtype=c_dtype("q_data_type", dtype),
            causal=causal,
            window_left=int(window_left),
            window_right=int(window_right),
            num_sms=int(num_sms or 0),
            max_batch_size=self._max_batch_size,
            max_q_tokens=self._max_q_tokens,
        )
        nbytes = _C.prefill_workspace_size(request, dl(qo_h), dl(kv_h))
        workspace = self._workspace_for(nbytes)
        fields = _C.prefill_plan(request, dl(qo_h), dl(kv_h), dl(workspace), stream(workspace))
        if self._use_cuda_graph:
            info = dict(zip(_C.PREFILL_PLAN_FIELDS, fields))
            capacity = tuple(
                info[k] for k in ("work_capacity", "batch_capacity", "grid", "workspace_bytes")
            )
            if self._capacity is None:
                self._capacity = capacity
            elif capacity != self._capacity:
                raise _C.InvalidArgumentError(
                    f"{op}: the plan's capacity changed ({self._capacity} -> {capacity}): captured "
                    "graphs would be invalid"
                )
        self._plan_info.copy_(torch.tensor(fields, dtype=torch.int64))
        self._mask, self._mask_offsets = None, None
        if custom_mask is not None or packed_custom_mask is not None:
            sizes = (qo_h[1:] - qo_h[:-1]).to(torch.int64) * (kv_h[1:] - kv_h[:-1]).to(torch.int64)
            if packed_custom_mask is not None:  # per-request segments padded to whole bytes
                seg = (sizes + 7) // 8 * 8
                self._mask = packed_custom_mask.to(self._device, torch.uint8)
            else:
                seg = sizes
                self._mask = _pack_bits(custom_mask.to(self._device, torch.bool))
            offsets = torch.cumsum(seg, 0) - seg
            self._mask_offsets = offsets.to(self._device, non_blocking=non_blocking)
        self._sm_scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(head_dim_qk)
        self._logits_soft_cap = float(logits_soft_cap or 0.0)
        self._alibi = alibi_slopes
        self._planned = True

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
        """Attention output ``[total_q, num_qo_heads, head_dim]`` (and the natural-log LSE with
        ``return_lse``). ``sinks``: float32 ``[num_qo_heads]`` gpt-oss sink logits."""
        if not self._planned:
            raise _C.Error("BatchPrefillWithRaggedKVCacheWrapper.run: call plan() first")
        if out is None:
            out = torch.empty_like(q)
        if return_lse and lse is None:
            lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        if eager(q):
            _C.prefill_run(
                dl(self._plan_info),
                dl(self._workspace),
                dl(q),
                dl(k),
                dl(v),
                dl(out),
                dl_opt(lse),
                self._sm_scale,
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
                out,
                lse,
                self._sm_scale,
                self._logits_soft_cap,
                self._alibi,
                sinks,
                self._mask,
                self._mask_offsets,
            )
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
    """One request: ``q [q_len, heads, dim]``, ``k`` / ``v`` ``[kv_len, kv_heads, dim]``. Plans
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
        None,
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
