//! The Rollout controller on the local control plane: real API server, real ReplicaSet
//! controller, the kubelet stand-in, and a `weir controller` process per test.

mod support;

use std::time::Duration;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::app::{
    LIMIT, WeightLog, app, apply, healthy_on, phase, pods_carrying, rollout, service_hash,
    set_image, status_patch, step, wait_for,
};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::Rollout;
use weir::api::rollout::RolloutPhase;

async fn replicas(ns: &TestNamespace) -> Vec<(String, i32)> {
    let list = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .expect("list");
    let mut found: Vec<_> = list
        .items
        .iter()
        .map(|rs| {
            (
                rs.metadata.name.clone().unwrap_or_default(),
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            )
        })
        .collect();
    found.sort();
    found
}

fn steps() -> Value {
    json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 60}, {"pause": {}}])
}

#[tokio::test]
async fn a_canary_walks_its_steps_on_the_route_and_promotes_to_healthy() {
    let ns = TestNamespace::new(&client().await, "canary").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    let first = healthy_on(&ns, "web:1").await;
    let v1 = first.status.and_then(|s| s.stable_rs).expect("stable hash");
    let weights = WeightLog::start(&ns);

    set_image(&ns, "web:2", &steps(), &json!({})).await;
    let paused = wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    let v2 = paused
        .status
        .as_ref()
        .and_then(|s| s.canary_rs.clone())
        .expect("canary hash");
    assert_eq!(
        paused.status.as_ref().and_then(|s| s.canary_weight),
        Some(60)
    );
    assert_eq!(
        service_hash(&ns, "web-canary").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        service_hash(&ns, "web-stable").await.as_deref(),
        Some(v1.as_str())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        step(&ns.api::<Rollout>().get("web").await.expect("get")),
        Some(3),
        "pause {{}} waits for promote"
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    assert_eq!(
        weights.weights(),
        vec![0, 20, 60, 100, 0],
        "every weight the route carried, in order"
    );
    assert_eq!(
        service_hash(&ns, "web-stable").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        service_hash(&ns, "web-canary").await.as_deref(),
        Some(v2.as_str())
    );
    let old = format!("web-{v1}");
    eventually(
        "the old stable to scale down after scaleDownDelaySeconds",
        LIMIT,
        || async {
            replicas(&ns)
                .await
                .into_iter()
                .find(|(name, r)| name == &old && *r == 0)
        },
    )
    .await;
}

#[tokio::test]
async fn abort_returns_traffic_at_once_and_retry_starts_over() {
    let ns = TestNamespace::new(&client().await, "abort").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 40}, {"pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    set_image(&ns, "web:2", &steps, &json!({})).await;
    wait_for(&ns, "Paused at 40", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let weights = WeightLog::start(&ns);
    eventually("the log to see 40", LIMIT, || async {
        weights.weights().contains(&40).then_some(())
    })
    .await;

    status_patch(&ns, json!({"status": {"abort": true}})).await;
    let aborted = wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    assert_eq!(
        aborted.status.as_ref().and_then(|s| s.canary_weight),
        Some(0)
    );
    assert_eq!(weights.weights().last(), Some(&0));
    let canary = format!(
        "web-{}",
        aborted
            .status
            .as_ref()
            .and_then(|s| s.canary_rs.clone())
            .expect("canary")
    );
    eventually("the aborted canary to scale down", LIMIT, || async {
        replicas(&ns)
            .await
            .into_iter()
            .find(|(name, r)| name == &canary && *r == 0)
    })
    .await;

    status_patch(&ns, json!({"status": {"abort": false}})).await;
    let retried = wait_for(&ns, "Paused again after retry", |r| {
        phase(r) == Some(RolloutPhase::Paused) && r.status.as_ref().is_some_and(|s| s.attempt == 2)
    })
    .await;
    assert_eq!(
        retried.status.as_ref().and_then(|s| s.canary_weight),
        Some(40)
    );
}

#[tokio::test]
async fn promote_full_skips_the_remaining_steps() {
    let ns = TestNamespace::new(&client().await, "promote-full").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    set_image(&ns, "web:2", &steps, &json!({})).await;
    wait_for(&ns, "Paused at step 1", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(1)
    })
    .await;
    status_patch(&ns, json!({"status": {"promoteFull": true}})).await;
    healthy_on(&ns, "web:2").await;
}

#[tokio::test]
async fn re_applying_the_stable_template_is_an_instant_rollback() {
    let ns = TestNamespace::new(&client().await, "rollback").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    set_image(&ns, "web:2", &steps, &json!({})).await;
    wait_for(&ns, "Paused at 30", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    set_image(&ns, "web:1", &steps, &json!({})).await;
    let back = healthy_on(&ns, "web:1").await;
    assert_eq!(back.status.as_ref().and_then(|s| s.canary_weight), Some(0));
    let stable = back.status.and_then(|s| s.stable_rs).expect("stable");
    assert_eq!(
        service_hash(&ns, "web-canary").await.as_deref(),
        Some(stable.as_str()),
        "the canary Service is back on stable"
    );
}

#[tokio::test]
async fn a_canary_that_never_gets_ready_aborts_at_the_progress_deadline() {
    let ns = TestNamespace::new(&client().await, "deadline").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let extra = json!({"progressDeadlineSeconds": 3});
    set_image(&ns, "web:1", &steps, &extra).await;
    healthy_on(&ns, "web:1").await;
    let mut bad = rollout("web:2", steps, extra);
    bad["spec"]["template"]["metadata"]["annotations"] = json!({"sim.weir.dev/ready": "false"});
    apply(&ns, bad).await;
    let aborted = wait_for(&ns, "aborted by the deadline", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let message = aborted
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(message.starts_with("ProgressDeadlineExceeded"), "{message}");
    assert_eq!(
        aborted.status.as_ref().and_then(|s| s.canary_weight),
        Some(0)
    );
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_nothing_is_created() {
    let ns = TestNamespace::new(&client().await, "invalid").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 20, "pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    let invalid = wait_for(&ns, "the InvalidSpec condition", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "True")
        })
    })
    .await;
    let condition = invalid
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "InvalidSpec")
                .cloned()
        })
        .expect("condition");
    assert!(
        condition.message.contains("spec.strategy.canary.steps[0]"),
        "{}",
        condition.message
    );
    assert_eq!(phase(&invalid), Some(RolloutPhase::Degraded));
    assert_eq!(replicas(&ns).await, vec![], "nothing is touched");
}

