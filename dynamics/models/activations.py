"""Activation functions by name, shared by the MLP-style models."""

from __future__ import annotations

from torch import nn

from dynamics.errors import InputError

__all__ = ["ACTIVATIONS", "activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name.

    >>> activation("relu")
    ReLU()
    """
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise InputError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
