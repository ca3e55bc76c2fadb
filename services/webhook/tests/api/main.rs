//! Integration tests of the webhook: the real server on port 0, real RabbitMQ and PostgreSQL.
//! One test binary (each file under tests/ would be linked separately, which costs build time).

mod creation;
mod handshake;
mod helpers;
mod notifications;
mod outside;
mod resilience;
