#include "runtime/kernel_artifact.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "runtime/file_util.h"
#include "runtime/sha256.h"

namespace flashserve::runtime {
namespace {

constexpr char kMagic[8] = {'F', 'S', 'K', 'R', 'N', 'L', '0', '1'};
constexpr uint32_t kFormatVersion = 1;

void put_le(std::string& s, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<uint8_t>(s[at + i])} << (8 * i);
  return v;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? "," : "") + v[i];
  return s;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

const char* artifact_state_name(ArtifactState s) {
  switch (s) {
    case ArtifactState::kOk:
      return "ok";
    case ArtifactState::kMissing:
      return "missing";
    case ArtifactState::kTruncated:
      return "truncated";
    case ArtifactState::kCorrupt:
      return "corrupt (checksum mismatch)";
    case ArtifactState::kBadFormat:
      return "not a flashserve kernel file";
  }
  return "unknown";
}

std::string encode_artifact(const ArtifactInfo& info, const std::string& image) {
  std::ostringstream meta;
  meta << "name=" << info.name << "\n"
       << "key=" << info.key << "\n"
       << "arch=" << info.arch << "\n"
       << "entries=" << join(info.entries) << "\n"
       << "deps=" << join(info.deps) << "\n"
       << "library=" << info.library_version << "\n"
       << "compile_seconds=" << info.compile_seconds << "\n"
       << "created=" << info.created << "\n";
  const std::string m = meta.str();
  std::string out(kArtifactHeaderBytes, '\0');
  std::memcpy(&out[0], kMagic, 8);
  put_le(out, 8, kFormatVersion, 4);
  put_le(out, 12, m.size(), 4);
  put_le(out, 16, image.size(), 8);
  Sha256 h;
  h.update(m);
  h.update(image);
  const auto d = h.digest();
  std::memcpy(&out[24], d.data(), 32);
  out += m;
  out += image;
  return out;
}

ArtifactState decode_artifact(const std::string& bytes, ArtifactInfo* info, std::string* image) {
  if (bytes.size() < kArtifactHeaderBytes) {
    return bytes.size() >= 8 && std::memcmp(bytes.data(), kMagic, 8) == 0
               ? ArtifactState::kTruncated
               : ArtifactState::kBadFormat;
  }
  if (std::memcmp(bytes.data(), kMagic, 8) != 0 || get_le(bytes, 8, 4) != kFormatVersion)
    return ArtifactState::kBadFormat;
  const uint64_t m = get_le(bytes, 12, 4), n = get_le(bytes, 16, 8);
  const uint64_t expected = kArtifactHeaderBytes + m + n;
  if (bytes.size() < expected) return ArtifactState::kTruncated;
  if (bytes.size() > expected) return ArtifactState::kCorrupt;
  // Bytes 56..63 of the header are reserved (written as 0) and not hashed: a flipped bit there is
  // corruption too.
  for (size_t i = 24 + 32; i < static_cast<size_t>(kArtifactHeaderBytes); ++i) {
    if (bytes[i] != '\0') return ArtifactState::kCorrupt;
  }
  Sha256 h;
  h.update(bytes.data() + kArtifactHeaderBytes, m + n);
  const auto d = h.digest();
  if (std::memcmp(d.data(), bytes.data() + 24, 32) != 0) return ArtifactState::kCorrupt;
  if (info) {
    ArtifactInfo a;
    std::stringstream ss(bytes.substr(kArtifactHeaderBytes, m));
    std::string line;
    while (std::getline(ss, line)) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
      if (k == "name") a.name = v;
      if (k == "key") a.key = v;
      if (k == "arch") a.arch = v;
      if (k == "entries") a.entries = split_commas(v);
      if (k == "deps") a.deps = split_commas(v);
      if (k == "library") a.library_version = v;
      if (k == "compile_seconds") a.compile_seconds = std::atof(v.c_str());
      if (k == "created") a.created = std::atoll(v.c_str());
    }
    *info = std::move(a);
  }
  if (image) *image = bytes.substr(kArtifactHeaderBytes + m, n);
  return ArtifactState::kOk;
}

ArtifactState read_artifact(const std::string& path, ArtifactInfo* info, std::string* image) {
  std::string bytes;
  if (!read_file(path, &bytes)) return ArtifactState::kMissing;
  return decode_artifact(bytes, info, image);
}

}  // namespace flashserve::runtime
