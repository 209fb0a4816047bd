"""The calibrated choice between a call and words: the bias rule on hand-made margins, the margin measured on the
tiny model, the bias changing only the first token's choice, and `tether-tune calibrate` storing it in a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch

from tether_tune import cli
from tether_tune.calibrate import (
    MIN_OPEN_DECISIONS,
    START_RESPONSE_ID,
    call_margins,
    choose_call_bias,
    choose_call_biases,
    choose_next_call_biases,
    gold_margins,
    next_call_margins,
    passing_margins,
    run_biases,
)
from tether_tune.constrain import asked_tools, left_open, open_ids, skips_tools, unspent_cues
from tether_tune.data import Example
from tether_tune.decoding import END_CALL_ID, START_CALL_ID, Biases, decode_greedy, first_token_logits, repeated_call
from tether_tune.format import Call
from tether_tune.predict import Predictor, read_prediction

REQUESTS = ["cancel task 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b please", "thanks, that's all", "list the failed tasks",
            "what's the weather like"]


def test_the_bias_makes_the_most_decisions_right_closest_to_zero():
    # call iff margin + bias > 0. Calls have margins 2, 1, -1 and words -3, 0.5: at 0, 3 of 5 are right; a bias
    # just above +1 wins the -1 call, one just below -0.5 wins the 0.5 words (4 right each): the smaller move wins.
    margins = [2.0, 1.0, -1.0, -3.0, 0.5]
    is_call = [True, True, True, False, False]
    bias, stats = choose_call_bias(margins, is_call, rule="nearest")
    assert stats["after"]["right"] == 4 and stats["before"]["right"] == 3
    assert bias == pytest.approx(-0.5, abs=0.01) and bias < -0.5
    # already perfect: no move
    bias, stats = choose_call_bias([3.0, -2.0], [True, False], rule="nearest")
    assert bias == 0.0 and stats["after"]["right"] == 2
    # over-calling (every margin positive, words requests too): the bias goes negative
    bias, stats = choose_call_bias([4.0, 3.0, 1.0, 0.5], [True, True, False, False], rule="nearest")
    assert -3.0 < bias < -1.0 and stats["after"]["right"] == 4
    # requests where no call is possible (None) are left out
    bias, stats = choose_call_bias([None, 2.0], [True, True])
    assert stats["examples"] == 1 and stats["no_call_possible"] == 1


def test_the_middle_rule_puts_the_bias_halfway_between_the_crossings_around_it():
    # The same decisions as above: 4 right for b in (1, 3) (the -1 call won, the -3 words kept) and in (-1, -0.5)
    # (the 0.5 words won, the 1.0 call kept). Nearest: just below -0.5; middle: the middle of the best run nearest
    # 0, -0.75.
    margins, is_call = [2.0, 1.0, -1.0, -3.0, 0.5], [True, True, True, False, False]
    bias, stats = choose_call_bias(margins, is_call)
    assert bias == pytest.approx(-0.75) and stats["after"]["right"] == 4
    # Every decision is "another call" (an id left open): nearest stops just past the last crossing, middle goes
    # halfway to the limit.
    nearest, _ = choose_call_bias([-1.0, -2.0, 0.5], [True, True, True], rule="nearest")
    middle, _ = choose_call_bias([-1.0, -2.0, 0.5], [True, True, True])  # the default
    assert nearest == pytest.approx(2.0, abs=0.01) and middle == pytest.approx(6.0)
    with pytest.raises(ValueError, match="bias rule"):
        choose_call_bias(margins, is_call, rule="widest")


def test_the_bias_keeps_words_answers_at_least_90_percent_right():
    # A call request with margin 2 and one with -1; three words requests at -0.5. At 0, 4 of 5 are right, but one
    # of the 4 words answers was a call request (precision 75%). Only biases with no words answers reach 90%:
    # just above +1, which keeps 2 of 5 right. Right decisions are not bought with words where a call was due.
    margins, is_call = [2.0, -1.0, -0.5, -0.5, -0.5], [True, True, False, False, False]
    plain, stats = choose_call_bias(margins, is_call, rule="nearest")
    assert plain == 0.0 and stats["after"]["right"] == 4 and stats["after"]["words_precision"] == 0.75
    bias, stats = choose_call_bias(margins, is_call, min_words_precision=0.9, rule="nearest")
    assert 1 < bias < 1.01 and stats["after"]["right"] == 2 and stats["after"]["words_precision"] is None
    assert stats["before"]["words_precision"] == 0.75 and stats["min_words_precision"] == 0.9
    # the floor met at 0: the plain rule's choice
    assert choose_call_bias([3.0, -2.0], [True, False], min_words_precision=0.9, rule="nearest")[0] == 0.0
    # requests where no call is possible are words answers at every bias; where no bias reaches the floor, the
    # highest precision reachable (1 of 3, between +1 and +2) is chosen
    bias, stats = choose_call_bias([None, None, 3.0, -2.0, -1.0], [True, True, True, False, True],
                                   min_words_precision=0.9, rule="nearest")
    assert stats["before"]["words_precision"] == pytest.approx(1 / 4)
    assert 1 < bias < 2 and stats["after"]["words_precision"] == pytest.approx(1 / 3)
    # the middle rule keeps the floor too: the run past the last crossing (+1), halfway to the limit
    assert choose_call_bias(margins, is_call, min_words_precision=0.9)[0] == pytest.approx(5.5)


def test_requests_that_ask_for_something_get_their_own_call_bias():
    """Requests with an id or a tool's words (open) are calls due at margins -1.3..-0.4, with one words request at
    -3; the others are words due at -0.4..-0.1, with one call at 2. One bias cannot serve both sides (the open calls
    need +1.3, the others' words need less than +0.1); one per side gets all right but none. With too few on one
    side, one bias for all."""
    n = MIN_OPEN_DECISIONS
    open_m, open_c = [-1.3 + 0.1 * i for i in range(n - 1)] + [-3.0], [True] * (n - 1) + [False]
    rest_m, rest_c = [-0.4 + 0.03 * i for i in range(n)] + [2.0], [False] * n + [True]
    margins, is_call = open_m + rest_m, open_c + rest_c
    open_ = [True] * n + [False] * (n + 1)
    one, one_stats = choose_call_bias(margins, is_call, min_words_precision=0.9)
    bias, open_bias, stats = choose_call_biases(margins, is_call, open_)
    assert open_bias is not None and open_bias > 1.3 and bias < 0.1
    assert stats["after"]["right"] == len(margins) > one_stats["after"]["right"]
    assert stats["open"]["bias"] == open_bias and stats["nothing_open"]["bias"] == bias
    assert stats["before"] == one_stats["before"] and stats["after"]["words_precision"] == 1.0
    few = choose_call_biases(margins[: n - 1] + rest_m, is_call[: n - 1] + rest_c, open_[: n - 1] + open_[n:])
    assert few[1] is None and few[0] == choose_call_bias(margins[: n - 1] + rest_m, is_call[: n - 1] + rest_c,
                                                         min_words_precision=0.9)[0]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path, tools: list[dict]) -> Predictor:
    return Predictor.load(str(tiny_model_dir), tools=tools, constrained=True, max_new_tokens=12)


def test_the_margin_is_the_call_score_minus_the_best_other_allowed(predictor: Predictor):
    margins = call_margins(predictor, REQUESTS)
    n = len(predictor.prefix.ids)
    logits = first_token_logits(predictor.model, predictor.prefix, [predictor.encode(r)[n:] for r in REQUESTS])
    allowed = predictor.constraint.allowed([predictor.constraint.matcher(r) for r in REQUESTS], logits.shape[-1])
    for m, row, ok, r in zip(margins, logits, allowed, REQUESTS):
        if m is None:
            assert not ok[START_CALL_ID]
            continue
        others = row.masked_fill(~ok, float("-inf"))
        others[START_CALL_ID] = float("-inf")
        assert m == pytest.approx(float(row[START_CALL_ID] - others.max()), abs=1e-4), r
    # batched margins equal one-at-a-time margins
    assert margins == pytest.approx([call_margins(predictor, [r])[0] for r in REQUESTS], abs=1e-4)


@pytest.mark.parametrize("sign", [+1, -1])
def test_a_bias_past_the_margin_flips_the_first_token_and_nothing_else(predictor: Predictor, sign: int):
    request = REQUESTS[0]
    (m,) = call_margins(predictor, [request])
    assert m is not None
    plain = predictor.predict(request)
    starts_with_call = plain.raw.startswith("<start_function_call>")
    assert starts_with_call == (m > 0)
    bias = -m + sign * 0.5  # calls iff m + bias > 0, i.e. iff sign > 0
    biased = Predictor(predictor.model, predictor.tokenizer, predictor.tools, biases=Biases(call=bias),
                       max_new_tokens=12)
    out = biased.predict(request).raw
    assert out.startswith("<start_function_call>") == (sign > 0)
    if (sign > 0) == starts_with_call:  # no flip: the very same output
        assert out == plain.raw


TWO = Example("cancel 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b and 0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
              [Call("cancel_task", {"task_id": "3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b"}),
               Call("cancel_task", {"task_id": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"})])
ONE = Example("list the failed tasks", [Call("list_tasks", {"status": "failed"})])


def test_next_call_margin_is_call_minus_end_after_each_gold_call(predictor: Predictor):
    """One margin per gold call, read after its <end_function_call> with the gold answer teacher-forced: the call
    score minus the <start_function_response> score of a plain forward over the whole sequence."""
    from tether_tune.encode import encode_example

    margins, more, open_ = next_call_margins(predictor, [TWO, Example("hi", text="Hello!"), ONE])
    assert more == [True, False, False]  # two calls then one: another call, the end, the end
    assert open_ == [True, False, False]  # after TWO's first call its second id is still unused
    direct = []
    for ex in (TWO, ONE):
        enc = encode_example(predictor.tokenizer, ex, predictor.tools)
        with torch.no_grad():
            logits = predictor.model(torch.tensor([enc.input_ids])).logits[0].float()
        direct += [float(logits[t, START_CALL_ID] - logits[t, START_RESPONSE_ID])
                   for t, tok in enumerate(enc.input_ids) if tok == END_CALL_ID and enc.labels[t] != -100]
    assert margins == pytest.approx(direct, abs=1e-3)
    assert margins == pytest.approx(next_call_margins(predictor, [TWO])[0] + next_call_margins(predictor, [ONE])[0], abs=1e-3)


def test_open_ids_are_the_request_ids_no_call_has_used():
    request = "cancel 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b and tell builder that task-42a is done"
    assert open_ids(request, "") == ["3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b", "task-42a"]
    said = "<start_function_call>call:cancel_task{task_id:<escape>3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b<escape>}"
    assert open_ids(request, said) == ["task-42a"]
    # an id inside a message is used too: no further call is owed for it
    assert open_ids(request, said + "call:send_message{message:<escape>task-42a is done<escape>}") == []
    assert open_ids("list the failed tasks", "") == []  # plain words are never ids



def _calls_text(*calls: tuple[str, dict[str, str]]) -> str:
    """A model turn's calls as text, the way decoding spells what it has said."""
    from tether_tune.format import Call, render_calls

    return render_calls([Call(name, args) for name, args in calls]).replace("<start_function_response>", "")


def test_unspent_cues_are_tools_asked_for_in_more_clauses_than_they_have_calls():
    request = "Cancel 4e4dce00-100d-408c-a0ec-ea065bfbe637 and tell the build-bot the hotfix was cancelled"
    cancel = ("cancel_task", {"task_id": "4e4dce00-100d-408c-a0ec-ea065bfbe637"})
    assert unspent_cues(request, "") == ["send_message", "cancel_task"]
    assert unspent_cues(request, _calls_text(cancel)) == ["send_message"]
    told = ("send_message", {"agent_name": "build-bot", "message": "the hotfix was cancelled"})
    assert unspent_cues(request, _calls_text(cancel, told)) == []
    # the same tool asked for twice needs two calls; words a value took ("cancel the deploy") ask for nothing
    twice = "Tell frontend-dev the API is up, and tell mobile-dev the same thing"
    first = ("send_message", {"agent_name": "frontend-dev", "message": "the API is up"})
    assert unspent_cues(twice, _calls_text(first)) == ["send_message"]
    second = ("send_message", {"agent_name": "mobile-dev", "message": "same"})
    assert unspent_cues(twice, _calls_text(first, second)) == []
    relay = "tell the builder to cancel the deploy"
    relayed = ("send_message", {"agent_name": "builder", "message": "cancel the deploy"})
    assert unspent_cues(relay, _calls_text(relayed)) == []
    # "list" of messages or of agents is not list_tasks
    for messages in ("I need the raw message list", "list the messages of session 1", "list all the agents"):
        assert "list_tasks" not in unspent_cues(messages, ""), messages
    assert unspent_cues("list the failed tasks", "") == ["list_tasks"]
    # one clause asking in two ways is one ask; "tell me" asks for nothing to be sent
    assert unspent_cues("list all the tasks", _calls_text(("list_tasks", {}))) == []
    assert unspent_cues("tell me the status of 4e4dce00-100d-408c-a0ec-ea065bfbe637",
                        _calls_text(("get_task", {"task_id": "4e4dce00-100d-408c-a0ec-ea065bfbe637"}))) == []


def test_left_open_is_an_unused_id_or_an_unspent_cue():
    a, b = "3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b", "4e4dce00-100d-408c-a0ec-ea065bfbe637"
    cancel_a = _calls_text(("cancel_task", {"task_id": a}))
    assert left_open(f"cancel {a} and {b}", cancel_a)  # an id
    assert left_open(f"cancel {a} and ping the release manager", cancel_a)  # a tool asked for
    assert not left_open(f"cancel {a}, it is running against prod by mistake", cancel_a)


def test_asked_tools_stand_at_a_tool_name_while_the_request_asks_for_a_tool_no_call_has_made(tools: list[dict]):
    a, b = "3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b", "4e4dce00-100d-408c-a0ec-ea065bfbe637"
    request = f"How far along is task {a}? And pull up the chat log for session {b}"
    start = "<start_function_call>call:"
    got = _calls_text(("get_task", {"task_id": a}))
    assert asked_tools(tools, request, got + start) == ("", ("get_session_history",))
    assert asked_tools(tools, request, got + start + "get_") == ("get_", ("get_session_history",))
    assert asked_tools(tools, request, got) is None  # between calls, not in a name
    assert asked_tools(tools, request, got + start + "get_session_history{") is None  # the name is said
    done = _calls_text(("get_task", {"task_id": a}), ("get_session_history", {"session_id": b}))
    assert asked_tools(tools, request, done + start) is None  # every tool asked for has its call
    assert asked_tools(tools, "give me the gist of session " + b, start) == ("", ("playback_session",))
    others = [t for t in tools if t.get("function", t)["name"] != "playback_session"]
    assert asked_tools(others, "the gist of " + b, start) is None  # a tool not offered is not asked for
    # a token leads away when the name can no longer become a tool asked for
    asked = ("get_session_history",)
    assert not skips_tools("get", "", asked) and not skips_tools("_session", "get", asked)
    assert skips_tools("_task", "get", asked) and skips_tools("cancel", "", asked)
    assert not skips_tools("history{", "get_session_", asked) and skips_tools("{", "get", asked)

def test_decisions_with_an_id_left_open_get_their_own_bias():
    """Open decisions (another call due, margins -1.3..-0.4) and the others (the end due, margins -2..-0.2): one
    bias cannot serve both, two do; with too few open decisions, one bias for all."""
    n = MIN_OPEN_DECISIONS
    open_m = [-1.3 + 0.1 * i for i in range(n)]
    rest_m, rest_more = [-0.4, -0.3, -0.2, -2.0], [False, False, False, False]
    bias, open_bias, stats = choose_next_call_biases(open_m + rest_m, [True] * n + rest_more,
                                                     [True] * n + [False] * 4)
    # Every open decision another call: from the last crossing (+1.3) halfway to the limit; the rest keep ending:
    # from the first crossing (+0.2) halfway down to -10.
    assert open_bias == pytest.approx(5.65) and bias == pytest.approx(-4.9)
    assert stats["after"]["right"] == n + 4 and stats["open"]["decisions"] == n
    assert stats["decisions"] == n + 4 and stats["nothing_open"]["after"]["right"] == 4
    assert choose_call_bias(open_m + rest_m, [True] * n + rest_more)[1]["after"]["right"] < n + 4  # one bias: fewer
    few = choose_next_call_biases(open_m[: n - 1] + rest_m, [True] * (n - 1) + rest_more,
                                  [True] * (n - 1) + [False] * 4)
    assert few[1] is None and few[0] == choose_call_bias(open_m[: n - 1] + rest_m, [True] * (n - 1) + rest_more)[0]


@pytest.mark.parametrize("sign", [+1, -1])
def test_a_next_call_bias_past_the_margin_decides_another_call(predictor: Predictor, sign: int):
    """Decoding with the gold first call's margin crossed: a second call is started (sign +1) or the calls end."""
    plain = Predictor(predictor.model, predictor.tokenizer, predictor.tools, biases=Biases(call=50.0),
                      max_new_tokens=60).predict(ONE.request).raw
    assert "<end_function_call>" in plain  # forced into a call; the grammar closes it within the limit
    prefix = plain[: plain.index("<end_function_call>") + len("<end_function_call>")]
    big = 50.0 * sign
    biased = Predictor(predictor.model, predictor.tokenizer, predictor.tools,
                       biases=Biases(call=50.0, next_call=big), max_new_tokens=60)
    out = biased.predict(ONE.request).raw
    assert out.startswith(prefix)
    assert out[len(prefix):].startswith("<start_function_call>" if sign > 0 else "<start_function_response>")


def test_the_open_bias_is_the_bias_while_the_request_asks_for_more(predictor: Predictor):
    """Right after a call that cancelled A: "cancel A and B" still has B open (open_bias), "cancel A" has
    nothing open (next_call_bias); "cancel A and tell the builder" asks for a message no call has sent (open_bias);
    without an open_bias, next_call_bias after every call."""
    from tether_tune.decoding import _Greedy
    from tether_tune.format import render_calls
    from tether_tune.tokenizer import decode

    a = TWO.calls[0].arguments["task_id"]
    said = predictor.tokenizer.encode(render_calls(TWO.calls[:1]).replace("<start_function_response>", ""),
                                      add_special_tokens=False)
    assert said[-1] == END_CALL_ID
    g = _Greedy([[1], [1]], predictor.stop_ids, 10, None, 0, None, [TWO.request, f"cancel {a}"],
                Biases(next_call=-50.0, open=50.0), decode=lambda ids: decode(predictor.tokenizer, ids))
    g.out = [list(said), list(said)]
    assert (g.after_call_bias(0), g.after_call_bias(1)) == (50.0, -50.0)
    g.open_in = [f"cancel {a} and tell the builder it is off", f"cancel {a}, it was a mistake"]
    assert (g.after_call_bias(0), g.after_call_bias(1)) == (50.0, -50.0)  # a tool asked for, not called yet
    g.biases = g.biases._replace(open=None)
    assert (g.after_call_bias(0), g.after_call_bias(1)) == (-50.0, -50.0)


@pytest.mark.parametrize("speculate", [0, 8])
def test_an_open_id_decides_another_call_in_decoding(predictor: Predictor, tools: list[dict], speculate: int):
    """Cancel calls only (tool_choice), "another call?" decided no (next_call_bias -50) except while an id is open
    (open_bias +50). "cancel A and B": without open_bias one call and the end; with it, a second call is
    decoded (the tiny model cancels A again; the repeat is dropped, so only the extra forwards show it). "cancel A":
    the same decoding either way."""
    from tether_tune.constrain import ToolCallConstraint
    from tether_tune.tokenizer import decode

    cancel = ToolCallConstraint(predictor.tokenizer, tools, grounded=True, tool_choice="cancel_task")

    def run(request: str, open_bias: float | None) -> tuple[list[int], float]:
        suffix = predictor.suffix(request)
        (d,) = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 200, cancel,
                             predictor.pad_id, speculate, [suffix], [request],
                             Biases(next_call=-50.0, open=open_bias),
                             decode=lambda ids: decode(predictor.tokenizer, ids))
        assert d.ids[-1] == START_RESPONSE_ID
        return d.ids, d.stats["forward_calls"]

    (plain, plain_calls), (opened, opened_calls) = run(TWO.request, None), run(TWO.request, 50.0)
    assert plain.count(START_CALL_ID) == 1 and opened_calls > plain_calls
    a = TWO.calls[0].arguments["task_id"]
    assert run(f"cancel {a}", 50.0) == run(f"cancel {a}", None)


