//! `status.conditions` kept as Kubernetes' `meta.SetStatusCondition` keeps them: one condition
//! per type, in the order they first appeared, and a `lastTransitionTime` that moves only when
//! the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub(crate) const TRUE: &str = "True";
pub(crate) const FALSE: &str = "False";

/// A condition of `type_` as of `now`.
pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

pub(crate) fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Puts `new` in `conditions`, replacing the one of its type. When the status is the same as
/// before, the old `lastTransitionTime` stays; reason, message and generation are updated.
pub(crate) fn set(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Removes the condition of `type_`, if there is one.
pub(crate) fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// `now` without its fraction of a second: a `Time` is written to the API in whole seconds, so
/// a transition time computed here equals the one read back.
pub(crate) fn whole_seconds(now: Timestamp) -> Timestamp {
    Timestamp::new(now.as_second(), 0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn set_appends_a_new_type_with_now() {
        let mut conditions = vec![condition("A", TRUE, "R", "", Some(1), at(10))];
        set(
            &mut conditions,
            condition("B", FALSE, "S", "m", Some(1), at(20)),
        );
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["A", "B"]);
        assert_eq!(conditions[1].last_transition_time, Time(at(20)));
    }

    #[test]
    fn set_keeps_the_transition_time_while_the_status_holds() {
        let mut conditions = vec![condition("A", FALSE, "R1", "old", Some(1), at(10))];
        set(
            &mut conditions,
            condition("A", FALSE, "R2", "new", Some(2), at(20)),
        );
        assert_eq!(conditions.len(), 1);
        let a = &conditions[0];
        assert_eq!(
            (a.reason.as_str(), a.message.as_str(), a.observed_generation),
            ("R2", "new", Some(2))
        );
        assert_eq!(a.last_transition_time, Time(at(10)));
    }

    #[test]
    fn set_moves_the_transition_time_when_the_status_changes() {
        let mut conditions = vec![condition("A", FALSE, "R", "", Some(1), at(10))];
        set(
            &mut conditions,
            condition("A", TRUE, "R", "", Some(1), at(20)),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(20)));
        assert_eq!(conditions[0].status, TRUE);
    }

    #[test]
    fn remove_and_find() {
        let mut conditions = vec![
            condition("A", TRUE, "R", "", None, at(1)),
            condition("B", TRUE, "R", "", None, at(1)),
        ];
        remove(&mut conditions, "A");
        remove(&mut conditions, "missing");
        assert!(find(&conditions, "A").is_none());
        assert_eq!(find(&conditions, "B").map(|c| c.type_.as_str()), Some("B"));
    }

    #[test]
    fn whole_seconds_drops_the_fraction() {
        let t = Timestamp::new(100, 999_999_999).unwrap();
        assert_eq!(whole_seconds(t), at(100));
        assert_eq!(whole_seconds(at(7)), at(7));
    }
}
