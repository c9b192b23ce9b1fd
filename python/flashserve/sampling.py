"""Sampling, as flashinfer.sampling: token ids from probabilities or logits with top-k / top-p /
min-p filters, the renormalization and masking helpers, exact top-k, and chain speculative
verification (docs/sampling.md). No op sorts the vocabulary; every filter is an exact threshold.

Shapes: ``probs`` / ``logits`` ``[batch, vocab]`` with a contiguous last dim (the row stride is
free: a stride of 0, e.g. ``row.expand(n, -1)``, draws ``n`` times from one row). Probabilities are
float32 and need not sum to 1; logits are float32 / float16 / bfloat16. Token ids are ``[batch]``
int32 (``out=`` may also be int64).

Filter parameters (``top_k``, ``top_p``, ``min_p``, ``temperature``) are each a Python number, used
for every row, or a per-row device tensor ``[batch]`` (int32 for ``top_k``, float32 for the others;
never converted). ``top_k <= 0`` or ``>= vocab`` is no filter; ties at a threshold are kept (top-k
may keep more than k tokens when values tie). A scalar ``top_p`` must lie in (0, 1], ``min_p`` in
[0, 1], ``temperature`` be finite and >= 0 (0: greedy); per-row values outside those ranges have
the defined meanings of docs/sampling.md.

Randomness is Philox4x32-10 keyed by ``seed``, counter offset ``offset``. Each is an int or an int64
device tensor with one element (``[]`` or ``[1]``); a tensor is read by the kernel when it runs, so
a CUDA graph captured once draws new numbers on every replay after the caller increments the
offset tensor in place. The same seed, offset and input give the same ids, bitwise; a call uses
counter ``offset`` only, so adding 1 between calls suffices. Give both or neither: with neither,
both are taken from ``generator`` (default: torch's default CUDA generator of the input's device),
whose offset then advances by 4, as FlashInfer does, so ``torch.manual_seed`` makes the draws
reproducible. That host read cannot happen while a CUDA graph is being captured (the drawn values
would be replayed unchanged): pass ``seed`` and ``offset`` tensors there.

FlashInfer arguments kept for compatibility: ``deterministic`` / ``is_deterministic`` (ignored:
every op here is deterministic), ``check_nan`` (raises InvalidArgumentError, a ValueError, when
the input holds a NaN; synchronizes), ``return_valid`` (the valid mask is computed with torch: a row
is valid when it holds a positive finite probability). ``indices`` (many draws from shared rows) is
not supported: use a stride-0 view instead. Extensions, keyword-only: ``out=``, ``temperature=`` on
the logits functions, ``min_p=`` on the top-k / top-p functions.

Argument errors from the C++ entry points name them (``sample_from_logits``, ``sample_from_probs``,
``top_k_renorm_probs``, ``top_p_renorm_probs``, ``top_k_mask_logits``, ``top_k``,
``chain_speculative_sampling``) and their arguments (``probs``, ``out_ids``, ``args.top_k``,
``args.top_p_value``, ``args.seed``, ...).
"""

from typing import Optional, Tuple, Union

import torch

from . import _C
from ._torch import custom_op, dl, dl_opt, eager, stream

IntParam = Union[int, torch.Tensor]
FloatParam = Union[float, torch.Tensor]
SeedParam = Optional[Union[int, torch.Tensor]]

_MASK64 = (1 << 64) - 1
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_ORDERS = {"top_k_first": _C.FilterOrder.top_k_first, "joint": _C.FilterOrder.joint}


# ---- argument conversion -------------------------------------------------------------------------


def _int_param(value: IntParam) -> Tuple[Optional[torch.Tensor], int]:
    """(per-row tensor, scalar): a Python int is clamped to int32 (both ends mean "no filter")."""
    if isinstance(value, torch.Tensor):
        return value, 0
    return None, max(_INT32_MIN, min(_INT32_MAX, int(value)))


def _float_param(value: FloatParam, default: float) -> Tuple[Optional[torch.Tensor], float]:
    if isinstance(value, torch.Tensor):
        return value, default
    return None, float(value)


def _signed64(value: int) -> int:
    """An int modulo 2^64 as a signed 64-bit value (torch.library's int is int64)."""
    value = int(value) & _MASK64
    return value - (1 << 64) if value >> 63 else value


