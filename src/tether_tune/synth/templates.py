"""The phrasings of requests: frames (templates with slots) per tool, two-call frames, requests no tool serves
with their answers, and the clauses that state optional arguments.

A *frame* is one phrasing of a request, with slots that the generator fills with values it chose first:

- ``{title}`` ``{description}`` ``{message}`` free text, copied into the target exactly as it appears in the request
  (without the quotes a typed request may put around it). ``{title:bare}`` / ``{message:do}`` sit mid-sentence
  ("add a task to fix ...", "tell X to rerun ...") and are never quoted; ``{message:know}`` takes a statement
  ("let X know the staging db is back up").
- ``{task_id}`` ``{session_id}`` ``{codebase}`` ids, copied verbatim; ``{priority}`` an integer, as digits.
- ``{agent}`` an agent role (``code-reviewer``; spoken requests may say "code reviewer").
- ``{status:adj}`` ``{status:pred}`` ``{agent_type}`` ``{agent_type:an}`` a word people use for an enum value
  (``values.STATUS_ADJ``, ``values.STATUS_PRED``, ``values.AGENT_TYPE_WORDS``).
- ``{opts}`` the optional arguments the frame does not place itself, each as a clause from ``CLAUSES``.

A frame that starts with ``^`` is an imperative: the generator may put "please" / "can you" in front of it. A frame
with ``fixed`` states an enum value in its own words ("summarize session X" means style=summary).

Rule that keeps targets honest (tests check it): no clause mentions a status or playback-style word unless it
carries that argument. The values that fill the slots live in :mod:`tether_tune.synth.values`.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------------------
# Clauses for {opts}: the optional arguments a frame leaves to the generator. A clause brings its own leading
# punctuation. A description clause always comes last (descriptions may contain commas).
# --------------------------------------------------------------------------------------------------------------

CLAUSES: dict[str, dict[str, list[str]]] = {
    "create_task": {
        "codebase_id": [" in codebase {codebase}", " for codebase {codebase}", ", codebase {codebase}",
                        " on the {codebase} codebase", " (codebase {codebase})", ", codebase id {codebase}"],
        "agent_type": [" for {agent_type:an} agent", ", agent type {agent_type}", ", use the {agent_type} agent",
                       " and assign it to {agent_type:an} agent", ", give it to the {agent_type} agent",
                       ", {agent_type} agent"],
        "priority": [", priority {priority}", " with priority {priority}", ", prio {priority}",
                     " at priority {priority}", ", set the priority to {priority}", ", priority {priority} out of 10",
                     ", urgency {priority}"],
        "description": [". Description: {description}", ", description: {description}", ". Details: {description}",
                        " with the description {description}", ". {description}", ", details as follows: {description}",
                        ". Notes for the agent: {description}"],
    },
    "list_tasks": {
        "status": [" that are {status:pred}", ", only the {status:adj} ones", " with status {status:adj}",
                   ", filtered to {status:adj}", " (just the {status:adj} ones)"],
        "codebase_id": [" in codebase {codebase}", " for {codebase}", " in the {codebase} codebase",
                        ", codebase {codebase}", " for codebase {codebase}"],
    },
    "playback_session": {
        "style": {  # per value: the clause itself says the value
            "verbatim": [" word for word", " verbatim", ", word-for-word please", " in full", ", the full transcript",
                         " exactly as it happened"],
            "summary": [" as a summary", " as a short recap", ", just the gist", ", summarized", " in summary form",
                        ", brief version", ", the short version", " as an overview"],
        },
    },
}

# --------------------------------------------------------------------------------------------------------------
# Frames per tool. An entry is a text, or (text, {arg: value}) for a frame whose own words state an enum value.
# Ids are "<tool>.<index from 1>" in list order: append new frames at the end to keep the ids of the others.
# --------------------------------------------------------------------------------------------------------------

FRAMES: dict[str, list] = {
    "create_task": [
        "^create a task {title}{opts}.",
        "^make a new task called {title}{opts}.",
        "^add a task to {title:bare}{opts}.",
        "New task: {title}{opts}.",
        "^open a task titled {title}{opts}.",
        "^queue up a task: {title}{opts}.",
        "We need a task to {title:bare}{opts}.",
        "^file a task titled {title}{opts}.",
        "^spin up a task to {title:bare}{opts}.",
        "Task: {title}{opts}.",
        "^create task {title}{opts}",
        "^put a task on the board: {title}{opts}.",
        "Can we get a task for this: {title}{opts}?",
        "^log a task called {title}{opts}.",
        "^kick off a task to {title:bare}{opts}.",
        "Let's have a task: {title}{opts}.",
        "^set up a task named {title}{opts}.",
        "^start a new task, title {title}{opts}.",
        "^track this as a task: {title}{opts}.",
        "^have {agent_type:an} agent {title:bare}{opts}.",
        "^create a priority {priority} task: {title}{opts}.",
        "^create a task in codebase {codebase} to {title:bare}{opts}.",
        "Priority {priority}: {title}{opts}.",
        "^get {agent_type:an} agent on this: {title}{opts}.",
        "{title} - ^make that a task{opts}.",
        "I want someone to {title:bare}. ^create a task for it{opts}.",
    ],
    "list_tasks": [
        "^list tasks{opts}.",
        "^show me the tasks{opts}.",
        "What tasks do we have{opts}?",
        "^give me the task list{opts}.",
        "^pull up all tasks{opts}.",
        "Which tasks are there{opts}?",
        "Tasks{opts}?",
        "^show me the {status:adj} tasks{opts}.",
        "^list {status:adj} tasks{opts}.",
        "Which tasks are {status:pred}{opts}?",
        "Anything {status:pred}{opts}?",
        "What's on the board{opts}?",
        "How many tasks are {status:pred}{opts}?",
        "^get me every task{opts}.",
        "^show tasks for codebase {codebase}{opts}.",
        "What's going on in {codebase}{opts}?",
        "^list the tasks in the {codebase} codebase{opts}.",
        ("What's running{opts}?", {"status": "working"}),
        ("What failed{opts}?", {"status": "failed"}),
        ("What got done{opts}?", {"status": "completed"}),
        ("What's still queued{opts}?", {"status": "pending"}),
        ("^show me what was called off{opts}.", {"status": "cancelled"}),
        "^check the task list{opts}.",
    ],
    "get_task": [
        "^get task {task_id}.",
        "What's the status of task {task_id}?",
        "^show me task {task_id}.",
        "How is {task_id} doing?",
        "^pull up the details for {task_id}.",
        "Any news on task {task_id}?",
        "^look up task {task_id}.",
        "Is {task_id} finished yet?",
        "^check on {task_id}.",
        "{task_id}: what's the state of it?",
        "^fetch task {task_id} for me.",
        "What happened with task {task_id}?",
        "^give me an update on task {task_id}.",
        "Where are we with {task_id}?",
        "task {task_id}?",
        "^tell me about task {task_id}.",
    ],
    "cancel_task": [
        "^cancel task {task_id}.",
        "^stop {task_id}.",
        "^kill task {task_id}.",
        "^abort {task_id}.",
        "^call off task {task_id}.",
        "We don't need {task_id} anymore, cancel it.",
        "^drop task {task_id}.",
        "Cancel {task_id}, it's a duplicate.",
        "^scrap {task_id}.",
        "^halt the task {task_id}.",
        "Stop working on {task_id}.",
        "{task_id} needs to be cancelled.",
        "^pull the plug on task {task_id}.",
        "^terminate {task_id}.",
        "^cancel the job {task_id}.",
    ],
    "get_session_history": [
        "^show the message history for session {session_id}.",
        "^get the history of session {session_id}.",
        "^pull the raw messages from session {session_id}.",
        "What messages are in session {session_id}?",
        "^fetch the log for session {session_id}.",
        "^dump the conversation log of {session_id}.",
        "I need the messages from agent session {session_id}.",
        "^list the messages in {session_id}.",
        "^get me the chat history for {session_id}.",
        "^open the message log for session {session_id}.",
        "session {session_id} history",
        "^grab the session history for {session_id}.",
        "Can I see the raw log of session {session_id}?",
        "What did the agent say in session {session_id}? ^show me the messages.",
    ],
    "playback_session": [
        "^play back session {session_id}{opts}.",
        "^replay session {session_id}{opts}.",
        "^walk me through session {session_id}{opts}.",
        "^read me session {session_id}{opts}.",
        "^play session {session_id} back to me{opts}.",
        "^run through what happened in session {session_id}{opts}.",
        "Can you play back {session_id}{opts}?",
        "^go over session {session_id}{opts}.",
        "playback {session_id}{opts}",
        "^read back session {session_id}{opts}.",
        ("^summarize session {session_id}.", {"style": "summary"}),
        ("^give me a recap of session {session_id}.", {"style": "summary"}),
        ("What's the gist of session {session_id}?", {"style": "summary"}),
        ("TL;DR of session {session_id}?", {"style": "summary"}),
        ("^read session {session_id} back word for word.", {"style": "verbatim"}),
        ("^play back {session_id} verbatim.", {"style": "verbatim"}),
        ("^give me the full transcript of session {session_id}.", {"style": "verbatim"}),
    ],
    "discover_agents": [
        "What agents are available?",
        "^list the agents.",
        "Which agents can I use?",
        "^show me who's online.",
        "Who can I send work to?",
        "^discover agents.",
        "What agents do we have?",
        "^give me the list of agents.",
        "Are there any agents I can talk to?",
        "^find the available agents.",
        "Which agents are registered?",
        "^show all agents.",
        "agents?",
        "Who's out there? List the agents for me.",
        "What roles do the agents have?",
        "I want to message an agent but don't know the names. Who's there?",
        "^tell me which agents exist.",
        "Which agents are up right now?",
        "^see what agents are around.",
        "Is there a reviewer agent around? ^show me the agents.",
    ],
    "send_message": [
        "^tell the {agent} to {message:do}.",
        "^ask {agent} to {message:do}.",
        "^send {agent} a message: {message}.",
        "^message {agent}: {message}.",
        "^let the {agent} know {message:know}.",
        "^tell {agent} that {message:know}.",
        "^ping {agent} and say {message}.",
        "@{agent} {message}",
        "^send this to {agent}: {message}.",
        "^forward to {agent}: {message}.",
        "Note for {agent}: {message}.",
        "^relay to the {agent} agent: {message}.",
        "Hey {agent}, {message:do}.",
        "^drop the {agent} a line: {message}.",
        "^have the {agent} {message:do}.",
        "^get {agent} to {message:do}.",
        "^remind {agent} to {message:do}.",
        "^send a note to {agent} saying {message}.",
    ],
}

#: One request, two calls, in the order the request asks for them.
PARALLEL: list[tuple] = [
    ("^cancel task {task_id} and tell the {agent} to {message:do}.", ("cancel_task", "send_message")),
    ("^stop {task_id}, then let {agent} know {message:know}.", ("cancel_task", "send_message")),
    ("^create a task {title} and ask {agent} to {message:do}.", ("create_task", "send_message")),
    ("^make a task to {title:bare} with priority {priority}, and message {agent}: {message}.", ("create_task", "send_message")),
    ("^check task {task_id} and pull the message history of session {session_id}.", ("get_task", "get_session_history")),
    ("^list the {status:adj} tasks and show me which agents are available.", ("list_tasks", "discover_agents")),
    ("Which agents are online? Also list the tasks in codebase {codebase}.", ("discover_agents", "list_tasks")),
    ("^cancel {task_id} and create a new task: {title}.", ("cancel_task", "create_task")),
    ("^replay session {session_id} as a summary and tell {agent} that {message:know}.", ("playback_session", "send_message"),
     {"style": "summary"}),
    ("^get the state of {task_id} and the history of session {session_id}.", ("get_task", "get_session_history")),
    ("^kill task {task_id}, and show me what's {status:pred}.", ("cancel_task", "list_tasks")),
    ("^tell the {agent} to {message:do}, then list the agents.", ("send_message", "discover_agents")),
    ("^summarize session {session_id} and cancel task {task_id}.", ("playback_session", "cancel_task"), {"style": "summary"}),
    ("^look up task {task_id} and ping {agent}: {message}.", ("get_task", "send_message")),
    ("^show me the messages from session {session_id}, and cancel {task_id}.", ("get_session_history", "cancel_task")),
    ("^create a task {title} for {agent_type:an} agent, then list the agents.", ("create_task", "discover_agents")),
    ("^play back {session_id} word for word and check on task {task_id}.", ("playback_session", "get_task"),
     {"style": "verbatim"}),
    ("First cancel {task_id}. Then tell {agent}: {message}.", ("cancel_task", "send_message")),
]

# --------------------------------------------------------------------------------------------------------------
# Requests no tool serves, with the words to answer them. Slots are filled with values like the calls' (the answer
# names them canonically).
# --------------------------------------------------------------------------------------------------------------

_SCOPE = "I can create, list, check and cancel tasks, message agents, and show or play back agent sessions."
_OFF = "That's outside what I can do here. " + _SCOPE

NO_CALL: dict[str, list[tuple[str, str]]] = {
    "smalltalk": [
        ("Hi!", "Hi! " + _SCOPE + " What do you need?"),
        ("Thanks, that's all.", "You're welcome!"),
        ("Good morning", "Good morning! What can I do for you?"),
        ("How are you?", "Doing well, thanks! What can I do for you in CodeTether?"),
        ("What can you do?", _SCOPE),
        ("Who are you?", "I'm the CodeTether assistant. " + _SCOPE),
        ("Never mind.", "Okay. Let me know if you need anything."),
        ("ok cool", "Anything else I can help with?"),
        ("Are you there?", "I'm here. What would you like to do?"),
        ("That's great, thank you so much", "You're welcome!"),
    ],
    "offtopic": [
        ("What's the weather like tomorrow?", "I can't check the weather. " + _SCOPE),
        ("Write me a poem about Kubernetes.", _OFF),
        ("What's the capital of Australia?", _OFF),
        ("Explain how a hash map works.", _OFF),
        ("Book a meeting room for three o'clock.", "I can't book rooms. " + _SCOPE),
        ("Play some music.", _OFF),
        ("What's a good name for a cat?", _OFF),
        ("Translate good morning into French.", _OFF),
        ("Set an alarm for seven.", "I can't set alarms. " + _SCOPE),
        ("Order pizza for the team.", _OFF),
    ],
    "unsupported": [
        ("^delete codebase {codebase}.", "I can't delete codebases; that is done in the CodeTether dashboard. "
         "I can list or create tasks for {codebase}."),
        ("^rename the {agent} agent to reviewer-bot.", "I can't rename agents. I can list the agents or send {agent} a message."),
        ("^change the priority of task {task_id} to 9.", "I can't change a task after it is created. I can cancel "
         "{task_id} and create a new task with priority 9 if you like."),
        ("^update my billing details.", "I can't change billing. Please use the account settings in the dashboard."),
        ("^upgrade our subscription to the team tier.", "I can't change subscriptions. Please use the account "
         "settings in the dashboard."),
        ("^add Maria to the workspace.", "I can't manage workspace members. A workspace admin can invite her from the dashboard."),
        ("^reset my password.", "I can't reset passwords. Use the Forgot password link on the sign-in page."),
        ("^delete task {task_id}.", "Tasks can't be deleted from here. I can cancel {task_id} if it is still pending or working."),
        ("^restart the {agent} agent.", "I can't restart agents. I can send {agent} a message or list the agents."),
        ("^rename task {task_id} to something shorter.", "I can't edit tasks once they exist. I can show you {task_id} or cancel it."),
        ("^export all tasks to a spreadsheet.", "I can't export files. I can list the tasks here."),
        ("^create a new agent called {agent}.", "I can't create agents. I can list the agents that exist."),
        ("^merge pull request 512.", "I can't merge pull requests. I can create a task for an agent to do it."),
        ("^connect the repo to GitHub.", "Connecting repositories happens in the CodeTether dashboard; I can't do it from here."),
        ("^set up a webhook for new tasks.", "I can't configure webhooks. Please use the dashboard settings."),
        ("^delete session {session_id}.", "I can't delete sessions. I can show the history of {session_id} or play it back."),
        ("^give the {agent} admin access.", "I can't change permissions. A workspace admin can do that in the dashboard."),
        ("^move codebase {codebase} to another team.", "I can't move codebases between teams. That is done in the dashboard."),
    ],
    "vague": [
        ("^cancel that task.", "Which task should I cancel? Please give me its task id."),
        ("^cancel the task I just made.", "Which task should I cancel? Please give me its task id."),
        ("What's the status of my task?", "Which task? Tell me its task id and I'll look it up."),
        ("^check on the deploy task.", "Which task? Tell me its task id and I'll look it up."),
        ("^play back the last session.", "Which session? I need its session id."),
        ("^show me the history of that session.", "Which session? Give me its session id."),
        ("^send a message to the agent.", "Which agent, and what should I tell it?"),
        ("^tell them I'm on it.", "Who should I send that to? Give me the agent's name."),
        ("^message {agent}.", "What should I tell {agent}?"),
        ("^create a task.", "Sure. What should the task be called?"),
        ("^make a new task with priority 5.", "What should the task be called?"),
        ("^stop it.", "What should I stop? Give me the id of the task to cancel."),
        ("^replay it word for word.", "Which session? I need its session id."),
        ("^cancel task number five.", "I need the task's full id (a UUID like 3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13) to cancel it."),
        ("^get task 123.", "Task ids are UUIDs, like 3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13. Which task do you mean?"),
        ("^summarize the session from this morning.", "Which session? Give me its session id and I'll summarize it."),
    ],
}
#: Share of each no-call kind among no-call examples.
NO_CALL_WEIGHTS: dict[str, float] = {"smalltalk": 0.15, "offtopic": 0.15, "unsupported": 0.35, "vague": 0.35}
