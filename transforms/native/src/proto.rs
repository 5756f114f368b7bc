//! The gateway's requests (schemas/audit.proto) read straight from their wire bytes
//! into the events' Kafka values: what api/gateway/convert.py `event_from_request` and
//! api/sdk/events.py `encode_event` do, byte for byte, for the requests it can prove it reads
//! the same (tests/unit/test_native_request.py holds the two together). Anything unusual — a
//! field twice, both `occurred` fields, a group, metadata that is not a plain JSON object —
//! refers the whole request (`None`) to the Python path, which names what is wrong.

use crate::json::{parse_json, read_string, write_string, Value};
use crate::time::civil_from_days;

/// The wire reader: `None` for anything malformed.
struct Wire<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// The next (field number, wire type), or None at the end; a group or a bad tag is `Some(None)`.
    fn tag(&mut self) -> Option<Option<(u64, u8)>> {
        if self.pos == self.data.len() {
            return None;
        }
        let start = self.pos;
        Some(self.varint().and_then(|t| {
            let wire = (t & 7) as u8;
            // A tag is at most 5 bytes, and field numbers run from 1 to 2**29 - 1: protobuf refuses others.
            let field = t >> 3;
            (self.pos - start <= 5 && (1..1 << 29).contains(&field) && matches!(wire, 0 | 1 | 2 | 5))
                .then_some((field, wire))
        }))
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => self.varint().map(drop),
            1 | 5 => {
                let end = self.pos.checked_add(if wire == 1 { 8 } else { 4 })?;
                (end <= self.data.len()).then(|| self.pos = end)
            }
            _ => self.bytes().map(drop),
        }
    }
}

/// A message's fields by number: each length-delimited field's bytes (`text`) or a varint.
/// A field seen twice refers the request (proto3 would keep the last, or merge a message).
struct Fields<'a> {
    text: [Option<&'a [u8]>; 17],
    number: [Option<u64>; 17],
}

fn fields<'a>(data: &'a [u8], strings: &[u64], numbers: &[u64]) -> Option<Fields<'a>> {
    let mut out = Fields { text: [None; 17], number: [None; 17] };
    let mut wire = Wire { data, pos: 0 };
    while let Some(tag) = wire.tag() {
        let (field, kind) = tag?;
        if strings.contains(&field) && kind == 2 {
            let slot = &mut out.text[field as usize];
            if slot.replace(wire.bytes()?).is_some() {
                return None;
            }
        } else if numbers.contains(&field) && kind == 0 {
            let slot = &mut out.number[field as usize];
            if slot.replace(wire.varint()?).is_some() {
                return None;
            }
        } else if strings.contains(&field) || numbers.contains(&field) {
            return None; // a known field with another wire type: the reference decides
        } else {
            wire.skip(kind)?; // an unknown field: protobuf keeps and ignores it
        }
    }
    Some(out)
}

fn text<'a>(fields: &Fields<'a>, number: u64) -> Option<&'a str> {
    std::str::from_utf8(fields.text[number as usize].unwrap_or(b"")).ok()
}

fn member(out: &mut Vec<u8>, first: &mut bool, name: &str, value: &str) {
    out.push(if *first { b'{' } else { b',' });
    *first = false;
    write_string(name, out);
    out.push(b':');
    write_string(value, out);
}

const MIN_MILLIS: i64 = -62_135_596_800_000; // 0001-01-01T00:00:00Z
const MAX_MILLIS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// api/sdk/events.py `time_from_millis`: `YYYY-MM-DDTHH:MM:SS.mmmZ`; None out of its range.
fn time_from_millis(millis: i64) -> Option<String> {
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
        return None;
    }
    let (seconds, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, second) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        second / 3600,
        second % 3600 / 60,
        second % 60
    ))
}

/// `metadata_json` as orjson writes what it reads: whitespace dropped, strings escaped again,
/// member order kept. None unless it is a JSON object the core reads (no floats, duplicates…).
fn compact_object(raw: &[u8]) -> Option<Vec<u8>> {
    if !matches!(parse_json(raw)?, Value::Obj(_)) {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos] {
            b' ' | b'\t' | b'\n' | b'\r' => pos += 1,
            b'"' => {
                let (s, next) = read_string(raw, pos)?;
                write_string(&s, &mut out);
                pos = next;
            }
            b => {
                out.push(b);
                pos += 1;
            }
        }
    }
    Some(out)
}

