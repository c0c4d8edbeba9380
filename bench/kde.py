"""The related models' density hot spots (SPEC-related 1.4 and 2.4) on this CPU, float32,
forward+backward, fused vs the leanest plain-PyTorch formulation a user would write (bench/peers.py),
eager and under torch.compile (compile time excluded), each size timed in rotation in one run:

- AVAE's KDE, `xf.kde_log_prob` (the fused kernel; gradient to z only, the centres detached) at
  B = 100 points, m = 10,000 and 20,000 centres, d = 16 / 64 / 128, against the matrix-product form
  of the scores (z c^T - ||c||^2/2 - ||z||^2/2 over h^2, then logsumexp), and against the KDE as a
  wrapper over `mixture_log_prob` (uniform weights, the bandwidth broadcast with stride 0, no
  parameter gradients): the fused kernel was kept because it beats that wrapper by more than 2x;
- S-IntroVAE's mixture evaluations, `xf.mixture_log_prob` at (N, C, d) = (12,800, 100, 32),
  (3,200, 100, 128), (51,200, 64, 2), with the gradient to z only (the detached-target calls, the
  majority) and with the parameter gradients too (the prior-live call), against the broadcast form;
- the saving of skipping the parameter gradients (z only vs all four inputs) at those sizes and at the
  KDE size (100, 10,000, 16) as a general mixture.

    python bench/kde.py [--repeats 15] [--threads T] [--only kde|mixture|skip] [--out bench/results]

Writes kde-cpu.json and kde-cpu.md under --out (kde-cpu-t1-kde.* for --threads 1 --only kde). The
machine load (1-minute average) is printed with each table: on a shared machine, compare ratios
within one table, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time

import torch

import xvae_fast as xf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
from report import write_report  # noqa: E402
from timing import interleaved_medians  # noqa: E402

# AVAE's bandwidths for the paper's latent sizes (SPEC-related 2.2: h = h_opt / sqrt(1 + h_opt^2)).
KDE_H = {16: 0.584, 64: 0.714, 128: 0.746}
KDE_CASES = [(100, m, d) for m in (10_000, 20_000) for d in (16, 64, 128)]
MIXTURE_CASES = [(12_800, 100, 32), (3_200, 100, 128), (51_200, 64, 2)]
SKIP_CASES = MIXTURE_CASES + [(100, 10_000, 16)]


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _step(fn, ins):
    """forward + backward to the inputs `ins`."""
    return lambda: torch.autograd.grad(fn().sum(), ins)


def _compiled(fn, args, grads_of, compile_seconds, label):
    cfn = torch.compile(fn, dynamic=False)
    t0 = time.perf_counter()
    torch.autograd.grad(cfn(*args).sum(), grads_of)
    compile_seconds[label] = time.perf_counter() - t0
    return cfn


def kde_wrapper(z, centres, h):
    """The KDE as mixture_log_prob with uniform weights, the centres as means and one log-variance
    2 log h broadcast with stride 0 (the form kde_log_prob had before its fused kernel)."""
    m, d = centres.shape
    log_vars = torch.full((1, 1), 2 * math.log(h), dtype=z.dtype).expand(m, d)
    log_weights = torch.full((1,), -math.log(m), dtype=z.dtype).expand(m)
    return torch.ops.xvae_fast.mixture_log_prob(z, log_weights, centres.detach(), log_vars, False)[0]


def kde_rows(repeats, compile_seconds):
    rows = []
    print(f"KDE log-density, B = 100, float32, forward+backward to z (load {_load():.1f})")
    print(f"  {'m':>6s} {'d':>4s} {'fused ms':>9s} {'wrapper':>9s} {'gemm ms':>9s} {'gemm-c ms':>10s} "
          f"{'x wrapper':>9s} {'x gemm':>7s} {'x gemm-c':>9s}")
    for B, m, d in KDE_CASES:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(B, d, generator=g).requires_grad_()
        c = torch.randn(m, d, generator=g)
        h = KDE_H[d]
        lean = lambda z, c: peers.kde_log_prob(z, c, h)
        comp = _compiled(lean, (z, c), (z,), compile_seconds, f"kde gemm m={m} d={d}")
        t = interleaved_medians({"fused": _step(lambda: xf.kde_log_prob(z, c, h), (z,)),
                                 "wrapper": _step(lambda: kde_wrapper(z, c, h), (z,)),
                                 "gemm": _step(lambda: lean(z, c), (z,)),
                                 "gemm_c": _step(lambda: comp(z, c), (z,))}, repeats, warmup=3)
        f = t["fused"]
        row = dict(case="kde", B=B, m=m, d=d, h=h, fused_ms=f * 1e3, wrapper_ms=t["wrapper"] * 1e3,
                   gemm_ms=t["gemm"] * 1e3, gemm_compile_ms=t["gemm_c"] * 1e3, x_wrapper=t["wrapper"] / f,
                   x_gemm=t["gemm"] / f, x_gemm_compile=t["gemm_c"] / f)
        rows.append(row)
        print(f"  {m:6d} {d:4d} {f * 1e3:9.2f} {t['wrapper'] * 1e3:9.2f} {t['gemm'] * 1e3:9.2f} "
              f"{t['gemm_c'] * 1e3:10.2f} {row['x_wrapper']:8.2f}x {row['x_gemm']:6.2f}x "
              f"{row['x_gemm_compile']:8.2f}x", flush=True)
    return rows


def _mixture_inputs(N, C, d):
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(N, d, generator=g) * 2).requires_grad_()
    lw = torch.log_softmax(torch.randn(C, generator=g), 0).requires_grad_()
    m = (torch.randn(C, d, generator=g) * 2).requires_grad_()
    lv = (torch.randn(C, d, generator=g) * 0.3).requires_grad_()
    return z, lw, m, lv


def mixture_rows(repeats, compile_seconds):
    rows = []
    print(f"S-IntroVAE mixture log-density, float32, forward+backward (load {_load():.1f}); z: gradient "
          "to z only (detached prior), all: to z and the prior's weights, means and log-variances")
    print(f"  {'N':>6s} {'C':>4s} {'d':>4s} {'grads':>5s} {'fused ms':>9s} {'eager ms':>9s} {'compile ms':>10s}"
          f" {'x eager':>8s} {'x comp':>7s}")
    for N, C, d in MIXTURE_CASES:
        z, lw, m, lv = _mixture_inputs(N, C, d)
        params = (lw, m, lv)
        for grads in ("z", "all"):
            ins = (z,) if grads == "z" else (z, *params)
            p = params if grads == "all" else tuple(t.detach() for t in params)
            comp = _compiled(peers.mixture_log_prob, (z, *p), ins, compile_seconds,
                             f"mixture N={N} C={C} d={d} grads={grads}")
            fns = {"fused": _step(lambda: xf.mixture_log_prob(z, *p), ins),
                   "eager": _step(lambda: peers.mixture_log_prob(z, *p), ins),
                   "compile": _step(lambda: comp(z, *p), ins)}
            t = interleaved_medians(fns, repeats, warmup=3)
            f = t["fused"]
            row = dict(case="mixture", N=N, C=C, d=d, grads=grads, fused_ms=f * 1e3,
                       eager_ms=t["eager"] * 1e3, compile_ms=t["compile"] * 1e3,
                       x_eager=t["eager"] / f, x_compile=t["compile"] / f)
            rows.append(row)
            print(f"  {N:6d} {C:4d} {d:4d} {grads:>5s} {f * 1e3:9.2f} {t['eager'] * 1e3:9.1f} "
                  f"{t['compile'] * 1e3:10.2f} {row['x_eager']:7.2f}x {row['x_compile']:6.2f}x", flush=True)
    return rows


def skip_rows(repeats):
    rows = []
    print(f"mixture_log_prob, float32, forward+backward: all four gradients vs z only (load {_load():.1f})")
    print(f"  {'N':>6s} {'C':>6s} {'d':>4s} {'all ms':>8s} {'z ms':>8s} {'saving':>7s}")
    for N, C, d in SKIP_CASES:
        z, lw, m, lv = _mixture_inputs(N, C, d)
        frozen = tuple(t.detach() for t in (lw, m, lv))
        t = interleaved_medians({"all": _step(lambda: xf.mixture_log_prob(z, lw, m, lv), (z, lw, m, lv)),
                                 "z": _step(lambda: xf.mixture_log_prob(z, *frozen), (z,))},
                                repeats, warmup=3)
        row = dict(case="skip", N=N, C=C, d=d, all_ms=t["all"] * 1e3, z_ms=t["z"] * 1e3,
                   saving=1 - t["z"] / t["all"])
        rows.append(row)
        print(f"  {N:6d} {C:6d} {d:4d} {t['all'] * 1e3:8.2f} {t['z'] * 1e3:8.2f} {100 * row['saving']:6.0f}%",
              flush=True)
    return rows


def to_markdown(report):
    out = [f"Machine: {report['machine']}, torch {torch.__version__}, {report['threads']} threads. "
           f"Command: `{report['command']}` ({report['date']}). Load (1-min average) at the start of "
           "each table in its heading; ratios are from one interleaved run per row.", ""]
    kde = [r for r in report["rows"] if r["case"] == "kde"]
    if kde:
        out += [f"KDE, B = 100, float32, forward+backward to z (load {report['load']['kde']:.1f}); peers: the "
                "`mixture_log_prob` wrapper, and the matrix-product form of the scores then logsumexp, "
                "eager and compiled:", "",
                "| m | d | h | fused ms | wrapper ms | gemm eager ms | gemm compile ms | vs wrapper | vs eager | "
                "vs compile |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['m']} | {r['d']} | {r['h']} | {r['fused_ms']:.2f} | {r['wrapper_ms']:.2f} | "
                f"{r['gemm_ms']:.2f} | {r['gemm_compile_ms']:.2f} | {r['x_wrapper']:.2f}x | {r['x_gemm']:.2f}x | "
                f"{r['x_gemm_compile']:.2f}x |" for r in kde]
    mix = [r for r in report["rows"] if r["case"] == "mixture"]
    if mix:
        out += ["", f"S-IntroVAE mixture, float32, forward+backward (load {report['load']['mixture']:.1f}); "
                "peer: the broadcast (N, C, d) form:", "",
                "| N | C | d | gradients | fused ms | eager ms | compile ms | vs eager | vs compile |",
                "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['N']} | {r['C']} | {r['d']} | {'z only' if r['grads'] == 'z' else 'z + prior'} | "
                f"{r['fused_ms']:.2f} | {r['eager_ms']:.1f} | {r['compile_ms']:.2f} | {r['x_eager']:.2f}x | "
                f"{r['x_compile']:.2f}x |" for r in mix]
    skip = [r for r in report["rows"] if r["case"] == "skip"]
    if skip:
        out += ["", f"Skipped parameter gradients, `mixture_log_prob`, float32, forward+backward "
                f"(load {report['load']['skip']:.1f}):", "",
                "| N | C | d | all four gradients ms | z only ms | saving |", "|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['N']} | {r['C']} | {r['d']} | {r['all_ms']:.2f} | {r['z_ms']:.2f} | "
                f"{100 * r['saving']:.0f}% |" for r in skip]
    if report["compile_seconds"]:
        out += ["", "torch.compile time of the peers (first call, s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in report["compile_seconds"].items())]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--only", choices=("kde", "mixture", "skip"), nargs="*")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args(argv)
    parts = a.only or ["kde", "mixture", "skip"]
    if a.threads:
        torch.set_num_threads(a.threads)
    # one compile per peer and size (dynamic=False): more than dynamo's default limit of 8
    torch._dynamo.config.recompile_limit = 64
    compile_seconds, rows, load = {}, [], {}
    if "kde" in parts:
        load["kde"] = _load()
        rows += kde_rows(a.repeats, compile_seconds)
    if "mixture" in parts:
        load["mixture"] = _load()
        rows += mixture_rows(a.repeats, compile_seconds)
    if "skip" in parts:
        load["skip"] = _load()
        rows += skip_rows(a.repeats)
    from run import machine_info
    info = machine_info(torch.device("cpu"))
    report = dict(machine=f"{info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores",
                  threads=torch.get_num_threads(),
                  command="python " + " ".join(sys.argv), load=load, compile_seconds=compile_seconds,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), rows=rows)
    # (a partial or single-thread run gets its own files, next to the full default-thread one)
    write_report(a.out, "kde-cpu" + (f"-t{a.threads}" if a.threads else "")
                 + ("-" + "-".join(a.only) if a.only else ""), report, to_markdown)


if __name__ == "__main__":
    main()
