"""Constrained decoding: the grammar accepts exactly the valid model turns for the tools, forced tokens are
appended without a model choice, and whatever the (random, steered) model prefers, the output parses and
validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logits_wrapper import LogitsRewriter

from tether_tune.constrain import ToolCallConstraint, tool_call_grammar
from tether_tune.format import CONTROL_TOKEN_IDS, Call, Control, render_call_segments
from tether_tune.parse import parse_calls
from tether_tune.predict import Predictor
from tether_tune.tokenizer import decode, encode_segments
from tether_tune.tools import validate_call

C = CONTROL_TOKEN_IDS
START_RESPONSE = Control("<start_function_response>")
END_OF_TURN = Control("<end_of_turn>")
ESC = Control("<escape>")
TRUNCATED = "stopped at max_new_tokens="


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path, tools: list[dict]) -> Predictor:
    return Predictor.load(str(tiny_model_dir), tools=tools, constrained=True, max_new_tokens=48)


@pytest.fixture(scope="module")
def constraint(predictor: Predictor) -> ToolCallConstraint:
    assert predictor.constraint is not None
    return predictor.constraint


def accepts(constraint: ToolCallConstraint, tokenizer: Any, segments: list[str]) -> bool:
    """Whether the grammar takes this whole model turn (and is complete after it)."""
    m = constraint.matcher()
    ids = encode_segments(tokenizer, segments)
    return m.consume_tokens(ids) and m.is_accepting() and not m.is_error()


def calls(*cs: Call) -> list[str]:
    out: list[str] = []
    for c in cs:
        out += render_call_segments(c)
    return out + [START_RESPONSE]


VALID = [
    calls(Call("create_task", {"title": "Fix the login bug"})),
    calls(Call("create_task", {"agent_type": "plan", "codebase_id": "3fa9c01b", "description": "a, b: {c} [d]",
                               "priority": 10, "title": "T"})),
    calls(Call("create_task", {"priority": 0, "title": "Ünïcödé 日本語 🙂\nnew line"})),
    calls(Call("list_tasks", {})),
    calls(Call("list_tasks", {"status": "working"})),
    calls(Call("get_task", {"task_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"})),
    calls(Call("playback_session", {"session_id": "s1", "style": "summary"})),
    calls(Call("discover_agents", {})),
    calls(Call("send_message", {"agent_name": "code-reviewer", "message": "look at <end_function_call> auth"})),
    calls(Call("get_task", {"task_id": "a"}), Call("cancel_task", {"task_id": "a"}), Call("discover_agents", {})),
    ["I can only help with CodeTether tasks.", END_OF_TURN],
    ["  leading space and call:get_task{} as words\n", END_OF_TURN],
    ["ok", Control("<eos>")],
    [END_OF_TURN],  # declining in no words: allowed, or a model that wants to stop would ramble on
    [Control("<eos>")],
]

INVALID = {
    "unknown tool": calls(Call("delete_everything", {})),
    "unknown argument": calls(Call("get_task", {"task_id": "a", "force": True})),
    "missing required": calls(Call("get_task", {})),
    "one of two required": calls(Call("send_message", {"agent_name": "x"})),
    "enum value": calls(Call("list_tasks", {"status": "running"})),
    "integer above maximum": calls(Call("create_task", {"priority": 11, "title": "T"})),
    "negative integer": calls(Call("create_task", {"priority": -1, "title": "T"})),
    "integer as text": calls(Call("create_task", {"priority": "8", "title": "T"})),
    "text as bare word": [Control("<start_function_call>"), "call:get_task{task_id:abc}", Control("<end_function_call>"),
                          START_RESPONSE],
    "blank required text": calls(Call("create_task", {"title": "  "})),
    "empty required text": calls(Call("get_task", {"task_id": ""})),
    "typed <escape> inside text": calls(Call("get_task", {"task_id": "a<escape>b"})),
    "keys out of order": [Control("<start_function_call>"), "call:playback_session{style:", ESC, "summary", ESC,
                          ",session_id:", ESC, "s", ESC, "}", Control("<end_function_call>"), START_RESPONSE],
    "calls then end_of_turn": calls(Call("discover_agents", {}))[:-1] + [END_OF_TURN],
    "no calls": [START_RESPONSE],
    "blank words": ["  \n ", END_OF_TURN],
    "words with a typed call token": ["see <start_function_call> here", END_OF_TURN],
    "words then a call": ["ok", Control("<start_function_call>"), "call:discover_agents{}",
                          Control("<end_function_call>"), START_RESPONSE],
    "calls then eos": calls(Call("discover_agents", {}))[:-1] + [Control("<eos>")],
}


@pytest.mark.parametrize("segments", VALID, ids=range(len(VALID)))
def test_grammar_accepts_valid_turns(constraint: ToolCallConstraint, predictor: Predictor, segments: list[str]) -> None:
    assert accepts(constraint, predictor.tokenizer, segments)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_grammar_rejects_invalid_turns(constraint: ToolCallConstraint, predictor: Predictor, name: str) -> None:
    assert not accepts(constraint, predictor.tokenizer, INVALID[name])


def test_grammar_text_names_control_tokens_by_id(tools: list[dict]) -> None:
    text = tool_call_grammar(tools)
    assert "calls: call+ <[50]>" in text and "answer: TEXT? (<[106]> | <[1]>)" in text
    assert '<[48]> "call:"' in text
    assert '"priority:" t0_v3_int' in text and '"10"' in text  # 0..10 written out value by value


def test_first_choice_is_call_or_words(constraint: ToolCallConstraint, predictor: Predictor) -> None:
    vocab = predictor.model.config.vocab_size + 5  # logits wider than the tokenizer: the extra ids are masked
    allowed = constraint.allowed([constraint.matcher()], vocab)
    assert allowed.shape == (1, vocab) and allowed.dtype == torch.bool
    assert allowed[0, C["<start_function_call>"]]
    assert allowed[0, predictor.tokenizer.convert_tokens_to_ids("I")]
    assert allowed[0, C["<end_of_turn>"]] and allowed[0, C["<eos>"]]  # declining in no words
    for tok in ("<start_function_response>", "<escape>", "<end_function_call>", "<pad>", "<start_of_turn>"):
        assert not allowed[0, C[tok]], tok
    assert not allowed[0, -5:].any()


def drive(constraint: ToolCallConstraint, tokenizer: Any, m: Any, pieces: list[str]) -> list[str]:
    """Make the matcher say ``pieces`` (text or control tokens), choosing the longest allowed token each time
    and skipping what the grammar forces; return the forced runs, decoded."""
    forced_runs: list[str] = []
    rest = [p for p in pieces]
    while rest:
        head = rest[0]
        if isinstance(head, Control):
            choice = C[head]
        else:
            allowed = constraint.allowed([m], len(tokenizer))[0].nonzero().flatten().tolist()
            text = [(len(s), i) for i in allowed if (s := decode(tokenizer, [i])) and head.startswith(s)]
            choice = max(text)[1]
        said = [choice] + constraint.advance(m, choice)
        forced_runs.append(decode(tokenizer, said[1:]))
        for t in said:  # remove what was said (chosen and forced) from the script
            if not rest:
                break  # forced beyond the script
            s = decode(tokenizer, [t])
            if isinstance(rest[0], Control):
                assert s == rest[0]
                rest.pop(0)
            else:
                assert rest[0].startswith(s), (rest[0], s)
                rest[0] = rest[0][len(s):]
                if not rest[0]:
                    rest.pop(0)
    return forced_runs


def test_grammar_forces_what_needs_no_choice(constraint: ToolCallConstraint, predictor: Predictor) -> None:
    tok = predictor.tokenizer
    m = constraint.matcher()
    assert decode(tok, constraint.advance(m, C["<start_function_call>"])) == "call:"
    forced = drive(constraint, tok, m, ["get_task{"])
    # "get_" could still be get_session_history; "get_task{" has one required argument: its key is forced.
    assert "".join(forced).endswith("task_id:<escape>")
    forced = drive(constraint, tok, m, ["abc", ESC])
    assert forced[-1] == "}<end_function_call>"
    assert constraint.allowed([m], len(tok))[0].nonzero().flatten().tolist() == sorted(
        [C["<start_function_call>"], C["<start_function_response>"]]
    )


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


class Noisy(LogitsRewriter):
    """The tiny model with random noise on its logits and random boosts to the control tokens, so that the
    constrained path is driven into every branch (calls, words, strings ending, several calls)."""

    def __init__(self, inner: torch.nn.Module, seed: int, noise: float, boosts: dict[int, float]):
        super().__init__(inner)
        self.gen = torch.Generator().manual_seed(seed)
        self.noise = noise
        self.boosts = boosts

    def rewrite(self, logits: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        logits += self.noise * torch.randn(logits.shape, generator=self.gen)
        for tok, boost in self.boosts.items():
            logits[..., tok] += boost
        return logits


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    noise=st.sampled_from([0.0, 1.0, 5.0]),
    boosts=st.dictionaries(
        st.sampled_from([C[t] for t in ("<start_function_call>", "<escape>", "<end_of_turn>", "<eos>",
                                        "<start_function_response>", "<end_function_call>")]),
        st.floats(-5, 15),
        max_size=4,
    ),
)
def test_constrained_output_always_parses_and_validates(
    predictor: Predictor, seed: int, noise: float, boosts: dict[int, float]
) -> None:
    model = Noisy(predictor.model, seed, noise, boosts)
    pred = Predictor(model, predictor.tokenizer, predictor.tools, constrained=True, max_new_tokens=48)
    pred.constraint = predictor.constraint  # the same compiled grammar: building it is the slow part
    requests = ["Create a task to fix the login bug", "List my pending tasks", "hi"]
    for out in pred.predict_batch(requests, batch_size=3):
        for call in out.calls:
            assert validate_call(call, pred.tools) == []
        truncated = out.timings["new_tokens"] >= 48 and not out.raw.endswith(
            ("<start_function_response>", "<end_of_turn>", "<eos>")
        )
        if truncated:  # cut by max_new_tokens: the unfinished call is reported, the finished ones are valid
            assert out.errors[-1].startswith(TRUNCATED)
            assert all(e.startswith("truncated") for e in out.errors[:-1]) and len(out.errors) <= 2
            continue
        assert out.errors == [], out.raw
        if out.raw.endswith("<start_function_response>"):
            strict = parse_calls(out.raw)  # the strict parser: nothing but well-formed calls
            assert strict and len(strict) == len(out.calls) and out.text == ""
        else:
            assert out.raw.endswith(("<end_of_turn>", "<eos>")) and not out.calls


def test_forced_tokens_are_appended_without_a_model_choice(predictor: Predictor) -> None:
    # Push the model into a call; strings end early. Every forced token saves a forward.
    boosts = {C["<start_function_call>"]: 8.0, C["<escape>"]: 8.0, C["<start_function_response>"]: 9.0}
    model = Noisy(predictor.model, 0, 0.0, boosts)
    pred = Predictor(model, predictor.tokenizer, predictor.tools, constrained=True, max_new_tokens=64)
    pred.constraint = predictor.constraint
    model.calls = 0
    out = pred.predict("Cancel task 42")
    assert out.raw.startswith("<start_function_call>call:") and out.raw.endswith("<start_function_response>")
    assert out.errors == [] and len(out.calls) >= 1
    t = out.timings
    assert t["forced_tokens"] >= 3  # at least "call:" and "}<end_function_call>"
    chosen = t["new_tokens"] - t["forced_tokens"]
    # One forward for the prefill, then one per chosen token except the final (stop) one: forced tokens ride
    # along in the same forward as the choice before them, and chosen tokens that were drafts (the call draft
    # among them: <start_function_call> was fed with the prefill) cost no forward of their own.
    assert t["draft_tokens"] >= 1
    assert t["forward_calls"] == chosen - t["draft_tokens"] == model.calls


def test_constrained_batch_equals_one_at_a_time(predictor: Predictor) -> None:
    model = Noisy(predictor.model, 0, 0.0, {C["<start_function_call>"]: 3.0, C["<escape>"]: 4.0})
    pred = Predictor(model, predictor.tokenizer, predictor.tools, constrained=True, max_new_tokens=40)
    pred.constraint = predictor.constraint
    requests = ["Create a task to fix the login bug", "hi", "Cancel task 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b"]
    single = [pred.predict(r).raw for r in requests]
    assert [p.raw for p in pred.predict_batch(requests, batch_size=3)] == single


def test_words_answer_is_left_to_the_model(predictor: Predictor) -> None:
    model = Noisy(predictor.model, 0, 0.0, {C["<start_function_call>"]: -50.0, C["<end_of_turn>"]: 3.0})
    pred = Predictor(model, predictor.tokenizer, predictor.tools, constrained=True, max_new_tokens=48)
    pred.constraint = predictor.constraint
    out = pred.predict("hi")
    assert out.calls == [] and out.raw.endswith("<end_of_turn>") and out.errors == []


# ----------------------------------------------------------------------------------------------------------------
# Grounded decoding: values only from the request
# ----------------------------------------------------------------------------------------------------------------

UUID_A = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"
UUID_B = "aebc76ec-5b1e-4f7a-9c2d-0e8f1a2b3c4d"


def grounded_accepts(constraint: ToolCallConstraint, tokenizer: Any, request: str, segments: list[str]) -> bool:
    m = constraint.matcher(request)
    return m.consume_tokens(encode_segments(tokenizer, segments)) and m.is_accepting() and not m.is_error()


def test_grounded_ids_only_from_the_request(constraint: ToolCallConstraint, predictor: Predictor) -> None:
    tok, req = predictor.tokenizer, f"cancel {UUID_A} and show me {UUID_B} please"
    assert constraint.grounded
    assert grounded_accepts(constraint, tok, req, calls(Call("cancel_task", {"task_id": UUID_A})))
    assert grounded_accepts(constraint, tok, req, calls(Call("cancel_task", {"task_id": UUID_A}),
                                                        Call("get_task", {"task_id": UUID_B})))
    for wrong in (UUID_A[1:], UUID_A[:-1], UUID_A.replace("7b4d", "7b4e"), "3f1c2a9e-7b4d", "a"):
        assert not grounded_accepts(constraint, tok, req, calls(Call("cancel_task", {"task_id": wrong}))), wrong
        assert accepts(constraint, tok, calls(Call("cancel_task", {"task_id": wrong})))  # the plain grammar takes it


def test_a_request_without_the_required_id_cannot_make_the_call(constraint: ToolCallConstraint,
                                                                 predictor: Predictor) -> None:
    tok, req = predictor.tokenizer, "cancel the task please"
    for name, arg in (("cancel_task", "task_id"), ("get_task", "task_id"), ("get_session_history", "session_id")):
        for value in ("task", "please", UUID_A):
            assert not grounded_accepts(constraint, tok, req, calls(Call(name, {arg: value})))
    assert grounded_accepts(constraint, tok, req, ["Which task? Give me its id.", END_OF_TURN])
    # Calls that need no id stay possible.
    assert grounded_accepts(constraint, tok, req, calls(Call("list_tasks", {})))
    grammar = tool_call_grammar(predictor.tools, CONTROL_TOKEN_IDS, request=req)
    assert "cancel_task" not in grammar and "get_task" not in grammar and "list_tasks" in grammar


def test_grounded_ids_have_the_shape_the_schema_gives(constraint: ToolCallConstraint, predictor: Predictor) -> None:
    """task_id and session_id are "(UUID)", create_task's codebase_id "(8 hex chars) or global": a codebase's id is
    never a task's, nor a task's UUID a codebase's, though both are id-like spans of the request."""
    tok, req = predictor.tokenizer, f"a task in 04891101 to fix login, and cancel {UUID_A}"
    right = calls(Call("create_task", {"title": "fix login", "codebase_id": "04891101"}),
                  Call("cancel_task", {"task_id": UUID_A}))
    assert grounded_accepts(constraint, tok, req, right)
    for wrong in (Call("cancel_task", {"task_id": "04891101"}),
                  Call("create_task", {"title": "fix login", "codebase_id": UUID_A}),
                  Call("get_session_history", {"session_id": "04891101"})):
        assert not grounded_accepts(constraint, tok, req, calls(wrong)), wrong
        assert accepts(constraint, tok, calls(wrong))  # the plain grammar takes it
    # list_tasks' codebase_id takes create_task's shape (its own schema gives none): never a task's UUID
    assert not grounded_accepts(constraint, tok, req, calls(Call("list_tasks", {"codebase_id": UUID_A})))
    assert grounded_accepts(constraint, tok, req, calls(Call("list_tasks", {"codebase_id": "04891101"})))
    # The request's only id is a codebase's: no call that needs a task id can be made.
    grammar = tool_call_grammar(predictor.tools, CONTROL_TOKEN_IDS, request="cancel the tasks of 04891101")
    assert "cancel_task" not in grammar and "get_task" not in grammar and "list_tasks" in grammar


