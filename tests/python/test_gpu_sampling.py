"""The sampling family against torch references (docs/sampling.md, METHOD.md's rules): top_k = 1
and temperature 0 are argmax; drawn tokens never leave the top-k / top-p / min-p set; empirical
frequencies of many draws match the filtered distribution within a Bretagnolle-Huber-Carol bound
(with a negative control); seeds and offsets; renormalization, masking and exact top-k; chain
speculative sampling; CUDA-graph replay with device seeds; torch.compile; argument errors."""

import math

import pytest
from conftest import requires_gpu

torch = pytest.importorskip("torch")
import flashserve  # noqa: E402
from accuracy import assert_written, poison  # noqa: E402

pytestmark = requires_gpu
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
DELTA = 1e-9  # chance that a correct sampler fails one statistical assertion


def l1_bound(categories, draws, delta=DELTA):
    """eps with P(||q - p||_1 >= eps) <= delta for the empirical frequencies q of `draws` draws
    from p over `categories` values (Bretagnolle-Huber-Carol: 2^K exp(-N eps^2 / 2))."""
    return math.sqrt(2 * (categories * math.log(2) + math.log(1 / delta)) / draws)


def fresh_seed():
    return int(torch.randint(0, 1 << 62, (1,)).item())


def device_scalar(value):
    return torch.tensor([value], dtype=torch.int64, device="cuda")


def poison_ids(*shape, dtype=torch.int32):
    return torch.full(shape, -1, dtype=dtype, device="cuda")


def random_probs(batch, vocab, scale=1.0):
    return torch.softmax(torch.randn(batch, vocab, device="cuda") * scale, -1)


def assert_ids_in_range(ids, vocab):
    assert bool((ids >= 0).all()) and bool((ids < vocab).all()), "id outside [0, vocab)"


# ---- torch references ----------------------------------------------------------------------------


def k_threshold(srt, top_k):
    """The k-th largest value of each row [batch, 1] (srt sorted descending); 0 where top_k is no
    filter (<= 0 or >= vocab)."""
    vocab = srt.shape[1]
    k = top_k.long()
    kth = srt.gather(1, (k.clamp(1, vocab) - 1)[:, None])
    return torch.where(((k > 0) & (k < vocab))[:, None], kth, torch.zeros_like(kth))


def kept(p, top_k=None, top_p=None, min_p=None, joint=False):
    """The tokens each row keeps (docs/sampling.md): p >= the k-th largest (ties kept); the smallest
    set of largest tokens holding top_p of the mass of the top-k set (top_k_first) or of the row
    (joint); p >= min_p * max p. Per-row parameter tensors [batch] or None."""
    p = p.double()
    srt = p.sort(-1, descending=True).values
    keep = p > 0
    k_thr = torch.zeros_like(srt[:, :1])
    if top_k is not None:
        k_thr = k_threshold(srt, top_k)
        keep &= p >= k_thr
    if top_p is not None:
        tp = top_p.double()[:, None]
        base = srt if joint else torch.where(srt >= k_thr, srt, torch.zeros_like(srt))
        c = base.cumsum(-1) / base.sum(-1, keepdim=True)
        j = (c < tp).sum(-1, keepdim=True).clamp(max=srt.shape[1] - 1)
        keep &= (p >= srt.gather(1, j)) | (tp >= 1)
    if min_p is not None:
        keep &= p >= min_p.double()[:, None] * srt[:, :1]
    return keep


def filtered(p, keep):
    q = torch.where(keep, p.double(), torch.zeros_like(p, dtype=torch.float64))
    return q / q.sum(-1, keepdim=True)


def top_p_keeping(p, n, top_k=None):
    """Per-row float32 top_p that keeps exactly the n (>= 2) most likely tokens of the row (of its
    top-k set, renormalized, when top_k is given): halfway between the cumulative fractions of
    n - 1 and n tokens, so that rounding cannot move the set."""
    srt = p.double().sort(-1, descending=True).values
    if top_k is not None:
        srt = torch.where(srt >= k_threshold(srt, top_k), srt, torch.zeros_like(srt))
    c = srt.cumsum(-1) / srt.sum(-1, keepdim=True)
    n = n.long()[:, None]
    return ((c.gather(1, n - 2) + c.gather(1, n - 1)) / 2).squeeze(1).float()


