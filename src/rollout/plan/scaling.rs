//! ReplicaSets: scaled to what the plan needs, old ones retired.

use super::planner::Planner;
use super::vocabulary::{Action, Object, ReplicaSetView};

impl<'a> Planner<'a> {
    pub(super) fn scale(&mut self, hash: &str, replicas: i32) {
        let action = match self.replica_set(hash) {
            // Only the current template can be built: a missing ReplicaSet of another version
            // (someone deleted the stable) is reported, never rebuilt from the wrong template.
            None if hash != self.input.template_hash => {
                self.missing = Some(hash.to_owned());
                return self.unsay(Object::ReplicaSet(hash));
            }
            None => Action::CreateReplicaSet {
                hash: hash.into(),
                replicas,
                away_from: self.away_from(hash),
                // Filled in once the plan knows where the Services stand (`ephemeral`).
                metadata: Default::default(),
            },
            Some(rs) if rs.replicas != replicas || rs.scale_down_at.is_some() => {
                Action::ScaleReplicaSet {
                    hash: hash.into(),
                    replicas,
                }
            }
            Some(_) => return self.unsay(Object::ReplicaSet(hash)),
        };
        self.say(action);
    }

    /// Blue-green's `antiAffinity`: a new version's pods keep off the nodes of the stable
    /// version they replace (none to avoid on the first release).
    fn away_from(&self, hash: &str) -> Option<String> {
        let blue_green = self.input.spec.strategy.blue_green.as_ref()?;
        blue_green.anti_affinity.as_ref()?;
        self.status
            .stable_rs
            .clone()
            .filter(|stable| stable != hash)
    }

    /// ReplicaSets that are neither stable nor canary: scaled down once no Service sends them
    /// traffic and their delay has passed, then deleted beyond `revisionHistoryLimit`.
    pub(super) fn retire_old_replica_sets(&mut self) {
        let stable = self.status.stable_rs.clone().unwrap_or_default();
        let canary = self.status.canary_rs.clone().unwrap_or_default();
        let observed = self.input.observed;
        let (delay, _) = self.scale_down_delays();
        // Blue-green's scaleDownDelayRevisionLimit: only this many old versions wait out
        // their delay scaled up; older ones scale down at once.
        let mut waiting_allowed = self
            .input
            .spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.scale_down_delay_revision_limit)
            .map(|limit| limit.max(0) as usize);
        let mut by_age: Vec<&ReplicaSetView> = observed.replica_sets.iter().collect();
        by_age.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.hash.cmp(&b.hash)));
        let mut retired: Vec<&ReplicaSetView> = Vec::new();
        for rs in by_age {
            if rs.hash == stable || rs.hash == canary {
                continue;
            }
            let referenced = observed.stable_service_hash.as_deref() == Some(rs.hash.as_str())
                || observed.canary_service_hash.as_deref() == Some(rs.hash.as_str());
            if rs.replicas == 0 {
                retired.push(rs);
            } else if referenced {
                continue;
            } else if waiting_allowed == Some(0) {
                self.say(Action::ScaleReplicaSet {
                    hash: rs.hash.clone(),
                    replicas: 0,
                });
            } else {
                waiting_allowed = waiting_allowed.map(|n| n - 1);
                match rs.scale_down_at {
                    None => {
                        let at =
                            self.input.now + chrono::Duration::seconds(i64::from(delay.max(0)));
                        self.say(Action::MarkScaleDown {
                            hash: rs.hash.clone(),
                            at,
                        });
                        self.wake_at(at);
                    }
                    Some(at) if at <= self.input.now => {
                        self.say(Action::ScaleReplicaSet {
                            hash: rs.hash.clone(),
                            replicas: 0,
                        });
                    }
                    Some(at) => self.wake_at(at),
                }
            }
        }
        retired.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.hash.cmp(&b.hash)));
        let keep = self.input.spec.revision_history_limit.max(0) as usize;
        for rs in retired.into_iter().skip(keep) {
            self.say(Action::DeleteReplicaSet {
                hash: rs.hash.clone(),
            });
        }
    }
}
