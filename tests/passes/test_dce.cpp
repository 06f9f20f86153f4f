// Dead-code elimination: IR text in, IR text out, plus the corner cases that matter to the
// pipeline (sources kept, multi-output nodes, nothing-to-do reports no change).
#include "pass_test_util.h"
#include "passes/pass_manager.h"

using namespace minidl;
using namespace minidl_test;

TEST_SUITE("passes/dce") {

TEST_CASE("dce removes nodes that reach no output and keeps inputs and params") {
  auto g = load_pass_input("dce");
  REQUIRE(g->num_nodes() == 10);
  CHECK(dead_code_elimination(*g));
  CHECK(to_text(*g) == read_pass_data("dce.out.txt"));
  CHECK(g->num_nodes() == 6);
  CHECK(g->count_op("scale") == 1);
  CHECK(g->count_op("add") == 0);
  // Unused sources stay: the graph's interface does not shrink under the user.
  CHECK(g->find_input("unused") != nullptr);
  CHECK(g->find_param("idle") != nullptr);
  verify(*g);
  // A second run finds nothing more to do.
  CHECK_FALSE(dead_code_elimination(*g));
}

TEST_CASE("dce keeps a multi-output node when any one of its outputs is used") {
  auto g = parse_text(
      "graph stats(%x: f32[3,8]) {\n"
      "  %0, %1, %2 = layer_norm(%x) {eps=1e-05, normalized_shape=[8]} : f32[3,8], f32[3], f32[3]\n"
      "  %3 = scale(%0) {factor=2.0} : f32[3,8]\n"
      "  return %2\n"
      "}\n");
  std::string before = to_text(*g);
  CHECK(dead_code_elimination(*g));
  CHECK(g->count_op("layer_norm") == 1);  // its rstd is returned
  CHECK(g->count_op("scale") == 0);       // reads only the unused y
  CHECK(to_text(*g) != before);
}

TEST_CASE("dce on a fully live graph changes nothing") {
  auto g = load_pass_input("ln_gelu_scale");
  std::string before = to_text(*g);
  CHECK_FALSE(dead_code_elimination(*g));
  CHECK(to_text(*g) == before);
}

TEST_CASE("dce removes a whole dead chain, readers before producers") {
  Graph g("chain");
  Value* x = g.add_input("x", {4, 4});
  Value* live = g.add("scale", {x}, {{"factor", AttrValue::Float(2.0)}});
  Value* d = x;
  for (int i = 0; i < 5; ++i) d = g.add("add", {d, live});  // dead, and reads a live value
  g.set_outputs({live});
  CHECK(g.count_op("add") == 5);
  CHECK(dead_code_elimination(g));
  CHECK(g.count_op("add") == 0);
  CHECK(g.count_op("scale") == 1);
  CHECK(g.num_nodes() == 2);
  verify(g);
}

}  // TEST_SUITE
