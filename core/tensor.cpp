#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "core/cuda_runtime.h"

namespace minidl {

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 8; }
const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : "f64"; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda" || s == "gpu") return Device::cuda();
  MINIDL_FAIL("device: unknown device '", s, "' (expected cpu or cuda)");
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Storage::Storage(size_t bytes, Device dev) : bytes_(bytes), dev_(dev) {
  size_t b = bytes ? bytes : 1;
  if (dev.is_cpu()) {
    ptr_ = ::operator new(b, std::align_val_t(64));
  } else {
    ptr_ = cuda::allocate(b);
  }
}

Storage::~Storage() {
  if (!ptr_) return;
  if (dev_.is_cpu()) {
    ::operator delete(ptr_, std::align_val_t(64));
  } else {
    cuda::deallocate(ptr_);
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  for (int64_t d : shape)
    MINIDL_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), dev);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) { return full(shape, 0.0, dtype, dev); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device dev) { return full(shape, 1.0, dtype, dev); }
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}

namespace {
template <class Dist>
Tensor random_tensor(const Shape& shape, Dist dist, uint64_t seed, DType dtype, Device dev) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  std::mt19937_64 rng(seed);
  const int64_t n = t.numel();
  if (dtype == DType::F32) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(dist(rng));
  } else {
    double* p = t.data<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
  }
  return dev.is_cpu() ? t : t.to(dev);
}
}  // namespace

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype, Device dev) {
  MINIDL_CHECK(lo < hi, "Tensor::uniform: empty range [", lo, ", ", hi, ")");
  return random_tensor(shape, std::uniform_real_distribution<double>(lo, hi), seed, dtype, dev);
}

Tensor Tensor::normal(const Shape& shape, double mean, double stddev, uint64_t seed, DType dtype, Device dev) {
  MINIDL_CHECK(stddev > 0, "Tensor::normal: stddev must be positive, got ", stddev);
  return random_tensor(shape, std::normal_distribution<double>(mean, stddev), seed, dtype, dev);
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  MINIDL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "Tensor::from_vector: ", v.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape) {
  MINIDL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "Tensor::from_vector: ", v.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, DType::F64);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(double));
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t r = dim();
  int64_t i = d < 0 ? d + r : d;
  MINIDL_CHECK(i >= 0 && i < r, "Tensor::size: dim ", d, " out of range for ", describe());
  return shape_[static_cast<size_t>(i)];
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + device().str();
}

