"""Selecting the parameter subset S whose columns form the Jacobian.

``params`` may be:

* ``None``: every parameter with ``requires_grad`` (in ``named_parameters()`` order);
* a list/tuple of parameter names (exact, as ``named_parameters()`` spells them);
* a string or compiled regex, matched with ``re.fullmatch`` against each name (``"fc\\..*"``);
* an ``nn.Module`` or a list of modules: all parameters of those (sub)modules of ``model``;
* a list of ``nn.Parameter`` objects of ``model`` (matched by identity).

Whatever the form, the result is in ``model.named_parameters()`` order, without duplicates, so that the
columns of J are laid out the same way however S was named.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> [n for n, _ in select_parameters(net, r"2\\..*")]
['2.weight', '2.bias']
>>> [n for n, _ in select_parameters(net, ["2.bias", "0.weight"])]
['0.weight', '2.bias']
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable, Union

import torch
from torch import nn

from dynamics.errors import ParameterSelectionError

__all__ = ["ParamSpec", "select_parameters", "group_by_module"]

ParamSpec = Union[None, str, "re.Pattern[str]", nn.Module, Iterable[Union[str, nn.Module, torch.Tensor]]]


def select_parameters(model: nn.Module, params: ParamSpec = None) -> list[tuple[str, nn.Parameter]]:
    """Resolve ``params`` to ``[(name, parameter), ...]`` in ``model.named_parameters()`` order.

    Raises:
        ParameterSelectionError: the model has no parameters, a name is unknown, a regex or module
            matches nothing, or an object is not a parameter/module of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ParameterSelectionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_parameters())
    if not named:
        raise ParameterSelectionError(
            f"{type(model).__name__} has no parameters: there is no Jacobian with respect to parameters to compute")
    names = [n for n, _ in named]

    if params is None:
        chosen = {n for n, p in named if p.requires_grad}
        if not chosen:
            raise ParameterSelectionError(
                "no parameter of the model has requires_grad=True; pass params=[names] to choose columns explicitly")
    elif isinstance(params, (str, re.Pattern)):
        try:
            pattern = re.compile(params) if isinstance(params, str) else params
        except re.error as exc:
            raise ParameterSelectionError(
                f"params={params!r} is not a valid regular expression ({exc}); pass a regex matched with "
                f"re.fullmatch against parameter names (e.g. r'fc\\..*'), or a list of exact names") from None
        chosen = {n for n in names if pattern.fullmatch(n)}
        if not chosen:
            raise ParameterSelectionError(
                f"the regex {pattern.pattern!r} matches no parameter name (matched with re.fullmatch). "
                f"Parameter names are: {_short_list(names)}")
    elif isinstance(params, nn.Module):
        chosen = _from_modules(model, [params], named)
    else:
        try:
            items = list(params)
        except TypeError:
            raise ParameterSelectionError(
                f"params must be None, a list of names, a regex string, a module or a list of modules; "
                f"got {type(params).__name__}") from None
        if not items:
            raise ParameterSelectionError("params is empty: select at least one parameter (or pass None for all)")
        chosen = set()
        modules = []
        by_id = {id(p): n for n, p in named}
        for item in items:
            if isinstance(item, str):
                if item not in names:
                    close = difflib.get_close_matches(item, names, n=3)
                    hint = f" Did you mean {close}?" if close else f" Parameter names are: {_short_list(names)}"
                    raise ParameterSelectionError(f"unknown parameter name {item!r}.{hint}")
                chosen.add(item)
            elif isinstance(item, nn.Module):
                modules.append(item)
            elif isinstance(item, torch.Tensor):
                if id(item) not in by_id:
                    raise ParameterSelectionError(
                        f"a tensor of shape {tuple(item.shape)} in params is not a parameter of the model")
                chosen.add(by_id[id(item)])
            else:
                raise ParameterSelectionError(
                    f"params entries must be names, modules or parameters; got {type(item).__name__}")
        if modules:
            chosen |= _from_modules(model, modules, named)
    return [(n, p) for n, p in named if n in chosen]


def group_by_module(names: Iterable[str]) -> dict[str, list[str]]:
    """Group parameter names by the module that owns them, in order of first appearance.

    The owner of ``"layer1.0.conv1.weight"`` is ``"layer1.0.conv1"``; a parameter registered on the root module
    (``"cls_token"``) belongs to ``""``. Within a group the names keep their input order. This is the one
    grouping of parameters by module in the toolkit (the NTK's parameter groups, the on-model subset search).

    >>> group_by_module(["0.weight", "0.bias", "cls_token", "2.weight"])
    {'0': ['0.weight', '0.bias'], '': ['cls_token'], '2': ['2.weight']}
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return groups


def _from_modules(model: nn.Module, modules: list[nn.Module], named) -> set[str]:
    by_id = {id(p): n for n, p in named}
    chosen: set[str] = set()
    submodules = {id(m) for m in model.modules()}
    for module in modules:
        if id(module) not in submodules:
            raise ParameterSelectionError(f"{type(module).__name__} passed in params is not a submodule of the model")
        found = [by_id[id(p)] for p in module.parameters() if id(p) in by_id]
        if not found:
            raise ParameterSelectionError(f"the module {type(module).__name__} passed in params has no parameters")
        chosen.update(found)
    return chosen


def _short_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
