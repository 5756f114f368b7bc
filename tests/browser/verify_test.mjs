// Tests of the Compliance UI's in-browser verifier (api/query/ui/verify.js) under node's WebCrypto.
//
//   node --test tests/browser/verify_test.mjs
//
// The fixtures are real proof bundles copied from a local deployment: the event's canonical bytes
// (<log>.<index>.json), its c2sp.org/tlog-proof@v1 (<log>.<index>.tlog-proof) and the log's
// verifier key. Ed25519 in WebCrypto needs node >= 20 (and browsers of 2025 on); where the
// runtime lacks it, the signature checks are skipped (said so in the output) and the rest runs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import {
  b64decode,
  b64encode,
  checkWitnesses,
  cosignatureTime,
  leafHash,
  nodeHash,
  parseCheckpoint,
  parseSignedNote,
  parseTlogProof,
  parseVerifierKey,
  parseWitnessKey,
  verifyEvent,
  verifyInclusion,
} from '../../api/query/ui/verify.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = (name) => readFileSync(join(here, 'fixtures', name));
const ORIGIN = 'auditlog.local/audit.events.p3';
const VKEY = fixture('auditlog.local.vkey').toString('utf8').trim();
const BUNDLES = [5, 1650].map((index) => ({
  index,
  canonical: fixture(`audit.events.p3.${index}.json`).toString('utf8'),
  canonicalBytes: new Uint8Array(fixture(`audit.events.p3.${index}.json`)),
  proof: fixture(`audit.events.p3.${index}.tlog-proof`).toString('utf8'),
}));
const [B] = BUNDLES;
const subtle = globalThis.crypto.subtle;

async function hasEd25519() {
  try {
    await subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
    return true;
  } catch {
    return false;
  }
}
const ED25519 = await hasEd25519();
const NO_ED = ED25519 ? false : `node ${process.version}'s WebCrypto has no Ed25519: signature checks skipped`;
if (!ED25519) console.log(`# ${NO_ED}`);

// ---- helpers -------------------------------------------------------------------------------

function splitProof(text) {
  const at = text.indexOf('\n\n');
  return { head: text.slice(0, at), checkpoint: text.slice(at + 2) };
}

function noteText(signed) {
  return signed.slice(0, signed.lastIndexOf('\n\n') + 1);
}

/** An Ed25519 signer of C2SP notes with `name`; returns {vkey, sign(text) -> signed note}. */
async function makeSigner(name) {
  const kp = await subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const pub = new Uint8Array(await subtle.exportKey('raw', kp.publicKey));
  const enc = new TextEncoder();
  const idInput = new Uint8Array([...enc.encode(name + '\n'), 0x01, ...pub]);
  const digest = new Uint8Array(await subtle.digest('SHA-256', idInput));
  const keyId = digest.slice(0, 4);
  const keyIdHex = Buffer.from(keyId).toString('hex');
  const vkey = `${name}+${keyIdHex}+${b64encode(new Uint8Array([0x01, ...pub]))}`;
  const sign = async (text, claimedKeyId = keyId) => {
    const sig = new Uint8Array(await subtle.sign({ name: 'Ed25519' }, kp.privateKey, enc.encode(text)));
    return `${text}\n\u2014 ${name} ${b64encode(new Uint8Array([...claimedKeyId, ...sig]))}\n`;
  };
  return { vkey, keyId, sign };
}

/** Reference RFC 9162 Merkle tree: MTH and audit paths, computed the slow obvious way. */
async function mth(leaves) {
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(await mth(leaves.slice(0, k)), await mth(leaves.slice(k)));
}
async function path(m, leaves) {
  if (leaves.length === 1) return [];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  if (m < k) return [...(await path(m, leaves.slice(0, k))), await mth(leaves.slice(k))];
  return [...(await path(m - k, leaves.slice(k))), await mth(leaves.slice(0, k))];
}

// ---- the real bundles verify -----------------------------------------------------------------

