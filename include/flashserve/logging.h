// API logging. Read from the environment at first use, or set here:
//   FLASHSERVE_LOGLEVEL  0 off (a single cached-integer test per call) | 1 op names |
//                        3 arguments (shape, dtype, strides, scalars), written before the launch
//                          so a crash leaves a record | 5 also tensor statistics with NaN/Inf
//                          counts (synchronizes the stream; skipped while a graph is captured)
//   FLASHSERVE_LOGDEST   stdout | stderr (default) | a file path (appended to)
#pragma once

#include <string>

namespace flashserve {

int log_level();
void set_log_level(int level);
// "stdout", "stderr" or a file path. Returns false when the file cannot be opened.
bool set_log_destination(const std::string& destination);

}  // namespace flashserve
