#include <cstdio>
#include <cstring>

#include "flashserve/flashserve.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "info") == 0) {
    std::printf("flashserve %s\n", flashserve::version());
    return 0;
  }
  int count = 0;
  flashserve::Status st = flashserve::device_count(&count);
  if (!st.ok()) {
    std::fprintf(stderr, "flashserve bench: %s; the benchmarks need an NVIDIA GPU\n",
                 st.message().c_str());
    return 1;
  }
  return 0;
}
