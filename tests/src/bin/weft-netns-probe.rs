//! A tiny TCP tool the capture tests run inside network namespaces, often as another
//! UID, which a test thread cannot become.
//!
//! `weft-netns-probe serve LABEL=ADDR...` listens on every ADDR, prints `ready` once all
//! are bound, and answers each connection with one line and closes it:
//! `LABEL orig=<original destination, or none> local=<address> peer=<address>`: the destination
//! before iptables redirected the connection, read with `weft_proxy::capture::captured_dst`
//! as the proxy reads it, or `none` for a connection that reached the listener directly.
//!
//! A label written `http:LABEL` answers an HTTP/1.1 request instead, the line as the body.
//!
//! `weft-netns-probe connect ADDR` connects, prints the line it got, and exits 0; any
//! failure prints the error and exits 1.
//!
//! `weft-netns-probe get ADDR PATH` prints the body of an HTTP/1.1 GET, for reading a
//! proxy's admin endpoints from inside its namespace; exits 1 unless the status is 200.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Long enough for a loaded CI machine, short enough that a wrong rule fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "serve" => serve(rest),
        Some((command, [addr])) if command == "connect" => connect(addr),
        Some((command, [addr, path])) if command == "get" => get(addr, path),
        _ => Err(
            "usage: weft-netns-probe serve LABEL=ADDR... | connect ADDR | get ADDR PATH".to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-netns-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn connect(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    if line.is_empty() {
        return Err(format!("{addr} closed without answering"));
    }
    print!("{line}");
    Ok(())
}

fn get(addr: &str, path: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    print!("{body}");
    Ok(())
}

fn serve(specs: &[String]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut listeners = Vec::new();
        for spec in specs {
            let (label, addr) = spec
                .split_once('=')
                .ok_or_else(|| format!("{spec:?} is not LABEL=ADDR"))?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            listeners.push((label.to_owned(), listener));
        }
        println!("ready");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut tasks = tokio::task::JoinSet::new();
        for (label, listener) in listeners {
            tasks.spawn(answer(label, listener));
        }
        // The listeners run until the test kills this process.
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}

async fn answer(label: String, listener: TcpListener) {
    // `http:LABEL` answers one HTTP/1.1 request with the line as the body instead.
    let (label, http) = match label.strip_prefix("http:") {
        Some(label) => (label.to_owned(), true),
        None => (label, false),
    };
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let orig = match weft_proxy::capture::captured_dst(&stream) {
            Ok(Some(addr)) => addr.to_string(),
            Ok(None) => "none".to_owned(),
            Err(e) => format!("error:{e}"),
        };
        let local = stream
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        let line = format!("{label} orig={orig} local={local} peer={peer}\n");
        tokio::spawn(reply(stream, line, http));
    }
}

async fn reply(mut stream: tokio::net::TcpStream, line: String, http: bool) {
    if !http {
        let _ = stream.write_all(line.as_bytes()).await;
        return;
    }
    // Read the request head (no body is expected); bounded in size and time.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, read_head).await,
        Ok(true)
    ) {
        return;
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{line}",
        line.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}
