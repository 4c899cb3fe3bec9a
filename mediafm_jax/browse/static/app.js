// mediafm browse: the views (Catalog, Title with neighbours, Say it, Report) drawn from
// the JSON API. Every string from the catalog goes in as text, never as HTML.
"use strict";

const view = document.getElementById("view");
let info = null;
let titleState = null; // {index, data, selected} while a title page is shown

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, ...children) {
  // replaceChildren, skipping null/false children (optional parts of a view)
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || body.detail || response.statusText);
  return body;
}

function clock(t) {
  if (t === null || t === undefined) return "–";
  const minutes = Math.floor(t / 60);
  const seconds = (t - 60 * minutes).toFixed(1).padStart(4, "0");
  return minutes >= 60
    ? `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, "0")}:${seconds}`
    : `${minutes}:${seconds}`;
}

function showError(err) {
  fill(view, el("p", { class: "error", text: String(err.message || err) }));
}

function setActive(name) {
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.view === name);
  }
}

function picture(titleIndex, shot, hasThumb, colour, cls = "pic") {
  if (hasThumb) {
    return el("img", {
      class: cls + " thumb", src: `/media/thumb/${titleIndex}/${shot}`, alt: `shot ${shot}`,
      loading: "lazy",
    });
  }
  return el("div", {
    class: "swatch", style: `background:${colour || "#bbb"}`, title: "no thumbnail",
  }, colour ? "" : "no thumbnail");
}

// -- catalog -------------------------------------------------------------------------------
async function showCatalog(params) {
  setActive("catalog");
  titleState = null;
  const q = params.get("q") || "";
  const page = Number(params.get("page") || 1);
  const data = await api(`/api/titles?q=${encodeURIComponent(q)}&page=${page}`);
  const filter = el("input", {
    type: "search", placeholder: "filter titles by name", value: q, id: "filter",
  });
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      location.hash = `#/?q=${encodeURIComponent(filter.value)}`;
    }, 250);
  });
  const modalities = info.modalities;
  const rows = data.titles.map((t) =>
    el("tr", { class: "title-row" },
      el("td", {}, el("a", { href: `#/title/${t.index}`, text: t.title_id })),
      el("td", { text: t.split || "–" }),
      el("td", { class: "num", text: t.shots }),
      el("td", { class: "num", text: clock(t.duration_s) }),
      modalities.map((m) =>
        el("td", { class: "covcell", title: `${m}: ${Math.round(100 * t.coverage[m])}% of shots` },
          el("span", { class: "cov" }, el("span", { style: `width:${100 * t.coverage[m]}%` })),
          ` ${Math.round(100 * t.coverage[m])}%`)),
    ));
  const go = (p) => { location.hash = `#/?q=${encodeURIComponent(q)}&page=${p}`; };
  fill(view,
    el("h1", { text: "Catalog" }),
    el("div", { class: "toolbar" }, filter,
      el("span", { class: "muted", text: `${data.total} of ${info.titles} titles, ${info.shots} shots` })),
    el("table", { id: "catalog-table" },
      el("thead", {}, el("tr", {},
        el("th", { text: "title" }), el("th", { text: "split" }),
        el("th", { class: "num", text: "shots" }), el("th", { class: "num", text: "duration" }),
        modalities.map((m) => el("th", { text: m })))),
      el("tbody", {}, rows)),
    el("div", { class: "pager" },
      el("button", { disabled: data.page <= 1, onclick: () => go(data.page - 1) }, "‹ prev"),
      el("span", { id: "page-info", text: `page ${data.page} of ${data.pages}` }),
      el("button", { disabled: data.page >= data.pages, onclick: () => go(data.page + 1) }, "next ›")),
  );
  if (q) { filter.focus(); filter.setSelectionRange(q.length, q.length); }
}

// -- title ---------------------------------------------------------------------------------
async function showTitle(index, shot) {
  setActive("catalog");
  if (!titleState || titleState.index !== index) {
    const data = await api(`/api/titles/${index}`);
    titleState = { index, data, selected: null };
    renderTitle(data);
  }
  if (shot !== null && shot !== titleState.selected) selectShot(shot, true);
}