def test_run_biases_are_the_given_ones_else_the_runs():
    """What prediction and serving decode with: a given bias wins; a given next_call_bias applies after every call
    (the run's open_bias is not used); a plain model (no run info) gets 0 and no open_bias."""
    from tether_tune.rundir import RunInfo

    info = RunInfo(base_model="m", call_bias=-1.5, next_call_bias=0.6, open_bias=2.2, enum_bias=4.0, tool_bias=3.0,
                   call_open_bias=0.5)
    assert run_biases(info) == Biases(call=-1.5, next_call=0.6, open=2.2, enum=4.0, tool=3.0, call_open=0.5)
    assert run_biases(info, call_bias=0.0) == (0.0, 0.6, 2.2, 4.0, 3.0, None)  # a given call bias: every request
    assert run_biases(info, next_call_bias=0.0) == (-1.5, 0.0, None, 4.0, 3.0, 0.5)
    assert run_biases(info, enum_bias=0.0) == (-1.5, 0.6, 2.2, 0.0, 3.0, 0.5)
    assert run_biases(info, tool_bias=0.0) == (-1.5, 0.6, 2.2, 4.0, 0.0, 0.5)
    assert run_biases(RunInfo(base_model="m")) == Biases()
    assert run_biases(None, 1.0) == (1.0, 0.0, None, 0.0, 0.0, None)


