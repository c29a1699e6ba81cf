/* shipline dashboard: plain JS, no build step.  Every value from the server is set with
   textContent (never innerHTML): branch names and commit messages come from outside. */
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

/* --- API ------------------------------------------------------------------------------ */

const api = {
  token: localStorage.getItem("shipline.token") || "",
  role: null,
  headers() { return this.token ? { Authorization: "Bearer " + this.token } : {}; },
  async call(method, path, body) {
    const res = await fetch(path, {
      method, headers: { ...this.headers(), ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try { data = await res.json(); } catch (_) { /* empty body */ }
    if (!res.ok) {
      const msg = (data && (data.message || data.detail)) || res.statusText;
      const err = new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
      err.status = res.status;
      throw err;
    }
    return data;
  },
  get(path) { return this.call("GET", path); },
  post(path, body) { return this.call("POST", path, body || {}); },
  put(path, body) { return this.call("PUT", path, body); },
  del(path) { return this.call("DELETE", path); },
  stream(path) {
    const sep = path.includes("?") ? "&" : "?";
    return new EventSource(this.token ? `${path}${sep}token=${encodeURIComponent(this.token)}` : path);
  },
};

async function whoami() {
  try {
    const me = await api.get("/api/v1/whoami");
    api.role = me.token ? me.token.role : null;
    $("#token-btn").textContent = me.token ? `${me.token.name} · ${me.token.role}` : "Sign in";
  } catch (e) {
    api.role = null;
    $("#token-btn").textContent = "Sign in";
    if (e.status === 401) toast(e.message);
  }
}

function toast(text) {
  const el = h("div", { class: "toast", role: "status" }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 5000);
}

/* --- formatting ----------------------------------------------------------------------- */

function dur(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  const sec = ms / 1000;
  if (sec < 1) return Math.round(ms) + "ms";
  if (sec < 10) return sec.toFixed(1) + "s";
  if (sec < 60) return Math.round(sec) + "s";
  const m = Math.floor(sec / 60), r = Math.round(sec % 60);
  if (m < 60) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}
function elapsed(start, end) {
  if (!start) return null;
  return (end ? Date.parse(end) : Date.now()) - Date.parse(start);
}
function ago(t) {
  if (!t) return "";
  const sec = (Date.now() - Date.parse(t)) / 1000;
  if (sec < 45) return "just now";
  if (sec < 3600) return Math.round(sec / 60) + "m ago";
  if (sec < 86400) return Math.round(sec / 3600) + "h ago";
  return new Date(t).toLocaleDateString();
}
function statusPill(status) { return h("span", { class: `status s-${status}`, "data-status": status }, status); }
const ACTIVE = new Set(["queued", "running"]);

/* Durations that tick while something runs: elements carry data-start (and data-end). */
setInterval(() => {
  for (const el of document.querySelectorAll("[data-start]:not([data-end])")) {
    el.textContent = dur(elapsed(el.dataset.start, null));
  }
}, 1000);
function durCell(tag, cls, start, end, active) {
  const attrs = { class: cls };
  if (start) { attrs["data-start"] = start; if (!active) attrs["data-end"] = end || start; }
  return h(tag, attrs, start ? dur(elapsed(start, active ? null : end)) : "");
}

/* --- live events: one stream for the whole page ------------------------------------------ */

const live = {
  source: null, handlers: new Set(),
  connect() {
    if (this.source) this.source.close();
    const src = api.stream("/api/v1/events");
    this.source = src;
    let lost = false;
    src.addEventListener("open", () => {
      $("#live").classList.add("on");
      if (lost) { lost = false; route(); }  // back after a server restart: catch up on what was missed
    });
    src.addEventListener("error", () => { lost = true; $("#live").classList.remove("on"); });
    for (const kind of ["run", "task", "step"]) {
      src.addEventListener(kind, (ev) => {
        const data = JSON.parse(ev.data);
        for (const fn of this.handlers) fn(kind, data);
      });
    }
  },
  on(fn) { this.handlers.add(fn); return () => this.handlers.delete(fn); },
};

/* --- router --------------------------------------------------------------------------- */

let cleanup = [];
function route() {
  for (const fn of cleanup) fn();
  cleanup = [];
  const hash = location.hash || "#/";
  const view = $("#view");
  view.replaceChildren();
  let m;
  document.querySelectorAll("nav a").forEach((a) => a.classList.remove("active"));
  if ((m = hash.match(/^#\/runs\/(\d+)/))) { $('[data-nav="runs"]').classList.add("active"); runView(view, Number(m[1])); }
  else if ((m = hash.match(/^#\/environments\/([a-z0-9-]+)/))) { $('[data-nav="environments"]').classList.add("active"); envView(view, m[1]); }
  else if (hash.startsWith("#/environments")) { $('[data-nav="environments"]').classList.add("active"); envsView(view); }
  else if (hash.startsWith("#/delivery")) { $('[data-nav="delivery"]').classList.add("active"); deliveryView(view, hash); }
  else if (hash.startsWith("#/repos")) { $('[data-nav="repos"]').classList.add("active"); reposView(view); }
  else if (hash.startsWith("#/secrets")) { $('[data-nav="secrets"]').classList.add("active"); secretsView(view); }
  else { $('[data-nav="runs"]').classList.add("active"); runsView(view); }
}

/* --- runs list ------------------------------------------------------------------------ */

function triggerText(run) {
  const t = run.trigger;
  if (!t) return [h("span", {}, "manual")];
  const out = [];
  const src = t.source === "api" ? "api" : t.forge || t.source || "";
  if (src) out.push(h("span", {}, src));
  if (t.event === "pull_request") out.push(h("span", { class: "tag" }, `PR !${t.pr_number}`));
  if (t.branch) out.push(h("span", { class: "tag" }, t.branch));
  if (t.tag) out.push(h("span", { class: "tag" }, t.tag));
  if (t.sha) out.push(h("span", { class: "mono" }, t.sha.slice(0, 8)));
  if (run.rerun_of) out.push(h("span", {}, `rerun of #${run.rerun_of}`));
  return out;
}

function runRow(run) {
  const active = ACTIVE.has(run.status);
  return h("tr", { "data-run": run.id, "data-status": run.status, onclick: () => { location.hash = `#/runs/${run.id}`; } },
    h("td", { class: "id" }, `#${run.id}`),
    h("td", { class: "st" }, statusPill(run.status)),
    h("td", { class: "pipe" }, h("a", { href: `#/runs/${run.id}` }, run.pipeline)),
    h("td", { class: "tr" }, h("span", { class: "trig" }, triggerText(run))),
    h("td", { class: "when muted", title: run.created_at }, ago(run.started_at || run.created_at)),
    durCell("td", "dur", run.started_at, run.finished_at, run.status === "running"),
    h("td", { class: "msg", title: run.message || "" }, run.message || ""),
  );
}

function runsView(view) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = { status: params.get("status") || "", pipeline: params.get("pipeline") || "", runs: new Map(), next: null };
  const chips = h("div", { class: "chips", role: "tablist" });
  for (const st of ["", "running", "queued", "succeeded", "failed", "cancelled"]) {
    chips.append(h("button", {
      class: "chip" + (state.status === st ? " on" : ""), type: "button", "data-filter": st || "all",
      onclick: () => { const q = new URLSearchParams(); if (st) q.set("status", st); if (state.pipeline) q.set("pipeline", state.pipeline); location.hash = "#/?" + q; },
    }, st || "all"));
  }
  const search = h("input", { type: "search", placeholder: "pipeline", value: state.pipeline, "aria-label": "pipeline filter",
    onchange: (e) => { const q = new URLSearchParams(); if (state.status) q.set("status", state.status); if (e.target.value) q.set("pipeline", e.target.value); location.hash = "#/?" + q; } });
  const tbody = h("tbody", {});
  const table = h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ["", "status", "pipeline", "trigger", "started", "duration", "message"].map((c) => h("th", {}, c)))), tbody);
  const empty = h("div", { class: "empty", hidden: true }, "No runs yet. Push to a registered repository, or start one with ", h("code", {}, "POST /api/v1/runs"), ".");
  const more = h("div", { class: "more", hidden: true }, h("button", { type: "button", onclick: () => load(state.next) }, "Older runs"));
  const startBtn = h("button", { class: "primary", type: "button", id: "start-run", onclick: () => startDialog() }, "Run pipeline");
  view.append(
    h("div", { class: "row" }, h("h1", {}, "Runs"), h("span", { class: "spacer" }), search, startBtn),
    h("div", { class: "row section" }, chips),
    h("div", { class: "panel section", id: "runs-panel" }, table, empty, more),
  );

  function matches(run) {
    return (!state.status || run.status === state.status) && (!state.pipeline || run.pipeline === state.pipeline);
  }
  function render() {
    const sorted = [...state.runs.values()].sort((a, b) => b.id - a.id);
    tbody.replaceChildren(...sorted.map(runRow));
    empty.hidden = sorted.length > 0;
    more.hidden = !state.next;
  }
  async function load(before) {
    const q = new URLSearchParams({ limit: "50" });
    if (state.status) q.set("status", state.status);
    if (state.pipeline) q.set("pipeline", state.pipeline);
    if (before) q.set("before", before);
    try {
      const page = await api.get("/api/v1/runs?" + q);
      for (const run of page.runs) state.runs.set(run.id, run);
      state.next = page.next_before;
      render();
    } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
  }
  const pending = new Set();
  let timer = null;
  async function refresh() {
    timer = null;
    const ids = [...pending];
    pending.clear();
    for (const id of ids) {
      try {
        const run = await api.get(`/api/v1/runs/${id}`);
        if (matches(run)) state.runs.set(run.id, run); else state.runs.delete(run.id);
      } catch (_) { /* gone */ }
    }
    render();
  }
  cleanup.push(live.on((kind, data) => {
    if (kind !== "run" && kind !== "task") return;
    pending.add(data.run_id);
    if (!timer) timer = setTimeout(refresh, 150);
  }));
  load(null);
}

async function startDialog() {
  if (api.role !== "operator") { openToken(); toast("starting a run needs an operator token"); return; }
  let pipelines;
  try { pipelines = (await api.get("/api/v1/pipelines")).filter((p) => p.name); }
  catch (e) { toast(e.message); return; }
  if (!pipelines.length) { toast("no pipelines: register a repository first (shipline repos add)"); return; }
  const fields = h("div", {});
  const select = h("select", { id: "start-pipeline", "aria-label": "pipeline", onchange: () => showParams() },
    pipelines.map((p) => h("option", { value: p.name }, `${p.name} (${p.repository})`)));
  function showParams() {
    const p = pipelines.find((x) => x.name === select.value);
    fields.replaceChildren(...Object.entries(p.params).map(([name, spec]) => h("label", { class: "field" },
      h("span", {}, name, spec.description ? h("span", { class: "muted" }, ` · ${spec.description}`) : null),
      h("input", { name, value: spec.default ?? "", placeholder: spec.default === null ? "required" : "", type: "text" }))));
  }
  const error = h("p", { class: "error", hidden: true });
  const dialog = h("dialog", { id: "start-dialog" },
    h("form", { method: "dialog" },
      h("h2", {}, "Run a pipeline"), select, fields, error,
      h("div", { class: "row end" },
        h("button", { class: "ghost", type: "button", onclick: () => dialog.close() }, "Close"),
        h("button", { class: "primary", type: "submit", id: "start-submit" }, "Start"))));
  dialog.querySelector("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = {};
    for (const input of fields.querySelectorAll("input")) params[input.name] = input.value;
    try {
      const run = await api.post("/api/v1/runs", { pipeline: select.value, params });
      dialog.close();
      location.hash = `#/runs/${run.id}`;
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  showParams();
  dialog.showModal();
}

/* --- one run ---------------------------------------------------------------------------- */

function graph(run, selected, onSelect) {
  const W = 176, H = 50, GX = 56, GY = 16, PAD = 12;
  const cols = new Map();
  for (const t of run.tasks) {
    const lv = run.levels[t.name] ?? 0;
    if (!cols.has(lv)) cols.set(lv, []);
    cols.get(lv).push(t);
  }
  const pos = new Map();
  let maxRows = 0;
  const levels = [...cols.keys()].sort((a, b) => a - b);
  levels.forEach((lv, ci) => {
    const list = cols.get(lv);
    maxRows = Math.max(maxRows, list.length);
    list.forEach((t, ri) => pos.set(t.name, { x: PAD + ci * (W + GX), y: PAD + 16 + ri * (H + GY) }));
  });
  const width = PAD * 2 + levels.length * W + (levels.length - 1) * GX;
  const height = PAD * 2 + 16 + maxRows * H + (maxRows - 1) * GY;
  const svg = s("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "task graph" });
  const firstFinally = run.tasks.find((t) => t.is_finally);
  if (firstFinally) {
    const p = pos.get(firstFinally.name);
    svg.append(s("text", { class: "lane", x: p.x, y: PAD + 6 }, "finally"));
  }
  for (const t of run.tasks) {
    const to = pos.get(t.name);
    for (const d of t.needs) {
      const from = pos.get(d);
      if (!from) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
  }
  for (const t of run.tasks) {
    const p = pos.get(t.name);
    const running = t.status === "running";
    const sub = s("text", { class: "sub", x: p.x + 16, y: p.y + 37 });
    if (t.started_at) {
      sub.setAttribute("data-start", t.started_at);
      if (!running) sub.setAttribute("data-end", t.finished_at || t.started_at);
      sub.textContent = `${t.status} · ${dur(elapsed(t.started_at, running ? null : t.finished_at))}`;
    } else sub.textContent = t.status;
    if (running && t.started_at) {
      // keep the status word in front of the ticking time
      sub.removeAttribute("data-start");
      const tick = s("tspan", { "data-start": t.started_at }, dur(elapsed(t.started_at, null)));
      sub.textContent = "running · ";
      sub.append(tick);
    }
    const g = s("g", { class: `node g-${t.status}${selected === t.name ? " sel" : ""}`, "data-task": t.name, "data-status": t.status,
      transform: "", onclick: () => onSelect(t.name) },
      s("rect", { x: p.x, y: p.y, width: W, height: H }),
      s("rect", { class: "bar", x: p.x + 5, y: p.y + 8, width: 4, height: H - 16 }),
      s("text", { x: p.x + 16, y: p.y + 21 }, t.name.length > 20 ? t.name.slice(0, 19) + "…" : t.name),
      sub,
      s("title", {}, `${t.name}: ${t.status}${t.message ? " — " + t.message : ""}`));
    svg.append(g);
  }
  return h("div", { class: "graph-wrap" }, svg);
}

/* --- a run's own results: what a service run released, traceable and copyable ---------- */

async function copyText(value) {
  try {
    await navigator.clipboard.writeText(value);
  } catch (_) {
    // Plain-HTTP dashboards have no clipboard API: fall back to a selection copy.
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = value;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast(`copied ${value.length > 40 ? value.slice(0, 37) + "..." : value}`);
}

function copyButton(value, label) {
  return h("button", { class: "ghost small copy", type: "button", title: `Copy ${label}`, "aria-label": `Copy ${label}`,
    "data-copy": value, onclick: (e) => { e.stopPropagation(); copyText(value); } }, "copy");
}

/* A page of the repository on its forge (Gitea, GitHub, GitLab all serve /commit/SHA), for http(s) URLs only. */
function forgePage(url, path) {
  if (!/^https?:\/\/[^\s]+$/i.test(url || "")) return null;
  return url.replace(/\.git$/, "").replace(/\/+$/, "") + path;
}

function renderRelease(box, run) {
  const r = run.results || {};
  const names = Object.keys(r);
  box.hidden = !names.length;
  if (!names.length) return;
  const url = (run.params || {}).url || "";
  const link = (text, href) => href ? h("a", { href, target: "_blank", rel: "noopener" }, text) : h("span", {}, text);
  const steps = [];
  if (r.commit) steps.push(h("span", { class: "hop" }, "commit ", link(r.commit.slice(0, 12), forgePage(url, `/commit/${r.commit}`))));
  if ("tag" in r) steps.push(h("span", { class: "hop" }, r.tag ? ["tag ", link(r.tag, forgePage(url, `/releases/tag/${encodeURIComponent(r.tag)}`))] : "no tag (pre-release)"));
  if (r["image-digest"]) steps.push(h("span", { class: "hop" }, "image ", h("code", { title: `${r.image}@${r["image-digest"]}` }, r["image-digest"].slice(0, 19) + "…")));
  if (r["chart-version"]) steps.push(h("span", { class: "hop" }, "chart ", h("b", {}, r["chart-version"])));
  const trace = steps.length > 1 ? h("div", { class: "trace" }, steps.flatMap((x, i) => i ? [h("span", { class: "arrow" }, "→"), x] : [x])) : null;
  const copyable = (k, v) => k.endsWith("digest") || k === "commit" || k === "image" || k === "chart" || k === "version" || k === "tag";
  const rows = names.map((k) => {
    const v = r[k];
    const shown = k === "image" && r["image-digest"] ? `${v}@${r["image-digest"]}` : v;
    return h("tr", { "data-result": k }, h("td", {}, k), h("td", { class: "v" }, shown),
      h("td", { class: "act" }, v && copyable(k, v) ? copyButton(shown, k) : null));
  });
  box.replaceChildren(h("h2", {}, "Release"), trace, h("table", { class: "run-results" }, h("tbody", {}, rows)));
}

function runView(view, id) {
  const state = { run: null, selected: null, lines: [], follow: true };
  const head = h("div", { class: "panel pad" });
  const graphBox = h("div", { class: "panel pad section" });
  const taskList = h("div", { class: "panel tasks" });
  const logTitle = h("b", {}, "All tasks");
  const logPre = h("div", { class: "log", id: "log", role: "log", "aria-label": "logs" });
  const showAll = h("button", { class: "ghost small", type: "button", onclick: () => select(null) }, "All tasks");
  const results = h("div", { class: "panel pad results", hidden: true });
  const release = h("div", { class: "panel pad section release", id: "release", hidden: true });
  view.append(
    head, release, graphBox,
    h("div", { class: "split" }, taskList,
      h("div", { class: "panel logs" }, h("div", { class: "bar" }, logTitle, h("span", { class: "spacer" }), showAll), logPre)),
    results,
  );
  logPre.addEventListener("scroll", () => {
    state.follow = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 30;
  });

  function select(name) {
    state.selected = name;
    renderRun();
    renderLogs();
  }

  async function act(what) {
    if (api.role !== "operator") { openToken(); toast(`${what} needs an operator token`); return; }
    try {
      const res = await api.post(`/api/v1/runs/${id}/${what}`);
      if (what === "rerun") location.hash = `#/runs/${res.id}`;
      else { state.run = res; renderRun(); }
    } catch (e) { toast(e.message); }
  }

  function renderRun() {
    const run = state.run;
    if (!run) return;
    const active = ACTIVE.has(run.status);
    const buttons = [];
    if (active) buttons.push(h("button", { class: "danger", type: "button", id: "cancel", onclick: () => act("cancel") }, "Cancel"));
    else buttons.push(h("button", { type: "button", id: "rerun", onclick: () => act("rerun") }, "Rerun"));
    const t = run.trigger || {};
    head.replaceChildren(
      h("div", { class: "run-head" },
        h("div", {},
          h("div", { class: "title" }, h("h1", {}, `${run.pipeline} `, h("span", { class: "muted" }, `#${run.id}`)), statusPill(run.status)),
          h("div", { class: "facts" },
            h("span", {}, "trigger ", h("span", { class: "trig" }, triggerText(run))),
            h("span", {}, "queued ", h("b", { title: run.created_at }, ago(run.created_at))),
            run.started_at ? h("span", {}, "duration ", durCell("b", "", run.started_at, run.finished_at, run.status === "running")) : null,
            t.message ? h("span", { title: t.message }, "commit ", h("b", {}, t.message.split("\n")[0].slice(0, 80))) : null,
          ),
          Object.keys(run.params).length ? h("div", { class: "params" },
            Object.entries(run.params).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))) : null,
        ),
        h("span", { class: "spacer" }),
        h("div", { class: "row" }, buttons),
      ),
      ...(run.message && run.status !== "succeeded" ? [h("div", { class: `message m-${run.status}` }, run.message)] : []),
    );
    graphBox.replaceChildren(h("h2", {}, "Tasks"), graph(run, state.selected, select));
    const main = run.tasks.filter((x) => !x.is_finally), fin = run.tasks.filter((x) => x.is_finally);
    const item = (task) => h("div", { class: "task" + (state.selected === task.name ? " sel" : ""), "data-task": task.name, onclick: () => select(task.name) },
      h("div", { class: "name" }, h("span", {}, task.name), statusPill(task.status)),
      h("div", { class: "meta" },
        task.started_at ? durCell("span", "", task.started_at, task.finished_at, task.status === "running") : "not started",
        task.attempts > 1 ? ` · attempt ${task.attempts}` : "",
        task.message ? ` · ${task.message}` : ""),
      task.steps.length ? h("ul", { class: "steps" }, task.steps.filter((st) => st.attempt === task.attempts || task.attempts === 0).map((st) =>
        h("li", {}, h("span", { title: st.name }, `${st.index + 1}. ${st.name}`),
          h("span", {}, st.status === "running" ? "running" : (st.exit_code !== null && st.exit_code !== 0 ? `exit ${st.exit_code}` : dur(elapsed(st.started_at, st.finished_at))))))) : null,
    );
    taskList.replaceChildren(...main.map(item), ...(fin.length ? [h("div", { class: "finally-label" }, "finally")] : []), ...fin.map(item));
    renderRelease(release, run);
    const withResults = run.tasks.filter((x) => Object.keys(x.results || {}).length);
    results.hidden = !withResults.length;
    results.replaceChildren(h("h2", {}, "Results"), h("table", {}, h("tbody", {},
      withResults.flatMap((x) => Object.entries(x.results).map(([k, v]) => h("tr", {}, h("td", {}, x.name), h("td", {}, k), h("td", { class: "v" }, v)))))));
    logTitle.textContent = state.selected ? `Logs · ${state.selected}` : "Logs · all tasks";
  }

  function lineEl(line, n) {
    return h("div", { class: "ln" }, h("span", { class: "no" }, n), h("span", {}, line.text));
  }
  function renderLogs() {
    // One block per step, in the order steps first spoke; parallel tasks do not interleave.
    const groups = new Map();
    for (const l of state.lines) {
      if (state.selected && l.task !== state.selected) continue;
      const key = `${l.task}/${l.attempt}/${l.step}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(l);
    }
    const out = [];
    for (const lines of groups.values()) {
      const l = lines[0];
      out.push(h("div", { class: "hdr" }, `▸ ${l.task} · ${l.name}${l.attempt > 1 ? ` (attempt ${l.attempt})` : ""}`));
      lines.forEach((line, i) => out.push(lineEl(line, i + 1)));
    }
    if (state.end) out.push(h("div", { class: state.end === "succeeded" ? "end-ok" : "end-bad" }, `— run ${state.end} —`));
    if (state.logError) out.push(h("div", { class: "error" }, state.logError));
    if (!out.length) out.push(h("div", { class: "hdr" }, state.run && ACTIVE.has(state.run.status) ? "waiting for output…" : "no output"));
    logPre.replaceChildren(...out);
    if (state.follow) logPre.scrollTop = logPre.scrollHeight;
  }

  let logTimer = null;
  function scheduleLogs() { if (!logTimer) logTimer = setTimeout(() => { logTimer = null; renderLogs(); }, 60); }
  const stream = api.stream(`/api/v1/runs/${id}/logs/stream`);
  stream.addEventListener("line", (ev) => { state.lines.push(JSON.parse(ev.data)); scheduleLogs(); });
  stream.addEventListener("end", (ev) => { state.end = JSON.parse(ev.data).status; stream.close(); scheduleLogs(); });
  stream.addEventListener("error", async () => {
    if (stream.readyState !== EventSource.CLOSED) return; // a dropped stream reconnects by itself
    // Refused (the logs are on another server, say): an EventSource is not told why; the JSON logs say.
    try { await api.get(`/api/v1/runs/${id}/logs?limit=1`); } catch (e) { state.logError = e.message; scheduleLogs(); }
  });
  cleanup.push(() => stream.close());

  let timer = null;
  async function refresh() {
    timer = null;
    try { state.run = await api.get(`/api/v1/runs/${id}`); renderRun(); }
    catch (e) { head.replaceChildren(h("p", { class: "error" }, e.message)); }
  }
  cleanup.push(live.on((kind, data) => {
    if (data.run_id !== id) return;
    if (!timer) timer = setTimeout(refresh, 100);
  }));
  refresh().then(renderLogs);
}

/* --- repositories ------------------------------------------------------------------------ */

function ruleText(rule) {
  const bits = [rule.on];
  if (rule.branches && rule.branches.length) bits.push("branches " + rule.branches.join(", "));
  if (rule.tags && rule.tags.length) bits.push("tags " + rule.tags.join(", "));
  if (rule.paths && rule.paths.length) bits.push("paths " + rule.paths.join(", "));
  if (rule.on === "pull_request") bits.push(rule.actions.join("/"));
  if (rule.cron) bits.push(`cron "${rule.cron}"`);
  if (rule.concurrency !== "queue") bits.push(rule.concurrency);
  return bits.join(" · ");
}

async function reposView(view) {
  const grid = h("div", { class: "repos section" });
  const deliveries = h("tbody", {});
  view.append(
    h("div", { class: "row" }, h("h1", {}, "Repositories")),
    grid,
    h("div", { class: "panel section" },
      h("div", { class: "pad" }, h("h2", {}, "Recent deliveries")),
      h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["received", "source", "event", "result", "runs"].map((c) => h("th", {}, c)))), deliveries)),
  );
  try {
    const [repos, dels] = await Promise.all([api.get("/api/v1/repositories"), api.get("/api/v1/deliveries?limit=30")]);
    if (!repos.length) grid.append(h("div", { class: "panel empty" }, "No repositories yet: ", h("code", {}, "shipline repos add NAME URL --forge gitea --pipeline FILE")));
    for (const r of repos) {
      const repo = r.repository;
      grid.append(h("div", { class: "panel pad repo", "data-repo": repo.name },
        h("h3", {}, repo.name, h("span", { class: "forge" }, repo.forge)),
        h("dl", {},
          h("dt", {}, "url"), h("dd", { class: "mono" }, repo.url),
          h("dt", {}, "pipeline"), h("dd", { class: "mono" }, repo.pipeline || "the repository's .shipline/pipeline.yaml"),
          h("dt", {}, "default"), h("dd", {}, h("span", { class: "tag" }, repo.default_branch)),
          h("dt", {}, "webhook"), h("dd", {}, repo.forge === "git" ? "none (polled)" : `/hooks/${repo.forge}${r.has_secret ? " · signed" : ""}`),
          repo.poll_seconds ? [h("dt", {}, "poll"), h("dd", {}, `every ${repo.poll_seconds}s`)] : null,
        ),
        h("ul", { class: "rules" }, r.triggers.length ? r.triggers.map((t) => h("li", {}, h("span", { class: "muted" }, `#${t.id} `), ruleText(t.rule)))
          : h("li", { class: "muted" }, "push to the default branch (no rules of its own)")),
      ));
    }
    const byId = new Map(repos.map((r) => [r.repository.id, r.repository.name]));
    deliveries.replaceChildren(...dels.map((d) => h("tr", {},
      h("td", { class: "when muted", title: d.received_at }, ago(d.received_at)),
      h("td", {}, d.source, byId.has(d.repository_id) ? h("span", { class: "muted" }, ` · ${byId.get(d.repository_id)}`) : null),
      h("td", {}, d.event),
      h("td", {}, h("span", { class: `status s-${d.result === "started" ? "succeeded" : d.result === "duplicate" || d.result === "ignored" ? "cancelled" : "queued"}` }, d.result)),
      h("td", {}, d.run_ids.map((i) => d.pruned_run_ids.includes(i)
        ? h("span", { class: "muted", title: "pruned: no longer in the store" }, `#${i} (pruned) `)
        : h("a", { href: `#/runs/${i}`, onclick: (e) => e.stopPropagation() }, `#${i} `))),
    )));
  } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
}

/* --- environments (GitOps) ------------------------------------------------------------ */

const SYNC_CLASS = { Synced: "s-succeeded", OutOfSync: "s-queued" };
const HEALTH_CLASS = { Healthy: "s-succeeded", Progressing: "s-running", Degraded: "s-failed", Missing: "s-cancelled" };
const OUTCOME_CLASS = { verified: "s-succeeded", "rolled-back": "s-queued", failed: "s-failed" };
function pill(text, cls, attr) { return h("span", { class: `status ${cls || ""}`, [attr]: text }, text); }
function shortSha(sha) { return sha ? h("span", { class: "tag", title: sha }, sha.slice(0, 12)) : h("span", { class: "muted" }, "none"); }

function envTarget(e) { return e.cluster ? "the whole cluster" : `namespace ${e.namespace}`; }

async function envsView(view) {
  const grid = h("div", { class: "repos section", id: "env-grid" });
  view.append(h("div", { class: "row" }, h("h1", {}, "Environments")),
    h("p", { class: "muted" }, "Each environment is a namespace or a cluster whose desired state is a git branch. ",
      "Declare them in a file and register it: ", h("code", {}, "shipline env apply environments.yaml")), grid);
  try {
    const items = await api.get("/api/v1/environments");
    if (!items.length) grid.append(h("div", { class: "panel empty" }, "No environments yet: ", h("code", {}, "shipline env apply FILE")));
    for (const item of items) {
      const e = item.environment, st = item.status;
      grid.append(h("div", { class: "panel pad repo env-card", "data-env": e.name, onclick: () => { location.hash = `#/environments/${e.name}`; } },
        h("h3", {}, h("a", { href: `#/environments/${e.name}` }, e.name), h("span", { class: "forge" }, e.sync === "auto" ? "auto sync" : "manual sync")),
        h("div", { class: "row" }, pill(st.sync, SYNC_CLASS[st.sync], "data-sync"), pill(st.health, HEALTH_CLASS[st.health], "data-health")),
        h("dl", {},
          h("dt", {}, "target"), h("dd", {}, envTarget(e)),
          h("dt", {}, "repo"), h("dd", { class: "mono" }, `${e.repo} @ ${e.branch}`),
          h("dt", {}, "head"), h("dd", {}, shortSha(st.commit)),
          h("dt", {}, "applied"), h("dd", {}, shortSha(st.applied_commit)),
        ),
        h("p", { class: "muted env-message" }, st.message)));
    }
  } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
}

const PROMOTION_CLASS = { proposed: "s-queued", open: "s-running", merged: "s-running", verified: "s-succeeded", failed: "s-failed" };

function promotionRow(p) {
  const link = /^https?:\/\/[^\s]+$/i.test(p.pr_url || "") ? h("a", { href: p.pr_url, target: "_blank", rel: "noopener" }, `#${p.pr_number}`) : "";
  return h("tr", { "data-promotion": p.id, "data-state": p.state },
    h("td", { class: "muted", title: p.updated_at }, ago(p.updated_at)),
    h("td", {}, p.service),
    h("td", { class: "mono" }, p.version),
    h("td", { class: "mono muted" }, p.previous_version || "–"),
    h("td", {}, pill(p.state, PROMOTION_CLASS[p.state], "data-status")),
    h("td", {}, link),
    h("td", { class: "msg", title: p.message }, p.message));
}

async function envView(view, name) {
  const head = h("div", { class: "panel pad" });
  const rows = h("tbody", { id: "env-history" });
  const promotions = h("tbody", { id: "env-promotions" });
  view.append(h("div", { class: "row" }, h("a", { href: "#/environments" }, "Environments"), h("span", { class: "muted" }, "/"), h("h1", {}, name)),
    h("div", { class: "section" }, head),
    h("div", { class: "panel section" }, h("div", { class: "pad" }, h("h2", {}, "History")),
      h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["when", "action", "commit", "outcome", "applied", "run", "message", ""].map((c) => h("th", {}, c)))), rows)),
    h("div", { class: "panel section" }, h("div", { class: "pad" }, h("h2", {}, "Promotions")),
      h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["when", "service", "version", "from", "state", "pull request", "message"].map((c) => h("th", {}, c)))), promotions)));
  const operator = api.role === "operator";

  async function act(path, body, what) {
    try {
      const res = await api.post(`/api/v1/environments/${name}/${path}`, body);
      toast(`${what}: run ${res.run} queued`);
      location.hash = `#/runs/${res.run}`;
    } catch (e) { toast(e.message); }
  }
  async function load() {
    const data = await api.get(`/api/v1/environments/${name}`);
    const e = data.environment, st = data.status;
    head.replaceChildren(
      h("div", { class: "run-head" },
        h("div", { class: "title" }, pill(st.sync, SYNC_CLASS[st.sync], "data-sync"), pill(st.health, HEALTH_CLASS[st.health], "data-health")),
        h("div", { class: "spacer" }),
        operator ? h("div", { class: "row" },
          h("button", { class: "primary small", type: "button", id: "env-sync", onclick: () => act("sync", {}, "sync") }, "Sync now"),
          h("button", { class: "danger small", type: "button", id: "env-rollback",
            onclick: () => { if (confirm(`Roll ${name} back to the verified commit before the applied one?`)) act("rollback", {}, "rollback"); } }, "Roll back"))
          : h("span", { class: "muted" }, "Sign in as an operator to sync or roll back")),
      h("div", { class: "facts" },
        h("span", {}, "target ", h("b", {}, envTarget(e))),
        h("span", {}, "repo ", h("b", { class: "mono" }, `${e.repo} @ ${e.branch}`)),
        h("span", {}, "head ", shortSha(st.commit)),
        h("span", {}, "applied ", shortSha(st.applied_commit)),
        h("span", {}, "self-heal ", h("b", {}, e["self-heal"] ? "on" : "off")),
        h("span", {}, "verify within ", h("b", {}, `${e["verify-timeout"]}s`))),
      h("p", { class: "env-message" }, st.message));
    rows.replaceChildren(...(data.history.length ? data.history.map((x) => h("tr", { "data-entry": x.id, "data-outcome": x.outcome },
      h("td", { class: "muted", title: x.created_at }, ago(x.created_at)),
      h("td", {}, x.action),
      h("td", {}, shortSha(x.commit)),
      h("td", {}, pill(x.outcome, OUTCOME_CLASS[x.outcome], "data-status")),
      h("td", {}, shortSha(x.applied_commit)),
      h("td", {}, x.run_id ? h("a", { href: `#/runs/${x.run_id}` }, `#${x.run_id}`) : ""),
      h("td", { class: "msg", title: x.message }, x.message),
      h("td", {}, operator && x.verified && x.commit !== st.applied_commit
        ? h("button", { class: "ghost small", type: "button", onclick: (ev) => { ev.stopPropagation(); if (confirm(`Roll ${name} back to ${x.commit.slice(0, 12)}?`)) act("rollback", { to: x.commit }, "rollback"); } }, "Roll back to this")
        : ""),
    )) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, `Never synced: shipline env sync ${name}`))]));
    const proposed = await api.get(`/api/v1/promotions?environment=${encodeURIComponent(name)}&limit=20`);
    promotions.replaceChildren(...(proposed.length ? proposed.map(promotionRow)
      : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No promotions yet: a release of a service this environment lists proposes one"))]));
  }
  try { await load(); } catch (e) { view.append(h("p", { class: "error" }, e.message)); return; }
  const off = live.on((kind, data) => { if (kind === "run" && !ACTIVE.has(data.status)) setTimeout(() => load().catch(() => {}), 1000); });
  cleanup.push(off);
}

