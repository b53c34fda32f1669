//! Delivered means delivered, against real git: many workers pushing to one bare repository
//! and to one `git daemon` remote lose no commit; a product that refuses the push leaves the
//! goal not Ready with the server's reason and `run --once` exiting 2; an owner without the
//! `Git` tool still has its playbook delivered; a controller killed with SIGKILL at each
//! boundary (before the commit, before and during the push, in a command, with a broken
//! workspace left behind) delivers, once restarted, exactly what an uninterrupted run does;
//! and a chaos run of 30 slow goals on 2 products killed at 12 random moments ends with every
//! goal met, every file as an uninterrupted run leaves it, and no commit twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/git_daemon.rs"]
mod git_daemon;

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{get_json, git, git_output, proto, run_command, text, wait_for};
use proto::computer::{Computer, Local, WorkspaceSpec};
use proto::gitops::Identity;
use proto::gitops::delivery::{DeliveryError, Git};
use tokio_util::sync::CancellationToken;

const COMPUTER: &str = "---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: here}\nspec: {local: {}, capacity: 4}\n";

/// A company in `dir/company` with products `products` (bare repositories `dir/<p>.git`, or
/// the URLs given), the CEO holding `tools`, and `extra` documents (goals).
fn company(dir: &Path, products: &[(&str, Option<String>)], tools: &str, extra: &str) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    let mut yaml = format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: small}}\nspec:\n  mission: Test.\n  ceo: ceo\n  writeback: {{author: {{name: proto-bot, email: bot@example.com}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, description: Runs it., prompt: Run it., tools: [{tools}]}}\n{COMPUTER}"
    );
    for (name, url) in products {
        if url.is_none() {
            git(
                dir,
                &["init", "-q", "--bare", "-b", "main", &format!("{name}.git")],
            );
        }
        let url = url.clone().unwrap_or_else(|| format!("../{name}.git"));
        yaml.push_str(&format!("---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: {name}}}\nspec: {{description: A product., lead: ceo, repo: {{url: '{url}', branch: main}}}}\n"));
    }
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    std::fs::write(company.join("goals.yaml"), extra).unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    company
}

/// A goal on `product` met by `steps` (YAML list items, indented by four spaces) and checked
/// by `check`.
fn goal(name: &str, product: &str, check: &str, steps: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: {product}\n  owner: ceo\n  description: {name}.\n  check: {check}\n  playbook:\n{steps}"
    )
}

fn run_once(home: &Path, company: &Path, state: &Path) -> Output {
    run_command(home, company, state).output().unwrap()
}

fn goals(home: &Path, state: &Path) -> Vec<serde_json::Value> {
    get_json(home, state, "goals").as_array().unwrap().clone()
}

fn goal_status(home: &Path, state: &Path, name: &str) -> serde_json::Value {
    goals(home, state)
        .into_iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no goal {name}"))
}

/// Every file of `branch` in `repo` with its content, for comparing what two runs delivered.
fn delivered(repo: &Path, branch: &str) -> Vec<(String, String)> {
    let files = git(repo, &["ls-tree", "-r", "--name-only", branch]);
    files
        .lines()
        .map(|f| {
            (
                f.to_string(),
                git(repo, &["show", &format!("{branch}:{f}")]),
            )
        })
        .collect()
}

