//! AMQP argument tables as JSON: the form the metadata image and the admin API keep them in.
//! Integers become JSON numbers and come back as 64-bit integers, strings as long strings;
//! comparisons on the AMQP side are by value, so the round trip keeps their meaning.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde_json::{Map, Number, Value};

pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => Number::from_f64(*f as f64).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            Number::from_f64(d.value as f64 / 10f64.powi(d.scale as i32)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_string(), value_to_json(v))).collect::<Map<_, _>>())
}

pub fn value_from_json(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(u)) => AMQPValue::LongLongInt(u as i64),
            _ => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(a.iter().map(value_from_json).collect::<Vec<_>>())),
        Value::Object(_) => AMQPValue::FieldTable(table_from_json(v)),
    }
}

/// A JSON object as a field table (anything else is an empty table).
pub fn table_from_json(v: &Value) -> FieldTable {
    let mut t = FieldTable::default();
    if let Value::Object(m) = v {
        for (k, v) in m {
            t.insert(k.as_str().into(), value_from_json(v));
        }
    }
    t
}

/// The canonical form of a table: what it becomes after a trip through the image.
pub fn normalize(t: &FieldTable) -> FieldTable {
    table_from_json(&table_to_json(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values() {
        let j = serde_json::json!({"x-message-ttl": 1000, "x-overflow": "drop-head", "flag": true,
                                   "nested": {"a": [1, "b", null]}, "f": 1.5});
        let t = table_from_json(&j);
        assert_eq!(table_to_json(&t), j);
        let mut pika_like = FieldTable::default();
        pika_like.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        assert_eq!(table_to_json(&pika_like), serde_json::json!({"x-message-ttl": 1000}));
        assert_eq!(normalize(&pika_like).inner()["x-message-ttl"], AMQPValue::LongLongInt(1000));
    }
}
