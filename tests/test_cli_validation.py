"""Bad command-line values end the command up front: exit status 2, a message that says what to do, nothing made.

Every case runs ``dynamics.cli.main([...])`` in-process. For each, the verb's work function is replaced by one
that fails the test if it is ever called (so "up front" is checked, not assumed), and the folder the run would
have written is checked not to exist afterwards. Each refusal has a control: the same command with a good value
gets past validation (the work function is reached).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dynamics import cli
from dynamics.cli import data as data_cli
from dynamics.cli import report as report_cli
from dynamics.cli import reproduce as reproduce_cli
from dynamics.cli import train as train_cli
from dynamics.cli import validate
from dynamics.cli import verify as verify_cli
from dynamics.errors import InputError


class Reached(Exception):
    """Raised by a stand-in work function: validation let the command through."""


def _reached(*args, **kwargs):
    raise Reached


@pytest.fixture
def no_work(monkeypatch):
    """The heavy work of every verb replaced by :func:`_reached`."""
    monkeypatch.setattr(verify_cli.statements, "collect", _reached)
    monkeypatch.setattr(reproduce_cli, "reproduce", _reached)
    monkeypatch.setattr(report_cli, "discover_runs", _reached)
    monkeypatch.setattr(data_cli, "download", _reached)
    monkeypatch.setattr(data_cli, "load_dataset", _reached)
    monkeypatch.setattr(train_cli, "train", _reached)


def _refused(argv: list[str], capsys, *needles: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err
    return err


def _passes_validation(argv: list[str]) -> None:
    with pytest.raises(Reached):
        cli.main(argv)


def _out_verbs(out: str) -> list[list[str]]:
    return [["verify", "--out", out], ["report", "somewhere", "--out", out],
            ["reproduce", "--preset", "cpu", "--out", out], ["train", "--out", out]]


# --- --out -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", [0, 1, 2, 3], ids=["verify", "report", "reproduce", "train"])
def test_out_that_is_a_file_is_refused(verb, tmp_path, capsys, no_work):
    f = tmp_path / "a_file"
    f.write_text("x")
    _refused(_out_verbs(str(f))[verb], capsys, "argument --out", "is a file, not a folder")
    assert f.read_text() == "x"
    _passes_validation(_out_verbs(str(tmp_path / "new" / "run"))[verb])  # control: a new folder is fine
    assert not (tmp_path / "new").exists()  # and validation made nothing


@pytest.mark.parametrize("verb", [0, 1, 2, 3], ids=["verify", "report", "reproduce", "train"])
def test_out_below_a_file_is_refused(verb, tmp_path, capsys, no_work):
    f = tmp_path / "a_file"
    f.write_text("x")
    _refused(_out_verbs(str(f / "run"))[verb], capsys, f"lies below {f}, which is a file")


@pytest.mark.parametrize("verb", [0, 1, 2, 3], ids=["verify", "report", "reproduce", "train"])
def test_out_under_proc_is_refused(verb, capsys, no_work):
    _refused(_out_verbs("/proc/self/dynamics-run")[verb], capsys, "under /proc", "virtual file system")
    assert not Path("/proc/self/dynamics-run").exists()


@pytest.mark.parametrize("verb", [0, 1, 2, 3], ids=["verify", "report", "reproduce", "train"])
def test_out_not_writable_is_refused(verb, tmp_path, capsys, no_work, monkeypatch):
    # Tests may run as root, for whom permission bits do not bind: the permission probe is replaced for the
    # folder under test only; test_out_in_a_read_only_folder_as_a_user checks the real probe.
    locked = tmp_path / "locked"
    locked.mkdir()
    real = validate._writable
    monkeypatch.setattr(validate, "_writable", lambda folder: folder != locked and real(folder))
    _refused(_out_verbs(str(locked / "run"))[verb], capsys, f"its closest existing parent {locked}",
             "not writable")
    assert list(locked.iterdir()) == []
    _refused(_out_verbs(str(locked))[verb], capsys, "the folder is not writable")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_out_in_a_read_only_folder_as_a_user(tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(["verify", "--out", str(locked / "run")], capsys, "not writable")
    finally:
        locked.chmod(0o700)


def test_output_folder_accepts_an_existing_folder_and_creates_nothing(tmp_path):
    assert validate.output_folder(tmp_path) == tmp_path
    assert validate.output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="empty"):
        validate.output_folder("")


# --- data roots --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["data", "list"], ["data", "download", "semeion"], ["data", "verify", "semeion"]],
                         ids=["list", "download", "verify"])
def test_data_root_that_is_a_file_is_not_a_folder(argv, tmp_path, capsys, no_work):
    f = tmp_path / "a_file"
    f.write_text("x")
    _refused(argv + ["--root", str(f)], capsys, "argument --root", "is not a folder")


def test_data_root_from_the_environment_that_is_a_file(tmp_path, capsys, monkeypatch):
    f = tmp_path / "a_file"
    f.write_text("x")
    monkeypatch.setenv("DYNAMICS_DATA", str(f))
    _refused(["data", "list"], capsys, "is not a folder", "DYNAMICS_DATA")
    monkeypatch.setenv("DYNAMICS_DATA", str(tmp_path))  # control: a folder lists the datasets
    assert cli.main(["data", "list"]) == 0
    assert f"data root: {tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["verify", "reproduce"])
def test_data_root_option_that_is_a_file_is_refused(verb, tmp_path, capsys, no_work):
    f = tmp_path / "a_file"
    f.write_text("x")
    extra = ["--preset", "cpu", "--out", str(tmp_path / "o")] if verb == "reproduce" else ["--out", str(tmp_path / "o")]
    _refused([verb, *extra, "--data-root", str(f)], capsys, "argument --data-root", "is not a folder")
    assert not (tmp_path / "o").exists()


# --- device ------------------------------------------------------------------------------------------------------

def test_cuda_device_without_cuda_is_refused_before_anything_runs(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "o"
    _refused(["reproduce", "--preset", "cpu", "--device", "cuda", "--out", str(out)], capsys,
             "argument --device", "sees no CUDA device", "--device cpu")
    assert not out.exists()
    _passes_validation(["reproduce", "--preset", "cpu", "--device", "cpu", "--out", str(out)])  # control
    _refused(["train", "--device", "cuda", "--out", str(out)], capsys, "sees no CUDA device", "--device cpu")
    assert not out.exists()
    _passes_validation(["train", "--device", "cpu", "--out", str(out)])  # control


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_device_on_this_cpu_only_torch_is_refused(tmp_path, capsys, no_work):
    _refused(["reproduce", "--preset", "cpu", "--device", "cuda:0", "--out", str(tmp_path / "o")], capsys,
             "sees no CUDA device")


def test_cuda_index_beyond_the_visible_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert validate.device("cuda:1") == "cuda:1"
    with pytest.raises(InputError, match="only 2 CUDA device"):
        validate.device("cuda:2")
    with pytest.raises(InputError, match="not a torch device"):
        validate.device("gpu")


# --- seeds and counts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,option", [
    (["verify", "--seed", "-1"], "--seed"),
    (["ntk", "--seed", "-1"], "--seed"),
    (["reproduce", "--preset", "cpu", "--seeds", "0,-1"], "--seeds"),
    (["verify", "--seed", str(2**32)], "--seed"),
    (["train", "--seed", "-1"], "seed"),
], ids=["verify", "ntk", "reproduce", "too-large", "train"])
def test_seed_out_of_range_is_refused(argv, option, tmp_path, capsys, no_work):
    out = tmp_path / "o"
    argv = argv + (["--out", str(out)] if argv[0] != "ntk" else [])
    _refused(argv, capsys, option, "0..4294967295")
    assert not out.exists()


def test_seed_in_range_passes(tmp_path, no_work):
    _passes_validation(["verify", "--seed", str(2**32 - 1), "--out", str(tmp_path / "o")])
    _passes_validation(["reproduce", "--preset", "cpu", "--seeds", "0,1", "--out", str(tmp_path / "o")])
    _passes_validation(["train", "--seed", str(2**32 - 1), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("option,value", [("--n", "0"), ("--k", "-2"), ("--check-samples", "0"),
                                          ("--memory-budget", "-1"), ("--memory-budget", "nan")])
def test_ntk_counts_must_be_positive(option, value, capsys):
    _refused(["ntk", option, value], capsys, f"argument {option}")


# --- ntk --bn-mode -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_bn_mode_on_a_network_without_batchnorm_is_refused(model, capsys):
    _refused(["ntk", "--model", model, "--bn-mode", "batch", "--n", "2", "--k", "2"], capsys,
             "--bn-mode batch", "no BatchNorm layer")


@pytest.mark.exact  # `dynamics ntk` exits 0 only when K is exactly symmetric (max |K - Kᵀ| == 0)
def test_bn_mode_on_the_resnet_is_used(capsys):
    assert cli.main(["ntk", "--model", "resnet", "--bn-mode", "frozen", "--n", "3", "--k", "2"]) == 0
    assert "bn_mode=frozen" in capsys.readouterr().out
    assert cli.main(["ntk", "--model", "mlp", "--n", "3", "--k", "2"]) == 0  # no option, no BatchNorm: fine
    assert "bn_mode=None" in capsys.readouterr().out


# --- Ctrl-C says what to do ----------------------------------------------------------------------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("argv,needle", [
    (["reproduce", "--preset", "cpu"], "run the same command again to continue"),
    (["verify"], "no report was written"),
], ids=["reproduce", "verify"])
def test_interrupt_says_how_to_continue(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce_cli, "reproduce", _interrupt)
    monkeypatch.setattr(verify_cli.statements, "collect", _interrupt)
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert f"dynamics {argv[0]}: interrupted; " in err and needle in err
