// fedledger API reference: renders /api/v1/openapi.json (OpenAPI 3) as HTML. No libraries; every
// string of the document reaches the page through textContent.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

function anchor(kind, name) {
  return `${kind}-${name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "")}`;
}

function typeOf(schema) {
  // A one-line description of a schema, with links to named schemas.
  if (!schema) return el("span", { class: "none", text: "any" });
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { class: "schema-ref", href: `#${anchor("schema", name)}`, text: name });
  }
  if (schema.allOf) return el("span", {}, schema.allOf.map((part, i) => [i ? " + " : "", typeOf(part)]));
  const nullable = schema.nullable ? " | null" : "";
  if (schema.type === "array") return el("span", {}, "array of ", typeOf(schema.items), nullable);
  if (schema.type === "object" && schema.properties) {
    return el("span", {}, "object {", Object.keys(schema.properties).join(", "), "}", nullable);
  }
  const parts = [schema.type || "any"];
  if (schema.enum) parts.push(`one of ${schema.enum.join(", ")}`);
  if (schema.pattern) parts.push(`matching ${schema.pattern}`);
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema.default !== undefined) parts.push(`default ${JSON.stringify(schema.default)}`);
  return el("span", { class: "type", text: parts.join(", ") + nullable });
}

function propertiesTable(schema) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  if (!Object.keys(props).length) return null;
  return el("table", { class: "stack props" },
    el("thead", {}, el("tr", {}, el("th", { text: "field" }), el("th", { text: "type" }), el("th", { text: "about" }))),
    el("tbody", {}, Object.entries(props).map(([name, prop]) =>
      el("tr", {},
        el("td", { "data-label": "field" }, el("code", { text: name }), required.has(name) ? el("span", { class: "required", text: " required" }) : null),
        el("td", { "data-label": "type" }, typeOf(prop)),
        el("td", { "data-label": "about", text: prop.description || "" })))));
}

function renderPath(path, operations) {
  return Object.entries(operations).map(([method, op]) => {
    const params = op.parameters || [];
    const responses = Object.entries(op.responses || {});
    const example = params.some((p) => p.in === "path") ? null : el("a", { href: path, class: "try", text: "open" });
    return el("article", { class: "endpoint", id: anchor("path", `${method} ${path}`), "data-path": path },
      el("h3", {}, el("span", { class: "method", text: method.toUpperCase() }), " ", el("code", { text: path }), " ", example),
      el("p", { text: op.summary || "" }),
      params.length
        ? el("table", { class: "stack params" },
            el("thead", {}, el("tr", {}, ["name", "in", "type", "about"].map((h) => el("th", { text: h })))),
            el("tbody", {}, params.map((p) =>
              el("tr", {},
                el("td", { "data-label": "name" }, el("code", { text: p.name }), p.required ? el("span", { class: "required", text: " required" }) : null),
                el("td", { "data-label": "in", text: p.in }),
                el("td", { "data-label": "type" }, typeOf(p.schema)),
                el("td", { "data-label": "about", text: p.description || (p.schema && p.schema.description) || "" })))))
        : el("p", { class: "hint", text: "No parameters." }),
      el("table", { class: "stack responses" },
        el("thead", {}, el("tr", {}, ["status", "meaning", "body"].map((h) => el("th", { text: h })))),
        el("tbody", {}, responses.map(([code, response]) => {
          const content = response.content && response.content["application/json"];
          return el("tr", { "data-status": code },
            el("td", { "data-label": "status" }, el("code", { text: code })),
            el("td", { "data-label": "meaning", text: response.description || "" }),
            el("td", { "data-label": "body" }, content ? typeOf(content.schema) : el("span", { class: "none", text: "—" })));
        }))));
  });
}

async function start() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/v1/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const doc = await response.json();
    document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version} (OpenAPI ${doc.openapi})`;
    document.getElementById("description").textContent = doc.info.description || "";
    const paths = Object.entries(doc.paths);
    document.getElementById("toc").replaceChildren(el("ul", { class: "toc" }, paths.map(([path, ops]) =>
      Object.keys(ops).map((method) => el("li", {}, el("a", { href: `#${anchor("path", `${method} ${path}`)}` },
        el("span", { class: "method", text: method.toUpperCase() }), " ", el("code", { text: path })))))));
    document.getElementById("paths").replaceChildren(...paths.flatMap(([path, ops]) => renderPath(path, ops)));
    const schemas = Object.entries((doc.components && doc.components.schemas) || {});
    document.getElementById("schema-list").replaceChildren(...schemas.map(([name, schema]) =>
      el("article", { class: "schema", id: anchor("schema", name), "data-schema": name },
        el("h3", {}, el("code", { text: name })),
        schema.description ? el("p", { text: schema.description }) : null,
        propertiesTable(schema) || el("p", {}, typeOf(schema)))));
    status.className = "status ready";
    document.body.dataset.ready = "true";
  } catch (error) {
    status.textContent = `Could not read the OpenAPI document: ${error.message}`;
    status.className = "status error";
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
