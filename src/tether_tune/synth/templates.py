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
        # a description is always announced (rule 3 of docs/data.md): people rarely add a bare second sentence
        # meant as one, and a model taught that they do takes context sentences for descriptions
        "description": [". Description: {description}", ", description: {description}", ". Details: {description}",
                        " with the description {description}", ", details as follows: {description}",
                        ". Notes for the agent: {description}", ", with these notes: {description}"],
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

#: What the model answers in words: a few short answers, one per situation, so that a 270M model learns each of them
#: exactly and ends its turn (docs/data.md, "Words answers"). ``{agent}`` is filled with the agent named.
GREET = "Hi! What can I do for you in CodeTether?"
SCOPE = "I can create, list, check and cancel tasks, message agents, and show or play back agent sessions."
WELCOME = "You're welcome!"
GLAD = "Glad to help!"
BYE = "Bye!"
OKAY = "Okay, I won't do anything."
CANT = "Sorry, I can't do that with CodeTether's tools."
ASK_TASK = "Which task? Please give me its full task id."
ASK_TASKS = "Which tasks? Please give me their full task ids."
ASK_SESSION = "Which session? Please give me its session id."
ASK_AGENT = "Which agent, and what should I tell it?"
ASK_WHO = "Which agent should I tell?"
ASK_MESSAGE = "What should I tell {agent}?"
ASK_TITLE = "What should the task be called?"
#: Every words answer the generator writes.
WORDS_ANSWERS = (GREET, SCOPE, WELCOME, GLAD, BYE, OKAY, CANT, ASK_TASK, ASK_TASKS, ASK_SESSION, ASK_AGENT, ASK_WHO,
                 ASK_MESSAGE, ASK_TITLE)

