"""What training adds to the Hugging Face Trainer: batches, the loss, the accuracy that picks the adapter, the
progress bar and the metrics log.

- :class:`PadCollator` pads a batch to its longest example and, when every example starts with the same
  developer turn, sends that prefix once (``prefix_ids``).
- :func:`supervised_loss` is the cross-entropy on the model turn only, with logits computed only at supervised
  positions; :func:`shared_prefix_loss` is the same loss computing the shared prefix once per batch. Both are
  exact: the tests compare them with the plain loss, gradients included.
- :class:`CallTrainer` uses that loss, refuses a NaN, and adds exact-call accuracy to each validation pass.
- :class:`Progress` is the Trainer's progress bar with loss, learning rate and tokens/s, and writes every log
  record to ``metrics.jsonl`` (rank 0 only).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from transformers import AttentionInterface, AttentionMaskInterface, ProgressCallback, Trainer, TrainingArguments
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from .data import Example
from .encode import IGNORE_INDEX, Encoded
from .rundir import checkpoint_dir, metrics_path, tensorboard_dir

# --------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PadCollator:
    """Pads a batch to its longest example (right side); padding is masked out of attention and loss.

    With ``share_prefix``, when every example of the batch starts with the same developer turn (the usual case:
    same tools, same developer text), that prefix is sent once as ``prefix_ids`` (1, P) and only the rest of each
    example is padded into ``input_ids`` (B, S): see :func:`shared_prefix_loss`.
    """

    pad_id: int
    share_prefix: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        p = features[0].get("prefix_len", 0)
        shared = (
            self.share_prefix
            and p > 0
            and all(f.get("prefix_len") == p and f["input_ids"][:p] == features[0]["input_ids"][:p] for f in features)
            and all(y == IGNORE_INDEX for f in features for y in f["labels"][:p])
        )
        cut = p if shared else 0
        rows = [(f["input_ids"][cut:], f["labels"][cut:]) for f in features]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row_ids, row_labels) in enumerate(rows):
            ids[i, : len(row_ids)] = torch.tensor(row_ids)
            labels[i, : len(row_labels)] = torch.tensor(row_labels)
            mask[i, : len(row_ids)] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if shared:
            batch["prefix_ids"] = torch.tensor([features[0]["input_ids"][:p]], dtype=torch.long)
        return batch


def as_rows(encoded: Sequence[Encoded]) -> list[dict[str, Any]]:
    """The Trainer's dataset: one dict per example (plain lists; the collator makes tensors)."""
    return [{"input_ids": e.input_ids, "labels": e.labels, "prefix_len": e.prefix_len} for e in encoded]


# --------------------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------------------


class RowCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy over the vocabulary, ``F.cross_entropy(logits.float(), targets, reduction="none")``,
    computed a few rows at a time in fp32 from logits kept in their own dtype.

    ``F.cross_entropy`` on (N, 262k) logits materialises an fp32 copy, the log-softmax, a zero-filled gradient of
    the same size and the bf16 copy of it back. Measured on the main job's step (batch 8, the real 270M, 2 cores;
    ``benchmarks/bench_train_step.py --levers``): 2.55 s -> 2.27 s. Here the forward keeps only the log-sum-exp per
    row, and the backward writes the gradient, softmax minus one-hot, straight into a tensor of the logits' dtype.
    Tested equal to ``F.cross_entropy``, values and gradients, in fp32 and bf16."""

    CHUNK = 8  # rows per fp32 buffer, reused (8 x 262k x 4 bytes = 8 MiB)

    @staticmethod
    def forward(ctx: Any, logits: Any, targets: Any) -> Any:
        n, chunk = logits.shape[0], RowCrossEntropy.CHUNK
        buf = torch.empty((min(chunk, n), logits.shape[1]), dtype=torch.float32, device=logits.device)  # reused
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for i in range(0, n, chunk):
            x = buf[: min(chunk, n - i)]
            x.copy_(logits[i : i + chunk])
            top = x.amax(dim=-1, keepdim=True)
            lse[i : i + chunk] = x.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))
        picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        return lse - picked

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        logits, targets, lse = ctx.saved_tensors
        n, chunk = logits.shape[0], RowCrossEntropy.CHUNK
        out = torch.empty_like(logits)
        buf = torch.empty((min(chunk, n), logits.shape[1]), dtype=torch.float32, device=logits.device)
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            p = buf[: j - i]
            p.copy_(logits[i:j]).sub_(lse[i:j, None]).exp_()  # softmax
            p[torch.arange(j - i, device=p.device), targets[i:j]] -= 1.0
            out[i:j] = p.mul_(grad[i:j, None].float())
        return out, None


def _loss_from_logits(logits: Any, targets: Any, num_items: Any, weights: Any = None) -> tuple[Any, int]:
    per_token = RowCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets)
    loss = (per_token if weights is None else per_token * weights).sum()
    n = int(targets.numel())
    denom = num_items if num_items is not None else max(n, 1)
    if torch.is_tensor(denom):
        denom = denom.to(loss.device)
    return loss / denom, n


def _next_token_keep(labels: Any) -> tuple[Any, Any]:
    """``keep[b, t]`` is True when position t predicts a supervised token t+1; returns (keep, targets (N,))."""
    keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, T)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep, labels[:, 1:][keep[:, :-1]]


def decision_weights(labels: Any, keep: Any, weight: float) -> Any:
    """Per supervised next-token target (``keep`` and order from ``_next_token_keep``): ``weight`` where the model
    decides between a call and words (the model turn's first token) or between another call and the end (the
    token after each ``<end_function_call>``), 1 elsewhere; ``None`` (no weights) when ``weight`` is 1. These few
    tokens carry the decisions a model trained on mostly single calls gets wrong; everything else is copying."""
    from .decoding import END_CALL_ID

    if weight == 1.0:
        return None
    prev = torch.full_like(labels, IGNORE_INDEX)
    prev[:, 1:] = labels[:, :-1]
    decision = (labels != IGNORE_INDEX) & ((prev == IGNORE_INDEX) | (prev == END_CALL_ID))
    return 1.0 + (weight - 1.0) * decision[:, 1:][keep[:, :-1]].float()


def supervised_loss(model: Any, batch: dict[str, Any], num_items: Any = None, decision_weight: float = 1.0,
                    prefix_grad: bool = True, reuse: "PrefixReuse | None" = None) -> tuple[Any, int]:
    """Cross-entropy on the model turn only, with logits computed only where there is a label.

    The model's ``logits_to_keep`` takes the boolean (batch, seq) mask of positions whose next token is supervised
    and returns logits of shape (n_supervised, vocab) instead of (batch, seq, vocab): the 262k-entry head is most
    of a step's cost. Returns (loss, number of supervised tokens). With ``num_items`` (the Trainer's count over all
    accumulated micro-batches) the sum is divided by it, so gradient accumulation weighs every token equally.
    ``decision_weight`` (``--decision_weight``) weighs the decision tokens (:func:`decision_weights`); 1 is the
    plain loss. ``prefix_grad`` (``--prefix_grad``) and ``reuse`` (``--prefix_refresh``): see
    :func:`shared_prefix_loss`.
    """
    if "prefix_ids" in batch:
        return shared_prefix_loss(model, batch, num_items, decision_weight, prefix_grad, reuse)
    keep, targets = _next_token_keep(batch["labels"])
    weights = decision_weights(batch["labels"], keep, decision_weight)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep, use_cache=False)
    return _loss_from_logits(out.logits, targets, num_items, weights)


def unwrap_ddp(model: Any) -> Any:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _prefix_cache(decoder: Any, prefix: Any) -> Any:
    """The developer turn through the decoder alone (it carries no loss: no head), into a KV cache of shape
    (1, heads, P, head_dim) per layer."""
    return decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).cache


class PrefixReuse:
    """``--prefix_refresh N``: the shared developer turn's keys and values, computed without gradient once every
    ``N`` training batches and reused by the batches in between.

    The developer turn (the 8 declarations, about 680 tokens) is the same in every batch; without gradient through
    it (``--no-prefix_grad``) its forward is a constant of each step, about a fifth of a step's time at batch 8.
    Reusing it is an approximation, unlike the step's other levers: a batch up to ``N - 1`` updates after a
    refresh sees the developer turn as the older adapters computed it (at inference the current ones do). The
    learning rate decays to 0 at the end of training, where the adapters barely move between refreshes. ``N = 1``
    recomputes it every batch: the exact loss. Validation passes always compute it afresh."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"prefix refresh every {every} batches: must be at least 1")
        self.every = every
        self.refreshes = 0
        self._ids: Any = None
        self._cache: Any = None
        self._uses = 0

    def cache(self, decoder: Any, prefix: Any) -> Any:
        """A cache holding the developer turn's keys and values for this batch: the stored one while it is younger
        than ``every`` batches and was computed for the same ids, else a fresh one (without gradient)."""
        if self._cache is None or self._uses >= self.every or not torch.equal(self._ids, prefix):
            with torch.no_grad():
                self._ids, self._cache, self._uses = prefix.clone(), _prefix_cache(decoder, prefix), 0
            self.refreshes += 1
        self._uses += 1
        # The batch's forward appends its own keys and values to each layer: hand it copies of the layers, so that
        # the stored prefix stays as it was computed.
        cache = copy.copy(self._cache)
        cache.layers = [copy.copy(layer) for layer in self._cache.layers]
        return cache


