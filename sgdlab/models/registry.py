"""Models by name: ``build_model(name, input_shape, num_outputs, **options) -> nn.Module``.

Each architecture module registers a builder with ``@register_model(name, paper=..., ...)``.
A builder has the signature ``fn(input_shape, num_outputs, **options)``; its keyword-only
parameters are the model's options. :func:`describe` returns the registered facts (paper,
the parameter count the paper states, our reading of the architecture).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import (UserError, checked_int, did_you_mean, name_spelling, plugin_hint,
                      registered_spelling)
from .modes import eval_mode

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What sgdlab knows about a registered architecture.

    ``stated_params`` is the count the paper states (None where it states none) for the input
    in ``reference_input`` with ``reference_outputs`` outputs; ``notes`` records our reading where
    the paper leaves the architecture open. ``inputs`` is ``"features"`` (floating point inputs,
    outputs (N, num_outputs)) or ``"tokens"`` (int64 tokens (N, T), logits (N, num_outputs, T)
    for the next token at each position: the recurrent networks).
    """

    name: str
    paper: str
    description: str
    reference_input: tuple[int, ...] | None
    reference_outputs: int
    stated_params: int | None = None
    notes: str = ""
    builder: Builder | None = None
    inputs: str = "features"

    @property
    def options(self) -> dict[str, Any]:
        assert self.builder is not None
        return {p.name: p.default for p in inspect.signature(self.builder).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}


#: what a model reads: floating point features, or int64 token sequences (ModelInfo.inputs)
INPUT_KINDS = ("features", "tokens")

#: name -> ModelInfo (with its builder). ``sorted(MODELS)`` lists the names.
MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, paper: str = "", description: str = "",
                   reference_input: Sequence[int] | None = None, reference_outputs: int = 10,
                   stated_params: int | None = None, notes: str = "",
                   inputs: str = "features") -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(input_shape, num_outputs, *, option=default, ...)`` under
    ``name`` for :func:`build_model` and run configs, its keyword-only parameters the options.
    Only ``name`` is needed, as for ``register_dataset`` and ``register_optimizer``; a paper's
    architecture also records its ``paper``, a ``description``, the ``stated_params`` count
    and the ``reference_input`` shape (with ``reference_outputs``) that count is for, which the
    tests of the packaged models check."""
    if inputs not in INPUT_KINDS:
        raise ValueError(f"inputs of model {name!r} must be one of {INPUT_KINDS}, got {inputs!r}")

    def deco(fn: Builder) -> Builder:
        if name in MODELS and MODELS[name].builder is not fn:
            raise ValueError(f"model name {name!r} registered twice")
        _check_builder(name, fn)
        reference = None if reference_input is None else tuple(reference_input)
        MODELS[name] = ModelInfo(name, paper, description, reference,
                                 reference_outputs, stated_params, notes, fn, inputs)
        return fn
    return deco


def _check_builder(name: str, fn: Builder) -> None:
    """The options of a builder are its keyword-only parameters (what run configs accept):
    refuse another parameter after ``input_shape, num_outputs``, showing the signature."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params[2:] if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                      inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if positional:
        options = [str(p.replace(kind=inspect.Parameter.KEYWORD_ONLY)) for p in params[2:]
                   if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        fixed = ", ".join([p.name for p in params[:2]] + ["*"] + options)
        raise ValueError(f"option {positional[0].name!r} of model {name!r} must be "
                         f"keyword-only: def {fn.__name__}({fixed})")


def model_key(name: str) -> str:
    """The registry key model ``name`` is looked up under: either spelling of ``-`` / ``_``,
    any case, and "vgg16" / "resnet56" / "zhu-lenet" spelled without a hyphen (the name's
    shared spelling when no model has it)."""
    key = registered_spelling(name, MODELS) or name_spelling(name)
    if key not in MODELS:
        key = {k.replace("-", ""): k for k in MODELS}.get(key.replace("-", ""), key)
    return key


def _lookup(name: str) -> ModelInfo:
    if not isinstance(name, str):
        # a config's model section, {name: ..., OPTION: ...}, passed whole
        hint = ("; for a model section, build_model(spec['name'], input_shape, num_outputs, "
                "**options)" if isinstance(name, dict) else "")
        raise UserError(f"A model name must be a string, got {type(name).__name__} "
                        f"{name!r}{hint}")
    try:
        return MODELS[model_key(name)]
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"Unknown model {name!r}{did_you_mean(name, MODELS)}; known models: "
                        f"{', '.join(sorted(MODELS))} ({plugin_hint('model')})") from None


