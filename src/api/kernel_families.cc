#include "api/kernel_families.h"

#include "api/decode_kernels.h"
#include "api/prefill_kernels.h"

namespace flashserve::detail {

void register_kernel_families() {
  decode_kernel_family();
  prefill_kernel_family();
}

}  // namespace flashserve::detail
