"""What the generator (``tether_tune.synth``) says: phrasing templates and value pools.

A *frame* is one phrasing of a request, with slots that the generator fills with values it chose first:

- ``{title}`` ``{description}`` ``{message}`` free text, copied into the target exactly as it appears in the request
  (without the quotes a typed request may put around it). ``{title:bare}`` / ``{message:do}`` sit mid-sentence
  ("add a task to fix ...", "tell X to rerun ...") and are never quoted; ``{message:know}`` takes a statement
  ("let X know the staging db is back up").
- ``{task_id}`` ``{session_id}`` ``{codebase}`` ids, copied verbatim; ``{priority}`` an integer, as digits.
- ``{agent}`` an agent role (``code-reviewer``; spoken requests may say "code reviewer").
- ``{status:adj}`` ``{status:pred}`` ``{agent_type}`` ``{agent_type:an}`` a word people use for an enum value.
- ``{opts}`` the optional arguments the frame does not place itself, each as a clause from ``CLAUSES``.

A frame that starts with ``^`` is an imperative: the generator may put "please" / "can you" in front of it. A frame
with ``fixed`` states an enum value in its own words ("summarize session X" means style=summary).

Rules that keep targets honest (tests check them): no context sentence, message or clause mentions a status or
playback-style word unless it carries that argument; titles never start with an acronym (bare slots lower-case the
first letter); no value pool entry has a quote character.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------------------
# Value pools. The split holds out part of each pool: titles, messages and agent roles seen in test never appear
# in train.
# --------------------------------------------------------------------------------------------------------------

#: (title, description) pairs: a description always belongs to its title.
TASKS: list[tuple[str, str]] = [
    ("Fix the login redirect loop", "Users bounce between /login and /home after the OAuth callback"),
    ("Add rate limiting to the public API", "Cap anonymous clients at 100 requests per minute and return 429"),
    ("Upgrade Django to 5.1", "Check the deprecation warnings first and update the settings module"),
    ("Write tests for the payment webhook", "Cover bad signatures, retries and duplicate events"),
    ("Migrate the user table to UUID keys", "Keep the old integer ids in a legacy column until the mobile app ships"),
    ("Speed up the CI pipeline", "The test stage takes 25 minutes, so cache the pip downloads and split the suite"),
    ("Add dark mode to the settings page", "Follow the system preference by default and remember the choice"),
    ("Document the deployment process", "Cover staging and production, including the rollback steps"),
    ("Remove the unused feature flags", "Delete flags that have been fully rolled out for more than 90 days"),
    ("Investigate the memory leak in the worker", "RSS grows about 200 MB an hour under steady load"),
    ("Add pagination to the orders endpoint", "Use cursor pagination with a default page size of 50"),
    ("Refactor the email sender into a service", "Move the SMTP handling out of the views and add retries"),
    ("Fix the flaky checkout test", "It times out about one run in ten on the shared runners"),
    ("Set up Dependabot for the frontend", "Weekly updates, with minor and patch bumps grouped together"),
    ("Add an index on orders.created_at", "The monthly report query does a full table scan"),
    ("Translate the onboarding screens to Spanish", "The strings live in locales/en.json and the keys must not change"),
    ("Audit the S3 bucket permissions", "Make sure no bucket allows public writes"),
    ("Add a health check endpoint", "Return 200 with the git commit and the database connection state"),
    ("Replace moment.js with date-fns", "Bundle size is the main reason, keep the same date formats"),
    ("Fix the timezone bug in reports", "Daily totals are off by one day for users east of UTC"),
    ("Profile the search endpoint", "The p95 latency went from 300 ms to 1.2 s after the last release"),
    ("Add two-factor login", "Support TOTP apps and recovery codes"),
    ("Clean up the Docker images", "Use multi-stage images and drop the dev dependencies"),
    ("Rotate the database credentials", "Update the secret in the vault and restart the API pods"),
    ("Write a migration guide for v3", "List every breaking change with a before and after example"),
    ("Add CSV export to the admin dashboard", "Admins want to export filtered user lists"),
    ("Fix the dead links in the docs", "The link checker reports 37 of them on the API reference pages"),
    ("Bump the Node version to 22", "Update .nvmrc, the Dockerfile and the CI matrix"),
    ("Add retries to the webhook sender", "Exponential backoff with at most 5 attempts"),
    ("Review the error handling in the uploader", "Large files get lost silently when the connection drops"),
    ("Implement password reset", "Email a one-time link that expires after 30 minutes"),
    ("Split the billing module out of the monolith", "Start by moving invoices behind an internal API"),
    ("Add type hints to the utils package", "Run mypy in strict mode on that package only"),
    ("Cache the product catalog", "Use Redis with a 10 minute TTL and invalidate on edit"),
    ("Fix the N+1 query on the projects page", "The page makes one query per project"),
    ("Set up error tracking with Sentry", "Both backend and frontend, with release tags"),
    ("Write a load test for the checkout flow", "Target 500 concurrent users with k6"),
    ("Update the privacy policy page", "Legal sent new text for the data retention section"),
    ("Add SSO with Google Workspace", "Only for accounts on the company domain"),
    ("Reduce the Docker image size", "It is 1.8 GB right now and should get under 500 MB"),
    ("Fix the encoding bug in the CSV import", "Files saved from Excel as Latin-1 come out garbled"),
    ("Add search to the docs site", "Use a static index, no external service"),
    ("Archive old audit logs", "Move entries older than a year to cold storage"),
    ("Make the sidebar collapsible", "Remember the state per user"),
    ("Add webhooks for task events", "Fire one on create and one on cancel"),
    ("Port the cron jobs to the scheduler", "There are 14 jobs in the crontab on the old VM"),
    ("Harden the file upload endpoint", "Check MIME types and cap uploads at 20 MB"),
    ("Fix the race condition in the job queue", "Two workers sometimes pick up the same job"),
    ("Write the release notes for 2.4", "Collect the merged pull requests since 2.3"),
    ("Add keyboard shortcuts to the editor", "Save, search and toggle preview at least"),
    ("Investigate slow cold starts", "The Lambda functions take 4 seconds to answer the first request"),
    ("Add a dry-run flag to the deploy script", "Print what would change without applying it"),
    ("Lint the SQL migrations", "Add sqlfluff to the pre-commit hooks"),
    ("Fix the off-by-one in pagination", "The last item of each page shows up again on the next one"),
    ("Add an API for team invitations", "Invite by email and accept with a signed token"),
    ("Generate the OpenAPI spec from the code", "Serve it at /openapi.json"),
    ("Map out the legacy payment code", "Find every module that still calls the old gateway"),
    ("Collect crash reports from the beta", "Group them by stack trace"),
    ("Prepare the Postgres 16 upgrade", "Estimate the downtime and list the extensions we use"),
    ("Compare feature flag tools", "LaunchDarkly, Unleash and a homegrown table"),
    ("Sort out the CORS errors on staging", "The new frontend domain is missing from the allowed origins"),
    ("Add an audit trail to role changes", "Record who changed what and when"),
    ("Tidy up the README", "The setup steps are out of date since the move to uv"),
    ("Move secrets out of the repo", "Two API keys are committed in config/dev.yaml"),
    ("Add a retry button to the export page", "Users have to reload the whole page today"),
    ("Speed up the test fixtures", "The database fixture is rebuilt for every test"),
]

#: Messages that read as an instruction ("tell X to <message>").
MESSAGES_DO: list[str] = [
    "Rerun the integration tests on main",
    "Take another look at pull request 482",
    "Hold off on merging until the release is tagged",
    "Rebuild the staging image with the latest base",
    "Check the new migration on the orders table",
    "Run the full test suite against Python 3.13",
    "Review the auth changes before lunch",
    "Put the checkout bug ahead of the refactor",
    "Skip the flaky e2e tests for now",
    "Open a pull request once the lint errors are fixed",
    "Pin the requests library to 2.32",
    "Add the new endpoint to the changelog",
    "Focus on the mobile layout first",
    "Leave the billing module alone until Monday",
    "Use the staging database for the next run",
    "Squash the commits before merging",
    "Deploy the hotfix to staging",
    "Double-check the migration before it hits prod",
    "Write unit tests for the date parser",
    "Raise the coverage threshold to 85 percent",
    "Look at the CORS errors on the new domain",
    "Ping me when the benchmarks end",
    "Go ahead with the database upgrade tonight",
    "Update the Helm chart to the new image tag",
]

#: Messages that read as a statement ("let X know <message>").
MESSAGES_KNOW: list[str] = [
    "The staging database is back up",
    "The API keys were rotated this morning",
    "Main is green again",
    "The design review moved to Thursday",
    "Pull request 517 needs another approval",
    "The release freeze starts on Friday",
    "The flaky test was a clock issue and is fixed now",
    "The customer reported the bug again",
    "I merged the logging changes",
    "The new runners are ready to use",
    "Staging is reserved for the demo until 3pm",
    "The payment provider sandbox is down today",
    "We switch to the new lint config tomorrow",
    "The search work matters more than the refactor this week",
    "Legal signed off on the new privacy text",
    "The load balancer config changed overnight",
]

AGENTS: list[str] = [
    "code-reviewer", "builder", "test-runner", "planner", "security-auditor", "docs-writer", "deployer",
    "refactorer", "release-manager", "bug-triager", "dependency-updater", "perf-profiler", "migration-runner",
    "qa-tester", "frontend-dev", "backend-dev", "db-admin", "incident-responder", "api-designer", "ux-reviewer",
    "data-engineer", "infra-bot", "lint-fixer", "changelog-writer",
]

#: Sentences around a request that carry no argument.
CONTEXT: list[str] = [
    "Quick one before standup.",
    "I'm on my phone, so bear with me.",
    "We ship on Friday.",
    "Sorry for the back-to-back requests.",
    "This came up in the retro.",
    "The customer asked about it again.",
    "Just got out of a meeting.",
    "My manager wants an update.",
    "Context: we're mid-migration.",
    "Thanks in advance.",
    "Following up on yesterday.",
    "Heads up, I'm new to this.",
    "The team asked me to handle this.",
    "I'll be offline after lunch.",
    "Before I forget.",
    "Doing some housekeeping.",
    "Morning!",
    "Hi there.",
    "Okay, next thing.",
    "One more thing.",
]

# --------------------------------------------------------------------------------------------------------------
# Enum words. Keys are the canonical values; every word here is one of data.ENUM_SYNONYMS (grounding checks it).
# --------------------------------------------------------------------------------------------------------------

STATUS_ADJ: dict[str, list[str]] = {  # "show me the ___ tasks"
    "pending": ["pending", "queued", "not started"],
    "working": ["running", "in-progress", "active", "ongoing", "working"],
    "completed": ["completed", "finished", "done", "successful"],
    "failed": ["failed", "failing", "broken", "crashed"],
    "cancelled": ["cancelled", "canceled", "aborted"],
}
STATUS_PRED: dict[str, list[str]] = {  # "which tasks are ___"
    "pending": ["pending", "queued", "still waiting", "not started yet"],
    "working": ["running", "in progress", "being worked on", "active", "working"],
    "completed": ["completed", "done", "finished", "complete"],
    "failed": ["failed", "failing", "broken", "errored out"],
    "cancelled": ["cancelled", "canceled", "aborted", "called off"],
}
AGENT_TYPE_WORDS: dict[str, list[str]] = {
    "build": ["build", "builder"],
    "plan": ["plan", "planning", "planner"],
    "general": ["general", "general-purpose"],
    "explore": ["explore", "explorer", "exploration"],
    "forage": ["forage", "forager"],
}

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

# --------------------------------------------------------------------------------------------------------------
# Style: how a typed or spoken request is dressed up around a frame.
# --------------------------------------------------------------------------------------------------------------

PREFIXES_TYPED = ["Please ", "Can you ", "Could you ", "Hey, ", "I'd like you to ", "Go ahead and ", "Pls "]
PREFIXES_VOICE = ["can you ", "could you ", "please ", "i need you to ", "go ahead and ", "i want you to ", "hey "]
SUFFIXES = [" please", ", thanks", " thx", ", thank you"]
FILLERS_START = ["uh ", "um ", "so ", "okay so ", "hey ", "um so ", "right ", "yeah "]
FILLERS_MID = ["uh", "um", "er"]
