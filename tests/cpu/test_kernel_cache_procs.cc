// Eight processes (the ranks of a tensor-parallel engine starting together) ask for the same
// uncached kernel at once: it is compiled exactly once, the others wait for it (and say so) and
// all get the same image. The processes are copies of tests/jit_helper.cc.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "jit_test_util.h"
#include "runtime/file_util.h"
#include "runtime/kernel_artifact.h"
#include "runtime/sha256.h"

extern char** environ;

namespace fs_test {
namespace {

namespace rt = flashserve::runtime;

TEST(KernelCacheProcesses, EightProcessesCompileOnce) {
  if (rt::JitConfig::from_environment().nvcc.empty()) GTEST_SKIP() << "skipped: no nvcc";
  const std::string helper = FLASHSERVE_JIT_HELPER;
  ASSERT_TRUE(rt::is_executable(helper)) << helper;
  ScratchCache scratch;
  const std::string go = scratch.root + "/go";
  constexpr int kProcs = 8;
  std::vector<pid_t> pids;
  for (int i = 0; i < kProcs; ++i) {
    const std::string out = scratch.root + "/out" + std::to_string(i);
    const std::string err = scratch.root + "/err" + std::to_string(i);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv = {const_cast<char*>(helper.c_str()),
                               const_cast<char*>(scratch.root.c_str()),
                               const_cast<char*>(go.c_str()), nullptr};
    pid_t pid = -1;
    ASSERT_EQ(::posix_spawn(&pid, helper.c_str(), &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  ASSERT_TRUE(rt::write_file_atomic(go, go + ".w", "go").ok());
  int compiled = 0, waited = 0, failed = 0;
  std::vector<std::string> images;
  std::string waiting_lines;
  for (int i = 0; i < kProcs; ++i) {
    int status = 0;
    ASSERT_EQ(::waitpid(pids[i], &status, 0), pids[i]);
    std::string out, err;
    rt::read_file(scratch.root + "/out" + std::to_string(i), &out);
    rt::read_file(scratch.root + "/err" + std::to_string(i), &err);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      ADD_FAILURE() << "process " << i << " failed: " << err;
      continue;
    }
    int c = 0, w = 0;
    char sha[65] = {};
    ASSERT_EQ(std::sscanf(out.c_str(), "compiled=%d waited=%d image=%64s", &c, &w, sha), 3) << out;
    compiled += c;
    waited += w;
    images.push_back(sha);
    if (w) waiting_lines += err;
  }
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(compiled, 1) << "exactly one process runs the compiler";
  ASSERT_EQ(images.size(), size_t{kProcs});
  for (const std::string& s : images)
    EXPECT_EQ(s, images[0]);
  // The image on disk is the one they all got.
  const std::vector<rt::CacheListing> entries = rt::list_cache(scratch.cache_dir());
  ASSERT_EQ(entries.size(), 1u);
  std::string image;
  ASSERT_EQ(rt::read_artifact(entries[0].path, nullptr, &image), rt::ArtifactState::kOk);
  EXPECT_EQ(rt::sha256_hex(image), images[0]);
  // Waiters said that they wait.
  if (waited > 0) {
    EXPECT_NE(waiting_lines.find("waiting for syn a sm_90a: another process is compiling it"),
              std::string::npos)
        << waiting_lines;
  }
  std::printf("  %d processes: 1 compiled, %d waited, %d found it done\n", kProcs, waited,
              kProcs - 1 - waited);
  scratch.remove();
}

}  // namespace
}  // namespace fs_test
