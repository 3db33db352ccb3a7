//! The admin service (proto/admin.proto) over one store: its regions and itself, and the
//! changes a region's leader can make (split, leader transfer, membership). Merge, peer
//! moves and rebalancing are declared for the placement service and refused as
//! UNIMPLEMENTED until it exists.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::adminpb::admin_server::{Admin, AdminServer};
use crate::proto::adminpb::{self, ChangeType};
use crate::proto::commandpb;
use crate::raft::Role;
use crate::region::RegionError;
use crate::store::{Liveness, PeerChange, RegionStatus, Store};
use crate::transport::Resolve;
use crate::{PeerId, RegionId};

use super::answer::{respond, routed};
use super::status::StoreSummary;

/// The admin service of one store.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<Store>,
    directory: Option<Arc<dyn Resolve>>,
}

impl AdminService {
    /// The service of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        AdminService {
            store,
            directory: None,
        }
    }

    /// Tells clients the stores `directory` knows (in StoreStatus), so a client given
    /// some endpoints reaches the others.
    pub fn with_directory(mut self, directory: Arc<dyn Resolve>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The service, ready to mount on a tonic server.
    pub fn into_server(self) -> AdminServer<AdminService> {
        AdminServer::new(self)
    }
}

fn role(role: Role) -> adminpb::Role {
    match role {
        Role::Follower => adminpb::Role::Follower,
        Role::PreCandidate => adminpb::Role::PreCandidate,
        Role::Candidate => adminpb::Role::Candidate,
        Role::Leader => adminpb::Role::Leader,
    }
}

fn info(st: RegionStatus) -> adminpb::RegionInfo {
    adminpb::RegionInfo {
        region: Some(st.region),
        peer: Some(st.peer),
        role: role(st.role) as i32,
        leader: st.leader,
        term: st.term,
        commit_index: st.commit_index,
        applied_index: st.applied_index,
        first_index: st.first_index,
        hibernated: st.hibernated,
    }
}

fn peer_change(change: adminpb::PeerChange) -> Result<PeerChange, RegionError> {
    let invalid = |reason: &str| RegionError::InvalidRequest {
        reason: reason.to_string(),
    };
    let peer = change
        .peer
        .ok_or_else(|| invalid("a peer change without its peer"))?;
    match ChangeType::try_from(change.change_type) {
        Ok(ChangeType::AddVoter) => Ok(PeerChange::AddVoter(peer)),
        Ok(ChangeType::AddLearner) => Ok(PeerChange::AddLearner(peer)),
        Ok(ChangeType::Remove) => Ok(PeerChange::Remove(peer)),
        Ok(ChangeType::Unspecified) | Err(_) => Err(invalid("a peer change of no known type")),
    }
}

