//! A session's string metadata, read from storage into one buffer.
//!
//! Every load decodes a whole session, and the metadata is most of it: as a
//! `BTreeMap<String, String>` each key and each value was an allocation of
//! its own, plus the map's node, all freed again when the session drops.
//! Callgrind put that at a quarter of a Redis load's client instructions.
//! A handler mostly reads one or two values, or none. So a decoded map is
//! *packed*: its text in one string and the end of each key and value in
//! one array, two allocations whatever the number of pairs, searched in
//! place by [`Metadata::get`]. The `BTreeMap` the public API hands out
//! ([`Session::metadata`](crate::Session::metadata)) is built from the
//! packed pairs only when it is asked for, once; editing turns the packed
//! pairs into that map for good.
//!
//! Packing keeps the map's meaning exactly: it is used only for keys in
//! strictly increasing order, which is how a `BTreeMap` serializes and so
//! how every stored session holds them. Input in another order or with a
//! repeated key (a JSON record written by hand, say) is read into a map
//! directly, with a map's rules (sorted, the last repeat wins).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// A session's metadata: a map of strings to strings.
#[derive(Clone, Default)]
pub(crate) struct Metadata {
    /// The pairs as decoded, while nothing edited them.
    packed: Option<Packed>,
    /// The map, when not packed.
    map: BTreeMap<String, String>,
}

/// Decoded pairs in one buffer, and the map built from them on demand.
#[derive(Clone)]
struct Packed {
    /// Every key and value, in order: key 0, value 0, key 1, ...
    text: Box<str>,
    /// Where each of them ends in `text`: `2 * pairs` offsets, increasing.
    ends: Box<[u32]>,
    /// The same pairs as a map, for [`Metadata::map`].
    map: OnceLock<BTreeMap<String, String>>,
}

impl Packed {
    fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Key or value `index` (`2 * pair` or `2 * pair + 1`).
    fn part(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        // The offsets were taken at the ends of whole strings, so they fall
        // on character boundaries; `get` keeps a bad one from panicking.
        self.text
            .get(start..self.ends[index] as usize)
            .unwrap_or_default()
    }

    fn pair(&self, pair: usize) -> (&str, &str) {
        (self.part(2 * pair), self.part(2 * pair + 1))
    }

    /// The value of `key`, by binary search: the keys are in increasing order.
    fn get(&self, key: &str) -> Option<&str> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            let (found, value) = self.pair(middle);
            match found.cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(value),
            }
        }
        None
    }

    fn to_map(&self) -> BTreeMap<String, String> {
        (0..self.len())
            .map(|pair| {
                let (key, value) = self.pair(pair);
                (key.to_owned(), value.to_owned())
            })
            .collect()
    }
}

impl Metadata {
    /// The metadata as a map; built once from packed pairs.
    pub(crate) fn map(&self) -> &BTreeMap<String, String> {
        match &self.packed {
            Some(packed) => packed.map.get_or_init(|| packed.to_map()),
            None => &self.map,
        }
    }

    /// The metadata as a map, for editing: packed pairs become the map.
    pub(crate) fn map_mut(&mut self) -> &mut BTreeMap<String, String> {
        if let Some(mut packed) = self.packed.take() {
            self.map = packed.map.take().unwrap_or_else(|| packed.to_map());
        }
        &mut self.map
    }

    /// One value, found without building the map.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        match &self.packed {
            Some(packed) => packed.get(key),
            None => self.map.get(key).map(String::as_str),
        }
    }

    /// The pairs in key order.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let packed = self
            .packed
            .as_ref()
            .into_iter()
            .flat_map(|packed| (0..packed.len()).map(|pair| packed.pair(pair)));
        let map = self
            .map
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        // Exactly one of the two has pairs: packed ones replace the map.
        packed.chain(map)
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        // Both sides iterate in key order without repeats, so equal
        // sequences are equal maps.
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self { packed: None, map }
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The same map a `BTreeMap` writes, without building one. The
        // length goes first: bincode writes it before the pairs.
        let len = self.packed.as_ref().map_or(self.map.len(), Packed::len);
        let mut map = serializer.serialize_map(Some(len))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A borrowed key or value, its text not checked yet.
type RawPair<'de> = (Cow<'de, [u8]>, Cow<'de, [u8]>);

