//! Findings: what is out of policy in the inventory, and the `audit` report of them.

pub mod audit;
pub(crate) mod findings;
