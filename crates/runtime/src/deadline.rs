//! A request body must arrive within `http.body_timeout` of the request's start. A client that
//! trickles its body (one byte a second) would otherwise hold a connection, a worker's
//! attention and a buffer for as long as it likes.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Wraps `payload` so that reading it fails with a [`PayloadError`] holding an
/// [`std::io::ErrorKind::TimedOut`] error once `timeout` has passed; the returned flag turns
/// true then, so the server answers `408` whatever the handler made of the error. A handler
/// that never reads the body never starts the timer.
pub(crate) fn with_deadline(payload: Payload, timeout: Duration) -> (Payload, Rc<Cell<bool>>) {
    let expired = Rc::new(Cell::new(false));
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Deadline {
        inner: Box::pin(payload),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        timeout,
        expired: expired.clone(),
    });
    (Payload::from(stream), expired)
}

/// Whether a body read failed because the client was too slow (answer `408`).
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Incomplete(Some(io)) if io.kind() == std::io::ErrorKind::TimedOut)
}

struct Deadline {
    inner: Pin<Box<Payload>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    expired: Rc<Cell<bool>>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired.get() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.set(true);
            let error = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the request body did not arrive within {:?}", this.timeout),
            );
            return Poll::Ready(Some(Err(PayloadError::Incomplete(Some(error)))));
        }
        Poll::Pending
    }
}
