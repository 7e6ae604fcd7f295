//! Managed routes (`setHeaderRoute`, `setMirrorRoute`): which should exist is a function of
//! the spec and the status alone, compared with what the router shows, so a route is never
//! left behind by a crash, a promotion or an abort.

use super::planner::Planner;
use super::steps::managed_routes_at;
use super::vocabulary::{Action, Object};
use crate::traffic::ManagedRoute;

impl<'a> Planner<'a> {
    /// The managed routes the current step asks for, when a canary is under way and its
    /// pods can take what they send (the canary Service selects it and a pod is available);
    /// none once it is promoted, aborted or rolled back, as Argo Rollouts removes them.
    fn wanted_routes(&self, hash: &str) -> Vec<(String, ManagedRoute)> {
        let settled = self.status.stable_rs.as_deref() == Some(hash);
        if !self.router || self.status.abort || settled || !self.canary_serves(hash) {
            return Vec::new();
        }
        managed_routes_at(self.steps, self.managed_route_names(), self.index())
    }

    fn managed_route_names(&self) -> &'a [crate::api::rollout::ManagedRouteName] {
        self.input
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.traffic_routing.as_ref())
            .map(|r| r.managed_routes.as_slice())
            .unwrap_or_default()
    }

    /// Whether what a managed route sends to the canary finds pods there.
    pub(super) fn canary_serves(&self, hash: &str) -> bool {
        self.input.observed.canary_service_hash.as_deref() == Some(hash) && self.available(hash) > 0
    }

    /// Whether the router shows exactly the managed routes step `index` asks for (a route
    /// step is done then).
    pub(super) fn routes_in_place(&self, hash: &str, index: usize) -> bool {
        let wanted = managed_routes_at(self.steps, self.managed_route_names(), index);
        if !wanted.is_empty() && !self.canary_serves(hash) {
            return false;
        }
        let shown = &self.input.observed.managed_routes;
        shown.len() == wanted.len()
            && wanted
                .iter()
                .all(|(name, route)| shown.get(name) == Some(&Some(route.clone())))
    }

    /// Removes what should not be there, then adds or replaces what should, in precedence
    /// order (each is placed after the managed routes before it).
    pub(super) fn manage_routes(&mut self, hash: &str) {
        let wanted = self.wanted_routes(hash);
        let shown = &self.input.observed.managed_routes;
        // Recorded with the plan that writes them, and kept until the router shows them gone.
        self.status.managed_routes = recorded(&wanted, shown);
        for name in shown.keys() {
            if !wanted.iter().any(|(w, _)| w == name) {
                self.say(Action::RemoveManagedRoute { name: name.clone() });
            }
        }
        for (name, route) in wanted {
            if shown.get(&name) == Some(&Some(route.clone())) {
                self.unsay(Object::ManagedRoute(&name));
            } else {
                self.say(Action::SetManagedRoute { name, route });
            }
        }
    }
}

/// The names to record: every route wanted now or still shown, sorted, each once.
fn recorded(wanted: &[(String, ManagedRoute)], shown: &crate::traffic::ShownRoutes) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = wanted
        .iter()
        .map(|(name, _)| name)
        .chain(shown.keys())
        .collect();
    names.into_iter().cloned().collect()
}
