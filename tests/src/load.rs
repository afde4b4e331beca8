//! Steady HTTP/1.1 load for the chaos tests: GET requests at a fixed rate over
//! keep-alive connections, every outcome recorded, so a test can say exactly how
//! many requests were sent and how many failed, and when traffic moved.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the request was sent, from the start of the load.
    pub at: Duration,
    pub latency: Duration,
    /// The status, or the I/O error that ended the request.
    pub result: Result<u16, String>,
    /// The `x-served-by` header (the test app's name), if any.
    pub served_by: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok(status) if (200..300).contains(&status))
    }
}

/// Load running in the background until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
}

/// The options of a load.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests per second, over all connections.
    pub rate: u32,
    /// Concurrent keep-alive connections.
    pub connections: u32,
    pub path: String,
    /// How long one request may take before it counts as failed.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rate: 200,
            connections: 4,
            path: "/".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Load {
    /// Starts sending to `target` (an outbound listener of a proxy, say).
    pub fn start(target: SocketAddr, options: Options) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let connections = options.connections.max(1);
        // Each connection sends at rate / connections, offset so that the sends of
        // all connections interleave evenly.
        let interval = Duration::from_secs_f64(f64::from(connections) / f64::from(options.rate));
        let workers = (0..connections)
            .map(|i| {
                let worker = Worker {
                    target,
                    options: options.clone(),
                    stop: stop.clone(),
                    outcomes: outcomes.clone(),
                    started,
                    interval,
                    offset: interval * i / connections,
                };
                std::thread::spawn(move || worker.run())
            })
            .collect();
        Load {
            stop,
            outcomes,
            workers,
            started,
        }
    }

    /// The outcomes so far.
    pub fn snapshot(&self) -> Report {
        Report {
            outcomes: self.outcomes.lock().map(|o| o.clone()).unwrap_or_default(),
        }
    }

    /// Time since the load started: the scale of [`Outcome::at`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the load, waits for requests in flight and returns every outcome.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.snapshot()
    }

    /// Waits until `count` more requests succeeded, or panics after `timeout`.
    pub fn wait_for_successes(&self, count: usize, timeout: Duration) {
        let before = self.snapshot().succeeded();
        crate::wait_for(
            &format!("{count} more successful requests"),
            timeout,
            || (self.snapshot().succeeded() >= before + count).then_some(()),
        );
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Worker {
    target: SocketAddr,
    options: Options,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    started: Instant,
    interval: Duration,
    offset: Duration,
}

impl Worker {
    fn run(self) {
        let mut connection: Option<BufReader<TcpStream>> = None;
        let mut next = self.started + self.offset;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if next > now {
                // Pacing a fixed rate, not waiting for a condition.
                std::thread::sleep(next - now);
            }
            next += self.interval;
            let sent = Instant::now();
            let (result, served_by) = match self.request(&mut connection) {
                Ok((status, served_by, close)) => {
                    if close {
                        connection = None;
                    }
                    (Ok(status), served_by)
                }
                Err(e) => {
                    connection = None;
                    (Err(e.to_string()), None)
                }
            };
            let outcome = Outcome {
                at: sent - self.started,
                latency: sent.elapsed(),
                result,
                served_by,
            };
            if let Ok(mut outcomes) = self.outcomes.lock() {
                outcomes.push(outcome);
            }
        }
    }

    /// One GET on the kept-alive connection (opened if needed): the status, the
    /// `x-served-by` header, and whether the server asked to close.
    fn request(
        &self,
        connection: &mut Option<BufReader<TcpStream>>,
    ) -> std::io::Result<(u16, Option<String>, bool)> {
        let reader = match connection {
            Some(reader) => reader,
            None => {
                let stream = TcpStream::connect_timeout(&self.target, self.options.timeout)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(self.options.timeout))?;
                connection.insert(BufReader::new(stream))
            }
        };
        write!(
            reader.get_mut(),
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.options.path,
            self.target
        )?;
        read_response(reader)
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one response (Content-Length or chunked body, skipped).
fn read_response(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<(u16, Option<String>, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let (mut length, mut chunked, mut close, mut served_by) = (0usize, false, false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed in the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("bad header"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| invalid("bad length"))?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "x-served-by" => served_by = Some(value.to_owned()),
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            skip(reader, size + 2)?;
            if size == 0 {
                break;
            }
        }
    } else {
        skip(reader, length)?;
    }
    Ok((status, served_by, close))
}

fn skip(reader: &mut BufReader<TcpStream>, count: usize) -> std::io::Result<()> {
    let copied = std::io::copy(
        &mut reader.by_ref().take(count as u64),
        &mut std::io::sink(),
    )?;
    if copied as usize != count {
        return Err(invalid("connection closed in the body"));
    }
    Ok(())
}

/// Every outcome of a load, and what a chaos test asks of them.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }

    pub fn failed(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.ok()).collect()
    }

    /// The share of requests that succeeded, 0..=1.
    pub fn success_ratio(&self) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.succeeded() as f64 / self.sent() as f64
    }

    /// Requests per `x-served-by` name.
    pub fn by_server(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for outcome in &self.outcomes {
            if let Some(name) = &outcome.served_by {
                *counts.entry(name.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The latency at quantile `q` (0..=1) of all requests.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut latencies: Vec<Duration> = self.outcomes.iter().map(|o| o.latency).collect();
        latencies.sort();
        match latencies.len() {
            0 => Duration::ZERO,
            n => latencies[((n - 1) as f64 * q).round() as usize],
        }
    }

    /// The last time, after `fault`, that a request reached `server`: how long
    /// traffic took to avoid it (zero if nothing reached it after the fault).
    pub fn last_served_by_after(&self, server: &str, fault: Duration) -> Duration {
        self.outcomes
            .iter()
            .filter(|o| o.at >= fault && o.served_by.as_deref() == Some(server))
            .map(|o| o.at + o.latency - fault)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// A short text for assertion messages: counts and the first few failures.
    pub fn summary(&self) -> String {
        let failed = self.failed();
        let examples: Vec<String> = failed
            .iter()
            .take(5)
            .map(|o| format!("{:?} at {:?}", o.result, o.at))
            .collect();
        format!(
            "sent {}, failed {}, by server {:?}, p99 {:?}; first failures: {examples:?}",
            self.sent(),
            failed.len(),
            self.by_server(),
            self.latency_quantile(0.99),
        )
    }
}