#[tokio::test]
async fn a_missing_service_is_reported_naming_it() {
    let ns = TestNamespace::new(&client().await, "missing-service").await;
    let _controller = ControllerProcess::start(&ns.name);
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    let stuck = wait_for(&ns, "the ReconcileError condition", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "ReconcileError"))
    })
    .await;
    let message = stuck.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("MissingService")
            && message.contains("web-stable")
            && message.contains("stableService"),
        "{message}"
    );
}

/// The Services are watched: a selector edited by hand is put back by the Service's own
/// event, long before the five-minute resync.
#[tokio::test]
async fn a_service_selector_edited_by_hand_is_put_back_at_once() {
    let ns = TestNamespace::new(&client().await, "service-drift").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    let healthy = healthy_on(&ns, "web:1").await;
    let stable = healthy
        .status
        .and_then(|s| s.stable_rs)
        .expect("stable hash");
    let edited = json!({"spec": {"selector": {"rollouts-pod-template-hash": "edited"}}});
    ns.api::<Service>()
        .patch(
            "web-stable",
            &PatchParams::default(),
            &Patch::Merge(&edited),
        )
        .await
        .expect("edit the stable Service's selector");
    eventually(
        "the stable Service to select the stable pods again",
        Duration::from_secs(30),
        || async {
            (service_hash(&ns, "web-stable").await.as_deref() == Some(stable.as_str()))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_template_change_mid_rollout_restarts_from_step_zero_against_stable() {
    let ns = TestNamespace::new(&client().await, "template-change").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    let stable = healthy_on(&ns, "web:1")
        .await
        .status
        .and_then(|s| s.stable_rs)
        .expect("stable");
    set_image(&ns, "web:2", &steps, &json!({})).await;
    wait_for(&ns, "Paused at step 1", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(1)
    })
    .await;
    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    wait_for(&ns, "Paused at step 3", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;

    set_image(&ns, "web:3", &steps, &json!({})).await;
    let restarted = wait_for(&ns, "web:3 paused at step 1", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && step(r) == Some(1)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(20)
    })
    .await;
    let status = restarted.status.expect("status");
    assert_eq!(
        status.stable_rs.as_deref(),
        Some(stable.as_str()),
        "web:3 canaries against web:1, not web:2"
    );
    assert_eq!(service_hash(&ns, "web-canary").await, status.canary_rs);
}

#[tokio::test]
async fn a_controller_killed_at_every_step_finishes_the_rollout_without_repeating_a_step() {
    let ns = TestNamespace::new(&client().await, "crash").await;
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": 1}}, {"setWeight": 40}, {"pause": {"duration": 1}}, {"setWeight": 60}, {"pause": {"duration": 1}}]);
    let mut controller = ControllerProcess::start(&ns.name);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    let weights = WeightLog::start(&ns);
    eventually("the log to see 0", LIMIT, || async {
        (weights.weights() == vec![0]).then_some(())
    })
    .await;
    set_image(&ns, "web:2", &steps, &json!({})).await;
    let mut kills = 0;
    loop {
        let seen = weights.weights().len();
        let done = eventually("the next weight, or Healthy", LIMIT, || async {
            if weights.weights().len() > seen {
                return Some(false);
            }
            let current = ns.api::<Rollout>().get("web").await.ok()?;
            (phase(&current) == Some(RolloutPhase::Healthy)
                && step(&current) == Some(6)
                && weights.weights().last() == Some(&0)
                && weights.weights().len() > 1)
                .then_some(true)
        })
        .await;
        if done {
            break;
        }
        // SIGKILL right after a weight change: no shutdown, possibly no status write.
        controller.kill();
        kills += 1;
        controller = ControllerProcess::start(&ns.name);
    }
    drop(controller);
    assert!(
        kills >= 4,
        "the controller was killed at each step ({kills} kills)"
    );
    assert_eq!(
        weights.weights(),
        vec![0, 20, 40, 60, 100, 0],
        "each weight once, in order: no step applied twice"
    );
    healthy_on(&ns, "web:2").await;
}

#[tokio::test]
async fn with_two_controllers_only_the_leader_writes_and_the_standby_takes_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    let ns = TestNamespace::new(&client().await, "ha").await;
    app(&ns).await;
    let args = [
        "--leader-elect",
        "--lease-duration",
        "3s",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let first = ControllerProcess::start_with(&ns.name, &args);
    let second = ControllerProcess::start_with(&ns.name, &args);
    let weights = released_with_a_weight_log(&ns).await;

    let leases = ns.api::<Lease>();
    let holder = || async {
        let lease = leases.get_opt("weir-controller").await.ok().flatten()?;
        lease.spec?.holder_identity
    };
    let leader = eventually("a leader", LIMIT, || async { holder().await }).await;
    let leader_pid: u32 = leader
        .rsplit('-')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("identity ends in the pid");
    let (leader_process, standby) = if first.pid() == leader_pid {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        leader_process.pid(),
        leader_pid,
        "the lease names one of the two controllers"
    );

    canary_at_20(&ns, &weights).await;
    let killed_at = tokio::time::Instant::now();
    leader_process.kill();
    let new_leader = eventually("the standby to take the lease", LIMIT, || async {
        holder().await.filter(|h| *h != leader)
    })
    .await;
    assert!(
        new_leader.ends_with(&format!("-{}", standby.pid())),
        "{new_leader} is the standby"
    );
    finishes_with_each_weight_once(&ns, &weights, killed_at, "the standby").await;
    drop(standby);
}

const SHARDS: u32 = 16;

/// The pid each shard's Lease in `ns` names as its holder, None while nobody holds it.
async fn shard_holders(ns: &TestNamespace) -> Vec<Option<u32>> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases = ns.api::<Lease>();
    let mut holders = Vec::new();
    for shard in 0..SHARDS {
        let name = format!("weir-controller-{shard}-of-{SHARDS}");
        let holder = leases
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec?.holder_identity)
            .and_then(|identity| identity.rsplit('-').next()?.parse::<u32>().ok());
        holders.push(holder);
    }
    holders
}