def test_grounded_names_and_text_are_spans_of_the_request(constraint: ToolCallConstraint,
                                                           predictor: Predictor) -> None:
    tok = predictor.tokenizer
    req = "tell the Code Reviewer to look at the upload endpoint"
    ok = Call("send_message", {"agent_name": "code-reviewer", "message": "look at the upload endpoint"})
    assert grounded_accepts(constraint, tok, req, calls(ok))
    for bad in ({"agent_name": "riskiest", "message": "look at the upload endpoint"},
                {"agent_name": "code-reviewer", "message": ",required:"},
                {"agent_name": "code-reviewer", "message": "look at the download endpoint"},
                {"agent_name": "code-reviewer", "message": "ook at the upload"},  # not word-aligned
                {"agent_name": "code-reviewer", "message": " look at"}):  # leading white space
        assert not grounded_accepts(constraint, tok, req, calls(Call("send_message", bad))), bad
    # never a spoken filler at either end, never exactly one of the request's ids
    spoken = "uh create a task to um translate the screens into spanish um"
    for bad in ("um translate the screens into spanish", "translate the screens into spanish um", "um"):
        assert not grounded_accepts(constraint, tok, spoken, calls(Call("create_task", {"title": bad}))), bad
    assert grounded_accepts(constraint, tok, spoken,
                            calls(Call("create_task", {"title": "translate the screens into spanish"})))
    redo = f"kill task {UUID_A} and create a new one to rerun the load test"
    assert not grounded_accepts(constraint, tok, redo, calls(Call("create_task", {"title": UUID_A})))
    assert grounded_accepts(constraint, tok, redo, calls(Call("create_task", {"title": f"task {UUID_A}"})))
    title = Call("create_task", {"title": "rotate the leaked key", "codebase_id": "global"})
    assert not grounded_accepts(constraint, tok, "create a task to rotate the leaked key", calls(title))
    assert grounded_accepts(constraint, tok, "global task: rotate the leaked key", calls(title))


