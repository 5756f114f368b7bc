//! The search index's columns of canonical entries (`schemas/rows.py` `audit_log_row`), column by
//! column, for the indexer's Arrow batches: no Python object per row.
//!
//! A faster path, never a second definition: it reads only entries in the exact shape that
//! function handles (canonical JSON, every needed field present and a string, times in the
//! canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form). For any other entry the whole batch gets `None`
//! and the caller builds it with the Python reference; tests/unit/test_index_arrow.py holds the
//! two together.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::json::read_string;
use crate::time::days_from_civil;

/// The latest time a DateTime64 column holds (schemas/rows.py ROW_FOREVER).
const ROW_FOREVER: &str = "2299-12-31T23:59:59.999Z";

/// A cursor over one entry's bytes. Canonical JSON has no whitespace, so none is accepted.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A JSON string, unescaped; borrowed when it has no escapes (json.rs reads those).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let quote = self.i;
        self.eat(b'"')?;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    let s = std::str::from_utf8(&self.b[quote + 1..self.i]).ok()?;
                    self.i += 1;
                    return Some(Cow::Borrowed(s));
                }
                b'\\' => {
                    let (value, end) = read_string(self.b, quote)?;
                    self.i = end;
                    return Some(Cow::Owned(value));
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        None
    }

    /// Skips one value of any kind; the nesting is bounded by the entry's length.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.members(|_, s| s.skip()),
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip()?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// An object: calls `each(key, self)` with the cursor at each member's value, which it must consume.
    fn members<F>(&mut self, mut each: F) -> Option<()>
    where
        F: FnMut(Cow<'a, str>, &mut Scan<'a>) -> Option<()>,
    {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            each(key, self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string value, or None (refer) for any other kind.
    fn text(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? == b'"' {
            self.string()
        } else {
            None
        }
    }

    fn is_null(&mut self) -> bool {
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            true
        } else {
            false
        }
    }
}

/// One entry's fields, as audit_log_row reads them.
#[derive(Default)]
struct Fields<'a> {
    tenant: Option<Cow<'a, str>>,
    event: Option<Cow<'a, str>>,
    occurred: Option<Cow<'a, str>>,
    actor_id: Option<Cow<'a, str>>,
    actor_type: Option<Cow<'a, str>>,
    email_kh: Option<Cow<'a, str>>,
    action: Option<Cow<'a, str>>,
    resource_id: Option<Cow<'a, str>>,
    resource_type: Option<Cow<'a, str>>,
    result: Option<Cow<'a, str>>,
    request_id: Option<Cow<'a, str>>,
    metadata: Option<&'a [u8]>,
    class: Option<Cow<'a, str>>,
    until: Option<Cow<'a, str>>,
}

fn fields(entry: &[u8]) -> Option<Fields<'_>> {
    let mut f = Fields::default();
    let mut s = Scan { b: entry, i: 0 };
    s.members(|key, s| {
        match key.as_ref() {
            "tenant_id" => f.tenant = Some(s.text()?),
            "event_id" => f.event = Some(s.text()?),
            "occurred_at" => f.occurred = Some(s.text()?),
            "action" => f.action = Some(s.text()?),
            "result" => f.result = Some(s.text()?),
            "request_id" => f.request_id = Some(s.text()?),
            "actor" => {
                (f.actor_id, f.actor_type) = (None, None);
                s.members(|k, s| {
                match k.as_ref() {
                    "id" => f.actor_id = Some(s.text()?),
                    "type" => f.actor_type = Some(s.text()?),
                    _ => s.skip()?,
                }
                Some(())
            })?
            }
            "resource" => {
                (f.resource_id, f.resource_type) = (None, None);
                s.members(|k, s| {
                match k.as_ref() {
                    "id" => f.resource_id = Some(s.text()?),
                    "type" => f.resource_type = Some(s.text()?),
                    _ => s.skip()?,
                }
                Some(())
            })?
            }
            "pii" => {
                f.email_kh = None;
                s.members(|k, s| {
                    if k == "actor.email" {
                        // a sealed value is an object; its keyed hash is "kh" (absent: "")
                        let mut kh = Cow::Borrowed("");
                        s.members(|k, s| {
                            if k == "kh" {
                                kh = s.text()?;
                            } else {
                                s.skip()?;
                            }
                            Some(())
                        })?;
                        f.email_kh = Some(kh);
                    } else {
                        s.skip()?;
                    }
                    Some(())
                })?
            }
            "metadata" => {
                let start = s.i;
                if s.peek()? != b'{' {
                    return None;
                }
                s.skip()?;
                f.metadata = Some(&s.b[start..s.i]);
            }
            "retention" => {
                f.class = None;
                f.until = None;
                if !s.is_null() {
                    s.members(|k, s| {
                        match k.as_ref() {
                            "class" => f.class = Some(s.text()?),
                            "until" => f.until = Some(s.text()?),
                            _ => s.skip()?,
                        }
                        Some(())
                    })?;
                }
            }
            _ => s.skip()?,
        }
        Some(())
    })?;
    (s.i == entry.len()).then_some(f)
}

