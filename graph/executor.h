// Runs a graph on one device. Inputs and parameters are fed by name; every other value is
// computed by its op's kernel for that device, in schedule order, and freed right after its last
// use (graph outputs are kept).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "graph/graph.h"

namespace minidl {

class Executor {
 public:
  Executor(const Graph& g, Device device);
  // Feeds must cover every graph input and parameter, with matching shape and dtype, on the
  // executor's device (else a clear error). Returns the graph outputs in order.
  std::vector<Tensor> run(const std::map<std::string, Tensor>& feeds);
  Device device() const { return device_; }
  size_t peak_intermediate_bytes() const { return peak_bytes_; }  // of the last run

 private:
  static bool cuda_built();
  const Graph& graph_;
  Device device_;
  std::vector<Node*> order_;
  std::map<int, size_t> last_use_;  // value id -> index in order_ of its last reader
  size_t peak_bytes_ = 0;
};

}  // namespace minidl
