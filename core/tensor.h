// Tensor: a dense, contiguous n-d array with shape, strides, dtype and device over shared storage.
// Views (reshape) share storage; everything else allocates. CUDA storage comes from the caching
// allocator in core/cuda_runtime.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace minidl {

enum class DType { F32, F64 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f32", "f64"

enum class DeviceType { CPU, CUDA };
struct Device {
  DeviceType type = DeviceType::CPU;
  static Device cpu() { return {DeviceType::CPU}; }
  static Device cuda() { return {DeviceType::CUDA}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type; }
  bool operator!=(const Device& o) const { return type != o.type; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda"; }
};
Device parse_device(const std::string& s);  // "cpu" | "cuda"

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2,3,4]"
Shape contiguous_strides(const Shape& s);

// Raw bytes on one device; freed (or returned to the CUDA cache) when the last Tensor lets go.
class Storage {
 public:
  Storage(size_t bytes, Device dev);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return dev_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  Device dev_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device dev = Device::cpu());
  // Seeded, reproducible random tensors (generated on the CPU, then moved).
  static Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed,
                        DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor normal(const Shape& shape, double mean, double stddev, uint64_t seed,
                       DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  std::string describe() const;  // "f32[2,3] on cpu"

  // Typed pointer to the first element; checks that T matches the dtype.
  template <class T> T* data();
  template <class T> const T* data() const;
  void* raw_data() const;

  // Element access on CPU tensors (any dtype, read as double).
  double get(int64_t flat_index) const;
  void set(int64_t flat_index, double v);
  double at(const std::vector<int64_t>& index) const;

  Tensor to(Device dev) const;
  Tensor to(DType dtype) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor clone() const;
  void copy_from(const Tensor& src);  // same shape and dtype, any devices
  void fill_(double value);
  Tensor reshape(const Shape& shape) const;  // view; -1 allowed once
  std::vector<double> to_vector() const;    // copy of all elements as double

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_, strides_;
  DType dtype_ = DType::F32;
};

template <> float* Tensor::data<float>();
template <> double* Tensor::data<double>();
template <> const float* Tensor::data<float>() const;
template <> const double* Tensor::data<double>() const;

// Comparisons used by tests and checks (CPU tensors, any dtype).
double max_abs_diff(const Tensor& a, const Tensor& b);
double rel_l2_error(const Tensor& out, const Tensor& ref);
bool all_finite(const Tensor& t);

}  // namespace minidl
