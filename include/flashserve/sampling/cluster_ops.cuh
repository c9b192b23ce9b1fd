// Warp, block and thread-block-cluster collectives used by the sampling kernels: integer scans and
// reductions, so that every CTA of a cluster computes bit-identical results (no float atomics,
// no order-dependent sums anywhere in the filters).
//
// Cluster exchanges go through one __shared__ slot per CTA, read by the other CTAs through
// distributed shared memory after a cluster barrier. A slot is written once per kernel: reusing it
// would race with a slower CTA still reading the previous value. Kernels end with a cluster barrier
// so that no CTA exits while another may still read its shared memory.
#pragma once

#include <cooperative_groups.h>

#include <cstdint>

#include "flashserve/core/cp_async.cuh"

namespace flashserve::sampling {

namespace cg = cooperative_groups;

struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};
struct MinOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a < b ? a : b;
  }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T x, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Inclusive prefix over the lanes in lane order (Hillis-Steele); integers or floats.
template <class T>
__device__ __forceinline__ T warp_inclusive_scan(T x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, d);
    if (lane >= d) x += y;
  }
  return x;
}

// op over all threads of the block (blockDim.x a multiple of 32); every thread gets the result.
// scratch: 32 values, free again when the call returns.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T x, T* scratch, Op op, T identity) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = warp_reduce(x, op);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : identity;
  x = warp_reduce(x, op);
  __syncthreads();
  return x;
}

// Exclusive prefix sum over the threads of the block in thread order; `total` gets the block's
// sum. scratch: 33 values, free again when the call returns.
__device__ __forceinline__ uint64_t block_exclusive_scan(uint64_t x, uint64_t* scratch,
                                                         uint64_t& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint64_t incl = warp_inclusive_scan(x);
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const uint64_t w = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : 0;
    const uint64_t w_incl = warp_inclusive_scan(w);
    scratch[lane] = w_incl - w;
    if (lane == 31) scratch[32] = w_incl;
  }
  __syncthreads();
  const uint64_t excl = scratch[warp] + incl - x;
  total = scratch[32];
  __syncthreads();
  return excl;
}

// op over one value per CTA of the cluster (`x` as seen by thread 0); every thread of every CTA
// gets the result. `slot` (written once per kernel) and `result` are __shared__.
template <class T, class Op>
__device__ __forceinline__ T cluster_reduce(T x, T* slot, T* result, Op op, T identity) {
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) *slot = x;
  cluster.sync();
  if (threadIdx.x < 32) {
    T v = identity;
    for (unsigned r = threadIdx.x; r < cluster.num_blocks(); r += 32)
      v = op(v, *cluster.map_shared_rank(slot, r));
    v = warp_reduce(v, op);
    if (threadIdx.x == 0) *result = v;
  }
  __syncthreads();
  return *result;
}

// Pushes through distributed shared memory signalled on the receiver's mbarrier: the sender
// writes with st.async, whose completion counts the bytes on the receiving CTA's barrier (no
// cluster barrier, no fence: the receiver waits for the expected byte count on its own barrier).
// Its initialization (with the bytes it expects) must reach the other CTAs before their first
// push: init, then fence_mbarrier_init(), then a cluster barrier arrival that the senders wait
// for before pushing. A barrier used for several phases is re-armed by its own CTA after each
// wait (mbar_rearm_bytes); the protocol must keep the next phase's pushes from starting before
// every waiter of the current one has seen it complete.

// The shared::cluster address of `p` (this CTA's shared memory) in CTA `rank`.
__device__ __forceinline__ uint32_t cluster_addr(const void* p, unsigned rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(remote)
               : "r"(smem_addr(p)), "r"(rank));
  return remote;
}

// An mbarrier for one arrival (made here) and `bytes` of pushes: its phase 0 completes once that
// many bytes have been pushed into this CTA.
__device__ __forceinline__ void mbar_init_bytes(unsigned long long* bar, uint32_t bytes) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
  asm volatile(
      "mbarrier.arrive.expect_tx.relaxed.cta.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
      "r"(bytes)
      : "memory");
}

