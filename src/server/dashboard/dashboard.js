// The Proto dashboard: reads /api/v1 with the token kept in this tab's sessionStorage
// (pasted once, or given as #token=... in the address, which is then removed), and follows
// /api/v1/events/stream for live updates. No framework, no build step.
"use strict";

const API = "/api/v1";
const KEY = "proto.token";
const $ = (id) => document.getElementById(id);

function takeTokenFromAddress() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = sessionStorage.getItem(KEY);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(API + path, opts);
  if (res.status === 401 || res.status === 403) throw new Unauthorized(res.status + "");
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.classList.toggle("hidden", !text);
}

const usd = (v) => "$" + (v || 0).toFixed(v >= 100 ? 0 : 2);
const time = (t) => (t ? new Date(t).toLocaleTimeString() : "");

// ---- company and the kill switch ----------------------------------------------------

let stopped = null;

async function loadCompany() {
  const c = await api("/company");
  $("company").textContent = c.name || "Proto";
  document.title = (c.name || "Proto") + " · Proto";
  $("revision").textContent = (c.revision || "").slice(0, 12) + " · " + c.branch;
  stopped = c.stopped;
  if (!startAfter) startAfter = Math.max(0, (c.lastEventId || 0) - 50);
  const state = $("state");
  state.textContent = stopped ? "stopped: " + stopped.reason : c.suspended ? "suspended" : "running";
  state.className = "pill " + (stopped ? "stopped" : "running");
  const kill = $("kill");
  kill.disabled = false;
  kill.textContent = stopped ? "Resume" : "Stop everything";
  kill.className = stopped ? "go" : "danger";
}

async function kill() {
  const button = $("kill");
  button.disabled = true;
  try {
    if (stopped) {
      await api("/resume", { method: "POST", body: "{}" });
    } else {
      const reason = window.prompt ? window.prompt("Why stop everything?", "stopped from the dashboard") : null;
      await api("/stop", { method: "POST", body: JSON.stringify({ reason: reason || "stopped from the dashboard" }) });
    }
  } catch (e) {
    notice("The kill switch failed: " + e.message);
  }
  await loadCompany().catch(() => {});
}

// ---- goals board ----------------------------------------------------------------------

async function loadGoals() {
  const goals = await api("/goals");
  const body = $("goals").tBodies[0];
  body.replaceChildren();
  let met = 0;
  for (const g of goals) {
    const s = g.status || {};
    const ready = (s.ready || "Unknown").toLowerCase();
    if (ready === "true") met += 1;
    const budget = g.budget && g.budget.usd;
    const check = s.lastCheck ? s.lastCheck.detail || (s.lastCheck.passed ? "passed" : "failed") : s.message || "";
    body.append(
      el("tr", { class: "goal ready-" + ready, "data-goal": g.name, "data-ready": s.ready || "Unknown" },
        el("td", {}, el("strong", {}, g.name), el("div", { class: "muted" }, g.description)),
        el("td", {}, g.product),
        el("td", {}, g.priority),
        el("td", { class: ready === "true" ? "ok" : ready === "false" ? "bad" : "warn" }, s.ready || "Unknown"),
        el("td", { title: s.message || "" }, s.reason || ""),
        el("td", {}, usd(g.spentUsd) + (budget ? " / " + usd(budget) : "")),
        el("td", { class: "check", title: check }, check)));
  }
  $("goal-count").textContent = met + " of " + goals.length + " met";
}

// ---- org chart ------------------------------------------------------------------------

function agentNode(a, depth) {
  const li = el("li", { class: depth > 0 && a.reports.length ? "collapsed" : "", "data-agent": a.name });
  const toggle = el("span", { class: "toggle" }, a.reports.length ? "▸" : "");
  if (depth === 0 && a.reports.length) toggle.textContent = "▾";
  toggle.addEventListener("click", () => {
    li.classList.toggle("collapsed");
    toggle.textContent = li.classList.contains("collapsed") ? "▸" : "▾";
  });
  const working = (a.working || []).map((w) => w.goal).join(", ");
  const doing = working ? "working on " + working : a.doing ? a.doing.line : "";
  li.append(el("span", { class: "agent" }, toggle,
    el("span", { class: "name" }, a.name),
    el("span", { class: "muted" }, a.title || ""),
    el("span", { class: "model" }, a.model),
    doing ? el("span", { class: "doing", title: doing }, doing.slice(0, 80)) : null));
  if (a.reports.length) {
    const ul = el("ul");
    for (const r of a.reports) ul.append(agentNode(r, depth + 1));
    li.append(ul);
  }
  return li;
}

