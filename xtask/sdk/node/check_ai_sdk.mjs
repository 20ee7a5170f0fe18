// The Vercel AI SDK (`ai` 6 with `@ai-sdk/openai` 3, whose `openai(model)` is the Responses API),
// unchanged, against agent-server: two turns whose history the client keeps, structured output
// from a zod schema, and a client-side `tool()` over Chat Completions (`openai.chat(model)`) and
// over the Responses API, that the SDK runs and whose result the model reads. Run by `cargo xtask sdk` with the environment of
// ../python/check_agent_sdks.py (see there for what the fake model answers).

import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, stepCountIs, tool } from "ai";
import { z } from "zod";

const key = process.env.AGENT_KEY;
let checks = 0;

function check(condition, what) {
  if (!condition) {
    console.error(`ai sdk: FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

const provider = (url) => createOpenAI({ baseURL: `${url}/v1`, apiKey: key });
const model = provider(process.env.AGENT_URL)("agent");

const question = { role: "user", content: "my pet is a hamster" };
const first = await generateText({ model, messages: [question], maxRetries: 0 });
check(first.text === "echo: my pet is a hamster", `turn 1: ${first.text}`);
const second = await generateText({
  model,
  messages: [question, ...first.response.messages, { role: "user", content: "recall my pet" }],
  maxRetries: 0,
});
check(second.text === "you said earlier: my pet is a hamster", `turn 2 on the client's history: ${second.text}`);

const City = z.object({ city: z.string(), population: z.number().int() });
const paris = { city: "Paris", population: 2100000 };
for (const [name, url] of [["fake", process.env.AGENT_URL], ["offline", process.env.AGENT_OFFLINE_URL]]) {
  const { object } = await generateObject({
    model: provider(url)("agent"),
    schema: City,
    prompt: `json ${JSON.stringify(paris)}`,
    maxRetries: 0,
  });
  check(City.safeParse(object).success, `generateObject (${name}): ${JSON.stringify(object)}`);
  if (name === "fake") check(JSON.stringify(object) === JSON.stringify(paris), `generateObject: ${JSON.stringify(object)}`);
}
for (const [api, toolModel] of [
  ["chat", provider(process.env.AGENT_URL).chat("agent")],
  ["responses", provider(process.env.AGENT_URL)("agent")],
]) {
  const lookedUp = [];
  const withTool = await generateText({
    model: toolModel,
    prompt: 'use lookup {"word": "agent"}',
    tools: {
      lookup: tool({
        description: "Looks a word up in the client's dictionary",
        inputSchema: z.object({ word: z.string() }),
        execute: async ({ word }) => {
          lookedUp.push(word);
          return `${word} means one who acts`;
        },
      }),
    },
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  check(
    withTool.text.startsWith("lookup said: ") && withTool.text.includes("agent means one who acts"),
    `tool() (${api}): ${withTool.text}`,
  );
  check(JSON.stringify(lookedUp) === '["agent"]', `tool() ran once (${api}): ${JSON.stringify(lookedUp)}`);
}
console.log(`ai sdk: ${checks} checks passed`);
