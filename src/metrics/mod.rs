//! What Prometheus reads: the exposition of the inventory and of the exporter itself.

pub mod collector;
pub(crate) mod exposition;
pub mod health;
pub(crate) mod process;
