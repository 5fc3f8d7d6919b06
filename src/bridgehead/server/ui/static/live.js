// Bridgehead web UI: the live indicator, and pages that follow the event stream.
// Every [data-live-state] element says how the page's live data is doing: "live",
// "reconnecting…", or "offline — last update HH:MM:SS" (UTC, as the pages' times); it is a
// polite live region (role=status), so a screen reader hears the changes. ui.js's log and
// event followers (long-polls) report through BridgeheadLive.show too.
// A page whose indicator has data-live-after (the overview, a run) follows
// GET /v1/events/stream with an EventSource (the session cookie authenticates it): the
// indicator is the EventSource's state, and an event of the page's types and subject reloads
// the page's [data-live-part] elements from the server (debounced), keeping focus and the
// open <details>. Without JavaScript the indicator stays hidden and the page is as served.
"use strict";

(() => {
  const OFFLINE_AFTER_MS = 4000;  // reconnecting this long without success: offline
  const REFRESH_GAP_MS = 1500;  // at most one reload of the page's parts per gap
  let lastUpdate = null;  // when the page's data was last known current
  let current = null;

  function clock(date) {
    return date.toISOString().slice(11, 19);
  }

  // kind: live | reconnecting | offline | anything else (ended, paused: shown as `note`).
  function show(kind, note) {
    if (kind === "live" || current === "live") lastUpdate = new Date();  // live until now
    current = kind;
    let text = note || kind;
    if (kind === "live") text = "live";
    else if (kind === "reconnecting") text = "reconnecting…";
    else if (kind === "offline") {
      text = lastUpdate ? `offline — last update ${clock(lastUpdate)}Z` : "offline — no update yet";
      if (note) text += ` (${note})`;
    }
    for (const el of document.querySelectorAll("[data-live-state]")) {
      el.hidden = false;
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = kind;
    }
  }

  // -- reload the page's live parts ------------------------------------------------------
  const refresh = { timer: null, running: false, again: false, last: 0 };

  function keepState(part) {  // what a reload must not lose: focus and open <details>
    const open = [...part.querySelectorAll("details")].map((d) => d.open);
    const focused = part.contains(document.activeElement) ? document.activeElement : null;
    const key = focused && (focused.id ? `#${CSS.escape(focused.id)}`
      : focused.getAttribute("href") ? `[href="${CSS.escape(focused.getAttribute("href"))}"]` : null);
    return { open, key };
  }

  function restore(part, kept) {
    const details = part.querySelectorAll("details");
    if (details.length === kept.open.length) details.forEach((d, i) => { d.open = kept.open[i]; });
    const again = kept.key && part.querySelector(kept.key);
    if (again) again.focus({ preventScroll: true });
  }

  async function reload() {
    if (refresh.running) { refresh.again = true; return; }
    refresh.running = true;
    refresh.last = Date.now();
    try {
      const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok || response.redirected) return;  // (a redirect: to log in again)
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of document.querySelectorAll("[data-live-part][id]")) {
        const next = fresh.getElementById(part.id);
        if (!next || !next.hasAttribute("data-live-part")) continue;
        const kept = keepState(part);
        part.replaceWith(next);
        restore(next, kept);
        next.dispatchEvent(new CustomEvent("bridgehead:updated", { bubbles: true }));
      }
    } catch (err) {
      // the stream's own state says whether the server is reachable
    } finally {
      refresh.running = false;
      if (refresh.again) { refresh.again = false; schedule(); }
    }
  }

  function schedule() {
    if (refresh.timer) return;
    const wait = Math.max(200, REFRESH_GAP_MS - (Date.now() - refresh.last));
    refresh.timer = setTimeout(() => { refresh.timer = null; reload(); }, wait);
  }

  // -- the event stream --------------------------------------------------------------------
  function followStream(indicator) {
    const subject = indicator.dataset.liveSubject;
    const types = indicator.dataset.liveTypes.split(" ").filter(Boolean);
    let after = Number(indicator.dataset.liveAfter) || 0;
    let failures = 0;
    let downSince = null;  // the first failure since the stream was last open
    let offlineTimer = null;
    let source = null;

    const relevant = (event) => {
      after = Math.max(after, Number(event.lastEventId) || after);
      show("live");
      if (!subject) return true;
      try {
        const s = JSON.parse(event.data).subject || "";
        return s === subject || s.startsWith(`${subject}/`);
      } catch (err) {
        return false;
      }
    };

    const failed = () => {
      if (downSince === null) downSince = Date.now();
      const left = OFFLINE_AFTER_MS - (Date.now() - downSince);
      show(left <= 0 ? "offline" : "reconnecting");
      if (left > 0 && !offlineTimer) {
        offlineTimer = setTimeout(() => {
          offlineTimer = null;
          if (source.readyState !== EventSource.OPEN) show("offline");
        }, left);
      }
    };

    const connect = () => {
      source = new EventSource(`/v1/events/stream?after=${after}`);
      source.onopen = () => {
        failures = 0;
        downSince = null;
        clearTimeout(offlineTimer);
        offlineTimer = null;
        show("live");  // what was missed meanwhile comes first (after / Last-Event-ID)
      };
      source.onerror = () => {
        failed();
        if (source.readyState === EventSource.CLOSED) {  // refused (not 200): retry ourselves
          failures += 1;
          setTimeout(connect, Math.min(10000, 500 * 2 ** failures));
        }  // else the browser retries by itself, with Last-Event-ID
      };
      for (const type of types) {
        source.addEventListener(type, (event) => { if (relevant(event)) schedule(); });
      }
    };
    connect();
  }

  window.BridgeheadLive = { show };
  document.addEventListener("DOMContentLoaded", () => {
    const indicator = document.querySelector("[data-live-state][data-live-after]");
    if (indicator && typeof EventSource === "function") followStream(indicator);
  });
})();
