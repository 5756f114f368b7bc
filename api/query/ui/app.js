// The auditlog Compliance UI: search, resource history and event pages whose proofs this browser
// verifies itself (verify.js). Plain ES module, no framework, no build step. Routes (hash):
//
//   #/search?tenant=T&actor_id=&action=&resource_type=&resource_id=&result=&start_time=&end_time=&limit=
//   #/event/<tenant>/<event_id>
//   #/history/<tenant>/<resource type>/<resource id>
//
// All data is put on the page with textContent, never as HTML.

import {
  checkWitnesses,
  cosignatureTime,
  parseCheckpoint,
  parseSignedNote,
  parseTlogProof,
  parseVerifierKey,
  parseWitnessKey,
  verifyEvent,
  verifyNoteSignature,
  hex,
  b64decode,
} from './verify.js';

const KEY_STORE = 'auditlog.apiKey';
const TENANT_STORE = 'auditlog.tenant';
const PAGER_STORE = 'auditlog.pagers';
const PIN_STORE = 'auditlog.pinnedVerifierKey';
const WITNESS_PIN_STORE = 'auditlog.pinnedWitnessKeys'; // JSON array of cosignature/v1 verifier keys
const MIN_WITNESS_STORE = 'auditlog.minWitnesses'; // a whole number; absent: every trusted witness
const FILTERS = ['actor_id', 'action', 'resource_type', 'resource_id', 'result', 'start_time', 'end_time'];
const PAGE_SIZES = ['25', '50', '100', '250'];
const DEFAULT_LIMIT = '50';
const STATUS_TEXT = {
  0: 'Network error', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  409: 'Conflict', 429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout',
};

const view = document.getElementById('view');
let generation = 0; // bumped on every route; stale async work checks it before touching the page
let blobUrls = [];

// ---- small DOM helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function enc(s) {
  return encodeURIComponent(String(s));
}

function eventHref(tenant, eventId) {
  return `#/event/${enc(tenant)}/${enc(eventId)}`;
}

function historyHref(tenant, type, id) {
  return `#/history/${enc(tenant)}/${enc(type)}/${enc(id)}`;
}

function searchHref(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
  return `#/search?${qs}`;
}

function show(value) {
  if (value === null || value === undefined) return el('span', { class: 'sealed', text: '—' });
  if (typeof value === 'string' && /^\[[a-z ]+\]$/.test(value)) return el('span', { class: 'sealed', text: value });
  if (typeof value === 'object') return el('pre', { class: 'mono', text: JSON.stringify(value, null, 2) });
  return document.createTextNode(String(value));
}

// ---- the API key, tenant and pinned verifier key -----------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || '';
}

function setupKeyForm() {
  const input = document.getElementById('api-key');
  const form = document.getElementById('key-form');
  input.value = apiKey();
  const save = () => {
    const v = input.value.trim();
    if (v) sessionStorage.setItem(KEY_STORE, v);
    else sessionStorage.removeItem(KEY_STORE);
    form.classList.toggle('missing', !v);
  };
  input.addEventListener('input', save);
  input.addEventListener('change', save);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    save();
    route();
  });
  document.getElementById('forget-key').addEventListener('click', () => {
    input.value = '';
    save();
  });
  form.classList.toggle('missing', !apiKey());

  const pinInput = document.getElementById('pinned-key');
  const pinStatus = document.getElementById('pin-status');
  const showPin = () => {
    const pinned = localStorage.getItem(PIN_STORE);
    pinInput.value = pinned || '';
    pinStatus.textContent = pinned ? 'pinned: events are verified against this key' : 'not pinned: the API\'s key is used';
  };
  document.getElementById('pin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = pinInput.value.trim();
    if (!v) return;
    try {
      await parseVerifierKey(v);
    } catch (err) {
      pinStatus.textContent = `not pinned: ${err.message}`;
      return;
    }
    localStorage.setItem(PIN_STORE, v);
    showPin();
    route();
  });
  document.getElementById('unpin').addEventListener('click', () => {
    localStorage.removeItem(PIN_STORE);
    showPin();
    route();
  });
  showPin();
}

// Witness keys are pinned the same way, in localStorage; several may be. Pinned ones replace the
// API's list (like the log key), and the required number of valid cosignatures defaults to all.

function pinnedWitnesses() {
  try {
    const list = JSON.parse(localStorage.getItem(WITNESS_PIN_STORE) || '[]');
    return Array.isArray(list) ? list.filter((k) => typeof k === 'string' && k) : [];
  } catch {
    return [];
  }
}

function savePinnedWitnesses(list) {
  if (list.length) localStorage.setItem(WITNESS_PIN_STORE, JSON.stringify(list));
  else localStorage.removeItem(WITNESS_PIN_STORE);
}

async function pinWitness(vkey) {
  const key = await parseWitnessKey(vkey); // throws VerifyError with the reason
  const list = pinnedWitnesses().filter((k) => k.trim() !== key.text);
  list.push(key.text);
  savePinnedWitnesses(list);
  return key;
}

function unpinWitness(vkey) {
  savePinnedWitnesses(pinnedWitnesses().filter((k) => k !== vkey));
}

function minWitnesses() {
  const v = localStorage.getItem(MIN_WITNESS_STORE);
  return v !== null && /^[0-9]{1,3}$/.test(v) ? Number(v) : null;
}