for (const bundle of BUNDLES) {
  test(`real bundle p3.${bundle.index} verifies`, { skip: NO_ED }, async () => {
    const r = await verifyEvent(bundle.canonical, bundle.proof, VKEY, ORIGIN, { leafIndex: bundle.index });
    assert.equal(r.reason, null);
    assert.equal(r.ok, true);
    const cp = parseCheckpoint(noteText(splitProof(bundle.proof).checkpoint));
    assert.equal(r.size, Number(cp.size));
    assert.equal(r.root, cp.rootB64);
    assert.equal(r.index, bundle.index);
    assert.equal(r.origin, ORIGIN);
  });

  test(`real bundle p3.${bundle.index}: inclusion alone verifies (no signature needed)`, async () => {
    const proof = await parseTlogProof(bundle.proof);
    const note = await parseSignedNote(proof.checkpoint);
    const cp = parseCheckpoint(note.text);
    assert.equal(cp.origin, ORIGIN);
    assert.equal(proof.index, BigInt(bundle.index));
    const r = await verifyInclusion(await leafHash(bundle.canonical), proof.index, cp.size, proof.hashes, cp.root);
    assert.deepEqual(r, { ok: true, reason: null });
    // text and its UTF-8 bytes hash the same
    assert.deepEqual(await leafHash(bundle.canonical), await leafHash(bundle.canonicalBytes));
  });
}

test('without origin or leaf index the real bundle still verifies', { skip: NO_ED }, async () => {
  const r = await verifyEvent(B.canonical, B.proof, VKEY);
  assert.equal(r.ok, true, r.reason);
});

test('the verifier key parses and its key id is checked', async () => {
  const k = await parseVerifierKey(VKEY + '\n');
  assert.equal(k.name, 'auditlog.local');
  assert.equal(k.keyIdHex, VKEY.split('+')[1]);
  assert.equal(k.publicKey.length, 32);
  const wrongId = VKEY.replace(/\+[0-9a-f]{8}\+/, '+00000000+');
  await assert.rejects(parseVerifierKey(wrongId), /does not match/);
  await assert.rejects(parseVerifierKey('auditlog.local'), /name\+keyid\+base64key/);
});

// ---- tamper cases: each must fail with a reason ---------------------------------------------

async function assertNotOk(promise, pattern) {
  const r = await promise;
  assert.equal(r.ok, false, 'tampered bundle verified');
  assert.equal(typeof r.reason, 'string');
  assert.ok(r.reason.length > 0);
  if (pattern) assert.match(r.reason, pattern);
  return r;
}

test('one changed byte in the canonical bytes', { skip: NO_ED }, async () => {
  const at = B.canonical.indexOf('ROLE_DOWNGRADE');
  assert.ok(at > 0);
  const tampered = B.canonical.slice(0, at) + 'X' + B.canonical.slice(at + 1);
  await assertNotOk(verifyEvent(tampered, B.proof, VKEY, ORIGIN, { leafIndex: B.index }), /not the checkpoint's root/);
  // also as bytes: flip one bit of the last byte
  const bytes = B.canonicalBytes.slice();
  bytes[bytes.length - 1] ^= 0x01;
  await assertNotOk(verifyEvent(bytes, B.proof, VKEY, ORIGIN), /root/);
  // a trailing newline is a change too
  await assertNotOk(verifyEvent(B.canonical + '\n', B.proof, VKEY, ORIGIN), /root/);
});

test('a wrong index in the proof', { skip: NO_ED }, async () => {
  const wrong = B.proof.replace(`index ${B.index}\n`, `index ${B.index + 1}\n`);
  assert.notEqual(wrong, B.proof);
  // without the event's leaf index the inclusion itself fails ...
  await assertNotOk(verifyEvent(B.canonical, wrong, VKEY, ORIGIN), /root|proof/);
  // ... and with it, the mismatch is named
  await assertNotOk(verifyEvent(B.canonical, wrong, VKEY, ORIGIN, { leafIndex: B.index }), /leaf index/);
  // the API's leaf index disagreeing with an honest proof
  await assertNotOk(verifyEvent(B.canonical, B.proof, VKEY, ORIGIN, { leafIndex: B.index + 1 }), /leaf index/);
  // an index outside the tree
  const outside = B.proof.replace(`index ${B.index}\n`, 'index 999999\n');
  await assertNotOk(verifyEvent(B.canonical, outside, VKEY, ORIGIN), /outside a tree/);
});

test('a flipped proof hash', { skip: NO_ED }, async () => {
  const { head, checkpoint } = splitProof(B.proof);
  const lines = head.split('\n');
  const h = b64decode(lines[3]);
  h[0] ^= 0x80;
  lines[3] = b64encode(h);
  const tampered = lines.join('\n') + '\n\n' + checkpoint;
  await assertNotOk(verifyEvent(B.canonical, tampered, VKEY, ORIGIN, { leafIndex: B.index }), /not the checkpoint's root/);
  // a dropped hash and an extra hash
  const dropped = lines.slice(0, -1).join('\n') + '\n\n' + checkpoint;
  await assertNotOk(verifyEvent(B.canonical, dropped, VKEY, ORIGIN), /hashes, want/);
  const extra = head + '\n' + lines[2] + '\n\n' + checkpoint;
  await assertNotOk(verifyEvent(B.canonical, extra, VKEY, ORIGIN), /hashes, want/);
});

test('a changed root line in the checkpoint (signature kept)', { skip: NO_ED }, async () => {
  const { head, checkpoint } = splitProof(B.proof);
  const lines = checkpoint.split('\n');
  const root = b64decode(lines[2]);
  root[31] ^= 0x01;
  lines[2] = b64encode(root);
  const tampered = head + '\n\n' + lines.join('\n');
  await assertNotOk(verifyEvent(B.canonical, tampered, VKEY, ORIGIN), /signature .* does not verify/);
  // a changed size line likewise
  const sized = checkpoint.replace(/^(.*\n)(\d+)\n/, (_, o, n) => `${o}${Number(n) + 1}\n`);
  assert.notEqual(sized, checkpoint);
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + sized, VKEY, ORIGIN), /does not verify/);
});