def test_repeated_call_finds_a_call_made_twice_token_for_token():
    S, E = START_CALL_ID, END_CALL_ID
    assert repeated_call([S, 1, 2, E, S, 1, 2, E]) == 4
    assert repeated_call([S, 1, 2, E, S, 7, E, S, 1, 2, E]) == 7  # any earlier call, not only the last
    assert repeated_call([S, 1, 2, E, S, 1, 3, E]) is None  # another argument: a different call
    assert repeated_call([S, 1, E, S, 1, 2, E]) is None
    assert repeated_call([S, 1, 2, E]) is None


@pytest.mark.parametrize("speculate", [0, 8])
def test_a_repeated_call_ends_the_calls_and_is_never_streamed(tiny_model_dir: Path, tools: list[dict],
                                                             speculate: int):
    """Every "another call?" decided yes (next_call_bias +50): the tiny model, grounded in a request with one id,
    calls until one call repeats an earlier one (without the rule it runs to the limit); that call is dropped,
    <start_function_response> ends the turn, and streaming got exactly the final tokens."""
    grounded = Predictor.load(str(tiny_model_dir), tools=tools, grounded=True)
    request = "cancel 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b now"
    seen: list[int] = []
    (d,) = decode_greedy(grounded.model, grounded.prefix, [grounded.suffix(request)], grounded.stop_ids, 400,
                         grounded.constraint, grounded.pad_id, speculate, [grounded.suffix(request)], [request],
                         Biases(call=50.0, next_call=50.0), on_tokens=lambda row, tokens: seen.extend(tokens))
    assert d.ids[-1] == START_RESPONSE_ID and len(d.ids) < 400  # ended by the repeat, not by the limit
    calls = [d.ids[i : d.ids.index(END_CALL_ID, i) + 1] for i, t in enumerate(d.ids) if t == START_CALL_ID]
    assert len(calls) >= 2 and len({tuple(c) for c in calls}) == len(calls)
    assert sum(len(c) for c in calls) + 1 == len(d.ids)  # calls back to back, then the end
    assert seen == d.ids