NO_CALL: dict[str, list[tuple[str, str]]] = {
    "smalltalk": [
        ("Hi!", GREET),
        ("Good morning", GREET),
        ("How are you?", GREET),
        ("What can you do?", SCOPE),
        ("Who are you?", SCOPE),
        ("ok cool", GLAD),
        ("Are you there?", GREET),
        ("Hello there", GREET),
        ("Tell me a joke.", SCOPE),
        ("What's your name?", SCOPE),
        ("Good evening!", GREET),
        ("yo", GREET),
        ("Are you a robot?", SCOPE),
        ("How does this work?", SCOPE),
        ("help", SCOPE),
        ("What tools do you have?", SCOPE),
        ("Can you hear me?", GREET),
    ],
    "offtopic": [
        ("What's the weather like tomorrow?", CANT),
        ("Write me a poem about Kubernetes.", CANT),
        ("What's the capital of Australia?", CANT),
        ("Explain how a hash map works.", CANT),
        ("Book a meeting room for three o'clock.", CANT),
        ("Play some music.", CANT),
        ("What's a good name for a cat?", CANT),
        ("Translate good morning into French.", CANT),
        ("Set an alarm for seven.", CANT),
        ("Order pizza for the team.", CANT),
        ("What time is it in Tokyo?", CANT),
        ("Who won the game last night?", CANT),
        ("How do I center a div?", CANT),
        ("What's 17 times 23?", CANT),
        ("Recommend a good book.", CANT),
        ("Write a SQL query that finds duplicate emails.", CANT),
        ("Summarize this article for me.", CANT),
        ("What's the stock price of Apple?", CANT),
        ("Turn off the lights in the office.", CANT),
        ("Remind me to call mom at six.", CANT),
        ("Send an email to the marketing team.", CANT),
        ("How many calories are in a banana?", CANT),
        ("What's the best programming language?", CANT),
        ("Start a timer for ten minutes.", CANT),
        ("Schedule a meeting with Dana on Friday.", CANT),
    ],
    "unsupported": [
        ("^delete codebase {codebase}.", CANT),
        ("^rename the {agent} agent to reviewer-bot.", CANT),
        ("^change the priority of task {task_id} to 9.", CANT),
        ("^update my billing details.", CANT),
        ("^upgrade our subscription to the team tier.", CANT),
        ("^add Maria to the workspace.", CANT),
        ("^reset my password.", CANT),
        ("^delete task {task_id}.", CANT),
        ("^restart the {agent} agent.", CANT),
        ("^rename task {task_id} to something shorter.", CANT),
        ("^export all tasks to a spreadsheet.", CANT),
        ("^create a new agent called {agent}.", CANT),
        ("^merge pull request 512.", CANT),
        ("^connect the repo to GitHub.", CANT),
        ("^set up a webhook for new tasks.", CANT),
        ("^delete session {session_id}.", CANT),
        ("^give the {agent} admin access.", CANT),
        ("^move codebase {codebase} to another team.", CANT),
        ("^rename the {agent} to something else.", CANT),
        ("^change the priority of task {task_id}.", CANT),
        ("^reassign task {task_id} to another agent.", CANT),
        ("^pause task {task_id}.", CANT),
        ("^resume task {task_id}.", CANT),
        ("^retry task {task_id}.", CANT),
        ("^mark task {task_id} as done.", CANT),
        ("^delete the {agent} agent.", CANT),
        ("^shut down the {agent} agent.", CANT),
        ("^export session {session_id} as a PDF.", CANT),
        ("^share session {session_id} with the team.", CANT),
        ("^create a codebase for the new service.", CANT),
        ("^delete all cancelled tasks.", CANT),
        ("^refund the last invoice.", CANT),
        ("^change my email address.", CANT),
        ("^invite a new teammate.", CANT),
        ("^delete the repository.", CANT),
        ("^roll back the last deploy.", CANT),
        ("^give me the API key.", CANT),
        ("^lower the rate limits for our account.", CANT),
        ("^clone codebase {codebase}.", CANT),
        ("^edit the title of task {task_id}.", CANT),
        ("^add a comment to task {task_id}.", CANT),
        ("^subscribe me to updates on task {task_id}.", CANT),
        ("^archive session {session_id}.", CANT),
        ("^rename session {session_id} to onboarding.", CANT),
        ("^clear the history of session {session_id}.", CANT),
        ("^remove session {session_id}.", CANT),
        ("^download session {session_id}.", CANT),
        ("^pin session {session_id} to the top.", CANT),
        ("^fork session {session_id} into a new one.", CANT),
        ("^resume session {session_id}.", CANT),
        ("^edit the last message in session {session_id}.", CANT),
        ("^archive task {task_id}.", CANT),
        ("^duplicate task {task_id}.", CANT),
        ("^move task {task_id} to codebase {codebase}.", CANT),
        ("^set a deadline of friday on task {task_id}.", CANT),
        ("^remove task {task_id} from the board.", CANT),
        ("^restore task {task_id}.", CANT),
        ("^lock task {task_id} so nobody can cancel it.", CANT),
        ("^delete the tasks in codebase {codebase}.", CANT),
        ("^archive codebase {codebase}.", CANT),
        ("^rename codebase {codebase} to api-v2.", CANT),
        ("^show me the disk usage of codebase {codebase}.", CANT),
        ("^mute the {agent}.", CANT),
        ("^upgrade the {agent} to a bigger model.", CANT),
        ("^block the {agent} from codebase {codebase}.", CANT),
        ("^unsend my last message to {agent}.", CANT),
    ],
    "vague": [
        ("^cancel that task.", ASK_TASK),
        ("^cancel the task I just made.", ASK_TASK),
        ("What's the status of my task?", ASK_TASK),
        ("^check on the deploy task.", ASK_TASK),
        ("^play back the last session.", ASK_SESSION),
        ("^show me the history of that session.", ASK_SESSION),
        ("^send a message to the agent.", ASK_AGENT),
        ("^tell them I'm on it.", ASK_WHO),
        ("^message {agent}.", ASK_MESSAGE),
        ("^create a task.", ASK_TITLE),
        ("^make a new task with priority 5.", ASK_TITLE),
        ("^stop it.", ASK_TASK),
        ("^replay it word for word.", ASK_SESSION),
        ("^cancel task number five.", ASK_TASK),
        ("^get task 123.", ASK_TASK),
        ("^summarize the session from this morning.", ASK_SESSION),
        ("^cancel my task.", ASK_TASK),
        ("^kill the running job.", ASK_TASK),
        ("^stop the deploy task.", ASK_TASK),
        ("How's my task going?", ASK_TASK),
        ("^look up the task from yesterday.", ASK_TASK),
        ("^tell the {agent}.", ASK_MESSAGE),
        ("^send a message.", ASK_AGENT),
        ("^ping {agent}.", ASK_MESSAGE),
        ("^tell someone the build is fixed.", ASK_WHO),
        ("^make a task.", ASK_TITLE),
        ("^add a task with priority 3.", ASK_TITLE),
        ("^open a ticket for me.", ASK_TITLE),
        ("^recap my last session.", ASK_SESSION),
        ("^show the messages from the session.", ASK_SESSION),
        ("^play back yesterday's session word for word.", ASK_SESSION),
        ("^cancel task 42.", ASK_TASK),
        ("^check the status of ticket 7.", ASK_TASK),
        ("^cancel both tasks.", ASK_TASKS),
    ],
    "thanks": [
        ("Thanks, that's all.", WELCOME),
        ("That's great, thank you so much", WELCOME),
        ("Thanks!", WELCOME),
        ("Thank you, that's everything.", WELCOME),
        ("Cheers.", WELCOME),
        ("Bye!", BYE),
        ("That's all for now.", BYE),
        ("Perfect, thanks.", WELCOME),
        ("Great job.", GLAD),
        ("ok got it", GLAD),
        ("Awesome, thank you!", WELCOME),
        ("See you tomorrow.", BYE),
        ("Much appreciated.", WELCOME),
        ("Nice, that worked.", GLAD),
        ("thx bye", BYE),
        ("Good night.", BYE),
        ("All good, thanks", GLAD),
    ],
    "retraction": [
        ("Never mind.", OKAY),
        ("Forget it.", OKAY),
        ("Scratch that.", OKAY),
        ("Actually, don't.", OKAY),
        ("Wait, no, ignore what I said.", OKAY),
        ("Hold on, don't do anything yet.", OKAY),
        ("Cancel that request.", OKAY),
        ("No, stop, I changed my mind.", OKAY),
        ("Ignore my last message.", OKAY),
        ("Oops, wrong window.", OKAY),
        ("Let me think about it first.", OKAY),
        ("Not now.", OKAY),
    ],
}
#: Share of each no-call kind among no-call examples.
NO_CALL_WEIGHTS: dict[str, float] = {"smalltalk": 0.12, "thanks": 0.12, "retraction": 0.10, "offtopic": 0.16,
                                     "unsupported": 0.25, "vague": 0.25}

