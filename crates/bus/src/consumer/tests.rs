use super::*;

#[derive(Debug, thiserror::Error)]
#[error("test error")]
struct Classified {
    transient: bool,
    interrupted: bool,
}

impl Transience for Classified {
    fn is_transient(&self) -> bool {
        self.transient
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted
    }
}

#[test]
fn an_error_turns_into_the_handler_error_its_classification_names() {
    let into = |transient, interrupted| {
        HandlerError::from(Classified {
            transient,
            interrupted,
        })
    };
    assert!(matches!(into(true, false), HandlerError::Transient(_)));
    assert!(matches!(into(false, false), HandlerError::Permanent(_)));
    assert!(matches!(into(true, true), HandlerError::Interrupted(_)));
}

#[test]
fn long_errors_are_clipped_on_a_char_boundary() {
    let text = "é".repeat(3000);
    let clipped = clip(&text);
    assert!(clipped.len() <= 2048 + "…".len());
}
