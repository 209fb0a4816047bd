"""Export a run: a merged Hugging Face model, or a GGUF (llama.cpp, Ollama) that keeps tool calling.

``tether-tune export --model_path RUN --format hf|gguf [--quant f16|q8_0] --output PATH``

- **hf**: the LoRA adapter merged into the base weights (safetensors), the config, the tokenizer in FunctionGemma's
  layout and a chat template of our own writing (``resources/chat_template.jinja``) in ``tokenizer_config.json``:
  ``tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)`` equals
  ``format.render_conversation`` byte for byte, so any runtime that reads HF chat templates renders tools the way
  the model was trained.
- **gguf**: written with the ``gguf`` library's writer and tensor-name maps, architecture ``gemma3``: the weights
  (f16 or Q8_0; norms stay f32 and get llama.cpp's +1, as ``convert_hf_to_gguf.py`` does for Gemma), the
  vocabulary with FunctionGemma's control tokens typed CONTROL, the chat template, and the stop tokens (``<eos>``,
  ``<end_of_turn>`` as end-of-turn, ``<start_function_response>`` as end-of-message: where a calling turn ends).
  The tokenizer's own ``tokenizer.json`` and the HF config ride along as metadata so that our loader
  (``modeling.convert_gguf``) rebuilds exactly the same tokenizer and model. Beside it an Ollama ``Modelfile``.

The user guide is ``docs/export.md``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ConfigError, atomic_write_text, print_config, save_config
from .modeling import GGUF_HF_CONFIG_KEY
from .format import (
    BOS,
    CONTROL_TOKEN_IDS,
    END_OF_TURN,
    EOS,
    PAD,
    START_RESPONSE,
    STOP_TOKENS,
)

FORMATS = ("hf", "gguf")
QUANTS = ("f16", "q8_0", "f32")
EXPORT_CONFIG_FILE = "export_config.json"
MODELFILE = "Modelfile"


def chat_template() -> str:
    """Our Jinja chat template: ``render_conversation`` in Jinja (``resources/chat_template.jinja``)."""
    return resources.files("tether_tune").joinpath("resources/chat_template.jinja").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# hf
# --------------------------------------------------------------------------------------------------------------


def export_hf(run: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``run`` (a ``rundir.LoadedRun`` with the adapter merged) as a plain transformers model directory."""
    from .modeling import set_token_ids

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = run.model, run.tokenizer
    set_token_ids(model, tok)  # generate() stops on <eos>, <end_of_turn> and <start_function_response>
    model.save_pretrained(out)  # safetensors
    tok.chat_template = chat_template()
    # save_jinja_files=False: the template goes into tokenizer_config.json, where every HF runtime looks.
    tok.save_pretrained(out, save_jinja_files=False)
    return out


# --------------------------------------------------------------------------------------------------------------
# gguf
# --------------------------------------------------------------------------------------------------------------


def _rope_theta(config: Any) -> float:
    """The global layers' RoPE base (transformers 5 keeps it in ``rope_parameters`` per layer type); llama.cpp's
    Gemma 3 graph fixes the sliding-window layers' base itself."""
    params = getattr(config, "rope_parameters", None) or {}
    return float((params.get("full_attention") or {}).get("rope_theta") or getattr(config, "rope_theta", None)
                 or 1e6)


def _vocab(tokenizer: Any, n_vocab: int) -> dict[str, Any]:
    """The ggml vocabulary of a fast tokenizer: model kind, pieces by id, scores, token types, merges.

    A byte-fallback BPE over ``▁`` pieces (Gemma 3's own) is SentencePiece-style ``llama``: the score of a piece
    is minus its id (what a BPE-trained SentencePiece model has); a byte-level BPE (the tiny test model's) is
    ``gpt2`` with its merges. Control tokens (the special added tokens: our function and turn tokens among them)
    are CONTROL so llama.cpp matches them whole; the table is padded to the embedding rows with UNUSED entries.
    """
    from gguf import TokenType

    from .tokenizer import TokenizerError

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise TokenizerError(f"exporting a {model.get('type')} tokenizer to GGUF is not supported (BPE only)")
    kind = "llama" if model.get("byte_fallback") else "gpt2"
    pieces: dict[int, str] = {i: p for p, i in model["vocab"].items()}
    added = {e["id"]: e for e in data.get("added_tokens", [])}
    for i, e in added.items():
        pieces[i] = e["content"]
    if max(pieces) >= n_vocab:
        raise TokenizerError(f"the tokenizer has ids up to {max(pieces)} but the model only {n_vocab} embeddings")
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        piece = pieces.get(i)
        if piece is None:
            tokens.append(f"[PAD{i}]"), scores.append(-1e4), types.append(TokenType.UNUSED)
            continue
        tokens.append(piece)
        scores.append(0.0 if i in added else -float(i))
        if i in added:
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        elif kind == "llama" and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"kind": kind, "tokens": tokens, "scores": scores, "types": types, "merges": merges}