# --------------------------------------------------------------------------------------------------------------
# More phrasings (appended, so the ids above keep their numbers): other verbs and objects, the forms people type
# ("X: Y", function-like calls, slash commands), and priorities as digits, words and shorthand.
# ``{title:raw}`` / ``{message:raw}`` are never quoted and keep their case; ``{priority:digit}`` is always digits
# (it follows a "p"); ``{status:canon}`` / ``{style:canon}`` say the enum value by its own name.
# --------------------------------------------------------------------------------------------------------------

CLAUSES["create_task"]["priority"] += [
    ", p{priority:digit}", " (p{priority:digit})", ". Priority: {priority}", ". Priority {priority}.",
    ", priority level {priority}", ", prio: {priority}", " - priority {priority}", ", make it priority {priority}",
    ", {priority} on the priority scale", ", P{priority:digit}",
]
CLAUSES["create_task"]["codebase_id"] += [" in {codebase}", ". Codebase: {codebase}", " under codebase {codebase}",
                                          ", repo {codebase}"]
CLAUSES["create_task"]["agent_type"] += [", agent: {agent_type}", " for the {agent_type} agent",
                                         ", run it with {agent_type:an} agent", ". Agent type: {agent_type}"]
CLAUSES["create_task"]["description"] += [". More context: {description}", ". Background: {description}"]
CLAUSES["list_tasks"]["status"] += [", status {status:canon}", " where the status is {status:adj}",
                                    ", just {status:adj}", " (status: {status:canon})"]
CLAUSES["list_tasks"]["codebase_id"] += [" under {codebase}", " (codebase {codebase})", ", repo {codebase}"]
CLAUSES["playback_session"]["style"]["verbatim"] += [", verbatim please", " exactly", " as a full transcript",
                                                     ", every word"]
CLAUSES["playback_session"]["style"]["summary"] += [", summarize it", " as a brief", ", recap only", ", in brief",
                                                    ", just a summary"]