def test_grounded_enum_values_are_the_ones_the_request_states(constraint: ToolCallConstraint,
                                                              predictor: Predictor) -> None:
    """An enum value of a string argument by its name or a synonym (tools.enum_stated), as the data checks read
    it; an optional enum the request does not state is left out of the grammar ("list all the tasks" had become
    status: pending)."""
    tok = predictor.tokenizer
    for req, value in (("which tasks broke overnight?", "failed"), ("show cancelled tasks", "cancelled"),
                       ("queued tasks", "pending"), ("failed or running tasks?", "working")):
        assert grounded_accepts(constraint, tok, req, calls(Call("list_tasks", {"status": value}))), req
    for req, value in (("list all the tasks", "pending"), ("which tasks broke overnight?", "completed"),
                       ("rebuild the tasks list", "failed")):
        assert not grounded_accepts(constraint, tok, req, calls(Call("list_tasks", {"status": value}))), req
        assert accepts(constraint, tok, calls(Call("list_tasks", {"status": value})))  # the plain grammar takes it
    assert grounded_accepts(constraint, tok, "list all the tasks", calls(Call("list_tasks", {})))
    session = f"the tl;dr of session {UUID_A}"
    assert grounded_accepts(constraint, tok, session, calls(Call("playback_session", {"session_id": UUID_A,
                                                                                      "style": "summary"})))
    assert not grounded_accepts(constraint, tok, session, calls(Call("playback_session", {"session_id": UUID_A,
                                                                                          "style": "verbatim"})))


