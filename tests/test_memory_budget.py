"""``memory_budget`` is one thing everywhere: the total bytes a call may allocate, its result included.

The peak is read from the kernel's accounting of the process (``VmHWM`` of /proc/self/status, reset through
/proc/self/clear_refs just before the call) in a fresh subprocess, so allocator behaviour and torch's own
buffers are all seen; Python-level tracing (tracemalloc) does not see torch's allocations. The harness is
checked first on a known allocation (the control), so a broken measurement cannot pass the budget tests.
Before the memory policy, the MLP case peaked at 327 MiB for a 256 MiB budget (the final copy of K uncounted).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import dynamics
from dynamics.engine.memory import check_budget, format_bytes, parse_memory_budget
from dynamics.errors import InputError, MemoryBudgetError
from reference import tiny_mlp

MiB = 2**20

HARNESS = r"""
import gc, json, sys
import torch
from torch import nn
torch.set_num_threads(1)
import dynamics

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

def peak_of(call):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    result = call()
    return {"peak": status("VmHWM:") - before, "result": result}

MiB = 2**20
torch.manual_seed(0)
mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
x = torch.randn(512, 784)
small = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
dynamics.ntk(mlp, x[:4], memory_budget=256 * MiB)  # warm-up: lazy imports and thread pools
dynamics.jacobian(small, x[:2], memory_budget=200 * MiB)
out = {
    "control": peak_of(lambda: float(torch.ones(200 * MiB // 4).sum())),  # allocates exactly 200 MiB
    "ntk": peak_of(lambda: dynamics.ntk(mlp, x, memory_budget=256 * MiB, return_info=True)[1].estimated_peak_bytes),
    "jacobian": peak_of(lambda: dynamics.jacobian(small, x[:64], memory_budget=200 * MiB).numel() * 4),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def peaks() -> dict:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the peak-memory reset /proc/self/clear_refs is not available on this system")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", HARNESS], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_harness_sees_a_known_allocation(peaks):
    got = peaks["control"]
    assert 195 * MiB <= got["peak"] <= 230 * MiB, got


def test_ntk_peak_within_budget_mlp_784_512_512_10_n512_float32(peaks):
    budget, got = 256 * MiB, peaks["ntk"]
    assert got["peak"] <= budget, f"peak {got['peak'] / MiB:.1f} MiB over the {budget / MiB:.0f} MiB budget"
    assert got["result"] <= budget  # the plan's own estimate is within the budget too


def test_dense_jacobian_peak_within_budget(peaks):
    budget, got = 200 * MiB, peaks["jacobian"]  # J alone is 640 x 50890 float32 = 124 MiB
    assert got["peak"] <= budget, f"peak {got['peak'] / MiB:.1f} MiB over the {budget / MiB:.0f} MiB budget"


# ---------------------------------------------------------------- one validation, API and command line
@pytest.mark.parametrize("bad", [0, -5, 0.5, float("nan"), float("inf"), True, "1GB", [1]])
def test_every_entry_point_rejects_the_same_bad_budgets(bad):
    model, x = tiny_mlp(), torch.randn(3, 3)
    for call in (lambda: dynamics.ntk(model, x, memory_budget=bad),
                 lambda: dynamics.jacobian(model, x, memory_budget=bad),
                 lambda: dynamics.JacobianOperator(model, x, memory_budget=bad)):
        with pytest.raises(InputError, match="memory_budget must be a positive number of bytes"):
            call()


@pytest.mark.parametrize("text, expected", [("268435456", 256 * MiB), ("256MiB", 256 * MiB), ("2e9", 2 * 10**9),
                                            ("1.5GB", 15 * 10**8), ("1 KiB", 1024)])
def test_command_line_budget_parses_units(text, expected):
    assert parse_memory_budget(text) == expected == check_budget(expected)


@pytest.mark.parametrize("text", ["0", "-1", "lots", "1XB", "0.1"])
def test_command_line_budget_rejects_what_the_api_rejects(text):
    with pytest.raises(InputError, match="--memory-budget"):
        parse_memory_budget(text)


def test_messages_print_honest_sizes():
    assert format_bytes(0) == "0 bytes" and format_bytes(1023) == "1023 bytes"
    assert format_bytes(MiB + 1) == "1.00 MiB"
    with pytest.raises(MemoryBudgetError) as err:
        dynamics.ntk(tiny_mlp(), torch.randn(30, 3), memory_budget=1000)
    text = str(err.value)
    assert "0.0 MiB" not in text and "1000 bytes" in text and "the kernel itself (30 x 30 x 2 x 2)" in text
    assert str(30 * 30 * 2 * 2 * 4) in text  # the kernel's exact size in bytes (float32)


def test_small_budget_error_names_a_budget_that_then_works_for_jacobian():
    model, x = tiny_mlp(), torch.randn(4, 3)
    J_bytes = 4 * 2 * sum(p.numel() for p in model.parameters()) * 4
    with pytest.raises(MemoryBudgetError, match="raise memory_budget to at least") as err:
        dynamics.jacobian(model, x, memory_budget=J_bytes + 10)
    need = int(str(err.value).rsplit(" ", 1)[1])
    assert math.isfinite(need) and dynamics.jacobian(model, x, memory_budget=need).shape == (8, J_bytes // 32)
