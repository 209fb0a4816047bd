"""Encoding an example for training: ``(input_ids, labels)`` with the loss on the model turn alone.

The loss mask is ours and visible: :func:`encode_example` returns the labels (``IGNORE_INDEX`` on the prompt),
:func:`show_supervision` prints an example with its supervised span between ⟦ ⟧ (``tether-tune train
--show_example N``), and the tests check that exactly the model turn is supervised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .data import Example
from .errors import DataError
from .format import END_OF_TURN, Control, developer_turn_end, render_conversation_segments

IGNORE_INDEX = -100  # labels of tokens that carry no loss (prompt, padding)



@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on the prompt; the token id itself on the supervised model turn
    prefix_len: int = 0  # tokens of the developer turn (with the declarations), shared by every example

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode_example(tokenizer: Any, example: Example, tools: Sequence[Mapping[str, Any]]) -> Encoded:
    """``(input_ids, labels)`` for one example. The prompt (developer turn with every declaration, earlier turns,
    the request, ``<start_of_turn>model\\n``) is encoded exactly as at inference and carries no loss; the model
    turn's content — the calls and ``<start_function_response>``, or the text and ``<end_of_turn>`` — is
    supervised. The newline after ``<end_of_turn>`` is not part of the turn the model produces, so it is left out.
    """
    from .tokenizer import encode_segments  # deferred: keeps `tether-tune validate` free of transformers

    tools = example.tools or tools
    prompt = render_conversation_segments(example.prompt_messages(), tools, add_generation_prompt=True)
    full = render_conversation_segments([*example.prompt_messages(), example.target_message()], tools)
    if full[: len(prompt)] != prompt:  # the model turn must extend the prompt, segment for segment
        raise DataError(example.source, None, "the rendered prompt is not a prefix of the rendered conversation")
    completion = full[len(prompt) :]
    if completion[-2:] == [Control(END_OF_TURN), "\n"]:
        completion = completion[:-1]
    prompt_ids = encode_segments(tokenizer, prompt)
    completion_ids = encode_segments(tokenizer, completion)
    prefix_len = len(encode_segments(tokenizer, prompt[: developer_turn_end(prompt)]))
    return Encoded(prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids, prefix_len)


def show_supervision(tokenizer: Any, encoded: Encoded, open_mark: str = "⟦", close_mark: str = "⟧") -> str:
    """The encoded example as text with each supervised span wrapped in ⟦ ⟧ (for ``--show_example``)."""
    out: list[str] = []
    inside = False
    for tok, label in zip(encoded.input_ids, encoded.labels):
        sup = label != IGNORE_INDEX
        if sup != inside:
            out.append(open_mark if sup else close_mark)
            inside = sup
        out.append(tokenizer.decode([tok], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    if inside:
        out.append(close_mark)
    return "".join(out)
