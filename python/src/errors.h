// The exception classes of flashserve._C, one per StatusCode, all derived from flashserve.Error
// (a RuntimeError). InvalidArgumentError is also a ValueError and UnsupportedError also a
// NotImplementedError, so callers that catch the builtin categories keep working.
#pragma once

#include "binding.h"

namespace flashserve::python {

// Creates the classes and adds them to the module. Called once from the module's init.
void register_errors(nb::module_& m);

}  // namespace flashserve::python
