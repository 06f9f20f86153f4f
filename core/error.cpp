#include "core/error.h"

namespace minidl {
namespace detail {
void throw_error(const std::string& msg) { throw Error(msg); }
}  // namespace detail
}  // namespace minidl
