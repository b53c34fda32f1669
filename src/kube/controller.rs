//! `proto controller`: the engine on a namespace's resources. A replica first takes the
//! Lease (only the holder dispatches); then it locks its state directory, starts the
//! reflectors, waits for a declaration that validates, and runs the engine as `proto run`
//! does, with status, Events and finalizers kept beside it. A replica that loses the lease
//! stops its engine at once (its running work is cancelled and resumes from the journal on
//! the next leader that shares its state) and ends with an error, as client-go's
//! controllers do: its supervisor starts it again as a candidate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::Events;
use super::lease::{Election, LeaseError, Timing};
use super::source::KubeSource;
use super::status::StatusWriter;
use crate::engine::{Engine, EngineError, Options as EngineOptions};
use crate::source::{GitSource, Source, SourceError};
use crate::spec::FileTree;

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lock(#[from] crate::state_lock::LockError),
    #[error("writeback.repo {repo}: {source}")]
    Writeback {
        repo: String,
        #[source]
        source: SourceError,
    },
    #[error("the lease {0} was lost; this replica stopped dispatching")]
    LeaseLost(String),
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace watched [default: `POD_NAMESPACE`, else the kubeconfig's].
    pub namespace: Option<String>,
    /// The kubeconfig [default: `KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account].
    pub kubeconfig: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Relative product repositories are relative to this folder.
    pub base_dir: PathBuf,
    /// The Lease's name, in the watched namespace.
    pub lease_name: String,
    /// This replica's name in the Lease [default: `POD_NAME`, else host and pid].
    pub identity: Option<String>,
    pub timing: Timing,
    pub retention: crate::store::Retention,
}

/// The client and the namespace, from the kubeconfig (or the pod's service account).
pub async fn connect(options: &Options) -> Result<(Client, String), ControllerError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| ControllerError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| ControllerError::Config(format!("{}: {e}", path.display())))?
        }
        None => Config::infer()
            .await
            .map_err(|e| ControllerError::Config(e.to_string()))?,
    };
    let namespace = options
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// This replica's identity in the Lease.
fn identity(given: Option<&str>) -> String {
    if let Some(id) = given {
        return id.to_string();
    }
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "proto".into());
    format!("{host}-{}", std::process::id())
}

/// Runs until `shutdown` fires (the lease is then given up) or the lease is lost.
pub async fn run(options: Options, shutdown: CancellationToken) -> Result<(), ControllerError> {
    let timing = options.timing.check()?;
    let (client, namespace) = connect(&options).await?;
    let identity = identity(options.identity.as_deref());
    let election = Election::new(
        Api::namespaced(client.clone(), &namespace),
        &options.lease_name,
        &identity,
        timing,
    );
    tracing::info!(%namespace, lease = %options.lease_name, %identity, "waiting for the lease");
    let Some(leadership) = election.acquire(&shutdown).await else {
        return Ok(());
    };
    tracing::info!(%namespace, lease = %options.lease_name, %identity, "leading");
    let lost = leadership.lost();
    let stop = shutdown.child_token();
    let on_lost = lost.clone();
    let stopper = stop.clone();
    tokio::spawn(async move {
        on_lost.cancelled().await;
        stopper.cancel();
    });
    let result = lead(&options, client, &namespace, &identity, stop).await;
    if lost.is_cancelled() {
        return Err(ControllerError::LeaseLost(options.lease_name.clone()));
    }
    leadership.resign().await;
    result
}

/// What the leader does: the engine on the namespace, with status, Events and finalizers.
async fn lead(
    options: &Options,
    client: Client,
    namespace: &str,
    identity: &str,
    stop: CancellationToken,
) -> Result<(), ControllerError> {
    std::fs::create_dir_all(&options.state_dir).map_err(|source| {
        ControllerError::Source(SourceError::Io {
            path: options.state_dir.clone(),
            source,
        })
    })?;
    let _lock = crate::state_lock::StateLock::acquire(&options.state_dir)?;
    let (trigger_tx, mut trigger_rx) = mpsc::channel(16);
    let (source, _watching) =
        KubeSource::start(client.clone(), namespace, &options.base_dir, trigger_tx).await?;
    let source = Arc::new(source);
    // The engine starts on a declaration that validates: until a Company is applied there
    // is nothing to run, and that is no reason to stop.
    loop {
        source.head()?;
        if source.latest().is_some_and(|s| s.valid) {
            break;
        }
        tracing::info!(%namespace, "waiting for a valid declaration (a Company and its CEO)");
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = trigger_rx.recv() => {}
        }
    }
    let company = writeback_repo(&source, &options.state_dir)?;
    let engine_options = EngineOptions {
        state_dir: options.state_dir.clone(),
        retention: options.retention,
        ..EngineOptions::default()
    };
    let declared: Arc<dyn Source> = source.clone();
    let engine = Engine::with_source(declared, company, engine_options)?;
    let mut reported = engine.reported_status();
    let mut applied = engine.applied_revision();
    let mut status = StatusWriter::new(client.clone(), source.clone());
    let mut events = Events::new(
        client.clone(),
        identity,
        engine.store().clone(),
        source.clone(),
    )
    .map_err(EngineError::from)?;
    let side_stop = stop.clone();
    let side_source = source.clone();
    // Status, Events and finalizers follow each pass of the engine (and a timer, for what
    // changed in the API alone: a Goal created or deleted).
    let side = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = side_stop.cancelled() => break,
                changed = reported.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
            }
            let report = reported.borrow_and_update().clone();
            let running = applied.borrow_and_update().clone();
            events.forward().await;
            status.write(&report).await;
            super::finalizer::reconcile(&client, &side_source, running.as_ref(), &report).await;
        }
        // What the last pass recorded (a cancellation) is still told.
        events.forward().await;
    });
    let result = engine.run(stop.clone(), trigger_rx).await;
    stop.cancel();
    let _ = side.await;
    result.map(|_| ()).map_err(ControllerError::from)
}

/// The company's git repository for the records, when the Company names one
/// (`writeback.repo`); opened (a remote cloned into the state's cache) at the start.
fn writeback_repo(
    source: &KubeSource,
    state_dir: &std::path::Path,
) -> Result<Option<Arc<GitSource>>, ControllerError> {
    let Some(snapshot) = source.latest() else {
        return Ok(None);
    };
    let tree = source.tree(&snapshot.revision)?;
    let (spec, _) = crate::spec::load(tree.as_ref() as &dyn FileTree);
    let Some(writeback) = spec.company().and_then(|c| c.spec.writeback.clone()) else {
        return Ok(None);
    };
    let Some(repo) = writeback.repo else {
        return Ok(None);
    };
    let location = source.resolve_repo(&repo);
    let git = GitSource::open(
        &location,
        writeback.branch.as_deref(),
        None,
        &state_dir.join("sources"),
    )
    .map_err(|source| ControllerError::Writeback { repo, source })?;
    Ok(Some(Arc::new(git)))
}
