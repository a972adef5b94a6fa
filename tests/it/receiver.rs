//! A subscriber's endpoint for the tests: a real HTTP server on its own thread that records
//! every request, and that can go away (its port closed: connections refused) and come back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    up: Arc<AtomicBool>,
    /// The status it answers.
    status: Arc<AtomicU16>,
    /// How long it takes to answer, in milliseconds.
    delay: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let up = Arc::new(AtomicBool::new(true));
        let status = Arc::new(AtomicU16::new(200));
        let delay = Arc::new(AtomicU64::new(0));
        let (log, running, answer, slow) =
            (received.clone(), up.clone(), status.clone(), delay.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                match (&listener, running.load(Ordering::SeqCst)) {
                    (Some(open), true) => {
                        open.set_nonblocking(true).unwrap();
                        match open.accept() {
                            Ok((stream, _)) => {
                                let pause = Duration::from_millis(slow.load(Ordering::SeqCst));
                                if let Some(request) =
                                    serve(stream, answer.load(Ordering::SeqCst), pause)
                                {
                                    log.lock().unwrap().push(request);
                                }
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                    // Down: the port is closed, so connections are refused.
                    (Some(_), false) => listener = None,
                    (None, true) => listener = TcpListener::bind(address).ok(),
                    (None, false) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            url: format!("http://{address}/notify"),
            received,
            up,
            status,
            delay,
        }
    }

    /// Takes this long to answer each request from now on.
    pub fn delay(&self, millis: u64) {
        self.delay.store(millis, Ordering::SeqCst);
    }

    /// Closes the port (connections refused) or opens it again.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Answers every request with this status from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The received notifications (JSON bodies) of this type (`handshake`, `event-notification`,
    /// `heartbeat`).
    pub fn notifications(&self, kind: &str) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| !r.body.is_empty())
            .map(Received::json)
            .filter(|b| notification_type(b) == Some(kind.to_owned()))
            .collect()
    }

    /// Waits until `done` holds on what was received, or panics after `seconds`.
    pub fn wait_for(
        &self,
        seconds: u64,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "waited {seconds} s for {what}; got {} requests",
                received.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one request and answers it with `status`.
fn serve(mut stream: TcpStream, status: u16, pause: Duration) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let (head, body) = read_request(&mut stream)?;
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    std::thread::sleep(pause);
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

/// An HTTP request's head, and as much body as its `Content-Length` says.
pub(crate) fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..n]);
        let Some(split) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..split]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        let body = &request[split + 4..];
        if body.len() >= length {
            return Some((head, String::from_utf8_lossy(&body[..length]).into_owned()));
        }
    }
}

/// The parameter `name` of a notification's status `Parameters` (first entry).
pub fn status_parameter<'a>(bundle: &'a Value, name: &str) -> Option<&'a Value> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

pub fn notification_type(bundle: &Value) -> Option<String> {
    status_parameter(bundle, "type")?["valueCode"]
        .as_str()
        .map(str::to_owned)
}

/// The event numbers a notification carries, in order.
pub fn event_numbers(bundle: &Value) -> Vec<i64> {
    event_parts(bundle, "event-number")
        .iter()
        .filter_map(|part| part["valueString"].as_str()?.parse().ok())
        .collect()
}

/// The focus references of a notification's events.
pub fn focuses(bundle: &Value) -> Vec<String> {
    event_parts(bundle, "focus")
        .iter()
        .filter_map(|part| Some(part["valueReference"]["reference"].as_str()?.to_owned()))
        .collect()
}

/// The part `name` of each `notification-event` that has one, in order.
fn event_parts<'a>(bundle: &'a Value, name: &str) -> Vec<&'a Value> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event")
        .filter_map(|p| {
            p["part"]
                .as_array()?
                .iter()
                .find(|part| part["name"] == name)
        })
        .collect()
}
