//! The local computer: this host. Commands run under `sh -c` in their own process group, so
//! a timeout or cancellation kills everything they started.

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Computer, ComputerError, Output, RunOutcome, RunRequest, Workspace, WorkspaceSpec};

/// This host, keeping workspaces under `workdir`.
pub struct Local {
    name: String,
    workdir: std::path::PathBuf,
}

impl Local {
    pub fn new(name: impl Into<String>, workdir: impl Into<std::path::PathBuf>) -> Self {
        Local {
            name: name.into(),
            workdir: workdir.into(),
        }
    }
}

#[async_trait]
impl Computer for Local {
    fn name(&self) -> &str {
        &self.name
    }

    async fn workspace(&self, spec: &WorkspaceSpec) -> Result<Workspace, ComputerError> {
        let _ = (spec, &self.workdir);
        todo!()
    }

    async fn run(
        &self,
        workspace: &Workspace,
        request: &RunRequest,
        output: Option<mpsc::UnboundedSender<Output>>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, ComputerError> {
        let _ = (workspace, request, output, cancel);
        todo!()
    }

    async fn read(
        &self,
        workspace: &Workspace,
        path: &str,
    ) -> Result<Option<Vec<u8>>, ComputerError> {
        let _ = (workspace, path);
        todo!()
    }

    async fn write(
        &self,
        workspace: &Workspace,
        path: &str,
        content: &[u8],
    ) -> Result<(), ComputerError> {
        let _ = (workspace, path, content);
        todo!()
    }

    async fn healthy(&self) -> bool {
        true
    }
}
