// Small DOM helpers of the Compliance UI. All data is put on the page with textContent, never as HTML.

export function el(tag, attrs = {}, ...children) {
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

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

export function enc(s) {
  return encodeURIComponent(String(s));
}

export function eventHref(tenant, eventId) {
  return `#/event/${enc(tenant)}/${enc(eventId)}`;
}

export function historyHref(tenant, type, id) {
  return `#/history/${enc(tenant)}/${enc(type)}/${enc(id)}`;
}

export function searchHref(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
  return `#/search?${qs}`;
}

export function show(value) {
  if (value === null || value === undefined) return el('span', { class: 'sealed', text: '—' });
  if (typeof value === 'string' && /^\[[a-z ]+\]$/.test(value)) return el('span', { class: 'sealed', text: value });
  if (typeof value === 'object') return el('pre', { class: 'mono', text: JSON.stringify(value, null, 2) });
  return document.createTextNode(String(value));
}
