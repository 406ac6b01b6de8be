// genrec explore: the page. Talks to /api/* (live server) or loads data/*.js (static folder, GENREC_STATIC).
"use strict";

const STATIC = !!window.GENREC_STATIC;
const cache = {};
const loaders = {};
const state = { items: null, byId: null, labels: {}, overview: null, users: null, userPage: 0, charts: [] };
const PAGE = 50;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 4) => (v === null || v === undefined ? "-" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : String(v));

// A user id as a file name: [A-Za-z0-9_-] kept, every other byte as ~XX (as genrec/explore/static_site.py).
function fileKey(name) {
  let out = "";
  for (const ch of name) {
    if (/^[A-Za-z0-9_-]$/.test(ch)) out += ch;
    else for (const b of new TextEncoder().encode(ch)) out += "~" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

window.GENREC_LOAD = function (name, value) {
  cache[name] = value;
  if (loaders[name]) { loaders[name].forEach((f) => f(value)); delete loaders[name]; }
};

const pending = {};
function api(name) {
  if (name in cache) return Promise.resolve(cache[name]);
  if (!name.startsWith("user/")) {
    pending[name] = pending[name] || apiLoad(name).finally(() => delete pending[name]);
    return pending[name];
  }
  return apiLoad(name);
}

function apiLoad(name) {
  if (STATIC) {
    return new Promise((resolve, reject) => {
      (loaders[name] = loaders[name] || []).push(resolve);
      const [head, ...rest] = name.split("/");
      const file = rest.length ? `data/${head}/${fileKey(rest.join("/"))}.js` : `data/${head}.js`;
      const s = el("script", { src: file });
      s.onerror = () => reject(new Error(`${name}: not in this static export`));
      document.head.append(s);
    });
  }
  const [head, ...rest] = name.split("/");
  const url = "api/" + head + (rest.length ? "/" + encodeURIComponent(rest.join("/")) : "");
  return fetch(url).then(async (r) => {
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    if (head !== "user") cache[name] = body;
    return body;
  });
}

function fileUrl(rel) { return (STATIC ? "files/" : "files/") + rel.split("/").map(encodeURIComponent).join("/"); }

function showError(where, err) { where.append(el("div", { class: "error" }, String(err.message || err))); }

// ---------------------------------------------------------------- start-up
async function waitReady() {
  if (STATIC) return;
  for (;;) {
    const s = await fetch("api/status").then((r) => r.json());
    $("loading-bar").max = s.total || 1;
    $("loading-bar").value = s.done || 0;
    $("loading-text").textContent = s.error ? `Cannot read the run: ${s.error}` : `Indexing the run: ${s.step} (${s.done}/${s.total})`;
    if (s.ready || s.error) return;
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function start() {
  try {
    await waitReady();
    state.overview = await api("overview");
  } catch (e) { showError($("loading"), e); return; }
  $("loading").hidden = true;
  $("run-name").textContent = "- " + state.overview.run;
  window.addEventListener("hashchange", route);
  route();
}

function route() {
  const h = decodeURIComponent(location.hash.slice(1)) || "run";
  const [tab, ...rest] = h.split("/");
  const arg = rest.join("/");
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.tab === (tab === "user" ? "users" : tab)));
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  state.nav = (state.nav || 0) + 1;
  const views = { run: viewRun, tree: viewTree, users: viewUsers, user: viewUser, rollouts: viewRollouts, try: viewTry };
  (views[tab] || viewRun)(arg);
}

// ---------------------------------------------------------------- run overview
function partsTable(parts) {
  return el("table", {}, el("tr", {}, el("th", {}, "part"), el("th", {}, "status"), el("th", {}, "note")),
    Object.entries(parts).map(([name, p]) => el("tr", {}, el("td", {}, name),
      el("td", { class: "part-" + p.status }, p.status), el("td", {}, p.message || ""))));
}

function lineChart(canvas, title, datasets, xTitle) {
  const chart = new Chart(canvas, {
    type: "line",
    data: { datasets: datasets.map((d) => ({ label: d.label, data: d.points.map(([x, y]) => ({ x, y })), pointRadius: d.points.length > 40 ? 0 : 2, borderWidth: 1.5 })) },
    options: { animation: false, maintainAspectRatio: false, parsing: true,
      scales: { x: { type: "linear", title: { display: true, text: xTitle || "step" } } },
      plugins: { title: { display: true, text: title }, legend: { display: datasets.length > 1, labels: { boxWidth: 10 } } } },
  });
  state.charts.push(chart);
  return chart;
}

function chartBox(title, datasets, xTitle) {
  const canvas = el("canvas");
  const box = el("div", { class: "chart-box" }, canvas);
  setTimeout(() => lineChart(canvas, title, datasets, xTitle), 0);
  return box;
}

async function viewRun() {
  const v = $("view-run");
  v.hidden = false;
  v.replaceChildren();
  const o = state.overview;
  const s = o.summary || {};
  v.append(el("h2", {}, "Run"),
    el("p", {}, `status: ${s.status || "unknown"}; data: ${s.data || "-"}; ${fmt(s.num_items)} items; codebook ${fmt(s.codebook_size)}; `
      + `${fmt(s.total_seconds, 0)} s; peak memory ${s.peak_memory_mb != null
        ? `${fmt(s.peak_memory_mb, 0)} MB (summed over its processes)`
        : `${fmt(s.peak_rss_mb, 0)} MB (largest process)`}`));
  if (s.stages && s.stages.length) {
    v.append(el("table", {}, el("tr", {}, el("th", {}, "stage"), el("th", {}, "status"), el("th", {}, "seconds"), el("th", {}, "command")),
      s.stages.map((st) => el("tr", {}, el("td", {}, st.stage), el("td", {}, st.status),
        el("td", { class: "num" }, fmt(st.seconds ?? st.seconds_when_run, 1)), el("td", { class: "sid" }, st.command || "")))));
  }
  v.append(el("h3", {}, "What this run folder holds"), partsTable(o.parts));
  const t = o.tokenizer;
  v.append(el("h2", {}, "Tokenizer"));
  if (!t) v.append(el("p", { class: "notice" }, "No tokenizer report in this run."));
  else {
    const levels = t.codebook_sizes || [];
    v.append(el("p", {}, `${t.method || "?"} on ${t.encoder || "?"} embeddings; ${fmt(t.num_items)} items; ${fmt(t.levels)} levels (${fmt(t.semantic_levels)} semantic); `
      + `collision rate before dedup ${fmt(t.collision_rate_before_dedup, 3)}, after ${fmt(t.collision_rate, 3)}; ${fmt(t.num_labels)} prefix labels`),
    el("table", {}, el("tr", {}, el("th", {}, "level"), el("th", {}, "codebook size"), el("th", {}, "utilisation"), el("th", {}, "perplexity")),
      levels.map((c, i) => el("tr", {}, el("td", {}, i + 1), el("td", { class: "num" }, c),
        el("td", { class: "num" }, fmt((t.utilization || [])[i], 3)), el("td", { class: "num" }, fmt((t.perplexity || [])[i], 2))))));
  }
  v.append(el("h2", {}, "Evaluation"));
  const ev = o.eval;
  if (!ev) v.append(el("p", { class: "notice" }, "No evaluation in this run (eval/eval_report.json absent)."));
  else {
    v.append(el("p", {}, `${fmt(ev.num_examples)} users of ${ev.dataset || "the dataset"}, catalog of ${fmt(ev.catalog_size)}; protocols: `
      + ev.protocols.map((p) => `${p} (${fmt((ev.protocol_users || {})[p])} users)`).join(", ")));
    const metrics = ["ndcg@10", "recall@10", "ndcg@20", "recall@20", "mrr", "sid_level0_acc", "invalid", "filled"];
    for (const p of ev.protocols) {
      const methods = Object.keys(ev.results).filter((m) => ev.results[m] && ev.results[m][p]);
      const best = {};
      metrics.forEach((k) => (best[k] = Math.max(...methods.map((m) => ev.results[m][p][k] ?? -Infinity))));
      v.append(el("h3", {}, `protocol: ${p}`), el("table", { class: "eval-table" },
        el("tr", {}, el("th", {}, "method"), metrics.map((k) => el("th", {}, k))),
        methods.map((m) => el("tr", {}, el("td", {}, m), metrics.map((k) => {
          const val = ev.results[m][p][k];
          return el("td", { class: "num" + (val === best[k] && !["invalid", "filled"].includes(k) && val > 0 ? " hit" : "") }, fmt(val));
        })))));
      const ks = (ev.topk || []).slice().sort((a, b) => a - b);
      if (ks.length > 1) {
        const grid = el("div", { class: "grid" });
        for (const metric of ["ndcg", "recall"]) {
          grid.append(chartBox(`${metric.toUpperCase()}@K (${p})`, methods.map((m) => ({ label: m, points: ks.map((k) => [k, ev.results[m][p][`${metric}@${k}`] ?? null]) })), "K"));
        }
        v.append(grid);
      }
    }
    if (ev.plots && ev.plots.length) {
      v.append(el("h3", {}, "Plots written by the evaluation"), el("div", { class: "row" },
        ev.plots.map((p) => el("img", { src: fileUrl(p), alt: p, style: "max-width:480px;background:#fff" }))));
    }
  }
  v.append(el("h2", {}, "Training curves (TensorBoard logs)"));
  let curves;
  const nav = state.nav;
  try { curves = await api("curves"); } catch (e) { showError(v, e); return; }
  if (nav !== state.nav) return;
  if (!Object.keys(curves).length) v.append(el("p", { class: "notice" }, "No TensorBoard logs in this run."));
  for (const [stage, c] of Object.entries(curves)) {
    const tags = Object.keys(c.tags);
    if (!tags.length) continue;
    v.append(el("h3", {}, stage));
    const grid = el("div", { class: "grid" });
    const groups = {};
    for (const tag of c.key) {
      const g = /match_rate\/|frac_zero_adv_groups\//.test(tag) ? tag.slice(0, tag.lastIndexOf("/")) : tag;
      (groups[g] = groups[g] || []).push(tag);
    }
    for (const [g, members] of Object.entries(groups)) {
      grid.append(chartBox(g, members.map((t) => ({ label: t.slice(t.lastIndexOf("/") + 1), points: c.tags[t] }))));
    }
    const pick = el("select", {}, el("option", { value: "" }, `other curves of ${stage} (${tags.length})...`), tags.map((t) => el("option", { value: t }, t)));
    pick.addEventListener("change", () => { if (pick.value) grid.append(chartBox(pick.value, [{ label: pick.value, points: c.tags[pick.value] }])); });
    v.append(grid, el("div", { class: "row" }, pick));
  }
}

// ---------------------------------------------------------------- SID tree
async function loadItems() {
  if (state.items) return;
  const data = await api("items");
  state.items = data.items.map(([id, title, codes]) => ({ id, title, codes }));
  state.byId = new Map(state.items.map((it) => [it.id, it]));
  state.labels = data.labels || {};
  state.levels = data.levels;
}
const keyOf = (codes) => (codes.length ? codes.join("_") : "root");
const sidOf = (codes) => codes.map((c, i) => `<${String.fromCharCode(97 + i)}_${c}>`).join("");

async function viewTree(arg) {
  const v = $("view-tree");
  v.hidden = false;
  const nav = state.nav;
  try { await loadItems(); } catch (e) { showError($("tree-node"), e); return; }
  if (nav !== state.nav) return; // the user went elsewhere meanwhile
  if (!state.levels) { $("tree-node").replaceChildren(el("p", { class: "notice" }, "No SID map in this run: no tree to show.")); return; }
  let [key, focus] = (arg || "root").split("~");
  const codes = key === "root" ? [] : key.split("_").map(Number);
  const under = state.items.filter((it) => codes.every((c, i) => it.codes[i] === c));
  const path = $("tree-path");
  path.replaceChildren(el("span", { class: "crumb" + (codes.length ? "" : " current"), onclick: () => (location.hash = "tree") }, `all (${state.items.length})`),
    ...codes.map((c, i) => {
      const pre = codes.slice(0, i + 1);
      return el("span", { class: "crumb" + (i === codes.length - 1 ? " current" : ""), onclick: () => (location.hash = "tree/" + keyOf(pre)) },
        el("span", { class: "sid" }, sidOf(pre).slice(sidOf(pre.slice(0, -1)).length)), " ", state.labels[keyOf(pre)] || "");
    }));
  const node = $("tree-node");
  node.replaceChildren();
  if (!under.length) { node.append(el("p", { class: "notice" }, `No item under ${key}.`)); return; }
  const depth = codes.length;
  node.append(el("h2", {}, depth ? `${sidOf(codes)} ${state.labels[key] || ""}` : "SID tree: level 1",
    el("span", { class: "muted" }, ` (${under.length} items)`)));
  if (depth >= state.levels) return;
  const children = new Map();
  for (const it of under) {
    const c = it.codes[depth];
    if (!children.has(c)) children.set(c, []);
    children.get(c).push(it);
  }
  const leaf = depth + 1 === state.levels;
  const rows = [...children.entries()].sort((a, b) => a[0] - b[0]).map(([c, its]) => {
    const k = keyOf([...codes, c]);
    const sel = leaf && focus && its.some((it) => it.id === focus);
    return el("tr", { class: "clickable tree-child" + (sel ? " selected" : ""), onclick: () => (location.hash = leaf ? `tree/${key}~${its[0].id}` : "tree/" + k) },
      el("td", { class: "sid" }, sidOf([...codes, c]).slice(sidOf(codes).length)),
      el("td", {}, leaf ? `${its[0].id}: ${its[0].title}` : state.labels[k] || ""),
      el("td", { class: "num" }, its.length, " ", el("span", { class: "bar", style: `width:${Math.max(2, (60 * its.length) / under.length)}px` })),
      el("td", { class: "muted" }, leaf ? "" : its.slice(0, 3).map((it) => it.title || it.id).join(" | ")));
  });
  node.append(el("table", {}, el("tr", {}, el("th", {}, "code"), el("th", {}, leaf ? "job" : "label"), el("th", {}, "items"), el("th", {}, leaf ? "" : "example titles")), rows));
  if (focus && state.byId.has(focus)) {
    const it = state.byId.get(focus);
    node.append(el("div", { class: "card", id: "focus-item" }, el("b", {}, `${it.id}: ${it.title}`), " ", el("span", { class: "sid" }, sidOf(it.codes)),
      el("ol", {}, it.codes.map((c, i) => el("li", {}, el("span", { class: "sid" }, sidOf(it.codes.slice(0, i + 1))), " ", state.labels[keyOf(it.codes.slice(0, i + 1))] || el("span", { class: "muted" }, "(no label)"))))));
  }
}

function setupSearch() {
  const input = $("search");
  input.addEventListener("input", async () => {
    await loadItems();
    const q = input.value.trim().toLowerCase();
    const out = $("search-results");
    out.replaceChildren();
    if (q.length < 2) { $("search-count").textContent = ""; return; }
    const found = state.items.filter((it) => it.id.toLowerCase() === q || it.id.toLowerCase().includes(q) || (it.title || "").toLowerCase().includes(q));
    $("search-count").textContent = `${found.length} match${found.length === 1 ? "" : "es"}`;
    for (const it of found.slice(0, 20)) {
      out.append(el("li", { class: "search-result", onclick: () => { out.replaceChildren(); location.hash = `tree/${keyOf(it.codes.slice(0, -1))}~${it.id}`; } },
        `${it.id}: ${it.title} `, el("span", { class: "sid" }, sidOf(it.codes))));
    }
  });
}

// ---------------------------------------------------------------- users
async function viewUsers() {
  const v = $("view-users");
  v.hidden = false;
  const list = $("user-list");
  if (!state.users) {
    const nav = state.nav;
    try { state.users = await api("users"); } catch (e) { list.replaceChildren(); showError(list, e); return; }
    if (nav !== state.nav) return;
  }
  const u = state.users;
  if (!u.users.length) { list.replaceChildren(el("p", { class: "notice" }, "No evaluated users (no eval/predictions_*.jsonl in this run).")); return; }
  const q = $("user-filter").value.trim().toLowerCase();
  const shown = u.users.filter((x) => !q || x.user_id.toLowerCase().includes(q) || (x.target_title || "").toLowerCase().includes(q));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  state.userPage = Math.min(state.userPage, pages - 1);
  const pageRows = shown.slice(state.userPage * PAGE, (state.userPage + 1) * PAGE);
  $("user-pager").replaceChildren(
    el("button", { onclick: () => { state.userPage = Math.max(0, state.userPage - 1); viewUsers(); }, disabled: state.userPage === 0 }, "<"),
    ` page ${state.userPage + 1} of ${pages} (${shown.length} users, protocol ${u.protocol}) `,
    el("button", { onclick: () => { state.userPage += 1; viewUsers(); }, disabled: state.userPage >= pages - 1 }, ">"));
  list.replaceChildren(el("table", {}, el("tr", {}, el("th", {}, "user"), el("th", {}, "target"), el("th", {}, "history"), u.methods.map((m) => el("th", {}, m))),
    pageRows.map((x) => el("tr", { class: "clickable user-row", "data-user": x.user_id, onclick: () => (location.hash = "user/" + encodeURIComponent(x.user_id)) },
      el("td", {}, x.user_id), el("td", {}, `${x.target}: ${x.target_title || ""}`), el("td", { class: "num" }, x.history_len),
      u.methods.map((m) => el("td", { class: "num" + (x.hits[m] ? " hit" : "") }, x.hits[m] ? `hit @${x.hits[m]}` : "-"))))));
}

function itemCell(it) {
  return el("span", {}, el("b", {}, it.title || it.id), it.text && it.text !== it.title ? el("span", { class: "muted" }, ` ${it.text.slice((it.title || "").length)}`) : "",
    el("span", { class: "muted" }, ` (${it.id})`));
}

function stepsTable(steps) {
  return el("table", { class: "steps" }, el("tr", {}, el("th", {}, "step"), el("th", {}, "reasoning block"), el("th", {}, "chosen token"), el("th", {}, "prefix label"), el("th", {}, "target token"), el("th", {}, "match")),
    steps.map((s) => el("tr", { class: "step" }, el("td", {}, s.level + 1),
      el("td", { class: "reasoning" }, s.reasoning === null || s.reasoning === undefined ? el("span", { class: "muted" }, "(no block: direct layout)") : s.reasoning || el("span", { class: "muted" }, "(empty)")),
      el("td", { class: "sid" }, s.token), el("td", {}, s.label || el("span", { class: "muted" }, "(no label)")),
      el("td", {}, s.target_token ? el("span", {}, el("span", { class: "sid" }, s.target_token), " ", el("span", { class: "muted" }, s.target_label || "")) : "-"),
      el("td", { class: s.prefix_match ? "ok step-match" : "no step-miss" }, s.prefix_match ? "match" : (s.code_match ? "same code, wrong prefix" : "miss")))));
}

function methodCard(m, levels) {
  const card = el("div", { class: "card method", "data-method": m.name });
  card.append(el("h3", {}, m.name, " ", m.hit_rank ? el("span", { class: "tag-hit" }, `hit at rank ${m.hit_rank}`) : el("span", { class: "muted" }, "target not in the list"),
    el("span", { class: "muted" }, ` - ${m.kind}${m.layout ? ", " + m.layout + " layout" : ""}; ${m.source}`)));
  if (m.steps) card.append(el("div", {}, el("b", {}, "Top-1 step by step"), stepsTable(m.steps)));
  card.append(el("table", { class: "topk" }, el("tr", {}, el("th", {}, "#"), el("th", {}, "job"), el("th", {}, "SID"), el("th", {}, "levels matching target"), el("th", {}, "score")),
    m.items.map((it) => el("tr", { class: it.hit ? "hit" : "" }, el("td", { class: "num" }, it.rank), el("td", {}, itemCell(it)), el("td", { class: "sid" }, it.sid),
      el("td", {}, `${it.prefix_match}/${it.codes.length || levels || "?"}`), el("td", { class: "num" }, it.filled ? "popular fill" : fmt(it.score, 2))))));
  return card;
}

async function viewUser(uid) {
  const v = $("view-user");
  v.hidden = false;
  v.replaceChildren(el("p", { class: "muted" }, "loading..."));
  let u;
  const nav = state.nav;
  try { u = await api("user/" + uid); } catch (e) { v.replaceChildren(); showError(v, e); return; }
  if (nav !== state.nav) return;
  const protocols = Object.keys(u.protocols);
  const sel = el("select", { id: "protocol" }, protocols.map((p) => el("option", { value: p }, p)));
  const methods = el("div", { class: "methods" });
  const draw = () => {
    const p = u.protocols[sel.value];
    methods.replaceChildren(...p.methods.map((m) => methodCard(m, u.target.codes.length)));
  };
  sel.addEventListener("change", draw);
  v.replaceChildren(
    el("h2", {}, `User ${u.user_id}`, " ", el("a", { href: "#users" }, "(all users)")),
    el("div", { class: "card" }, el("b", {}, "Profile"), u.profile ? el("pre", {}, u.profile) : el("p", { class: "muted" }, "no profile")),
    el("div", { class: "card" }, el("b", {}, "History (oldest first)"),
      el("table", { id: "history" }, el("tr", {}, el("th", {}, "#"), el("th", {}, "job"), el("th", {}, "SID")),
        u.history.map((h, i) => el("tr", {}, el("td", {}, i + 1), el("td", {}, itemCell(h)), el("td", { class: "sid" }, h.sid))))),
    el("div", { class: "card", id: "target" }, el("b", {}, "Target (the next job): "), itemCell(u.target), " ", el("span", { class: "sid" }, u.target.sid)),
    el("div", { class: "row" }, "protocol: ", sel, u.not_saved ? el("span", { class: "muted" }, `(${u.not_saved.join(", ")}: per-user lists are not saved by the evaluation)`) : "",
      STATIC ? "" : el("button", { onclick: () => { state.tryHistory = u.history.map((h) => h.id).join(", "); location.hash = "try"; } }, "try this history")),
    methods);
  draw();
}

// ---------------------------------------------------------------- RL rollouts
async function viewRollouts() {
  const v = $("view-rollouts");
  v.hidden = false;
  v.replaceChildren();
  let r;
  try { r = await api("rollouts"); } catch (e) { showError(v, e); return; }
  if (!r.groups.length) {
    v.append(el("p", { class: "notice" }, `No RL rollouts logged: ${r.status.message || r.status.status}. `
      + "`genrec rl` writes rl/rollouts.jsonl when it logs a sample of groups (docs/explore.md)."));
    return;
  }
  v.append(el("p", {}, `${r.groups.length} groups from ${r.path}. Per-step rewards and advantages (SAPO) beside the outcome advantage the same rollouts would get.`));
  const steps = [...new Set(r.groups.map((g) => g.step))];
  const sel = el("select", {}, steps.map((s) => el("option", { value: s }, `step ${s}`)));
  const box = el("div");
  const draw = () => {
    box.replaceChildren();
    for (const g of r.groups.filter((x) => String(x.step) === sel.value)) {
      const K = Math.max(0, ...g.rollouts.map((x) => (x.step_rewards || []).length));
      const card = el("div", { class: "card rollout-group" }, el("b", {}, `group ${fmt(g.group)}${g.user_id ? " - user " + g.user_id : ""}`), " target ",
        el("span", { class: "sid" }, g.target_sid || ""), ` ${g.target || ""} ${g.target_title || ""}`, g.algorithm ? el("span", { class: "muted" }, ` (${g.algorithm})`) : "");
      if (g.prompt) card.append(el("details", {}, el("summary", {}, "prompt"), el("pre", {}, g.prompt)));
      card.append(el("table", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "SID"), el("th", {}, "job"),
        [...Array(K).keys()].map((k) => el("th", {}, `step ${k + 1} reward / adv`)), el("th", {}, "outcome reward / adv")),
        g.rollouts.map((x, i) => el("tr", {}, el("td", {}, i + 1), el("td", { class: "sid" }, x.sid || "(malformed)"), el("td", {}, x.title || x.item_id || ""),
          [...Array(K).keys()].map((k) => el("td", { class: "num" + ((x.step_rewards || [])[k] > 0 ? " hit" : "") }, `${fmt((x.step_rewards || [])[k], 2)} / ${fmt((x.step_advantages || [])[k], 2)}`)),
          el("td", { class: "num" }, `${fmt(x.outcome_reward, 2)} / ${fmt(x.outcome_advantage, 2)}`)))));
      for (const [i, x] of g.rollouts.entries()) {
        if (x.blocks && x.blocks.length) card.append(el("details", {}, el("summary", {}, `rollout ${i + 1} blocks`), el("ol", {}, x.blocks.map((b) => el("li", { class: "reasoning" }, b)))));
      }
      box.append(card);
    }
  };
  sel.addEventListener("change", draw);
  v.append(el("div", { class: "row" }, "logging step: ", sel), box);
  draw();
}

