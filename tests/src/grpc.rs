//! The Python grpcio echo server and clients (`tests/scripts/grpc_echo.py`) as the
//! end-to-end tests run them: a gRPC ecosystem other than the proxy's own.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{loopback, run};

const GRPC_ECHO: &str = include_str!("../scripts/grpc_echo.py");

/// Writes the script into `dir`, for `python3` to run.
pub fn script(dir: &Path) -> PathBuf {
    let script = dir.join("grpc_echo.py");
    std::fs::write(&script, GRPC_ECHO).expect("write the gRPC script");
    script
}

/// The Python gRPC echo server, killed on drop.
pub struct GrpcApp {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for GrpcApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the echo server; `name` is what its `x-served-by` trailer says.
pub fn app(script: &Path, name: &str) -> GrpcApp {
    let (child, port) = python_server(script, &[&"serve", &name]);
    GrpcApp {
        child,
        addr: loopback(port),
    }
}

/// Starts a Python grpcio server script that prints its port first, and reads it.
pub fn python_server(script: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (Child, u16) {
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the gRPC server script");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the gRPC server prints its port");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| {
        panic!(
            "{} printed {line:?}, not a port (are its Python packages installed?)",
            script.display()
        )
    });
    (child, port)
}

/// Runs one of the script's clients and returns the JSON it prints.
pub fn client(script: &Path, args: &[&str]) -> serde_json::Value {
    let output = run(Command::new("python3").arg(script).args(args));
    assert!(
        output.status.success(),
        "grpc client {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}
