// @ag-ui/client's HttpAgent against /ag-ui/agent: node agui_client.mjs BASE_URL
// HttpAgent validates every event against the 1.0 schemas and checks their order; a failure
// rejects runAgent (or reaches onRunFailed). What it only warns about (a patch that does not
// apply, an event naming an unknown message) goes to console.warn, so any warning fails here.
import assert from "node:assert/strict";
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const URL_ = process.argv[2] + "/ag-ui/agent";
const warnings = [];
for (const level of ["warn", "error"]) console[level] = (...args) => warnings.push(args.map(String).join(" "));

/** One run of a fresh (or given) agent; returns what the client saw and built. */
async function run(text, { agent, params = {} } = {}) {
  agent ??= new HttpAgent({ url: URL_, threadId: "t-" + text });
  agent.addMessage({ id: "u-" + Math.random().toString(36).slice(2), role: "user", content: text });
  const seen = { types: [], finished: null, errors: [], failed: [] };
  const result = await agent.runAgent({ runId: "r-" + text, ...params }, {
    onEvent: ({ event }) => { seen.types.push(event.type); },
    onRunFinishedEvent: ({ event, outcome, pendingToolCallIds, interrupts }) => {
      seen.finished = { event, outcome, pendingToolCallIds, interrupts };
    },
    onRunErrorEvent: ({ event }) => { seen.errors.push(event); },
    onRunFailed: ({ error }) => { seen.failed.push(error?.message); },
  });
  assert.deepEqual(seen.failed, [], `${text}: the client failed the run`);
  assert.deepEqual(warnings, [], `${text}: the client warned`);
  const terminal = seen.types.filter((t) => t === "RUN_FINISHED" || t === "RUN_ERROR");
  assert.equal(terminal.length, 1, `${text}: ${seen.types}`);
  assert.equal(seen.types[0], "RUN_STARTED");
  return { agent, seen, result, added: result.newMessages };
}

/** Messages without their generated ids, for comparison. */
const shape = (messages) => messages.map(({ id, ...rest }) => rest);

