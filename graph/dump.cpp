#include "graph/dump.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "ops/registry.h"

namespace minidl {
namespace {

// Names every value for printing: sources by their name, the rest %0, %1, ... in schedule order.
std::map<const Value*, std::string> value_names(const std::vector<Node*>& order) {
  std::map<const Value*, std::string> names;
  int next = 0;
  for (const Node* n : order) {
    for (const Value* v : n->outputs)
      names[v] = n->is_source() ? n->name_attr() : std::to_string(next++);
  }
  return names;
}

std::string attrs_text(const Attrs& a, bool skip_name) {
  std::string s;
  for (const auto& kv : a.items()) {
    if (skip_name && kv.first == "name") continue;
    s += (s.empty() ? "" : ", ") + kv.first + "=" + kv.second.str();
  }
  return s;
}

}  // namespace

std::string to_text(const Graph& g) {
  std::vector<Node*> order = g.schedule();
  auto names = value_names(order);
  std::ostringstream os;
  os << "graph " << g.name() << "(";
  bool first = true;
  for (const Node* n : order) {
    if (n->op != "input") continue;
    os << (first ? "" : ", ") << "%" << n->name_attr() << ": " << n->output(0)->type.str();
    first = false;
  }
  os << ") {\n";
  for (const Node* n : order) {
    if (n->op == "input") continue;
    os << "  ";
    for (size_t i = 0; i < n->outputs.size(); ++i) os << (i ? ", " : "") << "%" << names[n->outputs[i]];
    os << " = " << n->op;
    if (!n->is_source()) {
      os << "(";
      for (size_t i = 0; i < n->inputs.size(); ++i)
        os << (i ? ", " : "") << (n->inputs[i] ? "%" + names[n->inputs[i]] : std::string("_"));
      os << ")";
      std::string at = attrs_text(n->attrs, false);
      if (!at.empty()) os << " {" << at << "}";
    }
    os << " : ";
    for (size_t i = 0; i < n->outputs.size(); ++i) os << (i ? ", " : "") << n->outputs[i]->type.str();
    os << "\n";
  }
  os << "  return";
  for (size_t i = 0; i < g.outputs().size(); ++i) os << (i ? ", " : " ") << "%" << names[g.outputs()[i]];
  os << "\n}\n";
  return os.str();
}

std::string to_dot(const Graph& g) {
  std::vector<Node*> order = g.schedule();
  auto names = value_names(order);
  std::ostringstream os;
  os << "digraph \"" << g.name() << "\" {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n";
  for (const Node* n : order) {
    if (n->is_source()) {
      os << "  n" << n->id << " [shape=ellipse, label=\"" << n->op << " " << n->name_attr() << "\\n"
         << n->output(0)->type.str() << "\"];\n";
    } else {
      std::string at = attrs_text(n->attrs, false);
      std::string label = n->op;
      for (char& c : at)
        if (c == '"') c = '\'';
      if (!at.empty()) label += "\\n" + at;
      bool fused = n->op.rfind("fused_", 0) == 0;
      os << "  n" << n->id << " [shape=box" << (fused ? ", style=filled, fillcolor=\"#ffe8a0\"" : "") << ", label=\""
         << label << "\"];\n";
    }
  }
  for (const Node* n : order)
    for (const Value* v : n->inputs)
      if (v)
        os << "  n" << v->producer->id << " -> n" << n->id << " [label=\"%" << names[v] << " " << v->type.str()
           << "\"];\n";
  for (size_t i = 0; i < g.outputs().size(); ++i) {
    os << "  out" << i << " [shape=plaintext, label=\"return " << i << "\"];\n";
    os << "  n" << g.outputs()[i]->producer->id << " -> out" << i << ";\n";
  }
  os << "}\n";
  return os.str();
}

void dump_graph_to_dir(const Graph& g, const std::string& dir, const std::string& stage) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MINIDL_CHECK(!ec, "dump: cannot create folder '", dir, "': ", ec.message());
  for (const auto& [ext, text] : {std::pair<std::string, std::string>{".txt", to_text(g)}, {".dot", to_dot(g)}}) {
    std::string path = dir + "/" + stage + ext;
    std::ofstream f(path);
    MINIDL_CHECK(f.good(), "dump: cannot write '", path, "'");
    f << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Parser for the text form.
namespace {

class Parser {
 public:
  explicit Parser(const std::string& t) : t_(t) {}

  std::unique_ptr<Graph> parse() {
    expect_word("graph");
    auto g = std::make_unique<Graph>(ident());
    expect('(');
    if (!peek(')')) {
      do {
        expect('%');
        std::string name = ident();
        expect(':');
        TensorType ty = type();
        define(name, g->add_input(name, ty.shape, ty.dtype));
      } while (accept(','));
    }
    expect(')');
    expect('{');
    while (true) {
      skip_ws();
      if (t_.compare(pos_, 6, "return") == 0) break;
      statement(*g);
    }
    expect_word("return");
    std::vector<Value*> outs;
    if (!peek('}')) {
      do outs.push_back(ref());
      while (accept(','));
    }
    expect('}');
    skip_ws();
    if (pos_ != t_.size()) error("unexpected text after the closing '}'");
    g->set_outputs(outs);
    return g;
  }

 private:
  const std::string& t_;
  size_t pos_ = 0;
  std::map<std::string, Value*> values_;

  [[noreturn]] void error(const std::string& msg) const { error_at(pos_, msg); }
  [[noreturn]] void error_at(size_t at, const std::string& msg) const {
    int line = 1;
    for (size_t i = 0; i < at && i < t_.size(); ++i) line += t_[i] == '\n';
    MINIDL_FAIL("parse_text: line ", line, ": ", msg);
  }
  void skip_ws() {
    while (pos_ < t_.size()) {
      if (std::isspace(static_cast<unsigned char>(t_[pos_]))) {
        ++pos_;
      } else if (t_[pos_] == '#') {  // comment to end of line
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }
  bool peek(char c) {
    skip_ws();
    return pos_ < t_.size() && t_[pos_] == c;
  }
  bool accept(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!accept(c)) error(std::string("expected '") + c + "'" + near());
  }
  std::string near() const { return " near '" + t_.substr(pos_, 20) + "'"; }
  static bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; }
  std::string ident() {
    skip_ws();
    size_t b = pos_;
    while (pos_ < t_.size() && ident_char(t_[pos_])) ++pos_;
    if (b == pos_) error("expected a name" + near());
    return t_.substr(b, pos_ - b);
  }
  void expect_word(const std::string& w) {
    if (ident() != w) error("expected '" + w + "'");
  }
  void define(const std::string& name, Value* v) {
    if (values_.count(name)) error("value %" + name + " defined twice");
    values_[name] = v;
  }
  Value* ref() {
    expect('%');
    std::string name = ident();
    auto it = values_.find(name);
    if (it == values_.end()) error("use of undefined value %" + name);
    return it->second;
  }
  int64_t integer() {
    skip_ws();
    size_t b = pos_;
    if (pos_ < t_.size() && t_[pos_] == '-') ++pos_;
    while (pos_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[pos_]))) ++pos_;
    if (b == pos_ || (pos_ == b + 1 && t_[b] == '-')) error("expected an integer" + near());
    return std::stoll(t_.substr(b, pos_ - b));
  }
  TensorType type() {
    std::string dt = ident();
    TensorType ty;
    if (dt == "f32")
      ty.dtype = DType::F32;
    else if (dt == "f64")
      ty.dtype = DType::F64;
    else
      error("unknown dtype '" + dt + "'");
    expect('[');
    if (!peek(']')) {
      do ty.shape.push_back(integer());
      while (accept(','));
    }
    expect(']');
    return ty;
  }
  AttrValue attr_value() {
    skip_ws();
    if (accept('"')) {
      size_t b = pos_;
      while (pos_ < t_.size() && t_[pos_] != '"' && t_[pos_] != '\n') ++pos_;
      if (pos_ >= t_.size() || t_[pos_] != '"') error("unterminated string");
      std::string s = t_.substr(b, pos_ - b);
      ++pos_;
      return AttrValue::Str(s);
    }
    if (accept('[')) {
      std::vector<int64_t> v;
      if (!peek(']')) {
        do v.push_back(integer());
        while (accept(','));
      }
      expect(']');
      return AttrValue::IntList(v);
    }
    size_t b = pos_;
    while (pos_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[pos_])) || t_[pos_] == '.' ||
                                t_[pos_] == '-' || t_[pos_] == '+'))
      ++pos_;
    std::string w = t_.substr(b, pos_ - b);
    if (w.empty()) error("expected an attribute value" + near());
    if (w == "true" || w == "false") return AttrValue::Bool(w == "true");
    if (w.find_first_of(".eEni") != std::string::npos) {
      char* end = nullptr;
      double d = std::strtod(w.c_str(), &end);
      if (*end) error("malformed number '" + w + "'");
      return AttrValue::Float(d);
    }
    char* end = nullptr;
    long long i = std::strtoll(w.c_str(), &end, 10);
    if (*end) error("malformed attribute value '" + w + "'");
    return AttrValue::Int(i);
  }
  void statement(Graph& g) {
    skip_ws();
    const size_t start = pos_;  // errors found after the whole line was read point at its start
    std::vector<std::string> defs;
    do {
      expect('%');
      defs.push_back(ident());
    } while (accept(','));
    expect('=');
    std::string op = ident();
    std::vector<Value*> outs;
    if (op == "param") {
      expect(':');
      TensorType ty = type();
      if (defs.size() != 1) error("param defines exactly one value");
      outs.push_back(g.add_param(defs[0], ty.shape, ty.dtype));
    } else {
      if (!OpRegistry::instance().has(op)) error("unknown op '" + op + "'");
      std::vector<Value*> ins;
      expect('(');
      if (!peek(')')) {
        do {
          if (accept('_'))
            ins.push_back(nullptr);
          else
            ins.push_back(ref());
        } while (accept(','));
      }
      expect(')');
      Attrs attrs;
      if (accept('{')) {
        if (!peek('}')) {
          do {
            std::string key = ident();
            expect('=');
            attrs.set(key, attr_value());
          } while (accept(','));
        }
        expect('}');
      }
      expect(':');
      std::vector<TensorType> written;
      do written.push_back(type());
      while (accept(','));
      Node* n = nullptr;
      try {
        n = g.add_node(op, ins, attrs);
      } catch (const Error& e) {
        error_at(start, e.what());
      }
      if (n->outputs.size() != defs.size())
        error_at(start, op + " has " + std::to_string(n->outputs.size()) + " outputs, the line names " +
              std::to_string(defs.size()));
      if (written.size() != n->outputs.size()) error_at(start, "expected one type per output of " + op);
      for (size_t i = 0; i < written.size(); ++i)
        if (written[i] != n->outputs[i]->type)
          error_at(start, op + " output %" + defs[i] + " is written " + written[i].str() + " but its shape rule gives " +
                n->outputs[i]->type.str());
      outs = n->outputs;
    }
    for (size_t i = 0; i < defs.size(); ++i) define(defs[i], outs[i]);
  }
};

}  // namespace

std::unique_ptr<Graph> parse_text(const std::string& text) { return Parser(text).parse(); }

}  // namespace minidl
