// The flagship model (KernelBench level 2, problem 34) built from minidl modules, with PyTorch's
// parameter names (conv_transpose.weight, layer_norm.bias, ...), and a small command-line parser
// shared by the examples and the benchmark.
#pragma once
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "nn/modules.h"

namespace minidl {
namespace examples {

struct FlagshipConfig {
  int64_t batch = 32, in_channels = 32, out_channels = 64;
  std::vector<int64_t> dims{16, 32, 32};  // D, H, W of the input
  int64_t kernel = 4, stride = 2, padding = 1;
  double eps = 1e-5, scale = 1.0;
  std::string approximate = "none";

  // The reduced size used on machines without a GPU (same structure, 1/2048 of the work).
  static FlagshipConfig reduced() {
    FlagshipConfig c;
    c.batch = 2;
    c.in_channels = 8;
    c.out_channels = 16;
    c.dims = {4, 8, 8};
    return c;
  }
  Shape input_shape() const { return {batch, in_channels, dims[0], dims[1], dims[2]}; }
  int64_t out_dim(int64_t in) const { return (in - 1) * stride - 2 * padding + kernel; }
  Shape output_shape() const {
    return {batch, out_channels, out_dim(dims[0]), out_dim(dims[1]), out_dim(dims[2])};
  }
  std::string str() const {
    std::ostringstream os;
    os << "x " << shape_str(input_shape()) << " -> ConvTranspose3d(" << in_channels << "->" << out_channels << ", k="
       << kernel << ", s=" << stride << ", p=" << padding << ") -> LayerNorm(" << out_dim(dims[2]) << ", eps=" << eps
       << ") -> GELU(" << approximate << ") -> x" << scale << " = y " << shape_str(output_shape());
    return os.str();
  }
};

inline std::shared_ptr<nn::Sequential> make_flagship(const FlagshipConfig& c) {
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("conv_transpose", std::make_shared<nn::ConvTranspose3d>(
                                     nn::ConvTranspose3dOptions(c.in_channels, c.out_channels, c.kernel)
                                         .stride(c.stride)
                                         .padding(c.padding)));
  // LayerNorm over the last dim only: W_out, as in the PyTorch model (not the channels).
  m->push_back("layer_norm", std::make_shared<nn::LayerNorm>(nn::LayerNormOptions({c.out_dim(c.dims[2])}).eps(c.eps)));
  m->push_back("gelu", std::make_shared<nn::GELU>(nn::GELUOptions().approximate(c.approximate)));
  m->push_back("scale", std::make_shared<nn::Scale>(c.scale));
  return m;
}

// Minimal "--key value" / "--flag" parser.
class Args {
 public:
  Args(int argc, char** argv) : args_(argv + 1, argv + argc) {}
  bool flag(const std::string& name) {
    for (size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == name) {
        args_.erase(args_.begin() + static_cast<long>(i));
        return true;
      }
    return false;
  }
  bool has(const std::string& name) const {
    for (const auto& a : args_)
      if (a == name) return true;
    return false;
  }
  std::string get(const std::string& name, const std::string& def) {
    for (size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == name) {
        MINIDL_CHECK(i + 1 < args_.size(), "option ", name, " needs a value");
        std::string v = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return v;
      }
    return def;
  }
  int64_t get_int(const std::string& name, int64_t def) {
    std::string v = get(name, "");
    if (v.empty()) return def;
    char* end = nullptr;
    long long r = std::strtoll(v.c_str(), &end, 10);
    MINIDL_CHECK(*end == 0, "option ", name, ": '", v, "' is not an integer");
    return r;
  }
  double get_float(const std::string& name, double def) {
    std::string v = get(name, "");
    if (v.empty()) return def;
    char* end = nullptr;
    double r = std::strtod(v.c_str(), &end);
    MINIDL_CHECK(*end == 0, "option ", name, ": '", v, "' is not a number");
    return r;
  }
  void finish() const {  // unknown options are errors, not silently ignored
    MINIDL_CHECK(args_.empty(), "unknown option '", args_.empty() ? "" : args_[0], "'");
  }

 private:
  std::vector<std::string> args_;
};

// Reads the model options shared by the examples. With no size options and no GPU the reduced
// size is used; `reduced` reports whether that happened.
inline FlagshipConfig parse_flagship_config(Args& a, Device dev, bool* reduced) {
  const bool sized = a.has("--batch") || a.has("--in-channels") || a.has("--out-channels") || a.has("--dims");
  FlagshipConfig c = (dev.is_cpu() && !sized && !a.has("--full")) ? FlagshipConfig::reduced() : FlagshipConfig();
  a.flag("--full");
  *reduced = dev.is_cpu() && !sized && c.batch != FlagshipConfig().batch;
  c.batch = a.get_int("--batch", c.batch);
  c.in_channels = a.get_int("--in-channels", c.in_channels);
  c.out_channels = a.get_int("--out-channels", c.out_channels);
  std::string dims = a.get("--dims", "");
  if (!dims.empty()) {
    c.dims.clear();
    std::stringstream ss(dims);
    std::string tok;
    while (std::getline(ss, tok, ',')) c.dims.push_back(std::stoll(tok));
    MINIDL_CHECK(c.dims.size() == 3, "--dims needs D,H,W, got '", dims, "'");
  }
  c.kernel = a.get_int("--kernel", c.kernel);
  c.stride = a.get_int("--stride", c.stride);
  c.padding = a.get_int("--padding", c.padding);
  c.eps = a.get_float("--eps", c.eps);
  c.scale = a.get_float("--scale", c.scale);
  c.approximate = a.get("--approximate", c.approximate);
  return c;
}

inline Device parse_device_option(Args& a) {
  std::string d = a.get("--device", "auto");
  if (d == "auto") return cuda::cuda_available() ? Device::cuda() : Device::cpu();
  Device dev = parse_device(d);
  MINIDL_CHECK(!dev.is_cuda() || cuda::cuda_available(), "--device cuda: no CUDA device is available",
               cuda::built_with_cuda() ? "" : " (minidl was built without CUDA)");
  return dev;
}

}  // namespace examples
}  // namespace minidl
