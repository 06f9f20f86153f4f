// fuse_conv_ln_gelu_scale: the flagship chain collapses to one node through the forward
// pipeline; unsupported convolutions and shared conv outputs stay unfused; and the fused op
// computes what the unfused chain does on the CPU, forward and backward.
#include "autograd/autograd.h"
#include "pass_test_util.h"
#include "passes/fusion.h"

using namespace minidl;
using namespace minidl_test;

namespace {

const char* kFusedConv = "fused_conv_transpose3d_ln_gelu_scale";

// Runs the two fusions the way forward_passes does, without depending on the environment.
void fuse_both(Graph& g) {
  fuse_ln_gelu_scale(g);
  fuse_conv_ln_gelu_scale(g);
  dead_code_elimination(g);
  verify(g);
}

// The reason the conv pattern gives for its single rejected chain.
std::string conv_rejection(const Graph& g) {
  MatchResult r = match_chains(g, conv_ln_gelu_scale_pattern());
  CHECK(r.legal.empty());
  REQUIRE(r.rejected.size() == 1);
  return r.rejected[0].second;
}

// Backward of output 0, seeded by a new input "dy", with respect to every input and param.
// Returns the names of the gradients in output order (after y).
std::vector<std::string> append_training(Graph& g) {
  Value* y = g.outputs().at(0);
  std::vector<Value*> wrt = g.inputs();
  std::vector<std::string> names;
  for (Value* p : g.params()) wrt.push_back(p);
  for (Value* v : wrt) names.push_back(v->producer->name_attr());
  Value* dy = g.add_input("dy", y->shape(), y->dtype());
  std::vector<Value*> grads = append_backward(g, {y}, {dy}, wrt);
  std::vector<Value*> outs{y};
  for (Value* gr : grads) {
    REQUIRE(gr != nullptr);
    outs.push_back(gr);
  }
  g.set_outputs(outs);
  return names;
}

// Fused vs unfused on identical feeds. The conv bias gets no gradient in exact arithmetic (the
// LayerNorm subtracts it back out), so it is compared by absolute size against the weight
// gradient's scale rather than by relative error.
void check_fused_matches_unfused(const std::string& name, double rel_tol) {
  auto plain = load_pass_input(name);
  auto fused = load_pass_input(name);
  fuse_both(*fused);
  REQUIRE(fused->count_op(kFusedConv) == 1);
  append_training(*plain);
  std::vector<std::string> grads = append_training(*fused);
  auto feeds = random_feeds(*plain, 99);
  std::vector<Tensor> ref = run_cpu(*plain, feeds);
  std::vector<Tensor> out = run_cpu(*fused, feeds);
  REQUIRE(ref.size() == out.size());
  REQUIRE(ref.size() == grads.size() + 1);
  check_close(out[0], ref[0], rel_tol, name + " output");
  double w_scale = 0;
  for (size_t i = 0; i < grads.size(); ++i)
    if (grads[i] == "w") w_scale = max_abs(ref[i + 1]);
  REQUIRE(w_scale > 0);
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor& o = out[i + 1];
    const Tensor& r = ref[i + 1];
    if (grads[i] == "cb") {
      INFO("conv bias gradient: fused max |db| " << max_abs(o) << ", unfused " << max_abs(r) << ", dW scale "
                                                  << w_scale);
      CHECK(all_finite(o));
      CHECK(max_abs(o) <= 1e-5 * w_scale);
      CHECK(max_abs(r) <= 1e-5 * w_scale);
    } else {
      check_close(o, r, rel_tol, name + " d" + grads[i]);
    }
  }
}

}  // namespace

TEST_SUITE("passes/fuse_conv_ln_gelu_scale") {

TEST_CASE("conv_transpose3d -> layer_norm -> gelu -> scale becomes one node in the forward pipeline") {
  auto g = load_pass_input("conv_ln_gelu_scale");
  CHECK(g->num_nodes() == 9);
  CHECK(fuse_ln_gelu_scale(*g));
  CHECK(g->count_op("fused_ln_gelu_scale") == 1);
  CHECK(g->count_op("conv_transpose3d") == 1);
  CHECK(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == read_pass_data("conv_ln_gelu_scale.out.txt"));
  CHECK(g->count_op(kFusedConv) == 1);
  CHECK(g->count_op("fused_ln_gelu_scale") == 0);
  CHECK(g->count_op("conv_transpose3d") == 0);
  CHECK(g->num_nodes() == 6);  // x, 4 params, the fused node
  verify(*g);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
}

TEST_CASE("the operand format is carried into the fused op, through the pipeline and MINIDL_FUSED_CONV_OPERANDS") {
  // The small test graph with C_in 32 (f16 needs a multiple of 16), and as it is (C_in 8).
  std::string text = read_pass_data("conv_ln_gelu_scale.in.txt");
  for (const char* from : {"f32[1,8,2,2,32]", "f32[8,64,4,4,4]"}) {
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, std::string(from).size(), std::string(from) == "f32[1,8,2,2,32]" ? "f32[1,32,2,2,32]" : "f32[32,64,4,4,4]");
  }
  auto operands_after = [&](const std::string& graph_text, FusedConvOperands ops) {
    auto h = parse_text(graph_text);
    forward_passes(true, false, ops).run(*h);
    for (const Node* n : h->nodes())
      if (n->op == kFusedConv) return n->attrs.get_str("operands");
    FAIL("no fused conv node");
    return std::string();
  };
  CHECK(operands_after(text, FusedConvOperands::kAuto) == "auto");
  CHECK(operands_after(text, FusedConvOperands::kTf32) == "tf32");
  CHECK(operands_after(text, FusedConvOperands::kF16) == "f16");
  // C_in 8 cannot take FP16 operands: the fused op gets "auto" (which runs TF32 there).
  CHECK(operands_after(read_pass_data("conv_ln_gelu_scale.in.txt"), FusedConvOperands::kF16) == "auto");
  {
    ScopedEnv env("MINIDL_FUSED_CONV_OPERANDS", "tf32");
    CHECK(operands_after(text, FusedConvOperands::kAuto) == "tf32");
  }
  {
    ScopedEnv env("MINIDL_FUSED_CONV_OPERANDS", "fp8");
    CHECK_THROWS_WITH_AS(forward_passes(true), doctest::Contains("MINIDL_FUSED_CONV_OPERANDS"), Error);
  }
}

