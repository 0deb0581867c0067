//! The caps on what one principal may hold in the store, so that a flood of
//! `initialize` or `open_counter` calls cannot fill it.
//!
//! Sessions and handles share their owner's index in the store, so one
//! listing of the owner counts both. The check runs before a session or a
//! handle is created, and only then: its cost (one owner listing, O(records
//! of that owner)) falls on creations, never on the requests that use a
//! session. Two creations racing past the check together can overshoot the
//! cap by the number of concurrent creations of that principal; the cap is a
//! bound on abuse, not an exact quota.

use std::num::NonZeroUsize;

use session_factory::Manager;

use crate::answer::Refusal;
use crate::auth::Principal;

/// The live sessions and handles one principal may hold by default.
pub const DEFAULT_PER_PRINCIPAL: NonZeroUsize = NonZeroUsize::new(1000).unwrap();

/// The caps on what one principal may hold in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Live sessions plus handles of one principal (in anonymous mode, of
    /// one client address). An `initialize` or `open_counter` beyond it is
    /// refused.
    pub per_principal: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::per_principal(DEFAULT_PER_PRINCIPAL)
    }
}

impl Limits {
    /// Limits of `per_principal` live sessions and handles per principal.
    pub fn per_principal(per_principal: NonZeroUsize) -> Self {
        Self { per_principal }
    }

    /// Whether `principal` may create one more session or handle:
    /// [`Refusal::LimitReached`] at the cap, the store's refusal when the
    /// listing fails.
    pub async fn ensure_room(
        &self,
        manager: &Manager,
        principal: &Principal,
    ) -> Result<(), Refusal> {
        let held = manager
            .list_owned(principal.owner())
            .await
            .map_err(|error| Refusal::store_error_of("owner listing", &error))?;
        if held.len() >= self.per_principal.get() {
            tracing::warn!(
                owner = %principal.owner(),
                held = held.len(),
                "principal at its cap of sessions and handles; creation refused"
            );
            return Err(Refusal::LimitReached);
        }
        Ok(())
    }
}
