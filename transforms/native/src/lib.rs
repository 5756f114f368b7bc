//! auditlog's compiled event core: parse, validate, seal PII, canonicalise (RFC 8785), leaf hash.
//!
//! A faster path for what `schemas/events.py` (`parse_event`, `canonical_entry`) and
//! `transforms/merkle.py` (`leaf_hash`) do, never a second definition of it. It accepts only
//! records it can prove it handles byte for byte as the Python reference does, and *refers*
//! every other record (invalid, unusual, anything near a dead-letter case) back to Python,
//! which stays the one source of dead-letter reasons (tests/unit/test_native_core.py holds the
//! two together). The validation rules are read at start from the same JSON Schema file
//! (`schemas/audit_event.schema.json`); a keyword this interpreter does not know makes `Core`
//! refuse to load, so the Python path is then used instead of a partial check.
//!
//! Deliberately conservative, beyond the schema: no floats, no `-0`, no integer beyond ±2**53,
//! no duplicate keys, no lone surrogates, nesting of at most 64 levels, no control characters
//! in any schema-checked string (Python's `\s` and `$` differ from Rust's on those), the PII
//! subject and the reserved-name fields in printable ASCII, emails (whose lookup hash lowercases
//! them) in ASCII, and only times whose conversion to UTC stays within the years 1000..9999.

mod json;
mod merkle;
mod proto;
mod rows;
mod schema;
mod time;

use aes_gcm_siv::aead::Aead;
use aes_gcm_siv::aead::Payload;
use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use base64::Engine;
use blake2::digest::consts::{U12, U32};
use blake2::digest::Mac;
use blake2::Blake2bMac;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sha2::{Digest, Sha256};

use crate::json::{parse_json, utf16_cmp, write_string, write_value, Value};
use crate::schema::{check, compile, node_at, set_member, str_at, take_at, Node};
use crate::time::normalize_time;

// ------------------------------------------------------------------------------ the core

/// One accepted record: its normalised event with the PII values taken out.
#[pyclass(frozen, module = "auditlog_native")]
struct Parsed {
    doc: Value,
    pii: Vec<(String, String)>, // (field path, plaintext), in the order of the core's pii_fields
    #[pyo3(get)]
    tenant_id: String,
    #[pyo3(get)]
    event_id: String,
    #[pyo3(get)]
    subject: String,
    #[pyo3(get)]
    action: String,
    #[pyo3(get)]
    occurred_at: String,
}

/// The names of the fields the core reads and writes, as the Python side owns them (a dict).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Names {
    tenant: String,
    event: String,
    subject: String,
    action: String,
    time: String,
    version: String,
    metadata: String,
    retention: String,
    pii: String,
}

#[pyclass(frozen, module = "auditlog_native")]
struct Core {
    schema: Node,
    pii_fields: Vec<String>,
    names: Names,
    version: i64,
    metadata_limit: usize,
    record_limit: usize,
    reserved: Vec<(String, String)>, // (field, lower-case prefix)
    nonce_person: Vec<u8>,
    lookup_person: Vec<u8>,
}

impl Core {
    fn admit(&self, raw: &[u8]) -> Option<Parsed> {
        if raw.len() > self.record_limit {
            return None;
        }
        let mut doc = parse_json(raw)?;
        if !check(&self.schema, &doc) {
            return None;
        }
        let text = |path: &str| str_at(&doc, path).map(str::to_string);
        let subject = text(&self.names.subject)?;
        if !subject.bytes().all(|c| (0x20..0x7f).contains(&c)) {
            return None; // Python's isprintable() and NFKC: the reference decides
        }
        for (field, prefix) in &self.reserved {
            if let Some(v) = str_at(&doc, field) {
                if !v.is_ascii() || v.trim().to_ascii_lowercase().starts_with(prefix.as_str()) {
                    return None; // a reserved name: only the service's signed records may use it
                }
            }
        }
        let occurred_at = normalize_time(str_at(&doc, &self.names.time)?)?;
        let (tenant_id, event_id, action) = (text(&self.names.tenant)?, text(&self.names.event)?, text(&self.names.action)?);
        if let Some(meta) = doc.get(&self.names.metadata) {
            let mut out = Vec::new();
            write_value(meta, &mut out);
            if out.len() > self.metadata_limit {
                return None;
            }
        }
        let mut pii = Vec::new();
        for path in &self.pii_fields {
            if let Some(value) = take_at(&mut doc, path) {
                let Value::Str(s) = value else { return None };
                if path.ends_with("email") && !s.is_ascii() {
                    return None; // its lookup form lowercases it: ASCII only here
                }
                pii.push((path.clone(), s));
            }
        }
        set_member(&mut doc, &self.names.time, Value::Str(occurred_at.clone()));
        set_member(&mut doc, &self.names.version, Value::Int(self.version));
        Some(Parsed { doc, pii, tenant_id, event_id, subject, action, occurred_at })
    }

