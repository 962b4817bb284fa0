// Markdown → sanitized HTML → highlighted code blocks with copy buttons.
//
// The model's text is untrusted: marked turns it into HTML, DOMPurify removes anything that could run
// (scripts, event handlers, javascript: URLs, forms, inline styles), and only then is it inserted.
// Highlighting works on the code's text and hljs escapes what it emits. Remote images are blocked
// by the page's content-security-policy anyway.

import {Marked} from "../vendor/marked-18.2.1/marked.esm.js";
import DOMPurify from "../vendor/dompurify-3.5.0/purify.es.mjs";
import hljs from "../vendor/highlightjs-11.12.0/highlight.min.js";
import {copyButton, h} from "./dom.js";

const marked = new Marked({gfm: true, breaks: false});
const PURIFY = {FORBID_TAGS: ["style", "form", "button", "textarea", "select", "iframe"], FORBID_ATTR: ["style"]};
const AUTO_LANGUAGES = ["python", "javascript", "typescript", "bash", "json", "c", "cpp", "rust", "go", "java",
                        "sql", "yaml", "xml", "css"];
const AUTO_LIMIT = 4000; // characters: guessing the language of longer unlabelled blocks costs too much per frame

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Replace `target`'s children with `text` rendered as markdown. */
export function renderMarkdown(target, text) {
  const html = DOMPurify.sanitize(marked.parse(text), PURIFY);
  target.innerHTML = html;
  for (const pre of target.querySelectorAll("pre")) decorateCode(pre);
}

function decorateCode(pre) {
  const code = pre.querySelector("code");
  if (!code) return;
  const source = code.textContent;
  const declared = [...code.classList].find((c) => c.startsWith("language-"))?.slice(9) || "";
  const language = hljs.getLanguage(declared) ? declared : "";
  let result = null;
  if (language) result = hljs.highlight(source, {language, ignoreIllegals: true});
  else if (source.length <= AUTO_LIMIT) result = hljs.highlightAuto(source, AUTO_LANGUAGES);
  if (result) {
    code.innerHTML = result.value; // hljs escapes the text it highlights
    code.classList.add("hljs");
  }
  const label = declared || (result?.relevance > 5 ? result.language : "") || "text";
  const head = h("div", {class: "code-head"}, h("span", {class: "code-lang"}, label),
                 copyButton(() => source, "Copy code"));
  const block = h("div", {class: "code-block"});
  pre.replaceWith(block);
  block.append(head, pre);
}

/**
 * Split a leading <think>…</think> block off `text` (models whose reasoning the server does not parse,
 * i.e. no --reasoning-parser). Returns {reasoning, content, open}: `open` while the block is unfinished.
 */
export function splitThink(text) {
  const match = /^\s*<think>/.exec(text);
  if (!match) return {reasoning: "", content: text, open: false};
  const rest = text.slice(match[0].length);
  const end = rest.indexOf("</think>");
  if (end < 0) return {reasoning: rest.trim(), content: "", open: true};
  return {reasoning: rest.slice(0, end).trim(), content: rest.slice(end + 8).replace(/^\s+/, ""), open: false};
}
