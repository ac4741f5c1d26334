// agentrun playground: chats with this server's own OpenAI and AG-UI endpoints.
// Plain JavaScript, no framework, no build step. Agent output is only ever written with
// textContent (never parsed as HTML), so an agent cannot inject markup into the page.
(function () {
  "use strict";

  const KEY_STORAGE = "agentrun-playground-key";
  const PROTOCOL_STORAGE = "agentrun-playground-protocol";
  const RAW_LIMIT = 200000; // characters kept in the raw panel

  const root = document.documentElement.dataset;
  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), empty: $("empty"), input: $("input"), composer: $("composer"),
    send: $("send"), stop: $("stop"), status: $("status"), state: $("state"),
    statePanel: $("state-panel"), raw: $("raw"), error: $("error"), errorText: $("error-text"),
    keyBox: $("key-box"), keyInput: $("key-input"), keyToggle: $("key-toggle"),
  };

  // -- where the endpoints are ---------------------------------------------------------------

  // The page path comes without its mount prefix; whatever precedes it in location.pathname is
  // the app's base, so the endpoints resolve under a FastAPI mount or a --root-path too.
  function baseUrl() {
    let path = location.pathname.replace(/\/+$/, "");
    const page = root.page ? "/" + root.page : "";
    if (page && path.endsWith(page)) path = path.slice(0, -page.length);
    return path + "/";
  }

  function endpoint(protocol) {
    const rel = protocol === "agui" ? root.agui : root.openai;
    return baseUrl() + rel;
  }

  // -- conversation --------------------------------------------------------------------------

  // History in a neutral shape, converted per protocol on each request:
  // {role: "user"|"assistant"|"tool", content, toolCalls?: [{id, name, arguments}], toolCallId?}
  let history = [];
  let threadId = newId("thread");
  let agentState = {};
  let controller = null; // AbortController of the run in flight
  let pendingInterrupt = null; // the form of an AG-UI interrupt waiting for an answer
  // Tool calls an interrupt asks about, kept out of history until the resumed run answers them
  let pendingCalls = [];
  let conversation = 0; // bumped by "New chat", so a run stopped by it stays out of the new one

  function newId(prefix) {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return prefix + "_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function protocol() {
    const checked = document.querySelector('input[name="protocol"]:checked');
    return checked ? checked.value : "openai";
  }

  function openaiMessages() {
    return history.map((m) => {
      if (m.role === "tool") return { role: "tool", tool_call_id: m.toolCallId, content: m.content };
      const out = { role: m.role, content: m.content };
      if (m.toolCalls && m.toolCalls.length) {
        out.tool_calls = m.toolCalls.map((c) => ({
          id: c.id, type: "function", function: { name: c.name, arguments: c.arguments },
        }));
        if (!m.content) out.content = null;
      }
      return out;
    });
  }

  // With the calls an interrupt asks about when resuming: the server then knows them (a result
  // for an unknown call gets a made-up, nameless one) and the agent sees what it made.
  function aguiMessages(calls) {
    const messages = calls && calls.length
      ? [...history, { id: newId("msg"), role: "assistant", content: "", toolCalls: calls }]
      : history;
    return messages.map((m) => {
      const out = { id: m.id, role: m.role };
      if (m.role === "tool") {
        out.toolCallId = m.toolCallId;
        out.content = m.content;
        return out;
      }
      if (m.content || m.role !== "assistant") out.content = m.content;
      if (m.toolCalls && m.toolCalls.length) {
        out.toolCalls = m.toolCalls.map((c) => ({
          id: c.id, type: "function", function: { name: c.name, arguments: c.arguments },
        }));
      }
      return out;
    });
  }

  // A finished (or stopped) answer back into history. Only tool calls that got a result are
  // kept: a call without its result would make the next request invalid for most models.
  // A call an interrupt names waits in pendingCalls: the resumed run may bring its result.
  function rememberAnswer(view, interrupts) {
    let current = { id: newId("msg"), role: "assistant", content: "", toolCalls: [] };
    let results = [];
    const flush = () => {
      if (current.content || current.toolCalls.length) history.push(current);
      history.push(...results);
      current = { id: newId("msg"), role: "assistant", content: "", toolCalls: [] };
      results = [];
    };
    for (const part of view.parts) {
      if (part.kind === "text") {
        if (results.length) flush();
        current.content += part.text;
      } else if (part.kind === "tool" && part.result !== undefined) {
        if (results.length && current.content) flush();
        current.toolCalls.push({ id: part.id, name: part.name, arguments: part.args });
        results.push({ id: newId("msg"), role: "tool", toolCallId: part.id, content: part.result });
      }
    }
    flush();
    const asked = new Set((interrupts || []).map((item) => item.toolCallId).filter(Boolean));
    pendingCalls = view.parts
      .filter((p) => p.kind === "tool" && p.result === undefined && asked.has(p.id))
      .map((p) => ({ id: p.id, name: p.name, arguments: p.args }));
  }

  // -- rendering -----------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function addTurn(role, label) {
    ui.empty.hidden = true;
    const turn = el("article", "turn " + role);
    turn.append(el("h3", "who", label));
    const body = el("div", "body");
    turn.append(body);
    ui.log.append(turn);
    scrollDown();
    return { turn, body };
  }

  function addUserTurn(text) {
    const { body } = addTurn("user", "You");
    body.append(el("div", "text", text));
  }

  function pretty(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return text;
    }
  }

  // One assistant answer being streamed: an ordered list of parts (reasoning, tool, text).
  class AnswerView {
    constructor(protocolName, resumedCalls) {
      const label = protocolName === "agui" ? "Agent (AG-UI)" : "Agent (OpenAI)";
      const { turn, body } = addTurn("assistant", label);
      this.turn = turn;
      this.body = body;
      this.parts = [];
      this.texts = new Map(); // messageId -> part
      this.reasonings = new Map();
      this.tools = new Map(); // toolCallId (or OpenAI index) -> part
      // calls of the interrupted run: a result for one is shown with its name and arguments
      this.resumedCalls = new Map((resumedCalls || []).map((c) => [c.id, c]));
      turn.setAttribute("aria-busy", "true");
    }

    lastOf(kind) {
      const last = this.parts[this.parts.length - 1];
      return last && last.kind === kind && !last.closed ? last : null;
    }

    text(delta, key) {
      let part = key !== undefined ? this.texts.get(key) : this.lastOf("text");
      if (!part) {
        part = { kind: "text", text: "", node: el("div", "text") };
        this.body.append(part.node);
        this.parts.push(part);
        if (key !== undefined) this.texts.set(key, part);
      }
      part.text += delta;
      part.node.textContent = part.text;
      scrollDown();
    }

    reasoning(delta, key) {
      let part = key !== undefined ? this.reasonings.get(key) : this.lastOf("reasoning");
      if (!part) {
        const node = el("details", "reasoning");
        node.open = true;
        node.append(el("summary", "", "Reasoning"));
        const textNode = el("div", "reasoning-text");
        node.append(textNode);
        part = { kind: "reasoning", text: "", node, textNode };
        this.body.append(node);
        this.parts.push(part);
        if (key !== undefined) this.reasonings.set(key, part);
      }
      part.text += delta;
      part.textNode.textContent = part.text;
      scrollDown();
    }

    close(kind, key) {
      const map = kind === "text" ? this.texts : kind === "reasoning" ? this.reasonings : this.tools;
      const part = map.get(key);
      if (part) part.closed = true;
    }

    tool(key, id, name) {
      let part = this.tools.get(key);
      if (!part) {
        const node = el("section", "tool");
        const title = el("div", "tool-title");
        title.append(el("span", "tool-label", "Tool call "), el("code", "tool-name", name || ""));
        const argsNode = el("pre", "tool-args", "");
        node.append(title, argsNode);
        part = { kind: "tool", id: id || key, name: name || "", args: "", node, argsNode, title };
        this.body.append(node);
        this.parts.push(part);
        this.tools.set(key, part);
      } else if (name && !part.name) {
        part.name = name;
        part.title.querySelector(".tool-name").textContent = name;
      }
      scrollDown();
      return part;
    }

    toolArgs(key, delta) {
      const part = this.tools.get(key) || this.tool(key, key, "");
      part.args += delta;
      part.argsNode.textContent = pretty(part.args);
    }

    resumedCall(key) {
      const call = this.resumedCalls.get(key);
      if (!call) return null;
      const part = this.tool(key, call.id, call.name);
      part.args = call.arguments;
      part.argsNode.textContent = pretty(part.args);
      return part;
    }

    toolResult(key, content) {
      const part = this.tools.get(key) || this.resumedCall(key) || this.tool(key, key, "");
      part.result = content;
      const box = el("div", "tool-result");
      box.append(el("div", "tool-label", "Result"), el("pre", "", pretty(content)));
      part.node.append(box);
      scrollDown();
    }

    note(text, className) {
      this.body.append(el("p", "note " + (className || ""), text));
      scrollDown();
    }

    finish(text) {
      this.turn.removeAttribute("aria-busy");
      if (text) this.note(text, "meta");
    }
  }

  // -- errors, status, raw panel -------------------------------------------------------------

  function showError(text) {
    ui.errorText.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.errorText.textContent = "";
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  let rawLength = 0;
  function raw(line) {
    ui.raw.append(line + "\n");
    rawLength += line.length + 1;
    if (rawLength > RAW_LIMIT) {
      // Bounded: keep the newer half.
      ui.raw.textContent = ui.raw.textContent.slice(-RAW_LIMIT / 2);
      rawLength = ui.raw.textContent.length;
    }
  }

  // -- JSON Patch (RFC 6902) for AG-UI STATE_DELTA -------------------------------------------

  function pointer(path) {
    if (path === "") return [];
    if (path[0] !== "/") throw new Error("bad JSON pointer " + JSON.stringify(path));
    return path.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  }

  // A pointer names the document's own members only: "__proto__" or "constructor" must not
  // lead into the page's Object.prototype (a patch from the agent would change every object).
  const hasOwn = (node, key) => Object.prototype.hasOwnProperty.call(node, key);

  function parentOf(doc, path) {
    const keys = pointer(path);
    const last = keys.pop();
    let node = doc;
    for (const key of keys) {
      if (node === null || typeof node !== "object" || !hasOwn(node, key)) {
        throw new Error("no such path " + path);
      }
      node = node[key];
    }
    if (node === null || typeof node !== "object") throw new Error("no such path " + path);
    return { node, last };
  }

  function getAt(doc, path) {
    let node = doc;
    for (const key of pointer(path)) {
      if (node === null || typeof node !== "object" || !hasOwn(node, key)) {
        throw new Error("no such path " + path);
      }
      node = node[key];
    }
    return node;
  }

  function clone(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  function addAt(doc, path, value) {
    if (path === "") return value;
    const { node, last } = parentOf(doc, path);
    if (Array.isArray(node)) {
      const index = last === "-" ? node.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > node.length) {
        throw new Error("bad array index in " + path);
      }
      node.splice(index, 0, value);
    } else {
      // A member named "__proto__" is a member (as JSON.parse makes it), not the prototype.
      Object.defineProperty(node, last, {
        value, writable: true, enumerable: true, configurable: true,
      });
    }
    return doc;
  }

  function removeAt(doc, path) {
    const { node, last } = parentOf(doc, path);
    if (Array.isArray(node)) {
      const index = Number(last);
      if (!Number.isInteger(index) || index < 0 || index >= node.length) {
        throw new Error("bad array index in " + path);
      }
      node.splice(index, 1);
    } else {
      if (!hasOwn(node, last)) throw new Error("no such path " + path);
      delete node[last];
    }
    return doc;
  }

  function applyPatch(doc, ops) {
    let out = clone(doc);
    for (const op of ops) {
      switch (op.op) {
        case "add": out = addAt(out, op.path, clone(op.value)); break;
        case "remove": out = removeAt(out, op.path); break;
        case "replace":
          if (op.path === "") { out = clone(op.value); break; }
          out = addAt(removeAt(out, op.path), op.path, clone(op.value)); break;
        case "move": {
          const value = getAt(out, op.from);
          out = addAt(removeAt(out, op.from), op.path, value); break;
        }
        case "copy": out = addAt(out, op.path, clone(getAt(out, op.from))); break;
        case "test":
          if (JSON.stringify(getAt(out, op.path)) !== JSON.stringify(op.value)) {
            throw new Error("test failed at " + op.path);
          }
          break;
        default: throw new Error("unknown patch op " + JSON.stringify(op.op));
      }
    }
    return out;
  }

  function showState() {
    ui.state.textContent = JSON.stringify(agentState, null, 2);
  }

  // -- SSE over fetch ------------------------------------------------------------------------

  // Reads `text/event-stream` frames (WHATWG HTML, "Server-sent events"): events end at a blank
  // line; `data:` lines are joined with "\n"; comments and other fields are ignored here.
  async function readEvents(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let carry = ""; // a "\r" at the end of a read may be the first half of "\r\n"
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = carry + decoder.decode(value, { stream: true });
      carry = "";
      if (text.endsWith("\r")) {
        carry = "\r";
        text = text.slice(0, -1);
      }
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = [];
        for (const line of frame.split("\n")) {
          if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
        }
        raw(frame);
        if (!data.length) continue;
        const text = data.join("\n");
        let more;
        try {
          more = onData(text);
        } catch (err) {
          if (!(err instanceof SyntaxError)) throw err;
          throw new Error("Malformed frame: " + text.slice(0, 200));
        }
        if (more === false) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
    if ((buffer + carry).trim()) raw(buffer + "  [incomplete frame dropped at end of stream]");
  }

  function headers() {
    const out = { "Content-Type": "application/json", Accept: "text/event-stream" };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) out.Authorization = "Bearer " + key;
    return out;
  }

  async function errorText(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        return typeof body.error === "string" ? body.error : body.error.message || text;
      }
    } catch (_) { /* not JSON: show the text */ }
    return text || response.statusText;
  }

  // -- protocols -----------------------------------------------------------------------------

  // OpenAI chunks (API reference, "The chat completion chunk object").
  function openaiHandler(view) {
    const result = { finish: null, usage: null };
    return {
      result,
      onData(data) {
        if (data === "[DONE]") return false;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          const message = typeof chunk.error === "string" ? chunk.error : chunk.error.message;
          result.error = message || "error";
          return false;
        }
        if (chunk.usage) result.usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return true;
        const delta = choice.delta || {};
        if (delta.reasoning_content) view.reasoning(delta.reasoning_content);
        if (delta.content) view.text(delta.content);
        for (const call of delta.tool_calls || []) {
          const key = "index:" + call.index;
          const fn = call.function || {};
          view.tool(key, call.id, fn.name);
          if (fn.arguments) view.toolArgs(key, fn.arguments);
        }
        if (choice.finish_reason) result.finish = choice.finish_reason;
        return true;
      },
    };
  }

  // AG-UI events (docs.ag-ui.com, "Events"); unknown types are only shown in the raw panel.
  function aguiHandler(view) {
    const result = { finished: false, interrupts: null };
    return {
      result,
      onData(data) {
        const ev = JSON.parse(data);
        switch (ev.type) {
          case "TEXT_MESSAGE_START": view.text("", ev.messageId); break;
          case "TEXT_MESSAGE_CONTENT":
          case "TEXT_MESSAGE_CHUNK": view.text(ev.delta || "", ev.messageId); break;
          case "TEXT_MESSAGE_END": view.close("text", ev.messageId); break;
          case "REASONING_MESSAGE_START":
          case "THINKING_TEXT_MESSAGE_START": view.reasoning("", ev.messageId); break;
          case "REASONING_MESSAGE_CONTENT":
          case "REASONING_MESSAGE_CHUNK": view.reasoning(ev.delta || "", ev.messageId); break;
          case "THINKING_TEXT_MESSAGE_CONTENT": view.reasoning(ev.delta || ""); break;
          case "REASONING_MESSAGE_END": view.close("reasoning", ev.messageId); break;
          case "TOOL_CALL_START": view.tool(ev.toolCallId, ev.toolCallId, ev.toolCallName); break;
          case "TOOL_CALL_ARGS": view.toolArgs(ev.toolCallId, ev.delta || ""); break;
          case "TOOL_CALL_CHUNK":
            view.tool(ev.toolCallId, ev.toolCallId, ev.toolCallName);
            if (ev.delta) view.toolArgs(ev.toolCallId, ev.delta);
            break;
          case "TOOL_CALL_END": view.close("tool", ev.toolCallId); break;
          case "TOOL_CALL_RESULT": view.toolResult(ev.toolCallId, String(ev.content ?? "")); break;
          case "STATE_SNAPSHOT":
            agentState = ev.snapshot;
            showState();
            ui.statePanel.open = true;
            break;
          case "STATE_DELTA":
            try {
              agentState = applyPatch(agentState, ev.delta || []);
              showState();
              ui.statePanel.open = true;
            } catch (err) {
              showError("Could not apply STATE_DELTA: " + err.message);
            }
            break;
          case "STEP_STARTED": view.note("Step: " + ev.stepName, "meta"); break;
          case "RUN_ERROR":
            result.error = ev.message || "run error";
            if (ev.code) result.error += " (" + ev.code + ")";
            return false;
          case "RUN_FINISHED":
            result.finished = true;
            if (ev.outcome && ev.outcome.type === "interrupt") {
              result.interrupts = ev.outcome.interrupts || [];
            }
            return false;
          default: break;
        }
        return true;
      },
    };
  }

  function requestBody(protocolName, resume, resumedCalls) {
    if (protocolName === "agui") {
      const body = {
        threadId, runId: newId("run"), state: agentState, messages: aguiMessages(resumedCalls),
        tools: [], context: [], forwardedProps: {},
      };
      if (resume) body.resume = resume;
      return body;
    }
    // No model: the server fills in its own default (OpenAIProtocolHandler(models=[...])).
    return { stream: true, stream_options: { include_usage: true }, messages: openaiMessages() };
  }

  // -- running -------------------------------------------------------------------------------

  function setBusy(busy) {
    // A screen reader reads the streamed answer once, when it is complete (WAI-ARIA aria-busy).
    ui.log.setAttribute("aria-busy", String(busy));
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
    document.querySelectorAll('input[name="protocol"]').forEach((r) => {
      r.disabled = busy || !(r.value === "agui" ? root.agui : root.openai);
    });
  }

  async function run(resume) {
    const protocolName = protocol();
    const url = endpoint(protocolName);
    // The calls the interrupt asked about go with this run only: answered, they are in its
    // answer; not answered (cancelled, stopped, or a new message instead), they are dropped.
    const resumedCalls = resume ? pendingCalls : [];
    pendingCalls = [];
    const body = requestBody(protocolName, resume, resumedCalls);
    const view = new AnswerView(protocolName, resumedCalls);
    const handler = protocolName === "agui" ? aguiHandler(view) : openaiHandler(view);
    controller = new AbortController();
    setBusy(true);
    clearError();
    setStatus("Streaming…");
    raw("→ POST " + url + "\n" + JSON.stringify(body, null, 2));
    const ownConversation = conversation;
    let outcome = "";
    let interrupts = null;
    try {
      const response = await fetch(url, {
        method: "POST", headers: headers(), body: JSON.stringify(body),
        signal: controller.signal, credentials: "same-origin", cache: "no-store",
      });
      raw("← " + response.status + " " + (response.headers.get("content-type") || ""));
      if (!response.ok) {
        const message = await errorText(response);
        raw(message);
        if (response.status === 401) showKeyBox(true);
        throw new Error("HTTP " + response.status + ": " + message);
      }
      if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        throw new Error("Expected an event stream, got " + response.headers.get("content-type"));
      }
      await readEvents(response, handler.onData);
      const result = handler.result;
      if (result.error) throw new Error(result.error);
      if (protocolName === "agui") {
        if (!result.finished) throw new Error("The stream ended without RUN_FINISHED.");
        if (result.interrupts) interrupts = result.interrupts;
        if (interrupts) outcome = "Waiting for your answer.";
      } else if (!result.finish) {
        throw new Error("The stream ended before the final chunk.");
      }
      if (result.finish && result.finish !== "stop") outcome = "finish: " + result.finish;
      if (result.usage && result.usage.total_tokens) {
        outcome += (outcome ? ", " : "") + result.usage.total_tokens + " tokens";
      }
      setStatus(interrupts ? "The agent asks for input." : "Done.");
    } catch (err) {
      if (err.name === "AbortError") {
        outcome = "Stopped.";
        setStatus("Stopped.");
      } else {
        showError(err.message);
        outcome = "Failed.";
        setStatus("Failed.");
      }
    } finally {
      view.finish(outcome);
      controller = null;
      setBusy(false);
    }
    if (ownConversation !== conversation) return;
    rememberAnswer(view, interrupts);
    if (interrupts) showInterrupts(view, interrupts);
  }

  // -- AG-UI human in the loop ---------------------------------------------------------------

  function fieldFor(name, schema, required) {
    const id = newId("field");
    const wrap = el("div", "field");
    const label = el("label", "", schema.title || name);
    label.htmlFor = id;
    let input;
    if (Array.isArray(schema.enum)) {
      input = el("select");
      for (const option of schema.enum) {
        const node = el("option", "", String(option));
        node.value = JSON.stringify(option);
        input.append(node);
      }
      input.dataset.kind = "enum";
    } else if (schema.type === "boolean") {
      input = el("input");
      input.type = "checkbox";
      input.dataset.kind = "boolean";
      wrap.classList.add("check");
    } else if (schema.type === "number" || schema.type === "integer") {
      input = el("input");
      input.type = "number";
      if (schema.type === "integer") input.step = "1";
      input.dataset.kind = schema.type;
    } else if (schema.type === "string") {
      input = el("input");
      input.type = "text";
      input.dataset.kind = "string";
    } else {
      input = el("textarea");
      input.rows = 3;
      input.dataset.kind = "json";
      input.placeholder = "JSON";
    }
    input.id = id;
    input.name = name;
    if (required && schema.type !== "boolean") input.required = true;
    if (schema.description) {
      const hint = el("span", "hint", schema.description);
      hint.id = id + "-hint";
      input.setAttribute("aria-describedby", hint.id);
      wrap.append(label, input, hint);
    } else {
      wrap.append(label, input);
    }
    return wrap;
  }

  function readField(input) {
    const kind = input.dataset.kind;
    if (kind === "boolean") return input.checked;
    if (kind === "enum") return JSON.parse(input.value);
    if (kind === "number" || kind === "integer") return input.value === "" ? null : Number(input.value);
    if (kind === "json") return input.value.trim() === "" ? null : JSON.parse(input.value);
    return input.value;
  }

  // One fieldset per interrupt; the answer (or a cancel) resumes the thread in a new run.
  function showInterrupts(view, interrupts) {
    const form = el("form", "interrupt");
    const entries = [];
    for (const item of interrupts) {
      const set = el("fieldset");
      set.append(el("legend", "", item.reason ? "Agent asks (" + item.reason + ")" : "Agent asks"));
      if (item.message) set.append(el("p", "interrupt-message", item.message));
      const schema = item.responseSchema;
      const options = item.metadata && Array.isArray(item.metadata.options)
        ? item.metadata.options : null;
      let read;
      if (schema && schema.type === "object" && schema.properties) {
        const required = new Set(schema.required || []);
        const fields = [];
        for (const [name, sub] of Object.entries(schema.properties)) {
          const wrap = fieldFor(name, sub || {}, required.has(name));
          fields.push([name, wrap.querySelector("input, select, textarea")]);
          set.append(wrap);
        }
        read = () => Object.fromEntries(fields.map(([name, input]) => [name, readField(input)]));
      } else if (schema && schema.type) {
        const wrap = fieldFor("answer", schema, true);
        const input = wrap.querySelector("input, select, textarea");
        set.append(wrap);
        read = () => readField(input);
      } else if (options) {
        const wrap = fieldFor("answer", { title: "Answer", enum: options }, true);
        const input = wrap.querySelector("select");
        set.append(wrap);
        read = () => readField(input);
      } else {
        const wrap = fieldFor("answer", { title: "Answer", type: "string" }, false);
        const input = wrap.querySelector("input");
        set.append(wrap);
        read = () => input.value;
      }
      entries.push({ id: item.id, read });
      form.append(set);
    }
    const actions = el("div", "actions");
    const submit = el("button", "", "Send answer");
    submit.type = "submit";
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    actions.append(submit, cancel);
    form.append(actions);
    view.body.append(form);
    pendingInterrupt = form;
    scrollDown();
    const first = form.querySelector("input, select, textarea");
    (first || submit).focus();

    const answer = (status) => {
      let resume;
      try {
        resume = entries.map((e) => {
          const entry = { interruptId: e.id, status };
          if (status === "resolved") entry.payload = e.read();
          return entry;
        });
      } catch (err) {
        showError("Answer is not valid JSON: " + err.message);
        return;
      }
      closeInterrupt(status === "resolved" ? "Answered." : "Cancelled.");
      run(resume);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!ui.send.disabled) answer("resolved");
    });
    cancel.addEventListener("click", () => {
      if (!ui.send.disabled) answer("cancelled");
    });
  }

  function closeInterrupt(text) {
    if (!pendingInterrupt) return;
    pendingInterrupt.querySelectorAll("input, select, textarea, button").forEach((n) => {
      n.disabled = true;
    });
    pendingInterrupt.append(el("p", "note meta", text));
    pendingInterrupt = null;
  }

  // -- API key -------------------------------------------------------------------------------

  function showKeyBox(open) {
    ui.keyBox.hidden = !open;
    ui.keyToggle.setAttribute("aria-expanded", String(open));
    if (open) {
      ui.keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
      ui.keyInput.focus();
    }
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    showKeyBox(false);
    clearError();
    setStatus(key ? "API key set for this tab." : "API key cleared.");
    ui.input.focus();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    ui.keyInput.value = "";
    setStatus("API key cleared.");
  });
  ui.keyToggle.addEventListener("click", () => showKeyBox(ui.keyBox.hidden));

  // -- wiring --------------------------------------------------------------------------------

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value;
    if (!text.trim() || controller) return;
    closeInterrupt("Not answered: a new message was sent.");
    history.push({ id: newId("msg"), role: "user", content: text });
    addUserTurn(text);
    ui.input.value = "";
    run(null);
  });

  ui.input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a newline; never while an input method composes text.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  ui.stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  $("new-chat").addEventListener("click", () => {
    if (controller) controller.abort();
    conversation += 1;
    history = [];
    threadId = newId("thread");
    agentState = {};
    pendingInterrupt = null;
    pendingCalls = [];
    showState();
    ui.log.querySelectorAll(".turn").forEach((n) => n.remove());
    ui.empty.hidden = false;
    clearError();
    setStatus("");
    ui.input.focus();
  });

  $("error-close").addEventListener("click", clearError);
  $("raw-clear").addEventListener("click", () => { ui.raw.textContent = ""; });

  document.querySelectorAll('input[name="protocol"]').forEach((radio) => {
    radio.addEventListener("change", () => sessionStorage.setItem(PROTOCOL_STORAGE, radio.value));
  });

  // Protocols the server does not serve are disabled; the last choice of this tab is restored.
  const saved = sessionStorage.getItem(PROTOCOL_STORAGE);
  for (const radio of document.querySelectorAll('input[name="protocol"]')) {
    const served = radio.value === "agui" ? root.agui : root.openai;
    radio.disabled = !served;
    if (served && radio.value === saved) radio.checked = true;
  }
  const checked = document.querySelector('input[name="protocol"]:checked');
  if (checked && checked.disabled) {
    const other = document.querySelector('input[name="protocol"]:not(:disabled)');
    if (other) other.checked = true;
  }
  if (!root.agui && !root.openai) {
    showError("This server serves neither OpenAI Chat Completions nor AG-UI.");
    ui.send.disabled = true;
  }
  if (sessionStorage.getItem(KEY_STORAGE)) setStatus("Using the API key set in this tab.");
  ui.input.focus();
})();
