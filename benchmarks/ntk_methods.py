"""Benchmark: ``dynamics.ntk`` (each method and "auto") against the two methods of the torch.func NTK tutorial.

    python benchmarks/ntk_methods.py [--quick] [--threads 2]

Cases (k = 10 outputs, float32 and float64, synthetic Gaussian inputs, seeded):
  (a) MLP 784-512-512-10 (``dynamics.models`` "mlp", depth 2, width 512), n = 128;
  (b) the small CNN of ``dynamics.models`` ("cnn", 1x28x28, conv 32 / conv 64 with max-pooling), n = 64;
  (c) the small ResNet with BatchNorm in eval mode ("resnet_small", ResNet-8 at widths 8/16/32), n = 64.

Baselines, copied from the official tutorial (https://pytorch.org/tutorials/intermediate/neural_tangent_kernels.html):
``empirical_ntk_jacobian_contraction`` (vmap(jacrev(fnet_single)) + einsum) and ``empirical_ntk_ntk_vps``
(vmap(vmap(get_ntk))). Run as written they ask for more memory than this shared machine has (the NTVP version
~263 GB for (a)), so each is called, unchanged, on blocks of x1 x x2 whose estimated memory stays under
``--tutorial-cap`` (default 4 GiB): the NTVP is run row by row (one x1 sample against a block of x2), the
contraction on sample blocks. The block sizes are recorded in the results.

Each (case, dtype, method) runs in a fresh subprocess (torch threads fixed, default 2). Time: the median of the
repeats after the first call (a method whose first call takes more than ``--slow`` seconds is timed once, by that
call, and marked so). Memory: the process's peak resident set size (VmHWM, reset through /proc/self/clear_refs
after the model and data are built) minus the resident set size at that moment -- everything the call
allocated, measured by the kernel, not estimated. Each kernel is compared with the tutorial contraction's kernel
of the same case and dtype (relative Frobenius difference).

Writes benchmarks/results/ntk_methods.json and .md with provenance (machine, versions, git commit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {"a_mlp": 128, "b_cnn": 64, "c_resnet_bn_eval": 64}
METHODS = ["tutorial_jacobian_contraction", "tutorial_ntk_vps", "jacobian", "ntvp", "structured", "auto"]
DTYPES = ["float32", "float64"]


# ------------------------------------------------------------------ the tutorial's two methods, verbatim
def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2):
    from torch.func import jacrev, vmap
    import torch

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
    from torch.func import jvp, vjp, vmap
    import torch

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


# ------------------------------------------------------------------ worker (one subprocess per measurement)
def build(case: str, dtype_name: str):
    import torch
    import dynamics.models as dm

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


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _tutorial_blocks(method: str, model, x, dtype, cap: float):
    """Block sizes (b1, b2) for the tutorial methods so that their estimated memory stays below ``cap`` bytes."""
    n, k = x.shape[0], 10
    p = sum(q.numel() for q in model.parameters())
    import torch

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


def worker(case: str, dtype_name: str, method: str, repeats: int, slow: float, cap: float, cap_s: float,
           out: str) -> dict:
    import numpy as np
    import torch
    from torch.func import functional_call

    import dynamics

    import dynamics.engine.ntk  # noqa: F401  (imports done before the baseline RSS is read)
    import torch.func  # noqa: F401

    model, x, dtype = build(case, dtype_name)
    blocks = None
    if method.startswith("tutorial"):
        net = model.to(dtype)
        xx = x.to(dtype)
        params = {k_: v.detach() for k_, v in net.named_parameters()}

        def fnet_single(params, x):
            return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

        b1, b2 = _tutorial_blocks(method, net, xx, dtype, cap)
        blocks = [b1, b2]
        fn = empirical_ntk_jacobian_contraction if method == "tutorial_jacobian_contraction" else empirical_ntk_ntk_vps

        def compute(limit=math.inf):
            """All blocks, or stop after ``limit`` seconds: (K with NaN where not computed, estimate, done, total)."""
            n = xx.shape[0]
            pairs = [(i, j) for i in range(0, n, b1) for j in range(0, n, b2)]
            K = torch.full((n, n, 10, 10), float("nan"), dtype=dtype)
            times, start = [], time.perf_counter()
            for i, j in pairs:
                t0 = time.perf_counter()
                K[i:i + b1, j:j + b2] = fn(fnet_single, params, xx[i:i + b1], xx[j:j + b2])
                times.append(time.perf_counter() - t0)
                if time.perf_counter() - start > limit:
                    break
            est = sum(times) if len(times) == len(pairs) else statistics.median(times) * len(pairs)
            return K, est, len(times), len(pairs)
    else:
        def compute(limit=math.inf):
            t0 = time.perf_counter()
            K, info = dynamics.ntk(model, x, method=method, dtype=dtype, return_info=True)
            return (K, info), time.perf_counter() - t0, 1, 1

    base = _rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    result, first, done, total = compute(cap_s)
    peak = _rss_kib("VmHWM")
    info = None
    if isinstance(result, tuple):
        result, info = result
    times = []
    if done == total and first <= slow:
        for _ in range(repeats):
            times.append(compute()[1])
    np.save(out, result.double().numpy())
    return {"case": case, "dtype": dtype_name, "method": method, "n": int(x.shape[0]),
            "p": sum(q.numel() for q in model.parameters()),
            "median_s": statistics.median(times) if times else first, "first_s": first,
            "timed_runs": len(times) or 1, "timed_once": not times,
            "extrapolated": None if done == total else [done, total],
            "peak_mib": (peak - base) / 1024 if hwm_reset else None, "peak_measure": "VmHWM-VmRSS" if hwm_reset
            else "unavailable", "tutorial_blocks": blocks,
            "used": info.method if info else None, "rules": info.rules if info else None,
            "estimated_peak_mib": info.estimated_peak_bytes / 2**20 if info else None,
            "estimated_gmac": info.estimated_flops[info.method] / 1e9 if info else None}


# ------------------------------------------------------------------ driver
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--slow", type=float, default=5.0, help="time once when the first call exceeds this")
    parser.add_argument("--tutorial-cap", type=float, default=4 * 2**30, help="bytes per tutorial block")
    parser.add_argument("--tutorial-seconds", type=float, default=15.0,
                        help="stop a tutorial method after this and extrapolate from the blocks done")
    parser.add_argument("--timeout", type=float, default=30.0, help="kill a dynamics.ntk run after this")
    parser.add_argument("--quick", action="store_true", help="n = 16 everywhere (a smoke test, not the benchmark)")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--worker", nargs=4, metavar=("CASE", "DTYPE", "METHOD", "OUT"))
    args = parser.parse_args(argv)
    if args.quick:
        for c in CASES:
            CASES[c] = 16
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        case, dtype_name, method, out = args.worker
        print(json.dumps(worker(case, dtype_name, method, args.repeats, args.slow, args.tutorial_cap,
                                args.tutorial_seconds, out)))
        return 0

    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            for dtype_name in DTYPES:
                kernels = {}
                for method in METHODS:
                    out = os.path.join(tmp, f"{case}-{dtype_name}-{method}.npy")
                    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats),
                           "--slow", str(args.slow), "--tutorial-cap", str(args.tutorial_cap),
                           "--tutorial-seconds", str(args.tutorial_seconds),
                           "--worker", case, dtype_name, method, out] + (["--quick"] if args.quick else [])
                    limit = None if method.startswith("tutorial") else args.timeout + 30  # + import and build
                    try:
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit)
                    except subprocess.TimeoutExpired:
                        proc = None
                    if proc is None:
                        row = {"case": case, "dtype": dtype_name, "method": method,
                               "error": [f"not finished within {args.timeout:.0f} s (+30 s for start-up); killed"]}
                    elif proc.returncode != 0:
                        row = {"case": case, "dtype": dtype_name, "method": method,
                               "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
                    else:
                        row = json.loads(proc.stdout.strip().splitlines()[-1])
                        import numpy as np

                        kernels[method] = np.load(out)
                    rows.append(row)
                    print(_line(row), flush=True)
                ref = kernels.get("tutorial_jacobian_contraction")
                for row in rows:
                    if row["case"] == case and row["dtype"] == dtype_name and row["method"] in kernels \
                            and ref is not None:
                        import numpy as np

                        K = kernels[row["method"]]
                        ok = np.isfinite(ref) & np.isfinite(K)  # blocks computed by both
                        row["rel_diff_vs_tutorial"] = float(np.linalg.norm((K - ref)[ok]) / np.linalg.norm(ref[ok]))
    _ratios(rows)
    from dynamics.provenance import provenance

    record = {"provenance": provenance(seed=0, config=vars(args)), "total_wall_s": time.time() - start,
              "rows": rows}
    results = HERE / "results"
    from dynamics.atomic import write_json, write_text

    name = "ntk_methods_quick" if args.quick else "ntk_methods"
    write_json(results / f"{name}.json", record)
    write_text(results / f"{name}.md", _markdown(record))
    print(_markdown(record))
    return 0


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['case']:18s} {row['dtype']:8s} {row['method']:30s} ERROR {row['error']}"
    return (f"{row['case']:18s} {row['dtype']:8s} {row['method']:30s} {row['median_s']:9.3f} s "
            f"peak {row['peak_mib'] if row['peak_mib'] is not None else float('nan'):9.1f} MiB")


def _ratios(rows: list[dict]) -> None:
    for row in rows:
        if "error" in row:
            continue
        tut = [r["median_s"] for r in rows if r["case"] == row["case"] and r["dtype"] == row["dtype"]
               and r["method"].startswith("tutorial") and "error" not in r]
        if tut:
            row["best_tutorial_s"] = min(tut)
            row["speedup_vs_best_tutorial"] = min(tut) / row["median_s"]


def _markdown(record: dict) -> str:
    prov = record["provenance"]
    machine = prov.get("machine", {})
    lines = ["# dynamics.ntk against the torch.func tutorial's NTK methods", "",
             f"Machine: {machine.get('cpu_model', machine.get('processor'))}, {machine.get('cpu_count')} CPUs "
             f"(torch threads {record['provenance'].get('config', {}).get('threads')}); torch {prov.get('torch')}; "
             f"git {prov.get('git_commit')}; {prov.get('time_utc')}. Total wall time {record['total_wall_s']:.0f} s.", "",
             "Time: median of repeated calls after a first call (timed once when the first call was slow). Peak: "
             "VmHWM minus VmRSS of a fresh process after building model and data (MiB, measured). Speed-up: best "
             "tutorial time / this time. Tutorial methods ran unchanged on blocks of x1 x x2 (b1 x b2 given) to stay "
             "under the memory cap, the NTVP row by row; when a tutorial method had not finished after "
             f"{record['provenance'].get('config', {}).get('tutorial_seconds')} s its time is the median block "
             "time times the number of blocks (marked 'extrapolated'), and its kernel is compared on the blocks "
             "done. Est. columns: the cost model's estimates (dynamics.engine.ntk_plan) for the method run. "
             "The machine is shared with other jobs: times are noisy.", "",
             "| case | dtype | method | time (s) | runs | speed-up vs best tutorial | peak MiB | est. MiB | "
             "est. G mult-add | rel. diff vs tutorial | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dtype']} | {r['method']} | error | | | | | | | {r['error']} |")
            continue
        notes = []
        if r.get("tutorial_blocks"):
            notes.append(f"blocks {r['tutorial_blocks'][0]}x{r['tutorial_blocks'][1]}")
        if r.get("used") and r["method"] == "auto":
            notes.append(f"chose {r['used']}")
        if r.get("extrapolated"):
            notes.append(f"extrapolated from {r['extrapolated'][0]} of {r['extrapolated'][1]} blocks")
        elif r["timed_once"]:
            notes.append("timed once (slow)")
        est = r.get("estimated_peak_mib")
        gmac = r.get("estimated_gmac")
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['method']} | {r['median_s']:.4g} | {r['timed_runs']} | "
            f"{r.get('speedup_vs_best_tutorial', math.nan):.3g}x | {r['peak_mib']:.0f} | "
            f"{'' if est is None else f'{est:.0f}'} | {'' if gmac is None else f'{gmac:.3g}'} | "
            f"{r.get('rel_diff_vs_tutorial', math.nan):.1e} | "
            f"{'; '.join(notes)} |")
    lines += ["", "Targets: auto never slower than the best tutorial method; structured >= 100x faster on (a) float32.",
              ""]
    for r in record["rows"]:
        if r.get("method") == "auto" and "speedup_vs_best_tutorial" in r:
            ok = r["speedup_vs_best_tutorial"] >= 1
            lines.append(f"- auto on {r['case']} {r['dtype']}: {r['speedup_vs_best_tutorial']:.3g}x "
                         f"({'met' if ok else 'NOT met'})")
        if r.get("method") == "structured" and r.get("case") == "a_mlp" and r.get("dtype") == "float32" \
                and "speedup_vs_best_tutorial" in r:
            ok = r["speedup_vs_best_tutorial"] >= 100
            lines.append(f"- structured on a_mlp float32: {r['speedup_vs_best_tutorial']:.3g}x "
                         f"({'met' if ok else 'NOT met'})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
