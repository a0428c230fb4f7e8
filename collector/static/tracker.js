/* CRM tracker: ClientID, localStorage queue, batching, retry. No dependencies.
 * <script async src="https://COLLECTOR/v1/tracker.js" data-write-key="KEY"></script>
 * data-endpoint (default: this file's origin), data-auto="false" (no automatic page_view).
 * crm.init({writeKey, endpoint, auto}), track(event, fields), page(fields),
 * identify(userId, {email, phone}), reset(), flush(). A stub's calls (window.crm = [[name, ...args]])
 * are replayed. */
((w, d, nav) => {
  'use strict';
  const old = w.crm;
  if (old && old.clientId) return; // already loaded

  const CID = '_crm_cid', UID = '_crm_uid', Q = '_crm_q';
  const MAX_Q = 500, BATCH = 20, DELAY = 1000, MAX_CHARS = 20000;
  const cfg = {};
  let maxSend = 50, mem = [], busy = false, timer = 0, timerAt = 0, retryAt = 0, fails = 0, ls;
  try { ls = w.localStorage; } catch (e) { /* blocked: memory only */ }

  const get = (k) => { try { return ls.getItem(k); } catch (e) { return null; } };
  const set = (k, v) => { try { v == null ? ls.removeItem(k) : ls.setItem(k, v); } catch (e) { /* full */ } };

  const uuid = () => {
    const c = w.crypto, b = new Uint8Array(16);
    if (c && c.randomUUID) return c.randomUUID();
    if (c && c.getRandomValues) c.getRandomValues(b);
    else b.forEach((_, i) => { b[i] = Math.random() * 256; });
    b[6] = (b[6] & 15) | 64; // version 4
    b[8] = (b[8] & 63) | 128; // RFC 4122 variant
    return Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('')
      .replace(/(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
  };

  // ClientID: kept in a first-party cookie AND localStorage; whichever survives restores the other.
  const m = d.cookie.match(/(?:^|; )_crm_cid=([^;]+)/);
  const cid = (m && decodeURIComponent(m[1])) || get(CID) || uuid();
  set(CID, cid);
  d.cookie = CID + '=' + encodeURIComponent(cid) + '; max-age=63072000; path=/; SameSite=Lax' +
    (location.protocol === 'https:' ? '; Secure' : '');
  let uid = get(UID);

  // The queue is in localStorage so that unsent events survive page loads; `mem` is the fallback.
  const readQ = () => {
    try { const v = JSON.parse(ls.getItem(Q)); mem = Array.isArray(v) ? v : []; } catch (e) { /* mem */ }
    return mem;
  };
  const writeQ = (q) => { mem = q.slice(-MAX_Q); set(Q, JSON.stringify(mem)); }; // oldest dropped
  const remove = (sent) => {
    const ids = new Set(sent.map((e) => e.event_id));
    writeQ(readQ().filter((e) => !ids.has(e.event_id)));
  };
  // The head of the queue, small enough for one request (keepalive/beacon bodies stop at 64 KB).
  const take = (q) => {
    const out = [];
    let n = 0;
    for (const e of q) {
      n += JSON.stringify(e).length + 1;
      if (out.length >= maxSend || (out.length && n > MAX_CHARS)) break;
      out.push(e);
    }
    return out;
  };
  const url = () => cfg.endpoint + '/v1/events?write_key=' + encodeURIComponent(cfg.writeKey);

  const schedule = (ms) => {
    const at = Math.max(Date.now() + ms, retryAt);
    if (timer && at >= timerAt) return;
    clearTimeout(timer);
    timerAt = at;
    timer = setTimeout(flush, at - Date.now());
  };

  // Send the head of the queue; events leave the queue only once the collector has answered.
  const flush = async () => {
    timer = 0;
    const batch = busy || !cfg.writeKey ? [] : take(readQ());
    if (!batch.length) return;
    const body = JSON.stringify(batch);
    let wait = -1; // <0: back off, 0: done, >0: the server's Retry-After in ms
    busy = true; // one request at a time per page, so two flushes never send the same events
    try {
      const r = await fetch(url(), {
        // keepalive (the request outlives the page) allows 64 KB: 21000 chars of up to 3 bytes.
        method: 'POST', body, keepalive: body.length < 21000, credentials: 'omit',
        headers: { 'Content-Type': 'text/plain;charset=UTF-8' }
      });
      const s = r.status;
      if (s === 413 && batch.length > 1) { maxSend = Math.ceil(batch.length / 2); wait = 0; }
      // Accepted (its rejected items can never succeed either), bad body, bad key, too large: drop.
      else if ((s >= 200 && s < 300) || s === 400 || s === 401 || s === 413) {
        remove(batch);
        wait = 0;
        if (s < 300) r.json().then((j) => j.rejected.length && console.warn('crm:', j.rejected))
          .catch(() => 0);
      }
      else wait = +r.headers.get('Retry-After') * 1000 || -1; // 5xx, 429...: keep, retry later
    } catch (e) { /* network error, collector down, CORS refused: keep, retry */ }
    busy = false;
    fails = wait ? fails + 1 : 0;
    retryAt = !wait ? 0 : Date.now() +
      (wait > 0 ? wait : Math.min(60000, 500 * 2 ** fails) * (0.5 + Math.random()));
    if (readQ().length) schedule(0);
  };

  // Leaving the page: hand the queue to sendBeacon. It gives no answer, so the events stay queued
  // and go again on the next page load; the collector stores each event_id once.
  const beacon = () => {
    if (!cfg.writeKey || !nav.sendBeacon) return;
    for (let q = readQ(), b; q.length; q = q.slice(b.length)) {
      b = take(q);
      if (!nav.sendBeacon(url(), JSON.stringify(b))) break; // a string goes as text/plain;charset=UTF-8
    }
  };

  // The browser's IANA zone, read per event (a laptop travels); undefined is left out by JSON.
  // ICU's 'Etc/Unknown' (zone not resolved) would get the event rejected: send none instead.
  const zone = () => {
    try {
      const z = Intl.DateTimeFormat().resolvedOptions().timeZone;
      return z !== 'Etc/Unknown' ? z : undefined;
    } catch (e) { return undefined; }
  };

  const track = (event, fields) => {
    // The JSON round trip copies the fields and throws here, not in the queue, on a cyclic value.
    const e = JSON.parse(JSON.stringify(Object.assign({}, fields, {
      event, event_id: uuid(), timestamp: new Date().toISOString(), client_id: cid, device_type: 'web',
      timezone: zone()
    })));
    if (uid && !e.user_id) e.user_id = uid;
    const q = readQ();
    q.push(e);
    writeQ(q);
    schedule(q.length >= BATCH ? 0 : DELAY);
    return e.event_id;
  };

  const api = {
    init(o = {}) {
      cfg.writeKey = o.writeKey || cfg.writeKey;
      cfg.endpoint = (o.endpoint || cfg.endpoint || '').replace(/\/+$/, '');
      if (o.auto !== false && !cfg.paged) api.page();
      schedule(0); // events left by earlier pages
    },
    track,
    page(fields) {
      cfg.paged = 1;
      return track('page_view', Object.assign({ page_url: location.href, referrer: d.referrer }, fields));
    },
    identify(userId, traits) {
      if (userId == null || userId === '') return null;
      uid = String(userId);
      set(UID, uid);
      return track('user_login', Object.assign({}, traits, { user_id: uid, auth_status: 1 }));
    },
    reset() { // logout
      const id = track('user_logout');
      uid = null;
      set(UID, null);
      return id;
    },
    flush,
    clientId: () => cid,
    userId: () => uid,
    push: (a) => api[a[0]] && api[a[0]](...[].slice.call(a, 1))
  };
  w.crm = api;

  w.addEventListener('pagehide', beacon);
  d.addEventListener('visibilitychange', () => d.visibilityState === 'hidden' && beacon());
  w.addEventListener('online', () => { retryAt = 0; schedule(0); });

  // Configuration from our own <script> tag.
  const el = d.currentScript || d.querySelector('script[data-write-key]');
  if (el && el.src) cfg.endpoint = new URL(el.src, location.href).origin;
  const key = el && el.getAttribute('data-write-key');
  if (key) {
    const attr = (name) => el.getAttribute('data-' + name);
    api.init({ writeKey: key, endpoint: attr('endpoint'), auto: attr('auto') !== 'false' });
  }
  if (Array.isArray(old)) old.forEach(api.push); // replay the stub's queued calls
})(window, document, navigator);
