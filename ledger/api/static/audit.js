// fedledger audit page: reads the JSON API, draws the lineage and accuracy as inline SVG, verifies on request.
// No libraries. Every string from the API (hashes, addresses, rule names, reasons) reaches the page
// through textContent or an SVG attribute, never innerHTML: metadata is written by the aggregator,
// not by us.
"use strict";

const API = "/api/v1";
const SVG_NS = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------ small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.setAttribute("class", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function short(hash, width = 10) {
  if (!hash) return "—";
  return hash.length > width ? hash.slice(0, width) + "…" : hash;
}

function hashSpan(hash, width) {
  return el("span", { class: "hash", title: hash || "", text: short(hash, width) });
}

function percent(value) {
  return typeof value === "number" && isFinite(value) ? (100 * value).toFixed(1) + "%" : "—";
}

// Every index answer says whether it was compared with the chain; the page says so too.
const CHECKS = { checked: 0, unchecked: [], block: null };

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const detail = (body && (body.detail || body.error)) || response.statusText;
    const error = new Error(`${path}: ${response.status} ${detail}`);
    error.status = response.status;
    error.differences = (body && body.differences) || [];
    throw error;
  }
  if (body && body.checked_against_chain === true) {
    CHECKS.checked += 1;
    CHECKS.block = body.checked_at_block;
  } else if (body && body.checked_against_chain === false) {
    CHECKS.unchecked.push(body.unchecked_reason || path);
  }
  return body;
}

function blobLink(hash, label) {
  // A download of the blob's exact bytes: `sha256sum` of the file prints `hash`.
  if (!hash) return el("span", { class: "none", text: "—" });
  return el("a", { class: "blob", href: `/blobs/${hash}`, download: `${hash}.${label === "metadata" || label === "report" ? "json" : "safetensors"}`,
    title: `download the ${label} blob ${hash}`, text: label });
}

function labelCells(table) {
  // Narrow screens show each row as a card: every cell carries its column's name.
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, index) => cell.setAttribute("data-label", names[index] || ""));
  }
}

// ------------------------------------------------------------------ the API (see /api/v1/openapi.json)

const PAGE_LIMIT = 1000;
const MAX_LANES = 40;

async function getAll(path) {
  // Every item of a paginated list, following `next` links.
  const items = [];
  let url = `${path}${path.includes("?") ? "&" : "?"}limit=${PAGE_LIMIT}`;
  while (url) {
    const body = await getJSON(url);
    items.push(...body.items);
    url = body.next;
  }
  return items;
}

async function submissionsOf(roundNumber) {
  const submissions = [];
  let url = `${API}/rounds/${roundNumber}?limit=${PAGE_LIMIT}`;
  while (url) {
    const body = await getJSON(url);
    submissions.push(...body.submissions.items);
    url = body.submissions.next;
  }
  return submissions;
}

async function withRest(page) {
  // The items of a page embedded in another answer, and of the pages its `next` links lead to.
  const items = [...page.items];
  let url = page.next;
  while (url) {
    const body = await getJSON(url);
    items.push(...body.items);
    url = body.next;
  }
  return items;
}

async function includedOf(models) {
  // Which updates (and so which nodes) each version merged: the latest version's lineage in one
  // walk (each step embeds its first updates and links to the rest), then any version off that
  // path (a fork) on its own.
  const included = new Map();
  if (!models.length) return included;
  const latest = models[models.length - 1];
  for (const step of await getAll(`${API}/models/${latest.model_hash}/lineage`)) {
    included.set(step.model_hash, await withRest(step.included_updates));
  }
  for (const model of models) {
    if (!included.has(model.model_hash) && model.version > 0) {
      const body = await getJSON(`${API}/models/${model.model_hash}?limit=${PAGE_LIMIT}`);
      included.set(model.model_hash, body.included_updates.items);
    }
  }
  return included;
}

