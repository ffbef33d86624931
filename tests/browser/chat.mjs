// Drives weir's chat page in real headless Chromium (Debian's package, through
// playwright-core: no browser download). Run by tests/api/ecosystem/browser.rs,
// which starts the gateways; by hand:
//
//   WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_… node tests/browser/chat.mjs
//
// The page is loaded through a small TCP proxy in this script, so the test can
// cut every connection at once (a network drop) and check that the page
// resumes the reply stream and the log tail with no gap and no duplicate.
//
// Env: WEIR_URL, WEIR_KEY (required); WEIR_CORS_URL (a second gateway that
// allows this proxy's origin: the cross-origin check runs only with it);
// PROXY_PORT (default: any free port); CHROMIUM (default /usr/bin/chromium);
// SCREENSHOT_DIR (default: the current directory).

import net from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';

const WAIT = 20_000;
const env = process.env;
const base = need('WEIR_URL').replace(/\/+$/, '');
const key = need('WEIR_KEY');
const shots = env.SCREENSHOT_DIR || '.';

function need(name) {
  if (!env[name]) { console.error(`${name} is required`); process.exit(2); }
  return env[name];
}

// A TCP proxy in front of the gateway, with a switch that drops every
// connection (a reset, like a network failure) while it keeps listening.
function startProxy(port, target) {
  const sockets = new Set();
  let drops = 0;
  const server = net.createServer((client) => {
    const up = net.connect(Number(target.port), target.hostname);
    for (const [a, b] of [[client, up], [up, client]]) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => { sockets.delete(a); b.destroy(); });
      a.pipe(b);
    }
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}`,
      dropAll() {
        drops += 1;
        for (const s of sockets) (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy());
        return drops;
      },
      close() { for (const s of sockets) s.destroy(); server.close(); },
    }));
  });
}

async function rest(method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  return r.json();
}

let step = 'start';
const consoleLines = [];
const checks = [];
function ok(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks.push(what);
}

async function useKey(page, k) {
  await page.fill('#key', k);
  await page.click('#key-save');
  await page.waitForSelector('#whoami[data-account="default"]', { timeout: WAIT });
  ok(await page.evaluate(() => sessionStorage.getItem('weir.key')) === k, 'the key is kept in sessionStorage');
}

async function createAgent(page, name) {
  await page.fill('#agent-name', name);
  await page.click('#agent-create');
  await page.waitForSelector(`#agents button[aria-current="true"]:has-text("${name}")`, { timeout: WAIT });
  await page.waitForSelector('#log-status.live', { timeout: WAIT });
}

// Sends `text` and waits for the reply to finish; returns the turn's state.
async function sendAndWait(page, text) {
  const before = await page.locator('.turn.assistant').count();
  await page.fill('#message', text);
  await page.click('#send');
  const turn = page.locator('.turn.assistant').nth(before);
  await turn.and(page.locator('[data-state="done"]')).waitFor({ timeout: WAIT });
  return turn;
}

async function logLines(page) {
  return page.$$eval('#logs .log-line', (ls) => ls.map((l) => ({ seq: Number(l.dataset.seq), text: l.textContent })));
}

function strictlyIncreasing(seqs) {
  return seqs.every((s, i) => i === 0 || s > seqs[i - 1]);
}

