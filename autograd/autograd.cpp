#include "autograd/autograd.h"

#include <map>
#include <set>

#include "ops/registry.h"

namespace minidl {

std::vector<Value*> append_backward(Graph& g, const std::vector<Value*>& outputs, const std::vector<Value*>& seeds,
                                    const std::vector<Value*>& wrt) {
  MINIDL_CHECK(outputs.size() == seeds.size(), "autograd: ", outputs.size(), " outputs but ", seeds.size(), " seeds");
  std::vector<Node*> forward = g.schedule();

  // Only nodes on a path from some wrt value to some output need differentiating.
  std::set<const Value*> depends_on_wrt(wrt.begin(), wrt.end());
  for (const Node* n : forward)
    for (const Value* v : n->inputs)
      if (v && depends_on_wrt.count(v)) {
        for (const Value* o : n->outputs) depends_on_wrt.insert(o);
        break;
      }

  std::map<const Value*, Value*> grad;  // accumulated gradient of each value
  auto accumulate = [&](const Value* v, Value* gv) {
    MINIDL_CHECK(gv->type == v->type, "autograd: gradient for a ", v->type.str(), " value has type ", gv->type.str(),
                 " (from the gradient rule of ", v->producer->op, "'s user)");
    auto it = grad.find(v);
    if (it == grad.end())
      grad[v] = gv;
    else
      it->second = g.add("add", {it->second, gv});
  };

  for (size_t i = 0; i < outputs.size(); ++i) {
    Value* o = outputs[i];
    Value* seed = seeds[i];
    if (!seed) {
      MINIDL_CHECK(o->type.shape.empty() || shape_numel(o->type.shape) == 1, "autograd: output ", o->type.str(),
                   " is not a scalar, so it needs an explicit seed gradient");
      seed = g.add("full", {}, Attrs{{"shape", AttrValue::IntList(o->type.shape)}, {"value", AttrValue::Float(1.0)},
                                     {"dtype", AttrValue::Str(dtype_name(o->type.dtype))}});
    }
    accumulate(o, seed);
  }

  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    Node* n = *it;
    if (n->is_source()) continue;
    bool needed = false;
    std::vector<Value*> gouts;
    for (const Value* o : n->outputs) {
      auto gi = grad.find(o);
      gouts.push_back(gi == grad.end() ? nullptr : gi->second);
      needed |= gi != grad.end();
    }
    bool any_input_needs = false;
    for (const Value* v : n->inputs)
      if (v && depends_on_wrt.count(v)) any_input_needs = true;
    if (!needed || !any_input_needs) continue;
    const OpSchema& s = op_schema(n->op);
    MINIDL_CHECK(static_cast<bool>(s.grad_rule), "autograd: op '", n->op, "' has no gradient rule, but a gradient ",
                 "must flow through it (node #", n->id, ", output ", n->output(0)->type.str(), ")");
    GradContext ctx{g, *n, gouts};
    std::vector<Value*> gins = s.grad_rule(ctx);
    MINIDL_CHECK(gins.size() == n->inputs.size(), "autograd: gradient rule of '", n->op, "' returned ", gins.size(),
                 " gradients for ", n->inputs.size(), " inputs");
    for (size_t k = 0; k < gins.size(); ++k)
      if (gins[k] && n->inputs[k] && depends_on_wrt.count(n->inputs[k])) accumulate(n->inputs[k], gins[k]);
  }

  std::vector<Value*> result;
  for (Value* w : wrt) {
    auto gi = grad.find(w);
    result.push_back(gi == grad.end() ? nullptr : gi->second);
  }
  return result;
}

}  // namespace minidl
