// NumPy .npy files (format 1.0-3.0, little-endian f4/f8, C order) so data moves to and from
// NumPy and PyTorch. Malformed or truncated files throw minidl::Error naming the file.
#pragma once
#include <string>

#include "core/tensor.h"

namespace minidl {

Tensor load_npy(const std::string& path);  // CPU tensor, f32 or f64 as stored
void save_npy(const std::string& path, const Tensor& t);  // any device; writes f4 or f8

}  // namespace minidl
