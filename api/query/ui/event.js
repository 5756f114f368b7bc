// The event view (#/event/<tenant>/<event_id>): the canonical bytes the proof covers, verified in
// this browser (verify.js) with the log's key and the trusted witnesses' keys, and the search
// index's record compared with them. The proof panel is proof.js.

import { ApiError, api, errorBox } from './client.js';
import { clear, el, enc, historyHref, searchHref, show } from './dom.js';
import { minWitnesses, PIN_STORE, pinnedWitnesses } from './keys.js';
import { generation, view } from './page.js';
import { renderProof, renderWitnesses } from './proof.js';
import { b64decode, checkWitnesses, hex, parseTlogProof, verifyEvent } from './verify.js';

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

export async function renderEvent(tenant, eventId, gen) {
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
