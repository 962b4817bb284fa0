// Settings kept in the browser: system prompt, sampling (temperature, top_p, max_tokens), the API key;
// the settings dialog and the API-key prompt.

const SETTINGS_KEY = "awqserve.settings.v1";
const API_KEY_KEY = "awqserve.apiKey";
const NUMBERS = {temperature: [0, 2], top_p: [0, 1], max_tokens: [1, 1e9]};
export const DEFAULTS = Object.freeze({system: "", temperature: null, top_p: null, max_tokens: null});

export class Settings {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.values = {...DEFAULTS};
    try {
      Object.assign(this.values, clean(JSON.parse(storage.getItem(SETTINGS_KEY) || "{}")));
    } catch { /* unreadable: defaults */ }
    this.listeners = [];
    this.keyListeners = [];
  }

  get apiKey() {
    return this.storage.getItem(API_KEY_KEY) || null;
  }

  set apiKey(key) {
    if ((key || null) === this.apiKey) return;
    if (key) this.storage.setItem(API_KEY_KEY, key);
    else this.storage.removeItem(API_KEY_KEY);
    for (const listener of this.keyListeners) listener();
  }

  /** `listener()` runs after the API key changed (entered at the prompt or in the dialog). */
  onKeyChange(listener) {
    this.keyListeners.push(listener);
  }

  update(values) {
    this.values = {...DEFAULTS, ...clean(values)};
    this.storage.setItem(SETTINGS_KEY, JSON.stringify(this.values));
    for (const listener of this.listeners) listener(this.values);
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  /** The request fields the user set (unset ones take the server's defaults). */
  samplingFields() {
    const out = {};
    for (const key of Object.keys(NUMBERS)) {
      if (this.values[key] !== null) out[key] = this.values[key];
    }
    return out;
  }

  summary() {
    const v = this.values;
    const parts = [];
    if (v.temperature !== null) parts.push(v.temperature === 0 ? "greedy" : `temperature ${v.temperature}`);
    if (v.top_p !== null) parts.push(`top-p ${v.top_p}`);
    if (v.max_tokens !== null) parts.push(`max ${v.max_tokens} tokens`);
    if (v.system) parts.push("system prompt");
    return parts.length ? parts.join(" · ") : "default sampling";
  }
}

/** Known keys only; numbers parsed and range-checked (out of range → unset). */
function clean(values) {
  const out = {};
  if (typeof values.system === "string") out.system = values.system;
  for (const [key, [low, high]] of Object.entries(NUMBERS)) {
    const raw = values[key];
    const n = raw === "" || raw === null || raw === undefined ? NaN : Number(raw);
    const ok = Number.isFinite(n) && n >= low && n <= high && (key !== "max_tokens" || Number.isInteger(n));
    out[key] = ok ? n : null;
  }
  return out;
}

export class SettingsDialog {
  constructor(settings) {
    this.settings = settings;
    this.dialog = document.getElementById("settings-dialog");
    this.form = document.getElementById("settings-form");
    this.dialog.addEventListener("close", () => this.closed());
    this.form.querySelector("[data-action=reset]").addEventListener("click", () => this.fill(DEFAULTS));
  }

  open() {
    this.fill(this.settings.values);
    this.form.elements.api_key.value = this.settings.apiKey || "";
    this.dialog.returnValue = "";
    this.dialog.showModal();
    this.form.elements.system.focus();
  }

  fill(values) {
    const f = this.form.elements;
    f.system.value = values.system;
    for (const key of Object.keys(NUMBERS)) f[key].value = values[key] === null ? "" : String(values[key]);
  }

  closed() {
    if (this.dialog.returnValue !== "save") return;
    const f = this.form.elements;
    this.settings.update({system: f.system.value, temperature: f.temperature.value, top_p: f.top_p.value,
                          max_tokens: f.max_tokens.value});
    this.settings.apiKey = f.api_key.value.trim();
  }
}

/** Asks for the API key after a 401; `ask()` resolves true once a key was entered, false if cancelled. */
export class KeyPrompt {
  constructor(settings) {
    this.settings = settings;
    this.dialog = document.getElementById("key-dialog");
    this.input = document.getElementById("key-input");
    this.reason = document.getElementById("key-reason");
    this.pending = null;
    this.dialog.addEventListener("close", () => this.closed());
  }

  ask(hadKey) {
    if (this.pending) return this.pending.promise;
    this.reason.textContent = hadKey
      ? "The server did not accept the stored API key. Enter the right one."
      : "This server asks for an API key. It is kept in this browser and sent with every request.";
    this.input.value = "";
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    this.pending = {promise, resolve};
    this.dialog.returnValue = "";
    this.dialog.showModal();
    this.input.focus();
    return promise;
  }

  closed() {
    const key = this.input.value.trim();
    const ok = this.dialog.returnValue === "save" && key !== "";
    const pending = this.pending;
    this.pending = null;
    if (ok) this.settings.apiKey = key;
    pending?.resolve(ok);
  }
}