def test_unsaid_enum_is_an_optional_enum_the_request_states_and_the_call_can_still_set() -> None:
    from tether_tune.constrain import skips_enum, unsaid_enum
    from tether_tune.tools import load_tools

    tools, start = load_tools(), "<start_function_call>call:"
    failed = "show me the failed tasks in 04891101"
    assert unsaid_enum(tools, failed, start + "list_tasks") == ("status", ())
    assert unsaid_enum(tools, failed, start + "list_tasks{") == ("status", ())
    assert unsaid_enum(tools, failed, start + "list_tasks{codebase_id:<escape>04891101<escape>") == ("status", ())
    assert unsaid_enum(tools, failed, start + "list_tasks{codebase_id:<escape>0489") is None  # inside a value
    assert unsaid_enum(tools, failed, start + "list_tasks{status:<escape>failed<escape>") is None  # set
    assert unsaid_enum(tools, failed, start + "list_tasks{}<end_function_call>") is None  # the call has ended
    assert unsaid_enum(tools, "list all the tasks", start + "list_tasks") is None  # no status stated
    assert unsaid_enum(tools, failed, "") is None and unsaid_enum(tools, failed, "Sure") is None
    build = "create a task to fix the build"
    assert unsaid_enum(tools, build, start + "create_task{") == (
        "agent_type", ("codebase_id", "description", "priority", "title"))
    assert unsaid_enum(tools, build, start + "create_task{title:<escape>fix the build<escape>") is None  # too late
    summary = f"summarize session {UUID_A}"
    played = start + f"playback_session{{session_id:<escape>{UUID_A}<escape>"
    assert unsaid_enum(tools, summary, played) == ("style", ())
    # a value that spells out "call:" does not start a call
    assert unsaid_enum(tools, failed, start + "send_message{message:<escape>call:list_tasks") is None
    # passing by: closing the call, or starting a later key; never the key itself, a comma or '{'
    assert skips_enum("}", "status", ()) and skips_enum("{}", "status", ())
    assert skips_enum("title", "agent_type", ("title",)) and skips_enum("desc", "agent_type", ("description",))
    assert not skips_enum("agent", "agent_type", ("title",)) and not skips_enum(",", "status", ())
    assert not skips_enum("{", "status", ()) and not skips_enum("code", "status", ())