/// Two replicas with `SHARDS` shards that lead them all between them: the one leading the
/// shard of `ns` first, the other second.
async fn two_sharded_replicas(ns: &TestNamespace) -> (ControllerProcess, ControllerProcess) {
    use weir::runtime::shard::shard_of;
    let shards = SHARDS.to_string();
    let args = [
        "--leader-elect",
        "--lease-duration",
        "3s",
        "--shards",
        shards.as_str(),
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let first = ControllerProcess::start_with(&ns.name, &args);
    let second = ControllerProcess::start_with(&ns.name, &args);
    let pids = [first.pid(), second.pid()];
    // Rendezvous hashing gives one of two members all sixteen shards with odds of 2 in 65,536.
    let shared = eventually(
        "every shard led, by both replicas between them",
        LIMIT,
        || async {
            let holders = shard_holders(ns).await;
            let by = |pid| holders.iter().filter(|h| **h == Some(pid)).count();
            (by(pids[0]) + by(pids[1]) == SHARDS as usize && by(pids[0]) > 0 && by(pids[1]) > 0)
                .then_some(holders)
        },
    )
    .await;
    let namespace_meta = kube::api::ObjectMeta {
        namespace: Some(ns.name.clone()),
        ..kube::api::ObjectMeta::default()
    };
    let ours = shard_of(&namespace_meta, SHARDS) as usize;
    let leader_pid = shared[ours].expect("led");
    if first.pid() == leader_pid {
        (first, second)
    } else {
        (second, first)
    }
}

/// The start of the sharded tests: the app in a new namespace under two sharded replicas
/// (the one leading its shard first), web:1 released, and web:2's canary at 20 with a log of
/// the route's weights.
async fn sharded_canary_at_20(
    prefix: &str,
) -> (
    TestNamespace,
    ControllerProcess,
    ControllerProcess,
    WeightLog,
) {
    let ns = TestNamespace::new(&client().await, prefix).await;
    app(&ns).await;
    let (leader, other) = two_sharded_replicas(&ns).await;
    let weights = released_with_a_weight_log(&ns).await;
    canary_at_20(&ns, &weights).await;
    (ns, leader, other, weights)
}

/// Waits until `replica` leads every shard of `ns`.
async fn all_shards_led_by(ns: &TestNamespace, replica: &ControllerProcess) {
    eventually("every shard led by the replica left", LIMIT, || async {
        let holders = shard_holders(ns).await;
        holders
            .iter()
            .all(|h| *h == Some(replica.pid()))
            .then_some(())
    })
    .await;
}

/// Sharded: two replicas share the shards, each shard led by one; killing the replica that
/// leads this namespace's shard mid-canary hands the shard over, and the canary finishes on
/// the other with every weight set once.
#[tokio::test]
async fn with_two_sharded_replicas_a_dead_ones_shards_move_and_no_step_doubles() {
    let (ns, leader, other, weights) = sharded_canary_at_20("shards").await;
    let killed_at = tokio::time::Instant::now();
    leader.kill();
    all_shards_led_by(&ns, &other).await;
    finishes_with_each_weight_once(&ns, &weights, killed_at, "the other replica").await;
    drop(other);
}

/// Sharded: the replica that does not lead a Rollout's shard keeps only a stub of it (no
/// spec). Deleted mid-canary while its leader is dead, the Rollout is cleaned up by the
/// replica that takes the shard over, from the Rollout read whole, not from its stub: the
/// route goes back to the stable before the Rollout goes.
#[tokio::test]
async fn a_rollout_deleted_while_its_shard_has_no_leader_is_cleaned_up_by_the_next() {
    let (ns, leader, other, weights) = sharded_canary_at_20("shard-delete").await;
    leader.kill();
    // Waits for the Rollout to be gone: the other replica must gain the shard first.
    support::app::delete_rollout(&ns).await;
    let route = ns.api::<HttpRoute>().get("web").await.expect("route");
    assert_eq!(
        support::app::weighted_canary(&route),
        Some(0),
        "no traffic left on the canary (weights seen: {:?})",
        weights.weights()
    );
    all_shards_led_by(&ns, &other).await;
    drop(other);
}

/// Sharded: a Rollout relabelled mid-canary into a shard the other replica leads is finished
/// there, every weight set once, although that replica kept only a stub of it and nothing of
/// what it owns while its shard was another's.
#[tokio::test]
async fn a_rollout_relabelled_into_the_other_replicas_shard_finishes_there() {
    use weir::api::contract::SHARD_LABEL;
    use weir::runtime::shard::shard_of;
    let (ns, leader, other, weights) = sharded_canary_at_20("shard-move").await;
    let holders = shard_holders(&ns).await;
    let value = (0..)
        .map(|n| format!("moved-{n}"))
        .find(|value| {
            let meta = kube::api::ObjectMeta {
                namespace: Some(ns.name.clone()),
                labels: Some([(SHARD_LABEL.to_owned(), value.clone())].into()),
                ..kube::api::ObjectMeta::default()
            };
            holders[shard_of(&meta, SHARDS) as usize] == Some(other.pid())
        })
        .expect("a value in a shard the other replica leads");
    let moved_at = tokio::time::Instant::now();
    ns.api::<Rollout>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SHARD_LABEL: value}}})),
        )
        .await
        .expect("relabelling the Rollout");
    finishes_with_each_weight_once(&ns, &weights, moved_at, "the replica it moved to").await;
    drop((leader, other));
}

