//! The engine's side of the computers: the SSH connections of the applied revision, a
//! heartbeat task per declared computer (off the reconcile path: a host that does not
//! answer takes its connect timeout to say so, and no pass waits for it), and each
//! computer's [`Health`], written to the store's registry whenever it changes.
//!
//! The probes send their answers to the engine's loop as [`Beat`]s; the loop owns the
//! health, so what the scheduler reads, what the store records and what fails over are
//! decided in one place.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::computer::health::{HEARTBEAT, Health};
use crate::computer::{self, Computer, Kind, Local, Ssh};
use crate::spec::Spec;
use crate::spec::kinds::SshConnection;
use crate::store::{ComputerRecord, Store, StoreError};

/// One probe's answer.
#[derive(Debug)]
pub struct Beat {
    pub computer: String,
    pub answer: Result<(), String>,
    pub at: DateTime<Utc>,
}

/// A declared computer as the fleet keeps it.
struct Member {
    kind: Kind,
    capacity: u32,
    health: Health,
}

/// The computers of the applied revision, their connections, probes and health.
pub struct Fleet {
    /// One [`Ssh`] (one pooled connection) per SSH computer, kept across revisions that
    /// leave its `ssh:` and `workdir:` as they were.
    remotes: HashMap<String, (SshConnection, Option<String>, Arc<Ssh>)>,
    members: HashMap<String, Member>,
    /// The SSH hosts (`user@host:port`) whose left-over processes of a previous run are
    /// stopped (or will be, on first use) by this run: once each, so a connection made
    /// anew for a changed declaration never stops the processes of running tasks.
    swept: std::collections::HashSet<String>,
    probes: Vec<JoinHandle<()>>,
    beats_tx: mpsc::UnboundedSender<Beat>,
    pub beats: mpsc::UnboundedReceiver<Beat>,
}

impl Default for Fleet {
    fn default() -> Self {
        let (beats_tx, beats) = mpsc::unbounded_channel();
        Fleet {
            remotes: HashMap::new(),
            members: HashMap::new(),
            swept: std::collections::HashSet::new(),
            probes: Vec::new(),
            beats_tx,
            beats,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for probe in &self.probes {
            probe.abort();
        }
    }
}

impl Fleet {
    /// Takes the computers `spec` declares: connections that still fit are kept, health is
    /// kept for computers whose kind is unchanged, and the probes start over (the first
    /// beat of each comes at once).
    pub fn adopt(
        &mut self,
        spec: &Spec,
        state_dir: &Path,
        store: &Store,
    ) -> Result<(), StoreError> {
        let mut remotes = HashMap::new();
        let mut members = HashMap::new();
        for probe in self.probes.drain(..) {
            probe.abort();
        }
        for c in &spec.computers {
            let kind = Kind::of(&c.spec);
            let kept = self
                .members
                .remove(c.name())
                .filter(|m| m.kind == kind)
                .map(|m| m.health);
            let mut health = kept.unwrap_or_default();
            let probed: Option<Arc<dyn Computer>> = match (&c.spec.ssh, kind) {
                (Some(ssh), _) => {
                    let workdir = c.spec.workdir.clone();
                    let display = super::Desktops::declared(&c.spec);
                    let entry = self
                        .remotes
                        .remove(c.name())
                        .filter(|(s, w, kept)| {
                            s == ssh && *w == workdir && kept.display() == display
                        })
                        .unwrap_or_else(|| {
                            let mut computer = Ssh::from_spec(c.name(), ssh, workdir.as_deref());
                            if let Some(display) = display {
                                // The worker run on the remote is this very binary, so both
                                // ends speak the same protocol.
                                match std::env::current_exe() {
                                    Ok(exe) => computer = computer.with_desktop(display, exe),
                                    Err(e) => tracing::warn!(
                                        computer = c.name(),
                                        "no desktop: cannot find this program's binary: {e}"
                                    ),
                                }
                            }
                            let target = computer.target();
                            let host = format!("{}@{}", target.user, target.address());
                            if self.swept.insert(host) {
                                computer = computer
                                    .stopping_leftovers(computer::local::marker_prefix(state_dir));
                            }
                            (ssh.clone(), workdir, Arc::new(computer))
                        });
                    let probe: Arc<dyn Computer> = entry.2.clone();
                    remotes.insert(c.name().to_string(), entry);
                    Some(probe)
                }
                (None, Kind::Local) => Some(Arc::new(Local::new(
                    c.name(),
                    computer::workdir(c.spec.workdir.as_deref(), state_dir),
                ))),
                (None, _) => {
                    // Declared, but not a kind this controller can drive yet.
                    health.healthy = false;
                    health.reason = Some(format!(
                        "{} computers cannot be driven by this controller yet",
                        kind.as_str()
                    ));
                    None
                }
            };
            if let Some(probed) = probed {
                self.probes.push(spawn_probe(probed, self.beats_tx.clone()));
            }
            members.insert(
                c.name().to_string(),
                Member {
                    kind,
                    capacity: c.spec.capacity.unwrap_or(1),
                    health,
                },
            );
        }
        self.remotes = remotes;
        self.members = members;
        let names: Vec<&str> = spec.computers.iter().map(|c| c.name()).collect();
        store.forget_computers(&names)?;
        Ok(())
    }

