//! Integration tests: each starts the real server on a random port with a temporary SQLite
//! database and talks HTTP to it. Set `TEST_LOG=1` to see the server's logs.

mod helpers;

mod audit;
mod backup;
mod browser;
mod connections;
mod crypt;
mod dbsc;
mod devices;
mod dpop;
mod errors;
mod events;
mod faults;
mod fuzz;
mod input;
mod instances;
mod keys;
mod lifetimes;
mod oauth;
mod observability;
mod openapi;
mod policy;
mod process;
mod revocation;
mod rotation;
mod security;
mod sessions;
mod storage;
mod ui;