function renderTitle(t) {
  const total = t.shots_detail.reduce(
    (sum, s) => sum + Math.max(0.05, (s.end_s ?? 1) - (s.start_s ?? 0)), 0);
  const strip = el("div", { class: "strip", id: "strip" },
    t.shots_detail.map((s) => el("div", {
      style: `flex:${Math.max(0.05, (s.end_s ?? 1) - (s.start_s ?? 0)) / total};background:${s.colour}`,
      title: `shot ${s.shot} ${clock(s.start_s)}–${clock(s.end_s)}`,
      "data-shot": s.shot,
      onclick: () => { location.hash = `#/title/${t.index}/${s.shot}`; },
    })));
  const cards = t.shots_detail.map((s) =>
    el("div", {
      class: "card shot", "data-shot": s.shot,
      onclick: () => { location.hash = `#/title/${t.index}/${s.shot}`; },
    },
      picture(t.index, s.shot, s.thumb, s.colour),
      el("div", { class: "meta" },
        el("span", { text: `#${s.shot}` }),
        el("span", { class: "muted", text: `${clock(s.start_s)}–${clock(s.end_s)}` })),
      s.text ? el("div", { class: "text", text: s.text }) : null));
  const coverage = Object.entries(t.coverage)
    .map(([m, c]) => `${m} ${Math.round(100 * c)}%`).join(", ");
  const player = t.video
    ? el("video", { id: "player", controls: true, preload: "metadata", src: `/media/video/${t.index}` })
    : el("p", { class: "note", id: "video-note", text: `No playback: ${t.video_note}` });
  fill(view,
    el("h1", { id: "title-id", text: t.title_id }),
    el("p", { class: "muted",
      text: `${t.split || "no split"} · ${t.shots} shots · ${clock(t.duration_s)} · ${coverage}` }),
    el("div", { class: "player" }, player, el("div", { id: "now" })),
    t.text_note && info.has_source ? el("p", { class: "note", id: "text-note", text: t.text_note }) : null,
    strip,
    el("div", { class: "shots", id: "shots" }, cards),
    el("section", { id: "neighbours" }),
  );
}

function playShot(s) {
  const video = document.getElementById("player");
  if (!video) return;
  const start = s.start_s ?? 0;
  const end = s.end_s;
  video.ontimeupdate = () => {
    if (end !== null && video.currentTime >= end) {
      video.ontimeupdate = null;
      video.pause();
      video.currentTime = Math.max(start, end - 0.05); // the shot's last frame, not the next shot's first
    }
  };
  video.currentTime = start;
  video.play().catch(() => {}); // a browser may refuse autoplay; the seek still shows the shot
}

function selectShot(shot, scroll) {
  const t = titleState.data;
  const s = t.shots_detail[shot];
  if (!s) { showError(new Error(`shot ${shot} out of range (${t.shots} shots)`)); return; }
  titleState.selected = shot;
  for (const node of document.querySelectorAll("[data-shot]")) {
    node.classList.toggle("selected", Number(node.dataset.shot) === shot);
  }
  fill(document.getElementById("now"),
    el("h2", { text: `Shot ${shot}` }),
    el("p", { text: `${clock(s.start_s)}–${clock(s.end_s)}` }),
    s.text ? el("p", { class: "text", text: `“${s.text}”` }) : el("p", { class: "muted", text: "no text" }),
    el("p", { class: "muted", text: `present: ${s.present.join(", ") || "nothing"}` }));
  playShot(s);
  if (scroll) document.querySelector(`.card[data-shot="${shot}"]`)?.scrollIntoView({ block: "nearest" });
  showNeighbours();
}

const neighbourSettings = { k: 10, method: null, exclude: false };