def _seed_args(op: str, seed: SeedParam, offset: SeedParam):
    """(seed tensor, offset tensor, seed value, offset value); both values None: draw both from the
    generator when the op runs."""
    if seed is None and offset is None:
        return None, None, None, None
    if seed is None or offset is None:
        missing, given = ("seed", "offset") if seed is None else ("offset", "seed")
        raise _C.InvalidArgumentError(
            f"{op}: {missing}: expected an int or an int64 device tensor when {given} is given "
            "(give both, or neither to draw them from the generator)"
        )
    seed_t, seed_v = (seed, 0) if isinstance(seed, torch.Tensor) else (None, _signed64(seed))
    offset_t, offset_v = (
        (offset, 0) if isinstance(offset, torch.Tensor) else (None, _signed64(offset))
    )
    return seed_t, offset_t, seed_v, offset_v


def _draw_seed(op: str, t: torch.Tensor, generator: Optional[torch.Generator]) -> Tuple[int, int]:
    """(seed, offset) from the generator's Philox state, advancing its offset by 4 (FlashInfer's
    get_seed_and_offset)."""
    if not t.is_cuda:
        return 0, 0  # the op rejects the tensor, naming it; leave the generators alone
    if torch.cuda.is_current_stream_capturing():
        raise _C.InvalidArgumentError(
            f"{op}: seed: expected seed and offset (int64 device tensors) while capturing a CUDA "
            "graph: values drawn from the generator on the host would be replayed unchanged"
        )
    gen = generator if generator is not None else torch.cuda.default_generators[t.get_device()]
    seed, offset = gen.get_state().view(torch.int64).tolist()
    gen.set_state(torch.tensor([seed, offset + 4], dtype=torch.int64).view(torch.uint8))
    return seed & _MASK64, offset & _MASK64


def _seed_values(op, t, generator, seed_value, offset_value) -> Tuple[int, int]:
    if seed_value is None:
        return _draw_seed(op, t, generator)
    return seed_value & _MASK64, offset_value & _MASK64


def _order(op: str, filter_apply_order: str) -> str:
    if filter_apply_order not in _ORDERS:
        raise _C.InvalidArgumentError(
            f"{op}: filter_apply_order: expected 'top_k_first' or 'joint', got "
            f"{filter_apply_order!r}"
        )
    return filter_apply_order


def _no_indices(op: str, indices: Optional[torch.Tensor]) -> None:
    if indices is not None:
        raise _C.UnsupportedError(
            f"{op}: indices: not supported, expected None (to draw many times from one row, pass "
            "a stride-0 view such as probs[j].expand(n, -1))"
        )


def _check_nan(op: str, name: str, t: torch.Tensor) -> None:
    if bool(torch.isnan(t).any()):
        raise _C.InvalidArgumentError(f"{op}: {name}: holds NaN (check_nan=True)")


def _rows(t: torch.Tensor) -> int:
    return t.shape[0] if t.dim() >= 1 else 0


# ---- sampling: one custom op for both entry points -----------------------------------------------


def _sample_c(
    op: str,
    out: torch.Tensor,
    input: torch.Tensor,
    from_logits: bool,
    top_k: Optional[torch.Tensor],
    top_k_value: int,
    top_p: Optional[torch.Tensor],
    top_p_value: float,
    min_p: Optional[torch.Tensor],
    min_p_value: float,
    temperature: Optional[torch.Tensor],
    temperature_value: float,
    filter_apply_order: str,
    seed: Optional[torch.Tensor],
    offset: Optional[torch.Tensor],
    seed_value: Optional[int],
    offset_value: Optional[int],
    check_nan: bool,
    generator: Optional[torch.Generator] = None,
) -> None:
    if check_nan:
        _check_nan(op, "logits" if from_logits else "probs", input)
    seed_v, offset_v = _seed_values(op, input, generator, seed_value, offset_value)
    order = _ORDERS[filter_apply_order]
    if from_logits:
        _C.sample_from_logits(
            dl(out),
            dl(input),
            dl_opt(top_k),
            top_k_value,
            dl_opt(top_p),
            top_p_value,
            dl_opt(min_p),
            min_p_value,
            dl_opt(temperature),
            temperature_value,
            order,
            dl_opt(seed),
            dl_opt(offset),
            seed_v,
            offset_v,
            stream(input),
        )
    else:
        _C.sample_from_probs(
            dl(out),
            dl(input),
            dl_opt(top_k),
            top_k_value,
            dl_opt(top_p),
            top_p_value,
            dl_opt(min_p),
            min_p_value,
            order,
            dl_opt(seed),
            dl_opt(offset),
            seed_v,
            offset_v,
            stream(input),
        )


