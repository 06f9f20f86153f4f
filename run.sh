#!/usr/bin/env bash
# minidl's two entry points:
#   ./run.sh        build, run the flagship (fused vs unfused check, timings) and a short training run
#   ./run.sh test   build and run the test suite
# On a machine without a GPU both run on the CPU (the flagship and training at a reduced size).
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${MINIDL_BUILD_DIR:-build}

install_deps() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  command -v ninja >/dev/null || missing+=(ninja-build)
  [ -f /usr/include/eigen3/Eigen/Core ] || missing+=(libeigen3-dev)
  [ -f /usr/include/doctest/doctest.h ] || missing+=(doctest-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

build() {
  install_deps
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # nvcc is often installed outside PATH
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
  cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)"
}

case "${1:-main}" in
  main)
    build
    echo "== flagship: fused vs unfused"
    "$BUILD_DIR/flagship"
    echo "== training"
    "$BUILD_DIR/train" --print-every 25
    ;;
  test)
    build
    "$BUILD_DIR/minidl_tests"
    ;;
  *)
    echo "usage: ./run.sh [main|test]" >&2
    exit 2
    ;;
esac
