#include <cmath>
#include <filesystem>

#include "examples/flagship_model.h"
#include "graph/dump.h"
#include "nn/compiled.h"
#include "nn/optim.h"
#include "test_util.h"

using namespace minidl;

TEST_SUITE("nn") {
  TEST_CASE("parameters are named and initialised as PyTorch does") {
    nn::manual_seed(1);
    auto m = examples::make_flagship(examples::FlagshipConfig());
    auto named = m->named_parameters();
    REQUIRE(named.size() == 4);
    CHECK(named[0].first == "conv_transpose.weight");
    CHECK(named[1].first == "conv_transpose.bias");
    CHECK(named[2].first == "layer_norm.weight");
    CHECK(named[3].first == "layer_norm.bias");
    CHECK(named[0].second->data.shape() == Shape{32, 64, 4, 4, 4});
    // kaiming_uniform(a=sqrt(5)) on a [C_in, C_out, k, k, k] weight: bound 1/sqrt(C_out*k^3) = 1/64.
    const double bound = 1.0 / 64.0;
    double lo = 1, hi = -1;
    for (auto* t : {&named[0].second->data, &named[1].second->data})
      for (int64_t i = 0; i < t->numel(); ++i) {
        lo = std::min(lo, t->get(i));
        hi = std::max(hi, t->get(i));
      }
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > 1.9 * bound);  // spread over the whole range
    CHECK(named[2].second->data.get(7) == 1.0);
    CHECK(named[3].second->data.get(7) == 0.0);
  }

  TEST_CASE("save and load round-trip with PyTorch names") {
    auto dir = (std::filesystem::temp_directory_path() / "minidl_nn_save").string();
    std::filesystem::remove_all(dir);
    auto cfg = examples::FlagshipConfig::reduced();
    nn::manual_seed(2);
    auto a = examples::make_flagship(cfg);
    a->save(dir);
    CHECK(std::filesystem::exists(dir + "/conv_transpose.weight.npy"));
    CHECK(std::filesystem::exists(dir + "/layer_norm.bias.npy"));
    nn::manual_seed(3);
    auto b = examples::make_flagship(cfg);
    CHECK(max_abs_diff(a->parameters()[0]->data, b->parameters()[0]->data) > 0);
    b->load(dir);
    for (size_t i = 0; i < 4; ++i) CHECK(max_abs_diff(a->parameters()[i]->data, b->parameters()[i]->data) == 0.0);
    auto wrong = cfg;
    wrong.out_channels = 8;
    auto c = examples::make_flagship(wrong);
    CHECK_THROWS_WITH_AS(c->load(dir), doctest::Contains("conv_transpose.weight"), Error);
  }

  TEST_CASE("the recorded forward graph is the user's chain, fused by the passes") {
    auto cfg = examples::FlagshipConfig::reduced();
    auto m = examples::make_flagship(cfg);
    nn::CompiledModule plain(m, cfg.input_shape(), nn::CompileOptions().fuse(false));
    CHECK(plain.forward_graph().count_op("layer_norm") == 1);
    CHECK(plain.forward_graph().count_op("gelu") == 1);
    nn::CompiledModule fused(m, cfg.input_shape());
    const Graph& fg = fused.forward_graph();
    CHECK(fg.count_op("layer_norm") == 0);
    CHECK(fg.count_op("gelu") == 0);
    CHECK(fg.count_op("fused_ln_gelu_scale") + fg.count_op("fused_conv_transpose3d_ln_gelu_scale") == 1);
  }

  TEST_CASE("SGD with momentum and Adam follow torch.optim's update rules") {
    auto p = std::make_shared<nn::Parameter>();
    p->data = Tensor::from_vector(std::vector<float>{1.0f, -2.0f}, {2});
    nn::SGD sgd({p}, nn::SGDOptions(0.1).momentum(0.9));
    p->grad = Tensor::from_vector(std::vector<float>{0.5f, 1.0f}, {2});
    sgd.step();  // v = g; w -= 0.1 v
    CHECK(p->data.get(0) == doctest::Approx(0.95));
    sgd.step();  // v = 0.9 g + g = 1.9 g
    CHECK(p->data.get(0) == doctest::Approx(0.95 - 0.1 * 0.95));
    sgd.zero_grad();
    CHECK_FALSE(p->grad.defined());
    sgd.step();  // no gradient: parameter untouched
    CHECK(p->data.get(0) == doctest::Approx(0.855));

    auto q = std::make_shared<nn::Parameter>();
    q->data = Tensor::from_vector(std::vector<float>{1.0f}, {1});
    nn::Adam adam({q}, nn::AdamOptions(0.01));
    q->grad = Tensor::from_vector(std::vector<float>{3.0f}, {1});
    adam.step();  // first Adam step moves by lr * sign(g) (bias-corrected m/sqrt(v) = 1)
    CHECK(q->data.get(0) == doctest::Approx(0.99).epsilon(1e-6));
  }
}

TEST_SUITE("examples/train") {
  TEST_CASE("training the reduced flagship makes the loss fall") {
    auto cfg = examples::FlagshipConfig::reduced();
    cfg.batch = 1;
    nn::manual_seed(10);
    auto teacher = examples::make_flagship(cfg);
    nn::manual_seed(11);
    auto student = examples::make_flagship(cfg);
    nn::CompiledModule tc(teacher, cfg.input_shape()), sc(student, cfg.input_shape());
    nn::Adam opt(student->parameters(), nn::AdamOptions(1e-2));
    double first = 0, last = 0;
    for (int step = 0; step < 40; ++step) {
      Tensor x = Tensor::uniform(cfg.input_shape(), 0, 1, 100 + step);
      Tensor target = tc.forward(x);
      opt.zero_grad();
      auto r = sc.forward_backward_mse(x, target);
      opt.step();
      last = r.loss.get(0);
      if (step == 0) first = last;
      REQUIRE(std::isfinite(last));
    }
    INFO("loss " << first << " -> " << last);
    CHECK(last < first / 3);
  }
}
