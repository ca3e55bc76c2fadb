//! Integration tests of the subscription manager: graph-sim plays Graph, the real webhook
//! receives Graph's handshakes and notifications, RabbitMQ and PostgreSQL are real. One test
//! binary (each file under tests/ would be linked separately).

mod keeping;
mod lifecycle;
mod support;
