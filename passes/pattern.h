// A small pattern matcher for fusion passes: a pattern is a chain of op kinds where each op's
// first input is the previous op's first output, plus legality predicates. match_chains returns
// every non-overlapping match in schedule order; each predicate that fails records why, so
// passes can explain (and tests can assert) why a chain was not fused.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace minidl {

struct ChainMatch {
  std::vector<Node*> nodes;  // in chain order
};

// A legality predicate: returns an empty string when legal, else the reason.
using Legality = std::function<std::string(const Graph&, const ChainMatch&)>;

struct ChainPattern {
  std::string name;
  std::vector<std::string> ops;  // e.g. {"layer_norm", "gelu", "scale"}
  std::vector<Legality> checks;
};

struct MatchResult {
  std::vector<ChainMatch> legal;
  std::vector<std::pair<ChainMatch, std::string>> rejected;  // with the reason
};
MatchResult match_chains(const Graph& g, const ChainPattern& p);

// Common predicates.
// Every intermediate (output 0 of all but the last node) has exactly one user and is not a graph
// output; other outputs of intermediate nodes are unused.
std::string single_consumer_chain(const Graph& g, const ChainMatch& m);

}  // namespace minidl
