// agent-server playground: talks to this server's API with the key entered in the page (kept in
// sessionStorage, for this tab only; never in a URL or localStorage). Streams turns from
// POST /agent/stream (deltas, tool calls and results as they happen) as background runs, so a
// reload during an answer does not cancel it: the run in progress is kept in sessionStorage and,
// after the reload, its events are read again from GET /runs/{id}/events (Stop cancels it with
// POST /runs/{id}/cancel). A run that stops to wait for an approval (a tool the operator marked
// `require_approval`) shows each waiting call with its arguments and Approve / Reject buttons;
// once every call is decided, POST /runs/{id}/actions answers them and the run's events go on
// streaming (a reload while it waits shows the question again). It lists the caller's sessions
// (GET /sessions), opens one (GET /sessions/{id}) and deletes it (DELETE /sessions/{id}). The open
// session's id is in the page's URL (?session=ID), so a reload shows it again. Where the caller
// may use several agents (GET /agents), a new session's agent is picked from a list; an open
// session shows its own (a session keeps the agent of its first turn). Every text is set with
// textContent: nothing the model or the server says is read as HTML.
"use strict";

const KEY_STORAGE = "agent-server.playground.key";
// The run in progress: {run, session, fresh, text}, until it ends.
const RUN_STORAGE = "agent-server.playground.run";
const PAGE_SIZE = 30;

const state = {
  session: null, // the open session's id, or null for a new one
  sessionTokens: 0,
  turns: 0,
  cursor: null, // the sessions list's next page
  turn: null, // the AbortController of the turn in progress
  run: null, // its run's id, once the stream named it
  stopping: false, // Stop was pressed (an abort otherwise means the page is going away)
  waiting: null, // the run waiting for an approval ({run, card}), until it is answered
  agent: null, // the open session's agent (GET /sessions/{id}), or null
  defaultAgent: null, // the agent a new session gets unless another is picked
};

const $ = (id) => document.getElementById(id);

function key() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- talking to the API ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, retryAfter, requestId) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "";
    this.retryAfter = error.retry_after || (retryAfter ? Number(retryAfter) : null);
    this.requestId = requestId;
  }
}