async function showNeighbours() {
  const t = titleState.data;
  const shot = titleState.selected;
  const section = document.getElementById("neighbours");
  const methods = info.methods;
  if (!neighbourSettings.method || !methods.includes(neighbourSettings.method)) {
    neighbourSettings.method = methods[0];
  }
  const rerun = () => showNeighbours();
  const controls = el("div", { class: "controls" },
    el("label", {}, "k ",
      el("select", { id: "k", onchange: (e) => { neighbourSettings.k = Number(e.target.value); rerun(); } },
        [5, 10, 20, 50].map((k) => el("option", { value: k, selected: k === neighbourSettings.k }, k)))),
    ["context", "concat"].map((m) => el("label", { title: m === "context"
      ? "in-context embeddings (mediafm embed)" : "fused input vectors (no context)" },
      el("input", { type: "radio", name: "method", value: m, id: `method-${m}`,
        checked: neighbourSettings.method === m, disabled: !methods.includes(m),
        onchange: () => { neighbourSettings.method = m; rerun(); } }),
      m === "context" ? " in context" : " concat")),
    el("label", {},
      el("input", { type: "checkbox", id: "exclude-title", checked: neighbourSettings.exclude,
        onchange: (e) => { neighbourSettings.exclude = e.target.checked; rerun(); } }),
      " exclude this title"),
    methods.includes("context") ? null : el("span", { class: "muted", text: "(in context needs --emb)" }));
  fill(section, el("h2", { text: `Neighbours of shot ${shot}` }), controls,
    el("p", { class: "muted", text: "searching…" }));
  let data;
  try {
    data = await api(`/api/neighbours?title=${t.index}&shot=${shot}&k=${neighbourSettings.k}` +
      `&method=${neighbourSettings.method}&exclude_title=${neighbourSettings.exclude}`);
  } catch (err) {
    fill(section, section.firstChild, controls, el("p", { class: "error", text: err.message }));
    return;
  }
  if (titleState?.data !== t || titleState.selected !== shot) return; // a newer click won
  const hits = data.hits.map((h) =>
    el("div", {
      class: "card hit", "data-title": h.title, "data-shot": h.shot,
      onclick: () => { location.hash = `#/title/${h.title}/${h.shot}`; },
    },
      picture(h.title, h.shot, h.thumb, null),
      el("div", { class: "meta" },
        el("span", {}, el("span", { class: "rank", text: `${h.rank}. ` }),
          el("span", { class: "hit-title", text: `${h.title_id} #${h.shot}` })),
        el("span", { class: "score", text: h.score.toFixed(4) })),
      el("div", { class: "muted", text: `${clock(h.start_s)}–${clock(h.end_s)}` }),
      h.text ? el("div", { class: "text", text: h.text }) : null));
  fill(section, section.firstChild, controls,
    el("p", { class: "muted", text: `${data.method} vectors, ${data.engine} search over ${info.shots} shots` +
      (data.note ? ` (${data.note})` : "") }),
    el("div", { class: "hits", id: "hits" }, hits));
}

