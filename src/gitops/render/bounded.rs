//! Building a document's value with a budget on its expanded size.
//!
//! YAML aliases repeat a node wherever they appear: serde_yaml_ng refuses exponential
//! expansion, but one anchor of 3,000 items aliased 3,000 times is a 15 KB file that expands
//! to nine million values. The budget here counts what the value takes in memory while it
//! is being built (each node's `Value`, its text, its slot in a list or map), aliases
//! expanded, and stops at the first node over it, so memory stays within the budget whatever
//! the file says. Counting bytes of JSON text instead undercounts short scalars many times
//! over (BENCHMARKS.md, "Figures behind limits").

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What a document may take in memory once built, in bytes (estimated, see `NODE`, `ITEM`
/// and `ENTRY`).
#[derive(Clone, Copy, Debug)]
pub struct Budget<'a> {
    left: &'a Cell<u64>,
}

impl<'a> Budget<'a> {
    pub fn new(left: &'a Cell<u64>) -> Self {
        Budget { left }
    }

    fn spend<E: de::Error>(&self, bytes: u64) -> Result<(), E> {
        let left = self.left.get();
        if bytes > left {
            self.left.set(0);
            return Err(E::custom(OVER_BUDGET));
        }
        self.left.set(left - bytes);
        Ok(())
    }
}

/// One `serde_json::Value`.
const NODE: u64 = std::mem::size_of::<Value>() as u64;
/// A list's slot for one item, beyond the item itself.
const ITEM: u64 = NODE;
/// A map's entry beyond its key's text and its value: the key's `String` and the tree node.
const ENTRY: u64 = 64;

/// The message a document over its budget fails with (checked by the caller to name the
/// limit).
pub const OVER_BUDGET: &str = "expands beyond the size limit";

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(NODE + v.len() as u64)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(NODE + v.len() as u64)?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(NODE)?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(NODE)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            self.spend(ITEM)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(NODE)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(key) => key,
                // YAML allows any scalar as a key; JSON (and Kubernetes) take its text.
                Value::Null => "null".to_owned(),
                other if !other.is_array() && !other.is_object() => other.to_string(),
                _ => return Err(de::Error::custom("a mapping key must be a scalar")),
            };
            let value = map.next_value_seed(self)?;
            self.spend(ENTRY)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, budget: u64) -> Result<Vec<Value>, String> {
        let left = Cell::new(budget);
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|document| {
                Budget::new(&left)
                    .deserialize(document)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn a_document_within_its_budget_is_the_same_value_as_unbounded() {
        let text =
            "a: 1\nb: [x, y, {c: true, d: null, e: 1.5}]\n'3': -4\nlist: &l [1, 2]\nagain: *l\n";
        let unbounded: Value = serde_yaml_ng::from_str(text).unwrap_or_default();
        assert_eq!(parse(text, 10_000), Ok(vec![unbounded]));
    }

    #[test]
    fn aliases_count_at_their_expanded_size() {
        // One anchor of 300 items aliased 300 times: 2 KB of YAML, 90,000 values.
        let items: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        let aliases: Vec<&str> = (0..300).map(|_| "*a").collect();
        let text = format!(
            "anchor: &a [{}]\nuses: [{}]\n",
            items.join(", "),
            aliases.join(", ")
        );
        assert!(text.len() < 4_000);
        let refused = parse(&text, 1_000_000).unwrap_err();
        assert!(refused.contains(OVER_BUDGET), "{refused}");
        assert!(
            parse(&text, 10_000_000).is_ok(),
            "fits a large enough budget"
        );
    }
}
