#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*.cc) with ASan and UBSan into
# build/fuzz/, compiling the parser sources directly (not the Node addon).
# CXX overrides the compiler (default: clang++-14, else clang++).
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX:-$(command -v clang++-14 || command -v clang++ || true)}
if [ -z "$CXX" ]; then
  echo "fuzz: clang++ not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi
out=build/fuzz
mkdir -p "$out/obj"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  -Wall -Wextra -Inative)

# The parsers and what they need (zlib from the system, zstd loaded at run
# time); no Node-API code.
sources=(native/fat/*.cc native/part/partition.cc native/io/io_error.cc native/qcow2/image.cc native/qcow2/chain.cc native/copy/zstd.cc)
objects=()
pids=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(echo "${src%.cc}" | tr / _).o"
  objects+=("$obj")
  # Rebuild when the source or any parser header is newer than the object.
  if [ ! -f "$obj" ] || [ -n "$(find "$src" native/fat native/part native/io native/qcow2 native/copy -newer "$obj" -name '*.[ch]*' -print -quit)" ]; then
    # -fsanitize=fuzzer-no-link: coverage for the parsers, libFuzzer's main only in the harnesses.
    "$CXX" "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -c "$src" -o "$obj" &
    pids+=($!)
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
for harness in fuzz/*.cc; do
  name=$(basename "${harness%.cc}")
  "$CXX" "${flags[@]}" "$harness" "${objects[@]}" -lz -ldl -o "$out/$name" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "fuzz: built $(ls fuzz/*.cc | wc -l) harnesses in $out"
