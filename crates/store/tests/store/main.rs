//! The store's shared tables against the real PostgreSQL test database.

mod migrations;
mod runs;
