//! The KV service (proto/kv.proto) over one store: each request goes to the region it
//! names, at the epoch it names; a region-level failure is answered as a typed
//! `RegionError` in the response, never as a gRPC error.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::RegionId;
use crate::proto::commandpb::{self, WriteCommand, op};
use crate::proto::kvpb::kv_server::{Kv, KvServer};
use crate::proto::kvpb::{self, op_result};
use crate::proto::metapb::Region;
use crate::region::{RegionError, overlaps_range};
use crate::store::apply::eval::OpOutcome;
use crate::store::{ReadRequest, ReadResponse, ScanOrder, Store, WriteResponse};

use super::answer::{RegionFailure, respond, routed};

/// Pairs one scan returns at most, whatever it asks for.
pub const DEFAULT_MAX_SCAN_PAIRS: usize = 10_000;

/// The largest request the KV service decodes (tonic's default is 4 MiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// The KV service of one store.
#[derive(Clone)]
pub struct KvService {
    store: Arc<Store>,
    max_scan_pairs: usize,
}

impl KvService {
    /// The service of `store`; a scan returns at most `max_scan_pairs` pairs.
    pub fn new(store: Arc<Store>, max_scan_pairs: usize) -> Self {
        KvService {
            store,
            max_scan_pairs: max_scan_pairs.max(1),
        }
    }

