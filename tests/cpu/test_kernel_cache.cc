// The on-disk kernel cache without a GPU (it needs nvcc, and skips without one): artifact format
// and checksum, the #include scanner, miss then hit, header edits invalidating exactly the
// dependent entries, corrupt and truncated artifacts rebuilt, a lock left by a killed process,
// FLASHSERVE_DISABLE_JIT. The compiled kernels are tiny synthetic ones (about a second each).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>

#include "jit_test_util.h"
#include "runtime/file_lock.h"
#include "runtime/file_util.h"
#include "runtime/include_scan.h"
#include "runtime/kernel_artifact.h"
#include "runtime/kernel_cache.h"
#include "runtime/sha256.h"

namespace fs_test {
namespace {

namespace rt = flashserve::runtime;

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s)
    c = static_cast<char>(rng());
  return s;
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(rt::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(rt::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(rt::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Streaming in odd pieces gives the one-shot digest.
  const std::string data =
      random_bytes(1000 + std::random_device{}() % 1000, std::random_device{}());
  rt::Sha256 h;
  for (size_t i = 0; i < data.size(); i += 7)
    h.update(data.substr(i, 7));
  EXPECT_EQ(h.hex(), rt::sha256_hex(data));
}

TEST(KernelArtifact, RoundTripAndEveryCorruption) {
  rt::ArtifactInfo info;
  info.name = "syn a";
  info.key = rt::sha256_hex("k");
  info.arch = "sm_90a";
  info.entries = {"k1", "k2"};
  info.deps = {"syn/a.h", "syn/common.h"};
  info.compile_seconds = 1.5;
  const std::string image = random_bytes(4097, std::random_device{}());
  const std::string file = rt::encode_artifact(info, image);
  rt::ArtifactInfo back;
  std::string img;
  ASSERT_EQ(rt::decode_artifact(file, &back, &img), rt::ArtifactState::kOk);
  EXPECT_EQ(img, image);
  EXPECT_EQ(back.name, info.name);
  EXPECT_EQ(back.key, info.key);
  EXPECT_EQ(back.entries, info.entries);
  EXPECT_EQ(back.deps, info.deps);
  EXPECT_DOUBLE_EQ(back.compile_seconds, 1.5);
  // Truncated anywhere, one flipped bit anywhere, trailing garbage, wrong magic.
  for (size_t cut :
       {size_t{0}, size_t{10}, size_t{63}, size_t{64}, file.size() / 2, file.size() - 1}) {
    const rt::ArtifactState s = rt::decode_artifact(file.substr(0, cut), nullptr, nullptr);
    EXPECT_NE(s, rt::ArtifactState::kOk) << "cut at " << cut;
  }
  EXPECT_EQ(rt::decode_artifact(file.substr(0, file.size() - 1), nullptr, nullptr),
            rt::ArtifactState::kTruncated);
  std::mt19937 rng(std::random_device{}());
  for (int i = 0; i < 20; ++i) {
    std::string bad = file;
    const size_t at = 24 + rng() % (bad.size() - 24);  // the hash, the metadata or the image
    bad[at] = static_cast<char>(bad[at] ^ (1 << (rng() % 8)));
    EXPECT_EQ(rt::decode_artifact(bad, nullptr, nullptr), rt::ArtifactState::kCorrupt) << at;
  }
  for (size_t at = 56; at < 64; ++at) {  // the header's reserved bytes (not hashed)
    std::string bad = file;
    bad[at] = static_cast<char>(bad[at] ^ 1);
    EXPECT_EQ(rt::decode_artifact(bad, nullptr, nullptr), rt::ArtifactState::kCorrupt) << at;
  }
  EXPECT_EQ(rt::decode_artifact(file + "x", nullptr, nullptr), rt::ArtifactState::kCorrupt);
  std::string magic = file;
  magic[0] = 'X';
  EXPECT_EQ(rt::decode_artifact(magic, nullptr, nullptr), rt::ArtifactState::kBadFormat);
}

TEST(IncludeScan, DirectivesAndTransitiveHeaders) {
  const auto d = rt::include_directives(
      "#include \"a.h\"\n  #  include <b/c.h>\n// #include \"x.h\" (a comment line)\n"
      "#define X\n#include\"d.h\" // trailing\n#includes \"no.h\"\n");
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0], "\"a.h");
  EXPECT_EQ(d[1], "<b/c.h");
  EXPECT_EQ(d[2], "\"d.h");

  ScratchCache s;
  s.write("syn/cycle.h", "#pragma once\n#include \"cycle2.h\"\n#include <cuda_runtime.h>\n");
  s.write("syn/cycle2.h", "#pragma once\n#include \"syn/cycle.h\"\n");
  rt::IncludeDeps deps;
  ASSERT_TRUE(rt::scan_includes("#include \"syn/a.h\"\n#include \"syn/cycle.h\"\n",
                                {{s.include_dir(), ""}}, &deps)
                  .ok());
  // Sorted root-relative paths; the includer-relative "cycle2.h" resolved; the toolkit header
  // (not in the root) not hashed; the cycle visited once.
  EXPECT_EQ(deps.files,
            (std::vector<std::string>{"syn/a.h", "syn/common.h", "syn/cycle.h", "syn/cycle2.h"}));
  const std::string before = deps.digest;
  s.append("syn/cycle2.h", "// edited\n");
  ASSERT_TRUE(rt::scan_includes("#include \"syn/a.h\"\n#include \"syn/cycle.h\"\n",
                                {{s.include_dir(), ""}}, &deps)
                  .ok());
  EXPECT_NE(deps.digest, before);
  // A versioned root is keyed by its version file, not scanned.
  s.write("lib/version.h", "#define LIB_VERSION 1\n");
  s.write("lib/big.h", "#include \"lib/other.h\"\n");
  rt::IncludeDeps v1, v2, v3;
  const std::vector<rt::IncludeRoot> roots = {{s.root + "/none", ""},
                                              {s.include_dir(), "lib/version.h"}};
  ASSERT_TRUE(rt::scan_includes("#include <lib/big.h>\n", roots, &v1).ok());
  EXPECT_TRUE(v1.files.empty());
  EXPECT_EQ(v1.versioned_roots.size(), 1u);
  s.append("lib/big.h", "// not keyed\n");
  ASSERT_TRUE(rt::scan_includes("#include <lib/big.h>\n", roots, &v2).ok());
  EXPECT_EQ(v1.digest, v2.digest);
  s.write("lib/version.h", "#define LIB_VERSION 2\n");
  ASSERT_TRUE(rt::scan_includes("#include <lib/big.h>\n", roots, &v3).ok());
  EXPECT_NE(v1.digest, v3.digest);
  s.remove();
}

TEST(JitConfig, ArchListAndEnvironment) {
  std::string err;
  EXPECT_EQ(rt::parse_arch_list("90a; sm_80,compute_100a 9.0a", &err),
            (std::vector<std::string>{"90a", "80", "100a"}));
  EXPECT_TRUE(err.empty());
  rt::parse_arch_list("90a;hopper", &err);
  EXPECT_NE(err.find("'hopper'"), std::string::npos) << err;
  EXPECT_EQ(rt::archs_for_device(90), std::vector<std::string>{"90a"});
  EXPECT_EQ(rt::archs_for_device(86), std::vector<std::string>{"86"});
  EXPECT_EQ(rt::arch_tag({"80", "90a"}), "sm_80+sm_90a");
  EXPECT_EQ(rt::entry_slug("decode q=bf16 kv=fp8_e4m3 hd=64"), "decode_q-bf16_kv-fp8_e4m3_hd-64");

  setenv("FLASHSERVE_JIT_DEBUG", "1", 1);
  setenv("FLASHSERVE_CACHE_DIR", "/tmp/fs-cache-test-root", 1);
  setenv("FLASHSERVE_CUDA_ARCH_LIST", "sm_90a;80", 1);
  const rt::JitConfig c = rt::JitConfig::from_environment();
  unsetenv("FLASHSERVE_JIT_DEBUG");
  unsetenv("FLASHSERVE_CACHE_DIR");
  unsetenv("FLASHSERVE_CUDA_ARCH_LIST");
  auto has = [&](const char* f) {
    for (const std::string& x : c.flags)
      if (x == f) return true;
    return false;
  };
  EXPECT_TRUE(has("-G"));
  EXPECT_FALSE(has("-DNDEBUG"));
  EXPECT_EQ(c.cache_root, "/tmp/fs-cache-test-root");
  EXPECT_EQ(c.archs, (std::vector<std::string>{"90a", "80"}));
  EXPECT_EQ(rt::cache_dir_for(c, c.archs),
            std::string("/tmp/fs-cache-test-root/") + c.library_version + "/sm_90a+sm_80");
  // The headers are found (the source tree here; the installed tree next to the library).
  EXPECT_TRUE(rt::file_exists(c.include_dir + "/flashserve/attention/decode_kernel.cuh"))
      << c.include_dir;
  const rt::JitConfig plain = rt::JitConfig::from_environment();
  bool release = false;
  for (const std::string& x : plain.flags)
    release |= x == "-DNDEBUG";
  EXPECT_TRUE(release);
}

class KernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (rt::JitConfig::from_environment().nvcc.empty()) GTEST_SKIP() << "skipped: no nvcc";
  }
  void TearDown() override { scratch_.remove(); }
  ScratchCache scratch_;
};

