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

__device__ __forceinline__ uint64_t warp_inclusive_scan(uint64_t x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint64_t y = __shfl_up_sync(0xffffffffu, x, d);
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

// The 16 bytes at `p` (16-byte aligned, this CTA's shared memory) in CTA `rank` of the cluster:
// one shared::cluster load (a generic load through map_shared_rank costs an address conversion and
// a generic access each). volatile keeps it after the cluster barrier that publishes the data;
// the load itself does not block until its result is used, so several can be in flight.
__device__ __forceinline__ uint4 load_remote_v4(const void* p, unsigned rank) {
  const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  uint4 v;
  asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(remote)
               : "memory");
  return v;
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
