// The model panel: what is served (/v1/models: id, context length, quantization) and how the server is
// doing (/health: status, loading phase/progress, KV-cache usage, running and queued requests).
// /health is polled (more often while loading); /v1/models is read once it answers, and again after a key.

import {ApiError} from "./api.js";
import {formatCount, h} from "./dom.js";

const POLL_READY_MS = 5000;
const POLL_BUSY_MS = 1500; // loading, draining, unreachable
const STATUS_TEXT = {ok: "ready", loading: "loading…", draining: "draining", dead: "failed", offline: "unreachable"};

export class ModelPanel {
  /** hooks: {onModel(card), needKey(): Promise<boolean>} */
  constructor(el, api, hooks) {
    this.el = el;
    this.api = api;
    this.hooks = hooks;
    this.card = null;
    this.health = null; // {status, body}
    this.keyMissing = false;
    this.timer = 0;
    document.addEventListener("visibilitychange", () => { if (!document.hidden) this.refresh(); });
  }

  get modelName() {
    return this.card?.id || "";
  }

  start() {
    this.refresh();
  }

  async refresh() {
    clearTimeout(this.timer);
    await this.readHealth();
    if (this.health.status === "ok" && !this.card && !this.keyMissing) await this.readModel();
    this.render();
    const wait = this.health.status === "ok" ? POLL_READY_MS : POLL_BUSY_MS;
    if (!document.hidden) this.timer = setTimeout(() => this.refresh(), wait);
  }

  async readHealth() {
    try {
      const {body} = await this.api.health();
      this.health = {status: body.status || "offline", body};
    } catch {
      this.health = {status: "offline", body: {}};
    }
  }

  async readModel() {
    try {
      const list = await this.api.getJSON("v1/models");
      this.card = list.data?.[0] || null;
      if (this.card) this.hooks.onModel(this.card);
    } catch (err) {
      if (!(err instanceof ApiError && err.needsKey)) return;
      this.keyMissing = true;
      this.render();
      this.askKey();
    }
  }

  askKey() {
    this.hooks.needKey(); // a key entered there calls keyChanged() (app.js wires it)
  }

  /** A new key was entered (here or in the settings): try the model card again. */
  keyChanged() {
    this.keyMissing = false;
    this.card = null;
    this.refresh();
  }

  render() {
    const status = this.health?.status || "offline";
    const body = this.health?.body || {};
    const rows = [];
    if (status === "loading") rows.push(...loadingRow(body));
    if (status === "dead" && body.error) rows.push(h("p", {class: "panel-error"}, body.error));
    if (this.card) rows.push(...cardRows(this.card));
    if (status === "ok" || status === "draining") rows.push(...usageRows(body));
    if (this.keyMissing) {
      rows.push(h("p", {class: "panel-note"}, "The model details need the API key. ",
        h("button", {class: "link-btn", type: "button", onclick: () => this.askKey()}, "Enter key")));
    }
    const name = shortName(this.card?.id || body.model || "model");
    document.getElementById("model-chip")?.replaceChildren(
      h("span", {class: `status-dot status-${status}`}), h("span", {}, name));
    this.el.replaceChildren(
      h("div", {class: "model-head"},
        h("span", {class: `status-dot status-${status}`, title: `server ${STATUS_TEXT[status] || status}`}),
        h("span", {class: "model-id", title: this.card?.id || body.model || ""}, name),
        h("span", {class: `status-text status-${status}`}, STATUS_TEXT[status] || status)),
      h("dl", {class: "facts"}, rows));
  }
}

/** A served name that is a directory path (the default when no --served-model-name) shows its last part. */
function shortName(name) {
  return name.startsWith("/") ? name.split("/").filter(Boolean).pop() || name : name;
}

function fact(term, ...value) {
  return h("div", {class: "fact"}, h("dt", {}, term), h("dd", {}, ...value));
}

function bar(fraction, label) {
  const fill = h("i");
  fill.style.width = `${Math.round(Math.min(Math.max(fraction, 0), 1) * 100)}%`; // CSSOM: allowed by the CSP
  return h("span", {class: "bar", role: "progressbar", "aria-label": label,
                    "aria-valuenow": Math.round(fraction * 100), "aria-valuemin": 0, "aria-valuemax": 100}, fill);
}

function cardRows(card) {
  const q = card.quantization || {};
  const quant = q.method && q.method !== "none"
    ? [q.method.toUpperCase(), q.bits ? `${q.bits}-bit` : null, q.group_size ? `g${q.group_size}` : null,
       q.symmetric === true ? "sym" : q.symmetric === false ? "asym" : null].filter(Boolean).join(" · ")
    : "none (float)";
  const rows = [fact("Context", `${formatCount(card.max_model_len)} tokens`), fact("Quantization", quant)];
  if (q.format) rows.push(fact("Format", q.format));
  return rows;
}

function usageRows(body) {
  const usage = Number(body.kv_cache_usage) || 0;
  const queued = body.queue_depth ?? 0;
  return [
    fact("KV cache", bar(usage, "KV-cache usage"),
         h("span", {class: "bar-label"}, `${(usage * 100).toFixed(usage < 0.1 ? 1 : 0)}%`)),
    fact("Requests", `${body.num_running ?? 0} running · ${queued} queued`),
  ];
}

/** While loading, /health may say {phase, progress (0..1), eta_s, detail}: shown as phase + bar. */
function loadingRow(body) {
  const fraction = progressFraction(body.progress);
  const phase = body.phase ? String(body.phase).replace(/_/g, " ") : "starting";
  const eta = Number.isFinite(body.eta_s) && body.eta_s > 0 ? `about ${Math.ceil(body.eta_s)} s left` : "";
  return [
    fact("Loading", h("span", {class: "phase", title: body.detail || ""}, phase)),
    fraction === null ? null : fact("", bar(fraction, "loading progress"),
                                    h("span", {class: "bar-label"}, `${Math.round(fraction * 100)}%`)),
    eta ? fact("", h("span", {class: "muted"}, eta)) : null,
  ].filter(Boolean);
}

/** /health's `progress` while loading: a fraction, a percentage, or {fraction} / {done, total}. */
export function progressFraction(p) {
  if (typeof p === "number" && Number.isFinite(p)) return p > 1 ? p / 100 : p;
  if (p && typeof p === "object") {
    if (Number.isFinite(p.fraction)) return p.fraction;
    if (Number.isFinite(p.done) && Number.isFinite(p.total) && p.total > 0) return p.done / p.total;
  }
  return null;
}
