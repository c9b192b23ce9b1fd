// The activations as functors on one float. Each keeps float32 accuracy (a few ulp): the fp32
// tolerance is 1e-5 relative, which rules out tanh.approx; the kernel is memory-bound anyway.
#pragma once

namespace flashserve::activation {

// x * sigmoid(x). __expf is ex2.approx plus a multiply (~2 ulp here); exp(-x) overflowing to inf
// for x < -88 gives x / inf = -0, the right limit. __fdividef returns 0 for huge denominators,
// also the right limit.
struct Silu {
  __device__ __forceinline__ float operator()(float x) const {
    return __fdividef(x, 1.f + __expf(-x));
  }
};

// The exact GELU (torch approximate='none'), written as 0.5 x erfc(-x / sqrt 2): erfc keeps full
// relative accuracy where 1 + erf(x / sqrt 2) cancels (x << 0). erfc is the Chebyshev fit of
// Press et al. (Numerical Recipes, section 6.2; fractional error < 1.2e-7 for all arguments),
// evaluated branch-free: one reciprocal, nine FMAs and one exp. Library erff branches on |x| for
// every element, which serializes the 16 evaluations a thread has in flight and made GELU
// compute-bound (77% of the copy bandwidth at 16384 x 8192); this form measured in bench/NOTES.md.
// Float evaluation: relative L2 error 2e-8 against the exact function on N(0, 3) inputs.
struct Gelu {
  __device__ __forceinline__ float operator()(float x) const {
    const float z = -x * 0.70710678118654752f;
    const float a = fabsf(z);
    const float t = __fdividef(1.f, 1.f + 0.5f * a);
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    const float tail = t * __expf(fmaf(t, p, -a * a - 1.26551223f));  // erfc(|z|)
    const float erfc = z >= 0.f ? tail : 2.f - tail;
    return 0.5f * x * erfc;
  }
};

// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (torch approximate='tanh').
struct GeluTanh {
  __device__ __forceinline__ float operator()(float x) const {
    constexpr float kSqrt2OverPi = 0.79788456080286536f;
    constexpr float kCoeff = 0.044715f;
    const float inner = kSqrt2OverPi * (x + kCoeff * x * x * x);
    return 0.5f * x * (1.f + tanhf(inner));
  }
};

}  // namespace flashserve::activation