const NOT_YET: &str = "needs the placement service, which is not built yet";

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_regions(
        &self,
        _: Request<adminpb::ListRegionsRequest>,
    ) -> Result<Response<adminpb::ListRegionsResponse>, Status> {
        let mut regions = Vec::new();
        for region in self.store.regions() {
            // A region destroyed since the listing is left out.
            if let Ok(st) = self.store.region_status(RegionId(region.id)).await {
                regions.push(info(st));
            }
        }
        Ok(Response::new(adminpb::ListRegionsResponse { regions }))
    }

    async fn show_region(
        &self,
        request: Request<adminpb::ShowRegionRequest>,
    ) -> Result<Response<adminpb::ShowRegionResponse>, Status> {
        let region = RegionId(request.into_inner().region_id);
        respond(
            self.store
                .region_status(region)
                .await
                .map(|st| adminpb::ShowRegionResponse {
                    region_error: None,
                    info: Some(info(st)),
                }),
        )
    }

    async fn store_status(
        &self,
        _: Request<adminpb::StoreStatusRequest>,
    ) -> Result<Response<adminpb::StoreStatusResponse>, Status> {
        let summary = StoreSummary::of(&self.store).await;
        let peer_stores = summary
            .peer_stores
            .iter()
            .map(|p| adminpb::PeerStore {
                store_id: p.store_id,
                liveness: match p.liveness {
                    Liveness::Live => adminpb::Liveness::Live,
                    Liveness::Down => adminpb::Liveness::Down,
                } as i32,
            })
            .collect();
        Ok(Response::new(adminpb::StoreStatusResponse {
            store_id: summary.store_id,
            regions: summary.regions,
            leaders: summary.leaders,
            hibernated: summary.hibernated,
            peer_stores,
            failure: summary.failure.unwrap_or_default(),
            known_stores: self
                .directory
                .as_ref()
                .map(|d| d.known_stores())
                .unwrap_or_default()
                .into_iter()
                .map(|(store, address)| adminpb::KnownStore {
                    store_id: store.get(),
                    address,
                })
                .collect(),
        }))
    }

    async fn split(
        &self,
        request: Request<adminpb::SplitRequest>,
    ) -> Result<Response<adminpb::SplitResponse>, Status> {
        let r = request.into_inner();
        let splits = r
            .splits
            .into_iter()
            .map(|s| commandpb::SplitRequest {
                split_key: s.split_key,
                new_region_id: s.new_region_id,
                new_peer_ids: s.new_peer_ids,
            })
            .collect();
        let result = match routed(r.context) {
            Ok((region, epoch)) => self.store.split(region, epoch, splits).await,
            Err(e) => Err(e),
        };
        respond(result.map(|split| adminpb::SplitResponse {
            region_error: None,
            regions: split.regions,
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<adminpb::TransferLeaderRequest>,
    ) -> Result<Response<adminpb::TransferLeaderResponse>, Status> {
        let r = request.into_inner();
        let result = match routed(r.context) {
            Ok((region, epoch)) => {
                self.store
                    .transfer_leader(region, epoch, PeerId(r.to_peer_id))
                    .await
            }
            Err(e) => Err(e),
        };
        respond(result.map(|()| adminpb::TransferLeaderResponse::default()))
    }

    async fn change_peers(
        &self,
        request: Request<adminpb::ChangePeersRequest>,
    ) -> Result<Response<adminpb::ChangePeersResponse>, Status> {
        let r = request.into_inner();
        let changes: Result<Vec<PeerChange>, RegionError> =
            r.changes.into_iter().map(peer_change).collect();
        let result = match (routed(r.context), changes) {
            (Ok((region, epoch)), Ok(changes)) => {
                self.store.change_peers(region, epoch, changes).await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        respond(result.map(|changed| adminpb::ChangePeersResponse {
            region_error: None,
            region: Some(changed.region),
        }))
    }

    async fn merge(
        &self,
        _: Request<adminpb::MergeRequest>,
    ) -> Result<Response<adminpb::MergeResponse>, Status> {
        Err(Status::unimplemented(format!("merge {NOT_YET}")))
    }

    async fn move_peer(
        &self,
        _: Request<adminpb::MovePeerRequest>,
    ) -> Result<Response<adminpb::MovePeerResponse>, Status> {
        Err(Status::unimplemented(format!("move-peer {NOT_YET}")))
    }

    async fn rebalance(
        &self,
        _: Request<adminpb::RebalanceRequest>,
    ) -> Result<Response<adminpb::RebalanceResponse>, Status> {
        Err(Status::unimplemented(format!("rebalance {NOT_YET}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::Peer;

    #[test]
    fn peer_changes_decode_each_type_and_refuse_the_rest() {
        let peer = Peer {
            id: 4,
            store_id: 4,
            role: 0,
        };
        let change = |t: ChangeType| adminpb::PeerChange {
            change_type: t as i32,
            peer: Some(peer),
        };
        assert_eq!(
            peer_change(change(ChangeType::AddVoter)),
            Ok(PeerChange::AddVoter(peer))
        );
        assert_eq!(
            peer_change(change(ChangeType::AddLearner)),
            Ok(PeerChange::AddLearner(peer))
        );
        assert_eq!(
            peer_change(change(ChangeType::Remove)),
            Ok(PeerChange::Remove(peer))
        );
        assert!(peer_change(change(ChangeType::Unspecified)).is_err());
        assert!(
            peer_change(adminpb::PeerChange {
                change_type: 42,
                peer: Some(peer)
            })
            .is_err()
        );
        assert!(
            peer_change(adminpb::PeerChange {
                change_type: ChangeType::Remove as i32,
                peer: None
            })
            .is_err()
        );
    }

    #[test]
    fn every_role_has_its_wire_name() {
        assert_eq!(role(Role::Follower), adminpb::Role::Follower);
        assert_eq!(role(Role::PreCandidate), adminpb::Role::PreCandidate);
        assert_eq!(role(Role::Candidate), adminpb::Role::Candidate);
        assert_eq!(role(Role::Leader), adminpb::Role::Leader);
    }
}
