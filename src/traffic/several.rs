//! Several routers in one Rollout (Argo Rollouts allows it: NGINX for the traffic that comes
//! in, SMI or Istio inside the mesh). Each is set and verified in turn; read together, the
//! highest weight any carries is the one the canary's pods must serve, and routers that
//! disagree (a set that failed half way, an edit by hand) must be set again.

use super::any::{AnyRouter, Chosen};
use super::gateway_api::CachedRoutes;
use super::router::{ExtraWeights, ManagedRoute, Router, RouterError, ShownRoutes, merge_extras};
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::Client;

/// What several routers carry, read as one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The highest canary weight any router carries; None while none carries one.
    pub highest: Option<i32>,
    /// Whether the routers carry different weights (one without any counts as 0).
    pub differ: bool,
}

/// Reads weights taken from each router as one `Reading`.
pub fn reading(weights: &[Option<i32>]) -> Reading {
    let highest = weights.iter().flatten().copied().max();
    let lowest = weights.iter().map(|w| w.unwrap_or(0)).min();
    Reading {
        highest,
        differ: lowest.is_some_and(|low| low != highest.unwrap_or(0)),
    }
}

/// What one router carries now, as `kubectl weir get` shows it: what could not be read is
/// said in words (a router that fails to read never hides the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterView {
    pub label: String,
    pub weight: Result<Option<i32>, String>,
    /// Each managed route it carries: `name (header)`, `name (mirror 35%)`, or `name (not as
    /// weir wrote it)`; then each experiment Service it sends a share to, `name (experiment 5%)`.
    pub managed_routes: Result<Vec<String>, String>,
    /// The experiment Services it sends a share to, and their shares (none when unreadable).
    pub experiment_shares: ExtraWeights,
}

/// A managed route for people.
pub fn describe_route(name: &str, route: Option<&ManagedRoute>) -> String {
    match route {
        Some(ManagedRoute::Header(_)) => format!("{name} (header)"),
        Some(ManagedRoute::Mirror { percentage, .. }) => format!("{name} (mirror {percentage}%)"),
        None => format!("{name} (not as weir wrote it)"),
    }
}

/// An experiment Service's share for people: `web-1-baseline (experiment 5%)`.
pub fn describe_experiment_share(service: &str, share: i32) -> String {
    if share < 0 {
        format!("{service} (experiment, not alike on every route)")
    } else {
        format!("{service} (experiment {share}%)")
    }
}

/// Several routers' managed routes read as one: a route every router shows the same reads
/// as it is; one that two show differently, or that some router lacks, reads as not as weir
/// writes it (None), so it is written again to all.
pub fn merge_shown(each: Vec<ShownRoutes>) -> ShownRoutes {
    let count = each.len();
    let mut seen: std::collections::BTreeMap<String, (Option<ManagedRoute>, usize)> =
        Default::default();
    for shown in each {
        for (name, route) in shown {
            match seen.get_mut(&name) {
                Some((first, times)) => {
                    *times += 1;
                    if *first != route {
                        *first = None;
                    }
                }
                None => {
                    seen.insert(name, (route, 1));
                }
            }
        }
    }
    seen.into_iter()
        .map(|(name, (route, times))| (name, if times == count { route } else { None }))
        .collect()
}

/// Whether a failure to undo a router means there is nothing of weir's there to undo: the
/// route is gone, its kind is missing, or it never split to these Services.
pub fn nothing_to_undo(error: &RouterError) -> bool {
    matches!(
        error,
        RouterError::NotFound { .. }
            | RouterError::KindMissing { .. }
            | RouterError::Misconfigured(_)
    )
}

/// Every router a Rollout names, each with a label that says what it is for people.
pub struct Routers {
    each: Vec<(String, AnyRouter)>,
}