TEST_F(KernelCacheTest, MissThenHitCompilesOnce) {
  rt::JitConfig cfg = scratch_.config();
  cfg.verbose = true;
  rt::KernelCache cache(cfg);
  rt::EnsureResult r;
  testing::internal::CaptureStderr();
  const flashserve::Status st = cache.ensure(ScratchCache::source('a'), {"90a"}, {}, &r);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(r.compiled);
  EXPECT_EQ(r.found, rt::ArtifactState::kMissing);
  EXPECT_FALSE(r.image.empty());
  EXPECT_NE(r.image.find("syn_kernel_a"), std::string::npos);
  // The progress lines before and after, and (verbose) the compiler command.
  EXPECT_NE(err.find("[flashserve] compiling syn a sm_90a …\n"), std::string::npos) << err;
  EXPECT_NE(err.find("[flashserve] compiling syn a sm_90a … done in "), std::string::npos) << err;
  EXPECT_NE(err.find("-gencode=arch=compute_90a,code=sm_90a"), std::string::npos) << err;
  std::printf("  synthetic kernel compiled in %.2f s\n", r.compile_seconds);

  // Hits: this object, and a new one (another process), without compiling and without output.
  rt::EnsureResult again, other;
  testing::internal::CaptureStderr();
  ASSERT_TRUE(cache.ensure(ScratchCache::source('a'), {"90a"}, {}, &again).ok());
  rt::KernelCache fresh(scratch_.config());
  ASSERT_TRUE(fresh.ensure(ScratchCache::source('a'), {"90a"}, {}, &other).ok());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_FALSE(again.compiled);
  EXPECT_FALSE(other.compiled);
  EXPECT_EQ(again.image, r.image);
  EXPECT_EQ(other.image, r.image);
  EXPECT_EQ(cache.compiles() + fresh.compiles(), 1);
  EXPECT_EQ(rt::list_cache(scratch_.cache_dir()).size(), 1u);
  // Other targets are another entry.
  rt::CacheEntry e90, e80;
  ASSERT_TRUE(cache.locate(ScratchCache::source('a'), {"90a"}, &e90).ok());
  ASSERT_TRUE(cache.locate(ScratchCache::source('a'), {"80"}, &e80).ok());
  EXPECT_NE(e90.key, e80.key);
  EXPECT_NE(e90.dir, e80.dir);
}