/* --- delivery (DORA metrics) ----------------------------------------------------------- */

const BAND_CLASS = { elite: "s-succeeded", high: "s-running", medium: "s-queued", low: "s-failed" };
function bandPill(band) { return band ? h("span", { class: `status ${BAND_CLASS[band]}`, "data-band": band }, band) : h("span", { class: "muted", "data-band": "" }, "no data"); }
function secs(v) {
  if (v === null || v === undefined) return "–";
  if (v < 60) return `${Math.round(v)}s`;
  if (v < 3600) return `${Math.round(v / 60)}m`;
  if (v < 86400) return `${(v / 3600).toFixed(1)}h`;
  return `${(v / 86400).toFixed(1)}d`;
}
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function timesCell(t, band) { return t.count ? [`${secs(t.median_seconds)} (${secs(t.p90_seconds)}) `, bandPill(band)] : [bandPill(band)]; }
function pct(v) { return v === null || v === undefined ? "–" : `${Math.round(v * 100)}%`; }

function doraChart(days) {
  const W = 1100, H = 190, L = 34, B = 24, T = 10;
  const n = days.length, max = Math.max(1, ...days.map((d) => d.deployments + d.failed_changes));
  const step = (W - L - 8) / Math.max(1, n), bw = Math.max(2, step * 0.7);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = s("svg", { class: "dora-chart", id: "dora-chart", width: "100%", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "deployments and failed changes per day" });
  for (const v of [0, Math.ceil(max / 2), max]) {
    svg.append(s("line", { class: "grid", x1: L, x2: W - 4, y1: y(v), y2: y(v) }), s("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  }
  days.forEach((d, i) => {
    const x = L + i * step + (step - bw) / 2;
    const g = s("g", { class: "day", "data-date": d.date, "data-deployments": d.deployments, "data-failed": d.failed_changes },
      s("title", {}, `${d.date}: ${d.deployments} deployment(s), ${d.failed_changes} failed change(s)`));
    if (d.deployments) g.append(s("rect", { class: "ok", x, width: bw, y: y(d.deployments), height: y(0) - y(d.deployments) }));
    if (d.failed_changes) g.append(s("rect", { class: "bad", x, width: bw, y: y(d.deployments + d.failed_changes), height: y(d.deployments) - y(d.deployments + d.failed_changes) }));
    if (i === 0 || i === n - 1 || (n > 14 && i % Math.ceil(n / 8) === 0)) g.append(s("text", { class: "axis", x: x + bw / 2, y: H - 6, "text-anchor": "middle" }, d.date.slice(5)));
    svg.append(g);
  });
  return svg;
}

function doraTile(key, title, value, detail, band) {
  return h("div", { class: "panel pad dora-tile", "data-metric": key },
    h("div", { class: "muted" }, title), h("div", { class: "dora-value", "data-value": "" }, value),
    h("div", { class: "row" }, bandPill(band), h("span", { class: "muted" }, detail)));
}

async function deliveryView(view, hash) {
  const q = new URLSearchParams(hash.split("?")[1] || "");
  const win = ["7d", "30d", "90d"].includes(q.get("window")) ? q.get("window") : "30d";
  const env = q.get("environment") || "", svc = q.get("service") || "";
  const go = (changes) => {
    const next = new URLSearchParams({ window: win, environment: env, service: svc, ...changes });
    for (const [k, v] of [...next]) if (!v) next.delete(k);
    location.hash = `#/delivery?${next}`;
  };
  const body = h("div", {});
  view.append(h("div", { class: "row" }, h("h1", {}, "Delivery"), h("span", { class: "muted" }, "DORA's four keys from shipline's own records"),
    h("div", { class: "spacer" }),
    h("div", { class: "chips", id: "dora-window" }, ["7d", "30d", "90d"].map((w) =>
      h("button", { type: "button", class: `chip ${w === win ? "on" : ""}`, "data-window": w, onclick: () => go({ window: w }) }, w)))), body);
  let data, all;
  try {
    const query = new URLSearchParams({ window: win, environment: env, service: svc });
    [data, all] = await Promise.all([api.get(`/api/v1/metrics/dora?${query}`), api.get(`/api/v1/metrics/dora?window=${win}`)]);
  } catch (e) { body.append(h("p", { class: "error" }, e.message)); return; }
  const pick = (id, label, names, value, key) => h("label", { class: "row" }, h("span", { class: "muted" }, label),
    h("select", { id, onchange: (ev) => go({ [key]: ev.target.value }) },
      h("option", { value: "" }, "all"), names.map((n) => h("option", { value: n, selected: n === value }, n))));
  const o = data.overall;
  body.append(
    h("div", { class: "row section" },
      pick("dora-env", "environment", all.environments.map((m) => m.environment), env, "environment"),
      pick("dora-service", "service", all.services.map((m) => m.service), svc, "service"),
      h("span", { class: "muted" }, `${data.start.slice(0, 10)} – ${data.end.slice(0, 10)}; times are median (p90)`)),
    h("div", { class: "dora-tiles section" },
      doraTile("deployment-frequency", "Deployment frequency", `${o.deployment_frequency.toFixed(2)}/day`, plural(o.deployments, "deployment"), o.deployment_frequency_band),
      doraTile("lead-time", "Lead time for changes", secs(o.lead_time.median_seconds), `p90 ${secs(o.lead_time.p90_seconds)} · ${plural(o.lead_time.count, "change")}`, o.lead_time_band),
      doraTile("change-failure-rate", "Change failure rate", pct(o.change_failure_rate), `${o.failed_changes} of ${o.changes} changes`, o.change_failure_rate_band),
      doraTile("time-to-restore", "Time to restore", secs(o.time_to_restore.median_seconds),
        `p90 ${secs(o.time_to_restore.p90_seconds)} · ${plural(o.time_to_restore.count, "restore")}${o.unrestored ? ` · ${o.unrestored} not restored` : ""}`, o.time_to_restore_band)),
    h("div", { class: "panel pad section" }, h("h2", {}, "Deployments and failed changes per day"), doraChart(data.days),
      h("div", { class: "row muted legend" }, h("span", { class: "key ok" }), "deployments", h("span", { class: "key bad" }), "failed changes")));
  const rows = [...data.environments.map((m) => ["environment", m.environment, m]), ...data.services.map((m) => ["service", m.service, m])];
  body.append(h("div", { class: "panel section" },
    h("table", { class: "runs dora-table", id: "dora-table" },
      h("thead", {}, h("tr", {}, ["", "name", "deploys", "per day", "lead time", "change failure rate", "time to restore", "not restored"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows.map(([kind, name, m]) => h("tr", { "data-scope": `${kind}:${name}`, onclick: () => go(kind === "environment" ? { environment: name } : { service: name }) },
        h("td", { class: "muted" }, kind), h("td", {}, name), h("td", { "data-deployments": m.deployments }, m.deployments),
        h("td", {}, `${m.deployment_frequency.toFixed(2)} `, bandPill(m.deployment_frequency_band)),
        h("td", {}, timesCell(m.lead_time, m.lead_time_band)),
        h("td", {}, m.changes ? `${pct(m.change_failure_rate)} (${m.failed_changes}/${m.changes}) ` : "", bandPill(m.change_failure_rate_band)),
        h("td", {}, timesCell(m.time_to_restore, m.time_to_restore_band)),
        h("td", {}, m.unrestored || ""))) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "Nothing recorded in this window: environments count once they sync."))]))));
}

/* --- secrets -------------------------------------------------------------------------- */

async function secretsView(view) {
  view.append(h("div", { class: "row" }, h("h1", {}, "Secrets")),
    h("p", { class: "muted" }, "Pipelines use them as ", h("code", {}, "${{ secrets.NAME }}"),
      ". Values are encrypted in the store, masked as *** in logs and never shown again, here or anywhere."));
  if (api.role !== "operator") {
    view.append(h("div", { class: "panel empty" }, "Secrets need an operator token. ",
      h("button", { class: "primary small", type: "button", onclick: openToken }, "Sign in")));
    return;
  }
  const rows = h("tbody", { id: "secret-rows" });
  const name = h("input", { id: "secret-name", placeholder: "registry-token", autocomplete: "off", "aria-label": "secret name" });
  const value = h("input", { id: "secret-value", type: "password", placeholder: "value", autocomplete: "new-password", "aria-label": "secret value" });
  const form = h("form", { class: "panel pad secret-form", id: "secret-form" },
    h("label", { class: "field" }, "name", name), h("label", { class: "field" }, "value", value),
    h("button", { class: "primary", type: "submit", id: "secret-save" }, "Set"));
  view.append(form, h("div", { class: "panel section" }, h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ["name", "updated", "created", ""].map((c) => h("th", {}, c)))), rows)));

  async function load() {
    const items = await api.get("/api/v1/secrets");
    rows.replaceChildren(...(items.length ? items.map((x) => h("tr", { "data-secret": x.name },
      h("td", { class: "mono" }, x.name),
      h("td", { class: "muted", title: x.updated_at }, ago(x.updated_at)),
      h("td", { class: "muted", title: x.created_at }, ago(x.created_at)),
      h("td", {}, h("button", { class: "ghost small", type: "button", onclick: () => remove(x.name) }, "Delete")),
    )) : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No secrets yet."))]));
  }
  async function remove(secret) {
    if (!confirm(`Delete secret ${secret}? Runs that use it fail until it is set again.`)) return;
    try { await api.del(`/api/v1/secrets/${encodeURIComponent(secret)}`); toast(`deleted ${secret}`); await load(); }
    catch (e) { toast(e.message); }
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api.put(`/api/v1/secrets/${encodeURIComponent(name.value.trim())}`, { value: value.value });
      toast(`secret ${name.value.trim()} set`);
      name.value = ""; value.value = "";
      await load();
    } catch (err) { toast(err.message); }
  });
  try { await load(); } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
}

/* --- token dialog --------------------------------------------------------------------- */

function openToken() {
  $("#token-input").value = api.token;
  $("#token-error").hidden = true;
  $("#token-dialog").showModal();
}
$("#token-btn").addEventListener("click", openToken);
$("#token-dialog").addEventListener("close", async () => {
  const what = $("#token-dialog").returnValue;
  if (what === "save") api.token = $("#token-input").value.trim();
  else if (what === "clear") api.token = "";
  else return;
  if (api.token) localStorage.setItem("shipline.token", api.token); else localStorage.removeItem("shipline.token");
  await whoami();
  live.connect();
  route();
});

window.addEventListener("hashchange", route);
whoami().then(() => { live.connect(); route(); });