def test_grounding_spans() -> None:
    from tether_tune.constrain import id_spans, name_spans

    assert id_spans(f"see {UUID_A}, codebase 3734715f; not word12 or 12345 or hello-world") == [UUID_A, "3734715f", "word12"]
    assert "code-reviewer" in name_spans("ask the Code Reviewer") and "ask-the-code" in name_spans("ask the Code Reviewer")
    # an id is never a name, nor part of one; a name with a number in it still is
    spans = name_spans(f"Task for 6a127c6c: tell Worker-2 about {UUID_A.upper()}")
    assert "worker-2" in spans and "tell-worker-2" in spans and "for" in spans
    assert not [s for s in spans if "6a127c6c" in s or UUID_A in s], spans


def test_grounded_decoding_forces_the_only_id(predictor: Predictor) -> None:
    """The model says get_task; with one UUID in the request the grammar writes it without asking the model."""
    from test_predict import scripted, steered_predictor

    request = f"what's the status of {UUID_A}"
    script = encode_segments(predictor.tokenizer, calls(Call("get_task", {"task_id": UUID_A})))
    runs = {}
    for grounded in (False, True):
        pred, model = steered_predictor(predictor, request, scripted(script), constrained=True, grounded=grounded,
                                        max_new_tokens=len(script) + 4, speculate=0)
        runs[grounded] = (pred.predict(request), model.calls)
    (plain, plain_calls), (grounded, grounded_calls) = runs[False], runs[True]
    assert grounded.calls == plain.calls == [Call("get_task", {"task_id": UUID_A})]
    uuid_tokens = len(encode_segments(predictor.tokenizer, [UUID_A]))
    assert grounded.timings["forced_tokens"] >= plain.timings["forced_tokens"] + uuid_tokens
    assert grounded_calls <= plain_calls - uuid_tokens + 1


