//! Where tool calls execute: a [`ToolHost`] is one sandbox. [`DriverHost`] reaches a sandbox
//! through a [`Driver`] (the local driver in `warden agent`, any driver in `warden serve`);
//! nothing the model asks for runs on the host itself.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use warden_sandbox::{Driver, DriverError, ExecSession};
use warden_sandboxd::proto::{ExecRequest, ExecResult};

/// A sandbox the tool loop works in.
#[async_trait::async_trait]
pub trait ToolHost: Send + Sync + std::fmt::Debug {
    /// The workspace, as an absolute path inside the sandbox: the model's working directory.
    fn workspace(&self) -> &Path;
    /// Runs a command to its end.
    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, DriverError>;
    /// Starts a command whose output is read as it comes.
    async fn exec_stream(&self, request: ExecRequest) -> Result<ExecSession, DriverError>;
    /// Reads at most `max` bytes of a workspace file (`rel` is relative to the workspace);
    /// the flag says whether there was more.
    async fn read_file(&self, rel: &str, max: usize) -> Result<(Vec<u8>, bool), DriverError>;
    /// Creates or replaces a workspace file (parent directories are created).
    async fn write_file(&self, rel: &str, data: Vec<u8>) -> Result<(), DriverError>;
}

/// A sandbox reached through a driver.
#[derive(Debug, Clone)]
pub struct DriverHost {
    pub driver: Arc<dyn Driver>,
    pub sandbox: String,
    pub workspace: PathBuf,
}

#[async_trait::async_trait]
impl ToolHost for DriverHost {
    fn workspace(&self) -> &Path {
        &self.workspace
    }

    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, DriverError> {
        self.driver
            .exec(&self.sandbox, self.in_workspace(request))
            .await
    }

    async fn exec_stream(&self, request: ExecRequest) -> Result<ExecSession, DriverError> {
        self.driver
            .exec_stream(&self.sandbox, self.in_workspace(request))
            .await
    }

    async fn read_file(&self, rel: &str, max: usize) -> Result<(Vec<u8>, bool), DriverError> {
        let path = self.path(rel);
        let mut stream = self.driver.read_file(&self.sandbox, &path).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| DriverError::Unavailable(format!("reading {rel}: {e}")))?;
            if out.len() + chunk.len() > max {
                out.extend_from_slice(&chunk[..max - out.len()]);
                return Ok((out, true));
            }
            out.extend_from_slice(&chunk);
        }
        Ok((out, false))
    }

    async fn write_file(&self, rel: &str, data: Vec<u8>) -> Result<(), DriverError> {
        // sandboxd creates the missing parent directories itself.
        let body: warden_sandbox::ByteStream = Box::pin(futures_util::stream::once(async move {
            Ok::<Bytes, std::io::Error>(Bytes::from(data))
        }));
        self.driver
            .write_file(&self.sandbox, &self.path(rel), None, body)
            .await
    }
}

impl DriverHost {
    /// Commands start in the workspace unless they name a directory: it need not be the
    /// sandbox's root (a task's checkout is a directory of it).
    fn in_workspace(&self, mut request: ExecRequest) -> ExecRequest {
        if request.cwd.is_none() {
            request.cwd = Some(self.workspace.to_string_lossy().into_owned());
        }
        request
    }

    /// A workspace-relative path as the sandbox's file API takes it (absolute paths inside
    /// its root are accepted).
    fn path(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.workspace.to_string_lossy().into_owned()
        } else {
            self.workspace.join(rel).to_string_lossy().into_owned()
        }
    }
}

/// `path` relative to `workspace` when it lies inside it (lexically, after `..` is
/// resolved); `None` when it lies outside. `""` is the workspace itself.
pub fn inside_workspace(workspace: &Path, path: &Path) -> Option<String> {
    let path = crate::permissions::normalize(path);
    let rel = path
        .strip_prefix(crate::permissions::normalize(workspace))
        .ok()?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(rel.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_and_outside_the_workspace() {
        let ws = Path::new("/w/repo");
        assert_eq!(
            inside_workspace(ws, Path::new("/w/repo/a/b.rs")).as_deref(),
            Some("a/b.rs")
        );
        assert_eq!(
            inside_workspace(ws, Path::new("/w/repo")).as_deref(),
            Some("")
        );
        assert_eq!(
            inside_workspace(ws, Path::new("/w/repo/a/../../etc/passwd")),
            None
        );
        assert_eq!(inside_workspace(ws, Path::new("/w/repository/x")), None);
        assert_eq!(inside_workspace(ws, Path::new("/etc/passwd")), None);
    }
}
