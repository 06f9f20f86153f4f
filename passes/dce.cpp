// Dead-code elimination: a node is live when one of its outputs is a graph output or is read by
// a live node. Sources (inputs and params) always stay: they are the graph's interface, and the
// executor expects a feed for each of them whether or not it is used.
#include <set>
#include <vector>

#include "passes/pass_manager.h"

namespace minidl {

bool dead_code_elimination(Graph& g) {
  std::vector<Node*> order = g.schedule();
  std::set<const Node*> live;
  for (const Value* v : g.outputs())
    if (v) live.insert(v->producer);
  // Walking the schedule backwards visits every reader before the node it reads from, so one
  // sweep propagates liveness through the whole graph.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const Node* n = *it;
    if (!live.count(n)) continue;
    for (const Value* in : n->inputs)
      if (in) live.insert(in->producer);
  }
  // Erase in reverse schedule order: a dead node's readers are dead too and are erased first,
  // so erase_node never sees a used output.
  bool changed = false;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = *it;
    if (live.count(n) || n->is_source()) continue;
    g.erase_node(n);
    changed = true;
  }
  return changed;
}

}  // namespace minidl