// The next phase of an mbarrier set up by mbar_init_bytes: its one arrival, expecting `bytes` more
// (pushes that arrived before it already count: the pending byte count may go negative).
__device__ __forceinline__ void mbar_rearm_bytes(unsigned long long* bar, uint32_t bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.relaxed.cta.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
      "r"(bytes)
      : "memory");
}

__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// 16 bytes into CTA `rank`'s copy of `dst`, counted on its copy of `bar` (16- and 8-byte aligned,
// in this CTA's shared memory layout). A cluster of one CTA (n == 1) stores locally instead: the
// pushes need a cluster of at least 2 CTAs; the caller then skips the barrier (push_wait).
__device__ __forceinline__ void push_v4(void* dst, uint4 v, unsigned long long* bar, unsigned rank,
                                        unsigned n) {
  if (n == 1) {
    *static_cast<uint4*>(dst) = v;
    return;
  }
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, "
      "[%5];" ::"r"(cluster_addr(dst, rank)),
      "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(cluster_addr(bar, rank))
      : "memory");
}

// 4 bytes, as push_v4.
__device__ __forceinline__ void push_b32(void* dst, uint32_t v, unsigned long long* bar,
                                         unsigned rank, unsigned n) {
  if (n == 1) {
    *static_cast<uint32_t*>(dst) = v;
    return;
  }
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(
                   cluster_addr(dst, rank)),
               "r"(v), "r"(cluster_addr(bar, rank))
               : "memory");
}

// An mbarrier expecting `arrivals` arrivals, each of which announces the bytes it pushes
// (arrive_expect_remote): for pushes whose sizes the receiver does not know.
__device__ __forceinline__ void mbar_init_arrivals(unsigned long long* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals)
               : "memory");
}

// One arrival on CTA `rank`'s copy of `bar`, announcing `bytes` of pushes (relaxed: the pushes
// themselves are counted by their completion).
__device__ __forceinline__ void arrive_expect_remote(unsigned long long* bar, uint32_t bytes,
                                                     unsigned rank) {
  asm volatile("mbarrier.arrive.expect_tx.relaxed.cluster.shared::cluster.b64 _, [%0], %1;" ::"r"(
                   cluster_addr(bar, rank)),
               "r"(bytes)
               : "memory");
}

// Waits for phase `parity` of this CTA's `bar` (acquire at cluster scope: the pushes came from
// other CTAs).
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (done == 0u);
}

// Waits for the pushes of a cluster of n CTAs into this one, by a warp that reads them next (a
// lone CTA's own stores: a warp barrier).
__device__ __forceinline__ void push_wait(unsigned long long* bar, unsigned n) {
  if (n > 1) {
    mbar_wait(bar, 0u);
  } else {
    __syncwarp();
  }
}

// Prefetches [p, p + bytes) into L2 (16-byte aligned, a multiple of 16 bytes), by one thread.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

struct ClusterPrefix {
  uint64_t before;  // sum over the CTAs of lower rank
  uint64_t total;   // sum over the cluster
};

// Exclusive prefix over the cluster's CTAs in rank order (at most 32 CTAs). `slot` is written once
// per kernel; `result` holds two values.
__device__ __forceinline__ ClusterPrefix cluster_exclusive_scan(uint64_t x, uint64_t* slot,
                                                                uint64_t* result) {
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) *slot = x;
  cluster.sync();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const uint64_t v =
        lane < static_cast<int>(cluster.num_blocks()) ? *cluster.map_shared_rank(slot, lane) : 0;
    const uint64_t incl = warp_inclusive_scan(v);
    const uint64_t before = __shfl_sync(0xffffffffu, incl - v, cluster.block_rank());
    if (lane == 31) {
      result[0] = before;
      result[1] = incl;
    }
  }
  __syncthreads();
  return {result[0], result[1]};
}

}  // namespace flashserve::sampling
