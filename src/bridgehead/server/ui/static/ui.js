// Bridgehead web UI: live updates on top of pages that work without JavaScript.
// Logs follow a running job by long-polling /v1/jobs/{id}/logs (the session cookie
// authenticates it); the events page long-polls /v1/events. Each shows its connection state
// through live.js's indicator (live / reconnecting… / offline). A log's DOM is bounded: past
// MAX_CHARS the oldest text is dropped and "load earlier" fetches it again by offset. The
// workflow editor's tabs, save and download are here too; its form is editor.js's.
"use strict";

const MAX_CHARS = 512 * 1024;
const PART = 64 * 1024;
const WAIT_S = 25;

function showState(kind, note) {  // live.js's indicator
  if (window.BridgeheadLive) window.BridgeheadLive.show(kind, note);
}

function backoff(failures) {
  return Math.min(10000, 500 * 2 ** failures);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function trimStart(pre) {
  const text = pre.textContent;
  if (text.length <= MAX_CHARS) return;
  const cut = text.length - MAX_CHARS;
  const nl = text.indexOf("\n", cut);
  const from = nl >= 0 && nl - cut < 4096 ? nl + 1 : cut;
  pre.textContent = text.slice(from);
  pre.dataset.start = String(Number(pre.dataset.start) + new TextEncoder().encode(text.slice(0, from)).length);
  pre.dataset.trimmed = "yes";
}

async function follow(pre) {
  const job = pre.dataset.job;
  const stream = pre.dataset.log;
  let failures = 0;
  showState("live");
  for (;;) {
    if (pre.dataset.follow !== "yes") {  // "load earlier" filled the page: its end was dropped
      showState("paused", "paused (reload to follow)");
      return;
    }
    const url = `/v1/jobs/${job}/logs?stream=${stream}&offset=${pre.dataset.end}&wait=${WAIT_S}`;
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    } catch (err) {
      failures += 1;
      showState(navigator.onLine === false || failures > 3 ? "offline" : "reconnecting");
      await sleep(backoff(failures));
      continue;
    }
    if (!response.ok) {
      showState("offline", response.status === 401 ? "log in again" : `HTTP ${response.status}`);
      return;
    }
    failures = 0;
    showState("live");
    const data = await response.text();
    const wasAtBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (data) {
      pre.append(data);
      trimStart(pre);
      if (wasAtBottom) pre.scrollTop = pre.scrollHeight;
    }
    pre.dataset.end = response.headers.get("X-Next-Offset") || pre.dataset.end;
    const state = response.headers.get("X-Job-State");
    const badge = document.querySelector("#job-state .state");
    if (state && badge) {
      badge.textContent = state;
      badge.className = `state s-${state}`;
    }
    if (!data && ["succeeded", "failed", "cancelled", "timed_out", "lost"].includes(state)) {
      showState("ended", `ended (${state})`);
      return;
    }
  }
}

async function loadEarlier(event) {
  const link = event.currentTarget;
  const pre = document.querySelector(`pre[data-log="${link.dataset.earlier}"]`);
  const start = Number(pre.dataset.start);
  if (!pre || start <= 0) return;
  event.preventDefault();
  const from = Math.max(0, start - PART);
  const url = `/v1/jobs/${pre.dataset.job}/logs?stream=${pre.dataset.log}&offset=${from}&limit=${start - from}`;
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) return;
  const bytes = new Uint8Array(await response.arrayBuffer());
  pre.prepend(new TextDecoder().decode(bytes));
  pre.dataset.start = String(from);
  const text = pre.textContent;
  if (text.length > MAX_CHARS) {  // bounded: drop the newest text, and stop following
    pre.textContent = text.slice(0, MAX_CHARS);
    pre.dataset.end = String(from + new TextEncoder().encode(pre.textContent).length);
    pre.dataset.follow = "no";
  }
  if (from === 0) link.parentElement.hidden = true;
}