function setupWitnessForm() {
  const input = document.getElementById('witness-key');
  const status = document.getElementById('witness-pin-status');
  const list = document.getElementById('pinned-witnesses');
  const min = document.getElementById('min-witnesses');
  const showPins = () => {
    clear(list);
    const pins = pinnedWitnesses();
    for (const k of pins) {
      list.append(el('li', { dataset: { witnessKey: k } }, el('code', { text: k }), ' ',
        el('button', { type: 'button', class: 'unpin-witness', text: 'Unpin', onclick: () => { unpinWitness(k); showPins(); route(); } })));
    }
    if (!pins.length) list.append(el('li', { class: 'muted', text: 'none pinned: the witness keys the API lists are used' }));
    const m = minWitnesses();
    min.value = m === null ? '' : String(m);
  };
  document.getElementById('witness-pin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = input.value.trim();
    if (!v) return;
    try {
      const key = await pinWitness(v);
      status.textContent = `pinned ${key.name}`;
      input.value = '';
    } catch (err) {
      status.textContent = `not pinned: ${err.message}`;
      return;
    }
    showPins();
    route();
  });
  min.addEventListener('change', () => {
    const v = min.value.trim();
    if (v === '') localStorage.removeItem(MIN_WITNESS_STORE);
    else if (/^[0-9]{1,3}$/.test(v)) localStorage.setItem(MIN_WITNESS_STORE, String(Number(v)));
    else {
      status.textContent = 'the required number of witnesses must be a whole number (empty: all trusted witnesses)';
      return;
    }
    status.textContent = '';
    showPins();
    route();
  });
  window.addEventListener('storage', showPins);
  showPins();
}

// ---- API access ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, statusText, error, parameter) {
    super(error);
    this.status = status;
    this.statusText = statusText || STATUS_TEXT[status] || '';
    this.error = error;
    this.parameter = parameter || null;
  }

  describe() {
    const head = this.status ? `${this.status} ${this.statusText}`.trim() : 'Network error';
    let text = `${head}: ${this.error}`;
    if (this.parameter) text += ` (parameter: ${this.parameter})`;
    if (this.status === 401) text += ' — enter a valid API key at the top right.';
    if (this.status === 403) text += ' — this API key may not read that tenant.';
    return text;
  }
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  const headers = { Accept: 'application/json' };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(url, { headers, cache: 'no-store', credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, 'Network error', `could not reach the API (${e.message})`);
  }
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    let error = body && typeof body.error === 'string' ? body.error : null;
    if (!error && body && body.detail) error = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    if (!error) error = text.trim().slice(0, 300) || res.statusText || 'request failed';
    throw new ApiError(res.status, res.statusText, error, body && body.parameter);
  }
  if (body === null || typeof body !== 'object') throw new ApiError(res.status, res.statusText, 'the response is not a JSON object');
  return body;
}

function errorBox(err, id) {
  const box = el('div', { class: 'error', role: 'alert', id });
  if (err instanceof ApiError) {
    box.dataset.status = String(err.status);
    box.append(el('strong', { text: `${err.status ? `${err.status} ${err.statusText}`.trim() : 'Network error'}:` }));
    let text = err.error;
    if (err.parameter) text += ` (parameter: ${err.parameter})`;
    if (err.status === 401) text += ' — enter a valid API key at the top right.';
    if (err.status === 403) text += ' — this API key may not read that tenant.';
    box.append(` ${text}`);
  } else {
    box.append(el('strong', { text: 'Error:' }), ` ${err && err.message ? err.message : err}`);
  }
  return box;
}

// ---- pagination: a stack of cursors per query --------------------------------------------------

function loadPagers() {
  try {
    return JSON.parse(sessionStorage.getItem(PAGER_STORE) || '{}');
  } catch {
    return {};
  }
}

function getPager(key) {
  const all = loadPagers();
  const p = all[key];
  return p && Array.isArray(p.stack) ? p : { stack: [], cursor: null };
}

function savePager(key, pager) {
  const all = { [key]: pager }; // one query remembered at a time per tab is enough
  const prev = loadPagers();
  for (const k of Object.keys(prev).slice(-4)) if (k !== key) all[k] = prev[k];
  sessionStorage.setItem(PAGER_STORE, JSON.stringify(all));
}

function resetPager(key) {
  savePager(key, { stack: [], cursor: null });
}

/**
 * Loads one page for `pagerKey` with `load(cursor)` and renders it with `render(page)`, with
 * previous/next buttons walking the cursor stack. Returns after the first page is shown.
 */
