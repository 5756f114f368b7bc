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

use std::cmp::Ordering;

use aes_gcm_siv::aead::Aead;
use aes_gcm_siv::aead::Payload;
use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use base64::Engine;
use blake2::digest::consts::{U12, U32};
use blake2::digest::Mac;
use blake2::Blake2bMac;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use regex::Regex;
use sha2::{Digest, Sha256};

const MAX_DEPTH: usize = 64;
const MAX_SAFE_INTEGER: i64 = 1 << 53;

// ------------------------------------------------------------------------------------- JSON

#[derive(Clone, Debug)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>), // sorted by the keys' UTF-16 code units, no duplicates
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A strict JSON reader: `None` for anything it does not accept (the record is referred).
struct Reader<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while self.pos < self.text.len() && matches!(self.text[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Option<Value> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(value)
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Value::Str),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        let count = self.pos - digits;
        if count == 0 || count > 16 || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None; // fractions, exponents and long integers: Python decides
        }
        if self.text[digits] == b'0' && (count > 1 || negative) {
            return None; // leading zeros are not JSON; -0 prints as 0 only through a float
        }
        let text = std::str::from_utf8(&self.text[start..self.pos]).ok()?;
        let n: i64 = text.parse().ok()?;
        if n.abs() > MAX_SAFE_INTEGER {
            return None;
        }
        Some(Value::Int(n))
    }

    fn hex4(&mut self) -> Option<u32> {
        let chunk = self.text.get(self.pos..self.pos + 4)?;
        let text = std::str::from_utf8(chunk).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while self.pos < self.text.len() && !matches!(self.text[self.pos], b'"' | b'\\' | 0..=0x1f) {
                self.pos += 1;
            }
            // The whole input was checked to be UTF-8 and stops only at ASCII: a char boundary.
            out.push_str(std::str::from_utf8(&self.text[start..self.pos]).ok()?);
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = self.peek()?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first) {
                                if !self.text[self.pos..].starts_with(b"\\u") {
                                    return None; // a lone surrogate
                                }
                                self.pos += 2;
                                let second = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&second) {
                                    return None;
                                }
                                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&first) {
                                return None;
                            } else {
                                first
                            };
                            out.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a raw control character
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(Value::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(Value::Arr(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        self.pos += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return None; // duplicate keys: which one counts is the reference's call
        }
        Some(Value::Obj(members))
    }
}

fn parse_json(raw: &[u8]) -> Option<Value> {
    std::str::from_utf8(raw).ok()?;
    let mut reader = Reader { text: raw, pos: 0 };
    let value = reader.value(0)?;
    reader.ws();
    if reader.pos != raw.len() {
        return None;
    }
    Some(value)
}

