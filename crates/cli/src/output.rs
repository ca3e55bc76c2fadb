//! Printing answers: `json` as the server sent it (pretty), `table` as aligned columns for
//! lists and `key  value` lines for one object.

use serde_json::Value;

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (lists) or key/value lines (one object).
    Table,
    /// The API's JSON.
    Json,
}

/// A cell's text: strings as they are, `null` empty, anything else as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Renders `value`; `columns` choose a list's columns (the first item's keys when empty).
pub fn render(value: &Value, format: Format, columns: &[&str]) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        Format::Table => match value.get("items").and_then(Value::as_array) {
            Some(items) => table(items, columns),
            None => object(value),
        },
    }
}

fn table(items: &[Value], columns: &[&str]) -> String {
    let keys: Vec<String> = if columns.is_empty() {
        items
            .first()
            .and_then(Value::as_object)
            .map(|first| first.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        columns.iter().map(|column| (*column).to_owned()).collect()
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| keys.iter().map(|key| cell(&item[key.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([key.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(keys.iter().map(|key| key.to_uppercase()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn object(value: &Value) -> String {
    match value.as_object() {
        Some(map) => {
            let width = map.keys().map(|key| key.chars().count()).max().unwrap_or(0);
            map.iter()
                .map(|(key, value)| format!("{key:<width$}  {}", cell(value)))
                .collect::<Vec<_>>()
                .join("\n")
        }
        None => cell(value),
    }
}

/// The rules dry run as text: the totals, a row per sample under its field's count, and the
/// fields that could not be previewed.
pub fn dry_run_table(preview: &Value) -> String {
    let count = |key: &str| preview[key].as_u64().unwrap_or(0);
    let mut out = vec![format!(
        "{} users: {} cards would change, {} would be created, {} status changes, {} users the rules cannot map (compared with rules version {})",
        count("users"),
        count("cards_changed"),
        count("cards_created"),
        preview["status"]["changes"].as_u64().unwrap_or(0),
        count("unmappable"),
        cell(&preview["rules_version"]),
    )];
    let mut rows = Vec::new();
    let changes = preview["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|field| (cell(&field["field"]), field))
        .chain(
            (preview["status"]["changes"].as_u64().unwrap_or(0) > 0)
                .then(|| ("(status)".to_owned(), &preview["status"])),
        );
    for (name, change) in changes {
        let samples = change["samples"].as_array().cloned().unwrap_or_default();
        for (n, sample) in samples.iter().enumerate() {
            let first = n == 0;
            rows.push(serde_json::json!({
                "field": if first { name.clone() } else { String::new() },
                "cards": if first { cell(&change["changes"]) } else { String::new() },
                "user": cell(&sample["user_id"]),
                "before": cell(&sample["before"]),
                "after": cell(&sample["after"]),
            }));
        }
    }
    out.push(String::new());
    if rows.is_empty() {
        out.push("no previewed field changes on any card".to_owned());
    } else {
        out.push(table(&rows, &["field", "cards", "user", "before", "after"]));
    }
    let unpreviewable = preview["unpreviewable"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !unpreviewable.is_empty() {
        out.push(String::new());
        out.push("not previewed (their rule reads properties the snapshot lacks; the apply reads them from Graph first):".to_owned());
        for field in &unpreviewable {
            let properties: Vec<String> = field["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell)
                .collect();
            out.push(format!(
                "  {}: {}",
                cell(&field["field"]),
                properties.join(", ")
            ));
        }
    }
    if preview["enumeration_first"].as_bool() == Some(true) {
        out.push(String::new());
        out.push("applying these rules enumerates every user with a new $select first".to_owned());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_prints_as_aligned_columns_with_a_header() {
        let value = json!({"items": [{"id": "a", "name": "Contoso"}, {"id": "bb", "name": null}]});
        assert_eq!(
            render(&value, Format::Table, &["id", "name"]),
            "ID  NAME\na   Contoso\nbb"
        );
    }

    #[test]
    fn a_dry_run_prints_its_totals_a_row_per_sample_and_the_fields_not_previewed() {
        let preview = json!({
            "rules_version": 4, "users": 3, "cards_changed": 2, "cards_created": 0, "unmappable": 1,
            "fields": [{"field": "job_title", "changes": 2, "samples": [
                {"card_id": "c1", "user_id": "u-ann", "before": "Engineer", "after": "ENGINEER"},
                {"card_id": "c3", "user_id": "u-cid", "before": null, "after": "DESIGNER"}
            ]}],
            "status": {"changes": 0, "samples": []},
            "unpreviewable": [{"field": "office", "properties": ["officeLocation"]}],
            "enumeration_first": true, "elapsed_ms": 12
        });
        let text = dry_run_table(&preview);
        assert!(
            text.starts_with("3 users: 2 cards would change, 0 would be created, 0 status changes, 1 users the rules cannot map (compared with rules version 4)"),
            "{text}"
        );
        assert!(text.contains("FIELD      CARDS  USER   BEFORE    AFTER\njob_title  2      u-ann  Engineer  ENGINEER\n                  u-cid            DESIGNER"), "{text}");
        assert!(text.contains("  office: officeLocation"), "{text}");
        assert!(text.ends_with("with a new $select first"), "{text}");
    }

    #[test]
    fn one_object_prints_as_key_value_lines_and_json_stays_json() {
        let value = json!({"id": "a", "syncing": true});
        assert_eq!(
            render(&value, Format::Table, &[]),
            "id       a\nsyncing  true"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&render(&value, Format::Json, &[])).unwrap(),
            value
        );
    }
}
