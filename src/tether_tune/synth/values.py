"""The values the generator writes into requests: titles and descriptions, messages, agent roles, the words for
each enum value, and the sentences and fillers a request is dressed in.

``generate.make_pools`` deals part of ``TASKS``, ``MESSAGES_DO``, ``MESSAGES_KNOW`` and ``AGENTS`` to each split, so
values seen in val/test never appear in train. Rules that keep targets honest (tests check them): no context
sentence or message mentions a status or playback-style word; titles never start with an acronym (bare slots
lower-case the first letter); no pool entry has a quote character.
"""

from __future__ import annotations

from ..checks import NUMBER_WORDS  # noqa: F401  ("priority seven": the words checks.number_stated accepts)

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
    "Report back when the benchmarks end",
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
# Enum words. Keys are the canonical values; every word here is one of tools.ENUM_SYNONYMS (grounding checks it).
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
# Style: how a typed or spoken request is dressed up around a frame.
# --------------------------------------------------------------------------------------------------------------

PREFIXES_TYPED = ["Please ", "Can you ", "Could you ", "Hey, ", "I'd like you to ", "Go ahead and ", "Pls "]
PREFIXES_VOICE = ["can you ", "could you ", "please ", "i need you to ", "go ahead and ", "i want you to ", "hey "]
SUFFIXES = [" please", ", thanks", " thx", ", thank you"]
FILLERS_START = ["uh ", "um ", "so ", "okay so ", "hey ", "um so ", "right ", "yeah "]
FILLERS_MID = ["uh", "um", "er"]

# --------------------------------------------------------------------------------------------------------------
# Compositional values: titles and instructions as verb x component, agent roles as area x role. The split deals
# the components (and areas) to train/val/test, so held-out values are new work on new parts of the code.
# --------------------------------------------------------------------------------------------------------------

#: What a task or an instruction does to a component ("{c}" is the component).
WORK_VERBS: list[str] = [
    "fix the crash in {c}", "refactor {c}", "write tests for {c}", "document {c}", "review {c}", "clean up {c}",
    "speed up {c}", "profile {c}", "audit {c}", "debug the timeout in {c}", "add logging to {c}",
    "add metrics to {c}", "rewrite {c} in TypeScript", "simplify {c}", "harden {c}", "benchmark {c}",
    "look into the errors from {c}", "update the docs for {c}", "add retries to {c}", "remove dead code from {c}",
    "investigate the memory spike in {c}", "add input validation to {c}", "migrate {c} to the new config format",
    "check the error handling in {c}", "fix the flaky tests around {c}", "add caching to {c}",
    "split {c} into smaller modules", "upgrade the dependencies of {c}", "add type hints to {c}",
    "make {c} configurable", "find out why {c} is slow", "fix the off-by-one in {c}", "add a feature flag for {c}",
]
#: Parts of a code base (no enum word, no quote; the split deals them out).
COMPONENTS: list[str] = [
    "the upload endpoint", "the billing service", "the search page", "the CSV importer", "the auth middleware",
    "the notification worker", "the signup form", "the rate limiter", "the invoice generator", "the admin panel",
    "the GraphQL resolver", "the image resizer", "the session store", "the webhook handler", "the config loader",
    "the cron scheduler", "the mobile API", "the checkout flow", "the password reset flow", "the audit log",
    "the feature flag service", "the email templates", "the PDF exporter", "the cache layer", "the user profile page",
    "the metrics dashboard", "the retry queue", "the file sync job", "the payments adapter", "the onboarding wizard",
    "the permissions check", "the websocket gateway", "the Terraform modules", "the Helm chart", "the nightly backup",
    "the release script", "the login page", "the data export job", "the comment threads", "the shopping cart",
    "the API client", "the logging setup", "the docs site", "the search indexer", "the tenant router",
    "the SSO callback", "the pricing page", "the report generator", "the Slack integration", "the job runner",
]
#: Statements to pass on ("let X know that ..."), built from a component and what happened to it.
STATEMENTS: list[str] = [
    "{c} is back up", "{c} passed review", "{c} is ready for testing", "{c} went down on staging overnight",
    "{c} is blocked on the vendor", "the fix for {c} is merged", "{c} needs another pair of eyes",
    "{c} is frozen until the release", "{c} moved to the new cluster", "{c} has a new owner",
    "the customer complained about {c} again", "{c} is slower since Tuesday", "{c} is out of scope this sprint",
]
AGENT_AREAS = ["frontend", "backend", "api", "db", "docs", "security", "release", "infra", "mobile", "data", "qa",
               "perf", "ci", "auth", "billing", "search", "payments", "ml", "ops", "web"]
AGENT_ROLES = ["reviewer", "builder", "tester", "writer", "fixer", "bot", "runner", "auditor", "planner", "helper",
               "engineer", "triager", "deployer", "checker"]

#: Urgency without a number: the labelling rule sets no priority for these.
URGENCY = ["It's urgent.", "This is urgent!", "ASAP please.", "High priority!", "Low priority, no rush.",
           "Not urgent.", "Whenever you get to it.", "This one is critical.", "Top priority.", "No rush on this."]
#: Closing words of a request (no argument in them).
CLOSERS = [" Thanks!", " Thank you.", " Cheers.", " Much appreciated.", " Thx.", " Ty!", " When you can.",
           " That's it.", " Appreciate it."]
STYLE_WORDS: dict[str, list[str]] = {
    "verbatim": ["verbatim", "word for word", "in full", "exactly"],
    "summary": ["summary", "summarized", "recap", "brief", "gist"],
}
