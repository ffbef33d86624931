// The weir chat page: key, agents, chat and logs wired together.
// No framework and no build step: the gateway serves these files as they are.

import { api, apiJson, errorOf, session, tail, ApiError } from './api.js';
import { Turn, userTurn, streamRun } from './chat.js';
import { LogTail } from './logs.js';

const $ = (id) => document.getElementById(id);
const AGENT_STORE = 'weir.agent';

const ui = {
  agent: null, // the selected agent
  pending: null, // an agent to select once the list is loaded (just created)
  logs: null,
  turn: null,
};

function toast(err) {
  const t = $('toast');
  t.textContent = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err.message || err);
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

function pill(id, status, text) {
  const p = $(id);
  p.className = `pill ${status}`;
  p.textContent = text || status;
}

// ---- key ----

async function useKey(key) {
  const account = await apiJson('/v1/account', {}, key);
  session.key = key;
  $('key').value = '';
  $('key').placeholder = `using ${account.key.id}${account.key.label ? ` (${account.key.label})` : ''}`;
  $('key-forget').hidden = false;
  $('whoami').textContent = `account ${account.id} · ${account.key.scopes.join(' ')}`;
  $('whoami').dataset.account = account.id;
  await loadAgents();
}

function forgetKey() {
  session.key = '';
  sessionStorage.removeItem(AGENT_STORE);
  location.reload();
}

// ---- agents ----

async function loadAgents() {
  const list = $('agents');
  const page = await apiJson('/v1/agents?limit=200');
  list.replaceChildren();
  for (const a of page.data) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.id = a.id;
    const name = document.createElement('span');
    name.textContent = a.name;
    const model = document.createElement('span');
    model.className = 'model';
    model.textContent = `${a.model}${a.status === 'stopped' ? ' · stopped' : ''}`;
    b.append(name, model);
    b.addEventListener('click', () => selectAgent(a).catch(toast));
    li.append(b);
    list.append(li);
  }
  const wanted = ui.pending || (ui.agent ? ui.agent.id : sessionStorage.getItem(AGENT_STORE));
  ui.pending = null;
  const found = page.data.find((a) => a.id === wanted);
  if (found && (!ui.agent || ui.agent.id !== found.id)) await selectAgent(found);
  else markSelected();
  loadModels().catch(() => {});
}

function markSelected() {
  for (const b of $('agents').querySelectorAll('button')) {
    b.setAttribute('aria-current', String(!!ui.agent && b.dataset.id === ui.agent.id));
  }
}

async function loadModels() {
  const models = await apiJson('/v1/models');
  const dl = $('models');
  dl.replaceChildren();
  for (const id of ['echo', ...models.data.map((m) => m.id).filter((id) => id.startsWith('upstream/'))]) {
    const o = document.createElement('option');
    o.value = id;
    dl.append(o);
  }
}

async function createAgent(ev) {
  ev.preventDefault();
  const body = { name: $('agent-name').value.trim(), model: $('agent-model').value.trim() || 'echo' };
  const system = $('agent-system').value.trim();
  if (system) body.system = system;
  const agent = await apiJson('/v1/agents', { method: 'POST', json: body });
  $('agent-name').value = '';
  ui.pending = agent.id;
  await loadAgents();
}

async function selectAgent(agent) {
  if (ui.turn) throw new Error('wait for the reply to finish (or press Stop) before switching agents');
  ui.agent = agent;
  sessionStorage.setItem(AGENT_STORE, agent.id);
  markSelected();
  $('chat-title').textContent = agent.name;
  $('message').disabled = false;
  $('send').disabled = false;
  $('message').focus();
  await loadHistory(agent);
  if (ui.logs) ui.logs.stop();
  $('logs').replaceChildren();
  ui.logs = new LogTail(agent.id, $('logs'), (s) => pill('log-status', s));
  ui.logs.start();
}

// The last events of the default session, grouped into turns by run.
async function loadHistory(agent) {
  const box = $('transcript');
  box.replaceChildren();
  const events = await tail(`/v1/agents/${encodeURIComponent(agent.id)}/messages`, 300);
  const turns = new Map();
  for (const ev of events) {
    if (ev.message_type === 'user_message') {
      box.append(userTurn(ev.message));
      continue;
    }
    let t = turns.get(ev.run_id);
    if (!t) {
      t = new Turn();
      turns.set(ev.run_id, t);
      box.append(t.el);
    }
    t.apply(ev);
  }
  for (const t of turns.values()) if (!t.done) t.setState('done');
  if (!box.children.length) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = `Say hello to ${agent.name}.`;
    box.append(p);
  }
  box.scrollTop = box.scrollHeight;
}

// ---- chat ----

async function send(ev) {
  ev.preventDefault();
  const text = $('message').value.trim();
  if (!text || !ui.agent || ui.turn) return;
  const box = $('transcript');
  box.querySelectorAll('.empty').forEach((e) => e.remove());
  box.append(userTurn(text));
  const turn = new Turn();
  box.append(turn.el);
  box.scrollTop = box.scrollHeight;
  $('message').value = '';
  ui.turn = turn;
  setBusy(true);
  const follow = () => { box.scrollTop = box.scrollHeight; };
  const observer = new MutationObserver(follow);
  observer.observe(turn.el, { childList: true, subtree: true, characterData: true });
  try {
    // background: a dropped connection must not cancel the run: the page
    // resumes it. The Stop button cancels explicitly.
    const resp = await api(`/v1/agents/${encodeURIComponent(ui.agent.id)}/messages`, {
      method: 'POST',
      headers: { Accept: 'text/event-stream' },
      json: { message: text, stream: true, stream_tokens: true, background: true },
    });
    if (!resp.ok) throw await errorOf(resp);
    await streamRun(turn, resp, {
      onReconnecting: () => pill('chat-status', 'reconnecting'),
      onResumed: () => pill('chat-status', 'busy', 'streaming'),
    });
  } catch (e) {
    turn.fail(String(e));
    toast(e);
  } finally {
    observer.disconnect();
    ui.turn = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  pill('chat-status', busy ? 'busy' : 'idle', busy ? 'streaming' : 'idle');
  $('send').disabled = busy;
  $('stop').disabled = !busy;
}

async function stop() {
  const t = ui.turn;
  if (!t || !t.runId) return;
  await apiJson(`/v1/runs/${encodeURIComponent(t.runId)}/cancel`, { method: 'POST' });
}

// ---- wiring ----

function init() {
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('key').value.trim();
    if (key) useKey(key).catch(toast);
  });
  $('key-forget').addEventListener('click', forgetKey);
  $('agent-form').addEventListener('submit', (e) => createAgent(e).catch(toast));
  $('agents-refresh').addEventListener('click', () => loadAgents().catch(toast));
  $('composer').addEventListener('submit', (e) => send(e).catch(toast));
  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => stop().catch(toast));
  if (session.key) {
    useKey(session.key).catch((e) => {
      if (e.status === 401) session.key = '';
      toast(e);
    });
  }
  document.body.dataset.ready = 'true';
}

init();
