"""Benchmark: ``dynamics.ntk`` (each method and "auto") against the two methods of the torch.func NTK tutorial.

    OMP_NUM_THREADS=2 python benchmarks/ntk_methods.py [--threads 2] [--rounds 5] [--dtypes float32 float64]

Cases (k = 10 outputs, synthetic Gaussian inputs, seeded):
  (a) MLP 784-512-512-10 (``dynamics.models`` "mlp", depth 2, width 512), n = 128;
  (b) the small CNN of ``dynamics.models`` ("cnn", 1x28x28, conv 32 / conv 64 with max-pooling), n = 64;
  (c) the small ResNet with BatchNorm in eval mode ("resnet_small", ResNet-8 at widths 8/16/32), n = 64.

Baselines, copied from the official tutorial (https://pytorch.org/tutorials/intermediate/neural_tangent_kernels.html):
``empirical_ntk_jacobian_contraction`` (vmap(jacrev(fnet_single)) + einsum) and ``empirical_ntk_ntk_vps``
(vmap(vmap(get_ntk))). Run as written they ask for more memory than this machine has (the NTVP version ~263 GB
for (a)), so each is called, unchanged, on blocks of x1 x x2 whose estimated memory stays under ``--tutorial-cap``
(default 4 GiB); the NTVP row by row. The block sizes are recorded.

All contenders of a case run in ONE process (warmed up once on a toy problem, so that torch.func's one-time
start-up is not charged to whichever contender runs first), interleaved: after one warm-up call each, ``--rounds`` rounds call
every contender once, in an order rotated from round to round, so that a change in the machine's load hits all
of them alike. Reported per contender: the median wall time and the median CPU time (``time.process_time``, all
threads of the process) over the rounds; a contender whose warm-up call took more than ``--slow`` seconds is
timed by that one call only (marked), and a tutorial method that has not finished after ``--tutorial-seconds``
is extrapolated from its blocks (median block time x blocks, marked). Peak memory: VmHWM minus VmRSS of the
process around the warm-up call (VmHWM reset through /proc/self/clear_refs), measured by the kernel.
Throughput: the cost model's multiply-adds (x2 flops) of the method run, per second of wall time, as a
fraction of the matmul peak measured at the start (median of square float32/float64 matrix products at the
same thread count). Every kernel is compared with the tutorial contraction's (relative Frobenius difference).

Writes benchmarks/results/ntk_methods.json and .md with provenance (machine, versions, threads, git commit).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, jacrev, jvp, vjp, vmap

import dynamics
import dynamics.models as dm
from dynamics.atomic import write_json, write_text
from dynamics.provenance import provenance

HERE = Path(__file__).resolve().parent
CASES = {"a_mlp": 128, "b_cnn": 64, "c_resnet_bn_eval": 64}
OURS = ["auto", "structured", "jacobian", "ntvp"]
TUTORIAL = ["tutorial_jacobian_contraction", "tutorial_ntk_vps"]
TARGETS = {"a_mlp": 400.0, "b_cnn": 3.0, "c_resnet_bn_eval": 3.0}  # auto vs the best tutorial method


# ------------------------------------------------------------------ the tutorial's two methods, verbatim
def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2):
    # Compute J(x1)
    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = jac1.values()
    jac1 = [j.flatten(2) for j in jac1]

    # Compute J(x2)
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
    jac2 = jac2.values()
    jac2 = [j.flatten(2) for j in jac2]

    # Compute J(x1) @ J(x2).T
    result = torch.stack([torch.einsum('Naf,Mbf->NMab', j1, j2) for j1, j2 in zip(jac1, jac2)])
    result = result.sum(0)
    return result


def empirical_ntk_ntk_vps(func, params, x1, x2, compute='full'):
    def get_ntk(x1, x2):
        def func_x1(params):
            return func(params, x1)

        def func_x2(params):
            return func(params, x2)

        output, vjp_fn = vjp(func_x1, params)

        def get_ntk_slice(vec):
            # This computes ``vec @ J(x2).T``
            # `vec` is some unit vector (a single slice of the Identity matrix)
            vjps = vjp_fn(vec)
            # This computes ``J(X1) @ vjps``
            _, jvps = jvp(func_x2, (params,), vjps)
            return jvps

        # Here's our identity matrix
        basis = torch.eye(output.numel(), dtype=output.dtype, device=output.device).view(output.numel(), -1)
        return vmap(get_ntk_slice)(basis)

    # ``get_ntk(x1, x2)`` computes the NTK for a single data point x1, x2
    # Since the x1, x2 inputs to ``empirical_ntk_ntk_vps`` are batched,
    # we actually wish to compute the NTK between every pair of data points
    # between {x1} and {x2}. That's what the ``vmaps`` here do.
    result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)

    if compute == 'full':
        return result
    if compute == 'trace':
        return torch.einsum('NMKK->NM', result)
    if compute == 'diagonal':
        return torch.einsum('NMKK->NMK', result)


def build(case: str, dtype_name: str):
    torch.manual_seed(0)
    if case == "a_mlp":
        model = dm.create("mlp", 1, 10, input_size=28, depth=2, width=512)
    elif case == "b_cnn":
        model = dm.create("cnn", 1, 10, input_size=28)
    else:
        model = dm.create("resnet_small", 1, 10)
        with torch.no_grad():  # non-trivial running statistics, then eval mode
            model.train()
            for _ in range(3):
                model(torch.randn(64, 1, 28, 28))
    model.eval()
    x = torch.randn(CASES[case], 1, 28, 28, generator=torch.Generator().manual_seed(1))
    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    return model, x, dtype


def _tutorial_blocks(method: str, model, x, dtype, cap: float):
    """Block sizes (b1, b2) for the tutorial methods so that their estimated memory stays below ``cap`` bytes."""
    n, k = x.shape[0], 10
    p = sum(q.numel() for q in model.parameters())
    s = 8 if dtype == torch.float64 else 4
    acts = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: acts.__setitem__(0, acts[0] + o.numel())) for m in model.modules()]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    a = acts[0]
    if method == "tutorial_jacobian_contraction":
        for b in [n // d for d in (1, 2, 4, 8, 16, 32, 64, 128) if n % d == 0]:
            if s * 2 * b * k * (p + 3 * a) <= cap:
                return b, b
        return 1, 1
    for b2 in [n // d for d in (1, 2, 4, 8, 16, 32, 64, 128) if n % d == 0]:  # row by row: b1 = 1
        if s * b2 * k * (p + 3 * a) <= cap:
            return 1, b2
    return 1, 1


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _trim() -> None:
    """Return freed heap to the system, so that earlier contenders' freed memory does not hide this one's."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak() -> bool:
    """Reset VmHWM to the current VmRSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Measured flop/s of a square matrix product (median of ``repeats``) at the current thread count."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size ** 3 / statistics.median(times)


class Contender:
    """One method on one case: ``call()`` computes the kernel; timings are appended by the driver."""

    def __init__(self, name, model, x, dtype, cap, tutorial_seconds):
        self.name, self.wall, self.cpu, self.notes = name, [], [], []
        self.info, self.blocks, self.extrapolated, self.K = None, None, None, None
        self.tutorial_seconds = tutorial_seconds
        if name in TUTORIAL:
            net = model.to(dtype)
            self.xx = x.to(dtype)
            self.params = {k_: v.detach() for k_, v in net.named_parameters()}

            def fnet_single(params, xi):
                return functional_call(net, params, (xi.unsqueeze(0),)).squeeze(0)

            self.fnet = fnet_single
            self.blocks = _tutorial_blocks(name, net, self.xx, dtype, cap)
            self.fn = empirical_ntk_jacobian_contraction if name == TUTORIAL[0] else empirical_ntk_ntk_vps
        self.model, self.x, self.dtype = model, x, dtype

    def call(self, limit: float = math.inf):
        if self.name not in TUTORIAL:
            K, self.info = dynamics.ntk(self.model, self.x, method=self.name, dtype=self.dtype, return_info=True)
            return K, None
        b1, b2 = self.blocks
        n = self.xx.shape[0]
        pairs = [(i, j) for i in range(0, n, b1) for j in range(0, n, b2)]
        K = torch.full((n, n, 10, 10), float("nan"), dtype=self.dtype)
        times, start = [], time.perf_counter()
        for i, j in pairs:
            t0 = time.perf_counter()
            K[i:i + b1, j:j + b2] = self.fn(self.fnet, self.params, self.xx[i:i + b1], self.xx[j:j + b2])
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > limit:
                break
        if len(times) < len(pairs):
            return K, (statistics.median(times) * len(pairs), len(times), len(pairs))
        return K, None


def warm_up_process() -> None:
    """Pay the one-time costs (torch.func's first use imports the compiler stack, ~5 s) before any timing."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(4, 3)
    for method in OURS:
        dynamics.ntk(net, x, method=method)
    params = {k_: v.detach() for k_, v in net.named_parameters()}

    def fnet_single(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).squeeze(0)

    empirical_ntk_jacobian_contraction(fnet_single, params, x, x)
    empirical_ntk_ntk_vps(fnet_single, params, x, x)


def run_case(case: str, dtype_name: str, args) -> list[dict]:
    model, x, dtype = build(case, dtype_name)
    names = TUTORIAL + OURS
    contenders = [Contender(nm, model, x, dtype, args.tutorial_cap, args.tutorial_seconds) for nm in names]
    once = []
    for c in contenders:  # warm-up: also the peak-memory measurement and the kernel kept for comparison
        _trim()
        base, reset = _rss_kib("VmRSS"), _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        c.K, extra = c.call(args.tutorial_seconds if c.name in TUTORIAL else math.inf)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        c.peak_mib = (_rss_kib("VmHWM") - base) / 1024 if reset else None
        if extra is not None:
            c.extrapolated = extra[1:]
            c.wall, c.cpu = [extra[0]], [cpu * extra[0] / wall]
            c.notes.append(f"extrapolated from {extra[1]} of {extra[2]} blocks")
        elif cpu > args.slow:  # CPU time: a load spike that only stalls the process does not exclude it
            c.wall, c.cpu = [wall], [cpu]
            c.notes.append("timed once (slow)")
        else:
            once.append(c)
        print(f"  warm-up {case} {dtype_name} {c.name}: {wall:.3f} s", flush=True)
    for r in range(args.rounds):
        order = once[r % len(once):] + once[:r % len(once)] if once else []
        for c in order:
            t0, c0 = time.perf_counter(), time.process_time()
            c.call()
            c.wall.append(time.perf_counter() - t0)
            c.cpu.append(time.process_time() - c0)
    ref = contenders[0].K.double()
    rows = []
    for c in contenders:
        ok = torch.isfinite(ref) & torch.isfinite(c.K.double())
        row = {"case": case, "dtype": dtype_name, "method": c.name, "n": int(x.shape[0]),
               "p": sum(q.numel() for q in model.parameters()), "wall_s": statistics.median(c.wall),
               "cpu_s": statistics.median(c.cpu), "runs": len(c.wall), "notes": list(c.notes),
               "peak_mib": c.peak_mib, "tutorial_blocks": c.blocks,
               "rel_diff_vs_tutorial": float((c.K.double() - ref)[ok].norm() / ref[ok].norm())}
        if c.info is not None:
            row.update(used=c.info.method, rules=c.info.rules, estimated_peak_mib=c.info.estimated_peak_bytes / 2**20,
                       estimated_gmac=c.info.estimated_flops[c.info.method] / 1e9)
            if c.name == "auto":
                row["notes"].append(f"chose {c.info.method}")
        rows.append(row)
    best = min(r["wall_s"] for r in rows if r["method"] in TUTORIAL)
    peak = args.peaks[dtype_name]
    for r in rows:
        r["best_tutorial_s"] = best
        r["speedup_vs_best_tutorial"] = best / r["wall_s"]
        if "estimated_gmac" in r:
            r["fraction_of_matmul_peak"] = 2e9 * r["estimated_gmac"] / r["wall_s"] / peak
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slow", type=float, default=10.0,
                        help="time once (by the warm-up call, not interleaved) when its CPU time exceeds this")
    parser.add_argument("--tutorial-cap", type=float, default=4 * 2**30, help="bytes per tutorial block")
    parser.add_argument("--tutorial-seconds", type=float, default=15.0,
                        help="stop a tutorial method after this and extrapolate from the blocks done")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--dtypes", nargs="*", default=["float32"])
    parser.add_argument("--quick", action="store_true", help="n = 16 everywhere (a smoke test, not the benchmark)")
    args = parser.parse_args(argv)
    if args.quick:
        for c in CASES:
            CASES[c] = 16
    torch.set_num_threads(args.threads)
    warm_up_process()
    args.peaks = {d: matmul_peak(getattr(torch, d)) for d in args.dtypes}
    print("matmul peak GFLOP/s:", {d: round(v / 1e9, 1) for d, v in args.peaks.items()}, flush=True)
    start = time.time()
    rows = []
    for case in args.cases:
        for dtype_name in args.dtypes:
            rows += run_case(case, dtype_name, args)
            for r in rows[-len(TUTORIAL + OURS):]:
                print(f"{r['case']:17s} {r['dtype']:8s} {r['method']:30s} {r['wall_s']:9.4f} s "
                      f"{r['speedup_vs_best_tutorial']:8.3g}x", flush=True)
    config = {k: v for k, v in vars(args).items() if k != "peaks"}
    record = {"provenance": provenance(seed=0, config=config, torch_threads=torch.get_num_threads(),
                                       omp_num_threads=os.environ.get("OMP_NUM_THREADS")),
              "matmul_peak_gflops": {d: v / 1e9 for d, v in args.peaks.items()},
              "total_wall_s": time.time() - start, "rows": rows}
    name = "ntk_methods_quick" if args.quick else "ntk_methods"
    write_json(HERE / "results" / f"{name}.json", record)
    write_text(HERE / "results" / f"{name}.md", markdown(record))
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    prov = record["provenance"]
    machine = prov.get("machine", {})
    cfg = prov.get("config", {})
    peaks = ", ".join(f"{d} {v:.1f}" for d, v in record["matmul_peak_gflops"].items())
    lines = ["# dynamics.ntk against the torch.func tutorial's NTK methods (interleaved)", "",
             f"Machine: {machine.get('cpu_model', machine.get('processor'))}, {machine.get('cpu_count')} CPUs, "
             f"shared with other jobs; torch threads {prov.get('torch_threads')} (OMP_NUM_THREADS="
             f"{prov.get('omp_num_threads')}); torch {prov.get('torch')}, numpy {prov.get('numpy')}, python "
             f"{prov.get('python')}; git {prov.get('git_commit')}; {prov.get('time_utc')}. "
             f"Measured matmul peak (GFLOP/s): {peaks}. Total wall time {record['total_wall_s']:.0f} s.", "",
             f"All contenders of a case ran in one process, interleaved over {cfg.get('rounds')} rounds (order "
             "rotated each round) after one warm-up call each; wall and CPU times are medians over the rounds. "
             "Slow contenders were timed once by the warm-up call; tutorial methods that had not finished after "
             f"{cfg.get('tutorial_seconds')} s are extrapolated from their blocks. Peak: VmHWM - VmRSS around the "
             "warm-up call (MiB, measured by the kernel). Speed-up: best tutorial wall time / this wall time. "
             "% peak: the cost model's flops (2 x its multiply-adds) / wall time / measured matmul peak; the cost model "
             "counts what it uses to rank methods, so the figure is indicative and can exceed 100 where it "
             "overcounts. Rel. diff: against the tutorial "
             "contraction's kernel.", "",
             "| case | dtype | method | wall (s) | CPU (s) | runs | speed-up vs best tutorial | % matmul peak | "
             "peak MiB | est. MiB | rel. diff | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        notes = list(r["notes"])
        if r.get("tutorial_blocks"):
            notes.insert(0, f"blocks {r['tutorial_blocks'][0]}x{r['tutorial_blocks'][1]}")
        frac = r.get("fraction_of_matmul_peak")
        est = r.get("estimated_peak_mib")
        peak = r.get("peak_mib")
        lines.append(f"| {r['case']} | {r['dtype']} | {r['method']} | {r['wall_s']:.4g} | {r['cpu_s']:.4g} | "
                     f"{r['runs']} | {r['speedup_vs_best_tutorial']:.3g}x | "
                     f"{'' if frac is None else f'{100 * frac:.1f}'} | {'' if peak is None else f'{peak:.0f}'} | "
                     f"{'' if est is None else f'{est:.0f}'} | {r['rel_diff_vs_tutorial']:.1e} | "
                     f"{'; '.join(notes)} |")
    lines += ["", "Targets (issue 10): auto >= 3x the best tutorial method on (b) and (c), >= 400x on (a), and never "
              "slower than it on any case.", ""]
    for r in record["rows"]:
        if r["method"] == "auto":
            target = TARGETS.get(r["case"], 1.0)
            s = r["speedup_vs_best_tutorial"]
            verdict = "met" if s >= target else f"NOT met: {s / target:.2f} of the target"
            base = [b for b in record["rows"] if b["case"] == r["case"] and b["dtype"] == r["dtype"]
                    and b["method"] in TUTORIAL and b["wall_s"] == r["best_tutorial_s"]]
            if base and base[0]["runs"] == 1:
                verdict += "; the best tutorial time is from a single call, so this ratio is not an interleaved one"
            lines.append(f"- auto on {r['case']} {r['dtype']}: {s:.3g}x (target {target:g}x; {verdict})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