def min_p_keeping(p, lo, width=1):
    """Per-row float32 min_p keeping the n most likely tokens, n in [lo, lo + width) where the
    ratio to the maximum drops the most (halfway between the two ratios)."""
    srt = p.double().sort(-1, descending=True).values
    r = srt / srt[:, :1]
    cand = lo.long()[:, None] + torch.arange(width, device=p.device)[None]
    gaps = r.gather(1, cand - 1) - r.gather(1, cand)
    n = cand.gather(1, gaps.argmax(1, keepdim=True))
    return ((r.gather(1, n - 1) + r.gather(1, n)) / 2).squeeze(1).float()


def sample(
    source, x, top_k=None, top_p=None, min_p=None, order="top_k_first", temperature=None, **kw
):
    """The flashserve function for the given filters (None: not applied)."""
    k = 0 if top_k is None else top_k
    p = 1.0 if top_p is None else top_p
    m = 0.0 if min_p is None else min_p
    t = 1.0 if temperature is None else temperature
    if source == "logits":
        if top_k is None and top_p is None and min_p is None:
            return flashserve.sampling_from_logits(x, temperature=t, **kw)
        return flashserve.top_k_top_p_sampling_from_logits(
            x, k, p, filter_apply_order=order, temperature=t, min_p=m, **kw
        )
    given = {n for n, v in (("top_k", top_k), ("top_p", top_p), ("min_p", min_p)) if v is not None}
    if not given:
        return flashserve.sampling_from_probs(x, **kw)
    if given == {"top_k"}:
        return flashserve.top_k_sampling_from_probs(x, top_k, **kw)
    if given == {"top_p"}:
        return flashserve.top_p_sampling_from_probs(x, top_p, **kw)
    if given == {"min_p"}:
        return flashserve.min_p_sampling_from_probs(x, min_p, **kw)
    return flashserve.top_k_top_p_sampling_from_probs(
        x, k, p, filter_apply_order=order, min_p=m, **kw
    )


# ---- greedy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_1_and_temperature_0_are_argmax(dtype):
    batch, vocab = 37, 1000
    x = torch.randn(batch, vocab, device="cuda").to(dtype)
    best = x.max(-1).values
    unique = (x == best[:, None]).sum(-1) == 1  # bf16 rows may tie at the maximum
    seed = fresh_seed()
    temps = torch.rand(batch, device="cuda") + 0.5
    calls = [
        lambda out: flashserve.top_k_top_p_sampling_from_logits(
            x, 1, 1.0, seed=seed, offset=0, out=out
        ),
        lambda out: flashserve.sampling_from_logits(
            x, seed=seed, offset=1, temperature=0.0, out=out
        ),
        lambda out: flashserve.top_k_top_p_sampling_from_logits(
            x,
            torch.ones(batch, dtype=torch.int32, device="cuda"),
            torch.full((batch,), 0.9, device="cuda"),
            seed=seed,
            offset=2,
            temperature=temps,
            out=out,
        ),
    ]
    for call in calls:
        ids = poison_ids(batch)
        assert call(ids) is ids
        assert_ids_in_range(ids, vocab)
        assert torch.equal(x.gather(1, ids.long()[:, None]).squeeze(1), best)
        assert torch.equal(ids.long()[unique], x.argmax(-1)[unique])
    probs = torch.softmax(x.float(), -1)
    ids = flashserve.top_k_sampling_from_probs(probs, 1, seed=seed, offset=3)
    assert ids.dtype == torch.int32 and ids.shape == (batch,)
    assert torch.equal(probs.gather(1, ids.long()[:, None]).squeeze(1), probs.max(-1).values)


# ---- filtered sets -------------------------------------------------------------------------------

