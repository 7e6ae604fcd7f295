//! Pods, Services and weight brought toward a step, in the order that keeps traffic safe.

use super::planner::Planner;
use super::steps::{canary_pods, step_weight};
use super::vocabulary::{Action, Object};

impl<'a> Planner<'a> {
    /// Brings pods, Services and weight toward step `index`; true once the step's weight and
    /// scale are in place and verified.
    pub(super) fn converge(&mut self, stable: &str, hash: &str, index: usize) -> bool {
        let weight = step_weight(self.steps, index);
        let observed = self.input.observed;
        if !self.router {
            // The replica ratio is the traffic ratio: the canary gets its pods first, and the
            // stable gives up only as many pods as the canary has available.
            let target = canary_pods(self.steps, index, self.replicas, weight, false);
            // A stable Service must never select zero pods: one stays until it moves (at
            // promotion), also when it selects another version for now (a promotion lost
            // in a crash), since it comes back to the stable below.
            let (stable_service, _) = self.services();
            let keep = i32::from(stable_service.is_some() && self.replicas > 0);
            let stable_target = (self.replicas - self.available(hash).min(target)).max(keep);
            self.scale(hash, target);
            self.scale(stable, stable_target);
            self.return_stable_service(stable);
            self.point_canary(hash);
            let ready = self.settled_at(hash, target) && self.settled_at(stable, stable_target);
            if ready {
                self.status.canary_weight = Some(weight);
            }
            return ready;
        }
        let route = self.route();
        let target = canary_pods(self.steps, index, self.replicas, weight.max(route), true);
        self.scale(stable, self.replicas);
        self.scale(hash, target);
        self.return_stable_service(stable);
        if route > weight {
            self.set_weight(weight);
            return false;
        }
        let serves = |weight: i32| {
            self.available(hash) >= canary_pods(self.steps, index, self.replicas, weight, true)
        };
        if observed.canary_service_hash.as_deref() != Some(hash) {
            if route == 0 || serves(route) {
                self.point_canary(hash);
            } else {
                self.set_weight(0);
            }
            return false;
        }
        // Several routers read apart (one set half way) are set again, the lagging up to the
        // step's weight.
        if route < weight || observed.routers_differ {
            if serves(weight) {
                self.set_weight(weight);
            }
            return false;
        }
        serves(weight)
            && self
                .replica_set(hash)
                .is_some_and(|rs| rs.replicas == target)
    }

    /// Pins the stable Service (when there is one) to `hash`, unless it already is.
    pub(super) fn point_stable(&mut self, hash: &str) {
        let (service, _) = self.services();
        self.point(
            service,
            self.input.observed.stable_service_hash.as_deref(),
            hash,
        );
    }

    /// Pins the stable Service to `stable` during a canary. When it selects another version
    /// that has pods to serve (a promotion whose status was lost in a crash) and the stable
    /// has none available yet, it stays there until the stable's pods are back.
    pub(super) fn return_stable_service(&mut self, stable: &str) {
        let elsewhere = self
            .input
            .observed
            .stable_service_hash
            .as_deref()
            .is_some_and(|h| h != stable && self.available(h) > 0);
        if self.available(stable) > 0 || !elsewhere {
            self.point_stable(stable);
        }
    }

    /// Pins the canary Service (when there is one) to `hash`, unless it already is.
    pub(super) fn point_canary(&mut self, hash: &str) {
        let (_, service) = self.services();
        self.point(
            service,
            self.input.observed.canary_service_hash.as_deref(),
            hash,
        );
    }

    pub(super) fn point(&mut self, service: Option<&str>, observed: Option<&str>, hash: &str) {
        let Some(service) = service else {
            return;
        };
        if observed == Some(hash) {
            self.unsay(Object::Service(service));
        } else {
            self.say(Action::PointService {
                service: service.into(),
                hash: hash.into(),
            });
        }
    }

    pub(super) fn set_weight(&mut self, canary_weight: i32) {
        // The experiments' shares are settled by `weigh_experiments`, last in the plan.
        self.say(Action::SetWeight {
            canary_weight,
            experiments: Default::default(),
        });
    }
}
