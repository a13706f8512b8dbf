//! Mango selectors: parsing (with a clear error for what is not supported) and matching.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

use crate::collate::compare;

#[derive(Debug, Clone)]
pub enum Selector {
    And(Vec<Selector>),
    Or(Vec<Selector>),
    Nor(Vec<Selector>),
    Not(Box<Selector>),
    /// Conditions on one field (an empty path is the value itself, inside `$elemMatch`).
    Field(Vec<String>, Vec<Cond>),
}

#[derive(Debug, Clone)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Type(String),
    Size(usize),
    Mod(i64, i64),
    Regex(Regex),
    All(Vec<Value>),
    ElemMatch(Box<Selector>),
    AllMatch(Box<Selector>),
    Not(Vec<Cond>),
}

/// A selector that cannot be used, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MangoError {
    #[error("{0}")]
    Invalid(String),
    #[error("unsupported operator {0}")]
    UnknownOperator(String),
}

fn bad(msg: impl Into<String>) -> MangoError {
    MangoError::Invalid(msg.into())
}

pub fn parse(selector: &Value) -> Result<Selector, MangoError> {
    match selector {
        Value::Object(map) => parse_object(map, &[]),
        _ => Err(bad("the selector must be a JSON object")),
    }
}

fn parse_list(v: &Value, op: &str, prefix: &[String]) -> Result<Vec<Selector>, MangoError> {
    let Value::Array(items) = v else {
        return Err(bad(format!("{op} takes an array of selectors")));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(m) => parse_object(m, prefix),
            _ => Err(bad(format!("{op} takes an array of selectors"))),
        })
        .collect()
}

fn parse_object(map: &Map<String, Value>, prefix: &[String]) -> Result<Selector, MangoError> {
    let mut parts = Vec::new();
    for (key, value) in map {
        if let Some(op) = key.strip_prefix('$') {
            match op {
                "and" => parts.push(Selector::And(parse_list(value, key, prefix)?)),
                "or" => parts.push(Selector::Or(parse_list(value, key, prefix)?)),
                "nor" => parts.push(Selector::Nor(parse_list(value, key, prefix)?)),
                "not" => match value {
                    Value::Object(m) => parts.push(Selector::Not(Box::new(parse_object(m, prefix)?))),
                    _ => return Err(bad("$not takes a selector")),
                },
                _ if is_field_operator(key) => {
                    // An operator at the root of an `$elemMatch` applies to the element itself.
                    let mut single = Map::new();
                    single.insert(key.clone(), value.clone());
                    parts.push(Selector::Field(prefix.to_vec(), parse_conds(&single)?));
                }
                _ => return Err(MangoError::UnknownOperator(key.clone())),
            }
            continue;
        }
        let mut path = prefix.to_vec();
        path.extend(key.split('.').map(str::to_string));
        match value {
            Value::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')) => {
                parts.push(Selector::Field(path, parse_conds(m)?));
            }
            Value::Object(m) if !m.is_empty() && m.keys().all(|k| !k.starts_with('$')) => {
                parts.push(parse_object(m, &path)?);
            }
            Value::Object(m) if !m.is_empty() => {
                return Err(bad(format!("the selector of {key:?} mixes operators and fields")));
            }
            other => parts.push(Selector::Field(path, vec![Cond::Eq(other.clone())])),
        }
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Selector::And(parts)
    })
}

const FIELD_OPERATORS: [&str; 17] = [
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$type",
    "$size",
    "$mod",
    "$regex",
    "$all",
    "$elemMatch",
    "$allMatch",
    "$not",
];

fn is_field_operator(op: &str) -> bool {
    FIELD_OPERATORS.contains(&op)
}

fn array_arg<'a>(op: &str, v: &'a Value) -> Result<&'a Vec<Value>, MangoError> {
    v.as_array().ok_or_else(|| bad(format!("{op} takes an array")))
}

