#include "graph/executor.h"

#include <algorithm>

#include "ops/registry.h"

namespace minidl {

Executor::Executor(const Graph& g, Device device) : graph_(g), device_(device) {
  verify(g);
  order_ = g.schedule();
  for (size_t i = 0; i < order_.size(); ++i)
    for (const Value* v : order_[i]->inputs)
      if (v) last_use_[v->id] = i;
  for (const Node* n : order_) {
    if (n->is_source()) continue;
    const OpSchema& s = op_schema(n->op);
    const Kernel& k = device.is_cpu() ? s.cpu_kernel : s.cuda_kernel;
    MINIDL_CHECK(static_cast<bool>(k), "executor: op '", n->op, "' has no ", device.str(), " kernel",
                 device.is_cuda() && !cuda_built() ? " (minidl was built without CUDA)" : "");
  }
}

bool Executor::cuda_built() {
#ifdef MINIDL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<Tensor> Executor::run(const std::map<std::string, Tensor>& feeds) {
  std::map<int, Tensor> live;  // value id -> tensor
  size_t live_bytes = 0;
  peak_bytes_ = 0;
  auto is_output = [&](const Value* v) { return graph_.is_output(v); };

  for (const auto& kv : feeds) {
    MINIDL_CHECK(graph_.find_input(kv.first) || graph_.find_param(kv.first), "executor: feed '", kv.first,
                 "' names no input or parameter of graph '", graph_.name(), "'");
  }
  for (size_t i = 0; i < order_.size(); ++i) {
    Node* n = order_[i];
    if (n->is_source()) {
      const std::string& name = n->name_attr();
      auto it = feeds.find(name);
      MINIDL_CHECK(it != feeds.end(), "executor: no tensor fed for ", n->op, " '", name, "' (",
                   n->output(0)->type.str(), ")");
      const Tensor& t = it->second;
      MINIDL_CHECK(t.defined(), "executor: ", n->op, " '", name, "' was fed an undefined tensor");
      MINIDL_CHECK(t.shape() == n->output(0)->shape() && t.dtype() == n->output(0)->dtype(), "executor: ", n->op,
                   " '", name, "' expects ", n->output(0)->type.str(), " but was fed ", t.describe());
      MINIDL_CHECK(t.device() == device_, "executor: ", n->op, " '", name, "' was fed ", t.describe(),
                   " but the graph runs on ", device_.str());
      MINIDL_CHECK(t.is_contiguous(), "executor: ", n->op, " '", name, "' must be contiguous");
      live[n->output(0)->id] = t;
      continue;
    }
    const OpSchema& s = op_schema(n->op);
    std::vector<Tensor> ins;
    for (const Value* v : n->inputs) ins.push_back(v ? live.at(v->id) : Tensor());
    std::vector<Tensor> outs;
    for (size_t k = 0; k < n->outputs.size(); ++k) {
      const Value* v = n->outputs[k];
      if (k >= s.num_required_outputs && !last_use_.count(v->id) && !is_output(v)) {
        outs.emplace_back();  // optional and unread: the kernel skips it
        continue;
      }
      outs.push_back(Tensor::empty(v->shape(), v->dtype(), device_));
      live_bytes += outs.back().nbytes();
    }
    peak_bytes_ = std::max(peak_bytes_, live_bytes);
    KernelContext ctx{*n, std::move(ins), outs};
    try {
      (device_.is_cpu() ? s.cpu_kernel : s.cuda_kernel)(ctx);
    } catch (const Error& e) {
      MINIDL_FAIL("executor: node ", n->op, " #", n->id, " on ", device_.str(), " failed: ", e.what());
    }
    for (size_t k = 0; k < n->outputs.size(); ++k) {
      const Value* v = n->outputs[k];
      // An output nobody reads is dropped at once (an optional one was never allocated).
      auto lu = last_use_.find(v->id);
      if (lu == last_use_.end() && !is_output(v)) {
        if (outs[k].defined()) live_bytes -= outs[k].nbytes();
        continue;
      }
      live[v->id] = outs[k];
    }
    // Free every input whose last reader was this node.
    for (const Value* v : n->inputs) {
      if (!v || is_output(v) || v->producer->is_source()) continue;
      auto it = live.find(v->id);
      if (it != live.end() && last_use_.at(v->id) == i) {
        live_bytes -= it->second.nbytes();
        live.erase(it);
      }
    }
  }
  std::vector<Tensor> result;
  for (const Value* v : graph_.outputs()) result.push_back(live.at(v->id));
  return result;
}

}  // namespace minidl