def describe(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of model ``name`` (paper, stated parameter count, notes, options)."""
    return _lookup(name)


def build_model(name: str, input_shape: Sequence[int] | int, num_outputs: int,
                **options: Any) -> nn.Module:
    """Build architecture ``name`` for inputs shaped ``input_shape`` (no batch dimension) and
    ``num_outputs`` outputs (classes, or regression outputs). Parameters are initialised from
    torch's global RNG: seed it (``torch.manual_seed``) for reproducible weights."""
    info = _lookup(name)
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise UserError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise UserError(f"input_shape must be non-empty with positive sizes, got {shape}")
    num_outputs = checked_int("num_outputs", num_outputs, 1)
    allowed = info.options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(
            f"model {info.name!r} has no option(s) {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], allowed)}; valid options: "
            f"{', '.join(sorted(allowed)) or '(none)'}")
    assert info.builder is not None
    try:
        model = info.builder(shape, num_outputs, **options)
    except UserError:
        raise
    except Exception as e:
        if str(getattr(info.builder, "__module__", "")).startswith("sgdlab."):
            raise
        # a plugin's builder: its own error at its own line, as an import of it is named
        from ..plugins import raised_at

        raise UserError(f"model {info.name!r}: building it failed: {type(e).__name__}: "
                        f"{e}{raised_at(e)}") from e
    if len(shape) == 2 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        # a CNN built for (H, W) images (image_shape: one channel) takes them as a dataset
        # of that shape holds them, (N, H, W), as well as (N, 1, H, W)
        model.register_forward_pre_hook(_add_channel)
    return model


def check_model_inputs(name: str, x: torch.Tensor, data_name: str | None = None) -> None:
    """Refuse inputs ``x`` of the other kind than model ``name`` reads (:attr:`ModelInfo.inputs`):
    integer tokens for a network of floating point features (whose first layer would fail on
    them with a dtype error), floating point features for a sequence model."""
    info = _lookup(name)
    tokens = not (x.is_floating_point() or x.is_complex())
    if (info.inputs == "tokens") == tokens:
        return
    of = f"dataset {data_name!r}" if data_name else "the data"
    if tokens:
        seq = ", ".join(sorted(k for k, v in MODELS.items() if v.inputs == "tokens"))
        raise UserError(f"model {info.name!r} takes floating point features, but {of} holds "
                        f"{x.dtype} tokens shaped {tuple(x.shape)}: use a sequence model "
                        f"({seq})")
    raise UserError(f"model {info.name!r} reads integer tokens (N, T), but {of} holds "
                    f"{x.dtype} inputs shaped {tuple(x.shape)}")


def _add_channel(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 3:
        return (args[0].unsqueeze(1), *args[1:])
    return None


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- small building blocks shared by the architecture modules --------------------------------

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
    "elu": nn.ELU, "softplus": nn.Softplus, "identity": nn.Identity, "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise UserError(f"Unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}"
                        ) from None


def image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for a CNN: accepts (C, H, W), or (H, W) as one channel (the built model then
    takes batches shaped (N, H, W) or (N, 1, H, W): :func:`build_model`)."""
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) != 3:
        raise UserError(f"model {name!r} is a 2-D CNN and needs input_shape (C, H, W), got "
                        f"{input_shape}; use an MLP for flat inputs")
    return input_shape  # type: ignore[return-value]


def flat_size(features: nn.Module, input_shape: tuple[int, ...], name: str) -> int:
    """Features' output size for one input, by a dummy forward (no gradients, eval mode)."""
    try:
        with torch.no_grad(), eval_mode(features):
            out = features(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise UserError(f"model {name!r} cannot take inputs shaped {input_shape}: {e}") from None
    return int(out[0].numel())


def check_positive(name: str, value: Any) -> int:
    """``value`` of model option ``name`` as a Python int (numpy's and torch's ints too: a
    grid's values) when it is an int >= 1, else a :class:`UserError` naming the option."""
    return checked_int(f"option {name!r}", value, 1)


def check_prob(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise UserError(f"option {name!r} must be a probability in [0, 1), got {value!r}")
