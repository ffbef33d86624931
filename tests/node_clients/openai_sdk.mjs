// The official openai Node SDK against a real weir gateway (run by
// tests/api/ecosystem/node_clients.rs). WEIR_URL, WEIR_KEY and WEIR_AGENT
// (an `echo` agent) come from the test. Prints one `[ok] <check>` line per
// check and `[pass]` at the end; any failure throws (exit code 1).
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = process.env.WEIR_URL + "/v1";
const agent = process.env.WEIR_AGENT;
const client = new OpenAI({ baseURL: base, apiKey: process.env.WEIR_KEY, maxRetries: 0 });
const ok = (what) => console.log(`[ok] ${what}`);

// Streaming with the usage chunk: one completion id, text, a stop, usage.
const stream = await client.chat.completions.create({
  model: agent,
  messages: [{ role: "user", content: "what time is it?" }],
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let finish = null;
let usage = null;
const ids = new Set();
for await (const chunk of stream) {
  ids.add(chunk.id);
  assert.equal(chunk.object, "chat.completion.chunk");
  const choice = chunk.choices[0];
  if (choice?.delta?.content) text += choice.delta.content;
  if (choice?.finish_reason) finish = choice.finish_reason;
  if (chunk.usage) usage = chunk.usage;
}
assert.match(text, /The current time is/);
assert.equal(ids.size, 1, "one completion id across the stream");
assert.equal(finish, "stop");
assert.ok(usage && usage.total_tokens > 0, "a usage chunk");
assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
ok("stream");

// Without streaming: one chat.completion.
const done = await client.chat.completions.create({
  model: agent,
  messages: [{ role: "user", content: "and again, please" }],
});
assert.equal(done.object, "chat.completion");
assert.match(done.choices[0].message.content, /You said: "and again, please"/);
assert.equal(done.choices[0].finish_reason, "stop");
ok("non-streaming");

// The SDK's own error classes read weir's errors.
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
  (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found",
);
ok("unknown model is NotFoundError model_not_found");
const stranger = new OpenAI({ baseURL: base, apiKey: "wk_not_a_real_key_0123456789abcdefghij", maxRetries: 0 });
await assert.rejects(
  stranger.chat.completions.create({ model: agent, messages: [{ role: "user", content: "hi" }] }),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
);
ok("a bad key is AuthenticationError");
await assert.rejects(
  client.chat.completions.create({ model: agent, messages: [] }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && typeof e.message === "string",
);
ok("no messages is BadRequestError");

// The models list the SDK pages through names the agent.
const models = [];
for await (const m of client.models.list()) models.push(m.id);
assert.ok(models.includes(agent), `models: ${models}`);
ok("models.list");

// Abandoning a stream half-way is clean for the SDK (and the next call works).
const cut = await client.chat.completions.create({
  model: agent,
  messages: [{ role: "user", content: "a longer question to be cut short" }],
  stream: true,
});
for await (const chunk of cut) {
  if (chunk.choices[0]?.delta?.content) break;
}
const again = await client.chat.completions.create({ model: agent, messages: [{ role: "user", content: "still there?" }] });
assert.match(again.choices[0].message.content, /still there/);
ok("abandon a stream, then call again");
console.log("[pass]");
