// The conversation list (open, rename inline, delete with a second click) and export/import as JSON.

import {h, icon, relativeTime, toast} from "./dom.js";

const CONFIRM_MS = 3000;

export class Sidebar {
  /** hooks: {open(conv), deleted(id), currentId(), streamingId()} */
  constructor(store, hooks) {
    this.store = store;
    this.hooks = hooks;
    this.list = document.getElementById("conversations");
    document.getElementById("export").addEventListener("click", () => this.exportAll());
    const file = document.getElementById("import-file");
    document.getElementById("import").addEventListener("click", () => file.click());
    file.addEventListener("change", () => this.importFile(file));
  }

  render() {
    const items = this.store.list();
    if (items.length === 0) {
      const hint = "Your conversations appear here. They stay in this browser.";
      this.list.replaceChildren(h("p", {class: "conv-empty"}, hint));
      return;
    }
    this.list.replaceChildren(...items.map((conv) => this.item(conv)));
  }

  item(conv) {
    const current = conv.id === this.hooks.currentId();
    const streaming = conv.id === this.hooks.streamingId();
    const title = h("span", {class: "conv-title"}, conv.title);
    const row = h("div", {class: `conv-item${current ? " current" : ""}`, dataset: {id: conv.id}},
      h("button", {class: "conv-open", type: "button", "aria-current": current ? "page" : null,
                   onclick: () => this.hooks.open(conv)},
        title,
        h("span", {class: "conv-meta"}, streaming ? h("span", {class: "live-dot", title: "replying"}) : null,
          relativeTime(conv.updated))),
      h("span", {class: "conv-actions"},
        h("button", {class: "icon-btn small", type: "button", title: "Rename", "aria-label": "Rename",
                     onclick: () => this.rename(row, conv)}, icon("edit")),
        this.deleteButton(conv)));
    return row;
  }

  rename(row, conv) {
    const input = h("input", {class: "conv-rename", value: conv.title, "aria-label": "Conversation title",
                              maxlength: 120});
    let done = false;
    const finish = (commit) => {
      if (done) return;
      done = true;
      if (commit && input.value.trim()) this.store.rename(conv.id, input.value);
      this.render();
      this.hooks.renamed?.(conv);
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); finish(true); }
      if (e.key === "Escape") { e.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
    row.replaceChildren(input);
    input.focus();
    input.select();
  }

  deleteButton(conv) {
    const button = h("button", {class: "icon-btn small danger", type: "button", title: "Delete",
                                "aria-label": "Delete"}, icon("trash"));
    let armed = 0;
    button.addEventListener("click", () => {
      if (armed) {
        clearTimeout(armed);
        this.store.remove(conv.id);
        this.hooks.deleted(conv.id);
        return;
      }
      button.classList.add("armed");
      button.replaceChildren("Delete?");
      button.setAttribute("aria-label", "Confirm delete");
      armed = setTimeout(() => {
        armed = 0;
        button.classList.remove("armed");
        button.replaceChildren(icon("trash"));
        button.setAttribute("aria-label", "Delete");
      }, CONFIRM_MS);
    });
    return button;
  }

  exportAll() {
    const data = this.store.exportData();
    if (data.conversations.length === 0) {
      toast("Nothing to export yet.");
      return;
    }
    const blob = new Blob([JSON.stringify(data, null, 2)], {type: "application/json"});
    const url = URL.createObjectURL(blob);
    const day = new Date().toISOString().slice(0, 10);
    const link = h("a", {href: url, download: `awqserve-conversations-${day}.json`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast(`Exported ${data.conversations.length} conversation${data.conversations.length === 1 ? "" : "s"}.`);
  }

  async importFile(input) {
    const file = input.files?.[0];
    input.value = ""; // the same file can be chosen again
    if (!file) return;
    try {
      const count = this.store.importData(JSON.parse(await file.text()));
      this.render();
      toast(`Imported ${count} conversation${count === 1 ? "" : "s"}.`);
    } catch (err) {
      toast(`Import failed: ${err.message}`, "error");
    }
  }
}