/// The canary of the handover tests: 20, 40 and 60 with short pauses, then an indefinite pause.
fn handover_steps() -> serde_json::Value {
    json!([{"setWeight": 20}, {"pause": {"duration": 1}}, {"setWeight": 40}, {"pause": {"duration": 1}}, {"setWeight": 60}, {"pause": {}}])
}

/// web:1 released and Healthy, and a log of the route's weights that has seen its 0.
async fn released_with_a_weight_log(ns: &TestNamespace) -> WeightLog {
    set_image(ns, "web:1", &handover_steps(), &json!({})).await;
    healthy_on(ns, "web:1").await;
    let weights = WeightLog::start(ns);
    eventually("the log to see 0", LIMIT, || async {
        (weights.weights() == vec![0]).then_some(())
    })
    .await;
    weights
}

/// web:2's canary under way, at weight 20.
async fn canary_at_20(ns: &TestNamespace, weights: &WeightLog) {
    set_image(ns, "web:2", &handover_steps(), &json!({})).await;
    eventually("the canary at 20", LIMIT, || async {
        weights.weights().contains(&20).then_some(())
    })
    .await;
}

/// After the replica that led the Rollout was killed at `killed_at`, `who` takes the canary
/// to its final pause; promoted, it ends Healthy on web:2 with every weight set once.
async fn finishes_with_each_weight_once(
    ns: &TestNamespace,
    weights: &WeightLog,
    killed_at: tokio::time::Instant,
    who: &str,
) {
    wait_for(ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(5)
    })
    .await;
    eprintln!(
        "{who} continued {:?} after the Rollout's leader was killed (lease duration 3s)",
        killed_at.elapsed()
    );
    status_patch(ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(ns, "web:2").await;
    assert_eq!(
        weights.weights(),
        vec![0, 20, 40, 60, 100, 0],
        "no step doubled across the handover"
    );
}

