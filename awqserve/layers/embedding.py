"""Token embedding table (checkpoint name `<prefix>.weight`, shape [vocab, hidden])."""
from __future__ import annotations

import torch
from torch import nn


class VocabEmbedding(nn.Module):
    """Plain lookup: ids [T] -> [T, hidden]. Built on meta; the loader fills `weight`."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(input_ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.hidden_size}"