SET_CASES = [
    ("top_k", "top_k_first"),
    ("top_p", "top_k_first"),
    ("min_p", "top_k_first"),
    ("top_k_top_p", "top_k_first"),
    ("top_k_top_p", "joint"),
    ("all", "top_k_first"),
    ("all", "joint"),
]


@pytest.mark.parametrize("source", ["probs", "logits"])
@pytest.mark.parametrize("filters,order", SET_CASES)
def test_tokens_never_leave_the_filtered_set(source, filters, order):
    batch, vocab = 64, 3000
    x = torch.randn(batch, vocab, device="cuda") * 1.5
    temperature = None
    if source == "logits":
        temperature = torch.rand(batch, device="cuda") + 0.5
        p = torch.softmax(x.double() / temperature.double()[:, None], -1)
        inp = x
    else:
        inp = torch.softmax(x, -1)
        p = inp.double()
    top_k = top_p = min_p = None
    if filters in ("top_k", "top_k_top_p", "all"):
        top_k = torch.randint(2, 40, (batch,), device="cuda", dtype=torch.int32)
        top_k[:4] = torch.tensor([0, -3, vocab, vocab + 5])  # no filter
    if filters in ("top_p", "top_k_top_p", "all"):
        n = torch.randint(2, 30, (batch,), device="cuda")
        within = top_k if top_k is not None and order == "top_k_first" else None
        if within is not None:
            size = torch.where((top_k > 0) & (top_k < vocab), top_k, vocab)
            n = torch.minimum(n, size.long())
        top_p = top_p_keeping(p, n, within)
        top_p[4] = 1.0  # no filter
    if filters in ("min_p", "all"):
        min_p = min_p_keeping(p, torch.randint(1, 22, (batch,), device="cuda"), width=8)
        min_p[5] = 0.0  # no filter
    keep = kept(p, top_k, top_p, min_p, joint=order == "joint")
    seed = fresh_seed()
    for offset in range(16):
        ids = poison_ids(batch)
        sample(
            source, inp, top_k, top_p, min_p, order, temperature, seed=seed, offset=offset, out=ids
        )
        assert_ids_in_range(ids, vocab)
        bad = ~keep.gather(1, ids.long()[:, None]).squeeze(1)
        assert not bool(bad.any()), f"offset {offset}: rows {bad.nonzero().flatten().tolist()}"


# ---- distributions -------------------------------------------------------------------------------

VOCAB = 50
DRAWS = 1 << 18
# source, top_k, tokens top_p keeps, tokens min_p keeps, filter order, temperature
TV_CASES = {
    "probs": ("probs", None, None, None, "top_k_first", 1.0),
    "probs_top_k": ("probs", 10, None, None, "top_k_first", 1.0),
    "probs_top_p": ("probs", None, 8, None, "top_k_first", 1.0),
    "probs_min_p": ("probs", None, None, 13, "top_k_first", 1.0),
    "probs_top_k_first": ("probs", 20, 6, None, "top_k_first", 1.0),
    "probs_joint": ("probs", 5, 12, None, "joint", 1.0),
    "probs_top_k_min_p": ("probs", 20, None, 13, "top_k_first", 1.0),
    "logits": ("logits", None, None, None, "top_k_first", 0.7),
    "logits_top_k_first": ("logits", 20, 6, None, "top_k_first", 0.7),
    "logits_joint": ("logits", 5, 12, None, "joint", 1.0),
    "logits_min_p": ("logits", None, None, 13, "top_k_first", 1.0),
}


def ramp_logits(vocab):
    """float32 logits whose probabilities fall by e^-0.15 per rank, in a random order, jittered so
    that no two are equal: every filter below removes a known share of the mass."""
    rank = torch.randperm(vocab, device="cuda").double()
    return (-0.15 * rank + 0.01 * torch.rand(vocab, device="cuda", dtype=torch.float64)).float()


