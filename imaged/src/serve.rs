//! `imaged serve`: the API on a bound listener, plus the periodic gc that deletes expired
//! temporary images. Runs until `shutdown` resolves. Flags and exit codes are `main`'s.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access::Principal;
use crate::api::{router, ApiState};
use crate::store::{now, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serve: http server on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves the API on `listener` until `shutdown` resolves; runs gc every `gc_every`.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    gc_every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let gc_store = store.clone();
    let gc_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(gc_every);
        tick.tick().await; // the first tick is immediate; gc after one period
        loop {
            tick.tick().await;
            let s = gc_store.clone();
            match tokio::task::spawn_blocking(move || s.gc(&Principal::local_admin(), now())).await
            {
                Ok(Ok(r)) => tracing::info!(
                    images = r.deleted_images.len(),
                    blobs = r.deleted_blobs,
                    kept = r.kept_referenced.len(),
                    "periodic gc"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "periodic gc failed"),
                Err(e) => tracing::warn!(error = %e, "periodic gc task failed"),
            }
        }
    });
    tracing::info!(%addr, "imaged serving /api/v1");
    let result = axum::serve(listener, router(ApiState::new(store)))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Http { addr, source });
    gc_task.abort();
    result
}
