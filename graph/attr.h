// Typed node attributes: int, float, string, int list, bool. Each op's schema (ops/registry.h)
// declares which attributes it takes, their kinds and defaults; unknown names are rejected.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace minidl {

enum class AttrKind { Int, Float, String, Ints, Bool };
const char* attr_kind_name(AttrKind k);

struct AttrValue {
  AttrKind kind = AttrKind::Int;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  bool b = false;

  static AttrValue Int(int64_t v) { AttrValue a; a.kind = AttrKind::Int; a.i = v; return a; }
  static AttrValue Float(double v) { AttrValue a; a.kind = AttrKind::Float; a.f = v; return a; }
  static AttrValue Str(std::string v) { AttrValue a; a.kind = AttrKind::String; a.s = std::move(v); return a; }
  static AttrValue IntList(std::vector<int64_t> v) { AttrValue a; a.kind = AttrKind::Ints; a.ints = std::move(v); return a; }
  static AttrValue Bool(bool v) { AttrValue a; a.kind = AttrKind::Bool; a.b = v; return a; }
  std::string str() const;  // stable text form used by dumps: 3, 1e-05, "none", [2,2,2], true
  bool operator==(const AttrValue& o) const;
};

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<const std::string, AttrValue>> l) : m_(l) {}
  void set(const std::string& k, AttrValue v) { m_[k] = std::move(v); }
  bool has(const std::string& k) const { return m_.count(k) != 0; }
  const AttrValue& get(const std::string& k) const;  // throws naming the key
  int64_t get_int(const std::string& k) const;
  double get_float(const std::string& k) const;
  const std::string& get_str(const std::string& k) const;
  const std::vector<int64_t>& get_ints(const std::string& k) const;
  bool get_bool(const std::string& k) const;
  const std::map<std::string, AttrValue>& items() const { return m_; }  // sorted: stable dumps
  void erase(const std::string& k) { m_.erase(k); }

 private:
  std::map<std::string, AttrValue> m_;
};

}  // namespace minidl
