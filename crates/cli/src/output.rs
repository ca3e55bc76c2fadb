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
