// Bridgehead workflow editor's form: generated from the workflow JSON schema (the page
// carries it as JSON data; no field is written by hand here) over the file's data, with each
// error of POST /v1/workflows/validate shown at its field (aria-invalid, aria-describedby).
// It knows nothing of the server: ui.js's editor part reads and checks the file, switches the
// tabs, saves and downloads, through window.BridgeheadForm (the end of this file).
"use strict";

(() => {
const WAIT_MS = 400;
const SCALARS = ["string", "number", "integer"];
const ed = { defs: {}, root: null, doc: null, panel: null, fields: new Map(), serial: 0,
             timer: null, onEdit: () => {} };

function h(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...kids.filter((kid) => kid !== null && kid !== undefined));
  return e;
}

function newId() {
  ed.serial += 1;
  return `f${ed.serial}`;
}

function fmtLoc(path) {  // as bridgehead.errors.format_loc: steps[1].needs[0]
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${p}` : String(p);
  return out;
}

// -- the schema ------------------------------------------------------------------------------
function deref(s) {
  for (let n = 0; s && s.$ref && n < 32; n += 1) s = ed.defs[s.$ref.split("/").pop()];
  return s || {};
}

function typesOf(m) {
  return Array.isArray(m.type) ? m.type : m.type ? [m.type] : [];
}

function members(s) {  // a union's members, nested unions flattened, null left out
  s = deref(s);
  const list = s.anyOf || s.oneOf;
  if (!list) return [s];
  return list.flatMap(members).filter((m) => m.type !== "null");
}

function kindOf(s) {
  const ms = members(s);
  const scalar = (m) => !m.enum && typesOf(m).length && typesOf(m).every((t) => SCALARS.includes(t));
  if (ms.length > 1) {
    if (ms.every(scalar)) return { kind: "scalar", types: ms.flatMap(typesOf), schema: ms[0] };
    return { kind: "union", members: ms };
  }
  const m = ms[0] || {};
  const types = typesOf(m);
  if (m.enum) return { kind: "enum", schema: m };
  if (types.includes("object")) return { kind: m.properties ? "object" : "map", schema: m };
  if (types.includes("array")) return { kind: "list", schema: m };
  if (types.length === 1 && types[0] === "boolean") return { kind: "bool", schema: m };
  if (scalar(m)) return { kind: "scalar", types, schema: m };
  return { kind: "any", schema: m };
}

function describe(s) {
  const outer = deref(s);
  const text = outer.description || members(s).map((m) => m.description).find(Boolean) || "";
  return text.replace(/``/g, "");  // the models' docstrings mark code as ``code``
}

function blank(s) {  // the value a newly added field starts from
  const k = kindOf(s);
  const d = deref(s).default;
  if (d !== undefined && d !== null && k.kind !== "object") return structuredClone(d);
  switch (k.kind) {
    case "object": {
      const o = {};
      for (const r of k.schema.required || []) o[r] = blank(k.schema.properties[r]);
      return o;
    }
    case "map": return {};
    case "list": return [];
    case "bool": return false;
    case "enum": return k.schema.enum[0];
    case "union": return blank(k.members[0]);
    case "scalar": return k.types.includes("string") ? "" : 0;
    default: return "";
  }
}

// A float with no fraction (1.0) arrives as JSON.rawJSON of its text (ui.js's readJson), so
// that it is written back as 1.0, not 1: in a param, an env value or an argv word it reads "1.0".
const raw = (v) => typeof JSON.isRawJSON === "function" && JSON.isRawJSON(v);

function shapeOf(v) {
  if (raw(v)) return "number";
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  if (typeof v === "object") return "object";
  return Number.isInteger(v) ? "integer" : typeof v;
}

function memberFor(ms, v, none = 0) {
  const t = shapeOf(v);
  const i = ms.findIndex((m) => typesOf(m).includes(t) || (t === "integer" && typesOf(m).includes("number")));
  return i < 0 ? none : i;
}

function memberLabel(m) {
  if (m.title) return m.title;
  const t = typesOf(m)[0];
  return { array: "list", object: "mapping", integer: "number", string: "text" }[t] || t || "value";
}

// A typed text as YAML reads a plain scalar: a number when it is one (written as JS writes
// it back), else text; a form's "any" value (params) as JSON when it is JSON, else text.
function coerce(text, types) {
  const numeric = types.includes("number") || types.includes("integer");
  if (numeric && text.trim() !== "" && String(Number(text)) === text
      && (types.includes("number") || Number.isInteger(Number(text)))) return Number(text);
  return text;
}

function anyText(v) {
  if (typeof v !== "string") return v === undefined ? "" : JSON.stringify(v);
  try { JSON.parse(v); } catch (err) { return v; }
  return JSON.stringify(v);
}

function anyValue(text) {
  try { return JSON.parse(text); } catch (err) { return text; }
}

// -- the form's data -------------------------------------------------------------------------
function getAt(path) {
  let o = ed.doc;
  for (const p of path) o = o === undefined || o === null ? undefined : o[p];
  return o;
}

function setAt(path, v) {
  let o = ed.doc;
  for (const p of path.slice(0, -1)) o = o[p];
  o[path[path.length - 1]] = v;
}

function removeAt(path) {
  const parent = getAt(path.slice(0, -1));
  const last = path[path.length - 1];
  if (Array.isArray(parent)) parent.splice(last, 1);
  else delete parent[last];
}

function renameKey(path, from, to) {  // keeps the mapping's order
  const o = getAt(path);
  const entries = Object.entries(o).map(([k, v]) => [k === from ? to : k, v]);
  for (const k of Object.keys(o)) delete o[k];
  for (const [k, v] of entries) o[k] = v;
}

function edited() {
  clearTimeout(ed.timer);
  ed.timer = setTimeout(() => ed.onEdit(), WAIT_MS);
}

function changed(focusKey) {  // the form's structure changed: draw it again, check it
  rebuild(focusKey);
  edited();
}

// -- the form's widgets ----------------------------------------------------------------------
function register(path, el, box) {
  el.dataset.loc = fmtLoc(path);
  ed.fields.set(fmtLoc(path), { el, box });
}

function hint(s) {
  const text = describe(s);
  return text ? h("span", { class: "hint", id: newId(), text }) : null;
}

function button(text, hidden, onclick, focusKey) {
  return h("button", { type: "button", class: "small", "data-focus": focusKey, onclick },
           text, hidden ? h("span", { class: "vh", text: ` ${hidden}` }) : null);
}

function scalarInput(s, path, value, label, k) {
  const id = newId();
  const multi = (typeof value === "string" && value.includes("\n")) || /script/i.test(describe(s));
  const shown = k.kind === "any" ? anyText(value) : value === undefined || value === null ? ""
    : raw(value) ? value.rawJSON : String(value);
  const props = { id, spellcheck: "false",
                  oninput: (e) => {
                    setAt(path, k.kind === "any" ? anyValue(e.target.value) : coerce(e.target.value, k.types));
                    edited();
                  } };
  const input = multi ? h("textarea", { ...props, rows: Math.min(20, Math.max(4, shown.split("\n").length + 1)) })
    : h("input", { ...props, inputmode: k.types && !k.types.includes("string") ? "numeric" : null });
  input.value = shown;
  return { id, input };
}

function leaf(s, path, value, label, extra) {
  const k = kindOf(s);
  const box = h("div", { class: "field" });
  const tip = hint(s);
  let input;
  let id;
  if (k.kind === "bool") {
    id = newId();
    input = h("input", { type: "checkbox", id, onchange: (e) => { setAt(path, e.target.checked); edited(); } });
    input.checked = value === true;
    box.classList.add("check");
    box.append(input, h("label", { for: id, text: label }));
  } else if (k.kind === "enum") {
    id = newId();
    input = h("select", { id, onchange: (e) => { setAt(path, e.target.value); edited(); } },
              ...k.schema.enum.map((v) => h("option", { value: v, text: String(v) })));
    input.value = value === undefined ? "" : value;
    box.append(h("label", { for: id, text: label }), input);
  } else {
    ({ id, input } = scalarInput(s, path, value, label, k));
    box.append(h("label", { for: id, text: label }), input);
  }
  if (tip) { box.append(tip); input.setAttribute("aria-describedby", tip.id); }
  if (extra) box.append(extra);
  register(path, input, box);
  return box;
}

function group(s, path, label, extra) {
  const legendId = newId();
  const box = h("fieldset", { class: "group" }, h("legend", { id: legendId, text: label }));
  const tip = hint(s);
  if (tip) { box.append(tip); box.setAttribute("aria-describedby", tip.id); }
  if (extra) box.append(extra);
  register(path, box, box);
  return box;
}

function fits(k, v) {  // a value of another shape than its field's is shown as it is
  if (v === undefined || v === null) return true;
  switch (k.kind) {
    case "object": case "map": return shapeOf(v) === "object";
    case "list": return Array.isArray(v);
    case "union": return k.members.some((m) => memberFor([m], v, -1) === 0);
    case "bool": return typeof v === "boolean";
    case "scalar": case "enum": return ["string", "number", "integer"].includes(shapeOf(v));
    default: return true;
  }
}

function widget(s, path, value, label, removable) {
  let k = kindOf(s);
  if (!fits(k, value)) { s = {}; k = kindOf(s); }
  const loc = fmtLoc(path);
  const remove = removable ? button("Remove", loc, () => { removeAt(path); changed(`add:${fmtLoc(path.slice(0, -1))}`); }) : null;
  if (k.kind === "object") return objectWidget(k.schema, path, value || {}, label, remove);
  if (k.kind === "map") return mapWidget(k.schema, path, value || {}, label, remove);
  if (k.kind === "list") return listWidget(k.schema, path, value || [], label, remove);
  if (k.kind === "union") return unionWidget(k.members, path, value, label, remove);
  return leaf(s, path, value, label, remove);
}

function objectWidget(s, path, value, label, remove) {
  const box = group(s, path, label, remove);
  const props = s.properties || {};
  const required = s.required || [];
  const first = required.filter((p) => kindOf(props[p]).kind === "scalar");  // name, id
  const order = [...first, ...Object.keys(props).filter((p) => !first.includes(p))];
  const shown = order.filter((p) => required.includes(p) || p in value);
  for (const p of shown) box.append(widget(props[p], [...path, p], value[p], p, !required.includes(p)));
  for (const p of Object.keys(value).filter((key) => !(key in props))) {  // unknown: shown, refused
    box.append(widget({}, [...path, p], value[p], `${p} (not a field)`, true));
  }
  const absent = Object.keys(props).filter((p) => !shown.includes(p));
  if (absent.length) {
    const id = newId();
    const pick = h("select", { id }, ...absent.map((p) => h("option", { value: p, text: p })));
    box.append(h("div", { class: "add" }, h("label", { for: id, text: "Field to add" }), pick,
      button("Add field", `to ${fmtLoc(path) || "the workflow"}`, () => {
        const target = getAt(path) === undefined ? (setAt(path, {}), getAt(path)) : getAt(path);
        target[pick.value] = blank(props[pick.value]);
        changed(`loc:${fmtLoc([...path, pick.value])}`);
      }, `add:${fmtLoc(path)}`)));
  }
  return box;
}

function ensure(path, empty) {
  if (getAt(path) === undefined || getAt(path) === null) setAt(path, empty);
  return getAt(path);
}

function mapWidget(s, path, value, label, remove) {
  const box = group(s, path, label, remove);
  const item = s.additionalProperties === true ? {} : s.additionalProperties || {};
  for (const key of Object.keys(value)) {
    const keyId = newId();
    const keyInput = h("input", { id: keyId, class: "key", spellcheck: "false", onchange: (e) => {
      const to = e.target.value;
      if (to === key || to in getAt(path)) { e.target.value = key; return; }
      renameKey(path, key, to);
      changed(`loc:${fmtLoc([...path, to])}`);
    } });
    keyInput.value = key;
    box.append(h("div", { class: "entry" },
      h("label", { for: keyId, class: "vh", text: `key of ${fmtLoc(path)} entry ${key}` }), keyInput,
      widget(item, [...path, key], value[key], key, true)));
  }
  box.append(button("Add entry", `to ${fmtLoc(path)}`, () => {
    const o = ensure(path, {});
    let key = "name";
    for (let n = 2; key in o; n += 1) key = `name${n}`;
    o[key] = blank(item);
    changed(`loc:${fmtLoc([...path, key])}`);
  }, `add:${fmtLoc(path)}`));
  return box;
}

function listWidget(s, path, value, label, remove) {
  const box = group(s, path, label, remove);
  const item = s.items || {};
  const objects = kindOf(item).kind === "object";
  value.forEach((v, i) => {
    const name = objects && v && typeof v === "object" && typeof v.id === "string" && v.id ? `: ${v.id}` : "";
    const where = `${label} ${i + 1}`;
    const move = (to) => () => {
      const list = getAt(path);
      list.splice(to, 0, list.splice(i, 1)[0]);
      changed(`loc:${fmtLoc([...path, to])}`);
    };
    const tools = h("div", { class: "tools" },
      i > 0 ? button("Up", `move ${where} up`, move(i - 1)) : null,
      i < value.length - 1 ? button("Down", `move ${where} down`, move(i + 1)) : null,
      button("Remove", where, () => { getAt(path).splice(i, 1); changed(`add:${fmtLoc(path)}`); }));
    const w = widget(item, [...path, i], v, `${where}${name}`, false);
    w.classList.add("item");
    w.append(tools);
    box.append(w);
  });
  const noun = objects && label.endsWith("s") ? label.slice(0, -1) : "item";
  box.append(button(`Add ${noun}`, `to ${fmtLoc(path)}`, () => {
      ensure(path, []).push(blank(item));
      changed(`loc:${fmtLoc([...path, getAt(path).length - 1])}`);
    }, `add:${fmtLoc(path)}`));
  return box;
}

function unionWidget(ms, path, value, label, remove) {
  const box = group({}, path, label, remove);
  const at = memberFor(ms, value);
  const id = newId();
  const pick = h("select", { id, onchange: (e) => {
    setAt(path, blank(ms[Number(e.target.value)]));
    changed(`shape:${fmtLoc(path)}`);
  } }, ...ms.map((m, i) => h("option", { value: String(i), text: memberLabel(m) })));
  pick.value = String(at);
  pick.dataset.focus = `shape:${fmtLoc(path)}`;
  box.append(h("div", { class: "field" }, h("label", { for: id, text: `${label} as` }), pick));
  box.append(widget(ms[at], path, value, memberLabel(ms[at]), false));
  delete box.dataset.loc;  // the member shown is the field (its errors go there)
  return box;
}

// -- drawing and errors ------------------------------------------------------------------------
function rebuild(focusKey) {
  const panel = ed.panel;
  ed.fields = new Map();
  ed.serial = 0;
  const form = widget(ed.root, [], ed.doc, "Workflow", false);
  panel.replaceChildren(h("div", { id: "form-summary", role: "status" }), form);
  if (!focusKey) return;
  const [how, key] = [focusKey.slice(0, focusKey.indexOf(":")), focusKey.slice(focusKey.indexOf(":") + 1)];
  const found = how === "loc" ? ed.fields.get(key)?.el : panel.querySelector(`[data-focus="${CSS.escape(focusKey)}"]`);
  const target = found && found.tagName === "FIELDSET" ? found.querySelector("input, select, textarea, button") : found;
  if (target) target.focus();
}

function clearErrors(root) {
  for (const e of root.querySelectorAll(".field-error")) e.remove();
  for (const e of root.querySelectorAll("[aria-invalid]")) {
    e.removeAttribute("aria-invalid");
    const kept = (e.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && !x.startsWith("err-"));
    if (kept.length) e.setAttribute("aria-describedby", kept.join(" "));
    else e.removeAttribute("aria-describedby");
  }
}

function fieldOf(loc) {  // the field of loc, or of its nearest parent the form shows
  let at = loc;
  while (at) {
    if (ed.fields.has(at)) return ed.fields.get(at);
    at = at.replace(/(\[\d+\]|\.[^.[\]]*|^[^.[\]]*)$/, "");
  }
  return ed.fields.get("");
}

function showFieldErrors(errors) {
  const panel = ed.panel;
  clearErrors(panel);
  const summary = document.getElementById("form-summary");
  summary.replaceChildren();
  errors.forEach((e, i) => {
    const field = fieldOf(e.loc);
    const id = `err-${i}`;
    const p = h("p", { class: "field-error", id, text: e.loc ? `${e.loc}: ${e.detail}` : e.detail });
    if (field.box.tagName === "FIELDSET") field.box.querySelector("legend").after(p);
    else field.box.append(p);
    field.el.setAttribute("aria-invalid", "true");
    const had = field.el.getAttribute("aria-describedby");
    field.el.setAttribute("aria-describedby", had ? `${had} ${id}` : id);
  });
  summary.append(errors.length ? `${errors.length} error${errors.length > 1 ? "s" : ""}: each is shown at its field.` : "No error.");
}

window.BridgeheadForm = {
  /** Draw the form of `schema` (with its $defs) over `doc` in `panel`; `onEdit()` is called
   * (debounced) after each change. */
  draw(panel, schema, doc, onEdit) {
    Object.assign(ed, { panel, root: schema, defs: schema.$defs || {}, doc, onEdit });
    rebuild(null);
  },
  data: () => ed.doc,
  showErrors: showFieldErrors,
};
})();
