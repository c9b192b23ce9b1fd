// The host half of launching a prefill kernel compiled at first use (prefill_kernels.h): the same
// kernel argument launch_prefill_sm90 builds for a prebuilt kernel (params + the TMA descriptors
// of q, k and v, which depend on the run's tensors), then one cuLaunchKernelEx of the loaded
// instantiation. Host code for every specialization; no kernel is instantiated here.
#include <string>

#include "api/prefill_kernels.h"
#include "flashserve/attention/prefill_kernel_sm90.cuh"

namespace flashserve::detail {
namespace {

using attention::PrefillKind;

template <class Element, int kHeadDim, PrefillKind kKind, bool kPaged, int kHeadDimV, int kBlockM>
using TraitsOf = attention::sm90::PrefillTraits<Element, kHeadDim, kKind == PrefillKind::kPlain,
                                                kPaged, kHeadDimV, kBlockM>;

template <class Element, int kHeadDim, PrefillKind kKind, bool kPaged, int kHeadDimV, int kBlockM>
Status launch_jit(const runtime::LoadedKernel& kernel, const attention::PrefillParams& p, int grid,
                  cudaStream_t stream) {
  using Traits = TraitsOf<Element, kHeadDim, kKind, kPaged, kHeadDimV, kBlockM>;
  attention::sm90::PrefillKernelArgs<Traits> args{p, attention::sm90::make_prefill_tma<Traits>(p)};
  runtime::KernelLaunch launch;
  launch.grid = dim3(static_cast<unsigned>(grid));
  launch.block = dim3(Traits::kNumThreads);
  launch.smem_bytes = Traits::kSmemBytes;
  launch.stream = stream;
  void* argv[] = {&args};
  return runtime::launch_kernel(kernel, launch, argv);
}

template <class Element, int kHeadDim, PrefillKind kKind, bool kPaged, int kHeadDimV, int kBlockM>
PrefillJitLauncher launcher() {
  using Traits = TraitsOf<Element, kHeadDim, kKind, kPaged, kHeadDimV, kBlockM>;
  PrefillJitLauncher l;
  l.threads = Traits::kNumThreads;
  l.smem_bytes = Traits::kSmemBytes;
  l.args_bytes = static_cast<int>(sizeof(attention::sm90::PrefillKernelArgs<Traits>));
  l.launch = &launch_jit<Element, kHeadDim, kKind, kPaged, kHeadDimV, kBlockM>;
  return l;
}

template <class Element, int kHeadDim, bool kPaged, int kHeadDimV = kHeadDim, int kBlockM = 0>
const PrefillJitLauncher& for_kind(PrefillKind kind) {
  static const PrefillJitLauncher l[] = {
      launcher<Element, kHeadDim, PrefillKind::kPlain, kPaged, kHeadDimV, kBlockM>(),
      launcher<Element, kHeadDim, PrefillKind::kCausal, kPaged, kHeadDimV, kBlockM>(),
      launcher<Element, kHeadDim, PrefillKind::kGeneral, kPaged, kHeadDimV, kBlockM>()};
  return l[static_cast<int>(kind)];
}

// block_m: 0 or the head dim's default, or its alternative (prefill_alt_block_m: 128 at 64).
template <class Element, bool kPaged>
const PrefillJitLauncher& for_head_dim(int head_dim, int head_dim_v, PrefillKind kind,
                                       int block_m) {
  if (head_dim_v != 0 && head_dim_v != head_dim) return for_kind<Element, 192, kPaged, 128>(kind);
  switch (head_dim) {
    case 64:
      return block_m == attention::prefill_alt_block_m(64)
                 ? for_kind<Element, 64, kPaged, 64, 128>(kind)
                 : for_kind<Element, 64, kPaged>(kind);
    case 96:
      return for_kind<Element, 96, kPaged>(kind);
    case 128:
      return for_kind<Element, 128, kPaged>(kind);
    case 192:
      return for_kind<Element, 192, kPaged>(kind);
    default:
      return for_kind<Element, 256, kPaged>(kind);
  }
}

template <class Element>
const PrefillJitLauncher& for_layout(int head_dim, int head_dim_v, PrefillKind kind, bool paged,
                                     int block_m) {
  return paged ? for_head_dim<Element, true>(head_dim, head_dim_v, kind, block_m)
               : for_head_dim<Element, false>(head_dim, head_dim_v, kind, block_m);
}

}  // namespace

const PrefillJitLauncher& prefill_jit_launcher(DType q, int head_dim, PrefillKind kind, bool paged,
                                               int head_dim_v, int block_m) {
  return q == DType::kBFloat16
             ? for_layout<cutlass::bfloat16_t>(head_dim, head_dim_v, kind, paged, block_m)
             : for_layout<cutlass::half_t>(head_dim, head_dim_v, kind, paged, block_m);
}

}  // namespace flashserve::detail
