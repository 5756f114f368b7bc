#!/usr/bin/env node
// Drives the Compliance UI in real headless Chromium and reports whether the browser verified an
// event's proof.
//
//   node tests/browser/ui_check.mjs --base http://127.0.0.1:PORT --key KEY --tenant T \
//        --expect verified|not-verified [--event EVENT_ID] [--timeout SECONDS] [--screenshot FILE]
//        [--pin-witness WVKEY]... [--min-witnesses N] [--tamper-cosignature WITNESS]
//
// Opens BASE, pins the witness keys (and the required number) in the page's footer form as a
// person would, enters the API key and tenant, searches, waits for result rows, opens EVENT_ID (or
// the first row) and waits for #verification[data-state]. --tamper-cosignature flips the last
// byte of WITNESS's cosignature in the proof bundle on its way from the API to the page. Prints
// one JSON line {"event_id", "state", "text", "fields", "index_consistent", "index_text", "witness_state", "witness_text",
// "witnesses": [{"name", "state", "text"}]} and exits 0 when the state is the expected one, 1
// otherwise, 2 on usage errors. Chromium is Debian's (env CHROMIUM, default /usr/bin/chromium), run with
// --no-sandbox; playwright-core brings no browser of its own.

import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const USAGE =
  'usage: node tests/browser/ui_check.mjs --base URL --key KEY --tenant TENANT --expect verified|not-verified ' +
  '[--event EVENT_ID] [--timeout SECONDS] [--screenshot FILE] [--pin-witness WVKEY]... [--min-witnesses N] ' +
  '[--tamper-cosignature WITNESS]';