// ---------------------------------------------------------------------------- RFC 8785

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Str(s) => write_string(s, out),
        Value::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Obj(members) => {
            out.push(b'{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

// -------------------------------------------------------------------------------- schema

enum Node {
    /// `type: object` with `properties` and `additionalProperties: false`.
    Object { properties: Vec<(String, Node)>, required: Vec<String> },
    /// `type: object` with no further rule (free-form, e.g. metadata).
    AnyObject,
    Str { min: usize, max: usize, pattern: Option<Regex>, choices: Option<Vec<String>> },
    /// `enum` of strings without a type.
    Choice(Vec<String>),
    /// `const` integer.
    ConstInt(i64),
}

const ANNOTATIONS: &[&str] = &["description", "$schema", "$id", "title", "x-pii", "x-hint"];

fn compile(schema: &Value, path: &str) -> Result<Node, String> {
    let Value::Obj(members) = schema else { return Err(format!("{path}: a schema is not an object")) };
    let mut known: Vec<&str> = ANNOTATIONS.to_vec();
    let strings = |v: &Value, what: &str| -> Result<Vec<String>, String> {
        match v {
            Value::Arr(items) => items
                .iter()
                .map(|i| match i {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(format!("{path}: {what} holds a non-string")),
                })
                .collect(),
            _ => Err(format!("{path}: {what} is not a list")),
        }
    };
    let node = match schema.get("type") {
        Some(Value::Str(t)) if t == "object" => {
            known.push("type");
            match schema.get("properties") {
                None => {
                    if schema.get("additionalProperties").is_some() || schema.get("required").is_some() {
                        return Err(format!("{path}: an object with rules but no properties"));
                    }
                    Node::AnyObject
                }
                Some(Value::Obj(props)) => {
                    known.extend(["properties", "additionalProperties", "required"]);
                    if !matches!(schema.get("additionalProperties"), Some(Value::Bool(false))) {
                        return Err(format!("{path}: only additionalProperties: false is understood"));
                    }
                    let required = match schema.get("required") {
                        Some(v) => strings(v, "required")?,
                        None => Vec::new(),
                    };
                    let mut properties = Vec::new();
                    for (name, sub) in props {
                        let sub_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                        properties.push((name.clone(), compile(sub, &sub_path)?));
                    }
                    Node::Object { properties, required }
                }
                Some(_) => return Err(format!("{path}: properties is not an object")),
            }
        }
        Some(Value::Str(t)) if t == "string" => {
            known.extend(["type", "minLength", "maxLength", "pattern", "enum"]);
            let int = |key: &str, default: usize| -> Result<usize, String> {
                match schema.get(key) {
                    None => Ok(default),
                    Some(Value::Int(n)) if *n >= 0 => Ok(*n as usize),
                    Some(_) => Err(format!("{path}: {key} is not a whole number")),
                }
            };
            let pattern = match schema.get("pattern") {
                None => None,
                Some(Value::Str(p)) => Some(Regex::new(p).map_err(|e| format!("{path}: pattern: {e}"))?),
                Some(_) => return Err(format!("{path}: pattern is not a string")),
            };
            let choices = match schema.get("enum") {
                Some(v) => Some(strings(v, "enum")?),
                None => None,
            };
            Node::Str { min: int("minLength", 0)?, max: int("maxLength", usize::MAX)?, pattern, choices }
        }
        Some(other) => return Err(format!("{path}: type {other:?} is not understood")),
        None => {
            if let Some(v) = schema.get("enum") {
                known.push("enum");
                Node::Choice(strings(v, "enum")?)
            } else if let Some(v) = schema.get("const") {
                known.push("const");
                match v {
                    Value::Int(n) => Node::ConstInt(*n),
                    _ => return Err(format!("{path}: only an integer const is understood")),
                }
            } else {
                return Err(format!("{path}: a schema without type, enum or const"));
            }
        }
    };
    for (key, _) in members {
        if !known.contains(&key.as_str()) {
            return Err(format!("{path}: the keyword {key:?} is not understood by the native core"));
        }
    }
    Ok(node)
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control()) // C0, DEL and C1
}

fn check(node: &Node, value: &Value) -> bool {
    match (node, value) {
        (Node::Object { properties, required }, Value::Obj(members)) => {
            if !required.iter().all(|r| members.iter().any(|(k, _)| k == r)) {
                return false;
            }
            members.iter().all(|(k, v)| match properties.iter().find(|(name, _)| name == k) {
                Some((_, sub)) => check(sub, v),
                None => false,
            })
        }
        (Node::AnyObject, Value::Obj(_)) => true,
        (Node::Str { min, max, pattern, choices }, Value::Str(s)) => {
            if has_control(s) {
                return false;
            }
            let n = s.chars().count();
            n >= *min
                && n <= *max
                && pattern.as_ref().is_none_or(|p| p.is_match(s))
                && choices.as_ref().is_none_or(|c| c.iter().any(|x| x == s))
        }
        (Node::Choice(choices), Value::Str(s)) => choices.iter().any(|x| x == s),
        (Node::ConstInt(c), Value::Int(n)) => c == n,
        _ => false,
    }
}

fn node_at<'n>(root: &'n Node, path: &str) -> Option<&'n Node> {
    let mut node = root;
    for part in path.split('.') {
        match node {
            Node::Object { properties, .. } => node = &properties.iter().find(|(k, _)| k == part)?.1,
            _ => return None,
        }
    }
    Some(node)
}

