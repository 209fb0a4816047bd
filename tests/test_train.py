"""Training on the tiny model: the loss falls, only LoRA weights move, adapters round-trip, resume continues,
the shared-prefix path computes the same loss and gradients, and nothing is cut silently."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
import random

import pytest
import torch

from tether_tune import cli
from tether_tune.data import Example, read_examples
from tether_tune.encode import encode_example
from tether_tune.trainer import PadCollator, as_rows, supervised_loss

ROOT = Path(__file__).resolve().parents[1]
TOOLS = str(ROOT / "codetether_tools.json")


def _data(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if i % 5 == 4:
            rows.append({"input": f"hello number {i}", "output": "Hi! Tell me what to do with your tasks."})
        else:
            rows.append({"input": f"status of task {u}", "output": f"<start_function_call>call:get_task{{task_id:<escape>{u}<escape>}}<end_function_call>"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-data")
    return _data(d / "train.jsonl", 12, 0), _data(d / "val.jsonl", 4, 1)


#: A development set in the gold format (acceptable values, no words answer given): calibration only.
DEV_ROWS = [{"id": "d1", "query": "how is task 0c4e5f6a-1b2c-4d3e-8f9a-0b1c2d3e4f5a doing",
             "calls": [{"name": "get_task", "arguments": {"task_id": ["0c4e5f6a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"]}}],
             "tags": ["typed"]},
            {"id": "d2", "query": "what's the weather like", "calls": [], "text": None, "tags": ["off-topic"]}]


@pytest.fixture(scope="module")
def dev_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in DEV_ROWS))
    return path


def _train(tiny_model_dir, files, out, *extra):
    train, val = files
    argv = ["train", "--train_file", str(train), "--val_file", str(val), "--output_dir", str(out),
            "--model_name_or_path", str(tiny_model_dir), "--tools", TOOLS, "--batch_size", "4",
            "--gradient_accumulation_steps", "1", "--learning_rate", "5e-3", "--eval_samples", "2",
            "--max_new_tokens", "8", "--logging_steps", "1", *extra]
    assert cli.main(argv) == 0
    return json.loads((out / "run_info.json").read_text())


@pytest.fixture(scope="module")
def trained(tiny_model_dir, files, dev_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    info = _train(tiny_model_dir, files, out, "--epochs", "3", "--calibration_files", str(dev_file))
    return out, info


def test_calibration_uses_the_validation_file_and_the_calibration_files(trained, files, dev_file):
    """--calibration_files: its examples join the validation file's in the calibration: 4 + 2 first-token
    decisions, and one after each call (the 4 validation calls and the development set's one)."""
    _, info = trained
    cal, more = info["call_calibration"], info["next_call_calibration"]
    assert cal["examples"] + cal["no_call_possible"] == 4 + len(DEV_ROWS)
    assert more["decisions"] == 4 + 1
    assert cal["val_file"] == f"{files[1]} + {dev_file}" == more["val_file"]


def test_a_missing_calibration_file_is_refused_before_training(tiny_model_dir, files, tmp_path, capsys):
    train, val = files
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--train_file", str(train), "--val_file", str(val), "--output_dir", str(tmp_path / "m"),
                  "--model_name_or_path", str(tiny_model_dir), "--calibration_files", str(tmp_path / "nope.jsonl")])
    assert exit_.value.code == 2
    assert "--calibration_files" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_training_writes_everything_prediction_needs(trained):
    out, info = trained
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tools.json",
                 "train_config.json", "metrics.jsonl", "run_info.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["lora_r"] == 16 and cfg["lora_alpha"] == 32 and cfg["learning_rate"] == 5e-3
    assert info["global_steps"] == 9 and len(info["val_exact_call_accuracy_per_epoch"]) == 3
    assert "val_exact_call_accuracy_before" in info


def test_loss_falls(trained):
    out, _ = trained
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    evals = [r["eval_loss"] for r in logs if "eval_loss" in r]
    assert len(losses) == 9 and len(evals) == 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert evals[-1] < evals[0]


