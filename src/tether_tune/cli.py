"""``tether-tune``: a thin door into the library. Each subcommand is (module, config dataclass, run function);
the dataclass is the command's flags, the function does the work and can be called from Python alike.

Errors: a :class:`~tether_tune.errors.TetherTuneError` (what the user can fix) is printed as
``tether-tune COMMAND: error: MESSAGE`` with exit status 2, like argparse's own errors; anything else is a bug
and keeps its traceback. Ctrl-C exits with 130."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from .config import parse_config
from .errors import TetherTuneError

# name: (module, config class, run function, one-line summary). Modules are imported only when their
# command runs, so `tether-tune validate` never pays for importing torch.
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "generate": ("tether_tune.synth", "GenerateConfig", "run_generate", "generate a CodeTether dataset"),
    "validate": ("tether_tune.validate", "ValidateConfig", "run_validate", "check a data file and print statistics"),
    "train": ("tether_tune.train", "TrainConfig", "run_train", "LoRA fine-tuning (same as finetune.py)"),
    "evaluate": ("tether_tune.evaluate", "EvaluateConfig", "run_evaluate", "score a model or saved predictions"),
    "predict": ("tether_tune.predict", "PredictConfig", "run_predict", "turn a request into calls (JSON)"),
    "serve": ("tether_tune.serve", "ServeConfig", "run_serve",
              "serve a model over OpenAI's chat-completions API (FastAPI + uvicorn)"),
    "run": ("tether_tune.dispatch.command", "RunConfig", "run_request",
            "turn a request into calls and carry them out on a CodeTether server (dry run unless --execute)"),
    "export": ("tether_tune.export", "ExportConfig", "run_export",
               "write a run as a merged HF model or a GGUF (+ Ollama Modelfile) that keeps tool calling"),
    "calibrate": ("tether_tune.calibrate", "CalibrateConfig", "run_calibrate",
                  "choose a run's call-or-words bias on validation data"),
    "make-tiny-model": (
        "tether_tune.modeling",
        "TinyModelConfig",
        "run_make_tiny_model",
        "write a tiny random Gemma 3 for smoke runs and tests",
    ),
    "convert-offline-model": (
        "tether_tune.modeling",
        "ConvertConfig",
        "run_convert",
        "convert the PyPI Gemma 3 270M (or a .gguf) into a cached FunctionGemma-layout model",
    ),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: tether-tune COMMAND [--help] [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {spec[3]}" for name, spec in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: Sequence[str], prog: str | None = None) -> int:
    """Parse ``argv`` into the command's config and run it (errors propagate: see :func:`run_cli`)."""
    module_name, config_name, func_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    cfg = parse_config(getattr(module, config_name), list(argv), prog=prog or f"tether-tune {name}")
    result = getattr(module, func_name)(cfg)
    return int(result or 0)


def run_cli(name: str, argv: Sequence[str], prog: str | None = None) -> int:
    """Run one command as a program: a user error becomes ``PROG: error: MESSAGE`` and exit status 2."""
    prog = prog or f"tether-tune {name}"
    try:
        return run_command(name, argv, prog=prog)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except TetherTuneError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"tether-tune {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"tether-tune: error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_cli(name, argv[1:], prog=prog)


if __name__ == "__main__":
    sys.exit(main())
