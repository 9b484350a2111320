//! Rhai values as JSON text, for what outlives a plug run: the store,
//! `conn::` state and HTTP bodies. JSON is what the store keeps (in memory
//! and on Redis alike), so a value reads back the same wherever it was
//! written, and its length is what the size limits count.
//!
//! Rhai's serde support writes a function pointer as its name and a custom
//! type as its type name, which would store something that is not the
//! value; those are refused here with the path to the offending part.

use rhai::{Array, Dynamic, Map};

use crate::plugs::request;

/// A value that has no JSON form, and where in the value it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at `{path}` cannot be stored as JSON")]
pub struct NotJson {
    /// `value`, `value.items[2]`: where the bad part sits.
    pub path: String,
    /// What it is: "a function pointer", "a timestamp", ...
    pub what: String,
}

/// `value` as compact JSON text, or why it cannot be.
pub fn to_json(value: &Dynamic) -> Result<String, NotJson> {
    check(value, &mut String::from("value"))?;
    serde_json::to_string(value).map_err(|e| NotJson { path: "value".into(), what: e.to_string() })
}

/// Stored JSON text back as a Rhai value. Text that is not JSON (it never
/// is: only [`to_json`] writes it) reads as a string.
pub fn from_json(text: &str) -> Dynamic {
    request::parse(text).unwrap_or_else(|_| Dynamic::from(text.to_owned()))
}

/// Walk `value`, refusing what has no faithful JSON form.
fn check(value: &Dynamic, path: &mut String) -> Result<(), NotJson> {
    if value.is_unit() || value.is_bool() || value.is_int() || value.is_string() || value.is_char() {
        return Ok(());
    }
    if let Ok(f) = value.as_float() {
        return if f.is_finite() { Ok(()) } else { Err(bad(path, &format!("the number {f}"))) };
    }
    if value.is_blob() {
        return Ok(()); // an array of byte values
    }
    if value.is_array() {
        let items = value.read_lock::<Array>().ok_or_else(|| bad(path, "a locked array"))?;
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            check(item, path)?;
            path.truncate(len);
        }
        return Ok(());
    }
    if value.is_map() {
        let map = value.read_lock::<Map>().ok_or_else(|| bad(path, "a locked map"))?;
        for (key, item) in map.iter() {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            check(item, path)?;
            path.truncate(len);
        }
        return Ok(());
    }
    let what = if value.is_fnptr() {
        "a function pointer".to_owned()
    } else if value.is_timestamp() {
        "a timestamp".to_owned()
    } else {
        format!("a value of type {}", value.type_name())
    };
    Err(bad(path, &what))
}

fn bad(path: &str, what: &str) -> NotJson {
    NotJson { path: path.to_owned(), what: what.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Engine;

    fn eval(script: &str) -> Dynamic {
        Engine::new().eval(script).unwrap()
    }

    #[test]
    fn plain_values_round_trip() {
        let v = eval(r#"#{a: [1, 2.5, true, (), "s", 'c'], b: #{c: -3}}"#);
        let text = to_json(&v).unwrap();
        assert_eq!(text, r#"{"a":[1,2.5,true,null,"s","c"],"b":{"c":-3}}"#);
        assert_eq!(
            format!("{:?}", from_json(&text)),
            format!("{:?}", eval(r#"#{a: [1, 2.5, true, (), "s", "c"], b: #{c: -3}}"#))
        );
    }

    #[test]
    fn what_has_no_json_form_is_refused_with_its_path() {
        let err = to_json(&eval(r#"#{ok: 1, list: [1, Fn("f")]}"#)).unwrap_err();
        assert_eq!(err, NotJson { path: "value.list[1]".into(), what: "a function pointer".into() });
        assert!(err.to_string().contains("a function pointer at `value.list[1]`"));
        assert_eq!(to_json(&eval("|x| x + 1")).unwrap_err().what, "a function pointer");
        assert_eq!(to_json(&eval("timestamp()")).unwrap_err().what, "a timestamp");
        assert!(to_json(&Dynamic::from(f64::NAN)).unwrap_err().what.contains("NaN"));
        assert!(to_json(&Dynamic::from(f64::INFINITY)).is_err());
    }
}
