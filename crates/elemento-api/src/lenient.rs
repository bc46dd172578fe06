//! Tolerant decoding helpers: Elemento's daemons send numbers as strings or floats, booleans as
//! strings, and `null` where a value is missing. None of these should fail a whole list.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A number given as a JSON number or a numeric string; anything else is `None`.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A count given as a number or a numeric string; negatives and others are `None`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(opt_f64(d)?.filter(|v| *v >= 0.0).map(|v| v as u64))
}

/// A boolean given as a JSON bool, "true"/"false", or 0/1; anything else is `false`.
pub fn bool_loose<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        Value::Number(n) => n.as_f64().is_some_and(|v| v != 0.0),
        _ => false,
    })
}

/// An optional boolean, as loose as [`bool_loose`]; `null` or missing is `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        v => Some(bool_loose(v).unwrap_or(false)),
    })
}

/// A string given as a string or a number; `null` and others are `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list that may be `null` or missing; items that fail to decode are skipped.
pub fn vec_skip_bad<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}