@pytest.mark.parametrize("case", sorted(TV_CASES))
def test_frequencies_match_the_filtered_distribution(case):
    source, top_k, n_top_p, n_min_p, order, temperature = TV_CASES[case]
    logits = ramp_logits(VOCAB)[None]
    p = torch.softmax(logits.double() / temperature, -1)
    row = logits if source == "logits" else p.float()
    if source == "probs":
        p = row.double()
    k_t = None if top_k is None else torch.tensor([top_k], device="cuda")
    top_p = min_p = None
    if n_top_p is not None:
        within = k_t if order == "top_k_first" else None
        top_p = top_p_keeping(p, torch.tensor([n_top_p], device="cuda"), within)
    if n_min_p is not None:
        min_p = min_p_keeping(p, torch.tensor([n_min_p], device="cuda"))
    joint = order == "joint"
    keep = kept(p, k_t, top_p, min_p, joint)
    expected = filtered(p, keep)[0]

    ids = poison_ids(DRAWS)
    sample(
        source,
        row.expand(DRAWS, VOCAB),  # row stride 0: DRAWS draws from one row in one call
        top_k,
        None if top_p is None else top_p.item(),
        None if min_p is None else min_p.item(),
        order,
        None if source == "probs" else temperature,
        seed=fresh_seed(),
        offset=0,
        out=ids,
    )
    assert_ids_in_range(ids, VOCAB)
    assert bool(keep[0, ids.long()].all()), "a filtered token was drawn"
    freq = torch.bincount(ids.long(), minlength=VOCAB).double() / DRAWS
    bound = l1_bound(VOCAB, DRAWS)
    l1 = (freq - expected).abs().sum().item()
    assert l1 < bound, f"L1 {l1:.4f} >= bound {bound:.4f}"

    # Negative control: the same statistic against a distribution at L1 >= 0.2 from the target
    # (the other filter order, the unfiltered row, or the row shifted by one token) must fail.
    if joint:
        wrong = filtered(p, kept(p, k_t, top_p, min_p, joint=False))[0]
    elif not bool(keep.all()):
        wrong = p[0]
    else:
        wrong = p[0].roll(1)
    assert (wrong - expected).abs().sum().item() >= 0.2, "test construction: control too close"
    assert (freq - wrong).abs().sum().item() > bound, "the wrong distribution passes too"


# ---- randomness ----------------------------------------------------------------------------------


def flat_rows(rows=4096, vocab=50):
    return random_probs(1, vocab, 0.1).expand(rows, vocab)


def test_same_seed_and_offset_give_the_same_ids():
    probs = flat_rows()
    seed = fresh_seed()
    a = flashserve.sampling_from_probs(probs, seed=seed, offset=7)
    assert torch.equal(a, flashserve.sampling_from_probs(probs, seed=seed, offset=7))
    assert not torch.equal(a, flashserve.sampling_from_probs(probs, seed=seed, offset=8))
    assert not torch.equal(a, flashserve.sampling_from_probs(probs, seed=seed + 1, offset=7))
    # Device scalars ([1] or []) give what the same ints give.
    b = flashserve.sampling_from_probs(probs, seed=device_scalar(seed), offset=device_scalar(7))
    assert torch.equal(a, b)
    c = flashserve.sampling_from_probs(
        probs, seed=device_scalar(seed)[0], offset=torch.tensor(7, device="cuda")
    )
    assert torch.equal(a, c)
    out64 = poison_ids(4096, dtype=torch.int64)
    flashserve.sampling_from_probs(probs, seed=seed, offset=7, out=out64)
    assert torch.equal(out64, a.long())
    # Seeds are 64-bit: ints wrap modulo 2^64, an int64 tensor holds the same bits.
    top = flashserve.sampling_from_probs(probs, seed=(1 << 64) - 1, offset=0)
    assert torch.equal(top, flashserve.sampling_from_probs(probs, seed=-1, offset=0))
    assert torch.equal(
        top, flashserve.sampling_from_probs(probs, seed=device_scalar(-1), offset=device_scalar(0))
    )


