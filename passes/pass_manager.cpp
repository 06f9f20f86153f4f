#include "passes/pass_manager.h"

#include <cstdlib>

#include "graph/dump.h"

namespace minidl {

namespace {

// The dump folder: the one set through the API wins, else MINIDL_DUMP_DIR, else none. Read at
// run time so a test or a user can switch dumps on without rebuilding the pipeline.
std::string resolve_dump_dir(const std::string& api_dir) {
  if (!api_dir.empty()) return api_dir;
  const char* env = std::getenv("MINIDL_DUMP_DIR");
  return env ? std::string(env) : std::string();
}

// Two-digit stage numbers keep the dump files in pipeline order when listed alphabetically.
std::string stage_number(size_t i) {
  std::string s = std::to_string(i);
  return s.size() < 2 ? "0" + s : s;
}

}  // namespace

bool PassManager::run(Graph& g) {
  const std::string dir = resolve_dump_dir(dump_dir_);
  if (!dir.empty()) dump_graph_to_dir(g, dir, prefix_ + "00-before");
  bool changed = false;
  for (size_t i = 0; i < passes_.size(); ++i) {
    const Pass& p = passes_[i];
    MINIDL_CHECK(static_cast<bool>(p.run), "pass manager: pass '", p.name, "' has no function");
    changed |= p.run(g);
    // A pass that breaks the graph is caught here, next to the pass that did it, rather than
    // later inside the executor.
    try {
      verify(g);
    } catch (const Error& e) {
      MINIDL_FAIL("pass manager: graph '", g.name(), "' is invalid after pass '", p.name, "': ", e.what());
    }
    if (!dir.empty()) dump_graph_to_dir(g, dir, prefix_ + stage_number(i + 1) + "-" + p.name);
  }
  return changed;
}

}  // namespace minidl
