// The review page: a gallery of evidence for a time range, marks that need a login.
"use strict";

const $ = (id) => document.getElementById(id);

function say(text, bad) {
  $("message").textContent = text;
  $("message").className = "message" + (bad ? " bad" : "");
}

function seconds(input, fallback) {
  return input.value ? new Date(input.value).getTime() / 1000 : fallback;
}

async function load() {
  const since = seconds($("since"), 0), until = seconds($("until"), 1e12);
  const r = await fetch(`/api/parts?since=${since}&until=${until}`);
  const body = await r.json();
  if (!r.ok) return say(body.error, true);
  const gallery = $("gallery");
  gallery.textContent = "";
  for (const p of body.parts) gallery.appendChild(card(p));
  $("log").textContent = body.log.map((e) =>
    `${new Date(e.t * 1000).toLocaleString()}  ${e.user}  ${e.mark}  ${e.label}  ${e.name}  score ${e.score}  model ${e.model}`).join("\n");
  if (!body.parts.length) say("no parts to review in this time range");
}

function card(p) {
  const div = document.createElement("div");
  div.className = "part";
  div.dataset.name = p.name;
  div.dataset.kind = p.kind;
  const img = document.createElement("img");
  img.src = `/evidence/${p.kind}/${encodeURIComponent(p.name)}${p.overlay ? "" : "?raw=1"}`;
  img.alt = p.name;
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = p.score === null ? "?" : p.score.toFixed(4);
  meta.textContent = `${p.kind.toUpperCase()} ${new Date(p.t * 1000).toLocaleString()} score ${score} ${p.name}`;
  div.append(img, meta);
  if (!p.reviewable) {
    const note = document.createElement("div");
    note.className = "meta";
    note.textContent = "no judged image kept (evidence.raw: false): cannot be moved into review/";
    div.appendChild(note);
    return div;
  }
  const good = document.createElement("button");
  good.textContent = "Good part (false reject)";
  good.className = "mark-good";
  good.onclick = () => mark(p, "good", null, div);
  const type = document.createElement("input");
  type.placeholder = "defect type (optional)";
  type.className = "defect-type";
  type.size = 16;
  const bad = document.createElement("button");
  bad.textContent = "Defect confirmed";
  bad.className = "mark-defect";
  bad.onclick = () => mark(p, "defect", type.value.trim() || null, div);
  div.append(good, type, bad);
  return div;
}

async function mark(p, how, defectType, div) {
  const r = await fetch("/api/mark", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ kind: p.kind, name: p.name, mark: how, defect_type: defectType }),
  });
  const body = await r.json();
  if (!r.ok) return say(body.error, true);
  say(`moved to ${body.moved_to}`);
  div.remove();
  load();
}

$("login").onsubmit = async (e) => {
  e.preventDefault();
  const form = Object.fromEntries(new FormData($("login")));
  const r = await fetch("/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(form) });
  const body = await r.json();
  if (!r.ok) return say(body.error, true);
  $("user").textContent = body.user;
  $("login").hidden = true;
  $("who").hidden = false;
  say("logged in");
};

$("logout").onclick = async () => {
  await fetch("/logout", { method: "POST" });
  $("login").hidden = false;
  $("who").hidden = true;
  say("logged out");
};

$("preview").onclick = async () => {
  say("scoring the reviewed parts…");
  const r = await fetch("/api/preview", { method: "POST" });
  const body = await r.json();
  if (!r.ok) return say(body.error, true);
  say("");
  const pct = (n, d) => (d ? ((100 * n) / d).toFixed(1) + " %" : "–");
  $("preview-result").textContent = [
    `k = ${body.k}: threshold now ${body.threshold_now.toFixed(4)}, after recalibrating ${body.threshold_new.toFixed(4)}`,
    `reviewed good parts: ${body.good}; rejected now ${body.false_rejects_now} (${pct(body.false_rejects_now, body.good)}), ` +
      `after ${body.false_rejects_new} (${pct(body.false_rejects_new, body.good)})`,
    `confirmed defects: ${body.defects}; let through now ${body.missed_now}, after ${body.missed_new}`,
    ...body.warnings.map((w) => "warning: " + w),
    "Nothing is applied: run edge-calibrate --data <review_dir>/good to do it.",
  ].join("\n");
};

$("load").onclick = load;
load();
