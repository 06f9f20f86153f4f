#include "ops/op_util.h"

#include <algorithm>

namespace minidl {
namespace ops {

void check_rank(const std::string& op, const std::string& name, const TensorType& t, int64_t rank) {
  MINIDL_CHECK(static_cast<int64_t>(t.shape.size()) == rank, op, ": input '", name, "' must have rank ", rank,
               ", got shape ", shape_str(t.shape));
}

void check_min_rank(const std::string& op, const std::string& name, const TensorType& t, int64_t rank) {
  MINIDL_CHECK(static_cast<int64_t>(t.shape.size()) >= rank, op, ": input '", name, "' must have rank >= ", rank,
               ", got shape ", shape_str(t.shape));
}

void check_no_zero_dims(const std::string& op, const std::string& name, const TensorType& t) {
  for (int64_t d : t.shape)
    MINIDL_CHECK(d > 0, op, ": input '", name, "' has a zero-size dimension: shape ", shape_str(t.shape));
}

void check_same_dtype(const std::string& op, const std::string& a_name, const TensorType& a,
                      const std::string& b_name, const TensorType& b) {
  MINIDL_CHECK(a.dtype == b.dtype, op, ": input '", a_name, "' is ", a.str(), " but '", b_name, "' is ", b.str(),
               " (dtypes must match)");
}

void check_shape(const std::string& op, const std::string& name, const TensorType& t, const Shape& expected,
                 const std::string& why) {
  MINIDL_CHECK(t.shape == expected, op, ": input '", name, "' has shape ", shape_str(t.shape), " but ", why,
               " requires ", shape_str(expected));
}

int64_t wrap_dim(const std::string& op, int64_t d, int64_t rank) {
  MINIDL_CHECK(d >= -rank && d < rank, op, ": dim ", d, " is out of range for rank ", rank);
  return d < 0 ? d + rank : d;
}

Shape leading_shape(const Shape& s, size_t keep) {
  return Shape(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(std::min(keep, s.size())));
}

std::vector<int64_t> ints_attr(const std::string& op, const Attrs& a, const std::string& name, size_t n,
                               int64_t min_value) {
  const std::vector<int64_t>& v = a.get_ints(name);
  MINIDL_CHECK(v.size() == n, op, ": attribute '", name, "' must have ", n, " entries, got ", a.get(name).str());
  for (int64_t x : v)
    MINIDL_CHECK(x >= min_value, op, ": attribute '", name, "' entries must be >= ", min_value, ", got ",
                 a.get(name).str());
  return v;
}

bool gelu_approximate_attr(const std::string& op, const Attrs& a) {
  const std::string& s = a.get_str("approximate");
  MINIDL_CHECK(s == "none" || s == "tanh", op, ": attribute 'approximate' must be \"none\" or \"tanh\", got \"", s,
               "\"");
  return s == "tanh";
}

Value* grad_scale(Graph& g, Value* v, double factor) {
  return g.add("scale", {v}, Attrs{{"factor", AttrValue::Float(factor)}});
}

Value* grad_reshape(Graph& g, Value* v, const Shape& shape) {
  if (v->shape() == shape) return v;
  return g.add("reshape", {v}, Attrs{{"shape", AttrValue::IntList(shape)}});
}

Attrs pick_attrs(const Attrs& a, const std::vector<std::string>& names) {
  Attrs r;
  for (const auto& n : names) r.set(n, a.get(n));
  return r;
}

void require_only_output0_grad(const GradContext& ctx, const std::vector<std::string>& output_names) {
  for (size_t i = 1; i < ctx.grad_outputs.size(); ++i)
    MINIDL_CHECK(ctx.grad_outputs[i] == nullptr, ctx.node.op, ": gradient through output '",
                 i < output_names.size() ? output_names[i] : std::to_string(i), "' is not supported");
}

}  // namespace ops
}  // namespace minidl