async fn resource_version<K>(api: kube::Api<K>, name: &str) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name).await.ok()?.meta().resource_version.clone()
}

/// `weir_reconcile_duration_seconds_count` from the controller's /metrics.
async fn reconciles(port: u16) -> Option<u64> {
    let (_, body) = support::http_get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("weir_reconcile_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_and_a_no_op_reconcile_writes_nothing() {
    let ns = TestNamespace::new(&client().await, "metrics").await;
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let _controller = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &address]);
    eventually("/healthz", LIMIT, || async {
        support::http_get(port, "/healthz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    eventually("/readyz", LIMIT, || async {
        support::http_get(port, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    let healthy = healthy_on(&ns, "web:1").await;
    let healthy_line = format!(
        r#"weir_rollout_phase{{namespace="{}",rollout="web",phase="Healthy"}} 1"#,
        ns.name
    );
    eventually("the Healthy phase in /metrics", LIMIT, || async {
        let (_, body) = support::http_get(port, "/metrics").await?;
        body.lines().any(|l| l == healthy_line).then_some(())
    })
    .await;

    let versions = || async {
        Some((
            resource_version(ns.api::<Rollout>(), "web").await?,
            resource_version(ns.api::<HttpRoute>(), "web").await?,
            resource_version(ns.api::<Service>(), "web-stable").await?,
            resource_version(ns.api::<Service>(), "web-canary").await?,
        ))
    };
    let before = versions().await.expect("versions");
    let count = reconciles(port).await.expect("a reconcile count");
    // Touching an owned ReplicaSet triggers a reconcile that has nothing to do.
    let rs_name = format!(
        "web-{}",
        healthy.status.and_then(|s| s.stable_rs).expect("stable")
    );
    let touch = json!({"metadata": {"labels": {"test.weir.dev/touched": "yes"}}});
    ns.api::<ReplicaSet>()
        .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("touch");
    eventually("another reconcile", LIMIT, || async {
        reconciles(port).await.filter(|c| *c > count)
    })
    .await;
    assert_eq!(
        versions().await.expect("versions"),
        before,
        "a reconcile with nothing to do wrote something"
    );
}

/// SIGTERM (a pod deleted, weir's own rolling update) ends the process once its controllers
/// have finished the reconciles in flight: nothing of weir's own keeps it alive until the
/// kubelet's SIGKILL.
#[tokio::test]
async fn sigterm_ends_the_controller_process() {
    let ns = TestNamespace::new(&client().await, "sigterm").await;
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut controller = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &address]);
    eventually("/readyz", LIMIT, || async {
        support::http_get(port, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    // Generous: what is tested is that it ends at all.
    let ended = controller.terminate(Duration::from_secs(30)).await;
    assert!(
        ended.is_some_and(|status| status.success()),
        "after SIGTERM the controller process: {ended:?} (None: still running)"
    );
}

/// A restart costs a list and a watch per kind, whatever the Rollouts: an unchanged one is
/// planned from what the lists brought (its pod spec digested, its ReplicaSets, Services and
/// route from their caches), so the new process asks for none of its objects by name, lists
/// none of them by its label, and writes nothing.
#[tokio::test]
async fn a_restarted_controller_reads_nothing_of_an_unchanged_rollout_and_writes_nothing() {
    let ns = TestNamespace::new(&client().await, "restart-reads").await;
    let first = ControllerProcess::start(&ns.name);
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    healthy_on(&ns, "web:1").await;
    // The last status write is in once Healthy shows; a moment for anything after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.kill();
    let audit = support::audit_log();
    assert!(
        audit.exists(),
        "no audit log at {}: start the cluster with hack/local-cluster.sh",
        audit.display()
    );
    let from = std::fs::metadata(&audit).map_or(0, |m| m.len());
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let _second = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &address]);
    // Reported once its look is done: a look that found something to do would have read the
    // Rollout again before this.
    let healthy_line = format!(
        r#"weir_rollout_phase{{namespace="{}",rollout="web",phase="Healthy"}} 1"#,
        ns.name
    );
    eventually("the restarted controller's look at web", LIMIT, || async {
        let (_, body) = support::http_get(port, "/metrics").await?;
        body.lines().any(|l| l == healthy_line).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_rollout = format!("{}%3Dweb", "weir.dev%2Frollout");
    let requests: Vec<String> = support::audit_entries(&audit, from)
        .iter()
        .filter(|e| support::weir_identity(e).is_some() && e["stage"] == "ResponseComplete")
        .filter(|e| e["objectRef"]["namespace"] == ns.name.as_str())
        .filter(|e| match e["verb"].as_str() {
            Some("watch") => false,
            // A kind's list, not one Rollout's.
            Some("list") => e["requestURI"]
                .as_str()
                .is_some_and(|uri| uri.contains(&by_rollout) || uri.contains("limit=1&")),
            _ => true,
        })
        .map(|e| {
            format!(
                "{} {} {}",
                e["verb"], e["objectRef"]["resource"], e["requestURI"]
            )
        })
        .collect();
    assert!(
        requests.is_empty(),
        "the restarted controller read or wrote the unchanged Rollout's objects: {requests:#?}"
    );
}

#[tokio::test]
async fn deleting_a_rollout_mid_canary_returns_the_route_to_stable_first() {
    let ns = TestNamespace::new(&client().await, "delete").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    set_image(&ns, "web:2", &steps, &json!({})).await;
    let paused = wait_for(&ns, "Paused at 30", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(
        paused.metadata.finalizers.unwrap_or_default(),
        vec!["weir.dev/route-cleanup".to_string()]
    );
    support::app::delete_rollout(&ns).await;
    let route = ns.api::<HttpRoute>().get("web").await.expect("route");
    let splits =
        weir::traffic::gateway_api::splits(&route, "web-stable", "web-canary").expect("splits");
    assert_eq!(
        weir::traffic::gateway_api::canary_weight(&route, &splits),
        Some(0),
        "no traffic left on the canary"
    );
}

/// The route's canary weight and resourceVersion, read back from `namespace`.
async fn route_state(ns: &TestNamespace, namespace: &str) -> (Option<i32>, Option<String>) {
    let routes: kube::Api<HttpRoute> = kube::Api::namespaced(ns.client.clone(), namespace);
    let route = routes.get("web").await.expect("the route");
    (
        support::app::weighted_canary(&route),
        route.metadata.resource_version,
    )
}

#[tokio::test]
async fn a_route_in_another_namespace_needs_a_reference_grant_there() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "grant").await;
    let edge = TestNamespace::new(&client, "grant-edge").await;
    let _controller = ControllerProcess::start(&ns.name);
    for service in ["web-stable", "web-canary"] {
        apply(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    // The platform team's route, in its own namespace, sending to the team's Services.
    apply(
        &edge,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "namespace": ns.name, "port": 80},
            {"name": "web-canary", "namespace": ns.name, "port": 80}]}]}}),
    )
    .await;
    let untouched = route_state(&ns, &edge.name).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let elsewhere = json!({"strategy": {"canary": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "web", "namespace": edge.name}},
        "steps": steps}}});
    set_image(&ns, "web:1", &steps, &elsewhere).await;
    let refused = wait_for(&ns, "the InvalidSpec condition", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "True")
        })
    })
    .await;
    let message = refused.status.and_then(|s| s.message).unwrap_or_default();
    for part in [
        "spec.strategy.canary.trafficRouting.gatewayAPI.namespace".to_owned(),
        format!("HTTPRoute {}/web", edge.name),
        format!(
            "create a ReferenceGrant in {} that allows Rollouts from {}",
            edge.name, ns.name
        ),
    ] {
        assert!(message.contains(&part), "{part:?} is not in {message}");
    }
    // Past a few reconciles (a refused Rollout looks again every 10 s): nothing written.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        route_state(&ns, &edge.name).await,
        untouched,
        "the route is not written"
    );

    let grants = support::app::grant_routes(&client, &edge.name, &ns.name, Some("web")).await;
    healthy_on(&ns, "web:1").await;
    set_image(&ns, "web:2", &steps, &elsewhere).await;
    wait_for(&ns, "Paused at 20", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let (weight, _) = route_state(&ns, &edge.name).await;
    assert_eq!(weight, Some(20), "the granted route carries the canary");

    // The grant withdrawn, not even the finalizer's cleanup writes to the route.
    grants
        .delete("rollouts", &kube::api::DeleteParams::default())
        .await
        .expect("deleting the grant");
    let before = route_state(&ns, &edge.name).await;
    support::app::delete_rollout(&ns).await;
    assert_eq!(
        route_state(&ns, &edge.name).await,
        before,
        "the finalizer's cleanup left the ungranted route alone"
    );
}