def _tensor(name: str, tensor: Any, quant: str) -> tuple[Any, Any]:
    """(numpy data, ggml type) of one tensor. Norms (1-D) stay f32, as llama.cpp's converter keeps them; Q8_0
    needs rows (the last dimension) that are multiples of its 32-value blocks, else f16."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    data = tensor.detach().float().cpu().numpy()
    if name.endswith("norm.weight"):
        # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's Gemma graph multiplies by w.
        data = data + 1.0
    if data.ndim == 1 or quant == "f32":
        return data.astype(np.float32), GGMLQuantizationType.F32
    if quant == "q8_0" and data.shape[-1] % 32 == 0:
        return quants.quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), GGMLQuantizationType.F16


def export_gguf(run: Any, out_path: str | os.PathLike, quant: str = "f16", name: str | None = None) -> Path:
    """Write ``run`` (adapter merged) as one ``gemma3`` GGUF file with tokenizer, chat template and stop tokens."""
    import gguf

    from .modeling import set_token_ids

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, tok = run.model, run.tokenizer
    set_token_ids(model, tok)
    config = model.config
    if getattr(config, "model_type", None) not in ("gemma3_text", "gemma3"):
        raise ConfigError(f"--model_path: a {getattr(config, 'model_type', '?')} model; GGUF export knows Gemma 3 only")
    n_blocks = config.num_hidden_layers
    n_vocab = model.get_input_embeddings().weight.shape[0]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, n_blocks)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA3]

    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(name or out.stem)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "f32": gguf.LlamaFileType.ALL_F32}[quant])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_blocks)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_sliding_window(config.sliding_window)

    vocab = _vocab(tok, n_vocab)
    writer.add_tokenizer_model(vocab["kind"])
    # A byte-level BPE like the tiny model's pre-tokenizes with GPT-2's regex: llama.cpp's "gpt-2". Its "default"
    # splits punctuation off words ("code (8" becomes "code", " ", "(", "8" where ours gives "code", " (", "8").
    writer.add_tokenizer_pre("gpt-2" if vocab["kind"] == "gpt2" else "default")
    if vocab["kind"] == "llama":
        # Gemma 3 puts no "▁" before the text. llama.cpp's SentencePiece path does unless told, at the start and
        # after every control token ("<start_of_turn>▁developer"); llama.cpp's own Gemma 3 GGUFs tell it too.
        writer.add_add_space_prefix(False)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_scores(vocab["scores"])
    writer.add_token_types(vocab["types"])
    if vocab["kind"] == "gpt2":
        writer.add_token_merges(vocab["merges"])
    writer.add_bos_token_id(CONTROL_TOKEN_IDS[BOS])
    writer.add_eos_token_id(CONTROL_TOKEN_IDS[EOS])
    writer.add_pad_token_id(CONTROL_TOKEN_IDS[PAD])
    if tok.unk_token_id is not None:
        writer.add_unk_token_id(tok.unk_token_id)
    writer.add_eot_token_id(CONTROL_TOKEN_IDS[END_OF_TURN])  # a plain answer ends here
    writer.add_eom_token_id(CONTROL_TOKEN_IDS[START_RESPONSE])  # a calling turn ends here (the caller answers)
    # Our template writes <bos> itself: a runtime adding another would shift every position.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template())
    writer.add_string(gguf.Keys.Tokenizer.HF_JSON, tok.backend_tokenizer.to_str())
    writer.add_string(GGUF_HF_CONFIG_KEY, config.to_json_string(use_diff=False))

    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to token_embd, as llama.cpp's Gemma expects
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(f"--model_path: no GGUF name for the tensor {hf_name!r} (not a Gemma 3 text model?)")
        data, qtype = _tensor(hf_name, tensor, quant)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


#: Ollama's TEMPLATE (Go): the developer turn is the SYSTEM message as given; user and model turns as we render
#: them. A Go template cannot tell a string argument from a number, so it cannot render declarations or calls the
#: way the model was trained: the run's declarations are baked into SYSTEM instead (rendered by our renderer).
OLLAMA_TEMPLATE = (
    "<bos>{{ if .System }}<start_of_turn>developer\n{{ .System }}<end_of_turn>\n{{ end }}"
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    "{{- if eq .Role \"user\" }}<start_of_turn>user\n{{ .Content }}<end_of_turn>\n"
    "{{- if $last }}<start_of_turn>model\n{{ end }}"
    "{{- else if eq .Role \"assistant\" }}<start_of_turn>model\n{{ .Content }}"
    "{{- if not $last }}<end_of_turn>\n{{ end }}"
    "{{- end }}"
    "{{- end }}"
)


def ollama_system(tools: Any, developer: str | None = None) -> str:
    """The developer turn's content for Ollama: the run's developer text, the trigger, the declarations."""
    from .format import developer_message, render_declarations

    return developer_message(developer)["content"] + render_declarations(tools)


def modelfile(gguf_name: str, tools: Any, developer: str | None = None) -> str:
    """An Ollama ``Modelfile`` beside the GGUF: FROM, the TEMPLATE, the run's developer turn (developer text,
    trigger and its tools' declarations) as SYSTEM, and the stop tokens as PARAMETERs. The model's calls come
    back as text in FunctionGemma's syntax: parse them with ``tether_tune.parse`` (docs/export.md)."""
    system = ollama_system(tools, developer)
    if '"""' in system:
        raise ConfigError('the developer text or a tool description holds """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{OLLAMA_TEMPLATE}"""', f'SYSTEM """{system}"""']
    lines += [f'PARAMETER stop "{t}"' for t in STOP_TOKENS]
    lines += ["PARAMETER temperature 0", "PARAMETER num_ctx 4096"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ExportConfig:
    """Export a run (or any model) as a merged Hugging Face model or a GGUF that keeps tool calling."""

    model_path: str = field(metadata={"help": "a training output directory (the adapter is merged), a model "
                                              "directory, a .gguf, or the offline preset"})
    output: str = field(metadata={"help": "hf: the directory to write; gguf: the .gguf file to write (the "
                                          "Modelfile goes beside it)"})
    format: str = field(default="hf", metadata={"help": "hf (safetensors + tokenizer + chat template) or gguf",
                                                "choices": FORMATS})
    quant: str = field(default="f16", metadata={"help": "gguf only: f16, q8_0 (norms stay f32) or f32",
                                                "choices": QUANTS})
    tools: str | None = field(default=None, metadata={"help": "gguf: the tools declared in the Modelfile's SYSTEM "
                                                               "(default: the run's tools.json, else CodeTether's)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def validate(self) -> None:
        from .modeling import check_model_arg

        check_model_arg("--model_path", self.model_path)
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: use {' or '.join(FORMATS)}")
        if self.quant not in QUANTS:
            raise ConfigError(f"--quant {self.quant!r}: use {', '.join(QUANTS)}")
        out = Path(self.output).expanduser()
        if self.format == "gguf" and out.suffix != ".gguf":
            raise ConfigError(f"--output {self.output}: a GGUF export is one file; give a path ending in .gguf")
        if self.format == "hf" and out.exists() and not out.is_dir():
            raise ConfigError(f"--output {self.output}: exists and is not a directory")
        if out.exists() and not self.overwrite and (out.is_file() or any(out.iterdir())):
            raise ConfigError(f"--output {self.output}: already exists; pass --overwrite to replace it")


def run_export(cfg: ExportConfig) -> int:
    from .rundir import load_run

    cfg.validate()
    print_config(cfg)
    t0 = time.perf_counter()
    # fp32 on CPU: the merge and every conversion from it are exact; f16/Q8_0 are the GGUF writer's choice.
    run = load_run(cfg.model_path, tools=cfg.tools, dtype="float32", device="cpu")
    out = Path(cfg.output).expanduser()
    if cfg.format == "hf":
        export_hf(run, out)
        save_config(cfg, out / EXPORT_CONFIG_FILE)
    else:
        export_gguf(run, out, cfg.quant)
        atomic_write_text(out.with_name(MODELFILE), modelfile(out.name, run.tools, run.developer))
    print(f"[tether-tune] exported in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    print(out)
    return 0


def load_llama_cpp(path: str | Path, n_ctx: int, threads: int = 1, repack: bool = False, kv_f32: bool = False) -> Any:
    """One ``llama_cpp.Llama`` on the CPU (the ``llama`` extra): how the llama.cpp check and the latency benchmark
    load an exported GGUF.

    ``threads``: ggml's worker threads spin while they wait for each other, so on a 2-core machine that is busy
    with something else 2 threads ran a token of the tiny test model 1000x slower than 1 (0.5 s against 0.5 ms).
    ``repack`` False: the weights stay as the file has them. llama.cpp otherwise repacks Q8_0 weights for its AMX
    kernels on CPUs that have AMX (Sapphire Rapids and later), and those crash (a segmentation fault in the
    first batch of more than one token) on llama.cpp's own Q8_0 files as on ours: llama.cpp issue #20824. The
    option is not among ``Llama``'s arguments, so the default model parameters are wrapped while it loads.
    ``kv_f32``: keep the KV cache in f32 rather than llama.cpp's default f16 (which rounds keys and values even
    for an f32 GGUF).
    """
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    default_params = capi.llama_model_default_params

    def params() -> Any:
        p = default_params()
        p.use_extra_bufts = repack
        return p

    capi.llama_model_default_params = params
    try:
        kv = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if kv_f32 else {}
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                               verbose=False, logits_all=False, **kv)
    finally:
        capi.llama_model_default_params = default_params