/// The subjects of the commits on `main` of `repo`.
fn subjects(repo: &Path) -> Vec<String> {
    git(repo, &["log", "--format=%s", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn kill9(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// A file named `name` anywhere under `dir` (a marker a step or hook touched).
fn touched(dir: &Path, name: &str) -> bool {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == name) {
                return true;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            }
        }
    }
    false
}

/// Workers that each commit a file of their own in their own clone and deliver it the way the
/// worker does (prepare, push, and on a lost race prepare again).
async fn race(url: &str, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bot = Identity {
        name: "proto-bot".into(),
        email: "bot@example.com".into(),
    };
    let mut handles = Vec::new();
    for n in 0..workers {
        let computer = Arc::new(Local::new("here", dir.path().join("work")));
        let spec = WorkspaceSpec {
            repo: url.to_string(),
            branch: "main".into(),
            task: format!("worker-{n}"),
        };
        let bot = bot.clone();
        handles.push(tokio::spawn(async move {
            let workspace = computer.workspace(&spec).await.unwrap();
            let cancel = CancellationToken::new();
            let git = Git {
                computer: computer.as_ref(),
                workspace: &workspace,
                cancel: &cancel,
            };
            computer
                .write(
                    &workspace,
                    &format!("w{n}.txt"),
                    format!("{n}\n").as_bytes(),
                )
                .await
                .unwrap();
            let author = Identity::agent("ceo", &bot);
            git.commit_all(&format!("worker {n}"), &author, &bot)
                .await
                .unwrap()
                .unwrap();
            let mut lost = 0;
            loop {
                let prepared = git.prepare("main", &bot, lost > 0).await.unwrap();
                match git.push("main", prepared.tip.as_deref()).await {
                    Ok(_) => return lost,
                    Err(DeliveryError::Stale { .. }) => lost += 1,
                    Err(e) => panic!("worker {n}: {e}"),
                }
                assert!(lost < 50, "worker {n} never won the race");
            }
        }));
    }
    let mut races = 0;
    for handle in handles {
        races += handle.await.unwrap();
    }
    println!("{url}: {races} pushes lost a race and were rebuilt");
}

fn seed(repo: &Path) {
    let name = format!("seed-{}", repo.file_name().unwrap().to_string_lossy());
    let seed = repo.parent().unwrap().join(&name);
    git(repo.parent().unwrap(), &["init", "-q", "-b", "main", &name]);
    cli::write(&seed, "README.md", "seed\n");
    cli::commit_all(&seed, "Seed");
    git(&seed, &["push", "-q", repo.to_str().unwrap(), "main"]);
}

#[test]
fn eight_workers_pushing_at_once_lose_no_commit_on_a_path_or_a_git_daemon() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = tempfile::tempdir().unwrap();
    git(
        served.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    git(
        served.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    let local = served.path().join("app.git");
    let remote = served.path().join("remote.git");
    seed(&local);
    seed(&remote);
    let daemon = git_daemon::Daemon::start(served.path());
    rt.block_on(race(local.to_str().unwrap(), 8));
    rt.block_on(race(&daemon.url("remote.git"), 8));
    for repo in [&local, &remote] {
        let files = git(repo, &["ls-tree", "--name-only", "main"]);
        for n in 0..8 {
            assert!(files.contains(&format!("w{n}.txt")), "{files}");
        }
        let log = subjects(repo);
        assert_eq!(log.len(), 9, "{log:?}");
        for n in 0..8 {
            assert_eq!(
                log.iter().filter(|s| **s == format!("worker {n}")).count(),
                1
            );
        }
        git(repo, &["fsck", "--strict"]);
    }
}

#[test]
fn sixteen_goals_at_capacity_eight_are_all_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let goals_yaml: String = (0..16)
        .map(|n| {
            goal(
                &format!("g{n}"),
                "app",
                &format!("{{file: {{path: g{n}.txt}}}}"),
                &format!(
                    "    - write: {{path: g{n}.txt, content: \"{n}\\n\"}}\n    - commit: {{message: \"goal {n}\"}}\n"
                ),
            )
        })
        .collect();
    let company = company(tmp.path(), &[("app", None)], "Read, Write", &goals_yaml);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("capacity: 4", "capacity: 8"),
    )
    .unwrap();
    git(&company, &["commit", "-q", "-am", "More capacity"]);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let app = tmp.path().join("app.git");
    let log = subjects(&app);
    assert_eq!(log.len(), 16, "{log:?}");
    let files = git(&app, &["ls-tree", "--name-only", "main"]);
    assert_eq!(files.lines().count(), 16, "{files}");
    for g in goals(tmp.path(), &state) {
        assert_eq!(g["reason"], "CheckPassed", "{g:#}");
    }
}

