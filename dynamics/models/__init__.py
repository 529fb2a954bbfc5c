"""Models: MLP, plain CNN, CIFAR ResNets, PreActResNet-18 and the theory networks, behind one registry.

Every model maps (N, C, H, W) (or (N, d) for vector models) to logits (N, num_classes) through a final
``nn.Linear`` exposed as ``model.readout``; ``model.features(x)`` is the read-out's input (N, feature_dim).

>>> import torch, dynamics.models as dm
>>> m = dm.create("resnet_small", in_channels=1, num_classes=10)
>>> m(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.models.base import Classifier, as_size
from dynamics.models.cnn import CNN
from dynamics.models.mlp import MLP
from dynamics.models.preact_resnet import PreActResNet
from dynamics.models.resnet import CifarResNet
from dynamics.models.theory_nets import NonlinearHeadMLP, NormalisedHeadMLP, ReLUChain

__all__ = [
    "create", "create_for_data", "takes_option", "available", "register", "unregister", "Classifier", "MLP", "CNN",
    "CifarResNet", "PreActResNet", "ReLUChain", "NonlinearHeadMLP", "NormalisedHeadMLP",
]

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(in_channels, num_classes, **options) -> nn.Module`` under ``name``.

    >>> @register("tiny_linear_example")
    ... def _tiny(in_channels, num_classes):
    ...     return MLP(in_channels, num_classes, depth=0)
    >>> create("tiny_linear_example", 3, 2).readout
    Linear(in_features=3, out_features=2, bias=True)
    >>> unregister("tiny_linear_example")
    """

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise InputError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def unregister(name: str) -> None:
    """Remove a model registered with :func:`register` (e.g. one registered in a notebook or a test)."""
    if name not in _REGISTRY:
        raise InputError(f"no model named {name!r} is registered; registered: {', '.join(available())}")
    del _REGISTRY[name]


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_REGISTRY)


def create(name: str, in_channels: int, num_classes: int, **options) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`available` (e.g. ``"mlp"``, ``"cnn"``, ``"resnet20"``, ``"preact_resnet18"``).
        in_channels: input channels (images) or input dimension (vector models with ``input_size=None``).
        num_classes: number of outputs k.
        **options: passed to the builder; ``width`` is the width multiplier for the conv nets, ``input_size``
            (int or (H, W)) fixes and checks the spatial size (required by ``mlp`` on images and ``cnn``).

    Raises:
        InputError: unknown name (the message lists the valid ones) or an option the model does not take.
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available models: {', '.join(available())}")
    if in_channels < 1 or num_classes < 1:
        raise InputError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}")
    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            accepted = [p for p in params if p not in ("in_channels", "num_classes")]
            raise InputError(f"model {name!r} does not take option(s) {unknown}; it accepts {accepted}")
    return builder(in_channels, num_classes, **options)


def takes_option(name: str, option: str) -> bool:
    """Whether the builder of model ``name`` accepts the keyword ``option`` (read from its signature).

    >>> takes_option("cnn", "input_size"), takes_option("relu_chain", "input_size")
    (True, False)
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available models: {', '.join(available())}")
    params = inspect.signature(_REGISTRY[name]).parameters
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def create_for_data(name: str, x: torch.Tensor, num_classes: int, **options) -> nn.Module:
    """Build model ``name`` for inputs shaped like ``x``: (N, d) vectors or (N, C, H, W) images.

    ``in_channels`` is ``x.shape[1]``; for images the spatial size ``(H, W)`` is passed as ``input_size`` when the
    builder takes that option and ``options`` do not set it.

    >>> import torch
    >>> create_for_data("cnn", torch.zeros(2, 1, 8, 8), 3, channels=(4,))(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 3])
    """
    if x.dim() < 2:
        raise InputError(f"x must be (N, d) or (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dim() == 4 and "input_size" not in options and takes_option(name, "input_size"):
        options = {**options, "input_size": tuple(x.shape[2:])}
    return create(name, int(x.shape[1]), num_classes, **options)


def _mlp(in_channels, num_classes, input_size=None, depth=2, width=128, activation="relu", bias=True,
         batchnorm=False):
    return MLP.build(in_channels, num_classes, input_size=input_size, depth=depth, width=width,
                     activation=activation, bias=bias, batchnorm=batchnorm)


def _cnn(in_channels, num_classes, input_size=None, channels=(32, 64), width=1.0, batchnorm=False,
         activation="relu"):
    return CNN(in_channels, num_classes, input_size=input_size, channels=channels, width=width,
               batchnorm=batchnorm, activation=activation)


def _cifar_resnet(depth: int, default_width: float = 1.0) -> Builder:
    def build(in_channels, num_classes, width=default_width, input_size=None):
        return CifarResNet(in_channels, num_classes, depth=depth, width=width, input_size=input_size)

    return build


def _preact18(in_channels, num_classes, width=1.0, input_size=None):
    return PreActResNet(in_channels, num_classes, num_blocks=(2, 2, 2, 2), width=width, input_size=input_size)


def _relu_chain(in_channels, num_classes, depth=3, bias_first=False):
    return ReLUChain(depth, in_channels, out_features=num_classes, bias_first=bias_first)


def _vector_shape(in_channels, input_size):
    size = as_size(input_size)
    return (in_channels,) if size is None else (in_channels, *size)


def _nonlinear_head_mlp(in_channels, num_classes, head="sigmoid", input_size=None, depth=1, width=32,
                        activation="relu", bias=True):
    shape = _vector_shape(in_channels, input_size)
    return NonlinearHeadMLP(math.prod(shape), num_classes, head=head, depth=depth, width=width,
                            activation=activation, bias=bias, input_shape=shape)


def _normalised_head_mlp(in_channels, num_classes, norm="batchnorm", input_size=None, depth=1, width=32,
                         activation="relu", bias=True):
    shape = _vector_shape(in_channels, input_size)
    return NormalisedHeadMLP(math.prod(shape), num_classes, norm=norm, depth=depth, width=width,
                             activation=activation, bias=bias, input_shape=shape)


register("mlp")(_mlp)
register("cnn")(_cnn)
register("resnet_small")(_cifar_resnet(8, default_width=0.5))  # ResNet-8, widths 8/16/32: CPU-friendly
register("resnet8")(_cifar_resnet(8))
register("resnet20")(_cifar_resnet(20))
register("resnet32")(_cifar_resnet(32))
register("preact_resnet18")(_preact18)
register("relu_chain")(_relu_chain)
register("nonlinear_head_mlp")(_nonlinear_head_mlp)
register("normalised_head_mlp")(_normalised_head_mlp)
