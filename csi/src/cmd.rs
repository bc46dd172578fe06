//! Host commands go through one runner, which keeps stderr for the error message; tests swap in
//! a fake that records calls.

use std::sync::Mutex;

use crate::error::{CsiError, Result};

/// Output of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[tonic::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs `program args`, feeding `stdin` when given. Errors only when it cannot start.
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output>;

    /// Runs and requires success.
    async fn ok(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let out = self.run(program, args, stdin).await?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(CsiError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.code.map_or("signal".into(), |c| format!("exit {c}")),
                stderr: out.stderr.trim().to_string(),
            })
        }
    }
}

pub struct HostRunner;

#[tonic::async_trait]
impl Runner for HostRunner {
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        use tokio::io::AsyncWriteExt;
        let started = std::time::Instant::now();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| CsiError::io(format!("starting {program}"), e))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|e| CsiError::io(format!("{program} stdin"), e))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| CsiError::io(format!("running {program}"), e))?;
        tracing::debug!(program, took_ms = started.elapsed().as_millis() as u64, code = ?out.status.code(), "ran");
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// One recorded call: program, arguments, stdin.
pub type Call = (String, Vec<String>, Option<String>);

/// A scripted runner for unit tests: answers by program name, records every call.
#[derive(Default)]
pub struct FakeRunner {
    pub calls: Mutex<Vec<Call>>,
    pub answers: Mutex<Vec<(String, Output)>>,
}

impl FakeRunner {
    pub fn answer(&self, program: &str, code: i32, stdout: &str) {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                program.into(),
                Output {
                    code: Some(code),
                    stdout: stdout.into(),
                    stderr: String::new(),
                },
            ));
    }
    pub fn programs(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| format!("{} {}", c.0, c.1.join(" ")))
            .collect()
    }
}

#[tonic::async_trait]
impl Runner for FakeRunner {
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push((
            program.into(),
            args.iter().map(|a| a.to_string()).collect(),
            stdin.map(String::from),
        ));
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(answers
            .iter()
            .rev()
            .find(|(p, _)| p == program)
            .map(|(_, o)| o.clone())
            .unwrap_or(Output {
                code: Some(0),
                ..Default::default()
            }))
    }
}
