// SHA-256 (FIPS 180-4) for the kernel cache: entry keys (source + headers + flags + arch +
// version) and the checksum every artifact carries. A cryptographic hash because keys of many
// near-identical sources (one template argument apart) must never collide; about 300 MB/s here,
// so verifying a 0.5 MB cubin costs ~2 ms of the 50 ms load budget.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flashserve::runtime {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t bytes);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::array<uint8_t, 32> digest();
  std::string hex();  // 64 lowercase hex digits

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);

}  // namespace flashserve::runtime
