// Status: what every public entry point returns. Host only.
#pragma once

#include <string>
#include <utility>

namespace flashserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something the op cannot accept
  kUnsupported,      // a valid request this build or device does not serve
  kNoDevice,         // no CUDA device, or the tensors' device is not usable
  kCudaError,        // the CUDA runtime reported an error
  kInternal,
};

const char* status_code_name(StatusCode code);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: rmsnorm: input: expected ndim 2, got 3"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace flashserve
