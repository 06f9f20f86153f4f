#!/usr/bin/env bash
# A/B timing of the fused conv kernel: the current header against a whole-header snapshot from
# bench/kernels_history, both built from bench/standalone/fused_conv_check.cu and run in turn
# (--check: every correctness case, then the flagship timing and its parts), so that the two are
# compared within one run on one device.
#   bench/standalone/ab_compare.sh OUT_DIR bench/kernels_history/fused_conv_v9.cu [rounds]
# The snapshot is built with today's launcher (ops/fused_conv_transpose3d_ln_gelu_scale.cu) and
# check program, so it must have today's interface (Params, make_params, workspace_bytes,
# launch_tc<CIN, TANH, MODE>, plan_blocks, decode_unit / advance_unit, attach_workspace,
# FusedConvOperands): snapshots from the FP16-operand version on do (fused_conv_v9_tf32_final.cu and
# older ones need the check of their own commit); the profiling modes of the check mean what the
# current header says. The TF32 and FP16 paths of one build compare with `./fc --check --tf32`
# against `./fc --check` in one run.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: ab_compare.sh OUT_DIR SNAPSHOT [rounds]}
SNAP=${2:?usage: ab_compare.sh OUT_DIR SNAPSHOT [rounds]}
ROUNDS=${3:-2}
mkdir -p "$OUT/snapshot/ops"
cp "$SNAP" "$OUT/snapshot/ops/fused_conv_transpose3d_ln_gelu_scale_kernel.cuh"
cp ops/fused_conv_transpose3d_ln_gelu_scale.cu "$OUT/snapshot/ops/"
NVCC=(nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas -v)
"${NVCC[@]}" -I. bench/standalone/fused_conv_check.cu -o "$OUT/fc_new" >"$OUT/build_new.log" 2>&1 &
"${NVCC[@]}" -I"$OUT/snapshot" -I. bench/standalone/fused_conv_check.cu -o "$OUT/fc_old" >"$OUT/build_old.log" 2>&1 &
wait
for b in new old; do
  [ -x "$OUT/fc_$b" ] || { tail -n 30 "$OUT/build_$b.log"; exit 1; }
  echo "$b: $(grep -A1 'fused_conv_tc_kernelILi32ELb0ELi0ELi0E' "$OUT/build_$b.log" | grep -oE '[0-9]+ bytes spill stores' | head -1)"
done
nvidia-smi --query-gpu=name --format=csv,noheader
status=0
for r in $(seq 1 "$ROUNDS"); do
  for b in new old; do
    "$OUT/fc_$b" --check >"$OUT/run_${b}_$r.log" 2>&1 || status=1
    echo "== $b, round $r: $(tail -n 1 "$OUT/run_${b}_$r.log")"
    grep -E "^(flagship N32|  part: |gelu)|flagship N32 .*y rel" "$OUT/run_${b}_$r.log" | head -24
  done
done
exit $status