@custom_op("sample", mutates_args=("out",))
def _sample_op(
    op: str,
    out: torch.Tensor,
    input: torch.Tensor,
    from_logits: bool,
    top_k: Optional[torch.Tensor],
    top_k_value: int,
    top_p: Optional[torch.Tensor],
    top_p_value: float,
    min_p: Optional[torch.Tensor],
    min_p_value: float,
    temperature: Optional[torch.Tensor],
    temperature_value: float,
    filter_apply_order: str,
    seed: Optional[torch.Tensor],
    offset: Optional[torch.Tensor],
    seed_value: Optional[int],
    offset_value: Optional[int],
    check_nan: bool,
) -> None:
    # seed_value None: the default CUDA generator is read here, when the op runs, so a compiled
    # function draws new numbers on every call as the eager one does.
    _sample_c(
        op,
        out,
        input,
        from_logits,
        top_k,
        top_k_value,
        top_p,
        top_p_value,
        min_p,
        min_p_value,
        temperature,
        temperature_value,
        filter_apply_order,
        seed,
        offset,
        seed_value,
        offset_value,
        check_nan,
    )


def _sample(
    op: str,
    input: torch.Tensor,
    from_logits: bool,
    *,
    top_k: IntParam = 0,
    top_p: FloatParam = 1.0,
    min_p: FloatParam = 0.0,
    temperature: FloatParam = 1.0,
    filter_apply_order: str = "top_k_first",
    indices: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    out: Optional[torch.Tensor] = None,
):
    _no_indices(op, indices)
    order = _order(op, filter_apply_order)
    seed_t, offset_t, seed_v, offset_v = _seed_args(op, seed, offset)
    k_t, k_v = _int_param(top_k)
    p_t, p_v = _float_param(top_p, 1.0)
    m_t, m_v = _float_param(min_p, 0.0)
    t_t, t_v = _float_param(temperature, 1.0)
    if out is None:
        out = input.new_empty((_rows(input),), dtype=torch.int32)
    args = (op, out, input, from_logits, k_t, k_v, p_t, p_v, m_t, m_v, t_t, t_v, order)
    if eager(input):
        _sample_c(*args, seed_t, offset_t, seed_v, offset_v, check_nan, generator)
    else:
        if generator is not None and seed_v is None:
            raise _C.UnsupportedError(
                f"{op}: generator: not supported under torch.compile, expected None (torch's "
                "default CUDA generator, read when the op runs) or seed and offset"
            )
        _sample_op(*args, seed_t, offset_t, seed_v, offset_v, check_nan)
    if return_valid:
        return out, ((input > 0) & torch.isfinite(input)).any(-1)
    return out


# ---- public sampling functions -------------------------------------------------------------------