async function privacyOf() {
  // The pinned encoding and DP policy, and every round's ε per node (paginated under `rounds`).
  const first = await getJSON(`${API}/privacy?limit=${PAGE_LIMIT}`);
  const rounds = [...first.rounds.items];
  let url = first.rounds.next;
  while (url) {
    const body = await getJSON(url);
    rounds.push(...body.rounds.items);
    url = body.rounds.next;
  }
  return { encoding: first.encoding, policy: first.policy, rounds };
}

async function loadLedger() {
  const [summary, rounds, models, nodes, privacy] = await Promise.all([
    getJSON(`${API}/summary`),
    getAll(`${API}/rounds`),
    getAll(`${API}/models`),
    getAll(`${API}/nodes`),
    privacyOf(),
  ]);
  rounds.sort((a, b) => a.round - b.round);
  models.sort((a, b) => a.version - b.version);
  const rejections = new Map();
  await Promise.all(
    rounds.filter((r) => r.rejected_count > 0).map(async (r) => {
      rejections.set(r.round, (await submissionsOf(r.round)).filter((s) => s.rejection));
    })
  );
  const included = await includedOf(models);
  const attestations = await attestationsOf(summary);
  return { summary, rounds, models, nodes, rejections, included, privacy, attestations };
}

async function attestationsOf(summary) {
  // model hash → the auditors' verdicts on it, read from the chain by the service.
  const byVersion = new Map();
  if (!summary.attestations) return byVersion;
  for (const attestation of await getAll(`${API}/attestations`)) {
    if (!byVersion.has(attestation.model_hash)) byVersion.set(attestation.model_hash, []);
    byVersion.get(attestation.model_hash).push(attestation);
  }
  return byVersion;
}

function accuracyOf(model) {
  const value = model && model.metrics ? model.metrics.test_accuracy : undefined;
  return typeof value === "number" ? value : undefined;
}

// ------------------------------------------------------------------ summary

function renderSummary({ summary }) {
  const parts = [];
  if (summary.contract) parts.push(`ledger ${summary.contract}`);
  if (summary.chain_id !== null) parts.push(`chain ${summary.chain_id}`);
  if (summary.indexed_block !== null) parts.push(`indexed to block ${summary.indexed_block}`);
  if (summary.lag_blocks) parts.push(`${summary.lag_blocks} blocks behind the head`);
  document.getElementById("ledger").textContent = parts.join(" · ");

  const { nodes, rounds, updates, versions } = summary;
  const cards = [
    ["nodes", nodes.active, nodes.total !== nodes.active ? `active, of ${nodes.total} registered` : "registered, all active"],
    ["rounds", rounds.total, `${rounds.finalized} finalized · ${rounds.abandoned} abandoned${rounds.open ? ` · ${rounds.open} open` : ""}`],
    ["model versions", versions.total, "including genesis"],
    ["updates submitted", updates.total, "each pinned by its SHA-256"],
    ["updates rejected", updates.rejected, "reason recorded on chain"],
    ["latest accuracy", percent(accuracyOf(summary.latest_version)),
      summary.latest_version ? `version ${summary.latest_version.version}, held-out test set` : "no version yet"],
  ];
  document.getElementById("summary").replaceChildren(
    ...cards.map(([label, value, note]) =>
      el("div", { class: "card", "data-card": label },
        el("dt", { text: label }),
        el("dd", {}, el("span", { class: "value", text: value ?? "—" })),
        el("dd", { class: "note", text: note })))
  );
}

// ------------------------------------------------------------------ lineage graph

function cellsByVersion({ models, rejections, included }) {
  // version hash → (node → "included" | "rejected"), from the lineage and each round's rejections.
  const cells = new Map();
  for (const model of models) {
    const byNode = new Map();
    for (const update of included.get(model.model_hash) || []) byNode.set(update.node, "included");
    if (model.version > 0) for (const update of rejections.get(model.round) || []) byNode.set(update.node, "rejected");
    cells.set(model.model_hash, byNode);
  }
  return cells;
}