// A call of the API relative to this page (so it works behind a proxy's path prefix).
async function api(method, path, body, signal) {
  const headers = { Accept: body === undefined ? "application/json" : "text/event-stream" };
  if (key()) headers.Authorization = `Bearer ${key()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { error: { code: "network", message: String(error.message || error) } });
  }
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch (_) {
      parsed = null;
    }
    throw new ApiError(
      response.status,
      parsed,
      response.headers.get("retry-after"),
      response.headers.get("x-request-id"),
    );
  }
  return response;
}

// What a person should read for an error of the API.
function describe(error) {
  if (!(error instanceof ApiError)) return `Something went wrong in the page: ${error}`;
  const retry = error.retryAfter ? ` Try again in ${duration(error.retryAfter)}.` : "";
  const reference = error.requestId ? ` (request ${error.requestId})` : "";
  switch (error.status) {
    case 0:
      return `The server could not be reached: ${error.message}. Check that it is running, then try again.`;
    case 401:
      return key()
        ? "401 Unauthorized: the server does not accept this API key. Enter a valid key above."
        : "401 Unauthorized: this server needs an API key. Enter it above.";
    case 404:
      if (error.code === "session_not_found") {
        return "This session does not exist (it was deleted, expired, or belongs to another key).";
      }
      return `404 Not found (${error.code}): ${error.message}`;
    case 409:
      if (error.code === "session_busy") {
        return "409 Session busy: another turn is running on this session. Wait for it to finish, then send again.";
      }
      return `409 Conflict (${error.code}): ${error.message}`;
    case 429:
      return error.code === "quota_exceeded"
        ? `429 Daily token quota used up: ${error.message}.${retry}`
        : `429 Too many requests: the rate limit was reached.${retry}`;
    default:
      if (error.status >= 500) {
        return `${error.status} The server could not complete this (${error.code}): ${error.message}.${retry}${reference}`;
      }
      return `${error.status} ${error.code}: ${error.message}`;
  }
}

// A wait in seconds, as a person reads it.
function duration(seconds) {
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function showStatus(text, info) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("info", Boolean(info));
  status.hidden = !text;
}

// --- the transcript -------------------------------------------------------------------------

function addMessage(kind, role, text) {
  const item = element("li", `msg ${kind}`);
  item.append(element("div", "role", role));
  item.append(element(kind.startsWith("tool") ? "pre" : "div", "text", text));
  $("transcript").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function addToolCall(name, args) {
  return addMessage("tool-call", `Tool call · ${name}`, pretty(args));
}

function addToolResult(name, content, failed) {
  const item = addMessage("tool-result", `Tool result · ${name}${failed ? " (error)" : ""}`, content);
  item.classList.toggle("failed", Boolean(failed));
  return item;
}

function addTurnTokens(item, tokens) {
  item.append(element("div", "turn-tokens", `This turn: ${tokens} tokens`));
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 1).replace(/\n\s*/g, " ");
  } catch (_) {
    return args;
  }
}

function showTokens() {
  $("session-tokens").textContent = state.session
    ? `${state.turns} ${state.turns === 1 ? "turn" : "turns"} · ${state.sessionTokens} tokens`
    : "";
}

function showSession() {
  $("session-title").textContent = state.session ? `Session ${state.session}` : "New session";
  // A session keeps its agent: the list picks a new session's only.
  const select = $("agent");
  const shown = state.session ? state.agent : state.defaultAgent;
  if (shown && [...select.options].some((option) => option.value === shown)) select.value = shown;
  select.disabled = Boolean(state.session);
  $("delete-session").hidden = !state.session;
  showTokens();
  const url = new URL(window.location.href);
  if (state.session) url.searchParams.set("session", state.session);
  else url.searchParams.delete("session");
  window.history.replaceState(null, "", url);
  for (const button of document.querySelectorAll("#sessions button")) {
    button.setAttribute("aria-current", String(button.dataset.id === state.session));
  }
}

// The stored messages of a session, as the transcript shows them.
function renderHistory(messages) {
  const names = new Map();
  let last = null;
  for (const message of messages) {
    if (message.role === "user") {
      last = addMessage("user", "You", message.content);
    } else if (message.role === "assistant") {
      if (message.content) last = addMessage("assistant", "Agent", message.content);
      for (const call of message.tool_calls || []) {
        names.set(call.id, call.name);
        last = addToolCall(call.name, call.arguments);
      }
    } else if (message.role === "tool") {
      last = addToolResult(names.get(message.tool_call_id) || "tool", message.content, false);
    } else {
      last = addMessage("system", message.role, message.content);
    }
    if (message.tokens !== undefined && last) addTurnTokens(last, message.tokens);
  }
}

// --- agents ---------------------------------------------------------------------------------

// The agents this caller may use: a list to pick a new session's from when there are several.
async function loadAgents() {
  const select = $("agent");
  let agents = [];
  try {
    agents = (await (await api("GET", "agents")).json()).agents;
  } catch (_) {
    // Without the list (no key yet, an old server) the default agent answers.
  }
  select.replaceChildren();
  for (const agent of agents) {
    const label = agent.name === agent.id ? agent.id : `${agent.name} (${agent.id})`;
    const option = element("option", "", label);
    option.value = agent.id;
    option.title = agent.description || "";
    select.append(option);
    if (agent.default) state.defaultAgent = agent.id;
  }
  $("agent-pick").hidden = agents.length < 2;
  showSession();
}

// --- sessions -------------------------------------------------------------------------------

async function loadSessions(more) {
  const note = $("sessions-note");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (more && state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await (await api("GET", `sessions?${query}`)).json();
    const list = $("sessions");
    if (!more) list.replaceChildren();
    for (const session of page.sessions) {
      const button = element("button");
      button.type = "button";
      button.dataset.id = session.session_id;
      button.setAttribute("aria-current", String(session.session_id === state.session));
      button.append(element("span", "id", session.session_id));
      button.append(element("span", "meta", summary(session)));
      button.addEventListener("click", () => openSession(session.session_id));
      const item = element("li");
      item.append(button);
      list.append(item);
    }
    state.cursor = page.next_cursor;
    $("more-sessions").hidden = !state.cursor;
    note.textContent = list.children.length ? "" : "No sessions yet: send a message to start one.";
  } catch (error) {
    if (!more) $("sessions").replaceChildren();
    $("more-sessions").hidden = true;
    note.textContent = `The sessions could not be listed. ${describe(error)}`;
  }
}

function summary(session) {
  const turns = `${session.turn_count} ${session.turn_count === 1 ? "turn" : "turns"}`;
  return `${turns} · ${session.tokens.total} tokens · ${when(session.updated_at)}`;
}

function when(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

async function openSession(id) {
  if (state.turn) return;
  showStatus("");
  $("transcript").replaceChildren();
  state.session = id;
  state.sessionTokens = 0;
  state.turns = 0;
  state.agent = null;
  showSession();
  try {
    const view = await (await api("GET", `sessions/${encodeURIComponent(id)}`)).json();
    state.sessionTokens = view.tokens.total;
    state.turns = view.turn_count;
    state.agent = view.agent || null;
    renderHistory(view.messages);
    showSession();
  } catch (error) {
    showStatus(describe(error));
    if (error.status === 404) newSession(true);
  }
  $("message").focus();
}

function newSession(keepStatus) {
  if (state.turn) return;
  if (!keepStatus) showStatus("");
  state.session = null;
  state.sessionTokens = 0;
  state.turns = 0;
  state.agent = null;
  $("transcript").replaceChildren();
  showSession();
  $("message").focus();
}

async function deleteSession() {
  const id = state.session;
  if (!id || state.turn) return;
  if (!window.confirm(`Delete session ${id} and all its messages?`)) return;
  try {
    await api("DELETE", `sessions/${encodeURIComponent(id)}`);
    newSession();
    showStatus(`Session ${id} was deleted.`, true);
  } catch (error) {
    showStatus(describe(error));
  }
  loadSessions();
}

// --- a turn ---------------------------------------------------------------------------------

// The events of a text/event-stream body, as {event, data} objects.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event: name, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function send(text) {
  addMessage("user", "You", text);
  const body = { message: text, session_id: state.session, background: true };
  // A new session's agent, when there is a choice (an open one goes on with its own).
  if (!state.session && !$("agent-pick").hidden) {
    body.agent = $("agent").value;
    state.agent = body.agent;
  }
  const pending = { fresh: !state.session, text };
  await follow(pending, (signal) => api("POST", "agent/stream", body, signal));
}

// After a reload: the run that was answering, read again from its start.
async function resume(pending) {
  if (pending.fresh) newSession(true);
  else await openSession(pending.session);
  addMessage("user", "You", pending.text);
  const path = `runs/${encodeURIComponent(pending.run)}/events`;
  await follow(pending, (signal) => api("GET", path, undefined, signal));
}

// Shows a turn's events as they come: `open` starts the stream (a new run, or one resumed).
async function follow(pending, open) {
  const controller = new AbortController();
  state.turn = controller;
  state.run = pending.run || null;
  state.stopping = false;
  busy(true);
  showStatus("");
  let answer = null; // the assistant message being streamed
  let last = null;
  const names = new Map();
  let finished = false;
  let waiting = null; // what the run waits for, when it stopped to ask
  try {
    const response = await open(controller.signal);
    for await (const { event, data } of events(response)) {
      if (event === "run") {
        state.run = data.run_id;
        const kept = { ...pending, run: data.run_id, session: data.session_id };
        sessionStorage.setItem(RUN_STORAGE, JSON.stringify(kept));
      } else if (event === "delta") {
        if (!answer) {
          answer = addMessage("assistant streaming", "Agent", "");
          last = answer;
        }
        answer.querySelector(".text").textContent += data.text;
        answer.scrollIntoView({ block: "end" });
      } else if (event === "tool_call") {
        finishAnswer(answer);
        answer = null;
        names.set(data.id, data.name);
        last = addToolCall(data.name, data.arguments);
      } else if (event === "tool_result") {
        finishAnswer(answer);
        answer = null;
        last = addToolResult(data.name || names.get(data.id) || "tool", data.content, data.is_error);
      } else if (event === "done") {
        finished = true;
        finishAnswer(answer);
        if (!answer && data.response) last = addMessage("assistant", "Agent", data.response);
        if (last) addTurnTokens(last, data.tokens_used);
        const started = !state.session;
        state.session = data.session_id;
        state.sessionTokens += data.tokens_used;
        state.turns += 1;
        showSession();
        // A new session's totals are this turn's; an older one's are read back.
        if (started) loadSessions();
        else refreshListedSession();
      } else if (event === "requires_action") {
        finished = true;
        finishAnswer(answer);
        waiting = data;
      } else if (event === "error") {
        finished = true;
        throw new ApiError(statusOf(data.error && data.error.code), data);
      } else if (event === "shutdown") {
        finished = true;
        throw new Error("the server is shutting down; this turn was not stored. Send it again.");
      }
    }
    if (!finished) throw new ApiError(0, { error: { message: "the stream ended before the turn finished" } });
    // A run waiting for an answer stays in sessionStorage: a reload asks again.
    if (!waiting) sessionStorage.removeItem(RUN_STORAGE);
  } catch (error) {
    finishAnswer(answer);
    if (error.name === "AbortError" && !state.stopping) {
      return; // the page is going away: the run goes on, and the next page resumes it
    }
    sessionStorage.removeItem(RUN_STORAGE);
    if (error.name === "AbortError") {
      addMessage("notice", "Stopped", "The turn was stopped; nothing of it was stored.");
    } else {
      const text = error instanceof ApiError ? describe(error) : `The turn failed: ${error.message}`;
      addMessage("notice", "Not answered", `${text} Nothing of this turn was stored.`);
      showStatus(text);
    }
  } finally {
    state.turn = null;
    state.run = null;
    if (waiting) askApproval(pending, waiting);
    else busy(false);
  }
}

// A run stopped to wait: each call with its arguments, and Approve / Reject buttons; once every
// call is decided, the answers go to POST /runs/{id}/actions and the run's events stream on.
// Stop cancels the waiting run.
function askApproval(pending, data) {
  if (!state.session && data.session_id) {
    state.session = data.session_id;
    showSession();
  }
  const action = data.required_action;
  const card = element("li", "msg approval");
  state.waiting = { run: data.run_id, card };
  $("transcript").append(card);
  if (action.type !== "approve_tool_calls") {
    card.append(element("div", "role", "Waiting for the client's tools"));
    card.append(element("div", "text", "This run waits for the outputs of its client's own tools, which the playground does not run. Stop cancels it."));
    card.scrollIntoView({ block: "end" });
    return;
  }
  card.append(element("div", "role", "Approval needed"));
  const decisions = new Map();
  const answer = () => {
    state.waiting = null;
    const approvals = action.tool_calls.map((call) => {
      const approve = decisions.get(call.id);
      return approve
        ? { tool_call_id: call.id, approve }
        : { tool_call_id: call.id, approve, reason: "rejected in the playground" };
    });
    const body = { approvals, stream: true, background: true };
    const path = `runs/${encodeURIComponent(data.run_id)}/actions`;
    follow({ ...pending, run: data.run_id }, (signal) => api("POST", path, body, signal));
  };
  for (const call of action.tool_calls) {
    const row = element("div", "approval-call");
    row.append(element("pre", "text", `${call.name} ${pretty(call.arguments)}`));
    const approve = element("button", "approve", "Approve");
    const reject = element("button", "reject", "Reject");
    for (const [button, yes] of [[approve, true], [reject, false]]) {
      button.type = "button";
      button.addEventListener("click", () => {
        decisions.set(call.id, yes);
        approve.disabled = true;
        reject.disabled = true;
        row.classList.add(yes ? "approved" : "rejected");
        if (decisions.size === action.tool_calls.length) answer();
      });
    }
    row.append(approve, reject);
    card.append(row);
  }
  card.scrollIntoView({ block: "end" });
}

// Stop: the run is cancelled on the server (it runs in the background), and its stream closed.
function stop() {
  if (state.waiting) {
    const { run, card } = state.waiting;
    state.waiting = null;
    api("POST", `runs/${encodeURIComponent(run)}/cancel`).catch(() => {});
    sessionStorage.removeItem(RUN_STORAGE);
    for (const button of card.querySelectorAll("button")) button.disabled = true;
    addMessage("notice", "Stopped", "The waiting run was cancelled; nothing of it was stored.");
    busy(false);
    return;
  }
  if (!state.turn) return;
  state.stopping = true;
  if (state.run) {
    api("POST", `runs/${encodeURIComponent(state.run)}/cancel`).catch(() => {});
  }
  state.turn.abort();
}

// The HTTP status of an error code sent in a stream (the stream itself was 200).
function statusOf(code) {
  const statuses = {
    session_busy: 409, rate_limited: 429, quota_exceeded: 429, storage_unavailable: 503,
    model_rate_limited: 503, overloaded: 503, model_timeout: 504, turn_deadline_exceeded: 504,
    model_unavailable: 502, model_bad_response: 502, model_authentication_failed: 502,
    model_rejected_request: 502, internal_error: 500, step_limit_exceeded: 422,
    turn_token_budget_exceeded: 422, session_token_budget_exceeded: 422,
    context_length_exceeded: 400,
  };
  return statuses[code] || 500;
}

function finishAnswer(answer) {
  if (answer) answer.classList.remove("streaming");
}

// The open session's totals as stored (other clients may have turns on it too), in the bar and
// in the list.
async function refreshListedSession() {
  const id = state.session;
  let view;
  try {
    view = await (await api("GET", `sessions/${encodeURIComponent(id)}?limit=1`)).json();
  } catch (_) {
    return; // the turn's own numbers stay shown
  }
  if (state.session !== id) return;
  state.turns = view.turn_count;
  state.sessionTokens = view.tokens.total;
  showTokens();
  const button = document.querySelector(`#sessions button[data-id="${CSS.escape(id)}"]`);
  if (!button) return loadSessions();
  button.querySelector(".meta").textContent = summary(view);
}

