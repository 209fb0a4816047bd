"""Text normalisation shared by the grounding checks (is a value stated in its request?) and scoring (is a
predicted value an acceptable one?): the two must agree on when two spellings are the same."""

from __future__ import annotations

import re

#: Characters that never distinguish two values: whitespace and ``, . / - _ * ^`` ("Fix login-bug" equals
#: "fix_loginbug"; "code reviewer" equals "code-reviewer").
_IGNORED = re.compile(r"[\s,./\-_*^]+")
#: A word for grounding checks: a run of lower-case letters and digits.
WORD = re.compile(r"[a-z0-9]+")


def normalize_text(text: str) -> str:
    """Lower-case, without whitespace and ``, . / - _ * ^``."""
    return _IGNORED.sub("", text.lower())


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (runs of letters and digits)."""
    return WORD.findall(text.lower())
