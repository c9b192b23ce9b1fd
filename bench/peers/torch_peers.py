#!/usr/bin/env python3
"""Torch eager peers for the results of `flashserve bench --output ours.json`.

Each of our result records carries its routine, shape parameters, timing mode and the launches per
sample it used; this script runs the plain torch implementation of the same op on the same shape and
times it the same way (hot: back-to-back launches between two events; graph: CUDA-graph replay of
those launches; cold: one launch after evicting L2, a captured one in cold-graph mode), after the
same `warmup_ms` of launches (the clock the GPU sustains under load), so the ratios compare like
with like.

  python3 bench/peers/torch_peers.py ours.json --out peers.json
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

EPS = 1e-6
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def neox_rotate(x, cos, sin, rot):
    """x: [tokens, heads, head_dim]; cos/sin: [tokens, rot/2] (float32) -> rotated copy."""
    cos = cos[:, None, :].to(x.dtype)
    sin = sin[:, None, :].to(x.dtype)
    x1, x2, rest = x[..., : rot // 2], x[..., rot // 2 : rot], x[..., rot:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)


def make_case(rec):
    """Returns a zero-argument callable running the torch version of one result record."""
    p = rec["params"]
    routine = rec["routine"]
    dt = DTYPES[p.get("dtype", "bfloat16")]
    dev = "cuda"
    geti = lambda k: int(p[k])
    if routine in ("rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm",
                   "layernorm", "rmsnorm_fp8", "fused_add_rmsnorm_fp8"):
        t, h = geti("tokens"), geti("hidden")
        x = torch.randn(t, h, dtype=dt, device=dev)
        r = torch.randn(t, h, dtype=dt, device=dev)
        w = torch.randn(h, dtype=dt, device=dev)
        b = torch.randn(h, dtype=dt, device=dev)
        w1 = w + 1
        inv_scale = torch.tensor(8.0, device=dev)
        fused = "fused" in routine
        weight = w1 if "gemma" in routine else w

        if routine == "layernorm":
            return lambda: F.layer_norm(x, (h,), w, b, EPS)

        def run():
            src = x
            if fused:
                r.add_(x)
                src = r
            y = F.rms_norm(src, (h,), weight, EPS)
            if routine.endswith("_fp8"):
                y = (y * inv_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
            return y

        return run
    if routine in ("silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"):
        t, d = geti("tokens"), geti("hidden")
        x = torch.randn(t, 2 * d, dtype=dt, device=dev)
        act = {"silu_and_mul": F.silu, "gelu_and_mul": F.gelu,
               "gelu_tanh_and_mul": lambda v: F.gelu(v, approximate="tanh")}[routine]
        return lambda: act(x[:, :d]) * x[:, d:]
    if routine in ("rope", "rope_cos_sin_cache"):
        t, qh, kh, hd = geti("tokens"), geti("q_heads"), geti("kv_heads"), geti("head_dim")
        rot = geti("rotary_dim") or hd
        max_pos = int(p.get("max_position", 8192))
        q = torch.randn(t, qh, hd, dtype=dt, device=dev)
        k = torch.randn(t, kh, hd, dtype=dt, device=dev)
        pos = torch.randint(0, max_pos, (t,), device=dev, dtype=torch.int64)
        inv_freq = 1.0 / (float(p.get("theta", 10000.0)) **
                          (torch.arange(0, rot, 2, device=dev, dtype=torch.float32) / rot))
        if routine == "rope_cos_sin_cache":
            ang = torch.arange(max_pos, device=dev, dtype=torch.float32)[:, None] * inv_freq[None]
            cache = torch.cat((ang.cos(), ang.sin()), dim=-1)

            def run():
                cos, sin = cache[pos].chunk(2, dim=-1)
                return neox_rotate(q, cos, sin, rot), neox_rotate(k, cos, sin, rot)
            return run

        def run():
            ang = pos[:, None].float() * inv_freq[None]
            cos, sin = ang.cos(), ang.sin()
            return neox_rotate(q, cos, sin, rot), neox_rotate(k, cos, sin, rot)
        return run
    if routine == "append_paged_kv":
        t, kh, hd, ps = geti("tokens"), geti("kv_heads"), geti("head_dim"), geti("page_size")
        batch, kv_len = geti("batch"), geti("kv_len")
        layout = p.get("layout", "NHD")
        cache_dt = {"": dt, "fp8_e4m3": torch.float8_e4m3fn,
                    "fp8_e5m2": torch.float8_e5m2}[p.get("cache_dtype", "")]
        per = [t // batch + (1 if i < t % batch else 0) for i in range(batch)]
        pages_per = [(kv_len + n + ps - 1) // ps for n in per]
        num_pages = sum(pages_per) + 1
        perm = torch.randperm(num_pages, device="cpu")
        slots, start = [], 0
        for n, np_ in zip(per, pages_per):
            ids = perm[start:start + np_]
            start += np_
            for j in range(n):
                pos = kv_len + j
                slots.append((int(ids[pos // ps]), pos % ps))
        page = torch.tensor([s[0] for s in slots], device=dev)
        slot = torch.tensor([s[1] for s in slots], device=dev)
        shape = (num_pages, ps, kh, hd) if layout == "NHD" else (num_pages, kh, ps, hd)
        kc = torch.zeros(shape, dtype=cache_dt, device=dev)
        vc = torch.zeros(shape, dtype=cache_dt, device=dev)
        k = torch.randn(t, kh, hd, dtype=dt, device=dev)
        v = torch.randn(t, kh, hd, dtype=dt, device=dev)
        fp8 = cache_dt != dt
        kcv, vcv = (kc.view(torch.uint8), vc.view(torch.uint8)) if fp8 else (kc, vc)

        def run():
            kk, vv = k, v
            if fp8:
                kk, vv = k.to(cache_dt).view(torch.uint8), v.to(cache_dt).view(torch.uint8)
            if layout == "NHD":
                kcv[page, slot] = kk
                vcv[page, slot] = vv
            else:
                kcv[page, :, slot] = kk
                vcv[page, :, slot] = vv
        return run
    if routine in ("decode", "cascade_decode"):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        b, kv_len = geti("batch"), geti("kv_len")
        qh, kh, hd = geti("q_heads"), geti("kv_heads"), geti("head_dim")
        qt = int(p.get("q_tokens", 1))
        # torch SDPA has no paged KV: the peers read a contiguous cache of the same tokens.
        q = torch.randn(b, qh, qt, hd, dtype=dt, device=dev)
        k = torch.randn(b, kh, kv_len, hd, dtype=dt, device=dev)
        v = torch.randn_like(k)

        def peer(backend):
            def run():
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            return run
        return {"sdpa_flash": peer(SDPBackend.FLASH_ATTENTION),
                "sdpa_cudnn": peer(SDPBackend.CUDNN_ATTENTION)}
    if routine in ("prefill", "prefill_paged"):
        # prefill_paged: torch SDPA has no paged KV, the peers read contiguous k and v.
        from torch.nn.attention import SDPBackend, sdpa_kernel
        b, ql, kl = geti("batch"), geti("q_len"), geti("kv_len")
        qh, kh, hd = geti("q_heads"), geti("kv_heads"), geti("head_dim")
        # v (and the output) may have another head dim (qk 192 / v 128): SDPA takes v [..., Ev];
        # a backend without Ev != E raises, and the failure is recorded as that peer's error.
        hdv = int(p.get("head_dim_v", hd))
        causal = geti("causal") == 1
        q = torch.randn(b, qh, ql, hd, dtype=dt, device=dev)
        k = torch.randn(b, kh, kl, hd, dtype=dt, device=dev)
        v = torch.randn(b, kh, kl, hdv, dtype=dt, device=dev)

        # Causal with q_len != kv_len is bottom-right aligned (chunked prefill), as ours; SDPA's
        # is_causal is top-left, so those points pass torch's lower-right causal bias instead.
        mask = None
        if causal and ql != kl:
            from torch.nn.attention.bias import causal_lower_right
            mask = causal_lower_right(ql, kl)

        def peer(backend):
            def run():
                with sdpa_kernel(backend):
                    if mask is not None:
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                              enable_gqa=qh != kh)
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                          enable_gqa=qh != kh)
            return run
        return {"sdpa_flash": peer(SDPBackend.FLASH_ATTENTION),
                "sdpa_cudnn": peer(SDPBackend.CUDNN_ATTENTION)}
    if rec["routine"] in SAMPLING_ROUTINES:
        return sampling_case(rec)
    return None


# ---- sampling (issue 5): what engines run today, sort-based -------------------------------------
SAMPLING_ROUTINES = ("sampling_from_logits", "sampling_top_p_from_logits",
                     "sampling_top_k_top_p_from_logits", "sampling_top_p", "sampling_top_k",
                     "sampling_min_p", "top_k", "top_k_mask_logits", "top_p_renorm_probs",
                     "top_k_renorm_probs", "chain_speculative")


def sort_filter(probs, top_k, top_p, min_p):
    """Sorted probabilities with the filtered ones zeroed (top-k, then top-p of the rest, then
    min-p), and the sort's indices: the vLLM / SGLang torch path."""
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    if 0 < top_k < probs.shape[-1]:
        sorted_p[:, top_k:] = 0
    if top_p < 1.0:
        cum = sorted_p.cumsum(dim=-1)
        sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p * cum[:, -1:], 0)
    if min_p > 0:
        sorted_p = sorted_p.masked_fill(sorted_p < min_p * sorted_p[:, :1], 0)
    return sorted_p, idx


