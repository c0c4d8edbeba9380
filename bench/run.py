"""Microbenchmarks of the fused ops against their peers: the leanest plain-PyTorch formulation a
user would write (bench/peers.py), eager and under torch.compile. (The mixed routed-transport plans
have no lean formulation; their peer is the vectorised `xvae_fast.ops.reference`.)

    python bench/run.py            # full grid (B 128..65536, K 3/64/256, float32 and bfloat16)
    python bench/run.py --quick    # a small grid, a few minutes on a 2-core CPU
    python bench/run.py --device cuda --ops mixture_kl routed_transport:full

Each figure is the median of repeated timed calls after warm-up (CUDA events on a GPU), with the
ratio of each peer to the fused op measured in the same run, the op's peak extra memory (CUDA:
max_memory_allocated above the inputs; CPU: the peak of bytes allocated during one call, from the
profiler's allocation events) and its effective bandwidth: the bytes the op must read and write,
divided by its time, as a fraction of this device's copy bandwidth measured in the same run.
The "eager" and "compile" columns are those peers. mixture_log_prob:C times N = B points in d = K dimensions against C components, plus the
(N, C, d) sizes of MIXTURE_CASES. component_kl and mixture_bound:tight / :mixture (C = K components)
are compared with the leanest plain-PyTorch formulation a user would write (the exact broadcast
(B, C, K) form of D, then logsumexp or the softplus weights), eager and compiled, and also with the
expanded-square form (two matrix products; fast, but it loses every digit in float32 far from the
origin), reported in a second table. torch.compile compiles once per (op, dtype, pass, K) with a dynamic batch size; its compile time is reported
separately and is not in the per-call figure. An end-to-end figure times a stage-2 training step
with the fused ops vs the reference ops. Writes JSON and a Markdown table under --out.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

import xvae_fast as xf
from xvae_fast import reference as R

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (bench/peers.py: the lean plain-PyTorch formulations)
from report import write_report  # noqa: E402

FULL_B = (128, 1024, 8192, 65536)
FULL_K = (3, 64, 256)
QUICK_B = (1024, 4096)
QUICK_K = (64, 256)
ALL_OPS = ["mixture_kl", "gaussian_kl"] + [f"routed_transport:{p}" for p in xf.PRESETS] + \
    ["sample_prior:per-coordinate", "sample_prior:per-row", "mixture_log_prob:100", "component_kl",
     "mixture_bound:tight", "mixture_bound:mixture"]
# mixture_log_prob:C runs the grid with N = B points in d = K dimensions against C components;
# these (N, C, d) cases (the VampPrior / MoG-prior sizes) are timed whenever it is selected.
MIXTURE_CASES = [(12800, 100, 32), (4096, 500, 64)]
QUICK_OPS = ["mixture_kl", "gaussian_kl", "routed_transport:full", "routed_transport:k1-pq-nq",
             "sample_prior:per-coordinate", "mixture_log_prob:100"]


# ---- timing and memory ------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3,
                   min_total: float = 0.05) -> float:
    """Median wall time of fn() after warm-up; on CUDA from events around each call. Warm-up runs at
    least `warmup` calls and at least `min_total` seconds (up to 10x warmup calls): the first op timed
    in a process otherwise pays for a cold allocator (page faults on fresh output buffers)."""
    t_warm = time.perf_counter()
    for i in range(10 * warmup):
        fn()
        if i + 1 >= warmup and time.perf_counter() - t_warm >= min_total:
            break
    _sync(device)
    times: List[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start_all < min_total and len(times) < 10 * repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak memory one call allocates beyond what already exists."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    # Each op's own allocations (self usage) and the unattributed frees ("[memory]"), in time order.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return int(peak)


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), device, repeats=10)
    return 2 * nbytes / t


# ---- cases ------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One op at one size: callables for the fused op and the reference, and the bytes it must move."""
    op: str
    B: int
    K: int
    dtype: torch.dtype
    fused: Callable
    reference: Callable
    args: tuple
    grads_of: tuple  # inputs to differentiate for fwd+bwd ('' for forward-only ops)
    bytes_fwd: int
    bytes_fwdbwd: int
    extra: Dict = field(default_factory=dict)


