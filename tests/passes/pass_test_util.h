// Helpers for the pass tests: golden IR files, random feeds, and running a graph on the CPU.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "graph/dump.h"
#include "graph/executor.h"
#include "graph/graph.h"
#include "test_util.h"

namespace minidl_test {

// Reads tests/data/passes/<name>; a missing file fails the test loudly.
inline std::string read_pass_data(const std::string& name) {
  std::string path = std::string(MINIDL_TEST_DATA_DIR) + "/passes/" + name;
  std::ifstream f(path);
  INFO("golden file " << path);
  REQUIRE(f.good());
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// Parses <name>.in.txt and checks that the file is already in canonical form, so "unchanged"
// can be asserted against the file itself.
inline std::unique_ptr<minidl::Graph> load_pass_input(const std::string& name) {
  std::string text = read_pass_data(name + ".in.txt");
  auto g = minidl::parse_text(text);
  INFO(name << ".in.txt is not in canonical form");
  REQUIRE(minidl::to_text(*g) == text);
  return g;
}

// Random, never-zero feeds for every input and param of g: uniform [0.1, 1) for names starting
// with "x" (like torch.rand inputs), normal(0.3, 1) otherwise, each with its own seed.
inline std::map<std::string, minidl::Tensor> random_feeds(const minidl::Graph& g, uint64_t seed) {
  std::map<std::string, minidl::Tensor> feeds;
  std::vector<minidl::Value*> sources = g.inputs();
  for (minidl::Value* p : g.params()) sources.push_back(p);
  for (minidl::Value* v : sources) {
    const std::string& name = v->producer->name_attr();
    ++seed;
    feeds[name] = name.rfind("x", 0) == 0
                      ? minidl::Tensor::uniform(v->shape(), 0.1, 1.0, seed, v->dtype())
                      : minidl::Tensor::normal(v->shape(), 0.3, 1.0, seed, v->dtype());
  }
  return feeds;
}

inline std::vector<minidl::Tensor> run_cpu(const minidl::Graph& g,
                                           const std::map<std::string, minidl::Tensor>& feeds) {
  minidl::Executor ex(g, minidl::Device::cpu());
  return ex.run(feeds);
}

// Largest |value| of a tensor, for comparisons by absolute size.
inline double max_abs(const minidl::Tensor& t) {
  double m = 0;
  for (double v : t.cpu().to_vector()) m = std::max(m, std::abs(v));
  return m;
}

// Sets (or, given nullptr, unsets) an environment variable for a scope, then restores it, so
// the tests behave the same whatever the caller's environment holds.
struct ScopedEnv {
  std::string name;
  bool had = false;
  std::string old;
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ScopedEnv(const std::string& n, const char* v) : name(n) {
    if (const char* o = std::getenv(n.c_str())) {
      had = true;
      old = o;
    }
    if (v)
      ::setenv(n.c_str(), v, 1);
    else
      ::unsetenv(n.c_str());
  }
  ~ScopedEnv() {
    if (had)
      ::setenv(name.c_str(), old.c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

}  // namespace minidl_test
