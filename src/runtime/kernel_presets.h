// Named sets of kernel specializations (src/runtime/kernel_presets.txt, embedded at build time):
// what `flashserve compile --preset NAME` compiles and -DFLASHSERVE_PREBUILT_PRESET builds in.
#pragma once

#include <string>
#include <vector>

#include "flashserve/core/status.h"
#include "runtime/kernel_registry.h"

namespace flashserve::runtime {

struct KernelPreset {
  std::string name;
  std::string description;
  std::vector<std::string> specs;  // text form
};

// Parses the preset file format (kernel_presets.txt); malformed lines are skipped.
std::vector<KernelPreset> parse_presets(const std::string& text);
// The presets embedded in this library.
const std::vector<KernelPreset>& kernel_presets();

// The specs of preset `name` ("all": every specialization of every registered family), parsed
// by `registry`. The error names an unknown preset (and lists the known ones) or a bad line.
Status preset_specs(const KernelRegistry& registry, const std::string& name,
                    std::vector<KernelSpec>* specs);

}  // namespace flashserve::runtime