    /// The service, ready to mount on a tonic server. It takes requests up to
    /// `MAX_REQUEST_BYTES`, past the store's largest entry, so an oversized write is
    /// answered with its typed `EntryTooLarge` rather than refused by the codec.
    pub fn into_server(self) -> KvServer<KvService> {
        KvServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    async fn write(
        &self,
        context: Option<kvpb::Context>,
        ops: Vec<commandpb::Op>,
    ) -> Result<WriteResponse, RegionError> {
        let (region, epoch) = routed(context)?;
        self.store
            .propose(region, epoch, WriteCommand { ops })
            .await
    }

    /// One operation whose response says nothing but whether it was done.
    async fn write_one<T: RegionFailure>(
        &self,
        context: Option<kvpb::Context>,
        operation: op::Op,
    ) -> Result<Response<T>, Status> {
        respond(
            self.write(context, vec![op(operation)])
                .await
                .map(|_| T::default()),
        )
    }

    async fn read(
        &self,
        context: Option<kvpb::Context>,
        request: ReadRequest,
    ) -> Result<ReadResponse, RegionError> {
        let (region, epoch) = routed(context)?;
        self.store.read(region, epoch, request).await
    }

    async fn route_of(&self, region: Region) -> kvpb::RegionRoute {
        let leader = self
            .store
            .region_status(RegionId(region.id))
            .await
            .ok()
            .and_then(|st| st.leader);
        kvpb::RegionRoute {
            region: Some(region),
            leader,
        }
    }
}

fn op(op: op::Op) -> commandpb::Op {
    commandpb::Op { op: Some(op) }
}

fn pairs(pairs: Vec<(Bytes, Bytes)>) -> Vec<kvpb::KvPair> {
    pairs
        .into_iter()
        .map(|(key, value)| kvpb::KvPair { key, value })
        .collect()
}

/// A read answered with another kind of response than asked: a bug in the store, not
/// the caller's fault.
fn mismatched(asked: &str) -> Status {
    Status::internal(format!(
        "the store answered a {asked} with another kind of response"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<kvpb::GetRequest>,
    ) -> Result<Response<kvpb::GetResponse>, Status> {
        let r = request.into_inner();
        let answer = match self.read(r.context, ReadRequest::Get { key: r.key }).await {
            Ok(ReadResponse::Value(value)) => Ok(kvpb::GetResponse {
                region_error: None,
                found: value.is_some(),
                value: value.unwrap_or_default(),
            }),
            Ok(_) => return Err(mismatched("get")),
            Err(e) => Err(e),
        };
        respond(answer)
    }

    async fn batch_get(
        &self,
        request: Request<kvpb::BatchGetRequest>,
    ) -> Result<Response<kvpb::BatchGetResponse>, Status> {
        let r = request.into_inner();
        let keys = r.keys.clone();
        let answer = match self
            .read(r.context, ReadRequest::BatchGet { keys: r.keys })
            .await
        {
            Ok(ReadResponse::Values(values)) => Ok(kvpb::BatchGetResponse {
                region_error: None,
                pairs: keys
                    .into_iter()
                    .zip(values)
                    .filter_map(|(key, value)| value.map(|value| kvpb::KvPair { key, value }))
                    .collect(),
            }),
            Ok(_) => return Err(mismatched("batch get")),
            Err(e) => Err(e),
        };
        respond(answer)
    }

    async fn put(
        &self,
        request: Request<kvpb::PutRequest>,
    ) -> Result<Response<kvpb::PutResponse>, Status> {
        let r = request.into_inner();
        let put = op::Op::Put(commandpb::Put {
            key: r.key,
            value: r.value,
        });
        self.write_one(r.context, put).await
    }

    async fn delete(
        &self,
        request: Request<kvpb::DeleteRequest>,
    ) -> Result<Response<kvpb::DeleteResponse>, Status> {
        let r = request.into_inner();
        let delete = op::Op::Delete(commandpb::Delete { key: r.key });
        self.write_one(r.context, delete).await
    }

    async fn delete_range(
        &self,
        request: Request<kvpb::DeleteRangeRequest>,
    ) -> Result<Response<kvpb::DeleteRangeResponse>, Status> {
        let r = request.into_inner();
        let delete = op::Op::DeleteRange(commandpb::DeleteRange {
            start_key: r.start_key,
            end_key: r.end_key,
        });
        self.write_one(r.context, delete).await
    }

    async fn scan(
        &self,
        request: Request<kvpb::ScanRequest>,
    ) -> Result<Response<kvpb::ScanResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit as usize {
            0 => self.max_scan_pairs,
            n => n.min(self.max_scan_pairs),
        };
        let scan = ReadRequest::Scan {
            start: r.start_key,
            end: (!r.end_key.is_empty()).then_some(r.end_key),
            limit,
            order: if r.reverse {
                ScanOrder::Reverse
            } else {
                ScanOrder::Forward
            },
        };
        let answer = match self.read(r.context, scan).await {
            Ok(ReadResponse::Pairs(found)) => Ok(kvpb::ScanResponse {
                region_error: None,
                pairs: pairs(found),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            }),
            Ok(_) => return Err(mismatched("scan")),
            Err(e) => Err(e),
        };
        respond(answer)
    }

    async fn batch_write(
        &self,
        request: Request<kvpb::BatchWriteRequest>,
    ) -> Result<Response<kvpb::BatchWriteResponse>, Status> {
        let r = request.into_inner();
        let answer = self.write(r.context, r.ops).await.map(|written| {
            let results = written
                .outcomes
                .into_iter()
                .map(|outcome| kvpb::OpResult {
                    result: Some(match outcome {
                        OpOutcome::Done => op_result::Result::Done(kvpb::Done {}),
                        OpOutcome::Swapped => op_result::Result::Swapped(kvpb::Done {}),
                        OpOutcome::Mismatch { current } => {
                            op_result::Result::Mismatch(kvpb::Mismatch { current })
                        }
                    }),
                })
                .collect();
            kvpb::BatchWriteResponse {
                region_error: None,
                results,
            }
        });
        respond(answer)
    }

    async fn compare_and_swap(
        &self,
        request: Request<kvpb::CompareAndSwapRequest>,
    ) -> Result<Response<kvpb::CompareAndSwapResponse>, Status> {
        let r = request.into_inner();
        let cas = op(op::Op::CompareAndSwap(commandpb::CompareAndSwap {
            key: r.key,
            expected: r.expected,
            new_value: r.new_value,
        }));
        let answer = match self.write(r.context, vec![cas]).await {
            Ok(written) => match written.outcomes.as_slice() {
                [OpOutcome::Swapped] => Ok(kvpb::CompareAndSwapResponse {
                    region_error: None,
                    swapped: true,
                    current: None,
                }),
                [OpOutcome::Mismatch { current }] => Ok(kvpb::CompareAndSwapResponse {
                    region_error: None,
                    swapped: false,
                    current: current.clone(),
                }),
                _ => return Err(mismatched("compare-and-swap")),
            },
            Err(e) => Err(e),
        };
        respond(answer)
    }

    async fn route(
        &self,
        request: Request<kvpb::RouteRequest>,
    ) -> Result<Response<kvpb::RouteResponse>, Status> {
        let key = request.into_inner().key;
        let route = match self.store.region_for_key(&key) {
            Some(region) => Some(self.route_of(region).await),
            None => None,
        };
        Ok(Response::new(kvpb::RouteResponse { route }))
    }

    async fn route_range(
        &self,
        request: Request<kvpb::RouteRangeRequest>,
    ) -> Result<Response<kvpb::RouteRangeResponse>, Status> {
        let r = request.into_inner();
        let mut regions: Vec<Region> = self
            .store
            .regions()
            .into_iter()
            .filter(|region| overlaps_range(region, &r.start_key, &r.end_key))
            .collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        let mut routes = Vec::with_capacity(regions.len());
        for region in regions {
            routes.push(self.route_of(region).await);
        }
        Ok(Response::new(kvpb::RouteRangeResponse { routes }))
    }
}
