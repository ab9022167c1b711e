//! Value types shared by the config sections: durations and sizes in human form, and names from
//! a fixed list (the config's enums).
//!
//! Each one says in its own words what it expects, so a wrong value never produces a message that
//! names a Rust type (`expected enum SubnetMode`) instead of the values a user may write.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written as `"90s"`, `"15m"`, `"1h 30m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// `secs` seconds; for the section defaults.
    pub(crate) const fn secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// `ms` milliseconds; for the section defaults.
    pub(crate) const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"15m\", \"1h\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration `{v}` ({e}); expected e.g. \"90s\", \"15m\", \"1h 30m\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// A byte size written as `"8MiB"`, `"1.5GB"`, `"512 KiB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB; for the section defaults.
    pub(crate) const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    /// `n` MiB; for the section defaults.
    pub(crate) const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    /// `n` GiB; for the section defaults.
    pub(crate) const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    /// Parses the human form. Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024,
    /// decimal ones (`kB`, `MB`, `GB`, `TB`) powers of 1000; `B` or no unit means bytes.
    ///
    /// # Errors
    /// A message saying what was wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(format!("unknown unit `{unit}` in `{text}`; expected B, KiB, MiB, GiB, TiB, kB, MB, GB or TB")),
        };
        let bad = || format!("invalid size `{text}`; expected e.g. \"8MiB\", \"1.5GB\" or 4096");
        if num.is_empty() {
            return Err(bad());
        }
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            if frac.is_empty() || frac.len() > 9 {
                return Err(bad());
            }
            let frac_val: u64 = frac.parse().map_err(|_| bad())?;
            let scale = 10u64.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            let whole = int.checked_mul(mult);
            let part = u128::from(frac_val) * u128::from(mult) / u128::from(scale);
            whole
                .and_then(|w| w.checked_add(u64::try_from(part).ok()?))
                .ok_or_else(|| format!("size `{text}` is too large"))?
        } else {
            num.parse::<u64>()
                .map_err(|_| bad())?
                .checked_mul(mult)
                .ok_or_else(|| format!("size `{text}` is too large"))?
        };
        Ok(ByteSize(bytes))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"8MiB\", \"1.5GB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return s.collect_str(&format_args!("{}{name}", self.0 / size));
            }
        }
        s.serialize_u64(self.0)
    }
}

/// Deserializes one of `choices` by name.
///
/// The config's enums use this instead of serde's derived visitor: that one calls a number
/// `expected enum SubnetMode`, and serde_json even reports it as a JSON syntax error ("expected
/// value") although the file is valid JSON. Here any wrong value gets "expected one of `a`, `b`".
pub(crate) fn one_of<'de, D: Deserializer<'de>, T: Copy + 'static>(
    d: D,
    choices: &'static [(&'static str, T)],
) -> Result<T, D::Error> {
    struct Choice<T: 'static>(&'static [(&'static str, T)]);
    impl<T: Copy> de::Visitor<'_> for Choice<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("one of ")?;
            for (i, (name, _)) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "`{name}`")?;
            }
            Ok(())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            match self.0.iter().find(|(name, _)| *name == v) {
                Some((_, value)) => Ok(*value),
                None => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_str(Choice(choices))
}

/// Deserializes a config struct from a JSON object only.
///
/// serde's derived struct impls also take a JSON array and fill the fields by position, so
/// `"firewall": [false]` would turn the firewall off and a file holding `[]` would be a valid
/// config. Nobody writes that on purpose, so an array gets the struct's "expected a JSON object
/// with the fields …" error instead.
pub(crate) fn object_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    T::deserialize(ObjectOnly(d))
}

/// A deserializer that reads structs as maps only; everything else goes to the inner one.
pub(crate) struct ObjectOnly<D>(pub(crate) D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A whole number of the chain's smallest unit: a JSON number, or a string of digits for values
/// beyond what a JSON number holds exactly (2^64).
///
/// serde_json's own `u128` reader reports any other value (`"1000"`, `[]`) as a JSON syntax
/// error, "invalid number", at a place where the JSON is fine.
pub(crate) mod amount {
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = u128;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number (or a string of digits) of the chain's smallest unit")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
                Ok(u128::from(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<u128, E> {
                Ok(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<u128, E> {
                // serde_json reads integers beyond u64 as floats, losing digits.
                if v.fract() == 0.0 && v > 0.0 {
                    return Err(E::custom(format!(
                        "{v} is too large for an exact JSON number; write it as a string of digits"
                    )));
                }
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
                let t = v.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                t.parse()
                    .map_err(|_| E::custom(format!("`{v}` is out of range; at most 2^128-1")))
            }
        }
        d.deserialize_any(V)
    }

    pub(crate) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        // Within u64 as a plain number, as before; beyond it as digits, which read back exactly.
        match u64::try_from(*v) {
            Ok(small) => s.serialize_u64(small),
            Err(_) => s.collect_str(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("8MiB"), Ok(ByteSize(8 << 20)));
        assert_eq!(ByteSize::parse("1.5GB"), Ok(ByteSize(1_500_000_000)));
        assert_eq!(ByteSize::parse("512 KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("0.5KiB"), Ok(ByteSize(512)));
        for bad in [
            "",
            "MiB",
            "8XB",
            "1.2.3MiB",
            "-1",
            "99999999999999TiB",
            "1.MiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&ByteSize(8 << 20)).unwrap();
        assert_eq!(json, "\"8MiB\"");
    }

    #[test]
    fn amounts_beyond_a_json_number_round_trip_as_digits() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct S(#[serde(with = "amount")] u128);
        for v in [
            0,
            1,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            u128::MAX,
        ] {
            let json = serde_json::to_string(&S(v)).unwrap();
            assert_eq!(serde_json::from_str::<S>(&json).unwrap(), S(v), "{json}");
        }
        assert_eq!(serde_json::to_string(&S(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<S>("\"12\"").unwrap(), S(12));
        for bad in ["-1", "1.5", "\"1e3\"", "\"\"", "[]", "1e30"] {
            let e = serde_json::from_str::<S>(bad).unwrap_err();
            assert!(e.is_data(), "{bad}: {e}");
        }
    }
}
