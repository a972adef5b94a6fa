//! What Fjord's load drivers share: a lean HTTP client for closed-loop load with latency
//! recording, the resources they send, starting Fjord and writing results, and generated data sets
//! with `fjord import`.

pub mod client;
pub mod dataset;
pub mod fixtures;
pub mod pgbench;
pub mod server;
pub mod synthea;