#[tokio::test]
async fn canary_and_stable_metadata_follow_the_promotion_on_the_same_pods() {
    let ns = TestNamespace::new(&client().await, "canary-metadata").await;
    let _controller = ControllerProcess::start(&ns.name);
    let rollout = |image: &str| {
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {
                "scaleDownDelaySeconds": 600,
                "stableMetadata": {"labels": {"track": "stable"}},
                "canaryMetadata": {"labels": {"track": "canary"},
                    "annotations": {"example.com/canary": "yes"}},
                "steps": [{"setWeight": 50}, {"pause": {}}]}}
        }})
    };
    apply(&ns, rollout("web:1")).await;
    let first = healthy_on(&ns, "web:1").await;
    let v1 = first.status.and_then(|s| s.stable_rs).expect("stable");
    let stable = [("track", Some("stable"))];
    let plain: [(&str, Option<&str>); 1] = [("example.com/canary", None)];
    pods_carrying(&ns, &v1, 2, &stable, &plain).await;

    apply(&ns, rollout("web:2")).await;
    let paused = wait_for(&ns, "paused at 50%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let v2 = paused.status.and_then(|s| s.canary_rs).expect("canary");
    let canary = pods_carrying(
        &ns,
        &v2,
        1,
        &[("track", Some("canary"))],
        &[("example.com/canary", Some("yes"))],
    )
    .await;
    pods_carrying(&ns, &v1, 1, &stable, &plain).await;

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    let promoted = pods_carrying(&ns, &v2, 2, &stable, &plain).await;
    assert!(
        canary.keys().all(|uid| promoted.contains_key(uid)),
        "the canary's pod relabelled in place, not replaced"
    );
}
