// The server's HTTP API, with every failure turned into an ApiError carrying a readable message.

export class ApiError extends Error {
  constructor(message, status = 0, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const STATUS_TEXT = {
  400: "The request was not accepted", 401: "This page needs an API key", 403: "This needs an admin API key", 404: "Not found", 409: "Not ready yet",
  413: "The file is too large", 429: "The server is busy; try again shortly",
  502: "The transcription engine failed", 503: "The server is not ready", 507: "The server is out of space",
};

// Error JSON {"error": {"message": ...}} → its message; anything else → a sentence from the status.
export function readableError(status, text) {
  try {
    const msg = JSON.parse(text)?.error?.message;
    if (msg) return sentence(msg);
  } catch { /* not JSON: fall through */ }
  return (STATUS_TEXT[status] || `The server answered ${status}`) + ".";
}

const sentence = (s) => {
  s = String(s).trim();
  return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
};

// ---------------------------------------------------------------- the API key
// Kept for this tab only (sessionStorage), sent as a Bearer header, never put in a URL.

const KEY_SLOT = "stt_server.api_key";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_SLOT),
  set: (key) => sessionStorage.setItem(KEY_SLOT, key),
  clear: () => sessionStorage.removeItem(KEY_SLOT),
};

// Headers for every call: the Bearer key when there is one.
export function authHeaders(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// A 401 anywhere means the key is missing, wrong or revoked: the page asks for one again.
function unauthorized() {
  window.dispatchEvent(new CustomEvent("stt:unauthorized"));
}

async function send(path, options = {}, accept = "application/json") {
  let res;
  try {
    res = await fetch(path, { ...options, headers: authHeaders({ Accept: accept, ...(options.headers || {}) }) });
  } catch {
    throw new ApiError("Could not reach the server. Check your connection and try again.");
  }
  if (res.status === 401) unauthorized();
  if (!res.ok) throw new ApiError(readableError(res.status, await res.text()), res.status);
  return res;
}

export async function request(path, options = {}) {
  const res = await send(path, options);
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

// Who the key is: {key_id, role, keys_required}; with `key`, checks that key instead of the stored one.
export async function whoami(key) {
  const headers = key ? { Authorization: `Bearer ${key}`, Accept: "application/json" } : authHeaders({ Accept: "application/json" });
  let res;
  try {
    res = await fetch("/v1/me", { headers });
  } catch {
    throw new ApiError("Could not reach the server. Check your connection and try again.");
  }
  if (!res.ok) throw new ApiError(readableError(res.status, await res.text()), res.status);
  return res.json();
}

// A link the <audio> element can play without a header: minted for a few minutes by an authenticated call.
export async function audioLink(id) {
  return (await request(`/v1/jobs/${encodeURIComponent(id)}/audio-url`, { method: "POST" })).url;
}

// Save a file from an authenticated GET (an <a download> cannot send the key).
export async function download(path, fallbackName) {
  const res = await send(path, {}, "*/*");
  const blob = await res.blob();
  const disposition = res.headers.get("Content-Disposition") || "";
  const name = disposition.match(/filename="?([^";]+)"?/)?.[1] || fallbackName;
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Server-Sent Events over fetch (EventSource cannot send the key). Calls onEvent(name, data, id) per event;
// resolves when the stream ends; reconnects with Last-Event-ID when it drops, as EventSource would.
export async function streamEvents(path, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; !signal.aborted && attempt < 5; attempt++) {
    let res;
    try {
      const headers = lastId ? { "Last-Event-ID": lastId } : {};
      res = await send(path, { signal, headers }, "text/event-stream");
    } catch (err) {
      if (signal.aborted || (err instanceof ApiError && err.status >= 400 && err.status < 500)) return;
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
      continue;
    }
    try {
      lastId = await readEvents(res.body, onEvent, lastId);
      return; // the server ends the stream once the job is finished
    } catch {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
    }
  }
}

async function readEvents(body, onEvent, lastId) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return lastId;
    buffer += value;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (event.id !== null) lastId = event.id;
        if (event.data.length) onEvent(event.name, event.data.join("\n"), event.id);
        event = { name: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.name = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
}

export const getJson = (path) => request(path);
export const listJobs = (params = {}) => request("/v1/jobs?" + new URLSearchParams(params));
export const getJob = (id) => request(`/v1/jobs/${encodeURIComponent(id)}`);
export const deleteJob = (id) => request(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });

// POST /v1/jobs with XHR, for upload progress: onProgress(fraction in 0..1). Resolves to the job.
export function uploadJob(file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [k, v] of Object.entries(authHeaders({ Accept: "application/json" }))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try { resolve(JSON.parse(xhr.responseText)); } catch { reject(new ApiError("The server sent an unreadable answer.")); }
      } else {
        if (xhr.status === 401) unauthorized();
        reject(new ApiError(readableError(xhr.status, xhr.responseText), xhr.status));
      }
    };
    xhr.onerror = () => reject(new ApiError("The upload was interrupted. Check your connection and try again."));
    xhr.send(form);
  });
}

// Formatting shared by every view.
export function clock(seconds, ms = false) {
  if (seconds == null || !isFinite(seconds)) return "–";
  const t = Math.max(0, seconds);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = Math.floor(t % 60);
  const mm = h ? String(m).padStart(2, "0") : String(m);
  let out = `${h ? h + ":" : ""}${mm}:${String(s).padStart(2, "0")}`;
  if (ms) out += "." + String(Math.floor((t % 1) * 10));
  return out;
}

export function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function seconds(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return s < 10 ? `${s.toFixed(1)} s` : s < 120 ? `${Math.round(s)} s` : clock(s);
}

// A tiny element builder: h("p", {class: "x", onclick}, "text", child).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: the page's CSP refuses inline style attributes
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c != null && c !== false) el.append(c);
  return el;
}
