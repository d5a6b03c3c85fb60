#!/usr/bin/env node
// Resuming clients for test/e2e (TestHistoryRecovery). Each reconnects after
// every close, with jittered backoff, and resumes from the last cursor it saw:
//   ws:      the ws package on /notify/ws?envelope=1, then &since=<cursor>;
//   phoenix: phoenix.js (with ws) joining user:<id> with {"since": <cursor>}
//            (the join params are a function: phoenix.js rejoins by itself);
//   sse:     EventSource in headless Chromium on /notify/sse, resumed by the
//            browser's Last-Event-ID; a new EventSource, when the browser
//            gives up (or could not send a Last-Event-ID), with ?since=.
// Each event is printed as a JSON line
//   {"c":<client>,"ev":"state","since":..,"cursor":..,"recovered":..}
//   {"c":<client>,"ev":"msg","cursor":..,"data":..}
//   {"c":<client>,"ev":"close","code":..,"reason":..}
// and {"ev":"started"} once all are started; a line {"cmd":"quit"} on stdin
// ends it.
//
//   node resume-clients.mjs <config.json>
// config: {"chromium": "/usr/bin/chromium",
//          "clients": [{"kind": "ws"|"phoenix"|"sse", "user": .., "token": .., "base": "http://host:port"}]}
// EventSource clients of one base share a page of that origin: a browser
// opens at most 6 connections to one host:port.

