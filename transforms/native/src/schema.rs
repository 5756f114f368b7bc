//! The JSON-Schema subset the core interprets: `compile` refuses any keyword it does not
//! know, `check` validates a parsed record, and the path helpers read and edit its members.

use regex::Regex;

use crate::json::{utf16_cmp, Value};

// -------------------------------------------------------------------------------- schema

pub(crate) enum Node {
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

/// Keywords that do not constrain a value here. `x-max-canonical-bytes` (metadata's cap) is checked
/// on the canonical bytes, with the limit the caller passes as `metadata_limit` (read from it).
const ANNOTATIONS: &[&str] =
    &["description", "$schema", "$id", "title", "x-pii", "x-hint", "x-max-canonical-bytes"];

pub(crate) fn compile(schema: &Value, path: &str) -> Result<Node, String> {
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

pub(crate) fn check(node: &Node, value: &Value) -> bool {
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

pub(crate) fn node_at<'n>(root: &'n Node, path: &str) -> Option<&'n Node> {
    let mut node = root;
    for part in path.split('.') {
        match node {
            Node::Object { properties, .. } => node = &properties.iter().find(|(k, _)| k == part)?.1,
            _ => return None,
        }
    }
    Some(node)
}

pub(crate) fn str_at<'v>(value: &'v Value, path: &str) -> Option<&'v str> {
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
pub(crate) fn take_at(value: &mut Value, path: &str) -> Option<Value> {
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

pub(crate) fn set_member(value: &mut Value, key: &str, item: Value) {
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
