// The server's HTTP API, with every failure turned into an ApiError carrying a readable message.

export class ApiError extends Error {
  constructor(message, status = 0, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const STATUS_TEXT = {
  400: "The request was not accepted", 404: "Not found", 409: "Not ready yet",
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

export async function request(path, options = {}) {
  let res;
  try {
    res = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  } catch {
    throw new ApiError("Could not reach the server. Check your connection and try again.");
  }
  if (!res.ok) throw new ApiError(readableError(res.status, await res.text()), res.status);
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
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
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try { resolve(JSON.parse(xhr.responseText)); } catch { reject(new ApiError("The server sent an unreadable answer.")); }
      } else reject(new ApiError(readableError(xhr.status, xhr.responseText), xhr.status));
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
