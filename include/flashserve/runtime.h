// Library-wide facts and switches: version, build configuration, device queries, debug checks.
#pragma once

#include <cstdint>
#include <string>

#include "flashserve/core/status.h"

namespace flashserve {

const char* version();

struct BuildInfo {
  const char* version;
  const char* build_type;    // CMAKE_BUILD_TYPE
  const char* cuda_version;  // toolkit the library was built with
  const char* cuda_archs;    // e.g. "90a"
  const char* cuda_flags;
  const char* cxx_flags;
};
BuildInfo build_info();

struct DeviceInfo {
  int ordinal = -1;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t l2_bytes = 0;
  int64_t global_mem_bytes = 0;
  int max_smem_per_block_optin = 0;
  int driver_version = 0, runtime_version = 0;
};
// Number of CUDA devices; a Status of kNoDevice (never an exception) when there is none.
Status device_count(int* count);
// Cached after the first query per device.
Status get_device_info(int device, DeviceInfo* info);

// FLASHSERVE_DEBUG_CHECKS=1: entry points also verify device-side index data (page tables, position
// ids) on the host before launching. Costs a synchronous copy per call; for debugging only.
bool debug_checks();
void set_debug_checks(bool enabled);

}  // namespace flashserve
