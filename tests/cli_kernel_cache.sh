#!/usr/bin/env bash
# `flashserve compile` and `flashserve cache` on a scratch cache (needs nvcc, no GPU): a spec, a
# log, a bad preset, list, info, clear; then the installed CLI finds the installed kernel headers.
#   tests/cli_kernel_cache.sh <flashserve CLI> <build dir>
set -uo pipefail
cli=$1
build=$2
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "skipped: no nvcc"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export FLASHSERVE_CACHE_DIR=$tmp/cache
unset FLASHSERVE_CUDA_ARCH_LIST FLASHSERVE_DISABLE_JIT FLASHSERVE_FORCE_JIT
fail() { echo "FAIL: $*"; exit 1; }
expect() {  # expect <pattern> <text> <what>
  grep -qF -- "$1" <<<"$2" || fail "$3: expected '$1' in:"$'\n'"$2"
}

out=$("$cli" cache info 2>&1) || fail "cache info: exit $?"
expect "entries" "$out" "cache info"
expect "$tmp/cache" "$out" "cache info (root)"

out=$("$cli" compile --spec 'decode q=bf16 kv=fp8_e5m2 hd=64' --arch 90a -j 2 2>&1) ||
  fail "compile --spec: exit $?: $out"
expect "1 compiled, 0 already cached, 0 failed" "$out" "compile --spec"
expect "compiled" "$out" "compile --spec (progress)"

printf '%s\n' "[flashserve] decode_plan" \
  "[flashserve] kernel decode q=bf16 kv=fp8_e5m2 hd=64 sm_90a (compiled)" \
  "decode q=fp16 kv=fp16 hd=64" >"$tmp/run.log"
out=$("$cli" compile --from-log "$tmp/run.log" --arch 90a 2>&1) || fail "compile --from-log: $out"
expect "2 kernel specializations" "$out" "compile --from-log"
expect "1 compiled, 1 already cached" "$out" "compile --from-log"
expect "first-use cost:" "$out" "compile --from-log"

out=$("$cli" compile --preset llama2 2>&1)
[ $? -eq 2 ] || fail "unknown preset: expected exit 2"
expect "unknown kernel preset 'llama2' (known: all, default, llama3" "$out" "unknown preset"
out=$("$cli" compile --spec 'decode q=bf16 kv=fp16 hd=64' 2>&1)
[ $? -eq 2 ] || fail "bad spec: expected exit 2"
expect "kv: expected the q dtype" "$out" "bad spec"
out=$("$cli" compile --spec 'prefill q=bf16 hd=80 kind=causal kv=ragged' 2>&1)
[ $? -eq 2 ] || fail "bad prefill spec: expected exit 2"
expect "hd: expected 64, 96, 128, 192 or 256, got 80" "$out" "bad prefill spec"
out=$("$cli" compile --spec 'prefill q=bf16 hd=128 kind=causal' 2>&1)
[ $? -eq 2 ] || fail "prefill spec without kv: expected exit 2"
expect "missing field 'kv'" "$out" "prefill spec without kv"

# Headers that disagree with the library (here: the decode kernel's shared memory) fail to
# compile with the reason, instead of giving a kernel the library would launch wrongly.
cp -r "$(dirname "$0")/../include" "$tmp/inc"
sed -i 's|  return DecodeSmem<Tile>::kBytes;|  return DecodeSmem<Tile>::kBytes + 1024;|' \
  "$tmp/inc/flashserve/attention/decode_kernel.cuh"
grep -q 'kBytes + 1024' "$tmp/inc/flashserve/attention/decode_kernel.cuh" || fail "header edit"
out=$(FLASHSERVE_INCLUDE_DIR=$tmp/inc "$cli" compile --spec 'decode q=fp16 kv=fp16 hd=128' \
  --arch 90a 2>&1)
[ $? -ne 0 ] || fail "mismatched headers: expected a failure: $out"
expect "0 compiled, 0 already cached, 1 failed" "$out" "mismatched headers"
log=$(cat "$tmp"/cache/*/*/decode_q-fp16_kv-fp16_hd-128-*.fsk.log 2>/dev/null)
expect "these headers do not match the flashserve library" "$log" "mismatched headers (log)"
rm -f "$tmp"/cache/*/*/decode_q-fp16_kv-fp16_hd-128-*.fsk.log

out=$("$cli" cache list 2>&1) || fail "cache list"
expect "decode q=bf16 kv=fp8_e5m2 hd=64" "$out" "cache list"
expect "decode q=fp16 kv=fp16 hd=64" "$out" "cache list"
expect "2 entries" "$out" "cache list"
out=$("$cli" cache info --bench 2>&1) || fail "cache info --bench: $out"
expect "sm_90a: 2" "$out" "cache info"
expect "lookup:" "$out" "cache info --bench"
out=$("$cli" cache clear 2>&1) || fail "cache clear"
expect "removed" "$out" "cache clear"
out=$("$cli" cache list 2>&1)
expect "no kernel cache entries" "$out" "cache list after clear"

# The installed CLI (and library) find the installed headers, not the source tree.
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null 2>&1 || fail "cmake --install"
out=$("$tmp/prefix/bin/flashserve" cache info 2>&1) || fail "installed cache info: $out"
expect "headers:      $tmp/prefix/include" "$out" "installed headers"
echo "kernel cache CLI: ok"
