// The message column: user turns, replies (reasoning block, markdown, tool-call cards, inline errors,
// per-reply figures), the empty-chat welcome, and autoscroll that does not fight the reader.

import {copyButton, formatMs, formatNumber, h, icon} from "./dom.js";
import {renderMarkdown, splitThink} from "./markdown.js";

const EXAMPLES = [
  "What is the capital of France?",
  "Write a Python function that reverses a string.",
  "Give me three tips for writing clean code, as a bulleted list.",
];
const NOTES = {length: "cut at max_tokens", stopped: "stopped", interrupted: "interrupted", error: ""};

export class MessageView {
  /** `actions`: {retry(message), regenerate(), example(text)}. */
  constructor(container, actions) {
    this.el = container;
    this.actions = actions;
    this.nodes = new Map(); // message id → article
    this.conversationId = null;
  }

  /** Redraw a whole conversation; `streamingId` marks the reply still being written. */
  render(conv, {streamingId = null, modelName = ""} = {}) {
    const sameConversation = this.conversationId === conv.id;
    this.conversationId = conv.id;
    this.nodes.clear();
    if (conv.messages.length === 0) {
      this.el.replaceChildren(this.welcome(modelName));
      return;
    }
    const column = h("div", {class: "thread"});
    const lastReply = conv.messages.findLast((m) => m.role === "assistant");
    for (const m of conv.messages) {
      if (m.role === "system") continue;
      const node = m.role === "user" ? this.userNode(m) : this.replyNode(m, m.id === streamingId, m === lastReply);
      this.nodes.set(m.id, node);
      column.append(node);
    }
    // A new conversation, a reply starting, or a reader already at the bottom: follow; else stay put.
    const follow = !sameConversation || streamingId !== null || this.nearBottom();
    const keep = this.el.scrollTop;
    this.el.replaceChildren(column);
    if (follow) this.scrollToBottom();
    else this.el.scrollTop = keep;
  }

  /** Redraw one reply in place (called while it streams). */
  update(conv, message, streaming) {
    if (conv.id !== this.conversationId) return;
    const old = this.nodes.get(message.id);
    if (!old) return;
    const follow = this.nearBottom();
    const openReasoning = old.querySelector("details.reasoning")?.open;
    const lastReply = conv.messages.findLast((m) => m.role === "assistant") === message;
    const node = this.replyNode(message, streaming, lastReply, openReasoning);
    old.replaceWith(node);
    this.nodes.set(message.id, node);
    if (follow) this.scrollToBottom();
  }

  nearBottom() {
    const el = this.el;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 96;
  }

  scrollToBottom() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  welcome(modelName) {
    const examples = EXAMPLES.map((text) =>
      h("button", {class: "example", type: "button", onclick: () => this.actions.example(text)}, text));
    return h("div", {class: "welcome"},
      h("img", {src: "ui/favicon.svg", alt: "", width: 44, height: 44}),
      h("h2", {}, "What can I help with?"),
      h("p", {class: "muted"}, modelName ? `Talking to ${modelName}` : "Talking to the model this server runs"),
      h("div", {class: "examples"}, examples));
  }

  userNode(m) {
    return h("article", {class: "msg user", dataset: {id: m.id}},
      h("div", {class: "bubble"}, m.content),
      h("footer", {class: "msg-foot"}, copyButton(() => m.content, "Copy message")));
  }

  replyNode(m, streaming, isLast, openReasoning = false) {
    const parts = m.reasoning ? {reasoning: m.reasoning, content: m.content, open: false} : splitThink(m.content);
    const thinking = streaming && (parts.open || (parts.reasoning && !parts.content && !m.tool_calls?.length));
    const node = h("article", {class: `msg assistant${streaming ? " streaming" : ""}`, dataset: {id: m.id}});
    if (parts.reasoning || thinking) node.append(reasoningBlock(parts.reasoning, thinking, openReasoning));
    const content = h("div", {class: "content markdown"});
    if (parts.content) renderMarkdown(content, parts.content);
    else if (streaming && !thinking && !m.tool_calls?.length) content.append(waitingDots());
    node.append(content);
    if (m.tool_calls?.length) node.append(h("div", {class: "tool-calls"}, m.tool_calls.map(toolCard)));
    if (m.error) node.append(this.errorBox(m));
    if (!streaming) node.append(this.replyFoot(m, parts.content, isLast));
    return node;
  }

  errorBox(m) {
    return h("div", {class: "error-box", role: "alert"},
      h("span", {}, m.error),
      h("button", {class: "btn btn-small", type: "button", onclick: () => this.actions.retry(m)},
        icon("retry"), "Retry"));
  }

  replyFoot(m, text, isLast) {
    const foot = h("footer", {class: "msg-foot"});
    if (m.stats) foot.append(figures(m.stats));
    const note = NOTES[m.status];
    if (note) foot.append(h("span", {class: `note note-${m.status}`}, note));
    foot.append(h("span", {class: "spacer"}));
    if (text) foot.append(copyButton(() => text, "Copy reply"));
    if (isLast && !m.error) {
      foot.append(h("button", {class: "icon-btn small", type: "button", title: "Regenerate", "aria-label": "Regenerate",
                               onclick: () => this.actions.regenerate()}, icon("retry")));
    }
    return foot;
  }
}

function waitingDots() {
  return h("span", {class: "dots", "aria-label": "waiting for the first token"}, h("i"), h("i"), h("i"));
}

function reasoningBlock(text, thinking, open) {
  return h("details", {class: `reasoning${thinking ? " thinking" : ""}`, open: open || false},
    h("summary", {}, thinking ? "Thinking…" : "Thoughts"),
    h("div", {class: "reasoning-body"}, text));
}

function toolCard(call) {
  let args = call.function.arguments || "";
  try {
    args = JSON.stringify(JSON.parse(args), null, 2);
  } catch { /* still streaming, or not JSON: show as sent */ }
  return h("div", {class: "tool-call"},
    h("div", {class: "tool-call-head"}, icon("tool"), h("span", {}, "Tool call"),
      h("code", {class: "tool-name"}, call.function.name || "…")),
    h("pre", {class: "tool-args"}, args || "{}"));
}

function figures(stats) {
  const items = [];
  if (Number.isFinite(stats.ttft_ms)) items.push(["TTFT", formatMs(stats.ttft_ms)]);
  if (Number.isFinite(stats.tokens_per_s)) items.push(["", `${formatNumber(stats.tokens_per_s)} tok/s`]);
  if (Number.isFinite(stats.completion_tokens)) items.push(["", `${stats.completion_tokens} tokens`]);
  const detail = [
    Number.isFinite(stats.prompt_tokens) ? `prompt ${stats.prompt_tokens} tokens` : null,
    Number.isFinite(stats.e2e_ms) ? `total ${formatMs(stats.e2e_ms)}` : null,
    stats.measured === "client" ? "measured in the browser (the reply was stopped)" : "measured by the server",
  ].filter(Boolean).join(" · ");
  return h("span", {class: "figures", title: detail},
    items.map(([label, value]) => h("span", {class: "figure"}, label ? h("b", {}, label) : null, value)));
}
