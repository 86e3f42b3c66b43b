//! A fault-injecting HTTP proxy in front of a loopback S3 server: it forwards each request to
//! the server, or answers it itself with an S3 error — 403 `AccessDenied` for PUTs whose path
//! contains a pattern (a bucket or prefix the credentials cannot write), 503 `SlowDown` for the
//! next N requests and then every k-th (a throttling storm), or no answer at all (the server is
//! down: connections are closed unanswered). One request per connection
//! upstream; the client is told to close, so each request is framed by the server's answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does, and what it did.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// PUTs whose path contains this are refused with 403.
    pub deny_put: Option<String>,
    /// PUTs whose path contains this are answered 200 and dropped: a store that loses
    /// acknowledged writes.
    pub lose_put: Option<String>,
    /// Paths of the PUTs lost so.
    pub lost: Vec<String>,
    /// The next this many requests get 503.
    pub unavailable_next: usize,
    /// Then every this-many-th request gets 503 (0: none).
    pub unavailable_every: usize,
    /// Paths refused with 403, in order.
    pub denied: Vec<String>,
    /// How many 503s were sent.
    pub throttled: usize,
    /// How many requests were forwarded.
    pub forwarded: usize,
    /// The server is down: every connection is closed at once, unanswered.
    pub down: bool,
    /// How many connections were dropped so.
    pub dropped: usize,
}

/// The proxy, listening on an ephemeral loopback port until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    pub endpoint: String,
    pub faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (faults.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, upstream) = (f.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &f);
                });
            }
        });
        FaultProxy {
            endpoint,
            faults,
            stop,
        }
    }

    /// Changes the faults (and resets the counts).
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    /// What the proxy did so far.
    pub fn seen(&self) -> Faults {
        self.faults.lock().expect("faults").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// An S3 error answer, closing the connection.
fn s3_error(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{code} (injected by the test proxy)</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one client connection: one request, answered or forwarded, then closed.
fn serve(client: TcpStream, upstream: &str, faults: &Mutex<Faults>) -> std::io::Result<()> {
    {
        let mut f = faults.lock().expect("faults");
        if f.down {
            f.dropped += 1;
            return client.shutdown(std::net::Shutdown::Both);
        }
    }
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push(line);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let request_line = head.first().cloned().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let injected = {
        let mut f = faults.lock().expect("faults");
        if method == "PUT"
            && f.deny_put
                .as_ref()
                .is_some_and(|p| path.contains(p.as_str()))
        {
            f.denied.push(path.clone());
            Some(s3_error("403 Forbidden", "AccessDenied"))
        } else if method == "PUT"
            && f.lose_put
                .as_ref()
                .is_some_and(|p| path.contains(p.as_str()))
        {
            f.lost.push(path.clone());
            Some(
                b"HTTP/1.1 200 OK\r\nETag: \"lost\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        } else if f.unavailable_next > 0 {
            f.unavailable_next -= 1;
            f.throttled += 1;
            Some(s3_error("503 Service Unavailable", "SlowDown"))
        } else {
            f.forwarded += 1;
            if f.unavailable_every > 0 && f.forwarded.is_multiple_of(f.unavailable_every) {
                f.throttled += 1;
                Some(s3_error("503 Service Unavailable", "SlowDown"))
            } else {
                None
            }
        }
    };
    let mut client = client;
    if let Some(answer) = injected {
        return client.write_all(&answer);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    for line in &head {
        server.write_all(line.as_bytes())?;
    }
    server.write_all(b"Connection: close\r\n\r\n")?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    // The server closes after its answer; tell the client so too (if the server did not).
    if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        if !head.contains("\r\nconnection: close") {
            let mut fixed = answer[..end].to_vec();
            fixed.extend_from_slice(b"\r\nConnection: close");
            fixed.extend_from_slice(&answer[end..]);
            answer = fixed;
        }
    }
    client.write_all(&answer)
}
