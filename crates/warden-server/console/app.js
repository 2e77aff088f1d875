// The warden console: plain JavaScript, no framework, no build step.
//
// Everything shown comes from the API with the bearer token. Task logs, agent output and
// payloads are untrusted: they reach the page only as text (DOM nodes and textContent),
// never as HTML.
"use strict";

(function () {
  // The page's CSP admits no inline style but the <style> elements carrying this page's
  // nonce. xterm.js creates <style> elements for its theme and cell sizes: give them the nonce.
  const NONCE = document.currentScript ? document.currentScript.nonce : "";
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    const el = createElement.call(this, tag, options);
    if (NONCE && String(tag).toLowerCase() === "style") {
      el.nonce = NONCE;
    }
    return el;
  };

  const TOKEN_KEY = "warden.token";
  const NO_AUTH = "\u0000no-auth";
  const TERMINAL_STATES = ["SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"];

  // ---- DOM helpers: text only ------------------------------------------------------

  // h("div", {className: "x", onclick: f}, "text", child, [more]): strings become text
  // nodes; attributes are set as properties or with setAttribute, never as markup.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v);
      } else if (k === "dataset") {
        Object.assign(el.dataset, v);
      } else if (k in el && typeof v !== "string") {
        el[k] = v;
      } else if (k === "className" || k === "value" || k === "textContent") {
        el[k] = v;
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const main = () => document.getElementById("main");

  function flash(message, kind) {
    const f = document.getElementById("flash");
    f.textContent = message;
    f.className = kind || "";
    f.hidden = !message;
  }

  function statusBadge(s) {
    return h("span", { className: "status " + String(s || "") }, s || "?");
  }

  function when(t) {
    if (!t) return "";
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  }

  function shortTime(t) {
    const d = new Date(t);
    return isNaN(d) ? String(t || "") : d.toLocaleTimeString();
  }

  // ---- The API ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const t = token();
    if (t && t !== NO_AUTH) headers["Authorization"] = "Bearer " + t;
    return headers;
  }

  async function errorOf(resp) {
    let code = "HTTP_" + resp.status;
    let message = resp.status + " " + resp.statusText;
    try {
      const text = await resp.text();
      try {
        const j = JSON.parse(text);
        code = j.code || j.error || code;
        message = j.message || j.detail || text || message;
      } catch (_) {
        if (text) message = text;
      }
    } catch (_) {
      /* the body is gone; keep the status */
    }
    return new ApiError(resp.status, code, message);
  }

  async function api(method, path, body, options) {
    const init = { method, headers: authHeaders(), signal: options && options.signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401 && !(options && options.probe)) {
      signOut("The server refused the token (401): sign in again.");
      throw await errorOf(resp);
    }
    if (!resp.ok) throw await errorOf(resp);
    if (resp.status === 204) return null;
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  // Reads a text/event-stream body (fetch, so that the Authorization header goes along);
  // calls onEvent({event, data, id}) for each event. Resolves when the stream ends.
  async function readSse(path, onEvent, signal) {
    const resp = await fetch(path, {
      headers: authHeaders({ Accept: "text/event-stream" }),
      signal,
    });
    if (resp.status === 401) {
      signOut("The server refused the token (401): sign in again.");
    }
    if (!resp.ok) throw await errorOf(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = { event: "message", data: [], id: null };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
          else if (field === "id") ev.id = val;
        }
        if (ev.data.length) {
          ev.data = ev.data.join("\n");
          onEvent(ev);
        }
      }
    }
  }

  // ---- Sign-in -----------------------------------------------------------------------

  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(approvalTimer);
    approvalTimer = null;
    stopView();
    showLogin(why);
  }

  // Whether the server asks for a token: an unauthenticated probe of a read-only route.
  async function probe(t) {
    const headers = {};
    if (t) headers["Authorization"] = "Bearer " + t;
    const resp = await fetch("/v1/templates", { headers });
    return resp.status;
  }

  function showLogin(why) {
    document.getElementById("nav").hidden = true;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("who").textContent = "";
    flash(why || "");
    const input = h("input", {
      id: "token",
      type: "password",
      autocomplete: "off",
      placeholder: "64 hex characters",
      required: true,
    });
    const err = h("p", { id: "login-error", className: "muted" });
    const form = h(
      "form",
      {
        id: "login",
        className: "card login",
        onsubmit: async (e) => {
          e.preventDefault();
          const t = input.value.trim();
          err.textContent = "Checking…";
          try {
            const status = await probe(t);
            if (status === 200) {
              sessionStorage.setItem(TOKEN_KEY, t);
              flash("");
              start();
            } else if (status === 401) {
              err.textContent = "The server refused this token (401). It is in the data directory's `token` file.";
            } else {
              err.textContent = "The server answered " + status + ".";
            }
          } catch (x) {
            err.textContent = "Cannot reach the server: " + x.message;
          }
        },
      },
      h("h1", {}, "Sign in to warden"),
      h("p", { className: "muted" }, "Paste the API token: the ", h("code", {}, "token"),
        " file in the server's data directory. It is kept in this tab only (sessionStorage)."),
      h("label", {}, "Token", input),
      h("p", {}, h("button", { type: "submit", id: "login-submit" }, "Sign in")),
      err
    );
    clear(main()).appendChild(form);
    input.focus();
  }

  async function start() {
    if (!token()) {
      let status;
      try {
        status = await probe(null);
      } catch (x) {
        clear(main()).appendChild(h("p", {}, "Cannot reach the server: " + x.message));
        return;
      }
      if (status === 200) {
        sessionStorage.setItem(TOKEN_KEY, NO_AUTH);
      } else {
        showLogin();
        return;
      }
    }
    document.getElementById("nav").hidden = false;
    const out = document.getElementById("sign-out");
    out.hidden = token() === NO_AUTH;
    document.getElementById("who").textContent =
      token() === NO_AUTH ? "no auth (--no-auth)" : "signed in";
    route();
    if (!approvalTimer) approvalTimer = setInterval(refreshApprovalCount, 5000);
  }

  let approvalTimer = null;

  // ---- Views -------------------------------------------------------------------------

  // What the current view runs (polls, streams, sockets), stopped when it changes.
  let viewStops = [];

  function stopView() {
    for (const stop of viewStops) {
      try {
        stop();
      } catch (_) {
        /* already stopped */
      }
    }
    viewStops = [];
  }

  function every(ms, f) {
    let alive = true;
    let timer = null;
    const tick = async () => {
      if (!alive) return;
      try {
        await f();
      } catch (x) {
        if (alive && x.status !== 401) flash(x.message);
      }
      if (alive) timer = setTimeout(tick, ms);
    };
    tick();
    viewStops.push(() => {
      alive = false;
      clearTimeout(timer);
    });
  }

  function route() {
    stopView();
    if (!token()) {
      showLogin();
      return;
    }
    flash("");
    const parts = (location.hash || "#/tasks").replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const [view, arg] = parts;
    for (const a of document.querySelectorAll("#nav a")) {
      const active = a.dataset.view === view || (view === "task" && a.dataset.view === "tasks") ||
        (view === "terminal" && a.dataset.view === "sandboxes");
      a.classList.toggle("active", active);
    }
    const views = {
      tasks: tasksView,
      task: () => taskView(arg),
      approvals: approvalsView,
      sandboxes: sandboxesView,
      terminal: () => terminalView(arg),
      templates: templatesView,
      pools: poolsView,
      schedules: schedulesView,
      webhooks: webhooksView,
    };
    (views[view] || tasksView)();
    refreshApprovalCount();
  }

  async function refreshApprovalCount() {
    if (!token()) return;
    try {
      const list = await api("GET", "/v1/approvals");
      document.getElementById("approval-count").textContent = list.length ? String(list.length) : "";
    } catch (_) {
      /* shown where it matters */
    }
  }

  function table(columns, rows, empty) {
    if (!rows.length) return h("p", { className: "muted" }, empty || "Nothing yet.");
    return h(
      "table",
      {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((cell) => h("td", {}, cell)))))
    );
  }

  // A region that shows a list (or the API's error) and is redrawn in place.
  function region(id) {
    return h("div", { id });
  }

  function fill(id, ...children) {
    const el = document.getElementById(id);
    if (el) append(clear(el), children);
  }

  // Redraws a region only when what it shows changed (`key`), so that a poll does not
  // throw away what a person is typing in it.
  function fillIfChanged(id, key, draw) {
    const el = document.getElementById(id);
    if (!el || el.dataset.key === key) return;
    el.dataset.key = key;
    append(clear(el), [draw()]);
  }

  const approvalKey = (list) => JSON.stringify(list.map((p) => [p.run_id, p.call_id]));

  // ---- Tasks ---------------------------------------------------------------------------

  function tasksView() {
    const field = (label, input, full) =>
      h("label", { className: full ? "full" : "" }, label, input);
    const form = h(
      "form",
      {
        id: "submit-task",
        className: "stack",
        onsubmit: async (e) => {
          e.preventDefault();
          const f = e.target.elements;
          const body = { repo: f.repo.value.trim(), task: f.task.value };
          for (const k of ["base_branch", "new_branch", "agent", "model", "template", "timeout"]) {
            const v = f[k].value.trim();
            if (v) body[k] = v;
          }
          const button = e.target.querySelector("button[type=submit]");
          button.disabled = true;
          try {
            const created = await api("POST", "/v1/tasks", body);
            location.hash = "#/task/" + encodeURIComponent(created.id);
          } catch (x) {
            flash("Submit failed: " + x.message);
          } finally {
            button.disabled = false;
          }
        },
      },
      field("Repository URL", h("input", { name: "repo", required: true, placeholder: "https://git.example.com/org/repo.git" })),
      field("Base branch", h("input", { name: "base_branch", placeholder: "default branch" })),
      field("New branch", h("input", { name: "new_branch", placeholder: "warden/<task id>" })),
      field("Agent", h("select", { name: "agent" },
        h("option", { value: "" }, "(server default)"),
        h("option", { value: "warden" }, "warden"),
        h("option", { value: "claude-code" }, "claude-code"),
        h("option", { value: "codex" }, "codex"))),
      field("Model", h("input", { name: "model", placeholder: "(server default)" })),
      field("Template", h("input", { name: "template", placeholder: "(server default)" })),
      field("Timeout", h("input", { name: "timeout", placeholder: "e.g. 30m" })),
      field("Task", h("textarea", { name: "task", required: true, placeholder: "What the agent should do" }), true),
      h("div", { className: "full" }, h("button", { type: "submit", id: "submit-task-button" }, "Submit task"))
    );
    const filter = h("select", { id: "task-filter", onchange: () => refresh().catch((x) => flash(x.message)) },
      h("option", { value: "" }, "all"),
      ["QUEUED", "RUNNING", "WAITING_APPROVAL", "SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"]
        .map((st) => h("option", { value: st }, st)));
    append(clear(main()), [
      h("h1", {}, "Tasks"),
      h("details", { className: "card", open: true }, h("summary", {}, "Submit a task"), form),
      h("p", { className: "actions" }, h("label", {}, "Status ", filter)),
      region("task-list"),
    ]);
    const refresh = async () => {
      const q = filter.value ? "&status=" + encodeURIComponent(filter.value) : "";
      const list = await api("GET", "/v1/tasks?limit=100" + q);
      fill("task-list", table(
        ["Task", "Status", "Repository", "Prompt", "Created", "Result"],
        list.tasks.map((t) => [
          h("a", { href: "#/task/" + encodeURIComponent(t.id), className: "mono task-link" }, t.id),
          statusBadge(t.status),
          h("span", { className: "mono" }, t.repo || ""),
          h("span", { className: "wrap" }, (t.task || "").slice(0, 160)),
          when(t.created_at),
          h("span", { className: "wrap" }, t.reason || t.summary || ""),
        ]),
        filter.value ? "No " + filter.value + " tasks." : "No tasks yet: submit one above."
      ));
    };
    every(3000, refresh);
  }

  function eventText(e) {
    const d = e.data || {};
    switch (e.kind) {
      case "status":
        return d.status + (d.reason ? ": " + d.reason : "");
      case "step": {
        const rest = Object.assign({}, d);
        delete rest.step;
        const more = Object.keys(rest).length ? " " + JSON.stringify(rest) : "";
        return d.step + more;
      }
      case "log":
        return (d.stream ? "[" + d.stream + "] " : "") + (d.text || "");
      case "agent": {
        const type = d.type || d.kind || "";
        if (type === "assistant" && typeof d.text === "string") return "assistant: " + d.text;
        if (type === "tool_result" && typeof d.output === "string") {
          return "result of " + (d.tool || "") + " " + (d.call_id || "") + (d.is_error ? " (error)" : "") + ": " + d.output;
        }
        return (type ? type + " " : "") + JSON.stringify(d);
      }
      default:
        return JSON.stringify(d);
    }
  }

  function taskView(id) {
    const events = h("div", { id: "events", className: "events mono", role: "log" });
    append(clear(main()), [
      h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
      h("h1", {}, "Task ", h("span", { className: "mono", id: "task-id" }, id)),
      region("task-summary"),
      region("task-approvals"),
      h("h2", {}, "Events ", h("span", { id: "events-state", className: "muted" })),
      events,
    ]);
    let task = null;
    let lastSeq = 0;
    const ctl = new AbortController();
    let alive = true;
    viewStops.push(() => {
      alive = false;
      ctl.abort();
    });

    const drawTask = () => {
      const t = task;
      const cancel = h("button", {
        id: "cancel-task",
        className: "danger",
        disabled: TERMINAL_STATES.includes(t.status),
        onclick: async () => {
          try {
            task = await api("POST", "/v1/tasks/" + encodeURIComponent(id) + "/cancel", {});
            drawTask();
          } catch (x) {
            flash("Cancel failed: " + x.message);
          }
        },
      }, "Cancel");
      const rows = [
        ["Status", h("span", { id: "task-status" }, statusBadge(t.status))],
        ["Repository", t.repo], ["Base", t.base_branch || "(default)"], ["Branch", t.new_branch],
        ["Agent", t.agent], ["Model", t.model], ["Template", t.template],
        ["Prompt", t.task], ["Created", when(t.created_at)], ["Started", when(t.started_at)],
        ["Finished", when(t.finished_at)], ["Sandbox", t.sandbox], ["Commit", t.commit],
        ["Summary", t.summary], ["Reason", t.reason],
        ["Usage", t.usage ? (t.usage.input_tokens || 0) + " in / " + (t.usage.output_tokens || 0) + " out tokens" : ""],
      ].filter(([, v]) => v !== undefined && v !== null && v !== "");
      fill("task-summary", h("div", { className: "card" },
        h("dl", { className: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("p", { className: "actions" }, cancel)));
    };

    const loadTask = async () => {
      task = await api("GET", "/v1/tasks/" + encodeURIComponent(id));
      drawTask();
      await loadApprovals();
    };

    const loadApprovals = async () => {
      const pending = task && task.status === "WAITING_APPROVAL"
        ? await api("GET", "/v1/tasks/" + encodeURIComponent(id) + "/approvals")
        : [];
      fillIfChanged("task-approvals", approvalKey(pending), () =>
        pending.length ? [h("h2", {}, "Waiting for you"), pending.map((p) => approvalCard(p, loadTask))] : []);
    };

    const addEvent = (e) => {
      if (e.seq <= lastSeq) return;
      lastSeq = e.seq;
      const line = h("div", { className: "ev ev-" + e.kind, dataset: { seq: String(e.seq), kind: e.kind } },
        h("span", { className: "seq" }, "#" + e.seq),
        h("span", { className: "time" }, shortTime(e.time)),
        h("span", { className: "kind" }, e.kind),
        h("span", { className: "text" }, eventText(e)));
      const stick = events.scrollTop + events.clientHeight >= events.scrollHeight - 8;
      events.appendChild(line);
      if (stick) events.scrollTop = events.scrollHeight;
      if (e.kind === "status") {
        loadTask().catch((x) => flash(x.message));
      }
    };

    // Follows the events live; reconnects after the stream breaks until the task ends.
    const follow = async () => {
      const state = document.getElementById("events-state");
      while (alive) {
        state.textContent = "(live)";
        try {
          await readSse(
            "/v1/tasks/" + encodeURIComponent(id) + "/events?follow=true&after=" + lastSeq,
            (ev) => {
              try {
                addEvent(JSON.parse(ev.data));
              } catch (_) {
                /* not a task event (keep-alive) */
              }
            },
            ctl.signal
          );
        } catch (x) {
          if (!alive) return;
          if (x.status === 404 || x.status === 400 || x.status === 401) {
            flash(x.message);
            state.textContent = "";
            return;
          }
          state.textContent = "(reconnecting: " + x.message + ")";
        }
        if (!alive) return;
        // The server ends the stream after the task's last event.
        await loadTask().catch(() => {});
        if (task && TERMINAL_STATES.includes(task.status)) {
          state.textContent = "(ended)";
          return;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    };

    loadTask()
      .then(() => follow())
      .catch((x) => flash(x.message));
    // Approvals can appear without a status event of their own (a second call).
    every(2000, async () => {
      if (task && task.status === "WAITING_APPROVAL") await loadApprovals();
    });
  }

  // ---- Approvals -------------------------------------------------------------------------

  function approvalCard(p, after) {
    const reason = h("input", { placeholder: "reason (optional)", className: "reason" });
    const answer = async (approved) => {
      const body = { approved };
      if (reason.value.trim()) body.reason = reason.value.trim();
      try {
        await api("POST", "/v1/approvals/" + encodeURIComponent(p.run_id) + "/" + encodeURIComponent(p.call_id), body);
        flash((approved ? "Approved " : "Denied ") + p.call, "info");
      } catch (x) {
        flash("Answer failed: " + x.message);
      }
      await refreshApprovalCount();
      if (after) await after();
    };
    return h("div", { className: "card approval", dataset: { run: p.run_id, call: p.call_id } },
      h("div", {}, h("strong", {}, p.tool), " in ",
        h("a", { href: p.run_id.startsWith("task-") ? "#/task/" + encodeURIComponent(p.run_id) : "#/approvals", className: "mono" }, p.run_id),
        h("span", { className: "muted" }, " · call " + p.call_id + " · asked " + when(p.requested_at) + " · denied if unanswered at " + when(p.deadline))),
      h("code", { className: "call" }, p.call),
      h("div", { className: "muted" }, "Why: " + p.basis),
      h("div", { className: "actions" },
        h("button", { className: "approve", onclick: () => answer(true) }, "Approve"),
        h("button", { className: "danger deny", onclick: () => answer(false) }, "Deny"),
        reason));
  }

  function approvalsView() {
    append(clear(main()), [h("h1", {}, "Pending approvals"), region("approval-list")]);
    const load = async () => {
      const list = await api("GET", "/v1/approvals");
      fillIfChanged("approval-list", approvalKey(list), () => list.length
        ? list.map((p) => approvalCard(p, load))
        : h("p", { className: "muted" }, "No tool call is waiting for an answer."));
    };
    every(2000, load);
  }

  // ---- Sandboxes -------------------------------------------------------------------------

  function sandboxesView() {
    const select = h("select", { name: "template", id: "new-sandbox-template", required: true });
    const form = h("form", {
      className: "inline",
      id: "new-sandbox",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const s = await api("POST", "/v1/sandboxes", { template: select.value });
          flash("Created " + s.id, "info");
          await load();
        } catch (x) {
          flash("Create failed: " + x.message);
        }
      },
    }, h("label", {}, "Template", select), h("button", { type: "submit" }, "Create sandbox"));
    append(clear(main()), [h("h1", {}, "Sandboxes"), h("div", { className: "card" }, form), region("sandbox-list")]);
    api("GET", "/v1/templates")
      .then((ts) => append(select, ts.map((t) => h("option", { value: t.name }, t.name))))
      .catch((x) => flash(x.message));
    const load = async () => {
      const list = await api("GET", "/v1/sandboxes");
      fill("sandbox-list", table(
        ["Sandbox", "Template", "Phase", "Pool", "Created", "Shuts down", "Message", ""],
        list.map((s) => [
          h("span", { className: "mono" }, s.id),
          s.template,
          statusBadge(s.phase),
          s.pool || "",
          when(s.created_at),
          when(s.shutdown_at),
          h("span", { className: "wrap" }, s.message || ""),
          h("span", { className: "actions" },
            h("a", { href: "#/terminal/" + encodeURIComponent(s.id), className: "open-terminal", dataset: { id: s.id } }, "Terminal"),
            h("button", {
              className: "danger delete-sandbox",
              dataset: { id: s.id },
              onclick: async () => {
                try {
                  await api("DELETE", "/v1/sandboxes/" + encodeURIComponent(s.id));
                  await load();
                } catch (x) {
                  flash("Delete failed: " + x.message);
                }
              },
            }, "Delete")),
        ]),
        "No sandboxes."
      ));
    };
    every(3000, load);
  }

  // ---- The terminal ----------------------------------------------------------------------

  function terminalView(id) {
    const status = h("div", { id: "term-status" }, "Connecting…");
    const again = h("button", { id: "reconnect", hidden: true, onclick: () => connect() }, "Reconnect");
    const box = h("div", { id: "terminal", className: "terminal-box" });
    append(clear(main()), [
      h("p", {}, h("a", { href: "#/sandboxes" }, "← Sandboxes")),
      h("h1", {}, "Terminal in ", h("span", { className: "mono" }, id)),
      h("div", { className: "actions" }, status, again),
      box,
    ]);
    if (typeof window.Terminal !== "function") {
      clear(box).className = "missing";
      append(box, [
        h("strong", {}, "The terminal's assets are missing from this build of warden. "),
        "xterm.js comes from npm: run ", h("code", {}, "npm ci"), " in ",
        h("code", {}, "crates/warden-server/console"), ", then build warden again.",
      ]);
      status.textContent = "No terminal: xterm.js is not built in.";
      return;
    }
    const term = new window.Terminal({
      cursorBlink: true,
      convertEol: false,
      scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      fontSize: 14,
    });
    const fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
    if (fit) term.loadAddon(fit);
    term.open(box);
    const refit = () => {
      if (fit) {
        try {
          fit.fit();
        } catch (_) {
          /* not laid out yet */
        }
      }
    };
    refit();
    window.addEventListener("resize", refit);
    // For tests and for copying: the terminal's buffer as text, one line per row.
    window.wardenTerminalText = () => {
      const b = term.buffer.active;
      const lines = [];
      for (let i = 0; i < b.length; i++) {
        const line = b.getLine(i);
        if (line) lines.push(line.translateToString(true));
      }
      return lines.join("\n");
    };
    window.wardenTerminalSize = () => [term.rows, term.cols];

    let ws = null;
    const encoder = new TextEncoder();
    const setStatus = (text, cls) => {
      status.textContent = text;
      status.className = cls || "";
    };

    term.onData((d) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d));
    });
    // Resizes go out only after the ExecRequest, which must be the first message.
    let requested = false;
    term.onResize(({ cols, rows }) => {
      if (requested && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });

    // After the session ends: what ended it, then whether the sandbox itself is still
    // there and in what phase (asked a few times: a sandbox being deleted is still listed
    // for a moment after its processes died).
    const explain = async (what, clean) => {
      const oneLine = (t) => t.replace(/[\x00-\x1f\x7f]/g, " ");
      setStatus(what + " Checking the sandbox…", "ended");
      term.write("\r\n\x1b[1;31m[" + oneLine(what) + "]\x1b[0m\r\n");
      let sandbox = "";
      // A shell that exited cleanly leaves its sandbox as it was: one look is enough.
      for (let i = 0; i < (clean ? 1 : 10); i++) {
        try {
          const s = await api("GET", "/v1/sandboxes/" + encodeURIComponent(id), undefined, { probe: true });
          sandbox = "The sandbox is " + s.phase + (s.message ? " (" + s.message + ")" : "") + ".";
          const phase = String(s.phase).toLowerCase();
          if (phase !== "ready" && phase !== "starting") break;
        } catch (x) {
          sandbox = x.status === 404
            ? "The sandbox is gone: " + x.message + "."
            : "The sandbox's state is unknown: " + x.message + ".";
          break;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      setStatus(what + " " + sandbox, "ended");
      term.write("\x1b[1;31m[" + oneLine(sandbox) + "]\x1b[0m\r\n");
      again.hidden = false;
    };

    function connect() {
      again.hidden = true;
      setStatus("Connecting…");
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const url = scheme + location.host + "/v1/sandboxes/" + encodeURIComponent(id) + "/exec/ws";
      const t = token();
      const protocols = t && t !== NO_AUTH ? ["warden.bearer." + t, "warden.v1"] : ["warden.v1"];
      const socket = new WebSocket(url, protocols);
      ws = socket;
      socket.binaryType = "arraybuffer";
      let ended = null;
      let clean = false;
      requested = false;
      socket.onopen = () => {
        refit();
        requested = true;
        socket.send(JSON.stringify({
          command: "if command -v bash >/dev/null 2>&1; then exec bash -i; else exec sh -i; fi",
          env: { TERM: "xterm-256color" },
          tty: true,
          cols: term.cols,
          rows: term.rows,
        }));
        term.focus();
      };
      socket.onmessage = (m) => {
        if (typeof m.data !== "string") {
          const bytes = new Uint8Array(m.data);
          // First byte: 1 stdout, 2 stderr; the rest is the terminal's output.
          if (bytes.length > 1) term.write(bytes.subarray(1));
          return;
        }
        let e;
        try {
          e = JSON.parse(m.data);
        } catch (_) {
          return;
        }
        if (e.type === "started") {
          setStatus("Connected: shell pid " + e.pid + " in " + id + ".", "live");
        } else if (e.type === "exit") {
          const how = e.signal ? "was killed by signal " + e.signal : "exited with code " + e.exit_code;
          ended = "The shell " + how + (e.timed_out ? " (timed out)" : "") + ".";
          clean = !e.signal;
        } else if (e.type === "error") {
          ended = "The session failed: " + e.code + ": " + e.message + ".";
        }
      };
      socket.onerror = () => {
        if (!ended) ended = "The connection failed.";
      };
      socket.onclose = (c) => {
        if (ws !== socket) return;
        ws = null;
        const closed = "The connection closed (code " + c.code + (c.reason ? ", " + c.reason : "") + ").";
        explain(ended || closed, clean);
      };
    }

    connect();
    viewStops.push(() => {
      window.removeEventListener("resize", refit);
      const s = ws;
      ws = null;
      if (s) s.close();
      term.dispose();
      delete window.wardenTerminalText;
      delete window.wardenTerminalSize;
    });
  }

  // ---- Templates, pools, schedules, webhooks ---------------------------------------------

  function templatesView() {
    append(clear(main()), [h("h1", {}, "Templates"), region("template-list")]);
    every(10000, async () => {
      const list = await api("GET", "/v1/templates");
      fill("template-list", table(
        ["Template", "Shuts down after", "Idle timeout", "Workspace quota", "Policy"],
        list.map((t) => [
          h("span", { className: "mono" }, t.name),
          t.shutdown_after || "",
          t.idle_timeout || "",
          t.workspace_quota ? String(t.workspace_quota) : "",
          h("pre", {}, JSON.stringify(t.policy || {}, null, 1)),
        ]),
        "No templates."
      ));
    });
  }

  function poolsView() {
    append(clear(main()), [h("h1", {}, "Warm pools"), region("pool-list")]);
    every(3000, async () => {
      const list = await api("GET", "/v1/pools");
      fill("pool-list", table(
        ["Pool", "Template", "Replicas", "Ready", "Starting"],
        list.map((p) => [h("span", { className: "mono" }, p.name), p.template, String(p.replicas), String(p.ready), String(p.starting)]),
        "No warm pools."
      ));
    });
  }

  // A list from a route that not every server has: a 404 says so instead of failing.
  function optionalList(title, regionId, path, key, draw) {
    append(clear(main()), [h("h1", {}, title), region(regionId)]);
    every(5000, async () => {
      let body;
      try {
        body = await api("GET", path);
      } catch (x) {
        if (x.status === 404) {
          fill(regionId, h("p", { className: "muted not-available" }, title + ": not available on this server (" + x.message + ")."));
          return;
        }
        throw x;
      }
      fill(regionId, draw(body[key] || []));
    });
  }

  // A task submission in a few lines: repository, prompt, and the fields that are set.
  function taskSummary(t) {
    const rest = Object.entries(t)
      .filter(([k, v]) => k !== "repo" && k !== "task" && v !== null && v !== undefined && v !== "" &&
        !(typeof v === "object" && Object.keys(v).length === 0))
      .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : String(v)));
    return h("div", { className: "task-summary" },
      h("div", { className: "mono" }, t.repo || ""),
      h("div", { className: "wrap" }, t.task || ""),
      rest.length ? h("div", { className: "muted mono" }, rest.join(" ")) : null);
  }

  function schedulesView() {
    const act = (s, what) => async () => {
      try {
        const r = await api("POST", "/v1/schedules/" + encodeURIComponent(s.name) + "/" + what);
        if (what === "run" && r && r.id) {
          location.hash = "#/task/" + encodeURIComponent(r.id);
          return;
        }
        flash("Schedule " + s.name + ": " + what + " done.", "info");
        route();
      } catch (x) {
        flash("Schedule " + s.name + ": " + what + " failed: " + x.message);
      }
    };
    optionalList("Schedules", "schedule-list", "/v1/schedules", "schedules", (list) => table(
      ["Schedule", "Cron", "Time zone", "Missed runs", "Enabled", "Next run", "Last run", "Last task", "Last error", "Task", ""],
      list.map((s) => [
        h("span", { className: "mono" }, s.name),
        h("code", { className: "nowrap" }, s.cron),
        s.timezone || "",
        s.missed || "",
        h("span", { className: "enabled" }, s.enabled ? "yes" : "no (paused)"),
        h("span", { className: "next-run" }, s.next_run_local || when(s.next_run)),
        when(s.last_run),
        s.last_task ? h("a", { href: "#/task/" + encodeURIComponent(s.last_task), className: "mono" }, s.last_task) : "",
        h("span", { className: "wrap" }, s.last_error || ""),
        taskSummary(s.task || {}),
        h("span", { className: "actions" },
          s.enabled
            ? h("button", { className: "secondary pause", onclick: act(s, "pause") }, "Pause")
            : h("button", { className: "secondary resume", onclick: act(s, "resume") }, "Resume"),
          h("button", { className: "run", onclick: act(s, "run") }, "Run now")),
      ]),
      "No schedules."
    ));
  }

  function webhooksView() {
    optionalList("Webhook deliveries", "delivery-list", "/v1/webhooks/deliveries", "deliveries", (list) => table(
      ["Received", "Source", "Event", "Delivery", "Outcome", "Status", "Reason", "Tasks"],
      list.map((d) => [
        when(d.received_at),
        d.source || "",
        d.event || "",
        h("span", { className: "mono" }, d.delivery_id || d.id || ""),
        statusBadge(d.outcome),
        d.status_code ? String(d.status_code) : "",
        h("span", { className: "wrap" }, d.reason || ""),
        (d.task_ids || []).map((t) => [h("a", { href: "#/task/" + encodeURIComponent(t), className: "mono" }, t), " "]),
      ]),
      "No deliveries."
    ));
  }

  // ---- Start -------------------------------------------------------------------------------

  document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => {
    if (token()) route();
  });
  start();
})();