/// The most pairs whose room is reserved before reading them: a corrupt
/// length must not reserve gigabytes.
const RESERVE: usize = 64;

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs {
            human_readable: bool,
        }

        impl<'de> Visitor<'de> for Pairs {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metadata, A::Error> {
                let part = |access: &mut A| {
                    access.next_value_seed(Part {
                        human_readable: self.human_readable,
                    })
                };
                // The parts are borrowed from the input where it lends them
                // (bincode always does), so that each byte is copied once,
                // into the packed text.
                let mut pairs: Vec<RawPair<'de>> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0).min(RESERVE));
                while let Some(key) = access.next_key_seed(Part {
                    human_readable: self.human_readable,
                })? {
                    let value = part(&mut access)?;
                    if pairs.last().is_some_and(|(last, _)| *last >= key) {
                        // Not in a map's order: read it as a map.
                        let mut map = BTreeMap::new();
                        for (key, value) in pairs.into_iter().chain([(key, value)]) {
                            map.insert(text(key)?, text(value)?);
                        }
                        while let Some(key) = access.next_key_seed(Part {
                            human_readable: self.human_readable,
                        })? {
                            let value = part(&mut access)?;
                            map.insert(text(key)?, text(value)?);
                        }
                        return Ok(Metadata::from(map));
                    }
                    pairs.push((key, value));
                }
                pack(&pairs)
            }
        }

        let human_readable = deserializer.is_human_readable();
        deserializer.deserialize_map(Pairs { human_readable })
    }
}

/// The error of metadata that is not UTF-8 text.
fn not_text<E: de::Error>() -> E {
    E::custom("a metadata key or value is not UTF-8 text")
}

/// One key or value as text.
fn text<E: de::Error>(part: Cow<'_, [u8]>) -> Result<String, E> {
    String::from_utf8(part.into_owned()).map_err(|_| not_text())
}

/// Pairs in increasing key order, packed, their text checked in one pass.
/// Pairs too long for 32-bit offsets are kept as a map; no pairs is no
/// packing, so that an empty map allocates nothing.
fn pack<E: de::Error>(pairs: &[RawPair<'_>]) -> Result<Metadata, E> {
    if pairs.is_empty() {
        return Ok(Metadata::default());
    }
    let total: usize = pairs
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if u32::try_from(total).is_err() {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            map.insert(text(key.clone())?, text(value.clone())?);
        }
        return Ok(Metadata::from(map));
    }
    let mut bytes = Vec::with_capacity(total);
    let mut ends = Vec::with_capacity(2 * pairs.len());
    for (key, value) in pairs {
        for part in [key, value] {
            bytes.extend_from_slice(part);
            // `total` fits in a u32, and so does every prefix of it.
            ends.push(u32::try_from(bytes.len()).map_err(|_| not_text())?);
        }
    }
    // One check of the whole text, and then of each boundary: valid text
    // cut where a character does not end was not valid parts.
    let text = String::from_utf8(bytes).map_err(|_| not_text())?;
    if !ends.iter().all(|&end| text.is_char_boundary(end as usize)) {
        return Err(not_text());
    }
    Ok(Metadata {
        packed: Some(Packed {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            map: OnceLock::new(),
        }),
        map: BTreeMap::new(),
    })
}

/// Reads a key or value as bytes, their text checked later. A compact
/// format is asked for bytes (`deserialize_bytes`: bincode writes a string
/// as its bytes, and lends them without checking them), so that the text of
/// all pairs is checked in one pass instead of one call per string; a
/// human-readable one is asked for a string, as it must be.
#[derive(Clone, Copy)]
struct Part {
    human_readable: bool,
}

impl<'de> de::DeserializeSeed<'de> for Part {
    type Value = Cow<'de, [u8]>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct Bytes;

        impl<'de> Visitor<'de> for Bytes {
            type Value = Cow<'de, [u8]>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(text.as_bytes()))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text.as_bytes().to_vec()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text.into_bytes()))
            }