async function paged(container, pagerKey, load, render, gen) {
  const pager = getPager(pagerKey);
  const status = el('div', { class: 'status-line' });
  const body = el('div');
  container.append(status, body);

  async function show() {
    clear(status);
    clear(body);
    body.append(el('div', { class: 'loading', text: 'Loading…' }));
    let page;
    try {
      page = await load(pager.cursor);
    } catch (err) {
      if (gen !== generation) return;
      clear(body);
      body.append(errorBox(err, 'api-error'));
      // a stale cursor is no reason to strand the user: offer the first page
      if (pager.cursor) {
        status.append(el('button', {
          type: 'button', text: 'First page',
          onclick: () => { pager.stack = []; pager.cursor = null; savePager(pagerKey, pager); show(); },
        }));
      }
      return;
    }
    if (gen !== generation) return;
    savePager(pagerKey, pager);
    clear(body);
    const records = Array.isArray(page.records) ? page.records : [];
    const pageNo = pager.stack.length + 1;
    const prev = el('button', { id: 'prev-page', type: 'button', text: '← Previous', disabled: pager.stack.length === 0 });
    const next = el('button', { id: 'next-page', type: 'button', text: 'Next →', disabled: !page.next_cursor });
    prev.addEventListener('click', () => {
      if (!pager.stack.length) return;
      pager.cursor = pager.stack.pop();
      show();
    });
    next.addEventListener('click', () => {
      if (!page.next_cursor) return;
      pager.stack.push(pager.cursor);
      pager.cursor = page.next_cursor;
      show();
    });
    const total = typeof page.total_records === 'number' ? page.total_records : null;
    const limit = Number(pager.limit || 0);
    let summary = total === null ? `${records.length} records` : `${total.toLocaleString('en')} matching record${total === 1 ? '' : 's'}`;
    if (records.length && limit) {
      const first = (pageNo - 1) * limit + 1;
      summary += ` — showing ${first.toLocaleString('en')}–${(first + records.length - 1).toLocaleString('en')}`;
    }
    status.append(
      el('span', { id: 'total-records', class: 'grow', dataset: { total: total === null ? '' : String(total) }, text: summary }),
      el('span', { class: 'pager' }, prev, el('span', { id: 'page-number', class: 'muted', text: `page ${pageNo}` }), next),
    );
    render(body, page, records);
  }

  await show();
  return pager;
}

// ---- search -----------------------------------------------------------------------------------

function field(name, label, attrs = {}) {
  return el('label', {}, label, el('input', { id: name, name, type: 'text', spellcheck: 'false', ...attrs }));
}

async function renderSearch(params, gen) {
  const tenant = params.get('tenant') || sessionStorage.getItem(TENANT_STORE) || '';
  const limit = PAGE_SIZES.includes(params.get('limit')) ? params.get('limit') : DEFAULT_LIMIT;
  document.title = 'Search — auditlog Compliance';

  const resultList = el('datalist', { id: 'result-values' }, el('option', { value: 'SUCCESS' }), el('option', { value: 'FAILURE' }));
  const limitSelect = el('select', { id: 'limit', name: 'limit' }, PAGE_SIZES.map((n) => el('option', { value: n, text: n, selected: n === limit })));
  const form = el('form', { id: 'search-form', class: 'search-form panel', autocomplete: 'off' },
    field('tenant', 'Tenant', { required: true, placeholder: 't_1000' }),
    field('actor_id', 'Actor id'),
    field('action', 'Action', { placeholder: 'e.g. ROLE_UPGRADE' }),
    field('resource_type', 'Resource type', { placeholder: 'e.g. ROLE' }),
    field('resource_id', 'Resource id'),
    field('result', 'Result', { list: 'result-values', placeholder: 'SUCCESS or FAILURE' }),
    field('start_time', 'From (ISO-8601, included)', { placeholder: '2026-05-01T00:00:00Z' }),
    field('end_time', 'To (ISO-8601, excluded)', { placeholder: '2026-06-01T00:00:00Z' }),
    el('label', {}, 'Page size', limitSelect),
    el('div', { class: 'actions' },
      el('button', { id: 'search-button', type: 'submit', class: 'primary', text: 'Search' }),
      el('button', { id: 'clear-button', type: 'button', text: 'Clear filters' }),
      el('button', { id: 'export-button', type: 'button', text: 'Export…', title: 'Download the matching events as a zip with a signed manifest' }),
      el('select', { id: 'export-format', 'aria-label': 'export format' }, ['jsonl', 'csv', 'parquet'].map((f) => el('option', { value: f, text: f }))),
    ),
    resultList,
  );
  const results = el('section', { id: 'search-results' });
  view.append(el('h1', { text: 'Search audit events' }), form, results);

  form.querySelector('#tenant').value = tenant;
  for (const f of FILTERS) form.querySelector(`#${f}`).value = params.get(f) || '';

  const current = () => {
    const out = { tenant: form.querySelector('#tenant').value.trim() };
    for (const f of FILTERS) out[f] = form.querySelector(`#${f}`).value.trim();
    out.limit = limitSelect.value === DEFAULT_LIMIT ? '' : limitSelect.value;
    return out;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = current();
    if (!p.tenant) {
      form.querySelector('#tenant').classList.add('invalid');
      form.querySelector('#tenant').focus();
      return;
    }
    sessionStorage.setItem(TENANT_STORE, p.tenant);
    const href = searchHref(p);
    resetPager(pagerKeyFor(href));
    if (location.hash === href) route();
    else location.hash = href;
  });
  form.querySelector('#clear-button').addEventListener('click', () => {
    for (const f of FILTERS) form.querySelector(`#${f}`).value = '';
  });
  form.querySelector('#export-button').addEventListener('click', () => exportEvents(current(), form));

  if (!tenant || !params.get('tenant')) {
    results.append(el('p', { class: 'muted', text: 'Enter a tenant (and any filters) and press Search.' }));
    return;
  }
  sessionStorage.setItem(TENANT_STORE, tenant);
  const query = {};
  for (const f of FILTERS) if (params.get(f)) query[f] = params.get(f);
  const key = pagerKeyFor(location.hash);
  const path = `/api/v1/tenants/${enc(tenant)}/audit-logs`;
  const pager = getPager(key);
  pager.limit = limit;
  savePager(key, pager);
  await paged(results, key, (cursor) => api(path, { ...query, limit, cursor }), (body, page, records) => {
    body.append(recordsTable(tenant, records));
  }, gen).catch((err) => results.append(errorBox(err, 'api-error')));
  markInvalidParameter(form, results);
}

