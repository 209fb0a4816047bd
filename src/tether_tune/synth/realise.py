"""Steps 3 and 4 of an example: fill a frame's slots with values and dress its words as typed, casual or spoken
text (prefixes, fillers, typos, context sentences), touching only the template's words, never a value.

Also the enum-word checks: which words of a request say an enum value (``enum_words``), and which say one the
target has no argument for (``unstated_enum_words``).
"""

from __future__ import annotations

import random
import re
import uuid
from typing import Any, Sequence

from ..format import Call
from ..tools import ENUM_SYNONYMS
from . import values
from .frames import ENUMS, SLOT, SLOT_ARG, GenerateError, Pool

STYLES = {"typed": 0.45, "casual": 0.25, "voice": 0.30}
#: Words that carry an enum value: never given a typo (the target's value would no longer be stated).
_PROTECTED = {w for words in ENUM_SYNONYMS.values() for s in words for w in re.split(r"[\s\-']+", s)}


#: Words that name a number's meaning: kept exact, so a stated priority stays stated.
_NUMBER_NAMES = {"priority", "prio", "urgency", "level"}


def _protected(word: str) -> bool:
    """A word of an enum phrase, or one built on it ("summarized"): no typo there, no filler beside it."""
    word = word.lower()
    return word in _PROTECTED or any(word.startswith(p) for p in _PROTECTED if len(p) >= 4)


