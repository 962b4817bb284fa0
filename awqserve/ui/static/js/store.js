// Conversations kept in the browser (localStorage): list, create, rename, delete, export and import.
//
// Stored as one JSON document under STORAGE_KEY: {version: 1, conversations: [...]}. A conversation is
// {id, title, created, updated, messages}; a message is {id, role, content} plus, for replies,
// reasoning, tool_calls, stats, status ("streaming" | "done" | "length" | "stopped" | "error") and error.

const STORAGE_KEY = "awqserve.conversations.v1";
export const EXPORT_FORMAT = "awqserve-conversations";
const ROLES = new Set(["system", "user", "assistant", "tool"]);
const STATUSES = new Set(["done", "length", "stopped", "error", "interrupted", "tool_calls"]);
const TITLE_MAX = 120;

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function titleFrom(text) {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ");
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

export class ConversationStore {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.conversations = new Map();
    this.load();
  }

  load() {
    this.conversations.clear();
    let doc = null;
    try {
      doc = JSON.parse(this.storage.getItem(STORAGE_KEY) || "null");
    } catch {
      // Unreadable (edited by hand?): keep it aside rather than overwrite it on the next save.
      this.storage.setItem(`${STORAGE_KEY}.corrupt`, this.storage.getItem(STORAGE_KEY));
    }
    for (const conv of doc?.conversations || []) {
      for (const m of conv.messages || []) {
        if (m.status === "streaming") m.status = "interrupted"; // the page closed mid-reply
      }
      this.conversations.set(conv.id, conv);
    }
  }

  /** Newest first. */
  list() {
    return [...this.conversations.values()].sort((a, b) => b.updated - a.updated);
  }

  get(id) {
    return this.conversations.get(id) || null;
  }

  /** A fresh conversation, not stored until it has a message (empty chats do not clutter the list). */
  create() {
    const now = Date.now();
    return {id: newId(), title: "New chat", created: now, updated: now, messages: []};
  }

  save(conv, {touch = true} = {}) {
    if (touch) conv.updated = Date.now();
    this.conversations.set(conv.id, conv);
    this.persist();
  }

  rename(id, title) {
    const conv = this.get(id);
    if (!conv) return;
    conv.title = title.trim().slice(0, TITLE_MAX) || conv.title;
    this.save(conv, {touch: false});
  }

  remove(id) {
    this.conversations.delete(id);
    this.persist();
  }

  persist() {
    const doc = {version: 1, conversations: [...this.conversations.values()]};
    try {
      this.storage.setItem(STORAGE_KEY, JSON.stringify(doc));
    } catch (err) {
      throw new Error(`The browser refused to store the conversations (${err.name}); export and delete some.`);
    }
  }

  exportData() {
    return {format: EXPORT_FORMAT, version: 1, exported_at: new Date().toISOString(), conversations: this.list()};
  }

  /** Adds the conversations of an exported document; returns how many. Throws Error naming the bad field. */
  importData(doc) {
    const items = Array.isArray(doc) ? doc : doc?.conversations;
    if (!Array.isArray(items)) throw new Error("expected an awqserve export: {\"conversations\": [...]}");
    const checked = items.map((conv, i) => checkConversation(conv, `conversations[${i}]`));
    for (const conv of checked) {
      if (this.conversations.has(conv.id)) conv.id = newId(); // never overwrite what is already here
      this.conversations.set(conv.id, conv);
    }
    this.persist();
    return checked.length;
  }

  /** Calls `callback` when another tab changed the stored conversations. */
  onExternalChange(callback) {
    window.addEventListener("storage", (event) => {
      if (event.key !== STORAGE_KEY) return;
      this.load();
      callback();
    });
  }
}

// ---- import validation: rebuild every object from known fields only ----

function fail(where, what) {
  throw new Error(`${where}: ${what}`);
}

function optionalString(value, where) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") fail(where, "must be a string");
  return value;
}

function checkConversation(conv, where) {
  if (typeof conv !== "object" || conv === null || Array.isArray(conv)) fail(where, "must be an object");
  if (!Array.isArray(conv.messages)) fail(`${where}.messages`, "must be a list");
  const now = Date.now();
  const time = (v) => (Number.isFinite(v) && v > 0 ? v : now);
  const messages = conv.messages.map((m, j) => checkMessage(m, `${where}.messages[${j}]`));
  const title = optionalString(conv.title, `${where}.title`);
  return {
    id: typeof conv.id === "string" && /^[\w-]{1,64}$/.test(conv.id) ? conv.id : newId(),
    title: (title || titleFrom(messages.find((m) => m.role === "user")?.content || "")).slice(0, TITLE_MAX),
    created: time(conv.created), updated: time(conv.updated), messages,
  };
}

function checkMessage(m, where) {
  if (typeof m !== "object" || m === null) fail(where, "must be an object");
  if (!ROLES.has(m.role)) fail(`${where}.role`, `must be one of ${[...ROLES].join(", ")}`);
  const out = {id: typeof m.id === "string" ? m.id : newId(), role: m.role,
               content: optionalString(m.content, `${where}.content`) || ""};
  const reasoning = optionalString(m.reasoning, `${where}.reasoning`);
  if (reasoning) out.reasoning = reasoning;
  if (m.tool_calls !== undefined) out.tool_calls = checkToolCalls(m.tool_calls, `${where}.tool_calls`);
  if (typeof m.stats === "object" && m.stats !== null) out.stats = checkStats(m.stats);
  if (STATUSES.has(m.status)) out.status = m.status;
  const error = optionalString(m.error, `${where}.error`);
  if (error) out.error = error;
  return out;
}

function checkToolCalls(calls, where) {
  if (!Array.isArray(calls)) fail(where, "must be a list");
  return calls.map((c, k) => {
    const name = c?.function?.name;
    if (typeof name !== "string") fail(`${where}[${k}].function.name`, "must be a string");
    const args = optionalString(c.function.arguments, `${where}[${k}].function.arguments`) || "";
    return {id: optionalString(c.id, `${where}[${k}].id`) || `call_${newId()}`, type: "function",
            function: {name, arguments: args}};
  });
}

function checkStats(stats) {
  const out = {};
  for (const key of ["ttft_ms", "tokens_per_s", "completion_tokens", "prompt_tokens", "e2e_ms"]) {
    if (Number.isFinite(stats[key])) out[key] = stats[key];
  }
  if (typeof stats.measured === "string") out.measured = stats.measured.slice(0, 16);
  return out;
}
