//! What Fjord's load drivers share: a lean HTTP client for closed-loop load with latency
//! recording, and starting Fjord and writing results.

pub mod client;
pub mod server;
