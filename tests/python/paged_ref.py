"""Random paged KV caches and a plain torch reference of paged decode attention."""

import math

import torch


def make_table(lengths, page_size, num_pages=None, device="cuda"):
    """CSR page table for kv lengths, pages drawn at random from a pool; host and device copies."""
    need = sum((n + page_size - 1) // page_size for n in lengths)
    num_pages = num_pages or need + 3
    perm = torch.randperm(num_pages).tolist()
    indptr, indices, last = [0], [], []
    for n in lengths:
        pages = (n + page_size - 1) // page_size
        indices += [perm.pop() for _ in range(pages)]
        indptr.append(len(indices))
        last.append(0 if n == 0 else (n - 1) % page_size + 1)
    host = [torch.tensor(a, dtype=torch.int32) for a in (indptr, indices, last)]
    return host, [t.to(device) for t in host], num_pages


def make_cache(num_pages, page_size, kv_heads, head_dim, layout, dtype, scale=1.0, head_dim_v=None):
    """Random (k_cache, v_cache); the v cache's last dim is head_dim_v (default head_dim)."""

    def shape(dim):
        if layout == "HND":
            return (num_pages, kv_heads, page_size, dim)
        return (num_pages, page_size, kv_heads, dim)

    k = torch.randn(shape(head_dim), device="cuda")
    v = torch.randn(shape(head_dim_v or head_dim), device="cuda")
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return (k / scale).to(dtype), (v / scale).to(dtype)
    return k.to(dtype), v.to(dtype)


def gather(cache, indices, length, page_size, layout):
    """[length, heads, dim] of one request from its pages."""
    pages = cache[indices]
    if layout == "HND":
        pages = pages.transpose(1, 2)
    return pages.reshape(-1, pages.shape[2], pages.shape[3])[:length]


def decode_reference(
    q,
    k_cache,
    v_cache,
    host_table,
    page_size,
    layout,
    *,
    q_indptr=None,
    sm_scale=None,
    k_scale=1.0,
    v_scale=1.0,
    soft_cap=0.0,
    window_left=-1,
    sinks=None,
    dtype=torch.float64,
):
    """(out, lse) computed in `dtype`: float64 for the reference, the kernel's low precision for
    METHOD's `base`. Query tokens of a request are its last kv positions, causal among them."""
    indptr, indices, last = host_table
    batch = len(last)
    heads, dim = q.shape[1], q.shape[2]
    q_indptr = q_indptr.tolist() if q_indptr is not None else list(range(batch + 1))
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(dim)
    out = torch.zeros(q.shape, dtype=dtype, device=q.device)
    lse = torch.full(q.shape[:2], -math.inf, dtype=torch.float64, device=q.device)
    for b in range(batch):
        pages = indices[indptr[b] : indptr[b + 1]].to(q.device)
        n_pages = int(indptr[b + 1] - indptr[b])
        length = 0 if n_pages == 0 else (n_pages - 1) * page_size + int(last[b])
        rows = range(q_indptr[b], q_indptr[b + 1])
        if length == 0 or len(rows) == 0:
            continue
        k = gather(k_cache, pages, length, page_size, layout).to(dtype) * k_scale
        v = gather(v_cache, pages, length, page_size, layout).to(dtype) * v_scale
        group = heads // k.shape[1]
        k = k.repeat_interleave(group, 1)  # [L, heads, dim]
        v = v.repeat_interleave(group, 1)
        qs = q[q_indptr[b] : q_indptr[b + 1]].to(dtype)  # [n, heads, dim]
        s = torch.einsum("nhd,lhd->hnl", qs, k) * scale
        if soft_cap > 0:
            s = soft_cap * torch.tanh(s / soft_cap)
        n = len(rows)
        qpos = torch.arange(length - n, length, device=q.device)[:, None]
        kpos = torch.arange(length, device=q.device)[None, :]
        mask = kpos <= qpos
        if window_left >= 0:
            mask &= kpos >= qpos - window_left
        s = s.masked_fill(~mask[None], -math.inf)
        s64 = s.double()
        if sinks is not None:
            sink = sinks.double()[:, None, None].expand(-1, n, 1)
            full = torch.cat([s64, sink], -1)
            row_lse = torch.logsumexp(full, -1)
            p = torch.exp(s64 - row_lse[..., None])
        else:
            row_lse = torch.logsumexp(s64, -1)
            p = torch.exp(s64 - row_lse[..., None]).nan_to_num(0.0)
        o = torch.einsum("hnl,lhd->nhd", p.to(dtype), v)
        out[q_indptr[b] : q_indptr[b + 1]] = o
        lse[q_indptr[b] : q_indptr[b + 1]] = row_lse.transpose(0, 1)
    return out, lse