impl Routers {
    /// The Rollout's routers that it may use (None when there are none: traffic follows the
    /// replica counts), and the one refused, if any. See `AnyRouter::all_for_rollout`.
    pub async fn for_rollout(
        client: &Client,
        rollout: &Rollout,
        namespace: &str,
        template_hash: &str,
    ) -> Result<(Option<Routers>, Option<RouterError>), RouterError> {
        let Chosen { routers, refused } =
            AnyRouter::all_for_rollout(client, rollout, namespace, template_hash).await?;
        let routers = (!routers.is_empty()).then_some(Routers { each: routers });
        Ok((routers, refused))
    }

    /// Each router's label, in the order they are set.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.each.iter().map(|(label, _)| label.as_str())
    }

    /// Each router's weight, in the order of `labels`.
    pub async fn weights(&self) -> Result<Vec<Option<i32>>, RouterError> {
        let mut weights = Vec::with_capacity(self.each.len());
        for (_, router) in &self.each {
            weights.push(router.weight().await?);
        }
        Ok(weights)
    }

    /// What each router carries now, for people.
    pub async fn views(&self) -> Vec<RouterView> {
        let mut views = Vec::with_capacity(self.each.len());
        for (label, router) in &self.each {
            let (weight, routes, extras) = tokio::join!(
                router.weight(),
                router.managed_routes(),
                router.extra_weights()
            );
            let shares = extras.as_ref().cloned().unwrap_or_default();
            let routes = routes.and_then(|shown| Ok((shown, extras?)));
            views.push(RouterView {
                label: label.clone(),
                weight: weight.map_err(|e| e.to_string()),
                managed_routes: routes
                    .map(|(shown, extras)| {
                        shown
                            .iter()
                            .map(|(name, route)| describe_route(name, route.as_ref()))
                            .chain(
                                extras.iter().map(|(service, share)| {
                                    describe_experiment_share(service, *share)
                                }),
                            )
                            .collect()
                    })
                    .map_err(|e| e.to_string()),
                experiment_shares: shares,
            });
        }
        views
    }

    /// All routers' weights read as one.
    pub async fn reading(&self) -> Result<Reading, RouterError> {
        Ok(reading(&self.weights().await?))
    }

    /// Takes the Gateway API routes `http` and `grpc` (caches) hold as read: see
    /// `GatewayApiRouter::recall_from`.
    pub fn recall_routes(&self, http: &CachedRoutes<HttpRoute>, grpc: &CachedRoutes<GrpcRoute>) {
        for (_, router) in &self.each {
            if let AnyRouter::GatewayApi(router) = router {
                router.recall_from(http, grpc);
            }
        }
    }

    /// See `AnyRouter::follow`.
    pub fn follow(&self, status: &RolloutStatus, template_hash: &str) {
        for (_, router) in &self.each {
            router.follow(status, template_hash);
        }
    }

    /// See `AnyRouter::canary_selector_hash`: the first router that selects the canary's pods.
    pub fn canary_selector_hash(&self) -> Option<String> {
        self.each
            .iter()
            .find_map(|(_, router)| router.canary_selector_hash())
    }
}

/// Sets `canary` on each router in turn (see `Routers::set_weight`): going up, the first
/// failure stops the rest; weight 0 is tried on every router and the first failure returned.
async fn set_in_turn<R: Router>(routers: &[&R], canary: i32) -> Result<i32, RouterError> {
    let mut first = None;
    for router in routers {
        if let Err(error) = router.set_weight(canary).await {
            if canary != 0 {
                return Err(error);
            }
            first.get_or_insert(error);
        }
    }
    first.map_or(Ok(canary), Err)
}

