// Entry point of the chat page: builds the parts and wires them to the page's controls.
//   api.js          HTTP client, error envelopes, SSE reader
//   store.js        conversations in localStorage (+ export/import validation)
//   settings.js     system prompt, sampling, API key; their dialogs
//   chat.js         the conversation on screen and the reply being generated
//   messages.js     drawing messages; markdown.js renders the model's markdown safely
//   sidebar.js      the conversation list, export/import
//   model_panel.js  model card and server health

import {ApiClient} from "./api.js";
import {Chat} from "./chat.js";
import {toast} from "./dom.js";
import {MessageView} from "./messages.js";
import {ModelPanel} from "./model_panel.js";
import {KeyPrompt, Settings, SettingsDialog} from "./settings.js";
import {Sidebar} from "./sidebar.js";
import {ConversationStore} from "./store.js";

const CURRENT_KEY = "awqserve.current";
const $ = (id) => document.getElementById(id);

const settings = new Settings();
const store = new ConversationStore();
const api = new ApiClient(() => settings.apiKey);
const keyPrompt = new KeyPrompt(settings);
const settingsDialog = new SettingsDialog(settings);
const prompt = $("prompt");

const modelPanel = new ModelPanel($("model-panel"), api, {
  onModel: () => { if (chat.conv.messages.length === 0) chat.redraw(); },
  needKey: () => keyPrompt.ask(Boolean(settings.apiKey)),
});

const view = new MessageView($("messages"), {
  retry: () => chat.retry(),
  regenerate: () => chat.regenerate(),
  example: (text) => { prompt.value = text; submit(); },
});

const chat = new Chat({
  api, store, view, settings, keyPrompt,
  modelName: () => modelPanel.modelName,
  onBusy: (busy) => {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    document.body.classList.toggle("busy", busy);
    sidebar.render();
    if (!busy) modelPanel.refresh(); // KV usage right after a reply
  },
  onSaved: (err) => {
    if (err) toast(err.message, "error");
    sidebar.render();
    showTitle();
  },
});

const sidebar = new Sidebar(store, {
  open: (conv) => openConversation(conv),
  deleted: (id) => {
    if (chat.active?.conv.id === id) {
      chat.active.conv.deleted = true;
      chat.stop();
    }
    if (chat.conv.id === id) openConversation(store.list()[0] || store.create());
    sidebar.render();
  },
  renamed: () => showTitle(),
  currentId: () => chat.conv.id,
  streamingId: () => chat.active?.conv.id || null,
});

function openConversation(conv) {
  chat.open(conv);
  localStorage.setItem(CURRENT_KEY, conv.id);
  $("layout").classList.remove("sidebar-open");
  $("backdrop").hidden = true;
  sidebar.render();
  showTitle();
  prompt.focus();
}

function showTitle() {
  const title = store.get(chat.conv.id)?.title || chat.conv.title;
  $("chat-title").textContent = title;
  document.title = chat.conv.messages.length ? `${title} · awqserve` : "awqserve";
}

async function submit() {
  const text = prompt.value;
  if (chat.busy || !text.trim()) return;
  prompt.value = "";
  fitPrompt();
  await chat.send(text);
}

function fitPrompt() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

function showSummary() {
  $("settings-summary").textContent = settings.summary();
}

function newChat() {
  if (chat.conv.messages.length > 0) openConversation(store.create());
  else prompt.focus();
}

function toggleSidebar(open) {
  $("layout").classList.toggle("sidebar-open", open);
  $("backdrop").hidden = !open;
}

// ---- controls ----

$("composer").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
prompt.addEventListener("input", fitPrompt);
prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submit();
  }
});
$("stop").addEventListener("click", () => chat.stop());
$("new-chat").addEventListener("click", newChat);
$("open-settings").addEventListener("click", () => settingsDialog.open());
$("settings-summary").addEventListener("click", () => settingsDialog.open());
$("toggle-sidebar").addEventListener("click", () => toggleSidebar(!$("layout").classList.contains("sidebar-open")));
$("backdrop").addEventListener("click", () => toggleSidebar(false));
settings.onChange(showSummary);
settings.onKeyChange(() => modelPanel.keyChanged());
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !e.defaultPrevented && chat.busy && !document.querySelector("dialog[open]")) chat.stop();
  if (e.key.toLowerCase() === "o" && e.shiftKey && (e.ctrlKey || e.metaKey)) { e.preventDefault(); newChat(); }
});
store.onExternalChange(() => {
  sidebar.render();
  if (!chat.busy) chat.open(store.get(chat.conv.id) || chat.conv);
});

// ---- start ----

showSummary();
openConversation(store.get(localStorage.getItem(CURRENT_KEY)) || store.create());
modelPanel.start();
document.body.dataset.ready = "true"; // for tests: the page's modules have loaded
