// The whole flagship model on the GPU against the CPU backend: forward and every gradient of a
// training step, with fusion on (the fused conv kernel and its gradient) and off (the unfused
// kernels), on shapes that take the fast paths (C_in 32, W 32) and the general ones (C_in 8).
#include <cmath>

#include "examples/flagship_model.h"
#include "nn/compiled.h"
#include "test_util.h"

using namespace minidl;

TEST_SUITE("cuda/model") {
  TEST_CASE("training step on the GPU matches the CPU, fused and unfused") {
    if (!minidl_test::require_gpu()) return;
    for (auto [cin, dims] : {std::pair<int64_t, std::vector<int64_t>>{32, {2, 3, 32}}, {8, {3, 5, 32}}}) {
      examples::FlagshipConfig cfg;
      cfg.batch = 2;
      cfg.in_channels = cin;
      cfg.dims = dims;
      nn::manual_seed(77);
      auto model = examples::make_flagship(cfg);
      for (auto& [name, p] : model->named_parameters())  // a non-trivial LayerNorm affine
        if (name.rfind("layer_norm", 0) == 0) p->data = Tensor::uniform(p->data.shape(), 0.5, 1.5, 78);
      Tensor x = Tensor::uniform(cfg.input_shape(), 0, 1, 79);
      Tensor gy = Tensor::normal(cfg.output_shape(), 0, 1, 80);
      for (bool fuse : {true, false}) {
        const std::string what = "C_in " + std::to_string(cin) + (fuse ? " fused" : " unfused");
        INFO(what);
        auto run = [&](Device dev) {
          model->to(dev);
          for (auto& p : model->parameters()) p->grad = Tensor();
          nn::CompiledModule cm(model, x.shape(), nn::CompileOptions().device(dev).fuse(fuse).grad_input(true));
          nn::StepResult r = cm.forward_backward_grad(x.to(dev), gy.to(dev));
          std::vector<Tensor> outs{r.output.cpu(), r.grad_input.cpu()};
          for (auto& p : model->parameters()) outs.push_back(p->grad.cpu());
          if (dev.is_cuda() && fuse)
            CHECK(cm.grad_graph().count_op("fused_conv_transpose3d_ln_gelu_scale") == 1);
          return outs;
        };
        std::vector<Tensor> cpu = run(Device::cpu()), gpu = run(Device::cuda());
        const char* names[] = {"y", "grad x", "grad conv weight", "grad conv bias", "grad ln weight", "grad ln bias"};
        for (size_t i = 0; i < cpu.size(); ++i) {
          if (i == 3) {  // zero in exact arithmetic: rounding noise of a sum over every row, judged by size
            CHECK_MESSAGE(max_abs_diff(gpu[i], cpu[i]) < 1e-2, names[i]);
            continue;
          }
          minidl_test::check_close(gpu[i], cpu[i], 2e-3, names[i]);  // TF32 tensor-core paths
        }
      }
      model->to(Device::cpu());
    }
  }
}
