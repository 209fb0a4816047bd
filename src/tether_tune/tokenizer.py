"""Tokenizing FunctionGemma prompts: control tokens as single ids, a user's text always as text.

The renderer (``tether_tune.format``) hands us *segments*: ``Control`` items are control tokens, plain ``str``
items are text. ``encode_segments`` maps each control token to its one id and encodes each run of text with
special-token matching turned off, so a literal ``<escape>`` typed by a user is ordinary characters, never the
string delimiter (``docs/functiongemma-format.md``, "Control tokens").

``to_functiongemma_layout`` turns a plain Gemma 3 tokenizer into FunctionGemma's by renaming ids 46-52
(``<unused40>``..``<unused46>``) in place; adding tokens instead would give them ids past the embedding table.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import TetherTuneError
from .format import (
    CONTROL_TOKEN_IDS,
    FUNCTION_TOKENS,
    STOP_TOKENS,
    Control,
    render_conversation_segments,
    render_prompt_segments,
)

FIRST_FUNCTION_TOKEN_ID = 46
#: What a plain Gemma 3 tokenizer has at ids 46..52.
GEMMA3_PLACEHOLDERS: tuple[str, ...] = tuple(f"<unused{i}>" for i in range(40, 47))
_RENAMES: dict[int, tuple[str, str]] = {
    FIRST_FUNCTION_TOKEN_ID + i: (old, new) for i, (old, new) in enumerate(zip(GEMMA3_PLACEHOLDERS, FUNCTION_TOKENS))
}


class TokenizerError(TetherTuneError):
    """The tokenizer cannot encode FunctionGemma's format correctly. The message lists every problem and the fix."""


# --------------------------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------------------------


def check_control_tokens(tokenizer: Any, expect_ids: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every control token must encode to exactly one id (and, with ``expect_ids``, to that id).

    Returns ``{token: id}``. Raises :class:`TokenizerError` listing every problem.
    """
    found: dict[str, int] = {}
    problems: list[str] = []
    for tok in CONTROL_TOKEN_IDS:
        ids = list(tokenizer(tok, add_special_tokens=False).input_ids)
        if len(ids) != 1:
            problems.append(f"{tok} encodes to {len(ids)} ids {ids[:8]} instead of one")
            continue
        found[tok] = ids[0]
        if expect_ids is not None and tok in expect_ids and ids[0] != expect_ids[tok]:
            problems.append(f"{tok} has id {ids[0]}, expected {expect_ids[tok]}")
    if not problems:
        return found
    hint = ""
    names = _names_at(tokenizer, _RENAMES)
    if names and all(names.get(i) == old for i, (old, _) in _RENAMES.items()):
        hint = (
            "\nThis looks like a plain Gemma 3 tokenizer: ids 46-52 are <unused40>..<unused46>. Convert it with "
            "tether_tune.tokenizer.to_functiongemma_layout(tokenizer_or_dir, out_dir), or load the model through "
            "tether_tune.modeling.resolve_model (which does it for a .gguf)."
        )
    else:
        hint = (
            "\nUse FunctionGemma's tokenizer (google/functiongemma-270m-it), a Gemma 3 tokenizer converted with "
            "tether_tune.tokenizer.to_functiongemma_layout, or `tether-tune make-tiny-model` for tests."
        )
    raise TokenizerError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} cannot encode FunctionGemma's control tokens:\n  - "
        + "\n  - ".join(problems)
        + hint
    )


def _names_at(tokenizer: Any, ids: Mapping[int, Any]) -> dict[int, str]:
    try:
        return {i: tokenizer.convert_ids_to_tokens(i) for i in ids}
    except Exception:  # a tokenizer smaller than 53 entries, or one without the method
        return {}


# --------------------------------------------------------------------------------------------------------------
# Converting a Gemma 3 tokenizer
# --------------------------------------------------------------------------------------------------------------


def _rename_in_tokenizer_json(data: dict[str, Any]) -> None:
    model = data["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):  # BPE / WordPiece: {piece: id}
        by_id = {i: p for p, i in vocab.items() if i in _RENAMES}
        for i, (old, new) in _RENAMES.items():
            piece = by_id.get(i)
            if piece is None:
                raise TokenizerError(f"tokenizer.json has no vocabulary entry with id {i}: not a Gemma 3 tokenizer")
            if piece not in (old, new):
                raise TokenizerError(
                    f"id {i} is {piece!r}, expected {old!r} (plain Gemma 3) or {new!r} (FunctionGemma): "
                    "this is not a Gemma 3 tokenizer; refusing to rename it"
                )
            if piece != new:
                if new in vocab:
                    raise TokenizerError(f"{new} already has id {vocab[new]}; expected it at id {i} or absent")
                vocab[new] = vocab.pop(piece)
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...] indexed by id
        for i, (old, new) in _RENAMES.items():
            if i >= len(vocab):
                raise TokenizerError(f"tokenizer.json has only {len(vocab)} entries: not a Gemma 3 tokenizer")
            if vocab[i][0] not in (old, new):
                raise TokenizerError(
                    f"id {i} is {vocab[i][0]!r}, expected {old!r} (plain Gemma 3) or {new!r} (FunctionGemma): "
                    "this is not a Gemma 3 tokenizer; refusing to rename it"
                )
            vocab[i][0] = new
    else:
        raise TokenizerError(f"unsupported tokenizer.json model type {model.get('type')!r}")

    # The added-token entries make each one match whole (and, being special, never match inside user text when
    # special-token splitting is off). Rename the existing entry, or add one for the existing id.
    added = data.setdefault("added_tokens", [])
    by_id = {entry["id"]: entry for entry in added}
    for i, (_, new) in _RENAMES.items():
        entry = by_id.get(i)
        if entry is None:
            entry = {"id": i, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
            added.append(entry)
        entry.update(content=new, special=True, normalized=False)
    added.sort(key=lambda e: e["id"])


def _rename_in_tokenizer_config(cfg: dict[str, Any]) -> None:
    # transformers 5 writes no added_tokens_decoder (tokenizer.json is the truth) and, when one is present,
    # takes it as the complete list of added tokens: only ever edit one that is already there.
    decoder = cfg.get("added_tokens_decoder")
    if decoder:
        for i, (_, new) in _RENAMES.items():
            entry = decoder.setdefault(
                str(i), {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
            )
            entry.update(content=new, special=True, normalized=False)
    # Old configs may list the placeholders as extra special tokens by name.
    for key in ("additional_special_tokens", "extra_special_tokens"):
        value = cfg.get(key)
        if isinstance(value, list):
            renames = {old: new for old, new in _RENAMES.values()}
            cfg[key] = [renames.get(t, t) if isinstance(t, str) else t for t in value]


def to_functiongemma_layout(tokenizer_or_dir: Any, out_dir: str | os.PathLike | None = None) -> Any:
    """Rename ids 46-52 of a Gemma 3 tokenizer to FunctionGemma's function tokens (special tokens, in place:
    the vocabulary size does not change). Idempotent. Returns the converted tokenizer; with ``out_dir``, also
    saves it there. A directory given as input is never modified (unless it is ``out_dir``)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="tether-tune-tok-") as tmp:
        if isinstance(tokenizer_or_dir, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer_or_dir))
        else:
            tokenizer = tokenizer_or_dir
        size_before = len(tokenizer)
        tokenizer.save_pretrained(tmp)
        tok_json = Path(tmp) / "tokenizer.json"
        if not tok_json.is_file():
            raise TokenizerError(
                f"{type(tokenizer).__name__} saved no tokenizer.json; a fast (tokenizers) tokenizer is needed"
            )
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        _rename_in_tokenizer_json(data)
        tok_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        cfg_path = Path(tmp) / "tokenizer_config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            _rename_in_tokenizer_config(cfg)
            cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
        converted = AutoTokenizer.from_pretrained(tmp)
    if len(converted) != size_before:
        raise TokenizerError(f"renaming changed the vocabulary size ({size_before} -> {len(converted)}): a bug")
    check_control_tokens(converted, CONTROL_TOKEN_IDS)
    if out_dir is not None:
        converted.save_pretrained(os.fspath(out_dir))
    return converted


