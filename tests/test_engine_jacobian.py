"""The dense Jacobian and the matrix-free operator against the slow reference (tests/reference.py)."""

import numpy as np
import pytest
import torch
from torch import nn

import dynamics
from dynamics.errors import BatchNormModeError, InputError, ParameterSelectionError, StochasticModelError
from reference import (ResBlockBN, assert_unchanged, randomise_bn, reference_jacobian, snapshot, tiny_cnn,
                       tiny_mlp)

F64 = torch.float64


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


CASES = {
    "mlp_k2": (lambda: tiny_mlp(k=2), lambda: torch.randn(4, 3)),
    "mlp_k1_nobias": (lambda: tiny_mlp(k=1, bias=False, act=nn.ReLU), lambda: torch.randn(5, 3)),
    "cnn_k3": (lambda: tiny_cnn(), lambda: torch.randn(3, 1, 5, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_jacobian_matches_autograd_reference_float64(case):
    model, x = CASES[case][0](), CASES[case][1]()
    snap = snapshot(model)
    J = dynamics.jacobian(model, x, dtype=F64)
    R = reference_jacobian(model, x)
    assert J.shape == R.shape and J.dtype == F64
    assert rel(J, R) <= 1e-10
    assert_unchanged(model, snap)


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
def test_jacobian_resnet_block_with_batchnorm_each_mode_matches_reference(bn_mode):
    model = randomise_bn(ResBlockBN()).train()
    x = torch.randn(4, 2, 5, 5)
    snap = snapshot(model)
    J = dynamics.jacobian(model, x, bn_mode=bn_mode, dtype=F64)
    R = reference_jacobian(model, x, bn_mode=bn_mode)
    assert rel(J, R) <= 1e-10
    assert_unchanged(model, snap)  # running buffers bit-identical, still in train mode


def test_batch_and_frozen_modes_agree_in_value_but_not_in_derivative():
    model = randomise_bn(ResBlockBN()).train()
    x = torch.randn(4, 2, 5, 5)
    ob = dynamics.JacobianOperator(model, x, bn_mode="batch", dtype=F64)
    of = dynamics.JacobianOperator(model, x, bn_mode="frozen", dtype=F64)
    assert torch.allclose(ob.outputs, of.outputs, atol=1e-12)
    assert rel(ob.dense(), of.dense()) > 1e-3


def test_batch_mode_jacobian_annihilates_weights_feeding_batchnorm():
    # f is scale-invariant in a conv weight followed by BN with batch statistics: J_w · w = 0 (exactly only
    # when BN's eps is 0: with the default eps=1e-5 the invariance holds to about eps / variance).
    model = randomise_bn(ResBlockBN()).train()
    model.bn1.eps = 1e-15
    x = torch.randn(6, 2, 5, 5)
    op = dynamics.JacobianOperator(model, x, params=["conv1.weight"], bn_mode="batch", dtype=F64)
    assert (op @ op.theta).norm() <= 1e-10 * op.dense().norm()
    op_eval = dynamics.JacobianOperator(model, x, params=["conv1.weight"], bn_mode="eval", dtype=F64)
    assert (op_eval @ op_eval.theta).norm() > 1e-3


def test_frozen_statistics_are_biased_batch_statistics_of_x():
    model = randomise_bn(ResBlockBN()).train()
    x = torch.randn(5, 2, 4, 4)
    op = dynamics.JacobianOperator(model, x, bn_mode="frozen", dtype=F64)
    with torch.no_grad():
        ref = ResBlockBN()
        ref.load_state_dict(model.state_dict())
        ref = ref.double().train()
        expected = ref(x.double())
    assert torch.allclose(op.outputs, expected, atol=1e-12)


@pytest.mark.parametrize("spec", [["fc.weight"], r"conv\d\.weight", "modules"])
def test_parameter_subsets_select_matching_columns(spec):
    model = randomise_bn(ResBlockBN()).eval()
    x = torch.randn(3, 2, 4, 4)
    if spec == "modules":
        spec_arg, names = [model.conv2, model.fc], ["conv2.weight", "fc.weight", "fc.bias"]
    else:
        spec_arg = spec
        names = spec if isinstance(spec, list) else ["conv1.weight", "conv2.weight"]
    J = dynamics.jacobian(model, x, params=spec_arg, dtype=F64)
    R = reference_jacobian(model, x, names=names, bn_mode="eval")
    assert rel(J, R) <= 1e-10


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
def test_operator_products_match_dense_jacobian(bn_mode):
    model = randomise_bn(ResBlockBN()).train()
    x = torch.randn(5, 2, 4, 4)
    op = dynamics.JacobianOperator(model, x, bn_mode=bn_mode, dtype=F64, batch_size=2)
    J = reference_jacobian(model, x, bn_mode=bn_mode)
    v = torch.randn(op.p, dtype=F64)
    V = torch.randn(op.p, 3, dtype=F64)
    u = torch.randn(op.shape[0], dtype=F64)
    U = torch.randn(op.shape[0], 4, dtype=F64)
    assert op.shape == tuple(J.shape)
    assert rel(op @ v, J @ v) <= 1e-10
    assert rel(op @ V, J @ V) <= 1e-10
    assert rel(op.T @ u, J.T @ u) <= 1e-10
    assert rel(op.T @ U, J.T @ U) <= 1e-10
    assert op.T.T is op and op.T.shape == (op.p, op.shape[0])


def test_operator_to_scipy_works_with_lsqr():
    from scipy.sparse.linalg import lsqr

    model = tiny_mlp(k=2)
    x = torch.randn(3, 3)
    op = dynamics.JacobianOperator(model, x, dtype=F64)
    A = op.to_scipy()
    J = reference_jacobian(model, x).numpy()
    v = np.random.default_rng(0).standard_normal(op.p)
    assert np.allclose(A @ v, J @ v) and np.allclose(A.T @ (J @ v), J.T @ (J @ v))
    b = J @ v  # consistent system: lsqr must reach residual ~0
    sol = lsqr(A, b, atol=1e-14, btol=1e-14, iter_lim=2000)[0]
    assert np.linalg.norm(J @ sol - b) <= 1e-8 * np.linalg.norm(b)


def test_float32_jacobian_close_to_float64_reference():
    model = tiny_cnn()
    x = torch.randn(3, 1, 5, 5)
    J = dynamics.jacobian(model, x)
    assert J.dtype == torch.float32
    assert rel(J.double(), reference_jacobian(model, x)) <= 1e-5


def test_model_dtype_unchanged_by_float64_call():
    model = tiny_mlp()
    dynamics.jacobian(model, torch.randn(2, 3), dtype=F64)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_memory_budget_too_small_for_dense_jacobian_raises():
    from dynamics.errors import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match="JacobianOperator"):
        dynamics.jacobian(tiny_mlp(), torch.randn(4, 3), memory_budget=100)


# ---------------------------------------------------------------- bad input
def test_batchnorm_in_training_mode_without_bn_mode_names_layer_and_choices():
    model = ResBlockBN().train()
    with pytest.raises(BatchNormModeError, match=r"BatchNorm2d 'bn0' is in training mode.*'eval'.*'batch'.*'frozen'"):
        dynamics.jacobian(model, torch.randn(2, 2, 4, 4))


def test_unknown_bn_mode_rejected():
    with pytest.raises(BatchNormModeError, match="unknown bn_mode"):
        dynamics.jacobian(ResBlockBN(), torch.randn(2, 2, 4, 4), bn_mode="running")


def test_eval_mode_without_running_statistics_rejected():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    with pytest.raises(BatchNormModeError, match="running statistics"):
        dynamics.jacobian(model, torch.randn(3, 3), bn_mode="eval")


def test_dropout_in_training_mode_rejected():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    with pytest.raises(StochasticModelError, match="model.eval()"):
        dynamics.jacobian(model, torch.randn(3, 3))


@pytest.mark.parametrize("x, match", [
    (torch.randn(0, 3), "empty"),
    (torch.tensor(1.0), "scalar"),
    (torch.tensor([[1.0, float("nan"), 0.0]]), "non-finite"),
    (torch.randn(2, 3, dtype=torch.complex64), "dtype"),
    (torch.randn(2, 7), "model\\(x\\) failed"),
    ([[1.0, 2.0, 3.0]], "torch.Tensor"),
])
def test_bad_inputs_raise_input_error(x, match):
    with pytest.raises(InputError, match=match):
        dynamics.jacobian(tiny_mlp(), x)


def test_non_finite_parameters_rejected():
    model = tiny_mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(InputError, match="'0.weight' contains non-finite"):
        dynamics.jacobian(model, torch.randn(2, 3))


@pytest.mark.parametrize("params, match", [
    (["0.wieght"], "Did you mean"),
    (r"nothing\..*", "matches no parameter"),
    ([], "empty"),
    (nn.Linear(2, 2), "not a submodule"),
])
def test_bad_parameter_selection_raises(params, match):
    with pytest.raises(ParameterSelectionError, match=match):
        dynamics.jacobian(tiny_mlp(), torch.randn(2, 3), params=params)


def test_model_without_parameters_rejected():
    with pytest.raises(ParameterSelectionError, match="no parameters"):
        dynamics.jacobian(nn.ReLU(), torch.randn(2, 3))


def test_operator_rejects_wrong_vector_shapes():
    op = dynamics.JacobianOperator(tiny_mlp(), torch.randn(2, 3))
    with pytest.raises(InputError, match=r"v must have shape \(" + str(op.p)):
        op @ torch.randn(op.p + 1)
    with pytest.raises(InputError, match="u must have shape"):
        op.T @ torch.randn(3)