function pagerKeyFor(hash) {
  return `search:${hash.replace(/^#/, '')}`;
}

function markInvalidParameter(form, container) {
  for (const input of form.querySelectorAll('input')) input.classList.remove('invalid');
  const box = container.querySelector('.error');
  if (!box) return;
  const m = /\(parameter: ([A-Za-z_]+)\)/.exec(box.textContent);
  const input = m && form.querySelector(`#${m[1]}`);
  if (input) input.classList.add('invalid');
}

function recordsTable(tenant, records) {
  const tbody = el('tbody');
  const table = el('table', { id: 'results', class: 'records' },
    el('thead', {}, el('tr', {}, ['Occurred at (UTC)', 'Actor', 'Action', 'Resource', 'Result', 'Event id'].map((h) => el('th', { text: h })))),
    tbody);
  if (!records.length) {
    tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: 6, text: 'No matching events.' })));
    return table;
  }
  for (const r of records) {
    const actor = r.actor || {};
    const resource = r.resource || {};
    const who = [actor.name, actor.email].filter((x) => typeof x === 'string' && x && !/^\[.*\]$/.test(x)).join(' · ');
    const row = el('tr', { tabindex: 0, dataset: { eventId: r.event_id } },
      el('td', { class: 'time', text: r.occurred_at || '' }),
      el('td', {}, el('span', { text: actor.id || '' }), el('span', { class: 'sub', text: [actor.type, who].filter(Boolean).join(' · ') })),
      el('td', { text: r.action || '' }),
      el('td', {},
        resource.type && resource.id
          ? el('a', { class: 'resource-link', href: historyHref(tenant, resource.type, resource.id), title: 'resource history' },
            `${resource.type}/${resource.id}`)
          : ''),
      el('td', {}, el('span', { class: `badge ${r.result || ''}`, text: r.result || '' })),
      el('td', { class: 'mono' }, el('a', { class: 'event-link', href: eventHref(r.tenant_id || tenant, r.event_id) }, r.event_id)),
    );
    const open = () => { location.hash = eventHref(r.tenant_id || tenant, r.event_id); };
    row.addEventListener('click', (e) => { if (!e.target.closest('a')) open(); });
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.target.closest('a')) open(); });
    tbody.append(row);
  }
  return table;
}

async function exportEvents(p, form) {
  const status = form.querySelector('.export-status') || el('span', { class: 'export-status muted' });
  form.querySelector('.actions').append(status);
  if (!p.tenant) {
    status.textContent = 'enter a tenant first';
    return;
  }
  const fmt = form.querySelector('#export-format').value;
  const url = new URL(`/api/v1/tenants/${enc(p.tenant)}/export`, location.origin);
  url.searchParams.set('format', fmt);
  for (const f of FILTERS) if (p[f]) url.searchParams.set(f, p[f]);
  status.textContent = 'exporting…';
  try {
    const headers = {};
    if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
    const res = await fetch(url, { headers, cache: 'no-store' });
    if (!res.ok) {
      const text = await res.text();
      let msg = text.slice(0, 300);
      try {
        const b = JSON.parse(text);
        msg = b.error + (b.parameter ? ` (parameter: ${b.parameter})` : '');
      } catch { /* not JSON */ }
      status.textContent = `export failed: ${res.status} ${res.statusText || STATUS_TEXT[res.status] || ''}: ${msg}`;
      return;
    }
    const blob = await res.blob();
    const a = el('a', { href: URL.createObjectURL(blob), download: `auditlog-${p.tenant}-export.zip` });
    document.body.append(a);
    a.click();
    a.remove();
    status.textContent = `exported (${blob.size.toLocaleString('en')} bytes); check it with auditlog verify-export`;
  } catch (e) {
    status.textContent = `export failed: ${e.message}`;
  }
}

// ---- resource history ---------------------------------------------------------------------------

async function renderHistory(tenant, type, id, gen) {
  document.title = `${type}/${id} — auditlog Compliance`;
  const section = el('section', { id: 'history' });
  view.append(
    el('p', { class: 'muted' }, el('a', { href: searchHref({ tenant }), text: `← search ${tenant}` })),
    el('h1', {}, 'History of ', el('span', { class: 'mono', text: `${type}/${id}` })),
    el('p', { class: 'muted', text: `Tenant ${tenant}; newest first. Select an event to see and verify its proof.` }),
    section,
  );
  const key = `history:${tenant}\n${type}\n${id}`;
  const pager = getPager(key);
  pager.limit = DEFAULT_LIMIT;
  savePager(key, pager);
  const path = `/api/v1/tenants/${enc(tenant)}/resources/${enc(type)}/${enc(id)}/history`;
  await paged(section, key, (cursor) => api(path, { limit: DEFAULT_LIMIT, cursor }), (body, page, records) => {
    const list = el('ol', { id: 'timeline', class: 'timeline' });
    if (!records.length) body.append(el('p', { class: 'muted', text: 'No events for this resource.' }));
    for (const r of records) {
      const actor = r.actor || {};
      const item = el('li', { tabindex: 0, dataset: { eventId: r.event_id } },
        el('span', { class: 'when', text: r.occurred_at || '' }),
        el('span', { class: 'what', text: r.action || '' }),
        el('span', { class: `badge ${r.result || ''}`, text: r.result || '' }),
        ' by ', el('span', { class: 'mono', text: `${actor.id || '?'}` }),
        actor.type ? el('span', { class: 'muted', text: ` (${actor.type})` }) : '',
        ' · ', el('a', { class: 'mono event-link', href: eventHref(r.tenant_id || tenant, r.event_id), text: r.event_id }),
      );
      const open = () => { location.hash = eventHref(r.tenant_id || tenant, r.event_id); };
      item.addEventListener('click', (e) => { if (!e.target.closest('a')) open(); });
      item.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
      list.append(item);
    }
    body.append(list);
  }, gen).catch((err) => section.append(errorBox(err, 'api-error')));
}

