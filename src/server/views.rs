//! Answers shared by every request. A list of every goal or every task is megabytes at
//! 10,000 goals: built per request, a thousand requests a second would cost the controller
//! its cores, and built on a timer that requests wait for, every rebuild would hold up the
//! requests that arrive meanwhile.
//!
//! So a [`View`] keeps the last answer it built and the store's change count it was built
//! at. A request gets that answer at once when nothing changed since (it is current), or
//! when it is younger than [`LAG`] (it is at most that late); a stale answer starts one
//! rebuild in the background, at most every [`REBUILD_EVERY`]. Only a request whose answer
//! would be older than [`LAG`] waits, for the rebuild that is running or one it starts. An
//! idle store costs nothing; a busy one costs a rebuild per [`REBUILD_EVERY`] while asked.
//!
//! The change count is the writes of this process's store handles (the engine's and the
//! server's). Another process's writes (`proto stop` from a shell) are not counted, so an
//! answer is rebuilt when it is older than [`MAX_AGE`] whatever the count says.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::api::ApiError;

/// How late a shared answer may be before a request waits for a new one.
pub const LAG: Duration = Duration::from_millis(300);
/// Rebuilds of one answer are at least this far apart while the store keeps changing.
pub const REBUILD_EVERY: Duration = Duration::from_millis(100);
/// An answer this old is rebuilt even when no write of this process was counted.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// An answer as built: what, when, and at which change count.
struct Built<T> {
    at: Instant,
    version: u64,
    answer: Arc<T>,
}

type Building<T> = Shared<BoxFuture<'static, Result<Arc<T>, ApiError>>>;

struct Slot<T> {
    built: Option<Built<T>>,
    building: Option<Building<T>>,
}

/// One shared answer (see the module's documentation).
pub struct View<T> {
    slot: Mutex<Slot<T>>,
}

impl<T> Default for View<T> {
    fn default() -> Self {
        View {
            slot: Mutex::new(Slot {
                built: None,
                building: None,
            }),
        }
    }
}

impl<T: Send + Sync + 'static> View<T> {
    /// The answer for a store at change count `version`, built by `build` when it must be.
    pub async fn get<F>(
        self: &Arc<Self>,
        version: u64,
        build: impl FnOnce() -> F,
    ) -> Result<Arc<T>, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let wait = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(built) = &slot.built {
                let age = built.at.elapsed();
                let current = built.version == version && age < MAX_AGE;
                if current || age < LAG {
                    let answer = built.answer.clone();
                    if !current && slot.building.is_none() && age >= REBUILD_EVERY {
                        let building = self.start(&mut slot, version, build());
                        tokio::spawn(building);
                    }
                    return Ok(answer);
                }
            }
            match &slot.building {
                Some(building) => building.clone(),
                None => self.start(&mut slot, version, build()),
            }
        };
        wait.await
    }

    /// The last answer built, however old.
    pub fn last(&self) -> Option<Arc<T>> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.built.as_ref().map(|built| built.answer.clone())
    }

    /// Starts a rebuild that stores its answer when it is done, whoever awaits it.
    fn start<F>(self: &Arc<Self>, slot: &mut Slot<T>, version: u64, build: F) -> Building<T>
    where
        F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let view = self.clone();
        let building = async move {
            let at = Instant::now();
            let built = build.await.map(Arc::new);
            let mut slot = view.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.building = None;
            if let Ok(answer) = &built {
                slot.built = Some(Built {
                    at,
                    version,
                    answer: answer.clone(),
                });
            }
            built
        }
        .boxed()
        .shared();
        slot.building = Some(building.clone());
        building
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(
        builds: &Arc<AtomicUsize>,
        body: &'static str,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<&'static str, ApiError>> {
        let builds = builds.clone();
        move || {
            async move {
                builds.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(body)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn an_unchanged_store_is_answered_from_the_first_build() {
        let view = Arc::new(View::default());
        let builds = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            assert_eq!(*view.get(7, counting(&builds, "a")).await.unwrap(), "a");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_that_arrive_together_share_one_build() {
        let view = Arc::new(View::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let answers =
            futures_util::future::join_all((0..50).map(|_| view.get(1, counting(&builds, "a"))))
                .await;
        assert!(answers.iter().all(|a| **a.as_ref().unwrap() == "a"));
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_change_is_answered_late_at_most_by_the_lag_and_rebuilt_behind() {
        let view = Arc::new(View::default());
        let builds = Arc::new(AtomicUsize::new(0));
        assert_eq!(*view.get(1, counting(&builds, "old")).await.unwrap(), "old");
        // Changed, but the answer is younger than the lag and than REBUILD_EVERY: served.
        assert_eq!(*view.get(2, counting(&builds, "new")).await.unwrap(), "old");
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        // Past REBUILD_EVERY: still served at once, and a rebuild starts behind it.
        tokio::time::sleep(REBUILD_EVERY).await;
        assert_eq!(*view.get(2, counting(&builds, "new")).await.unwrap(), "old");
        let deadline = Instant::now() + Duration::from_secs(5);
        while *view.get(2, counting(&builds, "newer")).await.unwrap() != "new" {
            assert!(Instant::now() < deadline, "the rebuild never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_older_than_the_lag_is_waited_for() {
        let view = Arc::new(View::default());
        let builds = Arc::new(AtomicUsize::new(0));
        view.get(1, counting(&builds, "old")).await.unwrap();
        tokio::time::sleep(LAG).await;
        assert_eq!(*view.get(2, counting(&builds, "new")).await.unwrap(), "new");
        // Unchanged but older than MAX_AGE: another process may have written.
        tokio::time::sleep(MAX_AGE).await;
        assert_eq!(
            *view.get(2, counting(&builds, "third")).await.unwrap(),
            "third"
        );
    }

    #[tokio::test]
    async fn a_failed_build_is_answered_as_failed_and_tried_again() {
        let view: Arc<View<&'static str>> = Arc::new(View::default());
        let failed = view
            .get(1, || {
                async {
                    Err(ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                    ))
                }
                .boxed()
            })
            .await;
        assert!(failed.is_err());
        let builds = Arc::new(AtomicUsize::new(0));
        assert_eq!(*view.get(1, counting(&builds, "a")).await.unwrap(), "a");
    }
}