def test_default_generator_advances_and_follows_manual_seed():
    probs = flat_rows()
    torch.manual_seed(1234)
    a = flashserve.sampling_from_probs(probs)
    b = flashserve.sampling_from_probs(probs)
    assert not torch.equal(a, b), "the generator's offset did not advance"
    torch.manual_seed(1234)
    assert torch.equal(flashserve.sampling_from_probs(probs), a)
    g = torch.Generator(device="cuda")
    g.manual_seed(1234)
    assert torch.equal(flashserve.sampling_from_probs(probs, generator=g), a)
    assert torch.equal(flashserve.sampling_from_probs(probs, generator=g), b)


# ---- renormalization, masking, top-k -------------------------------------------------------------


def assert_renorm(out, ref, keep):
    assert_written(out)
    assert bool((out[~keep] == 0).all()), "a filtered token kept probability"
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("per_row", [False, True])
def test_top_k_renorm_probs(per_row):
    batch, vocab = 33, 1000
    p = random_probs(batch, vocab)
    if per_row:
        k = torch.randint(1, 100, (batch,), device="cuda", dtype=torch.int32)
        k[0], k[1] = 0, vocab  # no filter
    else:
        k = 17
    k_t = k if per_row else torch.full((batch,), k, device="cuda")
    keep = kept(p, top_k=k_t)
    out = poison(torch.empty_like(p))
    assert flashserve.top_k_renorm_probs(p, k, out=out) is out
    assert_renorm(out, filtered(p, keep), keep)
    q = p.clone()
    flashserve.top_k_renorm_probs(q, k, out=q)  # in place
    assert torch.equal(q, out)


@pytest.mark.parametrize("per_row", [False, True])
def test_top_p_renorm_probs(per_row):
    batch, vocab = 33, 1000
    if per_row:
        p = random_probs(batch, vocab)
        top_p = top_p_keeping(p, torch.randint(2, 60, (batch,), device="cuda"))
        top_p[0] = 1.0  # no filter
        tp = top_p
    else:  # a scalar must sit between cumulative fractions of every row: identical rows
        p = random_probs(1, vocab).repeat(batch, 1)
        tp = top_p_keeping(p, torch.full((batch,), 25, device="cuda"))
        top_p = tp[0].item()
    keep = kept(p, top_p=tp)
    out = flashserve.top_p_renorm_probs(p, top_p)
    assert out.shape == p.shape and out.dtype == torch.float32
    assert_renorm(out, filtered(p, keep), keep)


def test_renorm_of_strided_rows():
    big = random_probs(8, 2 * 1000)
    p = big[:, :1000]  # row stride 2000
    out = flashserve.top_k_renorm_probs(p, 10)
    keep = kept(p, top_k=torch.full((8,), 10, device="cuda"))
    assert_renorm(out, filtered(p, keep), keep)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_top_k_mask_logits(dtype, per_row):
    batch, vocab = 19, 5000
    x = torch.randn(batch, vocab, device="cuda").to(dtype)
    if per_row:
        k = torch.randint(1, 300, (batch,), device="cuda", dtype=torch.int32)
        k[0], k[1] = 0, vocab  # no mask
        k_list = k.tolist()
    else:
        k, k_list = 40, [40] * batch
    out = poison(torch.empty_like(x))
    assert flashserve.top_k_mask_logits(x, k, out=out) is out
    ref = x.clone()
    for r, kr in enumerate(k_list):
        if 0 < kr < vocab:
            kth = torch.topk(x[r].float(), kr).values[-1]
            ref[r][x[r].float() < kth] = -math.inf
    assert torch.equal(out, ref)
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "batch,vocab,k", [(1, 128256, 50), (7, 1000, 1), (16, 5000, 256), (3, 64, 64)]
)
def test_top_k_matches_torch_topk(dtype, batch, vocab, k):
    x = torch.randn(batch, vocab, device="cuda").to(dtype)
    values = poison(x.new_empty(batch, k))
    indices = poison_ids(batch, k, dtype=torch.int32)
    v, i = flashserve.top_k(x, k, out=(values, indices))
    assert v is values and i is indices
    assert_written(values)
    ref = torch.topk(x.float(), k, dim=-1).values  # sorted descending
    assert torch.equal(values.float().sort(-1, descending=True).values, ref)
    assert torch.equal(x.gather(1, indices.long()), values), "indices do not point at the values"
    assert bool((indices[:, 1:] > indices[:, :-1]).all()), "indices not ascending and unique"
    # Ties with the k-th value: the lowest indices are taken.
    for r in range(batch):
        kth = ref[r, -1]
        row = x[r].float()
        tied = (row == kth).nonzero().flatten()
        taken = indices[r].long()[row[indices[r].long()] == kth]
        assert torch.equal(taken, tied[: taken.numel()]), f"row {r}: tie not the lowest indices"
        assert taken.numel() == k - int((row > kth).sum())
    # The default form: int64 indices, and sorted=True orders by value like torch.topk.
    v2, i2 = flashserve.top_k(x, k)
    assert i2.dtype == torch.int64 and torch.equal(i2, indices.long()) and torch.equal(v2, values)
    v3, i3 = flashserve.top_k(x, k, sorted=True)
    assert torch.equal(v3.float(), ref) and torch.equal(x.gather(1, i3), v3)