def _value_at(tokenizer: Any, call: Call) -> int:
    """The token position of a one-argument call's value in its rendering."""
    segments = render_call_segments(call)
    return len(encode_segments(tokenizer, segments[: segments.index(ESC) + 1]))


@pytest.mark.parametrize("grounded", [False, True])
def test_forced_marks_the_tokens_decoding_appends_without_a_choice(predictor: Predictor, grounded: bool) -> None:
    """``ToolCallConstraint.forced`` (what ``--skip_forced`` leaves out of the loss) counts exactly the tokens
    decoding appended without asking the model, for the same answer under the same grammar."""
    from test_predict import scripted, steered_predictor

    request = f"cancel {UUID_A} and tell the code reviewer to look at the upload endpoint"
    answer = calls(Call("cancel_task", {"task_id": UUID_A}),
                   Call("send_message", {"agent_name": "code-reviewer", "message": "look at the upload endpoint"}))
    script = encode_segments(predictor.tokenizer, answer)
    pred, _ = steered_predictor(predictor, request, scripted(script), constrained=True, grounded=grounded,
                                max_new_tokens=len(script) + 4, speculate=0)
    out = pred.predict(request)
    assert out.raw == decode(predictor.tokenizer, script)
    c = pred.constraint
    assert c is not None and c.grounded == grounded
    forced = c.forced(request, script)
    assert len(forced) == len(script) and not forced[0]  # a call or words: always the model's choice
    assert sum(forced) == out.timings["forced_tokens"] > 0
    # Grounded, the only UUID of the request is written by the grammar after its first token.
    uuid_at = _value_at(predictor.tokenizer, Call("cancel_task", {"task_id": UUID_A}))
    n_uuid = len(encode_segments(predictor.tokenizer, [UUID_A]))
    assert all(forced[uuid_at + 1 : uuid_at + n_uuid]) == grounded


