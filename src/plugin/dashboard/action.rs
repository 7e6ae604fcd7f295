//! The dashboard's buttons: each one of the plugin's commands, named in the URL it posts to,
//! and said in words on the page that asks for confirmation.

use crate::plugin::control::Control;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Pause,
    Resume,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Promote,
        Action::PromoteFull,
        Action::Abort,
        Action::Retry,
        Action::Pause,
        Action::Resume,
    ];

    /// The last segment of the URL the button posts to.
    pub fn slug(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Abort => "abort",
            Action::Retry => "retry",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.slug() == slug)
    }

    /// The button's text.
    pub fn label(self) -> &'static str {
        match self {
            Action::Promote => "Promote",
            Action::PromoteFull => "Promote full",
            Action::Abort => "Abort",
            Action::Retry => "Retry",
            Action::Pause => "Pause",
            Action::Resume => "Resume",
        }
    }

    /// What it does, as the confirmation page says it (the plugin's help, in other words).
    pub fn consequence(self) -> &'static str {
        match self {
            Action::Promote => "goes past the current pause to the next step",
            Action::PromoteFull => {
                "skips every remaining step and analysis: the canary takes all traffic"
            }
            Action::Abort => {
                "sends all traffic back to the stable version now (a managing GitSync then rolls back in Git)"
            }
            Action::Retry => "starts an aborted canary again from its first step",
            Action::Pause => "holds the Rollout where it is (spec.paused)",
            Action::Resume => "lets a paused Rollout go on",
        }
    }

    /// The same command `kubectl weir` sends.
    pub fn control(self) -> Control {
        match self {
            Action::Promote => Control::Promote { full: false },
            Action::PromoteFull => Control::Promote { full: true },
            Action::Abort => Control::Abort,
            Action::Retry => Control::Retry,
            Action::Pause => Control::Pause,
            Action::Resume => Control::Resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slug_names_its_action_and_nothing_else_does() {
        for action in Action::ALL {
            assert_eq!(Action::from_slug(action.slug()), Some(action));
        }
        for other in ["", "Promote", "promote ", "delete", "promote-full/x"] {
            assert_eq!(Action::from_slug(other), None, "{other}");
        }
    }

    #[test]
    fn each_action_sends_the_plugins_command() {
        assert_eq!(
            Action::PromoteFull.control(),
            Control::Promote { full: true }
        );
        assert_eq!(Action::Promote.control(), Control::Promote { full: false });
        assert_eq!(Action::Abort.control(), Control::Abort);
        assert_eq!(Action::Resume.control(), Control::Resume);
    }
}
