"""Power references for bench/standalone/power_probe.sh: the flagship's TF32 FLOP count as one
cuBLAS TF32 matmul (8192 x 8192 @ 8192 x 1024 = 137 GFLOP) and a 1 GiB write (fill), each run back
to back for a few seconds while nvidia-smi samples power, SM clock and the software power cap."""
import subprocess
import time

import torch


def sample(fn, secs, label):
    torch.cuda.synchronize()
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=power.draw,clocks.sm,clocks_event_reasons.sw_power_cap",
                            "--format=csv,noheader,nounits", "-lms", "250"], stdout=subprocess.PIPE, text=True)
    t0, n = time.time(), 0
    while time.time() - t0 < secs:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        n += 10
    el = time.time() - t0
    smi.terminate()
    out = smi.communicate()[0].strip().splitlines()
    rows = [line.split(", ") for line in out[len(out) // 3:]]  # the first third: ramp-up
    watts = sum(float(r[0]) for r in rows) / len(rows)
    mhz = sum(float(r[1]) for r in rows) / len(rows)
    capped = sum(r[2].strip() == "Active" for r in rows)
    print(f"{label:34s} {el * 1e3 / n:8.4f} ms/call  {watts:6.1f} W  {mhz:6.0f} MHz  power-capped {capped}/{len(rows)}"
          f"  -> {watts * el / n * 1e3:6.1f} mJ/call", flush=True)


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 1024, device="cuda")
    sample(lambda: a @ b, 4, "TF32 matmul, 137 GFLOP")
    ah, bh = a.half(), b.half()
    sample(lambda: ah @ bh, 4, "FP16 matmul, 137 GFLOP")
    del a, b, ah, bh
    y = torch.empty(2**28, device="cuda")
    sample(lambda: y.fill_(1.0), 4, "fill 1 GiB (write only)")
    time.sleep(2)
    idle = subprocess.run(["nvidia-smi", "--query-gpu=power.draw,clocks.sm", "--format=csv,noheader"],
                          capture_output=True, text=True)
    print("idle:", idle.stdout.strip())


if __name__ == "__main__":
    main()