FRAMES["create_task"] += [
    'create_task(title="{title:raw}")',
    "create_task: {title:raw}{opts}",
    "/task {title:raw}{opts}",
    "todo: {title:raw}{opts}",
    "New ticket: {title}{opts}.",
    "^open a ticket to {title:bare}{opts}.",
    "^raise a task to {title:bare}{opts}.",
    "^add {title:bare} to the backlog{opts}.",
    "^add this to the task list: {title}{opts}.",
    "^schedule a task to {title:bare}{opts}.",
    "^make a ticket titled {title}{opts}.",
    "Could someone {title:bare}{opts}? ^file it as a task.",
    "^create a p{priority:digit} task to {title:bare}{opts}.",
    "^new task, priority {priority}: {title}{opts}.",
    "^put {title:bare} on the board{opts}.",
    "I need a task for this: {title}{opts}.",
    "Task: {title}. Priority {priority}{opts}.",
    "^create a task called {title} with priority {priority}{opts}.",
    "{title}{opts} - ^add it as a task.",
    "^make a task so that someone will {title:bare}{opts}.",
    "^assign {agent_type:an} agent to {title:bare}{opts}.",
    "Priority {priority} task for {agent_type:an} agent: {title}{opts}.",
    "^create a task for codebase {codebase}: {title}{opts}.",
    "In {codebase}, ^create a task to {title:bare}{opts}.",
    "^write up a task: {title}{opts}.",
    "^open a new task with the title {title}{opts}.",
    "^enqueue a task to {title:bare}{opts}.",
    "Ticket please: {title}{opts}.",
    "^add a to-do: {title}{opts}.",
    "We should {title:bare}. ^create a task{opts}.",
]
FRAMES["list_tasks"] += [
    "list_tasks()",
    'list_tasks(status="{status:canon}")',
    "/tasks{opts}",
    "^show {status:adj} tasks{opts}.",
    "What's {status:pred}{opts}?",
    "^give me a rundown of the tasks{opts}.",
    "Status report on all tasks{opts}?",
    "^show me everything that is {status:pred}{opts}.",
    "^list every task{opts}.",
    "How are the tasks looking{opts}?",
    "^enumerate the tasks{opts}.",
    "tasks{opts} pls",
    "^give me all the tasks{opts}.",
    "What's on our plate{opts}?",
    "^pull the task list{opts}.",
    "Do we have any {status:adj} tasks{opts}?",
    "^count the {status:adj} tasks{opts}.",
    "^display the tasks{opts}.",
    "Any tasks {status:pred}{opts}?",
    "^list the tasks for {codebase}{opts}.",
    ("Anything broken{opts}?", {"status": "failed"}),
    ("What's in progress right now{opts}?", {"status": "working"}),
    ("What's finished{opts}?", {"status": "completed"}),
    ("What hasn't started yet{opts}?", {"status": "pending"}),
]
FRAMES["get_task"] += [
    "get_task(task_id='{task_id}')",
    "get_task {task_id}",
    "/task-status {task_id}",
    "Status of {task_id}?",
    "^check task {task_id}.",
    "What's going on with {task_id}?",
    "^show me the details of task {task_id}.",
    "Any progress on {task_id}?",
    "^report on task {task_id}.",
    "Status check: {task_id}",
    "{task_id} status?",
    "I'd like to see task {task_id}.",
    "^get me the details on {task_id}.",
    "How far along is task {task_id}?",
    "^look at task {task_id} and tell me where it stands.",
    "Task {task_id} - how's it going?",
]
FRAMES["cancel_task"] += [
    "cancel_task(task_id='{task_id}')",
    "cancel_task {task_id}",
    "/cancel {task_id}",
    "^cancel {task_id}.",
    "^stop task {task_id}, it's not needed anymore.",
    "^nuke task {task_id}.",
    "^kill off {task_id}.",
    "Cancel: {task_id}",
    "^shut down task {task_id}.",
    "^cancel the task with id {task_id}.",
    "{task_id} - cancel it.",
    "^get rid of task {task_id}.",
    "^withdraw task {task_id}.",
    "Please don't run {task_id}, cancel it.",
    "^stop the run {task_id} right now.",
    "I changed my mind about {task_id}. ^cancel it.",
]
FRAMES["get_session_history"] += [
    "get_session_history(session_id='{session_id}')",
    "get_session_history {session_id}",
    "^show session {session_id}'s messages.",
    "Messages for {session_id}?",
    "What was said in session {session_id}?",
    "^fetch the message history of {session_id}.",
    "^load the messages of session {session_id}.",
    "^show me the conversation in session {session_id}.",
    "History of {session_id}?",
    "^list the messages of session {session_id}.",
    "^get the raw message log for {session_id}.",
    "^pull up the chat log for session {session_id}.",
]
FRAMES["playback_session"] += [
    ("playback_session(session_id='{session_id}', style='{style:canon}')", {}),
    "playback_session {session_id}{opts}",
    "^replay {session_id}{opts}.",
    "^give me a playback of {session_id}{opts}.",
    "^play {session_id}{opts}.",
    "^run back session {session_id}{opts}.",
    "^play back the session {session_id} for me{opts}.",
    "Can I get a replay of session {session_id}{opts}?",
    ("^recap session {session_id}.", {"style": "summary"}),
    ("^summarise {session_id} for me.", {"style": "summary"}),
    ("^give me the short version of session {session_id}.", {"style": "summary"}),
    ("^brief me on session {session_id}.", {"style": "summary"}),
    ("^play session {session_id} exactly as it happened.", {"style": "verbatim"}),
    ("^replay {session_id} in full.", {"style": "verbatim"}),
    ("^read me session {session_id} word-for-word.", {"style": "verbatim"}),
    ("^play back {session_id}, the full transcript.", {"style": "verbatim"}),
]
FRAMES["discover_agents"] += [
    "/agents",
    "Who's available?",
    "^list available agents.",
    "Which agents exist?",
    "^show me the agent roster.",
    "Who can I talk to?",
    "What agents are online?",
    "Any agents around?",
    "^give me the agents.",
    "Which agents could take a task?",
    "^show the available agents and their roles.",
    "Who's on the team of agents?",
]
FRAMES["send_message"] += [
    "send_message to {agent}: {message:raw}",
    "send_message(agent_name='{agent}', message='{message:raw}')",
    "dm {agent}: {message:raw}",
    "{agent}: {message:raw}",
    "^message the {agent}: {message}.",
    "^send {agent} this: {message}.",
    "^ask the {agent} agent to {message:do}.",
    "^let {agent} know that {message:know}.",
    "^pass this on to {agent}: {message}.",
    "^shoot {agent} a message saying {message}.",
    "^notify {agent} that {message:know}.",
    "^write to {agent}: {message}.",
    "^reach out to {agent} and ask them to {message:do}.",
    "^instruct {agent} to {message:do}.",
    "^tell {agent}: {message}.",
    "^dm the {agent} and say {message}.",
    "Message for {agent}: {message}.",
    "^say to {agent}: {message}.",
    "^ping the {agent} agent: {message}.",
    "^send a message to {agent} that {message:know}.",
]