fn str_at<'v>(value: &'v Value, path: &str) -> Option<&'v str> {
    let mut node = value;
    for part in path.split('.') {
        node = node.get(part)?;
    }
    match node {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Removes the member at `path` and returns it.
fn take_at(value: &mut Value, path: &str) -> Option<Value> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let mut node = value;
    if let Some(parents) = parents {
        for part in parents.split('.') {
            let Value::Obj(members) = node else { return None };
            node = &mut members.iter_mut().find(|(k, _)| k == part)?.1;
        }
    }
    let Value::Obj(members) = node else { return None };
    let at = members.iter().position(|(k, _)| k == last)?;
    Some(members.remove(at).1)
}

fn set_member(value: &mut Value, key: &str, item: Value) {
    if let Value::Obj(members) = value {
        match members.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = item,
            None => {
                members.push((key.to_string(), item));
                members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
            }
        }
    }
}

// ---------------------------------------------------------------------------------- time

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `normalize_time` of schemas/events.py for the times it can prove the same; None refers.
fn normalize_time(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 20 || !b.is_ascii() {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if b.len() == 24 && b[19] == b'.' && b[23] == b'Z' {
        num(20, 23)?;
        return Some(text.to_string()); // already canonical: kept as it is
    }
    let (rest, offset) = if let Some(head) = text.strip_suffix('Z') {
        (&head[19..], 0)
    } else {
        let tz = &text[text.len() - 6..];
        let tb = tz.as_bytes();
        let sign = match tb[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if tb[3] != b':' {
            return None;
        }
        let (oh, om) = (num(text.len() - 5, text.len() - 3)?, num(text.len() - 2, text.len())?);
        if oh > 23 || om > 59 {
            return None;
        }
        (&text[19..text.len() - 6], sign * (oh * 3600 + om * 60))
    };
    let millis = if rest.is_empty() {
        0
    } else {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{frac}000");
        padded[..3].parse::<i64>().ok()?
    };
    let seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86400));
    if !(1000..=9999).contains(&y) {
        return None; // Python's strftime writes years below 1000 without padding: let it say so
    }
    let s = seconds.rem_euclid(86400);
    Some(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", s / 3600, s / 60 % 60, s % 60))
}

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

    fn sealed(&self, keys: Option<(&[u8], &[u8], &str)>, parsed: &Parsed, field: &str, value: &str) -> PyResult<Value> {
        let Some((enc_key, mac_key, key_id)) = keys else {
            return Ok(Value::Obj(vec![("erased".into(), Value::Bool(true))]));
        };
        let ad = format!("{}\n{}\n{}", parsed.tenant_id, parsed.event_id, field);
        let mut nonce = [0u8; 12];
        self.blake2b(mac_key, &self.nonce_person, ad.as_bytes(), &mut nonce)?;
        let cipher =
            Aes256GcmSiv::new_from_slice(enc_key).map_err(|_| PyValueError::new_err("the encryption key is not 32 bytes"))?;
        let ct = cipher
            .encrypt(&nonce.into(), Payload { msg: value.as_bytes(), aad: ad.as_bytes() })
            .map_err(|_| PyValueError::new_err("AES-GCM-SIV refused the value"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        // transforms/pii.py normalize_for_lookup: emails compare trimmed and lower-cased.
        let lookup = if field.ends_with("email") { value.trim().to_ascii_lowercase() } else { value.to_string() };
        let mut kh = [0u8; 32];
        self.blake2b(mac_key, &self.lookup_person, format!("{field}\n{lookup}").as_bytes(), &mut kh)?;
        let hex: String = kh.iter().map(|b| format!("{b:02x}")).collect();
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

/// SHA-256(0x00 ‖ entry) for each entry (transforms/merkle.py leaf_hash).
#[pyfunction]
fn leaf_hashes<'py>(py: Python<'py>, entries: Vec<Vec<u8>>) -> Vec<Bound<'py, PyBytes>> {
    entries
        .iter()
        .map(|e| {
            let mut hasher = Sha256::new();
            hasher.update([0u8]);
            hasher.update(e);
            PyBytes::new(py, &hasher.finalize())
        })
        .collect()
}

#[pymodule]
fn auditlog_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<Parsed>()?;
    m.add_function(wrap_pyfunction!(leaf_hashes, m)?)?;
    Ok(())
}
