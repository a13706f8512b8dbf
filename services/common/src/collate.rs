//! CouchDB's collation of JSON values (null < false < true < numbers < strings < arrays <
//! objects), and an order-preserving byte encoding of it for index keys: comparing two
//! encodings byte-wise gives the same order as [`compare`].
//!
//! Strings compare by code point (CouchDB uses ICU collation; documented difference).

use std::cmp::Ordering;

use serde_json::Value;

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

fn num(v: &serde_json::Number) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num(x).total_cmp(&num(y)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (i, j) in x.iter().zip(y) {
                let o = compare(i, j);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((k1, v1), (k2, v2)) in x.iter().zip(y) {
                let o = k1.cmp(k2).then_with(|| compare(v1, v2));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

const END: u8 = 0x01;

/// Appends the order-preserving encoding of `v` to `out`. Each encoding is self-delimiting.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0x10),
        Value::Bool(false) => out.push(0x20),
        Value::Bool(true) => out.push(0x21),
        Value::Number(n) => {
            out.push(0x30);
            let f = num(n);
            let f = if f == 0.0 { 0.0 } else { f }; // -0 and 0 are equal
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::String(s) => {
            out.push(0x40);
            encode_str(s, out);
        }
        Value::Array(items) => {
            out.push(0x50);
            for item in items {
                encode(item, out);
            }
            out.push(END);
        }
        Value::Object(map) => {
            out.push(0x60);
            for (k, v) in map {
                encode_str(k, out);
                encode(v, out);
            }
            out.push(END);
        }
    }
}

/// Bytes of `s` with 0x00 escaped as 0x00 0xFF, ended by 0x00 0x01: shorter sorts first.
fn encode_str(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, END]);
}

#[cfg(test)]
pub fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_encoding_order_matches_collation() {
        let values = vec![
            json!(null),
            json!(false),
            json!(true),
            json!(-1e10),
            json!(-2),
            json!(-0.5),
            json!(0),
            json!(0.25),
            json!(3),
            json!(1e300),
            json!(""),
            json!("\u{0}"),
            json!("a"),
            json!("a\u{0}b"),
            json!("ab"),
            json!("b"),
            json!("é"),
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([2]),
            json!(["a"]),
            json!({}),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"b": 0}),
        ];
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                let by_value = compare(a, b);
                let by_bytes = encoded(a).cmp(&encoded(b));
                assert_eq!(by_value, i.cmp(&j), "collation of {a} vs {b}");
                assert_eq!(by_bytes, by_value, "encoding of {a} vs {b}");
            }
        }
        assert_eq!(compare(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(encoded(&json!(1)), encoded(&json!(1.0)));
    }
}