def test_forced_leaves_free_what_the_grammar_rejects(constraint: ToolCallConstraint, predictor: Predictor) -> None:
    """From a token the grammar refuses on (a value the request does not say), every token is free."""
    tok = predictor.tokenizer
    answer = encode_segments(tok, calls(Call("get_task", {"task_id": UUID_B})))
    forced = constraint.forced(f"show me {UUID_A}", answer)
    assert len(forced) == len(answer) and any(forced)
    first_uuid = _value_at(tok, Call("get_task", {"task_id": UUID_B}))
    assert not any(forced[first_uuid:])
    assert constraint.forced("hi", encode_segments(tok, ["Hello there.", END_OF_TURN])) == [False] * len(
        encode_segments(tok, ["Hello there.", END_OF_TURN]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), noise=st.sampled_from([1.0, 5.0]),
       call_boost=st.floats(0, 15), escape_boost=st.floats(-5, 10))
def test_grounded_output_only_says_what_the_request_says(predictor: Predictor, seed: int, noise: float,
                                                         call_boost: float, escape_boost: float) -> None:
    """Whatever the (noisy) model prefers, every id, name and text value comes from its request, and requests
    without an id never get a call that needs one."""
    from tether_tune.constrain import id_spans, name_spans
    from tether_tune.tools import grounding_kind, tool_map

    model = Noisy(predictor.model, seed, noise, {C["<start_function_call>"]: call_boost, C["<escape>"]: escape_boost})
    pred = Predictor(model, predictor.tokenizer, predictor.tools, constrained=True, max_new_tokens=64)
    pred.constraint = predictor.constraint
    requests = [f"cancel {UUID_A} and tell the docs writer to update the changelog", "cancel the task",
                f"global task: rotate the leaked key in 3734715f, priority 7", "show me that session", "hi"]
    props = {n: (fn.get("parameters") or {}).get("properties") or {} for n, fn in tool_map(pred.tools).items()}
    needs_id = {n for n, fn in tool_map(pred.tools).items()
                if any(k.endswith("_id") for k in (fn.get("parameters") or {}).get("required") or [])}
    for request, out in zip(requests, pred.predict_batch(requests, batch_size=5)):
        for call in out.calls:
            if not id_spans(request):
                assert call.name not in needs_id, (request, call)
            for key, value in call.arguments.items():
                kind = grounding_kind(key, props[call.name][key])
                if kind == "id":
                    assert value in id_spans(request) or (value == "global" and "global" in request), (request, call)
                elif kind == "name":
                    assert value in name_spans(request), (request, call)
                elif kind == "text":
                    assert value in request and value.strip() == value and value, (request, call)


