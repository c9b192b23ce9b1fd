// Prefill kernels for head_dim 128 (see prefill_launch.h).
#include "api/prefill_launch.h"
#include "flashserve/attention/prefill_kernel_sm90.cuh"
#include "flashserve/core/dispatch.h"

namespace flashserve::detail {

cudaError_t launch_prefill_hd128(DType dtype, attention::PrefillKind kind,
                                 const attention::PrefillParams& p, int grid, cudaStream_t stream) {
  using attention::PrefillKind;
  auto go = [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (kind) {
      case PrefillKind::kPlain:
        return attention::sm90::launch_prefill_sm90<T, 128, PrefillKind::kPlain>(p, grid, stream);
      case PrefillKind::kCausal:
        return attention::sm90::launch_prefill_sm90<T, 128, PrefillKind::kCausal>(p, grid, stream);
      default:
        return attention::sm90::launch_prefill_sm90<T, 128, PrefillKind::kGeneral>(p, grid, stream);
    }
  };
  if (dtype == DType::kBFloat16) return go(TypeTag<cutlass::bfloat16_t>{});
  return go(TypeTag<cutlass::half_t>{});
}

}  // namespace flashserve::detail
