//! `cardsync`, the command-line client of the admin API: every command is one or a few API
//! calls, printed as a table or as JSON. Like kubectl to its API server: `--server`, a bearer
//! token from `CARDSYNC_TOKEN` or a file, `-o table|json`, shell completion, and exit codes
//! that scripts can use (see [`exit`]).

mod cli;
mod client;
mod commands;
mod output;
mod photo;
mod rail;

pub use cli::Cli;
pub use client::{Client, ClientError};

use clap::Parser as _;
use std::process::ExitCode;

/// Exit codes.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The server failed (5xx), could not be reached, or a local file could not be read.
    pub const FAILED: u8 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// The thing asked for does not exist (404).
    pub const NOT_FOUND: u8 = 3;
    /// No token, an invalid token, or not allowed (401, 403).
    pub const DENIED: u8 = 4;
    /// The server refused the request's content or it conflicts (400, 409, 413, 415, 422).
    pub const REFUSED: u8 = 5;
}

/// Parses the command line, runs the command, prints, and returns the exit code.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cardsync: cannot start: {error}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code)
}
