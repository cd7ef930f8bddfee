//! Decides whether a live object already carries everything the operator wants in it, so that an
//! unchanged world costs no write requests.
//!
//! The desired object is compared as a *subset* of the live one: every field the operator sets
//! must be present with an equal value; fields added by the apiserver (defaults, status,
//! metadata) or by other controllers are ignored. Quantities are compared by value, because the
//! apiserver canonicalises them (`0.5` is stored as `500m`), and int-or-string fields match in
//! either form (`8080` and `"8080"`).
//!
//! The live side is not kept as an object: a cached child holds a [`Digest`], the sorted hashes
//! of its leaves (one per scalar, keyed by the path to it, plus one per list carrying its
//! length). The desired object is turned into the same kind of hashes, and it is a subset of the
//! live one when every one of its hashes is in the digest. This keeps a cached child to a few
//! hundred bytes instead of its whole JSON tree.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

/// The leaves of a live object, sorted, for subset checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest(Box<[u64]>);

impl Digest {
    /// The digest of a live object. `status` and `metadata.managedFields` are left out: the
    /// operator never sets them.
    pub fn of_live(object: &Value) -> Self {
        let mut leaves = Vec::new();
        if let Value::Object(map) = object {
            for (key, value) in map {
                if key == "status" || key == "apiVersion" || key == "kind" {
                    continue;
                }
                let path = child_path(ROOT, key);
                if key == "metadata"
                    && let Value::Object(metadata) = value
                {
                    for (key, value) in metadata {
                        if IGNORED_METADATA.contains(&key.as_str()) {
                            continue;
                        }
                        collect(value, child_path(path, key), Side::Live, &mut leaves);
                    }
                    continue;
                }
                collect(value, path, Side::Live, &mut leaves);
            }
        }
        leaves.sort_unstable();
        leaves.dedup();
        Digest(leaves.into_boxed_slice())
    }

    /// Whether every field of `desired` (`apiVersion` and `kind` aside) is present in the object
    /// this digest was made from, with an equal value.
    pub fn contains(&self, desired: &Value) -> bool {
        let mut leaves = Vec::new();
        if let Value::Object(map) = desired {
            for (key, value) in map {
                if key == "apiVersion" || key == "kind" {
                    continue;
                }
                collect(value, child_path(ROOT, key), Side::Desired, &mut leaves);
            }
        } else {
            collect(desired, ROOT, Side::Desired, &mut leaves);
        }
        leaves.iter().all(|leaf| self.0.binary_search(leaf).is_ok())
    }

    /// Heap bytes held by the digest.
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<u64>()
    }
}

/// Metadata the apiserver maintains; the operator never sets it, so it is not kept.
const IGNORED_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

const ROOT: u64 = 0x5eed;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Desired,
    Live,
}

fn child_path(parent: u64, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (parent, 0u8, key).hash(&mut hasher);
    hasher.finish()
}

fn index_path(parent: u64, index: usize) -> u64 {
    let mut hasher = DefaultHasher::new();
    (parent, 1u8, index).hash(&mut hasher);
    hasher.finish()
}

fn leaf(path: u64, scalar: Scalar<'_>) -> u64 {
    let mut hasher = DefaultHasher::new();
    (path, scalar).hash(&mut hasher);
    hasher.finish()
}

/// A scalar in the form that compares as the apiserver means it.
#[derive(Hash)]
enum Scalar<'a> {
    /// A quantity or a number, in billionths (`500m`, `0.5` and `5e-1` are one value).
    Quantity(i128),
    Text(&'a str),
    Bool(bool),
    /// The length of a list: lists match only whole.
    Length(usize),
}

fn collect(value: &Value, path: u64, side: Side, out: &mut Vec<u64>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                collect(value, child_path(path, key), side, out);
            }
        }
        Value::Array(items) => {
            // An empty desired list is the same as an absent one: the apiserver drops empty
            // lists on some fields.
            if side == Side::Live || !items.is_empty() {
                out.push(leaf(path, Scalar::Length(items.len())));
            }
            for (index, item) in items.iter().enumerate() {
                collect(item, index_path(path, index), side, out);
            }
        }
        // A desired null is an absent field.
        Value::Null => {}
        Value::Bool(b) => out.push(leaf(path, Scalar::Bool(*b))),
        Value::Number(number) => {
            let text = number.to_string();
            out.push(leaf(path, scalar_of(&text)));
        }
        Value::String(text) => out.push(leaf(path, scalar_of(text))),
    }
}

fn scalar_of(text: &str) -> Scalar<'_> {
    match parse_quantity(text) {
        Some(value) => Scalar::Quantity(value),
        None => Scalar::Text(text),
    }
}