def test_calibrate_command_stores_the_bias_and_prediction_applies_it(tiny_model_dir: Path, tools, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    run = tmp_path / "run"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(run)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run)
    (run / "run_info.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "val_loss_per_epoch": [1.0]}))
    val = tmp_path / "val.jsonl"
    rows = [{"input": REQUESTS[0], "output": "<start_function_call>call:cancel_task{task_id:<escape>"
             "3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b<escape>}<end_function_call>"},
            {"input": REQUESTS[1], "output": "You're welcome!"}, {"input": REQUESTS[3], "output": "I can't check that."}]
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["calibrate", "--model_path", str(run), "--val_file", str(val)]) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert isinstance(info["call_bias"], float) and info["call_calibration"]["examples"] == 3
    assert info["val_loss_per_epoch"] == [1.0]  # the rest of run_info is kept
    cal = info["call_calibration"]  # more right decisions, unless the words answers at 0 were below the floor
    assert cal["after"]["right"] >= cal["before"]["right"] or cal["before"]["words_precision"] < cal["min_words_precision"]
    assert Predictor.load(str(run)).biases.call == info["call_bias"]
    assert Predictor.load(str(run), call_bias=0.0).biases.call == 0.0
    assert isinstance(info["next_call_bias"], float) and info["next_call_calibration"]["decisions"] == 1
    assert "enum_bias" not in info and info["enum_calibration"]["decisions"] == 0  # no enum stated in a call's request
    # "cancel task …": at the tool's name, cancel_task or another tool the grammar allows
    assert isinstance(info["tool_bias"], float) and info["tool_calibration"]["decisions"] >= 1
    assert Predictor.load(str(run)).biases.tool == info["tool_bias"]
    assert Predictor.load(str(run)).biases.next_call == info["next_call_bias"]
    # several files: one calibration on all their examples (a gold-format file with acceptable values too)
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"id": "d1", "query": REQUESTS[1], "calls": [], "text": None, "tags": []}) + "\n")
    assert cli.main(["calibrate", "--model_path", str(run), "--val_file", str(val), str(dev)]) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["call_calibration"]["examples"] == 4 and info["call_calibration"]["val_file"] == f"{val} + {dev}"
    # a plain model (no run directory to store the bias in) is refused with a clear message
    with pytest.raises(SystemExit) as exit_:
        cli.main(["calibrate", "--model_path", str(tiny_model_dir), "--val_file", str(val)])
    assert exit_.value.code == 2


