// The live log pane: the last lines from GET /v1/agents/{id}/logs, then an
// EventSource on /logs/stream?api_key=…&after=<last seq>. On a broken
// connection, or the server's final `event: error` frame (`lagged`), it
// reconnects with ?after= the last seq shown (jittered backoff); a stream
// the server ends (a draining gateway, after its randomised `retry:`) is
// resumed by EventSource itself; lines are deduplicated by seq.

import { base, session, tail, backoff } from './api.js';

const MAX_LINES = 500;

export class LogTail {
  constructor(agentId, list, onStatus) {
    this.agentId = agentId;
    this.list = list;
    this.onStatus = onStatus;
    this.lastSeq = null;
    this.es = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.reconnects = 0;
  }

  async start() {
    this.onStatus('connecting');
    try {
      const lines = await tail(`/v1/agents/${encodeURIComponent(this.agentId)}/logs`, 100);
      lines.forEach((l) => this.add(l));
    } catch { /* the stream below still tails what comes next */ }
    if (!this.stopped) this.connect();
  }

  connect() {
    const q = new URLSearchParams({ api_key: session.key, after: String(this.lastSeq ?? 0) });
    const es = new EventSource(`${base}/v1/agents/${encodeURIComponent(this.agentId)}/logs/stream?${q}`);
    this.es = es;
    es.onopen = () => { this.attempt = 0; this.onStatus('live'); };
    es.addEventListener('log', (e) => {
      try { this.add(JSON.parse(e.data)); } catch { /* not JSON: skip */ }
    });
    es.addEventListener('error', (e) => {
      if (this.es !== es) return;
      if (!e.data && es.readyState === EventSource.CONNECTING) {
        // The server ended the stream (a draining gateway first sends a
        // randomised `retry:`): EventSource comes back by itself after
        // that delay, with Last-Event-ID (which wins over ?after=).
        this.reconnects += 1;
        this.list.dataset.reconnects = String(this.reconnects);
        this.onStatus('reconnecting');
        return;
      }
      es.close();
      if (e.data) {
        let code = '';
        try { code = JSON.parse(e.data).code; } catch { /* keep '' */ }
        // Older than the history kept: start over from live.
        if (code === 'history_expired') this.lastSeq = null;
      }
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    this.attempt += 1;
    this.reconnects += 1;
    this.list.dataset.reconnects = String(this.reconnects);
    this.onStatus('reconnecting');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (!this.stopped) this.connect(); }, backoff(this.attempt));
  }

  add(line) {
    if (typeof line.seq === 'number') {
      if (this.lastSeq !== null && line.seq <= this.lastSeq) return;
      this.lastSeq = line.seq;
    }
    const li = document.createElement('li');
    li.className = 'log-line';
    li.dataset.seq = String(line.seq);
    li.dataset.level = line.level || 'info';
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = (line.date || '').slice(11, 19);
    time.title = line.date || '';
    const level = document.createElement('span');
    level.className = 'level';
    level.textContent = line.level || '';
    const msg = document.createElement('span');
    msg.className = 'msg';
    msg.textContent = line.message || '';
    li.append(time, level, msg);
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(li);
    while (this.list.children.length > MAX_LINES) this.list.firstChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
    this.onStatus('off');
  }
}