// ---- one event and its proof ----------------------------------------------------------------------

function setVerification(node, ok, reason) {
  node.dataset.state = ok ? 'verified' : 'not-verified';
  node.textContent = ok ? 'verified' : `not verified: ${reason}`;
}

/** The witness keys trusted for this bundle: the pinned ones, else the ones the API lists. */
function witnessKeysFor(bundle) {
  const pinned = pinnedWitnesses();
  if (pinned.length) return { keys: pinned, source: 'pinned' };
  const served = Array.isArray(bundle.witness_keys) ? bundle.witness_keys.filter((k) => typeof k === 'string') : [];
  return { keys: served, source: 'api' };
}

async function checkBundleWitnesses(bundle, logKey) {
  const { keys, source } = witnessKeysFor(bundle);
  let note = null;
  try {
    note = (await parseTlogProof(bundle.proof)).checkpoint;
  } catch (e) {
    return { ok: false, required: 0, verified: 0, reason: e.message, witnesses: [], others: [], keys, source };
  }
  const result = await checkWitnesses(note, keys, { minWitnesses: minWitnesses(), logKey });
  return { ...result, keys, source };
}

function setWitnessVerification(node, w) {
  const trusted = w.witnesses.length;
  if (w.ok && trusted === 0 && w.required === 0) {
    node.dataset.state = 'unchecked';
    node.textContent = `witnesses: none trusted, so the checkpoint's cosignatures are not checked${w.others.length ? ` (it carries ${w.others.length})` : ''} — pin witness keys at the bottom of the page`;
  } else if (w.ok) {
    node.dataset.state = 'witnessed';
    node.textContent = `witnessed: ${w.verified} of ${trusted} trusted witness${trusted === 1 ? '' : 'es'} cosigned this checkpoint (required: ${w.required})`;
  } else {
    node.dataset.state = 'not-witnessed';
    node.textContent = `NOT witnessed as required: ${w.reason}`;
  }
}

async function renderEvent(tenant, eventId, gen) {
  document.title = `${eventId} — auditlog Compliance`;
  const verification = el('div', { id: 'verification', role: 'status', text: 'verifying…' });
  const witnessLine = el('div', { id: 'witness-verification', role: 'status' });
  const eventPanel = el('section', { class: 'panel', id: 'event' }, el('div', { class: 'loading', text: 'Loading the event and its proof…' }));
  const proofPanel = el('section', { class: 'panel', id: 'proof' });
  const indexPanel = el('section', { class: 'panel', id: 'index-record' });
  view.append(
    el('p', { class: 'muted' }, el('a', { href: searchHref({ tenant }), text: `← search ${tenant}` })),
    el('h1', {}, 'Event ', el('span', { class: 'mono', text: eventId })),
    verification,
    witnessLine,
    el('div', { class: 'grid2' },
      el('div', {}, el('h2', { id: 'event-heading', text: 'The event (the bytes the proof covers)' }), eventPanel),
      el('div', {}, el('h2', { text: 'Proof' }), proofPanel)),
    el('h2', { text: 'Search index record (not covered by the proof)' }),
    indexPanel,
  );

  const base = `/api/v1/tenants/${enc(tenant)}/audit-logs/${enc(eventId)}`;
  const recordP = api(base).then((b) => b.record, (e) => ({ error: e }));
  let bundle;
  try {
    bundle = await api(`${base}/proof`);
  } catch (err) {
    if (gen !== generation) return;
    clear(eventPanel);
    eventPanel.append(errorBox(err, 'api-error'));
    setVerification(verification, false, `could not fetch the proof: ${err instanceof ApiError ? err.describe() : err.message}`);
    renderIndexRecord(indexPanel, await recordP, null, null);
    return;
  }
  if (gen !== generation) return;

  // What you see is what is verified: the page shows the canonical bytes the proof covers.
  const canonical = typeof bundle.canonical === 'string' ? bundle.canonical : null;
  let parsed = null;
  let parseError = null;
  try {
    parsed = canonical === null ? null : JSON.parse(canonical);
  } catch (e) {
    parseError = e.message;
  }
  clear(eventPanel);
  if (parsed && typeof parsed === 'object') eventPanel.append(eventFields(parsed, tenant));
  else eventPanel.append(el('div', { class: 'error', text: `the canonical bytes are not a JSON object${parseError ? `: ${parseError}` : ''}` }));
  eventPanel.append(
    el('details', {}, el('summary', { text: 'Canonical bytes (exactly what was hashed)' }),
      el('pre', { id: 'canonical', class: 'raw', text: canonical ?? '' })),
  );

  const pinned = localStorage.getItem(PIN_STORE);
  const key = pinned || bundle.verifier_key;
  const result = await verifyEvent(canonical, bundle.proof, key, bundle.origin, { leafIndex: bundle.leaf_index });
  if (gen !== generation) return;
  let reason = result.reason;
  if (result.ok && bundle.event_id !== undefined && bundle.event_id !== eventId) {
    result.ok = false;
    reason = `the API returned the proof of event ${bundle.event_id}, not ${eventId}`;
  } else if (result.ok && parsed && parsed.event_id !== eventId) {
    result.ok = false;
    reason = `the verified bytes are event ${parsed.event_id}, not ${eventId}`;
  } else if (result.ok && parsed && parsed.tenant_id !== tenant) {
    result.ok = false;
    reason = `the verified bytes belong to tenant ${parsed.tenant_id}, not ${tenant}`;
  }
  // Witnesses: a checkpoint too few trusted witnesses cosigned may be one history of several (a split view).
  const witnesses = await checkBundleWitnesses(bundle, key);
  if (gen !== generation) return;
  setWitnessVerification(witnessLine, witnesses);
  const unwitnessed = result.ok && !witnesses.ok;
  if (unwitnessed) {
    result.ok = false;
    const names = witnesses.witnesses.filter((w) => w.state !== 'verified').map((w) => w.name);
    reason = `the log's signature and inclusion proof hold, but the checkpoint is not witnessed as required${names.length ? ` (${names.join(', ')})` : ''}: it may be one of several histories shown to different readers`;
  }
  setVerification(verification, result.ok, reason);
  const heading = document.getElementById('event-heading');
  if (heading) {
    heading.textContent = result.ok ? 'The event, as verified'
      : unwitnessed ? 'The event — signed by the log but NOT witnessed as required'
        : 'The event — NOT verified: do not rely on these contents';
    heading.classList.toggle('mismatch', !result.ok);
  }
  renderProof(proofPanel, bundle, result, key, pinned, gen);
  renderWitnesses(proofPanel, bundle, witnesses);
  renderIndexRecord(indexPanel, await recordP, parsed, result);
}

