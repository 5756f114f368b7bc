// The auditlog Compliance UI: search, resource history and event pages whose proofs this browser
// verifies itself (verify.js). Plain ES module, no framework, no build step. Routes (hash):
//
//   #/search?tenant=T&actor_id=&action=&resource_type=&resource_id=&result=&start_time=&end_time=&limit=
//   #/event/<tenant>/<event_id>
//   #/history/<tenant>/<resource type>/<resource id>
//
// All data is put on the page with textContent, never as HTML.
//
// The modules: app.js (this router), page.js (shared page state), dom.js, keys.js (API key and
// pinned keys), client.js (API access), pager.js, and the views search.js, history.js, event.js
// with proof.js; verify.js is the verifier.

import { errorBox } from './client.js';
import { el } from './dom.js';
import { renderEvent } from './event.js';
import { renderHistory } from './history.js';
import { setupKeyForm, setupWitnessForm } from './keys.js';
import { generation, newPage, setRouter, view } from './page.js';
import { renderSearch } from './search.js';

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
  const gen = newPage();
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

setRouter(route);
setupKeyForm();
setupWitnessForm();
window.addEventListener('hashchange', route);
if (!location.hash) history.replaceState(null, '', '#/search');
route();
