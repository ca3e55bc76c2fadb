//! Errors as one log field: the whole cause chain on one line, so a cause is logged once, where
//! the error is handled, and never lost.

/// The cause chain of `error` on one line: `outer: inner: innermost`. A cause whose text the
/// previous message already ends with (wrappers that print their source) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the tenant")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("database query failed")]
    struct Inner(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("publish failed: {0}")]
    struct Echoing(#[source] std::io::Error);

    #[test]
    fn every_cause_is_joined_in_order() {
        let error = Outer(Inner(std::io::Error::other("connection refused")));
        assert_eq!(
            error_chain(&error),
            "reading the tenant: database query failed: connection refused"
        );
    }

    #[test]
    fn a_cause_the_message_already_ends_with_is_not_repeated() {
        let error = Echoing(std::io::Error::other("timed out"));
        assert_eq!(error_chain(&error), "publish failed: timed out");
    }
}
