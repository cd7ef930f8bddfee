//! The CRD reference (`docs/crd-reference.md`): every field of the three kinds with its type,
//! default, description and validation, read from the generated CRDs so that it cannot drift from
//! what the apiserver enforces.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};

/// The reference of the three CRDs of [`crate::crd::crds`], as Markdown.
pub fn markdown() -> String {
    markdown_for(&crate::crd::crds())
}

/// The reference of `crds`, as Markdown.
pub fn markdown_for(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated from crates/homelab-api by `{}`. Do not edit. -->\n",
        crate::crd::REGENERATE
    );
    out.push_str("# CRD reference\n\n");
    out.push_str(
        "Every field of the `homelab.io` custom resources: its type, the default the apiserver \
         fills in, what it means and what the apiserver accepts. A request that breaks a rule is \
         refused with the rule's message, naming the field.\n\n",
    );
    for crd in crds {
        let kind = &crd.spec.names.kind;
        let _ = writeln!(out, "- [{kind}](#{})", kind.to_lowercase());
    }
    out.push('\n');
    for crd in crds {
        write_crd(&mut out, crd);
    }
    out
}

fn write_crd(out: &mut String, crd: &CustomResourceDefinition) {
    let names = &crd.spec.names;
    let _ = writeln!(out, "## {}\n", names.kind);
    for version in &crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        if let Some(description) = &schema.description {
            let _ = writeln!(out, "{}\n", one_line(description));
        }
        let _ = writeln!(out, "- API version: `{}/{}`", crd.spec.group, version.name);
        let _ = writeln!(out, "- Scope: {}", crd.spec.scope);
        let _ = writeln!(out, "- Plural: `{}`", names.plural);
        if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
            let _ = writeln!(out, "- Short names: {}", code_list(short));
        }
        if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
            let _ = writeln!(out, "- Categories: {}", code_list(categories));
        }
        out.push('\n');

        if let Some(columns) = version
            .additional_printer_columns
            .as_ref()
            .filter(|c| !c.is_empty())
        {
            out.push_str("Columns of `kubectl get` (`-o wide` adds those of priority 1):\n\n");
            out.push_str("| Column | Type | JSON path | Priority | Description |\n");
            out.push_str("| --- | --- | --- | --- | --- |\n");
            for column in columns {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    cell(&column.name),
                    cell(&column.type_),
                    code(&column.json_path),
                    column.priority.unwrap_or(0),
                    cell(&one_line(column.description.as_deref().unwrap_or(""))),
                );
            }
            out.push('\n');
        }

        if let Some(rules) = schema.x_kubernetes_validations.as_ref() {
            out.push_str("Rules on the whole object:\n\n");
            for rule in rules {
                let _ = writeln!(out, "- {}", rule_text(rule));
            }
            out.push('\n');
        }

        for section in ["spec", "status"] {
            let Some(field) = schema.properties.as_ref().and_then(|p| p.get(section)) else {
                continue;
            };
            let required = schema
                .required
                .as_ref()
                .is_some_and(|r| r.iter().any(|name| name == section));
            let _ = writeln!(out, "### {} `{section}`\n", names.kind);
            out.push_str("| Field | Type | Default | Description | Validation |\n");
            out.push_str("| --- | --- | --- | --- | --- |\n");
            let mut rows = Vec::new();
            collect(section, field, required, &mut rows);
            for row in rows {
                out.push_str(&row);
            }
            out.push('\n');
        }
    }
}

