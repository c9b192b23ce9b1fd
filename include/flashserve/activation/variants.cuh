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

// 0.5 x (1 + erf(x / sqrt 2)): the exact GELU (torch approximate='none').
struct Gelu {
  __device__ __forceinline__ float operator()(float x) const {
    constexpr float kRsqrt2 = 0.70710678118654752f;
    return 0.5f * x * (1.f + erff(x * kRsqrt2));
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