/// One `RecordEventRequest`'s Kafka value: `encode_event(event_from_request(message))`.
fn event_value(message: &[u8]) -> Option<Vec<u8>> {
    // tenant_id 1, action 4, client_ip 7, user_agent 8, metadata_json 9, occurred_at 11,
    // actor 12, resource 13, result 14, request_id 15, event_id 16; occurred_at_timestamp 10.
    let f = fields(message, &[1, 4, 7, 8, 9, 11, 12, 13, 14, 15, 16], &[10])?;
    let occurred = match (f.number[10], f.text[11]) {
        (Some(_), Some(_)) => return None, // a oneof set twice: protobuf keeps the last
        (Some(millis), None) => time_from_millis(millis as i64)?,
        (None, Some(_)) => text(&f, 11)?.to_string(),
        (None, None) => return None, // required: the reference names it
    };
    let actor = fields(f.text[12].unwrap_or(b""), &[1, 2, 3, 4], &[])?;
    let resource = fields(f.text[13].unwrap_or(b""), &[1, 2], &[])?;
    let mut out = Vec::with_capacity(message.len() + 160);
    let mut first = true;
    member(&mut out, &mut first, "event_id", text(&f, 16)?);
    member(&mut out, &mut first, "tenant_id", text(&f, 1)?);
    out.extend_from_slice(b",\"actor\":");
    let mut inner = true;
    member(&mut out, &mut inner, "id", text(&actor, 1)?);
    member(&mut out, &mut inner, "type", text(&actor, 2)?);
    for (number, name) in [(3, "email"), (4, "name")] {
        let value = text(&actor, number)?;
        if !value.is_empty() {
            member(&mut out, &mut inner, name, value);
        }
    }
    out.push(b'}');
    member(&mut out, &mut first, "action", text(&f, 4)?);
    out.extend_from_slice(b",\"resource\":");
    let mut inner = true;
    member(&mut out, &mut inner, "id", text(&resource, 1)?);
    member(&mut out, &mut inner, "type", text(&resource, 2)?);
    out.push(b'}');
    member(&mut out, &mut first, "result", text(&f, 14)?);
    member(&mut out, &mut first, "occurred_at", &occurred);
    for (number, name) in [(7, "client_ip"), (8, "user_agent"), (15, "request_id")] {
        let value = text(&f, number)?;
        if !value.is_empty() {
            member(&mut out, &mut first, name, value);
        }
    }
    let metadata = text(&f, 9)?;
    if !metadata.is_empty() {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(&compact_object(metadata.as_bytes())?);
    }
    out.push(b'}');
    Some(out)
}

/// Every event's Kafka value of a `RecordEventsRequest` (field 1, repeated), in order, or of one
/// `RecordEventRequest` when not `batch`; None refers.
pub(crate) fn request_values(request: &[u8], batch: bool) -> Option<Vec<Vec<u8>>> {
    if !batch {
        return Some(vec![event_value(request)?]);
    }
    let mut wire = Wire { data: request, pos: 0 };
    let mut values = Vec::new();
    while let Some(tag) = wire.tag() {
        match tag? {
            (1, 2) => values.push(event_value(wire.bytes()?)?),
            (1, _) => return None,
            (_, kind) => wire.skip(kind)?,
        }
    }
    Some(values)
}

// ------------------------------------------------------------------------------ responses

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_text(out: &mut Vec<u8>, field: u64, text: &str) {
    if !text.is_empty() {
        put_varint(out, field << 3 | 2);
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

/// One `RecordEventResponse` (status true), in field order, as protobuf writes it (proto3: zero,
/// false and empty fields left out).
pub(crate) fn response(event_id: &str, hash: &str, duplicate: bool, partition: i32, offset: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(event_id.len() + hash.len() + 24);
    put_text(&mut message, 1, event_id);
    put_text(&mut message, 2, hash);
    message.extend_from_slice(&[3 << 3, 1]);
    if duplicate {
        message.extend_from_slice(&[4 << 3, 1]);
    }
    if partition != 0 {
        put_varint(&mut message, 5 << 3);
        put_varint(&mut message, i64::from(partition) as u64); // int32: negative ones sign-extended
    }
    if offset != 0 {
        put_varint(&mut message, 6 << 3);
        put_varint(&mut message, offset as u64);
    }
    message
}

/// A `RecordEventsResponse`'s `results` element (field 1) appended to `out`.
pub(crate) fn put_result(out: &mut Vec<u8>, message: &[u8]) {
    put_varint(out, 1 << 3 | 2);
    put_varint(out, message.len() as u64);
    out.extend_from_slice(message);
}
