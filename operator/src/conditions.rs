//! Building the `Ready` and `Synced` conditions, keeping `lastTransitionTime` when a condition's
//! status does not change (so that an unchanged status is a no-op write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition `type_` with `status` ("True", "False", "Unknown"); the transition time is taken
/// from `previous` when the status there is the same, else now.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.chars().take(1024).collect(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = condition(&[], "Ready", "True", "InSync", "ok", Some(1));
        let again = condition(std::slice::from_ref(&first), "Ready", "True", "InSync", "still ok", Some(2));
        assert_eq!(again.last_transition_time, first.last_transition_time);
        assert_eq!(again.observed_generation, Some(2));
        let old = Condition { last_transition_time: Time(Timestamp::UNIX_EPOCH), ..first.clone() };
        let flipped = condition(std::slice::from_ref(&old), "Ready", "False", "Unavailable", "down", Some(2));
        assert_ne!(flipped.last_transition_time, old.last_transition_time);
    }
}
