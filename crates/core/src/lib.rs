//! The session domain of sessiond: sessions, token pairs, rotation, expiry, revocation and policy.
//!
//! This crate performs no I/O of its own. Storage sits behind the [`store::Store`] trait and time
//! behind the [`time::Clock`] trait, so every rule here can be tested in microseconds with a clock
//! the test moves. The only outside resource it touches is the operating system's CSPRNG, through
//! `getrandom`, when it mints secrets.

pub mod anomaly;
pub mod audit;
pub mod crypt;
pub mod dbsc;
pub mod device;
pub mod dpop;
pub mod error;
pub mod event;
pub mod fresh_tokens;
pub mod ids;
pub mod integrity;
pub mod permission;
pub mod policy;
pub mod primitives;
#[cfg(test)]
mod proptesting;
pub mod random;
pub mod refresh;
pub mod revocation;
pub mod service;
pub mod session;
pub mod session_cache;
pub mod signing_keys;
pub mod store;
pub mod time;
pub mod token;

pub use error::Error;
pub use ids::{DeviceId, SessionId, TenantId, UserId};
pub use policy::Policy;
pub use service::SessionService;
pub use session::{Device, DeviceType, RevokeReason, Session};
pub use time::{Clock, ManualClock, Timestamp};
