"""Config dataclasses to command lines and back.

Every command has one dataclass; each field carries a type, a default and ``metadata={"help": ...}``.
``build_parser`` turns it into an argparse parser (both ``--train_file`` and ``--train-file`` spellings, as the
original scripts used underscores and the generator dashes); ``parse_config`` validates through the
dataclass's own ``validate()`` so that errors name the flag. A field with ``metadata={"positional": True}`` is a
positional argument.

We write this small bridge instead of using ``transformers.HfArgumentParser`` because that parser has no
positional arguments (``tether-tune predict "..."``, ``tether-tune validate FILE``) and imports transformers,
which costs seconds on commands that never touch a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")

__all__ = ["ConfigError", "build_parser", "parse_config", "print_config", "save_config", "atomic_write_text",
           "is_main_process", "say"]


def flag(name: str) -> str:
    return "--" + name


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def build_parser(cls: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per dataclass field (help text and default shown)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        kwargs: dict[str, Any] = {"help": help_text, "default": default}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            (item_tp,) = typing.get_args(tp)[:1]
            kwargs["type"] = item_tp
            kwargs["nargs"] = "+" if not f.metadata.get("positional") else "*"
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif tp is Path:
            kwargs["type"] = Path
        else:
            kwargs["type"] = str
        if f.metadata.get("positional"):
            if optional or default is not None:
                kwargs.setdefault("nargs", "?")  # may be left out
            else:
                del kwargs["default"]  # required positional
            parser.add_argument(f.name, metavar=f.metadata.get("metavar", f.name.upper()), **kwargs)
        else:
            names = [flag(f.name)]
            if "_" in f.name:
                names.append(flag(f.name.replace("_", "-")))
            names += list(f.metadata.get("aliases", ()))
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            parser.add_argument(*names, dest=f.name, **kwargs)
    return parser


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse ``argv`` into ``cls`` and run its ``validate()``; a bad value exits with a message naming the flag."""
    parser = build_parser(cls, prog=prog)
    ns = parser.parse_args(argv)
    cfg = cls(**vars(ns))
    try:
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
    except ConfigError as err:
        parser.error(str(err))
    return cfg


def config_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun``/``accelerate launch`` run, and in a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """A progress or summary line on stderr, from rank 0 only (several processes print it once)."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def print_config(cfg: Any, stream: Any = None) -> None:
    """Print the resolved config, one field a line, before a run starts (rank 0 only)."""
    if not is_main_process():
        return
    stream = stream or sys.stderr
    d = config_dict(cfg)
    width = max((len(k) for k in d), default=0)
    print(f"{type(cfg).__name__}:", file=stream)
    for k, v in d.items():
        print(f"  {k:<{width}} = {v!r}", file=stream)
    stream.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that a reader sees either the old content or the whole new one, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(config_dict(cfg), indent=2, sort_keys=False) + "\n")
