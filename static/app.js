// The first page: upload, the live job list, and the router that loads the other views on demand.
import { ApiError, apiKey, deleteJob, getJob, getJson, h, listJobs, streamEvents, uploadJob, whoami, bytes, clock, seconds } from "./api.js";

const $ = (sel) => document.querySelector(sel);
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const MAX_STREAMS = 3; // browsers allow ~6 connections per host; leave room for the rest
const POLL_MS = 3000;
const PAGE = 30;

// ---------------------------------------------------------------- messages

export function toast(message, kind = "error") {
  const close = h("button", { class: "x", type: "button", "aria-label": "Dismiss", onclick: () => box.remove() }, "×");
  const box = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, h("span", {}, message), close);
  $("#toasts").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 9000 : 4000);
}

const messageOf = (err) => (err instanceof ApiError ? err.message : "Something went wrong in the page. Reload and try again.");

// ---------------------------------------------------------------- job list state

const jobs = new Map(); // id → job (as the API shows it, patched by events)
const rows = new Map(); // id → <li>
const streams = new Map(); // id → AbortController of its event stream
let cursor = null;
let filter = "";

function percent(job) {
  if (job.status === "completed") return 100;
  const { chunks_total: total, chunks_done: done } = job.progress || {};
  return total ? Math.min(100, Math.round((100 * done) / total)) : 0;
}

// The job list is not a live region (it would be read out again on every refresh); a finished job is
// announced once, in words, through one status line.
function announce(text) {
  const line = $("#announce");
  line.textContent = "";
  setTimeout(() => { line.textContent = text; }, 50);
}

const announced = new Set();
function announceFinished(job) {
  if (!FINISHED.has(job.status) || announced.has(job.id)) return;
  announced.add(job.id);
  if (job.seenRunning) announce(`${job.filename}: ${job.status}.`);
}

function patch(id, changes) {
  const job = jobs.get(id);
  if (!job) return;
  if (changes.progress) changes.progress = { ...job.progress, ...changes.progress };
  Object.assign(job, changes);
  if (!FINISHED.has(job.status)) job.seenRunning = true;
  render(job);
  announceFinished(job);
}

function metaLine(job) {
  const parts = [`${clock(job.duration_s)} audio`, job.priority, [job.engine, job.model].filter(Boolean).join(" · ")];
  if (job.status === "queued" && job.queue_position != null) parts.push(`#${job.queue_position} in queue`);
  if (job.status === "running" && job.started_at) parts.push(`running ${seconds(Date.now() / 1000 - job.started_at)}`);
  if (job.finished_at && job.started_at) parts.push(`took ${seconds(job.finished_at - job.started_at)}`);
  return parts.filter(Boolean).join(" · ");
}

function actions(job) {
  const id = job.id;
  const open = job.status === "completed" ? h("a", { class: "btn", href: `#/jobs/${id}` }, "Transcript") : null;
  if (!FINISHED.has(job.status)) {
    return [h("button", { class: "btn ghost danger", type: "button", "data-action": "cancel", onclick: () => cancel(id) }, "Cancel")];
  }
  const del = h("button", { class: "btn ghost danger", type: "button", "data-action": "delete" }, "Delete");
  del.addEventListener("click", () => {
    if (del.dataset.armed) return remove(id);
    del.dataset.armed = "1";
    del.textContent = "Confirm delete";
    setTimeout(() => { delete del.dataset.armed; del.textContent = "Delete"; }, 4000);
  });
  return [open, del];
}

