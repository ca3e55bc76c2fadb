//! The store's shared tables against the real PostgreSQL test database.

mod digests;
mod migrations;
mod runs;
mod slots;
