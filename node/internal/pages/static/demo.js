// notify demo page: connect to /notify/ws as the user of a token, show the
// connect and state frames and every message, and publish through the Twirp
// API. Plain browser JavaScript, no build step, no dependencies.
//
// Everything displayed is set with textContent and DOM nodes built here:
// message content, close reasons and server errors are shown as text, never
// parsed as HTML (node/pages_test.go checks the script for HTML sinks).
//
// Storage: the API key is remembered in localStorage, a convenience for a
// dev page (clearing the field forgets it). The token is never stored by the
// page: it is a user's credential, and it arrives in the page's own URL
// (?token=, as make run prints it) or is pasted.
'use strict';

(() => {
  const BACKOFF_MIN_MS = 500;   // first reconnect delay
  const BACKOFF_MAX_MS = 15000; // delays double up to this
  const JITTER = 0.2;           // each delay is spread ±20%
  const MAX_LOG = 500;          // log entries kept
  const MAX_HEX = 1024;         // bytes of a binary frame shown
  const KEY_STORE = 'notify-demo.apiKey';
  const PUBLISH_PATH = '/twirp/notify.NotifyService/Publish';
  const AUTH_PATH = '/twirp/notify.NotifyService/Auth';

  const $ = (id) => document.getElementById(id);
  const ui = {
    connectForm: $('connect-form'), token: $('token'), tokenInfo: $('token-info'), topics: $('topics'),
    connect: $('connect'), disconnect: $('disconnect'), status: $('status'),
    user: $('user'), joined: $('joined'), state: $('state'), stateHint: $('state-hint'),
    publishForm: $('publish-form'), apikey: $('apikey'), pubTopics: $('pub-topics'), targetUser: $('target-user'),
    message: $('message'), publish: $('publish'), publishResult: $('publish-result'), curl: $('publish-curl'),
    log: $('log'), logEmpty: $('log-empty'), clear: $('clear'),
  };

  // ---- connection state ----
  let ws = null;          // the current socket, or null
  let gen = 0;            // bumped by every Connect/Disconnect: stale callbacks check it
  let wanted = false;     // the user asked for a connection (and it was not ended for good)
  let attempt = 0;        // failed attempts since the last good connection
  let failures = 0;       // handshakes failed in a row (the first one is explained)
  let retryTimer = 0;
  let tickTimer = 0;
  let userID = null;      // from the connect frame
  let token = '';         // the token of the current connection
  let topics = [];        // the topics of the current connection

  // ---- small helpers ----
  const splitList = (s) => s.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function clock(d) {
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  // log adds an entry at the top. body is a string or a DOM node.
  function log(kind, body, label = kind) {
    const li = document.createElement('li');
    li.dataset.kind = kind;
    const now = new Date();
    const time = document.createElement('time');
    time.dateTime = now.toISOString();
    time.textContent = clock(now);
    const k = document.createElement('span');
    k.className = 'kind';
    k.textContent = label;
    const b = document.createElement('div');
    b.className = 'body';
    if (typeof body === 'string') {
      const pre = document.createElement('pre');
      pre.textContent = body;
      b.append(pre);
    } else {
      b.append(body);
    }
    li.append(time, k, b);
    ui.log.prepend(li);
    while (ui.log.childElementCount > MAX_LOG) ui.log.lastElementChild.remove();
    ui.logEmpty.hidden = true;
  }

  function pre(text, cls) {
    const p = document.createElement('pre');
    if (cls) p.className = cls;
    p.textContent = text;
    return p;
  }

  // A text frame: pretty-printed when it is a JSON object or array. When
  // re-encoding would not give back the exact text (spacing, huge numbers,
  // repeated keys), the raw text is one click away.
  function textBody(data) {
    let v;
    try { v = JSON.parse(data); } catch { return pre(data); }
    if (v === null || typeof v !== 'object') return pre(data);
    const frag = document.createDocumentFragment();
    frag.append(pre(JSON.stringify(v, null, 2)));
    if (JSON.stringify(v) !== data) {
      const d = document.createElement('details');
      const s = document.createElement('summary');
      s.textContent = 'raw';
      d.append(s, pre(data));
      frag.append(d);
    }
    return frag;
  }

  // A binary frame as a hex dump: offset, 16 bytes a line.
  function hexDump(buf) {
    const bytes = new Uint8Array(buf);
    const n = Math.min(bytes.length, MAX_HEX);
    const lines = [`${bytes.length} byte${bytes.length === 1 ? '' : 's'}`];
    for (let off = 0; off < n; off += 16) {
      const row = [];
      for (let i = off; i < Math.min(off + 16, n); i++) row.push(bytes[i].toString(16).padStart(2, '0'));
      lines.push(`${off.toString(16).padStart(4, '0')}  ${row.join(' ')}`);
    }
    if (bytes.length > n) lines.push(`… ${bytes.length - n} more bytes`);
    return lines.join('\n');
  }

  // ---- the token: decoded here only to help (the server verifies it) ----
  function decodeJWT(t) {
    const parts = t.split('.');
    if (parts.length !== 3) return null;
    try {
      let s = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      s = s.padEnd(Math.ceil(s.length / 4) * 4, '=');
      const bin = atob(s);
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
      return claims && typeof claims === 'object' ? claims : null;
    } catch {
      return null;
    }
  }

  function ago(ms) {
    const s = Math.round(Math.abs(ms) / 1000);
    if (s < 90) return `${s} s`;
    const m = Math.round(s / 60);
    if (m < 90) return `${m} min`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h} h ${m % 60} min` : `${Math.round(h / 24)} days`;
  }

  function showTokenInfo() {
    const t = ui.token.value.trim();
    ui.tokenInfo.dataset.bad = 'false';
    if (!t) {
      ui.tokenInfo.textContent = 'Paste a token, or open this page as /?token=<jwt>.';
      return;
    }
    const c = decodeJWT(t);
    if (!c) {
      ui.tokenInfo.dataset.bad = 'true';
      ui.tokenInfo.textContent = 'This does not look like a JWT (three base64url parts separated by dots).';
      return;
    }
    const bits = [];
    if (c.user_id !== undefined) bits.push(`user_id ${c.user_id}`);
    if (typeof c.exp === 'number') {
      const left = c.exp * 1000 - Date.now();
      if (left <= 0) {
        ui.tokenInfo.dataset.bad = 'true';
        bits.push(`expired ${ago(left)} ago`);
      } else {
        bits.push(`expires in ${ago(left)}`);
      }
    } else {
      bits.push('no expiry');
    }
    if (Array.isArray(c.topics) && c.topics.length) bits.push(`topics ${c.topics.join(', ')}`);
    ui.tokenInfo.textContent = `${bits.join(' · ')} (read here, not verified: the server checks it)`;
  }

  // ---- the WebSocket ----
  function wsURL() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let u = `${proto}//${location.host}/notify/ws?authorization=${encodeURIComponent(token)}`;
    if (topics.length) u += `&topic=${encodeURIComponent(topics.join(','))}`;
    return u;
  }

  function connect() {
    const t = ui.token.value.trim();
    if (!t) {
      setStatus('closed', 'no token');
      log('error', 'Paste a token first (see "No token?").');
      ui.token.focus();
      return;
    }
    gen++;
    stopTimers();
    dropSocket();
    token = t;
    topics = splitList(ui.topics.value);
    wanted = true;
    attempt = failures = 0;
    ui.disconnect.disabled = false;
    open();
  }

  function disconnect() {
    gen++;
    wanted = false;
    stopTimers();
    ui.disconnect.disabled = true;
    if (ws) {
      setStatus('connecting', 'closing…');
      ws.close(1000, 'closed by the page');
    } else {
      setStatus('closed', 'not connected');
    }
  }

  // dropSocket forgets the current socket (its events are then ignored) and closes it.
  function dropSocket() {
    if (!ws) return;
    const old = ws;
    ws = null;
    try { old.close(1000, 'reconnecting'); } catch { /* already closed */ }
  }

  function stopTimers() {
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    retryTimer = tickTimer = 0;
  }

  function open() {
    setStatus('connecting', attempt ? `connecting (attempt ${attempt + 1})…` : 'connecting…');
    userID = null;
    ui.user.textContent = '—';
    ui.targetUser.textContent = '(connecting…)';
    ui.joined.textContent = topics.length ? topics.join(', ') : 'none';
    ui.state.textContent = '—';
    ui.stateHint.textContent = '';
    let sock;
    try {
      sock = new WebSocket(wsURL());
    } catch (e) {
      wanted = false;
      setStatus('closed', 'cannot connect');
      log('error', `Cannot open the WebSocket: ${e.message}`);
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    let frames = 0;
    let opened = false;
    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      setStatus('open', 'open');
      log('open', `WebSocket open: ${location.host}/notify/ws${topics.length ? ` (topics ${topics.join(', ')})` : ''}`);
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      onFrame(frames++, ev.data);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      onClose(ev, opened);
    };
  }

  // Frames 0 and 1 of a connection are the connect and state frames; every
  // other frame is a published payload, whatever it looks like.
  function onFrame(i, data) {
    if (typeof data !== 'string') {
      log('binary', hexDump(data));
      return;
    }
    let v = null;
    try { v = JSON.parse(data); } catch { /* a plain text message */ }
    if (i === 0 && v && v.kind === 'connect' && typeof v.userID === 'string') {
      userID = v.userID;
      attempt = failures = 0; // a good connection: the next outage starts the backoff over
      ui.user.textContent = userID;
      ui.targetUser.textContent = `(user ${userID})`;
      updateCurl();
      log('connect', textBody(data));
      return;
    }
    if (i === 1 && v && v.kind === 'state' && v.state && typeof v.state === 'object') {
      ui.state.textContent = JSON.stringify(v.state, null, 2);
      ui.stateHint.textContent = Object.keys(v.state).length ? '' :
        `Empty. Fields set with the API's SetState (or redis-cli HSET notify:${userID || '<user>'}:state field value) ` +
        'come with the next connect.';
      log('state', textBody(data));
      return;
    }
    log('text', textBody(data));
  }

  const closeMeaning = {
    1000: 'normal close (or idle timeout)',
    1001: 'going away',
    1002: 'protocol error',
    1006: 'connection lost',
    1007: 'invalid UTF-8',
    1009: 'frame too big',
    1011: 'server error',
    1012: 'node restarting or moved: reconnect',
    4001: 'token expired',
    4003: 'disconnected by the server',
    4008: 'slow consumer: the page read too slowly',
  };

  function closeText(ev) {
    const m = closeMeaning[ev.code];
    return `closed ${ev.code}${ev.reason ? ` "${ev.reason}"` : ''}${m && m !== ev.reason ? ` (${m})` : ''}`;
  }

  function onClose(ev, opened) {
    ui.targetUser.textContent = '(connect first)';
    if (!wanted) {
      setStatus('closed', `closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ''}`);
      log('close', `${closeText(ev)}: you disconnected.`);
      return;
    }
    if (ev.code === 4001) {
      endForGood(`closed 4001: token expired`);
      log('close', `${closeText(ev)}. The token's exp has passed: get a new one ` +
        '(notify token --user <id>) and connect again. Not reconnecting.');
      return;
    }
    if (ev.code === 4003) {
      endForGood(`closed 4003 ${ev.reason || 'disconnected'}`);
      log('close', `${closeText(ev)}: the server API disconnected this user. Not reconnecting.`);
      return;
    }
    if (opened) {
      log('close', closeText(ev));
      scheduleRetry(`closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ''}`);
      return;
    }
    // Never opened: the handshake was refused or the server is unreachable.
    // Browsers hide the HTTP answer (the code is always 1006), so ask the
    // public Auth method whether the token is the reason.
    const g = gen;
    setStatus('connecting', 'connection failed, checking the token…');
    tokenProblem(token).then((problem) => {
      if (g !== gen || !wanted) return;
      if (problem) {
        endForGood('token refused');
        log('error', `The server refused the token: ${problem}. Paste another token. Not reconnecting.`);
        return;
      }
      if (failures++ > 0) {
        log('close', `Connection failed again (${ev.code}).`);
      } else if (problem === null) {
        log('close', `Connection failed (${ev.code}) and the token check got no answer: ` +
          'the server is down, restarting or draining.');
      } else {
        log('close', `Connection failed (${ev.code}). The token is valid, so: the node is draining, ` +
          `its state store is down, or the Origin or a topic is not allowed${topicHint()}.`);
      }
      scheduleRetry(`connection failed (${ev.code})`);
    });
  }

  function topicHint() {
    const allowed = (decodeJWT(token) || {}).topics;
    const bad = topics.filter((t) => !(Array.isArray(allowed) && allowed.includes(t)));
    if (!bad.length) return '';
    return ` (the token's topics claim does not list ${bad.join(', ')}: allowed only with NOTIFY_OPEN_TOPICS=true)`;
  }

  // tokenProblem asks the public Auth method about the token: the server's
  // reason for refusing it, '' when it is valid, null when there was no
  // answer (server down, draining).
  async function tokenProblem(t) {
    try {
      const res = await fetch(AUTH_PATH, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ authorization: t }),
        signal: AbortSignal.timeout(5000),
      });
      if (res.ok) return '';
      if (res.status !== 401) return null;
      const body = await res.json().catch(() => ({}));
      return String(body.msg || 'unauthenticated');
    } catch {
      return null;
    }
  }

  function endForGood(status) {
    wanted = false;
    stopTimers();
    ui.disconnect.disabled = true;
    setStatus('closed', status);
  }

  // Exponential backoff with jitter: 0.5 s, 1 s, 2 s … 15 s, each ±20%.
  function scheduleRetry(why) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    const delay = Math.round(base * (1 + JITTER * (2 * Math.random() - 1)));
    attempt++;
    const at = Date.now() + delay;
    const g = gen;
    const tick = () => {
      const left = Math.max(0, at - Date.now());
      setStatus('waiting', `${why} · reconnecting in ${(left / 1000).toFixed(1)} s`);
    };
    stopTimers();
    tick();
    tickTimer = setInterval(tick, 100);
    retryTimer = setTimeout(() => {
      stopTimers();
      if (g === gen && wanted) open();
    }, delay);
  }

  // Back online: do not wait out the backoff.
  window.addEventListener('online', () => {
    if (wanted && !ws && retryTimer) {
      stopTimers();
      open();
    }
  });

  // ---- publishing through the Twirp API ----
  function target() {
    return document.querySelector('input[name="target"]:checked').value;
  }

  function publishBody() {
    const body = {};
    if (target() === 'topics') body.topics = splitList(ui.pubTopics.value);
    else body.user_ids = [userID || '<user id>'];
    body.text = ui.message.value;
    return body;
  }

  function updateCurl() {
    const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
    ui.curl.textContent = [
      `curl ${location.origin}${PUBLISH_PATH} \\`,
      "  -H 'Content-Type: application/json' \\",
      '  -H "Authorization: Bearer $NOTIFY_API_KEY" \\',
      `  -d ${q(JSON.stringify(publishBody()))}`,
    ].join('\n');
  }

  function setResult(ok, text) {
    ui.publishResult.dataset.ok = ok === null ? '' : String(ok);
    ui.publishResult.textContent = text;
  }

  function rememberKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch { /* storage disabled: fine */ }
  }

  async function publish() {
    const key = ui.apikey.value.trim();
    rememberKey(key);
    const body = publishBody();
    if (body.user_ids && !userID) {
      setResult(false, 'Connect first: the user id comes from the connect frame.');
      return;
    }
    if (body.topics && !body.topics.length) {
      setResult(false, 'Name at least one topic.');
      ui.pubTopics.focus();
      return;
    }
    const headers = { 'Content-Type': 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    setResult(null, 'publishing…');
    ui.publish.disabled = true;
    try {
      const res = await fetch(PUBLISH_PATH, { method: 'POST', headers, body: JSON.stringify(body) });
      const out = await res.json().catch(() => null);
      if (res.ok) {
        // protojson leaves out zero values: {} means 0 targets.
        const n = Number((out && out.targets) || 0);
        const to = body.user_ids ? `user ${body.user_ids[0]}` : `topics ${body.topics.join(', ')}`;
        setResult(true, `Published to ${n} channel${n === 1 ? '' : 's'}.`);
        log('publish', `published ${new TextEncoder().encode(body.text).length} bytes to ${to}`, 'sent');
      } else if (out && out.code) {
        setResult(false, `${out.code}: ${out.msg || ''}`);
      } else {
        setResult(false, `HTTP ${res.status} ${res.statusText}`);
      }
    } catch (e) {
      setResult(false, `network error: ${e.message}`);
    } finally {
      ui.publish.disabled = false;
    }
  }

  // ---- wiring ----
  ui.connectForm.addEventListener('submit', (e) => { e.preventDefault(); connect(); });
  ui.disconnect.addEventListener('click', disconnect);
  ui.token.addEventListener('input', showTokenInfo);
  ui.token.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); ui.connectForm.requestSubmit(); }
  });
  ui.apikey.addEventListener('change', () => rememberKey(ui.apikey.value.trim()));
  ui.publishForm.addEventListener('submit', (e) => { e.preventDefault(); publish(); });
  ui.publishForm.addEventListener('input', updateCurl);
  ui.publishForm.addEventListener('change', () => {
    ui.pubTopics.disabled = target() !== 'topics';
    updateCurl();
  });
  ui.clear.addEventListener('click', () => {
    ui.log.replaceChildren();
    ui.logEmpty.hidden = false;
  });

  try { ui.apikey.value = localStorage.getItem(KEY_STORE) || ''; } catch { /* storage disabled */ }
  const params = new URLSearchParams(location.search);
  ui.token.value = params.get('token') || '';
  ui.topics.value = params.get('topic') || '';
  showTokenInfo();
  updateCurl();
  // A token in the URL (as make run prints it): connect at once.
  if (ui.token.value.trim()) connect();
})();
