// The on-disk form of one kernel cache entry: a fixed header, a short metadata text and the
// compiled image (a fatbin of cubins), with the lengths and a SHA-256 of both in the header.
//
//   offset  size  field
//        0     8  magic "FSKRNL01"
//        8     4  format version (little endian)
//       12     4  metadata bytes M
//       16     8  image bytes N
//       24    32  sha256(metadata || image)
//       56     8  reserved (0)
//       64     M  metadata: "key=value" lines (name, key, arch, entries, compile_seconds, ...)
//     64+M     N  image, as cuLibraryLoadData takes it
//
// A file whose size is not exactly 64 + M + N (truncated by a crash or a full disk) or whose hash
// does not match is never loaded: the cache rebuilds it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flashserve::runtime {

struct ArtifactInfo {
  std::string name;                  // "decode q=bf16 kv=bf16 hd=128"
  std::string key;                   // sha256 hex of everything the image depends on
  std::string arch;                  // "sm_90a"
  std::vector<std::string> entries;  // extern "C" kernels in the image
  std::vector<std::string> deps;     // headers it was built from (root-relative)
  std::string library_version;
  double compile_seconds = 0;
  int64_t created = 0;  // unix time
};

enum class ArtifactState { kOk, kMissing, kTruncated, kCorrupt, kBadFormat };
const char* artifact_state_name(ArtifactState s);

constexpr int kArtifactHeaderBytes = 64;

std::string encode_artifact(const ArtifactInfo& info, const std::string& image);
// Parses and verifies `bytes` (a whole file). `image` may be null (metadata only, still verified).
ArtifactState decode_artifact(const std::string& bytes, ArtifactInfo* info, std::string* image);
ArtifactState read_artifact(const std::string& path, ArtifactInfo* info, std::string* image);

}  // namespace flashserve::runtime