async function timeQuestion(page, proxy) {
  step = 'open the page';
  await page.goto(`${proxy.url}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
  ok((await page.title()) === 'weir chat', 'the page is served at /');

  step = 'enter the key';
  await useKey(page, key);

  step = 'create an agent';
  await createAgent(page, 'browser-test');

  step = 'ask for the time';
  const turn = await sendAndWait(page, 'what time is it?');
  const text = await turn.locator('.text').textContent();
  ok(/The current time is/.test(text), `the streamed reply arrived: ${text}`);
  ok(Number(await turn.getAttribute('data-deltas')) >= 3, 'the reply came as several token deltas');
  ok(await turn.getAttribute('data-deltas-match') === 'true', 'the deltas add up to the final reply');
  const steps = turn.locator('details.steps');
  ok(!(await steps.evaluate((d) => d.open)), 'monologue and calls are folded');
  ok(/get_time\(\)/.test(await steps.locator('summary').textContent()), 'the summary names get_time()');
  await steps.locator('summary').click();
  ok(await steps.locator('.step.function code').textContent() === 'get_time({})', 'the folded call shows get_time({})');
  ok(/get_time/.test(await steps.locator('.step.monologue').textContent()), 'the folded monologue is shown');
  await page.screenshot({ path: path.join(shots, 'chat-time.png') });

  step = 'see log lines';
  await page.waitForFunction(() => [...document.querySelectorAll('#logs .log-line .msg')]
    .some((m) => m.textContent.startsWith('run ended')), null, { timeout: WAIT });
  const lines = await logLines(page);
  ok(lines.some((l) => l.text.includes('tool get_time called')), 'the log pane shows the tool call');
  ok(strictlyIncreasing(lines.map((l) => l.seq)), 'log lines are in seq order');
}

// A tool call that needs approval: the turn waits with Approve / Deny on
// the request; Approve resumes the run and the reply arrives; on a second
// request Deny does, with the call shown as denied.
async function approval(page, proxy) {
  step = 'approval: an agent whose get_time needs approval';
  await rest('POST', '/v1/agents', { name: 'careful', tools: ['get_time'], approval_required: ['get_time'] });
  await page.goto(`${proxy.url}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
  await page.click('#agents button:has-text("careful")');
  await page.waitForSelector('#agents button[aria-current="true"]:has-text("careful")', { timeout: WAIT });

  step = 'approval: ask for the time';
  const before = await page.locator('.turn.assistant').count();
  await page.fill('#message', 'what time is it?');
  await page.click('#send');
  const turn = page.locator('.turn.assistant').nth(before);
  await turn.and(page.locator('[data-state="waiting"]')).waitFor({ timeout: WAIT });
  const ask = turn.locator('.step.approval');
  ok(await ask.locator('button.approve').isVisible(), 'Approve is shown on the approval request');
  ok(await ask.locator('button.deny').isVisible(), 'Deny is shown on the approval request');
  ok(/get_time/.test(await ask.locator('code').textContent()), 'the request names the tool');
  await page.screenshot({ path: path.join(shots, 'chat-approval.png') });

  step = 'approval: approve';
  await ask.locator('button.approve').click();
  await turn.and(page.locator('[data-state="done"]')).waitFor({ timeout: WAIT });
  ok(await ask.getAttribute('data-decision') === 'approve', 'the decision replaces the buttons');
  ok(await ask.locator('button').count() === 0, 'no buttons are left once decided');
  const text = await turn.locator('.text').textContent();
  ok(/The current time is/.test(text), `the approved call ran and the reply came: ${text}`);
  ok(await turn.locator('.step.function .status-success').count() === 1, 'the call ran once');

  step = 'approval: ask again and deny';
  const again = page.locator('.turn.assistant').nth(before + 1);
  await page.fill('#message', 'what time is it now?');
  await page.click('#send');
  await again.and(page.locator('[data-state="waiting"]')).waitFor({ timeout: WAIT });
  const ask2 = again.locator('.step.approval');
  await ask2.locator('button.deny').click();
  await again.and(page.locator('[data-state="done"]')).waitFor({ timeout: WAIT });
  ok(await ask2.getAttribute('data-decision') === 'deny', 'Deny decides the second request');
  ok(await ask2.locator('button').count() === 0, 'no buttons are left once denied');
  ok(/denied/.test(await ask2.locator('.approval-ask').textContent()), 'the request says denied');
  const call = again.locator('.step.function');
  ok(await call.locator('.status-denied').count() === 1, 'the denied function_message is shown');
  ok(await call.locator('.status-success').count() === 0, 'the denied call did not run');
  ok(/^denied/.test(await call.locator('pre').textContent()), 'the call\'s result says it was denied');
  await page.screenshot({ path: path.join(shots, 'chat-denied.png') });
}

async function networkDrop(page, proxy) {
  step = 'network drop: prepare a slow agent';
  const agent = await rest('POST', '/v1/agents', { name: 'slow-echo', metadata: { echo_delay_ms: 120 } });
  await page.click('#agents-refresh');
  await page.click(`#agents button[data-id="${agent.id}"]`);
  await page.waitForSelector('#log-status.live', { timeout: WAIT });

  step = 'network drop: cut every connection mid-reply';
  const message = 'please answer slowly so that the network can fail in the middle of it';
  await page.fill('#message', message);
  await page.click('#send');
  const turn = page.locator('.turn.assistant').last();
  await page.waitForFunction(() => {
    const t = [...document.querySelectorAll('.turn.assistant')].pop();
    return t && Number(t.dataset.deltas || 0) >= 2;
  }, null, { timeout: WAIT });
  proxy.dropAll();

  step = 'network drop: the reply resumes and completes';
  await turn.and(page.locator('[data-state="done"]')).waitFor({ timeout: WAIT });
  ok(Number(await turn.getAttribute('data-resumes')) >= 1, 'the reply stream was resumed');
  ok(await turn.getAttribute('data-deltas-match') === 'true', 'no token lost or repeated across the drop');
  ok((await turn.locator('.text').textContent()).startsWith(`You said: "${message}"`), 'the full reply is shown');

  step = 'network drop: the log tail resumes';
  await page.waitForSelector('#logs[data-reconnects]', { timeout: WAIT });
  await page.waitForSelector('#log-status.live', { timeout: WAIT });
  await page.waitForFunction(() => [...document.querySelectorAll('#logs .log-line .msg')]
    .some((m) => m.textContent.startsWith('run ended')), null, { timeout: WAIT });
  const seqs = (await logLines(page)).map((l) => l.seq);
  ok(strictlyIncreasing(seqs), `log seqs after the drop have no duplicate: ${seqs.join(',')}`);
  ok(seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1), `log seqs after the drop have no gap: ${seqs.join(',')}`);
}