TEST_F(KernelCacheTest, HeaderEditInvalidatesExactlyTheDependents) {
  auto key = [&](char which) {
    rt::KernelCache cache(scratch_.config());
    rt::CacheEntry e;
    EXPECT_TRUE(cache.locate(ScratchCache::source(which), {"90a"}, &e).ok());
    return e.key;
  };
  std::string a = key('a'), b = key('b');
  EXPECT_NE(a, b);
  scratch_.append("syn/common.h", "// edit of a header that only a.h includes\n");
  EXPECT_NE(key('a'), a);
  EXPECT_EQ(key('b'), b);
  a = key('a');
  scratch_.append("syn/b.h", "// edit\n");
  EXPECT_EQ(key('a'), a);
  EXPECT_NE(key('b'), b);
  b = key('b');
  scratch_.write("syn/unused.h", "#pragma once\n");  // included by nothing
  EXPECT_EQ(key('a'), a);
  EXPECT_EQ(key('b'), b);

  // End to end: both cached, then an edit of a.h rebuilds "syn a" only.
  {
    rt::KernelCache cache(scratch_.config());
    rt::EnsureResult r;
    rt::EnsureOptions quiet;
    quiet.quiet = true;
    ASSERT_TRUE(cache.ensure(ScratchCache::source('a'), {"90a"}, quiet, &r).ok());
    ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, quiet, &r).ok());
    EXPECT_EQ(cache.compiles(), 2);
  }
  scratch_.append("syn/a.h", "__device__ inline float syn_a2(float x) { return x; }\n");
  rt::KernelCache cache(scratch_.config());
  rt::EnsureResult ra, rb;
  rt::EnsureOptions quiet;
  quiet.quiet = true;
  ASSERT_TRUE(cache.ensure(ScratchCache::source('a'), {"90a"}, quiet, &ra).ok());
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, quiet, &rb).ok());
  EXPECT_TRUE(ra.compiled);
  EXPECT_FALSE(rb.compiled);
  EXPECT_EQ(cache.compiles(), 1);
}