def _codebase(rng: random.Random) -> str:
    return "global" if rng.random() < 0.25 else f"{rng.getrandbits(32):08x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Realiser:
    """Steps 3 and 4 for one request: fills slots and dresses the template's words in one style."""

    def __init__(self, rng: random.Random, pool: Pool, style: str | None = None, context: bool = True):
        self.rng = rng
        self.pool = pool
        self.style = style or rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
        self.lower_values = self.style == "voice" or (self.style == "casual" and rng.random() < 0.5)
        self.task = rng.choice(pool.tasks)
        self.context = context
        #: (argument, target value) of every slot filled, in the order of the request
        self.order: list[tuple[str, Any]] = []

    # -- the template's words ----------------------------------------------------------------------------------
    def dress(self, text: str) -> str:
        rng, style = self.rng, self.style
        if self.context and rng.random() < 0.18:
            context = rng.choice(values.CONTEXT)
            text = f"{context} {text}" if rng.random() < 0.6 else f"{text} {context}"
        question = False
        imperative = text.startswith("^")
        while "^" in text:
            i = text.index("^")
            prefix = ""
            if rng.random() < {"typed": 0.45, "casual": 0.35, "voice": 0.5}[style]:
                options = values.PREFIXES_VOICE if style == "voice" else values.PREFIXES_TYPED
                if i > 0:  # mid-text, after a sentence: no question
                    options = [p for p in options if p.strip().lower() not in ("can you", "could you")]
                prefix = rng.choice(options)
                question |= i == 0 and prefix.strip().lower() in ("can you", "could you")
            text = text[:i] + prefix + text[i + 1 :]
        end = text[-1] if text[-1] in ".?" else ""
        body = text[: len(text) - len(end)]
        closer = ""
        if imperative and rng.random() < 0.15:
            body += rng.choice(values.SUFFIXES)
        elif self.context and rng.random() < 0.06:
            closer = rng.choice(values.CLOSERS)
        if question:
            end = "?"
        if style == "casual" and end == "." and rng.random() < 0.7:
            end = ""
        text = body + (end or ("." if closer else "")) + closer
        if style == "voice":
            if rng.random() < 0.5:
                text = rng.choice(values.FILLERS_START) + text
            text = text.replace(" - ", " ")
        return text

    def literal(self, pieces: list[str]) -> list[str]:
        """Case, punctuation, fillers and typos of the template's words (``pieces``: text between slots)."""
        rng, style = self.rng, self.style
        if style == "voice":
            pieces = [re.sub(r"[,.;:!?\"()@]", "", p).lower() for p in pieces]
            # a filler never splits the words of an enum phrase ("full transcript", "word for word")
            spots = [(i, m.start()) for i, p in enumerate(pieces) for m in re.finditer(r"(?<=(\w)) (?=(\w+))", p)
                     if not (_protected(p[: m.start()].split()[-1]) or _protected(m.group(2)))]
            if spots and rng.random() < 0.35:
                i, at = rng.choice(spots)
                pieces[i] = pieces[i][:at] + f" {rng.choice(values.FILLERS_MID)} " + pieces[i][at + 1 :]
        elif style == "casual" and rng.random() < 0.6:
            pieces = [p.lower() for p in pieces]
        if style != "voice" and rng.random() < (0.3 if style == "casual" else 0.1):
            words = [(i, m) for i, p in enumerate(pieces) for m in re.finditer(r"[A-Za-z]{4,}", p)
                     if not _protected(m.group()) and m.group().lower() not in _NUMBER_NAMES]
            if words:
                i, m = rng.choice(words)
                pieces[i] = pieces[i][: m.start()] + _typo(m.group(), rng) + pieces[i][m.end() :]
        if style == "typed":
            pieces = [re.sub(r"((?:^|[.?!]\s+))([a-z])", lambda m: m.group(1) + m.group(2).upper(), p) if i == 0
                      else re.sub(r"([.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), p)
                      for i, p in enumerate(pieces)]
        return pieces

    # -- the values ----------------------------------------------------------------------------------------------
    def _text_value(self, value: str, bare: bool) -> str:
        if bare is None:  # raw: as written
            return value
        if self.lower_values:
            value = value.lower()
        elif bare:
            value = value[0].lower() + value[1:]
        if self.style == "voice":
            value = re.sub(r"[,.;:!?\"](?=\s|$)", "", value)
        return value

    def _quoted(self, value: str, p: float) -> str:
        if self.style != "voice" and self.rng.random() < p:
            q = '"' if self.rng.random() < 0.7 else "'"
            return f"{q}{value}{q}"
        return value

    def slot(self, name: str, mode: str | None, args: dict[str, Any]) -> tuple[str, Any]:
        """(what the request says, what the target gets) for one slot."""
        rng, pool = self.rng, self.pool
        arg = SLOT_ARG[name]
        value = args.get(arg)
        bare = None if mode == "raw" else mode is not None
        if name in ("title", "description"):
            if name == "title" and "description" not in args and rng.random() < 0.5:
                raw = _capital(rng.choice(values.WORK_VERBS).format(c=rng.choice(pool.components)))
            else:
                raw = self.task[0] if name == "title" else self.task[1]
            v = self._text_value(raw, bare if name == "title" else False)
            return self._quoted(v, 0.5 if name == "title" else 0.2) if mode is None else v, v
        if name == "message":
            if mode == "know" or (mode not in ("do", "know") and rng.random() < 0.4):
                own = rng.choice(values.STATEMENTS).format(c=rng.choice(pool.components))
                source = pool.messages_know
            else:
                own = rng.choice(values.WORK_VERBS).format(c=rng.choice(pool.components))
                source = pool.messages_do
            raw = _capital(own) if rng.random() < 0.5 else rng.choice(source)
            v = self._text_value(raw, bare)
            return (self._quoted(v, 0.35) if mode is None else v), v
        if name in ("task_id", "session_id"):
            v = _uuid(rng)
            return (f"`{v}`" if self.style == "typed" and rng.random() < 0.1 else v), v
        if name == "codebase":
            v = _codebase(rng)
            return v, v
        if name == "agent":
            v = f"{rng.choice(pool.agent_areas)}-{rng.choice(values.AGENT_ROLES)}"
            if rng.random() >= 0.4 or v in values.AGENTS:  # a composed role never equals a listed one
                v = rng.choice(pool.agents)
            said = v.replace("-", " ") if self.style == "voice" and rng.random() < 0.6 else v
            return said, v
        if name == "priority":
            if mode != "digit" and rng.random() < 0.3:
                return values.NUMBER_WORDS[value], value
            return str(value), value
        if name == "status":
            if mode == "canon":
                return value, value
            return rng.choice((values.STATUS_PRED if mode == "pred" else values.STATUS_ADJ)[value]), value
        if name == "style":
            return (value if mode == "canon" else rng.choice(values.STYLE_WORDS[value])), value
        if name == "agent_type":
            word = rng.choice(values.AGENT_TYPE_WORDS[value])
            if mode == "an":
                word = ("an " if word[0] in "aeiou" else "a ") + word
            return word, value
        raise GenerateError(f"unknown slot {{{name}}}")

    def realise(self, text: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The request, and the target's value for every argument it states."""
        if CODE_LIKE.search(SLOT.sub("", text)):  # typed as code: no dressing, no typos, values as written
            self.style, self.lower_values = "typed", False
            pieces = SLOT.split(text)
            literals = pieces[0::3]
        else:
            text = self.dress(text)
            pieces = SLOT.split(text)  # [literal, name, mode, literal, name, mode, ..., literal]
            literals = self.literal(pieces[0::3])
        out: list[str] = []
        said: list[str] = []
        stated: dict[str, Any] = {}
        for i, lit in enumerate(literals):
            out.append(lit)
            if i < len(literals) - 1:
                name, mode = pieces[3 * i + 1], pieces[3 * i + 2]
                surface, stated[SLOT_ARG[name]] = self.slot(name, mode, args)
                self.order.append((SLOT_ARG[name], stated[SLOT_ARG[name]]))
                out.append(f"\x00{len(said)}\x00")  # a placeholder: the clean-up below never touches a value
                said.append(surface)
        joined = re.sub(r"\s+", " ", "".join(out))
        joined = re.sub(r" ([,.?!:])", r"\1", joined)
        joined = re.sub(r"([,.?!])[,.]+", r"\1", joined).strip()
        request = re.sub("\x00(\\d+)\x00", lambda m: said[int(m.group(1))], joined)
        return request, stated


#: Frames typed as code (``get_task(task_id='…')``, ``send_message to …``) or as a slash command.
CODE_LIKE = re.compile(r"^/|[a-z]_[a-z]")


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def enum_words(request: str, value: str) -> list[str]:
    """The words for an enum value that ``request`` uses (at the start of a word: "summarized" says summarize)."""
    low = request.lower()
    return [w for w in ENUM_SYNONYMS.get(value, (value,)) if re.search(rf"(?<![a-z]){re.escape(w)}", low)]


def unstated_enum_words(request: str, calls: Sequence[Call]) -> list[str]:
    """Words for an enum value when the target has no such argument ("show me what's done" must filter on
    completed): a request like that teaches the model to drop what was said."""
    found = []
    for call in calls:
        checks = {"list_tasks": ("status",), "playback_session": ("style",)}.get(call.name, ())
        if call.name == "create_task" and len(calls) == 1:
            checks = ("agent_type",)  # in two-call requests an agent role ("builder") may name one
        for arg in checks:
            if arg not in call.arguments:
                found += [w for v in ENUMS[arg] for w in enum_words(request, v)]
    return found