# ---- chain speculative sampling ------------------------------------------------------------------


def spec_inputs(batch, n, vocab, same=False):
    target = random_probs(batch * (n + 1), vocab, 2.0).view(batch, n + 1, vocab)
    if same:
        draft = target[:, :n].clone()
    else:
        draft = random_probs(batch * n, vocab, 2.0).view(batch, n, vocab)
    ids = torch.multinomial(draft.reshape(-1, vocab), 1).view(batch, n).to(torch.int32)
    return draft, ids, target


def check_chain_layout(out, emitted, draft, ids, target):
    batch, n = ids.shape
    vocab = target.shape[2]
    assert out.shape == (batch, n + 1) and emitted.shape == (batch,)
    assert emitted.dtype == torch.int32
    assert bool(((emitted >= 0) & (emitted <= n)).all()), "accepted count out of range"
    pos = torch.arange(n + 1, device="cuda")[None]
    acc = emitted.long()[:, None]
    padded = torch.cat([ids, ids.new_full((batch, 1), -1)], 1).to(out.dtype)
    zero = torch.zeros_like(out)
    assert torch.equal(torch.where(pos < acc, out, zero), torch.where(pos < acc, padded, zero))
    assert bool((out[pos > acc] == -1).all()), "positions after the drawn token not -1"
    last = out.gather(1, acc).squeeze(1)
    assert_ids_in_range(last, vocab)
    rows = torch.arange(batch, device="cuda")
    p_last = target[rows, acc.squeeze(1)].gather(1, last.long()[:, None]).squeeze(1)
    assert bool((p_last > 0).all())
    # A rejection at i < n draws from max(0, p_i - q_i): the token has residual mass.
    rejected = acc.squeeze(1) < n
    if bool(rejected.any()):
        r = rows[rejected]
        at = acc.squeeze(1)[rejected]
        tok = last.long()[rejected]
        resid = target[r, at, tok] - draft[r, at, tok]
        assert bool((resid > 0).all()), "token drawn where the residual has no mass"


def test_chain_speculative_sampling_layout_and_counts():
    batch, n, vocab = 64, 4, 1000
    draft, ids, target = spec_inputs(batch, n, vocab)
    seed = fresh_seed()
    out = poison_ids(batch, n + 1)
    tokens, emitted = flashserve.chain_speculative_sampling(
        draft, ids, target, seed=seed, offset=0, out=out
    )
    assert tokens is out
    check_chain_layout(out, emitted, draft, ids, target)
    # Counts are added to a given tensor in place (as in FlashInfer); same seed, same result.
    acc = torch.ones(batch, dtype=torch.int32, device="cuda")
    out64 = poison_ids(batch, n + 1, dtype=torch.int64)
    tokens2, acc2 = flashserve.chain_speculative_sampling(
        draft, ids, target, None, acc, seed=seed, offset=0, out=out64
    )
    assert acc2 is acc and torch.equal(acc, emitted + 1)
    assert torch.equal(tokens2, tokens.long())