void* Tensor::raw_data() const {
  MINIDL_CHECK(defined(), "Tensor: access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

template <>
float* Tensor::data<float>() {
  MINIDL_CHECK(dtype_ == DType::F32, "Tensor::data<float>: tensor is ", describe());
  return static_cast<float*>(raw_data());
}
template <>
double* Tensor::data<double>() {
  MINIDL_CHECK(dtype_ == DType::F64, "Tensor::data<double>: tensor is ", describe());
  return static_cast<double*>(raw_data());
}
template <>
const float* Tensor::data<float>() const {
  MINIDL_CHECK(dtype_ == DType::F32, "Tensor::data<float>: tensor is ", describe());
  return static_cast<const float*>(raw_data());
}
template <>
const double* Tensor::data<double>() const {
  MINIDL_CHECK(dtype_ == DType::F64, "Tensor::data<double>: tensor is ", describe());
  return static_cast<const double*>(raw_data());
}

double Tensor::get(int64_t i) const {
  MINIDL_CHECK(device().is_cpu(), "Tensor::get: element access needs a CPU tensor, got ", describe());
  MINIDL_CHECK(i >= 0 && i < numel(), "Tensor::get: index ", i, " out of range for ", describe());
  return dtype_ == DType::F32 ? static_cast<double>(data<float>()[i]) : data<double>()[i];
}

void Tensor::set(int64_t i, double v) {
  MINIDL_CHECK(device().is_cpu(), "Tensor::set: element access needs a CPU tensor, got ", describe());
  MINIDL_CHECK(i >= 0 && i < numel(), "Tensor::set: index ", i, " out of range for ", describe());
  if (dtype_ == DType::F32)
    data<float>()[i] = static_cast<float>(v);
  else
    data<double>()[i] = v;
}

double Tensor::at(const std::vector<int64_t>& index) const {
  MINIDL_CHECK(index.size() == shape_.size(), "Tensor::at: index of rank ", index.size(), " for ", describe());
  int64_t flat = 0;
  for (size_t d = 0; d < index.size(); ++d) {
    MINIDL_CHECK(index[d] >= 0 && index[d] < shape_[d], "Tensor::at: index ", shape_str(index),
                 " out of range for ", describe());
    flat += index[d] * strides_[d];
  }
  return get(flat);
}

Tensor Tensor::to(Device dev) const {
  MINIDL_CHECK(defined(), "Tensor::to: undefined tensor");
  if (dev == device()) return *this;
  Tensor t = empty(shape_, dtype_, dev);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  MINIDL_CHECK(defined(), "Tensor::to: undefined tensor");
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device());
  const size_t n = static_cast<size_t>(numel());
  if (device().is_cpu()) {
    if (dtype_ == DType::F32) {
      const float* s = data<float>();
      double* d = t.data<double>();
      for (size_t i = 0; i < n; ++i) d[i] = s[i];
    } else {
      const double* s = data<double>();
      float* d = t.data<float>();
      for (size_t i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
    }
  } else if (dtype_ == DType::F32) {
    cuda::convert_f32_to_f64(data<float>(), t.data<double>(), n);
  } else {
    cuda::convert_f64_to_f32(data<double>(), t.data<float>(), n);
  }
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  MINIDL_CHECK(defined() && src.defined(), "Tensor::copy_from: undefined tensor");
  MINIDL_CHECK(shape_ == src.shape_ && dtype_ == src.dtype_, "Tensor::copy_from: destination ", describe(),
               " and source ", src.describe(), " differ in shape or dtype");
  const size_t bytes = nbytes();
  if (bytes == 0) return;
  Device d = device(), s = src.device();
  if (d.is_cpu() && s.is_cpu())
    std::memcpy(raw_data(), src.raw_data(), bytes);
  else if (d.is_cuda() && s.is_cpu())
    cuda::memcpy_h2d(raw_data(), src.raw_data(), bytes);
  else if (d.is_cpu() && s.is_cuda())
    cuda::memcpy_d2h(raw_data(), src.raw_data(), bytes);
  else
    cuda::memcpy_d2d(raw_data(), src.raw_data(), bytes);
}

void Tensor::fill_(double value) {
  const size_t n = static_cast<size_t>(numel());
  if (n == 0) return;
  if (device().is_cpu()) {
    if (dtype_ == DType::F32) {
      float* p = data<float>();
      std::fill(p, p + n, static_cast<float>(value));
    } else {
      double* p = data<double>();
      std::fill(p, p + n, value);
    }
  } else if (dtype_ == DType::F32) {
    cuda::fill_f32(data<float>(), n, static_cast<float>(value));
  } else {
    cuda::fill_f64(data<double>(), n, value);
  }
}

Tensor Tensor::reshape(const Shape& shape) const {
  MINIDL_CHECK(defined(), "reshape: undefined tensor");
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MINIDL_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MINIDL_CHECK(s[i] >= 0, "reshape: negative dimension in ", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MINIDL_CHECK(known > 0 && numel() % known == 0, "reshape: cannot reshape ", describe(), " to ",
                 shape_str(shape));
    s[static_cast<size_t>(infer)] = numel() / known;
  }
  MINIDL_CHECK(shape_numel(s) == numel(), "reshape: cannot reshape ", describe(), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = cpu();
  std::vector<double> v(static_cast<size_t>(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i) v[static_cast<size_t>(i)] = c.get(i);
  return v;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  MINIDL_CHECK(a.shape() == b.shape(), "max_abs_diff: shapes ", shape_str(a.shape()), " and ",
               shape_str(b.shape()), " differ");
  Tensor x = a.cpu(), y = b.cpu();
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double d = std::fabs(x.get(i) - y.get(i));
    if (std::isnan(d)) return d;
    m = std::max(m, d);
  }
  return m;
}

double rel_l2_error(const Tensor& out, const Tensor& ref) {
  MINIDL_CHECK(out.shape() == ref.shape(), "rel_l2_error: shapes ", shape_str(out.shape()), " and ",
               shape_str(ref.shape()), " differ");
  Tensor x = out.cpu(), y = ref.cpu();
  double num = 0, den = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double d = x.get(i) - y.get(i);
    num += d * d;
    den += y.get(i) * y.get(i);
  }
  if (std::isnan(num)) return num;
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

bool all_finite(const Tensor& t) {
  Tensor c = t.cpu();
  for (int64_t i = 0; i < c.numel(); ++i)
    if (!std::isfinite(c.get(i))) return false;
  return true;
}

}  // namespace minidl
