//! The headers matcher: a binding's arguments list header values, and `x-match` says whether
//! all of them (`all`, the default) or any of them (`any`) must be present with the same value
//! in the message headers. Arguments starting with `x-` are not matched, except with
//! `all-with-x` / `any-with-x`. An argument with no value (void) only asks for presence.

use amq_protocol::types::{AMQPValue, FieldTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// The binding's `x-match`, or the reason it is invalid (RabbitMQ refuses the binding).
pub fn x_match(args: &FieldTable) -> Result<XMatch, String> {
    match args.inner().get("x-match") {
        None => Ok(XMatch::All),
        Some(v) => match value_str(v).as_deref() {
            Some("all") => Ok(XMatch::All),
            Some("any") => Ok(XMatch::Any),
            Some("all-with-x") => Ok(XMatch::AllWithX),
            Some("any-with-x") => Ok(XMatch::AnyWithX),
            _ => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                describe(v)
            )),
        },
    }
}

fn describe(v: &AMQPValue) -> String {
    value_str(v).map_or_else(|| format!("{v:?}"), |s| format!("'{s}'"))
}

pub fn value_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

pub fn value_i64(v: &AMQPValue) -> Option<i64> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i as i64,
        AMQPValue::ShortShortUInt(i) => i as i64,
        AMQPValue::ShortInt(i) => i as i64,
        AMQPValue::ShortUInt(i) => i as i64,
        AMQPValue::LongInt(i) => i as i64,
        AMQPValue::LongUInt(i) => i as i64,
        AMQPValue::LongLongInt(i) => i,
        AMQPValue::Timestamp(i) => i as i64,
        _ => return None,
    })
}

/// Header values compare by value: integers of different widths and short/long strings
/// are equal when their values are.
fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_i64(a), value_i64(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_str(a), value_str(b)) {
        return x == y;
    }
    a == b
}

/// Whether a message with `headers` matches a binding with `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let Ok(mode) = x_match(args) else { return false };
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let all = matches!(mode, XMatch::All | XMatch::AllWithX);
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut any_matched = false;
    for (k, want) in args.inner() {
        let k = k.as_str();
        if k == "x-match" || (!with_x && k.starts_with("x-")) {
            continue;
        }
        let ok = match (want, headers.get(k)) {
            (_, None) => false,
            (AMQPValue::Void, Some(_)) => true,
            (want, Some(got)) => same_value(want, got),
        };
        if all && !ok {
            return false;
        }
        any_matched |= ok;
    }
    all || any_matched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }
    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn all_and_any() {
        let all = table(&[("a", s("1")), ("b", AMQPValue::LongInt(2))]);
        let any = table(&[("x-match", s("any")), ("a", s("1")), ("b", AMQPValue::LongInt(2))]);
        let both = table(&[("a", s("1")), ("b", AMQPValue::LongLongInt(2))]);
        let one = table(&[("a", s("1"))]);
        let wrong = table(&[("a", s("2")), ("b", AMQPValue::LongInt(3))]);
        assert!(matches(&all, Some(&both)));
        assert!(!matches(&all, Some(&one)));
        assert!(matches(&any, Some(&one)));
        assert!(!matches(&any, Some(&wrong)));
        assert!(!matches(&any, None));
        assert!(matches(&table(&[]), None), "all with nothing to match matches everything");
        assert!(!matches(&table(&[("x-match", s("any"))]), Some(&both)));
    }

    #[test]
    fn x_headers_only_with_x() {
        let hdr = table(&[("x-k", s("v"))]);
        assert!(matches(&table(&[("x-k", s("other"))]), Some(&hdr)), "x- args are ignored by all");
        assert!(!matches(&table(&[("x-match", s("all-with-x")), ("x-k", s("other"))]), Some(&hdr)));
        assert!(matches(&table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]), Some(&hdr)));
        assert!(x_match(&table(&[("x-match", s("some"))])).is_err());
    }
}
