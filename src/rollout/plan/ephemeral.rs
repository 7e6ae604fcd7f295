//! Ephemeral metadata (blue-green's `activeMetadata`/`previewMetadata`, canary's
//! `stableMetadata`/`canaryMetadata`): labels and annotations a version's pods carry only
//! while it plays a part, put on and taken off in place, never part of the pod-template hash.
//!
//! Level-based: what each ReplicaSet should carry is decided from where the two Services
//! stand once this plan is carried out (blue-green) or from the plan's status (canary), and
//! compared with what weir recorded on it, so a settled Rollout plans nothing and a crash
//! part way is finished by the next plan.

use crate::api::rollout::PodMetadata;

use super::planner::Planner;
use super::vocabulary::Action;

impl Planner<'_> {
    /// Says what each ReplicaSet's pods should carry: a new ReplicaSet is created with it,
    /// one whose record differs (or was left half applied) gets `SetEphemeralMetadata`.
    /// ReplicaSets this plan deletes are left alone.
    pub(super) fn place_ephemeral_metadata(&mut self) {
        let (active_service, preview_service) = self.services();
        let observed = self.input.observed;
        let active = self.selected_after(active_service, observed.stable_service_hash.as_deref());
        let preview = self.selected_after(preview_service, observed.canary_service_hash.as_deref());
        let (active, preview) = (active.as_deref(), preview.as_deref());
        let deleted: Vec<String> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteReplicaSet { hash } => Some(hash.clone()),
                _ => None,
            })
            .collect();
        let mut changes = Vec::new();
        for rs in &observed.replica_sets {
            if deleted.contains(&rs.hash) {
                continue;
            }
            let wanted = self.wanted_metadata(&rs.hash, active, preview);
            if rs.ephemeral_pending || rs.ephemeral != wanted {
                changes.push(Action::SetEphemeralMetadata {
                    hash: rs.hash.clone(),
                    metadata: wanted,
                    applied: rs.ephemeral.clone(),
                });
            }
        }
        let created: Vec<(usize, PodMetadata)> = self
            .actions
            .iter()
            .enumerate()
            .filter_map(|(index, a)| match a {
                Action::CreateReplicaSet { hash, .. } => {
                    Some((index, self.wanted_metadata(hash, active, preview)))
                }
                _ => None,
            })
            .collect();
        for (index, wanted) in created {
            if let Some(Action::CreateReplicaSet { metadata, .. }) = self.actions.get_mut(index) {
                *metadata = wanted;
            }
        }
        for change in changes {
            self.say(change);
        }
    }

    /// The hash `service` selects once this plan is carried out: what it points it to, else
    /// what it selects now. None without the Service.
    fn selected_after(&self, service: Option<&str>, observed: Option<&str>) -> Option<String> {
        let service = service?;
        let pointed = self.actions.iter().rev().find_map(|a| match a {
            Action::PointService { service: s, hash } if s == service => Some(hash.clone()),
            _ => None,
        });
        pointed.or_else(|| observed.map(str::to_owned))
    }

    /// What version `hash`'s pods should carry. Blue-green: `activeMetadata` while the active
    /// Service selects it (also when the preview Service does too, as after a switch and on a
    /// first release: Argo Rollouts gives a promoted version the active metadata);
    /// `previewMetadata` while only the preview Service selects it, and for the new version
    /// of a release under way, so its pods start with it. Canary, by the status (a canary
    /// may have no Services): `stableMetadata` for the stable version, `canaryMetadata` for
    /// the new version under way. Nothing otherwise.
    fn wanted_metadata(
        &self,
        hash: &str,
        active: Option<&str>,
        preview: Option<&str>,
    ) -> PodMetadata {
        let new_version =
            hash == self.input.template_hash && self.status.stable_rs.as_deref() != Some(hash);
        let strategy = &self.input.spec.strategy;
        let Some(blue_green) = strategy.blue_green.as_ref() else {
            let Some(canary) = strategy.canary.as_ref() else {
                return PodMetadata::default();
            };
            let metadata = if self.status.stable_rs.as_deref() == Some(hash) {
                &canary.stable_metadata
            } else if new_version {
                &canary.canary_metadata
            } else {
                &None
            };
            return metadata.clone().unwrap_or_default();
        };
        let metadata = if active == Some(hash) {
            &blue_green.active_metadata
        } else if preview == Some(hash) || new_version {
            &blue_green.preview_metadata
        } else {
            &None
        };
        metadata.clone().unwrap_or_default()
    }
}
