#!/usr/bin/env bash
# Is the fused kernel power-bound? Power, SM clock and the software power cap while the flagship
# fused forward runs back to back (both operand formats, and the epilogue-only profiling mode), next
# to the references of power_ref.py (a TF32 and an FP16 matmul of the flagship's FLOPs, a 1 GiB
# write). The device's power limit is printed first.
#   bench/standalone/power_probe.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: power_probe.sh OUT_DIR}
mkdir -p "$OUT"
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I. \
  bench/standalone/fused_conv_check.cu -o "$OUT/fc" >"$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv
python3 bench/standalone/power_ref.py
for run in "--loop 4 --f16" "--loop 4 --tf32" "--loop-epilogue 4 --tf32"; do
  # shellcheck disable=SC2086
  "$OUT/fc" $run >"$OUT/loop.log" 2>&1 &
  pid=$!
  sleep 1.5  # past the ramp-up
  nvidia-smi --query-gpu=power.draw,clocks.sm,clocks_event_reasons.sw_power_cap --format=csv,noheader,nounits \
    -lms 250 >"$OUT/smi.log" &
  smi=$!
  wait $pid
  kill $smi 2>/dev/null
  wait $smi 2>/dev/null
  awk -F', ' -v what="$(grep -E '^loop' "$OUT/loop.log")" \
    '{w += $1; c += $2; cap += ($3 == "Active"); n++} END {printf "%s: %.1f W, %.0f MHz, power-capped %d/%d\n", what, w/n, c/n, cap, n}' \
    "$OUT/smi.log"
done