function renderLineage(state) {
  const { models, nodes } = state;
  const box = document.getElementById("lineage");
  if (!models.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No model committed yet." }));
    return;
  }
  const cells = cellsByVersion(state);
  const lanes = nodes.map((n) => n.address);
  for (const byNode of cells.values()) for (const node of byNode.keys()) if (!lanes.includes(node)) lanes.push(node);
  const shown = lanes.slice(0, MAX_LANES);

  const left = 130, colWidth = 118, top = 16, boxW = 96, boxH = 46, laneTop = top + boxH + 34, laneGap = 24;
  const width = left + models.length * colWidth + 10;
  const height = laneTop + Math.max(shown.length, 1) * laneGap + (lanes.length > shown.length ? laneGap : 0) + 4;
  const x = (index) => left + index * colWidth + colWidth / 2;
  const column = new Map(models.map((m, i) => [m.model_hash, i]));
  const chart = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img", id: "lineage-svg",
    "aria-label": `lineage of ${models.length} model versions`,
  },
  svg("defs", {},
    svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 2, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7b8794" }))));

  // parent → child edges (an arc over the boxes when the parent is not the previous version)
  for (const [i, model] of models.entries()) {
    if (!model.parent_hash || !column.has(model.parent_hash)) continue;
    const j = column.get(model.parent_hash);
    const y = top + boxH / 2;
    const d = j === i - 1
      ? `M ${x(j) + boxW / 2} ${y} L ${x(i) - boxW / 2 - 6} ${y}`
      : `M ${x(j)} ${top} C ${x(j)} ${top - 14}, ${x(i)} ${top - 14}, ${x(i)} ${top - 6}`;
    chart.append(svg("path", { class: "edge", d, "marker-end": "url(#arrow)" }));
  }

  // one lane per node: a dot where its update went into a version, a cross where it was rejected
  for (const [n, node] of shown.entries()) {
    const y = laneTop + n * laneGap;
    chart.append(svg("line", { class: "lane", x1: left - 6, x2: width - 6, y1: y, y2: y }));
    chart.append(svg("text", { class: "label mono", x: 6, y: y + 4, text: short(node, 12) }, svg("title", { text: node })));
  }
  if (lanes.length > shown.length) {
    chart.append(svg("text", { class: "label", x: 6, y: laneTop + shown.length * laneGap + 4,
      text: `… and ${lanes.length - shown.length} more nodes (see /api/v1/nodes)` }));
  }
  for (const [i, model] of models.entries()) {
    const byNode = cells.get(model.model_hash);
    for (const [n, node] of shown.entries()) {
      const y = laneTop + n * laneGap;
      const what = byNode.get(node);
      const title = svg("title", { text: `${node}: ${what || "no update"} in version ${model.version}` });
      if (what === "included") {
        chart.append(svg("line", { class: "contribution", x1: x(i), x2: x(i), y1: y - 5, y2: top + boxH }));
        chart.append(svg("circle", { class: "included", cx: x(i), cy: y, r: 5.5, "data-node": node }, title));
      } else if (what === "rejected") {
        const d = `M ${x(i) - 5} ${y - 5} L ${x(i) + 5} ${y + 5} M ${x(i) + 5} ${y - 5} L ${x(i) - 5} ${y + 5}`;
        chart.append(svg("path", { class: "rejected", d, "data-node": node }, title));
      } else if (model.version > 0) {
        chart.append(svg("circle", { class: "absent", cx: x(i), cy: y, r: 2 }, title));
      }
    }
  }

  // the versions themselves, on top; clicking one verifies it
  for (const [i, model] of models.entries()) {
    const genesis = model.parent_hash === null;
    const verify = () => verifyVersion(model.model_hash);
    const verdicts = state.attestations.get(model.model_hash) || [];
    const attested = verdicts.some((a) => !a.ok) ? " attested-failed" : verdicts.length ? " attested-ok" : "";
    chart.append(
      svg("g", {
        class: `version${genesis ? " genesis" : ""}${attested}`, "data-hash": model.model_hash, "data-version": model.version,
        tabindex: 0, role: "button", "aria-label": `verify version ${model.version}`,
        onclick: verify, onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") verify(); },
      },
      svg("title", { text: `version ${model.version}${genesis ? " (genesis)" : `, round ${model.round}`}\n${model.model_hash}\nclick to verify` }),
      svg("rect", { x: x(i) - boxW / 2, y: top, width: boxW, height: boxH, rx: 8 }),
      svg("text", { class: "title", x: x(i), y: top + 19, "text-anchor": "middle", text: genesis ? "genesis" : `v${model.version}` }),
      svg("text", { class: "label mono", x: x(i), y: top + 36, "text-anchor": "middle", text: short(model.model_hash, 8) })),
      svg("text", { class: "label", x: x(i), y: top + boxH + 16, "text-anchor": "middle",
        text: genesis ? "seed model" : `round ${model.round} · ${model.included_count} in` })
    );
  }
  box.replaceChildren(chart);
}

