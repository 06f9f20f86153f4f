// Runs one op's CUDA kernel against its CPU kernel on the same inputs: the CPU side runs in f64
// (the reference), the CUDA side in f32, both with NaN-poisoned outputs, and every output is
// compared by relative L2 error.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "graph/graph.h"
#include "ops/registry.h"
#include "test_util.h"

namespace minidl_cuda_test {

using minidl::DType;
using minidl::Device;
using minidl::Graph;
using minidl::KernelContext;
using minidl::Node;
using minidl::Shape;
using minidl::Tensor;

// Builds the node under test in g, with every tensor input as a graph input of dtype t
// (nullptr entries stay omitted optional inputs).
using NodeBuilder = std::function<Node*(Graph& g, DType t)>;

// Fresh random f32 data, never zeros: uniform in [lo, hi).
inline Tensor rand_f32(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return Tensor::uniform(s, lo, hi, seed, DType::F32);
}

struct RunResult {
  std::vector<Tensor> gpu;  // f32, on the CPU
  std::vector<Tensor> ref;  // f64, on the CPU
};

// inputs: f32 CPU tensors (undefined = omitted optional input), in node input order.
inline RunResult run_cpu_vs_cuda(const NodeBuilder& build, const std::vector<Tensor>& inputs) {
  RunResult res;
  {
    Graph g("ref");
    Node* n = build(g, DType::F64);
    std::vector<Tensor> ins, outs;
    for (const Tensor& t : inputs) ins.push_back(t.defined() ? t.to(DType::F64) : Tensor());
    for (const auto* v : n->outputs)
      outs.push_back(minidl_test::poisoned(v->shape(), DType::F64, Device::cpu()));
    KernelContext ctx{*n, ins, outs};
    minidl::op_schema(n->op).cpu_kernel(ctx);
    res.ref = ctx.outputs;
  }
  {
    Graph g("gpu");
    Node* n = build(g, DType::F32);
    const auto& kernel = minidl::op_schema(n->op).cuda_kernel;
    REQUIRE_MESSAGE(static_cast<bool>(kernel), "op ", n->op, " has no CUDA kernel");
    std::vector<Tensor> ins, outs;
    for (const Tensor& t : inputs) ins.push_back(t.defined() ? t.to(Device::cuda()) : Tensor());
    for (const auto* v : n->outputs)
      outs.push_back(minidl_test::poisoned(v->shape(), DType::F32, Device::cuda()));
    KernelContext ctx{*n, ins, outs};
    kernel(ctx);
    minidl::cuda::synchronize();
    for (const Tensor& t : ctx.outputs) res.gpu.push_back(t.cpu());
  }
  return res;
}

// Runs the CUDA kernel twice on the same inputs: with every output, then with the op's optional
// outputs (past OpSchema::num_required_outputs) left undefined, as the executor passes them when
// nothing reads them. The required outputs must come out bit for bit the same, and written
// (poisoned beforehand).
inline void check_optional_outputs_skipped(const std::string& what, const NodeBuilder& build,
                                           const std::vector<Tensor>& inputs) {
  Graph g("optional");
  Node* n = build(g, DType::F32);
  const minidl::OpSchema& s = minidl::op_schema(n->op);
  REQUIRE_MESSAGE(s.num_required_outputs < n->outputs.size(), n->op, " has no optional outputs");
  std::vector<Tensor> ins;
  for (const Tensor& t : inputs) ins.push_back(t.defined() ? t.to(Device::cuda()) : Tensor());
  auto run = [&](bool all) {
    std::vector<Tensor> outs;
    for (size_t k = 0; k < n->outputs.size(); ++k)
      outs.push_back(all || k < s.num_required_outputs
                         ? minidl_test::poisoned(n->outputs[k]->shape(), DType::F32, Device::cuda())
                         : Tensor());
    KernelContext ctx{*n, ins, outs};
    s.cuda_kernel(ctx);
    minidl::cuda::synchronize();
    std::vector<Tensor> res;
    for (size_t k = 0; k < s.num_required_outputs; ++k) res.push_back(ctx.outputs[k].cpu());
    return res;
  };
  const std::vector<Tensor> with = run(true), without = run(false);
  for (size_t k = 0; k < with.size(); ++k) {
    CHECK_MESSAGE(minidl::all_finite(without[k]), what, ": output ", k, " not fully written");
    minidl_test::check_close(without[k], with[k], 0.0, what + ": output " + std::to_string(k) +
                                                           " without the optional outputs");
  }
}

// Compares every output (tols[i] per output; a negative tolerance skips that output).
inline void check_op(const std::string& what, const NodeBuilder& build, const std::vector<Tensor>& inputs,
                     const std::vector<double>& tols) {
  RunResult r = run_cpu_vs_cuda(build, inputs);
  REQUIRE(r.gpu.size() == r.ref.size());
  for (size_t i = 0; i < r.gpu.size(); ++i) {
    const double tol = i < tols.size() ? tols[i] : tols.back();
    if (tol < 0) continue;
    minidl_test::check_close(r.gpu[i], r.ref[i], tol, what + " output " + std::to_string(i));
  }
}

constexpr double kFp32Tol = 1e-5;
constexpr double kTf32Tol = 2e-3;

}  // namespace minidl_cuda_test
