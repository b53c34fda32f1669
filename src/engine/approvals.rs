//! The engine's part of approvals: it publishes each new request to the company repository
//! (a branch and a file; see [`crate::gitops::approvals`]) and reads the answers back from
//! git, at most once per poll interval while requests wait. An answer goes to the store,
//! which moves the task; a request past `approvals.timeout` is denied.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, Writeback, writeback_author};
use crate::gitops::approvals::{self, Answer, Policy};
use crate::store::Approval;

impl Engine {
    /// Publishes new requests and takes in answers.
    pub(super) fn approvals(&mut self, now: DateTime<Utc>) -> Result<(), EngineError> {
        let due = self
            .approvals_checked
            .is_none_or(|at| at.elapsed() >= self.options.poll);
        if !due && !self.fetch_due {
            return Ok(());
        }
        let pending = self.store.pending_approvals()?;
        if pending.is_empty() {
            return Ok(());
        }
        self.approvals_checked = Some(Instant::now());
        let Some(company) = self.company.clone() else {
            tracing::warn!("approvals wait: there is no company repository to ask them in");
            return Ok(());
        };
        for approval in pending.iter().filter(|a| a.published.is_none()) {
            self.publish_request(approval)?;
        }
        if let Err(e) = company.fetch_approvals() {
            tracing::warn!(error = %e, "cannot fetch the approval branches; answers are read at the next poll");
            return Ok(());
        }
        let policy = self.approval_policy();
        for approval in pending.iter().filter(|a| a.published.is_some()) {
            self.take_answer(approval, &policy, now)?;
        }
        Ok(())
    }

    /// Commits the request on its own branch of the company repository. A failure is logged
    /// and tried again at the next check: the task waits either way.
    fn publish_request(&mut self, approval: &Approval) -> Result<(), EngineError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        let product = applied
            .spec
            .goal(&approval.goal)
            .map(|g| g.spec.product.clone())
            .unwrap_or_default();
        let push = applied
            .spec
            .company()
            .and_then(|c| c.spec.writeback.as_ref())
            .and_then(|w| w.push)
            .unwrap_or(true);
        let branch = approvals::request_branch(&approval.id);
        let Some(company) = self.company.clone() else {
            return Ok(());
        };
        let written = Writeback::new(
            &company,
            Some(&branch),
            writeback_author(&applied.spec),
            push,
        )
        .and_then(|writer| {
            let change = approvals::request_change(approval, &product)?;
            writer.commit(
                &[change],
                &format!(
                    "Approval request {}: {} for goal {}",
                    approval.id, approval.action, approval.goal
                ),
            )
        });
        match written {
            Ok(commit) => {
                // Nothing new to commit: the branch already holds this very request.
                let commit = commit.unwrap_or_else(|| "unchanged".into());
                self.store.approval_published(&approval.id, &commit)?;
                tracing::warn!(
                    goal = %approval.goal,
                    approval = %approval.id,
                    "{} waits for approval: merge {branch} to approve (`proto approve {}`), or deny it",
                    approval.action,
                    approval.id
                );
                self.dirty.goal(&approval.goal);
            }
            Err(e) => {
                tracing::error!(approval = %approval.id, error = %e, "cannot publish the approval request")
            }
        }
        Ok(())
    }

    fn approval_policy(&self) -> Policy {
        let approvals = self
            .applied
            .as_ref()
            .and_then(|a| a.spec.company())
            .and_then(|c| c.spec.approvals.clone())
            .unwrap_or_default();
        Policy {
            approvers: approvals.approvers,
            controller: self.applied.as_ref().map(|a| writeback_author(&a.spec)),
            require_signed: approvals.require_signed_merges.unwrap_or(false),
        }
    }

    /// The denial of a request nobody answered in time.
    fn expired(&self, approval: &Approval, now: DateTime<Utc>) -> Option<(bool, String, String)> {
        approval.expires_at.filter(|e| *e <= now).map(|expires| {
            (
                false,
                "proto".to_string(),
                format!(
                    "no answer by {} (approvals.timeout)",
                    expires.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            )
        })
    }

    /// Reads one request's answer from git and records it.
    fn take_answer(
        &mut self,
        approval: &Approval,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let Some(company) = self.company.clone() else {
            return Ok(());
        };
        let answer = approvals::read_answer(
            company.repository_path(),
            company.branch(),
            company.subpath(),
            &approval.id,
            policy,
        );
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(approval = %approval.id, error = %e, "cannot read the approval's answer");
                return Ok(());
            }
        };
        let (approved, by, said) = match answer {
            Answer::Approved { by, commit } => (true, by, format!("approved by {commit}")),
            Answer::Denied { by, reason } => (false, by, reason),
            Answer::Refused { by, why } => {
                if self.refused_answers.insert(approval.id.clone()) {
                    tracing::error!(approval = %approval.id, by = %by, "approval refused: {why}");
                    self.store.note_refused_answer(approval, &by, &why, now)?;
                    self.record
                        .note(format!("{} approval by {by} refused: {why}", approval.id));
                }
                match self.expired(approval, now) {
                    Some(denial) => denial,
                    None => return Ok(()),
                }
            }
            Answer::Pending => match self.expired(approval, now) {
                Some(denial) => denial,
                None => return Ok(()),
            },
        };

        if self
            .store
            .answer_approval(&approval.id, approved, &by, &said, now)?
        {
            if approved {
                tracing::info!(goal = %approval.goal, approval = %approval.id, by = %by, "approved");
                // The attempt continues from its journal, at the approved step.
                self.resume.insert(approval.task);
            } else {
                tracing::warn!(goal = %approval.goal, approval = %approval.id, by = %by, "denied: {said}");
                let product = self
                    .applied
                    .as_ref()
                    .and_then(|a| a.spec.goal(&approval.goal))
                    .map(|g| g.spec.product.clone());
                let lesson = crate::knowledge::capture::denial(
                    &approval.goal,
                    product.as_deref(),
                    approval.task,
                    &approval.action,
                    &by,
                    &said,
                    now,
                );
                if let Err(e) = self.store.capture(Some(approval.task), &lesson, now) {
                    tracing::warn!(approval = %approval.id, "cannot keep the denial's lesson: {e}");
                }
            }
            self.record.add(
                &self.store.task(approval.task)?.product,
                format!(
                    "{} {} {} by {by}",
                    approval.goal,
                    approval.action,
                    if approved { "approved" } else { "denied" }
                ),
            );
            self.dirty.goal(&approval.goal);
        }
        Ok(())
    }
}