// -- say it --------------------------------------------------------------------------------
function highlight(line, phrase) {
  const words = new Set(phrase.toLowerCase().match(/[\p{L}\p{N}']+/gu) || []);
  return line.split(/([\p{L}\p{N}']+)/u).map((part) =>
    words.has(part.toLowerCase()) ? el("mark", { text: part }) : part);
}

async function showSay(params) {
  setActive("say");
  titleState = null;
  const q = params.get("q") || "";
  const box = el("input", { type: "text", id: "say-box", value: q,
    placeholder: "a line someone says, e.g. we leave tonight" });
  const form = el("form", { class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/say?q=${encodeURIComponent(box.value)}`;
  } }, box, el("button", { type: "submit", id: "say-go" }, "Find"));
  const results = el("div", { id: "say-results" });
  fill(view, el("h1", { text: "Say it" }),
    el("p", { class: "muted", text: "Finds shots by what is said in them (subtitles or speech)." }),
    info.say ? el("p", { class: "note", text: `Not available: ${info.say}` }) : form, results);
  if (info.say) return;
  box.focus();
  if (!q.trim()) return;
  fill(results, el("p", { class: "muted", text: "searching… (the text encoder loads on the first query)" }));
  let data;
  try {
    data = await api(`/api/say?q=${encodeURIComponent(q)}&k=10`);
  } catch (err) {
    fill(results, el("p", { class: "error", text: err.message }));
    results.dataset.phrase = q;
    return;
  }
  fill(results,
    el("p", { class: "muted", text: `${data.hits.length} shots, ${data.encoder}${data.note ? " (" + data.note + ")" : ""}` }),
    ...data.hits.map((h) => el("div", { class: "say-hit", "data-title": h.title, "data-shot": h.shot },
      picture(h.title, h.shot, h.thumb, null, ""),
      el("div", {},
        el("div", { class: "line" }, highlight(h.text || "", q)),
        el("div", {},
          el("a", { class: "hit-title", href: `#/title/${h.title}/${h.shot}`, text: `${h.title_id} #${h.shot}` }),
          el("span", { class: "muted", text: ` ${clock(h.start_s)}–${clock(h.end_s)} · ` }),
          el("span", { class: "score", text: h.score.toFixed(4) }))))),
  );
  results.dataset.phrase = q; // done: tests and scripts wait for this
}

// -- report --------------------------------------------------------------------------------
async function showReport() {
  setActive("report");
  titleState = null;
  const data = await api("/api/report");
  const tasks = Object.entries(data.tasks);
  const methods = [];
  for (const [, task] of tasks) {
    for (const m of Object.keys(task.results || {})) if (!methods.includes(m)) methods.push(m);
  }
  const rows = tasks.map(([name, task]) => {
    const scores = task.results || {};
    const values = Object.values(scores);
    const best = values.length ? Math.max(...values) : null;
    if (!values.length) {
      return el("tr", {}, el("td", { text: name }), el("td", { text: task.metric }),
        el("td", { colspan: methods.length || 1, class: "muted", text: `skipped: ${task.skipped || ""}` }));
    }
    return el("tr", {}, el("td", { text: name }), el("td", { text: task.metric }),
      methods.map((m) => {
        const v = scores[m];
        if (v === undefined || v === null) return el("td", {});
        const ci = task.ci95?.[m];
        return el("td", { class: "num", title: ci ? `95% interval ${ci[0].toFixed(3)}–${ci[1].toFixed(3)}` : null },
          v === best ? el("strong", { text: v.toFixed(3) }) : v.toFixed(3),
          ci ? el("span", { class: "muted", text: ` (${ci[0].toFixed(3)}–${ci[1].toFixed(3)})` }) : null);
      }));
  });
  fill(view, el("h1", { text: "Report" }),
    el("table", { id: "report-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "task" }), el("th", { text: "metric" }),
        methods.map((m) => el("th", { class: "num", text: m })))),
      el("tbody", {}, rows)),
    el("p", { class: "muted", text: "Bold: best per task. In brackets: 95% interval over resampled test titles." }),
    ...[data.plot ? el("img", { class: "plot", src: "/media/report.png", alt: "report plot" }) : null,
      ...["concat", "title_mean", "novelty"].map((reference) => paired(tasks, reference))].filter(Boolean));
}

function paired(tasks, reference) {
  const rows = [];
  for (const [name, task] of tasks) {
    for (const [method, d] of Object.entries(task[`vs_${reference}`] || {})) {
      const sign = (x) => (x >= 0 ? "+" : "") + x.toFixed(3);
      rows.push(el("tr", {}, el("td", { text: name }), el("td", { text: method }),
        el("td", { class: "num", text: sign(d.delta) }),
        el("td", { class: "num", text: `${sign(d.ci95[0])} to ${sign(d.ci95[1])}` })));
    }
  }
  if (!rows.length) return null;
  return el("div", {},
    el("h2", { text: `Paired differences from ${reference}` }),
    el("table", { class: "paired", id: `paired-${reference}` },
      el("thead", {}, el("tr", {}, el("th", { text: "task" }), el("th", { text: "method" }),
        el("th", { class: "num", text: `minus ${reference}` }), el("th", { class: "num", text: "95% interval" }))),
      el("tbody", {}, rows)));
}

// -- router --------------------------------------------------------------------------------
async function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "title" && /^\d+$/.test(parts[1] || "")) {
      await showTitle(Number(parts[1]), /^\d+$/.test(parts[2] || "") ? Number(parts[2]) : null);
    } else if (parts[0] === "say") await showSay(params);
    else if (parts[0] === "report") await showReport();
    else await showCatalog(params);
  } catch (err) {
    titleState = null;
    showError(err);
  }
}

async function start() {
  try {
    info = await api("/api/info");
  } catch (err) {
    showError(err);
    return;
  }
  document.getElementById("nav-report").hidden = !info.has_report;
  document.getElementById("store-info").textContent =
    `${info.store} · ${info.titles} titles · ${info.shots} shots`;
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "1";
}

start();
