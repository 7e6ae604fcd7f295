//! Sharding, pure: which shard an object is in, which replica a shard belongs to, and what a
//! replica does with each shard's Lease. No I/O; `runtime::leader` reads and writes the
//! Leases from what this decides.
//!
//! An object's shard comes from its `weir.dev/shard` label, else its namespace, so a Rollout
//! and everything it owns (same namespace, the label copied) land in one shard. A shard's
//! replica is chosen by rendezvous hashing over the live members: adding or losing one of N
//! replicas moves only the shards it gains or had, about 1/N of them.

use std::hash::Hasher;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use crate::api::contract::SHARD_LABEL;

/// Puts what weir makes for an owner in the owner's shard: copies its `weir.dev/shard` label.
pub fn follow_owner(
    labels: &mut std::collections::BTreeMap<String, String>,
    owner: &std::collections::BTreeMap<String, String>,
) {
    match owner.get(SHARD_LABEL) {
        Some(shard) => labels.insert(SHARD_LABEL.to_owned(), shard.clone()),
        None => labels.remove(SHARD_LABEL),
    };
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    for part in parts {
        hasher.write(part);
        // A separator no label value or name contains, so ("ab","c") differs from ("a","bc").
        hasher.write_u8(0xff);
    }
    mix(hasher.finish())
}

/// MurmurHash3's 64-bit finalizer: FNV-1a alone leaves its high bits barely moved by the
/// last bytes, and rendezvous hashing compares whole hashes (one member won 64 shards in 64).
/// Fixed here, not std's hasher, so that replicas of different builds agree.
fn mix(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The shard (0..shards) of an object: its `weir.dev/shard` label, else its namespace.
pub fn shard_of(meta: &ObjectMeta, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let key = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SHARD_LABEL))
        .or(meta.namespace.as_ref())
        .map_or("", String::as_str);
    (fnv(&[key.as_bytes()]) % u64::from(shards)) as u32
}

/// The member a shard belongs to: the one with the highest hash of (member, shard).
/// None when there is no member.
pub fn owner<'a>(shard: u32, members: &[&'a str]) -> Option<&'a str> {
    members
        .iter()
        .copied()
        .max_by_key(|member| (fnv(&[member.as_bytes(), &shard.to_be_bytes()]), *member))
}

/// A Lease as the election reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// Empty when released.
    pub holder: String,
    /// When it was last renewed (or released, or acquired); None when never.
    pub renewed: Option<DateTime<Utc>>,
    pub duration: chrono::Duration,
}

impl LeaseView {
    /// Held by someone whose renewal still keeps others out at `now`.
    fn held_at(&self, now: DateTime<Utc>) -> bool {
        !self.holder.is_empty() && self.renewed.is_some_and(|r| r + self.duration > now)
    }

    /// Since when nobody holds it.
    fn free_since(&self) -> Option<DateTime<Utc>> {
        let renewed = self.renewed?;
        Some(if self.holder.is_empty() {
            renewed
        } else {
            renewed + self.duration
        })
    }
}

/// A member Lease: one per replica, renewed while it runs, naming the shard count it runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub identity: String,
    pub lease: LeaseView,
    pub shards: Option<u32>,
}

/// Who takes part, as one replica sees the member Leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Live members' identities, this replica's among them, sorted.
    pub live: Vec<String>,
    /// A live member running with another shard count (a change of `--shards` under way):
    /// while one does, nobody leads anything, since the two counts cut objects differently.
    pub other_count: Option<(String, Option<u32>)>,
    /// Members gone for long enough that any replica may delete their Lease.
    pub stale: Vec<String>,
}

/// How long a member's Lease stays after it stopped renewing, in lease durations.
const STALE_AFTER: i32 = 10;

impl Membership {
    pub fn from(members: &[Member], me: &str, shards: u32, now: DateTime<Utc>) -> Membership {
        let mut live = vec![me.to_owned()];
        let mut other_count = None;
        let mut stale = Vec::new();
        for member in members {
            if member.identity == me {
                continue;
            }
            if member.lease.held_at(now) {
                live.push(member.identity.clone());
                if member.shards != Some(shards) && other_count.is_none() {
                    other_count = Some((member.identity.clone(), member.shards));
                }
            } else if member
                .lease
                .free_since()
                .is_none_or(|since| since + member.lease.duration * STALE_AFTER < now)
            {
                stale.push(member.identity.clone());
            }
        }
        live.sort();
        live.dedup();
        Membership {
            live,
            other_count,
            stale,
        }
    }

    pub fn owner(&self, shard: u32) -> Option<&str> {
        let members: Vec<&str> = self.live.iter().map(String::as_str).collect();
        owner(shard, &members)
    }
}

