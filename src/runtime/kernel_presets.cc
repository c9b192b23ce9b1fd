#include "runtime/kernel_presets.h"

#include <sstream>

#include "runtime/kernel_presets_text.h"

namespace flashserve::runtime {
namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<KernelPreset> parse_presets(const std::string& text) {
  std::vector<KernelPreset> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("preset ", 0) == 0) {
      const size_t colon = line.find(':');
      KernelPreset p;
      p.name = trim(line.substr(7, colon == std::string::npos ? std::string::npos : colon - 7));
      if (colon != std::string::npos) p.description = trim(line.substr(colon + 1));
      if (!p.name.empty()) out.push_back(p);
    } else if (!out.empty()) {
      out.back().specs.push_back(line);
    }
  }
  return out;
}

const std::vector<KernelPreset>& kernel_presets() {
  static const std::vector<KernelPreset> presets = parse_presets(kKernelPresetsText);
  return presets;
}

Status preset_specs(const KernelRegistry& registry, const std::string& name,
                    std::vector<KernelSpec>* specs) {
  specs->clear();
  if (name == "all") {
    for (int id = 0; id < registry.family_count(); ++id) {
      const KernelFamily& f = registry.family(id);
      if (!f.enumerate) continue;
      for (KernelSpec s : f.enumerate()) {
        s.family = static_cast<int16_t>(id);
        specs->push_back(s);
      }
    }
    return Status();
  }
  std::string known = "all";
  for (const KernelPreset& p : kernel_presets()) {
    known += ", " + p.name;
    if (p.name != name) continue;
    for (const std::string& text : p.specs) {
      KernelSpec s;
      Status st = registry.parse(text, &s);
      if (!st.ok()) return Status(st.code(), "preset " + name + ": " + st.message());
      bool dup = false;
      for (const KernelSpec& o : *specs)
        dup |= o == s;
      if (!dup) specs->push_back(s);
    }
    return Status();
  }
  return Status(StatusCode::kInvalidArgument,
                "unknown kernel preset '" + name + "' (known: " + known + ")");
}

}  // namespace flashserve::runtime
