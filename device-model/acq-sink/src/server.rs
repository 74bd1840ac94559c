//! The vhost-user listener: serves one frontend connection at a time; each connection
//! gets a fresh device (queues, memory table) on the same disk, so a frontend that
//! disconnects (QEMU quitting or reconnecting) can come back.

use std::path::{Path, PathBuf};

use acq_daemon::daemon::listen_ready;
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::{SharedDisk, SinkBackend};

/// Why the server stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The socket could not be created.
    #[error("creating the vhost-user socket {path}: {source}")]
    Listen {
        /// The socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A per-connection resource could not be created.
    #[error("setting up a connection: {0}")]
    Setup(String),
}

/// A bound vhost-user socket; dropped, it removes its file.
pub struct SinkServer {
    listener: Listener,
    path: PathBuf,
}

impl SinkServer {
    /// Creates the socket at `path` (which must not exist; the caller clears stale ones).
    /// Its existence means "ready".
    pub fn bind(path: &Path) -> Result<SinkServer, ServerError> {
        let listener = listen_ready(path).map_err(|source| ServerError::Listen {
            path: path.display().to_string(),
            source,
        })?;
        Ok(SinkServer {
            listener: Listener::from(listener),
            path: path.to_owned(),
        })
    }

    /// Serves connections one after another, forever (or until a setup error).
    pub fn serve(mut self, sink: &Arc<SharedDisk>) -> Result<(), ServerError> {
        loop {
            self.serve_one(sink)?;
        }
    }

    /// Accepts one connection and serves it until the frontend disconnects.
    pub fn serve_one(&mut self, sink: &Arc<SharedDisk>) -> Result<(), ServerError> {
        let backend = Arc::new(
            SinkBackend::new(Arc::clone(sink)).map_err(|e| ServerError::Setup(e.to_string()))?,
        );
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("acq-sink".into(), Arc::clone(&backend), mem)
            .map_err(|e| ServerError::Setup(e.to_string()))?;
        let served = match daemon.start(&mut self.listener) {
            Ok(()) => {
                sink.connected();
                info!("frontend connected");
                match daemon.wait() {
                    Ok(()) => info!("frontend disconnected"),
                    Err(e) => warn!("connection ended: {e}"),
                }
                true
            }
            Err(e) => {
                warn!("accepting a vhost-user connection: {e}");
                false
            }
        };
        // Dropping the daemon stops and joins its vring worker threads; then the
        // descriptors the crate leaked can be closed.
        drop(daemon);
        SinkBackend::close_exit_consumers(backend);
        if !served {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
