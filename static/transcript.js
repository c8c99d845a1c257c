// The transcript view: the job's audio, its timed segments (click to play from there), copy and downloads.
import { apiKey, audioLink, download, getJob, h, request, clock, seconds } from "./api.js";

const FORMATS = [["text", "TXT"], ["srt", "SRT"], ["vtt", "VTT"], ["verbose_json", "JSON"]];

export function mount(root, { id, toast, messageOf }) {
  let alive = true;
  let timer = null;
  const base = `/v1/jobs/${encodeURIComponent(id)}`;
  root.replaceChildren(h("p", { class: "empty" }, "Loading the transcript…"));

  async function load() {
    if (!alive) return;
    try {
      const job = await getJob(id);
      if (!alive) return;
      if (job.status !== "completed") {
        root.replaceChildren(back(), pending(job));
        if (job.status === "queued" || job.status === "running") timer = setTimeout(load, 2000);
        return;
      }
      const transcript = await request(`${base}/transcript?format=verbose_json`);
      if (alive) show(job, transcript);
    } catch (err) {
      if (alive) root.replaceChildren(back(), h("p", { class: "err", role: "alert" }, messageOf(err)));
    }
  }

  function show(job, tr) {
    document.title = `${job.filename} · stt_server`;
    const audio = h("audio", { controls: true, preload: "metadata" });
    const note = h("p", { class: "muted small", hidden: true }, "The audio of this job is no longer stored.");
    playable(audio, note);
    const segments = (tr.segments || []).map((s) => ({ start: s.start, end: s.end, text: (s.text || "").trim() }));
    const buttons = segments.map((s) => h("button", {
      class: "seg", type: "button", "data-start": s.start,
      "aria-label": `Play from ${clock(s.start)}: ${s.text}`,
      onclick: () => { audio.currentTime = s.start; audio.play().catch(() => {}); },
    }, h("span", { class: "t" }, clock(s.start, true)), h("span", { class: "txt" }, s.text)));
    let current = -1;
    audio.addEventListener("timeupdate", () => {
      const t = audio.currentTime;
      let i = segments.length - 1; // the latest segment begun: neighbours may overlap by a little
      while (i >= 0 && segments[i].start > t) i--;
      if (i >= 0 && t >= segments[i].end + 0.5) i = -1;
      if (i === current) return;
      buttons[current]?.removeAttribute("aria-current");
      if (i >= 0) buttons[i].setAttribute("aria-current", "true");
      current = i;
    });
    const text = tr.text?.trim() || segments.map((s) => s.text).join(" ");
    const copy = h("button", { class: "btn", type: "button", onclick: () => copyText(text, copy) }, "Copy text");
    const downloads = FORMATS.map(([fmt, label]) =>
      h("a", { class: "btn ghost", href: `${base}/transcript?format=${fmt}&download=1`, download: "", "data-format": fmt,
        onclick: (e) => saveWithKey(e, fmt) }, label));
    const facts = [clock(job.duration_s) + " audio", tr.language && `language ${tr.language}`,
      [job.engine, job.model].join(" · "), job.cached ? "from cache" : job.started_at && `took ${seconds(job.finished_at - job.started_at)}`,
      `${segments.length} segment${segments.length === 1 ? "" : "s"}`];
    root.replaceChildren(back(), h("section", { class: "card transcript", "aria-labelledby": "tr-h" },
      h("h1", { id: "tr-h", class: "title-break" }, job.filename),
      h("p", { class: "meta" }, facts.filter(Boolean).join(" · ")),
      h("div", { class: "player" }, audio, note),
      h("div", { class: "toolbar" }, copy, h("span", { class: "sep", "aria-hidden": "true" }),
        h("span", { class: "muted small" }, "Download"), downloads),
      segments.length
        ? h("ol", { class: "segments", "aria-label": "Segments; activate one to play from its start" },
            buttons.map((b) => h("li", {}, b)))
        : h("p", { class: "empty" }, "No speech was found in this file.")));
  }

  // The player's source is a signed link valid for a few minutes: when it has expired (a seek much later),
  // mint a new one and carry on from the same place; when the audio itself is gone, say so.
  async function playable(audio, note) {
    let minted = 0;
    const load = async () => {
      minted = Date.now();
      const at = audio.currentTime;
      audio.src = await audioLink(id);
      if (at) audio.currentTime = at;
    };
    audio.addEventListener("error", () => {
      if (!alive) return;
      if (Date.now() - minted > 30_000) load().catch(() => {});
      else { audio.hidden = true; note.hidden = false; }
    });
    try { await load(); } catch { audio.hidden = true; note.hidden = false; }
  }

  // A plain link cannot carry the API key: with one, fetch the file and save it from memory.
  function saveWithKey(event, fmt) {
    if (!apiKey.get()) return;
    event.preventDefault();
    download(event.currentTarget.href, `transcript.${fmt === "verbose_json" ? "json" : fmt}`)
      .catch((err) => toast(messageOf(err)));
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = h("textarea", { class: "sr-only" });
      area.value = text;
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      if (!ok) return toast("Copying is not allowed here; select the text and copy it by hand.");
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy text"), 1500);
  }

  load();
  return () => { alive = false; clearTimeout(timer); root.querySelector("audio")?.pause(); };
}

const back = () => h("p", { class: "back" }, h("a", { href: "#/" }, "← All jobs"));

function pending(job) {
  const why = job.status === "failed" ? `This job failed: ${job.error || "no reason given"}.`
    : job.status === "cancelled" ? "This job was cancelled."
    : `This job is ${job.status}; the transcript appears here when it completes.`;
  return h("section", { class: "card" }, h("h1", { class: "title-break" }, job.filename),
    h("p", { class: job.status === "failed" ? "err" : "muted", role: "status" }, why));
}
