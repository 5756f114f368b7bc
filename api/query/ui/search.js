// The search view (#/search?tenant=T&...): the form, the results table and the export button.

import { api, errorBox, STATUS_TEXT } from './client.js';
import { el, enc, eventHref, historyHref, searchHref } from './dom.js';
import { apiKey } from './keys.js';
import { route, view } from './page.js';
import { DEFAULT_LIMIT, getPager, paged, resetPager, savePager } from './pager.js';

const TENANT_STORE = 'auditlog.tenant';
const FILTERS = ['actor_id', 'action', 'resource_type', 'resource_id', 'result', 'start_time', 'end_time'];
const PAGE_SIZES = ['25', '50', '100', '250'];

function field(name, label, attrs = {}) {
  return el('label', {}, label, el('input', { id: name, name, type: 'text', spellcheck: 'false', ...attrs }));
}

export async function renderSearch(params, gen) {
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
