// layer_norm -> gelu -> scale  =>  fused_ln_gelu_scale(x, weight, bias) {eps, approximate, factor}
//
// The fused op writes y = gelu(layer_norm(x)) * factor and the row statistics (mean, rstd) that
// its backward needs, so the two intermediates (1 GiB each at the flagship size) are never
// stored. Each legality rule below is its own predicate so a rejected chain says exactly why;
// the rules are the ones whose absence has made fusions change results elsewhere.
#include "graph/graph.h"
#include "passes/fusion.h"
#include "passes/pattern.h"

namespace minidl {

namespace {

// Only normalizing the last dim is fused: the kernel reduces along contiguous rows.
std::string ln_normalizes_last_dim(const Graph&, const ChainMatch& m) {
  const Node* ln = m.nodes[0];
  const std::vector<int64_t>& ns = ln->attrs.get_ints("normalized_shape");
  const Shape& xs = ln->inputs.at(0)->shape();
  if (ns.size() != 1)
    return "layer_norm normalizes " + std::to_string(ns.size()) + " dims (normalized_shape=" +
           ln->attrs.get("normalized_shape").str() + "), the fused op only the last one";
  if (xs.empty() || ns[0] != xs.back())
    return "layer_norm normalized_shape=" + ln->attrs.get("normalized_shape").str() +
           " is not the last dim of its input " + shape_str(xs);
  return "";
}

// The fused op always applies an affine weight and bias; an LN without them is left alone
// rather than inventing ones and zeros.
std::string ln_has_weight_and_bias(const Graph&, const ChainMatch& m) {
  const Node* ln = m.nodes[0];
  const Value* w = ln->inputs.size() > 1 ? ln->inputs[1] : nullptr;
  const Value* b = ln->inputs.size() > 2 ? ln->inputs[2] : nullptr;
  if (!w) return "layer_norm has no weight";
  if (!b) return "layer_norm has no bias";
  const Shape& xs = ln->inputs.at(0)->shape();
  Shape expected{xs.empty() ? 0 : xs.back()};
  if (w->shape() != expected || b->shape() != expected)
    return "layer_norm weight " + shape_str(w->shape()) + " / bias " + shape_str(b->shape()) +
           " do not match the normalized shape " + shape_str(expected);
  return "";
}

// Every link keeps the shape and dtype of x, and the weight and bias share x's dtype; a chain
// that changes either is not the elementwise epilogue the fused op computes.
std::string chain_types_agree(const Graph&, const ChainMatch& m) {
  const Node* ln = m.nodes[0];
  const TensorType& x = ln->inputs.at(0)->type;
  for (const Node* n : m.nodes) {
    const TensorType& in = n->inputs.at(0)->type;
    const TensorType& out = n->output(0)->type;
    if (in != x || out != x)
      return n->op + " maps " + in.str() + " to " + out.str() + ", expected " + x.str() + " along the chain";
  }
  for (size_t i = 1; i < ln->inputs.size(); ++i)
    if (ln->inputs[i] && ln->inputs[i]->dtype() != x.dtype)
      return std::string("layer_norm ") + (i == 1 ? "weight" : "bias") + " is " + ln->inputs[i]->type.str() +
             " but x is " + x.str();
  return "";
}

// The gelu variant is carried into the fused op; only the ones it implements may be fused.
std::string gelu_approximate_supported(const Graph&, const ChainMatch& m) {
  const Node* gelu = m.nodes[1];
  if (!gelu->attrs.has("approximate") || gelu->attrs.get("approximate").kind != AttrKind::String)
    return "gelu has no string 'approximate' attribute";
  const std::string& a = gelu->attrs.get_str("approximate");
  if (a != "none" && a != "tanh") return "gelu approximate=\"" + a + "\" is not supported by the fused op";
  return "";
}

// The factor must be a constant scalar known now (an attribute), since it becomes one.
std::string scale_factor_is_constant(const Graph&, const ChainMatch& m) {
  const Node* sc = m.nodes[2];
  if (sc->inputs.size() != 1)
    return "scale has " + std::to_string(sc->inputs.size()) + " inputs; only a constant factor can be fused";
  if (!sc->attrs.has("factor") || sc->attrs.get("factor").kind != AttrKind::Float)
    return "scale factor is not a constant float attribute";
  return "";
}

}  // namespace

ChainPattern ln_gelu_scale_pattern() {
  return ChainPattern{"fuse_ln_gelu_scale",
                      {"layer_norm", "gelu", "scale"},
                      {single_consumer_chain, ln_normalizes_last_dim, ln_has_weight_and_bias, chain_types_agree,
                       gelu_approximate_supported, scale_factor_is_constant}};
}

bool fuse_ln_gelu_scale(Graph& g) {
  MatchResult r = match_chains(g, ln_gelu_scale_pattern());
  for (const ChainMatch& m : r.legal) {
    Node* ln = m.nodes[0];
    Node* gelu = m.nodes[1];
    Node* sc = m.nodes[2];
    Attrs attrs{{"eps", ln->attrs.get("eps")},
                {"approximate", gelu->attrs.get("approximate")},
                {"factor", sc->attrs.get("factor")}};
    Node* fused = g.add_node("fused_ln_gelu_scale", {ln->inputs[0], ln->inputs[1], ln->inputs[2]}, attrs);
    // The chain's only visible result is the scale output; the LN statistics were checked unused.
    g.replace_all_uses(sc->output(0), fused->output(0));
    g.erase_node(sc);
    g.erase_node(gelu);
    g.erase_node(ln);
  }
  return !r.legal.empty();
}

}  // namespace minidl