function countAgents(list) {
  return list.reduce((n, a) => n + 1 + countAgents(a.reports), 0);
}

async function loadAgents() {
  const tree = await api("/agents");
  const open = new Set([...document.querySelectorAll("#org li:not(.collapsed)")].map((li) => li.dataset.agent));
  const root = $("org");
  root.replaceChildren(...tree.map((a) => agentNode(a, 0)));
  for (const li of root.querySelectorAll("li.collapsed")) {
    if (open.has(li.dataset.agent)) {
      li.classList.remove("collapsed");
      li.querySelector(".toggle").textContent = "▾";
    }
  }
  $("agent-count").textContent = countAgents(tree) + " agents";
}

// ---- approvals ------------------------------------------------------------------------

function diffBlock(text) {
  const pre = el("pre", { class: "diff" });
  for (const line of (text || "").split("\n")) {
    const cls = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : null;
    pre.append(el("span", { class: cls }, line + "\n"));
  }
  return pre;
}

async function answer(id, verb) {
  const name = window.prompt("Your name (an approver's git identity)", sessionStorage.getItem("proto.name") || "");
  if (!name) return;
  const email = window.prompt("Your email", sessionStorage.getItem("proto.email") || "");
  if (!email) return;
  sessionStorage.setItem("proto.name", name);
  sessionStorage.setItem("proto.email", email);
  const body = { name, email };
  if (verb === "deny") body.reason = window.prompt("Why deny?", "") || undefined;
  try {
    await api("/approvals/" + encodeURIComponent(id) + "/" + verb, { method: "POST", body: JSON.stringify(body) });
    notice(verb === "approve" ? "Approved " + id : "Denied " + id);
  } catch (e) {
    notice("Could not " + verb + " " + id + ": " + e.message);
  }
  loadApprovals().catch(() => {});
}

async function loadApprovals() {
  const all = await api("/approvals");
  const waiting = all.filter((a) => a.state === "pending");
  const box = $("approvals");
  if (!waiting.length) {
    box.replaceChildren(el("p", { class: "muted" }, "None."));
    return;
  }
  box.replaceChildren(...waiting.map((a) => el("div", { class: "approval" },
    el("strong", {}, a.action), " for ", a.goal, " by ", a.agent,
    el("div", { class: "muted" }, a.reason),
    a.diff ? diffBlock(a.diff) : el("pre", {}, JSON.stringify(a.input, null, 2)),
    el("div", { class: "actions" },
      el("button", { class: "go", onclick: () => answer(a.id, "approve") }, "Approve"),
      el("button", { class: "danger", onclick: () => answer(a.id, "deny") }, "Deny")))));
}

// ---- spend ----------------------------------------------------------------------------

function spendRows(title, map, budgetOf) {
  const entries = Object.entries(map || {}).sort((a, b) => b[1].usd - a[1].usd).slice(0, 12);
  const out = [el("h3", {}, title)];
  if (!entries.length) out.push(el("p", { class: "muted" }, "Nothing spent yet."));
  for (const [name, s] of entries) {
    const budget = budgetOf ? budgetOf(name) : null;
    const bar = el("div", { class: "bar" + (budget && s.usd > budget ? " over" : "") }, el("span"));
    const max = budget || entries[0][1].usd || 1;
    bar.firstChild.style.width = Math.min(100, (100 * s.usd) / max) + "%";
    out.push(el("div", { class: "spend-row" }, el("span", {}, name), bar,
      el("span", {}, usd(s.usd) + (budget ? " / " + usd(budget) : ""))));
  }
  return out;
}

async function loadSpend() {
  const s = await api("/spend");
  const company = (s.budgets && s.budgets.company) || {};
  const goals = (s.budgets && s.budgets.goals) || {};
  $("spend").replaceChildren(
    ...spendRows("Per day", s.byDay, () => company.usdPerDay),
    ...spendRows("Per goal", s.byGoal, (g) => goals[g] || company.usdPerGoal),
    ...spendRows("Per agent", s.byAgent));
}