/// `--state-dir state`, relative to where proto runs: the workspaces made after the first
/// (clones that borrow the mirror's objects) must still find them.
#[test]
fn a_relative_state_dir_delivers_every_goal() {
    let tmp = tempfile::tempdir().unwrap();
    let goals_yaml: String = (0..3)
        .map(|n| {
            goal(
                &format!("g{n}"),
                "app",
                &format!("{{file: {{path: g{n}.txt}}}}"),
                &format!(
                    "    - write: {{path: g{n}.txt, content: \"{n}\\n\"}}\n    - commit: {{message: \"goal {n}\"}}\n"
                ),
            )
        })
        .collect();
    let company = company(tmp.path(), &[("app", None)], "Read, Write", &goals_yaml);
    let out = run_command(tmp.path(), Path::new("company"), Path::new("state"))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(subjects(&tmp.path().join("app.git")).len(), 3);
    for g in goals(tmp.path(), &tmp.path().join("state")) {
        assert_eq!(g["reason"], "CheckPassed", "{g:#}");
    }
    drop(company);
}

#[test]
fn a_refused_push_leaves_the_goal_not_ready_with_the_servers_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let goals_yaml = goal(
        "refused",
        "app",
        "{file: {path: a.txt}}",
        "    - write: {path: a.txt, content: \"a\\n\"}\n",
    ) + "  budget: {attempts: 2}\n";
    let company = company(tmp.path(), &[("app", None)], "Read, Write", &goals_yaml);
    let hook = tmp.path().join("app.git/hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'main is frozen for the release' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let status = goal_status(tmp.path(), &state, "refused");
    assert_eq!(status["ready"], "False", "{status:#}");
    assert_eq!(status["reason"], "DeliveryFailed", "{status:#}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("pre-receive hook declined") && message.contains("main is frozen"),
        "{message}"
    );
    let describe = proto(
        tmp.path(),
        &[
            "describe",
            "goal",
            "refused",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(
        text(&describe).contains("DeliveryFailed"),
        "{}",
        text(&describe)
    );
    let recorded = git(&company, &["show", "main:.proto/status.yaml"]);
    assert!(recorded.contains("DeliveryFailed"), "{recorded}");
    assert!(!recorded.contains("CheckPassed"), "{recorded}");
    // Nothing reached the product.
    assert!(
        git_output(
            &tmp.path().join("app.git"),
            &["rev-parse", "--verify", "main"]
        )
        .stdout
        .is_empty()
    );
}

#[test]
fn a_branch_left_locked_on_the_server_is_reported_as_the_lock_not_as_a_lost_race() {
    // A git process on the server died holding the branch's lock: no push can land until a
    // person removes it, and the goal must say which file, not that others won a race.
    let tmp = tempfile::tempdir().unwrap();
    let goals_yaml = goal(
        "locked",
        "app",
        "{file: {path: a.txt}}",
        "    - write: {path: a.txt, content: \"a\\n\"}\n",
    ) + "  budget: {attempts: 1}\n";
    let company = company(tmp.path(), &[("app", None)], "Read, Write", &goals_yaml);
    seed(&tmp.path().join("app.git"));
    let lock = tmp.path().join("app.git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let status = goal_status(tmp.path(), &state, "locked");
    assert_eq!(status["reason"], "DeliveryFailed", "{status:#}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("could not update main") && message.contains("main.lock"),
        "{message}"
    );
    assert!(!message.contains("lost the race"), "{message}");
    assert!(lock.exists(), "the server's lock is the person's to remove");
}

#[test]
fn git_configuration_planted_by_the_work_is_not_obeyed_by_the_controllers_git() {
    // A sandboxed step may write the workspace's .git: a filter driver, an ssh command and
    // another origin, each of which the controller's own (unsandboxed) git would run or use.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let evil = home.join("evil.git");
    git(home, &["init", "-q", "--bare", "evil.git"]);
    let plant = format!(
        "    - run: \"printf '[filter \\\"x\\\"]\\\\n\\\\tclean = touch {m}-filter\\\\n[core]\\\\n\\\\tsshCommand = touch {m}-ssh\\\\n' >> .git/config && echo '* filter=x' > .gitattributes && git remote set-url origin {evil}\"\n",
        m = home.join("pwned").display(),
        evil = evil.display()
    );
    let steps = format!(
        "{plant}    - write: {{path: done.txt, content: \"done\\n\"}}\n    - commit: {{message: \"Work\"}}\n"
    );
    let goals_yaml = goal("planted", "app", "{file: {path: done.txt}}", &steps);
    let company = company(home, &[("app", None)], "Read, Write, Bash", &goals_yaml);
    let state = home.join("state");
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        goal_status(home, &state, "planted")["reason"],
        "CheckPassed"
    );
    let config = std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect::<Vec<_>>();
    assert!(config.is_empty(), "the planted commands ran: {config:?}");
    assert_eq!(
        git(&home.join("app.git"), &["show", "main:done.txt"]),
        "done"
    );
    assert!(
        git_output(&evil, &["rev-parse", "--verify", "-q", "main"])
            .stdout
            .is_empty(),
        "the work went to the planted origin"
    );
}

#[test]
fn an_owner_without_git_has_its_playbook_delivered_as_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let goals_yaml = goal(
        "noted",
        "app",
        "{file: {path: notes.txt, matches: hello}}",
        "    - write: {path: notes.txt, content: \"hello\\n\"}\n    - commit: {message: \"Take notes\"}\n",
    );
    let company = company(tmp.path(), &[("app", None)], "Read, Write", &goals_yaml);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        goal_status(tmp.path(), &state, "noted")["reason"],
        "CheckPassed"
    );
    let app = tmp.path().join("app.git");
    assert_eq!(
        git(&app, &["log", "-1", "--format=%an <%ae>|%cn|%s", "main"]),
        "ceo <ceo@agents.example.com>|proto-bot|Take notes"
    );
    // The delivery was audited as the agent's.
    let audit = git(&company, &["log", "-p", "main", "--", ".proto/audit"]);
    assert!(audit.contains("\"action\":\"push\""), "{audit}");
}