/// Parses a Kubernetes quantity (`500m`, `0.5`, `1Gi`, `1e3`) into billionths of a unit; `None`
/// for anything that is not one, or too large to hold.
fn parse_quantity(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, unsigned) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The value is digits × 10^-fraction_len × multiplier; the multiplier is in billionths.
    let (multiplier, exponent) = match suffix {
        "" => (1, 9),
        "n" => (1, 0),
        "u" => (1, 3),
        "m" => (1, 6),
        "k" => (1, 12),
        "M" => (1, 15),
        "G" => (1, 18),
        "T" => (1, 21),
        "P" => (1, 24),
        "E" => (1, 27),
        "Ki" => (1i128 << 10, 9),
        "Mi" => (1i128 << 20, 9),
        "Gi" => (1i128 << 30, 9),
        "Ti" => (1i128 << 40, 9),
        "Pi" => (1i128 << 50, 9),
        "Ei" => (1i128 << 60, 9),
        _ => {
            let exponent: i32 = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?
                .parse()
                .ok()?;
            (1, exponent.checked_add(9)?)
        }
    };
    let digits: String = whole.chars().chain(fraction.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        if digits.len() > 36 {
            return None;
        }
        digits.parse().ok()?
    };
    value = value.checked_mul(multiplier)?;
    let scale = exponent - i32::try_from(fraction.len()).ok()?;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        // Below a billionth: the apiserver rounds such quantities up to one.
        let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn is_subset(desired: &Value, live: &Value) -> bool {
        Digest::of_live(live).contains(desired)
    }

    #[test]
    fn extra_live_fields_are_ignored() {
        let desired = json!({"spec": {"replicas": 1, "template": {"x": "y"}}});
        let live = json!({"spec": {"replicas": 1, "template": {"x": "y", "z": 1}, "strategy": {}}, "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_field_is_a_difference() {
        let desired = json!({"spec": {"replicas": 2}});
        assert!(!is_subset(&desired, &json!({"spec": {"replicas": 1}})));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
        let list = json!({"a": [1, 2]});
        assert!(!is_subset(&list, &json!({"a": [1]})));
        assert!(!is_subset(&list, &json!({"a": [2, 1]})));
        assert!(!is_subset(&list, &json!({"a": [1, 2, 3]})));
        assert!(is_subset(&list, &json!({"a": [1, 2]})));
    }

    #[test]
    fn values_do_not_match_across_paths() {
        assert!(!is_subset(
            &json!({"a": {"b": "x"}}),
            &json!({"a": {"c": "x"}, "b": "x"})
        ));
        assert!(!is_subset(&json!({"a": ["x"]}), &json!({"a": {"0": "x"}})));
        assert!(!is_subset(&json!({"a": true}), &json!({"a": "true"})));
    }

    #[test]
    fn list_elements_are_compared_as_subsets() {
        let desired = json!({"containers": [{"name": "app", "image": "a:1"}]});
        let live = json!({"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent"}]});
        assert!(is_subset(&desired, &live));
        let changed = json!({"containers": [{"name": "app", "image": "a:2"}]});
        assert!(!is_subset(&changed, &live));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(is_subset(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1024Mi"})
        ));
        assert!(is_subset(&json!({"n": "1e3"}), &json!({"n": "1k"})));
        assert!(!is_subset(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1G"})
        ));
        assert!(!is_subset(&json!({"name": "a1"}), &json!({"name": "b1"})));
        assert!(!is_subset(&json!({"v": "1.41.0"}), &json!({"v": "1.41"})));
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_quantity("500m"), Some(500_000_000));
        assert_eq!(parse_quantity("0.5"), Some(500_000_000));
        assert_eq!(parse_quantity("-1.5k"), Some(-1_500_000_000_000));
        assert_eq!(parse_quantity("1Ki"), Some(1_024_000_000_000));
        assert_eq!(parse_quantity("1.41.0"), None);
        assert_eq!(parse_quantity("nginx:1.25"), None);
        assert_eq!(parse_quantity("."), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("9".repeat(60).as_str()), None);
    }

    #[test]
    fn empty_desired_collections_match_absent_fields() {
        assert!(is_subset(&json!({"labels": {}}), &json!({})));
        assert!(is_subset(&json!({"args": []}), &json!({})));
        assert!(is_subset(&json!({"x": null}), &json!({})));
        assert!(!is_subset(&json!({"labels": {"a": "b"}}), &json!({})));
    }

    #[test]
    fn int_or_string_matches_either_form() {
        assert!(is_subset(&json!({"port": 8080}), &json!({"port": "8080"})));
        assert!(is_subset(&json!({"port": "8080"}), &json!({"port": 8080})));
        assert!(is_subset(&json!({"ratio": 1}), &json!({"ratio": 1.0})));
    }

    #[test]
    fn server_maintained_metadata_and_status_are_not_kept() {
        let live = json!({
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "7", "managedFields": [{"manager": "m"}]},
            "status": {"phase": "Ready"},
        });
        let digest = Digest::of_live(&live);
        assert!(digest.contains(&json!({"metadata": {"name": "a"}})));
        assert!(!digest.contains(&json!({"metadata": {"uid": "u"}})));
        assert!(!digest.contains(&json!({"status": {"phase": "Ready"}})));
        assert_eq!(digest.heap_bytes(), 8);
    }

    #[test]
    fn type_fields_are_ignored_on_both_sides() {
        let live = json!({"metadata": {"name": "a"}});
        assert!(
            Digest::of_live(&live).contains(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}})
            )
        );
    }
}
