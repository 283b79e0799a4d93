#!/usr/bin/env bash
# ASan/UBSan run (npm run sanitize): builds the addon with -fsanitize=address,undefined into
# build/Sanitize/ (never build/Release), runs the native test files against it, then fuzzes
# the native loader with it for a bounded time.
#
#   scripts/sanitize.sh                       build + native tests + 10 min of loader fuzzing
#   FUZZ_SECONDS=0 scripts/sanitize.sh        build + native tests only
#   SKIP_BUILD=1 scripts/sanitize.sh          reuse build/Sanitize/xglm.node
#
# Node itself is not instrumented, so the sanitizer runtimes are preloaded (LD_PRELOAD) into
# every node process of the run. Options, and why:
#   detect_leaks=0             LeakSanitizer would report V8's and Node's own allocations,
#                              which live until exit by design; leaks are measured by bench/soak.ts
#   allocator_may_return_null=1  a huge allocation returns NULL as glibc's does (ggml and our
#                              loaders handle that), instead of ASan aborting the process
#   halt_on_error=1, abort_on_error=1  the first report fails the run (a crash the test or the
#                              fuzzer records)
#   suppressions               scripts/sanitize-ubsan.supp: two findings inside ggml's own GGUF
#                              reader (third-party), explained there and in docs/hardening.md
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-600}
FUZZ_CASES=${FUZZ_CASES:-20000}
ADDON="$PWD/build/Sanitize/xglm.node"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  node scripts/build-native.js --sanitize
fi
[[ -f "$ADDON" ]] || { echo "sanitize: $ADDON is missing (run without SKIP_BUILD)" >&2; exit 1; }

CXX_BIN=${CXX:-c++}
LIBASAN=$("$CXX_BIN" -print-file-name=libasan.so)
LIBUBSAN=$("$CXX_BIN" -print-file-name=libubsan.so)
for lib in "$LIBASAN" "$LIBUBSAN"; do
  [[ -f "$lib" ]] || { echo "sanitize: $lib not found; install the compiler's sanitizer runtimes (Debian: libasan8 libubsan1)" >&2; exit 1; }
done

REPORT_DIR=${REPORT_DIR:-$(mktemp -d -t xglm-sanitize-XXXXXX)}
export XGLM_ADDON_PATH="$ADDON"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:log_path=$REPORT_DIR/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$REPORT_DIR/ubsan:suppressions=$PWD/scripts/sanitize-ubsan.supp"
echo "sanitize: addon $ADDON; sanitizer reports go to $REPORT_DIR" >&2

NATIVE_TESTS=(test/engine*.test.ts test/native-load.test.ts test/runtime.test.ts test/hardening*.test.ts)
status=0
LD_PRELOAD="$LIBASAN $LIBUBSAN" npx ava --timeout 20m "${NATIVE_TESTS[@]}" || status=$?

if [[ "$FUZZ_SECONDS" -gt 0 ]]; then
  LD_PRELOAD="$LIBASAN $LIBUBSAN" node --import tsx scripts/fuzz.ts --formats gguf-native --cases "$FUZZ_CASES" \
    --time "$FUZZ_SECONDS" --jobs 2 --timeout 60000 --rss-limit 8192 --addon "$ADDON" \
    --report "$REPORT_DIR/fuzz-native.json" || status=$?
fi

if compgen -G "$REPORT_DIR/asan*" >/dev/null || compgen -G "$REPORT_DIR/ubsan*" >/dev/null; then
  echo "sanitize: sanitizer reports:" >&2
  cat "$REPORT_DIR"/asan* "$REPORT_DIR"/ubsan* 2>/dev/null | head -200 >&2
  status=1
fi
echo "sanitize: $([[ $status -eq 0 ]] && echo clean || echo FAILED)" >&2
exit $status
