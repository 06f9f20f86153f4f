// The pass manager and the standard pipelines: pass order, change reporting, verification after
// each pass, dumps (API and MINIDL_DUMP_DIR), and the MINIDL_NO_FUSE switch.
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

#include "pass_test_util.h"
#include "passes/fusion.h"
#include "passes/pass_manager.h"

using namespace minidl;
using namespace minidl_test;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed when the test ends.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("minidl_passes_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}


}  // namespace

TEST_SUITE("passes/pass_manager") {

TEST_CASE("passes run in order and run() reports whether any changed the graph") {
  auto g = load_pass_input("ln_gelu_scale");
  std::vector<std::string> log;
  PassManager pm("t-");
  pm.add({"first", [&](Graph&) { log.push_back("first"); return false; }});
  pm.add({"second", [&](Graph&) { log.push_back("second"); return false; }});
  CHECK_FALSE(pm.run(*g));
  CHECK(log == std::vector<std::string>{"first", "second"});

  PassManager fusing;
  fusing.add({"noop", [](Graph&) { return false; }});
  fusing.add({"fuse", fuse_ln_gelu_scale});
  CHECK(fusing.run(*g));
  CHECK(g->count_op("fused_ln_gelu_scale") == 1);
}

TEST_CASE("a pass that leaves an invalid graph is caught and named") {
  auto g = load_pass_input("ln_gelu_scale");
  PassManager pm;
  pm.add({"breaks_types", [](Graph& gr) {
            for (Node* n : gr.nodes())
              if (n->op == "gelu") n->output(0)->type.shape = {48};
            return true;
          }});
  try {
    pm.run(*g);
    FAIL("expected minidl::Error");
  } catch (const Error& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("breaks_types") != std::string::npos);
    CHECK(msg.find("gelu") != std::string::npos);
  }
}

TEST_CASE("dumps: before and after every pass, text and dot, through the API") {
  TempDir dir("api");
  ScopedEnv no_fuse("MINIDL_NO_FUSE", nullptr);
  auto g = load_pass_input("ln_gelu_scale");
  PassManager pm = forward_passes(true);
  pm.set_dump_dir(dir.path.string());
  CHECK(pm.run(*g));
  for (const char* stage : {"fwd-00-before", "fwd-01-fuse_ln_gelu_scale", "fwd-02-fuse_conv_ln_gelu_scale",
                            "fwd-03-dce"}) {
    INFO(stage);
    CHECK(fs::exists(dir.path / (std::string(stage) + ".txt")));
    CHECK(fs::exists(dir.path / (std::string(stage) + ".dot")));
  }
  std::string before = slurp(dir.path / "fwd-00-before.txt");
  std::string fused = slurp(dir.path / "fwd-01-fuse_ln_gelu_scale.txt");
  CHECK(before == read_pass_data("ln_gelu_scale.in.txt"));
  CHECK(before.find("fused_ln_gelu_scale") == std::string::npos);
  CHECK(fused == read_pass_data("ln_gelu_scale.out.txt"));
  CHECK(slurp(dir.path / "fwd-01-fuse_ln_gelu_scale.dot").find("fused_ln_gelu_scale") != std::string::npos);
  CHECK(slurp(dir.path / "fwd-03-dce.txt") == fused);
}

TEST_CASE("dumps: MINIDL_DUMP_DIR switches them on, the API folder wins over it") {
  TempDir env_dir("env"), api_dir("apiwins");
  {
    ScopedEnv no_fuse("MINIDL_NO_FUSE", nullptr);
    ScopedEnv env("MINIDL_DUMP_DIR", env_dir.path.string().c_str());
    auto g = load_pass_input("ln_gelu_scale");
    CHECK(backward_passes().run(*g) == false);
    CHECK(fs::exists(env_dir.path / "bwd-00-before.txt"));
    CHECK(fs::exists(env_dir.path / "bwd-01-dce.txt"));

    PassManager pm = forward_passes(true);
    pm.set_dump_dir(api_dir.path.string());
    pm.run(*g);
    CHECK(fs::exists(api_dir.path / "fwd-01-fuse_ln_gelu_scale.txt"));
    CHECK_FALSE(fs::exists(env_dir.path / "fwd-00-before.txt"));
  }
  // Without the variable and without a folder nothing is written.
  ScopedEnv no_dump("MINIDL_DUMP_DIR", nullptr);
  TempDir none("none");
  auto g = load_pass_input("ln_gelu_scale");
  forward_passes(true).run(*g);
  CHECK_FALSE(fs::exists(none.path));
}

TEST_CASE("forward_passes(true) fuses, forward_passes(false) does not") {
  ScopedEnv no_fuse("MINIDL_NO_FUSE", nullptr);
  auto g = load_pass_input("ln_gelu_scale");
  CHECK(fusion_enabled());
  CHECK(forward_passes(true).run(*g));
  CHECK(to_text(*g) == read_pass_data("ln_gelu_scale.out.txt"));

  auto h = load_pass_input("ln_gelu_scale");
  CHECK_FALSE(forward_passes(false).run(*h));
  CHECK(to_text(*h) == read_pass_data("ln_gelu_scale.in.txt"));
}

TEST_CASE("MINIDL_NO_FUSE=1 or true leaves the graph unchanged; other values do not") {
  for (const char* v : {"1", "true", "TRUE"}) {
    ScopedEnv env("MINIDL_NO_FUSE", v);
    INFO("MINIDL_NO_FUSE=" << v);
    CHECK_FALSE(fusion_enabled());
    auto g = load_pass_input("ln_gelu_scale_two_chains");
    CHECK_FALSE(forward_passes(true).run(*g));
    CHECK(to_text(*g) == read_pass_data("ln_gelu_scale_two_chains.in.txt"));
    CHECK(g->count_op("fused_ln_gelu_scale") == 0);
  }
  {
    ScopedEnv env("MINIDL_NO_FUSE", "0");
    CHECK(fusion_enabled());
    auto g = load_pass_input("ln_gelu_scale_two_chains");
    CHECK(forward_passes(true).run(*g));
    CHECK(g->count_op("fused_ln_gelu_scale") == 2);
  }
  ScopedEnv unset("MINIDL_NO_FUSE", nullptr);
  CHECK(fusion_enabled());
}

TEST_CASE("backward_passes removes what the backward graph does not need") {
  auto g = load_pass_input("dce");
  CHECK(backward_passes().run(*g));
  CHECK(to_text(*g) == read_pass_data("dce.out.txt"));
}

}  // TEST_SUITE
