//! V1: support acts on policy violations. A person decides; the policy says what each action
//! does to the account and refuses what cannot be done (a termination is final).

use super::{Decision, Rule};
use crate::domain::{AccountStatus, SupportReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportAction {
    Suspend(SupportReason),
    Reinstate,
    Terminate(SupportReason),
}

impl SupportAction {
    pub fn name(self) -> &'static str {
        match self {
            SupportAction::Suspend(_) => "suspend",
            SupportAction::Reinstate => "reinstate",
            SupportAction::Terminate(_) => "terminate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Set the account's status (and reason); a termination also revokes every unused credit.
    To {
        status: AccountStatus,
        reason: Option<&'static str>,
    },
    /// Already so: nothing changes and nothing is recorded.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("account {0} is terminated; a termination is final")]
    Terminated(String),
}

/// V1: what a support action does to an account in `current` status.
pub fn decide_support_action(
    account_id: &str,
    current: AccountStatus,
    current_reason: Option<&str>,
    action: SupportAction,
    note: &str,
    actor: &str,
) -> Result<Decision<Transition>, Refusal> {
    let decision = |action: Transition, explanation: String| {
        Ok(Decision {
            action,
            rule: Rule::V1,
            explanation,
        })
    };
    match (current, action) {
        (AccountStatus::Terminated, SupportAction::Terminate(_)) => decision(
            Transition::Unchanged,
            format!("Account {account_id} is already terminated."),
        ),
        (AccountStatus::Terminated, _) => Err(Refusal::Terminated(account_id.to_owned())),
        (AccountStatus::Suspended, SupportAction::Suspend(reason))
            if current_reason == Some(reason.as_str()) =>
        {
            decision(
                Transition::Unchanged,
                format!("Account {account_id} is already suspended for {reason}."),
            )
        }
        (_, SupportAction::Suspend(reason)) => decision(
            Transition::To {
                status: AccountStatus::Suspended,
                reason: Some(reason.as_str()) },
            format!(
                "{actor} suspended account {account_id} for {reason}: {note}. It cannot spend credits and its refund requests are denied until it is reinstated."
            ),
        ),
        (AccountStatus::Active, SupportAction::Reinstate) => decision(
            Transition::Unchanged,
            format!("Account {account_id} is already active."),
        ),
        (AccountStatus::Suspended, SupportAction::Reinstate) => decision(
            Transition::To {
                status: AccountStatus::Active,
                reason: None },
            format!(
                "{actor} reinstated account {account_id} (suspended for {}): {note}.",
                current_reason.unwrap_or("no reason given")
            ),
        ),
        (_, SupportAction::Terminate(reason)) => decision(
            Transition::To {
                status: AccountStatus::Terminated,
                reason: Some(reason.as_str()) },
            format!(
                "{actor} terminated account {account_id} for {reason}: {note}. All its unused credits are revoked, its refund requests are denied and later purchases are not credited."
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        current: AccountStatus,
        reason: Option<&str>,
        action: SupportAction,
    ) -> Result<Decision<Transition>, Refusal> {
        decide_support_action(
            "user_1",
            current,
            reason,
            action,
            "abusive prompts",
            "support:tok_1",
        )
    }

    #[test]
    fn v1_suspend_and_reinstate_move_the_account_and_say_who_and_why() {
        let suspend = decide(
            AccountStatus::Active,
            None,
            SupportAction::Suspend(SupportReason::PolicyViolation),
        )
        .unwrap();
        assert_eq!(suspend.rule, Rule::V1);
        assert_eq!(
            suspend.action,
            Transition::To {
                status: AccountStatus::Suspended,
                reason: Some("policy_violation")
            }
        );
        assert!(suspend.explanation.contains("support:tok_1"));
        assert!(suspend.explanation.contains("abusive prompts"));
        let reinstate = decide(
            AccountStatus::Suspended,
            Some("dispute"),
            SupportAction::Reinstate,
        )
        .unwrap();
        assert_eq!(
            reinstate.action,
            Transition::To {
                status: AccountStatus::Active,
                reason: None
            }
        );
    }

    #[test]
    fn v1_termination_revokes_everything_and_is_final() {
        let terminate = decide(
            AccountStatus::Suspended,
            Some("fraud"),
            SupportAction::Terminate(SupportReason::Fraud),
        )
        .unwrap();
        assert_eq!(
            terminate.action,
            Transition::To {
                status: AccountStatus::Terminated,
                reason: Some("fraud")
            }
        );
        assert_eq!(
            decide(AccountStatus::Terminated, None, SupportAction::Reinstate),
            Err(Refusal::Terminated("user_1".into()))
        );
        assert_eq!(
            decide(
                AccountStatus::Terminated,
                None,
                SupportAction::Terminate(SupportReason::Other)
            )
            .unwrap()
            .action,
            Transition::Unchanged
        );
    }

    #[test]
    fn v1_repeating_an_action_changes_nothing() {
        assert_eq!(
            decide(AccountStatus::Active, None, SupportAction::Reinstate)
                .unwrap()
                .action,
            Transition::Unchanged
        );
        assert_eq!(
            decide(
                AccountStatus::Suspended,
                Some("fraud"),
                SupportAction::Suspend(SupportReason::Fraud)
            )
            .unwrap()
            .action,
            Transition::Unchanged
        );
    }
}
