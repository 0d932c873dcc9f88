//! A minimal HTTP/1.1 client over `std::net` for the server tests (no client library): whole
//! responses (chunked bodies decoded), and streamed bodies read line by line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use mllama_server::{Config, Server, Spawned};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo model.
pub fn demo_model() -> PathBuf {
    root().join("models/demo/mllama-demo-q4_0.gguf")
}

/// The demo picture's bytes.
pub fn demo_image() -> Vec<u8> {
    std::fs::read(root().join("models/demo/example.jpg")).unwrap()
}

/// Base64 (standard alphabet, padded), written here so the tests check the server's decoder
/// against an independent encoder.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A server on the demo model, on a free loopback port, with `f` applied to the config.
pub fn start(f: impl FnOnce(&mut Config)) -> Spawned {
    let mut c = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        models: vec![(Some("demo".into()), demo_model())],
        ctx: Some(512),
        ..Config::default()
    };
    f(&mut c);
    Server::bind(c).unwrap().spawn().unwrap()
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

fn send(s: &mut TcpStream, method: &str, path: &str, body: &[u8], extra: &[(&str, &str)]) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A peer that refuses a large body may close early; the response is still read.
    let _ = s.write_all(body);
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// Decoded body bytes as they arrive (chunked or not).
pub struct BodyReader<R: BufRead> {
    r: R,
    chunked: bool,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.r.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.r.read_line(&mut line)?;
            }
            self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let got = self.r.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

/// One request, whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut s = connect(addr);
    send(&mut s, method, path, body.as_bytes(), extra);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut br = BodyReader {
        r,
        chunked,
        left: 0,
        done: false,
    };
    let mut body = Vec::new();
    let _ = br.read_to_end(&mut body);
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, "", &[])
}

pub fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Resp {
    request(addr, "POST", path, &body.to_string(), &[])
}

/// A streamed response read line by line; dropping it closes the connection.
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    lines: BufReader<BodyReader<BufReader<TcpStream>>>,
}

impl Stream {
    /// The next non-empty line, or `None` at the end.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            let mut l = String::new();
            if self.lines.read_line(&mut l).ok()? == 0 {
                return None;
            }
            let l = l.trim_end().to_string();
            if !l.is_empty() {
                return Some(l);
            }
        }
    }
}

pub fn stream(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Stream {
    let mut s = connect(addr);
    send(&mut s, "POST", path, body.to_string().as_bytes(), &[]);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    Stream {
        status,
        headers,
        lines: BufReader::new(BodyReader {
            r,
            chunked,
            left: 0,
            done: false,
        }),
    }
}

/// The value of a counter in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// A `w`×`h` 24-bit BMP with a colour gradient (a second, different picture).
pub fn bmp(w: u32, h: u32) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0u8; 24]);
    for y in 0..h {
        for x in 0..w {
            b.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    b
}

/// Send a request, wait `ms` milliseconds, and close the connection without reading the answer.
pub fn send_and_close(addr: SocketAddr, path: &str, body: &serde_json::Value, ms: u64) {
    let mut s = connect(addr);
    send(&mut s, "POST", path, body.to_string().as_bytes(), &[]);
    std::thread::sleep(Duration::from_millis(ms));
    drop(s);
}
