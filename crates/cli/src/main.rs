//! `cardsync`: the admin API's command-line client.

use std::process::ExitCode;

fn main() -> ExitCode {
    cardsync_cli::main()
}
