#!/usr/bin/env node
// Drives the demo page (GET /) in a real headless Chromium: the page connects
// with the token from its URL, shows the connect and state frames, refuses to
// publish with a wrong API key, and shows messages it publishes to itself.
//
//   node demo.mjs <base-url> <token> <api-key>
//   DEMO_BASE_URL=http://localhost:3000 DEMO_TOKEN=... DEMO_API_KEY=... node demo.mjs
//
// CHROMIUM names the browser (default /usr/bin/chromium, Debian's package);
// DEMO_STEP_TIMEOUT_MS bounds each step (default 10000). Exits 0 when every
// check passed, 1 with what failed and what the page showed, 2 on bad usage.
// Run by node/pages_test.go (TestDemoPageInChromium).

import { mkdtemp, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base = process.env.DEMO_BASE_URL, token = process.env.DEMO_TOKEN, apiKey = process.env.DEMO_API_KEY] =
  process.argv.slice(2);
if (!base || !token || !apiKey) {
  console.error('usage: node demo.mjs <base-url> <token> <api-key>  (or DEMO_BASE_URL, DEMO_TOKEN, DEMO_API_KEY)');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const stepTimeout = Number(process.env.DEMO_STEP_TIMEOUT_MS || 10000);
const started = Date.now();

// Without the background-networking flags Chromium phones home at start,
// which a closed network refuses.
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Chromium refuses some ports outright (ERR_UNSAFE_PORT); a test server's
// random port must not depend on luck.
if (new URL(base).port) args.push(`--explicitly-allowed-ports=${new URL(base).port}`);

class CheckError extends Error {}
const fail = (msg) => { throw new CheckError(msg); };
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${msg}`);

// see waits until locator is visible, failing with what was expected.
async function see(locator, what) {
  try {
    await locator.first().waitFor({ timeout: stepTimeout });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    fail(`timed out after ${stepTimeout} ms waiting for ${what}`);
  }
  return locator.first();
}

// What the page reported on its own: uncaught errors, console errors (CSP
// violations among them), failed requests.
const problems = [];
const consoleLines = [];

const userDataDir = await mkdtemp(join(tmpdir(), 'notify-demo-chromium-'));
// Last resort if we exit before the finally below (the browser is killed by
// Playwright's own exit handler).
process.on('exit', () => rmSync(userDataDir, { recursive: true, force: true }));

let context;
let page;
let code = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args,
    timeout: 30000,
    viewport: { width: 1100, height: 900 },
    // Chromium also writes under $HOME (~/.config/chromium/Crash Reports,
    // ~/.cache/dconf): keep all of it in the throwaway profile.
    env: { ...process.env, HOME: userDataDir, XDG_CONFIG_HOME: join(userDataDir, '.config'), XDG_CACHE_HOME: join(userDataDir, '.cache') },
  });
  context.setDefaultTimeout(stepTimeout);
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => problems.push(`uncaught error: ${e.message}`));
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text()}`);
    // The one expected error: the 401 of the publish with a wrong key.
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url().replace(/token=[^&]+/, 'token=…')} ${r.failure()?.errorText}`));

  // 1. The page, from GET /?token=..., with its headers.
  const url = new URL('/', base);
  url.searchParams.set('token', token);
  const resp = await page.goto(url.href);
  if (!resp || resp.status() !== 200) fail(`GET / answered ${resp?.status()}`);
  const csp = resp.headers()['content-security-policy'] || '';
  if (!csp.includes("script-src 'self'")) fail(`GET /: Content-Security-Policy is ${JSON.stringify(csp)}`);
  log(`page loaded (${resp.headers()['content-type']})`);

  // 2. A token in the URL connects at once: connect frame, state frame, open.
  await see(page.locator('#status[data-state="open"]'), 'the status to say open (auto-connect with ?token=)');
  await see(page.locator('#log li[data-kind="connect"]'), 'the connect frame in the log');
  await see(page.locator('#log li[data-kind="state"]'), 'the state frame in the log');
  const user = (await page.locator('#user').textContent()).trim();
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  if (user !== String(claims.user_id)) fail(`the page shows user ${JSON.stringify(user)}, the token is for ${claims.user_id}`);
  const stateText = await page.locator('#state').textContent();
  let state;
  try { state = JSON.parse(stateText); } catch { fail(`the state shown is not JSON: ${stateText}`); }
  if (!state || typeof state !== 'object' || Array.isArray(state)) fail(`the state shown is not an object: ${stateText}`);
  log(`connected as ${user}, state ${JSON.stringify(state)}`);

  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  // 3. A wrong API key: the server's "unauthenticated" shows, nothing is published.
  const stray = `must not arrive ${id}`;
  await page.fill('#apikey', `wrong-${id}`);
  await page.fill('#message', stray);
  await page.click('#publish');
  await see(page.locator('#publish-result[data-ok="false"]'), 'an error after publishing with a wrong API key');
  const refused = (await page.locator('#publish-result').textContent()).trim();
  if (!refused.startsWith('unauthenticated:')) fail(`wrong API key: the page says ${JSON.stringify(refused)}, want "unauthenticated: ..."`);
  log(`wrong API key refused: ${refused}`);

  // 4. The right key: a text message with markup in it arrives, shown as text.
  const text = `<b>hello</b> & "chromium" <img src=x> ${id}`;
  await page.fill('#apikey', apiKey);
  await page.fill('#message', text);
  await page.click('#publish');
  await see(page.locator('#publish-result[data-ok="true"]'), 'success after publishing with the API key');
  log(`published: ${(await page.locator('#publish-result').textContent()).trim()}`);
  const shown = await (await see(page.locator('#log li[data-kind="text"] .body pre', { hasText: id }),
    `the published message ${JSON.stringify(text)} in the log`)).textContent();
  if (shown !== text) fail(`the log shows ${JSON.stringify(shown)}, want ${JSON.stringify(text)}`);
  if ((await page.locator('#log b, #log img').count()) > 0) fail('message markup was rendered as HTML');
  log('text message shown, escaped');

  // 5. A JSON message is pretty-printed.
  const obj = { id, n: 1, nested: { ok: true } };
  await page.fill('#message', JSON.stringify(obj));
  await page.click('#publish');
  const pretty = JSON.stringify(obj, null, 2);
  const shownJSON = await (await see(page.locator('#log li[data-kind="text"] .body pre', { hasText: `"nested": {` }),
    'the published JSON message, pretty-printed, in the log')).textContent();
  if (shownJSON !== pretty) fail(`JSON message shown as ${JSON.stringify(shownJSON)}, want ${JSON.stringify(pretty)}`);
  log('JSON message shown pretty-printed');

  if ((await page.locator('#log', { hasText: stray }).count()) > 0) fail('the message published with the wrong key arrived');

  // 6. The API key is remembered across a reload; the page reconnects.
  await page.reload();
  await see(page.locator('#status[data-state="open"]'), 'the status to say open after a reload');
  await see(page.locator('#log li[data-kind="state"]'), 'the state frame after a reload');
  if ((await page.inputValue('#apikey')) !== apiKey) fail('the API key was not remembered across a reload');
  log('reloaded: reconnected, API key remembered');

  // 7. Disconnect closes, and stays closed.
  await page.click('#disconnect');
  await see(page.locator('#status[data-state="closed"]'), 'the status to say closed after Disconnect');
  log(`disconnected: ${(await page.locator('#status').textContent()).trim()}`);

  if (problems.length) fail(`the page reported problems:\n  ${problems.join('\n  ')}`);
  log('PASS');
} catch (e) {
  code = 1;
  const msg = e instanceof CheckError ? e.message : String(e.stack || e);
  // Playwright colours its call logs; and the token need not be repeated.
  console.error(`FAIL: ${msg.replace(/\x1b\[[0-9;]*m/g, '').replaceAll(token, '<token>')}`);
  await dumpPage();
} finally {
  if (context) await context.close().catch((e) => console.error(`closing the browser: ${e.message}`));
  await rm(userDataDir, { recursive: true, force: true });
}
process.exit(code);

// dumpPage prints what the page showed, for a failed run.
async function dumpPage() {
  const out = ['--- what the page showed ---'];
  if (page && !page.isClosed()) {
    try {
      const snap = await page.evaluate(() => {
        const t = (id) => document.getElementById(id)?.textContent.trim() ?? '(missing)';
        return {
          url: location.pathname,
          status: t('status'),
          user: t('user'),
          state: t('state'),
          tokenInfo: t('token-info'),
          publishResult: t('publish-result'),
          log: [...document.querySelectorAll('#log li')].reverse()
            .map((li) => `${li.querySelector('time')?.textContent} ${li.dataset.kind}: ${li.querySelector('.body')?.textContent}`),
        };
      });
      out.push(`status: ${snap.status}`, `user: ${snap.user}`, `state: ${snap.state}`,
        `token: ${snap.tokenInfo}`, `publish result: ${snap.publishResult}`, 'log (oldest first):',
        ...snap.log.map((l) => `  ${l}`));
    } catch (e) {
      out.push(`(could not read the page: ${e.message})`);
    }
  } else {
    out.push('(no page)');
  }
  if (problems.length) out.push('problems:', ...problems.map((p) => `  ${p}`));
  if (consoleLines.length) out.push('console:', ...consoleLines.map((l) => `  ${l}`));
  console.error(out.join('\n'));
}
