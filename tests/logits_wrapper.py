"""A model whose logits a test rewrites: drives decoding down chosen paths and counts forward calls."""

from __future__ import annotations

from typing import Any

import torch


class LogitsRewriter(torch.nn.Module):
    """Wraps ``inner``; each forward's logits [B, keep, V] go through ``rewrite(logits, kwargs)``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def rewrite(self, logits: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, cache: Any = None, **kwargs: Any) -> Any:
        out = self.inner(input_ids=input_ids, cache=cache, **kwargs)
        self.calls += 1
        out.logits = self.rewrite(out.logits.clone(), kwargs)
        return out
