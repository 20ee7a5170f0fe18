// The official `openai` Node SDK (6.x; 7.x needs Node 22), unchanged, against agent-server's
// OpenAI-compatible API. Run by `cargo xtask sdk` with the same environment as
// ../python/check_openai.py (see there).

import { readFileSync } from "node:fs";

import OpenAI from "openai";

const sdk = JSON.parse(readFileSync(new URL("./node_modules/openai/package.json", import.meta.url)));

const url = process.env.AGENT_URL;
const key = process.env.AGENT_KEY;
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
let checks = 0;

function check(condition, what) {
  if (!condition) {
    console.error(`node sdk: FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

async function raises(errorClass, call, what) {
  try {
    await call();
  } catch (error) {
    check(error instanceof errorClass, `${what}: raised ${error?.constructor?.name}: ${error}`);
    return error;
  }
  check(false, `${what}: nothing raised`);
}

const user = (text) => [{ role: "user", content: text }];

const models = [];
for await (const model of client.models.list()) models.push(model.id);
check(JSON.stringify(models) === '["agent"]', `models.list: ${models}`);

const completion = await client.chat.completions.create({ model: "agent", messages: user("hello") });
check(completion.choices[0].message.content === "echo: hello", `content: ${JSON.stringify(completion)}`);
check(completion.usage.total_tokens === 15, "usage");

const stream = await client.chat.completions.create({
  model: "agent",
  messages: user("stream me"),
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  check(chunk.object === "chat.completion.chunk", `chunk: ${JSON.stringify(chunk)}`);
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
check(text === "echo: stream me", `streamed text: ${text}`);
check(usage?.total_tokens === 15, `streamed usage: ${JSON.stringify(usage)}`);

const session = `sdk-node-${Math.random().toString(36).slice(2, 12)}`;
await client.chat.completions.create(
  { model: "agent", messages: user("my name is Grace") },
  { headers: { "X-Session-Id": session } },
);
const { data: second, response } = await client.chat.completions
  .create({ model: "agent", messages: user("recall my name") }, { headers: { "X-Session-Id": session } })
  .withResponse();
check(response.headers.get("x-session-id") === session, "X-Session-Id answered");
check(second.choices[0].message.content === "you said earlier: my name is Grace", `remembered: ${second.choices[0].message.content}`);
const stored = await (await fetch(`${url}/sessions/${session}`, { headers: { Authorization: `Bearer ${key}` } })).json();
check(stored.turn_count === 2, `GET /sessions/${session}: ${JSON.stringify(stored)}`);

const first = await client.responses.create({ model: "agent", input: "my pet is a dog" });
check(first.output_text === "echo: my pet is a dog", `output_text: ${first.output_text}`);
const follow = await client.responses.create({ model: "agent", input: "recall my pet", previous_response_id: first.id });
check(follow.output_text === "you said earlier: my pet is a dog", `previous_response_id: ${follow.output_text}`);
const events = [];
for await (const event of await client.responses.create({ model: "agent", input: "stream a response", stream: true })) {
  events.push(event);
}
const deltas = events.filter((event) => event.type === "response.output_text.delta").map((event) => event.delta).join("");
check(events.at(-1).type === "response.completed", `last event: ${events.at(-1).type}`);
check(deltas === "echo: stream a response", `streamed deltas: ${deltas}`);
const retrieved = await client.responses.retrieve(events.at(-1).response.id);
check(retrieved.output_text === deltas, `responses.retrieve: ${retrieved.output_text}`);

const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: "not-a-key-0123456789", maxRetries: 0 });
await raises(OpenAI.AuthenticationError, () => wrong.models.list(), "a wrong key");
const missing = await raises(
  OpenAI.NotFoundError,
  () => client.chat.completions.create({ model: "gpt-4o", messages: user("hi") }),
  "an unknown model",
);
check(missing.code === "model_not_found", `code: ${missing.code}`);
const limited = new OpenAI({ baseURL: `${process.env.AGENT_LIMITED_URL}/v1`, apiKey: key, maxRetries: 0 });
await raises(
  OpenAI.RateLimitError,
  async () => {
    for (let call = 0; call < 5; call += 1) await limited.models.list();
  },
  "a rate limit",
);

await fetch(`${process.env.FAKE_MODEL_URL}/fault/500`, { method: "PUT" });
try {
  const broken = await client.chat.completions.create({ model: "agent", messages: user("fail"), stream: true });
  await raises(OpenAI.APIError, async () => {
    for await (const chunk of broken) void chunk;
  }, "an error event mid-stream");
} finally {
  await fetch(`${process.env.FAKE_MODEL_URL}/fault/none`, { method: "PUT" });
}

console.log(`node sdk ${sdk.version}: ${checks} checks passed`);
