"""The official `openai` Python SDK (3.x), unchanged, against agent-server's OpenAI-compatible API.

Run by `cargo xtask sdk`, which starts the release server on Postgres and Redis with a fake model
that answers "echo: <message>" (and "you said earlier: <previous message>" to "recall ...") and
sets: AGENT_URL (the server), AGENT_KEY (a key of caller `sdk`), AGENT_QUOTA_KEY (a key of caller
`thrifty`, whose daily quota one turn uses up), AGENT_LIMITED_URL (a second server allowing two
requests per minute), FAKE_MODEL_URL (the fake model's fault switch), and WEBHOOK_PORT and
WEBHOOK_SECRET (the server posts its background runs' webhooks there, signed with that secret).
"""

import http.server
import json
import os
import threading
import time
import urllib.request
import uuid

import openai
import standardwebhooks
from openai import OpenAI

# The webhook endpoint: every delivery's body and headers, kept as received.
webhooks = []


class Hooks(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the standard library's name
        body = self.rfile.read(int(self.headers["content-length"]))
        webhooks.append((body, {name.lower(): value for name, value in self.headers.items()}))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args):
        pass


hooks = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["WEBHOOK_PORT"])), Hooks)
threading.Thread(target=hooks.serve_forever, daemon=True).start()

URL = os.environ["AGENT_URL"]
KEY = os.environ["AGENT_KEY"]
# No retries: each check sees the first answer.
client = OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise SystemExit(f"python sdk: FAILED: {what}")
    checks += 1


def raises(error_class, call, what):
    try:
        call()
    except error_class as error:
        check(True, what)
        return error
    except Exception as error:  # noqa: BLE001 - report what was raised instead
        raise SystemExit(f"python sdk: FAILED: {what}: raised {type(error).__name__}: {error}")
    raise SystemExit(f"python sdk: FAILED: {what}: nothing raised")