const tests = {
  async demo() {
    const { agent, seen, added } = await run("demo");
    assert.equal(seen.finished.outcome, "success");
    assert.deepEqual(seen.finished.pendingToolCallIds, []); // the call got its result
    const [reasoning, call, tool, answer] = added;
    assert.deepEqual([reasoning.role, call.role, tool.role, answer.role], ["reasoning", "assistant", "tool", "assistant"]);
    assert.equal(reasoning.content, "The user wrote 4 characters. I will check the time.");
    assert.deepEqual(call.toolCalls, [{ id: "call_demo_clock", type: "function", function: { name: "get_time", arguments: '{"timezone":"UTC"}' } }]);
    assert.equal(tool.toolCallId, "call_demo_clock");
    assert.match(answer.content, /^Hello! You said: 'demo'/);
    assert.equal(agent.messages.length, 5);
  },

  async toolCallChunks() {
    const { seen, added } = await run("chunks");
    assert.deepEqual(seen.finished.pendingToolCallIds, ["call_a", "call_b"]);
    assert.deepEqual(shape(added), [{
      role: "assistant",
      content: "Let me look. ",
      toolCalls: [
        { id: "call_a", type: "function", function: { name: "weather", arguments: '{"city": "Paris"}' } },
        { id: "call_b", type: "function", function: { name: "clock", arguments: '{"tz": "UTC"}' } },
      ],
    }]);
  },

  async interleaved() {
    // Text and reasoning between the id-less fragments of one call: still one call, whole.
    const { seen, added } = await run("interleaved");
    assert.deepEqual(seen.finished.pendingToolCallIds, ["call_i"]);
    const calls = added.flatMap((m) => m.toolCalls ?? []);
    assert.deepEqual(calls, [{ id: "call_i", type: "function", function: { name: "search", arguments: '{"q": "cats"}' } }]);
    assert.deepEqual(added.filter((m) => m.content).map((m) => [m.role, m.content]), [
      ["assistant", "while "], ["reasoning", "hm"], ["assistant", "searching"],
    ]);
  },

  async parallelCalls() {
    // Two calls with no text before them are one assistant message (OpenAI's shape), so the
    // results a front-end appends make a history an OpenAI model takes.
    const { agent, seen, added } = await run("parallel");
    assert.deepEqual(seen.finished.pendingToolCallIds, ["call_p1", "call_p2"]);
    assert.deepEqual(shape(added).map((m) => [m.role, (m.toolCalls ?? []).map((c) => c.id)]), [
      ["reasoning", []],
      ["assistant", ["call_p1", "call_p2"]],
    ]);
    for (const id of seen.finished.pendingToolCallIds) {
      agent.addMessage({ id: "r-" + id, role: "tool", toolCallId: id, content: "ran " + id });
    }
    const got = (await run("inspect", { agent })).agent.state.messages;
    assert.deepEqual(got.map((m) => [m.role, m.toolCalls.join() || m.toolCallId]), [
      ["user", null], ["assistant", "call_p1,call_p2"], ["tool", "call_p1"], ["tool", "call_p2"], ["user", null],
    ]);
  },

  async toolResults() {
    // call_r's result comes in chunks, sent at the end of the run; call_s is made meanwhile, so
    // both are one assistant message (as on Chat Completions), each result filed after it.
    const { seen, added } = await run("tool_results");
    assert.deepEqual(seen.finished.pendingToolCallIds, []);
    assert.deepEqual(shape(added).map((m) => [m.role, m.content ?? m.toolCalls.map((c) => c.function.arguments)]), [
      ["reasoning", "thinking"],
      ["assistant", ['{"q":1}', "{}"]],
      ["tool", '{"ok":true}'],
      ["tool", "found"],
      ["assistant", "done"],
    ]);
  },

  async wholeResponse() {
    const { added } = await run("whole");
    assert.deepEqual(shape(added), [
      { role: "reasoning", content: "Weather question." },
      { role: "assistant", content: "It is sunny.", toolCalls: [{ id: "call_w", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } }] },
    ]);
  },

  async usage() {
    for (const text of ["usage", "whole"]) {
      const { seen } = await run(text);
      assert.deepEqual(seen.finished.event.usage, [{ inputTokens: 7, outputTokens: 5, totalTokens: 12 }]);
    }
    const { seen } = await run("empty");
    assert.equal(seen.finished.event.usage, undefined);
  },

  async empty() {
    const { seen, added } = await run("empty");
    assert.deepEqual(seen.types, ["RUN_STARTED", "RUN_FINISHED"]);
    assert.deepEqual(added, []);
  },

  async errors() {
    for (const [text, message, code, partial] of [
      ["error", "the upstream model went away", undefined, "partial answer"],
      ["error_event", "quota used up", "rate_limit_exceeded", "partial"],
      ["fail", "no answer for you", undefined, null],
    ]) {
      const { seen, added } = await run(text);
      assert.equal(seen.finished, null);
      assert.equal(seen.errors.length, 1);
      assert.equal(seen.errors[0].message, message);
      assert.equal(seen.errors[0].code, code);
      assert.deepEqual(shape(added), partial === null ? [] : [{ role: "assistant", content: partial }]);
    }
  },

  async state() {
    const { agent, seen } = await run("state");
    assert.deepEqual(agent.state, { count: 2, items: ["a", "b"] });
    assert.ok(seen.types.includes("CUSTOM"));
  },

  async hitl() {
    const first = await run("hitl");
    const agent = first.agent;
    assert.equal(first.seen.finished.outcome, "interrupt");
    assert.deepEqual(agent.pendingInterrupts, [{
      id: "ask-1",
      reason: "approval",
      message: "Delete it?",
      responseSchema: { type: "object", properties: { approved: { type: "boolean" } }, required: ["approved"] },
      metadata: { options: ["yes", "no"] },
    }]);
    assert.deepEqual(agent.state, { status: "awaiting" });
    const resume = buildResumeArray(agent.pendingInterrupts, { "ask-1": { status: "resolved", payload: { approved: true } } });
    const result = await agent.runAgent({ runId: "r-resume", resume });
    assert.deepEqual(shape(result.newMessages), [{ role: "assistant", content: "Deleted." }]);
    assert.deepEqual(agent.state, { status: "done" });
    assert.deepEqual(agent.pendingInterrupts, []);
    assert.deepEqual(warnings, []);
  },

  async approveCall() {
    // The first run proposes a call and asks to run it; the resumed run gives its result. The
    // call the client holds keeps its name and arguments; the result is filed under it.
    const { agent, seen } = await run("approve_call");
    assert.deepEqual(seen.finished.interrupts.map((i) => [i.id, i.toolCallId]), [["run-it", "call_del"]]);
    const resume = buildResumeArray(agent.pendingInterrupts, { "run-it": { status: "resolved", payload: {} } });
    const result = await agent.runAgent({ runId: "r-approved", resume });
    assert.deepEqual(warnings, []);
    assert.deepEqual(shape(agent.messages.slice(1)), [
      { role: "assistant", toolCalls: [{ id: "call_del", type: "function", function: { name: "delete_file", arguments: '{"path":"x"}' } }] },
      { role: "tool", toolCallId: "call_del", content: "deleted" },
      { role: "assistant", content: "Done." },
    ]);
    assert.equal(result.newMessages.length, 2);
  },

  async conversation() {
    // A thread goes on: the client sends back everything it built (reasoning, tool calls, tool
    // results) with its state, tools, context and forwarded props; the agent sees all of it.
    const agent = new HttpAgent({ url: URL_, threadId: "thread-9", initialState: { mood: "calm" } });
    for (const text of ["demo", "chunks", "whole"]) await run(text, { agent });
    const params = {
      tools: [{ name: "weather", description: "forecast", parameters: { type: "object", properties: {} } }],
      context: [{ description: "locale", value: "en" }],
      forwardedProps: { plan: "pro" },
    };
    const { agent: same } = await run("inspect", { agent, params });
    const got = same.state;
    assert.equal(got.threadId, "thread-9");
    assert.equal(got.runId, "r-inspect");
    assert.deepEqual(got.state, { mood: "calm" });
    assert.deepEqual(got.tools, ["weather"]);
    assert.deepEqual(got.context, params.context);
    assert.deepEqual(got.forwardedProps, params.forwardedProps);
    // Every message reaches the agent but the reasoning ones, which the server leaves out.
    const brief = (m) => [m.role, m.text.slice(0, 13), m.toolCalls.join(), m.toolCallId];
    assert.deepEqual(got.messages.map(brief), [
      ["user", "demo", "", null],
      ["assistant", "", "call_demo_clock", null],
      ["tool", agent.messages[3].content.slice(0, 13), "", "call_demo_clock"],
      ["assistant", "Hello! You sa", "", null],
      ["user", "chunks", "", null],
      ["assistant", "Let me look. ", "call_a,call_b", null],
      ["user", "whole", "", null],
      ["assistant", "It is sunny.", "call_w", null],
      ["user", "inspect", "", null],
    ]);
  },

  async abort() {
    // abortRun() closes the request; the server closes the agent, and the client stays valid.
    const closed = async () => JSON.parse((await run("calls")).added[0].content).slow_closed;
    const before = await closed();
    const agent = new HttpAgent({ url: URL_, threadId: "t-abort" });
    agent.addMessage({ id: "u-slow", role: "user", content: "slow" });
    const running = agent.runAgent({}, { onTextMessageContentEvent: () => agent.abortRun() });
    await running.catch(() => {});
    assert.equal(agent.isRunning, false);
    for (let i = 0; i < 100 && (await closed()) < before + 1; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await closed(), before + 1);
    assert.deepEqual(warnings, []);
  },

  async httpError() {
    const agent = new HttpAgent({ url: process.argv[2] + "/ag-ui/nowhere", threadId: "t" });
    agent.addMessage({ id: "u1", role: "user", content: "hi" });
    await assert.rejects(agent.runAgent({}, { onRunFailed: () => {} }), (err) => {
      assert.equal(err.status, 404);
      assert.equal(typeof err.payload.error.message, "string");
      return true;
    });
    warnings.length = 0; // the client logs the failed request
  },
};

const only = process.argv.slice(3);
for (const [name, test] of Object.entries(tests)) {
  if (only.length && !only.includes(name)) continue;
  await test();
  console.log("ok", name);
}
