#include "graph/attr.h"

#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace minidl {

const char* attr_kind_name(AttrKind k) {
  switch (k) {
    case AttrKind::Int: return "int";
    case AttrKind::Float: return "float";
    case AttrKind::String: return "string";
    case AttrKind::Ints: return "int list";
    case AttrKind::Bool: return "bool";
  }
  return "?";
}

std::string AttrValue::str() const {
  switch (kind) {
    case AttrKind::Int: return std::to_string(i);
    case AttrKind::Float: {
      // Shortest text that reads back to the same double, always with a '.' or exponent so the
      // parser keeps the kind.
      char buf[64];
      for (int prec = 6; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, f);
        if (std::strtod(buf, nullptr) == f) break;
      }
      std::string s = buf;
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
      return s;
    }
    case AttrKind::String: return "\"" + s + "\"";
    case AttrKind::Ints: {
      std::ostringstream os;
      os << "[";
      for (size_t k = 0; k < ints.size(); ++k) os << (k ? "," : "") << ints[k];
      os << "]";
      return os.str();
    }
    case AttrKind::Bool: return b ? "true" : "false";
  }
  return "?";
}

bool AttrValue::operator==(const AttrValue& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case AttrKind::Int: return i == o.i;
    case AttrKind::Float: return f == o.f;
    case AttrKind::String: return s == o.s;
    case AttrKind::Ints: return ints == o.ints;
    case AttrKind::Bool: return b == o.b;
  }
  return false;
}

const AttrValue& Attrs::get(const std::string& k) const {
  auto it = m_.find(k);
  MINIDL_CHECK(it != m_.end(), "attribute '", k, "' is not set");
  return it->second;
}

namespace {
const AttrValue& get_kind(const Attrs& a, const std::string& k, AttrKind kind) {
  const AttrValue& v = a.get(k);
  MINIDL_CHECK(v.kind == kind, "attribute '", k, "' is a ", attr_kind_name(v.kind), ", not a ", attr_kind_name(kind));
  return v;
}
}  // namespace

int64_t Attrs::get_int(const std::string& k) const { return get_kind(*this, k, AttrKind::Int).i; }
double Attrs::get_float(const std::string& k) const { return get_kind(*this, k, AttrKind::Float).f; }
const std::string& Attrs::get_str(const std::string& k) const { return get_kind(*this, k, AttrKind::String).s; }
const std::vector<int64_t>& Attrs::get_ints(const std::string& k) const { return get_kind(*this, k, AttrKind::Ints).ints; }
bool Attrs::get_bool(const std::string& k) const { return get_kind(*this, k, AttrKind::Bool).b; }

}  // namespace minidl