def http(method, url, key=None, body=None):
    """A plain HTTP call with the standard library (the SDK's HTTP client is its own business)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def user(text):
    return [{"role": "user", "content": text}]


# The agent is the one model.
models = list(client.models.list())
check([model.id for model in models] == ["agent"], f"models.list: {models}")
check(client.models.retrieve("agent").owned_by == "agent-server", "models.retrieve")

# Several agents: each is a model; which one answers shows in what the model was sent.
agents = OpenAI(base_url=f"{os.environ['AGENT_AGENTS_URL']}/v1", api_key=KEY)
ids = [model.id for model in agents.models.list()]
check(ids == ["support", "research"], f"the agents as models: {ids}")
raw = agents.chat.completions.with_raw_response.create(model="support", messages=user("whoami"))
support = raw.parse()
check(support.model == "support", f"model: {support.model}")
check(
    support.choices[0].message.content == "system: You are support. | tools: calculator",
    f"the support agent: {support.choices[0].message.content}",
)
check(raw.headers.get("x-agent-model"), f"x-agent-model: {dict(raw.headers)}")
research = agents.chat.completions.create(model="research", messages=user("whoami"))
check(
    research.choices[0].message.content == "system: You are research. | tools: current_time",
    f"the research agent: {research.choices[0].message.content}",
)
answered = agents.responses.create(model="research", input="whoami")
check(answered.output_text.startswith("system: You are research."), f"responses: {answered}")
outsider = OpenAI(
    base_url=f"{os.environ['AGENT_AGENTS_URL']}/v1", api_key=os.environ["AGENT_QUOTA_KEY"]
)
check([model.id for model in outsider.models.list()] == ["support"], "a caller sees its agents")
forbidden = raises(
    openai.NotFoundError,
    lambda: outsider.chat.completions.create(model="research", messages=user("hi")),
    "an agent outside the caller's",
)
check(forbidden.code == "model_not_found", f"code: {forbidden.code}")

# A context budget (the support agent's: 4000 tokens): four messages of about 1500 tokens are over
# it. "disabled" refuses them as OpenAI does; "auto" sends the newest whole turns that fit.
long_input = [{"role": "user", "content": f"question {n}: " + "word " * 1500} for n in range(4)]
too_long = raises(
    openai.BadRequestError,
    lambda: agents.responses.create(model="support", input=long_input, truncation="disabled"),
    "an input over the agent's context budget with truncation disabled",
)
check(too_long.code == "context_length_exceeded", f"code: {too_long.code}")
fitted = agents.responses.create(model="support", input=long_input, truncation="auto")
check(fitted.output_text.startswith("echo: question 3: word"), f"truncated: {fitted.output_text[:40]}")
check(fitted.truncation == "auto", f"truncation: {fitted.truncation}")

# A plain completion (stateless).
completion = client.chat.completions.create(model="agent", messages=user("hello"), temperature=0.2)
check(completion.object == "chat.completion", f"object: {completion}")
check(completion.choices[0].message.content == "echo: hello", f"content: {completion}")
check(completion.choices[0].finish_reason == "stop", "finish_reason")
check(completion.usage.total_tokens == 15, f"usage: {completion.usage}")

# Streamed, with the usage chunk: the SDK parses every chunk.
stream = client.chat.completions.create(
    model="agent",
    messages=[{"role": "system", "content": "be brief"}] + user("stream me"),
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, chunks = "", None, 0
for chunk in stream:
    chunks += 1
    check(chunk.object == "chat.completion.chunk", f"chunk: {chunk}")
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
check(text == "echo: stream me", f"streamed text: {text!r}")
check(usage is not None and usage.total_tokens == 15, f"streamed usage: {usage}")
check(chunks >= 4, f"chunks: {chunks}")

# Stateful: a session named by X-Session-Id, then by metadata.session_id.
session = f"sdk-py-{uuid.uuid4().hex[:12]}"
client.chat.completions.create(
    model="agent", messages=user("my name is Ada"), extra_headers={"X-Session-Id": session}
)
raw = client.chat.completions.with_raw_response.create(
    model="agent", messages=user("recall my name"), extra_headers={"X-Session-Id": session}
)
check(raw.headers.get("x-session-id") == session, f"X-Session-Id: {raw.headers}")
second = raw.parse()
check(
    second.choices[0].message.content == "you said earlier: my name is Ada",
    f"the second turn remembers the first: {second.choices[0].message.content!r}",
)
third = client.chat.completions.create(
    model="agent", messages=user("recall again"), metadata={"session_id": session}
)
check(third.choices[0].message.content == "you said earlier: recall my name", f"metadata: {third}")
stored = http("GET", f"{URL}/sessions/{session}", KEY)
check(stored["turn_count"] == 3, f"GET /sessions/{session}: {stored}")

# The Responses API: plain, continued with previous_response_id, streamed, read back.
first = client.responses.create(model="agent", input="my pet is a cat", instructions="be brief")
check(first.status == "completed", f"response status: {first.status}")
check(first.output_text == "echo: my pet is a cat", f"output_text: {first.output_text!r}")
check(first.usage.total_tokens == 15, f"response usage: {first.usage}")
follow = client.responses.create(model="agent", input="recall my pet", previous_response_id=first.id)
check(
    follow.output_text == "you said earlier: my pet is a cat",
    f"previous_response_id remembered: {follow.output_text!r}",
)
check(client.responses.retrieve(first.id).output_text == first.output_text, "responses.retrieve")
events = list(client.responses.create(model="agent", input="stream a response", stream=True))
kinds = [event.type for event in events]
check(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"events: {kinds}")
deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
check(deltas == "echo: stream a response", f"streamed deltas: {deltas!r}")
check(events[-1].response.output_text == deltas, "response.completed carries the text")
check(
    client.responses.retrieve(events[-1].response.id).status == "completed",
    "a streamed response is stored",
)
raises(
    openai.NotFoundError,
    lambda: client.responses.create(model="agent", input="hi", previous_response_id="resp_" + "0" * 32),
    "an unknown previous_response_id",
)

# Server-side approvals (this server's current_time needs one): an mcp_approval_request output
# item, answered with an mcp_approval_response after previous_response_id. The fake model's
# "use <tool>" answers with what the tool said, so an approved call is seen to have run.
for approve in (True, False):
    asked = client.responses.create(model="agent", input="use current_time {}")
    request = next((item for item in asked.output if item.type == "mcp_approval_request"), None)
    check(request is not None and request.name == "current_time" and request.server_label == "agent", f"approval request: {asked.output}")
    answered = client.responses.create(
        model="agent",
        previous_response_id=asked.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": approve, "reason": "not now"}],
    )
    said = answered.output_text
    if approve:
        check(said.startswith("current_time said: ") and "unix" in said, f"approved: {said!r}")
    else:
        check(said == "current_time said: rejected by the user: not now", f"rejected: {said!r}")
waiting = client.responses.create(model="agent", input="use current_time {}")
raises(
    openai.BadRequestError,
    lambda: client.responses.create(model="agent", input="go on", previous_response_id=waiting.id),
    "a response waiting for an approval continued without it",
)

# Background responses: created queued, their stream resumed after any event, polled, cancelled.

def wait_for(response_id, statuses):
    deadline = time.monotonic() + 20
    while True:
        polled = client.responses.retrieve(response_id)
        if polled.status in statuses:
            return polled
        if time.monotonic() > deadline:
            raise SystemExit(f"python sdk: FAILED: {response_id} still {polled.status}")
        time.sleep(0.1)


queued = client.responses.create(model="agent", input="pace 150 6 in the background", background=True)
check(queued.status in ("queued", "in_progress"), f"background create: {queued.status}")
seen = []
with client.responses.retrieve(queued.id, stream=True) as stream:
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta":
            break  # the connection drops mid-answer
rest = list(client.responses.retrieve(queued.id, stream=True, starting_after=seen[-1].sequence_number))
numbers = [event.sequence_number for event in seen + rest]
check(numbers == list(range(len(numbers))), f"resumed without a gap or a repeat: {numbers}")
check(rest[-1].type == "response.completed", f"resumed to the end: {[e.type for e in rest]}")
text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
check(text == "word " * 6, f"resumed deltas: {text!r}")
done = wait_for(queued.id, ("completed",))
check(done.output_text == text, f"polled: {done.output_text!r}")
slow = client.responses.create(model="agent", input="sleep 20000 then answer", background=True)
wait_for(slow.id, ("in_progress",))
cancelled = client.responses.cancel(slow.id)
check(cancelled.status == "cancelled", f"responses.cancel: {cancelled.status}")
check(client.responses.retrieve(slow.id).status == "cancelled", "a cancelled response stays so")


def webhook_of(response_id):
    """The webhook delivered for a response, verified by both verifiers, as the SDK reads it."""
    deadline = time.monotonic() + 20
    secret = os.environ["WEBHOOK_SECRET"]
    while time.monotonic() < deadline:
        for body, headers in list(webhooks):
            if json.loads(body)["data"]["id"] == response_id:
                standardwebhooks.Webhook(secret).verify(body, headers)
                return client.webhooks.unwrap(body, headers, secret=secret)
        time.sleep(0.1)
    raise SystemExit(f"python sdk: FAILED: no webhook for {response_id}: {webhooks}")


completed = webhook_of(queued.id)
check(completed.type == "response.completed", f"webhook type: {completed.type}")
check(completed.id.startswith("evt_") and completed.object == "event", f"webhook event: {completed}")
cancelled_event = webhook_of(slow.id)
check(cancelled_event.type == "response.cancelled", f"webhook type: {cancelled_event.type}")
raises(
    Exception,
    lambda: client.webhooks.unwrap(webhooks[0][0], webhooks[0][1], secret="whsec_" + "QUJD" * 8),
    "a webhook checked with another secret",
)

# A run that starts waiting for an approval sends response.requires_action (this server's
# current_time needs one), signed like the others; cancelled, it sends response.cancelled.
waiting = http("POST", f"{URL}/agent", KEY, {"message": "use current_time {}"})
check(waiting["status"] == "requires_action", f"/agent waiting: {waiting}")
deadline = time.monotonic() + 20
kinds = []
while time.monotonic() < deadline and "response.requires_action" not in kinds:
    kinds = []
    for body, headers in list(webhooks):
        event = json.loads(body)
        if event["data"]["id"] == waiting["run_id"]:
            standardwebhooks.Webhook(os.environ["WEBHOOK_SECRET"]).verify(body, headers)
            kinds.append(event["type"])
    time.sleep(0.1)
check(kinds == ["response.requires_action"], f"the waiting run's webhooks: {kinds}")
http("POST", f"{URL}/runs/{waiting['run_id']}/cancel", KEY, {})

# Errors become the SDK's exception classes.
wrong = OpenAI(base_url=f"{URL}/v1", api_key="not-a-key-0123456789", max_retries=0)
raises(openai.AuthenticationError, wrong.models.list, "a wrong key")
missing = raises(
    openai.NotFoundError,
    lambda: client.chat.completions.create(model="gpt-4o", messages=user("hi")),
    "an unknown model",
)
check(missing.code == "model_not_found", f"code: {missing.code}")
bad = raises(
    openai.BadRequestError,
    lambda: client.chat.completions.create(model="agent", messages=user("hi"), n=2),
    "n = 2",
)
check(bad.param == "n", f"param: {bad.param}")

# A quota used up, and a rate limit: RateLimitError; the quota says not to retry.
thrifty = OpenAI(base_url=f"{URL}/v1", api_key=os.environ["AGENT_QUOTA_KEY"])
thrifty.chat.completions.create(model="agent", messages=user("spend it"))
quota = raises(
    openai.RateLimitError,
    lambda: thrifty.chat.completions.create(model="agent", messages=user("more")),
    "a quota used up (default retries: x-should-retry false stops them)",
)
check(quota.code == "insufficient_quota", f"quota code: {quota.code}")
limited = OpenAI(base_url=f"{os.environ['AGENT_LIMITED_URL']}/v1", api_key=KEY, max_retries=0)
limited.models.list()
limited.models.list()
rate = raises(openai.RateLimitError, limited.models.list, "the third request of two a minute")
check(rate.code == "rate_limit_exceeded", f"rate limit code: {rate.code}")
check(int(rate.response.headers["retry-after"]) >= 1, "Retry-After")

# A failure after the stream began: the SDK raises the error event.
fault = os.environ["FAKE_MODEL_URL"]
http("PUT", f"{fault}/fault/500")
try:
    broken = client.chat.completions.create(model="agent", messages=user("fail"), stream=True)
    raises(openai.APIError, lambda: [chunk for chunk in broken], "an error event mid-stream")
finally:
    http("PUT", f"{fault}/fault/none")

print(f"python sdk {openai.__version__}: {checks} checks passed")
