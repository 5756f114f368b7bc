// API access: fetch with the API key, and one error shape (ApiError) shown the same way everywhere.

import { el } from './dom.js';
import { apiKey } from './keys.js';

export const STATUS_TEXT = {
  0: 'Network error', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  409: 'Conflict', 429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout',
};

export class ApiError extends Error {
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

export async function api(path, params = {}) {
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

export function errorBox(err, id) {
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