# --------------------------------------------------------------------------------------------------------------
# The enum bias: an optional enum argument the request states, passed by
# --------------------------------------------------------------------------------------------------------------

FAILED = Example("show me the failed tasks", [Call("list_tasks", {"status": "failed"})])
FAILED_IN = Example("failed tasks in 04891101", [Call("list_tasks", {"codebase_id": "04891101", "status": "failed"})])
BUILD = Example("create a task to fix the build", [Call("create_task", {"title": "fix the build"})])


def enum_margins(predictor: Predictor, examples: list[Example]) -> tuple[list[float], list[bool]]:
    return passing_margins(predictor, examples, ("enum",))["enum"]


def _said(predictor: Predictor, ex: Example) -> list[int]:
    from tether_tune.encode import IGNORE_INDEX, encode_example

    enc = encode_example(predictor.tokenizer, ex, predictor.tools)
    return [t for t, y in zip(enc.input_ids, enc.labels) if y != IGNORE_INDEX]


def _direct_margins(predictor: Predictor, examples: Sequence[Example],
                    test_at: Callable[[str, str], Callable[[str], bool] | None]) -> list[float]:
    """A weighed choice's margins read from one plain forward per gold answer (no cache, no batching): wherever
    ``test_at(request, said)`` gives a test of a token's text, the best allowed token it keeps minus the best
    allowed token it passes by."""
    from tether_tune.tokenizer import decode

    direct = []
    for ex in examples:
        said = _said(predictor, ex)
        prompt = predictor.encode(ex.request)
        with torch.no_grad():
            logits = predictor.model(torch.tensor([prompt + said])).logits[0].float()
        matcher = predictor.constraint.matcher(ex.request)
        for i, tok in enumerate(said):
            test = test_at(ex.request, decode(predictor.tokenizer, said[:i])) if i else None
            if test is not None:
                ids = predictor.constraint.allowed([matcher], logits.shape[-1])[0].nonzero()[:, 0].tolist()
                skip = [t for t in ids if test(decode(predictor.tokenizer, [t]))]
                stay = [t for t in ids if t not in skip]
                if skip and stay:
                    row = logits[len(prompt) + i - 1]
                    direct.append(float(row[stay].max() - row[skip].max()))
            assert matcher.consume_token(tok)
    return direct


