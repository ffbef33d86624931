// One chat turn: the user's message, the streamed reply, and the run's
// monologue and function calls folded in a <details> under it. A stream that
// breaks before `done` is resumed from GET /v1/runs/{id}/stream with
// Last-Event-ID = the last seq shown, so nothing is lost or shown twice.

import { api, errorOf, readSse, sleep, backoff } from './api.js';

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function userTurn(text) {
  const t = el('article', 'turn user');
  t.append(el('div', 'bubble', text));
  return t;
}

export class Turn {
  constructor() {
    this.el = el('article', 'turn assistant');
    this.bubble = el('div', 'bubble');
    this.textEl = el('span', 'text');
    this.bubble.append(this.textEl);
    this.steps = el('details', 'steps');
    this.summary = el('summary');
    this.stepList = el('ol');
    this.steps.append(this.summary, this.stepList);
    this.steps.hidden = true;
    this.meta = el('div', 'meta');
    this.el.append(this.bubble, this.steps, this.meta);
    this.text = '';
    this.lastSeq = 0;
    this.runId = null;
    this.done = false;
    this.resumes = 0;
    this.deltas = 0;
    this.stepCount = 0;
    this.functions = [];
    this.setState('streaming');
  }

  setState(s) {
    this.state = s;
    this.el.dataset.state = s;
  }

