// The console: signs in at the issuer (OpenID Connect, authorization code
// with PKCE), keeps the token in this page's memory only (never a cookie or
// localStorage: a reload signs in again), and shows what the API's console
// routes answer. Everything shown is set as text, never as HTML.
"use strict";

const session = { token: null, subject: null, scopes: [], config: null };
const shown = { timeline: null, step: 0, messages: [], revealed: false, tail: null };

// Elements, made with text children only.
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "className") node.className = value;
    else if (name === "width") node.style.width = value; // CSSOM: the policy refuses style attributes
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const $ = (id) => document.getElementById(id);
const json = (value) => h("pre", {}, JSON.stringify(value, null, 2));
function table(headers, rows, rowProps) {
  return h("table", {}, headers.length ? h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))) : null,
    h("tbody", {}, rows.map((cells, i) => h("tr", rowProps ? rowProps(i) : {}, cells.map((c) => h("td", {}, c))))));
}
function notice(text) { $("notice").textContent = text || ""; }
function age(seconds) { return seconds === null || seconds === undefined ? "-" : `${Math.round(seconds)} s`; }

// Signing in.
function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}
function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function redirectUri() { return location.origin + location.pathname; }

async function signIn() {
  const config = session.config;
  if (!config.client_id || !config.authorization_endpoint) {
    notice("Sign-in is not configured: the API needs CONSOLE_CLIENT_ID and the issuer's endpoints (docs/console.md).");
    return;
  }
  const verifier = randomText(48);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomText(24);
  // Only for the way back from the issuer; taken and removed at once.
  sessionStorage.setItem("console-sign-in", JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({ response_type: "code", client_id: config.client_id, redirect_uri: redirectUri(),
    scope: config.scope, state, code_challenge: challenge, code_challenge_method: "S256" });
  location.assign(`${config.authorization_endpoint}?${query}`);
}

async function finishSignIn(params) {
  const pending = JSON.parse(sessionStorage.getItem("console-sign-in") || "null");
  sessionStorage.removeItem("console-sign-in");
  history.replaceState(null, "", location.pathname);
  if (params.get("error")) throw new Error(`the issuer refused: ${params.get("error")} ${params.get("error_description") || ""}`);
  if (!pending || pending.state !== params.get("state")) throw new Error("the sign-in's state does not match: sign in again");
  const answer = await fetch(session.config.token_endpoint, {
    method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
      client_id: session.config.client_id, code_verifier: pending.verifier }),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok || !body.access_token) throw new Error(`the issuer gave no token: ${body.error || answer.status}`);
  session.token = body.access_token;
  const claims = JSON.parse(atob(body.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  session.subject = claims.sub;
  session.scopes = String(claims.scope || body.scope || "").split(" ").filter(Boolean);
}

async function api(method, path, body) {
  const answer = await fetch(path, {
    method, headers: { Authorization: `Bearer ${session.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined, cache: "no-store",
  });
  const data = await answer.json().catch(() => null);
  if (answer.status === 401) {
    session.token = null;
    render();
  }
  if (!answer.ok) throw new Error(`${answer.status}: ${(data && data.Message) || answer.statusText}`);
  return data;
}
const may = (scope) => session.scopes.includes(scope);

// Layout.
function render() {
  const signedIn = Boolean(session.token);
  $("signin").hidden = signedIn;
  $("tabs").hidden = !signedIn;
  $("who").replaceChildren(signedIn ? h("span", {}, `${session.subject} (${session.scopes.join(" ")}) `,
    h("button", { type: "button", onclick: () => { session.token = null; render(); } }, "Sign out")) : "");
  if (!signedIn) for (const view of document.querySelectorAll(".view")) view.hidden = true;
  else show(location.hash.slice(1) || "customer");
}
function show(tab) {
  if (!["customer", "topic", "operations"].includes(tab)) tab = "customer";
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== tab;
  for (const button of document.querySelectorAll(".tab")) button.classList.toggle("active", button.dataset.tab === tab);
  if (tab === "topic") loadPartitions().catch((e) => notice(e.message));
  if (tab === "operations") loadOperations().catch((e) => notice(e.message));
  if (tab !== "topic") stopTail();
}

// A customer's timeline.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
async function find(event) {
  event.preventDefault();
  notice("");
  const q = $("find-input").value.trim();
  try {
    if (UUID.test(q)) return await loadTimeline(q, false);
    if (!may("customers:read")) throw new Error("finding by email needs the scope customers:read");
    const found = await api("POST", "customers/search", { email: q, consistency: "strong" });
    if (!found.customers.length) throw new Error("no customer has that email");
    await loadTimeline(found.customers[0].id, false);
  } catch (e) {
    notice(e.message);
  }
}

async function loadTimeline(id, reveal) {
  const t = await api("GET", `console/api/customer/${encodeURIComponent(id)}/timeline${reveal ? "?reveal=true" : ""}`);
  shown.timeline = t;
  shown.step = t.events.length - 1;
  drawTimeline();
}

function drawTimeline() {
  const t = shown.timeline;
  const e = t.events[shown.step];
  const warnings = [];
  if (t.differences.length) warnings.push(h("p", { className: "warning", id: "differs" },
    `The read model's row differs from the fold of the store: ${t.differences.join(", ")}`));
  if (t.topic_error) warnings.push(h("p", { className: "warning" }, `Where on the topic is unknown: ${t.topic_error}`));
  if (t.more) warnings.push(h("p", { className: "warning" }, "Only the first 1,000 events are shown."));
  const reveal = t.revealed ? h("span", { className: "muted" }, "personal data revealed (logged)")
    : may("customers:read") ? h("button", { type: "button", id: "reveal", onclick: () => {
      if (confirm("Reveal this customer's name and email? The access is logged.")) loadTimeline(t.customer_id, true).catch((x) => notice(x.message));
    } }, "Reveal personal data") : h("span", { className: "muted" }, "names and emails need customers:read");
  const where = e.where;
  $("timeline").replaceChildren(
    h("h2", {}, `Customer ${t.customer_id}`), h("div", { className: "row" }, reveal), ...warnings,
    h("div", { className: "row" },
      h("button", { type: "button", id: "previous", disabled: shown.step === 0, onclick: () => step(shown.step - 1) }, "◀ Previous"),
      h("span", { id: "step-label" }, `event ${shown.step + 1} of ${t.events.length} (version ${e.version})`),
      h("button", { type: "button", id: "next", disabled: shown.step === t.events.length - 1, onclick: () => step(shown.step + 1) }, "Next ▶"),
      h("label", {}, "At version", h("input", { id: "at-version", type: "number", min: 1, max: t.events.length, value: e.version })),
      h("button", { type: "button", onclick: () => atVersion(Number($("at-version").value)) }, "Go"),
      h("label", {}, "At time", h("input", { id: "at-time", placeholder: "2026-12-03T10:00:00Z", value: "" })),
      h("button", { type: "button", onclick: () => atTime($("at-time").value) }, "Go")),
    h("div", { className: "step" },
      h("div", {}, h("h2", {}, `${e.type} (schema ${e.schema_version})`),
        table([], [["recorded", e.recorded_at], ["position", e.position], ["actor", JSON.stringify(e.actor)],
          ["correlation id", e.correlation_id || "-"], ["causation id", e.causation_id || "-"], ["event id", e.event_id || "-"],
          ["outbox", where.outbox + (where.parked_error ? `: ${where.parked_error}` : "")],
          ["on the topic", where.partition === null ? "not found" : `partition ${where.partition}, offset ${where.offset}`],
          ["projected", where.projected ? "yes" : "not yet"]]),
        h("h2", {}, "Data"), h("div", { id: "event-data" }, json(e.data))),
      h("div", {}, h("h2", {}, "State after this event"), h("div", { id: "state-after" }, json(e.state_after)),
        h("h2", {}, "Read model now"), json(t.read_model))),
    h("h2", {}, "Every event"),
    h("div", { id: "events" }, table(["version", "time", "type", "schema", "actor", "outbox", "topic", "projected"],
      t.events.map((x) => [x.version, x.recorded_at, x.type, x.schema_version, (x.actor && x.actor.subject) || "-",
        x.where.outbox, x.where.partition === null ? "-" : `${x.where.partition}@${x.where.offset}`, x.where.projected ? "yes" : "no"]),
      (i) => ({ className: i === shown.step ? "clickable selected" : "clickable", onclick: () => step(i) }))));
}
function step(i) {
  shown.step = Math.max(0, Math.min(i, shown.timeline.events.length - 1));
  drawTimeline();
}
function atVersion(version) {
  const i = shown.timeline.events.findIndex((e) => e.version === version);
  if (i < 0) return notice(`no version ${version}`);
  step(i);
}
function atTime(text) {
  const when = Date.parse(text);
  if (Number.isNaN(when)) return notice("give a time as 2026-12-03T10:00:00Z");
  const before = shown.timeline.events.filter((e) => Date.parse(e.recorded_at) <= when);
  if (!before.length) return notice("the customer did not exist yet then");
  step(before.length - 1);
}

// The topic.
async function loadPartitions() {
  const topic = await api("GET", "console/api/topic");
  $("partitions").replaceChildren(h("h2", {}, `Topic ${topic.topic}`),
    table(["partition", "first offset", "next offset", `${topic.group_id} at`, "behind"],
      topic.partitions.map((p) => [p.partition, p.beginning, p.end, p.committed === null ? "-" : p.committed,
        p.committed === null ? "-" : Math.max(0, p.end - p.committed)])));
}

function messageQuery() {
  const q = new URLSearchParams({ from: $("m-from").value, limit: $("m-limit").value || "50" });
  const set = (name, id) => { if ($(id).value.trim()) q.set(name, $(id).value.trim()); };
  set("partition", "m-partition"); set("offset", "m-offset"); set("since", "m-since"); set("until", "m-until");
  set("type", "m-type"); set("customer", "m-customer");
  if ($("m-reveal").checked) q.set("reveal", "true");
  return q;
}
async function loadMessages() {
  const found = await api("GET", `console/api/topic/messages?${messageQuery()}`);
  shown.messages = found.messages;
  shown.revealed = found.revealed;
  $("messages").replaceChildren(h("h2", {}, `Partition ${found.partition}: ${found.messages.length} messages`),
    table(["offset", "time", "key", "type", "version", "signature", "message"],
      found.messages.map((m) => [m.offset, m.timestamp, m.key || "-", m.attributes.type || "-",
        m.attributes.streamversion || "-", h("span", { className: m.signature === "valid" ? "ok signature" : "bad signature" }, m.signature),
        h("details", {}, h("summary", {}, m.error || "attributes, data, headers"),
          json({ attributes: m.attributes, data: m.data, headers: m.headers }))])));
}
function showMessages(event) {
  if (event) event.preventDefault();
  notice("");
  loadMessages().catch((e) => notice(e.message));
}
function stopTail() {
  if (shown.tail) clearInterval(shown.tail);
  shown.tail = null;
  if ($("m-tail")) $("m-tail").checked = false;
}
function toggleTail() {
  if (!$("m-tail").checked) return stopTail();
  $("m-from").value = "newest";
  showMessages();
  shown.tail = setInterval(() => loadMessages().catch((e) => { notice(e.message); stopTail(); }), 2000);
}

// What an export holds: personal values only when revealed.
function exported() {
  return shown.messages.map((m) => ({ partition: m.partition, offset: m.offset, timestamp: m.timestamp, key: m.key,
    signature: m.signature, ...m.attributes,
    data: m.data && typeof m.data === "object" ? Object.fromEntries(Object.entries(m.data).filter(([, v]) => v !== "•••")) : m.data }));
}
function download(name, type, text) {
  const link = h("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}
function exportJson() { download("messages.json", "application/json", JSON.stringify(exported(), null, 2)); }
function exportCsv() {
  const rows = exported();
  const columns = ["partition", "offset", "timestamp", "key", "type", "streamversion", "id", "signature", "data"];
  const cell = (v) => { const s = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? ""); return `"${s.replace(/"/g, '""')}"`; };
  download("messages.csv", "text/csv", [columns.join(","), ...rows.map((r) => columns.map((c) => cell(r[c])).join(","))].join("\n") + "\n");
}

// The operator's view.
function act(question, method, path, body) {
  if (!confirm(question)) return;
  api(method, path, body).then((answer) => { notice(`done: ${JSON.stringify(answer)}`); return loadOperations(); })
    .catch((e) => notice(e.message));
}
async function loadOperations() {
  const o = await api("GET", "console/api/operations");
  const health = o.health;
  const parts = [
    h("h2", {}, "Health"), h("p", { id: "health", className: health.status === "ok" ? "ok" : "bad" }, health.status),
    ...(health.reasons || []).map((r) => h("p", { className: "warning" }, r)),
    ...Object.entries(o.problems).map(([part, why]) => h("p", { className: "warning" }, `${part}: ${why}`)),
    h("h2", {}, "Outbox, per relay shard"),
    table(["shard", "unpublished", "oldest waiting", "parked", "held back"],
      o.shards.map((s, i) => [i, s.unpublished, age(s.oldest_age_seconds), s.parked, s.unpublished - s.parked - s.ready])),
    h("h2", {}, "Parked outbox rows"),
    o.parked.length ? table(["outbox row", "customer", "version", "type", "parked", "error", ""],
      o.parked.map((p) => [p.outbox_id, p.stream_id, p.version, `${p.event_type} (schema ${p.schema_version})`, p.parked_at, p.error,
        h("span", {},
          h("button", { type: "button", className: "retry", onclick: () => act(`Retry outbox row ${p.outbox_id}?`, "POST", `console/api/outbox/${p.outbox_id}/retry`) }, "Retry"), " ",
          h("button", { type: "button", className: "skip", onclick: () => act(`Skip outbox row ${p.outbox_id}? Consumers will never see its event.`, "POST", `console/api/outbox/${p.outbox_id}/skip`) }, "Skip"))]))
      : h("p", { className: "muted" }, "none"),
    h("h2", {}, "Projection lag, per partition"),
    table(["partition", "next offset", "projection at", "behind"], o.lag.map((l) => [l.partition, l.end, l.committed ?? "-", l.behind ?? "-"])),
    h("h2", {}, "Dead letters"),
    o.dead_letters.length ? table(["message", "kind", "time", "error", "offsets", ""],
      o.dead_letters.map((d) => [d.message_id, d.kind, d.time, d.error, d.offsets.join(" "),
        h("span", {},
          h("button", { type: "button", className: "replay", onclick: () => act(`Replay dead letter ${d.message_id}? Its customers are projected again from the store.`, "POST", `console/api/dead-letters/${d.message_id}/replay`) }, "Replay"), " ",
          h("button", { type: "button", className: "discard", onclick: () => act(`Discard dead letter ${d.message_id}?`, "POST", `console/api/dead-letters/${d.message_id}/discard`) }, "Discard"))]))
      : h("p", { className: "muted" }, "none"),
    h("h2", {}, "Backfills"),
    o.backfills.length ? table(["backfill", "state", "topic", "progress", "at", "asked by", "error"],
      o.backfills.map((b) => [`backfill-${b.id}`, b.state, b.topic,
        h("span", {}, h("span", { className: "progress" }, h("span", { width: `${b.total ? Math.round(100 * b.sent / b.total) : 0}%` })),
          ` ${b.sent}/${b.total ?? "?"}`), `${b.at_transaction}.${b.at_position}`, `${b.requested_by || "-"} ${b.created_at}`, b.error || ""]))
      : h("p", { className: "muted" }, "none"),
  ];
  $("ops").replaceChildren(...parts);
}
function startBackfill(event) {
  event.preventDefault();
  const body = { topic: $("b-topic").value.trim() };
  if ($("b-customer").value.trim()) body.customer_id = $("b-customer").value.trim();
  if ($("b-types").value.trim()) body.event_types = $("b-types").value.split(",").map((t) => t.trim()).filter(Boolean);
  if ($("b-after").value) body.after_position = Number($("b-after").value);
  if ($("b-rate").value) body.rate_limit = Number($("b-rate").value);
  act(`Start a backfill to ${body.topic}?`, "POST", "console/api/backfills", body);
}

async function boot() {
  $("signin-button").addEventListener("click", () => signIn().catch((e) => notice(e.message)));
  for (const button of document.querySelectorAll(".tab")) button.addEventListener("click", () => { location.hash = button.dataset.tab; });
  window.addEventListener("hashchange", () => session.token && show(location.hash.slice(1)));
  $("find").addEventListener("submit", find);
  $("messages-form").addEventListener("submit", showMessages);
  $("m-tail").addEventListener("change", toggleTail);
  $("export-json").addEventListener("click", exportJson);
  $("export-csv").addEventListener("click", exportCsv);
  $("refresh").addEventListener("click", () => loadOperations().catch((e) => notice(e.message)));
  $("backfill-form").addEventListener("submit", startBackfill);
  session.config = await (await fetch("console/config")).json();
  const params = new URLSearchParams(location.search);
  if (params.get("code") || params.get("error")) {
    try { await finishSignIn(params); } catch (e) { notice(e.message); }
  }
  render();
}
boot().catch((e) => notice(e.message));