/// The same company twice: once killed with SIGKILL when `marker` appears somewhere under the
/// state directory, then run to the end; once uninterrupted. Both must deliver the same.
fn killed_and_resumed_delivers_what_an_uninterrupted_run_does(
    goals_yaml: &str,
    settings: Option<&str>,
    marker: &str,
    before_restart: impl FnOnce(&Path),
) {
    let runs: Vec<(tempfile::TempDir, bool)> = vec![
        (tempfile::tempdir().unwrap(), true),
        (tempfile::tempdir().unwrap(), false),
    ];
    let mut trees = Vec::new();
    let mut before_restart = Some(before_restart);
    for (tmp, kill) in &runs {
        let company = company(
            tmp.path(),
            &[("app", None)],
            "Read, Write, Bash",
            goals_yaml,
        );
        if let Some(settings) = settings {
            cli::write(&company, ".claude/settings.json", settings);
            cli::commit_all(&company, "Hooks");
        }
        // The commands that hold the killed run touch `marker` in HOME, outside their
        // workspace: test scaffolding, not agent work, so the computer runs them unconfined.
        let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
        cli::write(
            &company,
            "company.yaml",
            &yaml.replace("capacity: 4}", "capacity: 4, sandbox: off}"),
        );
        cli::commit_all(&company, "No sandbox");
        let state = tmp.path().join("state");
        if !*kill {
            // The hooks and commands that hold the killed run at its boundary do so once:
            // the uninterrupted run finds them already passed.
            std::fs::write(tmp.path().join(marker), "").unwrap();
        }
        if *kill {
            let mut child = run_command(tmp.path(), &company, &state).spawn().unwrap();
            wait_for(marker, Duration::from_secs(60), || {
                touched(tmp.path(), marker)
            });
            kill9(&mut child);
            if let Some(f) = before_restart.take() {
                f(&state);
            }
        }
        let out = run_once(tmp.path(), &company, &state);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        for g in goals(tmp.path(), &state) {
            assert_eq!(g["reason"], "CheckPassed", "{g:#}");
        }
        let app = tmp.path().join("app.git");
        let log = subjects(&app);
        let mut unique = log.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), log.len(), "a commit delivered twice: {log:?}");
        git(&app, &["fsck", "--strict"]);
        trees.push((delivered(&app, "main"), log.len()));
    }
    assert_eq!(trees[0], trees[1], "killed run vs uninterrupted run");
}

const APPEND_AND_COMMIT: &str = "    - write: {path: notes.txt, content: \"notes\\n\"}\n    - run: \"echo once >> log.txt\"\n    - write: {path: done.txt, content: \"done\\n\"}\n    - commit: {message: \"Do the work\"}\n";