// ------------------------------------------------------------------ accuracy chart

function renderAccuracy({ models }) {
  const box = document.getElementById("accuracy");
  const points = models
    .filter((m) => m.version > 0 && accuracyOf(m) !== undefined)
    .map((m) => ({ round: m.round, accuracy: accuracyOf(m), version: m.version, metrics: m.metrics, hash: m.model_hash }))
    .sort((a, b) => a.round - b.round);
  if (!points.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No round has committed a model with a test accuracy yet." }));
    return;
  }
  const width = Math.max(260, box.clientWidth - 18), height = width < 480 ? 200 : 260;
  const m = { left: 44, right: 14, top: 16, bottom: 40 };
  const values = points.map((p) => p.accuracy);
  const lo = Math.max(0, Math.floor((Math.min(...values) - 0.05) * 10) / 10);
  const hi = Math.min(1, Math.ceil((Math.max(...values) + 0.02) * 10) / 10);
  const first = points[0].round, last = points[points.length - 1].round;
  const plotW = width - m.left - m.right, plotH = height - m.top - m.bottom;
  const sx = (r) => m.left + (last === first ? plotW / 2 : ((r - first) / (last - first)) * plotW);
  const sy = (a) => height - m.bottom - ((a - lo) / (hi - lo || 1)) * plotH;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", id: "accuracy-svg",
    "aria-label": `test accuracy over ${points.length} rounds` });

  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  const steps = Math.max(1, Math.round((hi - lo) / 0.1));
  for (let k = 0; k <= steps; k++) {
    const a = lo + (k * (hi - lo)) / steps;
    grid.append(svg("line", { x1: m.left, x2: width - m.right, y1: sy(a), y2: sy(a) }));
    axis.append(svg("text", { class: "label", x: m.left - 8, y: sy(a) + 4, "text-anchor": "end", text: `${Math.round(a * 100)}%` }));
  }
  const every = Math.ceil(points.length / Math.max(2, Math.floor(plotW / 36)));
  for (const [k, p] of points.entries()) {
    if (k % every === 0 || k === points.length - 1) {
      axis.append(svg("text", { class: "label", x: sx(p.round), y: height - m.bottom + 18, "text-anchor": "middle", text: p.round }));
    }
  }
  axis.append(svg("line", { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom }));
  axis.append(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom }));
  axis.append(svg("text", { class: "label", x: m.left + plotW / 2, y: height - 6, "text-anchor": "middle", text: "round" }));
  chart.append(grid, axis);
  chart.append(svg("path", { class: "line", d: points.map((p, k) => `${k ? "L" : "M"} ${sx(p.round)} ${sy(p.accuracy)}`).join(" ") }));
  const tip = el("div", { class: "tooltip", id: "accuracy-tooltip", role: "tooltip", hidden: true });
  for (const p of points) {
    const show = () => showMetrics(tip, box, p, sx(p.round), sy(p.accuracy));
    chart.append(svg("circle", {
      class: "point", cx: sx(p.round), cy: sy(p.accuracy), r: 5, "data-round": p.round, tabindex: 0,
      "aria-label": `round ${p.round}: ${percent(p.accuracy)}`,
      onmouseenter: show, onfocus: show, onclick: show,
      onmouseleave: () => { tip.hidden = true; }, onblur: () => { tip.hidden = true; },
    }));
  }
  box.replaceChildren(chart, tip);
}