def test_only_lora_weights_change_and_the_adapter_reloads(trained, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, _ = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, str(out)).eval()
    adapter = load_file(str(out / "adapter_model.safetensors"))
    lora = {k: v for k, v in adapter.items() if "lora_" in k}
    tokens = {k: v for k, v in adapter.items() if "trainable_tokens" in k}
    assert lora and set(adapter) == set(lora) | set(tokens)
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it learned
    # The embedding rows of the 9 tool and turn tokens, and nothing else of the embedding, are trained.
    (delta,) = [v for k, v in tokens.items() if "delta" in k]
    assert delta.shape == (9, base.config.hidden_size) and delta.abs().sum() > 0
    for k, v in model.get_base_model().state_dict().items():
        if "lora_" not in k and "trainable_tokens" not in k:
            plain = k.replace(".base_layer", "").replace(".token_adapter", "")
            assert torch.equal(v, before[plain]), k
    # Reloaded twice, the adapter gives the same outputs.
    ids = torch.tensor([[2, 105, 300, 301, 302, 106]])
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), str(out)).eval()
    with torch.no_grad():
        a, b, plain = model(ids).logits, again(ids).logits, AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert torch.allclose(a, b) and not torch.allclose(a, plain)


def test_resume_continues_from_the_saved_step(tiny_model_dir, files, tmp_path):
    out = tmp_path / "m"
    _train(tiny_model_dir, files, out, "--epochs", "1", "--eval_samples", "0")
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-3"]
    info = _train(tiny_model_dir, files, out, "--epochs", "2", "--eval_samples", "0", "--resume")
    assert info["global_steps"] == 6
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run logged steps 4..6 only


