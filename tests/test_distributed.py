"""Training under ``torchrun --nproc_per_node 2`` (CPU, gloo) on the tiny model equals one process.

Both runs see the same 4 examples in every optimizer step: one process with a batch of 4, or two ranks with 2
each (the same global batch). With no dropout, the same seed (so the same LoRA init, which DDP also broadcasts
from rank 0) and the loss normalised by the tokens of the whole global batch, the gradients differ only in the
order floats are summed (an all-reduce of two halves against one sum): about 1e-7 relative. After 3 AdamW steps
at lr 5e-3 every adapter weight must agree within 1e-4 absolute — an update is ~lr in size, so a wrong loss
scale (say, gradients averaged over ranks but not rescaled) or a rank training on other data shows up as
differences of order 1e-3, 10x the tolerance.

Also checked: only rank 0 prints the config, the summary and the progress, and writes the run files; the shared
developer-turn prefix is used under DDP (``tether_tune.trainer.shared_prefix_loss`` says why that is sound).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _data(path: Path) -> Path:
    rows = [
        {"input": "status of task 3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13",
         "output": "<start_function_call>call:get_task{task_id:<escape>3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13<escape>}<end_function_call>"},
        {"input": "hello there", "output": "Hi! Tell me what to do with your tasks."},
        {"input": "cancel 0b9e6a4c-2f1d-4d7e-8c3a-5e6f7a8b9c0d",
         "output": "<start_function_call>call:cancel_task{task_id:<escape>0b9e6a4c-2f1d-4d7e-8c3a-5e6f7a8b9c0d<escape>}<end_function_call>"},
        {"input": "which agents are there",
         "output": "<start_function_call>call:discover_agents{}<end_function_call>"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(model: Path, data: Path, out: Path, batch_size: int) -> list[str]:
    return [str(ROOT / "finetune.py"), "--model_name_or_path", str(model), "--train_file", str(data),
            "--output_dir", str(out), "--batch_size", str(batch_size), "--gradient_accumulation_steps", "1",
            "--max_steps", "3", "--learning_rate", "5e-3", "--warmup_ratio", "0", "--lora_dropout", "0",
            "--lora_r", "4", "--lora_alpha", "8", "--logging_steps", "1", "--seed", "7"]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = _data(tmp / "train.jsonl")
    single = _run([sys.executable, *_train_argv(tiny_model_dir, data, tmp / "single", 4)], cwd=tmp)
    assert single.returncode == 0, single.stderr[-3000:]
    for attempt in range(2):  # a free port can be taken between finding it and torchrun binding it: try another
        ddp = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(_free_port()), *_train_argv(tiny_model_dir, data, tmp / "ddp", 2)],
                   cwd=tmp)
        if ddp.returncode == 0 or "address already in use" not in ddp.stderr.lower():
            break
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return tmp / "single", tmp / "ddp", single, ddp


def test_two_processes_train_the_same_adapter_as_one(two_runs):
    single_dir, ddp_dir, _, _ = two_runs
    a = load_file(single_dir / "adapter_model.safetensors")
    b = load_file(ddp_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved < 1e-4, f"largest difference {moved:.2e}"
    # The comparison means something: training moved the weights by far more than the tolerance.
    init_b = [k for k in a if "lora_B" in k]
    assert init_b and max(a[k].abs().max().item() for k in init_b) > 1e-3  # lora_B starts at zero


def test_both_runs_took_the_same_steps_and_only_rank_0_reports(two_runs):
    single_dir, ddp_dir, single, ddp = two_runs
    info_1 = json.loads((single_dir / "run_info.json").read_text())
    info_2 = json.loads((ddp_dir / "run_info.json").read_text())
    assert info_1["global_steps"] == info_2["global_steps"] == 3
    assert info_1.get("world_size", 1) == 1 and info_2["world_size"] == 2
    # One config block, one summary, one mask audit, from rank 0 only.
    for marker in ("TrainConfig:", "done: adapter in", "mask audit:", "LoRA:"):
        assert single.stderr.count(marker) == 1, marker
        assert ddp.stderr.count(marker) == 1, (marker, ddp.stderr[-2000:])
    logs = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3]  # one line per step, not one per rank
    losses_1 = [json.loads(x)["loss"] for x in (single_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    losses_2 = [r["loss"] for r in logs if "loss" in r]
    assert losses_1 == pytest.approx(losses_2, rel=1e-4)


def test_shared_prefix_is_used_under_ddp(two_runs):
    """Every micro-batch of both runs computed the developer turn once (and the adapters still agree, above)."""
    for run_dir in two_runs[:2]:
        info = json.loads((run_dir / "run_info.json").read_text())
        assert info["train_batches"] == 3 and info["shared_prefix_batches"] == 3, info