            fn visit_borrowed_bytes<E: de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(bytes))
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                Ok(Cow::Owned(bytes.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Cow::Owned(bytes))
            }
        }

        if self.human_readable {
            deserializer.deserialize_str(Bytes)
        } else {
            deserializer.deserialize_bytes(Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, String> {
        [
            ("client", "inspector/1.2"),
            ("remote_addr", "198.51.0.1:4000"),
            ("user", "alice"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }

    fn decoded(json: &str) -> Metadata {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn decoded_pairs_are_packed_and_read_like_the_map() {
        let metadata =
            decoded(r#"{"client":"inspector/1.2","remote_addr":"198.51.0.1:4000","user":"alice"}"#);
        assert!(metadata.packed.is_some());
        for (key, value) in sample() {
            assert_eq!(metadata.get(&key), Some(value.as_str()));
        }
        for absent in ["", "a", "clients", "remote", "zebra"] {
            assert_eq!(metadata.get(absent), None, "{absent}");
        }
        assert_eq!(metadata.map(), &sample());
        assert_eq!(metadata, Metadata::from(sample()));
        assert_eq!(format!("{metadata:?}"), format!("{:?}", sample()));
        assert_eq!(
            serde_json::to_string(&metadata).unwrap(),
            serde_json::to_string(&sample()).unwrap()
        );
    }

    #[test]
    fn editing_turns_packed_pairs_into_the_map_with_what_was_read() {
        let mut metadata = decoded(r#"{"a":"1","b":"2"}"#);
        // Built once for reading, then handed over for editing.
        assert_eq!(metadata.map().len(), 2);
        metadata.map_mut().insert("c".into(), "3".into());
        assert!(metadata.packed.is_none());
        assert_eq!(metadata.get("a"), Some("1"));
        assert_eq!(metadata.get("c"), Some("3"));
        let mut unread = decoded(r#"{"a":"1"}"#);
        unread.map_mut().remove("a");
        assert_eq!(unread, Metadata::default());
    }

    #[test]
    fn input_out_of_order_or_with_repeats_follows_the_rules_of_a_map() {
        for json in [r#"{"b":"2","a":"1"}"#, r#"{"a":"0","b":"2","a":"1"}"#] {
            let metadata = decoded(json);
            assert!(metadata.packed.is_none(), "{json}");
            let want: BTreeMap<String, String> = [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
            ]
            .into();
            assert_eq!(metadata.map(), &want, "{json}");
        }
    }

    #[test]
    fn escaped_and_multibyte_text_is_kept_exactly() {
        let metadata = decoded(r#"{"k\"ey":"v\\al","ключ":"значение 🦀","":""}"#);
        assert_eq!(metadata.get("k\"ey"), Some("v\\al"));
        assert_eq!(metadata.get("ключ"), Some("значение 🦀"));
        assert_eq!(metadata.get(""), Some(""));
        assert_eq!(metadata.map().len(), 3);
    }

    /// `parts` as bincode writes a map: the number of pairs, then each key
    /// and value as its length and bytes (lengths below 251 are one byte).
    fn bincode_map(parts: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![u8::try_from(parts.len() / 2).unwrap()];
        for part in parts {
            bytes.push(u8::try_from(part.len()).unwrap());
            bytes.extend_from_slice(part);
        }
        bytes
    }

    fn from_bincode(bytes: &[u8]) -> Result<Metadata, String> {
        bincode::serde::borrow_decode_from_slice(bytes, bincode::config::standard())
            .map(|(metadata, _)| metadata)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn bincode_pairs_are_packed_and_read_back() {
        let written = bincode::serde::encode_to_vec(sample(), bincode::config::standard()).unwrap();
        let metadata = from_bincode(&written).unwrap();
        assert!(metadata.packed.is_some());
        assert_eq!(metadata.map(), &sample());
        // And written again exactly as the map writes itself.
        let again = bincode::serde::encode_to_vec(&metadata, bincode::config::standard()).unwrap();
        assert_eq!(again, written);
    }

    #[test]
    fn metadata_that_is_not_text_is_an_error() {
        // A byte that is never UTF-8; and a character cut between a key and
        // its value, whose halves are valid text only together.
        for parts in [
            &[&b"user"[..], &b"\xff"[..]][..],
            &[&b"k\xc3"[..], &b"\xa9"[..]][..],
            &[&b"a"[..], &b"1"[..], &b"\xff"[..], &b"2"[..]][..],
            // Out of order, so read as a map: checked all the same.
            &[&b"b"[..], &b"1"[..], &b"a"[..], &b"\xff"[..]][..],
        ] {
            let error = from_bincode(&bincode_map(parts)).unwrap_err();
            assert!(error.contains("not UTF-8"), "{error}");
        }
        assert!(from_bincode(&bincode_map(&[b"k\xc3\xa9", b"v"])).is_ok());
    }

    #[test]
    fn many_pairs_are_read_the_same_in_or_out_of_order() {
        let many: BTreeMap<String, String> = (0..24)
            .map(|n| (format!("key-{n:03}"), format!("value {n}")))
            .collect();
        let packed = decoded(&serde_json::to_string(&many).unwrap());
        assert!(packed.packed.is_some());
        assert_eq!(packed.map(), &many);
        // Out of order late: every pair read before is still there.
        let mut json: Vec<String> = many
            .iter()
            .map(|(key, value)| format!("{key:?}:{value:?}"))
            .collect();
        json.swap(16, 17);
        let unordered = decoded(&format!("{{{}}}", json.join(",")));
        assert!(unordered.packed.is_none());
        assert_eq!(unordered.map(), &many);
    }

    #[test]
    fn no_pairs_allocate_nothing() {
        let metadata = decoded("{}");
        assert!(metadata.packed.is_none());
        assert_eq!(metadata, Metadata::default());
    }
}
