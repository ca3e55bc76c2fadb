//! The cardsync benchmarks (`make bench`) and their support code. The benchmark programs are
//! this crate's binaries (`writer_bench`, `ingest_bench`); they run the service under test as a
//! child process and depend only on library crates, never on a service. They measure on Linux,
//! through `/proc`.
//!
//! - [`service`]: the service under test, built from this workspace and run as a child process.
//! - [`settings`]: the bus settings the service under test runs with.
//! - [`cpu`]: cores used per phase by the processes a benchmark watches, this load generator,
//!   interrupts and everything else.
//! - [`database`]: a database made for one run, migrated, and dropped after it.
//! - [`machine`]: what the machine is and how busy it was.
//! - [`report`]: progress lines and the small helpers of the printed reports.
//!
//! Errors are `anyhow`: they only ever end a benchmark's `main`, which prints the whole chain.

pub mod cpu;
pub mod database;
pub mod machine;
pub mod report;
pub mod service;
pub mod settings;

pub use cpu::{CpuCores, CpuProbe, CpuTimes, broker_process_ids, processes_named};
pub use database::{create_database, database_url, drop_database};
pub use machine::{describe_machine, load_average, load_before_run};
pub use report::{NOISY_NEIGHBOUR_CORES, progress, round2, verdict, warn_about_neighbours};
pub use service::{ServiceProcess, free_port, parse_setting, service_binary, service_env};
pub use settings::service_bus_settings;