# --------------------------------------------------------------------------------------------------------------
# Encoding and decoding
# --------------------------------------------------------------------------------------------------------------


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    # split_special_tokens=True: special added tokens (our control tokens) are not matched inside the text. In
    # transformers 5.x the fast tokenizer applies it by setting the Rust tokenizer's `encode_special_tokens`
    # flag for this call.
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids)


def encode_segments(tokenizer: Any, segments: Sequence[str]) -> list[int]:
    """Ids of rendered segments: each ``Control`` is its one id; each run of text between control tokens is
    encoded as text only. Equal to ``tokenizer("".join(segments), add_special_tokens=False)`` whenever the text
    holds no control-token string. The segments already start with ``<bos>``: nothing is added."""
    control_ids = dict(CONTROL_TOKEN_IDS)
    actual = {t: tokenizer.convert_tokens_to_ids(t) for t in CONTROL_TOKEN_IDS}
    if actual != control_ids:
        check_control_tokens(tokenizer, CONTROL_TOKEN_IDS)  # raises with the full story
    forbidden = set(control_ids.values())
    ids: list[int] = []
    run: list[str] = []

    def flush() -> None:
        if not run:
            return
        text = "".join(run)
        run.clear()
        piece = _encode_text(tokenizer, text)
        leaked = forbidden.intersection(piece)
        if leaked:
            names = sorted(t for t, i in control_ids.items() if i in leaked)
            raise TokenizerError(
                f"the text {text[:60]!r} encoded to control token(s) {names}: they are not special tokens in this "
                "tokenizer, so a user's literal text would become a control token. Convert it with "
                "tether_tune.tokenizer.to_functiongemma_layout."
            )
        ids.extend(piece)

    for seg in segments:
        if isinstance(seg, Control):
            flush()
            if seg not in control_ids:
                raise TokenizerError(f"unknown control token {seg!r}")
            ids.append(control_ids[seg])
        elif seg:
            run.append(seg)
    flush()
    return ids


def encode_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> list[int]:
    return encode_segments(tokenizer, render_conversation_segments(messages, tools, add_generation_prompt))


def encode_prompt(
    tokenizer: Any, request: str, tools: Sequence[Mapping[str, Any]], developer: str | None = None
) -> list[int]:
    """Ids of the prompt for one request (developer turn with the declarations, the request, ``model\\n``)."""
    return encode_segments(tokenizer, render_prompt_segments(request, tools, developer))


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids generation stops on: ``<eos>``, ``<end_of_turn>``, ``<start_function_response>``."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    for t, i in zip(STOP_TOKENS, ids):
        if i is None or i == tokenizer.unk_token_id:
            raise TokenizerError(f"the tokenizer has no {t} token")
    return ids


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of ``ids`` with every control token written out (``<escape>`` delimits strings: never skip it)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


__all__ = [
    "FUNCTION_TOKENS",
    "TokenizerError",
    "check_control_tokens",
    "decode",
    "encode_conversation",
    "encode_prompt",
    "encode_segments",
    "stop_token_ids",
    "to_functiongemma_layout",
]