/// Milliseconds since the epoch of a canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` time; None for any other form.
fn millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = &b[from..to];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > crate::time::days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli)
}

/// A string column as Arrow lays it out: int32 offsets (one more than rows) and the UTF-8 bytes.
#[derive(Default)]
struct Strings {
    offsets: Vec<u8>,
    data: Vec<u8>,
}

impl Strings {
    fn new(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity((rows + 1) * 4);
        offsets.extend_from_slice(&0i32.to_le_bytes());
        Strings { offsets, data: Vec::new() }
    }

    fn push(&mut self, value: &[u8]) -> Option<()> {
        self.data.extend_from_slice(value);
        let end = i32::try_from(self.data.len()).ok()?; // over 2 GiB: refer (the caller splits)
        self.offsets.extend_from_slice(&end.to_le_bytes());
        Some(())
    }
}

const STRING_COLUMNS: [&str; 13] = [
    "tenant_id",
    "event_id",
    "actor_id",
    "actor_type",
    "actor_email_hash",
    "action",
    "resource_id",
    "resource_type",
    "result",
    "request_id",
    "metadata",
    "canonical",
    "retention_class",
];

fn columns(entries: &[&[u8]]) -> Option<(Vec<Strings>, Vec<u8>, Vec<u8>)> {
    let mut strings: Vec<Strings> = STRING_COLUMNS.iter().map(|_| Strings::new(entries.len())).collect();
    let mut occurred = Vec::with_capacity(entries.len() * 8);
    let mut until = Vec::with_capacity(entries.len() * 8);
    for entry in entries {
        let f = fields(entry)?;
        let until_text = match f.until.as_deref() {
            Some(u) if !u.is_empty() && u < ROW_FOREVER => u,
            _ => ROW_FOREVER, // min(until or ROW_FOREVER, ROW_FOREVER)
        };
        occurred.extend_from_slice(&millis(f.occurred.as_deref()?)?.to_le_bytes());
        until.extend_from_slice(&millis(until_text)?.to_le_bytes());
        let values: [&[u8]; 13] = [
            f.tenant.as_deref()?.as_bytes(),
            f.event.as_deref()?.as_bytes(),
            f.actor_id.as_deref()?.as_bytes(),
            f.actor_type.as_deref()?.as_bytes(),
            f.email_kh.as_deref().unwrap_or("").as_bytes(),
            f.action.as_deref()?.as_bytes(),
            f.resource_id.as_deref()?.as_bytes(),
            f.resource_type.as_deref()?.as_bytes(),
            f.result.as_deref()?.as_bytes(),
            f.request_id.as_deref().unwrap_or("").as_bytes(),
            f.metadata.unwrap_or(b"{}"),
            entry,
            f.class.as_deref().unwrap_or("").as_bytes(),
        ];
        for (column, value) in strings.iter_mut().zip(values) {
            column.push(value)?;
        }
    }
    Some((strings, occurred, until))
}

/// The audit_logs columns that come from the entries themselves, or None (use the reference).
///
/// Returns {name: (offsets, data)} for each string column and {name: int64 millis} for
/// `occurred_at` and `retain_until`, every buffer little-endian, ready for
/// `pyarrow.Array.from_buffers`.
#[pyfunction]
pub(crate) fn index_columns<'py>(py: Python<'py>, entries: &Bound<'py, PyList>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let mut held: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(entries.len());
    for item in entries.iter() {
        held.push(item.cast_into::<PyBytes>()?);
    }
    let views: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
    let Some((strings, occurred, until)) = py.detach(|| columns(&views)) else {
        return Ok(None);
    };
    let out = PyDict::new(py);
    for (name, column) in STRING_COLUMNS.iter().zip(strings) {
        out.set_item(name, (PyBytes::new(py, &column.offsets), PyBytes::new(py, &column.data)))?;
    }
    out.set_item("occurred_at", PyBytes::new(py, &occurred))?;
    out.set_item("retain_until", PyBytes::new(py, &until))?;
    Ok(Some(out))
}
