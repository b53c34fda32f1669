//! Approval gates as git, against real repositories and the real binary: a gated goal's
//! work lands on the product's `proto/<goal>` only, with a request branch in the company
//! repository; an approver's merge publishes exactly the reviewed commit, once; a merge by
//! the controller's identity or an agent's is refused (and audited) and the request keeps
//! waiting; a denial and a timeout end the attempt with their reason; a controller killed
//! while a request waits goes on waiting, and publishes once after the approval.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/git_daemon.rs"]
mod git_daemon;
#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cli::{get_json, git, git_output, proto, run_command, text, wait_for};

/// A company in `dir/company` with product `app` (the bare `dir/app.git`, seeded), whose
/// goal `deploy` writes `deploy.txt` and is gated by `gate` (a goal `gate:` line, or empty)
/// under `approvals` (the Company's `approvals:` block, indented by four).
fn company(dir: &Path, approvals: &str, gate: &str, attempts: u32) -> PathBuf {
    let playbook = "  playbook:\n    - run: \"echo built > build.txt\"\n    - write: {path: deploy.txt, content: \"deployed\\n\"}\n    - commit: {message: \"Deploy\"}\n";
    company_with(dir, approvals, gate, attempts, "", playbook)
}

/// [`company`] with `models` (the Company's `models:` block) and the goal's `work` (its
/// playbook, or nothing for a model's work).
fn company_with(
    dir: &Path,
    approvals: &str,
    gate: &str,
    attempts: u32,
    models: &str,
    work: &str,
) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let seed = dir.join("seed");
    git(dir, &["init", "-q", "-b", "main", "seed"]);
    cli::write(&seed, "README.md", "app\n");
    cli::commit_all(&seed, "Seed");
    git(
        &seed,
        &["push", "-q", dir.join("app.git").to_str().unwrap(), "main"],
    );
    let yaml = format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: small}}\nspec:\n  mission: Test.\n{models}  ceo: ceo\n  writeback: {{author: {{name: proto-bot, email: bot@example.com}}}}\n  approvals:\n{approvals}\
---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Bash]}}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: 2}}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: A product., lead: ceo, repo: {{url: '../app.git', branch: main}}}}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: deploy}}\nspec:\n  product: app\n  owner: ceo\n  description: Deploy.\n  check: {{file: {{path: deploy.txt}}}}\n{gate}  budget: {{attempts: {attempts}}}\n{work}"
    );
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["config", "user.name", "Ann"]);
    git(&company, &["config", "user.email", "ann@example.com"]);
    cli::commit_all(&company, "Declare the company");
    company
}

const APPROVERS: &str = "    approvers: [ann@example.com]\n";
const GATE: &str = "  gate: production_deploy\n";

fn run_once(home: &Path, company: &Path, state: &Path) -> std::process::Output {
    run_command(home, company, state).output().unwrap()
}

fn approvals(home: &Path, state: &Path) -> Vec<serde_json::Value> {
    get_json(home, state, "approvals")
        .as_array()
        .unwrap()
        .clone()
}

fn goal(home: &Path, state: &Path) -> serde_json::Value {
    get_json(home, state, "goals").as_array().unwrap()[0].clone()
}