TEST_CASE("precise mode is carried into the fused op, through the pipeline and MINIDL_PRECISE") {
  auto g = load_pass_input("conv_ln_gelu_scale");
  fuse_ln_gelu_scale(*g);
  CHECK(fuse_conv_ln_gelu_scale(*g, /*precise=*/true));
  const Node* fused = nullptr;
  for (const Node* n : g->nodes())
    if (n->op == kFusedConv) fused = n;
  REQUIRE(fused != nullptr);
  CHECK(fused->attrs.get_bool("precise"));

  auto run_pipeline = [](bool precise) {
    auto h = load_pass_input("conv_ln_gelu_scale");
    forward_passes(true, precise).run(*h);
    for (const Node* n : h->nodes())
      if (n->op == kFusedConv) return n->attrs.get_bool("precise");
    FAIL("no fused conv node");
    return false;
  };
  CHECK(run_pipeline(true));
  CHECK_FALSE(run_pipeline(false));
  {
    ScopedEnv env("MINIDL_PRECISE", "1");
    CHECK(run_pipeline(false));
  }
}

TEST_CASE("a conv without bias fuses with an omitted bias operand") {
  auto g = load_pass_input("conv_no_bias");
  fuse_both(*g);
  CHECK(to_text(*g) == read_pass_data("conv_no_bias.out.txt"));
  CHECK(g->count_op(kFusedConv) == 1);
}

TEST_CASE("the conv fusion alone does nothing before the epilogue is fused") {
  auto g = load_pass_input("conv_ln_gelu_scale");
  std::string before = to_text(*g);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == before);
}

TEST_CASE("not fused: a stride-1 convolution keeps conv_transpose3d (the epilogue still fuses)") {
  auto g = load_pass_input("neg_conv_stride1");
  REQUIRE(fuse_ln_gelu_scale(*g));
  std::string after_ln = to_text(*g);
  std::string why = conv_rejection(*g);
  INFO(why);
  CHECK(why.find("fused kernel does not support") != std::string::npos);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == after_ln);
  CHECK(after_ln == read_pass_data("neg_conv_stride1.out.txt"));
  CHECK(g->count_op("conv_transpose3d") == 1);
  CHECK(g->count_op(kFusedConv) == 0);
}

TEST_CASE("not fused: the conv output has a second consumer") {
  auto g = load_pass_input("neg_conv_two_consumers");
  REQUIRE(fuse_ln_gelu_scale(*g));
  std::string after_ln = to_text(*g);
  std::string why = conv_rejection(*g);
  INFO(why);
  CHECK(why.find("2 consumers") != std::string::npos);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == after_ln);
  CHECK(after_ln == read_pass_data("neg_conv_two_consumers.out.txt"));
  CHECK(g->count_op("conv_transpose3d") == 1);
}

TEST_CASE("not fused: the conv output is a graph output") {
  auto g = load_pass_input("conv_ln_gelu_scale");
  REQUIRE(fuse_ln_gelu_scale(*g));
  Value* conv_out = nullptr;
  for (Node* n : g->nodes())
    if (n->op == "conv_transpose3d") conv_out = n->output(0);
  REQUIRE(conv_out);
  g->add_output(conv_out);
  std::string before = to_text(*g);
  CHECK(conv_rejection(*g).find("graph output") != std::string::npos);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == before);
}

// The conv shape rule refuses groups != 1, so this graph is edited after it was built.
TEST_CASE("not fused: grouped convolution") {
  auto g = load_pass_input("conv_ln_gelu_scale");
  REQUIRE(fuse_ln_gelu_scale(*g));
  for (Node* n : g->nodes())
    if (n->op == "conv_transpose3d") n->attrs.set("groups", AttrValue::Int(2));
  std::string before = to_text(*g);
  CHECK(conv_rejection(*g).find("groups=2") != std::string::npos);
  CHECK_FALSE(fuse_conv_ln_gelu_scale(*g));
  CHECK(to_text(*g) == before);
}

TEST_CASE("forward_passes turns the flagship chain into one node, and only with fusion on") {
  ScopedEnv fuse_on("MINIDL_NO_FUSE", nullptr);
  auto g = load_pass_input("conv_ln_gelu_scale");
  CHECK(forward_passes(true).run(*g));
  CHECK(to_text(*g) == read_pass_data("conv_ln_gelu_scale.out.txt"));

  ScopedEnv fuse_off("MINIDL_NO_FUSE", "1");
  auto h = load_pass_input("conv_ln_gelu_scale");
  CHECK_FALSE(forward_passes(true).run(*h));
  CHECK(to_text(*h) == read_pass_data("conv_ln_gelu_scale.in.txt"));
}

TEST_CASE("fused conv and unfused chain agree on the CPU, forward and all gradients (f32)") {
  check_fused_matches_unfused("conv_ln_gelu_scale", 1e-6);
  check_fused_matches_unfused("conv_no_bias", 1e-6);
}

}  // TEST_SUITE