function eventRow(e) {
  const tr = document.createElement("tr");
  const subject = document.createElement("td");
  if (/^jobs\/[^/]+$|^runs\/[^/]+$/.test(e.subject)) {
    const a = document.createElement("a");
    a.href = `/ui/${e.subject}`;
    a.textContent = e.subject;
    subject.append(a);
  } else {
    subject.textContent = e.subject;
  }
  const cells = [String(e.seq), e.type, null, e.time.replace("T", " ").replace(/\..*|\+00:00$/, "") + "Z"];
  for (const text of cells) {
    if (text === null) { tr.append(subject); continue; }
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

async function tailEvents(body) {
  let after = Number(body.dataset.after);
  const type = body.dataset.type;
  let failures = 0;
  showState("live");
  for (;;) {
    let page;
    try {
      const response = await fetch(`/v1/events?after=${after}&limit=500&wait=${WAIT_S}`,
                                   { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) {
        showState("offline", `HTTP ${response.status}`);
        return;
      }
      page = await response.json();
    } catch (err) {
      failures += 1;
      showState(navigator.onLine === false || failures > 3 ? "offline" : "reconnecting");
      await sleep(backoff(failures));
      continue;
    }
    failures = 0;
    showState("live");
    for (const e of page.events) {
      if (!type || e.type.startsWith(type)) body.prepend(eventRow(e));
    }
    while (body.rows.length > 200) body.deleteRow(-1);
    after = page.next;
  }
}

function drawGantt(list) {
  // Each bar from its task's start to its end, as a share of the run's span (CSSOM, which
  // the CSP allows: the page itself has no style attribute).
  const span = Number(list.dataset.span) || 1;
  for (const bar of list.querySelectorAll(".g-bar")) {
    const start = Number(bar.dataset.start);
    const end = Number(bar.dataset.end);
    bar.style.left = `${(100 * start) / span}%`;
    bar.style.width = `${(100 * Math.max(0, end - start)) / span}%`;
  }
}

// -- the workflow editor: YAML and form tabs (the form is editor.js's), save, download ------
// Both tabs are checked by POST /v1/workflows/validate (the parser of `bridgehead workflow
// validate`): YAML -> form, the server reads the text and answers with the file's data;
// form -> YAML, it writes the data as YAML and checks that. The page works without this
// (Check, Start a run and Download post the YAML form).
const editing = { mode: "yaml", asked: 0, timer: null };

function readJson(text) {  // 1.0 stays 1.0 (JSON.rawJSON of its text), not the integer 1
  return JSON.parse(text, (key, value, context) => (typeof value === "number"
    && Number.isInteger(value) && context && /[.eE]/.test(context.source)
    && typeof JSON.rawJSON === "function" ? JSON.rawJSON(context.source) : value));
}

async function postJson(url, body) {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf } });
  return { ok: response.ok, body: readJson(await response.text()) };
}

async function validateWorkflow(body) {
  const filename = document.getElementById("e-filename").value || "workflow.yaml";
  try {
    const answer = await postJson("/v1/workflows/validate", { ...body, filename });
    return answer.ok ? answer.body : null;
  } catch (err) {
    return null;
  }
}

function showYamlErrors(errors, formError) {  // each at its line: a button selects the line
  const out = document.getElementById("live-problems");
  const textarea = document.getElementById("e-spec");
  out.replaceChildren();
  const item = (...parts) => { const li = document.createElement("li"); li.append(...parts); out.append(li); };
  for (const e of errors) {
    const go = document.createElement("button");
    go.type = "button";
    go.className = "link where";
    go.textContent = `line ${e.line}${e.loc ? ", " + e.loc : ""}`;
    go.addEventListener("click", () => goToLine(textarea, e.line));
    item(go, `: ${e.detail}`);
  }
  if (formError && !errors.length) item(`The form cannot show this file: ${formError}`);
  if (!errors.length && !formError) item("No error.");
  textarea.setAttribute("aria-invalid", errors.length ? "true" : "false");
  textarea.setAttribute("aria-describedby", "live-problems");
  out.parentElement.hidden = false;
}

function goToLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  textarea.focus();
  textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

async function checkYaml() {
  const mine = ++editing.asked;
  const body = await validateWorkflow({ spec: document.getElementById("e-spec").value || " " });
  if (!body || mine !== editing.asked) return null;
  showYamlErrors(body.errors, body.form_error);
  return body;
}

async function syncForm() {  // form -> YAML: the YAML tab always holds what the form says
  const mine = ++editing.asked;
  const body = await validateWorkflow({ document: window.BridgeheadForm.data() });
  if (body && mine !== editing.asked) return { stale: true };  // a later check answers
  if (!body) return null;
  document.getElementById("e-spec").value = body.yaml;
  window.BridgeheadForm.showErrors(body.errors);
  showYamlErrors(body.errors, null);
  return body;
}