function showMetrics(tip, box, point, x, y) {
  // Every metric the version's metadata recorded, not only the accuracy drawn.
  const rows = Object.entries(point.metrics || {}).sort(([a], [b]) => a.localeCompare(b)).map(([name, value]) =>
    el("tr", { "data-metric": name }, el("th", { text: name }),
      el("td", { text: typeof value === "number" && name.includes("accuracy") ? `${value} (${percent(value)})` : JSON.stringify(value) })));
  tip.replaceChildren(
    el("div", { class: "tip-title", text: `round ${point.round} · version ${point.version}` }),
    el("div", { class: "hash", text: short(point.hash, 18) }),
    el("table", {}, el("tbody", {}, rows)));
  tip.hidden = false;
  const left = Math.min(Math.max(0, x + 12), Math.max(0, box.clientWidth - tip.offsetWidth - 4));
  tip.style.left = `${left}px`;
  tip.style.top = `${Math.max(0, y - tip.offsetHeight - 8)}px`;
}

// ------------------------------------------------------------------ tables

function renderAttestations(list) {
  if (!list.length) return el("span", { class: "none", text: "none yet" });
  return el("ul", { class: "attested" }, list.map((a) =>
    el("li", { class: a.ok ? "ok" : a.resolved ? "resolved" : "failed", "data-auditor": a.auditor, "data-ok": String(a.ok) },
      el("span", { class: "verdict-mark", text: a.ok ? "✔ ok" : a.resolved ? "✘ failed (resolved)" : "✘ failed" }), " ",
      el("span", { class: "hash", title: a.auditor, text: short(a.auditor, 10) }), " ",
      blobLink(a.report_hash, "report"), " ",
      el("span", { class: "block", text: `block ${a.block_number}` }),
      a.report && a.report.findings && a.report.findings.length
        ? el("ul", { class: "findings" }, a.report.findings.map((f) =>
            el("li", { class: "finding", "data-kind": f.kind }, el("span", { class: "kind", text: f.kind }), ": ",
              el("span", { class: "detail", text: f.detail || "" }))))
        : null)));
}

function renderVersions({ models, attestations }) {
  const body = document.querySelector("#versions tbody");
  body.replaceChildren(...models.map((model) => {
    const genesis = model.parent_hash === null;
    const verdicts = attestations.get(model.model_hash) || [];
    const failing = verdicts.some((a) => !a.ok);
    const attested = verdicts.length > 0 && !failing;
    return el("tr", { "data-hash": model.model_hash, "data-version": model.version,
      class: failing ? "attested-failed" : attested ? "attested-ok" : null },
      el("td", { class: "num", text: genesis ? `${model.version} (genesis)` : model.version }),
      el("td", { class: "num", text: genesis ? "—" : model.round }),
      el("td", { class: "model-hash" }, el("span", { class: "hash", title: model.model_hash, text: model.model_hash })),
      el("td", { class: "rule", text: model.rule ? model.rule.name : genesis ? "seeded init" : "—" }),
      el("td", { class: "num", text: genesis ? "—" : model.included_count }),
      el("td", { class: "num", text: percent(accuracyOf(model)) }),
      el("td", { class: "blobs" }, blobLink(model.model_hash, "model"), " ", blobLink(model.metadata_hash, "metadata")),
      el("td", { class: "attestations" }, renderAttestations(attestations.get(model.model_hash) || [])),
      el("td", { class: "verification" },
        el("button", { type: "button", class: "verify", "data-hash": model.model_hash, onclick: () => verifyVersion(model.model_hash), text: "verify" }),
        el("div", { class: "verdict", "aria-live": "polite" })));
  }));
  labelCells(document.getElementById("versions"));
}

