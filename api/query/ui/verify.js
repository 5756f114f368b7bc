// In-browser verification of an auditlog event's inclusion proof, with WebCrypto only.
//
// The same module runs in the Compliance UI and under node (>= 20 for Ed25519): every export is
// a pure async function over strings and bytes, with no DOM and no network.
//
//   leaf  = SHA-256(0x00 ‖ canonical UTF-8 bytes)                    RFC 9162 §2.1.1
//   node  = SHA-256(0x01 ‖ left ‖ right)
//   proof = c2sp.org/tlog-proof@v1: header, [extra B64], "index N", sibling hashes (leaf's first),
//           an empty line, then the signed checkpoint verbatim
//   checkpoint = C2SP signed note: origin, decimal size, base64 root, [extensions], empty line,
//           "— <name> <base64(4-byte big-endian key id ‖ 64-byte Ed25519 signature)>" lines
//   verifier key = name+<8 hex key id>+base64(0x01 ‖ 32-byte Ed25519 public key),
//           key id = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[0:4]
//   cosignature = C2SP tlog-cosignature (cosignature/v1), a witness's line on the same note:
//           "— <witness> <base64(key id ‖ 8-byte big-endian seconds ‖ 64-byte Ed25519 signature)>"
//           over "cosignature/v1\ntime <seconds>\n" ‖ checkpoint body; witness key =
//           name+<8 hex key id>+base64(0x04 ‖ public key), key id = SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[0:4]
//           (transforms/cosignature.py is the reference)
//
// One file of about 500 lines, on purpose: it is the whole of what an auditor must trust in the
// browser, so it can be read top to bottom, hashed and vendored as one script, and it imports
// nothing.

export const PROOF_HEADER = 'c2sp.org/tlog-proof@v1';
const SIG_PREFIX = '\u2014 '; // em dash and a space
const ALG_ED25519 = 0x01;
const ALG_COSIGNATURE_V1 = 0x04;
const COSIGNATURE_HEADER = 'cosignature/v1';
const TIMESTAMP_SIZE = 8;
const ED25519_SIGNATURE_SIZE = 64;
const HASH_SIZE = 32;
const MAX_NOTE_SIZE = 1_000_000;
const MAX_SIGNATURES = 100;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A verification failure with a reason meant for people. */
export class VerifyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'VerifyError';
  }
}

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) {
    throw new VerifyError(
      'WebCrypto is not available here (browsers offer it only to secure contexts: https, localhost or 127.0.0.1)',
    );
  }
  return s;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of a string; byte arrays pass through unchanged. */
export function utf8(data) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new VerifyError('expected text or bytes');
}

/** Strict base64 (standard alphabet, padded) to bytes; throws VerifyError naming `what`. */
export function b64decode(text, what = 'value') {
  if (typeof text !== 'string' || !BASE64.test(text)) {
    throw new VerifyError(`${what} ${JSON.stringify(String(text).slice(0, 80))} is not valid base64`);
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest('SHA-256', bytes));
}

/** RFC 9162 leaf hash: SHA-256(0x00 ‖ entry). `entry` is text (hashed as UTF-8) or bytes. */
export async function leafHash(entry) {
  return sha256(concat(Uint8Array.of(0x00), utf8(entry)));
}

/** RFC 9162 interior node hash: SHA-256(0x01 ‖ left ‖ right). */
export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(0x01), left, right));
}

function checkName(name) {
  if (!name || /\s/u.test(name) || name.includes('+')) {
    throw new VerifyError(`key name ${JSON.stringify(name)} must be non-empty with no spaces and no '+'`);
  }
}

async function computeKeyId(name, publicKey, alg = ALG_ED25519) {
  const digest = await sha256(concat(encoder.encode(name + '\n'), Uint8Array.of(alg), publicKey));
  return ((digest[0] << 24) | (digest[1] << 16) | (digest[2] << 8) | digest[3]) >>> 0;
}

