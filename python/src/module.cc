// flashserve._C: the module's init, library facts (version, build, devices) and switches (logging,
// debug checks). The op families add themselves through Registration (binding.h).
#include <nanobind/stl/string.h>

#include <string>

#include "binding.h"
#include "errors.h"

namespace flashserve::python {
namespace {

nb::dict build_info_dict() {
  const BuildInfo b = build_info();
  nb::dict d;
  d["version"] = b.version;
  d["build_type"] = b.build_type;
  d["cuda_version"] = b.cuda_version;
  d["cuda_archs"] = b.cuda_archs;
  d["cuda_flags"] = b.cuda_flags;
  d["cxx_flags"] = b.cxx_flags;
  return d;
}

// Facts about the binding itself, for `python -m flashserve info`.
nb::dict binding_info() {
  nb::dict d;
#ifdef Py_LIMITED_API
  d["python_abi"] = "abi3 (stable ABI, Python >= 3.12)";
#else
  d["python_abi"] = "cp" + std::to_string(PY_MAJOR_VERSION) + std::to_string(PY_MINOR_VERSION);
#endif
  d["nanobind"] = std::to_string(NB_VERSION_MAJOR) + "." + std::to_string(NB_VERSION_MINOR) + "." +
                  std::to_string(NB_VERSION_PATCH);
  return d;
}

int count_devices() {
  int count = 0;
  // No device is an answer here (0), not an error: `flashserve info` must work on any machine.
  return device_count(&count).ok() ? count : 0;
}

nb::dict device_info_dict(int device) {
  DeviceInfo info;
  throw_if_error(get_device_info(device, &info));
  nb::dict d;
  d["ordinal"] = info.ordinal;
  d["name"] = info.name;
  d["compute_capability"] = nb::make_tuple(info.cc_major, info.cc_minor);
  d["sm_count"] = info.sm_count;
  d["l2_bytes"] = info.l2_bytes;
  d["global_mem_bytes"] = info.global_mem_bytes;
  d["max_smem_per_block_optin"] = info.max_smem_per_block_optin;
  d["driver_version"] = info.driver_version;
  d["runtime_version"] = info.runtime_version;
  return d;
}

void set_destination(const std::string& destination) {
  if (!set_log_destination(destination)) {
    throw_invalid("set_log_destination",
                  "destination: cannot open '" + destination + "' for appending");
  }
}

}  // namespace
}  // namespace flashserve::python

NB_MODULE(_C, m) {
  namespace fp = flashserve::python;
  namespace nb = nanobind;
  m.doc() =
      "flashserve's C++ API over DLPack arrays. Thin and unchecked beyond the C++ API's own "
      "validation: use the flashserve package (torch tensors, custom ops) rather than this.";
  // torch.library keeps the ops (and through them these functions) alive until interpreter
  // teardown, after nanobind's leak check runs: its report would be noise, not a leak.
  nb::set_leak_warnings(false);
  fp::register_errors(m);
  m.def(
      "version", [] { return std::string(flashserve::version()); },
      "The library version, e.g. '0.1.0'.");
  m.def("build_info", &fp::build_info_dict,
        "How the library was built: version, build type, CUDA version, architectures, flags.");
  m.def("binding_info", &fp::binding_info, "The Python ABI and nanobind version of this module.");
  m.def("device_count", &fp::count_devices, "Number of CUDA devices (0 when there is none).");
  m.def("device_info", &fp::device_info_dict, nb::arg("device"),
        "Name, compute capability, SMs, L2, memory, driver and runtime versions of a device. "
        "Raises NoDeviceError when it does not exist.");
  m.def("log_level", &flashserve::log_level, "API log level (FLASHSERVE_LOGLEVEL): 0, 1, 3 or 5.");
  m.def("set_log_level", &flashserve::set_log_level, nb::arg("level"),
        "0 off, 1 op names, 3 arguments, 5 also output statistics (synchronizes).");
  m.def("set_log_destination", &fp::set_destination, nb::arg("destination"),
        "'stdout', 'stderr' or a file path (appended to).");
  m.def("debug_checks", &flashserve::debug_checks,
        "Whether entry points verify device index data on the host (FLASHSERVE_DEBUG_CHECKS).");
  m.def("set_debug_checks", &flashserve::set_debug_checks, nb::arg("enabled"));
  fp::run_binders(m);
}
