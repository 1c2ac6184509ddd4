//! iam-key-exporter as a library, for the binary in `main.rs` and the benchmarks.
//! ARCHITECTURE.md has the code map; data flows down this list, never back up:
//! config → accounts (+ discovery) → refresher → aws → inventory → collector (via
//! exposition) → http.

pub mod accounts;
pub mod audit;
pub mod aws;
pub mod cli;
pub mod collector;
pub mod config;
pub mod credential_report;
pub mod discovery;
pub mod exemptions;
pub mod exposition;
pub mod findings;
pub mod health;
pub mod http;
pub mod inventory;
pub mod keys;
pub mod logging;
pub mod policy;
pub mod process;
pub mod refresher;
pub mod web_config;