fn parse_conds(map: &Map<String, Value>) -> Result<Vec<Cond>, MangoError> {
    let mut conds = Vec::new();
    for (op, arg) in map {
        let cond = match op.as_str() {
            "$eq" => Cond::Eq(arg.clone()),
            "$ne" => Cond::Ne(arg.clone()),
            "$gt" => Cond::Gt(arg.clone()),
            "$gte" => Cond::Gte(arg.clone()),
            "$lt" => Cond::Lt(arg.clone()),
            "$lte" => Cond::Lte(arg.clone()),
            "$in" => Cond::In(array_arg(op, arg)?.clone()),
            "$nin" => Cond::Nin(array_arg(op, arg)?.clone()),
            "$all" => Cond::All(array_arg(op, arg)?.clone()),
            "$exists" => Cond::Exists(arg.as_bool().ok_or_else(|| bad("$exists takes true or false"))?),
            "$type" => {
                let t = arg.as_str().ok_or_else(|| bad("$type takes a type name"))?;
                if !["null", "boolean", "number", "string", "array", "object"].contains(&t) {
                    return Err(bad(format!("$type: unknown type {t:?}")));
                }
                Cond::Type(t.to_string())
            }
            "$size" => Cond::Size(arg.as_u64().ok_or_else(|| bad("$size takes a non-negative integer"))? as usize),
            "$mod" => {
                let pair = array_arg(op, arg)?;
                match (
                    pair.first().and_then(Value::as_i64),
                    pair.get(1).and_then(Value::as_i64),
                    pair.len(),
                ) {
                    (Some(d), Some(r), 2) if d != 0 => Cond::Mod(d, r),
                    _ => return Err(bad("$mod takes [divisor, remainder] with a non-zero integer divisor")),
                }
            }
            "$regex" => {
                let pattern = arg.as_str().ok_or_else(|| bad("$regex takes a string"))?;
                let re = regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| bad(format!("$regex: invalid pattern: {e}")))?;
                Cond::Regex(re)
            }
            "$elemMatch" | "$allMatch" => {
                let Value::Object(m) = arg else {
                    return Err(bad(format!("{op} takes a selector")));
                };
                let sub = Box::new(parse_object(m, &[])?);
                if op == "$elemMatch" {
                    Cond::ElemMatch(sub)
                } else {
                    Cond::AllMatch(sub)
                }
            }
            "$not" => {
                let Value::Object(m) = arg else {
                    return Err(bad("$not takes operators, e.g. {\"$not\": {\"$eq\": 1}}"));
                };
                Cond::Not(parse_conds(m)?)
            }
            _ => return Err(MangoError::UnknownOperator(op.clone())),
        };
        conds.push(cond);
    }
    Ok(conds)
}

/// The value at `path` (an empty path is `value` itself).
pub fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = value;
    for part in path {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

impl Selector {
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Selector::And(parts) => parts.iter().all(|p| p.matches(doc)),
            Selector::Or(parts) => parts.iter().any(|p| p.matches(doc)),
            Selector::Nor(parts) => !parts.iter().any(|p| p.matches(doc)),
            Selector::Not(inner) => !inner.matches(doc),
            Selector::Field(path, conds) => {
                let value = lookup(doc, path);
                conds.iter().all(|c| c.matches(value))
            }
        }
    }

    /// The top-level conjunction: the field conditions every match must meet.
    pub fn conjuncts(&self) -> Vec<(&[String], &Cond)> {
        let mut out = Vec::new();
        self.collect_conjuncts(&mut out);
        out
    }

    fn collect_conjuncts<'a>(&'a self, out: &mut Vec<(&'a [String], &'a Cond)>) {
        match self {
            Selector::And(parts) => parts.iter().for_each(|p| p.collect_conjuncts(out)),
            Selector::Field(path, conds) => out.extend(conds.iter().map(|c| (path.as_slice(), c))),
            _ => {}
        }
    }
}

