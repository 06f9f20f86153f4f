// Helpers for the op suites: run one op through a graph and the executor, run its CPU kernel
// directly on NaN-poisoned outputs, and check gradients against central finite differences.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "graph/executor.h"
#include "graph/graph.h"
#include "ops/registry.h"
#include "test_util.h"

namespace op_test {

using namespace minidl;

inline Tensor rand_uniform(const Shape& s, uint64_t seed, DType t = DType::F64, double lo = -1, double hi = 1) {
  return Tensor::uniform(s, lo, hi, seed, t);
}

// Builds a graph with one input per defined tensor (an undefined one is an omitted optional
// input) and one `op` node. Returns the graph and the node.
struct OneOpGraph {
  std::unique_ptr<Graph> g;
  Node* node = nullptr;
  std::map<std::string, Tensor> feeds;
};
inline OneOpGraph one_op_graph(const std::string& op, const std::vector<Tensor>& ins, const Attrs& attrs) {
  OneOpGraph r;
  r.g = std::make_unique<Graph>(op);
  std::vector<Value*> vals;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (!ins[i].defined()) {
      vals.push_back(nullptr);
      continue;
    }
    const std::string name = "in" + std::to_string(i);
    vals.push_back(r.g->add_input(name, ins[i].shape(), ins[i].dtype()));
    r.feeds[name] = ins[i];
  }
  r.node = r.g->add_node(op, vals, attrs);
  return r;
}

// All outputs of `op` on `ins`, computed by the CPU executor.
inline std::vector<Tensor> run_op(const std::string& op, const std::vector<Tensor>& ins, const Attrs& attrs = {}) {
  OneOpGraph r = one_op_graph(op, ins, attrs);
  r.g->set_outputs(r.node->outputs);
  Executor ex(*r.g, Device::cpu());
  return ex.run(r.feeds);
}

// All outputs of `op` on `ins`, from its CPU kernel called directly on NaN-filled outputs, so an
// element the kernel forgets to write stays NaN.
inline std::vector<Tensor> run_kernel_poisoned(const std::string& op, const std::vector<Tensor>& ins,
                                               const Attrs& attrs = {}) {
  OneOpGraph r = one_op_graph(op, ins, attrs);
  std::vector<Tensor> outs;
  for (const Value* v : r.node->outputs) outs.push_back(minidl_test::poisoned(v->shape(), v->dtype(), Device::cpu()));
  KernelContext ctx{*r.node, ins, outs};
  op_schema(op).cpu_kernel(ctx);
  for (const Tensor& t : outs) CHECK_MESSAGE(all_finite(t), op << ": kernel left unwritten (NaN) elements in " << t.describe());
  return outs;
}

// ---- finite-difference gradient checks (float64) -----------------------------------------------
struct GradInput {
  std::string name;
  Tensor value;               // undefined: an omitted optional input (passed as nullptr)
  bool differentiate = true;  // false: a constant fed to the graph
};
// Adds the forward computation to g and returns the scalar loss.
using LossBuilder = std::function<Value*(Graph&, const std::map<std::string, Value*>&)>;