/**
 * Parses a verifier key `name+hexkeyid+base64(0x01 ‖ pubkey)` and checks its key id.
 * Returns {name, keyId (uint32), keyIdHex, publicKey (32 bytes), text}.
 */
export async function parseVerifierKey(vkey) {
  return parsePublicKey(vkey, ALG_ED25519, 'verifier key', 'an Ed25519 key (0x01 ‖ 32 bytes)');
}

/**
 * Parses `name+hexkeyid+base64(alg ‖ pubkey)` and checks its key id (SHA-256(name ‖ 0x0A ‖ alg ‖
 * key)[0:4]); `what` and `kind` word the errors. Shared by log keys (0x01) and witness keys (0x04).
 */
async function parsePublicKey(vkey, alg, what, kind) {
  if (typeof vkey !== 'string') throw new VerifyError(`${what} is missing`);
  const text = vkey.trim();
  // The base64 may itself contain '+': split off only the name and the key id.
  const first = text.indexOf('+');
  const second = first < 0 ? -1 : text.indexOf('+', first + 1);
  if (first < 0 || second < 0) {
    throw new VerifyError(`${what} ${JSON.stringify(text.slice(0, 80))} is not name+keyid+base64key`);
  }
  const name = text.slice(0, first);
  const keyIdHex = text.slice(first + 1, second);
  checkName(name);
  const raw = b64decode(text.slice(second + 1), what);
  if (raw.length !== 33 || raw[0] !== alg) {
    throw new VerifyError(`${what} for ${JSON.stringify(name)} is not ${kind}`);
  }
  if (!/^[0-9a-fA-F]{8}$/.test(keyIdHex)) {
    throw new VerifyError(`${what} id ${JSON.stringify(keyIdHex)} is not 8 hexadecimal digits`);
  }
  const publicKey = raw.slice(1);
  const keyId = await computeKeyId(name, publicKey, alg);
  if (parseInt(keyIdHex, 16) !== keyId) {
    throw new VerifyError(`${what} id ${keyIdHex} does not match the key for ${JSON.stringify(name)}`);
  }
  return { name, keyId, keyIdHex: keyId.toString(16).padStart(8, '0'), publicKey, text };
}