/// What to do with one shard's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardDecision {
    /// No Lease yet and the shard is ours: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Free (released or expired) and ours, or free for a whole lease duration and its owner
    /// has not come for it: take it.
    Take,
    /// We hold it but it belongs to another live member (or the shard count is changing):
    /// stop leading, then let it go.
    Release,
    /// Not ours to take, or someone holds it.
    Wait,
}

/// Decides one shard from its Lease, the members and the time.
pub fn decide(
    shard: u32,
    lease: Option<&LeaseView>,
    me: &str,
    membership: &Membership,
    now: DateTime<Utc>,
) -> ShardDecision {
    let ours = membership.other_count.is_none() && membership.owner(shard) == Some(me);
    let Some(lease) = lease else {
        return if ours {
            ShardDecision::Create
        } else {
            ShardDecision::Wait
        };
    };
    if lease.holder == me {
        return if ours {
            ShardDecision::Renew
        } else {
            ShardDecision::Release
        };
    }
    if lease.held_at(now) || membership.other_count.is_some() {
        return ShardDecision::Wait;
    }
    // Free: its owner takes it at once; anyone else only when the owner has let a whole
    // lease duration pass, so a live owner that cannot write the Lease does not stall it.
    let abandoned = lease
        .free_since()
        .is_none_or(|since| since + lease.duration <= now);
    if ours || abandoned {
        ShardDecision::Take
    } else {
        ShardDecision::Wait
    }
}

/// The name of shard `shard`'s Lease: the plain name with one shard, as before shards.
pub fn lease_name(base: &str, shard: u32, shards: u32) -> String {
    if shards <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{shard}-of-{shards}")
    }
}

