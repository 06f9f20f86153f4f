// fuse_ln_gelu_scale: golden IR in/out, one negative case per legality rule (each asserting the
// graph text is unchanged and the reason names the rule), and fused-vs-unfused numerics on the
// CPU for the outputs and for every gradient.
#include "autograd/autograd.h"
#include "pass_test_util.h"
#include "passes/fusion.h"

using namespace minidl;
using namespace minidl_test;

namespace {

// The reason the LN-GELU-scale pattern gives for its single rejected chain.
std::string rejection(const Graph& g) {
  MatchResult r = match_chains(g, ln_gelu_scale_pattern());
  CHECK(r.legal.empty());
  REQUIRE(r.rejected.size() == 1);
  return r.rejected[0].second;
}

// Runs the pass on a graph that must not change; checks text, node counts and the reason.
void check_not_fused(Graph& g, const std::string& reason_part) {
  std::string before = to_text(g);
  size_t nodes = g.num_nodes();
  std::string why = rejection(g);
  INFO("rejection reason: " << why);
  CHECK(why.find(reason_part) != std::string::npos);
  CHECK_FALSE(fuse_ln_gelu_scale(g));
  CHECK(to_text(g) == before);
  CHECK(g.num_nodes() == nodes);
  CHECK(g.count_op("fused_ln_gelu_scale") == 0);
}

// Appends the backward of output 0 (seeded by a new input "dy") with respect to every input
// and param, and returns the graph's outputs as {y, grads...}.
void append_training(Graph& g) {
  Value* y = g.outputs().at(0);
  Value* dy = g.add_input("dy", y->shape(), y->dtype());
  std::vector<Value*> wrt = g.inputs();
  wrt.pop_back();  // not dy itself
  for (Value* p : g.params()) wrt.push_back(p);
  std::vector<Value*> grads = append_backward(g, {y}, {dy}, wrt);
  std::vector<Value*> outs{y};
  for (Value* gr : grads) {
    REQUIRE(gr != nullptr);
    outs.push_back(gr);
  }
  g.set_outputs(outs);
}

// Fused and unfused versions of one golden input, forward and backward, on the same feeds.
void check_fused_matches_unfused(const std::string& name, double rel_tol) {
  auto plain = load_pass_input(name);
  auto fused = load_pass_input(name);
  REQUIRE(fuse_ln_gelu_scale(*fused));
  REQUIRE(fused->count_op("fused_ln_gelu_scale") >= 1);
  append_training(*plain);
  append_training(*fused);
  verify(*plain);
  verify(*fused);
  auto feeds = random_feeds(*plain, 1234);
  std::vector<Tensor> ref = run_cpu(*plain, feeds);
  std::vector<Tensor> out = run_cpu(*fused, feeds);
  REQUIRE(ref.size() == out.size());
  for (size_t i = 0; i < ref.size(); ++i)
    check_close(out[i], ref[i], rel_tol, name + (i == 0 ? " output" : " gradient #" + std::to_string(i)));
}

}  // namespace