function busy(running) {
  $("send").disabled = running;
  $("stop").hidden = !running;
  $("new-session").disabled = running;
  $("delete-session").disabled = running;
  $("agent").disabled = running || Boolean(state.session);
  for (const button of document.querySelectorAll("#sessions button")) button.disabled = running;
  if (!running) $("message").focus();
}

// --- wiring ---------------------------------------------------------------------------------

function start() {
  $("key").value = key();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.turn) return;
    const entered = $("key").value.trim();
    // Another key may be another caller, whose sessions these are not.
    if (entered !== key()) newSession();
    if (entered) sessionStorage.setItem(KEY_STORAGE, entered);
    else sessionStorage.removeItem(KEY_STORAGE);
    showStatus(entered ? "Key saved for this tab." : "No key: calls go without one.", true);
    loadSessions();
    loadAgents();
  });
  $("forget-key").addEventListener("click", () => {
    if (state.turn) return;
    sessionStorage.removeItem(KEY_STORAGE);
    $("key").value = "";
    $("sessions").replaceChildren();
    newSession();
    loadAgents();
    showStatus("The key was forgotten.", true);
  });
  $("new-session").addEventListener("click", () => newSession());
  $("refresh-sessions").addEventListener("click", () => loadSessions());
  $("more-sessions").addEventListener("click", () => loadSessions(true));
  $("delete-session").addEventListener("click", deleteSession);
  $("stop").addEventListener("click", stop);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.turn || state.waiting) return;
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") stop();
  });

  const wanted = new URL(window.location.href).searchParams.get("session");
  loadSessions();
  loadAgents();
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(RUN_STORAGE) || "null");
  } catch (_) {
    sessionStorage.removeItem(RUN_STORAGE);
  }
  if (pending && pending.run) resume(pending);
  else if (wanted) openSession(wanted);
  else newSession();
}

start();
