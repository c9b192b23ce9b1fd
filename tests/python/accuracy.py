"""METHOD.md's accuracy rules for the GPU tests (torch on the device).

- Reductions (norms, attention, merge): ``max|out - ref| <= 2 * max|base - ref| + 2 * fp32_noise``
  where ``ref`` is computed in float64, ``base`` is the same computation done naively in the
  kernel's own precision, and ``fp32_noise = max|(ref + 0.3 - 0.3) - ref|`` (in float32).
- Elementwise: relative L2 error below 1e-2 (bf16), 2e-3 (fp16), 1e-5 (fp32).
- NaN never passes; outputs are poisoned with NaN before the call and must be fully written.
"""

import torch

ELEMENTWISE_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fills a floating tensor with NaN (fp8: its NaN bit pattern) and returns it."""
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        t.view(torch.uint8).fill_(0x7F if t.dtype == torch.float8_e4m3fn else 0x7E)
    else:
        t.fill_(float("nan"))
    return t


def assert_written(out: torch.Tensor, what: str = "out") -> None:
    bad = ~torch.isfinite(out.float())
    assert not bool(bad.any()), f"{what}: {int(bad.sum())} of {out.numel()} elements not finite"


def assert_reduction_close(out, ref, base, what="out"):
    out64, ref64, base64 = out.double(), ref.double(), base.double()
    assert not bool(torch.isnan(out64).any()), f"{what}: NaN in the output"
    finite = torch.isfinite(ref64)
    # Rows the reference says are -inf (fully masked LSE) must match exactly.
    assert torch.equal(out64[~finite], ref64[~finite]), f"{what}: non-finite entries differ"
    err = (out64 - ref64)[finite].abs().max().item() if finite.any() else 0.0
    base_err = (base64 - ref64)[finite].abs().max().item() if finite.any() else 0.0
    r32 = ref64[finite].float()
    noise = ((r32 + 0.3) - 0.3 - r32).abs().max().item() if finite.any() else 0.0
    bound = 2 * base_err + 2 * noise
    assert err <= bound, f"{what}: max error {err:.3g} > bound {bound:.3g} (base {base_err:.3g})"


def assert_elementwise_close(out, ref, dtype=None, what="out"):
    dtype = dtype or out.dtype
    out64, ref64 = out.double(), ref.double()
    assert not bool(torch.isnan(out64).any()), f"{what}: NaN in the output"
    denom = ref64.norm().item()
    err = (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)
    tol = ELEMENTWISE_TOL[dtype]
    assert err < tol, f"{what}: relative L2 error {err:.3g} >= {tol:g} ({dtype})"