def sampling_case(rec):
    p = rec["params"]
    routine = rec["routine"]
    dev = "cuda"
    b, v = int(p["batch"]), int(p["vocab"])
    if routine == "chain_speculative":
        n = int(p["draft_tokens"])
        draft = torch.softmax(torch.randn(b, n, v, device=dev), -1)
        target = torch.softmax(torch.randn(b, n + 1, v, device=dev), -1)
        ids = torch.randint(0, v, (b, n), device=dev)
        ar = torch.arange(n + 1, device=dev)

        def spec():
            # Accept draft i with probability min(1, p/q) until the first rejection; sample the
            # residual there (or the bonus row): all positions computed, one row picked per request.
            p_at = target[:, :n].gather(2, ids[..., None]).squeeze(-1)
            q_at = draft.gather(2, ids[..., None]).squeeze(-1)
            accept = torch.rand(b, n, device=dev) * q_at < p_at
            rejected = torch.cat((~accept, torch.ones(b, 1, dtype=torch.bool, device=dev)), 1)
            first = rejected.int().argmax(1)
            residual = torch.cat(((target[:, :n] - draft).clamp_min(0), target[:, n:]), 1)
            rows = residual[torch.arange(b, device=dev), first]
            token = torch.multinomial(rows, 1).squeeze(1)
            out = torch.cat((ids, ids[:, :1]), 1).masked_fill(ar > first[:, None], -1)
            return out.scatter(1, first[:, None], token[:, None]), first
        return spec
    logits_in = p.get("logits", "1") == "1"
    dt = DTYPES[p.get("dtype", "float32")]
    top_k, top_p, min_p = int(p["top_k"]), float(p["top_p"]), float(p["min_p"])
    x = torch.randn(b, v, device=dev, dtype=dt if logits_in else torch.float32)
    probs_in = torch.softmax(x, -1)
    if routine == "top_k":
        return lambda: torch.topk(x, top_k, dim=-1)
    if routine == "top_k_mask_logits":
        return lambda: x.masked_fill(x < torch.topk(x, top_k, dim=-1).values[:, -1:], float("-inf"))
    if routine in ("top_p_renorm_probs", "top_k_renorm_probs"):
        def renorm():
            sorted_p, idx = sort_filter(probs_in, top_k, top_p, 0.0)
            sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
            return torch.empty_like(probs_in).scatter_(1, idx, sorted_p)
        return renorm

    def probs():
        return torch.softmax(x.float(), -1) if logits_in else probs_in

    if top_k <= 0 and top_p >= 1.0 and min_p <= 0:
        return {"torch": lambda: torch.multinomial(probs(), 1)}

    def multinomial():
        sorted_p, idx = sort_filter(probs(), top_k, top_p, min_p)
        return idx.gather(1, torch.multinomial(sorted_p, 1))

    def exponential_race():
        # vLLM's sync-free draw: argmax of p / Exp(1) noise (the same distribution).
        sorted_p, idx = sort_filter(probs(), top_k, top_p, min_p)
        noise = torch.empty_like(sorted_p).exponential_()
        return idx.gather(1, (sorted_p / noise).argmax(-1, keepdim=True))
    return {"torch": multinomial, "torch_exp": exponential_race}