// ---------------------------------------------------------------- try it
async function viewTry() {
  const v = $("view-try");
  v.hidden = false;
  v.replaceChildren();
  const o = state.overview;
  if (STATIC || o.static) { v.append(el("p", { class: "notice" }, "Try it needs the live server: run `genrec explore --run DIR`.")); return; }
  if (!o.models.length || !o.has_data) { v.append(el("p", { class: "notice" }, "Try it needs a model folder and the run's dataset; this run has " + (o.models.length ? "no dataset (start with --data DIR)." : "no model."))); return; }
  const model = el("select", { id: "try-model" }, o.models.map((m) => el("option", { value: m }, m)));
  model.value = o.models[o.models.length - 1];
  const hist = el("textarea", { id: "try-history", rows: 3, cols: 80, placeholder: "item ids (J00012, J00345) or job descriptions separated by ';'" });
  hist.value = state.tryHistory || "";
  const topk = el("input", { type: "number", value: 10, min: 1, max: 50, style: "width:60px" });
  const beams = el("input", { type: "number", value: 10, min: 1, max: 50, style: "width:60px" });
  const out = el("div", { id: "try-out" });
  const go = el("button", { id: "try-go" }, "Recommend");
  go.addEventListener("click", async () => {
    out.replaceChildren(el("p", { class: "muted" }, "running the model on CPU (the first call loads it)..."));
    go.disabled = true;
    try {
      const r = await fetch("api/recommend", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: model.value, history: hist.value, topk: Number(topk.value), beams: Number(beams.value) }) });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
      out.replaceChildren(el("h3", {}, `${body.model} (${body.layout} layout)`),
        el("table", {}, el("tr", {}, el("th", {}, "history"), el("th", {}, "matched job"), el("th", {}, "SID")),
          body.history.map((h) => el("tr", {}, el("td", {}, h.query), el("td", {}, itemCell(h), h.exact ? "" : el("span", { class: "muted" }, ` (similarity ${fmt(h.score, 2)})`)), el("td", { class: "sid" }, h.sid)))),
        ...body.recommendations.map((it) => el("div", { class: "card try-rec" }, el("b", {}, `${it.rank}. `), itemCell(it), " ", el("span", { class: "sid" }, it.sid),
          el("span", { class: "muted" }, it.filled ? " popular fill" : ` log-prob ${fmt(it.score, 2)}`),
          it.steps.length ? el("table", { class: "steps" }, el("tr", {}, el("th", {}, "step"), el("th", {}, "reasoning block"), el("th", {}, "token"), el("th", {}, "prefix label")),
            it.steps.map((s) => el("tr", {}, el("td", {}, s.level + 1), el("td", { class: "reasoning" }, s.reasoning || el("span", { class: "muted" }, "(none)")), el("td", { class: "sid" }, s.token), el("td", {}, s.label || "")))) : "")));
    } catch (e) { out.replaceChildren(); showError(out, e); }
    go.disabled = false;
  });
  v.append(el("h2", {}, "Try it"), el("p", { class: "muted" }, "Recommendations from one of the run's models on CPU (the code of `genrec recommend`)."),
    el("div", { class: "row" }, "model: ", model, "top-K: ", topk, "beams: ", beams), hist, el("div", { class: "row" }, go), out);
}

$("user-filter").addEventListener("input", () => { state.userPage = 0; viewUsers(); });
setupSearch();
start();
