// Faultline dashboard: polls the JSON API and draws everything itself (no libraries, no CDN).
"use strict";

const POLL_MS = 1500;
const HEALTH_EVERY = 4; // polls between health checks
const LOAD_EVERY = 20; // polls between alarm-load figures (30 s: they change slowly)
const MODELS_EVERY = 4; // polls between model lifecycle views (every poll while a job runs)
const ALARM_ROWS = 40; // active and unacknowledged first, then the latest of the others
const SEVERITY_RANK = { low: 0, medium: 1, high: 2, critical: 3 };
const SHELVE_CHOICES = [["15 min", 15], ["1 h", 60], ["8 h", 480], ["24 h", 1440]]; // minutes
const WINDOW_MS = 5 * 60 * 1000;
const GAP_MS = 5000; // a longer silence breaks the line, so dropouts are visible
const SERIES_COLORS = ["#38bdf8", "#a78bfa", "#34d399", "#fbbf24", "#f472b6", "#60a5fa"];

const state = {
  sensors: [],
  clockOffsetMs: 0, // server time minus browser time: charts follow the server's clock
  selected: null,
  series: { station: null, points: [], lastTs: null, loading: null },
  knownAnomalies: null,
  stationAlarms: new Map(), // station id -> what its tile shows of its alarms
  polls: 0,
  modelJobBusy: false, // a retraining job runs: the models panel follows it every poll
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function serverNow() {
  return Date.now() + state.clockOffsetMs;
}

function hms(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toFixed(digits);
}

function compact(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

// ---- signing in -----------------------------------------------------------------------------
// The token lives in sessionStorage: it is gone with the tab, and no other site can read it.
// It goes with every request; reads need it only when the API listens beyond loopback, writes
// always (see docs/SECURITY.md).

const TOKEN_KEY = "faultline.token";

class NeedsToken extends Error {}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(url, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(url, { cache: "no-store", ...options, headers });
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    throw new NeedsToken(body.detail || "this needs a token");
  }
  return response;
}

async function getJSON(url, acceptStatuses = []) {
  const response = await api(url);
  if (!response.ok && !acceptStatuses.includes(response.status)) {
    throw new Error(`${url}: HTTP ${response.status}`);
  }
  return response.json();
}

function showSignIn(message, isError = false) {
  $("sign-in").hidden = false;
  const note = $("sign-in-message");
  note.textContent = message;
  note.className = isError ? "error" : "muted";
}

function showAuthState() {
  const signedIn = sessionStorage.getItem(TOKEN_KEY) !== null;
  $("auth-state").textContent = signedIn ? "signed in" : "not signed in";
  $("sign-in-toggle").hidden = signedIn;
  $("sign-out").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  // Checked against a read before it is kept: an unknown or revoked token is 401 everywhere.
  const response = await fetch("/api/stats", {
    cache: "no-store",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status === 401) {
    showSignIn("That token was refused: unknown or revoked.", true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  $("sign-in").hidden = true;
  showAuthState();
  loadModels().catch(showError); // the admin controls follow the token's role
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  showAuthState();
  loadModels().catch(showError);
}

// ---- header -------------------------------------------------------------------------------

async function loadStats() {
  const stats = await getJSON("/api/stats");
  state.clockOffsetMs = stats.now_ms - Date.now();
  if (state.sensors.length !== stats.sensors.length) {
    state.sensors = stats.sensors;
    buildCharts();
    buildAnomalyHead();
  }
  $("ingest-rate").textContent = `${fmt(stats.ingest_rate, 1)} /s`;
  $("station-count").textContent = compact(stats.stations);
  $("reading-count").textContent = compact(stats.readings);
  $("anomaly-count").textContent = compact(stats.anomalies);
  $("dead-letter-count").textContent = compact(stats.dead_letters);
  const model = $("model-version");
  if (stats.model_version) {
    model.textContent = `${stats.model_version.slice(0, 8)} · v${stats.registry_version}`;
    model.title = `${stats.model_name} version ${stats.registry_version}, run ${stats.model_version}`;
  } else {
    model.textContent = "none";
    model.title = "no model loaded";
  }
  $("server-time").textContent = hms(stats.now_ms);
}

async function loadHealth() {
  const health = await getJSON("/api/health", [503]);
  const pill = $("health");
  pill.textContent = health.status === "ok" ? "ok" : "degraded";
  pill.className = `pill ${health.status}`;
  const failing = Object.entries(health.components)
    .filter(([, c]) => c.status !== "ok")
    .map(([name, c]) => `${name}: ${c.detail}`);
  pill.title = failing.length ? failing.join("\n") : "all components ok";
}

// ---- stations -----------------------------------------------------------------------------

const tiles = new Map();

function tileFor(id) {
  let tile = tiles.get(id);
  if (!tile) {
    tile = el("button", { className: "station", type: "button", "data-station-id": id }, [
      el("div", { className: "station-id", text: id }),
      el("div", { className: "station-line" }, [
        el("span", { className: "station-status" }),
        el("span", { className: "station-meta" }),
      ]),
      el("div", { className: "station-alarm" }),
    ]);
    tile.addEventListener("click", () => select(id));
    tiles.set(id, tile);
  }
  return tile;
}

async function loadStations() {
  const body = await getJSON("/api/stations");
  const grid = $("stations");
  const picker = $("station-picker");
  if (body.stations.length === 0) return;
  const ids = body.stations.map((s) => s.station_id);
  if (grid.querySelector(".empty")) grid.textContent = "";
  body.stations.forEach((s, i) => {
    const tile = tileFor(s.station_id);
    tile.className = `station ${s.status}${s.station_id === state.selected ? " selected" : ""}`;
    tile.dataset.status = s.status;
    const status = s.status === "silent" ? `silent ${Math.round(s.silent_for_s)} s`
      : s.status.replace("_", " ");
    tile.querySelector(".station-status").textContent = status;
    tile.querySelector(".station-meta").textContent = s.anomalies ? compact(s.anomalies) : "";
    tile.title = `${s.station_id}: ${s.anomalies} anomalies in ${s.readings} readings; ` +
      `last reading ${s.last_record_time}`;
    showStationAlarm(tile, state.stationAlarms.get(s.station_id));
    if (grid.children[i] !== tile) grid.insertBefore(tile, grid.children[i] || null);
  });
  if (picker.options.length !== ids.length) {
    picker.textContent = "";
    for (const id of ids) picker.append(el("option", { value: id, text: id }));
  }
  if (state.selected === null || !ids.includes(state.selected)) select(ids[0]);
  picker.value = state.selected;
}

function select(id) {
  if (state.selected === id) return;
  state.selected = id;
  for (const [key, tile] of tiles) tile.classList.toggle("selected", key === id);
  $("station-picker").value = id;
  $("chart-station").textContent = id;
  state.series = { station: id, points: [], lastTs: null, loading: null };
  drawCharts();
  loadReadings().then(drawCharts, showError);
}

// ---- live chart ---------------------------------------------------------------------------

function loadReadings() {
  const series = state.series;
  if (series.station === null) return Promise.resolve();
  // One fetch per series at a time: a poll and a station switch must not both append.
  if (!series.loading) {
    series.loading = fetchReadings(series).finally(() => { series.loading = null; });
  }
  return series.loading;
}

async function fetchReadings(series) {
  const station = series.station;
  const base = `/api/stations/${encodeURIComponent(station)}/readings`;
  const from = series.lastTs === null ? serverNow() - WINDOW_MS : series.lastTs + 1;
  let url = `${base}?from=${encodeURIComponent(new Date(from).toISOString())}&limit=1000`;
  for (let page = 0; page < 10; page++) {
    const body = await getJSON(url);
    if (state.series !== series) return; // the operator picked another station meanwhile
    for (const r of body.readings) {
      const values = {};
      for (const s of state.sensors) values[s.name] = r[s.name];
      series.points.push({ ts: r.ts_ms, values, outlier: r.is_outlier, blamed: r.sensors });
      series.lastTs = Math.max(series.lastTs ?? 0, r.ts_ms);
    }
    if (!body.next_cursor) break;
    url = `${base}?from=${encodeURIComponent(body.from)}&to=${encodeURIComponent(body.to)}` +
      `&limit=1000&cursor=${encodeURIComponent(body.next_cursor)}`;
  }
  const horizon = serverNow() - WINDOW_MS - 10000;
  series.points = series.points.filter((p) => p.ts >= horizon);
  const charts = $("charts");
  charts.dataset.station = station;
  charts.dataset.points = String(series.points.length);
  charts.dataset.lastTs = String(series.lastTs ?? "");
}

function buildCharts() {
  const charts = $("charts");
  charts.textContent = "";
  for (const s of state.sensors) {
    const current = el("span", { className: "current", id: `current-${s.name}` });
    const title = el("div", { className: "chart-title" }, [
      el("span", { text: `${s.name.replace("_", " ")}${s.unit ? ` (${s.unit})` : ""}` }),
      current,
    ]);
    const canvas = el("canvas", { id: `chart-${s.name}` });
    charts.append(el("div", { className: "chart", "data-sensor": s.name }, [title, canvas]));
  }
}

function drawCharts() {
  const t1 = serverNow();
  const t0 = t1 - WINDOW_MS;
  const points = state.series.points.filter((p) => p.ts >= t0 && p.ts <= t1 + 60000);
  state.sensors.forEach((sensor, i) => {
    const canvas = $(`chart-${sensor.name}`);
    if (canvas) drawChart(canvas, sensor, points, t0, t1, SERIES_COLORS[i % SERIES_COLORS.length]);
    const last = points.length ? points[points.length - 1].values[sensor.name] : null;
    const current = $(`current-${sensor.name}`);
    if (current) current.textContent = last == null ? "–" : `${fmt(last)} ${sensor.unit}`;
  });
}

function drawChart(canvas, sensor, points, t0, t1, color) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  const pad = { left: 52, right: 10, top: 8, bottom: 20 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;

  const values = points.map((p) => p.values[sensor.name]).filter((v) => Number.isFinite(v));
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const margin = (hi - lo) * 0.12;
  lo -= margin; hi += margin;
  const x = (ts) => pad.left + ((ts - t0) / (t1 - t0)) * w;
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * h;

  g.fillStyle = "#0e1726";
  g.fillRect(pad.left, pad.top, w, h);
  g.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
  g.lineWidth = 1;

  // horizontal grid with value labels
  g.strokeStyle = "#1c2940";
  g.fillStyle = "#8393ab";
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(pad.left, yy); g.lineTo(pad.left + w, yy); g.stroke();
    g.fillText(v.toFixed(Math.abs(hi - lo) < 10 ? 1 : 0), pad.left - 6, yy);
  }
  // a vertical line every minute, labelled with the UTC time
  g.textAlign = "center";
  g.textBaseline = "top";
  for (let t = Math.ceil(t0 / 60000) * 60000; t <= t1; t += 60000) {
    const xx = Math.round(x(t)) + 0.5;
    g.beginPath(); g.moveTo(xx, pad.top); g.lineTo(xx, pad.top + h); g.stroke();
    g.fillText(hms(t).slice(0, 5), xx, pad.top + h + 4);
  }

  g.save();
  g.beginPath();
  g.rect(pad.left, pad.top, w, h);
  g.clip();
  // every anomalous reading: a faint band on all panels, so panels line up by eye
  g.strokeStyle = "rgba(244, 63, 94, 0.22)";
  for (const p of points) {
    if (!p.outlier) continue;
    const xx = Math.round(x(p.ts)) + 0.5;
    g.beginPath(); g.moveTo(xx, pad.top); g.lineTo(xx, pad.top + h); g.stroke();
  }
  // the signal, broken where the station was silent
  g.strokeStyle = color;
  g.lineWidth = 1.6;
  g.beginPath();
  let previous = null;
  for (const p of points) {
    const v = p.values[sensor.name];
    if (!Number.isFinite(v)) { previous = null; continue; }
    if (previous === null || p.ts - previous > GAP_MS) g.moveTo(x(p.ts), y(v));
    else g.lineTo(x(p.ts), y(v));
    previous = p.ts;
  }
  g.stroke();
  // markers where this sensor was blamed (or the reading blamed no sensor in particular)
  for (const p of points) {
    const v = p.values[sensor.name];
    if (!p.outlier || !Number.isFinite(v)) continue;
    const blamed = p.blamed.length === 0 || p.blamed.includes(sensor.name);
    g.beginPath();
    g.arc(x(p.ts), y(v), blamed ? 4 : 2.5, 0, 2 * Math.PI);
    if (blamed) {
      g.fillStyle = "#f43f5e";
      g.fill();
      g.strokeStyle = "#fff1f2";
      g.lineWidth = 1;
      g.stroke();
    } else {
      g.strokeStyle = "#f43f5e";
      g.lineWidth = 1;
      g.stroke();
    }
  }
  g.restore();
  if (values.length === 0) {
    g.fillStyle = "#8393ab";
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.fillText("no readings in the last 5 minutes", pad.left + w / 2, pad.top + h / 2);
  }
}

// ---- latest anomalies ---------------------------------------------------------------------

function buildAnomalyHead() {
  const head = $("anomalies-head");
  head.textContent = "";
  head.append(el("th", { text: "Time (UTC)" }), el("th", { text: "Station" }),
    el("th", { text: "Responsible" }));
  for (const s of state.sensors) {
    head.append(el("th", { className: "num", text: `${s.name.replace("_", " ")} ${s.unit}` }));
  }
  head.append(el("th", { text: "Model" }));
}

async function loadAnomalies() {
  const rows = await getJSON("/api/latest_anomalies?limit=12");
  const body = $("anomalies-body");
  const seen = new Set();
  const fresh = [];
  body.textContent = "";
  if (rows.length === 0) {
    body.append(el("tr", { className: "empty-row" },
      [el("td", { colSpan: 4 + state.sensors.length, text: "No anomalies yet." })]));
  }
  for (const r of rows) {
    const key = `${r.station_id}/${r.ts_ms}/${r.seq}`;
    seen.add(key);
    const tags = el("td", {}, r.sensors.length
      ? r.sensors.map((s) => el("span", { className: "tag", text: s }))
      : [el("span", { className: "muted", text: "–" })]);
    const cells = [
      el("td", { className: "mono", text: r.record_time.slice(11, 23) }),
      el("td", { className: "mono", text: r.station_id }),
      tags,
    ];
    for (const s of state.sensors) {
      const blamed = r.sensors.includes(s.name);
      cells.push(el("td", { className: blamed ? "num blamed" : "num", text: fmt(r[s.name]) }));
    }
    cells.push(el("td", { className: "mono muted", text: r.mlflow_id.slice(0, 8) || "–" }));
    const tr = el("tr", { "data-station-id": r.station_id, "data-ts": String(r.ts_ms) }, cells);
    tr.title = `${r.record_time} · scores ${JSON.stringify(r.scores)}`;
    tr.addEventListener("click", () => select(r.station_id));
    if (state.knownAnomalies !== null && !state.knownAnomalies.has(key)) fresh.push(tr);
    body.append(tr);
  }
  for (const tr of fresh) tr.classList.add("fresh");
  state.knownAnomalies = seen;
}

// ---- alarms -------------------------------------------------------------------------------
// The table keeps one row per alarm and updates it in place, so a click or a chosen shelving
// duration survives the next poll.

const alarmRows = new Map();

function alarmUrl(id, action = "") {
  // Ids hold "|", which a URL path may not: percent-encoded, as the API documents.
  return `/api/alarms/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
}

function alarmOrder(a, b) {
  return (b.active - a.active) || (a.acknowledged - b.acknowledged) ||
    (SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity]) || (b.changed_at_ms - a.changed_at_ms);
}

function alarmMessage(text, isError = false) {
  const note = $("alarm-message");
  note.textContent = text;
  note.className = `alarm-message ${isError ? "error" : "muted"}`;
}

function refusal(answer, status) {
  // The API's reason: a sentence (401, 403, 404, 409), or a validation error's list (422).
  if (typeof answer.detail === "string") return answer.detail;
  if (Array.isArray(answer.detail)) return answer.detail.map((d) => d.msg).join("; ");
  return `HTTP ${status}`;
}

// One operator action on an alarm; what came of it ({ ok, message }), or null when the
// operator was asked to sign in first.
async function act(alarm, action, body = {}) {
  if (sessionStorage.getItem(TOKEN_KEY) === null) {
    showSignIn("Sign in with an operator token to handle alarms.");
    return null;
  }
  const row = alarmRows.get(alarm.id);
  const detail = alarmDetails.get(alarm.id);
  const buttons = [...row.querySelectorAll("button"), ...(detail?.querySelectorAll("button") ?? [])];
  for (const button of buttons) button.disabled = true;
  try {
    const response = await api(alarmUrl(alarm.id, action), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      const done = {
        ack: "acknowledged", shelve: "shelved", unshelve: "unshelved", comment: "commented",
      }[action];
      const message = `${alarm.id} ${done}.`;
      alarmMessage(message);
      updateAlarmRow(row, answer);
      const open = alarmDetails.get(alarm.id);
      if (open) showHistory(open, answer); // every action answers with the alarm's history
      return { ok: true, message };
    }
    const message = `${alarm.id}: ${refusal(answer, response.status)}`;
    alarmMessage(message, true);
    return { ok: false, message };
  } catch (error) {
    showError(error);
    return { ok: false, message: error.message };
  } finally {
    for (const button of buttons) button.disabled = false;
    loadAlarms().catch(showError);
  }
}

function alarmRowFor(alarm) {
  let row = alarmRows.get(alarm.id);
  if (row) return row;
  const ack = el("button", { className: "act ack", type: "button", text: "Acknowledge" });
  const choice = el("select", { className: "shelve-for", title: "How long to shelve it" });
  for (const [label, minutes] of SHELVE_CHOICES) {
    choice.append(el("option", { value: String(minutes), text: label }));
  }
  const shelveButton = el("button", { className: "act shelve", type: "button", text: "Shelve" });
  const unshelveButton = el("button", { className: "act unshelve", type: "button", text: "Unshelve" });
  row = el("tr", { className: "alarm", "data-alarm-id": alarm.id }, [
    el("td", {}, [el("span", { className: "sev" })]),
    el("td", { className: "mono alarm-station" }),
    el("td", {}, [
      el("span", { className: "alarm-what" }),
      el("button", {
        className: "link details", type: "button", text: "history", title: "History and comments",
      }),
    ]),
    el("td", { className: "alarm-state" }),
    el("td", { className: "mono alarm-since" }),
    el("td", { className: "alarm-sensors" }),
    el("td", {}, [el("span", { className: "alarm-acked" }), ack]),
    el("td", {}, [el("div", { className: "alarm-actions" },
      [el("span", { className: "alarm-shelved" }), choice, shelveButton, unshelveButton])]),
  ]);
  // The row's alarm is looked up at click time: the row outlives the poll that made it.
  const current = () => row.alarm;
  ack.addEventListener("click", () => act(current(), "ack"));
  shelveButton.addEventListener("click", () => {
    const until = new Date(serverNow() + Number(choice.value) * 60000).toISOString();
    act(current(), "shelve", { until });
  });
  unshelveButton.addEventListener("click", () => act(current(), "unshelve"));
  row.querySelector("button.details").addEventListener("click", () => toggleDetail(row));
  row.querySelector("button.details").setAttribute("aria-expanded", "false");
  alarmRows.set(alarm.id, row);
  return row;
}

function updateAlarmRow(row, a) {
  row.alarm = a;
  row.className = ["alarm", a.active ? "active" : "cleared", a.acknowledged ? "acked" : "unacked",
    a.shelved ? "shelved" : ""].join(" ").trim();
  row.dataset.active = String(a.active);
  row.dataset.acknowledged = String(a.acknowledged);
  row.dataset.shelved = String(a.shelved);
  row.dataset.severity = a.severity;
  const sev = row.querySelector(".sev");
  sev.className = `sev ${a.severity}`;
  sev.textContent = a.severity;
  row.querySelector(".alarm-station").textContent = a.station_id;
  row.querySelector(".alarm-what").textContent = a.kind === "silent" ? "silent (no readings)"
    : `${a.kind}${a.sensor === "*" ? "" : ` · ${a.sensor}`}`;
  row.querySelector(".alarm-state").textContent = a.active ? "active"
    : `cleared ${a.cleared_at ? a.cleared_at.slice(11, 19) : ""}`;
  row.querySelector(".alarm-since").textContent = a.activated_at ? a.activated_at.slice(11, 19) : "–";
  row.querySelector(".alarm-since").title = a.activated_at || "";
  const sensors = row.querySelector(".alarm-sensors");
  sensors.textContent = "";
  if (a.sensors.length === 0) sensors.append(el("span", { className: "muted", text: "–" }));
  for (const s of a.sensors) {
    sensors.append(el("span", { className: "tag", text: `${s.sensor} ${Math.round(s.share * 100)}%` }));
  }
  const acked = row.querySelector(".alarm-acked");
  acked.textContent = a.acknowledged
    ? `${a.acknowledgement.by} ${a.acknowledgement.at.slice(11, 19)}` : "";
  row.querySelector("button.ack").hidden = a.acknowledged;
  row.querySelector(".alarm-shelved").textContent = a.shelved
    ? `until ${a.shelved_until.slice(11, 16)} (${a.shelved_by})` : "";
  row.querySelector("select.shelve-for").hidden = a.shelved;
  row.querySelector("button.shelve").hidden = a.shelved;
  row.querySelector("button.unshelve").hidden = !a.shelved;
}

// ---- one alarm's history and comments -----------------------------------------------------
// Opened from its row: a second row beneath it with every transition (GET /api/alarms/{id})
// and a box for a comment. Drawn when opened, from the answer to each action, and again when a
// poll shows the alarm changed.

const alarmDetails = new Map(); // alarm id -> its open details row

function shares(sensors) {
  return sensors.map((s) => `${s.sensor} ${Math.round(s.share * 100)}%`).join(", ");
}

function historyWhat(h) {
  if (h.action === "raise" || h.action === "escalate") {
    return h.sensors.length ? `${h.severity} · ${shares(h.sensors)}` : h.severity;
  }
  if (h.action === "shelve") return `until ${h.until.slice(0, 16).replace("T", " ")}`;
  return h.comment;
}

function showHistory(detail, alarm) {
  const list = detail.querySelector(".alarm-history");
  list.textContent = "";
  for (const h of alarm.history) {
    list.append(el("li", { "data-action": h.action, "data-key": h.key }, [
      el("span", { className: "mono history-at", text: h.at.slice(0, 19).replace("T", " ") }),
      el("span", { className: `history-action ${h.action}`, text: h.action }),
      el("span", { className: "history-by", text: h.by }),
      el("span", { className: "history-what", text: historyWhat(h) }),
    ]));
  }
  if (alarm.history.length === 0) list.append(el("li", { className: "empty", text: "no history" }));
  detail.dataset.entries = String(alarm.history.length);
  detail.dataset.changedAtMs = String(alarm.changed_at_ms);
}

async function loadDetail(id) {
  const detail = alarmDetails.get(id);
  if (!detail) return;
  const response = await api(alarmUrl(id));
  if (alarmDetails.get(id) !== detail) return; // closed meanwhile
  if (response.status === 404) {
    closeDetail(id); // gone from the store: nothing left to show
    return;
  }
  if (!response.ok) throw new Error(`${alarmUrl(id)}: HTTP ${response.status}`);
  showHistory(detail, await response.json());
}

function closeDetail(id) {
  const detail = alarmDetails.get(id);
  if (!detail) return;
  detail.remove();
  alarmDetails.delete(id);
  const button = alarmRows.get(id)?.querySelector("button.details");
  if (button) {
    button.setAttribute("aria-expanded", "false");
    button.textContent = "history";
  }
}

function toggleDetail(row) {
  const id = row.alarm.id;
  if (alarmDetails.has(id)) {
    closeDetail(id);
    return;
  }
  const text = el("input", {
    className: "comment-text", type: "text", autocomplete: "off", placeholder: "Add a comment…",
  });
  const note = el("span", { className: "comment-message muted" });
  const form = el("form", { className: "comment-form" }, [
    text, el("button", { className: "act comment", type: "submit", text: "Comment" }), note,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    const outcome = await act(row.alarm, "comment", { text: value });
    if (outcome === null) return;
    note.textContent = outcome.message;
    note.className = `comment-message ${outcome.ok ? "muted" : "error"}`;
    if (outcome.ok) text.value = "";
  });
  const detail = el("tr", { className: "alarm-detail", "data-detail-for": id }, [
    el("td", { colSpan: 8 }, [
      el("ol", { className: "alarm-history" }, [el("li", { className: "empty", text: "loading…" })]),
      form,
    ]),
  ]);
  alarmDetails.set(id, detail);
  row.after(detail);
  const button = row.querySelector("button.details");
  button.setAttribute("aria-expanded", "true");
  button.textContent = "hide history";
  loadDetail(id).catch(showError);
}

function summariseStations(alarms) {
  // Per station: its worst active alarm (shelved ones count only when nothing else is active)
  // and whether any of its alarms waits for an acknowledgement.
  const weight = (a) => (a.shelved ? 0 : 100) + 10 * SEVERITY_RANK[a.severity] +
    (a.kind === "silent" ? 1 : 0);
  const out = new Map();
  for (const a of alarms) {
    const s = out.get(a.station_id) || { worst: null, unacked: false };
    if (!a.acknowledged) s.unacked = true;
    if (a.active && (s.worst === null || weight(a) > weight(s.worst))) s.worst = a;
    out.set(a.station_id, s);
  }
  return out;
}

function showStationAlarm(tile, summary) {
  const badge = tile.querySelector(".station-alarm");
  const worst = summary?.worst;
  if (!worst) {
    delete tile.dataset.alarm;
    delete tile.dataset.alarmKind;
    delete tile.dataset.alarmShelved;
    badge.textContent = "";
  } else {
    tile.dataset.alarm = worst.severity;
    tile.dataset.alarmKind = worst.kind;
    tile.dataset.alarmShelved = String(worst.shelved);
    const what = worst.kind === "silent" ? `silent since ${worst.activated_at.slice(11, 16)}`
      : `${worst.severity} alarm`;
    badge.textContent = worst.shelved ? `${what} · shelved` : what;
  }
  tile.dataset.alarmUnacked = String(Boolean(summary?.unacked));
}

async function loadAlarms() {
  const body = await getJSON("/api/alarms?limit=200");
  const alarms = body.alarms.slice().sort(alarmOrder).slice(0, ALARM_ROWS);
  const table = $("alarms-body");
  const ids = new Set(alarms.map((a) => a.id));
  for (const [id, row] of alarmRows) {
    if (!ids.has(id)) { row.remove(); alarmRows.delete(id); closeDetail(id); }
  }
  if (alarms.length === 0) {
    if (!table.querySelector(".empty-row")) {
      table.append(el("tr", { className: "empty-row" }, [el("td", { colSpan: 8, text: "No alarms." })]));
    }
  } else {
    table.querySelector(".empty-row")?.remove();
  }
  let position = 0;
  const place = (node) => {
    if (table.children[position] !== node) table.insertBefore(node, table.children[position] || null);
    position += 1;
  };
  for (const a of alarms) {
    const row = alarmRowFor(a);
    updateAlarmRow(row, a);
    place(row);
    const detail = alarmDetails.get(a.id);
    if (detail) {
      place(detail);
      // Changed since its history was drawn (another operator, or the engine): draw it anew.
      if (detail.dataset.changedAtMs !== String(a.changed_at_ms)) loadDetail(a.id).catch(showError);
    }
  }
  table.dataset.alarms = String(alarms.length);
  state.stationAlarms = summariseStations(body.alarms);
  for (const [id, tile] of tiles) showStationAlarm(tile, state.stationAlarms.get(id));
}

// ---- alarm load ---------------------------------------------------------------------------

function listInto(list, items) {
  list.textContent = "";
  if (items.length === 0) list.append(el("li", { className: "empty", text: "none" }));
  for (const [text, count] of items) {
    list.append(el("li", {}, [text, el("span", { className: "count", text: count })]));
  }
}

async function loadAlarmLoad() {
  const load = await getJSON("/api/alarms/load");
  $("load-period").textContent = `${load.from.slice(5, 16).replace("T", " ")} – ` +
    `${load.to.slice(5, 16).replace("T", " ")} UTC`;
  $("load-activations").textContent = compact(load.activations);
  $("load-peak").textContent = String(load.peak_10_minutes);
  $("load-chattering").textContent = String(load.chattering.length);
  $("load-chattering").title = load.chattering.map((a) => a.id).join("\n") || "none";
  $("load-standing").textContent = String(load.standing.length);
  listInto($("bad-actors"), load.bad_actors.map((b) => [b.alarm.id, `×${b.activations}`]));
  listInto($("standing"), load.standing.map((s) => [s.alarm.id, `since ${s.active_since.slice(0, 16)}`]));
  const days = load.per_station_day.slice().sort((a, b) => b.activations - a.activations).slice(0, 5);
  listInto($("station-days"), days.map((d) => [`${d.station_id} ${d.day}`, `×${d.activations}`]));
  drawLoadChart($("load-chart"), load.per_10_minutes);
  $("load-chart").dataset.windows = String(load.per_10_minutes.length);
}

function drawLoadChart(canvas, counts) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0 || counts.length === 0) return;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.fillStyle = "#0e1726";
  g.fillRect(0, 0, width, height);
  const top = Math.max(2, ...counts);
  const bar = width / counts.length;
  // ISA-18.2's "manageable": about one alarm per 10 minutes; more is drawn in warning colours.
  counts.forEach((n, i) => {
    if (n === 0) return;
    const h = (n / top) * (height - 4);
    g.fillStyle = n > 2 ? "#f43f5e" : n > 1 ? "#f59e0b" : "#38bdf8";
    g.fillRect(i * bar, height - h, Math.max(1, bar - 0.5), h);
  });
  g.strokeStyle = "#475569";
  g.setLineDash([3, 3]);
  const y = height - (1 / top) * (height - 4);
  g.beginPath(); g.moveTo(0, y); g.lineTo(width, y); g.stroke();
}

// ---- models -------------------------------------------------------------------------------
// GET /api/models: the serving version, the challengers with their gate, the latest drift per
// sensor and the champion history. The admin controls show only when the token sent is admin
// (the answer's caller_role); the API checks the role again on every action.

function modelMessage(text, isError = false) {
  const note = $("model-message");
  note.textContent = text;
  note.className = `model-message ${isError ? "error" : "muted"}`;
}

function gateText(gate) {
  if (!gate) return el("span", { className: "gate-none", text: "not gated" });
  return el("span", {
    className: gate.passed ? "gate-passed" : "gate-failed",
    text: gate.passed ? "gate passed" : "gate failed",
  });
}

// One administrative action; refreshes the panel with what it changed.
async function modelAction(url, body, done) {
  if (sessionStorage.getItem(TOKEN_KEY) === null) {
    showSignIn("Sign in with an admin token to change models.");
    return;
  }
  const buttons = [...$("models-panel").querySelectorAll("button")];
  for (const button of buttons) button.disabled = true;
  try {
    const response = await api(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) modelMessage(done(answer));
    else modelMessage(refusal(answer, response.status), true);
  } catch (error) {
    showError(error);
  } finally {
    for (const button of buttons) button.disabled = false;
    loadModels().catch(showError);
  }
}

function reason() {
  const text = $("model-reason").value.trim();
  if (!text) {
    modelMessage("Give a reason first: it is kept in the champion history.", true);
    $("model-reason").focus();
  }
  return text;
}

function promote(version) {
  const why = reason();
  if (!why) return;
  modelAction(`/api/models/${encodeURIComponent(version)}/promote`, { reason: why },
    (c) => `Version ${c.to_version} now serves (was ${c.from_version ?? "none"}).`);
}

function rollback() {
  const why = reason();
  if (!why) return;
  modelAction("/api/models/rollback", { reason: why },
    (c) => `Rolled back: version ${c.to_version} serves again (was ${c.from_version}).`);
}

function retrain() {
  modelAction("/api/models/retrain", {}, (job) => `Retraining started (job ${job.id.slice(0, 8)}).`);
}

function showJob(job) {
  const line = $("model-job");
  state.modelJobBusy = Boolean(job && (job.state === "queued" || job.state === "running"));
  line.dataset.state = job ? job.state : "";
  if (!job) { line.textContent = ""; return; }
  const what = job.state === "done" ? `done: version ${job.result.version}` +
      (job.gate ? ` (${job.gate.passed ? "gate passed" : "gate failed"})` : "")
    : job.state === "failed" ? `failed: ${job.error}` : job.state;
  line.textContent = `retrain job ${job.id.slice(0, 8)} ${what}`;
  line.title = job.gate ? job.gate.reason : (job.error || "");
}

function showDrift(drift) {
  const body = $("model-drift-body");
  body.textContent = "";
  const score = $("model-score-drift");
  if (!drift) {
    body.append(el("tr", { className: "empty-row" }, [el("td", { colSpan: 4, text: "not checked yet" })]));
    score.textContent = "";
    $("model-checked").textContent = "no drift check yet";
    return;
  }
  const sensors = Object.entries(drift.sensors);
  if (sensors.length === 0) {
    body.append(el("tr", { className: "empty-row" }, [el("td", { colSpan: 4, text: drift.message })]));
  }
  for (const [name, d] of sensors) {
    body.append(el("tr", { "data-sensor": name, "data-drifted": String(d.drifted) }, [
      el("td", { text: name.replace("_", " ") }),
      el("td", { className: "num", text: fmt(d.shift) }),
      el("td", { className: "num", text: fmt(d.psi) }),
      el("td", { className: d.drifted ? "drifted" : "", text: d.drifted ? "yes" : "no" }),
    ]));
  }
  score.textContent = drift.score
    ? `Anomaly rate ${(100 * drift.score.anomaly_rate).toFixed(2)} % against ` +
      `${(100 * drift.score.expected_rate).toFixed(2)} % expected: ` +
      (drift.score.drifted ? "score drift" : "no score drift")
    : "";
  score.dataset.drifted = String(Boolean(drift.score?.drifted));
  const checked = $("model-checked");
  checked.textContent = `${drift.drift_detected ? "drift" : "no drift"} · checked ` +
    `${drift.checked_at.slice(0, 16).replace("T", " ")} UTC against v${drift.model_version}`;
  checked.dataset.driftDetected = String(drift.drift_detected);
}

async function loadModels() {
  const models = await getJSON("/api/models");
  const panel = $("models-panel");
  const admin = models.available && models.caller_role === "admin";
  panel.dataset.champion = models.champion ?? "";
  panel.dataset.admin = String(admin);
  $("model-admin").hidden = !admin;
  const byVersion = new Map(models.versions.map((v) => [v.version, v]));
  const serving = byVersion.get(models.champion);
  $("model-serving").textContent = !models.available ? models.detail
    : serving ? `v${serving.version} · ${serving.run_id.slice(0, 8)} · trained ` +
      `${serving.trained_at.slice(0, 16).replace("T", " ")} · compiled: ${serving.compiled}`
    : "no champion";
  const list = $("model-challengers");
  list.textContent = "";
  for (const version of models.challengers) {
    const v = byVersion.get(version);
    const item = el("li", { "data-version": version, "data-gate": v.gate ? String(v.gate.passed) : "" }, [
      el("span", { className: "mono", text: `v${version}` }),
      gateText(v.gate),
      el("span", { className: "gate-reason", text: v.gate ? v.gate.reason : "" }),
    ]);
    if (admin) {
      const button = el("button", { className: "act promote", type: "button", text: "Promote" });
      button.addEventListener("click", () => promote(version));
      item.append(button);
    }
    list.append(item);
  }
  if (models.challengers.length === 0) list.append(el("li", { className: "empty", text: "none" }));
  showDrift(models.drift);
  const history = $("model-history");
  history.textContent = "";
  for (const c of models.history) {
    history.append(el("li", { "data-operation": c.operation }, [
      el("span", { className: "mono history-at", text: c.at.slice(0, 16).replace("T", " ") }),
      el("span", { className: `history-action ${c.operation}`, text: c.operation }),
      el("span", { className: "mono", text: `v${c.from_version ?? "–"} → v${c.to_version}` }),
      el("span", { className: "history-by", text: c.actor }),
      el("span", { className: "history-what", text: c.reason }),
    ]));
  }
  if (models.history.length === 0) history.append(el("li", { className: "empty", text: "none" }));
  history.dataset.entries = String(models.history.length);
  showJob(models.job);
}

// ---- polling ------------------------------------------------------------------------------

function showError(error) {
  if (error instanceof NeedsToken) {
    if (sessionStorage.getItem(TOKEN_KEY) !== null) signOut(); // revoked meanwhile
    showSignIn(`This Faultline needs a token to show its data: ${error.message}`);
    return;
  }
  const banner = $("banner");
  banner.hidden = false;
  banner.textContent = `Lost contact with the Faultline API (${error.message}); retrying…`;
}

async function poll() {
  try {
    await loadStats();
    const work = [loadAlarms(), loadStations(), loadAnomalies(), loadReadings()];
    if (state.polls % HEALTH_EVERY === 0) work.push(loadHealth());
    if (state.polls % LOAD_EVERY === 0) work.push(loadAlarmLoad());
    if (state.modelJobBusy || state.polls % MODELS_EVERY === 0) work.push(loadModels());
    await Promise.all(work);
    $("banner").hidden = true;
    drawCharts();
  } catch (error) {
    showError(error);
  }
  state.polls += 1;
  setTimeout(poll, POLL_MS);
}

$("station-picker").addEventListener("change", (event) => select(event.target.value));
$("sign-in").addEventListener("submit", signIn);
$("sign-in-toggle").addEventListener("click", () => showSignIn("A token from `faultline token create`; kept in this tab only."));
$("sign-out").addEventListener("click", signOut);
$("model-retrain").addEventListener("click", retrain);
$("model-rollback").addEventListener("click", rollback);
showAuthState();
window.addEventListener("resize", drawCharts);
poll();