impl Router for Routers {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        Ok(self.reading().await?.highest)
    }

    /// Sets each router in turn, each verified by its own read-back. Going up, the first that
    /// fails stops the rest (the next reconcile reads them apart and sets them again). Weight
    /// 0 (an abort, the end of a canary) is tried on every router, whichever fail: traffic
    /// leaves the canary wherever it can, and the first failure is returned after.
    async fn set_weight(&self, canary: i32) -> Result<i32, RouterError> {
        let routers: Vec<&AnyRouter> = self.each.iter().map(|(_, router)| router).collect();
        set_in_turn(&routers, canary).await
    }

    /// Extra backends go to one router alone (validation allows them only then); with
    /// several, any is refused before anything is written.
    async fn set_weights(&self, canary: i32, extras: &ExtraWeights) -> Result<i32, RouterError> {
        match self.each.as_slice() {
            [(_, router)] => router.set_weights(canary, extras).await,
            _ => match extras.keys().next() {
                None => self.set_weight(canary).await,
                Some(service) => Err(RouterError::ExtrasUnsupported {
                    service: service.clone(),
                }),
            },
        }
    }

    /// Every router's extra backends as one: a backend two routers show differently, or
    /// that some router lacks, reads -1 (set again to all).
    async fn extra_weights(&self) -> Result<ExtraWeights, RouterError> {
        let mut each = Vec::with_capacity(self.each.len());
        for (_, router) in &self.each {
            each.push(router.extra_weights().await?);
        }
        Ok(merge_extras(&each))
    }

    /// Every router's managed routes as one (see `merge_shown`).
    async fn managed_routes(&self) -> Result<ShownRoutes, RouterError> {
        let mut each = Vec::with_capacity(self.each.len());
        for (_, router) in &self.each {
            each.push(router.managed_routes().await?);
        }
        Ok(merge_shown(each))
    }

    async fn set_managed_route(&self, name: &str, route: &ManagedRoute) -> Result<(), RouterError> {
        for (_, router) in &self.each {
            router.set_managed_route(name, route).await?;
        }
        Ok(())
    }

    async fn remove_managed_route(&self, name: &str) -> Result<(), RouterError> {
        for (_, router) in &self.each {
            router.remove_managed_route(name).await?;
        }
        Ok(())
    }

    /// Undoes every router, even when one fails. A failure that may pass (a conflict, an
    /// outage) is returned before one that says there is nothing to undo, so a deleted Rollout is not let go while a router still carries weight.
    async fn remove_managed(&self) -> Result<(), RouterError> {
        let mut first: Option<RouterError> = None;
        for (_, router) in &self.each {
            if let Err(error) = router.remove_managed().await {
                let replace = first
                    .as_ref()
                    .is_none_or(|seen| nothing_to_undo(seen) && !nothing_to_undo(&error));
                if replace {
                    first = Some(error);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_a_route_gone_a_kind_missing_or_no_split_is_nothing_to_undo() {
        assert!(nothing_to_undo(&RouterError::KindMissing {
            kind: "VirtualService",
            group: "networking.istio.io"
        }));
        assert!(nothing_to_undo(&RouterError::Misconfigured(
            "no split".into()
        )));
        assert!(!nothing_to_undo(&RouterError::NotVerified {
            kind: "Ingress",
            name: "shop/web".into(),
            wanted: 0,
            found: Some(30)
        }));
    }

    #[test]
    fn one_router_reads_as_itself() {
        assert_eq!(reading(&[None]), Reading::default());
        assert_eq!(
            reading(&[Some(30)]),
            Reading {
                highest: Some(30),
                differ: false
            }
        );
    }

    #[test]
    fn a_router_without_a_weight_yet_differs_from_one_with_a_share() {
        assert_eq!(
            reading(&[Some(20), None]),
            Reading {
                highest: Some(20),
                differ: true
            }
        );
        // At 0, "none yet" and 0 send the same: nothing to set again.
        assert_eq!(
            reading(&[Some(0), None]),
            Reading {
                highest: Some(0),
                differ: false
            }
        );
    }

    fn mirror(percentage: i32) -> Option<ManagedRoute> {
        Some(ManagedRoute::Mirror {
            percentage,
            matches: Vec::new(),
        })
    }

    #[test]
    fn a_managed_route_reads_as_written_only_when_every_router_carries_it_alike() {
        let both = |route: Option<ManagedRoute>| ShownRoutes::from([("m".to_owned(), route)]);
        assert_eq!(
            merge_shown(vec![both(mirror(10)), both(mirror(10))]),
            both(mirror(10))
        );
        assert_eq!(
            merge_shown(vec![both(mirror(10)), both(mirror(20))]),
            both(None)
        );
        // Missing on one router: written again, to all.
        assert_eq!(
            merge_shown(vec![both(mirror(10)), ShownRoutes::new()]),
            both(None)
        );
        assert_eq!(
            merge_shown(vec![ShownRoutes::new(), both(mirror(10))]),
            both(None)
        );
        assert_eq!(merge_shown(vec![both(mirror(10))]), both(mirror(10)));
        assert_eq!(merge_shown(Vec::new()), ShownRoutes::new());
    }

    /// A stand-in router: fails every set when `fails`, and records the weights it was set.
    struct StandIn {
        fails: bool,
        set: std::sync::Mutex<Vec<i32>>,
    }

    impl Router for StandIn {
        async fn weight(&self) -> Result<Option<i32>, RouterError> {
            Ok(None)
        }
        async fn set_weight(&self, canary: i32) -> Result<i32, RouterError> {
            if let Ok(mut set) = self.set.lock() {
                set.push(canary);
            }
            if self.fails {
                Err(RouterError::Misconfigured("stand-in".into()))
            } else {
                Ok(canary)
            }
        }
    }

    proptest! {
        /// Weight 0 reaches every router whichever fail, and fails when any does; any other
        /// weight reaches the routers up to and including the first that fails, and no further.
        #[test]
        fn weight_0_reaches_every_router_whatever_subset_fails(
            fails in prop::collection::vec(any::<bool>(), 1..6),
            canary in 0..=100i32,
        ) {
            let routers: Vec<StandIn> = fails
                .iter()
                .map(|&fails| StandIn { fails, set: std::sync::Mutex::new(Vec::new()) })
                .collect();
            let each: Vec<&StandIn> = routers.iter().collect();
            let result = futures::executor::block_on(set_in_turn(&each, canary));
            prop_assert_eq!(result.is_ok(), !fails.contains(&true));
            let reached = if canary == 0 {
                routers.len()
            } else {
                fails.iter().position(|&f| f).map_or(routers.len(), |first| first + 1)
            };
            for (index, router) in routers.iter().enumerate() {
                let set = router.set.lock().map(|s| s.clone()).unwrap_or_default();
                let wanted = if index < reached { vec![canary] } else { Vec::new() };
                prop_assert_eq!(set, wanted, "router {} of {:?}", index, fails);
            }
        }

        /// A route reads as written exactly when every router shows it so; every route any
        /// router shows is in the reading (so it is removed when not wanted).
        #[test]
        fn merged_routes_are_as_written_only_where_all_agree(
            each in prop::collection::vec(
                prop::collection::btree_map("[ab]", prop::option::of(0..3i32), 0..3), 1..4)
        ) {
            let shown: Vec<ShownRoutes> = each.iter().map(|routes| {
                routes.iter().map(|(name, p)| (name.clone(), p.and_then(mirror))).collect()
            }).collect();
            let merged = merge_shown(shown.clone());
            for routes in &shown {
                for name in routes.keys() {
                    prop_assert!(merged.contains_key(name));
                }
            }
            for (name, route) in &merged {
                let expected = shown[0].get(name).cloned().flatten().filter(|first| {
                    shown.iter().all(|routes| routes.get(name) == Some(&Some(first.clone())))
                });
                prop_assert_eq!(route, &expected);
            }
        }

        /// The highest is never below any router's weight (the canary's pods serve it), and
        /// routers read apart only when some carries another share than the highest.
        #[test]
        fn the_reading_covers_every_router(weights in prop::collection::vec(prop::option::of(0..=100i32), 1..5)) {
            let read = reading(&weights);
            for weight in weights.iter().flatten() {
                prop_assert!(read.highest.is_some_and(|h| h >= *weight));
            }
            let shares: Vec<i32> = weights.iter().map(|w| w.unwrap_or(0)).collect();
            let all_same = shares.iter().all(|s| *s == shares[0]);
            prop_assert_eq!(read.differ, !all_same);
            prop_assert_eq!(read.highest.is_none(), weights.iter().all(Option::is_none));
        }
    }
}