test('a note signed by another key', { skip: NO_ED }, async () => {
  const { head, checkpoint } = splitProof(B.proof);
  const other = await makeSigner('auditlog.local');
  // the same checkpoint text, re-signed by an attacker's key of the same name
  const resigned = await other.sign(noteText(checkpoint));
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + resigned, VKEY, ORIGIN), /not signed by the verifier key/);
  // ... claiming the real key id
  const realId = b64decode(checkpoint.trim().split(' ').pop()).slice(0, 4);
  const forged = await other.sign(noteText(checkpoint), realId);
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + forged, VKEY, ORIGIN), /does not verify/);
  // a forged tree (another root) signed by the attacker and checked with the attacker's key is
  // well signed, but the real proof does not lead to its root
  const cp = parseCheckpoint(noteText(checkpoint));
  const fakeRoot = new Uint8Array(32).fill(7);
  const fake = await other.sign(`${cp.origin}\n${cp.size}\n${b64encode(fakeRoot)}\n`);
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + fake, other.vkey, ORIGIN), /not the checkpoint's root/);
});

test('a wrong verifier key', { skip: NO_ED }, async () => {
  const other = await makeSigner('auditlog.local');
  await assertNotOk(verifyEvent(B.canonical, B.proof, other.vkey, ORIGIN), /not signed by the verifier key/);
  const renamed = await makeSigner('someone.else');
  await assertNotOk(verifyEvent(B.canonical, B.proof, renamed.vkey, ORIGIN), /not signed by the verifier key/);
  // the real name and key id, but another public key: the key id check catches it
  const parts = VKEY.split('+');
  const swapped = `${parts[0]}+${parts[1]}+${other.vkey.split('+').slice(2).join('+')}`;
  await assertNotOk(verifyEvent(B.canonical, B.proof, swapped, ORIGIN), /does not match/);
  await assertNotOk(verifyEvent(B.canonical, B.proof, '', ORIGIN), /verifier key/);
});

test('a wrong origin', { skip: NO_ED }, async () => {
  await assertNotOk(verifyEvent(B.canonical, B.proof, VKEY, 'auditlog.local/audit.events.p4'), /origin/);
});

test('malformed proofs and notes fail with a reason, never throw', async () => {
  const { head, checkpoint } = splitProof(B.proof);
  await assertNotOk(verifyEvent(B.canonical, 'garbage', VKEY, ORIGIN), /empty line/);
  await assertNotOk(verifyEvent(B.canonical, B.proof.replace('tlog-proof@v1', 'tlog-proof@v2'), VKEY, ORIGIN), /not "c2sp/);
  await assertNotOk(verifyEvent(B.canonical, B.proof.replace(`index ${B.index}`, `index 0${B.index}`), VKEY, ORIGIN), /leading zeros/);
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + checkpoint.replace('\u2014 ', '- '), VKEY, ORIGIN), /em dash/);
  await assertNotOk(verifyEvent(B.canonical, head + '\n\n' + checkpoint.trimEnd(), VKEY, ORIGIN), /newline/);
  await assertNotOk(verifyEvent(null, B.proof, VKEY, ORIGIN), /canonical/);
  await assertNotOk(verifyEvent(B.canonical, undefined, VKEY, ORIGIN), /proof/);
});

// ---- RFC 9162 inclusion against a reference tree ---------------------------------------------

