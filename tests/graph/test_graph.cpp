#include <filesystem>
#include <fstream>
#include <sstream>

#include "graph/dump.h"
#include "graph/executor.h"
#include "graph/graph.h"
#include "ops/registry.h"
#include "test_util.h"

using namespace minidl;

namespace {
std::string read_file(const std::string& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "cannot read " << p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The flagship's forward graph, small sizes, as a user's modules would record it.
std::unique_ptr<Graph> flagship_graph() {
  auto g = std::make_unique<Graph>("flagship");
  Value* x = g->add_input("x", {2, 4, 3, 4, 5});
  Value* w = g->add_param("conv_transpose.weight", {4, 6, 4, 4, 4});
  Value* b = g->add_param("conv_transpose.bias", {6});
  Value* gamma = g->add_param("layer_norm.weight", {10});
  Value* beta = g->add_param("layer_norm.bias", {10});
  Value* z = g->add("conv_transpose3d", {x, w, b},
                    {{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}});
  Value* n = g->add("layer_norm", {z, gamma, beta}, {{"normalized_shape", AttrValue::IntList({10})}});
  Value* a = g->add("gelu", {n});
  Value* y = g->add("scale", {a}, {{"factor", AttrValue::Float(0.5)}});
  g->set_outputs({y});
  return g;
}
}  // namespace

TEST_SUITE("graph/builder") {
  TEST_CASE("shape inference and defaults through the builder") {
    auto g = flagship_graph();
    const Value* y = g->outputs()[0];
    CHECK(y->type.str() == "f32[2,6,6,8,10]");
    Node* ln = y->producer->inputs[0]->producer->inputs[0]->producer;
    REQUIRE(ln->op == "layer_norm");
    CHECK(ln->outputs.size() == 3);
    CHECK(ln->output(1)->type.str() == "f32[2,6,6,8]");  // mean: one per row
    CHECK(ln->attrs.get_float("eps") == 1e-5);           // default filled in
    CHECK(g->count_op("param") == 4);
    CHECK_NOTHROW(verify(*g));
  }

  TEST_CASE("builder errors name the op, the input and the shapes") {
    Graph g("bad");
    Value* a = g.add_input("a", {2, 3});
    Value* b = g.add_input("b", {3, 2});
    CHECK_THROWS_WITH_AS(g.add("add", {a, b}), doctest::Contains("[2,3]"), Error);
    CHECK_THROWS_WITH_AS(g.add("add", {a, b}), doctest::Contains("add"), Error);
    CHECK_THROWS_WITH_AS(g.add("gelu", {a}, {{"approx", AttrValue::Str("tanh")}}),
                         doctest::Contains("unknown attribute 'approx'"), Error);
    CHECK_THROWS_WITH_AS(g.add("scale", {a}, {{"factor", AttrValue::Str("two")}}),
                         doctest::Contains("attribute 'factor' must be a float"), Error);
    CHECK_THROWS_WITH_AS(g.add("no_such_op", {a}), doctest::Contains("unknown op 'no_such_op'"), Error);
    CHECK_THROWS_WITH_AS(g.add("add", {a}), doctest::Contains("add: expects 2 inputs, got 1"), Error);
    CHECK_THROWS_WITH_AS(g.add_input("a", {1}), doctest::Contains("'a' is already used"), Error);
    Graph other("other");
    Value* c = other.add_input("c", {2, 3});
    CHECK_THROWS_WITH_AS(g.add("add", {a, c}), doctest::Contains("belongs to another graph"), Error);
    Value* x5 = g.add_input("x5", {2, 4, 3, 4, 5});
    Value* w = g.add_param("w", {4, 6, 4, 4, 4});
    Value* zconv = g.add("conv_transpose3d", {x5, w}, {{"stride", AttrValue::IntList({2, 2, 2})}});
    // LayerNorm over a shape that is not the trailing dims is rejected, as PyTorch does.
    CHECK_THROWS_WITH_AS(g.add("layer_norm", {zconv}, {{"normalized_shape", AttrValue::IntList({6})}}),
                         doctest::Contains("layer_norm"), Error);
  }

  TEST_CASE("verifier catches a stale type and an unproduced output") {
    auto g = flagship_graph();
    Value* y = g->outputs()[0];
    y->type.shape[0] = 3;  // corrupt the stored type
    CHECK_THROWS_WITH_AS(verify(*g), doctest::Contains("scale"), Error);
    y->type.shape[0] = 2;
    CHECK_NOTHROW(verify(*g));
    Graph empty("empty");
    empty.add_input("x", {1});
    CHECK_THROWS_WITH_AS(verify(empty), doctest::Contains("no outputs"), Error);
  }

  TEST_CASE("schedule is topological after rewrites and erase checks uses") {
    Graph g("s");
    Value* x = g.add_input("x", {4});
    Value* a = g.add("scale", {x}, {{"factor", AttrValue::Float(2.0)}});
    Value* b = g.add("gelu", {a});
    g.set_outputs({b});
    // Insert a node later in creation order but earlier in data order.
    Value* c = g.add("scale", {x}, {{"factor", AttrValue::Float(3.0)}});
    g.replace_all_uses(a, c);
    std::vector<Node*> order = g.schedule();
    auto pos = [&](const Value* v) { return std::find(order.begin(), order.end(), v->producer) - order.begin(); };
    CHECK(pos(c) < pos(b));
    CHECK_THROWS_WITH_AS(g.erase_node(c->producer), doctest::Contains("still used"), Error);
    g.erase_node(a->producer);
    CHECK(g.count_op("scale") == 1);
    CHECK_NOTHROW(verify(g));
  }
}

TEST_SUITE("graph/dump") {
  TEST_CASE("text dump matches the golden file and parses back to the same text") {
    auto g = flagship_graph();
    std::string text = to_text(*g);
    std::string golden = read_file(std::string(MINIDL_TEST_DATA_DIR) + "/graph/flagship_forward.txt");
    CHECK(text == golden);
    auto back = parse_text(text);
    CHECK(to_text(*back) == text);
    CHECK_NOTHROW(verify(*back));
  }

  TEST_CASE("DOT dump names every node and edge") {
    auto g = flagship_graph();
    std::string dot = to_dot(*g);
    CHECK(dot.rfind("digraph \"flagship\" {", 0) == 0);
    for (const char* s : {"conv_transpose3d", "layer_norm", "gelu", "scale", "param conv_transpose.weight",
                          "f32[2,6,6,8,10]", "return 0"})
      CHECK_MESSAGE(dot.find(s) != std::string::npos, s);
    CHECK(std::count(dot.begin(), dot.end(), '\n') > 15);
  }

  TEST_CASE("parser errors carry the line number") {
    CHECK_THROWS_WITH_AS(parse_text("graph g(%x: f32[2]) {\n  %0 = gelu(%y) : f32[2]\n  return %0\n}\n"),
                         doctest::Contains("line 2: use of undefined value %y"), Error);
    CHECK_THROWS_WITH_AS(parse_text("graph g(%x: f32[2]) {\n  %0 = gelu(%x) : f32[3]\n  return %0\n}\n"),
                         doctest::Contains("line 2: gelu output %0 is written f32[3] but its shape rule gives f32[2]"),
                         Error);
    CHECK_THROWS_WITH_AS(parse_text("graph g(%x: f32[2]) {\n  %0 = frobnicate(%x) : f32[2]\n  return %0\n}\n"),
                         doctest::Contains("unknown op 'frobnicate'"), Error);
    CHECK_THROWS_WITH_AS(parse_text("graph g(%x: i32[2]) {\n  return %x\n}\n"), doctest::Contains("unknown dtype"),
                         Error);
    CHECK_THROWS_WITH_AS(parse_text("graph g(%x: f32[2]) {\n  %0 = gelu(%x) : f32[2]\n"), doctest::Contains("line"),
                         Error);
  }

  TEST_CASE("dump_graph_to_dir writes text and dot") {
    auto dir = (std::filesystem::temp_directory_path() / "minidl_dump_test").string();
    std::filesystem::remove_all(dir);
    auto g = flagship_graph();
    dump_graph_to_dir(*g, dir, "00-before");
    CHECK(read_file(dir + "/00-before.txt") == to_text(*g));
    CHECK(read_file(dir + "/00-before.dot") == to_dot(*g));
  }
}

TEST_SUITE("graph/executor") {
  TEST_CASE("runs a graph, checks feeds, keeps outputs") {
    Graph g("e");
    Value* x = g.add_input("x", {3, 4});
    Value* w = g.add_param("w", {3, 4});
    Value* a = g.add("mul", {x, w});
    Value* b = g.add("add", {a, x});
    Value* s = g.add("sum", {b});
    g.set_outputs({s, a});
    Executor ex(g, Device::cpu());
    Tensor tx = Tensor::uniform({3, 4}, -1, 1, 1), tw = Tensor::uniform({3, 4}, -1, 1, 2);
    auto outs = ex.run({{"x", tx}, {"w", tw}});
    double ref = 0;
    for (int64_t i = 0; i < 12; ++i) ref += tx.get(i) * tw.get(i) + tx.get(i);
    CHECK(outs[0].get(0) == doctest::Approx(ref).epsilon(1e-6));
    CHECK(outs[1].get(5) == doctest::Approx(tx.get(5) * tw.get(5)));
    CHECK(ex.peak_intermediate_bytes() > 0);
    CHECK_THROWS_WITH_AS(ex.run({{"x", tx}}), doctest::Contains("no tensor fed for param 'w'"), Error);
    CHECK_THROWS_WITH_AS(ex.run({{"x", Tensor::uniform({4, 3}, 0, 1, 1)}, {"w", tw}}),
                         doctest::Contains("input 'x' expects f32[3,4] but was fed f32[4,3] on cpu"), Error);
    CHECK_THROWS_WITH_AS(ex.run({{"x", tx}, {"w", tw}, {"q", tw}}), doctest::Contains("feed 'q'"), Error);
    CHECK_THROWS_WITH_AS(ex.run({{"x", tx.to(DType::F64)}, {"w", tw}}), doctest::Contains("f64[3,4]"), Error);
  }

  TEST_CASE("frees intermediates after their last use") {
    // A chain of 6 elementwise ops over 1 MB tensors: freeing after last use keeps at most a
    // couple alive at once.
    Graph g("chain");
    Value* v = g.add_input("x", {256, 1024});
    for (int i = 0; i < 6; ++i) v = g.add("gelu", {v});
    g.set_outputs({v});
    Executor ex(g, Device::cpu());
    ex.run({{"x", Tensor::uniform({256, 1024}, -1, 1, 4)}});
    const size_t one = 256 * 1024 * 4;
    CHECK(ex.peak_intermediate_bytes() <= 2 * one);
    CHECK(ex.peak_intermediate_bytes() >= one);
  }

  TEST_CASE("optional outputs nobody reads are not computed; read ones are") {
    // The fused conv op's mean and rstd are optional: a graph that returns y alone has them
    // skipped (not allocated, not written), one that returns mean too gets mean and only mean.
    auto build = [](Graph& g) {
      Value* x = g.add_input("x", {1, 8, 2, 3, 32});
      Value* w = g.add_param("w", {8, 64, 4, 4, 4});
      Value* gm = g.add_param("g", {64});
      Value* bt = g.add_param("b", {64});
      return g.add_node("fused_conv_transpose3d_ln_gelu_scale", {x, w, nullptr, gm, bt},
                        {{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}});
    };
    const std::map<std::string, Tensor> feeds = {{"x", Tensor::uniform({1, 8, 2, 3, 32}, 0, 1, 41)},
                                                 {"w", Tensor::uniform({8, 64, 4, 4, 4}, -0.1, 0.1, 42)},
                                                 {"g", Tensor::uniform({64}, 0.5, 1.5, 43)},
                                                 {"b", Tensor::uniform({64}, -0.5, 0.5, 44)}};
    Graph g1("y_only"), g2("y_and_mean");
    Node* n1 = build(g1);
    g1.set_outputs({n1->output(0)});
    Node* n2 = build(g2);
    g2.set_outputs({n2->output(0), n2->output(1)});
    Executor e1(g1, Device::cpu()), e2(g2, Device::cpu());
    std::vector<Tensor> o1 = e1.run(feeds), o2 = e2.run(feeds);
    REQUIRE(o1.size() == 1);
    REQUIRE(o2.size() == 2);
    minidl_test::check_close(o1[0], o2[0], 0.0, "y with and without the statistics");
    // Peak: y alone, then y plus mean (rstd, unread, is still skipped).
    CHECK(e1.peak_intermediate_bytes() == o1[0].nbytes());
    CHECK(e2.peak_intermediate_bytes() == o1[0].nbytes() + o2[1].nbytes());
    // The mean that was computed is the conv output's row mean: recompute row 0 from y's graph
    // through the unfused chain's statistics (CPU kernel of layer_norm on the conv output).
    Graph g3("unfused_stats");
    Value* x = g3.add_input("x", {1, 8, 2, 3, 32});
    Value* w = g3.add_param("w", {8, 64, 4, 4, 4});
    Value* z = g3.add("conv_transpose3d", {x, w},
                      {{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}});
    Node* ln = g3.add_node("layer_norm", {z, nullptr, nullptr}, {{"normalized_shape", AttrValue::IntList({64})}});
    g3.set_outputs({ln->output(1)});
    Executor e3(g3, Device::cpu());
    std::vector<Tensor> o3 = e3.run({{"x", feeds.at("x")}, {"w", feeds.at("w")}});
    minidl_test::check_close(o2[1], o3[0].reshape(o2[1].shape()), 1e-5, "mean against layer_norm's");

    // layer_norm and fused_ln_gelu_scale too: y alone, then y and rstd.
    for (const char* op : {"layer_norm", "fused_ln_gelu_scale"}) {
      const bool ln = std::string(op) == "layer_norm";
      Attrs attrs = ln ? Attrs{{"normalized_shape", AttrValue::IntList({16})}} : Attrs{};
      const std::map<std::string, Tensor> f = {{"x", Tensor::uniform({6, 16}, -2, 2, 45)},
                                               {"g", Tensor::uniform({16}, 0.5, 1.5, 46)},
                                               {"b", Tensor::uniform({16}, -0.5, 0.5, 47)}};
      std::vector<Tensor> outs[2];
      size_t peaks[2];
      for (int with_rstd = 0; with_rstd < 2; ++with_rstd) {
        Graph g(op);
        Node* n = g.add_node(op, {g.add_input("x", {6, 16}), g.add_param("g", {16}), g.add_param("b", {16})}, attrs);
        g.set_outputs(with_rstd ? std::vector<Value*>{n->output(0), n->output(2)} : std::vector<Value*>{n->output(0)});
        Executor e(g, Device::cpu());
        outs[with_rstd] = e.run(f);
        peaks[with_rstd] = e.peak_intermediate_bytes();
      }
      minidl_test::check_close(outs[0][0], outs[1][0], 0.0, std::string(op) + ": y with and without rstd");
      CHECK(peaks[0] == outs[0][0].nbytes());
      CHECK(peaks[1] == outs[0][0].nbytes() + outs[1][1].nbytes());
      CHECK(outs[1][1].get(0) > 0.0);  // rstd written
    }
  }

  TEST_CASE("a CUDA graph on a machine without CUDA fails clearly") {
    if (cuda::cuda_available()) return;
    Graph g("c");
    Value* x = g.add_input("x", {4});
    g.set_outputs({g.add("gelu", {x})});
    CHECK_THROWS_AS(Executor(g, Device::cuda()).run({{"x", Tensor::uniform({4}, 0, 1, 1)}}), Error);
  }
}
