#!/bin/bash
# Builds the CUDA op tests and the kernel benchmark from core/, graph/ and ops/ alone, so that
# unfinished work elsewhere in the tree (passes, nn, examples) cannot block a GPU measurement.
# Usage (from the repository root): bench/standalone/build.sh OUTDIR
set -u
O=${1:-build-standalone}
mkdir -p "$O/obj"
GEN="-gencode=arch=compute_90a,code=sm_90a"
CXXFLAGS="-O2 -std=c++17 -I. -Itests -I/usr/include/eigen3 -DMINIDL_WITH_CUDA=1 -I/usr/local/cuda/include"
NVFLAGS="$GEN --expt-relaxed-constexpr -std=c++17 -O3 -lineinfo -I. -DMINIDL_WITH_CUDA=1"
compile() {
  local f=$1 o
  o=$O/obj/$(echo "$f" | tr / _).o
  case $f in
    *.cu) nvcc $NVFLAGS -c -o "$o" "$f" ;;
    *) g++ $CXXFLAGS -c -o "$o" "$f" ;;
  esac || { echo "COMPILE FAILED: $f"; rm -f "$o"; }
}
export -f compile
export O GEN CXXFLAGS NVFLAGS
# tests/cuda/model_test.cpp needs nn/, passes/ and autograd/: it runs in the CMake build only.
ls core/*.cpp core/*.cu graph/*.cpp ops/*.cpp ops/*.cu tests/main.cpp tests/cuda/*.cpp | grep -v _nocuda |
  grep -v tests/cuda/model_test.cpp |
  xargs -P 16 -I{} bash -c 'compile {}'
# Without the fused conv CUDA file (or if it does not compile yet) its op keeps no CUDA kernel.
if [ ! -f "$O/obj/ops_fused_conv_transpose3d_ln_gelu_scale.cu.o" ]; then
  echo "note: using an empty register_fused_conv_transpose3d_ln_gelu_scale_cuda"
  printf '#include "ops/registry.h"\nnamespace minidl { void register_fused_conv_transpose3d_ln_gelu_scale_cuda(OpRegistry&) {} }\n' > "$O/stub.cpp"
  g++ $CXXFLAGS -c -o "$O/obj/stub.o" "$O/stub.cpp"
fi
LIBOBJ=$(ls $O/obj/*.o | grep -v 'tests_')
LIBS="-L/usr/local/cuda/lib64 -lcudart -lcublas -lpthread"
g++ -o "$O/cuda_tests" $O/obj/tests_*.o $LIBOBJ $LIBS && echo "built $O/cuda_tests"
nvcc $NVFLAGS -o "$O/kernel_bench" bench/standalone/kernel_bench.cu $LIBOBJ -lcublas && echo "built $O/kernel_bench"
nvcc $NVFLAGS -o "$O/conv_check" bench/standalone/conv_check.cu $LIBOBJ -lcublas && echo "built $O/conv_check"