/// The commit `branch` of `repo` points at, if the branch exists.
fn tip(repo: &Path, branch: &str) -> Option<String> {
    let out = git_output(
        repo,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `git merge --no-ff` of the request's branch in the company repository, made as `email`.
fn merge_as(company: &Path, id: &str, email: &str) {
    let out = Command::new("git")
        .current_dir(company)
        .args(["merge", "--no-ff", "-q", "-m", "merge it"])
        .arg(format!("proto/approvals/{id}"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "someone")
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", "someone")
        .env("GIT_COMMITTER_EMAIL", email)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The git audit's `approve` records of the company, as JSON text.
fn approvals_audit(home: &Path, company: &Path) -> String {
    let out = proto(
        home,
        &[
            "audit",
            company.to_str().unwrap(),
            "--action",
            "approve",
            "-o",
            "json",
        ],
    );
    text(&out)
}

/// The Company's `models:` block for the mock model server.
fn mock_models(mock: &mock_llm::MockLlm) -> String {
    format!(
        "  models:\n    providers: [{{name: mock, type: anthropic, baseUrl: '{}', apiKeyEnv: PROTO_TEST_KEY}}]\n",
        mock.base_url()
    )
}

/// The one waiting request, after a first run parked the goal on it.
fn parked(home: &Path, company: &Path, state: &Path) -> String {
    let out = run_once(home, company, state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let g = goal(home, state);
    assert_eq!(g["reason"], "WaitingApproval", "{g:#} {}", text(&out));
    let waiting = approvals(home, state);
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting[0]["state"], "pending");
    waiting[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn a_gated_goal_waits_on_its_review_branch_and_an_approvers_merge_publishes_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let company = company(home, APPROVERS, GATE, 3);
    let state = home.join("state");
    let app = home.join("app.git");
    let seeded = tip(&app, "main").unwrap();

    let id = parked(home, &company, &state);
    // The work waits on the product's review branch; the product's branch has not moved.
    assert_eq!(tip(&app, "main").as_deref(), Some(seeded.as_str()));
    let reviewed = tip(&app, "proto/deploy").expect("the review branch");
    assert_eq!(
        git(&app, &["show", &format!("{reviewed}:deploy.txt")]),
        "deployed"
    );
    // The request is a branch of the company repository with the diff it would publish.
    let file = git(
        &company,
        &["show", &format!("proto/approvals/{id}:approvals/{id}.yaml")],
    );
    assert!(file.contains("status: pending"), "{file}");
    assert!(file.contains("production_deploy"), "{file}");
    assert!(file.contains("+deployed"), "the diff: {file}");
    assert!(file.contains(&reviewed), "the reviewed commit: {file}");
    let described = proto(
        home,
        &[
            "describe",
            "approval",
            &id,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(
        text(&described).contains("+deployed"),
        "{}",
        text(&described)
    );

    // A second run while nothing was answered changes nothing.
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal(home, &state)["reason"], "WaitingApproval");
    assert_eq!(tip(&app, "main").as_deref(), Some(seeded.as_str()));

    // Ann approves from the command line: a merge commit she commits.
    let out = proto(home, &["approve", &id, company.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let merge = git(&company, &["log", "-1", "--format=%ce %P", "main"]);
    assert!(merge.starts_with("ann@example.com "), "{merge}");
    assert_eq!(merge.split(' ').count(), 3, "a merge commit: {merge}");

    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let g = goal(home, &state);
    assert_eq!(g["reason"], "CheckPassed", "{g:#} {}", text(&out));
    // Exactly the reviewed commit was published (nothing was done again), once.
    assert_eq!(tip(&app, "main"), Some(reviewed.clone()));
    let log = git(&app, &["log", "--format=%s", "main"]);
    assert_eq!(log.lines().collect::<Vec<_>>(), ["Deploy", "Seed"]);
    let answered = approvals(home, &state);
    assert_eq!(answered[0]["state"], "approved");
    assert_eq!(answered[0]["decidedBy"], "ann@example.com");
    // The answer is in the git audit.
    let audit = approvals_audit(home, &company);
    assert!(audit.contains("ann@example.com"), "{}", audit);
}

#[test]
fn a_merge_by_the_controller_or_an_agent_is_refused_and_a_denial_ends_the_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let company = company(home, APPROVERS, GATE, 1);
    let state = home.join("state");
    let app = home.join("app.git");
    let seeded = tip(&app, "main").unwrap();
    let id = parked(home, &company, &state);

    // The controller's own identity merges the request: refused, still waiting.
    merge_as(&company, &id, "bot@example.com");
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal(home, &state)["reason"], "WaitingApproval");
    assert_eq!(approvals(home, &state)[0]["state"], "pending");
    assert_eq!(tip(&app, "main").as_deref(), Some(seeded.as_str()));
    let audit = approvals_audit(home, &company);
    assert!(
        audit.contains("controller's own identity"),
        "the refusal is audited: {}",
        audit
    );

    // Someone who is not an approver cannot answer from the command line either.
    git(&company, &["config", "user.email", "mallory@example.com"]);
    let out = proto(
        home,
        &["deny", &id, company.to_str().unwrap(), "--reason", "x"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("not an approver"), "{}", text(&out));

    git(&company, &["config", "user.email", "ann@example.com"]);
    let out = proto(
        home,
        &[
            "deny",
            &id,
            company.to_str().unwrap(),
            "--reason",
            "not on a Friday",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let g = goal(home, &state);
    let message = g["message"].as_str().unwrap();
    assert!(message.contains("not on a Friday"), "{g:#}");
    assert!(message.contains("ann@example.com"), "{g:#}");
    assert_eq!(approvals(home, &state)[0]["state"], "denied");
    assert_eq!(tip(&app, "main").as_deref(), Some(seeded.as_str()));
    // The denial's reason is a lesson, committed with the record.
    let lessons = company.join(".proto/knowledge/lesson_learned");
    let denied: Vec<String> = std::fs::read_dir(&lessons)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|t| t.contains("was denied"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert!(denied[0].contains("not on a Friday"), "{}", denied[0]);
}

#[test]
fn an_agent_identity_cannot_approve_and_an_unanswered_request_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let approvals_yaml = format!("{APPROVERS}    timeout: 2s\n");
    let company = company(home, &approvals_yaml, GATE, 1);
    let state = home.join("state");
    let id = parked(home, &company, &state);
    merge_as(&company, &id, "ceo@agents.example.com");
    std::thread::sleep(Duration::from_millis(2100));
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let answered = approvals(home, &state);
    assert_eq!(answered[0]["state"], "denied", "{answered:#?}");
    assert!(
        answered[0]["answer"]
            .as_str()
            .unwrap()
            .contains("no answer by"),
        "{answered:#?}"
    );
    let audit = approvals_audit(home, &company);
    assert!(audit.contains("an agent never approves"), "{}", audit);
}

#[test]
fn a_push_pattern_gates_publishing_and_a_deleted_request_branch_is_a_denial() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let approvals_yaml = format!("{APPROVERS}    gated: [\"push:main\"]\n");
    let company = company(home, &approvals_yaml, "", 1);
    let state = home.join("state");
    let id = parked(home, &company, &state);
    assert_eq!(approvals(home, &state)[0]["action"], "push:main");
    assert!(tip(&home.join("app.git"), "proto/deploy").is_some());
    git(
        &company,
        &["branch", "-D", &format!("proto/approvals/{id}")],
    );
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let g = goal(home, &state);
    assert!(
        g["message"].as_str().unwrap().contains("was deleted"),
        "{g:#}"
    );
}

#[test]
fn a_controller_killed_while_a_request_waits_goes_on_waiting_and_publishes_once_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let company = company(home, APPROVERS, GATE, 3);
    let state = home.join("state");
    let app = home.join("app.git");
    // A watching controller, killed once the request is in git.
    let mut child = Command::new(cli::bin())
        .args([
            "run",
            company.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--poll",
            "1s",
        ])
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the request branch", Duration::from_secs(60), || {
        git(&company, &["branch", "--list", "proto/approvals/*"]).contains("proto/approvals/")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let reviewed = tip(&app, "proto/deploy").expect("the review branch");
    let id = parked(home, &company, &state);
    let out = proto(home, &["approve", &id, company.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal(home, &state)["reason"], "CheckPassed");
    assert_eq!(tip(&app, "main"), Some(reviewed));
    let log = git(&app, &["log", "--format=%s", "main"]);
    assert_eq!(log.lines().collect::<Vec<_>>(), ["Deploy", "Seed"]);
}

#[test]
fn a_models_gated_call_resumes_from_the_journal_once_approved_without_asking_the_model_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use(
            "1",
            "Write",
            serde_json::json!({"file_path": "deploy.txt", "content": "deployed\n"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("m2", "Deployed.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let models = mock_models(&mock);
    let approvals_yaml = format!("{APPROVERS}    gated: [Write]\n");
    let company = company_with(home, &approvals_yaml, "", 1, &models, "");
    let state = home.join("state");
    let id = parked(home, &company, &state);
    let asked = approvals(home, &state);
    assert_eq!(asked[0]["action"], "Write");
    assert_eq!(asked[0]["input"]["file_path"], "deploy.txt", "{asked:#?}");
    assert_eq!(mock.requests().len(), 1);
    let out = proto(home, &["approve", &id, company.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        goal(home, &state)["reason"],
        "CheckPassed",
        "{}",
        text(&out)
    );
    // The first turn came from the journal: only the turn after the approved call was asked.
    assert_eq!(mock.requests().len(), 2, "the model was asked again");
    let app = home.join("app.git");
    assert_eq!(git(&app, &["show", "main:deploy.txt"]), "deployed");
}

#[test]
fn with_signed_merges_required_only_a_merge_signed_by_an_allowed_key_approves() {
    let approvals_yaml = format!("{APPROVERS}    requireSignedMerges: true\n");
    for signed in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let company = company(home, &approvals_yaml, GATE, 1);
        let state = home.join("state");
        let id = parked(home, &company, &state);
        // Ann's SSH signing key, trusted by the repository's allowed signers file.
        let key = home.join("ann_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ann", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let public = std::fs::read_to_string(home.join("ann_key.pub")).unwrap();
        let signers = home.join("allowed_signers");
        std::fs::write(&signers, format!("ann@example.com {public}")).unwrap();
        git(&company, &["config", "gpg.format", "ssh"]);
        git(
            &company,
            &[
                "config",
                "gpg.ssh.allowedSignersFile",
                signers.to_str().unwrap(),
            ],
        );
        if signed {
            git(
                &company,
                &["config", "user.signingkey", key.to_str().unwrap()],
            );
            git(&company, &["config", "commit.gpgsign", "true"]);
        }
        let out = proto(home, &["approve", &id, company.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let out = run_once(home, &company, &state);
        let answered = approvals(home, &state);
        if signed {
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            assert_eq!(answered[0]["state"], "approved", "{answered:#?}");
            assert_eq!(goal(home, &state)["reason"], "CheckPassed");
        } else {
            assert_eq!(answered[0]["state"], "pending", "{answered:#?}");
            assert_eq!(goal(home, &state)["reason"], "WaitingApproval");
            let audit = approvals_audit(home, &company);
            assert!(audit.contains("not signed by a trusted key"), "{}", audit);
        }
    }
}

#[test]
fn a_delegated_agents_gated_call_parks_the_task_and_resumes_it_once_approved() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use(
            "1",
            "Delegate",
            serde_json::json!({"agent": "writer", "description": "deploy", "prompt": "Write deploy.txt saying deployed."}),
        ),
        mock_llm::tool_use(
            "2",
            "Write",
            serde_json::json!({"file_path": "deploy.txt", "content": "deployed\n"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("m3", "Wrote it.", "end_turn")),
        mock_llm::Reply::sse(mock_llm::text_stream("m4", "Done.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let models = mock_models(&mock);
    let approvals_yaml = format!("{APPROVERS}    gated: [Write]\n");
    let company = company_with(home, &approvals_yaml, "", 1, &models, "");
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("tools: [Read, Write, Bash]", "tools: [Read, Delegate]")
            + "---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, model: sonnet, description: Writes files., prompt: Write well., tools: [Write]}\n",
    )
    .unwrap();
    cli::commit_all(&company, "A team of two");
    let state = home.join("state");
    let id = parked(home, &company, &state);
    let asked = approvals(home, &state);
    assert_eq!(asked[0]["agent"], "writer", "{asked:#?}");
    assert_eq!(mock.requests().len(), 2);
    let out = proto(home, &["approve", &id, company.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_once(home, &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        goal(home, &state)["reason"],
        "CheckPassed",
        "{}",
        text(&out)
    );
    // Both conversations resumed from their journals: only the turns after the call.
    assert_eq!(mock.requests().len(), 4, "a recorded turn was asked again");
    assert_eq!(
        git(&home.join("app.git"), &["show", "main:deploy.txt"]),
        "deployed"
    );
}

#[test]
fn a_remote_company_gets_its_request_pushed_and_an_approval_pushed_from_a_clone_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let home = tmp.path();
    company(&served, APPROVERS, GATE, 3);
    git(
        &served,
        &["clone", "-q", "--bare", "company", "company.git"],
    );
    let daemon = git_daemon::Daemon::start(&served);
    let url = daemon.url("company.git");
    let state = home.join("state");
    let once = |home: &Path| {
        proto(
            home,
            &[
                "run",
                &url,
                "--once",
                "--state-dir",
                state.to_str().unwrap(),
            ],
        )
    };
    let out = once(home);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let waiting = approvals(home, &state);
    let id = waiting[0]["id"].as_str().unwrap().to_string();
    // The request was pushed to the company's server.
    let branch = format!("proto/approvals/{id}");
    assert!(tip(&served.join("company.git"), &branch).is_some());
    // Ann approves in her clone and pushes the merge.
    let clone = home.join("ann");
    git(home, &["clone", "-q", &url, "ann"]);
    git(&clone, &["config", "user.name", "Ann"]);
    git(&clone, &["config", "user.email", "ann@example.com"]);
    let approved = proto(home, &["approve", &id, clone.to_str().unwrap()]);
    assert!(approved.status.success(), "{}", text(&approved));
    git(&clone, &["push", "-q", "origin", "main"]);
    let out = once(home);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        goal(home, &state)["reason"],
        "CheckPassed",
        "{}",
        text(&out)
    );
    assert_eq!(approvals(home, &state)[0]["decidedBy"], "ann@example.com");
    let app = served.join("app.git");
    assert_eq!(git(&app, &["show", "main:deploy.txt"]), "deployed");
}