test('verifyInclusion accepts every leaf of trees of size 1..20 and rejects wrong leaves', async () => {
  const enc = new TextEncoder();
  const all = await Promise.all(Array.from({ length: 20 }, (_, i) => leafHash(enc.encode(`entry ${i}`))));
  for (let size = 1; size <= 20; size++) {
    const leaves = all.slice(0, size);
    const root = await mth(leaves);
    for (let i = 0; i < size; i++) {
      const p = await path(i, leaves);
      assert.deepEqual(await verifyInclusion(leaves[i], i, size, p, root), { ok: true, reason: null }, `size ${size} index ${i}`);
      const other = leaves[(i + 1) % size];
      if (size > 1) assert.equal((await verifyInclusion(other, i, size, p, root)).ok, false);
      if (i + 1 < size) assert.equal((await verifyInclusion(leaves[i], i + 1, size, p, root)).ok, false);
    }
  }
});

test('large indices and sizes are handled exactly (BigInt)', async () => {
  const leaf = await leafHash('x');
  const r = await verifyInclusion(leaf, 2n ** 40n, 2n ** 40n + 1n, [leaf], leaf);
  assert.equal(r.ok, false);
  assert.match(r.reason, /hashes, want 1|root/);
});

// ---- witnesses' cosignatures: the vector made by transforms/cosignature.py --------------------
// fixtures/audit.events.p3.5.cosigned.tlog-proof and fixtures/witnesses.json come from
// tests/browser/make_cosigned_fixture.py (two witnesses, fixed keys and times).

const COSIGNED = fixture('audit.events.p3.5.cosigned.tlog-proof').toString('utf8');
const WITNESSES = JSON.parse(fixture('witnesses.json').toString('utf8'));
const [W1, W2] = WITNESSES.map((w) => w.vkey);
const cosignedNote = (proof = COSIGNED) => proof.slice(proof.indexOf('\n\n') + 2);

/** The proof with one byte of `witness`'s cosignature flipped (`at` counts from the blob's start). */
function flipCosignature(proof, witness, at) {
  const lines = proof.split('\n');
  const i = lines.findIndex((l) => l.startsWith(`\u2014 ${witness} `));
  assert.ok(i > 0, `no line of ${witness}`);
  const prefix = `\u2014 ${witness} `;
  const blob = b64decode(lines[i].slice(prefix.length));
  blob[at < 0 ? blob.length + at : at] ^= 0x01;
  lines[i] = prefix + b64encode(blob);
  return lines.join('\n');
}

test('witness keys parse; key ids use 0x04; a log key is refused as a witness key', async () => {
  const k = await parseWitnessKey(W1);
  assert.equal(k.name, 'witness.example/w1');
  assert.equal(k.keyIdHex, W1.split('+')[1]);
  assert.equal(k.publicKey.length, 32);
  await assert.rejects(parseWitnessKey(VKEY), /not a cosignature\/v1 key/);
  await assert.rejects(parseVerifierKey(W1), /not an Ed25519 key/);
  const [name, , b64] = W1.split('+');
  await assert.rejects(parseWitnessKey(`${name}+00000000+${b64}`), /does not match/);
});

test('the cosigned vector from transforms/cosignature.py verifies: both witnesses, their times', { skip: NO_ED }, async () => {
  // the log's own proof check is untouched by the extra lines
  const ev = await verifyEvent(B.canonical, COSIGNED, VKEY, ORIGIN, { leafIndex: B.index });
  assert.equal(ev.ok, true, ev.reason);
  const r = await checkWitnesses(cosignedNote(), [W1, W2], { logKey: VKEY });
  assert.equal(r.ok, true, r.reason);
  assert.equal(r.required, 2);
  assert.equal(r.verified, 2);
  assert.deepEqual(r.witnesses.map((w) => [w.name, w.state, w.time]), [
    ['witness.example/w1', 'verified', WITNESSES[0].time],
    ['witness.example/w2', 'verified', WITNESSES[1].time],
  ]);
  assert.deepEqual(r.others, []);
  assert.equal(cosignatureTime(WITNESSES[0].time), '2026-01-01T00:00:00Z');
  // one witness trusted: the other's line is reported as unchecked, not counted
  const one = await checkWitnesses(cosignedNote(), [W1], { logKey: VKEY });
  assert.equal(one.ok, true, one.reason);
  assert.deepEqual(one.others.map((o) => o.name), ['witness.example/w2']);
});

