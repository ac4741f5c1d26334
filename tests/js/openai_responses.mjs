// The official `openai` JS client on the Responses API: node openai_responses.mjs BASE_URL
import assert from "node:assert/strict";
import OpenAI from "openai";
import { USAGE, rejects } from "./helpers.mjs";

const client = new OpenAI({ baseURL: process.argv[2] + "/v1", apiKey: "x", maxRetries: 0, timeout: 10000 });

/** The output items as [type, text or call] pairs, to compare streamed and whole answers. */
function items(response) {
  return response.output.map((item) => {
    if (item.type === "message") return ["message", item.content.map((c) => c.text).join("")];
    if (item.type === "reasoning") return ["reasoning", (item.content ?? []).map((c) => c.text).join("")];
    if (item.type === "function_call") return ["function_call", item.call_id, item.name, item.arguments];
    return [item.type];
  });
}

const DEMO = (text) => [
  ["reasoning", "The user wrote 4 characters. I will check the time."],
  ["function_call", "call_demo_clock", "get_time", '{"timezone":"UTC"}'],
  ["message", text],
];

const tests = {
  async nonStream() {
    const r = await client.responses.create({ model: "agentrun", input: "demo" });
    assert.equal(r.object, "response");
    assert.equal(r.status, "completed");
    assert.match(r.output_text, /^Hello! You said: 'demo'/);
    assert.deepEqual(items(r), DEMO(r.output_text));
    const whole = await client.responses.create({ input: [{ role: "user", content: "whole" }], instructions: "be brief" });
    assert.equal(whole.output_text, "It is sunny.");
    assert.equal(whole.usage.input_tokens, USAGE.prompt_tokens);
    assert.equal(whole.usage.output_tokens, USAGE.completion_tokens);
    assert.equal(whole.usage.total_tokens, USAGE.total_tokens);
    const empty = await client.responses.create({ input: "empty" });
    assert.equal(empty.status, "completed");
    assert.equal(empty.output_text, "");
  },

  async streamCreate() {
    const events = [];
    for await (const event of await client.responses.create({ input: "chunks", stream: true })) events.push(event);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    assert.equal(events[0].type, "response.created");
    const done = events.at(-1);
    assert.equal(done.type, "response.completed");
    assert.deepEqual(items(done.response), [
      ["message", "Let me look. "],
      ["function_call", "call_a", "weather", '{"city": "Paris"}'],
      ["function_call", "call_b", "clock", '{"tz": "UTC"}'],
    ]);
    const args = {};
    for (const e of events.filter((e) => e.type === "response.function_call_arguments.delta")) {
      args[e.item_id] = (args[e.item_id] ?? "") + e.delta;
    }
    assert.deepEqual(Object.values(args), ['{"city": "Paris"}', '{"tz": "UTC"}']);
  },

  async streamHelper() {
    // client.responses.stream(): the SDK's accumulator rebuilds the response from the deltas.
    for (const input of ["demo", "chunks", "interleaved", "tool_results", "usage", "empty", "whole"]) {
      const stream = client.responses.stream({ model: "agentrun", input });
      const text = [];
      stream.on("response.output_text.delta", (e) => text.push(e.delta));
      const final = await stream.finalResponse();
      const whole = await client.responses.create({ model: "agentrun", input });
      assert.equal(final.status, "completed", input);
      assert.equal(text.join(""), final.output_text, input);
      if (input !== "demo") assert.deepEqual(items(final), items(whole), input);
      else assert.deepEqual(items(final), DEMO(final.output_text));
    }
  },

  async interleavedCall() {
    // Text and reasoning between the fragments of one call: one function_call item, whole.
    const final = await client.responses.stream({ input: "interleaved" }).finalResponse();
    assert.deepEqual(items(final), [
      ["function_call", "call_i", "search", '{"q": "cats"}'],
      ["message", "while "],
      ["reasoning", "hm"],
      ["message", "searching"],
    ]);
  },

  async failedStream() {
    const stream = client.responses.stream({ input: "error" });
    const types = [];
    stream.on("event", (e) => types.push(e.type));
    const final = await stream.finalResponse();
    assert.equal(types.at(-1), "response.failed");
    assert.equal(final.status, "failed");
    assert.equal(final.error.code, "server_error");
    assert.equal(final.error.message, "the upstream model went away");
    assert.equal(final.output_text, "partial answer");
    const coded = await client.responses.stream({ input: "error_event" }).finalResponse();
    assert.deepEqual([coded.status, coded.error], ["failed", { code: "rate_limit_exceeded", message: "quota used up" }]);
  },

  async errors() {
    await rejects(client.responses.create({ input: "fail" }), OpenAI.InternalServerError, (err) => {
      assert.equal(err.message, "500 no answer for you");
    });
    await rejects(client.responses.create({ input: 42 }), OpenAI.BadRequestError, (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.param, "input");
    });
    await rejects(client.responses.retrieve("resp_nope"), OpenAI.NotFoundError, (err) => assert.equal(err.status, 404));
  },
};

const only = process.argv.slice(3);
for (const [name, test] of Object.entries(tests)) {
  if (only.length && !only.includes(name)) continue;
  await test();
  console.log("ok", name);
}
