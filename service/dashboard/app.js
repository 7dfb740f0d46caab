// Dvolver dashboard: a single page over the REST API (see notes/api_contract.md).
// Plain ES2020 and plotly.js, no build step: the service serves these files as they are.
"use strict";

(() => {
  const TOKEN_KEY = "dvolver.token";
  const LIST_REFRESH_MS = 3000; // while a search is queued or running
  const LIST_IDLE_REFRESH_MS = 15000; // otherwise, so that new searches show up
  const POLL_MS = 5000; // used only when the event stream is unavailable
  const LIVE_MIN_INTERVAL_MS = 1000;
  const PAGE_SIZE = 50;
  const ACTIVE = new Set(["queued", "running"]);
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  const FRONT_COLOUR = "#2563eb";
  const FINAL_COLOUR = "#ea580c"; // final trainings of found candidates
  const REFERENCE_COLOUR = "#111827"; // final trainings of reference architectures
  const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...flat(children));
    return node;
  }

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setAttrs(node, attrs);
    node.append(...flat(children));
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  // Strings become text nodes, so data from the API is never parsed as HTML.
  function flat(children) {
    return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
      .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  }

  const $ = (selector, root = document) => root.querySelector(selector);
  const fill = (node, ...children) => node.replaceChildren(...flat(children));

  function showMessage(text) {
    const box = $("#message");
    box.textContent = text;
    box.hidden = false;
  }

  function hideMessage() {
    $("#message").hidden = true;
  }

  // ---------------------------------------------------------------- API and token

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const getToken = () => localStorage.getItem(TOKEN_KEY) || "";
  const authHeaders = () => (getToken() ? { Authorization: `Bearer ${getToken()}` } : {});

  async function errorText(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    } catch (_) {
      // not JSON: fall through to the status line
    }
    return `${response.status} ${response.statusText}`;
  }

  async function api(path) {
    for (;;) {
      const response = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() } });
      if (response.status === 401) {
        const reason = getToken()
          ? "The saved token was refused; enter another."
          : "This service needs a token to show searches.";
        if ((await askForToken(reason)) !== "save") throw new ApiError(401, "A token is needed to see this page.");
        if (path !== "/whoami") showWhoami();
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, await errorText(response));
      return response.json();
    }
  }

  // Several requests may hit 401 at once: they share one prompt.
  let tokenPrompt = null;

  function askForToken(reason) {
    if (tokenPrompt) return tokenPrompt;
    const dialog = $("#token-dialog");
    const input = $("#token-input");
    $("#token-reason").textContent = reason;
    input.value = getToken();
    tokenPrompt = new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        tokenPrompt = null;
        const choice = dialog.returnValue;
        if (choice === "save" && input.value.trim()) localStorage.setItem(TOKEN_KEY, input.value.trim());
        else if (choice === "clear") localStorage.removeItem(TOKEN_KEY);
        resolve(choice === "save" && input.value.trim() ? "save" : choice || "cancel");
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
    return tokenPrompt;
  }

  async function showWhoami() {
    const box = $("#whoami");
    try {
      const me = await api("/whoami");
      box.textContent = me.owner ? `signed in as ${me.owner}` : me.open_reads ? "anonymous (open reads)" : "anonymous";
    } catch (_) {
      box.textContent = "";
    }
  }

  // Links cannot carry an Authorization header, so with a token the file is fetched and saved as a blob.
  async function download(url, fallbackName) {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename\*?=(?:UTF-8'')?"?([^";]+)"?/i);
    const href = URL.createObjectURL(await response.blob());
    const link = el("a", { href, download: match ? decodeURIComponent(match[1]) : fallbackName, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  }

  // ---------------------------------------------------------------- formatting

  const DEFAULT_INFO = { direction: "min", unit: "", label: "", cost: true };
  // The API's labels are one-line descriptions; axes and menus need a word.
  const SHORT_NAMES = { acc: "accuracy", flops: "FLOPs", macs: "MACs", params: "parameters", latency: "latency" };
  const shortName = (name, info) => SHORT_NAMES[name] || info.label || name;

  function infoOf(detail, name) {
    const info = (detail.objective_info || {})[name];
    if (info) return info;
    if (name === "acc") return { direction: "max", unit: "%", label: "accuracy", cost: false };
    return { ...DEFAULT_INFO, label: name };
  }

  // 3 significant digits and an SI prefix: "1.23 MFLOPs", "17.7 k params".
  function si(value, unit) {
    const abs = Math.abs(value);
    const [scale, prefix] = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]].find(([s]) => abs >= s) || [1, ""];
    const number = trim((value / scale).toPrecision(3));
    if (!unit) return prefix ? `${number} ${prefix}` : number;
    return /^[A-Z]/.test(unit) ? `${number} ${prefix}${unit}` : `${number} ${prefix ? `${prefix} ` : ""}${unit}`;
  }

  const trim = (text) => (text.includes("e") ? text : text.replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, ""));

  // Accuracy is stored in percent by the engine; "fraction" is accepted too in case the API reports it so.
  function percent(value, info) {
    return `${(info.unit === "fraction" ? value * 100 : value).toFixed(2)} %`;
  }

  function formatObjective(name, value, info) {
    if (typeof value !== "number" || Number.isNaN(value)) return "—";
    if (name === "acc" || info.unit === "%" || info.unit === "fraction") return percent(value, info);
    if (info.unit === "ms") return `${trim(value.toPrecision(3))} ms`;
    return si(value, info.unit);
  }

  function axisTitle(name, info) {
    const label = shortName(name, info);
    if (name === "acc" || info.unit === "fraction") return `${label} (%)`;
    return info.unit && !label.toLowerCase().startsWith(info.unit.toLowerCase()) ? `${label} (${info.unit})` : label;
  }

  function duration(seconds) {
    if (typeof seconds !== "number") return "—";
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const hv = (value) => (typeof value === "number" ? value.toFixed(4) : "—");
  const badge = (status) => el("span", { class: `badge status-${status}` }, status);

  // Two hypervolumes: the engine's own, normalised by a search's first generation (it follows that
  // search's progress but not comparable between searches), and the API's shared one, which is.
  const SHARED_HV_TITLE = "Hypervolume of the search's front on a reference point shared by every search of the "
    + "same space, data and objectives: per objective the worst value any of their feasible candidates reached, "
    + "padded by 10 % of the range. Shown as the share (0 to 1) of the box from the best values to that point that "
    + "the front dominates, so searches of one problem compare.";
  const OWN_HV_TITLE = "Hypervolume normalised by the range of this search's own first generation (reference 1.1): "
    + "it follows this search's progress, but does not compare with other searches; see HV (shared ref.).";

  function sharedHvTitle(shared, detail) {
    if (!shared) return `${SHARED_HV_TITLE}\nNo feasible candidate yet.`;
    const one = ([name, value]) => {
      const info = infoOf(detail, name);
      return `${shortName(name, info)} ${formatObjective(name, value, info)}`;
    };
    const point = (values) => Object.entries(values).map(one).join(", ");
    return `${SHARED_HV_TITLE}\nReference: ${point(shared.reference)}; best: ${point(shared.ideal)}.`
      + `\nShared by ${shared.searches.map((id) => `#${id}`).join(", ")}.`;
  }

  const sharedHv = (shared, detail) => el("span", { class: "shared-hv", title: sharedHvTitle(shared, detail) },
    hv(shared?.value));

  function progressBar(progress) {
    const { evaluations = 0, budget = 0 } = progress || {};
    return el("span", { class: "progress" },
      el("progress", { max: Math.max(budget, 1), value: evaluations,
        "aria-label": `${evaluations} of ${budget} evaluations` }),
      el("span", { class: "muted" }, `${evaluations} / ${budget}`));
  }

  // ---------------------------------------------------------------- Pareto helpers

  // The points endpoint's front is non-dominated over all the search's objectives; on two chosen axes
  // only part of it may be, and the staircase is drawn through that part.
  function front2d(points, xDir, yDir) {
    const better = (a, b, dir) => (dir === "max" ? a > b : a < b);
    const first = (a, b) => (a.x === b.x ? better(a.y, b.y, yDir) : better(a.x, b.x, xDir));
    const sorted = [...points].sort((a, b) => (first(a, b) ? -1 : 1));
    const kept = [];
    for (const p of sorted) {
      if (!kept.length || better(p.y, kept[kept.length - 1].y, yDir)) kept.push(p);
    }
    return kept.sort((a, b) => a.x - b.x);
  }

  // Between two front points the attainable boundary keeps the y of the point that is still available.
  const stairShape = (xDir) => (xDir === "max" ? "vh" : "hv");

  function axisLayout(name, info) {
    const type = info.cost ? "log" : "linear";
    return { title: { text: axisTitle(name, info) }, type, zeroline: false, automargin: true };
  }

  function plotLayout(xName, xInfo, yName, yInfo, extra = {}) {
    return {
      margin: { l: 64, r: 16, t: 8, b: 48 },
      hovermode: "closest",
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
      xaxis: axisLayout(xName, xInfo),
      yaxis: axisLayout(yName, yInfo),
      ...extra,
    };
  }

  // Plotly reads trace names and hover text as a little HTML: names from the API are escaped first.
  const plotText = (text) => String(text).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

  function hoverTexts(points, search, xName, xInfo, yName, yInfo) {
    return points.map((p) => `${search ? `${search} · ` : ""}candidate #${p.id}<br>${shortName(xName, xInfo)}: `
      + `${formatObjective(xName, p.x, xInfo)}<br>${shortName(yName, yInfo)}: ${formatObjective(yName, p.y, yInfo)}`);
  }

  // ---------------------------------------------------------------- view lifetime

  // plotly-basic.min.js is still a megabyte of script: it loads after this file, so that data requests
  // and its compilation overlap. Anything that plots waits for it.
  const plotlyReady = new Promise((resolve, reject) => {
    if (window.Plotly) return resolve(window.Plotly);
    const script = $("#plotly-script");
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error(`${script.src} could not be loaded`)));
  });
  plotlyReady.catch(() => {}); // reported by the view that needs it, not as an unhandled rejection

  // Everything a view starts (timers, event streams, plots) is stopped when the route changes.
  class ViewContext {
    constructor() {
      this.alive = true;
      this.cleanups = [];
    }

    onDispose(fn) {
      this.cleanups.push(fn);
    }

    later(ms, fn) {
      const timer = setTimeout(() => this.alive && Promise.resolve().then(fn).catch(report), ms);
      this.onDispose(() => clearTimeout(timer));
      return () => clearTimeout(timer);
    }

    async plot(div, traces, layout) {
      await plotlyReady;
      if (!this.alive) return;
      if (!div.dataset.plotted) {
        div.dataset.plotted = "1";
        // Plotly follows window resizes only; the candidate panel opening narrows the plots too. The
        // size plotly is about to draw at is the baseline, not the observer's first report: a panel
        // opened before that report (a link to a candidate) narrows the plot all the same.
        const drawn = div.getBoundingClientRect();
        let size = { width: drawn.width, height: drawn.height };
        const observer = new ResizeObserver(([entry]) => {
          const { width, height } = entry.contentRect;
          if (size.width !== width || size.height !== height) {
            requestAnimationFrame(() => this.alive && Plotly.Plots.resize(div));
          }
          size = { width, height };
        });
        observer.observe(div);
        this.onDispose(() => {
          observer.disconnect();
          Plotly.purge(div); // frees the WebGL contexts, of which a page gets few
        });
      }
      await Plotly.react(div, traces, layout, PLOT_CONFIG);
    }

    dispose() {
      this.alive = false;
      for (const fn of this.cleanups.splice(0)) {
        try {
          fn();
        } catch (_) {
          // a failing cleanup must not keep the next view from starting
        }
      }
    }
  }

  function report(error) {
    console.warn(error);
    showMessage(error.message || String(error));
  }

  // At most one call of `fn` per `ms`, never two at once; calls in between are merged into one.
  function throttle(fn, ms) {
    let timer = null;
    let last = 0;
    let busy = false;
    let again = false;
    const schedule = () => {
      if (timer) return;
      timer = setTimeout(async () => {
        timer = null;
        if (busy) {
          again = true;
          return;
        }
        busy = true;
        last = Date.now();
        try {
          await fn();
        } catch (error) {
          report(error);
        } finally {
          busy = false;
          if (again) {
            again = false;
            schedule();
          }
        }
      }, Math.max(0, last + ms - Date.now()));
    };
    schedule.cancel = () => clearTimeout(timer);
    return schedule;
  }

  // ---------------------------------------------------------------- list of searches

  async function listView(root, ctx) {
    const selected = new Set();
    const rows = new Map();
    let offset = 0;
    let loads = 0; // a page turn makes the answers of earlier requests stale
    let cancelNext = () => {};

    const compare = el("button", { type: "button", id: "compare-button", class: "primary", disabled: true,
      onclick: () => { location.hash = `#/compare?ids=${[...selected].join(",")}`; } }, "Compare");
    const tbody = el("tbody");
    const empty = el("p", { class: "muted", hidden: true }, "No searches yet. Start one with ",
      el("code", {}, "dvolver search"), " or POST /searches.");
    const pager = el("div", { class: "pager" });
    root.append(el("section", { class: "card" },
      el("div", { class: "toolbar" }, el("h1", {}, "Searches"), compare),
      el("div", { class: "table-scroll" }, el("table", { id: "search-list", class: "grid" },
        el("thead", {}, el("tr", {}, [["", null], ["ID"], ["Name"], ["Owner"], ["Status"], ["Space"], ["Objectives"],
          ["Progress"], ["Front"], ["HV (shared ref.)", SHARED_HV_TITLE], ["Created"]].map(([t, title], i) => el("th",
          { scope: "col", class: i ? null : "narrow", title }, t)))),
        tbody)),
      empty, pager));

    const updateCompare = () => {
      compare.disabled = selected.size < 2;
      compare.title = selected.size < 2 ? "Select two or more searches to compare their fronts" : "";
    };

    function row(s) {
      const box = el("input", { type: "checkbox", "aria-label": `Select search ${s.id}`, checked: selected.has(s.id) });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(s.id);
        else selected.delete(s.id);
        updateCompare();
      });
      const p = s.progress || {};
      return el("tr", { "data-search-id": s.id, "data-status": s.status },
        el("td", {}, box),
        el("td", {}, el("a", { href: `#/searches/${s.id}` }, `#${s.id}`)),
        el("td", {}, el("a", { href: `#/searches/${s.id}` }, s.name || `search ${s.id}`)),
        el("td", {}, s.owner || el("span", { class: "muted" }, "—")),
        el("td", {}, badge(s.status)),
        el("td", {}, s.space),
        el("td", {}, (s.objectives || []).join(", ")),
        el("td", {}, progressBar(p)),
        el("td", { class: "num" }, p.front_size ?? "—"),
        el("td", { class: "num" }, sharedHv(s.shared_hypervolume, s)),
        el("td", { class: "muted" }, when(s.created_at)));
    }

    async function load() {
      const mine = ++loads;
      cancelNext();
      const page = await api(`/searches?limit=${PAGE_SIZE}&offset=${offset}`);
      if (!ctx.alive || mine !== loads) return;
      // Rows are replaced only when they changed, so focus and checkboxes survive the auto-refresh.
      const seen = new Set();
      page.items.forEach((s, i) => {
        seen.add(s.id);
        const json = JSON.stringify(s);
        const old = rows.get(s.id);
        if (old && old.json === json && tbody.children[i] === old.tr) return;
        const tr = row(s);
        if (old) old.tr.replaceWith(tr);
        tbody.insertBefore(tr, tbody.children[i] || null);
        rows.set(s.id, { tr, json });
      });
      for (const [id, { tr }] of rows) {
        if (!seen.has(id)) {
          tr.remove();
          rows.delete(id);
        }
      }
      empty.hidden = page.total > 0;
      renderPager(page);
      const active = page.items.some((s) => ACTIVE.has(s.status));
      cancelNext = ctx.later(active ? LIST_REFRESH_MS : LIST_IDLE_REFRESH_MS, load);
    }

    function renderPager(page) {
      const go = (to) => () => {
        offset = to;
        load().catch(report);
      };
      fill(pager, page.total > page.limit ? [
        el("button", { type: "button", disabled: offset === 0, onclick: go(Math.max(0, offset - PAGE_SIZE)) }, "Newer"),
        el("span", { class: "muted" }, `${offset + 1}–${offset + page.items.length} of ${page.total}`),
        el("button", { type: "button", disabled: offset + page.items.length >= page.total,
          onclick: go(offset + PAGE_SIZE) }, "Older"),
      ] : []);
    }

    await load();
  }

  // ---------------------------------------------------------------- final trainings

  // Where a final training holds each objective, measured on its network at the final scale (as
  // dvolver/rank_survival.py's FINAL_VALUES): accuracy is the test split's, costs the final network's.
  const FINAL_VALUES = { acc: "test_acc", flops: "flops", macs: "macs", params: "params", latency: "latency_ms" };
  // The reference architectures the service knows by name (dvolver.trainings.REFERENCES, the genome being
  // search_spaces/nasnet.py's NASNET_A): the API gives a reference's genome, not its name.
  const REFERENCE_NAMES = {
    nasnet: { "0,1,1,0,1,1,1,0,0,3,1,5,1,3,1,3,0,0,0,5,2,0,1,1,2,0,4,1,2,0,3,1,1,3,5,2,3,2,0,0,4,8": "NASNet-A" },
  };

  function referenceName(t) {
    const name = typeof t.reference === "string" ? t.reference : REFERENCE_NAMES[t.space]?.[(t.genome || []).join(",")];
    return name ? `${name} (reference)` : `reference #${t.id}`;
  }

  const networkName = (t) => (t.candidate_id === null ? referenceName(t) : `candidate #${t.candidate_id}`);

  // An objective's value for the final network, in the plot axis's units; null where it is not measured there.
  function finalValue(t, name, info) {
    const value = t[FINAL_VALUES[name]];
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    if (info.cost && value <= 0) return null; // a cost axis is logarithmic
    return name === "acc" && info.unit === "fraction" ? value / 100 : value;
  }

  // A candidate's proxy value on an axis, where the plot can draw it.
  function proxyValue(objectives, name, info) {
    const value = objectives?.[name];
    return typeof value === "number" && Number.isFinite(value) && !(info.cost && value <= 0) ? value : null;
  }

  // What a final point's coordinate is: "test accuracy", "FLOPs at final scale".
  const finalAxisName = (name, info) => (name === "acc" ? "test accuracy" : `${shortName(name, info)} at final scale`);

  const correlation = (value) => (typeof value === "number" ? value.toFixed(3) : "—");
  const accText = (value) => (typeof value === "number" ? percent(value, {}) : "—");
  const mflops = (flops) => (typeof flops === "number" ? trim((flops / 1e6).toPrecision(3)) : "—");

  // The finished trainings in the front plot: each found network's final point (test accuracy, costs
  // measured on the final network) joined by a dotted line to its proxy point, and the reference
  // architectures as labelled stars. Nothing where an axis is not measured on the final networks.
  function trainingTraces(trainings, proxies, x, xi, y, yi) {
    const placed = trainings.filter((t) => t.status === "finished")
      .map((t) => ({ t, x: finalValue(t, x, xi), y: finalValue(t, y, yi) }))
      .filter((p) => p.x !== null && p.y !== null);
    if (!placed.length) return [];
    const what = [[x, xi], [y, yi]].sort(([a], [b]) => (b === "acc") - (a === "acc"))
      .map(([name, info]) => finalAxisName(name, info)).join(", ");
    const hover = (p) => {
      const t = p.t;
      const proxy = t.candidate_id === null ? null : proxies.get(t.candidate_id);
      const lines = [`training #${t.id} · ${networkName(t)}`,
        `${finalAxisName(x, xi)}: ${formatObjective(x, p.x, xi)}`,
        `${finalAxisName(y, yi)}: ${formatObjective(y, p.y, yi)}`,
        `final validation accuracy: ${accText(t.val_acc)}`];
      if (proxy) {
        lines.push(`proxy: ${shortName(x, xi)} ${formatObjective(x, proxy[x], xi)}, `
          + `${shortName(y, yi)} ${formatObjective(y, proxy[y], yi)}`);
      }
      return lines.map(plotText).join("<br>");
    };
    const found = placed.filter((p) => p.t.candidate_id !== null);
    const references = placed.filter((p) => p.t.candidate_id === null);
    const links = found.map((p) => {
      const proxy = proxies.get(p.t.candidate_id);
      return { p, px: proxyValue(proxy, x, xi), py: proxyValue(proxy, y, yi) };
    }).filter((l) => l.px !== null && l.py !== null);
    const traces = [];
    if (links.length) {
      traces.push({ type: "scatter", mode: "lines", name: "proxy → final (same network)",
        x: links.flatMap((l) => [l.px, l.p.x, null]), y: links.flatMap((l) => [l.py, l.p.y, null]),
        hoverinfo: "skip", line: { color: FINAL_COLOUR, width: 1.2, dash: "dot" } });
    }
    if (found.length) {
      traces.push({ type: "scatter", mode: "markers", name: plotText(`final training (${what})`),
        x: found.map((p) => p.x), y: found.map((p) => p.y), customdata: found.map((p) => p.t.candidate_id),
        meta: { trainings: found.map((p) => p.t.id) }, text: found.map(hover),
        hovertemplate: "%{text}<extra>final</extra>",
        marker: { color: FINAL_COLOUR, symbol: "diamond", size: 11, line: { color: "#ffffff", width: 1 } } });
    }
    if (references.length) {
      traces.push({ type: "scatter", mode: "markers+text", name: plotText(`reference (${what})`),
        x: references.map((p) => p.x), y: references.map((p) => p.y),
        meta: { trainings: references.map((p) => p.t.id) }, text: references.map((p) => plotText(referenceName(p.t))),
        hovertext: references.map(hover), hovertemplate: "%{hovertext}<extra>reference</extra>",
        textposition: "bottom center", textfont: { size: 11, color: REFERENCE_COLOUR }, cliponaxis: false,
        marker: { color: REFERENCE_COLOUR, symbol: "star", size: 13, line: { color: "#ffffff", width: 1 } } });
    }
    return traces;
  }

  // Each final training's marker carries its training's id, so the drawn SVG tells them apart.
  function tagTrainingPoints(div) {
    for (const layer of div.querySelectorAll(".scatterlayer .trace")) {
      const ids = layer.__data__?.[0]?.trace?.meta?.trainings;
      if (!Array.isArray(ids)) continue;
      layer.querySelectorAll("path.point").forEach((point, i) => {
        if (ids[i] !== undefined) point.setAttribute("data-training-id", String(ids[i]));
      });
    }
  }

  function trainingStatus(t) {
    const running = t.status === "running" || (ACTIVE.has(t.status) && t.epoch > 0);
    return [badge(t.status),
      running ? el("span", { class: "progress epochs" },
        el("progress", { max: Math.max(t.epochs, 1), value: t.epoch,
          "aria-label": `training #${t.id}: ${t.epoch} of ${t.epochs} epochs` }),
        el("span", { class: "muted" }, `epoch ${t.epoch} / ${t.epochs}`)) : null,
      t.cancel_requested && ACTIVE.has(t.status) ? el("span", { class: "muted" }, " cancelling") : null,
      t.error ? el("div", { class: "error training-error", title: t.error },
        t.error.length > 140 ? `${t.error.slice(0, 140)}…` : t.error) : null];
  }

  function rankLine(s) {
    const n = s.pairs.length;
    const over = `over ${n} retrained candidate${n === 1 ? "" : "s"}`;
    if (typeof s.kendall_tau_test === "number") {
      return el("p", { id: "rank-correlation" },
        `Kendall tau (proxy vs final test): ${correlation(s.kendall_tau_test)}, `
          + `Spearman rho: ${correlation(s.spearman_rho_test)} ${over}`,
        el("span", { class: "muted" }, ` · on the validation split: tau ${correlation(s.kendall_tau_val)}, `
          + `rho ${correlation(s.spearman_rho_val)}`));
    }
    if (n < 2) {
      return el("p", { id: "rank-correlation", class: "muted" }, "The rank correlation of proxy and final accuracy "
        + `needs at least two finished retrained candidates (${n} so far).`);
    }
    return el("p", { id: "rank-correlation", class: "muted" }, `Kendall tau and Spearman rho are undefined ${over}: `
      + "their proxy or their final test accuracies are all tied.");
  }

  const FINAL_FRONT_TITLE = "The front of the final networks: test accuracy and the search's cost objectives "
    + "measured at the final scale, reference architectures included.";

  function fellOffLine(s, candidateButton) {
    if (!s.pairs.length) return null;
    const retrained = s.proxy_front.filter((c) => !s.not_retrained.includes(c));
    const notRetrained = s.not_retrained.length
      ? el("span", { class: "muted" }, ` · ${s.not_retrained.length} of ${s.proxy_front.length} proxy-front `
        + `member${s.proxy_front.length === 1 ? "" : "s"} not retrained`) : null;
    if (s.fell_off.length) {
      return el("p", { id: "fell-off", title: FINAL_FRONT_TITLE }, "Fell off the final front: ",
        s.fell_off.map((c, i) => [i ? ", " : "", candidateButton(c)]),
        el("span", { class: "muted" }, " (on the proxy front, not on the front of the final networks)"), notRetrained);
    }
    return el("p", { id: "fell-off", title: FINAL_FRONT_TITLE }, retrained.length
      ? "Every retrained proxy-front member is on the final front." : "No proxy-front member is retrained yet.",
    notRetrained);
  }

  // ---------------------------------------------------------------- one search

  function defaultAxes(detail) {
    const objectives = detail.objectives || [];
    const x = objectives.find((o) => infoOf(detail, o).cost) || objectives[0];
    const y = objectives.includes("acc") && x !== "acc" ? "acc" : objectives.find((o) => o !== x) || x;
    return { x, y };
  }

  function axisSelect(id, label, objectives, detail, value, onChange) {
    const select = el("select", { id }, objectives.map((o) => el("option",
      { value: o, selected: o === value, title: infoOf(detail, o).label }, shortName(o, infoOf(detail, o)))));
    select.addEventListener("change", () => onChange(select.value));
    return el("label", { class: "axis-select" }, `${label} `, select);
  }

  async function searchView(root, ctx, id, params) {
    const base = `/searches/${id}`;
    const state = { detail: await api(base), points: null, history: null, selected: null, historyIndex: null,
      trainings: [], trainingsTotal: 0, survival: null, proxies: new Map() };
    if (!ctx.alive) return;
    Object.assign(state, defaultAxes(state.detail));

    const head = el("section", { class: "card search-head" });
    const frontPlot = el("div", { id: "front-plot", class: "plot", "data-testid": "front-plot" });
    const frontCount = el("span", { id: "front-count" }, "0");
    const decimation = el("span", { id: "dominated-note", class: "muted" });
    const frontTable = el("tbody");
    const axes = el("div", { class: "axes" });
    const hvPlot = el("div", { id: "hv-plot", class: "plot small", "data-testid": "hv-plot" });
    const hvEmpty = el("p", { class: "muted", hidden: true }, "No hypervolume recorded yet.");
    const slider = el("input", { id: "history-slider", type: "range", min: 0, max: 0, value: 0, step: 1 });
    const sliderText = el("output", { for: "history-slider", id: "history-label" });
    const historyPlot = el("div", { id: "history-plot", class: "plot small", "data-testid": "history-plot" });
    // Final trainings: hidden while the search has none.
    const trainingsSection = el("section", { id: "trainings", class: "card trainings", hidden: true,
      "aria-labelledby": "trainings-title", "data-testid": "trainings" });
    const trainingsRows = el("tbody");
    const trainingsFacts = el("div");
    const trainingsPlotNote = el("p", { id: "trainings-plot-note", class: "muted", hidden: true });
    const trainingsMore = el("p", { class: "muted", hidden: true });
    const trainingsCount = el("span", { class: "muted", id: "trainings-count" });
    const panel = el("aside", { id: "candidate-panel", class: "card panel", "data-testid": "candidate-panel",
      "aria-label": "Candidate details", tabindex: -1, hidden: true });

    const th = (text, id) => el("th", { scope: "col", id }, text);
    const frontSection = el("section", { class: "card" },
      el("div", { class: "toolbar" }, el("h2", {}, "Pareto front"), axes),
      el("p", { class: "plot-note" }, frontCount, " non-dominated points", " · ", decimation),
      frontPlot,
      el("details", { id: "front-table" }, el("summary", {}, "Front as a table"),
        el("div", { class: "table-scroll" }, el("table", { class: "grid compact" },
          el("thead", {}, el("tr", {}, th("Candidate"), th("", "front-x"), th("", "front-y"))), frontTable))));
    const trainingsHeads = [["Training"], ["Network"], ["Status"],
      ["Proxy acc", "the candidate's validation accuracy in the search, at the proxy's scale"],
      ["Final val acc", "validation accuracy after the last epoch trained, at the final scale"],
      ["Final test acc", "test-split accuracy of the finished final network"],
      ["MFLOPs", "millions of FLOPs (2 × MACs) of the final network, at the final scale"],
      ["Params", "parameters of the final network"], ["Final weights"]];
    trainingsSection.append(
      el("div", { class: "toolbar" }, el("h2", { id: "trainings-title" }, "Final trainings"), trainingsCount),
      el("p", { class: "plot-note" }, "Found networks retrained at their final scale. In the front plot their "
        + "final points are at the test accuracy and the costs measured on the final networks (final scale), "
        + "joined by a dotted line to the same network's proxy point."),
      trainingsFacts, trainingsPlotNote,
      el("div", { class: "table-scroll" }, el("table", { id: "trainings-table", class: "grid compact" },
        el("thead", {}, el("tr", {}, trainingsHeads.map(([text, title]) => el("th", { scope: "col", title }, text)))),
        trainingsRows)),
      trainingsMore);
    const hvSection = el("section", { class: "card" },
      el("h2", { title: OWN_HV_TITLE }, "Hypervolume over evaluations"),
      el("p", { class: "plot-note muted" }, "normalised by this search's first generation: follows its progress, "
        + "does not compare between searches"),
      hvPlot, hvEmpty);
    const historySection = el("section", { class: "card" }, el("h2", {}, "Front evolution"),
      el("label", { for: "history-slider", class: "slider-label" }, "Generation"), slider, sliderText, historyPlot);
    root.append(head, el("div", { class: "search-body" },
      el("div", { class: "plots" }, frontSection, trainingsSection,
        el("div", { class: "two-up" }, hvSection, historySection)),
      panel));

    function renderHead() {
      const d = state.detail;
      const t = d.timings || {};
      fill(head,
        el("div", { class: "toolbar" },
          el("h1", {}, `Search #${d.id}`, d.name ? ` — ${d.name}` : ""), badge(d.status), progressBar(d.progress)),
        el("dl", { class: "facts" },
          fact("Space", d.space), fact("Dataset", d.dataset), fact("Objectives", (d.objectives || []).join(", ")),
          fact("Owner", d.owner || "—"), fact("Front size", d.progress?.front_size ?? "—"),
          d.spec?.early_stopping && d.spec.early_stopping.method !== "none"
            ? fact("Training epochs", epochsText(d.progress)) : null,
          fact("HV (shared ref.)", sharedHv(d.shared_hypervolume, d)),
          fact("HV (own ref.)", el("span", { title: OWN_HV_TITLE }, hv(d.progress?.hypervolume))),
          fact("Created", when(d.created_at)),
          fact("Queued for", duration(t.queued_seconds)), fact("Running for", duration(t.running_seconds)),
          fact("Finished", when(d.finished_at))),
        d.error ? el("p", { class: "error" }, d.error) : null);
    }

    function epochsText(p) {
      if (!p || !p.full_fidelity_epochs) return "—";
      const share = Math.round(100 * p.training_epochs / p.full_fidelity_epochs);
      return `${p.training_epochs.toLocaleString()} of ${p.full_fidelity_epochs.toLocaleString()} at full fidelity`
        + ` (${share} %)`;
    }

    function renderAxes() {
      const objectives = state.detail.objectives || [];
      const choose = (which) => (value) => {
        const other = which === "x" ? "y" : "x";
        if (state[other] === value) state[other] = state[which]; // picking the other axis swaps them
        state[which] = value;
        renderAxes();
        loadPoints().catch(report);
      };
      axes.replaceChildren(axisSelect("x-axis", "x", objectives, state.detail, state.x, choose("x")),
        axisSelect("y-axis", "y", objectives, state.detail, state.y, choose("y")));
    }

    async function loadPoints() {
      const { x, y } = state;
      const points = await api(`${base}/points?x=${encodeURIComponent(x)}&y=${encodeURIComponent(y)}`);
      if (!ctx.alive || x !== state.x || y !== state.y) return;
      state.points = points;
      await drawFront();
      await drawHistory();
    }

    async function drawFront() {
      const { points, detail, x, y } = state;
      const xi = infoOf(detail, x);
      const yi = infoOf(detail, y);
      const stair = front2d(points.front, xi.direction, yi.direction);
      const chosen = [...points.front, ...points.dominated].filter((p) => p.id === state.selected);
      // SVG, not WebGL: the server sends at most a few thousand points (dominated ones decimated),
      // which SVG draws several times faster than a software WebGL context starts up.
      const traces = [
        { type: "scatter", mode: "markers", name: "dominated", x: points.dominated.map((p) => p.x),
          y: points.dominated.map((p) => p.y), customdata: points.dominated.map((p) => p.id),
          text: hoverTexts(points.dominated, "", x, xi, y, yi), hovertemplate: "%{text}<extra>dominated</extra>",
          marker: { color: "#a8adb7", size: 5, opacity: 0.7 } },
        { type: "scatter", mode: "lines", name: "front line", x: stair.map((p) => p.x), y: stair.map((p) => p.y),
          line: { color: FRONT_COLOUR, width: 1.5, shape: stairShape(xi.direction) }, hoverinfo: "skip",
          showlegend: false },
        { type: "scatter", mode: "markers", name: "Pareto front", x: points.front.map((p) => p.x),
          y: points.front.map((p) => p.y), customdata: points.front.map((p) => p.id),
          text: hoverTexts(points.front, "", x, xi, y, yi), hovertemplate: "%{text}<extra>front</extra>",
          marker: { color: FRONT_COLOUR, size: 9, line: { color: "#ffffff", width: 1 } } },
        ...trainingTraces(state.trainings, state.proxies, x, xi, y, yi),
        { type: "scatter", mode: "markers", name: "selected", x: chosen.map((p) => p.x), y: chosen.map((p) => p.y),
          hoverinfo: "skip", showlegend: false,
          marker: { color: "rgba(0,0,0,0)", size: 18, line: { color: "#f59e0b", width: 3 } } },
      ];
      // uirevision keeps the user's zoom across live refreshes until the axes change.
      await ctx.plot(frontPlot, traces, plotLayout(x, xi, y, yi, { uirevision: `${x}/${y}` }));
      if (!ctx.alive) return;
      tagTrainingPoints(frontPlot);
      renderTrainingsPlotNote();
      frontCount.textContent = String(points.front.length);
      decimation.textContent = points.dominated_shown < points.dominated_total
        ? `showing ${points.dominated_shown} of ${points.dominated_total} dominated points`
        : `${points.dominated_total} dominated points`;
      renderFrontTable(xi, yi);
      if (window.dvolverFrontDrawnAt === undefined) {
        // Stamped after the next paint, so the benchmark measures what a user sees.
        requestAnimationFrame(() => { window.dvolverFrontDrawnAt = performance.now(); });
      }
    }

    function renderFrontTable(xi, yi) {
      $("#front-x").textContent = axisTitle(state.x, xi);
      $("#front-y").textContent = axisTitle(state.y, yi);
      frontTable.replaceChildren(...state.points.front.map((p) => el("tr", {},
        el("td", {}, el("button", { type: "button", class: "link-button", onclick: () => openCandidate(p.id) },
          `#${p.id}`)),
        el("td", { class: "num" }, formatObjective(state.x, p.x, xi)),
        el("td", { class: "num" }, formatObjective(state.y, p.y, yi)))));
    }

    async function drawHypervolume() {
      const history = state.detail.hypervolume_history || [];
      hvEmpty.hidden = history.length > 0;
      hvPlot.hidden = history.length === 0;
      if (!history.length) return;
      await ctx.plot(hvPlot, [{ type: "scatter", mode: "lines+markers", name: "hypervolume",
        x: history.map((h) => h[0]), y: history.map((h) => h[1]), line: { color: FRONT_COLOUR },
        marker: { size: 5 }, hovertemplate: "%{x} evaluations<br>HV %{y:.4f}<extra></extra>" }],
      { margin: { l: 56, r: 16, t: 8, b: 44 }, showlegend: false,
        xaxis: { title: { text: "evaluations" }, zeroline: false },
        yaxis: { title: { text: "hypervolume" }, zeroline: false },
        uirevision: "hv" });
    }

    async function drawHistory() {
      const generations = state.history?.generations || [];
      if (!generations.length || !state.points) {
        slider.disabled = true;
        sliderText.textContent = state.history ? "No generation recorded yet." : "Loading the history…";
        return;
      }
      const last = generations.length - 1;
      // Follow the newest generation unless the user has moved the slider back.
      const followLatest = state.historyIndex === null || state.historyIndex >= Number(slider.max);
      slider.max = String(last);
      slider.disabled = false;
      state.historyIndex = followLatest ? last : Math.min(state.historyIndex, last);
      slider.value = String(state.historyIndex);
      const g = generations[state.historyIndex];
      sliderText.textContent = `${state.historyIndex + 1} of ${generations.length} · ${g.evaluations} evaluations`
        + ` · front ${g.front.length} · HV ${hv(g.hypervolume)}`;
      const { x, y, detail } = state;
      const xi = infoOf(detail, x);
      const yi = infoOf(detail, y);
      const pts = g.front.filter((c) => typeof c.objectives?.[x] === "number" && typeof c.objectives?.[y] === "number")
        .map((c) => ({ id: c.id, x: c.objectives[x], y: c.objectives[y] }));
      const stair = front2d(pts, xi.direction, yi.direction);
      const current = front2d(state.points.front, xi.direction, yi.direction);
      await ctx.plot(historyPlot, [
        { type: "scatter", mode: "lines", name: "current front", x: current.map((p) => p.x), y: current.map((p) => p.y),
          line: { color: "#c7cbd3", width: 2, dash: "dot", shape: stairShape(xi.direction) }, hoverinfo: "skip" },
        { type: "scatter", mode: "lines+markers", name: `generation ${state.historyIndex + 1}`,
          x: stair.map((p) => p.x), y: stair.map((p) => p.y), customdata: stair.map((p) => p.id),
          text: hoverTexts(stair, "", x, xi, y, yi), hovertemplate: "%{text}<extra></extra>",
          line: { color: "#9333ea", shape: stairShape(xi.direction) }, marker: { size: 7 } },
      ], plotLayout(x, xi, y, yi, { uirevision: `${x}/${y}` }));
    }

    slider.addEventListener("input", () => {
      state.historyIndex = Number(slider.value);
      drawHistory().catch(report);
    });

    // The search's trainings, their rank survival once one has finished, and the proxy objectives of the
    // candidates they retrain (finished candidates do not change: each is asked for once).
    let trainingLoads = 0;
    async function fetchTrainings() {
      const mine = ++trainingLoads;
      let page;
      try {
        page = await api(`/trainings?search_id=${id}&limit=1000`);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) return false; // a service without trainings
        throw error;
      }
      const wanted = [...new Set(page.items.map((t) => t.candidate_id))]
        .filter((c) => c !== null && !state.proxies.has(c));
      const [survival, candidates] = await Promise.all([
        page.items.some((t) => t.status === "finished") ? api(`${base}/survival`) : null,
        Promise.all(wanted.map((c) => api(`${base}/candidates/${c}`).catch(() => null)))]);
      if (!ctx.alive || mine !== trainingLoads) return false;
      candidates.forEach((c, i) => c && state.proxies.set(wanted[i], c.objectives || {}));
      Object.assign(state, { trainings: page.items, trainingsTotal: page.total, survival });
      return true;
    }

    async function loadTrainings() {
      if (!(await fetchTrainings())) return;
      renderTrainings();
      if (state.points) await drawFront();
    }

    const trainingsActive = () => state.trainings.some((t) => ACTIVE.has(t.status));
    const candidateButton = (cid) => el("button", { type: "button", class: "link-button",
      onclick: () => openCandidate(cid).catch(report) }, `candidate #${cid}`);

    // Rows are replaced only when they changed, so focus on a link survives live updates.
    const trainingRows = new Map();
    function renderTrainings() {
      const { trainings, survival } = state;
      trainingsSection.hidden = trainings.length === 0;
      if (!trainings.length) return;
      const finished = trainings.filter((t) => t.status === "finished").length;
      trainingsCount.textContent = `${trainings.length} training${trainings.length === 1 ? "" : "s"}, `
        + `${finished} finished`;
      fill(trainingsFacts, survival ? [rankLine(survival), fellOffLine(survival, candidateButton)] : null);
      const onFinalFront = new Set(survival?.final_front || []);
      const seen = new Set();
      trainings.forEach((t, i) => {
        seen.add(t.id);
        const proxyAcc = t.candidate_id === null ? null : state.proxies.get(t.candidate_id)?.acc;
        const front = onFinalFront.has(t.id);
        const json = JSON.stringify([t, proxyAcc, front]);
        const old = trainingRows.get(t.id);
        if (old && old.json === json && trainingsRows.children[i] === old.tr) return;
        const tr = trainingRow(t, proxyAcc, front);
        if (old) old.tr.replaceWith(tr);
        trainingsRows.insertBefore(tr, trainingsRows.children[i] || null);
        trainingRows.set(t.id, { tr, json });
      });
      for (const [tid, { tr }] of trainingRows) {
        if (!seen.has(tid)) {
          tr.remove();
          trainingRows.delete(tid);
        }
      }
      trainingsMore.hidden = state.trainingsTotal <= trainings.length;
      trainingsMore.textContent = `Showing the first ${trainings.length} of ${state.trainingsTotal} trainings.`;
      renderTrainingsPlotNote();
    }

    function trainingRow(t, proxyAcc, onFinalFront) {
      const exportsList = Object.entries(t.exports || {});
      return el("tr", { "data-training-id": t.id, "data-status": t.status,
        class: t.candidate_id === null ? "reference" : null },
      el("td", {}, `#${t.id}`),
      el("td", {}, t.candidate_id === null ? el("span", { class: "reference-name" }, referenceName(t))
        : candidateButton(t.candidate_id),
      onFinalFront ? [" ", el("span", { class: "badge front", title: FINAL_FRONT_TITLE }, "final front")] : null),
      el("td", {}, trainingStatus(t)),
      el("td", { class: "num", "data-col": "proxy" }, accText(proxyAcc)),
      el("td", { class: "num", "data-col": "val" }, accText(t.val_acc)),
      el("td", { class: "num", "data-col": "test" }, accText(t.test_acc)),
      el("td", { class: "num", "data-col": "mflops", title: typeof t.flops === "number" ? `${t.flops} FLOPs` : null },
        mflops(t.flops)),
      el("td", { class: "num", "data-col": "params" }, typeof t.params === "number" ? si(t.params) : "—"),
      el("td", { class: "training-exports" }, exportsList.length
        ? exportsList.map(([format, url]) => exportLink(format, url, `training_${t.id}_${format}`,
          `${format} of training #${t.id}`))
        : el("span", { class: "muted" }, "—")));
    }

    // Said where finished trainings cannot be drawn on the chosen axes.
    function renderTrainingsPlotNote() {
      const finished = state.trainings.some((t) => t.status === "finished");
      const unmeasured = [state.x, state.y].filter((name) => !(name in FINAL_VALUES));
      trainingsPlotNote.hidden = !finished || !unmeasured.length;
      trainingsPlotNote.textContent = `The final networks are not in the front plot: `
        + `${unmeasured.map((n) => shortName(n, infoOf(state.detail, n))).join(" and ")} `
        + "is not measured on them.";
    }

    async function openCandidate(cid) {
      state.selected = cid;
      panel.hidden = false;
      panel.replaceChildren(el("p", { class: "muted" }, `Loading candidate #${cid}…`));
      drawFront().catch(report);
      const candidate = await api(`${base}/candidates/${cid}`);
      if (!ctx.alive || state.selected !== cid) return;
      panel.replaceChildren(candidateView(candidate, state.detail, () => {
        state.selected = null;
        panel.hidden = true;
        drawFront().catch(report);
      }));
      panel.focus?.();
    }

    // The history is re-read only when a generation has ended: it is the largest answer, and
    // candidate events come far more often.
    let historyStale = false;
    async function refresh() {
      const withHistory = historyStale;
      historyStale = false;
      const [detail, history] = await Promise.all([api(base), withHistory ? api(`${base}/history`) : null]);
      if (!ctx.alive) return;
      state.detail = detail;
      if (history) state.history = history;
      renderHead();
      await Promise.all([loadPoints(), drawHypervolume()]);
    }
    const scheduleRefresh = throttle(refresh, LIVE_MIN_INTERVAL_MS);
    // A training sends an event per epoch: the trainings are re-read at most once a second, the search not at all.
    const scheduleTrainings = throttle(loadTrainings, LIVE_MIN_INTERVAL_MS);
    const onEvent = (kind) => {
      if (kind === "training" || kind === "end" || kind === "poll") scheduleTrainings();
      if (kind === "training") return;
      if (kind !== "candidate" && kind !== "front") historyStale = true;
      scheduleRefresh();
    };
    ctx.onDispose(scheduleRefresh.cancel);
    ctx.onDispose(scheduleTrainings.cancel);

    renderHead();
    renderAxes();
    // Asked for beside the points: they are drawn into the front once both have come.
    const trainingsFirst = fetchTrainings().catch((error) => {
      report(error);
      return false;
    });
    await loadPoints();
    if (!ctx.alive) return;
    frontPlot.on("plotly_afterplot", () => tagTrainingPoints(frontPlot));
    frontPlot.on("plotly_click", (event) => {
      const point = (event.points || []).find((p) => p.customdata !== undefined);
      if (point) openCandidate(point.customdata).catch(report);
    });
    const wanted = Number(params.get("candidate"));
    if (Number.isInteger(wanted) && wanted > 0) openCandidate(wanted).catch(report);
    if (await trainingsFirst) {
      renderTrainings();
      if (state.trainings.length) await drawFront();
    }
    if (!ctx.alive) return;
    // The stream stays open while the search or any of its trainings is queued or running.
    if (ACTIVE.has(state.detail.status) || trainingsActive()) follow(ctx, id, onEvent, state.detail.last_event_id);

    await drawHypervolume();
    // Asked for only now: on a large search it would delay the front, which matters more.
    const history = await api(`${base}/history`);
    if (!ctx.alive || state.history) return; // a live refresh may have brought a newer one
    state.history = history;
    await drawHistory();
  }

  function fact(term, value) {
    return el("div", {}, el("dt", {}, term), el("dd", {}, value));
  }

  // Live updates: the event stream says what changed; the page then re-reads the API (at most once a second).
  function follow(ctx, id, onEvent, after) {
    // Only what happens after the detail the page has drawn: the journal before it is already shown.
    const query = new URLSearchParams({ after: String(after || 0) });
    const token = getToken();
    if (token) query.set("token", token);
    const source = new EventSource(`/searches/${id}/events?${query}`);
    for (const kind of ["candidate", "front", "generation", "status", "training"]) {
      source.addEventListener(kind, () => onEvent(kind));
    }
    source.addEventListener("end", () => {
      source.close();
      onEvent("end");
    });
    source.addEventListener("error", () => {
      // The browser reconnects by itself unless the stream was refused; then fall back to polling.
      if (source.readyState !== EventSource.CLOSED || !ctx.alive) return;
      const poll = () => {
        onEvent("poll");
        ctx.later(POLL_MS, poll);
      };
      ctx.later(POLL_MS, poll);
    });
    ctx.onDispose(() => source.close());
  }

  // ---------------------------------------------------------------- candidate panel

  // Records for the service's own checks, not for reading: the logits every export is held to.
  // The rung line says these in words.
  const UNSHOWN_METRICS = new Set(["check_outputs", "rungs", "rung", "rungs_total"]);

  function candidateView(c, detail, onClose) {
    const shown = new Set();
    const rows = [];
    const names = [...(detail.objectives || []), ...Object.keys(c.objectives || {})];
    for (const name of names) {
      if (shown.has(name) || typeof c.objectives?.[name] !== "number") continue;
      shown.add(name);
      const info = infoOf(detail, name);
      // A masked network's costs are its layers' dense costs times their kept fractions: say so beside them.
      const sparse = c.metrics?.cost_kind === "sparse" && ["flops", "macs", "params"].includes(name);
      rows.push(metricRow(shortName(name, info) + (sparse ? " (sparse)" : ""),
        formatObjective(name, c.objectives[name], info), c.objectives[name],
        (detail.objectives || []).includes(name), sparse ? `${info.label}; counted sparse` : info.label));
    }
    const accInfo = infoOf(detail, "acc");
    for (const [name, value] of Object.entries(c.metrics || {})) {
      if (shown.has(name) || UNSHOWN_METRICS.has(name)) continue;
      rows.push(metricRow(name.replace(/_/g, " "), formatMetric(name, value, accInfo, detail), value, false, null));
    }

    const architecture = c.architecture || {};
    const cells = Object.entries(architecture).filter(([, cell]) => cell && Array.isArray(cell.edges));
    const exportsList = Object.entries(c.exports || {});

    return el("div", {},
      el("div", { class: "toolbar" },
        el("h2", {}, `Candidate #${c.id}`),
        el("button", { type: "button", class: "close", "aria-label": "Close candidate details", onclick: onClose },
          "×")),
      el("p", {}, badge(c.status), " ", c.on_front ? el("span", { class: "badge front" }, "on the front") : null,
        c.worker ? el("span", { class: "muted" }, ` · ${c.worker}`) : null,
        typeof c.seconds === "number" ? el("span", { class: "muted" }, ` · ${duration(c.seconds)}`) : null),
      c.error ? el("p", { class: "error" }, c.error) : null,
      rungLine(c),
      el("table", { class: "grid compact metrics", id: "candidate-metrics" }, el("tbody", {}, rows)),
      cells.length || architecture.backbone ? el("h3", {}, "Architecture") : null,
      architecture.backbone ? el("p", {}, `Backbone ${architecture.backbone}`) : null,
      pruningLine(architecture.pruning, c.metrics?.pruning),
      architecture.arch_str ? el("p", {}, el("code", { class: "wrap" }, architecture.arch_str)) : null,
      cells.map(([name, cell]) => el("figure", { class: "cell" },
        el("figcaption", {}, name === "cell" ? "cell" : `${name} cell`), drawCell(cell, name))),
      exportsList.length ? el("h3", {}, "Export") : null,
      exportsList.length ? el("ul", { class: "exports" }, exportsList.map(([format, url]) => el("li", {},
        exportLink(format, url, `candidate_${c.id}_${format}`)))) : null,
      el("details", {}, el("summary", {}, "Genome"), el("p", {}, el("code", { class: "wrap" }, c.key)),
        el("p", {}, el("code", { class: "wrap" }, JSON.stringify(c.genome)))));
  }

  function rungLine(c) {
    if (typeof c.rung !== "number" || typeof c.rungs !== "number") return null;
    const e = c.metrics?.epochs;
    const epochs = typeof e === "number" ? ` (${e} epoch${e === 1 ? "" : "s"})` : "";
    const how = c.status === "stopped" ? ": stopped early, so it is not on the front"
      : c.rung === c.rungs ? ": full fidelity" : "";
    const curve = (c.metrics?.rungs || []).map(([e, acc]) => `${percent(acc, {})} after ${e} epoch${e === 1 ? "" : "s"}`)
      .join(", ");
    return el("div", { id: "candidate-rungs" },
      el("p", { id: "candidate-rung" }, `Rung ${c.rung} of ${c.rungs}${epochs}${how}`),
      curve ? el("p", { class: "muted", id: "candidate-curve" }, `Validation accuracy: ${curve}`)
        : null);
  }

  function pruningLine(choice, measured) {
    if (choice === undefined) return null;
    if (choice === null) return el("p", { id: "candidate-pruning" }, "Not pruned");
    const pct = (fraction) => percent(100 * fraction, {});
    const budget = choice.budget === null ? "learned sparsity" : `budget ${pct(choice.budget)} kept`;
    const kept = measured ? `, ${pct(measured.kept_fraction)} of the weights kept` : "";
    return el("p", { id: "candidate-pruning" }, `Pruned by ${choice.method} (${budget})${kept}`);
  }

  function metricRow(label, text, raw, isObjective, description) {
    return el("tr", { class: isObjective ? "objective" : null },
      el("th", { scope: "row", title: description }, label),
      el("td", { title: typeof raw === "number" ? String(raw) : null }, text));
  }

  function formatMetric(name, value, accInfo, detail) {
    if (typeof value === "number") {
      if (/acc/.test(name)) return percent(value, accInfo);
      const info = (detail.objective_info || {})[name];
      if (info) return formatObjective(name, value, info);
      if (/seconds$/.test(name)) return duration(value);
      return Number.isInteger(value) ? value.toLocaleString() : trim(value.toPrecision(4));
    }
    if (Array.isArray(value)) return value.length ? value.join(", ") : "none";
    if (value && typeof value === "object") {
      const entries = Object.entries(value);
      const text = (v) => (typeof v === "object" ? JSON.stringify(v) : v);
      return entries.length ? entries.map(([k, v]) => `${k}: ${text(v)}`).join(", ") : "none";
    }
    return String(value);
  }

  function exportLink(format, url, fallbackName, label = null) {
    const link = el("a", { href: url, download: "", "aria-label": label }, format);
    link.addEventListener("click", (event) => {
      if (!getToken()) return; // the plain link works when reads are open
      event.preventDefault();
      download(url, fallbackName).catch(report);
    });
    return link;
  }

  // ---------------------------------------------------------------- cell drawing

  const NODE_W = 50;
  const NODE_H = 22;
  const COL_W = 128;
  const ROW_H = 64;
  const LABEL_H = 12;
  const CHAR_W = 5.6; // of the 10px label font
  let drawingId = 0;

  // Nodes go in columns by their longest path from an input; edges are curves labelled with their op.
  function drawCell(cell, name) {
    const edges = cell.edges.map((e) => ({ ...e, from: String(e.from), to: String(e.to) }));
    const names = [...new Set([...(cell.nodes || []).map(String), ...edges.flatMap((e) => [e.from, e.to])])];
    const preds = new Map(names.map((n) => [n, []]));
    for (const e of edges) preds.get(e.to).push(e.from);
    const depth = layers(names, preds);
    const pos = place(names, preds, depth);
    const columns = Math.max(...depth.values()) + 1;

    // Parallel edges fan out; edges that skip columns on one row bow out, alternating sides, to miss the nodes between.
    const pairs = new Map();
    for (const e of edges) pairs.set(`${e.from}>${e.to}`, (pairs.get(`${e.from}>${e.to}`) || 0) + 1);
    const seenPairs = new Map();
    const spanOf = (e) => depth.get(e.to) - depth.get(e.from);
    const skipping = edges.filter((e) => spanOf(e) > 1)
      .sort((a, b) => spanOf(a) - spanOf(b) || depth.get(a.from) - depth.get(b.from));
    const curves = edges.map((e) => {
      const a = pos.get(e.from);
      const b = pos.get(e.to);
      const key = `${e.from}>${e.to}`;
      const k = seenPairs.get(key) || 0;
      seenPairs.set(key, k + 1);
      const span = spanOf(e);
      let bend = (k - (pairs.get(key) - 1) / 2) * 24;
      if (span > 1 && Math.abs(a.y - b.y) < ROW_H / 2) bend += (skipping.indexOf(e) % 2 ? -1 : 1) * 22 * span;
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const apex = { x: (a.x + b.x) / 2 - (dy / len) * bend, y: (a.y + b.y) / 2 + (dx / len) * bend };
      const control = { x: 2 * apex.x - (a.x + b.x) / 2, y: 2 * apex.y - (a.y + b.y) / 2 };
      return { e, start: boxExit(a, control), control, end: boxExit(b, control) };
    });

    // Labels go where they overlap nothing drawn so far, trying points along their edge from the middle out.
    const taken = names.map((n) => box(pos.get(n), NODE_W + 4, NODE_H + 4));
    const bounds = { x0: -NODE_W, x1: (columns - 1) * COL_W + NODE_W, y0: -ROW_H / 2, y1: ROW_H / 2 };
    for (const p of pos.values()) {
      bounds.y0 = Math.min(bounds.y0, p.y - ROW_H / 2);
      bounds.y1 = Math.max(bounds.y1, p.y + ROW_H / 2);
    }
    for (const c of curves) {
      const apex = bezier(c, 0.5);
      bounds.y0 = Math.min(bounds.y0, apex.y - 6);
      bounds.y1 = Math.max(bounds.y1, apex.y + 6);
      if (c.e.op === "concat") continue;
      const width = c.e.op.length * CHAR_W + 6;
      // Along the edge from the middle out, then a row above or below it, then two: the first spot that
      // overlaps nothing wins, else the one that overlaps least.
      const spots = [0, -1, 1, -2, 2].flatMap((row) => [0.5, 0.38, 0.62, 0.28, 0.72, 0.2, 0.8].map((t) => {
        const at = bezier(c, t);
        return box({ x: at.x, y: at.y + row * (LABEL_H + 1) }, width, LABEL_H);
      }));
      c.label = spots.find((spot) => clash(spot, taken) === 0)
        || spots.reduce((best, spot) => (clash(spot, taken) < clash(best, taken) ? spot : best));
      taken.push(c.label);
      bounds.y0 = Math.min(bounds.y0, c.label.y0);
      bounds.y1 = Math.max(bounds.y1, c.label.y1);
    }

    const uid = `cell${++drawingId}`;
    const parts = curves.map(({ e, start, control, end, label }) => {
      const none = e.op === "none" || e.op === "zero";
      const classes = ["edge", e.live === false && "dead", none && "op-none", e.op === "concat" && "concat"];
      return svg("g", { class: classes.filter(Boolean).join(" "), "data-op": e.op },
        svg("title", {}, `${e.from} → ${e.to}: ${e.op}${e.live === false ? " (on no path to the output)" : ""}`),
        svg("path", { d: `M${start.x},${start.y} Q${control.x},${control.y} ${end.x},${end.y}`,
          "marker-end": `url(#${uid}-arrow)` }),
        label ? svg("text", { x: (label.x0 + label.x1) / 2, y: label.y1 - 3, class: "edge-label" }, e.op) : null);
    });
    for (const n of names) {
      const p = pos.get(n);
      parts.push(svg("g", { class: `node${preds.get(n).length ? "" : " input"}`, "data-node": n },
        svg("rect", { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2, width: NODE_W, height: NODE_H, rx: 6 }),
        nodeLabel(n, p)));
    }

    const pad = 8;
    const width = Math.round(bounds.x1 - bounds.x0 + 2 * pad);
    const height = Math.round(bounds.y1 - bounds.y0 + 2 * pad);
    // Scaled down to fit the panel, but never so far that the labels become unreadable: then it scrolls.
    return svg("svg", { class: "cell-drawing", "data-cell": name, role: "img",
      "aria-label": `${name} cell: ${names.length} nodes, ${edges.length} edges`,
      viewBox: `${bounds.x0 - pad} ${bounds.y0 - pad} ${width} ${height}`, width, height,
      style: `min-width: ${Math.round(width * 0.7)}px` },
    svg("defs", {}, svg("marker", { id: `${uid}-arrow`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))),
    parts);
  }

  // Longest path from an input, so every edge points rightwards.
  function layers(names, preds) {
    const depth = new Map();
    const visiting = new Set();
    const depthOf = (n) => {
      if (depth.has(n)) return depth.get(n);
      if (visiting.has(n)) return 0; // a cycle would be a malformed cell; draw it anyway
      visiting.add(n);
      const d = preds.get(n).length ? 1 + Math.max(...preds.get(n).map(depthOf)) : 0;
      depth.set(n, d);
      return d;
    };
    names.forEach(depthOf);
    return depth;
  }

  // Within a column, nodes are ordered by the mean height of their inputs: fewer crossings.
  function place(names, preds, depth) {
    const pos = new Map();
    const columns = [];
    for (const n of names) (columns[depth.get(n)] ||= []).push(n);
    columns.forEach((column, d) => {
      const mean = (n) => {
        const ys = preds.get(n).map((p) => pos.get(p)?.y).filter((y) => y !== undefined);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
      };
      const order = d === 0 ? column : [...column].sort((a, b) => mean(a) - mean(b));
      order.forEach((n, i) => pos.set(n, { x: d * COL_W, y: (i - (order.length - 1) / 2) * ROW_H }));
    });
    return pos;
  }

  const box = (p, w, h) => ({ x0: p.x - w / 2, x1: p.x + w / 2, y0: p.y - h / 2, y1: p.y + h / 2 });

  function clash(a, boxes) {
    let area = 0;
    for (const b of boxes) {
      const width = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
      const height = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
      area += Math.max(0, width) * Math.max(0, height);
    }
    return area;
  }

  function bezier({ start, control, end }, t) {
    const u = 1 - t;
    const at = (k) => u * u * start[k] + 2 * u * t * control[k] + t * t * end[k];
    return { x: at("x"), y: at("y") };
  }

  // Where the line from a node's centre towards `target` leaves the node's box.
  function boxExit(center, target) {
    const dx = target.x - center.x;
    const dy = target.y - center.y;
    const tx = dx ? (NODE_W / 2 + 2) / Math.abs(dx) : Infinity;
    const ty = dy ? (NODE_H / 2 + 2) / Math.abs(dy) : Infinity;
    const t = Math.min(tx, ty);
    return { x: center.x + dx * Math.min(t, 1), y: center.y + dy * Math.min(t, 1) };
  }

  // "c_{k-2}" is drawn as c with a subscript k-2.
  function nodeLabel(name, p) {
    const match = name.match(/^(.*)_\{(.*)\}$/);
    return svg("text", { x: p.x, y: p.y + 4, class: "node-label" }, match
      ? [match[1], svg("tspan", { class: "sub", dy: 3 }, match[2])]
      : name);
  }

  // ---------------------------------------------------------------- compare

  async function compareView(root, ctx, params) {
    const asked = (params.get("ids") || "").split(",").map(Number);
    const ids = [...new Set(asked.filter((n) => Number.isInteger(n) && n > 0))];
    root.append(el("h1", {}, "Compare fronts"));
    if (!ids.length) {
      root.append(el("p", {}, "Pick searches to compare in the ", el("a", { href: "#/" }, "list"), "."));
      return;
    }
    const details = await Promise.all(ids.map((id) => api(`/searches/${id}`)));
    if (!ctx.alive) return;
    const shared = (details[0].objectives || []).filter((o) => details.every((d) => (d.objectives || []).includes(o)));
    const info = Object.assign({}, ...details.map((d) => d.objective_info || {}));
    const merged = { objectives: shared, objective_info: info };
    if (shared.length < 2) {
      root.append(el("p", { class: "error" }, "These searches share fewer than two objectives: ",
        details.map((d) => `#${d.id} (${(d.objectives || []).join(", ")})`).join("; ")));
      return;
    }
    const state = { ...defaultAxes(merged) };
    const axes = el("div", { class: "axes" });
    const plot = el("div", { id: "compare-plot", class: "plot", "data-testid": "compare-plot" });
    const legend = el("ul", { class: "compare-legend" }, details.map((d, i) => el("li", { "data-search-id": d.id },
      el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }),
      el("a", { href: `#/searches/${d.id}` }, `#${d.id}${d.name ? ` ${d.name}` : ""}`), " ", badge(d.status),
      el("span", { class: "muted" }, ` ${d.space} · ${d.dataset} · front ${d.progress?.front_size ?? "—"}`
        + ` · ${d.progress?.evaluations ?? 0} evaluations · `),
      el("span", { class: "muted" }, "HV (shared ref.) ", sharedHv(d.shared_hypervolume, d)))));
    root.append(el("section", { class: "card" },
      el("div", { class: "toolbar" }, el("h2", {}, "Fronts"), axes), legend, comparableNote(details), plot,
      el("p", { class: "muted" }, "Click a point to open that candidate in its search.")));

    const renderAxes = () => axes.replaceChildren(
      axisSelect("x-axis", "x", shared, merged, state.x, choose("x")),
      axisSelect("y-axis", "y", shared, merged, state.y, choose("y")));
    const choose = (which) => (value) => {
      const other = which === "x" ? "y" : "x";
      if (state[other] === value) state[other] = state[which];
      state[which] = value;
      renderAxes();
      draw().catch(report);
    };

    async function draw() {
      const { x, y } = state;
      const all = await Promise.all(ids.map((id) => api(`/searches/${id}/points?x=${x}&y=${y}&max_dominated=0`)));
      if (!ctx.alive || x !== state.x || y !== state.y) return;
      const xi = infoOf(merged, x);
      const yi = infoOf(merged, y);
      // Every front member is marked; the staircase joins those that are non-dominated on these two axes.
      const traces = all.flatMap((points, i) => {
        const stair = front2d(points.front, xi.direction, yi.direction);
        const label = plotText(`#${details[i].id}${details[i].name ? ` ${details[i].name}` : ""}`);
        const colour = PALETTE[i % PALETTE.length];
        return [
          { type: "scatter", mode: "lines", name: `${label} staircase`, legendgroup: label, showlegend: false,
            x: stair.map((p) => p.x), y: stair.map((p) => p.y), hoverinfo: "skip",
            line: { color: colour, shape: stairShape(xi.direction) } },
          { type: "scatter", mode: "markers", name: label, legendgroup: label, meta: details[i].id,
            x: points.front.map((p) => p.x), y: points.front.map((p) => p.y), customdata: points.front.map((p) => p.id),
            text: hoverTexts(points.front, label, x, xi, y, yi), hovertemplate: "%{text}<extra></extra>",
            marker: { color: colour, size: 8 } },
        ];
      });
      await ctx.plot(plot, traces, plotLayout(x, xi, y, yi, { uirevision: `${x}/${y}` }));
    }

    renderAxes();
    await draw();
    if (!ctx.alive) return;
    plot.on("plotly_click", (event) => {
      const point = (event.points || [])[0];
      if (point && point.customdata !== undefined) {
        location.hash = `#/searches/${point.data.meta}?candidate=${point.customdata}`;
      }
    });
  }

  // Searches of different problems are measured on different references: their HVs do not compare.
  function comparableNote(details) {
    const groups = new Set(details.map((d) => JSON.stringify(d.shared_hypervolume?.searches || [d.id])));
    if (groups.size < 2) return null;
    return el("p", { id: "hv-not-comparable", class: "muted" }, "These searches are not all of the same problem "
      + "(space, data and objectives): their HV (shared ref.) values are on different references and do not compare.");
  }

  // ---------------------------------------------------------------- router

  let current = null;

  async function route() {
    if (current) current.dispose();
    const ctx = new ViewContext();
    current = ctx;
    hideMessage();
    const view = $("#view");
    view.replaceChildren();
    delete window.dvolverFrontDrawnAt;
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query = ""] = raw.split("?");
    const params = new URLSearchParams(query);
    const match = path.match(/^\/searches\/(\d+)\/?$/);
    try {
      if (path === "/" || path === "") await listView(view, ctx);
      else if (match) await searchView(view, ctx, Number(match[1]), params);
      else if (path === "/compare") await compareView(view, ctx, params);
      else view.append(el("p", {}, "No such page. ", el("a", { href: "#/" }, "Back to the searches.")));
    } catch (error) {
      if (ctx.alive) report(error);
    }
  }

  $("#token-button").addEventListener("click", async () => {
    const choice = await askForToken("Reads may be open; a token shows only your own searches and lets you write.");
    if (choice === "save" || choice === "clear") {
      showWhoami();
      route();
    }
  });

  window.addEventListener("hashchange", route);
  showWhoami();
  route();
})();
