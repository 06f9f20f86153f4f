// The standard pass pipelines and the switch that turns fusion off (MINIDL_NO_FUSE=1), which
// benchmarks use for the unfused baseline and users for bisecting a suspected fusion bug.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "passes/fusion.h"

namespace minidl {

static bool env_flag(const char* name) {
  const char* env = std::getenv(name);
  if (!env) return false;
  std::string v(env);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return v == "1" || v == "true";
}

bool fusion_enabled() { return !env_flag("MINIDL_NO_FUSE"); }

PassManager forward_passes(bool fuse, bool precise, FusedConvOperands operands) {
  precise = precise || env_flag("MINIDL_PRECISE");
  if (const char* env = std::getenv("MINIDL_FUSED_CONV_OPERANDS"))
    MINIDL_CHECK(parse_fused_conv_operands(env, &operands),
                 "forward_passes: MINIDL_FUSED_CONV_OPERANDS must be auto, tf32 or f16, got \"", env, "\"");
  PassManager pm("fwd-");
  if (fuse && fusion_enabled()) {
    // Order matters: the conv fusion looks for the epilogue the first fusion produces.
    pm.add({"fuse_ln_gelu_scale", fuse_ln_gelu_scale});
    pm.add({"fuse_conv_ln_gelu_scale",
            [precise, operands](Graph& g) { return fuse_conv_ln_gelu_scale(g, precise, operands); }});
  }
  pm.add({"dce", dead_code_elimination});
  return pm;
}

PassManager backward_passes() {
  PassManager pm("bwd-");
  pm.add({"dce", dead_code_elimination});
  return pm;
}

}  // namespace minidl