def shared_prefix_loss(model: Any, batch: dict[str, Any], num_items: Any = None, decision_weight: float = 1.0,
                       prefix_grad: bool = True, reuse: PrefixReuse | None = None) -> tuple[Any, int]:
    """The same loss as :func:`supervised_loss` on the full sequences, computing the shared prefix once.

    The developer turn (P ≈ 675 tokens with the 8 declarations) is run once, with gradient, through the decoder
    alone (no output head: it has no loss; 3.76 s -> 2.90 s a step) into a KV cache of shape (1, heads, P,
    head_dim) per layer; the cache is broadcast to the batch (no copy) and each example's own tokens (S ≈ 40)
    attend to it. A batch of B costs P + B·S tokens instead of B·(P + S). The prefix carries no
    loss, and the gradient still flows into it through the cache.

    With ``prefix_grad=False`` the developer turn runs without gradient: the loss is the same number, but the
    gradient leaves out the path through the developer turn's keys and values (the adapters still learn from every
    supervised token, with the developer turn as the current weights compute it). Measured on the main job's data at
    batch 8: 7% less training time, the same validation accuracy (README, ablation).

    Under DistributedDataParallel the prefix runs through the wrapped module (``model.module``) and only the
    second forward goes through the DDP wrapper: DDP then sees one forward per backward, as it expects, and its
    gradient hooks (on the parameters, not on the forward) still fire once per parameter with the gradient of
    both forwards summed, because autograd accumulates a leaf's gradient before calling its hook. Tested against a
    single process in ``tests/test_distributed.py``.

    ``reuse`` (a :class:`PrefixReuse`, ``--prefix_refresh``; with ``prefix_grad=False`` and in training only):
    the developer turn's keys and values come from it, recomputed only every few batches.
    """
    prefix = batch["prefix_ids"]  # (1, P)
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, S)
    b, s = ids.shape
    p = prefix.shape[1]
    inner = unwrap_ddp(model)
    decoder = inner.get_decoder()  # the prefix carries no loss: its hidden states need no head
    if reuse is not None and not prefix_grad and inner.training:
        cache = reuse.cache(decoder, prefix)
    else:
        with torch.set_grad_enabled(prefix_grad and torch.is_grad_enabled()):
            cache = _prefix_cache(decoder, prefix)
    for layer in cache.layers:
        layer.keys = layer.keys.expand(b, -1, -1, -1)  # (B, heads, P, head_dim), a view
        layer.values = layer.values.expand(b, -1, -1, -1)
    full_mask = torch.cat([torch.ones((b, p), dtype=mask.dtype, device=mask.device), mask], dim=1)  # (B, P+S)
    positions = torch.arange(p, p + s, device=ids.device).unsqueeze(0).expand(b, s)
    keep, targets = _next_token_keep(batch["labels"])
    weights = decision_weights(batch["labels"], keep, decision_weight)
    with _attention_implementation(decoder.config, SHARED_PREFIX_ATTENTION):
        out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache,
                    use_cache=True, logits_to_keep=keep)
    return _loss_from_logits(out.logits, targets, num_items, weights)