// ---- computers ------------------------------------------------------------------------

async function loadComputers() {
  const list = await api("/computers");
  $("computers").tBodies[0].replaceChildren(...list.map((c) => el("tr", {},
    el("td", {}, c.name),
    el("td", { class: c.healthy === false ? "bad" : c.healthy ? "ok" : "warn" },
      c.healthy === null ? "unknown" : c.healthy ? "healthy" : "down"),
    el("td", {}, c.lastSeen ? new Date(c.lastSeen).toLocaleString() : ""))));
}

// ---- live activity --------------------------------------------------------------------

function describe(e) {
  const d = e.data || {};
  if (e.kind === "agent.model") {
    return d.agent + ": " + d.model + " turn " + (d.turn + 1) + " (" + d.inputTokens + " in, " + d.outputTokens + " out, " + usd(d.usd) + ")";
  }
  if (e.kind === "agent.tool") return d.agent + ": " + d.call + (d.ok ? "" : " failed: " + (d.error || ""));
  return e.kind + (e.goal ? " " + e.goal : "") + (d.error ? ": " + d.error : "");
}

async function openDetail(e, box) {
  if (box.dataset.loaded || !e.task) return;
  box.dataset.loaded = "1";
  try {
    const t = await api("/tasks/" + e.task);
    const step = e.data && e.data.step;
    const entry = (t.journal || []).find((j) => j.step === step);
    if (entry) {
      box.append(el("h3", {}, "Input"), el("pre", {}, JSON.stringify(entry.input, null, 2)));
      box.append(el("h3", {}, "Output"), el("pre", {}, JSON.stringify(entry.outcome, null, 2)));
      const input = JSON.stringify(entry.input);
      for (const a of (t.audit || []).filter((a) => JSON.stringify(a.input) === input && a.diff)) {
        box.append(el("h3", {}, "Diff"), diffBlock(a.diff));
      }
    } else {
      box.append(el("pre", {}, JSON.stringify(e.data, null, 2)));
    }
  } catch (err) {
    box.append(el("pre", {}, JSON.stringify(e.data, null, 2)));
  }
}

function addActivity(e) {
  const list = $("activity");
  const detail = el("div");
  const item = el("li", { "data-kind": e.kind },
    el("details", { ontoggle: () => openDetail(e, detail) },
      el("summary", {}, el("span", { class: "time" }, time(e.time)), " ", describe(e)), detail));
  list.prepend(item);
  while (list.children.length > 300) list.lastChild.remove();
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    loadGoals().catch(() => {});
    loadAgents().catch(() => {});
    loadSpend().catch(() => {});
    loadApprovals().catch(() => {});
    loadComputers().catch(() => {});
    loadCompany().catch(() => {});
  }, 300);
}

// Server-Sent Events read through fetch, so the token goes in a header (EventSource cannot
// send one); a dropped stream reconnects with the last id seen.
let lastId = 0;
async function follow() {
  for (;;) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastId) h["Last-Event-ID"] = String(lastId);
      const res = await fetch(API + "/events/stream" + (lastId ? "" : "?after=" + startAfter), { headers: h });
      if (!res.ok || !res.body) throw new Error(res.status + "");
      $("live").textContent = "live";
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          lastId = event.id;
          addActivity(event);
          if (!event.kind.startsWith("agent.")) refreshSoon();
        }
      }
    } catch (e) {
      $("live").textContent = "reconnecting…";
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// The stream starts with the last 50 events, then follows.
let startAfter = 0;

async function start() {
  takeTokenFromAddress();
  $("kill").addEventListener("click", kill);
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    location.reload();
  });
  try {
    await loadCompany();
  } catch (e) {
    if (e instanceof Unauthorized) {
      $("login").classList.remove("hidden");
      notice("Paste the API token (printed by proto run at its first start; kept in <state>/api-token).");
      return;
    }
    notice("The controller is not ready yet: " + e.message);
    setTimeout(start, 2000);
    return;
  }
  await Promise.all([loadGoals(), loadAgents(), loadApprovals(), loadSpend(), loadComputers()].map((p) => p.catch((e) => notice(e.message))));
  follow();
}

document.addEventListener("DOMContentLoaded", start);