fn eq(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

impl Cond {
    pub fn matches(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Cond::Exists(want), v) => v.is_some() == *want,
            (Cond::Not(conds), v) => !conds.iter().all(|c| c.matches(v)),
            (_, None) => false,
            (Cond::Eq(arg), Some(v)) => eq(v, arg),
            (Cond::Ne(arg), Some(v)) => !eq(v, arg),
            (Cond::Gt(arg), Some(v)) => compare(v, arg) == Ordering::Greater,
            (Cond::Gte(arg), Some(v)) => compare(v, arg) != Ordering::Less,
            (Cond::Lt(arg), Some(v)) => compare(v, arg) == Ordering::Less,
            (Cond::Lte(arg), Some(v)) => compare(v, arg) != Ordering::Greater,
            (Cond::In(args), Some(v)) => args.iter().any(|a| eq(v, a)),
            (Cond::Nin(args), Some(v)) => !args.iter().any(|a| eq(v, a)),
            (Cond::Type(t), Some(v)) => {
                let actual = match v {
                    Value::Null => "null",
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                };
                actual == t
            }
            (Cond::Size(n), Some(Value::Array(items))) => items.len() == *n,
            (Cond::Mod(d, r), Some(Value::Number(n))) => n.as_i64().is_some_and(|n| n % d == *r),
            (Cond::Regex(re), Some(Value::String(s))) => re.is_match(s),
            (Cond::All(args), Some(Value::Array(items))) => args.iter().all(|a| items.iter().any(|i| eq(i, a))),
            (Cond::ElemMatch(sel), Some(Value::Array(items))) => items.iter().any(|i| sel.matches(i)),
            (Cond::AllMatch(sel), Some(Value::Array(items))) => items.iter().all(|i| sel.matches(i)),
            _ => false,
        }
    }

    /// Whether a document matching this condition must have the field.
    pub fn requires_field(&self) -> bool {
        !matches!(self, Cond::Exists(false) | Cond::Not(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(selector: Value, doc: Value) -> bool {
        parse(&selector).unwrap().matches(&doc)
    }

    #[test]
    fn test_operators() {
        let doc = json!({"name": "Alice", "age": 31, "tags": ["a", "b"], "addr": {"city": "Paris"}, "n": null,
                         "scores": [{"v": 3}, {"v": 9}]});
        assert!(m(json!({"name": "Alice"}), doc.clone()));
        assert!(m(json!({"age": {"$gt": 30, "$lte": 31}}), doc.clone()));
        assert!(!m(json!({"age": {"$lt": 31}}), doc.clone()));
        assert!(m(json!({"addr.city": "Paris"}), doc.clone()));
        assert!(m(json!({"addr": {"city": "Paris"}}), doc.clone()));
        assert!(m(json!({"name": {"$in": ["Bob", "Alice"]}}), doc.clone()));
        assert!(m(json!({"name": {"$nin": ["Bob"]}}), doc.clone()));
        assert!(m(json!({"name": {"$ne": "Bob"}}), doc.clone()));
        assert!(!m(json!({"missing": {"$ne": "Bob"}}), doc.clone()));
        assert!(m(
            json!({"missing": {"$exists": false}, "n": {"$exists": true}}),
            doc.clone()
        ));
        assert!(m(json!({"tags": {"$all": ["b", "a"]}}), doc.clone()));
        assert!(m(json!({"tags": {"$size": 2}}), doc.clone()));
        assert!(m(json!({"tags": {"$elemMatch": {"$eq": "b"}}}), doc.clone()));
        assert!(m(json!({"scores": {"$elemMatch": {"v": {"$gt": 5}}}}), doc.clone()));
        assert!(!m(json!({"scores": {"$allMatch": {"v": {"$gt": 5}}}}), doc.clone()));
        assert!(m(json!({"name": {"$regex": "^Al"}}), doc.clone()));
        assert!(m(json!({"age": {"$mod": [2, 1]}}), doc.clone()));
        assert!(m(json!({"age": {"$type": "number"}}), doc.clone()));
        assert!(m(json!({"$or": [{"name": "Bob"}, {"age": 31}]}), doc.clone()));
        assert!(m(json!({"$nor": [{"name": "Bob"}, {"age": 30}]}), doc.clone()));
        assert!(m(json!({"$and": [{"name": "Alice"}, {"age": 31}]}), doc.clone()));
        assert!(m(json!({"$not": {"name": "Bob"}}), doc.clone()));
        assert!(m(json!({"age": {"$not": {"$lt": 18}}}), doc.clone()));
        // An array equals only the same array (no element matching for $eq, as Mango).
        assert!(!m(json!({"tags": "a"}), doc.clone()));
    }

    #[test]
    fn test_unsupported_operator_is_named() {
        let err = parse(&json!({"a": {"$near": 1}})).unwrap_err();
        assert!(err.to_string().contains("$near"), "{err}");
        let err = parse(&json!({"$text": "x"})).unwrap_err();
        assert!(err.to_string().contains("$text"), "{err}");
        assert!(parse(&json!({"a": {"$regex": "("}})).is_err());
        assert!(parse(&json!([1])).is_err());
    }
}

/// Fuzzing: any JSON, however nested and whatever its operators, parses or is refused with an
/// error, never a panic; what parses matches any document without a panic.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::{fuzz, json};

    /// Every operator Mango knows and some it does not, and field names plain and odd.
    fn keys() -> &'static [&'static str] {
        let mut keys: Vec<&'static str> = FIELD_OPERATORS.to_vec();
        keys.extend([
            "$and",
            "$or",
            "$nor",
            "$text",
            "$keyMapMatch",
            "a",
            "b",
            "a.b",
            "_id",
            "",
            ".",
            "a..b",
            "[0]",
        ]);
        Box::leak(keys.into_boxed_slice())
    }

    #[test]
    fn fuzz_mango_selectors() {
        let keys = keys();
        fuzz("mango", (json(keys), json(keys)), |(selector, doc)| {
            if let Ok(parsed) = parse(&selector) {
                let _ = parsed.matches(&doc);
                let _ = parsed.conjuncts();
            }
            Ok(())
        });
    }
}
