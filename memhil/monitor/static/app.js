// memhil monitor: the run list, a run's live plots, a sweep's trial table.
// Data comes from the JSON endpoints and server-sent events of memhil/monitor/server.py;
// plots are drawn from the definitions of memhil/monitor/plot_kinds.py with Plotly.js.
"use strict";

// WebGL (scattergl) only when asked (URL: webgl_above=N): the overview below draws at most
// DRAW_BUDGET points, which SVG draws faster than WebGL without a GPU (a remote desktop, a
// headless browser; benchmarks/monitor_latency.py compares both)
const WEBGL_ABOVE = Infinity;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const main = document.getElementById("main");
let source = null;  // the page's EventSource
// bumped on every navigation: a reply, event or frame that arrives for an earlier page finds
// its elements gone and is dropped (the old page's stream is closed as the new page opens)
let pageSeq = 0;
function enterPage() {
  pageSeq += 1;
  if (source) { source.close(); source = null; }
  const seq = pageSeq;
  return () => {  // whether this page is still the one shown (stale: those dropped)
    if (seq === pageSeq) return true;
    window.memhil.stale += 1;
    return false;
  };
}
// plotted: points drawn on this page; drawn: [time ms, plotted] of recent frames (the
// latency benchmark reads it); errors: script errors (the browser test asserts none);
// stale: replies, events and frames that arrived for a page already left, and were dropped
window.memhil = { plotted: 0, page: null, status: null, errors: [], drawn: [], stale: 0 };
window.addEventListener("error", e => window.memhil.errors.push(String(e.message)));

