// The operations dashboard: queue, workers, cache tiers, engines and upstreams, throughput and latency, live.
import { getJson, h, bytes, clock, seconds } from "./api.js";

const STATS_MS = 2000;
const JOBS_MS = 10000;
const HISTORY = 90; // samples kept for the sparklines (3 min at 2 s)
const WINDOW_S = 900; // throughput window: the last 15 minutes

export function mount(root, { messageOf }) {
  document.title = "Dashboard · stt_server";
  let alive = true;
  let timer = null;
  let stats = null;
  let recent = null;
  let error = null;
  let jobsAt = 0;
  let lastCompleted = -1;
  const history = [];

  const updated = h("span", { class: "muted small", "aria-live": "off" });
  const body = h("div", { class: "dash" }, h("p", { class: "empty" }, "Loading figures…"));
  const banner = h("p", { class: "err", role: "alert", hidden: true });
  root.replaceChildren(h("div", { class: "dash-head" }, h("h1", {}, "Operations"), updated), banner, body);

  async function tick() {
    clearTimeout(timer);
    if (!alive) return;
    if (!document.hidden) {
      try {
        stats = await getJson("/v1/admin/stats");
        const completed = stats.jobs?.completed ?? 0;
        if (completed !== lastCompleted || Date.now() - jobsAt > JOBS_MS) { // a job finished: new figures
          recent = (await getJson("/v1/jobs?status=completed&limit=100")).data;
          jobsAt = Date.now();
          lastCompleted = completed;
        }
        error = null;
        history.push({ depth: stats.queue?.depth ?? 0, busy: stats.workers?.busy ?? 0 });
        if (history.length > HISTORY) history.shift();
      } catch (err) {
        error = messageOf(err);
      }
      if (alive) draw();
    }
    timer = setTimeout(tick, STATS_MS);
  }

  function draw() {
    banner.hidden = !error;
    banner.textContent = error ? `Could not refresh the figures: ${error}` : "";
    if (!stats) return;
    updated.textContent = `Updated ${new Date().toLocaleTimeString()} · up ${seconds(stats.uptime_s)}`;
    body.replaceChildren(
      h("div", { class: "tiles" }, queueTile(stats.queue || {}), workersTile(stats.workers || {}),
        jobsTile(stats.jobs || {}), ...flowTiles(recent || [], stats.metrics?.job_latency_s)),
      h("section", { class: "card" }, h("h2", {}, "Queue depth and busy workers, last 3 minutes"), spark(history, stats)),
      h("section", { class: "card" }, h("h2", {}, "Latency percentiles"), latencyTable(stats.metrics || {}, recent || [])),
      h("section", { class: "card" }, h("h2", {}, "Cache tiers"), cacheTable(stats.cache || {}, recent || [])),
      h("section", { class: "card" }, h("h2", {}, "Engines and upstream pool"), engines(stats.engines || {})),
      h("section", { class: "card" }, h("h2", {}, "Events since start"), events(stats.events || {})));
  }

  document.addEventListener("visibilitychange", tick);
  tick();
  return () => { alive = false; clearTimeout(timer); document.removeEventListener("visibilitychange", tick); };
}

// ---------------------------------------------------------------- tiles

const tile = (label, value, ...rest) =>
  h("section", { class: "tile", "aria-label": label }, h("h2", {}, label), h("div", { class: "big" }, String(value)), ...rest);

