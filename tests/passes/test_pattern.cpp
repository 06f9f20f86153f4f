// The chain matcher: which chains it finds, in what order, that matches do not overlap, and
// that each rejected chain carries its reason.
#include "pass_test_util.h"
#include "passes/fusion.h"
#include "passes/pattern.h"

using namespace minidl;
using namespace minidl_test;

namespace {

Attrs factor(double f) { return Attrs{{"factor", AttrValue::Float(f)}}; }

}  // namespace

TEST_SUITE("passes/pattern") {

TEST_CASE("match_chains finds chains in schedule order and never overlaps them") {
  Graph g("scales");
  Value* x = g.add_input("x", {2, 2});
  Value* v = x;
  std::vector<Node*> s;
  for (int i = 0; i < 5; ++i) {
    Node* n = g.add_node("scale", {v}, factor(i + 1.0));
    s.push_back(n);
    v = n->output(0);
  }
  g.set_outputs({v});
  ChainPattern p{"pairs", {"scale", "scale"}, {}};
  MatchResult r = match_chains(g, p);
  REQUIRE(r.legal.size() == 2);  // (s0,s1), (s2,s3); s4 has no partner left
  CHECK(r.legal[0].nodes == std::vector<Node*>{s[0], s[1]});
  CHECK(r.legal[1].nodes == std::vector<Node*>{s[2], s[3]});
  CHECK(r.rejected.empty());
}

TEST_CASE("match_chains follows only the first operand") {
  Graph g("operand");
  Value* x = g.add_input("x", {2, 3});
  Value* a = g.add("scale", {x}, factor(2.0));
  Value* b = g.add("add", {x, a});  // a is the second operand: no chain scale -> add
  g.set_outputs({b});
  CHECK(match_chains(g, ChainPattern{"p", {"scale", "add"}, {}}).legal.empty());
  Value* c = g.add("add", {a, x});  // first operand: a chain
  g.set_outputs({b, c});
  MatchResult r = match_chains(g, ChainPattern{"p", {"scale", "add"}, {}});
  REQUIRE(r.legal.size() == 1);
  CHECK(r.legal[0].nodes[1]->output(0) == c);
}

TEST_CASE("a rejected chain records the first failing predicate's reason and claims no nodes") {
  Graph g("reject");
  Value* x = g.add_input("x", {2, 2});
  Node* s0 = g.add_node("scale", {x}, factor(1.0));
  Node* s1 = g.add_node("scale", {s0->output(0)}, factor(2.0));
  Node* s2 = g.add_node("scale", {s1->output(0)}, factor(3.0));
  g.set_outputs({s2->output(0)});
  int calls_after_first = 0;
  ChainPattern p{"pairs",
                 {"scale", "scale"},
                 {[&](const Graph&, const ChainMatch& m) {
                    return m.nodes[0] == s0 ? std::string("starts at s0") : std::string();
                  },
                  [&](const Graph&, const ChainMatch&) {
                    ++calls_after_first;
                    return std::string();
                  }}};
  MatchResult r = match_chains(g, p);
  REQUIRE(r.rejected.size() == 1);
  CHECK(r.rejected[0].first.nodes == std::vector<Node*>{s0, s1});
  CHECK(r.rejected[0].second.find("starts at s0") != std::string::npos);
  CHECK(r.rejected[0].second.find("pairs") != std::string::npos);
  // s1 was not claimed by the rejected chain, so (s1, s2) is still found.
  REQUIRE(r.legal.size() == 1);
  CHECK(r.legal[0].nodes == std::vector<Node*>{s1, s2});
  CHECK(calls_after_first == 1);  // predicates after a failing one are not run
}

TEST_CASE("single_consumer_chain rejects shared intermediates, graph outputs and used side outputs") {
  auto g = load_pass_input("ln_gelu_scale");
  ChainPattern p{"p", {"layer_norm", "gelu", "scale"}, {single_consumer_chain}};
  CHECK(match_chains(*g, p).legal.size() == 1);

  auto shared = load_pass_input("neg_gelu_two_consumers");
  MatchResult r = match_chains(*shared, p);
  CHECK(r.legal.empty());
  REQUIRE(r.rejected.size() == 1);
  CHECK(r.rejected[0].second.find("2 consumers") != std::string::npos);

  auto out = load_pass_input("neg_intermediate_graph_output");
  r = match_chains(*out, p);
  REQUIRE(r.rejected.size() == 1);
  CHECK(r.rejected[0].second.find("graph output") != std::string::npos);

  auto stats = load_pass_input("neg_ln_stats_used");
  r = match_chains(*stats, p);
  REQUIRE(r.rejected.size() == 1);
  CHECK(r.rejected[0].second.find("output 2") != std::string::npos);
}

}  // TEST_SUITE
