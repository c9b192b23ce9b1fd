// Status -> Python exception. The message is the entry point's own ("rmsnorm: weight: expected
// size 4096 (hidden) at dim 0, got shape [4000]"); the class carries the status code.
#include "errors.h"

#include <string>

namespace flashserve::python {
namespace {

// Owned by the module (added as attributes); the module is never unloaded, so borrowed pointers
// stay valid for the process.
PyObject* g_error = nullptr;
PyObject* g_invalid = nullptr;
PyObject* g_unsupported = nullptr;
PyObject* g_no_device = nullptr;
PyObject* g_cuda = nullptr;

PyObject* make_class(nb::module_& m, const char* name, PyObject* bases, const char* doc) {
  const std::string qualified = std::string("flashserve._C.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (cls == nullptr) throw nb::python_error();
  m.attr(name) = nb::handle(cls);
  return cls;
}

PyObject* class_for(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
      return g_invalid;
    case StatusCode::kUnsupported:
      return g_unsupported;
    case StatusCode::kNoDevice:
      return g_no_device;
    case StatusCode::kCudaError:
      return g_cuda;
    default:
      return g_error;
  }
}

}  // namespace

void register_errors(nb::module_& m) {
  g_error = make_class(m, "Error", PyExc_RuntimeError,
                       "Base class of the errors flashserve raises (a RuntimeError).");
  nb::object invalid_bases = nb::make_tuple(nb::handle(g_error), nb::handle(PyExc_ValueError));
  g_invalid = make_class(m, "InvalidArgumentError", invalid_bases.ptr(),
                         "An argument the op cannot accept; the message names the op, the "
                         "argument, what was expected and what was got.");
  nb::object unsupported_bases =
      nb::make_tuple(nb::handle(g_error), nb::handle(PyExc_NotImplementedError));
  g_unsupported = make_class(m, "UnsupportedError", unsupported_bases.ptr(),
                             "A valid request this build or device does not serve.");
  g_no_device = make_class(m, "NoDeviceError", g_error,
                           "No CUDA device, or the tensors' device is not usable.");
  g_cuda = make_class(m, "CudaError", g_error, "The CUDA runtime reported an error.");
}

void throw_if_error(const Status& st) {
  if (st.ok()) return;
  PyErr_SetString(class_for(st.code()), st.message().c_str());
  throw nb::python_error();
}

void throw_invalid(const char* op, const std::string& what) {
  PyErr_SetString(g_invalid, (std::string(op) + ": " + what).c_str());
  throw nb::python_error();
}

}  // namespace flashserve::python
