// CUDA kernels of the elementwise, scale, reshape, reduction and loss ops against the CPU ones.
#include "cuda_op_check.h"
#include "graph/executor.h"

using namespace minidl;
using namespace minidl_cuda_test;

namespace {

NodeBuilder unary(const std::string& op, const Shape& s, Attrs a = {}) {
  return [=](Graph& g, DType t) { return g.add_node(op, {g.add_input("x", s, t)}, a); };
}

NodeBuilder binary(const std::string& op, const Shape& s) {
  return [=](Graph& g, DType t) { return g.add_node(op, {g.add_input("a", s, t), g.add_input("b", s, t)}); };
}

}  // namespace

TEST_SUITE("cuda/elementwise") {
  TEST_CASE("add, sub, mul match the CPU on odd sizes") {
    if (!minidl_test::require_gpu()) return;
    for (const Shape& s : {Shape{1001}, Shape{3, 5, 7}, Shape{4, 256}}) {
      for (const char* op : {"add", "sub", "mul"}) {
        check_op(std::string(op) + shape_str(s), binary(op, s), {rand_f32(s, 1), rand_f32(s, 2, 0.5, 2.0)},
                 {kFp32Tol});
      }
    }
  }

  TEST_CASE("add runs in f64 too") {
    if (!minidl_test::require_gpu()) return;
    Graph g;
    Node* n = g.add_node("add", {g.add_input("a", {77}, DType::F64), g.add_input("b", {77}, DType::F64)});
    Tensor a = Tensor::uniform({77}, -1, 1, 3, DType::F64), b = Tensor::uniform({77}, -1, 1, 4, DType::F64);
    KernelContext ctx{*n, {a.to(Device::cuda()), b.to(Device::cuda())},
                      {minidl_test::poisoned({77}, DType::F64, Device::cuda())}};
    op_schema("add").cuda_kernel(ctx);
    Tensor y = ctx.out(0).cpu();
    for (int64_t i = 0; i < 77; ++i) CHECK(y.get(i) == a.get(i) + b.get(i));
  }

  TEST_CASE("full fills f32 and f64") {
    if (!minidl_test::require_gpu()) return;
    for (const char* dt : {"f32", "f64"}) {
      Graph g;
      Node* n = g.add_node("full", {}, Attrs{{"shape", AttrValue::IntList({3, 333})}, {"value", AttrValue::Float(-2.5)},
                                              {"dtype", AttrValue::Str(dt)}});
      const TensorType& tt = n->output(0)->type;
      KernelContext ctx{*n, {}, {minidl_test::poisoned(tt.shape, tt.dtype, Device::cuda())}};
      op_schema("full").cuda_kernel(ctx);
      Tensor y = ctx.out(0).cpu();
      for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(y.get(i) == -2.5);
    }
  }

  TEST_CASE("scale and reshape") {
    if (!minidl_test::require_gpu()) return;
    check_op("scale", unary("scale", {5, 201}, Attrs{{"factor", AttrValue::Float(-0.37)}}), {rand_f32({5, 201}, 5)},
             {kFp32Tol});
    check_op("scale aligned", unary("scale", {64, 64}, Attrs{{"factor", AttrValue::Float(3.0)}}),
             {rand_f32({64, 64}, 6)}, {kFp32Tol});
    check_op("reshape", unary("reshape", {6, 35}, Attrs{{"shape", AttrValue::IntList({5, -1, 3})}}),
             {rand_f32({6, 35}, 7)}, {0.0});
  }
}

TEST_SUITE("cuda/reduce") {
  TEST_CASE("sum and mean over various dims") {
    if (!minidl_test::require_gpu()) return;
    struct C {
      Shape s;
      std::vector<int64_t> dims;
      bool keep;
    };
    const std::vector<C> cases = {
        {{3, 5, 7}, {}, false},          {{3, 5, 7}, {0, 2}, true},     {{3, 5, 7}, {-1}, false},
        {{3, 70001}, {1}, false},        {{5000, 7}, {0}, false},       {{4, 6, 33, 10}, {0, 2, 3}, false},
        {{2, 3, 4, 5, 6}, {1, 3}, true}, {{300001}, {}, false},
    };
    for (const C& c : cases) {
      for (const char* op : {"sum", "mean"}) {
        Attrs a{{"dims", AttrValue::IntList(c.dims)}, {"keepdim", AttrValue::Bool(c.keep)}};
        // Non-zero mean so sums do not cancel to a tiny reference.
        check_op(std::string(op) + shape_str(c.s), unary(op, c.s, a), {rand_f32(c.s, 11, 0.0, 1.0)}, {kFp32Tol});
      }
    }
  }

  TEST_CASE("sum is deterministic") {
    if (!minidl_test::require_gpu()) return;
    Tensor x = rand_f32({1 << 20}, 12);
    auto b = unary("sum", {1 << 20});
    RunResult r1 = run_cpu_vs_cuda(b, {x}), r2 = run_cpu_vs_cuda(b, {x});
    CHECK(r1.gpu[0].get(0) == r2.gpu[0].get(0));
  }

  TEST_CASE("expand broadcasts") {
    if (!minidl_test::require_gpu()) return;
    check_op("expand", unary("expand", {3, 1, 5}, Attrs{{"shape", AttrValue::IntList({2, 3, 4, 5})}}),
             {rand_f32({3, 1, 5}, 13)}, {0.0});
    check_op("expand new dims", unary("expand", {7}, Attrs{{"shape", AttrValue::IntList({4, 3, 7})}}),
             {rand_f32({7}, 14)}, {0.0});
  }
}

