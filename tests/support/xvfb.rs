//! A private X server (Xvfb, 1280x800, 24-bit) with an xterm on it, for the desktop tests and
//! benchmark: a display number of its own per caller (from the process id and a slot), ready
//! when `xdpyinfo` answers, both processes killed by PID when dropped.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The screen every test display has.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;
/// Where the xterm is and how big it is at least (80x24 cells of xterm's default font):
/// its middle is well inside it.
pub const XTERM_AT: (u32, u32) = (100, 100);
pub const XTERM_MIDDLE: (u32, u32) = (100 + 200, 100 + 120);

pub struct Display {
    pub name: String,
    xvfb: Child,
    xterm: Option<Child>,
}

impl Display {
    /// An X server on a display number no other test of this run uses: `slot` (0-15) tells
    /// apart the displays of one test binary, the process id those of parallel binaries.
    pub fn start(slot: u32) -> Display {
        let base = 100 + (std::process::id() % 2000) * 16 + slot;
        let mut number = base;
        // A display left over by another run (its lock file is there): take another.
        while Path::new(&format!("/tmp/.X{number}-lock")).exists() {
            number += 32_000;
        }
        let name = format!(":{number}");
        let xvfb = Command::new("Xvfb")
            .args([
                &name,
                "-screen",
                "0",
                &format!("{WIDTH}x{HEIGHT}x24"),
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/test.sh installs xvfb)");
        let display = Display {
            name,
            xvfb,
            xterm: None,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !display.answers() {
            assert!(
                Instant::now() < deadline,
                "Xvfb on {} did not come up",
                display.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        display
    }

    fn answers(&self) -> bool {
        Command::new("xdpyinfo")
            .args(["-display", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// One start of the xterm: `true` once its window is mapped; `false` when it exited
    /// first (unless `last`, when that fails the test with its log).
    fn xterm_once(&mut self, dir: &Path, last: bool) -> bool {
        let geometry = format!("80x24+{}+{}", XTERM_AT.0, XTERM_AT.1);
        let log = dir.join("xterm.log");
        let child = Command::new("xterm")
            .args(["-display", &self.name, "-geometry", &geometry, "-e", "sh"])
            .current_dir(dir)
            .env("SHELL", "/bin/sh")
            .env("PS1", "$ ")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("xterm's log"))
            .spawn()
            .expect("xterm (scripts/test.sh installs it)");
        let xterm = self.xterm.insert(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("xdotool")
                .args(["search", "--onlyvisible", "--class", "xterm"])
                .env("DISPLAY", &self.name)
                .output()
                .expect("xdotool (scripts/test.sh installs it)");
            if out.status.success() && !out.stdout.is_empty() {
                return true;
            }
            let exited = xterm.try_wait().ok().flatten();
            if exited.is_some() && !last {
                return false;
            }
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no xterm window on {} (xterm: {exited:?}; xdotool: {}; xterm's log: {})",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts an xterm at [`XTERM_AT`] running `sh` in `dir`, and waits until its window is
    /// mapped.
    pub fn xterm(&mut self, dir: &Path) {
        // A fresh server now and then refuses xterm's first connection ("Can't open
        // display") though `xdpyinfo` already answered: xterm is started again then, a few
        // times, before the test gives up with its log.
        for attempt in 1..=3 {
            if self.xterm_once(dir, attempt == 3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // Let the shell start and draw its prompt.
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Some(xterm) = &mut self.xterm {
            let _ = xterm.kill();
            let _ = xterm.wait();
        }
        // SIGTERM, so the server removes its lock file and socket on the way out.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.xvfb.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.xvfb.wait();
    }
}