    fn blake2b(&self, key: &[u8], person: &[u8], msg: &[u8], out: &mut [u8]) -> PyResult<()> {
        let bad = |_| PyValueError::new_err("bad BLAKE2b key or personalisation");
        match out.len() {
            12 => {
                let mut mac = Blake2bMac::<U12>::new_with_salt_and_personal(Some(key), b"", person).map_err(bad)?;
                Mac::update(&mut mac, msg);
                out.copy_from_slice(&mac.finalize().into_bytes());
            }
            32 => {
                let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(Some(key), b"", person).map_err(bad)?;
                Mac::update(&mut mac, msg);
                out.copy_from_slice(&mac.finalize().into_bytes());
            }
            _ => return Err(PyValueError::new_err("unsupported BLAKE2b size")),
        }
        Ok(())
    }

    fn sealed(&self, keys: Option<(&Aes256GcmSiv, &[u8], &str)>, parsed: &Parsed, field: &str, value: &str) -> PyResult<Value> {
        let Some((cipher, mac_key, key_id)) = keys else {
            return Ok(Value::Obj(vec![("erased".into(), Value::Bool(true))]));
        };
        let ad = [parsed.tenant_id.as_str(), parsed.event_id.as_str(), field].join("\n").into_bytes();
        let mut nonce = [0u8; 12];
        self.blake2b(mac_key, &self.nonce_person, &ad, &mut nonce)?;
        let ct = cipher
            .encrypt(&nonce.into(), Payload { msg: value.as_bytes(), aad: &ad })
            .map_err(|_| PyValueError::new_err("AES-GCM-SIV refused the value"))?;
        let mut blob = Vec::with_capacity(nonce.len() + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        // transforms/pii.py normalize_for_lookup: emails compare trimmed and lower-cased.
        let mut lookup = Vec::with_capacity(field.len() + 1 + value.len());
        lookup.extend_from_slice(field.as_bytes());
        lookup.push(b'\n');
        if field.ends_with("email") {
            lookup.extend(value.trim().bytes().map(|c| c.to_ascii_lowercase()));
        } else {
            lookup.extend_from_slice(value.as_bytes());
        }
        let mut kh = [0u8; 32];
        self.blake2b(mac_key, &self.lookup_person, &lookup, &mut kh)?;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hex: String = kh.iter().flat_map(|b| [HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]).collect();
        Ok(Value::Obj(vec![
            ("ct".into(), Value::Str(base64::engine::general_purpose::STANDARD.encode(blob))),
            ("kh".into(), Value::Str(hex)),
            ("kid".into(), Value::Str(key_id.to_string())),
        ]))
    }

    fn entry_bytes(
        &self,
        parsed: &Parsed,
        keys: Option<(&[u8], &[u8], &str)>,
        retention_class: &str,
        until: &str,
    ) -> PyResult<(Vec<u8>, [u8; 32])> {
        let Value::Obj(members) = &parsed.doc else { unreachable!("an admitted event is an object") };
        let mut extra: Vec<(String, Value)> = Vec::new();
        if !parsed.pii.is_empty() {
            // One cipher for all of the event's fields: they share the subject's key.
            let keyed = keys
                .map(|(enc_key, mac_key, key_id)| {
                    Aes256GcmSiv::new_from_slice(enc_key)
                        .map(|cipher| (cipher, mac_key, key_id))
                        .map_err(|_| PyValueError::new_err("the encryption key is not 32 bytes"))
                })
                .transpose()?;
            let keys = keyed.as_ref().map(|(cipher, mac_key, key_id)| (cipher, *mac_key, *key_id));
            let mut sealed = Vec::new();
            for (field, value) in &parsed.pii {
                sealed.push((field.clone(), self.sealed(keys, parsed, field, value)?));
            }
            sealed.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
            extra.push((self.names.pii.clone(), Value::Obj(sealed)));
        }
        let retention = vec![
            ("class".to_string(), Value::Str(retention_class.to_string())),
            ("until".to_string(), Value::Str(until.to_string())),
        ];
        extra.push((self.names.retention.clone(), Value::Obj(retention)));
        let mut all: Vec<(&str, &Value)> = members.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.extend(extra.iter().map(|(k, v)| (k.as_str(), v)));
        all.sort_by(|a, b| utf16_cmp(a.0, b.0));
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        for (i, (k, v)) in all.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(k, &mut out);
            out.push(b':');
            write_value(v, &mut out);
        }
        out.push(b'}');
        let mut hasher = Sha256::new();
        hasher.update([0u8]);
        hasher.update(&out);
        let mut leaf = [0u8; 32];
        leaf.copy_from_slice(&hasher.finalize());
        Ok((out, leaf))
    }
}