# --------------------------------------------------------------------------------------------------------------
# Attention over the shared prefix
# --------------------------------------------------------------------------------------------------------------

SHARED_PREFIX_ATTENTION = "tether_shared_prefix"
_CORE = "_tether_attention_core"  # an attention module's compiled core (set by compile_step)


@contextmanager
def _attention_implementation(config: Any, name: str) -> Iterator[None]:
    """Run the model's attention layers (and its mask builder) as ``name`` for the duration; the model's own
    setting is restored after, so inference copies and saved configs never see ``name``."""
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def shared_prefix_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention of a batch's own tokens over [the shared developer turn; their own tokens], registered with
    transformers as ``tether_shared_prefix`` and used by :func:`shared_prefix_loss` for its second forward.

    The keys and values there are the prefix's (the same in every row: the cache is broadcast) followed by each
    row's own. SDPA's CPU kernel treats them as B separate rows of 4 heads over P+S keys (after repeating the one
    key-value head 4 times), and its backward, which also computes gradients for every row's copy of the prefix,
    was the largest single cost of the step (a fifth of its profile). Measured on the main job's step
    (``benchmarks/bench_train_step.py --levers``): 3.29 s -> 2.92 s. Here every query of the batch meets the
    prefix's keys in one matrix product per key-value head, (B·g·S, D) x (D, P), and its own row's keys in a
    batched one; one softmax in fp32 over both (as eager attention does) gives the weights. The same outputs and
    gradients as SDPA (tested in fp32). Anything else (no boolean 4-D mask, no prefix, dropout, soft-capping)
    takes transformers' SDPA."""
    if (not isinstance(attention_mask, torch.Tensor) or attention_mask.dtype != torch.bool
            or attention_mask.dim() != 4 or key.shape[2] <= query.shape[2] or dropout
            or kwargs.get("softcap") is not None or query.shape[1] % key.shape[1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    core = getattr(module, _CORE, _shared_prefix_attention_core)
    return core(query, key, value, attention_mask, scale), None


def _shared_prefix_attention_core(query: Any, key: Any, value: Any, mask: Any, scale: float) -> Any:
    """query (B, H, S, D); key, value (B, Hkv, P+S, D), the first P the same in every row; mask (B, 1, S, P+S),
    True where a query may look. Returns (B, S, H, D), as transformers' attention functions do."""
    b, h, s, d = query.shape
    hkv, k = key.shape[1], key.shape[2]
    g, p = h // hkv, k - s
    q = query.view(b, hkv, g, s, d)
    prefix_k, prefix_v = key[0, :, :p], value[0, :, :p]  # (Hkv, P, D): row 0 stands for every row
    own_k, own_v = key[:, :, p:].unsqueeze(2), value[:, :, p:].unsqueeze(2)  # (B, Hkv, 1, S, D)
    flat_q = q.transpose(0, 1).reshape(hkv, b * g * s, d)  # every query of the batch, per key-value head
    on_prefix = torch.matmul(flat_q, prefix_k.transpose(1, 2)).view(hkv, b, g, s, p).transpose(0, 1)
    on_own = torch.matmul(q, own_k.transpose(-1, -2))  # (B, Hkv, g, S, S)
    scores = torch.cat([on_prefix, on_own], dim=-1).float() * scale  # (B, Hkv, g, S, P+S)
    scores = scores.masked_fill(~mask.unsqueeze(2), torch.finfo(torch.float32).min)
    weights = torch.softmax(scores, dim=-1).to(query.dtype)
    from_prefix = weights[..., :p].transpose(0, 1).reshape(hkv, b * g * s, p)
    out = torch.matmul(from_prefix, prefix_v).view(hkv, b, g, s, d).transpose(0, 1)
    out = out + torch.matmul(weights[..., p:], own_v)  # (B, Hkv, g, S, D)
    return out.reshape(b, h, s, d).transpose(1, 2).contiguous()


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)  # the boolean masks SDPA gets


# --------------------------------------------------------------------------------------------------------------
# Compiled parts of the step
# --------------------------------------------------------------------------------------------------------------

_COMPILED = "_tether_compiled"  # marks a module whose forward compile_step replaced


def compile_step(model: Any) -> int:
    """``torch.compile`` (dynamic shapes) the decoder's RMS norms and MLPs, and the core of
    :func:`shared_prefix_attention`; returns how many modules. Returns 0 and changes no module where the model has
    neither (another architecture).

    At 640 hidden units a step is mostly element-wise work: Gemma 3's norms compute in fp32 (casts, a power, a
    mean, two products) five times per layer, the MLP's GELU and product, the attention's mask and softmax. Inductor
    fuses them; the matrix products stay as they were. Measured in one process: 2.92 s -> 2.49 s a step on
    ``bench_train_step.py --levers``' short batch, 1.17x on real batches of 19 to 277 tokens (``--compiled_on``).
    Compiling takes about 30 s once per run (and a little again for the no-gradient validation pass); shapes are
    dynamic, so batches of other lengths reuse it.
    The same loss and gradients (tested in fp32). The adapter's weights, saving and merging are untouched:
    :func:`uncompile_step` (and :func:`inference_copy`) restore the plain forwards."""
    import torch._dynamo

    # One compiled norm serves every layer, but it is traced again per input rank (hidden states, per-head q and
    # k), per grad mode (the prefix and the validation pass run without gradient) and for a batch of one: up to
    # about a dozen variants, past dynamo's default limit of 8, after which it would silently run uncompiled.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    compiled: dict[type, Any] = {}
    core = None
    n = 0
    for module in unwrap_ddp(model).modules():
        cls = type(module)
        if cls.__name__.endswith(("RMSNorm", "MLP")) and cls.__module__.startswith("transformers."):
            if cls not in compiled:
                compiled[cls] = torch.compile(cls.forward, dynamic=True)
            module.forward = types.MethodType(compiled[cls], module)
            setattr(module, _COMPILED, True)
            n += 1
        elif cls.__name__.endswith("Attention") and hasattr(module, "k_proj"):
            core = core or torch.compile(_shared_prefix_attention_core, dynamic=True)
            setattr(module, _CORE, core)
            setattr(module, _COMPILED, True)
            n += 1
    return n


def uncompile_step(model: Any) -> None:
    """Undo :func:`compile_step` on ``model`` (or on a copy of a compiled model)."""
    for module in unwrap_ddp(model).modules():
        if module.__dict__.pop(_COMPILED, False):
            module.__dict__.pop("forward", None)
            module.__dict__.pop(_CORE, None)


# --------------------------------------------------------------------------------------------------------------
# Trainable token rows
# --------------------------------------------------------------------------------------------------------------


def sparse_trainable_tokens(model: Any) -> int:
    """Make PEFT's trainable-token layers (``--trainable_tokens``) touch only their rows; returns how many layers.

    PEFT 0.21's ``TrainableTokensLayer`` builds the whole matrix with the trained rows in it (an ``index_copy`` of
    the 262k x 640 embedding) on every forward, for the embedding and again for the tied output head; at the head
    that matrix then needs a gradient, a 262k x 640 product per step for a few dozen rows. Measured on the main
    job's step (``benchmarks/bench_train_step.py --levers``): 2.90 s -> 2.55 s. Here the embedding looks up the base
    rows and swaps in the trained ones where an id is a trained token, and the head scores the base rows and
    overwrites the trained tokens' scores with those of their trained rows: the same outputs (tested), gradients
    only for the rows. The adapter's parameters, saving, loading and merging are PEFT's own; merged or disabled layers, and more than one
    active adapter, take PEFT's forward."""
    from functools import partial

    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    for layer in layers:
        layer.forward = partial(_trainable_rows_forward, layer)
    return len(layers)


def _trainable_rows_forward(layer: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    F = torch.nn.functional
    adapters = layer.active_adapters
    base = layer.get_base_layer()
    if (layer.disable_adapters or layer.merged or args or kwargs or len(adapters) != 1
            or adapters[0] not in layer.trainable_tokens_delta
            or not isinstance(base, (torch.nn.Embedding, torch.nn.Linear))):
        return type(layer).forward(layer, x, *args, **kwargs)
    weight = base.weight
    index = torch.as_tensor(layer.token_indices[adapters[0]], device=weight.device)
    rows = layer.trainable_tokens_delta[adapters[0]].to(weight)  # (k, H), as PEFT casts them
    if isinstance(base, torch.nn.Linear):  # the tied output head: x holds hidden states (..., H)
        return F.linear(x, weight).index_copy_(-1, index, F.linear(x, rows))
    out = F.embedding(x, weight, padding_idx=base.padding_idx, max_norm=base.max_norm, norm_type=base.norm_type,
                      scale_grad_by_freq=base.scale_grad_by_freq, sparse=base.sparse)
    order = index.argsort()
    where = torch.searchsorted(index[order], x).clamp(max=len(index) - 1)
    slot = order[where]  # for each id: the trained row it would be
    out = torch.where((index[slot] == x).unsqueeze(-1), F.embedding(slot, rows), out)
    scale = layer._get_embed_scale()  # Gemma scales its embedding in its own forward, which this bypasses
    return out if scale is None else out * scale.to(out.dtype)


# --------------------------------------------------------------------------------------------------------------
# Accuracy during training
# --------------------------------------------------------------------------------------------------------------


def inference_copy(model: Any) -> Any:
    """A merged copy of a PEFT model for decoding, in eval mode (the model itself is untouched). Decoding through
    the PEFT wrappers costs far more: the trainable-token layer of the tied 262k-row output head rebuilds the whole
    head on every forward."""
    inner = unwrap_ddp(model)
    if hasattr(inner, "merge_and_unload"):
        inner = copy.deepcopy(inner).merge_and_unload()
        uncompile_step(inner)  # decoding's shapes are its own: the plain forwards, not the step's compiled ones
    return inner.eval()


def exact_call_accuracy(model: Any, tokenizer: Any, examples: Sequence[Example], tools: Sequence[dict],
                        max_new_tokens: int, developer: str | None = None) -> float:
    """Greedy outputs under the grounded grammar (what prediction does), from a merged copy of the model with the
    prefix-cached predictor, scored by ``scoring.score`` like ``tether-tune evaluate``."""
    from .predict import Predictor
    from .scoring import score

    merged = inference_copy(model)
    with torch.no_grad():
        predictor = Predictor(merged, tokenizer, tools, developer=developer, max_new_tokens=max_new_tokens)
        preds = predictor.predict_batch([ex.request for ex in examples], batch_size=16)
    del merged, predictor
    unfinished = [any("max_new_tokens" in e for e in p.errors) for p in preds]  # scored as evaluate scores them
    return float(score(list(examples), [p.raw for p in preds], tools, unfinished)["exact_call_accuracy"])


def sample_examples(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A fixed sample of ``n`` examples (all when there are fewer): the same every epoch and every rank."""
    if n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)


@dataclass
class AccuracyProbe:
    """What each validation pass needs to measure exact-call accuracy (the same sample each time)."""

    tokenizer: Any
    examples: list[Example]
    tools: list[dict]
    max_new_tokens: int
    developer: str | None = None

    def __call__(self, model: Any) -> float:
        return exact_call_accuracy(model, self.tokenizer, self.examples, self.tools, self.max_new_tokens, self.developer)


# --------------------------------------------------------------------------------------------------------------
# The Trainer and its callback
# --------------------------------------------------------------------------------------------------------------


class CallTrainer(Trainer):
    """The Trainer with our loss (model turn only, logits only where supervised, shared prefix), a tokens
    counter, a stop on a non-finite loss, and exact-call accuracy in every validation pass."""

    def __init__(self, *args: Any, probe: AccuracyProbe | None = None, decision_weight: float = 1.0,
                 prefix_grad: bool = True, prefix_refresh: int = 1, bf16: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reuse = PrefixReuse(prefix_refresh) if prefix_refresh > 1 and not prefix_grad else None
        self.bf16 = bf16
        self.probe = probe
        self.decision_weight = decision_weight
        self.prefix_grad = prefix_grad
        self.counter = {"tokens": 0, "supervised": 0, "shared_prefix_batches": 0, "batches": 0}
        self.model_accepts_loss_kwargs = True  # our compute_loss uses num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = self.decision_weight if model.training else 1.0  # validation loss stays the plain loss
        # --bf16: our autocast around the whole loss, not TrainingArguments' bf16. accelerate would put its autocast
        # on the model's forward only (the shared prefix runs the decoder itself) and convert the forward's outputs
        # to fp32: a copy of the (supervised, 262k) logits and its backward, 1.11x of the main job's step
        # (benchmarks/bench_train_step.py --levers). The loss upcasts the bf16 logits itself, exactly.
        device_type = self.args.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, n = supervised_loss(model, inputs, num_items_in_batch, weight, self.prefix_grad, self.reuse)
        if model.training:  # tokens of the examples (a shared prefix counts once per example it serves)
            prefix = inputs["prefix_ids"].shape[1] * inputs["input_ids"].shape[0] if "prefix_ids" in inputs else 0
            self.counter["tokens"] += int(inputs["attention_mask"].sum()) + prefix
            self.counter["supervised"] += n
            self.counter["batches"] += 1
            self.counter["shared_prefix_batches"] += int("prefix_ids" in inputs)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # num_items_in_batch counts every rank's tokens, and DDP averages the ranks' gradients:
                # scale back up so that the gradient is the mean over all tokens (Trainer.compute_loss does
                # the same; we replace that method, so we must too).
                loss = loss * self.accelerator.num_processes
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {self.state.global_step}; lower --learning_rate "
                f"(now {self.args.learning_rate}) or check the data. The last checkpoint is in "
                f"{self.args.output_dir}."
            )
        return (loss, {}) if return_outputs else loss  # no logits kept: eval needs only the loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.probe is not None:
            # Every rank measures the same sample with the same weights: the same number everywhere, so every
            # rank keeps the same best checkpoint.
            acc = self.probe(self.model)
            metrics[f"{metric_key_prefix}_exact_call_accuracy"] = acc
            self.log({f"{metric_key_prefix}_exact_call_accuracy": acc,
                      f"{metric_key_prefix}_accuracy_n": len(self.probe.examples)})
        return metrics

class Progress(ProgressCallback):
    """The Trainer's bar (steps, ETA) with loss, learning rate and tokens/s on it; every log record also goes
    to ``metrics.jsonl`` as a JSON line. Rank 0 only."""

    def __init__(self, out_dir: Path, counter: dict[str, int]):
        super().__init__()
        self.metrics_file, self.counter = metrics_path(out_dir), counter

    def on_train_begin(self, a, state, control, **kw):
        super().on_train_begin(a, state, control, **kw)
        self.t0, self.tok0 = time.perf_counter(), self.counter["tokens"]

    def on_log(self, a, state, control, logs=None, **kw):
        if not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs}
        with open(self.metrics_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.training_bar is None:
            return
        rate = (self.counter["tokens"] - self.tok0) / max(time.perf_counter() - self.t0, 1e-9)
        post = {"tok/s": f"{rate:.0f}"}
        if "loss" in logs:
            post["loss"] = f"{logs['loss']:.4f}"
        if "learning_rate" in logs:
            post["lr"] = f"{logs['learning_rate']:.2e}"
        self.training_bar.set_postfix(post, refresh=True)
        if any(k.startswith("eval_") for k in logs):
            self.training_bar.write(
                "epoch {:.2f}: ".format(state.epoch or 0)
                + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            )


def use_bf16(cfg: Any) -> bool:
    """bf16 mixed precision: asked for (``--bf16``), or needed because the frozen base is bf16 (``--dtype``) while
    the adapters stay fp32."""
    from .modeling import pick_device, pick_dtype

    return bool(getattr(cfg, "bf16", False)) or pick_dtype(cfg.dtype, pick_device("auto")) == torch.bfloat16


def training_arguments(cfg: Any, out_dir: Path, has_val: bool, select_by_accuracy: bool) -> TrainingArguments:
    """The Trainer's arguments from a ``TrainConfig``."""
    report_to: list[str] = []
    try:
        import tensorboard  # noqa: F401

        report_to = ["tensorboard"]
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir(out_dir)))
    except ImportError:
        pass
    return TrainingArguments(
        output_dir=str(checkpoint_dir(out_dir)),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total updates
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        eval_strategy="epoch" if has_val else "no",
        eval_delay=getattr(cfg, "eval_delay", 0),
        save_strategy="epoch",
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_exact_call_accuracy" if select_by_accuracy else "eval_loss",
        greater_is_better=select_by_accuracy,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=False,  # --bf16 is CallTrainer's own autocast (see compute_loss); use_bf16 says when
        report_to=report_to,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        save_only_model=False,
        use_cpu=not torch.cuda.is_available(),
        prediction_loss_only=True,
        disable_tqdm=False,
    )


def build_trainer(cfg: Any, model: Any, tokenizer: Any, train_enc: list[Encoded], val_enc: list[Encoded],
                  probe: AccuracyProbe | None, out_dir: Path) -> "CallTrainer":
    """A :class:`CallTrainer` with our collator and progress callback. ``probe``: exact-call accuracy per
    validation pass (picks the adapter kept); ``None`` picks by validation loss."""
    has_val = bool(val_enc) and getattr(cfg, "eval_strategy", "epoch") != "no"
    args = training_arguments(cfg, out_dir, has_val, select_by_accuracy=has_val and probe is not None)
    trainer = CallTrainer(
        model=model,
        args=args,
        train_dataset=as_rows(train_enc),
        eval_dataset=as_rows(val_enc) if has_val else None,
        data_collator=PadCollator(tokenizer.pad_token_id, share_prefix=cfg.share_prefix),
        processing_class=tokenizer,
        probe=probe if has_val else None,
        decision_weight=cfg.decision_weight,
        prefix_grad=cfg.prefix_grad,
        prefix_refresh=cfg.prefix_refresh,
        bf16=use_bf16(cfg),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Progress(out_dir, trainer.counter))
    return trainer
