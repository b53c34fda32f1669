//! Stopping processes on this host the way `docker stop` and the kubelet do: `SIGTERM`
//! first, `SIGKILL` for whatever is still there after [`STOP_GRACE`].
//!
//! The grace is not politeness. Git takes a lock file beside every ref it updates
//! (`refs/heads/main.lock`) and removes it on `SIGTERM`, but a `SIGKILL` in the middle of a
//! push leaves it behind in the product's repository, where every later push is refused
//! until a person deletes it. The same holds for any tool that cleans up on a signal.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long a stopped process has to end on `SIGTERM` before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often a stopping process is looked for while it has the grace.
const POLL: Duration = Duration::from_millis(10);

/// Stops every process `find` finds: `SIGTERM`, then `SIGKILL` for what is left after the
/// grace, sweeping again while it finds more (a process may fork while being stopped).
/// Says how many processes were signalled. Blocking: call it off the async runtime.
pub fn stop_found(find: impl Fn() -> Vec<i32>) -> usize {
    let found = find();
    if found.is_empty() {
        return 0;
    }
    let mut stopped = found.len();
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && !find().is_empty() {
        std::thread::sleep(POLL);
    }
    for _ in 0..5 {
        let left = find();
        if left.is_empty() {
            break;
        }
        for pid in left {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                stopped += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stopped
}

/// Stops process group `pgid`, whose leader the caller has not reaped yet (so the id still
/// names this group): `SIGTERM` to the group, then `SIGKILL` once no member but zombies is
/// left or the grace is over.
pub async fn stop_group(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && group_has_live_member(pgid) {
        tokio::time::sleep(POLL).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// The same as [`stop_group`] from code that cannot wait (a `Drop`): the grace runs on a
/// thread of its own.
pub fn stop_group_detached(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let spawned = std::thread::Builder::new()
        .name("proto-stop".into())
        .spawn(move || {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && group_has_live_member(pgid) {
                std::thread::sleep(POLL);
            }
            if group_has_live_member(pgid) {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        });
    if spawned.is_err() {
        // No thread to wait on: the group is killed now rather than left running.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Whether a process of group `pgid` is still running (zombies, which hold nothing and
/// only wait to be reaped, do not count). Linux `/proc`; elsewhere, whether the group
/// exists at all.
fn group_has_live_member(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killpg(pgid, None).is_ok();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| live_member_of(&stat))
                == Some(pgid.as_raw())
        })
}

/// The process group of the process `/proc/<pid>/stat` describes, unless it is a zombie.
/// The command name (second field) may hold spaces and parentheses, so the fields are
/// counted from its closing parenthesis.
fn live_member_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(pgrp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_names_its_group_unless_it_is_a_zombie() {
        let cases = [
            ("41 (sh) S 1 41 41 0 -1", Some(41)),
            ("42 (a (b) c) R 41 41 41 0", Some(41)),
            ("43 (git) Z 41 41 41 0", None),
            ("44 (x) X 1 44 44", None),
            ("garbage", None),
            ("45 (y) S 1", None),
        ];
        for (stat, group) in cases {
            assert_eq!(live_member_of(stat), group, "{stat}");
        }
    }
}
