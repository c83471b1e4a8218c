//! Integration tests of the load crate's binaries.

mod seed;