def test_enum_margin_is_the_best_kept_minus_the_best_passed_by_at_each_decision(predictor: Predictor):
    """Teacher-forced, under the grounded grammar: list_tasks for "failed" decides after its name ('{' keeps the
    status possible, '{}' passes it by); with a codebase first, after the codebase's value (',' or '}'); a
    create_task for "fix the build" decides at '{' (agent_type, or a later key: the gold passes it by). Each margin
    is the best allowed keeping token minus the best allowed passing one, read from one plain forward."""
    from tether_tune.constrain import skips_enum, unsaid_enum

    examples = [FAILED, FAILED_IN, BUILD, Example("hi", text="Hello!"), TWO]
    margins, keeps = enum_margins(predictor, examples)
    assert keeps == [True, True, True, False]  # FAILED once, FAILED_IN twice, BUILD passes agent_type by

    def unsaid(request: str, said: str) -> Callable[[str], bool] | None:
        found = unsaid_enum(predictor.tools, request, said)
        return None if found is None else lambda text: skips_enum(text, *found)

    direct = _direct_margins(predictor, (FAILED, FAILED_IN, BUILD), unsaid)
    assert margins == pytest.approx(direct, abs=1e-3)
    assert enum_margins(predictor, [Example("list the tasks", [Call("list_tasks", {})])]) == ([], [])