TEST_SUITE("passes/fuse_ln_gelu_scale") {

TEST_CASE("layer_norm -> gelu -> scale becomes one fused node") {
  auto g = load_pass_input("ln_gelu_scale");
  CHECK(g->count_op("layer_norm") == 1);
  CHECK(fuse_ln_gelu_scale(*g));
  CHECK(to_text(*g) == read_pass_data("ln_gelu_scale.out.txt"));
  CHECK(g->count_op("fused_ln_gelu_scale") == 1);
  CHECK(g->count_op("layer_norm") == 0);
  CHECK(g->count_op("gelu") == 0);
  CHECK(g->count_op("scale") == 0);
  CHECK(g->num_nodes() == 4);  // x, g, b, fused
  verify(*g);
  CHECK_FALSE(fuse_ln_gelu_scale(*g));  // nothing left to fuse
}

TEST_CASE("the tanh approximation, eps and a negative factor are carried into the fused op") {
  auto g = load_pass_input("ln_gelu_scale_tanh");
  CHECK(fuse_ln_gelu_scale(*g));
  CHECK(to_text(*g) == read_pass_data("ln_gelu_scale_tanh.out.txt"));
  std::vector<Node*> nodes = g->schedule();
  Node* f = nodes.back();
  REQUIRE(f->op == "fused_ln_gelu_scale");
  CHECK(f->attrs.get_str("approximate") == "tanh");
  CHECK(f->attrs.get_float("eps") == 0.001);
  CHECK(f->attrs.get_float("factor") == -1.75);
}

TEST_CASE("two chains in a row are both fused and later uses read the fused output") {
  auto g = load_pass_input("ln_gelu_scale_two_chains");
  CHECK(fuse_ln_gelu_scale(*g));
  CHECK(to_text(*g) == read_pass_data("ln_gelu_scale_two_chains.out.txt"));
  CHECK(g->count_op("fused_ln_gelu_scale") == 2);
  CHECK(g->count_op("add") == 1);
  CHECK(g->num_nodes() == 5 + 3);
  verify(*g);
}

TEST_CASE("not fused: the gelu output has a second consumer") {
  auto g = load_pass_input("neg_gelu_two_consumers");
  check_not_fused(*g, "2 consumers");
}

TEST_CASE("not fused: an intermediate is a graph output") {
  auto g = load_pass_input("neg_intermediate_graph_output");
  check_not_fused(*g, "graph output");
}

TEST_CASE("not fused: the layer_norm statistics are used") {
  auto g = load_pass_input("neg_ln_stats_used");
  check_not_fused(*g, "layer_norm output 2");

  // The same rule when a statistic is returned rather than read by a node.
  auto h = load_pass_input("ln_gelu_scale");
  for (Node* n : h->nodes())
    if (n->op == "layer_norm") h->add_output(n->output(1));
  check_not_fused(*h, "layer_norm output 1 (f32[2,3]) is a graph output");
}

TEST_CASE("not fused: layer_norm normalizes more than the last dim") {
  auto g = load_pass_input("neg_ln_two_dims");
  check_not_fused(*g, "normalizes 2 dims");
}

TEST_CASE("not fused: layer_norm without bias") {
  auto g = load_pass_input("neg_ln_no_bias");
  check_not_fused(*g, "no bias");
}

TEST_CASE("not fused: layer_norm without weight") {
  auto g = load_pass_input("neg_ln_no_weight");
  check_not_fused(*g, "no weight");
}

// The op set cannot build the following three graphs through its shape rules, so each one is
// a legal graph edited afterwards: the pass must still refuse rather than trust the shapes.
TEST_CASE("not fused: shapes or dtypes change along the chain") {
  auto g = load_pass_input("ln_gelu_scale");
  Node* gelu = nullptr;
  for (Node* n : g->nodes())
    if (n->op == "gelu") gelu = n;
  REQUIRE(gelu);
  gelu->output(0)->type.dtype = DType::F64;
  check_not_fused(*g, "gelu maps f32[2,3,8] to f64[2,3,8]");

  auto h = load_pass_input("ln_gelu_scale");
  for (Node* n : h->nodes())
    if (n->op == "scale") n->output(0)->type.shape = {6, 8};
  check_not_fused(*h, "scale maps");
}

TEST_CASE("not fused: a gelu variant the fused op does not implement") {
  auto g = load_pass_input("ln_gelu_scale");
  for (Node* n : g->nodes())
    if (n->op == "gelu") n->attrs.set("approximate", AttrValue::Str("sigmoid"));
  check_not_fused(*g, "approximate=\"sigmoid\"");
}

TEST_CASE("not fused: a scale factor that is not a constant float") {
  auto g = load_pass_input("ln_gelu_scale");
  for (Node* n : g->nodes())
    if (n->op == "scale") n->attrs.set("factor", AttrValue::Int(2));
  check_not_fused(*g, "not a constant float");
}

TEST_CASE("fused and unfused graphs agree on the CPU, forward and all gradients (f32)") {
  check_fused_matches_unfused("ln_gelu_scale", 1e-6);
  check_fused_matches_unfused("ln_gelu_scale_tanh", 1e-6);
  check_fused_matches_unfused("ln_gelu_scale_two_chains", 1e-6);
}

}  // TEST_SUITE