function rejectionItem(submission) {
  const reason = submission.rejection;
  return el("li", { "data-node": submission.node, "data-code": reason.code },
    el("span", { class: "hash", title: submission.node, text: short(submission.node, 12) }), " ",
    el("span", { class: "reason", text: reason.name || `reason ${reason.code}` }),
    el("span", { class: "description", text: `: ${reason.description}` }),
    " (update ", hashSpan(submission.update_hash, 8), ")");
}

function renderRounds({ rounds, models, rejections }) {
  const byHash = new Map(models.map((m) => [m.model_hash, m]));
  const body = document.querySelector("#rounds tbody");
  body.replaceChildren(...rounds.map((round) => {
    const refused = rejections.get(round.round) || [];
    const outcome = round.state === "abandoned"
      ? el("span", { class: "none", text: `abandoned${round.abandon_reason ? `: ${round.abandon_reason.description}` : ""}` })
      : round.model_hash ? hashSpan(round.model_hash) : el("span", { class: "none", text: "open" });
    return el("tr", { class: `state-${round.state}`, "data-round": round.round },
      el("td", { class: "num", text: round.round }),
      el("td", {}, el("span", { class: `pill ${round.state}`, text: round.state })),
      el("td", { class: "lineage-hashes" }, hashSpan(round.base_model_hash), " → ", outcome),
      el("td", { class: "num", text: round.submission_count }),
      el("td", { class: "num", text: round.state === "finalized" ? round.included_count : "—" }),
      el("td", { class: "rejections-cell" },
        refused.length ? el("ul", { class: "rejections" }, refused.map(rejectionItem)) : el("span", { class: "none", text: "none" })),
      el("td", { class: "num", text: percent(accuracyOf(byHash.get(round.model_hash))) }),
      el("td", { class: "updates-cell" }, round.submission_count ? updatesDetails(round) : el("span", { class: "none", text: "none" })));
  }));
  labelCells(document.getElementById("rounds"));
}

function updatesDetails(round) {
  // The round's submissions, each with a link to its blob; read from the API the first time it opens.
  const list = el("ul", { class: "updates" });
  const details = el("details", { "data-round": round.round },
    el("summary", { text: `${round.submission_count} update blob${round.submission_count === 1 ? "" : "s"}` }), list);
  details.addEventListener("toggle", async () => {
    if (!details.open || details.dataset.loaded) return;
    details.dataset.loaded = "true";
    try {
      const submissions = await submissionsOf(round.round);
      list.replaceChildren(...submissions.map((s) =>
        el("li", { "data-node": s.node, "data-hash": s.update_hash },
          blobLink(s.update_hash, "update"), " ", hashSpan(s.update_hash, 12), " from ",
          el("span", { class: "hash", title: s.node, text: short(s.node, 10) }),
          el("span", { class: s.rejection ? "reason" : s.included ? "in" : "none",
            text: s.rejection ? ` rejected: ${s.rejection.name || s.rejection.code}` : s.included ? " included" : "" }))));
    } catch (error) {
      list.replaceChildren(el("li", { class: "reason", text: error.message }));
    }
  });
  return details;
}

// ------------------------------------------------------------------ nodes

