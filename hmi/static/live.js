// The live page: one EventSource; every message is the whole state, drawn anew.
"use strict";

const cameras = document.getElementById("cameras");
const template = document.getElementById("camera-template");
const conn = document.getElementById("conn");
const views = new Map();

function fmt(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function view(cam) {
  let el = views.get(cam.topic);
  if (!el) {
    if (!views.size) cameras.textContent = "";
    el = template.content.firstElementChild.cloneNode(true);
    el.id = "cam-" + cam.station;
    el.dataset.topic = cam.topic;
    cameras.appendChild(el);
    views.set(cam.topic, el);
  }
  return el;
}

function drawChart(canvas, scores, threshold) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 6;
  ctx.clearRect(0, 0, w, h);
  const values = scores.map((s) => s[1]).filter((v) => v !== null);
  if (threshold !== null && threshold !== undefined) values.push(threshold);
  if (!values.length) return;
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const span = hi - lo;
  lo -= span * 0.08; hi += span * 0.08;
  const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  const x = (i) => pad + (i / Math.max(scores.length - 1, 1)) * (w - 2 * pad);
  if (threshold !== null && threshold !== undefined) {
    ctx.strokeStyle = "#e0a000"; ctx.lineWidth = 2; ctx.setLineDash([8, 6]);
    ctx.beginPath(); ctx.moveTo(pad, y(threshold)); ctx.lineTo(w - pad, y(threshold)); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#e0a000"; ctx.font = "14px sans-serif"; ctx.fillText("threshold " + fmt(threshold, 3), pad + 4, y(threshold) - 4);
  }
  ctx.strokeStyle = "#7aa7ff"; ctx.lineWidth = 1.5; ctx.beginPath();
  let started = false;
  scores.forEach((s, i) => {
    if (s[1] === null) return;
    if (!started) { ctx.moveTo(x(i), y(s[1])); started = true; } else ctx.lineTo(x(i), y(s[1]));
  });
  ctx.stroke();
  scores.forEach((s, i) => {
    if (s[2] === "OK") return;
    ctx.fillStyle = s[2] === "NG" ? "#ff4d4d" : "#c084fc";
    const yy = s[1] === null ? pad + 4 : y(s[1]);
    ctx.beginPath(); ctx.arc(x(i), yy, 4, 0, 2 * Math.PI); ctx.fill();
  });
}

function render(cam) {
  const el = view(cam);
  const c = cam.counters || {};
  el.querySelector(".station").textContent = cam.station;
  const source = cam.source || {};
  const camstate = el.querySelector(".camstate");
  camstate.textContent = "camera " + (source.state || "unknown") + " · daemon " + cam.state;
  camstate.className = "camstate " + (source.state === "streaming" ? "up" : "down");
  el.querySelector(".model").textContent = cam.model ? "model " + cam.model : "";
  const verdict = el.querySelector(".verdict");
  const last = cam.last;
  verdict.textContent = last ? last.verdict + "  #" + last.seq : "—";
  verdict.className = "verdict " + (last ? last.verdict.toLowerCase() : "");
  verdict.dataset.verdict = last ? last.verdict : "";
  el.querySelector(".judged").textContent = cam.judged;
  el.querySelector(".frames-in").textContent = c.frames_in ?? 0;
  const shift = cam.shift;
  el.querySelector(".shift-since").textContent = shift.since ? "This shift, since " + shift.since : "This shift";
  el.querySelector(".n-ok").textContent = shift.ok;
  el.querySelector(".n-ng").textContent = shift.ng;
  el.querySelector(".n-error").textContent = shift.error;
  el.querySelector(".yield").textContent = shift.yield === null ? "–" : fmt(shift.yield * 100, 1) + " %";
  el.querySelector(".rate").textContent = fmt(cam.parts_per_s, 1);
  const lat = cam.latency_ms || {};
  el.querySelector(".latency").textContent = fmt(lat.p50, 0) + " / " + fmt(lat.p99, 0) + " ms";
  el.querySelector(".drift").textContent = fmt((cam.drift || {}).z, 2);
  const img = el.querySelector(".last-image");
  if (cam.image && img.dataset.id !== cam.image.id) {
    img.src = "/image/" + cam.image.id;
    img.dataset.id = cam.image.id;
    img.dataset.verdict = cam.image.verdict;
    el.querySelector(".last-caption").textContent =
      cam.image.verdict + " #" + cam.image.seq + " score " + fmt(cam.image.score, 3) + " / threshold " + fmt(cam.image.threshold, 3);
  }
  const strip = el.querySelector(".strip");
  const ids = cam.ng_strip.map((p) => p.id).join(",");
  if (strip.dataset.ids !== ids) {
    strip.dataset.ids = ids;
    strip.textContent = "";
    for (const p of cam.ng_strip) {
      const t = document.createElement("img");
      t.src = "/image/" + p.id; t.alt = "NG #" + p.seq; t.title = "NG #" + p.seq + " score " + fmt(p.score, 3);
      t.className = "thumb";
      strip.appendChild(t);
    }
  }
  drawChart(el.querySelector(".chart"), cam.scores, cam.threshold);
}

function renderAlarms(state) {
  const box = document.getElementById("alarms");
  box.textContent = "";
  for (const cam of state.cameras) {
    for (const text of cam.alarms) {
      const a = document.createElement("div");
      a.className = "alarm";
      a.textContent = "⚠ ALARM " + cam.station + ": " + text;
      box.appendChild(a);
    }
  }
}

const source = new EventSource("/events");
source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
source.onerror = () => { conn.textContent = "connection lost, retrying…"; conn.className = "conn lost"; };
source.onmessage = (e) => {
  const state = JSON.parse(e.data);
  state.cameras.forEach(render);
  renderAlarms(state);
  conn.textContent = "live · " + new Date(state.t * 1000).toLocaleTimeString();
};
