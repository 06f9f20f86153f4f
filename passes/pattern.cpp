#include "passes/pattern.h"

#include <algorithm>
#include <map>
#include <set>

namespace minidl {

namespace {

// The next link of a chain: a reader of `prev`'s first output whose op is `op` and whose first
// input is that output (reading it as a second operand does not continue the chain). Readers
// are tried in schedule order so the result does not depend on how the graph was built.
Node* next_link(const std::vector<Node*>& readers, const Node* prev, const std::string& op,
                const std::set<const Node*>& claimed) {
  const Value* v = prev->output(0);
  for (Node* r : readers) {
    if (r->op != op || claimed.count(r)) continue;
    if (!r->inputs.empty() && r->inputs[0] == v) return r;
  }
  return nullptr;
}

}  // namespace

MatchResult match_chains(const Graph& g, const ChainPattern& p) {
  MINIDL_CHECK(!p.ops.empty(), "pattern '", p.name, "': a chain pattern needs at least one op");
  MatchResult result;
  std::vector<Node*> order = g.schedule();
  std::map<const Node*, size_t> position;
  for (size_t i = 0; i < order.size(); ++i) position[order[i]] = i;

  // Only legal matches claim their nodes: a chain rejected at one start does not stop an
  // overlapping chain from being fused, and two legal matches never share a node, so a pass can
  // rewrite all of them one after the other.
  std::set<const Node*> claimed;
  for (Node* start : order) {
    if (start->op != p.ops[0] || claimed.count(start)) continue;
    ChainMatch m;
    m.nodes.push_back(start);
    bool complete = true;
    for (size_t k = 1; k < p.ops.size(); ++k) {
      const Node* prev = m.nodes.back();
      if (prev->outputs.empty()) {
        complete = false;
        break;
      }
      std::vector<Node*> readers = g.users(prev->output(0));
      std::sort(readers.begin(), readers.end(),
                [&](const Node* a, const Node* b) { return position.at(a) < position.at(b); });
      Node* next = next_link(readers, prev, p.ops[k], claimed);
      if (!next) {
        complete = false;
        break;
      }
      m.nodes.push_back(next);
    }
    if (!complete) continue;

    std::string reason;
    for (const Legality& check : p.checks) {
      reason = check(g, m);
      if (!reason.empty()) break;
    }
    if (reason.empty()) {
      for (const Node* n : m.nodes) claimed.insert(n);
      result.legal.push_back(std::move(m));
    } else {
      result.rejected.emplace_back(std::move(m), p.name + ": " + reason);
    }
  }
  return result;
}

std::string single_consumer_chain(const Graph& g, const ChainMatch& m) {
  for (size_t k = 0; k + 1 < m.nodes.size(); ++k) {
    const Node* n = m.nodes[k];
    for (size_t o = 0; o < n->outputs.size(); ++o) {
      const Value* v = n->outputs[o];
      // A fused node would no longer produce this value, so nobody else may need it.
      if (g.is_output(v))
        return n->op + " output " + std::to_string(o) + " (" + v->type.str() + ") is a graph output";
      std::vector<Node*> readers = g.users(v);
      if (o == 0) {
        if (readers.size() != 1)
          return n->op + " output " + v->type.str() + " has " + std::to_string(readers.size()) +
                 " consumers, fusion needs exactly one";
        // The single reader must be the next link, and read the value only as its first input.
        const Node* next = m.nodes[k + 1];
        size_t reads = 0;
        for (const Value* in : next->inputs) reads += in == v;
        if (readers[0] != next || reads != 1)
          return n->op + " output " + v->type.str() + " is also read as another operand of " + next->op;
      } else if (!readers.empty()) {
        return n->op + " output " + std::to_string(o) + " (" + v->type.str() + ") is used by " +
               std::to_string(readers.size()) + " node(s); the fused op would drop it";
      }
    }
  }
  return "";
}

}  // namespace minidl