function eventFields(ev, tenant) {
  const dl = el('dl', { class: 'fields' });
  const row = (k, v) => dl.append(el('dt', { text: k }), el('dd', {}, v));
  const known = new Set(['event_id', 'tenant_id', 'occurred_at', 'action', 'result', 'actor', 'resource', 'request_id', 'metadata', 'pii', 'schema_version', 'retention']);
  row('event_id', show(ev.event_id));
  row('tenant_id', show(ev.tenant_id));
  row('occurred_at', show(ev.occurred_at));
  row('action', show(ev.action));
  row('result', ev.result ? el('span', { class: `badge ${ev.result}`, text: ev.result }) : show(null));
  const actor = ev.actor || {};
  row('actor', el('span', {}, el('span', { class: 'mono', text: actor.id ?? '' }), actor.type ? ` (${actor.type})` : ''));
  for (const [k, v] of Object.entries(actor)) if (k !== 'id' && k !== 'type') row(`actor.${k}`, show(v));
  const res = ev.resource || {};
  row('resource', res.type && res.id
    ? el('a', { id: 'resource-link', href: historyHref(ev.tenant_id || tenant, res.type, res.id), text: `${res.type}/${res.id}`, title: 'resource history' })
    : show(null));
  if ('request_id' in ev) row('request_id', show(ev.request_id));
  if (ev.retention && typeof ev.retention === 'object') {
    row('retention', el('span', { text: `${ev.retention.class}, kept until ${ev.retention.until}` }));
  }
  for (const [k, v] of Object.entries(ev)) if (!known.has(k)) row(k, show(v));
  if (ev.metadata !== undefined) row('metadata', show(ev.metadata));
  if (ev.pii && typeof ev.pii === 'object') {
    for (const [k, v] of Object.entries(ev.pii)) {
      if (v && typeof v === 'object' && v.erased === true) {
        row(k, el('span', { class: 'sealed', text: 'erased (its subject was erased before the event was logged)' }));
        continue;
      }
      const kid = v && typeof v === 'object' && v.kid ? ` with key ${v.kid}` : '';
      row(k, el('span', { class: 'sealed', text: `sealed (AES-GCM-SIV ciphertext${kid})` }));
    }
  }
  if ('schema_version' in ev) row('schema_version', show(ev.schema_version));
  return dl;
}

function download(label, name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  blobUrls.push(url);
  return el('a', { href: url, download: name, text: label });
}

