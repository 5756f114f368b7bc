// The resource history view (#/history/<tenant>/<resource type>/<resource id>): a timeline, newest first.

import { api, errorBox } from './client.js';
import { el, enc, eventHref, searchHref } from './dom.js';
import { view } from './page.js';
import { DEFAULT_LIMIT, getPager, paged, savePager } from './pager.js';

export async function renderHistory(tenant, type, id, gen) {
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