PARALLEL += [
    ("^tell {agent} to {message:do} and list the tasks.", ("send_message", "list_tasks")),
    ("^create a task to {title:bare} and show me the {status:adj} tasks.", ("create_task", "list_tasks")),
    ("^check on {task_id}, and if it's stuck tell {agent} to {message:do}.", ("get_task", "send_message")),
    ("^list the agents, then ask {agent} to {message:do}.", ("discover_agents", "send_message")),
]

#: Several ids, one verb: "cancel tasks A and B" is two cancel_task calls (``{ids}``: two or three ids, listed).
TWINS: dict[str, list[str]] = {
    "cancel_task": ["^cancel tasks {ids}.", "^kill {ids}.", "^stop {ids}, they're duplicates.", "^abort {ids}.",
                    "cancel_task {ids}", "^call off tasks {ids}.", "^cancel {ids} please."],
    "get_task": ["^check on {ids}.", "What's the status of {ids}?", "^get tasks {ids}.", "^look up {ids}.",
                 "How are tasks {ids} doing?"],
    "get_session_history": ["^show the message history of sessions {ids}.", "^get the history of {ids}.",
                            "^pull the messages from sessions {ids}."],
}

# --------------------------------------------------------------------------------------------------------------
# Phrasings for the confusions left on validation (appended: the ids above keep their numbers). "What was said in
# session X" is the message history, not a playback; "what's on the board" is the task list; actions on the
# whole team or on many tasks at once are no tool's.
# --------------------------------------------------------------------------------------------------------------

FRAMES["get_session_history"] += [
    "What did they say in session {session_id}?",
    "^show me what was said in session {session_id}.",
    "What was discussed in session {session_id}?",
    "Who said what in session {session_id}?",
    "^get me the messages exchanged in session {session_id}.",
    "What did the agent write in session {session_id}?",
    "^show me everything the agent said in {session_id}.",
    "^let me read the messages of session {session_id}.",
    "What were the messages in {session_id}?",
    "^show the back-and-forth in session {session_id}.",
]
FRAMES["list_tasks"] += [
    "What's on the task board{opts}?",
    "^show me the board{opts}.",
    "What's in the queue{opts}?",
    "^check the board{opts}.",
    "What's on the agenda{opts}?",
]
NO_CALL["unsupported"] += [
    ("^order lunch for the team.", CANT),
    ("^buy coffee for the {agent}.", CANT),
    ("^book a flight for the team lead.", CANT),
    ("^send flowers to the team.", CANT),
    ("^plan the team offsite.", CANT),
    ("^delete all failed tasks.", CANT),
    ("^archive all completed tasks.", CANT),
    ("^clear out the finished tasks.", CANT),
    ("^sort the tasks by priority and email them to me.", CANT),
]
