// The event view's proof panel: the proof's fields and downloads, a comparison with the log's
// latest checkpoint, and the witnesses' cosignatures with the keys to pin.

import { api, errorBox } from './client.js';
import { clear, el, enc, show } from './dom.js';
import { pinnedWitnesses, pinWitness } from './keys.js';
import { generation, keepBlobUrl, route } from './page.js';
import { b64decode, cosignatureTime, hex, parseCheckpoint, parseSignedNote, parseVerifierKey, verifyNoteSignature } from './verify.js';

function download(label, name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  keepBlobUrl(url);
  return el('a', { href: url, download: name, text: label });
}

export function renderProof(panel, bundle, result, key, pinned, gen) {
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

export function renderWitnesses(panel, bundle, w) {
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
