//! Floats in JSON files that may be infinite or NaN. JSON has no such numbers, and
//! `serde_json` writes them as `null`, which it cannot read back into a float. Here a
//! finite value is written as a number and the others as the strings `"inf"`, `"-inf"`
//! and `"nan"` (which Python's `float()` reads); a number, one of those strings, or
//! `null` (as NaN) is read back. Use as `#[serde(with = "crate::io::json_float")]`, or
//! `json_float::vec` for a `Vec<f64>`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Float {
    Number(f64),
    Text(String),
}

fn written(v: f64) -> Float {
    match v {
        v if v.is_finite() => Float::Number(v),
        v if v.is_nan() => Float::Text("nan".into()),
        v if v > 0.0 => Float::Text("inf".into()),
        _ => Float::Text("-inf".into()),
    }
}

fn read(f: Option<Float>) -> Result<f64, String> {
    match f {
        None => Ok(f64::NAN),
        Some(Float::Number(v)) => Ok(v),
        Some(Float::Text(t)) => match t.to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            _ => Err(format!("`{t}` is not a number (nor inf, -inf or nan)")),
        },
    }
}

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    written(*v).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    read(Option::<Float>::deserialize(d)?).map_err(D::Error::custom)
}

/// The same for every element of a `Vec<f64>`.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| written(x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Option<Float>>::deserialize(d)?
            .into_iter()
            .map(|f| read(f).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Figures {
        #[serde(with = "super")]
        one: f64,
        #[serde(with = "super::vec")]
        many: Vec<f64>,
    }

    /// Every float, finite or not, survives a round trip; `null` (what `serde_json`
    /// writes for them by itself) and integers are read too.
    #[test]
    fn non_finite_floats_round_trip() {
        let f = Figures {
            one: f64::INFINITY,
            many: vec![1.5, f64::NEG_INFINITY, f64::NAN, 0.1, -0.0],
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"one":"inf","many":[1.5,"-inf","nan",0.1,-0.0]}"#);
        let back: Figures = serde_json::from_str(&text).unwrap();
        assert_eq!(back.one, f64::INFINITY);
        assert_eq!(back.many[..2], [1.5, f64::NEG_INFINITY]);
        assert!(back.many[2].is_nan());
        assert_eq!(back.many[3..], [0.1, 0.0]);
        let old: Figures = serde_json::from_str(r#"{"one":null,"many":[3,null]}"#).unwrap();
        assert!(old.one.is_nan() && old.many[1].is_nan());
        assert_eq!(old.many[0], 3.0);
        let err = serde_json::from_str::<Figures>(r#"{"one":"lots","many":[]}"#).unwrap_err();
        assert!(err.to_string().contains("`lots` is not a number"), "{err}");
    }
}