/// The name of a member's Lease; identities may hold characters a name may not.
pub fn member_lease_name(base: &str, identity: &str) -> String {
    let cleaned: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{base}-member-{}", cleaned.trim_matches(['-', '.']));
    // A name is a DNS subdomain: at most 253 characters, ending alphanumeric.
    name.truncate(253);
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid")
    }

    fn view(holder: &str, renewed: i64) -> LeaseView {
        LeaseView {
            holder: holder.into(),
            renewed: Some(at(renewed)),
            duration: chrono::Duration::seconds(15),
        }
    }

    fn member(identity: &str, renewed: i64, shards: u32) -> Member {
        Member {
            identity: identity.into(),
            lease: view(identity, renewed),
            shards: Some(shards),
        }
    }

    fn meta(namespace: &str, label: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            labels: label.map(|l| BTreeMap::from([(SHARD_LABEL.to_owned(), l.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn one_shard_holds_everything() {
        assert_eq!(shard_of(&meta("a", Some("x")), 1), 0);
        assert_eq!(shard_of(&meta("b", None), 0), 0);
    }

    #[test]
    fn the_label_overrides_the_namespace() {
        // Two namespaces in one shard by the label, whatever their own hashes are.
        for shards in 2..20 {
            assert_eq!(
                shard_of(&meta("shop", Some("team-a")), shards),
                shard_of(&meta("billing", Some("team-a")), shards)
            );
            assert_eq!(
                shard_of(&meta("shop", None), shards),
                shard_of(&meta("shop", Some("shop")), shards),
                "the label's value hashes as a namespace of that name would"
            );
        }
    }

    #[test]
    fn namespaces_spread_over_the_shards() {
        let shards = 8;
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&meta(&format!("team-{i}"), None), shards) as usize] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn shards_spread_over_the_members() {
        let members = ["weir-7d9f-1", "weir-7d9f-2", "weir-c41a-1"];
        let mut counts = [0u32; 3];
        for shard in 0..3000 {
            let owner = owner(shard, &members).expect("members");
            counts[members.iter().position(|m| *m == owner).expect("a member")] += 1;
        }
        for count in counts {
            assert!((850..1150).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn members_alive_stale_and_of_another_count() {
        let members = [
            member("a", 95, 4),
            member("b", 80, 4),   // expired at 95, not yet stale
            member("c", -100, 4), // expired at -85, stale after 65
            member("d", 99, 3),
        ];
        let membership = Membership::from(&members, "me", 4, at(100));
        assert_eq!(membership.live, vec!["a", "d", "me"]);
        assert_eq!(membership.stale, vec!["c"]);
        assert_eq!(membership.other_count, Some(("d".into(), Some(3))));
    }

    #[test]
    fn shard_decisions() {
        let now = at(100);
        let alone = Membership::from(&[], "me", 2, now);
        assert_eq!(decide(0, None, "me", &alone, now), ShardDecision::Create);
        assert_eq!(
            decide(0, Some(&view("me", 0)), "me", &alone, now),
            ShardDecision::Renew,
            "ours, even if late"
        );
        assert_eq!(
            decide(0, Some(&view("gone", 90)), "me", &alone, now),
            ShardDecision::Wait,
            "held until 105"
        );
        assert_eq!(
            decide(0, Some(&view("gone", 85)), "me", &alone, now),
            ShardDecision::Take,
            "expired exactly at renew + duration"
        );
        assert_eq!(
            decide(0, Some(&view("", 99)), "me", &alone, now),
            ShardDecision::Take,
            "released"
        );

        // With another live member, each takes only its own shards at once.
        let two = Membership::from(&[member("other", 99, 2)], "me", 2, now);
        let (mine, theirs) =
            (0..64)
                .map(|s| (s, two.owner(s)))
                .fold((None, None), |(m, t), (s, o)| match o {
                    Some("me") => (m.or(Some(s)), t),
                    _ => (m, t.or(Some(s))),
                });
        let (mine, theirs) = (mine.expect("some shard"), theirs.expect("some shard"));
        assert_eq!(decide(theirs, None, "me", &two, now), ShardDecision::Wait);
        assert_eq!(
            decide(theirs, Some(&view("me", 99)), "me", &two, now),
            ShardDecision::Release,
            "held but the other's: let it go"
        );
        assert_eq!(
            decide(theirs, Some(&view("", 99)), "me", &two, now),
            ShardDecision::Wait,
            "released for its owner"
        );
        assert_eq!(
            decide(theirs, Some(&view("", 85)), "me", &two, now),
            ShardDecision::Take,
            "its owner let a whole duration pass"
        );
        assert_eq!(
            decide(mine, Some(&view("other", 99)), "me", &two, now),
            ShardDecision::Wait,
            "ours, but held: its holder releases it"
        );
        assert_eq!(
            decide(mine, Some(&view("", 99)), "me", &two, now),
            ShardDecision::Take
        );

        // A live member with another shard count: nobody leads.
        let changing = Membership::from(&[member("old", 99, 3)], "me", 2, now);
        assert_eq!(
            decide(mine, Some(&view("me", 99)), "me", &changing, now),
            ShardDecision::Release
        );
        assert_eq!(
            decide(mine, None, "me", &changing, now),
            ShardDecision::Wait
        );
        assert_eq!(
            decide(mine, Some(&view("", 0)), "me", &changing, now),
            ShardDecision::Wait
        );
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name("weir-controller", 0, 1), "weir-controller");
        assert_eq!(
            lease_name("weir-controller", 2, 3),
            "weir-controller-2-of-3"
        );
        assert_eq!(
            member_lease_name("weir-controller", "Pod_7.local-12"),
            "weir-controller-member-pod-7.local-12"
        );
        let long = member_lease_name("w", &"x".repeat(400));
        assert_eq!(long.len(), 253);
    }

    fn identities() -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set("[a-z0-9]{1,12}", 1..8)
            .prop_map(|set| set.into_iter().collect())
    }

    proptest! {
        /// Every shard has exactly one owner among the members, whoever asks.
        #[test]
        fn every_shard_has_one_owner(members in identities(), shards in 1u32..64) {
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            for shard in 0..shards {
                let owner = owner(shard, &refs).expect("members");
                prop_assert!(refs.contains(&owner));
                let mut reversed = refs.clone();
                reversed.reverse();
                prop_assert_eq!(Some(owner), super::owner(shard, &reversed), "order does not matter");
            }
        }

        /// A member joining takes shards only for itself, and one leaving gives away only its
        /// own: no shard moves between two members that stay.
        #[test]
        fn only_the_member_that_comes_or_goes_moves_shards(
            members in identities(), newcomer in "[A-Z]{1,8}", shards in 1u32..64,
        ) {
            let before: Vec<&str> = members.iter().map(String::as_str).collect();
            let mut after = before.clone();
            after.push(&newcomer);
            for shard in 0..shards {
                let (was, is) = (owner(shard, &before), owner(shard, &after));
                prop_assert!(was == is || is == Some(newcomer.as_str()));
            }
        }

        /// While a shard's Lease is held, nobody but its holder decides to hold it. (Two that
        /// find it free may both try: the Lease's resourceVersion lets one of them win.)
        #[test]
        fn a_held_lease_is_kept_only_by_its_holder(
            members in identities(), shard in 0u32..16, holder in 0usize..9, renewed in 86i64..120,
        ) {
            let now = at(100);
            let leases: Vec<Member> = members.iter().map(|m| member(m, 99, 16)).collect();
            let Some(holder) = members.get(holder) else { return Ok(()) };
            let lease = view(holder, renewed);
            for me in &members {
                let membership = Membership::from(&leases, me, 16, now);
                let decision = decide(shard, Some(&lease), me, &membership, now);
                if me != holder {
                    prop_assert_eq!(decision, ShardDecision::Wait);
                }
            }
        }
    }
}
