// One conversation on screen and at most one reply being generated: send, stream, stop, retry.
//
// A reply streams into its message object (content, reasoning, tool calls), which is redrawn at most
// every UPDATE_MS and saved every SAVE_MS, so a reload mid-reply keeps what had arrived. Switching
// conversations while a reply streams is fine: it keeps writing into its own conversation.

import {ApiError} from "./api.js";
import {newId, titleFrom} from "./store.js";

const UPDATE_MS = 80; // ~12 redraws a second: smooth to read, and leaves the CPU to the model on small machines
const SAVE_MS = 1000;
const FINISH_STATUS = {stop: "done", length: "length", tool_calls: "tool_calls"};

export class Chat {
  /** deps: {api, store, view, settings, keyPrompt, onBusy(busy), onSaved(), modelName()} */
  constructor(deps) {
    Object.assign(this, deps);
    this.conv = this.store.create();
    this.active = null; // {conv, reply, controller}
    this.updateTimer = 0;
    this.lastSave = 0;
  }

  get busy() {
    return this.active !== null;
  }

  open(conv) {
    this.conv = conv;
    this.view.render(conv, {streamingId: this.streamingIdIn(conv), modelName: this.modelName()});
  }

  redraw() {
    this.open(this.conv);
  }

  streamingIdIn(conv) {
    return this.active?.conv.id === conv.id ? this.active.reply.id : null;
  }

  async send(text) {
    if (this.busy || !text.trim()) return false;
    const conv = this.conv;
    if (!conv.messages.some((m) => m.role === "user")) conv.title = titleFrom(text);
    conv.messages.push({id: newId(), role: "user", content: text});
    await this.generate(conv);
    return true;
  }

  stop() {
    this.active?.controller.abort();
  }

  /** Drop the last reply (and anything after the last user turn) and ask again. */
  async regenerate() {
    if (this.busy) return;
    const conv = this.conv;
    const lastUser = conv.messages.findLastIndex((m) => m.role === "user");
    if (lastUser < 0) return;
    conv.messages.splice(lastUser + 1);
    await this.generate(conv);
  }

  async retry() {
    await this.regenerate();
  }

  async generate(conv) {
    const reply = {id: newId(), role: "assistant", content: "", status: "streaming"};
    const request = {messages: this.requestMessages(conv), ...this.settings.samplingFields(),
                     stream_options: {include_usage: true}};
    conv.messages.push(reply);
    this.active = {conv, reply, controller: new AbortController()};
    this.saveNow(conv);
    this.onBusy(true);
    if (conv === this.conv) this.redraw();
    const outcome = await this.stream(request, reply, this.active.controller.signal);
    this.active = null;
    clearTimeout(this.updateTimer);
    this.updateTimer = 0;
    if (outcome instanceof ApiError && outcome.needsKey) {
      conv.messages.splice(conv.messages.indexOf(reply), 1);
      this.finish(conv);
      if (await this.keyPrompt.ask(Boolean(this.settings.apiKey))) return this.generate(conv);
      conv.messages.push({...reply, status: "error", error: "The server needs an API key (Settings → API key)."});
    }
    this.finish(conv);
    return undefined;
  }

  finish(conv) {
    this.saveNow(conv);
    this.onBusy(false);
    if (conv === this.conv) this.redraw();
  }

  /** Reads the stream into `reply`; returns an ApiError that needs the caller (401), else null. */
  async stream(request, reply, signal) {
    const meter = new Meter();
    let finish = null;
    try {
      for await (const chunk of this.api.chatStream(request, signal)) {
        finish = applyChunk(reply, chunk, meter) || finish;
        this.scheduleUpdate();
      }
      reply.status = FINISH_STATUS[finish] || "done";
    } catch (err) {
      if (signal.aborted) {
        reply.status = "stopped";
      } else if (err instanceof ApiError && err.needsKey) {
        return err;
      } else {
        reply.status = "error";
        reply.error = err instanceof ApiError ? err.describe() : `The reply could not be read: ${err.message}`;
      }
    }
    reply.stats = meter.stats();
    return null;
  }

  scheduleUpdate() {
    if (this.updateTimer) return;
    this.updateTimer = setTimeout(() => {
      this.updateTimer = 0;
      const active = this.active;
      if (!active) return;
      this.view.update(active.conv, active.reply, true);
      if (Date.now() - this.lastSave > SAVE_MS) this.saveNow(active.conv);
    }, UPDATE_MS);
  }

  saveNow(conv) {
    if (conv.deleted) return; // deleted while its reply streamed: do not bring it back
    this.lastSave = Date.now();
    try {
      this.store.save(conv);
    } catch (err) {
      this.onSaved(err);
      return;
    }
    this.onSaved(null);
  }

  /** The history the model sees: the system prompt, then user turns and finished replies. */
  requestMessages(conv) {
    const out = [];
    const system = this.settings.values.system.trim();
    if (system) out.push({role: "system", content: system});
    for (const m of conv.messages) {
      if (m.role === "user") out.push({role: "user", content: m.content});
      // Tool calls are shown but not sent back: the page runs no tools, so there is no result to
      // pair them with, and an unanswered call is not valid history.
      else if (m.role === "assistant" && m.status !== "error" && m.content) {
        out.push({role: "assistant", content: m.content});
      }
    }
    return out;
  }
}

/** Folds one chunk into the reply; returns its finish_reason, if any. */
function applyChunk(reply, chunk, meter) {
  if (chunk.usage) meter.usage = chunk.usage;
  if (chunk.awqserve_timing) meter.timing = chunk.awqserve_timing;
  let finish = null;
  for (const choice of chunk.choices || []) {
    const delta = choice.delta || {};
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (reasoning) reply.reasoning = (reply.reasoning || "") + reasoning;
    if (delta.content) reply.content += delta.content;
    if (delta.tool_calls) applyToolCalls(reply, delta.tool_calls);
    if (reasoning || delta.content || delta.tool_calls) meter.token();
    finish = choice.finish_reason || finish;
  }
  return finish;
}

function applyToolCalls(reply, deltas) {
  reply.tool_calls ||= [];
  for (const d of deltas) {
    const index = d.index ?? reply.tool_calls.length;
    const call = reply.tool_calls[index] ||= {id: "", type: "function", function: {name: "", arguments: ""}};
    if (d.id) call.id = d.id;
    if (d.function?.name) call.function.name += d.function.name;
    if (d.function?.arguments) call.function.arguments += d.function.arguments;
  }
}

/** Per-reply figures: the server's own (debug timing + usage) when the stream finished, else measured here. */
class Meter {
  constructor() {
    this.start = performance.now();
    this.first = null;
    this.last = null;
    this.count = 0;
    this.usage = null;
    this.timing = null;
  }

  token() {
    const now = performance.now();
    this.first ??= now;
    this.last = now;
    this.count += 1;
  }

  stats() {
    if (this.timing && this.usage) {
      return {ttft_ms: this.timing.ttft_ms, tokens_per_s: this.timing.decode_tokens_per_s,
              e2e_ms: this.timing.e2e_ms, completion_tokens: this.usage.completion_tokens,
              prompt_tokens: this.usage.prompt_tokens, measured: "server"};
    }
    if (this.first === null) return null;
    const span = (this.last - this.first) / 1000;
    return {ttft_ms: this.first - this.start, tokens_per_s: span > 0 ? (this.count - 1) / span : undefined,
            completion_tokens: this.count, e2e_ms: performance.now() - this.start, measured: "client"};
  }
}