TEST_SUITE("cuda/mse_loss") {
  TEST_CASE("mse_loss and its backward, mean and sum") {
    if (!minidl_test::require_gpu()) return;
    const Shape s{7, 131};
    for (const char* red : {"mean", "sum"}) {
      Attrs a{{"reduction", AttrValue::Str(red)}};
      check_op(std::string("mse_loss ") + red,
               [&](Graph& g, DType t) { return g.add_node("mse_loss", {g.add_input("x", s, t), g.add_input("y", s, t)}, a); },
               {rand_f32(s, 21), rand_f32(s, 22)}, {kFp32Tol});
      check_op(std::string("mse_loss_backward ") + red,
               [&](Graph& g, DType t) {
                 return g.add_node("mse_loss_backward",
                                   {g.add_input("g", {}, t), g.add_input("x", s, t), g.add_input("y", s, t)}, a);
               },
               {Tensor::uniform({}, 0.5, 2.0, 23), rand_f32(s, 24), rand_f32(s, 25)}, {kFp32Tol});
    }
  }
}

TEST_SUITE("cuda/devices") {
  TEST_CASE("a CPU tensor given to a CUDA kernel is a clear error") {
    if (!minidl_test::require_gpu()) return;
    Graph g;
    Node* n = g.add_node("gelu", {g.add_input("x", {4, 8})});
    KernelContext ctx{*n, {rand_f32({4, 8}, 31)}, {Tensor::empty({4, 8}, DType::F32, Device::cuda())}};
    CHECK_THROWS_WITH_AS(op_schema("gelu").cuda_kernel(ctx), doctest::Contains("CUDA kernel got input 'x'"),
                         minidl::Error);
    KernelContext ctx2{*n, {rand_f32({4, 8}, 32).to(Device::cuda())}, {Tensor::empty({4, 8})}};
    CHECK_THROWS_WITH_AS(op_schema("gelu").cuda_kernel(ctx2), doctest::Contains("got output"), minidl::Error);
  }

  TEST_CASE("f64 tensors are refused by f32-only CUDA kernels") {
    if (!minidl_test::require_gpu()) return;
    Graph g;
    Node* n = g.add_node("gelu", {g.add_input("x", {4, 8}, DType::F64)});
    KernelContext ctx{*n, {Tensor::uniform({4, 8}, -1, 1, 33, DType::F64, Device::cuda())},
                      {Tensor::empty({4, 8}, DType::F64, Device::cuda())}};
    CHECK_THROWS_WITH_AS(op_schema("gelu").cuda_kernel(ctx), doctest::Contains("supports f32 only"), minidl::Error);
  }

  TEST_CASE("the executor refuses feeds on the wrong device") {
    if (!minidl_test::require_gpu()) return;
    Graph g;
    Value* x = g.add_input("x", {4, 8});
    g.add_output(g.add("gelu", {x}));
    Executor cuda_ex(g, Device::cuda());
    CHECK_THROWS_AS(cuda_ex.run({{"x", rand_f32({4, 8}, 34)}}), minidl::Error);
    Executor cpu_ex(g, Device::cpu());
    CHECK_THROWS_AS(cpu_ex.run({{"x", rand_f32({4, 8}, 35).to(Device::cuda())}}), minidl::Error);
    // And the right device works.
    std::vector<Tensor> out = cuda_ex.run({{"x", rand_f32({4, 8}, 36).to(Device::cuda())}});
    CHECK(out.at(0).device().is_cuda());
  }
}

TEST_SUITE("cuda/runtime") {
  TEST_CASE("allocator caches blocks and tracks usage") {
    if (!minidl_test::require_gpu()) return;
    const size_t before = cuda::bytes_in_use();
    {
      Tensor t = Tensor::empty({1000}, DType::F32, Device::cuda());
      CHECK(cuda::bytes_in_use() >= before + 4000);
      CHECK(cuda::peak_bytes_in_use() >= cuda::bytes_in_use());
    }
    CHECK(cuda::bytes_in_use() == before);
    Tensor a = Tensor::full({5, 7}, 1.5, DType::F32, Device::cuda());
    Tensor b = a.to(DType::F64).cpu();
    for (int64_t i = 0; i < 35; ++i) CHECK(b.get(i) == 1.5);
    CHECK_FALSE(cuda::device_name().empty());
    cuda::empty_cache();
    cuda::synchronize();
  }

  TEST_CASE("an impossible allocation throws a clear out-of-memory error") {
    if (!minidl_test::require_gpu()) return;
    CHECK_THROWS_WITH_AS(cuda::allocate(size_t(1) << 50), doctest::Contains("CUDA out of memory"), minidl::Error);
  }
}
