// Bad inputs are rejected when the node is built, with a minidl::Error naming the op and the
// offending shapes or attribute.
#include <functional>
#include <optional>

#include "op_test_util.h"

using namespace minidl;

namespace {

// Runs f, which must throw minidl::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  std::string msg;
  try {
    f();
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  REQUIRE_MESSAGE(!msg.empty(), "expected a minidl::Error containing '" << parts.at(0) << "'");
  for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "missing '" << p << "'");
}

// Builds one node of `op` on fresh f32 inputs of the given shapes (empty optional = nullptr).
void add_op(const std::string& op, const std::vector<std::optional<Shape>>& shapes, const Attrs& a = {},
            const std::vector<DType>& dtypes = {}) {
  Graph g;
  std::vector<Value*> ins;
  for (size_t i = 0; i < shapes.size(); ++i)
    ins.push_back(shapes[i] ? g.add_input("in" + std::to_string(i), *shapes[i], i < dtypes.size() ? dtypes[i] : DType::F32)
                            : nullptr);
  g.add_node(op, ins, a);
}

Attrs ints(const std::string& k, std::vector<int64_t> v) { return {{k, AttrValue::IntList(std::move(v))}}; }

}  // namespace

TEST_SUITE("ops/errors") {
  TEST_CASE("elementwise: mismatched shapes and dtypes") {
    for (const char* op : {"add", "sub", "mul"})
      expect_error([&] { add_op(op, {Shape{2, 3}, Shape{3, 2}}); }, {op, "[2,3]", "[3,2]"});
    expect_error([] { add_op("add", {Shape{2}, Shape{2}}, {}, {DType::F32, DType::F64}); }, {"add", "f64"});
    expect_error([] { add_op("full", {}, {{"shape", AttrValue::IntList({2})}, {"value", AttrValue::Float(1)},
                                           {"dtype", AttrValue::Str("f16")}}); },
                 {"full", "dtype", "f16"});
    expect_error([] { add_op("mse_loss", {Shape{4}, Shape{5}}); }, {"mse_loss", "[4]", "[5]"});
    expect_error([] { add_op("mse_loss", {Shape{4}, Shape{4}}, {{"reduction", AttrValue::Str("avg")}}); },
                 {"mse_loss", "reduction", "avg"});
    expect_error([] { add_op("gelu_backward", {Shape{4}, Shape{2, 2}}); }, {"gelu_backward", "[4]", "[2,2]"});
  }

  TEST_CASE("reduce, expand, reshape: bad dims and shapes") {
    expect_error([] { add_op("sum", {Shape{2, 3}}, ints("dims", {2})); }, {"sum", "dim 2", "rank 2"});
    expect_error([] { add_op("mean", {Shape{2, 3}}, ints("dims", {1, -1})); }, {"mean", "twice"});
    expect_error([] { add_op("expand", {Shape{3, 2}}, ints("shape", {4, 3})); }, {"expand", "[3,2]", "[4,3]"});
    expect_error([] { add_op("expand", {Shape{3, 2}}, ints("shape", {2})); }, {"expand", "fewer dims"});
    expect_error([] { add_op("reshape", {Shape{2, 3}}, ints("shape", {4, 2})); }, {"reshape", "[2,3]", "[4,2]"});
    expect_error([] { add_op("reshape", {Shape{2, 3}}, ints("shape", {-1, -1})); }, {"reshape", "more than one -1"});
  }

  TEST_CASE("attributes: unknown names, wrong kinds, bad values") {
    expect_error([] { add_op("conv_transpose3d", {Shape{1, 2, 2, 2, 2}, Shape{2, 3, 2, 2, 2}}, ints("dilation", {1, 1, 1})); },
                 {"conv_transpose3d", "unknown attribute", "dilation"});
    expect_error([] { add_op("conv_transpose3d", {Shape{1, 2, 2, 2, 2}, Shape{2, 3, 2, 2, 2}},
                             {{"stride", AttrValue::Int(2)}}); },
                 {"conv_transpose3d", "stride"});
    expect_error([] { add_op("gelu", {Shape{4}}, {{"approximate", AttrValue::Str("fast")}}); },
                 {"gelu", "approximate", "fast"});
    expect_error([] { add_op("gelu_backward", {Shape{4}, Shape{4}}, {{"approximate", AttrValue::Str("erf")}}); },
                 {"gelu_backward", "approximate"});
    expect_error([] { add_op("fused_ln_gelu_scale", {Shape{2, 4}, Shape{4}, Shape{4}}, {{"approximate", AttrValue::Str("x")}}); },
                 {"fused_ln_gelu_scale", "approximate"});
    expect_error([] { add_op("layer_norm", {Shape{2, 4}}); }, {"layer_norm", "normalized_shape"});  // required
  }

  TEST_CASE("conv_transpose3d: rank, channels, zero-size dims, output_padding, output size, groups, bias") {
    const Shape x = {1, 2, 3, 3, 3}, w = {2, 4, 3, 3, 3};
    expect_error([&] { add_op("conv_transpose3d", {Shape{2, 3, 3, 3}, w}); }, {"conv_transpose3d", "'x'", "rank 5", "[2,3,3,3]"});
    expect_error([&] { add_op("conv_transpose3d", {x, Shape{2, 4, 3, 3}}); }, {"conv_transpose3d", "'weight'", "rank 5"});
    expect_error([&] { add_op("conv_transpose3d", {Shape{1, 3, 3, 3, 3}, w}); },
                 {"conv_transpose3d", "channels", "[1,3,3,3,3]", "[2,4,3,3,3]"});
    expect_error([&] { add_op("conv_transpose3d", {Shape{1, 2, 0, 3, 3}, w}); }, {"conv_transpose3d", "zero-size", "[1,2,0,3,3]"});
    expect_error([&] { add_op("conv_transpose3d", {x, Shape{2, 0, 3, 3, 3}}); }, {"conv_transpose3d", "zero-size"});
    Attrs op_pad = {{"stride", AttrValue::IntList({2, 2, 2})}, {"output_padding", AttrValue::IntList({0, 2, 0})}};
    expect_error([&] { add_op("conv_transpose3d", {x, w}, op_pad); }, {"conv_transpose3d", "output_padding", "[0,2,0]"});
    expect_error([&] { add_op("conv_transpose3d", {Shape{1, 2, 1, 1, 1}, Shape{2, 4, 1, 1, 1}}, ints("padding", {1, 0, 0})); },
                 {"conv_transpose3d", "not positive"});
    expect_error([&] { add_op("conv_transpose3d", {x, w}, {{"groups", AttrValue::Int(2)}}); }, {"conv_transpose3d", "groups"});
    expect_error([&] { add_op("conv_transpose3d", {x, w, Shape{3}}); }, {"conv_transpose3d", "'bias'", "[3]", "[4]"});
    expect_error([&] { add_op("conv_transpose3d", {x, w}, ints("stride", {0, 1, 1})); }, {"conv_transpose3d", "stride"});
    expect_error([&] { add_op("conv_transpose3d", {x, w}, ints("stride", {2, 2})); }, {"conv_transpose3d", "stride", "3 entries"});
    expect_error([&] { add_op("conv_transpose3d", {x, w}, {}, {DType::F32, DType::F64}); }, {"conv_transpose3d", "f64"});
    Attrs gi = {{"input_shape", AttrValue::IntList({1, 2, 4, 3, 3})}};
    expect_error([&] { add_op("conv_transpose3d_grad_input", {Shape{1, 4, 5, 5, 5}, w}, gi); },
                 {"conv_transpose3d_grad_input", "[1,4,5,5,5]", "[1,2,4,3,3]"});
    expect_error([&] { add_op("conv_transpose3d_grad_weight", {x, Shape{2, 4, 5, 5, 5}}, ints("kernel_size", {3, 3, 3})); },
                 {"conv_transpose3d_grad_weight", "batch"});
  }

  TEST_CASE("layer_norm: normalized_shape not trailing, affine shapes, backward inputs") {
    expect_error([] { add_op("layer_norm", {Shape{2, 3, 4}}, ints("normalized_shape", {3})); },
                 {"layer_norm", "[3]", "[2,3,4]", "trailing"});
    expect_error([] { add_op("layer_norm", {Shape{2, 3, 4}}, ints("normalized_shape", {2, 3, 4, 5})); },
                 {"layer_norm", "[2,3,4,5]", "[2,3,4]"});
    expect_error([] { add_op("layer_norm", {Shape{2, 3, 4}, Shape{3, 4}}, ints("normalized_shape", {4})); },
                 {"layer_norm", "'weight'", "[3,4]", "[4]"});
    expect_error([] { add_op("layer_norm", {Shape{2, 4}, std::nullopt, Shape{5}}, ints("normalized_shape", {4})); },
                 {"layer_norm", "'bias'", "[5]"});
    expect_error([] { add_op("layer_norm_backward", {Shape{2, 4}, Shape{2, 4}, Shape{3}, Shape{2}}, ints("normalized_shape", {4})); },
                 {"layer_norm_backward", "'mean'", "[3]", "[2]"});
  }

  TEST_CASE("fused ops: affine shapes, missing inputs, conv checks under the fused name") {
    expect_error([] { add_op("fused_ln_gelu_scale", {Shape{2, 4}, Shape{5}, Shape{4}}); },
                 {"fused_ln_gelu_scale", "ln_weight", "[5]", "[4]"});
    const char* f = "fused_conv_transpose3d_ln_gelu_scale";
    const Shape x = {1, 2, 2, 2, 2}, cw = {2, 3, 2, 2, 2};  // y [1,3,3,3,3]
    expect_error([&] { add_op(f, {x, cw, std::nullopt, std::nullopt, Shape{3}}); }, {f, "ln_weight", "missing"});
    expect_error([&] { add_op(f, {x, cw, std::nullopt, Shape{4}, Shape{4}}); }, {f, "ln_weight", "[4]", "[3]"});
    expect_error([&] { add_op(f, {x, Shape{3, 3, 2, 2, 2}, std::nullopt, Shape{3}, Shape{3}}); }, {f, "channels"});
    expect_error([&] { add_op(f, {x, cw, std::nullopt, Shape{3}, Shape{3}}, {{"groups", AttrValue::Int(1)}}); },
                 {f, "unknown attribute", "groups"});
    expect_error([&] { add_op(f, {x, cw, std::nullopt, Shape{3}, Shape{3}}, {{"operands", AttrValue::Str("bf16")}}); },
                 {f, "operands", "bf16"});
    // FP16 operands need C_in a multiple of 16 (x has 2 channels); "auto" and "tf32" are fine.
    expect_error([&] { add_op(f, {x, cw, std::nullopt, Shape{3}, Shape{3}}, {{"operands", AttrValue::Str("f16")}}); },
                 {f, "f16", "multiple of 16", "[1,2,2,2,2]"});
    for (const char* ok : {"auto", "tf32"})
      CHECK_NOTHROW(add_op(f, {x, cw, std::nullopt, Shape{3}, Shape{3}}, {{"operands", AttrValue::Str(ok)}}));
    expect_error([&] { add_op("fused_ln_gelu_scale_backward", {Shape{2, 4}, Shape{2, 4}, Shape{4}, Shape{4}, Shape{2}, Shape{3}}); },
                 {"fused_ln_gelu_scale_backward", "'rstd'", "[3]", "[2]"});
  }

  TEST_CASE("gradients through layer_norm's mean / rstd are refused") {
    for (const char* op : {"layer_norm", "fused_ln_gelu_scale"})
      for (int out : {1, 2}) {
        Graph g;
        Value* x = g.add_input("x", {3, 4});
        Value* w = g.add_param("w", {4});
        Value* b = g.add_param("b", {4});
        Attrs a;
        if (std::string(op) == "layer_norm") a = ints("normalized_shape", {4});
        Node* n = g.add_node(op, {x, w, b}, a);
        Value* loss = g.add("sum", {g.add("add", {g.add("sum", {n->output(0)}), g.add("sum", {n->output(out)})})});
        expect_error([&] { append_backward(g, {loss}, {nullptr}, {x, w, b}); },
                     {std::string(op) + ": gradient through output '" + (out == 1 ? "mean" : "rstd") + "' is not supported"});
      }
  }
}
