#include "core/npy.h"

#include <cstring>
#include <fstream>
#include <vector>

namespace minidl {
namespace {

// Extracts the value text following 'key': in the header dict.
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  size_t k = header.find("'" + key + "'");
  MINIDL_CHECK(k != std::string::npos, "load_npy: '", path, "': header has no '", key, "' field: ", header);
  size_t colon = header.find(':', k);
  MINIDL_CHECK(colon != std::string::npos, "load_npy: '", path, "': malformed header: ", header);
  return header.substr(colon + 1);
}

Shape parse_shape(const std::string& text, const std::string& path) {
  size_t open = text.find('('), close = text.find(')');
  MINIDL_CHECK(open != std::string::npos && close != std::string::npos && open < close, "load_npy: '", path,
               "': malformed shape in header");
  Shape s;
  std::string inner = text.substr(open + 1, close - open - 1);
  size_t i = 0;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i >= inner.size()) break;
    size_t j = i;
    while (j < inner.size() && inner[j] >= '0' && inner[j] <= '9') ++j;
    MINIDL_CHECK(j > i, "load_npy: '", path, "': malformed shape '", inner, "'");
    s.push_back(std::stoll(inner.substr(i, j - i)));
    i = j;
  }
  return s;
}

}  // namespace

Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MINIDL_CHECK(f.good(), "load_npy: cannot open '", path, "'");
  char magic[8];
  f.read(magic, 8);
  MINIDL_CHECK(f.gcount() == 8 && std::memcmp(magic, "\x93NUMPY", 6) == 0, "load_npy: '", path,
               "' is not an .npy file (bad magic)");
  const int major = static_cast<unsigned char>(magic[6]);
  MINIDL_CHECK(major >= 1 && major <= 3, "load_npy: '", path, "': unsupported format version ", major);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    MINIDL_CHECK(f.gcount() == 2, "load_npy: '", path, "' is truncated in its header");
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    MINIDL_CHECK(f.gcount() == 4, "load_npy: '", path, "' is truncated in its header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  MINIDL_CHECK(header_len < (1u << 20), "load_npy: '", path, "': implausible header length ", header_len);
  std::string header(header_len, '\0');
  f.read(&header[0], header_len);
  MINIDL_CHECK(static_cast<uint32_t>(f.gcount()) == header_len, "load_npy: '", path, "' is truncated in its header");

  std::string descr = header_field(header, "descr", path);
  DType dtype;
  if (descr.find("<f4") != std::string::npos)
    dtype = DType::F32;
  else if (descr.find("<f8") != std::string::npos)
    dtype = DType::F64;
  else
    MINIDL_FAIL("load_npy: '", path, "': unsupported dtype (need little-endian f4 or f8): ", header);
  std::string order = header_field(header, "fortran_order", path);
  MINIDL_CHECK(order.find("False") != std::string::npos && order.find("False") < order.find(','),
               "load_npy: '", path, "': Fortran-ordered arrays are not supported");
  Shape shape = parse_shape(header_field(header, "shape", path), path);

  Tensor t = Tensor::empty(shape, dtype);
  f.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  MINIDL_CHECK(static_cast<size_t>(f.gcount()) == t.nbytes(), "load_npy: '", path, "' is truncated: expected ",
               t.nbytes(), " data bytes for ", t.describe(), ", found ", f.gcount());
  return t;
}

void save_npy(const std::string& path, const Tensor& t) {
  Tensor c = t.cpu();
  std::string shape = "(";
  for (size_t i = 0; i < c.shape().size(); ++i) shape += std::to_string(c.shape()[i]) + (c.shape().size() == 1 ? "," : (i + 1 < c.shape().size() ? ", " : ""));
  shape += ")";
  std::string header = std::string("{'descr': '") + (c.dtype() == DType::F32 ? "<f4" : "<f8") +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that magic(6) + version(2) + len(2) + header is a multiple of 64, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  MINIDL_CHECK(f.good(), "save_npy: cannot open '", path, "' for writing");
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(c.raw_data()), static_cast<std::streamsize>(c.nbytes()));
  MINIDL_CHECK(f.good(), "save_npy: failed writing '", path, "'");
}

}  // namespace minidl
