"""Loss modules: thin wrappers over tinygrad_rnn.functional with PyTorch's arguments."""

from __future__ import annotations

from .. import functional as F
from ..tensor import Tensor
from .module import Module


class CrossEntropyLoss(Module):
    """log_softmax + negative log-likelihood of class indices. input (N, C), target (N,)."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input: Tensor, target) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, ignore_index=self.ignore_index,
                               reduction=self.reduction)


class NLLLoss(CrossEntropyLoss):
    """Negative log-likelihood of class indices given log-probabilities (N, C)."""

    def forward(self, input: Tensor, target) -> Tensor:  # noqa: A002
        return F.nll_loss(input, target, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(Module):
    """Mean squared error."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy on logits (sigmoid folded in, numerically stable)."""

    def __init__(self, reduction: str = "mean", pos_weight=None):
        super().__init__()
        self.reduction, self.pos_weight = reduction, pos_weight

    def forward(self, input: Tensor, target) -> Tensor:  # noqa: A002
        return F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