async function crossOrigin(browser, proxy, corsUrl) {
  step = 'cross-origin: the page on one origin, the gateway on another';
  const page = await browser.newPage();
  page.on('console', (m) => consoleLines.push(`[cors page] ${m.type()}: ${m.text()}`));
  await page.goto(`${proxy.url}/?gateway=${encodeURIComponent(corsUrl)}`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT });
  await useKey(page, key);
  await createAgent(page, 'cors-agent');
  const turn = await sendAndWait(page, 'hello from another origin');
  ok((await turn.locator('.text').textContent()).includes('hello from another origin'), 'a cross-origin chat streams');
  await page.waitForFunction(() => document.querySelectorAll('#logs .log-line').length > 0, null, { timeout: WAIT });
  ok(true, 'a cross-origin EventSource with ?api_key= tails the logs');
  await page.close();
}

async function main() {
  const proxy = await startProxy(Number(env.PROXY_PORT || 0), new URL(base));
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  const pageErrors = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  let failed = null;
  try {
    await timeQuestion(page, proxy);
    await networkDrop(page, proxy);
    await approval(page, proxy);
    if (env.WEIR_CORS_URL) await crossOrigin(browser, proxy, env.WEIR_CORS_URL);
    step = 'no script errors';
    ok(pageErrors.length === 0, `no uncaught errors in the page: ${pageErrors.join('; ')}`);
    await page.screenshot({ path: path.join(shots, 'chat.png') });
  } catch (e) {
    failed = e;
    const file = path.join(shots, 'failure.png');
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.error(`FAILED at step "${step}": ${e.message}\nscreenshot: ${file}`);
    console.error(`page console:\n  ${consoleLines.join('\n  ')}`);
  } finally {
    await browser.close().catch(() => {});
    proxy.close();
  }
  for (const c of checks) console.log(`ok - ${c}`);
  if (failed) process.exit(1);
  console.log(`browser test passed: ${checks.length} checks`);
}

main().catch((e) => { console.error(e); process.exit(1); });