@pytest.mark.parametrize("speculate", [0, 8])
def test_the_enum_bias_sets_the_status_the_request_states(predictor: Predictor, tools: list[dict], speculate: int):
    """list_tasks calls only (tool_choice): the tiny model left alone writes list_tasks{} for "show me the failed
    tasks" or not; with the enum bias past its margin it writes status failed (the one value the grounded grammar
    offers), and with a bias short of it, what it wrote at 0. A request that states no status decodes the same
    either way."""
    from tether_tune.constrain import ToolCallConstraint
    from tether_tune.tokenizer import decode

    only = ToolCallConstraint(predictor.tokenizer, tools, grounded=True, tool_choice="list_tasks")

    def run(request: str, enum_bias: float) -> str:
        suffix = predictor.suffix(request)
        (d,) = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 60, only,
                             predictor.pad_id, speculate, [suffix], [request],
                             Biases(next_call=-50.0, enum=enum_bias),
                             decode=lambda ids: decode(predictor.tokenizer, ids))
        return decode(predictor.tokenizer, d.ids)

    (m,), _ = enum_margins(predictor, [FAILED])
    assert "status:<escape>failed<escape>" in run(FAILED.request, max(-m, 0) + 1.0)
    assert "status" not in run(FAILED.request, -m - 1.0)
    assert ("status" in run(FAILED.request, 0.0)) == (m > 0)
    assert run("list the tasks", 30.0) == run("list the tasks", 0.0)


