// The official `openai` JS client on Chat Completions and /v1/models: node openai_chat.mjs BASE_URL
import assert from "node:assert/strict";
import OpenAI from "openai";
import { USAGE, rejects } from "./helpers.mjs";

const client = new OpenAI({ baseURL: process.argv[2] + "/v1", apiKey: "x", maxRetries: 0, timeout: 10000 });
const ask = (text, extra = {}) => ({ model: "agentrun", messages: [{ role: "user", content: text }], ...extra });

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const tests = {
  async nonStream() {
    const c = await client.chat.completions.create(ask("demo"));
    assert.equal(c.object, "chat.completion");
    assert.match(c.id, /^chatcmpl-/);
    const choice = c.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    assert.match(choice.message.content, /^Hello! You said: 'demo'/);
    assert.equal(choice.message.tool_calls[0].function.name, "get_time");
    assert.deepEqual(JSON.parse(choice.message.tool_calls[0].function.arguments), { timezone: "UTC" });
    const whole = await client.chat.completions.create(ask("whole"));
    assert.deepEqual(whole.usage, USAGE);
    assert.equal(whole.choices[0].message.reasoning_content, "Weather question.");
    const empty = await client.chat.completions.create(ask("empty"));
    assert.equal(empty.choices[0].message.content, "");
    assert.equal(empty.choices[0].finish_reason, "stop");
  },

  async streamWithUsage() {
    const chunks = await collect(
      await client.chat.completions.create(ask("usage", { stream: true, stream_options: { include_usage: true } })),
    );
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, USAGE);
    assert.equal(chunks.slice(0, -1).map((c) => c.choices[0].delta.content ?? "").join(""), "counted words");
    assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
  },

  async streamToolCallChunks() {
    const chunks = await collect(await client.chat.completions.create(ask("chunks", { stream: true })));
    const calls = {};
    for (const c of chunks) {
      for (const tc of c.choices[0]?.delta.tool_calls ?? []) {
        calls[tc.index] ??= { id: tc.id, name: tc.function?.name, args: "" };
        calls[tc.index].args += tc.function?.arguments ?? "";
      }
    }
    assert.deepEqual(calls, {
      0: { id: "call_a", name: "weather", args: '{"city": "Paris"}' },
      1: { id: "call_b", name: "clock", args: '{"tz": "UTC"}' },
    });
    assert.equal(chunks.at(-1).choices[0].finish_reason, "tool_calls");
  },

  async streamEmpty() {
    const chunks = await collect(await client.chat.completions.create(ask("empty", { stream: true })));
    assert.equal(chunks.at(-1).choices[0].finish_reason, "stop");
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? "").join(""), "");
  },

  async streamHelper() {
    // client.chat.completions.stream(): accumulates chunks into a whole completion.
    const runner = client.chat.completions.stream(ask("demo", { stream_options: { include_usage: true } }));
    const deltas = [];
    runner.on("content.delta", ({ delta }) => deltas.push(delta));
    const done = await runner.finalChatCompletion();
    const msg = done.choices[0].message;
    assert.match(msg.content, /^Hello! You said: 'demo'/);
    assert.equal(deltas.join(""), msg.content);
    assert.equal(msg.tool_calls[0].id, "call_demo_clock");
    assert.equal(msg.tool_calls[0].function.arguments, '{"timezone":"UTC"}');
    assert.equal(done.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(done.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
    const interleaved = (await client.chat.completions.stream(ask("interleaved")).finalChatCompletion()).choices[0];
    assert.equal(interleaved.message.content, "while searching");
    assert.deepEqual(interleaved.message.tool_calls, [{ id: "call_i", type: "function", function: { name: "search", arguments: '{"q": "cats"}' } }]);
    const chunked = await client.chat.completions.stream(ask("chunks")).finalChatCompletion();
    assert.deepEqual(
      chunked.choices[0].message.tool_calls.map((t) => [t.id, t.function.name, t.function.arguments]),
      [["call_a", "weather", '{"city": "Paris"}'], ["call_b", "clock", '{"tz": "UTC"}']],
    );
  },

  async runTools() {
    const seen = [];
    const tools = [{
      type: "function",
      function: {
        name: "weather",
        parameters: { type: "object", properties: { city: { type: "string" } } },
        parse: JSON.parse,
        function: (args) => { seen.push(args); return "rain in " + args.city; },
      },
    }];
    for (const stream of [false, true]) {
      const runner = client.chat.completions.runTools({ ...ask("run_tools"), tools, stream });
      assert.equal(await runner.finalContent(), "The tool said: rain in Oslo");
    }
    assert.deepEqual(seen, [{ city: "Oslo" }, { city: "Oslo" }]);
  },

  async errorMidStream() {
    const got = [];
    await rejects(
      (async () => {
        for await (const c of await client.chat.completions.create(ask("error", { stream: true }))) {
          got.push(c.choices[0]?.delta.content ?? "");
        }
      })(),
      OpenAI.APIError,
      (err) => {
        assert.match(err.message, /the upstream model went away/);
        assert.equal(err.type, "server_error");
      },
    );
    assert.equal(got.join(""), "partial answer");
    await rejects(
      client.chat.completions.stream(ask("error_event")).finalChatCompletion(),
      OpenAI.APIError,
      (err) => {
        assert.match(err.message, /quota used up/);
        assert.equal(err.code, "rate_limit_exceeded");
      },
    );
  },

  async errors() {
    await rejects(client.chat.completions.create({ model: "agentrun", messages: [] }), OpenAI.BadRequestError, (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.message, "400 'messages' must contain at least one message.");
      assert.equal(err.param, "messages");
      assert.equal(err.code, "invalid_value");
      assert.equal(err.type, "invalid_request_error");
    });
    await rejects(client.chat.completions.create(ask("fail")), OpenAI.InternalServerError, (err) => {
      assert.equal(err.status, 500);
      assert.equal(err.message, "500 no answer for you");
    });
    // A failed run's 500 says x-should-retry: false, so the client (2 retries by default) runs
    // the agent once; the typed error carries the request id the server sent.
    const retrying = new OpenAI({ baseURL: process.argv[2] + "/v1", apiKey: "x", timeout: 10000 });
    const calls = async () => JSON.parse((await client.chat.completions.create(ask("calls"))).choices[0].message.content).counted_fail;
    const before = await calls();
    await rejects(retrying.chat.completions.create(ask("counted_fail")), OpenAI.InternalServerError, (err) => {
      assert.equal(err.message, "500 failed once");
      assert.match(err.requestID, /^[0-9a-f]{32}$/);
    });
    assert.equal(await calls(), before + 1);
    const { data, request_id } = await client.chat.completions.create(ask("usage")).withResponse();
    assert.match(request_id, /^[0-9a-f]{32}$/);
    assert.equal(data._request_id, request_id);
    await rejects(client.models.retrieve("nope"), OpenAI.NotFoundError, (err) => {
      assert.equal(err.status, 404);
      assert.equal(err.code, "model_not_found");
      assert.match(err.message, /^404 /);
    });
    await rejects(client.get("/no/such/path"), OpenAI.NotFoundError, (err) => assert.equal(err.status, 404));
  },

  async abort() {
    // Leaving a stream early (break, or abort()) closes the request; the server closes the agent.
    const closed = async () => JSON.parse((await client.chat.completions.create(ask("calls"))).choices[0].message.content).slow_closed;
    const before = await closed();
    for await (const chunk of await client.chat.completions.create(ask("slow", { stream: true }))) {
      assert.equal(chunk.choices[0].delta.content, "0 ");
      break;
    }
    const runner = client.chat.completions.stream(ask("slow"));
    runner.on("content.delta", () => runner.abort());
    await rejects(runner.finalChatCompletion(), OpenAI.APIUserAbortError, () => {});
    for (let i = 0; i < 100 && (await closed()) < before + 2; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await closed(), before + 2);
  },

  async models() {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ["agentrun"]);
    const one = await client.models.retrieve("agentrun");
    assert.equal(one.id, "agentrun");
    assert.equal(one.object, "model");
  },
};

const only = process.argv.slice(3);
for (const [name, test] of Object.entries(tests)) {
  if (only.length && !only.includes(name)) continue;
  await test();
  console.log("ok", name);
}