async function showTab(mode) {
  const blocked = document.getElementById("form-blocked");
  clearTimeout(editing.timer);  // a YAML check still waiting is this one's
  if (mode === "form") {
    const body = await checkYaml();
    if (!body) return;
    if (!body.document) {
      blocked.textContent = body.form_error || "Fix the YAML first: the form needs a file that reads.";
      return;
    }
    const schema = JSON.parse(document.getElementById("wf-schema").textContent);
    window.BridgeheadForm.draw(document.getElementById("wf-form"), schema, body.document, syncForm);
    window.BridgeheadForm.showErrors(body.errors);
  } else if (editing.mode === "form") {
    let body = await syncForm();
    while (body && body.stale) body = await syncForm();  // the YAML of the form as it is now
    if (!body) {
      blocked.textContent = "The server did not answer: the YAML tab may not hold the form's last edits.";
      return;
    }
  }
  blocked.textContent = "";
  editing.mode = mode;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.mode === mode;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
  }
}

async function currentYaml() {  // what to save or download: the form's, when it is shown
  if (editing.mode === "form") {
    let body = await syncForm();
    while (body && body.stale) body = await syncForm();
  }
  return document.getElementById("e-spec").value;
}

async function download(text) {  // a Blob, named after the workflow as the server's download
  const body = await validateWorkflow({ spec: text || " " });
  const fallback = (document.getElementById("e-filename").value || "workflow").replace(/\.ya?ml$/, "");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/yaml" }));
  a.download = `${(body && body.name) || fallback}.yaml`;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function save() {  // admins (the server refuses anyone else): POST /v1/workflows/files
  const nameInput = document.getElementById("e-save-name");
  const status = document.getElementById("e-save-status");
  const body = { name: nameInput.value, spec: await currentYaml(),
                 overwrite: document.getElementById("e-overwrite").checked };
  nameInput.removeAttribute("aria-invalid");
  status.className = "";
  let answer;
  try {
    answer = await postJson("/v1/workflows/files", body);
  } catch (err) {
    answer = { ok: false, body: { detail: "the server did not answer: try again" } };
  }
  if (answer.ok) {
    status.textContent = `Saved ${answer.body.file} (workflow ${answer.body.workflow}).`;
    return;
  }
  status.className = "error";
  status.textContent = `Not saved: ${answer.body.detail}`;
  if (/^(request body: )?name\b/.test(answer.body.detail)) nameInput.setAttribute("aria-invalid", "true");
}

function setUpEditor(textarea) {
  const form = textarea.form;
  for (const el of document.querySelectorAll("[data-needs-js]")) el.hidden = false;
  const yamlPanel = document.getElementById("yaml-panel");
  yamlPanel.setAttribute("role", "tabpanel");
  yamlPanel.setAttribute("aria-labelledby", "tab-yaml");
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.dataset.mode));
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const other = document.querySelector(`[role=tab]:not([data-mode="${tab.dataset.mode}"])`);
      other.focus();
      showTab(other.dataset.mode);
    });
  }
  textarea.addEventListener("input", () => {
    clearTimeout(editing.timer);
    editing.timer = setTimeout(checkYaml, 400);
  });
  form.addEventListener("submit", async (e) => {
    const action = e.submitter ? e.submitter.value : "check";
    if (action === "download") {
      e.preventDefault();
      await download(await currentYaml());
    } else if (editing.mode === "form" && !form.dataset.synced) {
      e.preventDefault();  // post what the form says
      await syncForm();
      form.dataset.synced = "yes";
      form.requestSubmit(e.submitter);
    }
  });
  const saveButton = document.getElementById("e-save");
  if (saveButton) saveButton.addEventListener("click", (e) => { e.preventDefault(); save(); });
}

document.addEventListener("DOMContentLoaded", () => {
  const spec = document.getElementById("e-spec");
  if (spec && window.BridgeheadForm) setUpEditor(spec);
  for (const list of document.querySelectorAll(".gantt")) drawGantt(list);
  for (const pre of document.querySelectorAll("pre[data-log]")) {
    pre.scrollTop = pre.scrollHeight;
    if (pre.dataset.follow === "yes") follow(pre);
  }
  for (const link of document.querySelectorAll("a[data-earlier]")) {
    link.addEventListener("click", loadEarlier);
  }
  const events = document.getElementById("events");
  if (events) tailEvents(events);
  window.addEventListener("offline", () => showState("offline"));
  document.addEventListener("bridgehead:updated", (e) => {  // live.js reloaded a part
    for (const list of e.target.querySelectorAll(".gantt")) drawGantt(list);
  });
});
