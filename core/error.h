// Error reporting for minidl: every failure is a minidl::Error whose message names
// the op, the tensor and the shapes involved. MINIDL_CHECK builds such a message
// from any streamable pieces.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace minidl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void throw_error(const std::string& msg);
}  // namespace detail

}  // namespace minidl

// MINIDL_CHECK(cond, "op: tensor ", name, " has shape ", shape_str) -> throws minidl::Error.
#define MINIDL_CHECK(cond, ...)                                              \
  do {                                                                       \
    if (!(cond)) ::minidl::detail::throw_error(::minidl::detail::concat(__VA_ARGS__)); \
  } while (0)

#define MINIDL_FAIL(...) ::minidl::detail::throw_error(::minidl::detail::concat(__VA_ARGS__))