def _choice(predictor: Predictor, choice: str, parallel: bool = True) -> ToolCallConstraint:
    base = predictor.constraint
    assert base is not None
    return ToolCallConstraint(predictor.tokenizer, predictor.tools, grounded=True, tool_choice=choice,
                              parallel=parallel, lltokenizer=base.lltokenizer)


def test_tool_choice_none_allows_words_only(predictor: Predictor) -> None:
    c, tok = _choice(predictor, "none"), predictor.tokenizer
    first = c.allowed([c.matcher("cancel " + UUID_A)], len(tok))[0]
    assert not first[C["<start_function_call>"]] and first[C["<end_of_turn>"]]
    assert accepts(c, tok, ["Sure.", END_OF_TURN])
    assert not accepts(c, tok, calls(Call("list_tasks", {})))


def test_tool_choice_required_and_named(predictor: Predictor) -> None:
    tok = predictor.tokenizer
    required, named = _choice(predictor, "required"), _choice(predictor, "cancel_task")
    for c in (required, named):
        first = c.allowed([c.matcher("cancel " + UUID_A)], len(tok))[0]
        assert first.nonzero().flatten().tolist() == [C["<start_function_call>"]]
        assert not accepts(c, tok, ["Sure.", END_OF_TURN])
    assert accepts(required, tok, calls(Call("list_tasks", {}), Call("cancel_task", {"task_id": UUID_A})))
    assert accepts(named, tok, calls(Call("cancel_task", {"task_id": UUID_A}), Call("cancel_task", {"task_id": UUID_B})))
    assert not accepts(named, tok, calls(Call("list_tasks", {})))
    assert grounded_accepts(named, tok, f"cancel {UUID_A}", calls(Call("cancel_task", {"task_id": UUID_A})))
    # A required call the request cannot ground falls back to the schema alone: the caller asked for a call.
    assert grounded_accepts(named, tok, "cancel it", calls(Call("cancel_task", {"task_id": UUID_A})))


def test_parallel_false_allows_one_call(predictor: Predictor) -> None:
    c, tok = _choice(predictor, "auto", parallel=False), predictor.tokenizer
    assert accepts(c, tok, calls(Call("list_tasks", {})))
    assert not accepts(c, tok, calls(Call("list_tasks", {}), Call("discover_agents", {})))


def test_unknown_tool_choice_is_refused(tools: list[dict]) -> None:
    with pytest.raises(ValueError, match="launch_rocket"):
        tool_call_grammar(tools, CONTROL_TOKEN_IDS, tool_choice="launch_rocket")
