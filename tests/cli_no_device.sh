#!/usr/bin/env bash
# Without a CUDA device, `flashserve bench` prints one line saying so and exits non-zero (no stack
# trace), while `flashserve info` still works. Skipped (exit 77) where a device exists.
cli=$1
if nvidia-smi -L >/dev/null 2>&1; then
  echo "a CUDA device is present: skipping the no-device check"
  exit 77
fi
"$cli" info >/dev/null 2>&1 || { echo "flashserve info failed without a device"; exit 1; }
out=$("$cli" bench 2>&1)
rc=$?
lines=$(printf '%s\n' "$out" | grep -c .)
if [ "$rc" -eq 0 ] || [ "$lines" -ne 1 ] || ! printf '%s' "$out" | grep -q "no CUDA device"; then
  echo "expected one line mentioning 'no CUDA device' and a non-zero exit; got exit $rc:"
  printf '%s\n' "$out"
  exit 1
fi
echo "ok: $out"