function checkNoteText(text) {
  if (!text.endsWith('\n')) throw new VerifyError('note text must end with a newline');
  for (const ch of text) {
    if (ch < ' ' && ch !== '\n') {
      throw new VerifyError(`note text contains control character U+${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
    }
  }
}

/**
 * Splits a C2SP signed note into its text (up to and including the newline before the empty
 * line: the signed bytes) and its signature lines. Signatures are parsed, not checked.
 * Returns {text, signatures: [{name, keyId, keyIdHex, signature}]}.
 */
export async function parseSignedNote(message) {
  if (typeof message !== 'string') throw new VerifyError('signed note is missing');
  if (message.length > MAX_NOTE_SIZE) throw new VerifyError('signed note is too large');
  const split = message.lastIndexOf('\n\n');
  if (split < 0) throw new VerifyError('note has no empty line between its text and its signatures');
  const text = message.slice(0, split + 1);
  const sigBlock = message.slice(split + 2);
  checkNoteText(text);
  if (!sigBlock.endsWith('\n')) throw new VerifyError('note signature block must end with a newline');
  const lines = sigBlock.slice(0, -1).split('\n');
  if (lines.length > MAX_SIGNATURES) throw new VerifyError(`note has more than ${MAX_SIGNATURES} signatures`);
  const signatures = [];
  for (const line of lines) {
    if (!line.startsWith(SIG_PREFIX)) {
      throw new VerifyError(`signature line ${JSON.stringify(line.slice(0, 80))} does not start with an em dash and a space`);
    }
    const rest = line.slice(SIG_PREFIX.length);
    const sp = rest.indexOf(' ');
    const name = sp < 0 ? '' : rest.slice(0, sp);
    const b64 = sp < 0 ? '' : rest.slice(sp + 1);
    if (!name || !b64 || b64.includes(' ')) {
      throw new VerifyError(`signature line ${JSON.stringify(line.slice(0, 80))} is not '— name signature'`);
    }
    checkName(name);
    const blob = b64decode(b64, `signature by ${name}`);
    if (blob.length < 5) throw new VerifyError(`signature by ${name} is too short (${blob.length} bytes)`);
    const keyId = ((blob[0] << 24) | (blob[1] << 16) | (blob[2] << 8) | blob[3]) >>> 0;
    signatures.push({ name, keyId, keyIdHex: keyId.toString(16).padStart(8, '0'), signature: blob.slice(4) });
  }
  return { text, signatures };
}

/**
 * Parses a checkpoint body (a note's text): origin, size, root, extension lines.
 * Returns {origin, size (BigInt), root (32 bytes), rootB64, extensions}.
 */
export function parseCheckpoint(text) {
  if (!text.endsWith('\n')) throw new VerifyError('checkpoint text must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw new VerifyError(`checkpoint has ${lines.length} lines, needs origin, size and root`);
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin) throw new VerifyError('checkpoint origin is empty');
  if (!DECIMAL.test(sizeText)) {
    throw new VerifyError(`checkpoint size ${JSON.stringify(sizeText)} is not a decimal without leading zeros`);
  }
  const root = b64decode(rootText, 'checkpoint root');
  if (root.length !== HASH_SIZE) throw new VerifyError(`checkpoint root is ${root.length} bytes, not ${HASH_SIZE}`);
  return { origin, size: BigInt(sizeText), root, rootB64: rootText, extensions };
}

async function importEd25519(publicKey) {
  try {
    return await subtle().importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
  } catch (e) {
    if (e instanceof VerifyError) throw e;
    throw new VerifyError(`this browser's WebCrypto cannot use Ed25519 keys (${e && e.message ? e.message : e})`);
  }
}

/**
 * Checks the note's signature by `key` (from parseVerifierKey) over the note text with
 * WebCrypto Ed25519. Returns {ok, reason}.
 */
export async function verifyNoteSignature(note, key) {
  const mine = note.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
  if (mine.length === 0) {
    const by = note.signatures.map((s) => `${s.name}/${s.keyIdHex}`).join(', ') || 'nobody';
    return { ok: false, reason: `checkpoint is not signed by the verifier key ${key.name}/${key.keyIdHex} (signed by: ${by})` };
  }
  const pub = await importEd25519(key.publicKey);
  const body = encoder.encode(note.text);
  for (const sig of mine) {
    const good = await subtle().verify({ name: 'Ed25519' }, pub, sig.signature, body);
    if (!good) return { ok: false, reason: `checkpoint signature by ${key.name}/${key.keyIdHex} does not verify` };
  }
  return { ok: true, reason: null };
}

/**
 * Parses a c2sp.org/tlog-proof@v1 text.
 * Returns {index (BigInt), hashes: [32-byte arrays], extra (bytes|null), checkpoint (signed note text)}.
 */
export async function parseTlogProof(text) {
  if (typeof text !== 'string') throw new VerifyError('proof is missing');
  const split = text.indexOf('\n\n');
  if (split < 0) throw new VerifyError('proof has no empty line before its checkpoint');
  const lines = text.slice(0, split).split('\n');
  const checkpoint = text.slice(split + 2);
  if (lines[0] !== PROOF_HEADER) {
    throw new VerifyError(`proof starts with ${JSON.stringify(lines[0].slice(0, 80))}, not ${JSON.stringify(PROOF_HEADER)}`);
  }
  let pos = 1;
  let extra = null;
  if (pos < lines.length && lines[pos].startsWith('extra ')) {
    extra = b64decode(lines[pos].slice('extra '.length), 'proof extra data');
    pos += 1;
  }
  if (pos >= lines.length || !lines[pos].startsWith('index ')) throw new VerifyError("proof has no 'index N' line");
  const indexText = lines[pos].slice('index '.length);
  if (!DECIMAL.test(indexText)) {
    throw new VerifyError(`proof index ${JSON.stringify(indexText)} is not a decimal without leading zeros`);
  }
  const hashes = lines.slice(pos + 1).map((line, i) => {
    const h = b64decode(line, `inclusion proof line ${i + 1}`);
    if (h.length !== HASH_SIZE) throw new VerifyError(`inclusion proof line ${i + 1} is ${h.length} bytes, not a SHA-256 hash`);
    return h;
  });
  return { index: BigInt(indexText), hashes, extra, checkpoint };
}

function inclusionLength(index, size) {
  // RFC 9162 §2.1.3.1: the inner part (bit length of index XOR (size-1)) plus the border part
  // (number of set bits of index above it).
  let inner = 0;
  for (let x = index ^ (size - 1n); x > 0n; x >>= 1n) inner++;
  let border = 0;
  for (let x = index >> BigInt(inner); x > 0n; x >>= 1n) if (x & 1n) border++;
  return inner + border;
}

/**
 * RFC 9162 §2.1.3.2: does `leaf` (a leaf hash) sit at `index` of the tree of `size` whose root
 * is `root`, given the inclusion `proof` hashes? index and size are BigInt or safe integers.
 * Returns {ok, reason}.
 */
export async function verifyInclusion(leaf, index, size, proof, root) {
  const idx = BigInt(index);
  const n = BigInt(size);
  if (!(leaf instanceof Uint8Array) || leaf.length !== HASH_SIZE) return { ok: false, reason: 'leaf hash is not 32 bytes' };
  if (!(root instanceof Uint8Array) || root.length !== HASH_SIZE) return { ok: false, reason: 'root hash is not 32 bytes' };
  if (idx < 0n || idx >= n) return { ok: false, reason: `leaf index ${idx} is outside a tree of size ${n}` };
  const want = inclusionLength(idx, n);
  if (proof.length !== want) {
    return { ok: false, reason: `inclusion proof for index ${idx} in size ${n} has ${proof.length} hashes, want ${want}` };
  }
  let fn = idx;
  let sn = n - 1n;
  let r = leaf;
  for (const p of proof) {
    if (!(p instanceof Uint8Array) || p.length !== HASH_SIZE) return { ok: false, reason: 'inclusion proof hash is not 32 bytes' };
    if (sn === 0n) return { ok: false, reason: 'inclusion proof is longer than the path to the root' };
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) return { ok: false, reason: 'inclusion proof is shorter than the path to the root' };
  if (!equalBytes(r, root)) {
    return { ok: false, reason: `the proof leads to root ${b64encode(r)}, not the checkpoint's root ${b64encode(root)}` };
  }
  return { ok: true, reason: null };
}

/**
 * Verifies one event end to end: the checkpoint in `proofText` is signed by `verifierKey`, its
 * origin is `origin` (when given), the proof's index is `options.leafIndex` (when given), and
 * SHA-256(0x00 ‖ canonical) is included at that index under the checkpoint's root.
 *
 * Never throws: returns {ok, reason, size, root, index, origin, leaf}; reason is null when ok.
 * size is a Number when it fits exactly, otherwise a decimal string; root is base64.
 */
export async function verifyEvent(canonical, proofText, verifierKey, origin, options = {}) {
  const out = { ok: false, reason: null, size: null, root: null, index: null, origin: null, leaf: null };
  try {
    if (canonical === undefined || canonical === null) throw new VerifyError('the event has no canonical bytes');
    const key = await parseVerifierKey(verifierKey);
    const proof = await parseTlogProof(proofText);
    out.index = toNumber(proof.index);
    const note = await parseSignedNote(proof.checkpoint);
    const sig = await verifyNoteSignature(note, key);
    if (!sig.ok) throw new VerifyError(sig.reason);
    const cp = parseCheckpoint(note.text);
    out.size = toNumber(cp.size);
    out.root = cp.rootB64;
    out.origin = cp.origin;
    if (origin !== undefined && origin !== null && cp.origin !== origin) {
      throw new VerifyError(`checkpoint origin ${JSON.stringify(cp.origin)} is not the expected ${JSON.stringify(origin)}`);
    }
    const li = options.leafIndex;
    if (li !== undefined && li !== null && String(li) !== proof.index.toString()) {
      throw new VerifyError(`proof index ${proof.index} is not the event's leaf index ${li}`);
    }
    const leaf = await leafHash(canonical);
    out.leaf = b64encode(leaf);
    const inc = await verifyInclusion(leaf, proof.index, cp.size, proof.hashes, cp.root);
    if (!inc.ok) throw new VerifyError(inc.reason);
    out.ok = true;
    return out;
  } catch (e) {
    out.ok = false;
    out.reason = e instanceof VerifyError ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
    return out;
  }
}

function toNumber(big) {
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big.toString();
}

// ---- witnesses' cosignatures (C2SP tlog-cosignature, cosignature/v1) ---------------------------

/**
 * Parses a witness's verifier key `name+hexkeyid+base64(0x04 ‖ pubkey)` and checks its key id
 * (SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[0:4]). Returns {name, keyId, keyIdHex, publicKey, text}.
 */
export async function parseWitnessKey(vkey) {
  return parsePublicKey(
    vkey,
    ALG_COSIGNATURE_V1,
    'witness key',
    "a cosignature/v1 key (0x04 ‖ 32 bytes); a log's key (0x01) cannot stand for a witness",
  );
}

/** The bytes a witness signs: "cosignature/v1", "time T", then the checkpoint body. */
export function cosignedMessage(checkpointText, timestamp) {
  return concat(encoder.encode(`${COSIGNATURE_HEADER}\ntime ${BigInt(timestamp)}\n`), encoder.encode(checkpointText));
}

/**
 * Checks one cosignature (the bytes after the key id: 8-byte time ‖ Ed25519 signature) by the
 * witness `key` (from parseWitnessKey) over the checkpoint text `noteText`.
 * Returns {ok, time (seconds, Number), reason}.
 */
export async function verifyCosignature(noteText, signature, key) {
  if (!(signature instanceof Uint8Array) || signature.length !== TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE) {
    const n = signature && signature.length;
    return { ok: false, time: null, reason: `its cosignature is ${n} bytes, not a time (8) and an Ed25519 signature (64)` };
  }
  const t = new DataView(signature.buffer, signature.byteOffset, TIMESTAMP_SIZE).getBigUint64(0);
  const time = toNumber(t);
  if (t >= 2n ** 63n) return { ok: false, time: null, reason: `its cosignature time ${t} is out of range` };
  const pub = await importEd25519(key.publicKey);
  const good = await subtle().verify({ name: 'Ed25519' }, pub, signature.slice(TIMESTAMP_SIZE), cosignedMessage(noteText, t));
  if (!good) return { ok: false, time, reason: 'its cosignature does not verify over this checkpoint' };
  return { ok: true, time, reason: null };
}

/** Seconds since the epoch as an ISO-8601 UTC time, or the number when out of Date's range. */
export function cosignatureTime(seconds) {
  const d = new Date(Number(seconds) * 1000);
  return Number.isNaN(d.getTime()) ? String(seconds) : d.toISOString().replace('.000Z', 'Z');
}

/**
 * Checks the witnesses' cosignatures on a signed checkpoint note against the trusted witness keys
 * (strings), as `auditlog verify-proof --witness … --min-witnesses N` does: a trusted witness's
 * cosignature line (matched by name and key id) that does not verify fails the check, and fewer
 * than `minWitnesses` (default: every trusted key) valid cosignatures fail it.
 *
 * Never throws. Returns {ok, required, verified, reason, witnesses, others}: one entry per trusted
 * key {name, keyIdHex, key, state: 'verified'|'not-verified'|'missing', time, reason}, and the
 * note's other signature lines (neither the log's, `options.logKey`, nor a trusted witness's) as
 * {name, keyIdHex}.
 */
export async function checkWitnesses(signedNote, witnessKeys, options = {}) {
  const out = { ok: false, required: 0, verified: 0, reason: null, witnesses: [], others: [] };
  try {
    const note = await parseSignedNote(signedNote);
    parseCheckpoint(note.text); // only checkpoints are cosigned
    let logKey = null;
    if (options.logKey) {
      try {
        logKey = await parseVerifierKey(options.logKey);
      } catch {
        logKey = null;
      }
    }
    const keys = [];
    const seen = new Set();
    for (const text of witnessKeys || []) {
      let key;
      try {
        key = await parseWitnessKey(text);
      } catch (e) {
        const name = String(text).split('+')[0] || '?';
        out.witnesses.push({ name, keyIdHex: null, key: text, state: 'not-verified', time: null, reason: `its key is not usable: ${e.message}`, bad: true });
        continue;
      }
      // one witness counts once, however often (or under however many names) its key is pinned,
      // as transforms/cosignature.py counts them
      const id = b64encode(key.publicKey);
      if (seen.has(id)) continue;
      seen.add(id);
      keys.push(key);
    }
    const trusted = keys.length + out.witnesses.length;
    const min = options.minWitnesses === undefined || options.minWitnesses === null ? trusted : Number(options.minWitnesses);
    out.required = min;
    for (const key of keys) {
      const entry = { name: key.name, keyIdHex: key.keyIdHex, key: key.text, state: 'missing', time: null, reason: null, bad: false };
      out.witnesses.push(entry);
      const mine = note.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
      if (mine.length === 0) {
        const other = note.signatures.filter((s) => s.name === key.name);
        if (other.length) {
          entry.state = 'not-verified';
          entry.reason = `its cosignature is by key id ${other.map((s) => s.keyIdHex).join(', ')}, not the trusted key's ${key.keyIdHex}`;
        } else {
          entry.reason = 'no cosignature from this witness on this checkpoint';
        }
        continue;
      }
      let time = null;
      for (const sig of mine) {
        const r = await verifyCosignature(note.text, sig.signature, key);
        if (!r.ok) {
          entry.state = 'not-verified';
          entry.reason = r.time === null ? r.reason : `${r.reason} (it claims time ${cosignatureTime(r.time)})`;
          entry.bad = true;
          break;
        }
        time = time === null || r.time < time ? r.time : time;
      }
      if (!entry.bad) {
        entry.state = 'verified';
        entry.time = time;
        out.verified += 1;
      }
    }
    for (const s of note.signatures) {
      if (logKey && s.name === logKey.name && s.keyId === logKey.keyId) continue;
      if (keys.some((k) => k.name === s.name && k.keyId === s.keyId)) continue;
      if (keys.some((k) => k.name === s.name)) continue; // reported with that witness above
      out.others.push({ name: s.name, keyIdHex: s.keyIdHex });
    }
    const why = (list) => list.map((w) => `witness ${w.name}: ${w.reason}`).join('; ');
    const bad = out.witnesses.filter((w) => w.bad);
    const where = (() => {
      const cp = parseCheckpoint(note.text);
      return `${cp.origin} at size ${cp.size}`;
    })();
    if (!Number.isInteger(min) || min < 0) {
      out.reason = `the required number of witnesses ${JSON.stringify(options.minWitnesses)} is not a whole number`;
    } else if (min > trusted) {
      out.reason = `${min} witness cosignature(s) required, but only ${trusted} witness key(s) are trusted`;
    } else if (bad.length) {
      out.reason = `${why(bad)} (${where})`;
    } else if (out.verified < min) {
      out.reason = `only ${out.verified} of the required ${min} witness cosignature(s) verify on ${where}: ${why(out.witnesses.filter((w) => w.state !== 'verified'))}`;
    } else {
      out.ok = true;
    }
    return out;
  } catch (e) {
    out.ok = false;
    out.reason = e instanceof VerifyError ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
    return out;
  }
}
