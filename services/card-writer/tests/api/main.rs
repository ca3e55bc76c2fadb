//! Integration tests of the card-writer: the real application on port 0, real RabbitMQ,
//! PostgreSQL and Redis, consumers driven step by step with `process_next`.
//! One test binary (each file under tests/ would be linked separately, which costs build time).

mod batches;
mod commands;
mod delivery;
mod digests;
mod helpers;
mod local_edit;
