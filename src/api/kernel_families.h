// Registers every kernel family of the library with the kernel registry. Entry points register
// their own family on first use; tools that parse kernel specs (the CLI's compile and cache
// commands) call this first. A new family adds its registration call here (docs/kernel_cache.md,
// "Adding a family").
#pragma once

namespace flashserve::detail {

void register_kernel_families();

}  // namespace flashserve::detail
