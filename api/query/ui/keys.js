// The API key (sessionStorage), the pinned verifier key and the pinned witness keys (localStorage),
// and the forms in the page's header and footer that set them.

import { clear, el } from './dom.js';
import { route } from './page.js';
import { parseVerifierKey, parseWitnessKey } from './verify.js';

const KEY_STORE = 'auditlog.apiKey';
export const PIN_STORE = 'auditlog.pinnedVerifierKey';
const WITNESS_PIN_STORE = 'auditlog.pinnedWitnessKeys'; // JSON array of cosignature/v1 verifier keys
const MIN_WITNESS_STORE = 'auditlog.minWitnesses'; // a whole number; absent: every trusted witness

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || '';
}

export function setupKeyForm() {
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

export function pinnedWitnesses() {
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

export async function pinWitness(vkey) {
  const key = await parseWitnessKey(vkey); // throws VerifyError with the reason
  const list = pinnedWitnesses().filter((k) => k.trim() !== key.text);
  list.push(key.text);
  savePinnedWitnesses(list);
  return key;
}

function unpinWitness(vkey) {
  savePinnedWitnesses(pinnedWitnesses().filter((k) => k !== vkey));
}

export function minWitnesses() {
  const v = localStorage.getItem(MIN_WITNESS_STORE);
  return v !== null && /^[0-9]{1,3}$/.test(v) ? Number(v) : null;
}

export function setupWitnessForm() {
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
