// Pass manager: runs named graph passes in order; with a dump folder set (set_dump_dir or the
// MINIDL_DUMP_DIR environment variable) writes the graph before the first pass and after each
// one as text and Graphviz DOT.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace minidl {

struct Pass {
  std::string name;
  std::function<bool(Graph&)> run;  // returns true if it changed the graph
};

class PassManager {
 public:
  explicit PassManager(std::string stage_prefix = "") : prefix_(std::move(stage_prefix)) {}
  PassManager& add(Pass p) { passes_.push_back(std::move(p)); return *this; }
  void set_dump_dir(std::string dir) { dump_dir_ = std::move(dir); }
  bool run(Graph& g);  // verifies the graph after each pass

 private:
  std::string prefix_;
  std::vector<Pass> passes_;
  std::string dump_dir_;
};

// Removes nodes whose outputs reach no graph output (inputs and params are kept).
bool dead_code_elimination(Graph& g);

}  // namespace minidl
