"""The empirical Fisher F = (1/N) Σ_i g_i g_iᵀ (uncentred second moment of per-sample gradients).

Note F = Σ + ḡ ḡᵀ with Σ the per-sample gradient covariance of :mod:`sgdlab.measure.noise`;
the *true* Fisher (labels sampled from the model) is the GGN for cross-entropy, see
:class:`~sgdlab.operators.ggn.GGNOperator`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .batches import Data, cast_batches, check_mean_of_samples
from .linear import ModelOperator
from .params import copy_module, state_versions
from .per_sample import (check_per_sample_data, checked_per_sample_gradients,
                         per_sample_gradients)


class EmpiricalFisherOperator(ModelOperator):
    """F v = (1/N) Gᵀ (G v) with G the (N, d) per-sample gradients.

    Built from data, it refuses a loss whose batch value is not the mean of the samples'
    losses (:func:`~sgdlab.operators.batches.check_mean_of_samples`: ``reduction="sum"``,
    class weights, ignored targets), whose Hessian and GGN it would not stand beside: each
    row of G is one sample's loss alone, so F is that of the plain mean (a summed loss's
    Hessian N times larger).

    ``store_gradients=True`` (default) computes G once (N·d memory, two thin matmuls per
    product) and again after the model's parameters or buffers changed in place (an optimizer
    step), as the Hessian and GGN operators remake their kept graphs; ``False`` recomputes
    per-sample gradients batch by batch at every product (memory of one batch's gradients),
    for data that does not fit. ``gradients`` may pass a precomputed G (e.g. from a
    :class:`~sgdlab.measure.noise.GradientCovariance`), used as given.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        data: Data | None = None,
        *,
        store_gradients: bool = True,
        chunk_size: int | None = 256,
        gradients: Tensor | None = None,
    ):
        if data is None and gradients is None:
            raise ValueError("EmpiricalFisherOperator needs data or precomputed gradients")
        super().__init__(model, loss_fn, data, data_optional=gradients is not None)
        if data is not None:
            check_mean_of_samples(loss_fn, data, "EmpiricalFisherOperator")
        self.chunk_size = chunk_size
        self._store = store_gradients
        self._versions: tuple[int, ...] | None = None    # of the model G was computed at
        # a G of the caller's is the operator (no data needed): kept in another dtype too
        self._given = gradients is not None
        if gradients is not None:
            if gradients.shape[1] != self.shape[0]:
                raise ValueError(f"gradients have {gradients.shape[1]} columns, model has "
                                 f"{self.shape[0]} parameters")
            self.gradients = gradients.detach()
        elif store_gradients:
            self._compute_gradients()
        else:
            self.gradients = None

    def _compute_gradients(self) -> None:
        self.gradients = per_sample_gradients(self.model, self.loss_fn, self.data,
                                              chunk_size=self.chunk_size).detach()
        self._versions = state_versions(self.model)

    def _current_gradients(self) -> Tensor | None:
        """G, computed again when the model changed in place since (G from data only)."""
        if self._versions is not None and self._versions != state_versions(self.model):
            self._compute_gradients()
        return self.gradients

    def _batch_gradients(self) -> Iterator[Tensor]:
        """Each batch's per-sample gradients, in turn (``store_gradients=False``). The model,
        loss and data checked once a product, on the first batch, as
        :func:`~sgdlab.operators.per_sample.per_sample_gradients` checks them, not again for
        every batch; each batch runs within :meth:`batches`' contexts, those of
        per_sample_gradients."""
        for i, (x, y) in enumerate(self.batches()):
            if i == 0:
                check_per_sample_data(self.model, self.loss_fn, (x, y))
            yield checked_per_sample_gradients(self.model, self.loss_fn, (x, y),
                                               chunk_size=self.chunk_size)

    def _options(self) -> dict:
        return dict(store_gradients=self._store, chunk_size=self.chunk_size)

    def to(self, dtype: torch.dtype) -> "EmpiricalFisherOperator":
        if dtype == self.dtype or not self._given:
            return super().to(dtype)
        # built from precomputed gradients: convert those, not G of the data in their place
        data = None if self.data is None else cast_batches(self.data, dtype)
        return EmpiricalFisherOperator(copy_module(self.model).to(dtype), self.loss_fn, data,
                                       gradients=self.gradients.to(dtype), **self._options())

    def _matvec(self, v: Tensor) -> Tensor:
        """F v for a flat v, or F M for a (d, k) M (the same two thin matmuls)."""
        g = self._current_gradients()
        if g is not None:
            return g.T @ (g @ v) / len(g)
        total, n = torch.zeros_like(v), 0
        for g in self._batch_gradients():
            total += g.T @ (g @ v)
            n += len(g)
        return total / n

    _matmat = _matvec    # Gᵀ (G M) / N: already batched over columns
    # a block of k columns costs the same per-sample gradients (or G) as one: blocks always pay
    tune_blocks = False

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        """vᵀ F v = ‖G v‖² / N (one thin matmul instead of two)."""
        g = self._current_gradients()
        if g is not None:
            return (g @ m).square().sum(0) / len(g)
        total, n = m.new_zeros(m.shape[1]), 0
        for g in self._batch_gradients():
            total += (g @ m).square().sum(0)
            n += len(g)
        return total / n
