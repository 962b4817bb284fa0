// The page's HTTP client: bearer key, OpenAI error envelopes (with Retry-After), and an SSE reader
// for streamed chat completions. Paths are relative to the page, so a reverse proxy may mount it anywhere.

/** An API failure: `status` 0 means the server could not be reached at all. */
export class ApiError extends Error {
  constructor(status, message, {code = null, type = null, param = null, retryAfter = null} = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
    this.retryAfter = retryAfter; // seconds, from the Retry-After header
  }

  static async fromResponse(response) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch { /* not an envelope: keep the status line */ }
    const retry = Number.parseFloat(response.headers.get("retry-after"));
    return new ApiError(response.status, error.message || `${response.status} ${response.statusText}`, {
      code: error.code, type: error.type, param: error.param,
      retryAfter: Number.isFinite(retry) ? retry : null,
    });
  }

  /** A `data: {"error": {...}}` event sent after the stream had started. */
  static fromEvent(error) {
    return new ApiError(error.status || 500, error.message || "The server reported an error.", error);
  }

  get needsKey() {
    return this.status === 401;
  }

  /** One line for the page: what happened and, where the server said so, when to try again. */
  describe() {
    const head = this.status === 0 ? "Server unreachable"
      : this.status === 429 ? "Rate limited"
      : this.status === 503 ? "Server busy or unavailable"
      : `Error ${this.status}`;
    const retry = this.retryAfter !== null ? ` Try again in ${Math.ceil(this.retryAfter)} s.` : "";
    return `${head}: ${this.message}${retry}`;
  }
}

export class ApiClient {
  /** `getKey()` returns the bearer key to send, or null. */
  constructor(getKey) {
    this.getKey = getKey;
  }

  url(path) {
    return new URL(path, document.baseURI).toString();
  }

  headers(extra = {}) {
    const key = this.getKey();
    return key ? {...extra, Authorization: `Bearer ${key}`} : extra;
  }

  async fetch(path, init = {}) {
    try {
      return await fetch(this.url(path), {...init, headers: this.headers(init.headers)});
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the server did not answer (is it still running?)");
    }
  }

  /** GET a JSON body; non-2xx answers throw ApiError. */
  async getJSON(path) {
    const response = await this.fetch(path, {cache: "no-store"});
    if (!response.ok) throw await ApiError.fromResponse(response);
    return response.json();
  }

  /** /health answers 503 with a meaningful body while loading or draining: return it either way. */
  async health() {
    const response = await this.fetch("health", {cache: "no-store"});
    let body = {};
    try {
      body = await response.json();
    } catch { /* keep {} */ }
    return {httpStatus: response.status, body};
  }

  /** POST a streamed chat completion; yields each JSON chunk (an error chunk throws ApiError). */
  async *chatStream(body, signal) {
    const response = await this.fetch("v1/chat/completions", {
      method: "POST", signal, body: JSON.stringify({...body, stream: true}),
      headers: {"Content-Type": "application/json", Accept: "text/event-stream", "x-awqserve-debug": "1"},
    });
    if (!response.ok) throw await ApiError.fromResponse(response);
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw ApiError.fromEvent(chunk.error);
      yield chunk;
    }
  }
}

/** The `data:` payloads of a text/event-stream body, one per event, in order. */
export async function* sseData(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = eventData(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data !== null) yield data;
      }
    }
    const tail = eventData(buffer);
    if (tail !== null) yield tail;
  } finally {
    await reader.cancel().catch(() => {}); // closes the connection when the reader stops early
  }
}

function eventData(block) {
  const lines = block.split("\n").filter((line) => line.startsWith("data:"));
  if (lines.length === 0) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}