def test_a_run_info_with_the_old_name_of_the_open_bias_still_gives_it():
    from tether_tune.rundir import RunInfo

    info = RunInfo.from_dict({"base_model": "m", "next_call_bias": 0.5, "open_id_bias": 6.25})
    assert info.open_bias == 6.25 and "open_id_bias" not in info.extra
    assert RunInfo.from_dict(info.to_dict()).open_bias == 6.25


# --------------------------------------------------------------------------------------------------------------
# The tool bias: at a tool's name, the tools the request asks for (tools.TOOL_CUES)
# --------------------------------------------------------------------------------------------------------------

SESSION = "5f0c2d1e-8a7b-4c6d-9e0f-1a2b3c4d5e6f"
GIST = Example(f"give me the gist of session {SESSION}",
               [Call("playback_session", {"session_id": SESSION, "style": "summary"})])


def test_tool_margins_are_measured_at_the_name_of_each_call_the_request_asks_for(predictor: Predictor):
    """One pass measures both weighed choices; at each token of a tool's name while a tool is asked for, the
    margin is the best token toward an asked tool minus the best away from it (the tiny model's scores, read from
    one plain forward), and the gold keeps to it. A request that asks for no tool by its words has none."""
    from tether_tune.decoding import passing_test

    both = passing_margins(predictor, [GIST, FAILED])
    margins, keeps = both["tool"]
    assert margins and all(keeps)  # playback's name, then list_tasks' ("failed tasks" asks for it)
    assert both["enum"] == passing_margins(predictor, [GIST, FAILED], ("enum",))["enum"]
    every = gold_margins(predictor, [GIST, FAILED, TWO])  # the decisions after a call too, in the same pass
    assert every["next_call"] == next_call_margins(predictor, [GIST, FAILED, TWO])
    assert every["tool"] == passing_margins(predictor, [GIST, FAILED, TWO], ("tool",))["tool"]
    direct = _direct_margins(predictor, (GIST, FAILED), lambda request, said: passing_test("tool", predictor.tools,
                                                                                          request, said))
    assert margins == pytest.approx(direct, abs=1e-3)
    bare = Example(f"{SESSION}?", [Call("get_session_history", {"session_id": SESSION})])
    assert passing_margins(predictor, [bare], ("tool",)) == {"tool": ([], [])}


@pytest.mark.parametrize("speculate", [0, 8])
def test_the_tool_bias_calls_the_tool_the_request_asks_for(predictor: Predictor, speculate: int):
    """The tiny model, made to call (call bias +50): for "give me the gist of session …" it names some tool; with
    the tool bias past every name margin it names playback_session (the one the request asks for), and with 0 what
    it named at first. A request that asks for no tool by its words decodes the same either way."""
    from tether_tune.tokenizer import decode

    def run(request: str, tool_bias: float) -> str:
        suffix = predictor.suffix(request)
        (d,) = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 40, predictor.constraint,
                             predictor.pad_id, speculate, [suffix], [request],
                             Biases(call=50.0, next_call=-50.0, tool=tool_bias),
                             decode=lambda ids: decode(predictor.tokenizer, ids))
        return decode(predictor.tokenizer, d.ids)

    margins, _ = passing_margins(predictor, [GIST], ("tool",))["tool"]
    assert run(GIST.request, max(0.0, -min(margins)) + 1.0).startswith("<start_function_call>call:playback_session{")
    named = run(GIST.request, 0.0).startswith("<start_function_call>call:playback_session{")
    assert named == all(m > 0 for m in margins)  # greedy keeps to the gold name while every margin is above 0
    assert run(f"{SESSION}?", 30.0) == run(f"{SESSION}?", 0.0)


def test_the_open_call_bias_applies_where_the_request_asks_for_something(predictor: Predictor):
    """call_bias -50 answers every request in words; call_open_bias +50 makes a call where the request gives an id
    or asks for a tool by its words ("cancel task …", "list the failed tasks") and leaves the others in words."""
    from tether_tune.tokenizer import decode

    def first(request: str, call_open_bias: float | None) -> bool:
        suffix = predictor.suffix(request)
        (d,) = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 4, predictor.constraint,
                             predictor.pad_id, 0, [suffix], [request],
                             Biases(call=-50.0, call_open=call_open_bias),
                             decode=lambda ids: decode(predictor.tokenizer, ids))
        return d.ids[0] == START_CALL_ID

    asking, not_asking = [REQUESTS[0], REQUESTS[2]], [REQUESTS[1], REQUESTS[3]]
    assert all(left_open(r, "") for r in asking) and not any(left_open(r, "") for r in not_asking)
    assert [first(r, 50.0) for r in asking + not_asking] == [True, True, False, False]
    assert not any(first(r, None) for r in asking + not_asking)
