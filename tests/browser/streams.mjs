// What HTTP/2 buys a browser: one page opens 12 EventSource streams to weir
// at once plus a fetch-based chat stream. Over HTTPS (HTTP/2 by ALPN) all
// 12 + 1 share one connection and every one receives its events; over plain
// HTTP/1.1 Chromium holds at most 6 connections per origin, so the streams
// beyond 6 never open and the chat stream stalls behind them. Run by
// tests/api/ecosystem/browser.rs, which starts both gateways; by hand:
//
//   WEIR_H2_URL=https://127.0.0.1:8443 WEIR_H1_URL=http://127.0.0.1:8080 \
//   WEIR_KEY=wk_… NODE_EXTRA_CA_CERTS=ca.crt node tests/browser/streams.mjs
//
// The HTTPS gateway's certificate is from a test CA: node's own fetch trusts
// it through NODE_EXTRA_CA_CERTS, the browser context ignores certificate
// errors (Chromium still negotiates HTTP/2 then).
//
// Env: WEIR_H2_URL, WEIR_H1_URL, WEIR_KEY (required); CHROMIUM (default
// /usr/bin/chromium).

import { chromium } from 'playwright-core';

const STREAMS = 12;
const WAIT = 20_000;
const env = process.env;
const key = need('WEIR_KEY');

function need(name) {
  if (!env[name]) { console.error(`${name} is required`); process.exit(2); }
  return env[name];
}

function ok(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function rest(base, method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  return r.json();
}

// In the page: opens the streams and records, per stream, whether it opened
// and whether it saw the run's `done`.
function openStreams({ agent, key, n }) {
  window.streams = [];
  for (let i = 0; i < n; i += 1) {
    const s = { open: false, done: false, events: 0 };
    const es = new EventSource(`/v1/agents/${agent}/events?api_key=${key}`);
    es.onopen = () => { s.open = true; };
    for (const kind of ['user_message', 'assistant_message', 'done']) {
      es.addEventListener(kind, () => { s.events += 1; if (kind === 'done') s.done = true; });
    }
    window.streams.push(s);
  }
}

// In the page: a chat reply streamed with fetch (as the chat page does),
// read to its `done`.
function chatStream({ agent, key }) {
  window.chat = { started: false, done: false };
  fetch(`/v1/agents/${agent}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message: 'to every stream', stream: true }),
  }).then(async (r) => {
    window.chat.started = true;
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      if (text.includes('event: done')) window.chat.done = true;
    }
  });
}

const counts = () => ({
  open: window.streams.filter((s) => s.open).length,
  done: window.streams.filter((s) => s.done).length,
  chat: window.chat,
  protocol: performance.getEntriesByType('navigation')[0].nextHopProtocol,
});

async function overHttp2(browser, base) {
  const agent = (await rest(base, 'POST', '/v1/agents', { name: 'twelve-h2' })).id;
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${base}/healthz`);
  await page.evaluate(openStreams, { agent, key, n: STREAMS });
  await page.waitForFunction((n) => window.streams.filter((s) => s.open).length === n, STREAMS, { timeout: WAIT });
  await page.evaluate(chatStream, { agent, key });
  await page.waitForFunction((n) => window.chat.done && window.streams.filter((s) => s.done).length === n,
    STREAMS, { timeout: WAIT });
  const c = await page.evaluate(counts);
  ok(c.protocol === 'h2', `HTTPS page loaded over HTTP/2 (${c.protocol})`);
  ok(c.open === STREAMS && c.done === STREAMS, `h2: all ${STREAMS} EventSource streams opened and got the run (${c.open}, ${c.done})`);
  ok(c.chat.done, 'h2: the fetch chat stream completed beside them');
  await context.close();
}

async function overHttp1(browser, base) {
  const agent = (await rest(base, 'POST', '/v1/agents', { name: 'twelve-h1' })).id;
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/healthz`);
  await page.evaluate(openStreams, { agent, key, n: STREAMS });
  await page.waitForFunction(() => window.streams.some((s) => s.open), null, { timeout: WAIT });
  await page.evaluate(chatStream, { agent, key });
  // The browser cannot send the chat request: start the run from outside.
  await rest(base, 'POST', `/v1/agents/${agent}/messages`, { message: 'to every stream' });
  await page.waitForFunction(() => window.streams.filter((s) => s.open).length
    === window.streams.filter((s) => s.done).length, null, { timeout: WAIT });
  await page.waitForTimeout(2000);
  const c = await page.evaluate(counts);
  ok(c.protocol === 'http/1.1', `plain page loaded over HTTP/1.1 (${c.protocol})`);
  ok(c.open >= 1 && c.open <= 6, `http/1.1: only ${c.open} of ${STREAMS} streams opened (the per-origin connection limit)`);
  ok(c.done === c.open, `http/1.1: the open ones got the run (${c.done})`);
  ok(!c.chat.started, 'http/1.1: the fetch chat stream stalled behind them');
  await context.close();
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-dev-shm-usage'],
  });
  try {
    await overHttp2(browser, need('WEIR_H2_URL').replace(/\/+$/, ''));
    await overHttp1(browser, need('WEIR_H1_URL').replace(/\/+$/, ''));
  } finally {
    await browser.close();
  }
  console.log('streams browser test passed');
}

main().catch((e) => { console.error(e); process.exit(1); });