function renderNodes({ nodes }) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren(...nodes.map((node) =>
    el("tr", { "data-node": node.address, class: node.active ? null : "revoked" },
      el("td", { class: "node" }, el("span", { class: "hash", title: node.address, text: node.address })),
      el("td", {}, el("span", { class: `pill ${node.active ? "finalized" : "abandoned"}`, text: node.active ? "active" : "revoked" })),
      el("td", { class: "num", text: node.submission_count }),
      el("td", { class: "num", text: node.included_count }),
      el("td", { class: "node-rejections" }, node.rejections.length
        ? el("ul", { class: "rejections" }, node.rejections.map((r) =>
            el("li", { "data-code": r.code }, el("span", { class: "reason", text: r.name || `reason ${r.code}` }), ` × ${r.count}`)))
        : el("span", { class: "none", text: "none" })),
      el("td", { class: "num", text: node.last_round === null ? "never" : `round ${node.last_round}` }))));
  labelCells(document.getElementById("nodes"));
}

// ------------------------------------------------------------------ privacy

const MAX_PRIVACY_ROUNDS = 30;

function renderPrivacy({ privacy }) {
  const box = document.getElementById("privacy");
  const encoding = privacy.encoding || "—";
  const policy = privacy.policy;
  if (!policy) {
    box.replaceChildren(el("p", { class: "policy", "data-encoding": encoding,
      text: `Updates travel as ${encoding}. This federation pins no differential privacy.` }));
    return;
  }
  const budget = Number(policy.epsilon_budget);
  const rounds = privacy.rounds.slice(-MAX_PRIVACY_ROUNDS);
  const nodes = [...new Set(privacy.rounds.flatMap((r) => Object.keys(r.epsilon)))].sort();
  const latest = new Map();
  for (const round of privacy.rounds) for (const [node, eps] of Object.entries(round.epsilon)) latest.set(node, eps);
  const description = `Updates travel as ${encoding}. Nodes train with DP-SGD (Opacus): noise multiplier ` +
    `${policy.noise_multiplier}, clipping norm ${policy.max_grad_norm}, δ ${policy.delta}, batch size ` +
    `${policy.batch_size}, epochs per round ${policy.epochs}; each node may spend ε ${policy.epsilon_budget} ` +
    `(${policy.accountant} accountant). The ε below is each node's cumulative spend as its claims state and ` +
    "the aggregator's accountant verified (re-checked by verify).";
  const head = el("tr", {}, el("th", { text: "node" }),
    rounds.map((r) => el("th", { class: "num", text: `round ${r.round}` })), el("th", { class: "num", text: "budget spent" }));
  const rows = nodes.map((node) => el("tr", { "data-node": node },
    el("td", {}, el("span", { class: "hash", title: node, text: short(node, 12) })),
    rounds.map((r) => {
      const eps = r.epsilon[node];
      return el("td", { class: `num${eps !== undefined && Number(eps) > budget ? " over" : ""}`,
        "data-round": r.round, text: eps === undefined ? "—" : eps });
    }),
    el("td", { class: "num", text: percent(Number(latest.get(node)) / budget) })));
  box.replaceChildren();
  append(box, [
    el("p", { class: "policy", "data-encoding": encoding, text: description }),
    privacy.rounds.length > rounds.length
      ? el("p", { class: "hint", text: `the latest ${rounds.length} of ${privacy.rounds.length} rounds (all under /api/v1/privacy)` })
      : null,
    nodes.length
      ? el("table", { id: "privacy-table" }, el("thead", {}, head), el("tbody", {}, rows))
      : el("p", { class: "empty", text: "No round has recorded ε yet." }),
  ]);
}

// ------------------------------------------------------------------ verification

