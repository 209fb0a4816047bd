"""Examples from frames and values: one example (``make_example``), exact counts per family, and the splits.

How one example is built (request and target can never disagree, because both come from the same values):

1. choose the arguments: which optional ones are present and the enum values and priority (``_draw``);
2. choose a frame (:mod:`.templates`) that fits them, and phrase every optional argument the frame does not place
   itself as a clause (``Frame.with_opts``);
3. fill the slots and 4. dress the template's words (:class:`.realise.Realiser`).

Every example records its frame id (``Example.template``). ``generate_splits`` holds out whole frames and part of
every value pool (titles, messages, agent roles) per split, so val/test measure phrasings and values never trained on.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Sequence

from ..checks import check_example, dedupe_key
from ..config import ConfigError
from ..data import Example
from ..format import Call
from . import templates, values
from .frames import ENUMS, PRESENCE, SLOT_ARG, TOOL_ARGS, TOOLS, Frame, GenerateError, Pool, all_frames
from .frames import ARG_SLOT  # noqa: F401  (tests read the whole vocabulary here, beside make_example)
from .realise import STYLES, Realiser, unstated_enum_words

#: Kinds of example a count can be given for: one per tool (exactly one call of it), then these two.
FAMILIES = TOOLS + ("parallel", "no_call")
#: The default training mix: 1040 examples, 25% answered in words (six kinds), 14% with two or three calls.
DEFAULT_COUNTS: dict[str, int] = {
    "create_task": 160, "list_tasks": 90, "get_task": 60, "cancel_task": 60, "get_session_history": 50,
    "playback_session": 60, "discover_agents": 40, "send_message": 110, "parallel": 150, "no_call": 260,
}


# --------------------------------------------------------------------------------------------------------------
# Splits: templates and values held out
# --------------------------------------------------------------------------------------------------------------


def _partition(items: Sequence[Any], fractions: Mapping[str, float], rng: random.Random, what: str,
               optional: bool = False) -> dict[str, list[Any]]:
    """Deal ``items`` to the splits by fraction; every split with a fraction > 0 gets at least one, the first
    split (train) the rest. ``optional`` groups too small to share go to train whole."""
    names = list(fractions)
    items = list(items)
    rng.shuffle(items)
    out: dict[str, list[Any]] = {name: [] for name in names}
    sizes = {name: (max(1, round(len(items) * fractions[name])) if fractions[name] > 0 else 0) for name in names[1:]}
    if len(items) - sum(sizes.values()) < 1:
        if optional:
            out[names[0]] = items
            return out
        raise GenerateError(f"cannot split the {len(items)} {what} into {', '.join(names)}: too few to hold any out")
    start = 0
    for name in names[1:]:
        out[name] = items[start : start + sizes[name]]
        start += sizes[name]
    out[names[0]] = items[start:]
    return out


def make_pools(fractions: Mapping[str, float], seed: int) -> dict[str, Pool]:
    """One :class:`Pool` per split. With one split, it holds every frame and value."""
    frames = all_frames()
    if len(fractions) == 1:
        (name,) = fractions
        by_family: dict[str, list[Frame]] = {}
        for f in frames:
            by_family.setdefault(f.family, []).append(f)
        return {name: Pool(name, by_family)}
    rng = random.Random(f"tether-tune/split/{seed}")
    pools = {name: Pool(name, {}) for name in fractions}
    groups: dict[str, list[Frame]] = {}
    for f in frames:
        groups.setdefault(f.group, []).append(f)
    for group in sorted(groups):
        dealt = _partition(groups[group], fractions, rng, f"{group} templates", optional=group.endswith(".special"))
        for name, fs in dealt.items():
            pools[name].frames.setdefault(group.split(".")[0], []).extend(sorted(fs, key=lambda f: f.id))
    for tool in sorted(templates.TWINS):
        pools_twins = _partition(templates.TWINS[tool], fractions, rng, f"{tool} twin templates", optional=True)
        for name, texts in pools_twins.items():
            pools[name].twins[tool] = texts
    for attr in ("tasks", "messages_do", "messages_know", "agents", "components", "agent_areas"):
        dealt = _partition(getattr(values, attr.upper()), fractions, rng, attr)
        for name, share in dealt.items():
            setattr(pools[name], attr, share)
    return pools


def allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split a count by fractions exactly (largest remainder; ties to the earlier split)."""
    raw = {k: n * f for k, f in fractions.items()}
    out = {k: int(v) for k, v in raw.items()}
    order = sorted(fractions, key=lambda k: (-(raw[k] - out[k]), list(fractions).index(k)))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def parse_split(spec: str) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` -> train/val/test; ``"0.9,0.1"`` -> train/test."""
    try:
        parts = [float(x) for x in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--split {spec!r}: expected fractions like 0.8,0.1,0.1") from None
    names = {2: ("train", "test"), 3: ("train", "val", "test")}.get(len(parts))
    if names is None:
        raise ConfigError(f"--split {spec!r}: give 2 (train,test) or 3 (train,val,test) fractions")
    if any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0:
        raise ConfigError(f"--split {spec!r}: fractions must be >= 0, sum to 1, and train must be > 0")
    return dict(zip(names, parts))


# --------------------------------------------------------------------------------------------------------------
# One example
# --------------------------------------------------------------------------------------------------------------


def _choose_values(args: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Enum values (those not fixed yet) and priority are chosen now: frames and clauses may state them. The rest
    (ids, text) is drawn when its slot is filled; ``None`` = present, value still to draw."""
    for arg in args:
        if arg in ENUMS and args[arg] is None:
            args[arg] = rng.choice(ENUMS[arg])
        elif arg == "priority":
            args[arg] = rng.randint(0, 10)
    return args


def _draw(tool: str, rng: random.Random) -> dict[str, Any]:
    """Step 1: the arguments present, with their enum values and priority."""
    args: dict[str, Any] = {a: None for a in TOOL_ARGS[tool] if a not in PRESENCE.get(tool, {})}
    for arg, p in PRESENCE.get(tool, {}).items():
        if rng.random() < p:
            args[arg] = None
    return _choose_values(args, rng)


def _no_call_example(frames: list[Frame], rng: random.Random, pool: Pool) -> Example:
    """A request no tool serves: a kind by weight, a frame of it, and its answer naming the values it was given."""
    kinds = sorted({f.id.split(".")[1] for f in frames})
    kind = rng.choices(kinds, weights=[templates.NO_CALL_WEIGHTS[k] for k in kinds])[0]
    frame = rng.choice([f for f in frames if f.id.split(".")[1] == kind])
    request, stated = Realiser(rng, pool).realise(frame.text, {})
    answer = re.sub(r"\{(\w+)\}", lambda m: str(stated[SLOT_ARG[m.group(1)]]), frame.answer or "")
    return Example(request=request, calls=[], text=answer, template=frame.id)


def _target(frame: Frame, args: Mapping[str, Any], stated: Mapping[str, Any], request: str) -> list[Call]:
    """The calls: every argument drawn is stated, by a slot (its realised value), by the frame's own words or an
    {opts} clause (the enum value drawn). Nothing else goes into the target."""
    calls = [Call(tool, {a: stated.get(a, args[a]) for a in TOOL_ARGS[tool] if a in args}) for tool in frame.calls]
    for call in calls:
        if any(v is None for v in call.arguments.values()) or set(stated) - set(args):
            raise GenerateError(f"template {frame.id}: slots and arguments disagree ({call}, slots {sorted(stated)})")
    unstated = unstated_enum_words(request, calls)
    if unstated:
        raise GenerateError(f"template {frame.id}: the request says {unstated!r} but the target has no such argument: {request!r}")
    return calls


#: How the parts of a several-call request are joined (the second part starts lower-case unless a sentence).
JOINERS = [" and ", ", then ", ", and then ", ". Also, ", ". Then ", "; also ", ". After that, ", " and also ",
           ", plus ", ". And "]
#: Several-call requests: share built from the pool's hand-written two-call frames; the rest are composed from
#: single-call requests (2 calls, or 3 with ``P_THREE``), and ``P_TWIN`` of them ask the same thing of two or three ids.
P_FRAME, P_THREE, P_TWIN = 0.3, 0.15, 0.15


def _from_frame(frame: Frame, text: str, args: dict[str, Any], realiser: Realiser) -> Example:
    """Steps 3 and 4 of ``frame`` (its ``text`` with the clauses in) and the target from the same values."""
    request, stated = realiser.realise(text, args)
    return Example(request=request, calls=_target(frame, args, stated, request), template=frame.id)


def _single(family: str, rng: random.Random, pool: Pool, style: str | None = None, context: bool = True) -> Example | None:
    frames = pool.frames.get(family, [])
    args = _draw(family, rng)
    fitting = [f for f in frames if f.fits(args)]
    if not fitting:
        return None
    frame = rng.choice(fitting)
    realiser = Realiser(rng, pool, style, context)  # drawn before the clauses, as it always was (same data per seed)
    return _from_frame(frame, frame.with_opts(args, rng), args, realiser)


def _twin_example(rng: random.Random, pool: Pool) -> Example:
    tool = rng.choice(sorted(t for t, texts in pool.twins.items() if texts))
    n = 3 if rng.random() < 0.3 else 2
    text = rng.choice(pool.twins[tool])
    slot = "{session_id}" if tool == "get_session_history" else "{task_id}"
    ids = [slot] * n
    listed = ", ".join(ids[:-1]) + rng.choice([" and ", ", and ", " & "] if n == 3 else [" and ", " & ", ", "]) + ids[-1]
    realiser = Realiser(rng, pool)
    request, _ = realiser.realise(text.replace("{ids}", listed), {})
    calls = [Call(tool, {arg: value}) for arg, value in realiser.order]
    return Example(request=request, calls=calls, template=f"parallel.twin.{tool}.{templates.TWINS[tool].index(text) + 1:02d}")


def _join(parts: Sequence[Example], rng: random.Random) -> str:
    """The parts' requests as one: "A, then b", "A. Also, b", "A? And b" (the joiner carries the capital)."""
    out = parts[0].request
    for part in parts[1:]:
        joiner = rng.choice(JOINERS)
        if out.endswith("?"):
            joiner = " " + joiner.strip(" .;,").capitalize() + (", " if joiner.rstrip().endswith(",") else " ")
        out = out.rstrip(".!?") + joiner if not out.endswith("?") else out + joiner
        nxt = part.request
        starts_with_value = any(isinstance(v, str) and nxt.startswith(v) for c in part.calls for v in c.arguments.values())
        if not starts_with_value and nxt[:1].isupper() and nxt[1:2].islower():
            nxt = nxt[0].lower() + nxt[1:]
        out += nxt
    return out


def _composed_example(rng: random.Random, pool: Pool) -> Example | None:
    """Two or three single-call requests of one style, joined ("cancel X, then tell the builder ...")."""
    if rng.random() < P_TWIN:
        return _twin_example(rng, pool)
    style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
    n = 3 if rng.random() < P_THREE else 2
    parts = []
    for _ in range(n):
        part = _single(rng.choice(TOOLS), rng, pool, style, context=False)
        if part is None or (part.calls[0].name == "discover_agents" and any(p.calls[0].name == "discover_agents" for p in parts)):
            return None
        parts.append(part)
    request = _join(parts, rng)
    calls = [c for p in parts for c in p.calls]
    # a description runs to the end of its request: only the last part may have one
    if unstated_enum_words(request, calls) or any("description" in p.calls[0].arguments for p in parts[:-1]):
        return None
    return Example(request=request, calls=calls, template="parallel.compose(" + "+".join(p.template for p in parts) + ")")


def make_example(family: str, rng: random.Random, pool: Pool) -> Example | None:
    """One example of ``family`` (a tool name, ``parallel`` or ``no_call``) from ``pool``; ``None`` when the drawn
    arguments fit none of the pool's frames (the caller draws again)."""
    frames = pool.frames.get(family, [])
    if family == "no_call":
        return _no_call_example(frames, rng, pool)
    if family == "parallel":
        if rng.random() >= P_FRAME:
            return _composed_example(rng, pool)
        frame = rng.choice(frames)
        args = _choose_values({a: None for a in frame.slot_args} | dict(frame.fixed), rng)
        return _from_frame(frame, frame.text, args, Realiser(rng, pool))
    ex = _single(family, rng, pool)
    if ex is not None and family == "create_task" and "priority" not in ex.calls[0].arguments and rng.random() < 0.15:
        sep = " " if ex.request[-1] in ".?!" else ". "
        ex.request = f"{ex.request}{sep}{rng.choice(values.URGENCY)}"  # urgency without a number: no priority
    return ex


# --------------------------------------------------------------------------------------------------------------
# Many examples
# --------------------------------------------------------------------------------------------------------------


def resolve_counts(counts: Mapping[str, int | None] | None) -> dict[str, int]:
    """Given counts over the defaults; ``None`` means the default. Unknown names and negatives are errors."""
    out = dict(DEFAULT_COUNTS)
    for name, n in (counts or {}).items():
        if name not in out:
            raise GenerateError(f"unknown count {name!r}: expected one of {', '.join(FAMILIES)}")
        if n is not None:
            if n < 0:
                raise GenerateError(f"count {name!r} must be >= 0 (got {n})")
            out[name] = int(n)
    return out


def family_of(example: Example) -> str:
    """The count an example belongs to: its tool, ``parallel`` (several calls) or ``no_call``."""
    if not example.calls:
        return "no_call"
    return example.calls[0].name if len(example.calls) == 1 else "parallel"


def _make_family(family: str, n: int, rng: random.Random, pool: Pool, seen: dict[str, str],
                 tools: Sequence[Mapping[str, Any]] | None) -> list[Example]:
    """``n`` examples of ``family`` for ``pool``'s split, none of them in ``seen`` (which records them)."""
    examples: list[Example] = []
    attempts, limit = 0, 40 * n + 400
    while len(examples) < n:
        attempts += 1
        if attempts > limit:
            raise GenerateError(
                f"made only {len(examples)} distinct {family} examples of the {n} asked for the {pool.name!r} split "
                f"(its {len(pool.frames.get(family, []))} templates ran out of new requests): ask for fewer"
            )
        ex = make_example(family, rng, pool)
        if ex is None:
            continue
        key = dedupe_key(ex)
        if key in seen:
            continue
        if tools is not None:
            problems = check_example(ex, tools)
            if problems:
                raise GenerateError(f"template {ex.template} made a bad example ({'; '.join(problems)}): {ex.request!r}")
        seen[key] = pool.name
        examples.append(ex)
    return examples


def generate_splits(
    counts: Mapping[str, int | None] | None = None,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, list[Example]]:
    """Examples per split, exactly ``counts`` in all (each count dealt to the splits by fraction), no duplicates
    anywhere. Each split uses only its own frames and its own share of titles, messages and agent roles.
    With ``tools``, every example is checked (schema and grounding) and a failure raises :class:`GenerateError`."""
    fractions = dict(fractions or {"all": 1.0})
    totals = resolve_counts(counts)
    pools = make_pools(fractions, seed)
    seen: dict[str, str] = {}
    out: dict[str, list[Example]] = {}
    for split, pool in pools.items():
        examples: list[Example] = []
        for family, total in totals.items():
            rng = random.Random(f"tether-tune/{seed}/{split}/{family}")
            examples += _make_family(family, allocate(total, fractions)[split], rng, pool, seen, tools)
        random.Random(f"tether-tune/{seed}/{split}/order").shuffle(examples)
        prefix = "gen" if split == "all" else split
        for i, ex in enumerate(examples, 1):
            ex.id = f"{prefix}-{i:05d}"
        out[split] = examples
    return out


def generate_examples(
    counts: Mapping[str, int | None] | None = None,
    seed: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[Example]:
    """``counts`` examples (per tool: examples whose answer is exactly one call of it; ``parallel``: two calls;
    ``no_call``: answered in words), unspecified ones at ``DEFAULT_COUNTS``. Same seed, same list."""
    return generate_splits(counts, seed, None, tools)["all"]


def subsample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded random ``n`` of ``examples``, in their order (``--train_size``); all of them when ``n`` is as many or
    more."""
    if n >= len(examples):
        return list(examples)
    keep = set(random.Random(f"tether-tune/{seed}/train_size").sample(range(len(examples)), n))
    return [ex for i, ex in enumerate(examples) if i in keep]


def with_included(examples: Sequence[Example], paths: Sequence[str], tools: Sequence[Mapping[str, Any]],
                  seed: int, generated: Sequence[Example] = ()) -> tuple[list[Example], list[str]]:
    """``examples`` with the hand-written examples of ``paths`` (``--include``) dealt among them in a seeded order,
    and the requests left out. Every included example must pass :func:`check_example` (schema and grounding) and
    have calls or a words answer: the first that does not raises :class:`DataError` with its file and line, as does
    one that repeats another included request. One the generator also wrote (in ``examples`` or any other split of
    ``generated``: "thanks!", "help") is left out, so that no held-out request is trained on and none counts twice."""
    from ..data import read_examples
    from ..errors import DataError

    out = list(examples)
    made = {dedupe_key(ex) for ex in [*examples, *generated]}
    seen: dict[str, str] = {}
    skipped: list[str] = []
    for path in paths:
        for ex in read_examples(path, strict=True)[0]:
            problems = check_example(ex, tools)
            if problems:
                raise DataError(ex.source, None, "; ".join(problems))
            if not ex.calls and not (ex.text or "").strip():
                raise DataError(ex.source, "answer", "no calls and no words answer: a training example needs one")
            key = dedupe_key(ex)
            if key in seen:
                raise DataError(ex.source, "query", f"the same request as {seen[key]}: remove one of them")
            seen[key] = str(ex.source)
            if key in made:
                skipped.append(f"{ex.source}: {ex.request!r}")
                continue
            ex.id, ex.template = ex.id or f"hand-{len(out) - len(examples) + 1:05d}", None
            out.append(ex)
    random.Random(f"tether-tune/{seed}/include").shuffle(out)
    return out, skipped


def split_problems(splits: Mapping[str, Sequence[Example]]) -> list[str]:
    """Leaks between splits: a template of a held-out split (any but ``train``) seen in train, or the same request
    in two splits. Empty when the split is clean."""
    problems = []
    train = splits.get("train", [])
    train_templates = {ex.template for ex in train if ex.template}
    where: dict[str, str] = {}
    for name, examples in splits.items():
        for ex in examples:
            if name != "train" and ex.template in train_templates:
                problems.append(f"{name} example {ex.id or ex.request!r}: template {ex.template} is also in train")
            key = dedupe_key(ex)
            if key in where and where[key] != name:
                problems.append(f"{name} example {ex.id or ex.request!r}: the same request is in {where[key]}")
            where.setdefault(key, name)
    return problems


def duplicate_problems(examples: Sequence[Example]) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, ex in enumerate(examples):
        key = dedupe_key(ex)
        if key in seen:
            problems.append(f"example {i} duplicates example {seen[key]}: {ex.request!r}")
        seen.setdefault(key, i)
    return problems


def to_record(example: Example, fmt: str) -> dict[str, Any]:
    """One output line: ``original`` (input/output), ``messages`` (chat) or ``gold`` (acceptable values), each
    with the example's ``id`` and ``template``."""
    if fmt == "original":
        rec = example.to_original()
    elif fmt == "messages":
        rec = example.to_messages()
    elif fmt == "gold":
        rec = example.to_gold()
        if not example.calls:
            rec["answer"] = example.text
    else:
        raise ValueError(f"unknown format {fmt!r}")
    rec["id"] = example.id
    rec["template"] = example.template
    return rec