// Compares the autograd gradient of the loss w.r.t. every differentiable input with central
// differences, by relative L2 error (and, for gradients that are ~0, by absolute size).
inline void gradcheck(const std::string& what, const LossBuilder& build, const std::vector<GradInput>& inputs,
                      double tol = 1e-6, double eps = 1e-6) {
  Graph g(what), fwd(what + "_fwd");
  std::map<std::string, Value*> vals, fvals;
  std::map<std::string, Tensor> feeds;
  std::vector<Value*> wrt;
  std::vector<const GradInput*> wrt_in;
  for (const GradInput& in : inputs) {
    if (!in.value.defined()) {
      vals[in.name] = fvals[in.name] = nullptr;
      continue;
    }
    REQUIRE(in.value.dtype() == DType::F64);
    vals[in.name] = g.add_input(in.name, in.value.shape(), DType::F64);
    fvals[in.name] = fwd.add_input(in.name, in.value.shape(), DType::F64);
    feeds[in.name] = in.value.clone();
    if (in.differentiate) {
      wrt.push_back(vals[in.name]);
      wrt_in.push_back(&in);
    }
  }
  Value* loss = build(g, vals);
  REQUIRE(shape_numel(loss->shape()) == 1);
  std::vector<Value*> grads = append_backward(g, {loss}, {nullptr}, wrt);
  std::vector<Value*> outs = {loss};
  for (size_t i = 0; i < grads.size(); ++i) {
    INFO(what << ": input '" << wrt_in[i]->name << "'");
    REQUIRE_MESSAGE(grads[i] != nullptr, "no gradient reached input " << wrt_in[i]->name);
    outs.push_back(grads[i]);
  }
  g.set_outputs(outs);
  std::vector<Tensor> res = Executor(g, Device::cpu()).run(feeds);

  fwd.set_outputs({build(fwd, fvals)});
  Executor fex(fwd, Device::cpu());
  for (size_t i = 0; i < wrt_in.size(); ++i) {
    Tensor t = feeds[wrt_in[i]->name];  // shares storage with the feed: perturbed in place
    Tensor numeric = Tensor::zeros(t.shape(), DType::F64);
    for (int64_t k = 0; k < t.numel(); ++k) {
      const double v = t.get(k);
      t.set(k, v + eps);
      const double lp = fex.run(feeds)[0].get(0);
      t.set(k, v - eps);
      const double lm = fex.run(feeds)[0].get(0);
      t.set(k, v);
      numeric.set(k, (lp - lm) / (2 * eps));
    }
    const Tensor& analytic = res[i + 1];
    INFO(what << ": gradient of input '" << wrt_in[i]->name << "' " << analytic.describe());
    REQUIRE(analytic.shape() == t.shape());
    CHECK(all_finite(analytic));
    double ref_norm = 0;
    for (double x : numeric.to_vector()) ref_norm += x * x;
    ref_norm = std::sqrt(ref_norm);
    const double err = rel_l2_error(analytic, numeric), mad = max_abs_diff(analytic, numeric);
    INFO("rel L2 error " << err << ", max abs diff " << mad << ", |numeric| " << ref_norm);
    if (ref_norm < 1e-7)
      CHECK(mad < 1e-7);  // an (almost) zero gradient: compare by absolute size
    else
      CHECK(err < tol);
  }
}

// Gradient check of one op: loss = sum over the listed outputs k of sum(out_k * R_k), with R_k
// fixed random tensors. inputs are in the op's input order (undefined value = omitted).
inline void gradcheck_op(const std::string& op, std::vector<GradInput> inputs, const Attrs& attrs,
                         const std::vector<int>& weighted_outputs = {0}, double tol = 1e-6) {
  std::vector<std::string> op_inputs;
  for (const GradInput& in : inputs) op_inputs.push_back(in.name);
  // Output shapes, from the op's shape rule.
  std::vector<Tensor> probe_ins;
  for (const GradInput& in : inputs) probe_ins.push_back(in.value);
  OneOpGraph probe = one_op_graph(op, probe_ins, attrs);
  uint64_t seed = 9000;
  for (int k : weighted_outputs)
    inputs.push_back({"r" + std::to_string(k), rand_uniform(probe.node->output(k)->shape(), seed++), false});
  LossBuilder build = [&](Graph& g, const std::map<std::string, Value*>& v) {
    std::vector<Value*> ins;
    for (const std::string& n : op_inputs) ins.push_back(v.at(n));
    Node* node = g.add_node(op, ins, attrs);
    Value* loss = nullptr;
    for (int k : weighted_outputs) {
      Value* term = g.add("sum", {g.add("mul", {node->output(k), v.at("r" + std::to_string(k))})});
      loss = loss ? g.add("add", {loss, term}) : term;
    }
    return loss;
  };
  gradcheck(op, build, inputs, tol);
}

}  // namespace op_test