function renderVerdict(target, verdict) {
  const ok = verdict.verified === true;
  target.className = `verdict ${ok ? "ok" : "failed"}`;
  const findings = Array.isArray(verdict.findings) ? verdict.findings : [];
  target.replaceChildren();
  append(target, [
    el("div", { class: "headline", text: ok ? "✔ verified" : "✘ not verified" }),
    el("div", { class: "summary", text: verdict.summary || "" }),
    verdict.rederived_hash ? el("div", { class: "rederived" }, "re-derived SHA-256 ", hashSpan(verdict.rederived_hash, 16)) : null,
    findings.length
      ? el("ul", {}, findings.map((f) =>
          el("li", { class: "finding", "data-kind": f.kind },
            el("span", { class: "kind", text: f.kind }), ` ${f.role || ""} `, hashSpan(f.subject, 12), ": ",
            el("span", { class: "detail", text: f.detail || "" }))))
      : null,
  ]);
}

function renderVerifyError(target, error) {
  target.className = "verdict error";
  target.replaceChildren(el("div", { class: "headline", text: "verification unavailable" }), el("div", { text: error.message }));
}

async function verifyVersion(hash) {
  const row = document.querySelector(`#versions tr[data-hash="${CSS.escape(hash)}"]`);
  const button = row && row.querySelector("button.verify");
  const target = row && row.querySelector(".verdict");
  const node = document.querySelector(`#lineage-svg g.version[data-hash="${CSS.escape(hash)}"]`);
  if (button) { button.disabled = true; button.textContent = "verifying…"; }
  if (target) { target.className = "verdict"; target.textContent = "re-fetching blobs and re-running the aggregation…"; }
  if (node) node.setAttribute("class", node.getAttribute("class").replace(/ (verified|failed|checking)/g, "") + " checking");
  try {
    const verdict = await getJSON(`${API}/models/${encodeURIComponent(hash)}/verify`);
    if (target) renderVerdict(target, verdict);
    if (node) node.setAttribute("class", node.getAttribute("class").replace(" checking", "") + (verdict.verified ? " verified" : " failed"));
  } catch (error) {
    if (target) renderVerifyError(target, error);
    if (node) node.setAttribute("class", node.getAttribute("class").replace(" checking", ""));
  } finally {
    if (button) { button.disabled = false; button.textContent = "verify again"; }
  }
  if (row) row.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------ start

function renderChainCheck(error) {
  const banner = document.getElementById("chain-check");
  banner.hidden = false;
  if (error && error.status === 409) {
    banner.className = "chain-check conflict";
    banner.replaceChildren(
      el("strong", { text: "The index disagrees with the chain: " }), error.message,
      el("ul", {}, error.differences.map((d) =>
        el("li", { class: "difference", "data-what": d.what }, `${d.key} ${d.field}: index ${JSON.stringify(d.index)}, chain ${JSON.stringify(d.chain)} (${d.detail})`))));
  } else if (CHECKS.unchecked.length) {
    banner.className = "chain-check unchecked";
    banner.textContent = `Not checked against the chain: ${[...new Set(CHECKS.unchecked)].join("; ")}`;
  } else {
    banner.className = "chain-check checked";
    banner.textContent = `✔ Every answer below was compared with the chain's events (${CHECKS.checked} answers, as of block ${CHECKS.block}).`;
  }
}

let STATE = null;

async function start() {
  const status = document.getElementById("status");
  try {
    const state = await loadLedger();
    STATE = state;
    renderSummary(state);
    renderLineage(state);
    renderAccuracy(state);
    renderVersions(state);
    renderRounds(state);
    renderPrivacy(state);
    renderNodes(state);
    renderChainCheck(null);
    status.textContent = `${state.models.length} versions, ${state.rounds.length} rounds`;
    status.className = "status ready";
    document.body.dataset.ready = "true";
  } catch (error) {
    status.textContent = `Could not load the ledger: ${error.message}`;
    status.className = "status error";
    renderChainCheck(error);
    document.body.dataset.ready = "error";
  }
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  // The accuracy chart is drawn to the width it has: redraw it when that changes.
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (STATE) renderAccuracy(STATE); }, 100);
});

window.fedledgerVerify = verifyVersion;
document.addEventListener("DOMContentLoaded", start);
