//! DPoP (RFC 9449): whether proofs must carry a nonce sessiond handed out, and how old a
//! proof may be.

use std::time::Duration;

use super::values::duration;
use super::*;

/// The default of `SESSIOND_DPOP_PROOF_MAX_AGE`.
const DEFAULT_PROOF_MAX_AGE: Duration = Duration::from_secs(60);
/// The range `SESSIOND_DPOP_PROOF_MAX_AGE` must fall in: below, clock skew between clients and
/// sessiond refuses honest proofs; above, a captured proof stays usable (and its id stays in
/// the replay cache) for longer than any client needs.
const PROOF_MAX_AGE_RANGE: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(600));

/// How DPoP proofs are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpopSettings {
    /// Whether every proof must carry a nonce sessiond minted (`SESSIOND_DPOP_NONCE=required`).
    pub nonce_required: bool,
    /// How long after its `iat` a proof is accepted.
    pub proof_max_age: Duration,
}

impl Default for DpopSettings {
    fn default() -> Self {
        Self {
            nonce_required: false,
            proof_max_age: DEFAULT_PROOF_MAX_AGE,
        }
    }
}

/// `SESSIOND_DPOP_NONCE` and `SESSIOND_DPOP_PROOF_MAX_AGE`.
pub(super) fn settings(raw: &RawConfig) -> Result<DpopSettings, String> {
    let nonce_required = match raw.dpop_nonce.as_deref().map(str::trim) {
        None | Some("off") => false,
        Some("required") => true,
        Some(other) => {
            return Err(format!(
                "SESSIOND_DPOP_NONCE must be off or required (got {other:?})"
            ));
        }
    };
    const NAME: &str = "SESSIOND_DPOP_PROOF_MAX_AGE";
    let value = raw.dpop_proof_max_age.as_deref();
    let proof_max_age = duration(value, NAME, DEFAULT_PROOF_MAX_AGE)?;
    let (least, most) = PROOF_MAX_AGE_RANGE;
    if proof_max_age < least || proof_max_age > most {
        return Err(format!(
            "{NAME} must be from 5s to 10m (got {:?})",
            value.unwrap_or_default()
        ));
    }
    Ok(DpopSettings {
        nonce_required,
        proof_max_age,
    })
}
