#!/usr/bin/env bash
# The one GPU script: builds (Release, sm_90a), runs the test suite (CUDA cases included), the
# PyTorch cross-check and the benchmark, and prints a short table last.
#   bench/gpu_run.sh OUT_DIR [build|test|flagship|train|check|bench|sanitize ...]
#   (default: all but sanitize)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bench/gpu_run.sh OUT_DIR [stages...]}
shift
STAGES=${*:-build test flagship train check bench}
mkdir -p "$OUT"
BUILD=${MINIDL_BUILD_DIR:-build-gpu}
WORK=${MINIDL_WORK_DIR:-/tmp/minidl-work}
export PYTHONUNBUFFERED=1
status=0
summary=()
stage() { echo; echo "=================== $1"; }
record() { summary+=("$(printf '%-10s %s' "$1" "$2")"); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for s in $STAGES; do
  case $s in
    build)
      stage build
      t0=$(date +%s)
      if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1 &&
         cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1; then
        record build "ok ($(( $(date +%s) - t0 )) s)"
      else
        tail -n 60 "$OUT/build.log" "$OUT/cmake.log"; record build FAILED; status=1; break
      fi
      grep -E "spill|stack frame" "$OUT/build.log" | sort -u | head -20 || true ;;
    test)
      stage test
      if "$BUILD/minidl_tests" 2>&1 | tee "$OUT/tests.log" | tail -n 25; then :; fi
      if grep -q "Status: SUCCESS" "$OUT/tests.log"; then record tests "$(grep -E '^\[doctest\] (test cases|assertions)' "$OUT/tests.log" | tr -s ' ' | paste -sd ';')"
      else record tests "FAILED: $(grep -E '^\[doctest\] (test cases|assertions)' "$OUT/tests.log" | tr -s ' ' | paste -sd ';')"; status=1; fi ;;
    flagship)
      stage "flagship example (fused vs unfused, full size)"
      if "$BUILD/flagship" --device cuda --reps 5 2>&1 | tee "$OUT/flagship.log" | tail -n 16; then :; fi
      grep -q "fused and unfused agree" "$OUT/flagship.log" && record flagship "fused and unfused agree" ||
        { record flagship FAILED; status=1; } ;;
    train)
      stage "train (flagship size, GPU)"
      if "$BUILD/train" --device cuda --steps 60 --print-every 10 --expect-drop 2 --max-seconds 120 2>&1 | tee "$OUT/train.log" | tail -n 8; then :; fi
      record train "$(grep -E '^train: [0-9]+ steps' "$OUT/train.log" | sed 's/^train: //')" ;;
    check)
      stage crosscheck
      if python3 bench/crosscheck.py "$BUILD" "$WORK" 2>&1 | tee "$OUT/crosscheck.log" | tail -n 40; then :; fi
      if grep -q "all bounds met" "$OUT/crosscheck.log"; then record crosscheck "all bounds met"
      else record crosscheck "FAILED (see crosscheck.log)"; status=1; fi
      rm -rf "$WORK" ;;
    bench)
      stage bench
      if python3 bench/gpu_bench.py "$BUILD" "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -n 12; then :; fi
      [ -f "$OUT/RESULTS.md" ] && record bench "table in RESULTS.md" || { record bench FAILED; status=1; } ;;
    sanitize)
      stage sanitize
      for tool in memcheck racecheck; do
        # small shapes only: the flagship-size and > 2^31-byte cases take minutes under the tools
        timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/minidl_tests" -ts='cuda*' \
          -tce='*flagship*,*batch 128*,*2^31*,*out-of-memory*' \
          >"$OUT/sanitize-$tool.log" 2>&1 && record $tool clean || { record $tool "ERRORS"; status=1; tail -n 30 "$OUT/sanitize-$tool.log"; }
      done
      # The fused conv kernel at shapes where each block walks 3-4 rows (staging tiles and slab
      # slots reused), both gather paths; its own check binary.
      if nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -I. \
           bench/standalone/fused_conv_check.cu -o "$BUILD/fused_conv_check" >"$OUT/fused_conv_check_build.log" 2>&1; then
        for tool in memcheck racecheck; do
          for ops in f16 tf32; do  # both operand formats of the tensor-core path
            timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/fused_conv_check" --small --$ops \
              >"$OUT/sanitize-fused-conv-$tool-$ops.log" 2>&1 && record "fc $tool $ops" clean ||
              { record "fc $tool $ops" "ERRORS"; status=1; tail -n 30 "$OUT/sanitize-fused-conv-$tool-$ops.log"; }
          done
        done
      else
        record "fc build" FAILED; status=1; tail -n 20 "$OUT/fused_conv_check_build.log"
      fi ;;
    *) echo "unknown stage $s"; status=2 ;;
  esac
done
echo
echo "=================== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf '%s\n' "${summary[@]}"
[ -f "$OUT/RESULTS.md" ] && tail -n +3 "$OUT/RESULTS.md"
exit $status