#[test]
fn killed_after_the_last_step_before_the_commit() {
    // A PreToolUse hook on the commit marks the moment and holds it there.
    let settings = r#"{"hooks": {"PreToolUse": [{"matcher": "Git", "hooks": [{"type": "command", "command": "case \"$(cat)\" in *commit*) [ -e \"$HOME/at-commit\" ] || { touch \"$HOME/at-commit\"; sleep 30; };; esac; exit 0"}]}]}}"#;
    killed_and_resumed_delivers_what_an_uninterrupted_run_does(
        &goal("work", "app", "{file: {path: done.txt}}", APPEND_AND_COMMIT),
        Some(settings),
        "at-commit",
        |_| {},
    );
}

#[test]
fn killed_before_the_push() {
    let settings = r#"{"hooks": {"PreToolUse": [{"matcher": "Git", "hooks": [{"type": "command", "command": "case \"$(cat)\" in *push*) [ -e \"$HOME/at-push\" ] || { touch \"$HOME/at-push\"; sleep 30; };; esac; exit 0"}]}]}}"#;
    killed_and_resumed_delivers_what_an_uninterrupted_run_does(
        &goal("work", "app", "{file: {path: done.txt}}", APPEND_AND_COMMIT),
        Some(settings),
        "at-push",
        |_| {},
    );
}

/// A controller killed while the product's server runs `hook` (whose body, given the
/// marker file it touches the first time, holds the push there) delivers, once restarted,
/// exactly what an uninterrupted run does, and leaves no lock in the product's repository.
fn killed_inside_the_servers_push(hook: &str, body: impl Fn(&Path) -> String) {
    let goals_yaml = goal("work", "app", "{file: {path: done.txt}}", APPEND_AND_COMMIT);
    let runs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut results = Vec::new();
    for (i, tmp) in runs.iter().enumerate() {
        let company = company(
            tmp.path(),
            &[("app", None)],
            "Read, Write, Bash",
            &goals_yaml,
        );
        let hook = tmp.path().join("app.git/hooks").join(hook);
        let marker = tmp.path().join("in-push");
        std::fs::write(&hook, body(&marker)).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let state = tmp.path().join("state");
        if i == 0 {
            let mut child = run_command(tmp.path(), &company, &state).spawn().unwrap();
            wait_for("the push", Duration::from_secs(60), || marker.exists());
            kill9(&mut child);
        } else {
            std::fs::write(&marker, "").unwrap();
        }
        let out = run_once(tmp.path(), &company, &state);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(
            goal_status(tmp.path(), &state, "work")["reason"],
            "CheckPassed"
        );
        let app = tmp.path().join("app.git");
        assert_eq!(subjects(&app), ["Do the work"]);
        assert!(
            !app.join("refs/heads/main.lock").exists(),
            "the product's branch is left locked"
        );
        results.push(delivered(&app, "main"));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn killed_in_the_middle_of_a_push() {
    // The server's hook runs inside the push: the kill lands while the push is in flight.
    // Slow only the first time, so the restarted run's push goes through.
    killed_inside_the_servers_push("pre-receive", |marker| {
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ ! -e '{m}' ]; then touch '{m}'; sleep 30; fi\nexit 0\n",
            m = marker.display()
        )
    });
}

#[test]
fn killed_while_the_server_holds_the_branchs_lock() {
    // `reference-transaction prepared` runs with `refs/heads/main.lock` taken: the restarted
    // controller must stop the push it left running so that git removes its lock (a
    // SIGKILL would leave it, and every later push would be refused).
    killed_inside_the_servers_push("reference-transaction", |marker| {
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ \"$1\" = prepared ] && [ ! -e '{m}' ]; then touch '{m}'; sleep 30; fi\nexit 0\n",
            m = marker.display()
        )
    });
}

#[test]
fn killed_in_a_command_stops_it_and_never_repeats_a_step_on_the_product() {
    let steps = "    - run: \"echo once >> log.txt\"\n    - run: \"[ -e $HOME/in-command ] || { touch $HOME/in-command; sleep 41.5; echo late >> late.txt; }\"\n    - write: {path: done.txt, content: \"done\\n\"}\n";
    killed_and_resumed_delivers_what_an_uninterrupted_run_does(
        &goal("work", "app", "{file: {path: done.txt}}", steps),
        None,
        "in-command",
        |_| {},
    );
    // The killed controller's command was stopped by the next one, not left sleeping.
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains("sleep\u{0}41.5"));
    assert!(!left, "the killed run's command is still running");
}

