#!/usr/bin/env bash
# npm run fuzz: builds the harnesses (fuzz/build.sh), makes the seed corpus
# (fuzz/make-corpus.mjs) when missing, replays fuzz/regressions/<harness>/,
# then fuzzes each harness for FUZZ_SECONDS (default 30) seconds. Then the
# TypeScript fuzzer of the repository readers (fuzz/repo-readers.fuzz.ts, run
# by vitest; harness name repo_readers) replays fuzz/regressions/repo_readers/
# and mutates manifests, indexes and catalogs for FUZZ_SECONDS.
# Exits non-zero on any finding; the input is saved under build/fuzz/artifacts/.
#
#   FUZZ_SECONDS=600 npm run fuzz        longer runs
#   FUZZ_HARNESSES="fat_volume" ...      only some harnesses
#   FUZZ_ARGS="-jobs=4 -workers=4" ...   extra libFuzzer flags
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
out=build/fuzz
bash fuzz/build.sh
[ -d "$out/corpus" ] || node fuzz/make-corpus.mjs "$out/corpus"
mkdir -p "$out/artifacts"

harnesses=${FUZZ_HARNESSES:-$(for f in fuzz/*.cc; do basename "${f%.cc}"; done) repo_readers}
# -max_len: seeds are up to ~1 MiB; -rss_limit_mb/-malloc_limit_mb: a small
# image must not take much memory; -timeout: nor much time.
common=(-max_len=1048576 -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -print_final_stats=1)
status=0
for h in $harnesses; do
  if [ "$h" = repo_readers ]; then
    echo "== $h: fuzzing for ${seconds}s"
    (cd fuzz && FUZZ_SECONDS="$seconds" npx vitest run --config vitest.config.ts) >"$out/$h.log" 2>&1 || {
      tail -n 60 "$out/$h.log"
      echo "fuzz: $h found a problem (log: $out/$h.log, input: $out/artifacts/$h-*)" >&2
      status=1
      continue
    }
    grep -oE 'repo_readers (manifest|index|catalog): .*' "$out/$h.log" | tr '\n' ' '
    echo
    continue
  fi
  regressions=(fuzz/regressions/"$h"/*)
  if [ -e "${regressions[0]}" ]; then
    echo "== $h: replaying ${#regressions[@]} regression inputs"
    "$out/$h" "${common[@]}" -runs=1 "${regressions[@]}" >"$out/$h.replay.log" 2>&1 || {
      tail -n 40 "$out/$h.replay.log"
      echo "fuzz: $h fails on a regression input (log: $out/$h.replay.log)" >&2
      status=1
      continue
    }
  fi
  echo "== $h: fuzzing for ${seconds}s"
  mkdir -p "$out/work/$h"
  # New inputs go to the first directory (build/fuzz/work, kept between runs); seeds are only read.
  # shellcheck disable=SC2086
  if ! "$out/$h" "${common[@]}" -max_total_time="$seconds" -artifact_prefix="$out/artifacts/$h-" ${FUZZ_ARGS:-} \
    "$out/work/$h" "$out/corpus/$h" >"$out/$h.log" 2>&1; then
    tail -n 60 "$out/$h.log"
    echo "fuzz: $h found a problem (log: $out/$h.log, input: $out/artifacts/$h-*)" >&2
    status=1
    continue
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov: .*(DONE|INITED)' "$out/$h.log" | tr '\n' ' '
  echo
done
exit "$status"
