"""``python -m flashserve info | bench [args...]``, mirroring the ``flashserve`` CLI.

``info`` prints the package, build and device facts from the Python module (no torch needed);
``bench`` runs the C++ CLI installed with the package, so its figures are the C++ benchmark's.
"""

import os
import sys

from . import _C, runtime

_USAGE = """usage: python -m flashserve <command> [args]
  info            package, build and device facts, supported ops
  bench [args]    the C++ benchmark (`flashserve bench --help` lists its options)
"""


def info() -> int:
    import flashserve

    b = runtime.build_info()
    print(f"flashserve {flashserve.__version__} ({b['build_type']} build), Python package at")
    print(f"  {os.path.dirname(os.path.abspath(flashserve.__file__))}")
    print(f"  binding: {b['python_abi']}, nanobind {b['nanobind']}")
    print(f"  built with CUDA {b['cuda_version']} for sm_{b['cuda_archs']}")
    try:
        import torch

        print(f"  torch {torch.__version__} (CUDA {torch.version.cuda})")
    except ImportError:
        print("  torch: not installed (the ops need it; info and bench do not)")
    count = runtime.device_count()
    if count == 0:
        print("device: none")
    for d in range(count):
        try:
            i = runtime.device_info(d)
        except _C.Error as e:
            print(f"device {d}: {e}")
            continue
        major, minor = i["compute_capability"]
        print(
            f"device {d}: {i['name']}, sm_{major}{minor}, {i['sm_count']} SMs, "
            f"L2 {i['l2_bytes'] / 1e6:.0f} MB, {i['global_mem_bytes'] / 2**30:.1f} GiB, "
            f"driver {i['driver_version']}, runtime {i['runtime_version']}"
        )
        if major != 9:
            print(
                "  warning: flashserve kernels are built for Hopper (sm_90a); "
                "this device cannot run them"
            )
    print("ops (flashserve.<name>, torch.ops.flashserve.*):")
    for family, names in flashserve._TORCH_API.items():
        print(f"  {family:10s} {', '.join(names)}")
    cli = runtime.cli_path()
    print(f"CLI: {cli if cli else 'not installed with this package (built without the bench)'}")
    return 0


def bench(args) -> int:
    cli = runtime.cli_path()
    if cli is None:
        print(
            "flashserve bench: the CLI was not installed with this package (built with "
            "FLASHSERVE_BUILD_BENCH=OFF); rebuild with the default options",
            file=sys.stderr,
        )
        return 1
    sys.stdout.flush()
    os.execv(cli, [cli, "bench", *args])
    return 1  # not reached


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "info":
        return info()
    if argv[0] == "bench":
        return bench(argv[1:])
    print(f"unknown command {argv[0]!r}\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
