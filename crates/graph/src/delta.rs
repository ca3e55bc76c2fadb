//! Delta query pages: the items, and either the next page or the end of the round.

use crate::error::GraphError;
use serde_json::Value;

/// Where a delta page points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageLink {
    /// More pages in this round (`@odata.nextLink`), even when this page was empty.
    Next(String),
    /// The round is complete (`@odata.deltaLink`): store it for the next round.
    Done(String),
}

/// One page of a delta round.
#[derive(Debug, Clone)]
pub struct DeltaPage {
    /// The objects on this page, as Graph sent them (possibly partial, possibly `@removed`).
    pub items: Vec<Value>,
    /// What comes after.
    pub link: PageLink,
}

impl DeltaPage {
    /// Reads a delta response body; a page must carry exactly one of the two links.
    pub fn parse(body: &[u8]) -> Result<Self, GraphError> {
        let mut root: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| {
                GraphError::BadResponse(format!("delta page is not a JSON object: {e}"))
            })?;
        let items = match root.remove("value") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(GraphError::BadResponse(
                    "delta page has no value array".into(),
                ));
            }
        };
        let next = root.get("@odata.nextLink").and_then(Value::as_str);
        let done = root.get("@odata.deltaLink").and_then(Value::as_str);
        let link = match (next, done) {
            (Some(next), None) => PageLink::Next(next.to_owned()),
            (None, Some(done)) => PageLink::Done(done.to_owned()),
            _ => {
                return Err(GraphError::BadResponse(
                    "delta page must carry exactly one of nextLink and deltaLink".into(),
                ));
            }
        };
        Ok(Self { items, link })
    }
}

/// The first URL of a delta round over `collection` (`users` or `groups`) tracking `select`.
pub fn delta_start_url(graph: &url::Url, collection: &str, select: &[&str]) -> String {
    let base = graph.as_str().trim_end_matches('/');
    if select.is_empty() {
        format!("{base}/v1.0/{collection}/delta")
    } else {
        format!(
            "{base}/v1.0/{collection}/delta?$select={}",
            select.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_a_next_link_continues_even_when_empty() {
        let page = DeltaPage::parse(
            br#"{"value":[],"@odata.nextLink":"https://g/v1.0/users/delta?$skiptoken=x"}"#,
        )
        .unwrap();
        assert!(page.items.is_empty());
        assert_eq!(
            page.link,
            PageLink::Next("https://g/v1.0/users/delta?$skiptoken=x".into())
        );
    }

    #[test]
    fn the_last_page_carries_the_delta_link() {
        let page = DeltaPage::parse(
            br#"{"@odata.context":"x","value":[{"id":"1"},{"id":"2","@removed":{"reason":"changed"}}],"@odata.deltaLink":"d"}"#,
        )
        .unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.link, PageLink::Done("d".into()));
    }

    #[test]
    fn pages_without_exactly_one_link_are_refused() {
        assert!(DeltaPage::parse(br#"{"value":[]}"#).is_err());
        assert!(
            DeltaPage::parse(br#"{"value":[],"@odata.nextLink":"a","@odata.deltaLink":"b"}"#)
                .is_err()
        );
        assert!(DeltaPage::parse(b"[]").is_err());
    }

    #[test]
    fn start_urls_select_the_tracked_properties() {
        let graph = url::Url::parse("https://graph.microsoft.com/").unwrap();
        assert_eq!(
            delta_start_url(&graph, "users", &["id", "displayName"]),
            "https://graph.microsoft.com/v1.0/users/delta?$select=id,displayName"
        );
    }
}