/// A receipt's `RecordEventResponse` (its event_id, verification_hash, duplicate, partition, offset).
fn response_of(py: Python<'_>, receipt: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let event_id: String = receipt.getattr(intern!(py, "event_id"))?.extract()?;
    let hash: String = receipt.getattr(intern!(py, "verification_hash"))?.extract()?;
    let duplicate: bool = receipt.getattr(intern!(py, "duplicate"))?.extract()?;
    let partition: i32 = receipt.getattr(intern!(py, "partition"))?.extract()?;
    let offset: i64 = receipt.getattr(intern!(py, "offset"))?.extract()?;
    Ok(proto::response(&event_id, &hash, duplicate, partition, offset))
}

type Keys<'a> = Option<(Vec<u8>, Vec<u8>, String)>;

#[pymethods]
impl Core {
    /// Reads the schema's text and the names the Python side owns (schemas/native.py).
    #[new]
    #[pyo3(signature = (schema, *, pii_fields, names, version, metadata_limit, record_limit, reserved,
                        nonce_person, lookup_person))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        schema: &str,
        pii_fields: Vec<String>,
        names: Names,
        version: i64,
        metadata_limit: usize,
        record_limit: usize,
        reserved: Vec<(String, String)>,
        nonce_person: Vec<u8>,
        lookup_person: Vec<u8>,
    ) -> PyResult<Self> {
        let parsed = parse_json(schema.as_bytes()).ok_or_else(|| PyValueError::new_err("the schema is not JSON the core reads"))?;
        let node = compile(&parsed, "").map_err(PyValueError::new_err)?;
        let Node::Object { properties, .. } = &node else {
            return Err(PyValueError::new_err("the schema is not an object schema"));
        };
        let read = [&names.tenant, &names.event, &names.subject, &names.action, &names.time];
        for path in pii_fields.iter().chain(read) {
            if !matches!(node_at(&node, path), Some(Node::Str { .. })) {
                return Err(PyValueError::new_err(format!("{path} is not a string field of the schema")));
            }
        }
        for name in [&names.retention, &names.pii] {
            if properties.iter().any(|(k, _)| k == name) {
                return Err(PyValueError::new_err(format!("{name} is an event field: the core would overwrite it")));
            }
        }
        let reserved = reserved.into_iter().map(|(f, p)| (f, p.to_ascii_lowercase())).collect();
        Ok(Core { schema: node, pii_fields, names, version, metadata_limit, record_limit, reserved, nonce_person, lookup_person })
    }

    /// The record's event if the core can prove it handles it as Python does; None refers it.
    fn parse(&self, value: &[u8]) -> Option<Parsed> {
        self.admit(value)
    }

    /// `parse` over many records: None for each one referred to Python.
    fn parse_batch(&self, values: &Bound<'_, PyList>) -> PyResult<Vec<Option<Parsed>>> {
        values
            .iter()
            .map(|item| {
                if item.is_none() {
                    return Ok(None);
                }
                let bytes = item.cast::<PyBytes>()?;
                Ok(self.admit(bytes.as_bytes()))
            })
            .collect()
    }

    /// A gateway `RecordEventsRequest`'s wire bytes (one `RecordEventRequest`'s when not `batch`)
    /// to each event's (Kafka value, parsed event), in request order; None refers the whole
    /// request to the Python path (proto.rs).
    #[pyo3(signature = (request, batch=true))]
    fn request_events<'py>(
        &self,
        py: Python<'py>,
        request: &[u8],
        batch: bool,
    ) -> Option<Vec<(Bound<'py, PyBytes>, Parsed)>> {
        let values = proto::request_values(request, batch)?;
        let mut out = Vec::with_capacity(values.len());
        for value in values {
            let parsed = self.admit(&value)?;
            out.push((PyBytes::new(py, &value), parsed));
        }
        Some(out)
    }

    /// A `RecordEventsResponse`'s wire bytes for receipts (api/sdk/events.py `Receipt`), each with
    /// status true, in order.
    fn encode_receipts<'py>(&self, py: Python<'py>, receipts: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(receipts.len() * 112);
        for receipt in receipts.iter() {
            proto::put_result(&mut out, &response_of(py, &receipt)?);
        }
        Ok(PyBytes::new(py, &out))
    }

    /// A `RecordEventResponse`'s wire bytes for one receipt (status true).
    fn encode_receipt<'py>(&self, py: Python<'py>, receipt: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &response_of(py, receipt)?))
    }

    /// (canonical bytes, leaf hash) of a parsed event: PII sealed with the subject's keys
    /// (enc_key, mac_key, key_id), or marked erased when `keys` is None, and the retention stamped.
    #[pyo3(signature = (parsed, keys, retention_class, until))]
    fn entry<'py>(
        &self,
        py: Python<'py>,
        parsed: &Parsed,
        keys: Keys<'_>,
        retention_class: &str,
        until: &str,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let keys = keys.as_ref().map(|(e, m, k)| (e.as_slice(), m.as_slice(), k.as_str()));
        let (entry, leaf) = self.entry_bytes(parsed, keys, retention_class, until)?;
        Ok((PyBytes::new(py, &entry), PyBytes::new(py, &leaf)))
    }

    /// `entry` over many parsed events, each with its keys and its (class, until).
    fn entry_batch<'py>(
        &self,
        py: Python<'py>,
        parsed: Vec<PyRef<'py, Parsed>>,
        keys: Vec<Keys<'_>>,
        stamps: Vec<(String, String)>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        if parsed.len() != keys.len() || parsed.len() != stamps.len() {
            return Err(PyValueError::new_err("parsed, keys and stamps differ in length"));
        }
        let mut out = Vec::with_capacity(parsed.len());
        for ((p, k), (class, until)) in parsed.iter().zip(&keys).zip(&stamps) {
            let k = k.as_ref().map(|(e, m, id)| (e.as_slice(), m.as_slice(), id.as_str()));
            let (entry, leaf) = self.entry_bytes(p, k, class, until)?;
            out.push((PyBytes::new(py, &entry), PyBytes::new(py, &leaf)));
        }
        Ok(out)
    }
}

/// The Kafka values of a request's events, or None (proto.rs): the differential test's view.
#[pyfunction]
#[pyo3(signature = (request, batch=true))]
fn request_values(py: Python<'_>, request: &[u8], batch: bool) -> Option<Vec<Py<PyBytes>>> {
    let values = proto::request_values(request, batch)?;
    Some(values.iter().map(|v| PyBytes::new(py, v).unbind()).collect())
}

#[pymodule]
fn auditlog_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<Parsed>()?;
    m.add_function(wrap_pyfunction!(merkle::leaf_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(merkle::node_level, m)?)?;
    m.add_function(wrap_pyfunction!(merkle::merkle_root, m)?)?;
    m.add_function(wrap_pyfunction!(merkle::tile_levels, m)?)?;
    m.add_function(wrap_pyfunction!(rows::index_columns, m)?)?;
    m.add_function(wrap_pyfunction!(request_values, m)?)?;
    Ok(())
}