test('a flipped byte in a cosignature fails naming the witness, even when enough others verify', { skip: NO_ED }, async () => {
  for (const at of [-1, 4, 12]) { // the signature's last byte, the time, the signature's first byte
    const tampered = cosignedNote(flipCosignature(COSIGNED, 'witness.example/w2', at));
    const r = await checkWitnesses(tampered, [W1, W2], { logKey: VKEY, minWitnesses: 1 });
    assert.equal(r.ok, false);
    assert.match(r.reason, /witness witness\.example\/w2: its cosignature does not verify/);
    assert.deepEqual(r.witnesses.map((w) => w.state), ['verified', 'not-verified']);
  }
  // a flipped key id byte: the line is no longer under the trusted key
  const r = await checkWitnesses(cosignedNote(flipCosignature(COSIGNED, 'witness.example/w1', 0)), [W1], { logKey: VKEY });
  assert.equal(r.ok, false);
  assert.equal(r.witnesses[0].state, 'not-verified');
  assert.match(r.reason, /only 0 of the required 1 .*witness witness\.example\/w1: its cosignature is by key id/);
});

test('one witness key pinned under two names counts once toward the minimum', { skip: NO_ED }, async () => {
  // a witness that signs under a second name with the same key is still one witness
  const pair = await globalThis.crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const pub = new Uint8Array(await globalThis.crypto.subtle.exportKey('raw', pair.publicKey));
  const note = cosignedNote(B.proof);
  const body = note.slice(0, note.indexOf('\n\n') + 1);
  const lines = [];
  const keys = [];
  for (const name of ['one.example/w', 'two.example/w']) {
    const idInput = new Uint8Array([...new TextEncoder().encode(`${name}\n`), 0x04, ...pub]);
    const id = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', idInput)).slice(0, 4);
    keys.push(`${name}+${Buffer.from(id).toString('hex')}+${b64encode(new Uint8Array([0x04, ...pub]))}`);
    const time = new Uint8Array(8);
    new DataView(time.buffer).setBigUint64(0, 1767225600n);
    const message = new Uint8Array([...new TextEncoder().encode('cosignature/v1\ntime 1767225600\n'), ...new TextEncoder().encode(body)]);
    const sig = new Uint8Array(await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, pair.privateKey, message));
    lines.push(`\u2014 ${name} ${b64encode(new Uint8Array([...id, ...time, ...sig]))}\n`);
  }
  const twice = note + lines.join('');
  const r = await checkWitnesses(twice, keys, { logKey: VKEY, minWitnesses: 2 });
  assert.equal(r.ok, false);
  assert.equal(r.verified, 1);
  assert.deepEqual(r.witnesses.map((w) => [w.name, w.state]), [['one.example/w', 'verified']]);
  assert.equal((await checkWitnesses(twice, keys, { logKey: VKEY, minWitnesses: 1 })).ok, true);
});

test('a wrong, missing or extra witness key: not verified, naming the witness', { skip: NO_ED }, async () => {
  const other = await (async () => {
    // the same name with another key (0x04 ‖ 32 bytes of 7s), key id computed like the witness's
    const pub = new Uint8Array(32).fill(7);
    const idInput = new Uint8Array([...new TextEncoder().encode('witness.example/w1\n'), 0x04, ...pub]);
    const id = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', idInput)).slice(0, 4);
    return `witness.example/w1+${Buffer.from(id).toString('hex')}+${b64encode(new Uint8Array([0x04, ...pub]))}`;
  })();
  const wrong = await checkWitnesses(cosignedNote(), [other], { logKey: VKEY });
  assert.equal(wrong.ok, false);
  assert.equal(wrong.witnesses[0].state, 'not-verified');
  assert.match(wrong.reason, /witness witness\.example\/w1: its cosignature is by key id d7ec3267, not the trusted key's/);
  // a checkpoint no witness cosigned
  const bare = await checkWitnesses(cosignedNote(B.proof), [W1], { logKey: VKEY });
  assert.equal(bare.ok, false);
  assert.equal(bare.witnesses[0].state, 'missing');
  assert.match(bare.reason, /no cosignature from this witness/);
  // ... which is fine when none are required
  assert.equal((await checkWitnesses(cosignedNote(B.proof), [W1], { minWitnesses: 0 })).ok, true);
  // more required than trusted
  const more = await checkWitnesses(cosignedNote(), [W1], { minWitnesses: 2 });
  assert.equal(more.ok, false);
  assert.match(more.reason, /2 witness cosignature\(s\) required, but only 1/);
  // no witness keys at all, default minimum: nothing to check, not a failure
  const none = await checkWitnesses(cosignedNote(), [], { logKey: VKEY });
  assert.equal(none.ok, true);
  assert.equal(none.required, 0);
  assert.deepEqual(none.others.map((o) => o.name), ['witness.example/w1', 'witness.example/w2']);
  // a garbled note never throws
  const garbled = await checkWitnesses('not a note', [W1]);
  assert.equal(garbled.ok, false);
});
