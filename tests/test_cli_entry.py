"""The command line's entry points: ``python -m dynamics`` and ``dynamics.cli.main`` list every verb."""

from __future__ import annotations

import subprocess
import sys

from dynamics import cli

VERBS = ("reproduce", "report", "ntk", "train", "data", "verify")


def test_python_m_dynamics_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "dynamics", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert all(f"    {verb}" in out.stdout for verb in VERBS), out.stdout


def test_main_without_a_verb_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_verb_is_a_usage_error(capsys):
    assert cli.main(["nonsense"]) == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_every_verb_module_is_registered_once():
    assert tuple(cli.SUBCOMMANDS) == VERBS
    assert all(callable(m.run) and m.HELP for m in cli.SUBCOMMANDS.values())