def test_chain_speculative_sampling_accepts_drafts_from_the_target():
    batch, n, vocab = 128, 5, 3000
    draft, ids, target = spec_inputs(batch, n, vocab, same=True)
    tokens, emitted = flashserve.chain_speculative_sampling(
        draft, ids, target, seed=fresh_seed(), offset=3
    )
    assert bool((emitted == n).all()), "a draft drawn from the target distribution was rejected"
    check_chain_layout(tokens, emitted, draft, ids, target)
    assert torch.equal(tokens[:, :n], ids)


# ---- CUDA graphs, torch.compile ------------------------------------------------------------------


def test_graph_replay_draws_new_ids_after_an_offset_bump():
    logits = torch.randn(4096, 64, device="cuda") * 0.1
    seed0 = fresh_seed()
    seed, offset = device_scalar(seed0), device_scalar(0)
    ids = poison_ids(4096)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        flashserve.top_k_top_p_sampling_from_logits(
            logits, 40, 0.95, seed=seed, offset=offset, out=ids
        )
    g.replay()
    first = ids.clone()
    expect = flashserve.top_k_top_p_sampling_from_logits(logits, 40, 0.95, seed=seed0, offset=0)
    assert torch.equal(first, expect)
    g.replay()
    assert torch.equal(ids, first), "a replay with the same offset changed the ids"
    offset += 1  # in device memory: the captured kernel reads it
    g.replay()
    assert not torch.equal(ids, first), "the replay did not see the new offset"
    second = flashserve.top_k_top_p_sampling_from_logits(logits, 40, 0.95, seed=seed0, offset=1)
    assert torch.equal(ids, second)


def test_capture_without_seed_and_offset_is_refused():
    probs = flat_rows()
    ids = poison_ids(4096)
    g = torch.cuda.CUDAGraph()
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^sampling_from_probs: seed:"):
        with torch.cuda.graph(g):
            flashserve.sampling_from_probs(probs, out=ids)


def test_custom_ops_are_registered_with_fake_impls():
    for name in ("sample", "renorm", "top_k", "chain_speculative_sampling"):
        assert hasattr(torch.ops.flashserve, name), name
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        probs = torch.empty(4, 100, device="cuda")
        ids = flashserve.top_k_top_p_sampling_from_probs(probs, 5, 0.9)
        assert ids.shape == (4,) and ids.dtype == torch.int32
        assert flashserve.top_p_renorm_probs(probs, 0.5).shape == probs.shape
        values, indices = flashserve.top_k(probs, 7)
        assert values.shape == (4, 7) and indices.dtype == torch.int64
        draft = torch.empty(4, 3, 100, device="cuda")
        drafts = torch.empty(4, 3, device="cuda", dtype=torch.int32)
        target = torch.empty(4, 4, 100, device="cuda")
        tokens, counts = flashserve.chain_speculative_sampling(draft, drafts, target)
        assert tokens.shape == (4, 4) and counts.shape == (4,)


def sampling_step(logits, seed, offset):
    masked = flashserve.top_k_mask_logits(logits, 30)
    return flashserve.top_k_top_p_sampling_from_logits(
        masked, 20, 0.9, seed=seed, offset=offset, temperature=0.8
    )


def test_fullgraph_compile_traces_sampling_as_custom_ops():
    torch._dynamo.reset()
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    logits = torch.randn(16, 1000, device="cuda")
    seed, offset = device_scalar(fresh_seed()), device_scalar(3)
    expect = sampling_step(logits, seed, offset)
    got = torch.compile(sampling_step, fullgraph=True, backend=recording_backend)(
        logits, seed, offset
    )
    assert len(graphs) == 1, f"expected one graph, got {len(graphs)}"
    assert "flashserve.renorm" in graphs[0] and "flashserve.sample" in graphs[0]
    assert torch.equal(got, expect)
    torch._dynamo.reset()
    got = torch.compile(sampling_step, fullgraph=True)(logits, seed, offset)  # inductor
    assert torch.equal(got, expect)