def capture(fn, n):
    """A CUDA graph of n launches of fn (after one warm-up launch on a side stream)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    return graph


def run_for(ms, run):
    """Calls run (and synchronizes) until ms of wall time have passed: the record's warmup_ms,
    so that a compute-bound case is timed at the clock the GPU sustains, as ours (timer.h)."""
    if ms <= 0:
        return
    t0 = time.perf_counter()
    while True:
        run()
        torch.cuda.synchronize()
        if (time.perf_counter() - t0) * 1e3 >= ms:
            return


def time_case(fn, mode, iters, samples, flush, warmup_ms=0):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    us = []
    if mode.startswith("cold"):
        run = fn
        if mode == "cold-graph":  # one captured launch per sample, as ours: no host dispatch timed
            run = capture(fn, 1).replay
        run_for(warmup_ms, run)
        for _ in range(max(samples, iters)):
            flush.zero_()
            start.record()
            run()
            stop.record()
            stop.synchronize()
            us.append(start.elapsed_time(stop) * 1e3)
        return us
    if mode == "graph":
        graph = capture(fn, iters)
        graph.replay()
        run_for(warmup_ms, graph.replay)
        for _ in range(samples):
            start.record()
            graph.replay()
            stop.record()
            stop.synchronize()
            us.append(start.elapsed_time(stop) * 1e3 / iters)
        return us

    def batch():
        for _ in range(iters):
            fn()

    run_for(warmup_ms, batch)
    for _ in range(samples):
        start.record()
        for _ in range(iters):
            fn()
        stop.record()
        stop.synchronize()
        us.append(start.elapsed_time(stop) * 1e3 / iters)
    return us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=15)
    args = ap.parse_args()
    ours = json.load(open(args.ours))
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    flush = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": []}
    for rec in ours["results"]:
        row = {"routine": rec["routine"], "shape": rec["shape"], "model": rec.get("model", "")}
        if rec.get("error"):
            out["results"].append(row)
            continue
        fns = make_case(rec)
        if fns is None:
            row["error"] = "no torch peer"
        else:
            if callable(fns):
                fns = {"torch": fns}
            mode = rec["params"].get("mode", "hot")
            iters = max(1, int(rec["params"].get("iters", 50)))
            warmup_ms = float(rec["params"].get("warmup_ms", 0))
            row["peers"] = {}
            for name, fn in fns.items():
                try:
                    us = time_case(fn, mode, iters, args.samples, flush, warmup_ms)
                    row["peers"][name] = round(statistics.median(us), 3)
                except Exception as e:  # a peer that cannot run this shape is reported, not fatal
                    row.setdefault("peer_errors", {})[name] = f"{type(e).__name__}: {e}"[:200]
            if row["peers"]:
                best = min(row["peers"], key=row["peers"].get)
                row["torch_us"] = row["peers"][best]
                row["best_peer"] = best
        out["results"].append(row)
        torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
    json.dump(out, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
