#include "nn/compiled.h"

#include "autograd/autograd.h"
#include "passes/fusion.h"

namespace minidl {
namespace nn {

CompiledModule::CompiledModule(std::shared_ptr<Module> m, Shape input_shape, CompileOptions o)
    : module_(std::move(m)), input_shape_(std::move(input_shape)), o_(std::move(o)) {
  MINIDL_CHECK(module_ != nullptr, "CompiledModule: null module");
}

CompiledModule::Compiled CompiledModule::build(Objective obj) {
  Compiled c;
  const char* gname = obj == Objective::None ? "forward" : obj == Objective::MSE ? "train_mse" : "train_grad";
  c.graph = std::make_unique<Graph>(gname);
  Graph& g = *c.graph;
  Value* x = g.add_input("x", input_shape_, o_.dtype_);
  Tracer tracer(g, *module_);
  g.set_outputs({module_->forward(tracer, x)});

  PassManager fwd = forward_passes(o_.fuse_, o_.precise_, o_.operands_);
  if (!o_.dump_dir_.empty()) fwd.set_dump_dir(o_.dump_dir_ + "/" + gname);
  fwd.run(g);
  Value* y = g.outputs().at(0);
  if (obj != Objective::None) {
    std::vector<Value*> wrt;
    for (const auto& [name, p] : module_->named_parameters()) {
      Value* v = g.find_param(name);
      MINIDL_CHECK(v, "CompiledModule: parameter '", name, "' is not used by the model's forward");
      wrt.push_back(v);
      c.param_names.push_back(name);
    }
    if (o_.grad_input_) wrt.push_back(x);
    std::vector<Value*> outs;
    std::vector<Value*> grads;
    if (obj == Objective::MSE) {
      Value* target = g.add_input("target", y->shape(), y->dtype());
      Value* loss = g.add("mse_loss", {y, target});
      grads = append_backward(g, {loss}, {nullptr}, wrt);
      outs = {loss, y};
    } else {
      Value* gy = g.add_input("grad_y", y->shape(), y->dtype());
      grads = append_backward(g, {y}, {gy}, wrt);
      outs = {y};
    }
    for (size_t i = 0; i < grads.size(); ++i) {
      Value* gv = grads[i];
      if (!gv)  // no path from this parameter to the loss: its gradient is zero
        gv = g.add("full", {}, Attrs{{"shape", AttrValue::IntList(wrt[i]->shape())}, {"value", AttrValue::Float(0)},
                                     {"dtype", AttrValue::Str(dtype_name(wrt[i]->dtype()))}});
      outs.push_back(gv);
    }
    g.set_outputs(outs);
    PassManager bwd = backward_passes();
    if (!o_.dump_dir_.empty()) bwd.set_dump_dir(o_.dump_dir_ + "/" + gname);
    bwd.run(g);
  }
  c.exec = std::make_unique<Executor>(g, o_.device_);
  return c;
}

std::map<std::string, Tensor> CompiledModule::feeds(const Tensor& x) {
  std::map<std::string, Tensor> f;
  f["x"] = x;
  for (const auto& [name, p] : module_->named_parameters()) f[name] = p->data;
  return f;
}

const Graph& CompiledModule::forward_graph() {
  if (!fwd_.graph) fwd_ = build(Objective::None);
  return *fwd_.graph;
}
const Graph& CompiledModule::mse_graph() {
  if (!mse_.graph) mse_ = build(Objective::MSE);
  return *mse_.graph;
}
const Graph& CompiledModule::grad_graph() {
  if (!grad_.graph) grad_ = build(Objective::GradY);
  return *grad_.graph;
}

Tensor CompiledModule::forward(const Tensor& x) {
  forward_graph();
  Tensor y = fwd_.exec->run(feeds(x)).at(0);
  last_peak_ = fwd_.exec->peak_intermediate_bytes();
  return y;
}

StepResult CompiledModule::run_training(Compiled& c, const Tensor& x, const std::string& extra_name,
                                        const Tensor& extra) {
  auto f = feeds(x);
  f[extra_name] = extra;
  std::vector<Tensor> outs = c.exec->run(f);
  last_peak_ = c.exec->peak_intermediate_bytes();
  StepResult r;
  size_t k = 0;
  if (extra_name == "target") r.loss = outs[k++];
  r.output = outs[k++];
  auto params = module_->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i].second;
    Tensor gsum = outs[k++];
    if (p.grad.defined()) {  // accumulate, as repeated backward() calls do
      Tensor a = p.grad.cpu(), b = gsum.cpu();
      Tensor s = Tensor::empty(a.shape(), a.dtype());
      for (int64_t j = 0; j < a.numel(); ++j) s.set(j, a.get(j) + b.get(j));
      gsum = s.to(p.data.device());
    }
    p.grad = gsum;
  }
  if (o_.grad_input_) r.grad_input = outs[k++];
  return r;
}

StepResult CompiledModule::forward_backward_mse(const Tensor& x, const Tensor& target) {
  mse_graph();
  return run_training(mse_, x, "target", target);
}

StepResult CompiledModule::forward_backward_grad(const Tensor& x, const Tensor& grad_y) {
  grad_graph();
  return run_training(grad_, x, "grad_y", grad_y);
}

}  // namespace nn
}  // namespace minidl
