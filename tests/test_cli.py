"""Every command answers bad input with ``PROG: error: MESSAGE`` and exit status 2 — never a traceback — and every
command works from any directory (the CodeTether tools ship with the package).

One test (at least) per command drives the real CLI with input a user could get wrong: a flag value, a missing
or malformed file, a bad line, an unknown model path, a bad tools file, an example that does not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether_tune import cli
from tether_tune.errors import ConfigError, TetherTuneError

ROOT = Path(__file__).resolve().parents[1]
TASK = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


def run(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``tether-tune ARGV`` (argparse's own errors exit through SystemExit)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def expect_error(capsys, command: str, *argv: str, match: str) -> str:
    code, err = run(capsys, command, *argv)
    assert code == 2, err
    assert f"tether-tune {command}: error: " in err, err
    assert match in err, err
    return err


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    path = tmp_path / "bad.jsonl"
    good = {"input": f"cancel {TASK}", "output": f"<start_function_call>call:cancel_task{{task_id:<escape>{TASK}<escape>}}<end_function_call>"}
    path.write_text(json.dumps(good) + "\n" + '{"input": "oops", "output": \n')
    return path


# ---------------------------------------------------------------------------------------------------- generate


def test_generate_bad_count_and_bad_tools_file(capsys, tmp_path):
    expect_error(capsys, "generate", "--create-task", "-1", "--output", str(tmp_path / "x.jsonl"),
                 match="--create_task must be >= 0")
    bad_tools = tmp_path / "tools.json"
    bad_tools.write_text('[{"type": "function", "function": {"name": "x"')
    expect_error(capsys, "generate", "--tools", str(bad_tools), "--output", str(tmp_path / "x.jsonl"),
                 match=f"{bad_tools}: line 1 column")
    expect_error(capsys, "generate", "--split", "0.5,0.2", "--output", str(tmp_path / "x.jsonl"), match="--split")


# ---------------------------------------------------------------------------------------------------- validate


def test_validate_missing_file_and_bad_tools(capsys, tmp_path, bad_jsonl):
    expect_error(capsys, "validate", str(tmp_path / "nope.jsonl"), match="nope.jsonl: no such file")
    expect_error(capsys, "validate", str(bad_jsonl), "--tools", str(tmp_path), match="is a directory")


def test_validate_reports_the_bad_line(capsys, bad_jsonl):
    """A bad line is a finding of the check, reported with its file:line, not a crash: exit 1."""
    try:
        code = cli.main(["validate", str(bad_jsonl)])
    finally:
        out = capsys.readouterr().out
    assert code == 1 and f"{bad_jsonl}:2: not valid JSON" in out


# ---------------------------------------------------------------------------------------------------- train


def test_train_unknown_model_path(capsys, tmp_path, bad_jsonl):
    expect_error(capsys, "train", "--train_file", str(bad_jsonl), "--model_name_or_path", "./typo",
                 "--output_dir", str(tmp_path / "out"), match="--model_name_or_path ./typo: no such directory")


def test_train_unreachable_hub_id(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": "hi", "output": "Hello!"}) + "\n")
    expect_error(capsys, "train", "--train_file", str(data), "--model_name_or_path", "nobody/no-such-model",
                 "--output_dir", str(tmp_path / "out"), match="nobody/no-such-model: cannot load the tokenizer")


def test_train_bad_line_names_file_and_line(capsys, tmp_path, tiny_model_dir, bad_jsonl):
    expect_error(capsys, "train", "--train_file", str(bad_jsonl), "--model_name_or_path", str(tiny_model_dir),
                 "--output_dir", str(tmp_path / "out"), match=f"{bad_jsonl}:2: not valid JSON")


def test_train_length_that_does_not_fit(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": f"cancel {TASK}", "output": f"<start_function_call>call:cancel_task{{task_id:<escape>{TASK}<escape>}}<end_function_call>"}) + "\n")
    expect_error(capsys, "train", "--train_file", str(data), "--model_name_or_path", str(tiny_model_dir),
                 "--output_dir", str(tmp_path / "out"), "--max_seq_length", "64",
                 match="longer than --max_seq_length 64")


def test_train_bad_flag_values(capsys, tmp_path, bad_jsonl):
    expect_error(capsys, "train", "--train_file", str(bad_jsonl), "--learning_rate", "0", match="--learning_rate must be positive")
    expect_error(capsys, "train", "--train_file", str(tmp_path / "none.jsonl"), match="--train_file")
    expect_error(capsys, "train", "--train_file", str(bad_jsonl), "--dtype", "fp16", match="overflow in fp16")


def test_run_train_validates_when_called_from_python(tmp_path):
    from tether_tune.train import TrainConfig, run_train

    with pytest.raises(ConfigError, match="--train_file"):
        run_train(TrainConfig(train_file=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="--batch_size must be at least 1"):
        run_train(TrainConfig(train_file=str(ROOT / "training_examples.jsonl"), batch_size=0))


# ---------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_fp16_and_missing_files(capsys, tmp_path, tiny_model_dir):
    test_file = ROOT / "training_examples.jsonl"
    expect_error(capsys, "evaluate", "--dtype", "fp16", "--model_path", str(tiny_model_dir), "--test_file",
                 str(test_file), match="--dtype fp16: Gemma 3's activations overflow in fp16")
    expect_error(capsys, "evaluate", "--model_path", str(tiny_model_dir), "--test_file", str(tmp_path / "t.jsonl"),
                 match="--test_file")
    expect_error(capsys, "evaluate", "--test_file", str(test_file), match="exactly one of --predictions")


def test_evaluate_bad_predictions_line(capsys, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"output": "x"}\n[1, 2]\n')
    expect_error(capsys, "evaluate", "--predictions", str(preds), "--test_file", str(ROOT / "training_examples.jsonl"),
                 match=f"{preds}:2: field 'output'")


# ---------------------------------------------------------------------------------------------------- predict


def test_predict_bad_input_line(capsys, tmp_path, tiny_model_dir):
    requests = tmp_path / "in.jsonl"
    requests.write_text('"cancel task 1"\n{"request": 5}\n')
    expect_error(capsys, "predict", "--model_path", str(tiny_model_dir), "--input_file", str(requests),
                 match=f"{requests}:2: field 'request'")
    requests.write_text('"fine"\n{not json\n')
    expect_error(capsys, "predict", "--model_path", str(tiny_model_dir), "--input_file", str(requests),
                 match=f"{requests}:2: not valid JSON")


def test_predict_unknown_model_path(capsys):
    expect_error(capsys, "predict", "--model_path", "./typo", "hello", match="--model_path ./typo: no such directory")


# ---------------------------------------------------------------------------------------------------- the rest


def test_make_tiny_model_onto_a_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    expect_error(capsys, "make-tiny-model", str(target), match="exists and is not a directory")


def test_convert_offline_model_bad_argument(capsys, tmp_path):
    expect_error(capsys, "convert-offline-model", "--model", "weights.bin", match="--model 'weights.bin'")
    expect_error(capsys, "convert-offline-model", "--model", str(tmp_path / "m.gguf"), match="no such file")


def test_unknown_command(capsys):
    code, err = run(capsys, "fly")
    assert code == 2 and "tether-tune: error: unknown command 'fly'" in err


def test_every_user_error_is_one_type():
    from tether_tune.errors import DataError, DataLengthError, ModelNotFoundError, ToolsError
    from tether_tune.format import FormatError
    from tether_tune.synth import GenerateError
    from tether_tune.tokenizer import TokenizerError

    for cls in (ConfigError, DataError, DataLengthError, ModelNotFoundError, ToolsError, FormatError, GenerateError,
                TokenizerError):
        assert issubclass(cls, TetherTuneError), cls


# ---------------------------------------------------------------------------------------------------- from anywhere


def _script(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_root_scripts_from_another_directory(tmp_path):
    """generate_dataset.py from elsewhere, without `tether-tune` installed on the path: it finds its package
    beside it and the tools inside the package; its errors are the same one-line messages."""
    out = _script(str(ROOT / "generate_dataset.py"), "--create-task", "3", "--list-tasks", "2", "--get-task", "0",
                  "--cancel-task", "0", "--get-session-history", "0", "--playback-session", "0",
                  "--discover-agents", "0", "--send-message", "0", "--parallel", "0", "--no-call", "1",
                  "--output", "x.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 6
    bad = _script(str(ROOT / "generate_dataset.py"), "--output", "x.txt", cwd=tmp_path)
    assert bad.returncode == 2 and "generate_dataset.py: error: --output 'x.txt'" in bad.stderr
    bad = _script(str(ROOT / "finetune.py"), "--evaluate", "--dtype", "fp16", "--predictions", "p.jsonl",
                  "--test_file", str(ROOT / "training_examples.jsonl"), cwd=tmp_path)
    assert bad.returncode == 2 and "finetune.py --evaluate: error: " in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_explains_every_flag(capsys, command):
    """``--help`` prints every flag with its help (argparse %-formats help texts: a stray ``%`` breaks it)."""
    try:
        cli.main([command, "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out and len(out.splitlines()) > 3


def test_finetune_py_help_lists_training_and_evaluation_flags():
    for extra in ([], ["--evaluate"]):
        out = subprocess.run([sys.executable, str(ROOT / "finetune.py"), *extra, "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--model_path" in out.stdout if extra else "--learning_rate" in out.stdout