def make_prior(K, device, C=None):
    g = torch.Generator().manual_seed(0)
    C = K if C is None else C
    w = torch.rand(C, generator=g) + 0.1
    return xf.MixturePrior(w / w.sum(), torch.randn(C, K, generator=g),
                           torch.rand(C, K, generator=g) + 0.5).to(device)


def make_case(op: str, B: int, K: int, dtype: torch.dtype, device: torch.device) -> Case:
    g = torch.Generator(device="cpu").manual_seed(1)
    item = torch.tensor([], dtype=dtype).element_size()
    BK = B * K

    def x():
        return (torch.randn(B, K, generator=g) * 0.5).to(device=device, dtype=dtype).requires_grad_()

    prior = make_prior(K, device)
    name, _, variant = op.partition(":")
    if name == "mixture_kl":
        l, mu, lv = x(), x(), x()
        fused = lambda l, mu, lv: xf.mixture_kl(l, mu, lv, prior, "mean")[0]
        _, logw, _, _, m, s = prior.tensors_for(dtype, device)
        ref = lambda l, mu, lv: peers.mixture_kl(l.float(), mu.float(), lv.float(), logw, m, s).to(dtype)
        # forward reads logits, mu, logvar; backward reads them again and writes three gradients
        return Case(op, B, K, dtype, fused, ref, (l, mu, lv), (0, 1, 2), 3 * BK * item, 9 * BK * item)
    if name == "gaussian_kl":
        mu, lv = x(), x()
        m, s = prior.diag()
        fused = lambda mu, lv: xf.gaussian_kl(mu, lv, m, s, "mean")
        ref = lambda mu, lv: peers.gaussian_kl(mu.float(), lv.float(), m, s).to(dtype)
        return Case(op, B, K, dtype, fused, ref, (mu, lv), (0, 1), 2 * BK * item, 6 * BK * item)
    if name == "routed_transport":
        l, mu, lv = x(), x(), x()
        pi_q = xf.responsibilities(l).detach()
        fused = lambda mu, lv: xf.routed_transport(mu, lv, prior, variant, pi_q)
        w, _, M, S, m, s = prior.tensors_for(dtype, device)
        if variant == "full":
            ref = lambda mu, lv: peers.routed_transport_full(mu.float(), lv.float(), w, M, S, m, s).to(dtype)
        elif variant == "matched":
            ref = lambda mu, lv: peers.routed_transport_matched(mu.float(), lv.float()).to(dtype)
        else:   # no lean formulation of the mixed plans: the (vectorised) reference is the peer
            ref = lambda mu, lv: R.routed_transport(mu, lv, prior, variant, pi_q)
        # forward: read mu, logvar, write z; backward: read dz, z, mu, write two gradients
        return Case(op, B, K, dtype, fused, ref, (mu, lv), (0, 1), 3 * BK * item, 8 * BK * item)
    if name == "sample_prior":
        fused = lambda: xf.sample_prior(prior, B, 1.0, variant)
        w, _, M, S, _, _ = prior.tensors_for(torch.float32, device)
        ref = lambda: peers.sample_prior(w, M, S, B, variant)
        f32 = 4
        return Case(op, B, K, torch.float32, fused, ref, (), (), BK * f32, BK * f32)
    if name == "mixture_log_prob":
        C = int(variant or 100)
        z = (torch.randn(B, K, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_()
        lw = torch.log_softmax(torch.randn(C, generator=g), 0).to(device=device, dtype=dtype).requires_grad_()
        m = (torch.randn(C, K, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_()
        lv = (torch.randn(C, K, generator=g) * 0.3).to(device=device, dtype=dtype).requires_grad_()
        # forward reads z and the tables, writes (N,); backward also writes dz and the table grads
        params = (C + 2 * C * K) * item
        return Case(op, B, K, dtype, xf.mixture_log_prob, peers.mixture_log_prob, (z, lw, m, lv),
                    (0, 1, 2, 3), BK * item + params + B * item, 2 * BK * item + 3 * params + 2 * B * item)
    if name in ("component_kl", "mixture_bound"):
        return _component_kl_case(op, variant, B, K, dtype, device, prior, x)
    raise ValueError(f"unknown op {op!r}; choose from {ALL_OPS}")


# ---- plain-PyTorch peers of component_kl / mixture_bound (C = K components) -------------------------
def lean_component_kl(mu, logvar, M, S):
    """D (B, C) as a user would write it: the exact broadcast (B, C, K) form."""
    d = mu[:, None, :] - M[None]
    return (torch.log(S)[None] - 0.5 * logvar[:, None, :]
            + (torch.exp(logvar)[:, None, :] + d * d) / (2 * S * S)[None] - 0.5).sum(-1)


def gemm_component_kl(mu, logvar, M, S):
    """D (B, C) with the squares expanded into two matrix products (loses digits in float32 when
    mu and M are far from the origin)."""
    P = 1 / (S * S)
    quad = (torch.exp(logvar) + mu * mu) @ P.t() - 2 * mu @ (M * P).t() + (M * M * P).sum(1)
    return 0.5 * quad + torch.log(S).sum(1) - 0.5 * logvar.sum(1, keepdim=True) - 0.5 * M.shape[1]


def _tight_from(D, logw):
    return -torch.logsumexp(logw - D, dim=1).mean()


def _mixture_from(D, logits, logw):
    sp = torch.nn.functional.softplus(logits)
    r = sp / sp.sum(1, keepdim=True)
    return (r * (torch.log(r) - logw) + r * D).sum(1).mean()


def _component_kl_case(op, variant, B, K, dtype, device, prior, x) -> Case:
    item = torch.tensor([], dtype=dtype).element_size()
    C = prior.num_components
    _, logw, M, S, _, _ = prior.tensors_for(dtype, device)
    mu, lv = x(), x()
    params = 2 * C * K * 4
    if op == "component_kl":
        fused = lambda mu, lv: xf.component_kl(mu, lv, prior)
        lean = lambda mu, lv: lean_component_kl(mu.float(), lv.float(), M, S).to(dtype)
        gemm = lambda mu, lv: gemm_component_kl(mu.float(), lv.float(), M, S).to(dtype)
        # forward reads mu, logvar and the tables, writes D; backward reads dD, mu, logvar, writes two
        return Case(op, B, K, dtype, fused, lean, (mu, lv), (0, 1), 2 * B * K * item + params + B * C * item,
                    4 * B * K * item + 2 * params + 2 * B * C * item, extra={"peers": {"gemm": gemm}})
    if variant == "tight":
        fused = lambda mu, lv: xf.mixture_bound(mu, lv, prior, "tight")[0]
        lean = lambda mu, lv: _tight_from(lean_component_kl(mu.float(), lv.float(), M, S), logw).to(dtype)
        gemm = lambda mu, lv: _tight_from(gemm_component_kl(mu.float(), lv.float(), M, S), logw).to(dtype)
        args, grads, rows = (mu, lv), (0, 1), 2 * B * K
    elif variant == "mixture":
        l = x()  # (B, C) logits, C = K
        fused = lambda mu, lv, l: xf.mixture_bound(mu, lv, prior, "mixture", l)[0]
        lean = lambda mu, lv, l: _mixture_from(lean_component_kl(mu.float(), lv.float(), M, S),
                                               l.float(), logw).to(dtype)
        gemm = lambda mu, lv, l: _mixture_from(gemm_component_kl(mu.float(), lv.float(), M, S),
                                               l.float(), logw).to(dtype)
        args, grads, rows = (mu, lv, l), (0, 1, 2), 2 * B * K + B * C
    else:
        raise ValueError(f"unknown op {op!r}; mixture_bound takes :tight or :mixture")
    # forward reads the inputs and tables, writes the kept D (B, C, float32); backward reads the
    # inputs and D again and writes a gradient per input
    return Case(op, B, K, dtype, fused, lean, args, grads, rows * item + params + B * C * 4,
                3 * rows * item + 2 * params + 2 * B * C * 4, extra={"peers": {"gemm": gemm}})


def _runner(fn, case: Case, backward: bool):
    args = case.args
    if not backward or not case.grads_of:
        def run():
            with torch.no_grad():
                return fn(*args)
        return run
    inputs = [args[i] for i in case.grads_of]

    def run():
        out = fn(*args)
        return torch.autograd.grad(out.float().sum(), inputs)
    return run


# ---- the sweep --------------------------------------------------------------------------------------
def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not (torch.cuda.is_available() and xf.cuda_kernels_available()):
        raise SystemExit("--device cuda needs a GPU and xvae_fast built with its CUDA kernels")
    dtypes = [getattr(torch, d) for d in args.dtypes]
    ops = args.ops or (QUICK_OPS if args.quick else ALL_OPS)
    Bs = args.B or (QUICK_B if args.quick else FULL_B)
    Ks = args.K or (QUICK_K if args.quick else FULL_K)
    bw = copy_bandwidth(device)
    print(f"device {device}: copy bandwidth {bw / 1e9:.1f} GB/s, threads {torch.get_num_threads()}",
          flush=True)
    compiled: Dict[tuple, Callable] = {}
    compile_seconds: Dict[str, float] = {}
    rows = []
    for op in ops:
        for dtype in dtypes:
            if op.startswith("sample_prior") and dtype != dtypes[0]:
                continue  # the prior's dtype, not the inputs', sets sample_prior's
            sizes = [(B, K, op) for K in Ks for B in Bs]
            if op.startswith("mixture_log_prob"):
                # The reference materialises (N, C, d): grid points past 2^28 elements are left out
                # (GBs per intermediate); the quick grid times only the two reference sizes.
                C = int(op.partition(":")[2] or 100)
                sizes = [sz for sz in sizes if sz[0] * C * sz[1] <= 1 << 28 and not args.quick]
                if not args.no_mixture_cases:
                    sizes += [(N, d, f"mixture_log_prob:{C}") for N, C, d in MIXTURE_CASES]
            if op.startswith(("component_kl", "mixture_bound")):
                # The plain-PyTorch peer materialises (B, C, K) with C = K: past 2^28 elements (1 GiB
                # per float32 intermediate) the grid point is left out.
                sizes = [sz for sz in sizes if sz[0] * sz[1] * sz[1] <= 1 << 28]
            for B, K, case_op in sizes:
                case = make_case(case_op, B, K, dtype, device)
                for backward in ([False, True] if case.grads_of else [False]):
                    rows.append(measure(case, backward, device, bw, args, compiled, compile_seconds))
                    r = rows[-1]
                    print(f"{case_op:28s} {str(dtype)[6:]:8s} B={B:6d} K={K:3d} "
                          f"{'fwd+bwd' if backward else 'fwd    '} fused {r['fused_ms']:9.3f} ms"
                          f"  x{r['speedup_vs_eager']:6.2f} eager"
                          + (f"  x{r['speedup_vs_compile']:6.2f} compile" if r.get("speedup_vs_compile") else "")
                          + f"  bw {100 * r['bandwidth_fraction']:5.1f}%", flush=True)
    e2e = [] if args.no_e2e else end_to_end(device, args.repeats)
    return {
        "machine": machine_info(device),
        "end_to_end": e2e,
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "copy_bandwidth_GBps": bw / 1e9,
        "compile_seconds": compile_seconds,
        "results": rows,
    }


def measure(case: Case, backward: bool, device, bw, args, compiled, compile_seconds) -> dict:
    # One compile per (op, dtype, pass, K): the reference closes over a K-sized prior; B is dynamic.
    key = (case.op, case.dtype, backward, case.K)
    fused = _runner(case.fused, case, backward)
    eager = _runner(case.reference, case, backward)
    t_fused = median_seconds(fused, device, args.repeats)
    t_eager = median_seconds(eager, device, max(3, args.repeats // 3))
    row = dict(op=case.op, dtype=str(case.dtype).replace("torch.", ""), B=case.B, K=case.K,
               pass_="fwd+bwd" if backward else "fwd", fused_ms=t_fused * 1e3, eager_ms=t_eager * 1e3,
               speedup_vs_eager=t_eager / t_fused)
    if not args.no_compile:
        if key not in compiled:
            compiled[key] = torch.compile(case.reference, dynamic=True)
        comp = _runner(compiled[key], case, backward)
        t0 = time.perf_counter()
        comp()
        _sync(device)
        first = time.perf_counter() - t0
        name = f"{case.op} {row['dtype']} {row['pass_']} K={case.K}"
        compile_seconds.setdefault(name, first)
        t_comp = median_seconds(comp, device, args.repeats)
        row.update(compile_ms=t_comp * 1e3, speedup_vs_compile=t_comp / t_fused)
    # Other formulations of the same op (reported, not targets), eager and compiled.
    for pname, pfn in case.extra.get("peers", {}).items():
        t_p = median_seconds(_runner(pfn, case, backward), device, max(3, args.repeats // 3))
        row.update({f"{pname}_eager_ms": t_p * 1e3, f"speedup_vs_{pname}_eager": t_p / t_fused})
        if not args.no_compile:
            pkey = key + (pname,)
            if pkey not in compiled:
                compiled[pkey] = torch.compile(pfn, dynamic=True)
            comp = _runner(compiled[pkey], case, backward)
            comp()
            t_pc = median_seconds(comp, device, args.repeats)
            row.update({f"{pname}_compile_ms": t_pc * 1e3, f"speedup_vs_{pname}_compile": t_pc / t_fused})
    nbytes = case.bytes_fwdbwd if backward else case.bytes_fwd
    row.update(bytes_moved=nbytes, bandwidth_GBps=nbytes / t_fused / 1e9,
               bandwidth_fraction=nbytes / t_fused / bw,
               fused_peak_bytes=peak_extra_bytes(fused, device),
               eager_peak_bytes=peak_extra_bytes(eager, device))
    return row


# ---- end to end ------------------------------------------------------------------------------------
E2E_SETUPS = [  # (name, kind, per-example shape, K, batch)
    ("clusters MLP, K=3", "vector", (2,), 3, 128),
    ("MNIST-shaped conv, K=64", "image", (1, 28, 28), 64, 128),
]


def end_to_end(device: torch.device, repeats: int) -> List[dict]:
    """Time per stage-2 training step (forward, backward, Adam) of the X-VAE (plan `full`) with the
    fused ops vs the reference ops, on the same model, data and prior."""
    from xvae_fast.models.vae import VAE
    from xvae_fast.ops.plans import Plan
    rows = []
    for name, kind, shape, K, batch in E2E_SETUPS:
        times = {}
        for label, ops in (("fused", xf), ("reference", R)):
            torch.manual_seed(0)
            model = VAE(kind, shape, K, "mixture", Plan.preset("full", K), ops=ops).to(device)
            model.set_prior(make_prior(K, device))
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            x = torch.rand(batch, *shape, device=device)

            def step():
                opt.zero_grad(set_to_none=True)
                model.loss(x)["loss"].backward()
                opt.step()
            times[label] = median_seconds(step, device, repeats)
        rows.append(dict(setup=name, batch=batch, fused_ms=times["fused"] * 1e3,
                         reference_ms=times["reference"] * 1e3,
                         speedup=times["reference"] / times["fused"]))
        print(f"end-to-end {name}: fused {times['fused'] * 1e3:.2f} ms/step, reference "
              f"{times['reference'] * 1e3:.2f} ms/step ({rows[-1]['speedup']:.2f}x)", flush=True)
    return rows


def machine_info(device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                threads=torch.get_num_threads(), device=str(device))
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def to_markdown(report: dict) -> str:
    m = report["machine"]
    head = [f"Machine: {m.get('gpu') or m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, "
            f"{m['threads']} torch threads, torch {m['torch']}; device {m['device']}; copy bandwidth "
            f"{report['copy_bandwidth_GBps']:.1f} GB/s. Command: `{report['command']}` ({report['date']}).",
            "",
            "| op | dtype | B | K | pass | fused ms | vs eager | vs compile | bandwidth (of copy) | peak extra MB fused / eager |",
            "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        comp = f"{r['speedup_vs_compile']:.2f}x" if "speedup_vs_compile" in r else "-"
        head.append(f"| {r['op']} | {r['dtype']} | {r['B']} | {r['K']} | {r['pass_']} | {r['fused_ms']:.3f} | "
                    f"{r['speedup_vs_eager']:.2f}x | {comp} | {r['bandwidth_GBps']:.1f} GB/s "
                    f"({100 * r['bandwidth_fraction']:.0f}%) | {r['fused_peak_bytes'] / 2**20:.2f} / "
                    f"{r['eager_peak_bytes'] / 2**20:.2f} |")
    peers = [r for r in report["results"] if "gemm_eager_ms" in r]
    if peers:
        head += ["", "Expanded-square (two matrix products) formulation of the same ops, eager and compiled "
                 "(not a target: it loses every digit in float32 far from the origin):", "",
                 "| op | dtype | B | K | pass | fused ms | gemm eager ms | vs gemm eager | gemm compile ms | vs gemm compile |",
                 "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in peers:
            gc = (f"{r['gemm_compile_ms']:.3f} | {r['speedup_vs_gemm_compile']:.2f}x"
                  if "gemm_compile_ms" in r else "- | -")
            head.append(f"| {r['op']} | {r['dtype']} | {r['B']} | {r['K']} | {r['pass_']} | {r['fused_ms']:.3f} | "
                        f"{r['gemm_eager_ms']:.3f} | {r['speedup_vs_gemm_eager']:.2f}x | {gc} |")
    if report.get("end_to_end"):
        head += ["", "End to end, stage-2 X-VAE (plan `full`) training step, batch 128:", "",
                 "| setup | fused ms/step | reference ms/step | speedup |", "|---|---:|---:|---:|"]
        head += [f"| {r['setup']} | {r['fused_ms']:.2f} | {r['reference_ms']:.2f} | {r['speedup']:.2f}x |"
                 for r in report["end_to_end"]]
    if report["compile_seconds"]:
        head += ["", "torch.compile time (first call, s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in report["compile_seconds"].items())]
    return "\n".join(head) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid (minutes on a 2-core CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--ops", nargs="*", help=f"subset of {ALL_OPS}")
    ap.add_argument("--B", type=int, nargs="*", help="batch sizes")
    ap.add_argument("--K", type=int, nargs="*", help="latent sizes")
    ap.add_argument("--dtypes", nargs="*", default=None, help="float32 bfloat16 ...")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    ap.add_argument("--no-mixture-cases", action="store_true",
                    help=f"skip mixture_log_prob's (N, C, d) reference sizes {MIXTURE_CASES}")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end training-step figure")
    ap.add_argument("--out", default="bench/results", help="folder for JSON and Markdown")
    args = ap.parse_args(argv)
    if args.dtypes is None:
        args.dtypes = ["float32"] if args.quick else ["float32", "bfloat16"]
    report = run(args)
    write_report(args.out, f"{'quick' if args.quick else 'full'}-{torch.device(args.device).type}", report,
                 to_markdown)


if __name__ == "__main__":
    main()
