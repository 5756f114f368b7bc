// What every page of the Compliance UI shares: the view it renders into, the route generation that
// stale async work checks, the blob URLs to revoke, and the way back to the router (app.js).

import { clear } from './dom.js';

export const view = document.getElementById('view');
export let generation = 0; // bumped on every route; stale async work checks it before touching the page
let blobUrls = [];
let router = () => {};

/** Starts a new page: bumps the generation, revokes the last page's blob URLs, empties the view. */
export function newPage() {
  const gen = ++generation;
  for (const u of blobUrls) URL.revokeObjectURL(u);
  blobUrls = [];
  clear(view);
  return gen;
}

/** Keeps a blob URL until the next page. */
export function keepBlobUrl(url) {
  blobUrls.push(url);
}

/** The router (app.js) registers itself here; views and forms call `route()` to render again. */
export function setRouter(fn) {
  router = fn;
}

export function route() {
  return router();
}
