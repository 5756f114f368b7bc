// Pagination: a stack of cursors per query, kept in sessionStorage, with previous/next buttons.

import { errorBox } from './client.js';
import { clear, el } from './dom.js';
import { generation } from './page.js';

const PAGER_STORE = 'auditlog.pagers';
export const DEFAULT_LIMIT = '50';

function loadPagers() {
  try {
    return JSON.parse(sessionStorage.getItem(PAGER_STORE) || '{}');
  } catch {
    return {};
  }
}

export function getPager(key) {
  const all = loadPagers();
  const p = all[key];
  return p && Array.isArray(p.stack) ? p : { stack: [], cursor: null };
}

export function savePager(key, pager) {
  const all = { [key]: pager }; // one query remembered at a time per tab is enough
  const prev = loadPagers();
  for (const k of Object.keys(prev).slice(-4)) if (k !== key) all[k] = prev[k];
  sessionStorage.setItem(PAGER_STORE, JSON.stringify(all));
}

export function resetPager(key) {
  savePager(key, { stack: [], cursor: null });
}

/**
 * Loads one page for `pagerKey` with `load(cursor)` and renders it with `render(page)`, with
 * previous/next buttons walking the cursor stack. Returns after the first page is shown.
 */
export async function paged(container, pagerKey, load, render, gen) {
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
