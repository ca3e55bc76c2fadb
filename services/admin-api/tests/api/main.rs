//! The admin-api's integration tests, one binary: the real service on port 0 against real
//! PostgreSQL and RabbitMQ, with graph-sim as the token issuer (its JWKS) and as Graph.

mod auth;
mod dead_letters;
mod held;
mod mapping;
mod offboard;
mod photos;
mod resources;
mod rules;
mod schedules;
mod scope;
mod sealing;
mod subscriptions;
mod support;
mod tenants;