const meter = (fraction, label) =>
  h("div", { class: "bar", role: "meter", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": Math.round(100 * fraction) }, h("span", { style: `width:${Math.round(100 * Math.min(1, fraction))}%` }));

function queueTile(q) {
  const by = q.by_priority || {};
  const max = Math.max(1, ...Object.values(by));
  return tile("Queue depth", q.depth ?? 0,
    h("dl", { class: "rows" }, ["high", "normal", "low"].map((p) => [
      h("dt", {}, p), h("dd", {}, meter((by[p] || 0) / max, `${p} priority`), h("span", { class: "num" }, String(by[p] || 0)))])),
    q.max_queued ? h("p", { class: "muted small" }, `limit ${q.max_queued}`) : null);
}

function workersTile(w) {
  const total = w.total || 0, busy = w.busy || 0;
  return tile("Workers busy", `${busy} / ${total}`, meter(total ? busy / total : 0, "workers busy"),
    h("p", { class: "muted small" }, busy ? `running ${(w.running || []).length} job${(w.running || []).length === 1 ? "" : "s"}` : "idle"));
}

function jobsTile(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return tile("Jobs stored", total, h("dl", { class: "rows compact" },
    ["queued", "running", "completed", "failed", "cancelled"].filter((s) => counts[s]).map((s) =>
      [h("dt", {}, h("span", { class: `dot s-${s}` }), s), h("dd", {}, h("span", { class: "num" }, String(counts[s])))])));
}

export function percentile(values, q) {
  if (!values.length) return null;
  const v = [...values].sort((a, b) => a - b);
  const pos = (v.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

function flowTiles(jobs, server) {
  const now = Date.now() / 1000;
  const inWindow = jobs.filter((j) => j.finished_at >= now - WINDOW_S);
  const audio = inWindow.reduce((a, j) => a + (j.duration_s || 0), 0);
  const work = jobs.filter((j) => !j.cached && j.started_at).map((j) => [j.duration_s, j.finished_at - j.started_at]);
  const rt = work.reduce((a, [d]) => a + d, 0) / Math.max(1e-9, work.reduce((a, [, s]) => a + s, 0));
  // The server's own percentiles when it keeps them; else those of the jobs the list shows.
  const lat = server?.count ? server : summarise(jobs.map((j) => j.finished_at - j.created_at).filter((x) => x >= 0));
  return [
    tile("Throughput", `${(inWindow.length / (WINDOW_S / 60)).toFixed(2)}/min`,
      h("p", { class: "muted small" }, `${inWindow.length} jobs, ${clock(audio)} of audio in the last 15 min`),
      work.length ? h("p", { class: "muted small" }, `engine speed ${rt.toFixed(1)}× real time`) : null),
    tile("Job latency p50", seconds(lat.p50),
      h("dl", { class: "rows compact" }, ["p95", "p99"].map((k) => [h("dt", {}, k), h("dd", {}, h("span", { class: "num" }, seconds(lat[k])))])),
      h("p", { class: "muted small" }, `upload to done, ${lat.count || 0} jobs`)),
  ];
}

const summarise = (values) => ({ count: values.length, p50: percentile(values, 0.5), p95: percentile(values, 0.95), p99: percentile(values, 0.99) });

const LATENCIES = {
  job_latency_s: ["Job, upload to done", seconds],
  chunk_latency_s: ["Chunk, engine call", seconds],
  real_time_factor: ["Processing time per audio second", (v) => (v == null ? "–" : `${v.toFixed(3)}×`)],
};

function latencyTable(metrics, jobs) {
  const rows = Object.entries(metrics).filter(([, m]) => m && typeof m === "object" && "count" in m).map(([key, m]) => {
    const [label, fmt] = LATENCIES[key] || [key, (v) => (v == null ? "–" : String(v))];
    return [label, fmt(m.p50), fmt(m.p95), fmt(m.p99), String(m.count)];
  });
  if (!rows.length && jobs.length) {
    const m = summarise(jobs.map((j) => j.finished_at - j.created_at).filter((x) => x >= 0));
    rows.push(["Job, upload to done (recent jobs)", seconds(m.p50), seconds(m.p95), seconds(m.p99), String(m.count)]);
  }
  return table(["Measure", "p50", "p95", "p99", "Samples"], rows, "No job has finished yet.");
}

// ---------------------------------------------------------------- sparkline

function spark(history, stats) {
  const W = 600, H = 90, pad = 4;
  const max = Math.max(1, stats.workers?.total || 1, ...history.map((s) => Math.max(s.depth, s.busy)));
  const step = (W - 2 * pad) / HISTORY;
  const x = (i) => W - pad - (history.length - i) * step; // newest sample at the right edge
  const y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const bars = history.map((s, i) => s.depth
    ? `<rect x="${x(i).toFixed(1)}" y="${y(s.depth).toFixed(1)}" width="${(step * 0.8).toFixed(1)}" height="${(H - pad - y(s.depth)).toFixed(1)}"/>` : "").join("");
  const busy = history.map((s, i) => `${x(i).toFixed(1)},${y(s.busy).toFixed(1)} ${(x(i) + step).toFixed(1)},${y(s.busy).toFixed(1)}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const last = history[history.length - 1] || { depth: 0, busy: 0 };
  svg.setAttribute("aria-label", `Queue depth now ${last.depth}, workers busy ${last.busy}`);
  svg.innerHTML = `<line x1="0" x2="${W}" y1="${H - pad}" y2="${H - pad}" class="axis"/>` +
    `<g class="b-depth">${bars}</g><polyline points="${busy}" class="l-busy"/>`;
  return h("figure", { class: "sparkfig" }, svg,
    h("figcaption", { class: "legend" }, h("span", { class: "k-depth" }, "queue depth"), h("span", { class: "k-busy" }, "workers busy"),
      h("span", { class: "muted" }, `scale 0–${max}`)));
}

// ---------------------------------------------------------------- tables

const table = (head, rows, empty) => rows.length
  ? h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => i ? h("td", {}, c) : h("th", { scope: "row" }, c)))))))
  : h("p", { class: "empty" }, empty);

function cacheTable(tiers, jobs) {
  const rows = Object.entries(tiers).map(([name, t]) => [
    name.toUpperCase(),
    h("span", { class: "rate" }, meter(t.hit_rate || 0, `${name} hit rate`), `${Math.round(100 * (t.hit_rate || 0))} %`),
    `${t.hits ?? 0} / ${(t.hits ?? 0) + (t.misses ?? 0)}`,
    String(t.entries ?? "–"), bytes(t.bytes),
    t.available === false ? h("span", { class: "badge s-failed" }, "down") : h("span", { class: "badge s-completed" }, "ok"),
    String(t.errors ?? 0),
  ]);
  const cached = jobs.filter((j) => j.cached).length;
  return [table(["Tier", "Hit rate", "Hits / lookups", "Entries", "Size", "State", "Errors"], rows, "The cache is turned off."),
    jobs.length ? h("p", { class: "muted small" }, `${cached} of the last ${jobs.length} completed jobs were whole-file cache hits.`) : null];
}

// Percentile from a cumulative histogram {"le": {"0.1": n, ..., "+Inf": n}, "count": n}.
export function histogramPercentile(hist, q) {
  if (!hist?.count) return null;
  const target = q * hist.count;
  let prevBound = 0, prevCount = 0;
  for (const [bound, cum] of Object.entries(hist.le || {})) {
    const b = bound === "+Inf" ? Infinity : Number(bound);
    if (cum >= target) {
      if (!isFinite(b)) return prevBound;
      return prevBound + ((b - prevBound) * (target - prevCount)) / Math.max(1, cum - prevCount);
    }
    prevBound = b; prevCount = cum;
  }
  return prevBound;
}

function circuit(state) {
  const s = String(state || "closed");
  const cls = s === "closed" ? "s-completed" : s === "open" ? "s-failed" : "s-running";
  return h("span", { class: `badge ${cls}` }, s.replace("_", " "));
}

function engines(list) {
  const local = [], ups = [];
  for (const [name, e] of Object.entries(list)) {
    if (e.upstreams) {
      for (const [up, u] of Object.entries(e.upstreams)) {
        const by = u.requests_by_status || {};
        const failed = Object.entries(by).filter(([code]) => !/^2/.test(code)).reduce((a, [, n]) => a + n, 0);
        const p = (q) => seconds(histogramPercentile(u.latency_s, q));
        ups.push([`${name} / ${up}`, circuit(u.circuit), `${u.in_flight ?? 0}`, `${u.connections_open ?? 0}`,
          `${u.requests_total ?? 0}`, `${failed}`, `${u.retries_total ?? 0}`,
          u.latency_s?.count ? `${p(0.5)} · ${p(0.95)} · ${p(0.99)}` : "–"]);
      }
    } else {
      const speed = e.busy_seconds ? `${(e.audio_seconds / e.busy_seconds).toFixed(1)}× RT` : "–";
      local.push([name, e.model || "–", e.ready === false ? h("span", { class: "badge s-queued" }, "loading") : h("span", { class: "badge s-completed" }, "ready"),
        `${e.busy ?? 0} / ${e.workers ?? "–"}`, `${e.calls ?? 0}`, clock(e.audio_seconds), speed, modelTime(e.model_seconds)]);
    }
  }
  return [
    local.length ? table(["Engine", "Model", "State", "Busy", "Calls", "Audio done", "Speed", "Model time"], local, "") : null,
    table(["Upstream", "Circuit", "In flight", "Connections", "Requests", "Failed", "Retries", "Latency p50 · p95 · p99"], ups,
      "No upstream pool is configured; jobs run on the embedded engine."),
  ];
}

// Where the model's time went, its three largest parts: "encoder 48 % · decoder 40 % · tails 10 %".
function modelTime(parts) {
  const entries = Object.entries(parts || {}).filter(([, s]) => s > 0).sort((a, b) => b[1] - a[1]);
  const total = entries.reduce((sum, [, s]) => sum + s, 0);
  return total ? entries.slice(0, 3).map(([part, s]) => `${part} ${Math.round((100 * s) / total)} %`).join(" · ") : "–";
}

function events(counts) {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  return entries.length
    ? h("ul", { class: "chips" }, entries.map(([name, n]) => h("li", {}, h("code", {}, name), h("span", { class: "num" }, String(n)))))
    : h("p", { class: "empty" }, "No events yet.");
}