function render(job) {
  let li = rows.get(job.id);
  if (!li) {
    li = h("li", { class: "job", "data-id": job.id });
    rows.set(job.id, li);
  }
  const pct = percent(job);
  const status = job.status;
  li.dataset.status = status;
  // The text so far while it runs (transcript.delta events), its last few lines only.
  const partial = status === "running" && job.partial ? job.partial.slice(-280) : "";
  const key = JSON.stringify([status, pct, metaLine(job), job.cached, job.error, job.filename, partial]);
  if (li.dataset.key === key) return li;
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  li.dataset.key = key;
  const name = job.status === "completed"
    ? h("a", { class: "name", href: `#/jobs/${job.id}` }, job.filename)
    : h("span", { class: "name" }, job.filename);
  li.replaceChildren(
    h("div", { class: "job-main" },
      h("div", { class: "job-title" }, name,
        h("span", { class: `badge s-${status}` }, status),
        job.cached ? h("span", { class: "badge cached", title: "Served from the cache: no engine call" }, "cached") : null),
      h("div", { class: "meta" }, metaLine(job)),
      job.error ? h("div", { class: "err" }, job.error) : null,
      partial ? h("p", { class: "partial", "aria-live": "polite" }, partial) : null,
      h("div", { class: "progress" },
        h("div", { class: "bar", role: "progressbar", "aria-label": `Progress of ${job.filename}`,
          "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct },
          h("span", { style: `width:${pct}%` })),
        h("span", { class: "pct" }, `${pct} %`))),
    h("div", { class: "job-actions" }, actions(job)));
  if (focused) li.querySelector(`[data-action="${focused}"]`)?.focus();
  return li;
}

function place() {
  const list = $("#jobs");
  const sorted = [...jobs.values()]
    .filter((j) => !filter || j.status === filter)
    .sort((a, b) => b.created_at - a.created_at);
  sorted.forEach((job, i) => {
    const li = render(job);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  while (list.children.length > sorted.length) list.lastElementChild.remove();
  $("#jobs-empty").hidden = sorted.length > 0;
}

function upsert(job, { stream = true } = {}) {
  const known = jobs.get(job.id);
  // Events can run ahead of a poll answer: never move progress backwards within one status.
  if (known && known.status === job.status && percent(known) > percent(job)) job.progress = known.progress;
  job.seen = performance.now();
  if (known && !FINISHED.has(known.status)) known.seenRunning = true;
  jobs.set(job.id, known ? Object.assign(known, job) : job);
  if (known) announceFinished(known);
  if (stream && !FINISHED.has(job.status)) follow(job.id);
}

function forget(id) {
  jobs.delete(id);
  rows.get(id)?.remove();
  rows.delete(id);
  unfollow(id);
  place();
}

// ---------------------------------------------------------------- live progress (SSE)

const HANDLERS = {
  "job.queued": (id) => patch(id, { status: "queued" }),
  "job.started": (id) => patch(id, { status: "running", started_at: jobs.get(id)?.started_at || Date.now() / 1000 }),
  "job.cache_hit": (id) => patch(id, { cached: true }),
  "chunk.planned": (id, d) => patch(id, { progress: { chunks_total: d.chunks_total, chunks_done: 0 } }),
  "job.resumed": (id, d) => patch(id, { progress: { chunks_total: d.chunks_total, chunks_done: d.chunks_done } }),
  "chunk.completed": (id, d) => patch(id, { progress: { chunks_total: d.chunks_total, chunks_done: d.chunks_done } }),
  "transcript.delta": (id, d) => patch(id, { partial: (jobs.get(id)?.partial || "") + (d.text || "") }),
  "job.completed": (id, d) => { patch(id, { status: "completed", cached: !!d.cached }); done(id, true); },
  "job.failed": (id, d) => { patch(id, { status: "failed", error: d.error || "failed" }); done(id, true); },
  "job.cancelled": (id) => { patch(id, { status: "cancelled" }); done(id, false); },
  "job.deleted": (id) => done(id, false),
};

function follow(id) {
  if (streams.has(id) || streams.size >= MAX_STREAMS) return;
  const stop = new AbortController();
  streams.set(id, stop);
  const onEvent = (name, text) => {
    let data = {};
    try { data = JSON.parse(text).data || {}; } catch { /* garbage */ }
    HANDLERS[name]?.(id, data);
  };
  streamEvents(`/v1/jobs/${encodeURIComponent(id)}/events`, onEvent, stop.signal)
    .finally(() => { if (streams.get(id) === stop) done(id, false); });
}

function unfollow(id) {
  streams.get(id)?.abort();
  streams.delete(id);
}

async function done(id, refresh) {
  unfollow(id);
  if (refresh) {
    try { upsert(await getJob(id), { stream: false }); } catch { /* it may be gone */ }
  }
  place();
  for (const job of jobs.values()) if (!FINISHED.has(job.status)) follow(job.id);
}

// ---------------------------------------------------------------- list loading and polling

async function loadFirstPage() {
  const params = { limit: PAGE };
  if (filter) params.status = filter;
  const began = performance.now();
  const page = await listJobs(params);
  const oldest = page.has_more ? page.data[page.data.length - 1].created_at : -Infinity;
  const seen = new Set(page.data.map((j) => j.id));
  // A job within the page's span that the server no longer lists was deleted elsewhere.
  for (const job of [...jobs.values()]) {
    if (!seen.has(job.id) && job.seen < began && job.created_at >= oldest && (!filter || job.status === filter)) forget(job.id);
  }
  page.data.forEach((j) => upsert(j));
  if (cursor === null || !page.has_more) cursor = page.next_cursor;
  $("#more").hidden = !cursor;
  place();
}

async function loadMore() {
  if (!cursor) return;
  const params = { limit: PAGE, after: cursor };
  if (filter) params.status = filter;
  try {
    const page = await listJobs(params);
    page.data.forEach((j) => upsert(j));
    cursor = page.next_cursor;
    $("#more").hidden = !cursor;
    place();
  } catch (err) { toast(messageOf(err)); }
}

let pollTimer = null;
let pollFailed = false;
async function poll() {
  clearTimeout(pollTimer);
  if (!document.hidden && session.role && !$("#view-jobs").hidden) {
    try {
      await loadFirstPage();
      pollFailed = false;
    } catch (err) {
      if (!pollFailed) toast(`Could not refresh the job list: ${messageOf(err)}`);
      pollFailed = true;
    }
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

async function cancel(id) {
  try {
    await deleteJob(id); // a queued or running job is cancelled and kept; a second DELETE removes it
    patch(id, { status: "cancelled" });
    unfollow(id);
    toast("Job cancelled.", "info");
  } catch (err) { toast(messageOf(err)); }
}

async function remove(id) {
  try {
    await deleteJob(id);
    forget(id);
    toast("Job deleted.", "info");
  } catch (err) { toast(messageOf(err)); }
}

// ---------------------------------------------------------------- uploads

const waiting = [];
let active = 0;
const UPLOADS_AT_ONCE = 2;

function enqueueFiles(files) {
  const fields = { priority: $("#priority").value, engine: $("#engine").value, language: $("#language").value.trim() };
  for (const file of files) {
    const bar = h("span", { style: "width:0%" });
    const state = h("span", { class: "state" }, "Waiting…");
    const li = h("li", { class: "upload" },
      h("div", { class: "up-head" }, h("span", { class: "name" }, file.name), h("span", { class: "size" }, bytes(file.size))),
      h("div", { class: "progress" },
        h("div", { class: "bar", role: "progressbar", "aria-label": `Upload of ${file.name}`, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0 }, bar),
        state));
    $("#uploads").append(li);
    waiting.push({ file, fields, li, bar, state });
  }
  pump();
}

function pump() {
  while (active < UPLOADS_AT_ONCE && waiting.length) {
    active++;
    send(waiting.shift()).finally(() => { active--; pump(); });
  }
}

async function send({ file, fields, li, bar, state }) {
  const show = (f) => {
    const pct = Math.round(f * 100);
    bar.style.width = pct + "%";
    bar.parentElement.setAttribute("aria-valuenow", pct);
    state.textContent = pct < 100 ? `Uploading ${pct} %` : "Processing upload…";
  };
  show(0);
  try {
    const job = await uploadJob(file, fields, show);
    show(1);
    li.classList.add("ok");
    state.textContent = job.cached ? "Uploaded · already transcribed" : "Uploaded";
    upsert(job);
    place();
    setTimeout(() => li.remove(), 5000);
  } catch (err) {
    li.classList.add("failed");
    state.textContent = messageOf(err);
    li.append(h("button", { class: "x", type: "button", "aria-label": `Dismiss ${file.name}`, onclick: () => li.remove() }, "×"));
  }
}

function setupUpload() {
  const drop = $("#drop");
  const input = $("#file");
  input.addEventListener("change", () => { enqueueFiles([...input.files]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", (e) => { if (!drop.contains(e.relatedTarget)) drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) enqueueFiles(files);
  });
  // A file dropped outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

async function loadEngines() {
  try {
    const models = await getJson("/v1/models");
    const select = $("#engine");
    select.replaceChildren(h("option", { value: "" }, "Default"));
    for (const m of models.data || []) {
      if (!String(m.owned_by || "").startsWith("stt_server:")) continue; // aliases such as whisper-1
      select.append(h("option", { value: m.engine }, `${m.engine} · ${m.id}`));
    }
  } catch { /* the server default still works */ }
}

// ---------------------------------------------------------------- router

let unmount = null;
let generation = 0;

async function route() {
  const path = location.hash.replace(/^#/, "") || "/";
  const mine = ++generation;
  unmount?.();
  unmount = null;
  const lazy = $("#view-lazy");
  const match = path.match(/^\/jobs\/([\w-]+)$/);
  const view = match ? "transcript" : path === "/dashboard" && session.role === "admin" ? "dashboard" : "jobs";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.toggleAttribute("aria-current", a.dataset.nav === (view === "transcript" ? "jobs" : view));
  }
  $("#view-jobs").hidden = view !== "jobs";
  lazy.hidden = view === "jobs";
  if (view === "jobs") {
    document.title = "Transcribe · stt_server";
    lazy.replaceChildren();
    poll();
    return;
  }
  lazy.replaceChildren(h("p", { class: "empty" }, "Loading…"));
  try {
    const mod = view === "dashboard" ? await import("./dashboard.js") : await import("./transcript.js");
    if (mine !== generation) return;
    unmount = mod.mount(lazy, { id: match?.[1], toast, messageOf });
  } catch (err) {
    lazy.replaceChildren(h("p", { class: "err" }, "This view could not be loaded. Check the connection and reload."));
  }
  $("#main").focus({ preventScroll: true });
}

// ---------------------------------------------------------------- signing in

const session = { role: null, keyId: null };

function showSignIn(message = "") {
  for (const id of [...streams.keys()]) unfollow(id);
  clearTimeout(pollTimer);
  jobs.clear();
  for (const li of rows.values()) li.remove();
  rows.clear();
  session.role = null;
  $("#view-sign-in").hidden = false;
  $("#view-jobs").hidden = true;
  $("#view-lazy").hidden = true;
  $("#sign-out").hidden = true;
  document.querySelector('[data-nav="dashboard"]').hidden = true;
  const error = $("#sign-in-error");
  error.hidden = !message;
  error.textContent = message;
  $("#api-key").focus();
}

function signedIn(me) {
  session.role = me.role;
  session.keyId = me.key_id;
  $("#view-sign-in").hidden = true;
  $("#sign-out").hidden = !me.keys_required;
  document.querySelector('[data-nav="dashboard"]').hidden = me.role !== "admin";
  route();
  loadEngines();
}

async function start(attempt = 0) {
  try {
    signedIn(await whoami());
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const had = apiKey.get();
      apiKey.clear();
      showSignIn(had ? "Your API key was not accepted any more. Sign in again." : "");
    } else {
      if (attempt === 0) toast(messageOf(err)); // once: the page keeps trying quietly
      setTimeout(() => start(attempt + 1), Math.min(30_000, 3000 * (attempt + 1)));
    }
  }
}

$("#sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  try {
    const me = await whoami(key);
    apiKey.set(key);
    $("#api-key").value = "";
    signedIn(me);
  } catch (err) {
    showSignIn(err instanceof ApiError && err.status === 401 ? "That API key was not accepted." : messageOf(err));
  }
});

$("#sign-out").addEventListener("click", () => {
  apiKey.clear();
  location.hash = "#/";
  showSignIn();
});

window.addEventListener("stt:unauthorized", () => {
  if (session.role === null) return; // signing in: the form says so
  apiKey.clear();
  showSignIn("Your API key was not accepted any more. Sign in again.");
});

setupUpload();
$("#more").addEventListener("click", loadMore);
$("#status-filter").addEventListener("change", (e) => {
  filter = e.target.value;
  cursor = null;
  for (const id of [...jobs.keys()]) if (!streams.has(id)) { jobs.delete(id); rows.get(id)?.remove(); rows.delete(id); }
  poll();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden && session.role) poll(); });
window.addEventListener("hashchange", () => { if (session.role) route(); });
start();
