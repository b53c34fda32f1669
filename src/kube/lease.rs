//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leader election
//! does it: a replica takes the Lease when nobody holds it or the holder has not renewed it
//! for the lease duration (measured on this replica's own clock, from when it last saw the
//! record change, so clocks need not agree), and every write is a replace guarded by the
//! resourceVersion it read, so two replicas can never both win. The holder renews every
//! retry period; one that cannot renew within the renew deadline (shorter than the lease
//! duration) gives up, so it has stopped before anybody else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?}), and the retry period ({retry:?}) shorter than the deadline"
    )]
    Timing {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
}

/// How long a lease lasts, and how its holder keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease not renewed keeps others waiting.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others try.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    pub fn check(self) -> Result<Timing, LeaseError> {
        if self.renew_deadline >= self.lease_duration || self.retry_period >= self.renew_deadline {
            return Err(LeaseError::Timing {
                lease: self.lease_duration,
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(self)
    }
}

/// The lease record as last seen, and when it was seen to change.
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<i32>),
    at: Instant,
}

/// One replica's candidacy for a Lease.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
}

/// The outcome of one try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Try {
    Held,
    Taken,
}

impl Election {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Election {
        Election {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            name: self.name.clone(),
            source,
        }
    }

    /// Waits until this replica holds the lease; `None` if `shutdown` fires first. A
    /// failing API is retried every retry period, as a lease held by another is.
    pub async fn acquire(mut self, shutdown: &CancellationToken) -> Option<Leadership> {
        loop {
            match self.try_once().await {
                Ok(Try::Held) => return Some(Leadership::hold(self)),
                Ok(Try::Taken) => {}
                Err(e) => tracing::warn!("cannot take the lease: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Takes or renews the lease if this replica may: `Held` when it holds it now.
    async fn try_once(&mut self) -> Result<Try, LeaseError> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(15);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Try::Held),
                Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Try::Taken),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        );
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed {
                record,
                at: Instant::now(),
            });
        }
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs);
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty)
            || self
                .observed
                .as_ref()
                .is_some_and(|o| o.at.elapsed() >= duration);
        if !mine && !free {
            return Ok(Try::Taken);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
            ..spec
        });
        // Guarded by the resourceVersion read above: another replica's write in between
        // makes this one fail, never both succeed.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Try::Held),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Try::Taken),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the lease up (a graceful stop), so another replica need not wait it out.
    async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// The lease, held: renewed in the background until it is lost or given up.
pub struct Leadership {
    /// Fires when the lease is lost (not renewed within the renew deadline, or taken).
    lost: CancellationToken,
    /// Fires to give it up.
    resign: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    fn hold(mut election: Election) -> Leadership {
        let lost = CancellationToken::new();
        let resign = CancellationToken::new();
        let (on_lost, on_resign) = (lost.clone(), resign.clone());
        let task = tokio::spawn(async move {
            let timing = election.timing;
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = on_resign.cancelled() => {
                        if let Err(e) = election.release().await {
                            tracing::warn!("cannot give the lease up: {e}");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(timing.retry_period) => {}
                }
                let attempt = tokio::time::timeout(
                    timing.renew_deadline.saturating_sub(renewed.elapsed()),
                    election.try_once(),
                )
                .await;
                match attempt {
                    Ok(Ok(Try::Held)) => renewed = Instant::now(),
                    Ok(Ok(Try::Taken)) => {
                        tracing::error!("the lease was taken by another replica");
                        on_lost.cancel();
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!("cannot renew the lease: {e}"),
                    Err(_) => {}
                }
                if renewed.elapsed() >= timing.renew_deadline {
                    tracing::error!(
                        "the lease was not renewed within {:?}; leading stops",
                        timing.renew_deadline
                    );
                    on_lost.cancel();
                    return;
                }
            }
        });
        Leadership { lost, resign, task }
    }

    /// Fires when the lease is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Gives the lease up and waits until it is released.
    pub async fn resign(self) {
        self.resign.cancel();
        let _ = self.task.await;
    }
}
