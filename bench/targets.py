"""Issue-2 speed targets on this CPU: B=4096, K=256, float32, forward+backward, fused vs the eager
reference vs torch.compile of the reference (compile time excluded), all ratios from one run.

    python bench/targets.py [--B 4096] [--K 256] [--repeats 30]
"""
import argparse
import time

import torch

import xvae_fast as xf
from xvae_fast import reference as R


def median_time(fn, repeats, warmup=10):
    # 10 warm-up calls: with 3, the first op timed in the process paid for a cold allocator (page
    # faults on its fresh output buffers): mixture_kl 8.1 ms first vs 6.6 ms timed again, same run.
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=4096)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    B, K = a.B, a.K
    torch.manual_seed(0)
    w = torch.rand(K) + 0.1
    prior = xf.MixturePrior(w / w.sum(), torch.randn(K, K), torch.rand(K, K) + 0.5)
    l, mu, lv = (torch.randn(B, K).requires_grad_() for _ in range(3))
    gz = torch.randn(B, K)

    def kl_step(fn):
        def run():
            total, _, _ = fn(l, mu, lv, prior, "mean")
            torch.autograd.grad(total, (l, mu, lv))
        return run

    def rt_step(fn):
        def run():
            z = fn(mu, lv, prior, "full")
            torch.autograd.grad(z, (mu, lv), gz)
        return run

    def rt_fwd(fn):
        return lambda: fn(mu.detach(), lv.detach(), prior, "full")

    comp_kl = torch.compile(R.mixture_kl)
    comp_rt = torch.compile(R.routed_transport)
    rows = []
    t = {}
    t["kl_fused"] = median_time(kl_step(xf.mixture_kl), a.repeats)
    t["kl_eager"] = median_time(kl_step(R.mixture_kl), a.repeats)
    t["kl_compile"] = median_time(kl_step(comp_kl), a.repeats)
    t["rt_fused"] = median_time(rt_step(xf.routed_transport), a.repeats)
    t["rt_eager"] = median_time(rt_step(R.routed_transport), a.repeats)
    t["rt_compile"] = median_time(rt_step(comp_rt), a.repeats)
    t["rt_fused_fwd"] = median_time(rt_fwd(xf.routed_transport), a.repeats)
    t["randn"] = median_time(lambda: torch.randn(B, K), a.repeats)
    print(f"B={B} K={K} float32 threads={torch.get_num_threads()} (medians, ms)")
    for k, v in t.items():
        print(f"  {k:14s} {v * 1e3:8.3f}")
    print(f"mixture_kl fwd+bwd: {t['kl_eager'] / t['kl_fused']:.2f}x eager (target 3x), "
          f"{t['kl_compile'] / t['kl_fused']:.2f}x compile (target 1.5x)")
    print(f"routed_transport full fwd+bwd: {t['rt_eager'] / t['rt_fused']:.2f}x eager, "
          f"{t['rt_compile'] / t['rt_fused']:.2f}x compile (target 5x both); "
          f"fwd+bwd / randn = {t['rt_fused'] / t['randn']:.2f}, fwd / randn = "
          f"{t['rt_fused_fwd'] / t['randn']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
