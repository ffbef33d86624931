// HTTP helpers of the weir chat page: the gateway's base URL, the key,
// JSON calls with weir's error envelope, and an SSE reader for fetch streams
// (EventSource cannot POST or set headers, so the chat stream is read here).

const params = new URLSearchParams(location.search);

// `?gateway=https://other.host` talks to a gateway on another origin (it must
// allow this page's origin with --cors-origin); the default is this origin.
export const base = (params.get('gateway') || '').replace(/\/+$/, '');

const KEY_STORE = 'weir.key';

export const session = {
  get key() { return sessionStorage.getItem(KEY_STORE) || ''; },
  set key(v) {
    if (v) sessionStorage.setItem(KEY_STORE, v); else sessionStorage.removeItem(KEY_STORE);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() { return `${this.code}: ${this.message}`; }
}

// fetch with the key as a Bearer header; `json` becomes the request body.
export function api(path, opts = {}, key = session.key) {
  const headers = { Authorization: `Bearer ${key}`, ...(opts.headers || {}) };
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  return fetch(base + path, { method: opts.method || 'GET', headers, body, signal: opts.signal });
}

// The error of a non-2xx response, read from weir's envelope.
export async function errorOf(resp) {
  const text = await resp.text().catch(() => '');
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  const e = body && body.error;
  return new ApiError(resp.status, (e && e.code) || `http_${resp.status}`,
    (e && e.message) || text || resp.statusText);
}

export async function apiJson(path, opts = {}, key) {
  let resp;
  try {
    resp = await api(path, opts, key);
  } catch (e) {
    // fetch only says "Failed to fetch": name the likely causes.
    const where = base || location.origin;
    throw new ApiError(0, 'unreachable', base
      ? `cannot reach ${where}: is it up, and does it allow this page's origin (--cors-origin ${location.origin})?`
      : `cannot reach ${where}: is the gateway running? (${e.message})`);
  }
  if (!resp.ok) throw await errorOf(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

// The last `n` items of a paginated list (lists are oldest first).
export async function tail(path, n) {
  const sep = path.includes('?') ? '&' : '?';
  const first = await apiJson(`${path}${sep}limit=1`);
  const offset = Math.max(0, first.pagination.total - n);
  const page = await apiJson(`${path}${sep}limit=${n}&offset=${offset}`);
  return page.data;
}

// Reads a text/event-stream body, calling onFrame({event, id, data}) per
// event. Resolves when the server ends the stream, with the last `retry:`
// it sent (ms; null if none: a draining gateway sends one, randomised, so
// its clients come back spread out); rejects when the connection breaks.
// Lines end with \n (a trailing \r is dropped).
export async function readSse(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let retry = null;
  let frame = { event: '', id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return retry;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (frame.data.length) {
          onFrame({ event: frame.event || 'message', id: frame.id, data: frame.data.join('\n') });
        }
        frame = { event: '', id: null, data: [] };
        continue;
      }
      if (line.startsWith(':')) continue; // comment: `: ping`
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') frame.data.push(val);
      else if (field === 'event') frame.event = val;
      else if (field === 'id') frame.id = val;
      else if (field === 'retry' && /^\d+$/.test(val)) retry = Number(val);
    }
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The wait before a reconnect: the server's hint when it gave one (SSE
// `retry:`, a draining WebSocket's close reason), else "full jitter": a
// random wait up to 250 ms doubling to 5 s, so clients that lost the same
// gateway do not all come back at the same moment.
export const backoff = (attempt, hintMs = null) => (hintMs != null
  ? hintMs
  : Math.random() * Math.min(250 * 2 ** Math.max(0, attempt - 1), 5000));