TEST_F(KernelCacheTest, CorruptAndTruncatedArtifactsAreRebuilt) {
  rt::KernelCache cache(scratch_.config());
  rt::EnsureResult r;
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, {}, &r).ok());
  std::string file;
  ASSERT_TRUE(rt::read_file(r.path, &file));
  const std::string good_image = r.image;
  std::mt19937 rng(std::random_device{}());

  // One flipped byte in the image: detected, reported, rebuilt, never loaded.
  std::string bad = file;
  const size_t at = file.size() - 1 - rng() % good_image.size();
  bad[at] = static_cast<char>(bad[at] ^ 0x5a);
  ASSERT_TRUE(rt::write_file_atomic(r.path, r.path + ".w", bad).ok());
  rt::EnsureResult r2;
  testing::internal::CaptureStderr();
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, {}, &r2).ok());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r2.found, rt::ArtifactState::kCorrupt);
  EXPECT_TRUE(r2.compiled);
  // Rebuilt from the same source: the same image, up to the headers' mtimes in the line info.
  EXPECT_EQ(r2.image.size(), good_image.size());
  EXPECT_NE(r2.image.find("syn_kernel_b"), std::string::npos);
  EXPECT_NE(err.find("corrupt (checksum mismatch); rebuilding"), std::string::npos) << err;

  // Truncated (a crash or a full disk mid-write).
  ASSERT_TRUE(rt::write_file_atomic(r.path, r.path + ".w", file.substr(0, file.size() / 3)).ok());
  rt::EnsureResult r3;
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, {}, &r3).ok());
  EXPECT_EQ(r3.found, rt::ArtifactState::kTruncated);
  EXPECT_TRUE(r3.compiled);
  EXPECT_EQ(r3.image.size(), good_image.size());
  EXPECT_EQ(cache.compiles(), 3);
  std::string now;
  ASSERT_TRUE(rt::read_file(r.path, &now));
  EXPECT_EQ(rt::decode_artifact(now, nullptr, nullptr), rt::ArtifactState::kOk);
}

