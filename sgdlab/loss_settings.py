"""What a loss is set to compute, read alike from a torch loss module
(``nn.CrossEntropyLoss(reduction="sum", weight=w)``) and from a ``functools.partial`` of a
``torch.nn.functional`` loss (``partial(F.cross_entropy, reduction="sum", weight=w)``, nested
partials too): the checks that refuse one form refuse the other."""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

__all__ = ["ELEMENTWISE_LOSSES", "class_weights", "is_cross_entropy", "is_elementwise",
           "loss_name", "loss_reduction", "loss_setting", "torch_loss_class"]

# torch losses that compare outputs and targets entry by entry (and broadcast mismatched shapes)
ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss,
                      nn.BCEWithLogitsLoss, nn.BCELoss)
_ELEMENTWISE_FUNCTIONS = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                          "binary_cross_entropy_with_logits", "binary_cross_entropy")


def _unwrap(loss_fn: Any) -> tuple[Any, dict[str, Any]]:
    """The callable under ``loss_fn``'s partials and the keywords they pass it (an outer
    partial's override an inner one's, as in the call)."""
    keywords: dict[str, Any] = {}
    while isinstance(loss_fn, functools.partial):
        keywords = {**loss_fn.keywords, **keywords}
        loss_fn = loss_fn.func
    return loss_fn, keywords


@functools.lru_cache(maxsize=None)
def _defaults(fn: Any) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _is_functional(fn: Any) -> bool:
    return inspect.isfunction(fn) and fn.__module__ == "torch.nn.functional"


def torch_loss_class(loss_fn: Any) -> type:
    """The class of the torch loss ``loss_fn`` computes: its own, or for a loss that computes a
    torch loss another way (:class:`sgdlab.train.losses.SequenceCrossEntropyLoss`: its
    ``torch_loss``, ``nn.CrossEntropyLoss``), that loss's. The closed forms that hold for
    torch's loss (``torch_loss_class(loss_fn) is nn.CrossEntropyLoss``) hold for it, and a
    resume reads the two as one loss."""
    cls = type(loss_fn)
    own = getattr(cls, "torch_loss", None)
    return own if isinstance(own, type) and issubclass(cls, own) else cls


def is_cross_entropy(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` is a cross-entropy over class scores: ``nn.CrossEntropyLoss`` (or a
    loss computing it, :func:`torch_loss_class`), ``F.cross_entropy``, or a partial of
    either; its settings (weights, reduction, ...) are not looked at."""
    base, _ = _unwrap(loss_fn)
    return (torch_loss_class(base) is nn.CrossEntropyLoss
            or (_is_functional(base) and base.__name__ == "cross_entropy"))


def loss_setting(loss_fn: Any, name: str, default: Any = None) -> Any:
    """The value of ``loss_fn``'s setting ``name`` (``"reduction"``, ``"weight"``,
    ``"ignore_index"``): a keyword a ``functools.partial`` gives, else a
    ``torch.nn.functional`` function's own default (``F.cross_entropy``: ``ignore_index=-100``),
    else the attribute of a loss module; ``default`` for a loss without one."""
    base, keywords = _unwrap(loss_fn)
    if name in keywords:
        return keywords[name]
    if _is_functional(base):
        return _defaults(base).get(name, default)
    return getattr(base, name, default)


def loss_reduction(loss_fn: Any) -> str | None:
    """``"mean"``, ``"sum"`` or ``"none"``: how ``loss_fn`` reduces its samples' losses, a
    partial's legacy ``size_average=`` / ``reduce=`` read as torch reads them (a module has
    turned them into ``reduction`` already); None for a loss that does not say (a plain
    callable, taken to be a mean)."""
    _, keywords = _unwrap(loss_fn)
    size_average, reduce = keywords.get("size_average"), keywords.get("reduce")
    if size_average is not None or reduce is not None:   # torch's _Reduction.legacy_get_string
        if reduce is not None and not reduce:
            return "none"
        return "sum" if size_average is not None and not size_average else "mean"
    reduction = loss_setting(loss_fn, "reduction")
    return reduction if isinstance(reduction, str) else None


def class_weights(loss_fn: Any) -> Any:
    """The class weights of a cross-entropy or NLL loss (module, ``F.cross_entropy`` /
    ``F.nll_loss`` or a partial of them), which make its mean a weighted one; None when it
    has none, or is another loss (whose ``weight`` rescales entries of a plain mean)."""
    base, _ = _unwrap(loss_fn)
    if not (isinstance(base, (nn.CrossEntropyLoss, nn.NLLLoss))
            or (_is_functional(base) and base.__name__ in ("cross_entropy", "nll_loss"))):
        return None
    return loss_setting(loss_fn, "weight")


def is_elementwise(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` is one of torch's element-wise losses (:data:`ELEMENTWISE_LOSSES`,
    or their ``torch.nn.functional`` function, ``F.mse_loss``, or a partial of one)."""
    base, _ = _unwrap(loss_fn)
    return isinstance(base, ELEMENTWISE_LOSSES) or (
        _is_functional(base) and base.__name__ in _ELEMENTWISE_FUNCTIONS)


def loss_name(loss_fn: Any) -> str:
    """The loss's name in messages: the module's class (``CrossEntropyLoss``), or the
    function's name under any partials (``cross_entropy``)."""
    base, _ = _unwrap(loss_fn)
    name = getattr(base, "__name__", None)
    return name if isinstance(name, str) else type(base).__name__