function renderProof(panel, bundle, result, key, pinned, gen) {
  clear(panel);
  const dl = el('dl', { class: 'fields' });
  const row = (k, v) => dl.append(el('dt', { text: k }), el('dd', {}, v));
  row('log', show(bundle.log_id));
  row('leaf index', show(bundle.leaf_index));
  row('checkpoint origin', show(result.origin ?? '—'));
  row('expected origin', show(bundle.origin));
  row('tree size', show(result.size ?? '—'));
  row('root (base64)', el('span', { class: 'mono', text: result.root ?? '—' }));
  row('leaf hash (hex)', el('span', { class: 'mono', text: result.leaf ? hex(b64decode(result.leaf)) : '—' }));
  row('verifier key', el('span', { class: 'mono', text: key || '—' }));
  if (pinned) {
    row('key source', pinned === bundle.verifier_key
      ? el('span', { class: 'consistent', text: 'pinned in this browser (the API serves the same key)' })
      : el('span', { class: 'mismatch', text: `pinned in this browser; the API serves a different key: ${bundle.verifier_key}` }));
  } else {
    row('key source', el('span', { class: 'muted', text: 'served by the API (pin a key you trust below to check against it)' }));
  }
  panel.append(dl);
  panel.append(el('div', { class: 'downloads' },
    download('entry.json', 'entry.json', bundle.canonical ?? '', 'application/json'),
    download('proof.tlog-proof', 'proof.tlog-proof', bundle.proof ?? '', 'text/plain'),
    download('verifier key', 'auditlog.vkey', `${key || ''}\n`, 'text/plain'),
  ));
  panel.append(el('p', { class: 'muted' }, 'Offline: ',
    el('code', { text: 'auditlog verify-proof proof.tlog-proof --entry entry.json --key auditlog.vkey' })));
  panel.append(el('details', {}, el('summary', { text: 'tlog-proof text' }), el('pre', { id: 'proof-text', class: 'raw', text: bundle.proof ?? '' })));

  const latest = el('div', { id: 'latest-checkpoint' });
  const button = el('button', { type: 'button', text: 'Compare with the log\'s latest checkpoint' });
  button.addEventListener('click', async () => {
    button.disabled = true;
    clear(latest);
    latest.append(el('span', { class: 'loading', text: 'fetching…' }));
    try {
      const cp = await api(`/api/v1/logs/${enc(bundle.log_id)}/checkpoint`);
      if (gen !== generation) return;
      clear(latest);
      let sig = { ok: false, reason: 'no signed note in the response' };
      let body = null;
      if (typeof cp.note === 'string') {
        try {
          const note = await parseSignedNote(cp.note);
          sig = await verifyNoteSignature(note, await parseVerifierKey(key));
          body = parseCheckpoint(note.text);
        } catch (e) {
          sig = { ok: false, reason: e.message };
        }
      }
      const size = body ? Number(body.size) : cp.size;
      latest.append(el('p', {},
        `Latest checkpoint of ${cp.origin || bundle.log_id}: size ${size}, root `, el('code', { text: body ? body.rootB64 : cp.root }), '. ',
        sig.ok ? el('span', { class: 'consistent', text: 'Its signature verifies.' }) : el('span', { class: 'mismatch', text: `Its signature does not verify: ${sig.reason}` }),
        result.size !== null && size !== undefined
          ? ` This proof is against size ${result.size}${Number(result.size) === Number(size) ? ' (the latest).' : '.'}`
          : ''));
    } catch (err) {
      clear(latest);
      latest.append(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  panel.append(button, latest);
}

function renderWitnesses(panel, bundle, w) {
  const section = el('section', { id: 'witnesses' }, el('h3', { text: 'Witness cosignatures' }));
  const list = el('ul', { id: 'witness-list', class: 'witness-list' });
  for (const x of w.witnesses) {
    let text;
    if (x.state === 'verified') text = `cosigned at ${cosignatureTime(x.time)}: verified`;
    else if (x.state === 'missing') text = `no cosignature from ${x.name} on this checkpoint`;
    else text = `not verified: ${x.reason}`;
    list.append(el('li', { dataset: { witness: x.name, state: x.state } },
      el('strong', { class: 'mono', text: x.name }), ' ',
      el('span', { class: x.state === 'verified' ? 'consistent' : 'mismatch', text: text })));
  }
  for (const o of w.others) {
    list.append(el('li', { dataset: { witness: o.name, state: 'not-verified' } },
      el('strong', { class: 'mono', text: o.name }), ' ',
      el('span', { class: 'mismatch', text: `not verified: its key (id ${o.keyIdHex}) is not ${w.source === 'pinned' ? 'pinned in this browser' : 'listed by the API'}; pin it to check this cosignature` })));
  }
  if (!list.childElementCount) list.append(el('li', { class: 'muted', text: 'the checkpoint carries no cosignatures and no witness is trusted' }));
  section.append(list);
  const pinned = pinnedWitnesses();
  const served = Array.isArray(bundle.witness_keys) ? bundle.witness_keys.filter((k) => typeof k === 'string') : [];
  const notPinned = served.filter((k) => !pinned.includes(k));
  if (w.source === 'pinned') {
    section.append(el('p', { class: notPinned.length ? 'mismatch' : 'consistent',
      text: notPinned.length ? 'witness keys pinned in this browser; the API lists other keys too:' : 'witness keys pinned in this browser' }));
  } else if (served.length) {
    section.append(el('p', { class: 'muted', text: 'witness keys served by the API (pin the ones you trust to check against them):' }));
  }
  if (notPinned.length) {
    const offered = el('ul', { class: 'witness-list' });
    for (const k of notPinned) {
      offered.append(el('li', {}, el('code', { text: k }), ' ', el('button', {
        type: 'button', class: 'pin-witness', text: 'Pin',
        onclick: async () => {
          try {
            await pinWitness(k);
          } catch (err) {
            offered.append(el('li', { class: 'mismatch', text: `not pinned: ${err.message}` }));
            return;
          }
          window.dispatchEvent(new Event('storage'));
          route();
        },
      })));
    }
    section.append(offered);
  }
  const flags = w.keys.map((k) => `--witness '${k}'`).join(' ');
  section.append(el('p', { class: 'muted' }, 'Offline: ',
    el('code', { text: `auditlog verify-proof proof.tlog-proof --entry entry.json --key auditlog.vkey${flags ? ` ${flags}` : ''} --min-witnesses ${w.required}` })));
  panel.append(section);
}

function sameTime(a, b) {
  if (a === b) return true;
  const x = Date.parse(a);
  const y = Date.parse(b);
  return !Number.isNaN(x) && x === y;
}

function renderIndexRecord(panel, record, ev, result) {
  clear(panel);
  if (!record || record.error) {
    panel.append(record && record.error ? errorBox(record.error) : el('p', { class: 'muted', text: 'no record' }));
    return;
  }
  const diffs = [];
  if (ev && typeof ev === 'object') {
    const pairs = [
      ['event_id', record.event_id, ev.event_id],
      ['tenant_id', record.tenant_id, ev.tenant_id],
      ['action', record.action, ev.action],
      ['result', record.result, ev.result],
      ['actor.id', record.actor && record.actor.id, ev.actor && ev.actor.id],
      ['actor.type', record.actor && record.actor.type, ev.actor && ev.actor.type],
      ['resource.type', record.resource && record.resource.type, ev.resource && ev.resource.type],
      ['resource.id', record.resource && record.resource.id, ev.resource && ev.resource.id],
    ];
    if (record.request_id !== undefined && record.request_id !== null && ev.request_id !== undefined) {
      pairs.push(['request_id', record.request_id, ev.request_id]);
    }
    for (const [k, a, b] of pairs) if (a !== b) diffs.push(`${k}: index says ${JSON.stringify(a)}, verified bytes say ${JSON.stringify(b)}`);
    if (record.occurred_at && ev.occurred_at && !sameTime(record.occurred_at, ev.occurred_at)) {
      diffs.push(`occurred_at: index says ${record.occurred_at}, verified bytes say ${ev.occurred_at}`);
    }
  }
  if (result && result.index !== null && record.leaf_index !== undefined && record.leaf_index !== null && String(record.leaf_index) !== String(result.index)) {
    diffs.push(`leaf_index: index says ${record.leaf_index}, proof says ${result.index}`);
  }
  if (result && result.leaf && typeof record.leaf_hash === 'string' && record.leaf_hash) {
    const mine = hex(b64decode(result.leaf));
    const theirs = record.leaf_hash.replace(/^sha256:/, '');
    if (theirs.toLowerCase() !== mine && theirs !== result.leaf) diffs.push(`leaf_hash: index says ${record.leaf_hash}, computed ${mine}`);
  }
  const consistency = el('p', { id: 'index-consistency', dataset: { consistent: diffs.length ? 'false' : 'true' } });
  if (!ev) consistency.append(el('span', { class: 'muted', text: 'nothing verified to compare with' }));
  else if (diffs.length) consistency.append(el('span', { class: 'mismatch', text: `The index record differs from the verified event — ${diffs.join('; ')}` }));
  else consistency.append(el('span', { class: 'consistent', text: 'The index record agrees with the verified event.' }));
  panel.append(consistency);

  const dl = el('dl', { class: 'fields' });
  const row = (k, v) => dl.append(el('dt', { text: k }), el('dd', {}, v));
  const actor = record.actor || {};
  row('actor.name', show(actor.name));
  row('actor.email', show(actor.email));
  row('actor.email_hash', el('span', { class: 'mono' }, show(actor.email_hash)));
  row('client_ip', show(record.client_ip));
  row('user_agent', show(record.user_agent));
  row('log / leaf', show(`${record.log_id ?? '?'} / ${record.leaf_index ?? '?'}`));
  row('leaf_hash', el('span', { class: 'mono' }, show(record.leaf_hash)));
  row('block', show(`${record.block_index ?? '?'}`));
  row('block_hash', el('span', { class: 'mono' }, show(record.block_hash)));
  panel.append(dl);
  panel.append(el('p', { class: 'muted', text: 'Personal data is sealed in the log; the index shows it decrypted, or [erased] after crypto-shredding.' }));
}

// ---- the router ----------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/search';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['bad'];
  }
  return { parts, params };
}

async function route() {
  const gen = ++generation;
  for (const u of blobUrls) URL.revokeObjectURL(u);
  blobUrls = [];
  clear(view);
  const { parts, params } = parseHash();
  const [page, ...rest] = parts;
  document.getElementById('nav-search').classList.toggle('active', page === 'search');
  try {
    if (page === 'search' || page === undefined) await renderSearch(params, gen);
    else if (page === 'event' && rest.length === 2) await renderEvent(rest[0], rest[1], gen);
    else if (page === 'history' && rest.length === 3) await renderHistory(rest[0], rest[1], rest[2], gen);
    else {
      view.append(el('h1', { text: 'Not found' }), el('p', {}, 'No page at ', el('code', { text: location.hash }), '. ',
        el('a', { href: '#/search', text: 'Go to search' })));
    }
  } catch (err) {
    if (gen === generation) view.append(errorBox(err));
    console.error(err);
  }
}

setupKeyForm();
setupWitnessForm();
window.addEventListener('hashchange', route);
if (!location.hash) history.replaceState(null, '', '#/search');
route();