import { readFileSync, rmSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import readline from 'node:readline'
import WebSocket from 'ws'
import { Socket } from 'phoenix'

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const jitter = (ms) => ms / 2 + Math.random() * ms
// As the Go clients: 25ms, 50ms ... 800ms after failed attempts.
const backoff = (fails) => jitter(25 * 2 ** Math.min(Math.max(fails, 1) - 1, 5))
const wsBase = (base) => base.replace(/^http/, 'ws')

function wsClient(i, c) {
  const url = wsBase(c.base) + '/notify/ws?envelope=1'
  let last = ''
  let fails = 0
  let stopped = false
  let ws
  const connect = () => {
    const since = last
    let ready = false
    ws = new WebSocket(since ? `${url}&since=${encodeURIComponent(since)}` : url, {
      headers: { Authorization: `Bearer ${c.token}` },
    })
    ws.on('message', (buf) => {
      let f
      try { f = JSON.parse(buf.toString()) } catch { f = {} }
      if (f.kind === 'connect') return
      if (f.kind === 'state') {
        ready = true
        fails = 0
        if (!last) last = f.cursor || ''
        say({ c: i, ev: 'state', since, cursor: f.cursor || '', recovered: f.recovered ?? null })
      } else if (f.kind === 'message' && f.cursor) {
        last = f.cursor
        say({ c: i, ev: 'msg', cursor: f.cursor, data: f.data })
      } else {
        say({ c: i, ev: 'bad', message: 'unexpected frame ' + buf.toString() })
      }
    })
    ws.on('error', () => {}) // "close" follows
    ws.on('close', (code, reason) => {
      if (ready) say({ c: i, ev: 'close', code, reason: reason.toString() })
      if (stopped) return
      fails = ready ? 0 : fails + 1
      setTimeout(connect, ready ? jitter(50) : backoff(fails))
    })
  }
  connect()
  return () => { stopped = true; ws.close(1000) }
}

function phoenixClient(i, c) {
  let last = ''
  let asked = ''
  const socket = new Socket(wsBase(c.base) + '/pubsub', {
    transport: WebSocket,
    params: { token: c.token },
    timeout: 20000,
    heartbeatIntervalMs: 15000,
    reconnectAfterMs: (tries) => backoff(tries),
    rejoinAfterMs: (tries) => backoff(tries),
  })
  socket.onClose((e) => say({ c: i, ev: 'close', code: e && e.code, reason: e && e.reason }))
  // Evaluated for every join phoenix.js sends, the rejoins included.
  const channel = socket.channel(`user:${c.user}`, () => { asked = last; return { since: last } })
  channel.on('message', (p) => {
    if (!p || !p.cursor) { say({ c: i, ev: 'bad', message: 'push without a cursor ' + JSON.stringify(p) }); return }
    last = p.cursor
    say({ c: i, ev: 'msg', cursor: p.cursor, data: p.data })
  })
  channel.join()
    .receive('ok', (r) => {
      if (!last) last = r.cursor || ''
      say({ c: i, ev: 'state', since: asked, cursor: r.cursor || '', recovered: r.recovered ?? null })
    })
    .receive('error', (r) => say({ c: i, ev: 'join_error', resp: r }))
    .receive('timeout', () => say({ c: i, ev: 'join_timeout' }))
  socket.connect()
  return () => socket.disconnect()
}

// sseClients runs in the page: EventSources of one origin. Every other
// client, once its first EventSource has its state, opens a new one with
// ?since= (as a page that stored its cursor does when it loads): its
// later reconnects carry both that since and a newer Last-Event-ID.
function sseClients(clients) {
  const jitter = (ms) => ms / 2 + Math.random() * ms
  const backoff = (fails) => jitter(25 * 2 ** Math.min(Math.max(fails, 1) - 1, 5))
  for (const { i, token } of clients) {
    let last = ''
    let fails = 0
    let reload = i % 2 === 0
    const open = () => {
      const since = last
      const es = new EventSource('/notify/sse?authorization=' + encodeURIComponent(token) +
        (since ? '&since=' + encodeURIComponent(since) : ''))
      let from = since // where the server is to resume this connection
      let seen = false // an event with an id came: the browser sends it back as Last-Event-ID
      es.addEventListener('state', (e) => {
        const st = JSON.parse(e.data)
        fails = 0
        if (!last) last = st.cursor || ''
        window.report({ c: i, ev: 'state', since: from, cursor: st.cursor || '', recovered: st.recovered ?? null })
        if (reload && last) {
          reload = false
          es.close()
          window.report({ c: i, ev: 'reconnect', how: 'reload with since' })
          open()
        }
      })
      es.addEventListener('message', (e) => {
        last = e.lastEventId
        seen = true
        window.report({ c: i, ev: 'msg', cursor: e.lastEventId, data: e.data })
      })
      es.addEventListener('close', (e) => {
        const d = JSON.parse(e.data)
        window.report({ c: i, ev: 'close', code: d.code, reason: d.reason })
      })
      es.onerror = () => {
        if (es.readyState === EventSource.CONNECTING && (seen || since)) {
          // The browser reconnects by itself (after the stream's retry:),
          // with Last-Event-ID: the id of the last message, else none and
          // the URL's since.
          from = seen ? last : since
          window.report({ c: i, ev: 'reconnect', how: seen ? 'by the browser, Last-Event-ID' : 'by the browser, since' })
          return
        }
        // Given up (an answer other than 200), or it would reconnect
        // knowing nothing: a new one that says where it was.
        es.close()
        fails++
        window.report({ c: i, ev: 'reconnect', how: 'new EventSource with since' })
        setTimeout(open, backoff(fails))
      }
    }
    open()
  }
}

async function startBrowser(list) {
  const { chromium } = await import('playwright-core')
  const userDataDir = await mkdtemp(join(tmpdir(), 'notify-resume-chromium-'))
  process.on('exit', () => rmSync(userDataDir, { recursive: true, force: true }))
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows']
  const byBase = new Map()
  for (const [i, c] of list) {
    if (!byBase.has(c.base)) byBase.set(c.base, [])
    byBase.get(c.base).push({ i, token: c.token })
  }
  const ports = [...byBase.keys()].map((b) => new URL(b).port).filter(Boolean)
  if (ports.length) args.push(`--explicitly-allowed-ports=${ports.join(',')}`)
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: cfg.chromium || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: 60000,
    env: { ...process.env, HOME: userDataDir, XDG_CONFIG_HOME: join(userDataDir, '.config'), XDG_CACHE_HOME: join(userDataDir, '.cache') },
  })
  await context.exposeFunction('report', (ev) => say(ev))
  let first = context.pages()[0]
  for (const [base, clients] of byBase) {
    const page = first || (await context.newPage())
    first = null
    page.on('pageerror', (e) => say({ ev: 'pageerror', message: e.message }))
    await page.goto(new URL('/__notify_test_page__', base).href)
    await page.evaluate(sseClients, clients)
  }
  return () => context.close()
}

const stops = []
try {
  const sse = []
  cfg.clients.forEach((c, i) => {
    if (c.kind === 'ws') stops.push(wsClient(i, c))
    else if (c.kind === 'phoenix') stops.push(phoenixClient(i, c))
    else if (c.kind === 'sse') sse.push([i, c])
    else throw new Error('unknown kind ' + c.kind)
  })
  if (sse.length) stops.push(await startBrowser(sse))
  say({ ev: 'started' })
} catch (e) {
  say({ ev: 'failed', message: String((e && e.stack) || e) })
  process.exit(1)
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (JSON.parse(line).cmd !== 'quit') return
  await Promise.all(stops.map((s) => Promise.resolve(s()).catch(() => {})))
  process.exit(0)
})
