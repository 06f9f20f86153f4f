// Graph-dump walkthrough: records the flagship model, prints its forward graph, runs the passes
// with dumps written to a folder (text and Graphviz, before and after every pass), and prints the
// fused forward and training graphs.
//   dump_graph [DIR]        (default DIR: ./minidl-dump; render with: dot -Tsvg DIR/.../xx.dot)
#include <cstdio>

#include "examples/flagship_model.h"
#include "graph/dump.h"
#include "nn/compiled.h"

using namespace minidl;

int main(int argc, char** argv) try {
  std::string dir = argc > 1 ? argv[1] : "minidl-dump";
  examples::FlagshipConfig cfg;  // the KernelBench sizes: nothing runs, so size is free
  auto model = examples::make_flagship(cfg);
  nn::CompiledModule cm(model, cfg.input_shape(), nn::CompileOptions().dump_dir(dir).grad_input(true));
  std::printf("== forward graph after passes ==\n%s\n", to_text(cm.forward_graph()).c_str());
  std::printf("== training graph (backward from a given dL/dy) ==\n%s\n", to_text(cm.grad_graph()).c_str());
  std::printf("dumps before/after every pass written under %s/\n", dir.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dump_graph: error: %s\n", e.what());
  return 2;
}