function token() {
  const q = new URLSearchParams(location.search).get("token");
  if (q) return q;
  const m = document.cookie.match(/(?:^|; )memhil_token=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}
function api(path) { return fetch(path, { headers: { "X-Memhil-Token": token() } }).then(r => r.json()); }
function events(path) {
  if (source) source.close();
  const t = token();
  source = new EventSource(path + (path.includes("?") ? "&" : "?") + (t ? "token=" + encodeURIComponent(t) : ""));
  const conn = document.getElementById("conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "conn"; };
  return source;
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }
function dur(s) {
  if (s === null || s === undefined) return "-";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${x} s` : `${x} s`;
}
function date(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function statusBadge(s) { return `<span class="status ${esc(s)}">${esc(s)}</span>`; }
function progress(r) {
  if (r.progress === null || r.progress === undefined) return `${r.n_points} pts`;
  const pct = Math.round(100 * r.progress);
  return `<span class="bar"><span style="width:${pct}%"></span></span> ${pct}%` +
    (r.eta_s !== null && r.eta_s !== undefined ? `, ETA ${dur(r.eta_s)}` : "");
}
function link(r) { return r.kind === "sweep" ? `#/sweep/${r.id}` : `#/run/${r.id}`; }

// -- the run list ----------------------------------------------------------------------
function listPage() {
  const current = enterPage();
  window.memhil.page = "list";
  main.innerHTML = `<h2>Runs</h2><table id="runs"><thead><tr><th>id</th><th>name</th><th>kind</th>
    <th>protocol</th><th>status</th><th>started</th><th>duration</th><th>progress / ETA</th>
    <th>backend</th><th>points</th></tr></thead><tbody></tbody></table>
    <p class="note">Live: new runs and points appear as they are committed to the store.</p>`;
  events("/events/runs").addEventListener("runs", ev => {
    if (!current()) return;
    const data = JSON.parse(ev.data);
    document.querySelector("#runs tbody").innerHTML = data.runs.slice().reverse().map(r =>
      `<tr data-id="${r.id}" data-status="${esc(r.status)}"><td>${r.id}</td>
       <td><a href="${link(r)}">${esc(r.name)}</a></td><td>${esc(r.kind)}</td>
       <td>${esc(r.protocol)}</td><td>${statusBadge(r.status)}</td><td>${date(r.started_s)}</td>
       <td>${dur(r.duration_s)}</td><td>${progress(r)}</td><td>${esc(r.backend)}</td>
       <td class="n">${r.n_points}</td></tr>`).join("") ||
      `<tr><td colspan="10">no runs yet in this store</td></tr>`;
  });
}

// -- a run's page ------------------------------------------------------------------------
function runFacts(r) {
  return `<span><b>status</b> ${statusBadge(r.status)}</span><span><b>kind</b> ${esc(r.kind)} /
    ${esc(r.protocol)}</span><span><b>backend</b> ${esc(r.backend)}</span><span><b>started</b>
    ${date(r.started_s)}</span><span><b>duration</b> ${dur(r.duration_s)}</span><span><b>progress</b>
    ${progress(r)}</span><span><b>points</b> ${r.n_points}</span><span><b>units done</b>
    ${r.units_done}${r.units_in_flight ? ` (+${r.units_in_flight} in flight)` : ""}</span>` +
    (r.chain.length > 1 ? `<span><b>runs</b> ${r.chain.join(", ")}</span>` : "") +
    (r.stop_requested ? `<span><b>stop</b> requested: finishing the unit in flight</span>` : "");
}

// Above EXACT points a line plot draws an overview: per trace, the min and max of y in
// consecutive buckets (the shape of a path, loops included), DRAW_BUDGET points in all;
// zooming redraws the visible x range the same way, in full once it holds few enough.
const EXACT = 5000;
const DRAW_BUDGET = 5000;

function decimate(x, y, range, buckets) {
  let idx = [];
  if (range) { for (let i = 0; i < x.length; i++) if (x[i] >= range[0] && x[i] <= range[1]) idx.push(i); }
  else idx = null;
  const n = idx ? idx.length : x.length;
  const at = k => (idx ? idx[k] : k);
  if (n <= 2 * buckets) {
    const ks = Array.from({ length: n }, (_, k) => at(k));
    return { x: ks.map(i => x[i]), y: ks.map(i => y[i]) };
  }
  const ox = [], oy = [], size = n / buckets;
  for (let b = 0; b < buckets; b++) {
    const k0 = Math.floor(b * size), k1 = Math.min(n, Math.floor((b + 1) * size));
    let lo = at(k0), hi = at(k0);
    for (let k = k0 + 1; k < k1; k++) { const i = at(k); if (y[i] < y[lo]) lo = i; if (y[i] > y[hi]) hi = i; }
    for (const i of lo <= hi ? [lo, hi] : [hi, lo]) { ox.push(x[i]); oy.push(y[i]); }
  }
  return { x: ox, y: oy };
}

class LinePlot {
  // one trace per (group, y column); the mean over groups at each x as a dashed trace
  constructor(div, spec, expected) {
    this.div = div; this.spec = spec; this.traces = new Map(); this.n = 0;
    const above = Number(new URLSearchParams(location.search).get("webgl_above") ?? WEBGL_ABOVE);
    this.kind = expected > above ? "scattergl" : "scatter";
    this.sums = new Map();  // (y column, x) -> [sum, count] for the mean
    this.meanIdx = new Map();
    this.full = [];  // trace index -> every point {x: [], y: []} (the overview draws fewer)
    this.range = null;  // the zoomed x range, in data units
    this.timer = null;
    this.filters = (spec.filter || []).map(([c, p, keep]) => [c, new RegExp(p, "i"), keep]);
    const layout = {
      title: { text: spec.title, font: { size: 14 }, x: 0.01, xanchor: "left" }, margin: { l: 80, r: 20, t: 40, b: 55 },
      xaxis: { title: { text: spec.xlabel }, type: spec.logx ? "log" : "linear", exponentformat: "power" },
      yaxis: { title: { text: spec.ylabel }, type: spec.logy ? "log" : "linear", exponentformat: "power", automargin: true },
      showlegend: true, legend: { font: { size: 10 } }, uirevision: "keep",
    };
    Plotly.newPlot(div, [], layout, { responsive: true, displaylogo: false });
    div.on("plotly_relayout", ev => this.zoomed(ev));
  }
  get overview() { return this.n > EXACT; }
  zoomed(ev) {
    let r = null;
    if (ev["xaxis.range[0]"] !== undefined) r = [ev["xaxis.range[0]"], ev["xaxis.range[1]"]];
    else if (ev["xaxis.range"]) r = ev["xaxis.range"];
    else if (!ev["xaxis.autorange"]) return;
    if (r && this.spec.logx) r = r.map(v => 10 ** v);  // a log axis's range is in decades
    this.range = r;
    if (this.overview) this.redraw();
  }
  key(cols, i) { return this.spec.group.map(g => `${g} ${cols[g][i]}`).join(", "); }
  add(cols) {
    const s = this.spec, n = cols.point.length;
    const ext = new Map();  // trace index -> {x: [], y: []}
    const fresh = [];
    for (let i = 0; i < n; i++) {
      const x = cols[s.x][i];
      if (this.filters.some(([c, re, keep]) => re.test(String(cols[c][i])) !== keep)) continue;
      s.y.forEach((yc, yi) => {
        let y = cols[yc][i];
        if (y === null || x === null) return;
        if (s.abs) y = Math.abs(y);
        const name = (s.y.length > 1 ? yc + " " : "") + this.key(cols, i);
        let idx = this.traces.get(name);
        if (idx === undefined) {
          idx = this.div.data.length + fresh.length;  // after every trace drawn or pending
          const c = s.color ? cols[s.color][i] : this.traces.size;
          const color = s.y.length > 1 ? PALETTE[yi % PALETTE.length] : PALETTE[Math.abs(Number(c) || 0) % PALETTE.length];
          fresh.push({ name, idx, trace: {
            type: this.kind, mode: s.markers ? "lines+markers" : "lines", name, x: [], y: [],
            line: { width: 1, color }, marker: { size: 4, color, symbol: yi ? "circle-open" : "circle" },
            legendgroup: s.y.length > 1 ? yc : undefined, opacity: s.mean ? 0.6 : 1 } });
          this.traces.set(name, idx);
          this.full[idx] = { x: [], y: [] };
        }
        if (!ext.has(idx)) ext.set(idx, { x: [], y: [] });
        ext.get(idx).x.push(x); ext.get(idx).y.push(y);
        this.full[idx].x.push(x); this.full[idx].y.push(y);
        if (s.mean) {
          const k = yc + "|" + x, v = this.sums.get(k) || [0, 0, yc, x];
          v[0] += y; v[1] += 1; this.sums.set(k, v);
        }
        this.n += 1;
      });
    }
    if (this.overview) {  // new traces empty now, everything drawn by the (throttled) redraw
      if (fresh.length) Plotly.addTraces(this.div, fresh.map(f => f.trace));
      if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.redraw(); }, 250);
    } else {
      for (const f of fresh) { f.trace.x = ext.get(f.idx).x; f.trace.y = ext.get(f.idx).y; ext.delete(f.idx); }
      if (fresh.length) Plotly.addTraces(this.div, fresh.map(f => f.trace));
      if (ext.size) {
        const idx = [...ext.keys()];
        Plotly.extendTraces(this.div, { x: idx.map(i => ext.get(i).x), y: idx.map(i => ext.get(i).y) }, idx);
      }
      if (s.mean && this.traces.size > 1) this.updateMean();
    }
    if (this.traces.size > 24 && this.div.layout.showlegend) Plotly.relayout(this.div, { showlegend: false });
  }
  redraw() {
    const idx = [...this.traces.values()];
    const buckets = Math.max(25, Math.floor(DRAW_BUDGET / 2 / Math.max(1, idx.length)));
    const parts = idx.map(i => decimate(this.full[i].x, this.full[i].y, this.range, buckets));
    Plotly.restyle(this.div, { x: parts.map(p => p.x), y: parts.map(p => p.y) }, idx);
    if (this.spec.mean && this.traces.size > 1) this.updateMean();
  }
  updateMean() {
    for (const yc of this.spec.y) {
      const pts = [...this.sums.values()].filter(v => v[2] === yc).sort((a, b) => a[3] - b[3]);
      let x = pts.map(v => v[3]), y = pts.map(v => v[0] / v[1]);
      if (this.overview) ({ x, y } = decimate(x, y, this.range, 1000));
      if (!this.meanIdx.has(yc)) {
        this.meanIdx.set(yc, this.div.data.length);
        Plotly.addTraces(this.div, { type: this.kind, mode: "lines", name: "mean " + yc, x, y,
          line: { width: 3, color: "#000", dash: "dash" } });
      } else {
        Plotly.restyle(this.div, { x: [x], y: [y] }, [this.meanIdx.get(yc)]);
      }
    }
  }
}

class MapPlot {
  // a heat map that fills in as cells (or dies) arrive; the value of a die is its mean
  constructor(div, spec) {
    this.div = div; this.spec = spec; this.cells = new Map(); this.n = 0;
    Plotly.newPlot(div, [], {
      title: { text: spec.title, font: { size: 14 }, x: 0.01, xanchor: "left" }, margin: { l: 60, r: 20, t: 40, b: 50 },
      xaxis: { title: { text: spec.xlabel }, dtick: spec.type === "wafer" ? 1 : undefined, constrain: "domain" },
      yaxis: { title: { text: spec.ylabel }, dtick: spec.type === "wafer" ? 1 : undefined,
        autorange: spec.type === "heatmap" ? "reversed" : true, scaleanchor: "x", constrain: "domain" },
    }, { responsive: true, displaylogo: false });
  }
  add(cols) {
    const s = this.spec;
    for (let i = 0; i < cols.point.length; i++) {
      const z = cols[s.z][i];
      if (z === null) continue;
      const k = cols[s.x][i] + "," + cols[s.y][i];
      const v = this.cells.get(k) || [0, 0, cols[s.x][i], cols[s.y][i]];
      if (s.type === "heatmap") { v[0] = z; v[1] = 1; } else { v[0] += z; v[1] += 1; }
      this.cells.set(k, v); this.n += 1;
    }
    const xs = [...new Set([...this.cells.values()].map(v => v[2]))].sort((a, b) => a - b);
    const ys = [...new Set([...this.cells.values()].map(v => v[3]))].sort((a, b) => a - b);
    const z = ys.map(y => xs.map(x => { const v = this.cells.get(x + "," + y); return v ? v[0] / v[1] : null; }));
    Plotly.react(this.div, [{ type: "heatmap", x: xs, y: ys, z, colorscale: "Viridis",
      colorbar: { title: { text: s.zlabel }, exponentformat: "power" } }], this.div.layout);
  }
}

function runPage(id) {
  const current = enterPage();
  window.memhil.page = "run"; window.memhil.plotted = 0; window.memhil.status = null;
  main.innerHTML = `<h2 id="title">run ${id}</h2><div class="facts" id="facts"></div>
    <div><button class="stop" id="stop" disabled>Stop after the unit in flight</button>
    <span class="note" id="stopnote"></span> <span class="note">plotted <span id="plotted">0</span> points</span></div>
    <div class="plots" id="plots"></div>`;
  api(`/api/runs/${id}`).then(run => {
    if (!current()) return;
    if (run.error) { main.innerHTML = `<p>${esc(run.error)}</p>`; return; }
    document.getElementById("title").textContent = `${run.name} (run ${run.id})`;
    const expected = Math.max(run.expected_points || 0, run.n_points);
    const plots = run.plots.map((spec, k) => {
      const div = document.createElement("div");
      div.className = "plot"; div.id = "plot" + k;
      document.getElementById("plots").appendChild(div);
      return spec.type === "lines" ? new LinePlot(div, spec, expected) : new MapPlot(div, spec);
    });
    const stop = document.getElementById("stop");
    stop.onclick = () => {
      stop.disabled = true;
      fetch(`/api/runs/${run.id}/stop`, { method: "POST", headers: { "X-Memhil-Token": token() } })
        .then(r => r.json()).then(d => { if (current()) document.getElementById("stopnote").textContent =
          d.error ? d.error : "stop requested: the run finishes its unit in flight, goes safe and stays resumable"; });
    };
    let pending = [];
    let scheduled = false;
    const draw = () => {  // coalesce the events of one frame into one update per plot
      scheduled = false;
      const batch = pending; pending = [];
      if (!batch.length || !current()) return;
      const cols = {};
      for (const c of Object.keys(batch[0])) cols[c] = [].concat(...batch.map(b => b[c]));
      plots.forEach(p => p.add(cols));
      window.memhil.plotted += cols.point.length;
      window.memhil.drawn.push([performance.timeOrigin + performance.now(), window.memhil.plotted]);
      if (window.memhil.drawn.length > 2000) window.memhil.drawn.shift();
      document.getElementById("plotted").textContent = window.memhil.plotted;
    };
    const es = events(`/events/runs/${run.id}?since=0`);
    es.addEventListener("points", ev => {
      pending.push(JSON.parse(ev.data).columns);
      if (!scheduled) { scheduled = true; requestAnimationFrame(draw); }
    });
    es.addEventListener("run", ev => {
      if (!current()) return;
      const r = JSON.parse(ev.data);
      window.memhil.status = r.status;
      document.getElementById("facts").innerHTML = runFacts(r);
      stop.disabled = r.stored_status !== "running" || r.stop_requested;
    });
  });
}

// -- a sweep's page ----------------------------------------------------------------------
function sweepPage(id) {
  const current = enterPage();
  window.memhil.page = "sweep";
  main.innerHTML = `<h2 id="title">sweep ${id}</h2><div id="pick"></div><div class="plots">
    <div class="plot" id="sweepplot"></div></div><h3>Trials</h3><table id="trials"></table>`;
  let axis = null, metric = null;
  const render = sw => {
    document.getElementById("title").textContent = `${sw.name} (sweep ${sw.id}): ${sw.trials.length} trials`;
    axis = axis || sw.axes[0]; metric = metric || sw.metrics[0];
    const opt = (xs, sel) => xs.map(a => `<option ${a === sel ? "selected" : ""}>${esc(a)}</option>`).join("");
    document.getElementById("pick").innerHTML = `metric <select id="metric">${opt(sw.metrics, metric)}</select>
      vs axis <select id="axis">${opt(sw.axes, axis)}</select>`;
    document.getElementById("metric").onchange = e => { metric = e.target.value; render(sw); };
    document.getElementById("axis").onchange = e => { axis = e.target.value; render(sw); };
    const cols = ["run_id", "trial", "status"].filter(c => sw.trials.some(t => c in t))
      .concat(sw.axes.map(a => "param." + a), sw.metrics.map(m => "metric." + m));
    document.getElementById("trials").innerHTML = `<tr>${cols.map(c => `<th>${esc(c)}</th>`).join("")}</tr>` +
      sw.trials.map(t => `<tr>${cols.map(c => `<td>${c === "status" ? statusBadge(t[c]) : esc(t[c] ?? "-")}</td>`).join("")}</tr>`).join("");
    if (axis && metric) {
      Plotly.react("sweepplot", [{ type: "scatter", mode: "markers", x: sw.trials.map(t => t["param." + axis]),
        y: sw.trials.map(t => t["metric." + metric]), marker: { size: 8 } }], {
        title: { text: `${metric} vs ${axis}`, font: { size: 14 } }, margin: { l: 70, r: 20, t: 40, b: 50 },
        xaxis: { title: { text: axis } }, yaxis: { title: { text: metric }, automargin: true } },
        { responsive: true, displaylogo: false });
    }
    window.memhil.plotted = sw.trials.length;
  };
  const load = () => api(`/api/sweeps/${id}`).then(sw => { if (current()) render(sw); });
  events("/events/runs").addEventListener("runs", load);
}

function route() {
  const m = location.hash.match(/^#\/(run|sweep)\/(\d+)/);
  if (!m) listPage(); else if (m[1] === "run") runPage(Number(m[2])); else sweepPage(Number(m[2]));
}
api("/api/runs").then(d => { document.getElementById("db").textContent = d.db || ""; });
window.addEventListener("hashchange", route);
route();