/// Appends a table row for `schema` at `path`, then rows for everything below it.
fn collect(path: &str, schema: &JSONSchemaProps, required: bool, rows: &mut Vec<String>) {
    rows.push(format!(
        "| {} | {} | {} | {} | {} |\n",
        code(path),
        cell(&type_name(schema)),
        schema
            .default
            .as_ref()
            .map(|d| code(&compact_json(&d.0)))
            .unwrap_or_default(),
        cell(&one_line(
            schema
                .description
                .as_deref()
                .and_then(|d| d.split("\n\n").next())
                .unwrap_or("")
        )),
        validation(schema, required).join("<br>"),
    ));
    if let Some(properties) = &schema.properties {
        let required_fields = schema.required.as_deref().unwrap_or_default();
        for (name, child) in properties {
            let child_required = required_fields.iter().any(|r| r == name);
            collect(&format!("{path}.{name}"), child, child_required, rows);
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        descend_into_element(&format!("{path}[]"), items, rows);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        descend_into_element(&format!("{path}.<key>"), values, rows);
    }
}

/// Lists and maps: an element that is an object contributes its fields (and a row of its own
/// when it carries rules); a scalar element gets a row only when it says something the
/// container's row does not (a description or a bound).
fn descend_into_element(path: &str, element: &JSONSchemaProps, rows: &mut Vec<String>) {
    match &element.properties {
        Some(properties) => {
            if element.x_kubernetes_validations.is_some() {
                rows.push(format!(
                    "| {} | object |  |  | {} |\n",
                    code(path),
                    validation(element, false).join("<br>")
                ));
            }
            let required_fields = element.required.as_deref().unwrap_or_default();
            for (name, child) in properties {
                let child_required = required_fields.iter().any(|r| r == name);
                collect(&format!("{path}.{name}"), child, child_required, rows);
            }
        }
        None => {
            if element.description.is_some() || !validation(element, false).is_empty() {
                collect(path, element, false, rows);
            }
        }
    }
}

fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "integer or string".to_string();
    }
    let base = match schema.type_.as_deref() {
        Some("array") => match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => {
                format!("array of {}", type_name(items))
            }
            _ => "array".to_string(),
        },
        Some("object") => match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) if schema.properties.is_none() => {
                format!("map of {}", type_name(values))
            }
            _ => "object".to_string(),
        },
        Some(other) => other.to_string(),
        None => "any".to_string(),
    };
    match schema.format.as_deref() {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

fn validation(schema: &JSONSchemaProps, required: bool) -> Vec<String> {
    let mut out = Vec::new();
    if required {
        out.push("required".to_string());
    }
    if let Some(values) = &schema.enum_ {
        let values: Vec<String> = values.iter().map(|v| compact_json(&v.0)).collect();
        out.push(format!("one of {}", code_list(&values)));
    }
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max)) => out.push(format!("{min} to {max}")),
        (Some(min), None) => out.push(format!("at least {min}")),
        (None, Some(max)) => out.push(format!("at most {max}")),
        (None, None) => {}
    }
    match (schema.min_length, schema.max_length) {
        (Some(min), Some(max)) => out.push(format!("{min} to {max} characters")),
        (Some(min), None) => out.push(format!("at least {min} characters")),
        (None, Some(max)) => out.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    if let Some(pattern) = &schema.pattern {
        out.push(format!("matches {}", code(pattern)));
    }
    match (schema.min_items, schema.max_items) {
        (Some(min), Some(max)) => out.push(format!("{min} to {max} items")),
        (Some(min), None) => out.push(format!("at least {min} items")),
        (None, Some(max)) => out.push(format!("at most {max} items")),
        (None, None) => {}
    }
    if let Some(max) = schema.max_properties {
        out.push(format!("at most {max} entries"));
    }
    if schema.x_kubernetes_list_type.as_deref() == Some("map") {
        let keys = schema
            .x_kubernetes_list_map_keys
            .as_deref()
            .unwrap_or_default();
        out.push(format!("unique by {}", code_list(keys)));
    }
    if schema.nullable == Some(true) {
        out.push("may be null".to_string());
    }
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        out.push(rule_text(rule));
    }
    out
}

fn rule_text(rule: &ValidationRule) -> String {
    let mut text = String::new();
    match (&rule.message, &rule.message_expression) {
        (Some(message), _) => text.push_str(&cell(&one_line(message))),
        (None, Some(expression)) => {
            let _ = write!(text, "message from {}", code(expression));
        }
        (None, None) => text.push_str("must satisfy"),
    }
    let _ = write!(text, " (CEL: {}", code(&rule.rule));
    if let Some(path) = &rule.field_path {
        let _ = write!(text, "; reported on {}", code(path));
    }
    if rule.rule.contains("oldSelf") {
        text.push_str("; checked on update");
    }
    text.push(')');
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn compact_json(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Inline code safe inside a table cell; backticks inside the text get a longer fence.
fn code(text: &str) -> String {
    let text = cell(text);
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

fn code_list(items: &[String]) -> String {
    items.iter().map(|i| code(i)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_of_every_kind_has_a_row() {
        let doc = markdown();
        for path in [
            "`spec.storage.azure.storageAccount`",
            "`spec.walArchiveTimeout`",
            "`spec.env[].name`",
            "`spec.database.env[].field`",
            "`spec.restore.from.appDatabase`",
            "`spec.postgres.parameters`",
            "`status.conditions[].type`",
        ] {
            assert!(doc.contains(path), "no row for {path}");
        }
    }

    #[test]
    fn rows_show_defaults_and_rules() {
        let doc = markdown();
        let row = doc
            .lines()
            .find(|l| l.starts_with("| `spec.instances` "))
            .unwrap_or_default();
        assert!(row.contains("`1`"), "{row}");
        assert!(row.contains("1 to 9"), "{row}");
        assert!(doc.contains("must contain {app}"));
        assert!(doc.contains("checked on update"));
    }

    #[test]
    fn pipes_in_rules_do_not_break_tables() {
        for line in markdown().lines().filter(|l| l.starts_with("| `spec")) {
            let unescaped = line.replace("\\|", "");
            assert_eq!(unescaped.matches('|').count(), 6, "{line}");
        }
    }
}