TEST_F(KernelCacheTest, LockOfAKilledProcessIsReleased) {
  rt::KernelCache cache(scratch_.config());
  rt::CacheEntry e;
  ASSERT_TRUE(cache.locate(ScratchCache::source('a'), {"90a"}, &e).ok());
  ASSERT_TRUE(rt::make_dirs(e.dir).ok());
  const std::string stale_tmp = e.path + ".tmp.999999.0";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // A compiler holding the entry's lock, half-way through writing its artifact.
    rt::FileLock lock;
    if (!lock.open(e.path + ".lock").ok() || !lock.lock().ok()) ::_exit(1);
    rt::write_file_atomic(stale_tmp, stale_tmp + ".w", "half an artifact");
    if (::write(ready[1], "x", 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  rt::FileLock probe;
  ASSERT_TRUE(probe.open(e.path + ".lock").ok());
  EXPECT_FALSE(probe.try_lock()) << "the child holds the lock";
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status));
  // The kernel released it with the process: no stale-lock timeout to wait out.
  EXPECT_TRUE(probe.try_lock());
  probe.unlock();
  EXPECT_TRUE(rt::file_exists(stale_tmp));
  rt::EnsureResult r;
  testing::internal::CaptureStderr();
  ASSERT_TRUE(cache.ensure(ScratchCache::source('a'), {"90a"}, {}, &r).ok());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(r.compiled);
  EXPECT_FALSE(r.waited) << err;
  EXPECT_FALSE(rt::file_exists(stale_tmp)) << "the dead writer's temporary file is removed";
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_F(KernelCacheTest, DisabledJitNamesTheKernelAndTheCommand) {
  rt::JitConfig cfg = scratch_.config();
  cfg.disabled = true;
  rt::KernelCache cache(cfg);
  rt::EnsureOptions opt;
  opt.build_command = "flashserve compile --spec 'syn b' --arch '90a'";
  rt::EnsureResult r;
  const flashserve::Status st = cache.ensure(ScratchCache::source('b'), {"90a"}, opt, &r);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("kernel syn b sm_90a"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("FLASHSERVE_DISABLE_JIT"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(opt.build_command), std::string::npos) << st.message();
  EXPECT_EQ(cache.compiles(), 0);
  // An explicit request compiles; afterwards the cached entry serves even with the JIT disabled.
  opt.explicit_request = true;
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, opt, &r).ok());
  EXPECT_TRUE(r.compiled);
  opt.explicit_request = false;
  rt::EnsureResult hit;
  ASSERT_TRUE(cache.ensure(ScratchCache::source('b'), {"90a"}, opt, &hit).ok());
  EXPECT_FALSE(hit.compiled);
  EXPECT_EQ(hit.image, r.image);
}

TEST_F(KernelCacheTest, CompileErrorIsReportedWithTheCompilerOutput) {
  rt::KernelCache cache(scratch_.config());
  rt::KernelSource bad = ScratchCache::source('a');
  bad.name = "syn broken";
  bad.code += "this is not C++;\n";
  rt::EnsureResult r;
  rt::EnsureOptions quiet;
  quiet.quiet = true;
  const flashserve::Status st = cache.ensure(bad, {"90a"}, quiet, &r);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInternal);
  EXPECT_NE(st.message().find("compiling kernel syn broken sm_90a failed"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("error"), std::string::npos) << st.message();
  rt::CacheEntry e;
  ASSERT_TRUE(cache.locate(bad, {"90a"}, &e).ok());
  EXPECT_FALSE(rt::file_exists(e.path));
  EXPECT_TRUE(rt::file_exists(e.path + ".log"));
}

}  // namespace
}  // namespace fs_test