def test_compiled_sampling_reads_the_default_generator_when_it_runs():
    torch._dynamo.reset()

    def step(probs):
        return flashserve.sampling_from_probs(probs)

    compiled = torch.compile(step, fullgraph=True)
    probs = flat_rows()
    compiled(probs)  # compiles
    torch.manual_seed(77)
    a, b = compiled(probs), compiled(probs)
    assert not torch.equal(a, b), "the compiled op drew the same numbers twice"
    torch.manual_seed(77)
    assert torch.equal(step(probs), a)


# ---- arguments -----------------------------------------------------------------------------------


def test_return_valid_and_check_nan():
    p = random_probs(6, 100)
    p[2] = 0
    p[4] = float("nan")
    debug = flashserve.debug_checks()
    flashserve.set_debug_checks(False)  # they would report these rows instead
    try:
        ids, valid = flashserve.sampling_from_probs(p, return_valid=True, seed=1, offset=0)
    finally:
        flashserve.set_debug_checks(debug)
    assert valid.tolist() == [True, True, False, True, False, True]
    assert ids[2].item() == 0 and ids[4].item() == 0  # nothing to sample: token 0
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"^sampling_from_probs: probs: holds NaN"
    ):
        flashserve.sampling_from_probs(p, check_nan=True, seed=1, offset=0)


def test_python_layer_errors_name_the_argument():
    p = random_probs(4, 50)
    with pytest.raises(
        flashserve.InvalidArgumentError,
        match=r"^top_k_top_p_sampling_from_probs: filter_apply_order:",
    ):
        flashserve.top_k_top_p_sampling_from_probs(p, 5, 0.9, filter_apply_order="top_p_first")
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^sampling_from_probs: offset:"):
        flashserve.sampling_from_probs(p, seed=3)
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^sampling_from_logits: seed:"):
        flashserve.sampling_from_logits(p, offset=3)
    with pytest.raises(flashserve.UnsupportedError, match=r"^top_p_sampling_from_probs: indices:"):
        flashserve.top_p_sampling_from_probs(
            p, 0.9, torch.zeros(4, dtype=torch.int32, device="cuda")
        )
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^top_k: tie_break:"):
        flashserve.top_k(p, 3, tie_break=2)
    draft, ids, target = spec_inputs(2, 3, 50)
    with pytest.raises(
        flashserve.UnsupportedError,
        match=r"^chain_speculative_sampling: maybe_output_accepted_token_num:",
    ):
        flashserve.chain_speculative_sampling(draft, ids, target, torch.zeros_like(ids[:, 0]))


def test_cpp_errors_name_the_entry_point_and_argument():
    p = random_probs(4, 50)
    with pytest.raises(
        flashserve.InvalidArgumentError,
        match=r"^sample_from_probs: args.top_k: expected dtype int32",
    ):
        flashserve.top_k_sampling_from_probs(p, torch.full((4,), 3, device="cuda"))  # int64
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"^sample_from_probs: args.top_p_value: .*\(0, 1\]"
    ):
        flashserve.top_p_sampling_from_probs(p, 1.5, seed=0, offset=0)
    with pytest.raises(
        flashserve.InvalidArgumentError, match=r"^sample_from_probs: probs: expected dtype float32"
    ):
        flashserve.sampling_from_probs(p.half(), seed=0, offset=0)
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^sample_from_logits: args.seed:"):
        flashserve.sampling_from_logits(
            p, seed=torch.zeros(2, dtype=torch.int64, device="cuda"), offset=0
        )
    with pytest.raises(flashserve.InvalidArgumentError, match=r"^top_k: k: expected 1 <= k"):
        flashserve.top_k(p, 51)
    draft, ids, target = spec_inputs(2, 3, 50)
    with pytest.raises(
        flashserve.InvalidArgumentError,
        match=r"^chain_speculative_sampling: args.draft_token_ids: expected dtype int32",
    ):
        flashserve.chain_speculative_sampling(draft, ids.long(), target, seed=0, offset=0)
