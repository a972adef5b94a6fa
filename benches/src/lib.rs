//! What Fjord's load drivers share: a lean HTTP client for closed-loop load with latency
//! recording, the resources they send, and starting Fjord and writing results.

pub mod client;
pub mod fixtures;
pub mod server;
pub mod synthea;