  // Applies one agent event; repeats (seq at or below the last) are ignored.
  apply(ev) {
    if (typeof ev.seq === 'number') {
      if (ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
      this.el.dataset.lastSeq = String(ev.seq);
    }
    if (ev.run_id && !this.runId) {
      this.runId = ev.run_id;
      this.el.dataset.runId = ev.run_id;
    }
    switch (ev.message_type) {
      case 'assistant_delta':
        this.deltas += 1;
        this.el.dataset.deltas = String(this.deltas);
        this.setText(this.text + ev.delta);
        break;
      case 'assistant_message':
        // Tells (tests, curious people) whether the streamed tokens added
        // up to the final reply: no piece lost or repeated across resumes.
        if (this.deltas) this.el.dataset.deltasMatch = String(this.text === ev.message);
        this.setText(ev.message);
        break;
      case 'internal_monologue':
        // Tokens streamed before a tool call were thoughts, not the reply.
        this.setText('');
        this.addStep('monologue', ev.message);
        break;
      case 'function_message': this.setText(''); this.addFunction(ev.message); break;
      case 'approval_request': this.addApproval(ev); break;
      case 'approval_response': this.resolveApproval(ev); break;
      case 'usage': this.note(`${ev.total_tokens} tokens`); break;
      case 'error': this.note(`${ev.code}: ${ev.message}`, 'err'); break;
      case 'done':
        this.done = true;
        if (ev.stop_reason !== 'end_turn') this.note(`stopped: ${ev.stop_reason}`);
        if (this.resumes) this.note(`resumed ${this.resumes}× after a dropped connection`);
        this.setState(ev.stop_reason === 'error' ? 'error' : 'done');
        break;
      default: break;
    }
  }

  setText(t) {
    this.text = t;
    this.textEl.textContent = t;
  }

  addStep(kind, text) {
    const li = el('li', `step ${kind}`, text);
    this.pushStep(li, kind === 'monologue' ? 'thought' : kind);
  }

  addFunction(m) {
    const li = el('li', 'step function');
    const call = el('code', null, `${m.function}(${JSON.stringify(m.args || {})})`);
    const status = el('span', `status-${m.status}`, m.status === 'error' ? ' failed' : ' →');
    const result = el('pre', null, typeof m.result === 'string' ? m.result : JSON.stringify(m.result, null, 2));
    li.append(call, status, result);
    this.functions.push(m.function);
    this.pushStep(li, `${m.function}()`);
  }

  // A tool call waiting for approval: Approve / Deny decide it through
  // POST /v1/runs/{id}/approvals/{approval_id}; the run's `approval_response`
  // (from whichever tab or client decided) replaces the buttons.
  addApproval(ev) {
    const li = el('li', 'step approval');
    li.dataset.approvalId = ev.approval_id;
    const call = el('code', null, `${ev.tool}(${JSON.stringify(ev.arguments ?? {})})`);
    const what = el('span', 'approval-ask', ' needs your approval ');
    const approve = el('button', 'approve', 'Approve');
    const deny = el('button', 'deny', 'Deny');
    const decide = async (decision) => {
      approve.disabled = true;
      deny.disabled = true;
      const path = `/v1/runs/${encodeURIComponent(ev.run_id)}/approvals/${encodeURIComponent(ev.approval_id)}`;
      try {
        const r = await api(path, { method: 'POST', json: { decision } });
        if (!r.ok) {
          this.note(String(await errorOf(r)), 'err');
          if (r.status === 429) { approve.disabled = false; deny.disabled = false; }
        }
      } catch (e) {
        this.note(String(e), 'err');
        approve.disabled = false;
        deny.disabled = false;
      }
    };
    approve.type = 'button';
    deny.type = 'button';
    approve.addEventListener('click', () => decide('approve'));
    deny.addEventListener('click', () => decide('deny'));
    li.append(call, what, approve, deny);
    this.pushStep(li, `${ev.tool}()?`);
    this.steps.open = true;
    this.setState('waiting');
  }

  resolveApproval(ev) {
    const li = [...this.stepList.children].find((c) => c.dataset.approvalId === ev.approval_id);
    if (li) {
      li.querySelectorAll('button').forEach((b) => b.remove());
      const by = ev.key_id ? ` by ${ev.key_id}` : '';
      const said = ev.decision === 'approve' ? 'approved' : ev.decision === 'deny' ? 'denied' : 'expired';
      li.querySelector('.approval-ask').textContent = ` ${said}${by}${ev.reason ? `: ${ev.reason}` : ''}`;
      li.dataset.decision = ev.decision;
    }
    if (!this.done) this.setState('streaming');
  }

  pushStep(li, label) {
    this.stepList.append(li);
    this.stepCount += 1;
    this.steps.hidden = false;
    const labels = this.summaryLabels || (this.summaryLabels = []);
    labels.push(label);
    this.summary.textContent = `${this.stepCount} step${this.stepCount > 1 ? 's' : ''}: ${labels.join(', ')}`;
  }

  note(text, cls) {
    this.meta.append(el('span', cls, text));
  }

  fail(message) {
    this.note(message, 'err');
    this.setState('error');
  }
}

// Handles one SSE frame of a run stream. Returns a stream-level error code
// (`lagged`, `history_expired`, …) when the server ended the stream with one.
function onFrame(turn, frame) {
  let data;
  try { data = JSON.parse(frame.data); } catch { return null; }
  if (frame.event === 'error' && data.message_type === undefined) return data.code || 'error';
  turn.apply(data);
  return null;
}

// Reads `resp` (the POST's own SSE answer) into `turn`, resuming from the
// run's stream whenever the connection drops before `done`.
export async function streamRun(turn, resp, hooks = {}) {
  let attempt = 0;
  let hint = null;
  for (;;) {
    let ended = null;
    hint = null;
    if (resp) {
      try {
        hint = await readSse(resp.body, (f) => { ended = onFrame(turn, f) || ended; if (turn.done) hooks.onDone?.(); });
        attempt = 0;
      } catch { /* the connection broke: resume below */ }
      resp = null;
    }
    if (turn.done || hooks.aborted?.()) return;
    if (ended === 'history_expired') { turn.fail('the run is older than the stream history'); return; }
    if (!turn.runId) { turn.fail('connection lost before the run started'); return; }
    attempt += 1;
    if (attempt > 40) { turn.fail('gave up reconnecting'); return; }
    turn.setState('reconnecting');
    hooks.onReconnecting?.();
    await sleep(backoff(attempt, hint));
    try {
      const r = await api(`/v1/runs/${encodeURIComponent(turn.runId)}/stream`, {
        headers: { Accept: 'text/event-stream', 'Last-Event-ID': String(turn.lastSeq) },
      });
      if (!r.ok) {
        const err = await errorOf(r);
        if (r.status >= 500 || r.status === 429) continue;
        turn.fail(String(err));
        return;
      }
      turn.resumes += 1;
      turn.el.dataset.resumes = String(turn.resumes);
      turn.setState('streaming');
      hooks.onResumed?.();
      resp = r;
    } catch { /* still offline: try again */ }
  }
}
