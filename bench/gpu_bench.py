#!/usr/bin/env python3
"""Benchmarks the flagship on one GPU: PyTorch eager, torch.compile (default mode), minidl without
fusion and minidl with fusion, forward and training step (forward + backward from a given dL/dy),
CUDA events, 3 warm-ups, median of 20, peak device memory above the inputs for the training step.
Also measures the two ceilings (device-to-device copy, TF32 matrix product). Prints one table last
and writes it to OUT_DIR/RESULTS.md.

usage: gpu_bench.py BUILD_DIR OUT_DIR [--reps N]
"""
import datetime
import os
import subprocess
import sys

import torch
import torch.nn as nn

REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 20


class Model(nn.Module):  # KernelBench level 2, problem 34
    def __init__(self):
        super().__init__()
        self.conv_transpose = nn.ConvTranspose3d(32, 64, 4, stride=2, padding=1, bias=True)
        self.layer_norm = nn.LayerNorm(64, eps=1e-5)
        self.scaling_factor = 1.0

    def forward(self, x):
        x = self.conv_transpose(x)
        x = self.layer_norm(x)
        x = torch.nn.functional.gelu(x)
        return x * self.scaling_factor


def time_ms(f, reps=REPS, warmup=3):
    for _ in range(warmup):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def torch_numbers(model, x, gy):
    res = {}
    for name, m in (("pytorch_eager", model), ("torch_compile", torch.compile(model))):
        with torch.no_grad():
            res[(name, "forward")] = time_ms(lambda: m(x)) + (0,)

        def step():
            for p in model.parameters():
                p.grad = None
            m(x).backward(gy)

        step()  # compile the backward
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t = time_ms(step)
        res[(name, "train_step")] = t + (torch.cuda.max_memory_allocated() - base,)
    return res


def ceilings():
    # Measured first in the run, so a longer warm-up lets the clocks settle (a 3-call warm-up once
    # read 2.57 TB/s where the steady copy runs at 2.97-3.00).
    a = torch.ones(2**28, device="cuda")
    b = torch.empty_like(a)
    t, _, _ = time_ms(lambda: b.copy_(a), reps=20, warmup=20)
    copy_tbs = 2 * a.numel() * 4 / (t * 1e-3) / 1e12
    del a, b
    torch.backends.cuda.matmul.allow_tf32 = True
    m = torch.randn(8192, 8192, device="cuda")
    t, _, _ = time_ms(lambda: m @ m, reps=20, warmup=10)
    torch.backends.cuda.matmul.allow_tf32 = False
    h = m.half()  # FP16 operands, FP32 accumulation: the fused kernel's default operand format
    th, _, _ = time_ms(lambda: torch.matmul(h, h), reps=20, warmup=10)
    return copy_tbs, 2 * 8192**3 / (t * 1e-3) / 1e12, 2 * 8192**3 / (th * 1e-3) / 1e12


def main():
    build, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    dev_name = torch.cuda.get_device_name()
    copy_tbs, tf32_tflops, f16_tflops = ceilings()
    model = Model().cuda()
    x = torch.rand(32, 32, 16, 32, 32, device="cuda")
    gy = torch.randn(32, 64, 32, 64, 64, device="cuda")
    res = torch_numbers(model, x, gy)
    del model, x, gy
    torch.cuda.empty_cache()

    p = subprocess.run([os.path.join(build, "bench_flagship"), "--device", "cuda", "--reps", str(REPS), "--kernels"],
                       check=True, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, what, med, lo, hi, peak = line.split()
            res[(name, what)] = (float(med), float(lo), float(hi), int(peak))

    commit = os.environ.get("MINIDL_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    eager_f, comp_f = res[("pytorch_eager", "forward")][0], res[("torch_compile", "forward")][0]
    eager_t, comp_t = res[("pytorch_eager", "train_step")][0], res[("torch_compile", "train_step")][0]
    lines = [
        f"Flagship (x [32,32,16,32,32] -> y [32,64,32,64,64]) on {dev_name}, "
        f"{datetime.date.today()}, commit {commit or 'unknown'}, median of {REPS} (min-max)",
        f"ceilings measured in this run: copy {copy_tbs:.2f} TB/s (read+write), TF32 matmul {tf32_tflops:.0f} TFLOP/s, "
        f"FP16 matmul {f16_tflops:.0f} TFLOP/s; forward floor {(2**30 + 2**26) / (copy_tbs * 1e12) * 1e3:.3f} ms (bytes), "
        f"{137.4e9 / (tf32_tflops * 1e12) * 1e3:.3f} ms (TF32 math), {137.4e9 / (f16_tflops * 1e12) * 1e3:.3f} ms (FP16 math)",
        "minidl_fused: FP16 tensor-core operands (TF32's mantissa) with the range test; minidl_fused_tf32: TF32 operands forced",
        "",
        "| variant | forward ms | x eager | x compile | fwd TFLOP/s | fwd GB/s | train step ms | x eager | x compile | train peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("pytorch_eager", "torch_compile", "minidl_unfused", "minidl_fused_tf32", "minidl_fused"):
        if (name, "forward") not in res:
            continue
        f, t = res[(name, "forward")], res[(name, "train_step")]
        lines.append(
            f"| {name} | {f[0]:.3f} ({f[1]:.3f}-{f[2]:.3f}) | {eager_f / f[0]:.2f} | {comp_f / f[0]:.2f} | "
            f"{137.4e9 / (f[0] * 1e-3) / 1e12:.0f} | {(2**30 + 2**26) / (f[0] * 1e-3) / 1e9:.0f} | "
            f"{t[0]:.3f} ({t[1]:.3f}-{t[2]:.3f}) | {eager_t / t[0]:.2f} | {comp_t / t[0]:.2f} | {t[3] / 2**20:.0f} |")
    # Single ops at the flagship size: time, and GB/s over the bytes each must move at least once.
    gib = 2**30
    op_bytes = {"fused_conv_ln_gelu_scale": gib + 2**26, "fused_conv_ln_gelu_scale_tf32": gib + 2**26,
                "conv_transpose3d": gib + 2**26,
                "conv_grad_input": gib + 2**26, "conv_grad_weight": gib + 2**26,
                "fused_ln_gelu_scale": 2 * gib + 2**25, "fused_ln_gelu_scale_bwd": 3 * gib + 2**25,
                "fused_ln_gelu_scale_bwd_nostats": 3 * gib}
    lines += ["", "| op alone (flagship size) | ms | floor ms (bytes at copy speed) | GB/s |", "| --- | --- | --- | --- |"]
    for name, nbytes in op_bytes.items():
        if ("kernel", name) in res:
            med, lo, hi, _ = res[("kernel", name)]
            lines.append(f"| {name} | {med:.3f} ({lo:.3f}-{hi:.3f}) | {nbytes / (copy_tbs * 1e12) * 1e3:.3f} | "
                         f"{nbytes / (med * 1e-3) / 1e9:.0f} |")
    table = "\n".join(lines)
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("# Benchmark results\n\n" + table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