def test_resume_without_checkpoint_is_refused(tiny_model_dir, files, tmp_path, capsys):
    train, _ = files
    code = cli.main(["train", "--train_file", str(train), "--output_dir", str(tmp_path / "none"), "--model_name_or_path",
                     str(tiny_model_dir), "--tools", TOOLS, "--resume"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


def test_too_short_max_seq_length_is_refused_with_the_example(tiny_model_dir, files, tmp_path, capsys):
    train, _ = files
    code = cli.main(["train", "--train_file", str(train), "--output_dir", str(tmp_path / "x"), "--model_name_or_path",
                     str(tiny_model_dir), "--tools", TOOLS, "--max_seq_length", "300"])
    err = capsys.readouterr().err
    assert code == 2
    assert "longer than --max_seq_length 300" in err and f"{train}:" in err and "never truncated" in err


def test_show_example_marks_exactly_the_model_turn(tiny_model_dir, files, capsys):
    train, _ = files
    assert cli.main(["train", "--train_file", str(train), "--model_name_or_path", str(tiny_model_dir),
                     "--tools", TOOLS, "--show_example", "0"]) == 0
    header, body = capsys.readouterr().out.split("\n", 1)
    assert " supervised (between ⟦ and ⟧)" in header
    out = body
    assert out.count("⟦") == 1 and out.count("⟧") == 1
    assert "<start_of_turn>model\n⟦<start_function_call>call:get_task{" in out
    assert out.rstrip().endswith("<end_function_call><start_function_response>⟧")


def _lora_batch(tiny_model_dir, files, tools):
    """The tiny model with random LoRA weights, its tokenizer, and five training examples encoded."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    examples, _ = read_examples(files[0])
    return model, tok, [encode_example(tok, ex, tools) for ex in examples[:5]]


def _loss_and_grads(model, tok, enc, share: bool, prefix_grad: bool = True):
    """(loss, supervised tokens, every trainable parameter's gradient flattened) of one step on ``enc``."""
    rows = as_rows(enc)
    model.zero_grad()
    batch = PadCollator(tok.pad_token_id, share_prefix=share)(rows)
    assert ("prefix_ids" in batch) == share
    loss, n = supervised_loss(model, batch, prefix_grad=prefix_grad)
    loss.backward()
    return loss.detach(), n, torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_shared_prefix_loss_equals_the_full_loss(tiny_model_dir, files, tools):
    model, tok, enc = _lora_batch(tiny_model_dir, files, tools)
    assert len({len(e.input_ids) for e in enc}) > 1  # different lengths: padding is exercised
    # The prefix is longer than the tiny model's sliding window, so the sliding layers are exercised too.
    assert enc[0].prefix_len > model.config.sliding_window
    (l0, n0, g0), (l1, n1, g1) = (_loss_and_grads(model, tok, enc, share) for share in (False, True))
    assert n0 == n1 == sum(e.n_supervised for e in enc)
    assert torch.allclose(l0, l1, atol=1e-5)
    assert torch.allclose(g0, g1, atol=1e-5) and g0.abs().max() > 0


def test_prefix_without_gradient_keeps_the_loss_and_drops_only_the_prefix_path(tiny_model_dir, files, tools):
    """--no-prefix_grad: the same loss as the full sequences; a gradient that is not the full one (the path through
    the developer turn's keys and values is left out) but points the same way."""
    model, tok, enc = _lora_batch(tiny_model_dir, files, tools)
    full_loss, _, full = _loss_and_grads(model, tok, enc, share=False)
    loss, _, partial = _loss_and_grads(model, tok, enc, share=True, prefix_grad=False)
    assert torch.allclose(full_loss, loss, atol=1e-5)
    assert not torch.allclose(full, partial, atol=1e-4)
    assert partial.abs().max() > 0
    assert torch.nn.functional.cosine_similarity(full, partial, dim=0) > 0.5


def test_prefix_reuse_recomputes_every_n_batches_and_keeps_what_it_computed(tiny_model_dir, files, tools):
    """--prefix_refresh 3: the first batch computes the developer turn, the next two reuse it (their loss is the
    loss with the older adapters' developer turn, not the current one's), the fourth computes it afresh; a batch's
    own keys never stay in the stored prefix; validation (eval mode) always computes it afresh."""
    from tether_tune.trainer import PrefixReuse

    model, tok, enc = _lora_batch(tiny_model_dir, files, tools)
    model.train()
    batch = PadCollator(tok.pad_token_id, share_prefix=True)(as_rows(enc))
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    reuse = PrefixReuse(3)

    def loss(reuse=None):
        with torch.no_grad():
            return supervised_loss(model, batch, prefix_grad=False, reuse=reuse)[0]

    first = loss(reuse)  # computes (refresh 1)
    assert torch.allclose(first, loss(), atol=1e-6) and reuse.refreshes == 1
    old = [p.detach().clone() for p in lora]
    with torch.no_grad():  # an optimizer update
        for p in lora:
            p.add_(0.5 * torch.randn_like(p))
    exact = loss()
    stale = loss(reuse)  # reused: the developer turn of the old adapters, the rest of the new
    assert reuse.refreshes == 1 and not torch.allclose(stale, exact, atol=1e-4)
    with torch.no_grad():  # what it must be: the old adapters' developer turn, by hand
        new = [p.detach().clone() for p in lora]
        for p, o in zip(lora, old):
            p.copy_(o)
        by_hand = PrefixReuse(2)
        loss(by_hand)
        for p, n in zip(lora, new):
            p.copy_(n)
    assert torch.allclose(stale, loss(by_hand), atol=1e-6) and by_hand.refreshes == 1
    assert torch.allclose(loss(reuse), stale, atol=1e-6) and reuse.refreshes == 1  # the third batch: the same prefix
    assert torch.allclose(loss(reuse), exact, atol=1e-6) and reuse.refreshes == 2  # the fourth: afresh
    model.eval()
    assert torch.allclose(loss(PrefixReuse(3)), exact, atol=1e-6)
    with torch.no_grad():  # eval mode never reuses: after another update, validation sees the current adapters
        for p in lora:
            p.add_(0.5 * torch.randn_like(p))
    assert not torch.allclose(loss(reuse), exact, atol=1e-4) and reuse.refreshes == 2
    model.train()  # training again: the stored (older) developer turn, not the current adapters'
    assert not torch.allclose(loss(reuse), loss(), atol=1e-4) and reuse.refreshes == 2
    with pytest.raises(ValueError):
        PrefixReuse(0)


def test_train_config_refuses_prefix_refresh_with_prefix_gradient():
    from tether_tune.config import ConfigError
    from tether_tune.train import TrainConfig

    for kwargs in ({"prefix_refresh": 0}, {"prefix_refresh": 4}, {"prefix_refresh": 4, "share_prefix": False, "prefix_grad": False}):
        with pytest.raises(ConfigError, match="prefix_refresh"):
            TrainConfig(train_file=str(ROOT / "training_examples.jsonl"), output_dir="o", **kwargs).validate()
    TrainConfig(train_file=str(ROOT / "training_examples.jsonl"), output_dir="o", prefix_grad=False, prefix_refresh=4).validate()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_equals_torch_s(dtype):
    """RowCrossEntropy: F.cross_entropy's per-row values and gradients (weighted rows, a row count that is not a
    multiple of the chunk), in the logits' own dtype."""
    import torch.nn.functional as F

    from tether_tune.trainer import RowCrossEntropy

    g = torch.Generator().manual_seed(0)
    n, v = RowCrossEntropy.CHUNK * 2 + 5, 1000
    logits = (torch.randn(n, v, generator=g) * 4).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    weights = torch.rand(n, generator=g) + 0.5
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ref = F.cross_entropy(a.float(), targets, reduction="none")
    ours = RowCrossEntropy.apply(b, targets)
    (ref * weights).sum().backward()
    (ours * weights).sum().backward()
    assert ours.dtype == torch.float32 and b.grad.dtype == dtype
    assert torch.allclose(ref, ours, atol=1e-5)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert torch.allclose(a.grad.float(), b.grad.float(), atol=tol)
    assert torch.equal(b.detach(), logits)  # the saved logits are not overwritten


def test_sparse_trainable_tokens_give_peft_s_outputs_and_gradients(tiny_model_dir, files, tools):
    """The row-only forward of the trainable-token layers (embedding and tied head) computes what PEFT's does: the
    same loss and the same gradient for every trainable parameter, the token rows included, on a batch whose
    prompt and answers contain trained tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.format import TOOL_AND_TURN_TOKENS
    from tether_tune.train import trainable_token_ids
    from tether_tune.trainer import sparse_trainable_tokens

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    token_ids = trainable_token_ids(tok, list(TOOL_AND_TURN_TOKENS))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             trainable_token_indices=token_ids))
    with torch.no_grad():  # trained rows that differ from the base rows, so a missed swap shows
        for name, p in model.named_parameters():
            if "trainable_tokens_delta" in name:
                p.add_(torch.randn_like(p))
    examples, _ = read_examples(files[0])
    enc = [encode_example(tok, ex, tools) for ex in examples[:5]]
    assert any(t in token_ids for t in enc[0].input_ids[enc[0].prefix_len:])  # answers hold trained tokens
    ref = [_loss_and_grads(model, tok, enc, share) for share in (False, True)]
    assert sparse_trainable_tokens(model) == 2  # the embedding and the tied head
    for share, (l0, n0, g0) in zip((False, True), ref):
        l1, n1, g1 = _loss_and_grads(model, tok, enc, share)
        assert n0 == n1
        assert torch.allclose(l0, l1, atol=1e-5)
        assert torch.allclose(g0, g1, atol=1e-5) and g0.abs().max() > 0
    rows = [p.grad for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert rows and all(r.abs().max() > 0 for r in rows)


def test_decision_weight_weighs_exactly_the_decision_tokens(tiny_model_dir, tools):
    """The first token of the model turn and the token after each <end_function_call> get --decision_weight;
    the loss is then the weighted cross-entropy of the full logits, in both loss paths; weight 1 is the plain loss."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.decoding import END_CALL_ID
    from tether_tune.encode import IGNORE_INDEX
    from tether_tune.format import Call
    from tether_tune.trainer import decision_weights

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    u, v = (str(uuid.UUID(int=i, version=4)) for i in (7, 8))
    examples = [Example(f"cancel {u} and {v}", [Call("cancel_task", {"task_id": u}), Call("cancel_task", {"task_id": v})]),
                Example("hi there", text="Hi! What can I do for you in CodeTether?"),
                Example(f"status of {u}", [Call("get_task", {"task_id": u})])]
    rows = as_rows([encode_example(tok, ex, tools) for ex in examples])
    plain = PadCollator(tok.pad_token_id, share_prefix=False)(rows)
    labels = plain["labels"]
    from tether_tune.trainer import _next_token_keep

    w = decision_weights(labels, _next_token_keep(labels)[0], 5.0)
    assert decision_weights(labels, _next_token_keep(labels)[0], 1.0) is None
    # by hand: 1 first token per example, plus one after each of the 3 calls' <end_function_call>
    assert int((w == 5.0).sum()) == 3 + 3 and int((w == 1.0).sum()) == len(w) - 6
    after_end = [labels[b, t] for b in range(labels.shape[0]) for t in range(1, labels.shape[1])
                 if labels[b, t - 1] == END_CALL_ID]
    assert sorted(int(x) for x in after_end) == sorted([48, 50, 50])  # another call; the end twice
    with torch.no_grad():
        logits = model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none").reshape(labels.shape[0], -1)
        mask = labels[:, 1:] != IGNORE_INDEX
        want = (ce[mask] * w).sum() / mask.sum()
        for share in (False, True):
            batch = PadCollator(tok.pad_token_id, share_prefix=share)(rows)
            loss, _ = supervised_loss(model, batch, decision_weight=5.0)
            assert torch.allclose(loss, want, atol=1e-4), share
        assert torch.allclose(supervised_loss(model, plain, decision_weight=1.0)[0], ce[mask].mean(), atol=1e-5)


def test_logits_only_where_the_loss_is(tiny_model_dir, files, tools):
    """The kept logits are the full logits at supervised positions: same loss, a fraction of the head's work."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    examples, _ = read_examples(files[0])
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in (encode_example(tok, ex, tools) for ex in examples[:3])]
    batch = PadCollator(tok.pad_token_id, share_prefix=False)(rows)
    with torch.no_grad():
        loss, _ = supervised_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, full, atol=1e-5)


def test_a_diverging_loss_stops_with_a_clear_message(tiny_model_dir, files, tmp_path, capsys):
    train, _ = files
    code = cli.main(["train", "--train_file", str(train), "--output_dir", str(tmp_path / "nan"), "--model_name_or_path",
                     str(tiny_model_dir), "--tools", TOOLS, "--learning_rate", "1e8", "--max_steps", "6",
                     "--batch_size", "4", "--gradient_accumulation_steps", "1", "--eval_samples", "0", "--warmup_ratio", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "loss became" in err and "lower --learning_rate" in err


def test_bf16_mixed_precision_trains_in_bf16_and_saves_fp32(tiny_model_dir, files, tmp_path, monkeypatch):
    from tether_tune import trainer as T

    seen = []
    real = T.supervised_loss

    def spy(model, batch, *a, **k):  # what dtype the attention projections run in under the Trainer
        proj = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
        hook = proj.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        try:
            return real(model, batch, *a, **k)
        finally:
            hook.remove()

    logits = []  # the logits reach the loss in bf16: no fp32 copy of them (accelerate's output conversion)
    real_loss = T._loss_from_logits
    monkeypatch.setattr(T, "_loss_from_logits", lambda x, *a, **k: logits.append(x.dtype) or real_loss(x, *a, **k))
    monkeypatch.setattr(T, "supervised_loss", spy)
    out = tmp_path / "bf16"
    info = _train(tiny_model_dir, files, out, "--epochs", "2", "--eval_samples", "0", "--bf16")
    assert seen and all(d == torch.bfloat16 for d in seen[: info["global_steps"]]), seen
    assert logits and set(logits) == {torch.bfloat16}, logits
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]
    assert losses[-1] < losses[0]
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())


def test_the_shared_prefix_loss_runs_the_shared_prefix_attention_in_every_layer(tiny_model_dir, files, tools,
                                                                                 monkeypatch):
    """The equality above is then the shared-prefix attention's (not SDPA's, which it falls back to)."""
    from tether_tune import trainer

    calls = []
    core = trainer._shared_prefix_attention_core
    monkeypatch.setattr(trainer, "_shared_prefix_attention_core", lambda *a: calls.append(a[0].shape) or core(*a))
    model, tok, enc = _lora_batch(tiny_model_dir, files, tools)
    _loss_and_grads(model, tok, enc, share=True)
    assert len(calls) == model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"  # the model's own setting is back


def test_shared_prefix_attention_equals_sdpa_outputs_and_gradients():
    """Random queries over [a prefix shared by every row; each row's own keys], with grouped heads (4 queries per
    key-value head, 2 key-value heads), right padding and a sliding window: the same outputs and the same
    gradients (into the shared prefix, each row's own keys and values, the queries) as transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from tether_tune.trainer import shared_prefix_attention

    torch.manual_seed(0)
    b, hkv, g, p, s, d, window = 3, 2, 4, 11, 6, 8, 9
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = g, True
    prefix_k, prefix_v = (torch.randn(1, hkv, p, d, requires_grad=True) for _ in range(2))
    own_k, own_v = (torch.randn(b, hkv, s, d, requires_grad=True) for _ in range(2))
    query = torch.randn(b, hkv * g, s, d, requires_grad=True)
    lengths = torch.tensor([6, 4, 1])  # right padding
    q_pos = torch.arange(p, p + s)[:, None]
    k_pos = torch.arange(p + s)[None, :]
    visible = (k_pos <= q_pos) & (k_pos > q_pos - window)  # (S, P+S)
    own = torch.arange(p + s)[None, :] < p + lengths[:, None]  # (B, P+S): padding keys are hidden
    mask = (visible[None] & own[:, None])[:, None]  # (B, 1, S, P+S)
    outs, grads = [], []
    for attention in (sdpa_attention_forward, shared_prefix_attention):
        key = torch.cat([prefix_k.expand(b, -1, -1, -1), own_k], dim=2)
        value = torch.cat([prefix_v.expand(b, -1, -1, -1), own_v], dim=2)
        out, _ = attention(module, query, key, value, mask, scaling=0.3)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        leaves = (query, prefix_k, prefix_v, own_k, own_v)
        grads.append(torch.autograd.grad((out * weights).sum(), leaves))
        outs.append(out.detach())
    assert outs[0].shape == (b, s, hkv * g, d)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, c in zip(*grads):
        assert torch.allclose(a, c, atol=1e-5) and a.abs().max() > 0


def test_compiled_step_keeps_the_loss_and_gradients_and_comes_off(tiny_model_dir, files, tools):
    """--compile: the same loss and gradients as the plain step (fp32); uncompile_step and inference copies give
    the plain forwards back."""
    from tether_tune.trainer import compile_step, inference_copy, uncompile_step

    model, tok, enc = _lora_batch(tiny_model_dir, files, tools)
    plain = _loss_and_grads(model, tok, enc, share=True, prefix_grad=False)
    n = compile_step(model)
    layers = model.config.num_hidden_layers
    assert n == layers * 8 + 1  # per layer: 4 norms, q and k norms, the MLP, the attention core; the last norm
    compiled = _loss_and_grads(model, tok, enc, share=True, prefix_grad=False)
    assert torch.allclose(plain[0], compiled[0], atol=1e-5) and plain[1] == compiled[1]
    assert torch.allclose(plain[2], compiled[2], atol=1e-5)
    copy_ = inference_copy(model)
    assert not any("forward" in vars(m) for m in copy_.modules())
    uncompile_step(model)
    assert not any(getattr(m, "_tether_compiled", False) for m in model.modules())


def test_compiled_training_validates_only_after_the_eval_delay(tiny_model_dir, files, tmp_path):
    """The main job's flags end to end: --compile trains (and the adapter saved is a plain PEFT one), and
    --eval_delay 2 of 3 epochs leaves out the first validation pass (the first follows epoch 2, as in HF's
    TrainingArguments); the adapter kept is a validated one."""
    info = _train(tiny_model_dir, files, tmp_path / "model", "--epochs", "3", "--eval_delay", "2", "--compile")
    assert len(info["val_loss_per_epoch"]) == len(info["val_exact_call_accuracy_per_epoch"]) == 2
    steps_per_epoch = info["global_steps"] // 3
    assert info["best_checkpoint"].endswith((f"checkpoint-{2 * steps_per_epoch}", f"checkpoint-{3 * steps_per_epoch}"))
    assert json.loads((tmp_path / "model" / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_no_validation_pass_trains_the_same_adapter(tiny_model_dir, files, tmp_path):
    """--eval_strategy no (make main): no validation pass, and the adapter is the one a run that validates only
    after its last epoch keeps, to the bit (a pass after the last update chooses nothing). The validation file
    still calibrates."""
    from safetensors.torch import load_file

    validated = _train(tiny_model_dir, files, tmp_path / "a", "--epochs", "2", "--eval_delay", "1.5", "--seed", "3")
    silent = _train(tiny_model_dir, files, tmp_path / "b", "--epochs", "2", "--eval_strategy", "no", "--seed", "3")
    assert len(validated["val_loss_per_epoch"]) == 1 and not silent.get("val_loss_per_epoch")
    assert not silent.get("val_exact_call_accuracy_per_epoch") and not silent.get("best_checkpoint")
    assert silent["call_calibration"]["examples"] + silent["call_calibration"]["no_call_possible"] == 4
    logs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("eval_") for r in logs for k in r)
    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_skip_forced_leaves_out_exactly_the_tokens_the_grammar_forces(tiny_model_dir, files, tools):
    """--skip_forced: the labels lose exactly the model-turn tokens ``ToolCallConstraint.forced`` marks (grounded in
    each request), nothing else; the model turn's first token always stays; the loss is the plain cross-entropy
    over the tokens that stay."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.constrain import ToolCallConstraint
    from tether_tune.encode import IGNORE_INDEX
    from tether_tune.train import skip_forced

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples, _ = read_examples(files[0])
    enc = [encode_example(tok, ex, tools) for ex in examples]
    out = {grounded: skip_forced(enc, examples, ToolCallConstraint(tok, tools, grounded=grounded))
           for grounded in (False, True)}
    for grounded, skipped in out.items():
        constraint = ToolCallConstraint(tok, tools, grounded=grounded)
        for e, s, ex in zip(enc, skipped, examples):
            turn = [i for i, y in enumerate(e.labels) if y != IGNORE_INDEX]
            forced = constraint.forced(ex.request, [e.input_ids[i] for i in turn])
            assert s.input_ids == e.input_ids and s.prefix_len == e.prefix_len
            assert [i for i, y in enumerate(s.labels) if y != IGNORE_INDEX] == [i for i, f in zip(turn, forced) if not f]
            assert s.labels[turn[0]] == e.labels[turn[0]]
    calls = [i for i, ex in enumerate(examples) if ex.calls]
    words = [i for i, ex in enumerate(examples) if not ex.calls]
    assert calls and words
    # A words answer is all free; a call loses its syntax under either grammar, and grounded its only UUID too.
    assert all(out[True][i].labels == enc[i].labels for i in words)
    for i in calls:
        assert enc[i].n_supervised > out[False][i].n_supervised > out[True][i].n_supervised + 10
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = PadCollator(tok.pad_token_id, share_prefix=False)(as_rows(out[True][:4]))
    with torch.no_grad():
        loss, n = supervised_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert n == sum(e.n_supervised for e in out[True][:4])
    full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1))
    assert torch.allclose(loss, full, atol=1e-5)


def test_skip_forced_shows_in_show_example_and_trains(tiny_model_dir, files, trained, tmp_path, capsys):
    """--show_example marks only the tokens left in the loss (the UUID the request gives once is not); a run with
    --skip_forced grounded trains, and --decision_weight cannot go with it."""
    from tether_tune.config import ConfigError
    from tether_tune.train import TrainConfig

    train, _ = files
    assert cli.main(["train", "--train_file", str(train), "--model_name_or_path", str(tiny_model_dir),
                     "--tools", TOOLS, "--show_example", "0", "--skip_forced", "grounded"]) == 0
    out = capsys.readouterr().out
    assert "<start_of_turn>model\n⟦<start_function_call>⟧call:" in out and out.count("⟦") >= 2
    uuid_text = read_examples(train)[0][0].calls[0].arguments["task_id"]
    turn = out.split("<start_of_turn>model")[-1]
    marked = "".join(re.findall("⟦(.*?)⟧", turn, flags=re.S))
    assert uuid_text in turn.replace("⟦", "").replace("⟧", "") and uuid_text[4:] not in marked
    info = _train(tiny_model_dir, files, tmp_path / "m", "--epochs", "1", "--skip_forced", "grounded",
                  "--eval_strategy", "no")
    plain = trained[1]["mask_audit"]  # the same training file, the whole model turn in the loss
    assert info["mask_audit"]["examples"] == plain["examples"]
    assert info["mask_audit"]["supervised_tokens"] < plain["supervised_tokens"] / 3
    with pytest.raises(ConfigError, match="decision_weight"):
        TrainConfig(train_file=str(train), output_dir="o", skip_forced="grounded", decision_weight=5.0).validate()


def test_lora_layers_from_puts_adapters_on_the_upper_layers_only(tiny_model_dir):
    """--lora_layers_from N: LoRA on layers N and up (the trained token rows stay); past the last layer refused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.config import ConfigError
    from tether_tune.train import TrainConfig, add_lora

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def adapted(first: int) -> set[int]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        model = add_lora(TrainConfig(train_file="-", output_dir="-", lora_layers_from=first), model, tok)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert any("trainable_tokens" in n for n in names)
        return {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in names if "lora_A" in n}

    assert adapted(0) == {0, 1} and adapted(1) == {1}
    with pytest.raises(ConfigError, match="lora_layers_from 2"):
        adapted(2)
    with pytest.raises(ConfigError, match="lora_layers_from"):
        TrainConfig(train_file=str(ROOT / "training_examples.jsonl"), output_dir="o", lora_layers_from=-1).validate()
