#!/usr/bin/env node
// A real browser client for the tests, in headless Chromium: it opens a page
// of the server's origin (a 404 page: same origin, no page CSP) and runs
//   longpoll: phoenix.js (this package's phoenix, the npm build) forced onto
//             the LongPoll transport, joining user:<user>;
//   sse:      an EventSource on /notify/sse.
// Each event is printed as a JSON line; a line {"cmd":"quit"} on stdin ends it.
//
//   node browser-client.mjs <longpoll|sse> <base-url> <token> <user>
//
// CHROMIUM names the browser (default /usr/bin/chromium).

import { mkdtemp, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const [mode, base, token, user] = process.argv.slice(2);
if (!['longpoll', 'sse'].includes(mode) || !base || !token || !user) {
  console.error('usage: node browser-client.mjs <longpoll|sse> <base-url> <token> <user>');
  process.exit(2);
}
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const here = dirname(fileURLToPath(import.meta.url));

const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
if (new URL(base).port) args.push(`--explicitly-allowed-ports=${new URL(base).port}`);

const userDataDir = await mkdtemp(join(tmpdir(), 'notify-client-chromium-'));
process.on('exit', () => rmSync(userDataDir, { recursive: true, force: true }));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args,
  timeout: 30000,
  env: { ...process.env, HOME: userDataDir, XDG_CONFIG_HOME: join(userDataDir, '.config'), XDG_CACHE_HOME: join(userDataDir, '.cache') },
});
const quit = async (code) => {
  await context.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true });
  process.exit(code);
};
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (JSON.parse(line).cmd === 'quit') quit(0);
});

try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => say({ event: 'pageerror', message: e.message }));
  await page.exposeFunction('report', (ev) => say(ev));
  await page.goto(new URL('/__notify_test_page__', base).href);

  if (mode === 'longpoll') {
    await page.addScriptTag({ path: join(here, 'node_modules/phoenix/priv/static/phoenix.js') });
    await page.evaluate(([token, user]) => {
      const socket = new Phoenix.Socket('/pubsub', {
        transport: Phoenix.LongPoll,
        params: { token },
        reconnectAfterMs: () => 300,
        rejoinAfterMs: () => 300,
      });
      socket.onOpen(() => report({ event: 'open', transport: socket.transport.name }));
      socket.onClose(() => report({ event: 'close' }));
      socket.connect();
      const channel = socket.channel(`user:${user}`, {});
      channel.on('message', (payload) => report({ event: 'message', payload }));
      channel.join()
        .receive('ok', (state) => report({ event: 'joined', state, longpoll: socket.transport === Phoenix.LongPoll }))
        .receive('error', (resp) => report({ event: 'join_error', resp }));
    }, [token, user]);
  } else {
    await page.evaluate((token) => {
      const es = new EventSource('/notify/sse?authorization=' + encodeURIComponent(token));
      for (const name of ['connect', 'state', 'message', 'close']) {
        es.addEventListener(name, (e) => report({ event: name, data: e.data }));
      }
      es.onopen = () => report({ event: 'open' });
      es.onerror = () => report({ event: 'error', readyState: es.readyState });
    }, token);
  }
  say({ event: 'started' });
} catch (e) {
  say({ event: 'failed', message: String(e && e.message || e) });
  await quit(1);
}
