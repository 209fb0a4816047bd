"""Synthetic CodeTether requests, each with the exact calls (or the words) that answer it.

The values are chosen first (arguments, ids, titles, enum values) and then written into a phrasing template, so the
request and its target can never disagree. Val/test splits hold out whole templates and part of every value pool,
so they measure phrasings and values never trained on. The same seed writes the same examples, byte for byte.

- :mod:`.generate`: one example, exact counts per family, the splits and their checks, output records;
- :mod:`.frames`: the tools, their arguments and the frames (templates with ids) a split draws from;
- :mod:`.realise`: a frame and values turned into request text (styles, fillers, typos) and the enum-word checks;
- :mod:`.templates`: the phrasings; :mod:`.values`: the value pools and the words for enum values;
- :mod:`.cli`: the ``generate`` command (:class:`GenerateConfig`, :func:`run_generate`).
"""

from .cli import GenerateConfig, main, output_paths, run_generate
from .frames import ARG_SLOT, ENUMS, PRESENCE, TOOLS, Frame, GenerateError, Pool, all_frames
from .generate import (
    DEFAULT_COUNTS,
    FAMILIES,
    allocate,
    duplicate_problems,
    family_of,
    generate_examples,
    generate_splits,
    make_pools,
    parse_split,
    resolve_counts,
    split_problems,
    to_record,
)
from .realise import enum_words, unstated_enum_words
from .templates import NO_CALL, WORDS_ANSWERS
from .values import AGENTS, CONTEXT, MESSAGES_DO, MESSAGES_KNOW, TASKS

__all__ = [
    "AGENTS", "ARG_SLOT", "CONTEXT", "DEFAULT_COUNTS", "ENUMS", "FAMILIES", "Frame", "GenerateConfig", "GenerateError",
    "MESSAGES_DO", "MESSAGES_KNOW", "NO_CALL", "PRESENCE", "Pool", "TASKS", "TOOLS", "all_frames", "allocate",
    "duplicate_problems", "enum_words", "family_of", "generate_examples", "generate_splits", "main", "make_pools",
    "output_paths", "parse_split", "resolve_counts", "run_generate", "split_problems", "to_record", "WORDS_ANSWERS",
    "unstated_enum_words",
]