def sampling_from_probs(
    probs: torch.Tensor,
    indices: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One token id per row of ``probs`` (float32 ``[batch, vocab]``), drawn in proportion to the
    probabilities. Returns ``out`` (int32 ``[batch]`` unless given), and with ``return_valid`` also
    a bool ``[batch]`` mask of the rows that held a positive finite probability (the others yield
    token 0)."""
    return _sample(
        "sampling_from_probs",
        probs,
        False,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        return_valid=return_valid,
        out=out,
    )


def sampling_from_logits(
    logits: torch.Tensor,
    indices: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    *,
    temperature: FloatParam = 1.0,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One token id per row from ``softmax(logits / temperature)`` (logits fp32 / fp16 / bf16
    ``[batch, vocab]``; the softmax is computed in fp32 on chip, never written). ``temperature``:
    a float or float32 ``[batch]`` tensor; 0 is greedy (argmax, tied maxima drawn uniformly).
    Returns ``out`` (int32 ``[batch]`` unless given)."""
    return _sample(
        "sampling_from_logits",
        logits,
        True,
        temperature=temperature,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        out=out,
    )


def top_p_sampling_from_probs(
    probs: torch.Tensor,
    top_p: FloatParam,
    indices: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Nucleus sampling: one token id per row from the smallest set of most likely tokens whose
    mass reaches ``top_p`` of the row's, in proportion to their probabilities. ``top_p``: a float
    in (0, 1] or a float32 ``[batch]`` tensor."""
    return _sample(
        "top_p_sampling_from_probs",
        probs,
        False,
        top_p=top_p,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        return_valid=return_valid,
        out=out,
    )


def top_k_sampling_from_probs(
    probs: torch.Tensor,
    top_k: IntParam,
    indices: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One token id per row from the tokens whose probability is >= the row's k-th largest (ties
    kept), in proportion to their probabilities. ``top_k``: an int or an int32 ``[batch]``
    tensor; ``<= 0`` or ``>= vocab`` is no filter."""
    return _sample(
        "top_k_sampling_from_probs",
        probs,
        False,
        top_k=top_k,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        return_valid=return_valid,
        out=out,
    )


def min_p_sampling_from_probs(
    probs: torch.Tensor,
    min_p: FloatParam,
    indices: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One token id per row from the tokens with ``p >= min_p * max(p)``, in proportion to their
    probabilities. ``min_p``: a float in [0, 1] or a float32 ``[batch]`` tensor."""
    return _sample(
        "min_p_sampling_from_probs",
        probs,
        False,
        min_p=min_p,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        return_valid=return_valid,
        out=out,
    )


def top_k_top_p_sampling_from_probs(
    probs: torch.Tensor,
    top_k: IntParam,
    top_p: FloatParam,
    indices: Optional[torch.Tensor] = None,
    filter_apply_order: str = "top_k_first",
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    return_valid: bool = False,
    *,
    min_p: FloatParam = 0.0,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One token id per row after top-k and top-p (and, as an extension, min-p) filtering.

    ``filter_apply_order``: ``"top_k_first"`` (FlashInfer's default, vLLM and SGLang) applies top-p
    to the top-k set renormalized; ``"joint"`` applies top-p to the whole row and keeps the tokens
    that pass both, as FlashInfer's joint kernel does. Both are exact here (one pass, no
    rejection rounds)."""
    return _sample(
        "top_k_top_p_sampling_from_probs",
        probs,
        False,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        filter_apply_order=filter_apply_order,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        return_valid=return_valid,
        out=out,
    )


def top_k_top_p_sampling_from_logits(
    logits: torch.Tensor,
    top_k: IntParam,
    top_p: FloatParam,
    indices: Optional[torch.Tensor] = None,
    filter_apply_order: str = "top_k_first",
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    check_nan: bool = False,
    seed: SeedParam = None,
    offset: SeedParam = None,
    *,
    temperature: FloatParam = 1.0,
    min_p: FloatParam = 0.0,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One token id per row from ``softmax(logits / temperature)`` after top-k and top-p (and
    min-p) filtering, in one kernel: the probabilities are never written. ``"top_k_first"`` equals
    FlashInfer's top_k_mask_logits + softmax + top_p_sampling_from_probs; ``"joint"`` its joint
    filter over ``softmax(logits)``. ``temperature`` 0 is greedy."""
    return _sample(
        "top_k_top_p_sampling_from_logits",
        logits,
        True,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        temperature=temperature,
        filter_apply_order=filter_apply_order,
        indices=indices,
        generator=generator,
        check_nan=check_nan,
        seed=seed,
        offset=offset,
        out=out,
    )


# ---- renormalization and masking -----------------------------------------------------------------

_RENORM = {
    "top_k_renorm_probs": _C.top_k_renorm_probs,
    "top_p_renorm_probs": _C.top_p_renorm_probs,
    "top_k_mask_logits": _C.top_k_mask_logits,
}


def _renorm_c(kind, out, input, param, k_value, p_value):
    value = p_value if kind == "top_p_renorm_probs" else k_value
    _RENORM[kind](dl(out), dl(input), dl_opt(param), value, stream(input))


@custom_op("renorm", mutates_args=("out",))
def _renorm_op(
    kind: str,
    out: torch.Tensor,
    input: torch.Tensor,
    param: Optional[torch.Tensor],
    k_value: int,
    p_value: float,
) -> None:
    _renorm_c(kind, out, input, param, k_value, p_value)


def _renorm(kind, input, param, out):
    if kind == "top_p_renorm_probs":
        t, p_value = _float_param(param, 1.0)
        k_value = 0
    else:
        t, k_value = _int_param(param)
        p_value = 1.0
    if out is None:
        out = torch.empty_like(input)
    if eager(input):
        _renorm_c(kind, out, input, t, k_value, p_value)
    else:
        _renorm_op(kind, out, input, t, k_value, p_value)
    return out


def top_p_renorm_probs(
    probs: torch.Tensor,
    top_p: FloatParam,
    is_deterministic: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``probs`` (float32 ``[batch, vocab]``) restricted to the top-p set (the smallest set of most
    likely tokens whose mass reaches ``top_p``) and divided by its sum; 0 elsewhere (an all-zero
    row for a row with nothing positive). Returns ``out`` (new unless given; may be ``probs``)."""
    return _renorm("top_p_renorm_probs", probs, top_p, out)


def top_k_renorm_probs(
    probs: torch.Tensor, top_k: IntParam, *, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``probs`` (float32 ``[batch, vocab]``) restricted to the tokens >= the row's k-th largest
    (ties kept) and divided by their sum; 0 elsewhere. Returns ``out`` (new unless given; may be
    ``probs``)."""
    return _renorm("top_k_renorm_probs", probs, top_k, out)


def top_k_mask_logits(
    logits: torch.Tensor, top_k: IntParam, *, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``logits`` (fp32 / fp16 / bf16 ``[batch, vocab]``) where the logit is >= the row's k-th
    largest (ties kept), ``-inf`` elsewhere; same dtype. Returns ``out`` (new unless given; may be
    ``logits``)."""
    return _renorm("top_k_mask_logits", logits, top_k, out)


# ---- exact top-k ---------------------------------------------------------------------------------


@custom_op("top_k", mutates_args=("values", "indices"))
def _top_k_op(values: torch.Tensor, indices: torch.Tensor, input: torch.Tensor, k: int) -> None:
    _C.top_k(dl(values), dl(indices), dl(input), k, stream(input))


def top_k(
    input: torch.Tensor,
    k: int,
    sorted: bool = False,
    deterministic: bool = False,
    tie_break: int = 0,
    *,
    out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k largest elements of each row of ``input`` (fp32 / fp16 / bf16 ``[batch, vocab]``),
    exactly, as flashinfer.top_k: returns ``(values [batch, k]`` in the input dtype``, indices
    [batch, k])``, int64 unless ``out=(values, indices)`` gives int32 indices.

    Unsorted (default): in ascending index order. ``sorted=True`` then orders each row by value,
    descending (a torch sort of the k results; ties stay in index order). Among values tied with
    the k-th, the lowest indices are taken (FlashInfer's ``tie_break=1``; ``tie_break`` 0 accepts
    that, 2 is refused). NaN ranks below ``-inf`` (torch.topk ranks it above everything).
    ``deterministic`` is ignored: the result is always deterministic."""
    op = "top_k"
    if int(tie_break) not in (0, 1):
        raise _C.InvalidArgumentError(
            f"{op}: tie_break: expected 0 or 1 (the lowest indices win ties), got {tie_break!r}"
        )
    k = int(k)
    if not _INT32_MIN <= k <= _INT32_MAX:
        raise _C.InvalidArgumentError(f"{op}: k: expected 1 <= k <= vocab, got {k}")
    if out is None:
        # Shapes clamped so that a bad k reaches the C++ check (which names it) rather than fail
        # the allocation.
        width = max(0, min(k, input.shape[-1] if input.dim() >= 1 else 0))
        values = input.new_empty((_rows(input), width))
        indices = input.new_empty((_rows(input), width), dtype=torch.int64)
    else:
        values, indices = out
    if eager(input):
        _C.top_k(dl(values), dl(indices), dl(input), k, stream(input))
    else:
        _top_k_op(values, indices, input, k)
    if sorted:
        sorted_values, order = values.sort(dim=-1, descending=True, stable=True)
        sorted_indices = indices.gather(-1, order)
        if out is None:
            return sorted_values, sorted_indices
        values.copy_(sorted_values)
        indices.copy_(sorted_indices)
    return values, indices


# ---- chain speculative sampling ------------------------------------------------------------------


def _chain_c(
    op,
    draft_token_ids,
    draft_probs,
    target_probs,
    output_token_ids,
    accepted_counts,
    seed,
    offset,
    seed_value,
    offset_value,
    generator=None,
):
    seed_v, offset_v = _seed_values(op, target_probs, generator, seed_value, offset_value)
    _C.chain_speculative_sampling(
        dl(draft_token_ids),
        dl(draft_probs),
        dl(target_probs),
        dl(output_token_ids),
        dl(accepted_counts),
        dl_opt(seed),
        dl_opt(offset),
        seed_v,
        offset_v,
        stream(target_probs),
    )


@custom_op("chain_speculative_sampling", mutates_args=("output_token_ids", "accepted_counts"))
def _chain_op(
    draft_token_ids: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    output_token_ids: torch.Tensor,
    accepted_counts: torch.Tensor,
    seed: Optional[torch.Tensor],
    offset: Optional[torch.Tensor],
    seed_value: Optional[int],
    offset_value: Optional[int],
) -> None:
    _chain_c(
        "chain_speculative_sampling",
        draft_token_ids,
        draft_probs,
        target_probs,
        output_token_ids,
        accepted_counts,
        seed,
        offset,
        seed_value,
        offset_value,
    )


def chain_speculative_sampling(
    draft_probs: torch.Tensor,
    draft_token_ids: torch.Tensor,
    target_probs: torch.Tensor,
    maybe_output_accepted_token_num: Optional[torch.Tensor] = None,
    maybe_output_emitted_draft_token_num: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator: Optional[torch.Generator] = None,
    seed: SeedParam = None,
    offset: SeedParam = None,
    *,
    out: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Chain speculative sampling: verifies the drafts ``draft_token_ids`` (int32 ``[batch, n]``),
    drawn from ``draft_probs`` (float32 ``[batch, n, vocab]``), against ``target_probs`` (float32
    ``[batch, n + 1, vocab]``). Draft i is accepted with probability ``min(1, p_i / q_i)`` until the
    first rejection, where the next token is drawn from ``max(0, p_i - q_i)`` normalized; when all
    n pass, a bonus token is drawn from ``p_n``. The emitted tokens follow the target distribution.

    Returns ``(output_token_ids, output_emitted_draft_token_num)``: ``[batch, n + 1]`` ids (the
    accepted drafts, then the drawn token, then -1; int32 unless ``out=`` is int64) and int32
    ``[batch]`` counts of accepted drafts (tokens emitted = count + 1). Unlike FlashInfer, which
    returns a third tensor, ``output_accepted_token_num`` (drafts that would pass if each were
    tested independently), this kernel does not compute that statistic:
    ``maybe_output_accepted_token_num`` must be None. ``maybe_output_emitted_draft_token_num``,
    when given, has the counts added to it in place and is returned, as in FlashInfer."""
    op = "chain_speculative_sampling"
    if maybe_output_accepted_token_num is not None:
        raise _C.UnsupportedError(
            f"{op}: maybe_output_accepted_token_num: not supported, expected None (the kernel "
            "stops at the first rejection and does not compute the independent acceptance count)"
        )
    seed_t, offset_t, seed_v, offset_v = _seed_args(op, seed, offset)
    batch = _rows(target_probs)
    if out is None:
        width = target_probs.shape[1] if target_probs.dim() >= 2 else 0
        out = target_probs.new_empty((batch, width), dtype=torch.int32)
    counts = target_probs.new_empty((batch,), dtype=torch.int32)
    args = (draft_token_ids, draft_probs, target_probs, out, counts, seed_t, offset_t)
    if eager(target_probs):
        _chain_c(op, *args, seed_v, offset_v, generator)
    else:
        if generator is not None and seed_v is None:
            raise _C.UnsupportedError(
                f"{op}: generator: not supported under torch.compile, expected None (torch's "
                "default CUDA generator, read when the op runs) or seed and offset"
            )
        _chain_op(*args, seed_v, offset_v)
    if maybe_output_emitted_draft_token_num is not None:
        maybe_output_emitted_draft_token_num.add_(counts)
        return out, maybe_output_emitted_draft_token_num
    return out, counts
