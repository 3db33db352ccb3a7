//! The status HTTP server (axum): `/metrics` in Prometheus text (flotilla's metrics and
//! raft-engine's own), `/status` as JSON, `/health`. And the store summary that `/status`
//! and the admin service's StoreStatus both report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::RegionId;
use crate::raft::Role;
use crate::store::{Liveness, Store};

/// What a store holds and how it is doing, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreSummary {
    /// The store.
    pub store_id: u64,
    /// Replicas it holds.
    pub regions: u64,
    /// Of those, the ones leading their region.
    pub leaders: u64,
    /// Of those, the ones asleep (hibernated).
    pub hibernated: u64,
    /// What it believes of each store holding peers of its regions.
    pub peer_stores: Vec<PeerStoreSummary>,
    /// Why the store stopped, if a fatal error stopped it.
    pub failure: Option<String>,
}

/// One peer store's liveness as a store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStoreSummary {
    /// The peer store.
    pub store_id: u64,
    /// Heard from recently, or not.
    pub liveness: Liveness,
}

impl StoreSummary {
    /// Asks every region of `store` for its status (all at once) and counts.
    pub async fn of(store: &Store) -> StoreSummary {
        let regions = store.regions();
        let asked: Vec<_> = regions
            .iter()
            .map(|r| store.region_status(RegionId(r.id)))
            .collect();
        let (mut leaders, mut hibernated) = (0, 0);
        for answer in asked {
            // A region removed meanwhile has no status: it is counted, not described.
            if let Ok(st) = answer.await {
                leaders += u64::from(st.role == Role::Leader);
                hibernated += u64::from(st.hibernated);
            }
        }
        let peer_stores = store
            .peer_store_liveness()
            .into_iter()
            .map(|(store, liveness)| PeerStoreSummary {
                store_id: store.get(),
                liveness,
            })
            .collect();
        StoreSummary {
            store_id: store.id().get(),
            regions: regions.len() as u64,
            leaders,
            hibernated,
            peer_stores,
            failure: store.failure(),
        }
    }
}

/// The process's Prometheus recorder, installed on first use. `None` if something else
/// installed a recorder first (an embedding application's own): `/metrics` then serves
/// raft-engine's metrics only, and says so.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "another metrics recorder is installed: /metrics serves raft-engine's metrics only");
                None
            }
        })
        .as_ref()
}

/// What `/status` reports beside the store summary.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The cluster.
    pub cluster_id: u64,
    /// The address clients and peers use.
    pub advertise_addr: String,
}

#[derive(Clone)]
struct StatusState {
    store: Arc<Store>,
    info: Arc<NodeInfo>,
    /// Set once the node stops taking client calls (a graceful stop draining).
    stopping: Arc<AtomicBool>,
}

#[derive(Serialize)]
struct StatusBody {
    cluster_id: u64,
    address: String,
    #[serde(flatten)]
    summary: StoreSummary,
}

/// The status server's routes over `store`; `stopping` is set once the node refuses new
/// client calls (`/health` then answers 503, so a load balancer sends them elsewhere).
pub fn router(store: Arc<Store>, info: NodeInfo, stopping: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/health", get(health))
        .with_state(StatusState {
            store,
            info: Arc::new(info),
            stopping,
        })
}

async fn metrics() -> impl IntoResponse {
    let mut text = match prometheus() {
        Some(handle) => handle.render(),
        None => "# flotilla's metrics go to another recorder in this process\n".to_string(),
    };
    let engine = prometheus::gather();
    match prometheus::TextEncoder::new().encode_to_string(&engine) {
        Ok(engine_text) => text.push_str(&engine_text),
        Err(e) => text.push_str(&format!(
            "# raft-engine's metrics could not be encoded: {e}\n"
        )),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn status(State(state): State<StatusState>) -> impl IntoResponse {
    Json(StatusBody {
        cluster_id: state.info.cluster_id,
        address: state.info.advertise_addr.clone(),
        summary: StoreSummary::of(&state.store).await,
    })
}

/// 200 while the store serves; 503 with the reason once a fatal error stopped it, or
/// while the node drains before a stop (it refuses new client calls).
async fn health(State(state): State<StatusState>) -> impl IntoResponse {
    match state.store.failure() {
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stopped: {reason}\n"),
        ),
        None if state.stopping.load(Ordering::SeqCst) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: stopping, new client calls are refused\n".to_string(),
        ),
        None => (StatusCode::OK, "ok\n".to_string()),
    }
}
