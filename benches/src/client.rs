//! A minimal HTTP/1.1 keep-alive client for load generation.
//!
//! The load driver's clients must cost about what pgbench's C client costs, or the comparison
//! measures the driver: all connections share one thread and one event loop (like `wrk`), requests
//! are prepared bytes, and responses are parsed with `httparse` without copying headers.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response.
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The id a 201 names in its `Location` (`…/{resource_type}/{id}/_history/1`).
    pub fn created_id(&self, resource_type: &str) -> Option<&str> {
        if self.status != 201 {
            return None;
        }
        let location = self.location.as_deref()?;
        location
            .split(&format!("/{resource_type}/"))
            .nth(1)?
            .split('/')
            .next()
    }
}

/// A request to `path` on `addr`, with `headers` (each ending in CRLF) and, unless it is a GET
/// without one, a FHIR JSON body.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}");
    if !body.is_empty() || method != "GET" {
        text += &format!(
            "Content-Type: application/fhir+json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    text += "\r\n";
    text += body;
    text.into_bytes()
}

/// Prints the start of an answer a driver did not expect.
pub fn report(reply: &Reply) {
    let body = String::from_utf8_lossy(&reply.body);
    eprintln!(
        "unexpected answer {}: {}",
        reply.status,
        &body[..body.len().min(400)]
    );
}

/// One persistent connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// Sends one request and reads its whole response (`Content-Length` framing only).
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Reply> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((head, reply)) = parse_head(&self.buffer)? {
                let end = head + reply.1;
                while self.buffer.len() < end {
                    self.fill().await?;
                }
                let body = self.buffer[head..end].to_vec();
                self.buffer.drain(..end);
                return Ok(Reply {
                    status: reply.0,
                    location: reply.2,
                    body,
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Head length, then (status, content length, location), once the head is complete.
type Head = (usize, (u16, usize, Option<String>));

fn parse_head(buffer: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let (mut length, mut location) = (0, None);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "content-length"))?;
        } else if header.name.eq_ignore_ascii_case("location")
            // An asynchronous request's status URL, unless a `Location` is given too.
            || (header.name.eq_ignore_ascii_case("content-location") && location.is_none())
        {
            location = Some(String::from_utf8_lossy(header.value).into_owned());
        }
    }
    Ok(Some((head, (response.code.unwrap_or(0), length, location))))
}

/// A connection for requests one after another outside a load loop (setup, probes), on a
/// runtime of its own.
pub struct Blocking {
    runtime: tokio::runtime::Runtime,
    connection: Connection,
}

impl Connection {
    pub fn blocking(addr: SocketAddr) -> io::Result<Blocking> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let connection = runtime.block_on(Connection::open(addr))?;
        Ok(Blocking {
            runtime,
            connection,
        })
    }
}

impl Blocking {
    /// Sends a request; an error unless the status is one of `accept`.
    pub fn send(&mut self, request: &str, accept: &[u16]) -> anyhow::Result<Reply> {
        let reply = self
            .runtime
            .block_on(self.connection.exchange(request.as_bytes()))?;
        anyhow::ensure!(
            accept.contains(&reply.status),
            "answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        Ok(reply)
    }
}

/// Successes per second, failures and the latency of every success of a closed-loop run.
pub struct Outcome {
    pub per_second: f64,
    pub errors: u64,
    /// Microseconds, in completion order.
    pub latencies: Vec<u64>,
}

impl Outcome {
    /// The latency below which `quantile` (0–1) of the successes finished, in milliseconds.
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }
}

/// Runs `clients` connections in a closed loop for `duration` on the current thread: each sends
/// `request(n)` (n counts requests across all clients) until it gives `None` or time is up, and
/// `accept` judges the reply. A request unanswered within 10 s fails.
pub fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    request: impl Fn(u64) -> Option<Vec<u8>> + 'static,
    accept: impl Fn(&Reply) -> bool + 'static,
) -> io::Result<Outcome> {
    closed_loop_within(
        addr,
        clients,
        duration,
        Duration::from_secs(10),
        request,
        accept,
    )
}

/// [`closed_loop`] with requests that may take up to `answer_within` (large bundles).
pub fn closed_loop_within(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    answer_within: Duration,
    request: impl Fn(u64) -> Option<Vec<u8>> + 'static,
    accept: impl Fn(&Reply) -> bool + 'static,
) -> io::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let request = Rc::new(request);
    let accept = Rc::new(accept);
    let (sent, ok, errors) = (
        Rc::new(Cell::new(0u64)),
        Rc::new(Cell::new(0u64)),
        Rc::new(Cell::new(0u64)),
    );
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + duration;
    local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (request, accept) = (request.clone(), accept.clone());
                let (sent, ok, errors) = (sent.clone(), ok.clone(), errors.clone());
                let latencies = latencies.clone();
                tokio::task::spawn_local(async move {
                    let mut connection = None;
                    while Instant::now() < deadline {
                        if connection.is_none() {
                            connection = Connection::open(addr).await.ok();
                        }
                        let Some(open) = connection.as_mut() else {
                            errors.set(errors.get() + 1);
                            continue;
                        };
                        let n = sent.get();
                        sent.set(n + 1);
                        let Some(bytes) = request(n) else {
                            break;
                        };
                        let at = Instant::now();
                        let exchange = open.exchange(&bytes);
                        match tokio::time::timeout(answer_within, exchange).await {
                            Ok(Ok(reply)) if accept(&reply) => {
                                ok.set(ok.get() + 1);
                                latencies.borrow_mut().push(at.elapsed().as_micros() as u64);
                            }
                            Ok(Ok(_)) => errors.set(errors.get() + 1),
                            failed => {
                                if errors.get() == 0 {
                                    match failed {
                                        Ok(Err(e)) => eprintln!("first failure: {e}"),
                                        _ => eprintln!(
                                            "first failure: no answer within {} s",
                                            answer_within.as_secs()
                                        ),
                                    }
                                }
                                errors.set(errors.get() + 1);
                                connection = None;
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
    Ok(Outcome {
        per_second: ok.get() as f64 / started.elapsed().as_secs_f64(),
        errors: errors.get(),
        latencies: latencies.take(),
    })
}

/// How often `needle` occurs in `haystack` (a reply's body).
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Whether `needle` occurs in `haystack` (a reply's body).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
