//! What every service answers: the result, or the region error in its place (never a
//! gRPC error: a client must tell a region's refusal from a broken call).

use tonic::{Response, Status};

use crate::RegionId;
use crate::proto::metapb::RegionEpoch;
use crate::proto::{adminpb, kvpb};
use crate::region::RegionError;

/// Where a request was routed; a request without it is malformed.
pub(super) fn routed(
    context: Option<kvpb::Context>,
) -> Result<(RegionId, RegionEpoch), RegionError> {
    let invalid = |what: &str| RegionError::InvalidRequest {
        reason: format!("the request has no {what}"),
    };
    let context = context.ok_or_else(|| invalid("context"))?;
    let epoch = context
        .region_epoch
        .ok_or_else(|| invalid("region_epoch"))?;
    Ok((RegionId(context.region_id), epoch))
}

/// A response that can carry a region error in place of its result.
pub(super) trait RegionFailure: Default {
    fn failed(error: &RegionError) -> Self;
}

macro_rules! region_failure {
    ($($response:ty),* $(,)?) => {
        $(impl RegionFailure for $response {
            // Some responses hold nothing but the error: the update is then empty.
            #[allow(clippy::needless_update)]
            fn failed(error: &RegionError) -> Self {
                Self {
                    region_error: Some(error.into()),
                    ..Default::default()
                }
            }
        })*
    };
}

region_failure!(
    kvpb::GetResponse,
    kvpb::BatchGetResponse,
    kvpb::PutResponse,
    kvpb::DeleteResponse,
    kvpb::DeleteRangeResponse,
    kvpb::ScanResponse,
    kvpb::BatchWriteResponse,
    kvpb::CompareAndSwapResponse,
    adminpb::ShowRegionResponse,
    adminpb::SplitResponse,
    adminpb::TransferLeaderResponse,
    adminpb::ChangePeersResponse,
);

/// The response, or its region error in its place.
pub(super) fn respond<T: RegionFailure>(
    result: Result<T, RegionError>,
) -> Result<Response<T>, Status> {
    Ok(Response::new(result.unwrap_or_else(|e| T::failed(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_its_routing_is_invalid() {
        assert!(matches!(
            routed(None),
            Err(RegionError::InvalidRequest { .. })
        ));
        let no_epoch = kvpb::Context {
            region_id: 1,
            region_epoch: None,
        };
        assert!(matches!(
            routed(Some(no_epoch)),
            Err(RegionError::InvalidRequest { .. })
        ));
        let epoch = RegionEpoch {
            conf_ver: 1,
            version: 2,
        };
        let ok = kvpb::Context {
            region_id: 3,
            region_epoch: Some(epoch),
        };
        assert_eq!(routed(Some(ok)), Ok((RegionId(3), epoch)));
    }

    #[test]
    fn a_failure_answers_its_region_error_and_nothing_else() {
        let e = RegionError::RegionNotFound {
            region: RegionId(9),
        };
        let failed = respond::<kvpb::GetResponse>(Err(e.clone()))
            .unwrap()
            .into_inner();
        assert_eq!(failed.region_error, Some(kvpb::RegionError::from(&e)));
        assert!(!failed.found && failed.value.is_empty());
        let fine = kvpb::GetResponse {
            found: true,
            ..Default::default()
        };
        assert_eq!(respond(Ok(fine.clone())).unwrap().into_inner(), fine);
    }
}
