// The Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`) against a real
// weir gateway (run by tests/api/ecosystem/node_clients.rs). WEIR_URL,
// WEIR_KEY and WEIR_AGENT (an `echo` agent) come from the test. Prints one
// `[ok] <check>` line per check and `[pass]` at the end; a failure throws.
import assert from "node:assert/strict";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, generateText, streamText } from "ai";

const weir = createOpenAICompatible({
  name: "weir",
  baseURL: process.env.WEIR_URL + "/v1",
  apiKey: process.env.WEIR_KEY,
  includeUsage: true,
});
const agent = process.env.WEIR_AGENT;
const ok = (what) => console.log(`[ok] ${what}`);

// streamText: the text arrives in parts, then the finish reason and usage.
const result = streamText({ model: weir(agent), prompt: "what time is it?", maxRetries: 0 });
let parts = 0;
let text = "";
for await (const part of result.textStream) {
  parts += 1;
  text += part;
}
assert.match(text, /The current time is/);
assert.ok(parts >= 1);
assert.equal(await result.finishReason, "stop");
const usage = await result.usage;
assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
assert.equal(usage.totalTokens, usage.inputTokens + usage.outputTokens);
ok("streamText");

// generateText: one answer.
const one = await generateText({ model: weir(agent), prompt: "and again, please", maxRetries: 0 });
assert.match(one.text, /You said: "and again, please"/);
assert.equal(one.finishReason, "stop");
ok("generateText");

// A multi-turn conversation in messages form.
const turns = await generateText({
  model: weir(agent),
  maxRetries: 0,
  system: "be brief",
  messages: [
    { role: "user", content: "first" },
    { role: "assistant", content: "ok" },
    { role: "user", content: "second" },
  ],
});
assert.match(turns.text, /second/);
ok("messages");

// Errors surface as the SDK's APICallError with weir's status and body.
await assert.rejects(
  generateText({ model: weir("no-such-model"), prompt: "hi", maxRetries: 0 }),
  (e) => APICallError.isInstance(e) && e.statusCode === 404 && /model_not_found/.test(e.responseBody),
);
ok("unknown model is APICallError 404");
let streamError = null;
const failing = streamText({
  model: weir("no-such-model"),
  prompt: "hi",
  maxRetries: 0,
  onError: ({ error }) => {
    streamError = error;
  },
});
for await (const _ of failing.textStream) {
  // nothing arrives
}
assert.ok(APICallError.isInstance(streamError) && streamError.statusCode === 404, String(streamError));
ok("streamText reports the 404 through onError");
console.log("[pass]");
