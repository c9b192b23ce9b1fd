#!/usr/bin/env python3
"""A Llama-3-8B-shaped decode step with flashserve, checked against plain torch and timed beside it.

Random weights at Llama-3-8B shapes (hidden 4096, 32 q / 8 kv heads of 128, MLP 14336, RoPE theta
5e5 with Llama-3.1 scaling), a batch of requests with ragged context lengths in a paged KV cache
(page 16). One step = for each layer: RMSNorm, QKV projection, RoPE, append to the cache, decode
attention, output projection, fused residual-add RMSNorm, gate/up projection, SiLU-and-mul, down
projection. The flashserve step and a plain torch step (the same math with torch ops, attention
over pages gathered through a padded block table) run on the same inputs; both are captured in
CUDA graphs and timed with CUDA events, side by side.

    python3 examples/llama_decode_step.py [--batch 32] [--layers 4] [--max-context 4096]
"""

import argparse
import math
import statistics

import torch
import torch.nn.functional as F

import flashserve

HIDDEN, HQ, HK, D, FFN, PAGE = 4096, 32, 8, 128, 14336, 16
THETA, EPS = 5e5, 1e-5
LLAMA31 = dict(factor=8.0, low=1.0, high=4.0, original=8192)


def weights(layers, device):
    bf = dict(device=device, dtype=torch.bfloat16)
    scale = 1 / math.sqrt(HIDDEN)
    return [
        dict(
            attn_norm=1 + 0.1 * torch.randn(HIDDEN, **bf),
            qkv=torch.randn(HIDDEN, (HQ + 2 * HK) * D, **bf) * scale,
            o=torch.randn(HQ * D, HIDDEN, **bf) * scale,
            mlp_norm=1 + 0.1 * torch.randn(HIDDEN, **bf),
            gate_up=torch.randn(HIDDEN, 2 * FFN, **bf) * scale,
            down=torch.randn(FFN, HIDDEN, **bf) / math.sqrt(FFN),
        )
        for _ in range(layers)
    ]


class Batch:
    """Requests with ragged context lengths, each getting one new token this step."""

    def __init__(self, batch, max_context, layers, device):
        self.lengths = torch.randint(1, max_context, (batch,)).tolist()  # after this step's token
        pages = [(n + PAGE - 1) // PAGE for n in self.lengths]
        self.num_pages = sum(pages) + 1
        perm = torch.randperm(self.num_pages, dtype=torch.int32)
        self.indptr = torch.tensor([0] + pages, dtype=torch.int32).cumsum(0).to(torch.int32)
        self.indices = perm[: sum(pages)]
        self.last = torch.tensor([(n - 1) % PAGE + 1 for n in self.lengths], dtype=torch.int32)
        # A padded block table for the torch version (page ids, -1 past the end).
        self.max_pages = max(pages)
        self.block_table = torch.zeros(batch, self.max_pages, dtype=torch.long)
        for b, n in enumerate(pages):
            self.block_table[b, :n] = self.indices[int(self.indptr[b]) : int(self.indptr[b + 1])]
        self.positions = torch.tensor([n - 1 for n in self.lengths], device=device)
        self.append_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device)
        self.dev = [t.to(device) for t in (self.indptr, self.indices, self.last)]
        self.block_table = self.block_table.to(device)
        kv_len = torch.tensor(self.lengths, device=device)
        self.kv_mask = torch.arange(self.max_pages * PAGE, device=device)[None, :] < kv_len[:, None]
        shape = (self.num_pages, PAGE, HK, D)
        self.caches = [
            (
                torch.randn(shape, device=device, dtype=torch.bfloat16),
                torch.randn(shape, device=device, dtype=torch.bfloat16),
            )
            for _ in range(layers)
        ]


def flashserve_step(x, ws, batch, wrapper):
    residual = torch.zeros_like(x)
    h = x
    for w, (kc, vc) in zip(ws, batch.caches):
        flashserve.fused_add_rmsnorm(h, residual, w["attn_norm"], EPS)  # h = norm(h + residual)
        qkv = (h @ w["qkv"]).view(-1, HQ + 2 * HK, D)
        q, k, v = qkv[:, :HQ], qkv[:, HQ : HQ + HK], qkv[:, HQ + HK :]
        flashserve.apply_llama31_rope_pos_ids_inplace(q, k, batch.positions, rope_theta=THETA)
        indptr, indices, last = batch.dev
        flashserve.append_paged_kv_cache(k, v, batch.append_indptr, (kc, vc), indices, indptr, last)
        attn = wrapper.run(q, (kc, vc))
        h = attn.view(-1, HQ * D) @ w["o"]
        flashserve.fused_add_rmsnorm(h, residual, w["mlp_norm"], EPS)
        h = flashserve.silu_and_mul(h @ w["gate_up"]) @ w["down"]
    return h + residual