function usage(message) {
  if (message) console.error(`error: ${message}`);
  console.error(USAGE);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { timeout: 30, pinWitness: [] };
  const names = {
    '--base': 'base', '--key': 'key', '--tenant': 'tenant', '--expect': 'expect', '--event': 'event', '--timeout': 'timeout',
    '--screenshot': 'screenshot', '--pin-witness': 'pinWitness', '--min-witnesses': 'minWitnesses', '--tamper-cosignature': 'tamperCosignature',
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const name = names[arg];
    if (!name) usage(`unknown argument ${JSON.stringify(arg)}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      value = argv[++i];
    }
    if (Array.isArray(opts[name])) opts[name].push(value);
    else opts[name] = value;
  }
  for (const required of ['base', 'key', 'tenant', 'expect']) if (!opts[required]) usage(`--${required} is required`);
  if (!['verified', 'not-verified'].includes(opts.expect)) usage('--expect must be verified or not-verified');
  try {
    const u = new URL(opts.base);
    if (!/^https?:$/.test(u.protocol)) throw new Error('not http(s)');
  } catch {
    usage(`--base ${JSON.stringify(opts.base)} is not an http(s) URL`);
  }
  opts.timeout = Number(opts.timeout);
  if (!Number.isFinite(opts.timeout) || opts.timeout <= 0) usage('--timeout must be a positive number of seconds');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`error: no Chromium at ${executablePath} (install Debian's chromium or set CHROMIUM)`);
  process.exit(2);
}

const timeoutMs = opts.timeout * 1000;
const report = { event_id: opts.event || null, state: null, text: null };
let browser;
let exitCode = 1;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    // no sandbox as root; the rest keeps Chromium off the network beyond BASE (this machine has none)
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: timeoutMs,
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`console error: ${msg.text()}`);
  });

  if (opts.tamperCosignature) {
    // flip the last byte (of the Ed25519 signature) of the witness's cosignature line in the bundle
    await page.route('**/proof', async (route) => {
      const response = await route.fetch();
      const bundle = await response.json();
      const prefix = `\u2014 ${opts.tamperCosignature} `;
      const lines = bundle.proof.split('\n');
      const i = lines.findIndex((l) => l.startsWith(prefix));
      if (i < 0) throw new Error(`the bundle has no cosignature line of ${opts.tamperCosignature}`);
      const blob = Buffer.from(lines[i].slice(prefix.length), 'base64');
      blob[blob.length - 1] ^= 0x01;
      lines[i] = prefix + blob.toString('base64');
      bundle.proof = lines.join('\n');
      report.tampered = opts.tamperCosignature;
      await route.fulfill({ response, json: bundle });
    });
  }

  await page.goto(opts.base, { waitUntil: 'domcontentloaded' });
  if (opts.pinWitness.length || opts.minWitnesses !== undefined) {
    await page.click('summary:has-text("Trusted witness keys")');
    for (const wkey of opts.pinWitness) {
      await page.fill('#witness-key', wkey);
      await page.click('#witness-pin-form button[type=submit]');
      await page.waitForFunction(() => document.getElementById('witness-pin-status').textContent !== '');
      const said = await page.textContent('#witness-pin-status');
      if (!said.startsWith('pinned')) throw new Error(`the UI did not pin ${wkey}: ${said}`);
      await page.evaluate(() => { document.getElementById('witness-pin-status').textContent = ''; });
    }
    if (opts.minWitnesses !== undefined) {
      await page.fill('#min-witnesses', String(opts.minWitnesses));
      await page.dispatchEvent('#min-witnesses', 'change');
    }
  }
  await page.waitForSelector('#api-key');
  await page.fill('#api-key', opts.key);
  await page.waitForSelector('#tenant');
  await page.fill('#tenant', opts.tenant);
  await page.click('#search-button');

  // Rows, or an API error box, whichever comes first.
  const first = await page.waitForSelector('#results tbody tr[data-event-id], #search-results .error');
  if ((await first.getAttribute('class')) === 'error') {
    throw new Error(`search failed: ${(await first.textContent()).trim()}`);
  }

  if (opts.event) {
    const row = await page.$(`#results tbody tr[data-event-id="${opts.event.replace(/["\\]/g, '\\$&')}"]`);
    if (row) {
      await row.click({ position: { x: 5, y: 5 } });
    } else {
      // not on the first page: open it by its route, as a link would
      const target = `#/event/${encodeURIComponent(opts.tenant)}/${encodeURIComponent(opts.event)}`;
      await page.evaluate((h) => { location.hash = h; }, target);
    }
  } else {
    const row = await page.$('#results tbody tr[data-event-id]');
    report.event_id = await row.getAttribute('data-event-id');
    await row.click({ position: { x: 5, y: 5 } });
  }

  const verification = await page.waitForSelector('#verification[data-state]');
  report.state = await verification.getAttribute('data-state');
  report.text = (await verification.textContent()).trim();
  report.fields = await page.$$eval('dl.fields', (lists) => lists.map((l) => l.textContent.trim()).join('\n'));
  const witnessLine = await page.$('#witness-verification[data-state]');
  report.witness_state = witnessLine ? await witnessLine.getAttribute('data-state') : null;
  report.witness_text = witnessLine ? (await witnessLine.textContent()).trim() : null;
  report.witnesses = await page.$$eval('#witness-list li[data-witness]', (items) => items.map((li) => ({
    name: li.dataset.witness, state: li.dataset.state, text: li.textContent.trim(),
  })));
  // The index record's comparison with the verified bytes (rendered once the record has loaded).
  const consistency = await page.waitForSelector('#index-consistency', { timeout: 10000 }).catch(() => null);
  report.index_consistent = consistency ? await consistency.getAttribute('data-consistent') : null;
  report.index_text = consistency ? (await consistency.textContent()).trim() : null;
  const m = /^#\/event\/[^/]+\/([^/?]+)/.exec(new URL(page.url()).hash);
  if (m) report.event_id = decodeURIComponent(m[1]);
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  exitCode = report.state === opts.expect ? 0 : 1;
} catch (err) {
  report.error = String(err && err.message ? err.message : err).split('\n')[0];
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
}
console.log(JSON.stringify(report));
process.exit(exitCode);
