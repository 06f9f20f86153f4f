#include "nn/module.h"

#include <atomic>
#include <filesystem>

#include "core/npy.h"

namespace minidl {
namespace nn {

static std::atomic<uint64_t> g_seed{0x5eed};
void manual_seed(uint64_t seed) { g_seed = seed; }
uint64_t next_seed() { return g_seed.fetch_add(0x9E3779B97F4A7C15ull); }

Tracer::Tracer(Graph& g, const Module& root) : g_(g) {
  for (const auto& [name, p] : root.named_parameters()) names_[p.get()] = name;
}

Value* Tracer::param(const ParameterPtr& p) {
  auto it = bound_.find(p.get());
  if (it != bound_.end()) return it->second;
  auto n = names_.find(p.get());
  MINIDL_CHECK(n != names_.end(), "Tracer: a parameter of shape ", shape_str(p->data.shape()),
               " does not belong to the module being traced");
  Value* v = g_.add_param(n->second, p->data.shape(), p->data.dtype());
  bound_[p.get()] = v;
  return v;
}

ParameterPtr Module::register_parameter(const std::string& name, Tensor t) {
  auto p = std::make_shared<Parameter>();
  p->data = std::move(t);
  params_.emplace_back(name, p);
  return p;
}

std::vector<std::pair<std::string, ParameterPtr>> Module::named_parameters() const {
  std::vector<std::pair<std::string, ParameterPtr>> r = params_;
  for (const auto& [cname, child] : children_)
    for (const auto& [pname, p] : child->named_parameters()) r.emplace_back(cname + "." + pname, p);
  return r;
}

std::vector<ParameterPtr> Module::parameters() const {
  std::vector<ParameterPtr> r;
  for (const auto& np : named_parameters()) r.push_back(np.second);
  return r;
}

void Module::to(Device dev) {
  for (const auto& p : parameters()) {
    p->data = p->data.to(dev);
    if (p->grad.defined()) p->grad = p->grad.to(dev);
  }
}

void Module::save(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MINIDL_CHECK(!ec, "Module::save: cannot create '", dir, "': ", ec.message());
  for (const auto& [name, p] : named_parameters()) save_npy(dir + "/" + name + ".npy", p->data);
}

void Module::load(const std::string& dir) {
  for (const auto& [name, p] : named_parameters()) {
    Tensor t = load_npy(dir + "/" + name + ".npy");
    MINIDL_CHECK(t.shape() == p->data.shape(), "Module::load: '", name, "' in '", dir, "' has shape ",
                 shape_str(t.shape()), ", the module expects ", shape_str(p->data.shape()));
    p->data = t.to(p->data.dtype()).to(p->data.device());
  }
}

}  // namespace nn
}  // namespace minidl
