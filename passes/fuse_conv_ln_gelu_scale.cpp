// conv_transpose3d -> fused_ln_gelu_scale  =>
//   fused_conv_transpose3d_ln_gelu_scale(x, conv_weight, conv_bias?, ln_weight, ln_bias)
//     {stride, padding, output_padding, eps, approximate, factor, precise=false, operands="auto"}
// A forced "f16" needs C_in a multiple of 16; for other C_in the fused op gets "auto" (TF32).
//
// Runs after fuse_ln_gelu_scale, so it only has to recognise a two-node chain. The fused kernel
// handles a narrow family of shapes (see ops/fused_conv_support.h); anything else stays as two
// ops, which are still correct, just slower.
#include "graph/graph.h"
#include "ops/fused_conv_support.h"
#include "passes/fusion.h"
#include "passes/pattern.h"

namespace minidl {

namespace {

std::string conv_groups_is_one(const Graph&, const ChainMatch& m) {
  const Node* conv = m.nodes[0];
  int64_t groups = conv->attrs.has("groups") ? conv->attrs.get_int("groups") : 1;
  if (groups != 1) return "conv_transpose3d has groups=" + std::to_string(groups) + ", the fused op needs 1";
  return "";
}

// The fused op reads the conv bias only if present and always needs the epilogue's weight and
// bias; and the epilogue must be reading exactly the conv output.
std::string operands_fit(const Graph&, const ChainMatch& m) {
  const Node* conv = m.nodes[0];
  const Node* ep = m.nodes[1];
  if (conv->inputs.size() < 2 || !conv->inputs[0] || !conv->inputs[1])
    return "conv_transpose3d lacks its input or weight";
  if (ep->inputs.size() != 3 || !ep->inputs[1] || !ep->inputs[2])
    return "fused_ln_gelu_scale lacks its weight or bias";
  if (ep->inputs[0]->type != conv->output(0)->type)
    return "fused_ln_gelu_scale reads " + ep->inputs[0]->type.str() + " but the conv writes " +
           conv->output(0)->type.str();
  return "";
}

// Asks the kernel's own support rule, so the pass and the kernel cannot disagree.
std::string kernel_supports_shapes(const Graph&, const ChainMatch& m) {
  const Node* conv = m.nodes[0];
  const Shape& y = conv->output(0)->shape();
  int64_t normalized = y.empty() ? 0 : y.back();
  std::string why = fused_conv_unsupported_reason(conv->inputs[0]->shape(), conv->inputs[1]->shape(),
                                                  conv->attrs.get_ints("stride"), conv->attrs.get_ints("padding"),
                                                  conv->attrs.get_ints("output_padding"), normalized);
  return why.empty() ? "" : "fused kernel does not support this convolution: " + why;
}

}  // namespace

ChainPattern conv_ln_gelu_scale_pattern() {
  return ChainPattern{"fuse_conv_ln_gelu_scale",
                      {"conv_transpose3d", "fused_ln_gelu_scale"},
                      {single_consumer_chain, conv_groups_is_one, operands_fit, kernel_supports_shapes}};
}

bool fuse_conv_ln_gelu_scale(Graph& g, bool precise, FusedConvOperands operands) {
  MatchResult r = match_chains(g, conv_ln_gelu_scale_pattern());
  for (const ChainMatch& m : r.legal) {
    Node* conv = m.nodes[0];
    Node* ep = m.nodes[1];
    Value* conv_bias = conv->inputs.size() > 2 ? conv->inputs[2] : nullptr;
    Attrs attrs{{"stride", conv->attrs.get("stride")},
                {"padding", conv->attrs.get("padding")},
                {"output_padding", conv->attrs.get("output_padding")},
                {"eps", ep->attrs.get("eps")},
                {"approximate", ep->attrs.get("approximate")},
                {"factor", ep->attrs.get("factor")},
                {"precise", AttrValue::Bool(precise)},
                {"operands", AttrValue::Str(fused_conv_operands_name(
                                 operands == FusedConvOperands::kF16 && !fused_conv_f16_supported(conv->inputs[0]->shape()[1])
                                     ? FusedConvOperands::kAuto
                                     : operands))}};
    Node* fused = g.add_node("fused_conv_transpose3d_ln_gelu_scale",
                             {conv->inputs[0], conv->inputs[1], conv_bias, ep->inputs[1], ep->inputs[2]}, attrs);
    // y, mean and rstd all move over: after the first fusion, the stats may feed a backward.
    for (size_t i = 0; i < ep->outputs.size(); ++i) g.replace_all_uses(ep->output(static_cast<int>(i)), fused->output(static_cast<int>(i)));
    g.erase_node(ep);
    g.erase_node(conv);
  }
  return !r.legal.empty();
}

}  // namespace minidl