    /// The SSH computer named so, if it is one.
    pub fn ssh(&self, name: &str) -> Option<&Arc<Ssh>> {
        self.remotes.get(name).map(|(_, _, ssh)| ssh)
    }

    /// Takes in a probe's answer; returns whether the computer just turned unhealthy.
    pub fn beat(&mut self, beat: Beat) -> bool {
        match self.members.get_mut(&beat.computer) {
            Some(member) => member.health.beat(beat.answer, beat.at),
            // A beat of a computer the last revision removed.
            None => false,
        }
    }

    /// An attempt on `name` lost its computer.
    pub fn lost(&mut self, name: &str, reason: String, now: DateTime<Utc>) {
        if let Some(member) = self.members.get_mut(name) {
            member.health.lost(reason, now);
        }
    }

    /// An attempt on `name` ended with the computer answering.
    pub fn served(&mut self, name: &str) {
        if let Some(member) = self.members.get_mut(name) {
            member.health.served();
        }
    }

    /// An attempt on `name` was cancelled: it says nothing of the computer.
    pub fn released(&mut self, name: &str) {
        if let Some(member) = self.members.get_mut(name) {
            member.health.released();
        }
    }

    /// A task started on `name`.
    pub fn started(&mut self, name: &str) {
        if let Some(member) = self.members.get_mut(name) {
            member.health.started();
        }
    }

    /// Open breakers whose cool-down is over half-open.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, member) in &mut self.members {
            let before = member.health.breaker;
            member.health.tick(now);
            if member.health.breaker != before {
                changed.push(name.clone());
            }
        }
        changed
    }

    /// How many tasks `name` may start now beyond what runs there, health- and
    /// breaker-wise (`None`: as many as its capacity allows).
    pub fn admits(&self, name: &str) -> Option<u32> {
        self.members.get(name).and_then(|m| m.health.admits())
    }

    /// Writes `name`'s row of the registry, with `running` tasks there now.
    pub fn record(&self, store: &Store, name: &str, running: u32) -> Result<(), StoreError> {
        match self.members.get(name) {
            Some(m) => store.record_computer(&ComputerRecord::new(
                name, m.kind, &m.health, running, m.capacity,
            )),
            None => Ok(()),
        }
    }

    /// The names of the declared computers.
    pub fn names(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }
}

/// A computer's heartbeat: a probe now, then every [`HEARTBEAT`], until aborted (a new
/// revision) or the engine is gone.
fn spawn_probe(computer: Arc<dyn Computer>, beats: mpsc::UnboundedSender<Beat>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(HEARTBEAT);
        // A probe slower than the interval does not make the next ones come in a burst.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let answer = computer.healthy().await.map_err(|e| e.to_string());
            let beat = Beat {
                computer: computer.name().to_string(),
                answer,
                at: Utc::now(),
            };
            if beats.send(beat).is_err() {
                return;
            }
        }
    })
}