#[test]
fn a_workspace_left_mid_rebase_and_locked_is_replaced_not_retried() {
    let steps = "    - write: {path: a.txt, content: \"a\\n\"}\n    - run: \"[ -e $HOME/in-command ] || { touch $HOME/in-command; sleep 30; }\"\n    - write: {path: done.txt, content: \"done\\n\"}\n";
    killed_and_resumed_delivers_what_an_uninterrupted_run_does(
        &goal("work", "app", "{file: {path: done.txt}}", steps),
        None,
        "in-command",
        |state| {
            // What a kill in the middle of a rebase leaves: a lock and a rebase in progress.
            let workspaces = std::fs::read_dir(state.join("work")).unwrap().flatten();
            // The product mirrors live beside the workspaces; they are not one.
            for entry in workspaces.filter(|e| e.path().join(".git").is_dir()) {
                let dot_git = entry.path().join(".git");
                std::fs::write(dot_git.join("index.lock"), "").unwrap();
                std::fs::create_dir_all(dot_git.join("rebase-merge")).unwrap();
                std::fs::write(dot_git.join("rebase-merge/head-name"), "refs/heads/main\n")
                    .unwrap();
            }
        },
    );
}

/// A small xorshift generator: the chaos test's kill times, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn chaos_thirty_slow_goals_killed_twelve_times_end_as_an_uninterrupted_run() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("chaos seed {seed}");
    let mut rng = Rng(seed);
    let goals_yaml: String = (0..30)
        .map(|n| {
            let product = if n % 2 == 0 { "app" } else { "docs" };
            goal(
                &format!("g{n}"),
                product,
                &format!("{{file: {{path: g{n}/done.txt}}}}"),
                &format!(
                    "    - run: \"mkdir -p g{n} && echo once >> g{n}/log.txt && sleep 0.{}\"\n    - write: {{path: g{n}/done.txt, content: \"{n}\\n\"}}\n    - commit: {{message: \"goal {n}\"}}\n",
                    3 + n % 5
                ),
            )
        })
        .collect();
    let products = [("app", None), ("docs", None)];
    let calm = tempfile::tempdir().unwrap();
    let calm_company = company(calm.path(), &products, "Read, Write, Bash", &goals_yaml);
    let out = run_once(calm.path(), &calm_company, &calm.path().join("state"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let tmp = tempfile::tempdir().unwrap();
    let company = company(tmp.path(), &products, "Read, Write, Bash", &goals_yaml);
    let state = tmp.path().join("state");
    let started = Instant::now();
    for kill in 0..12 {
        let mut child = run_command(tmp.path(), &company, &state).spawn().unwrap();
        let after = Duration::from_millis(200 + rng.next() % 1500);
        let deadline = Instant::now() + after;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            kill9(&mut child);
            println!("kill {kill} after {after:?}");
        }
    }
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    println!("chaos run took {:?}", started.elapsed());
    for g in goals(tmp.path(), &state) {
        assert_eq!(g["reason"], "CheckPassed", "{g:#}");
    }
    let tasks = get_json(tmp.path(), &state, "tasks");
    for t in tasks.as_array().unwrap() {
        assert!(
            !matches!(t["state"].as_str(), Some("queued" | "running")),
            "{t:#}"
        );
    }
    for product in ["app", "docs"] {
        let repo = tmp.path().join(format!("{product}.git"));
        let calm_repo = calm.path().join(format!("{product}.git"));
        assert_eq!(delivered(&repo, "main"), delivered(&calm_repo, "main"));
        let log = subjects(&repo);
        assert_eq!(log.len(), 15, "one commit per goal: {log:?}");
        git(&repo, &["fsck", "--strict"]);
    }
    // Every record commit reached the company's checkout too: a kill between moving its
    // branch and writing its files is finished by the next run, not left as a dirty tree.
    assert_eq!(git(&company, &["status", "--porcelain"]), "");
}
