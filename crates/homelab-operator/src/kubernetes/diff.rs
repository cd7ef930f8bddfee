//! Decides whether a live object already carries everything the operator wants in it, so that an
//! unchanged world costs no write requests.
//!
//! The desired object is compared as a *subset* of the live one: every field the operator sets
//! must be present with an equal value; fields added by the apiserver (defaults, status,
//! metadata) or by other controllers are ignored. Quantities are compared by value, because the
//! apiserver canonicalises them (`0.5` is stored as `500m`).

use serde_json::Value;

/// Whether every field in `desired` is present in `live` with an equal value.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, value)| {
            match have.get(key) {
                Some(live_value) => is_subset(value, live_value),
                // An empty desired value is the same as an absent one: the apiserver drops
                // empty maps and lists on some fields.
                None => is_empty(value),
            }
        }),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (Value::String(want), Value::String(have)) => want == have || quantities_equal(want, have),
        (Value::Number(want), Value::Number(have)) => want.as_f64() == have.as_f64(),
        (Value::Number(want), Value::String(have)) | (Value::String(have), Value::Number(want)) => {
            // int-or-string fields (ports, maxUnavailable) may come back in the other form.
            want.to_string() == *have
        }
        _ => desired == live,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

/// Compares two Kubernetes quantities (`500m`, `0.5`, `1Gi`, `1024Mi`) by value.
fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Parses a Kubernetes quantity into its value; `None` for anything that is not one.
fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => {
            let exponent: i32 = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?
                .parse()
                .ok()?;
            10f64.powi(exponent)
        }
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(is_subset(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1024Mi"})
        ));
        assert!(!is_subset(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1G"})
        ));
        assert!(!is_subset(&json!({"name": "a1"}), &json!({"name": "b1"})));
        assert!(!is_subset(&json!({"v": "1.41.0"}), &json!({"v": "1.41"})));
    }

    #[test]
    fn empty_desired_collections_match_absent_fields() {
        assert!(is_subset(&json!({"labels": {}}), &json!({})));
        assert!(!is_subset(&json!({"labels": {"a": "b"}}), &json!({})));
    }

    #[test]
    fn int_or_string_matches_either_form() {
        assert!(is_subset(&json!({"port": 8080}), &json!({"port": "8080"})));
    }
}