def llama31_inv_freq(device):
    f = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    wavelen = 2 * math.pi / f
    c = LLAMA31
    smooth = (c["original"] / wavelen - c["low"]) / (c["high"] - c["low"])
    mid = (1 - smooth) * f / c["factor"] + smooth * f
    f = torch.where(
        wavelen < c["original"] / c["high"],
        f,
        torch.where(wavelen > c["original"] / c["low"], f / c["factor"], mid),
    )
    return f.to(device)


def torch_rmsnorm(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def torch_rope(x, cos, sin):
    x1, x2 = x[..., : D // 2].float(), x[..., D // 2 :].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)


def torch_step(x, ws, batch, inv_freq):
    angle = batch.positions.float()[:, None] * inv_freq[None, :]
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    b = x.shape[0]
    pos = batch.positions
    page = batch.block_table[torch.arange(b, device=x.device), pos // PAGE]
    slot = pos % PAGE
    residual = torch.zeros_like(x)
    h = x
    for w, (kc, vc) in zip(ws, batch.caches):
        residual = residual + h
        h = torch_rmsnorm(residual, w["attn_norm"])
        qkv = (h @ w["qkv"]).view(-1, HQ + 2 * HK, D)
        q, k, v = qkv[:, :HQ], qkv[:, HQ : HQ + HK], qkv[:, HQ + HK :]
        q, k = torch_rope(q, cos, sin), torch_rope(k, cos, sin)
        kc[page, slot] = k
        vc[page, slot] = v
        keys = kc[batch.block_table].view(b, -1, HK, D).transpose(1, 2)  # [b, HK, L, D]
        values = vc[batch.block_table].view(b, -1, HK, D).transpose(1, 2)
        attn = F.scaled_dot_product_attention(
            q[:, :, None, :],
            keys,
            values,
            attn_mask=batch.kv_mask[:, None, None, :],
            enable_gqa=True,
        )
        h = attn.reshape(b, HQ * D) @ w["o"]
        residual = residual + h
        h = torch_rmsnorm(residual, w["mlp_norm"])
        gate, up = (h @ w["gate_up"]).chunk(2, -1)
        h = (F.silu(gate.float()) * up.float()).to(h.dtype) @ w["down"]
    return h + residual


def graph_time_us(fn, samples=30):
    """Median µs of one CUDA-graph replay of fn (after warm-up on a side stream)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g.replay()
    times = []
    for _ in range(samples):
        start.record()
        g.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-context", type=int, default=4096)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("llama_decode_step: needs a CUDA device (Hopper)")
    torch.manual_seed(torch.seed())
    dev = torch.device("cuda")
    ws = weights(args.layers, dev)
    batch = Batch(args.batch, args.max_context, args.layers, dev)
    wrapper = flashserve.BatchDecodeWithPagedKVCacheWrapper(kv_layout="NHD")
    wrapper.plan(
        batch.indptr, batch.dev[1], batch.last, HQ, HK, D, PAGE, q_data_type=torch.bfloat16
    )
    inv_freq = llama31_inv_freq(dev)
    x = torch.randn(args.batch, HIDDEN, device=dev, dtype=torch.bfloat16)

    # Correctness: both steps from the same caches (the append writes the same slots).
    saved = [(k.clone(), v.clone()) for k, v in batch.caches]
    ours = flashserve_step(x.clone(), ws, batch, wrapper)
    for (k, v), (k0, v0) in zip(batch.caches, saved):
        k.copy_(k0)
        v.copy_(v0)
    ref = torch_step(x.clone(), ws, batch, inv_freq)
    err = ((ours.float() - ref.float()).norm() / ref.float().norm()).item()
    ok = bool(torch.isfinite(ours).all()) and err < 3e-2

    ours_us = graph_time_us(lambda: flashserve_step(x.clone(), ws, batch, wrapper))
    torch_us = graph_time_us(lambda: torch_step(x.clone(), ws, batch, inv_freq))
    ctx = sum(batch.lengths) / len(batch.lengths)
    print(
        f"Llama-3-8B decode step: batch {args.batch}, {args.layers} layers, "
        f"mean context {ctx:.0f}, "
        f"{torch.cuda.get_device_name()}"
    )
    print(f"{'':24s} {'us / step':>10s} {'us / layer':>11s}")
    print(f"{'plain torch (graph)':24s} {torch_us:10.1f} {torch_us / args.layers:11.1f}")
    print(f"{'flashserve (graph)':24s} {ours_us:10.1f} {ours_us / args.layers:11.1f}")
    print(
        f"speedup {torch_us / ours_us:.2f}x; output vs torch: relative L2 error {err:.2e} "
        f"({'ok' if ok else 'MISMATCH'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
