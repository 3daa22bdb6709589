//! Issue 4: tinyp2p under hostile peers, hostile requests and faults.
//!
//! - `mod peer_names`, `mod peer_urls`, `mod client_symlinks`, `mod broken_transfers`,
//!   `mod bad_answers`, `mod floods`: the Rust client against `Fake`, a test-only XML-RPC responder
//!   that plays bad servers (the way OpenSSH's regress/scp-ssh-wrapper.sh plays bad scp
//!   servers after CVE-2019-6111).
//! - `mod request_names`, `mod request_types`, `mod request_documents`, `mod request_sizes`:
//!   hostile requests against a real Rust node that has a secret file next to its folder
//!   and symlinks pointing at it: the answer is a fault or an HTTP error, the secret never
//!   shows, the node still serves a normal call afterwards, its memory stays bounded.
//! - `mod faults`: nodes that die, dead peers, restarts, a client that cannot write.
//! - `mod tokens`: wrong tokens of every shape get `False`, never a fault.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Node, Run, TempDir};
use xmlrpc::Value;

const PW: &str = "hostile-pw";
/// The client's idle timeout in these tests (env TINYP2P_TIMEOUT), in seconds.
const TIMEOUT: &str = "2";
/// How long a client facing a stalling or broken peer may take in all: generous, but far
/// below common::RUN_DEADLINE, so a client that waits out a stall is caught.
const GIVE_UP: Duration = Duration::from_secs(20);
/// The client's and the node's limits from the contract.
const MAX_PEERS: usize = 10_000;
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// A node's memory after hostile input stays below this (it starts at a few MiB).
const RSS_LIMIT_KB: u64 = 100 * 1024;

// ---------------------------------------------------------------------------------------
// The fake peer
// ---------------------------------------------------------------------------------------

/// One call the fake peer received: the mode (-1 when unreadable), the third param's text,
/// the request target (`/RPC2`) and when the request had been read.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) mode: i64,
    pub(crate) arg: String,
    pub(crate) target: String,
    pub(crate) at: Instant,
}

/// What the fake does with one connection once it has read the request.
pub(crate) enum Reply {
    /// Writes these bytes and closes the connection.
    Close(Vec<u8>),
    /// Writes these bytes and keeps the connection open until the fake is dropped.
    Hold(Vec<u8>),
    /// Writes the first bytes, then the second ones over and over until the client goes.
    Endless(Vec<u8>, Vec<u8>),
    /// Writes the first bytes, then one space every 100 ms, never idle long enough to time out.
    Trickle(Vec<u8>),
    /// Writes the bytes `chunk` at a time, one chunk every `every`, then closes.
    Paced { bytes: Vec<u8>, chunk: usize, every: Duration },
}

/// A script: the answer to one call, given the call and the fake's own URL.
type Script = dyn Fn(&Ask, &str) -> Reply + Send + Sync;

/// A scripted XML-RPC responder on 127.0.0.1, one thread per connection; stops on drop.
pub(crate) struct Fake {
    pub(crate) url: String,
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Ask>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Starts a fake peer answering every call with `script`.
    pub(crate) fn start(script: impl Fn(&Ask, &str) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake peer");
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let script: Arc<Script> = Arc::new(script);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (url, asked, held, stop) = (url.clone(), asked.clone(), held.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (script, url, asked, held) =
                        (script.clone(), url.clone(), asked.clone(), held.clone());
                    std::thread::spawn(move || serve(conn, &*script, &url, &asked, &held));
                }
            })
        };
        Fake { url, addr, asked, held, stop, thread: Some(thread) }
    }

    /// A fake that lists itself in mode 0 and answers modes 1 and 2 with `script`.
    pub(crate) fn peer(script: impl Fn(&Ask) -> Reply + Send + Sync + 'static) -> Fake {
        Fake::start(move |ask, url| match ask.mode {
            0 => ok(&strings([url])),
            _ => script(ask),
        })
    }

    /// Every call received so far.
    pub(crate) fn asked(&self) -> Vec<Ask> {
        self.asked.lock().unwrap().clone()
    }

    /// The names asked for with mode 2, in order.
    pub(crate) fn fetched(&self) -> Vec<String> {
        self.asked().into_iter().filter(|a| a.mode == 2).map(|a| a.arg).collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.held.lock().unwrap().clear();
    }
}

/// Reads one request from `conn`, records it and plays the script's reply.
fn serve(
    mut conn: TcpStream,
    script: &Script,
    url: &str,
    asked: &Mutex<Vec<Ask>>,
    held: &Mutex<Vec<TcpStream>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(20)));
    let Some((target, body)) = read_request(&mut conn) else { return };
    let ask = Ask { target, at: Instant::now(), ..parse_call(&body) };
    asked.lock().unwrap().push(ask.clone());
    match script(&ask, url) {
        Reply::Close(bytes) => {
            let _ = conn.write_all(&bytes);
            let _ = conn.shutdown(Shutdown::Write);
            // Let the client read to the end before the socket goes away.
            let _ = conn.read_to_end(&mut Vec::new());
        }
        Reply::Hold(bytes) => {
            let _ = conn.write_all(&bytes);
            held.lock().unwrap().push(conn);
        }
        Reply::Endless(head, filler) => {
            let _ = conn.write_all(&head);
            while conn.write_all(&filler).is_ok() {}
        }
        Reply::Trickle(head) => {
            let _ = conn.write_all(&head);
            while conn.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(100)); // the pace is the test
            }
        }
        Reply::Paced { bytes, chunk, every } => {
            for piece in bytes.chunks(chunk) {
                if conn.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(every); // the pace is the test
            }
            let _ = conn.shutdown(Shutdown::Write);
            let _ = conn.read_to_end(&mut Vec::new());
        }
    }
}

/// The target and body of one HTTP request (head, then Content-Length bytes); None if it
/// never came.
fn read_request(conn: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf[..head_end]).lines().next().unwrap_or_default().to_string();
    let target = line.split(' ').nth(1).unwrap_or_default().to_string();
    Some((target, String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned()))
}

/// The mode and the third param's text of an XML-RPC call.
fn parse_call(body: &str) -> Ask {
    use xml::reader::{EventReader, XmlEvent};
    let mut params: Vec<String> = Vec::new();
    for event in EventReader::from_str(body) {
        match event {
            Ok(XmlEvent::StartElement { name, .. }) if name.local_name == "param" => {
                params.push(String::new())
            }
            Ok(XmlEvent::Characters(s) | XmlEvent::CData(s)) => {
                if let Some(p) = params.last_mut() {
                    p.push_str(&s);
                }
            }
            Err(_) => break,
            _ => {}
        }
    }
    let mode = params.get(1).and_then(|m| m.trim().parse().ok()).unwrap_or(-1);
    Ask { mode, arg: params.get(2).cloned().unwrap_or_default(), target: String::new(), at: Instant::now() }
}

/// XML text with `&`, `<`, `>` and every control character escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A complete HTTP response with a Content-Length.
pub(crate) fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// An HTTP response framed by closing the connection (no Content-Length).
fn http_unframed(body: &[u8]) -> Vec<u8> {
    let mut out = b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n".to_vec();
    out.extend_from_slice(body);
    out
}

/// A methodResponse holding one value (`value` is the XML inside `<value>`).
pub(crate) fn response(value: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value>{value}</value></param></params></methodResponse>\n"
    )
}

/// A 200 answer holding one value.
pub(crate) fn ok(value: &str) -> Reply {
    Reply::Close(http("200 OK", response(value).as_bytes()))
}

/// A 200 answer holding an XML-RPC fault.
pub(crate) fn fault(message: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>{}</string></value></member></struct></value></fault></methodResponse>\n",
        esc(message)
    );
    Reply::Close(http("200 OK", body.as_bytes()))
}

/// A string value.
pub(crate) fn text(s: &str) -> String {
    format!("<string>{}</string>", esc(s))
}

/// An array of strings.
pub(crate) fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let mut out = String::from("<array><data>");
    for item in items {
        out.push_str("<value>");
        out.push_str(&text(item.as_ref()));
        out.push_str("</value>");
    }
    out.push_str("</data></array>");
    out
}

/// A mode-1 answer: a one-element array holding the array of names.
pub(crate) fn listing<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    format!("<array><data><value>{}</value></data></array>", strings(names))
}

/// The first `keep` bytes of `bytes`.
pub(crate) fn cut(mut bytes: Vec<u8>, keep: usize) -> Vec<u8> {
    bytes.truncate(keep);
    bytes
}

// ---------------------------------------------------------------------------------------
// Running the client, looking at folders
// ---------------------------------------------------------------------------------------

/// Starts the Rust client in `dir` with a short idle timeout.
fn spawn_client(dir: &Path, url: &str, pattern: &str) -> Child {
    let mut cmd = common::tinyp2p();
    cmd.args([PW, "client", url, pattern]).current_dir(dir).env("TINYP2P_TIMEOUT", TIMEOUT);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn client")
}

/// Waits for a spawned process within common::RUN_DEADLINE, killing it if it hangs.
pub(crate) fn finish(child: Child) -> Run {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(common::RUN_DEADLINE) {
        Ok(output) => output.expect("wait for client"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("client hung past {:?}", common::RUN_DEADLINE);
        }
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the Rust client in `dir` to the end; also returns how long it took.
fn client(dir: &Path, url: &str, pattern: &str) -> (Run, Duration) {
    let start = Instant::now();
    let run = finish(spawn_client(dir, url, pattern));
    (run, start.elapsed())
}

/// At most the first 3000 characters, for failure messages.
pub(crate) fn short(s: &str) -> String {
    s.chars().take(3000).collect()
}

/// The client failed the way the contract says: exit 1, a `tinyp2p: ` line naming `url`,
/// no panic.
pub(crate) fn assert_failed_naming(run: &Run, url: &str) {
    let stderr = short(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(run.stderr.contains(url), "stderr does not name {url}: {stderr}");
    assert!(!run.stderr.contains("panicked"), "client panicked: {stderr}");
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with("tinyp2p: "), "stderr line {line:?} lacks the prefix");
    }
}

/// One filesystem entry, symlinks not followed.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything under `root`, by path relative to it.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).expect("read dir") {
            let path = e.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let entry = if meta.file_type().is_symlink() {
                Entry::Link(fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                todo.push(path.clone());
                Entry::Dir
            } else {
                Entry::File(fs::read(&path).unwrap())
            };
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), entry);
        }
    }
    out
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// How long a node may take to answer one call before the test calls it stuck.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `f` on a thread and waits at most ANSWER_DEADLINE for it, so that a node that
/// stops answering fails the test instead of hanging it.
pub(crate) fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(ANSWER_DEADLINE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no answer to {what} within {ANSWER_DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// common::call within ANSWER_DEADLINE.
pub(crate) fn rpc(url: &str, token: &str, mode: i32, arg: Value) -> Result<Value, String> {
    let (url, token) = (url.to_string(), token.to_string());
    within(&format!("a mode-{mode} call"), move || common::call(&url, &token, mode, arg))
}

/// A node's peer list (Node::peers) within ANSWER_DEADLINE.
fn peers(node: &Node) -> Vec<String> {
    let list = rpc(&node.url, &common::token(PW, &node.url), 0, Value::Array(vec![])).expect("mode 0 call");
    let list = list.as_array().expect("peer list is an array");
    list.iter().map(|v| v.as_str().expect("peer is a string").to_string()).collect()
}

/// A URL on loopback where nothing listens.
pub(crate) fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// The size of a file under `dir` that process `pid` holds open (named or not), if any.
fn download_size(pid: u32, dir: &Path) -> Option<u64> {
    let dir = fs::canonicalize(dir).ok()?;
    fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten().find_map(|fd| {
        let target = fs::read_link(fd.path()).ok()?;
        target.starts_with(&dir).then(|| fs::metadata(fd.path()).ok().map(|m| m.len()))?
    })
}

/// Deterministic bytes that are not UTF-8 text (so they travel as base64).
pub(crate) fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8 | 0x80
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A bad peer next to a good one
// ---------------------------------------------------------------------------------------

const GOOD: &str = "good content, from the good peer\n";

/// The bad peer's file: 2 MiB of text, so a cut lands mid-stream.
fn bad_content() -> String {
    "0123456789abcdef".repeat(128 * 1024)
}

/// A fake peer listing `names` and answering every file request with `content`.
fn listing_peer(names: &[String], content: &'static str) -> Fake {
    let answer = Arc::new(listing(names));
    Fake::peer(move |ask| match ask.mode {
        1 => ok(&answer),
        _ => ok(&text(content)),
    })
}

/// A fake peer that lists and serves `good.txt` (GOOD), honestly.
pub(crate) fn good_peer() -> Fake {
    Fake::peer(|ask| match ask.mode {
        1 => ok(&listing(["good.txt"])),
        _ => ok(&text(GOOD)),
    })
}

/// Runs the client against a bad peer whose mode-0 answer lists itself, then a good peer
/// that serves `good.txt`. The bad peer lists `bad.txt` and serves it as `bad` says for
/// modes 1 and 2 (None: the honest answer). Checks the good file arrived, nothing else
/// was left, the client gave up in time, named the bad peer and exited 1.
fn bad_then_good(bad: impl Fn(&Ask) -> Option<Reply> + Send + Sync + 'static) {
    let good = good_peer();
    let good_url = good.url.clone();
    let bad = Fake::start(move |ask, url| match ask.mode {
        0 => ok(&strings([url, good_url.as_str()])),
        _ => bad(ask).unwrap_or_else(|| match ask.mode {
            1 => ok(&listing(["bad.txt"])),
            _ => ok(&text(&bad_content())),
        }),
    });
    let dir = TempDir::new();
    let (run, took) = client(dir.path(), &bad.url, "txt");
    assert!(took < GIVE_UP, "client took {took:?} against a bad peer");
    assert_failed_naming(&run, &bad.url);
    assert_eq!(dir.names(), ["good.txt"], "only the good file, no partial or temp file");
    assert_eq!(dir.read("good.txt"), GOOD.as_bytes());
    assert_eq!(good.fetched(), ["good.txt"]);
}

/// Runs the client against a lone fake whose mode-0 answer is `reply`; checks it fails
/// cleanly, names the fake and writes nothing.
fn bad_peer_list(reply: impl Fn() -> Reply + Send + Sync + 'static) {
    let fake = Fake::start(move |ask, url| match ask.mode {
        0 => reply(),
        1 => ok(&listing(["x.txt"])),
        _ => ok(&text(url)),
    });
    let dir = TempDir::new();
    let (run, took) = client(dir.path(), &fake.url, "");
    assert!(took < GIVE_UP, "client took {took:?}");
    assert_failed_naming(&run, &fake.url);
    assert!(dir.names().is_empty(), "wrote {:?}", dir.names());
    assert!(fake.fetched().is_empty(), "fetched {:?} after a bad peer list", fake.fetched());
}

mod peer_names {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_or_were_not_asked_for_are_never_written() {
        // root/mid/client: `../x` lands in mid, `../../x` in root, both inside test dirs.
        let root = TempDir::new();
        let mid = root.path().join("mid");
        let dir = mid.join("client");
        fs::create_dir_all(dir.join("a")).unwrap(); // so that `a/b.txt` would be writable
        fs::write(mid.join("keep.txt"), "keep").unwrap();
        let absolute = root.path().join("absolute.txt").to_string_lossy().into_owned();
        let evil: Vec<String> = [
            "../x.txt",
            "../../x.txt",
            absolute.as_str(),
            "a/b.txt",
            "a\\b.txt",
            "../keep.txt",
            "./dot.txt",
            ".",
            "..",
            "",
            "new\nline.txt",
            "tab\t.txt",
            "cr\r.txt",
            "del\u{7f}.txt",
            "c1\u{85}.txt",
            "csi\u{9b}.txt",
            "Zoo.txt", // does not match the client's pattern
        ]
        .map(String::from)
        .to_vec();
        let mut listed = evil.clone();
        listed.extend(["honest.txt", "twice.txt", "twice.txt"].map(String::from));
        let listed_for_fake = listed.clone();
        let twice = Arc::new(Mutex::new(0));
        let fake = Fake::peer(move |ask| match (ask.mode, ask.arg.as_str()) {
            (1, _) => ok(&listing(&listed_for_fake)),
            (_, "honest.txt") => ok(&text("the honest bytes\r\n")),
            (_, "twice.txt") => {
                let mut n = twice.lock().unwrap();
                *n += 1;
                ok(&text(if *n == 1 { "first" } else { "second" }))
            }
            _ => ok(&text("EVIL")),
        });
        let before = snapshot(root.path());
        // Matches every name without a capital Z, the empty one included.
        let (run, _) = client(&dir, &fake.url, "^[^Z]*$");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

        let mut expected = before;
        expected.insert("mid/client/honest.txt".into(), Entry::File(b"the honest bytes\r\n".to_vec()));
        expected.insert("mid/client/twice.txt".into(), Entry::File(b"first".to_vec()));
        assert_eq!(snapshot(root.path()), expected, "stdout: {} stderr: {}", run.stdout, run.stderr);

        let fetched = fake.fetched();
        for name in &fetched {
            assert!(listed.contains(name), "asked for {name:?}, which was never listed");
        }
        let count = |n: &str| fetched.iter().filter(|f| *f == n).count();
        assert_eq!(count("honest.txt"), 1, "fetched: {fetched:?}");
        assert_eq!(count("twice.txt"), 1, "a name listed twice is fetched once: {fetched:?}");
        assert_eq!(count("Zoo.txt"), 0, "fetched a name its pattern does not match");
    }

    #[test]
    fn a_listing_with_xml_illegal_control_characters_writes_no_such_name() {
        let root = TempDir::new();
        let dir = root.path().join("client");
        fs::create_dir(&dir).unwrap();
        // Raw and escaped control characters XML 1.0 forbids, next to an honest name.
        let body = response(
            "<array><data><value><array><data>\
             <value><string>bell\u{7}.txt</string></value>\
             <value><string>esc&#27;[31m.txt</string></value>\
             <value><string>nul&#0;.txt</string></value>\
             <value><string>honest.txt</string></value>\
             </data></array></value></data></array>",
        );
        let fake = Fake::peer(move |ask| match ask.mode {
            1 => Reply::Close(http("200 OK", body.as_bytes())),
            _ => ok(&text("bytes")),
        });
        let (run, took) = client(&dir, &fake.url, "");
        assert!(took < GIVE_UP);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        let written = names(&dir);
        assert!(written.is_empty() || written == ["honest.txt"], "wrote {written:?}; stderr: {}", run.stderr);
        assert_eq!(names(root.path()), ["client"]);
    }
}

mod peer_urls {
    use super::*;

    #[test]
    fn odd_urls_in_a_peer_list_fail_alone_and_the_good_peer_still_serves() {
        let good = Fake::peer(|ask| match ask.mode {
            1 => ok(&listing(["good.txt"])),
            _ => ok(&text(GOOD)),
        });
        let good_url = good.url.clone();
        let root = TempDir::new();
        let dir = root.path().join("client");
        fs::create_dir(&dir).unwrap();
        root.write("local.txt", "a local file");
        let local = format!("file://{}", root.path().join("local.txt").display());
        let long = format!("http://127.0.0.1:1/{}", "a".repeat(100_000));
        let odd = [
            local.as_str(),
            "ftp://127.0.0.1:1",
            "not a url",
            "",
            "http://",
            "http://[::1",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:1\r\nX-Injected: 1",
            long.as_str(),
        ]
        .map(String::from);
        let fake = Fake::start(move |ask, _| match ask.mode {
            0 => ok(&strings(odd.iter().map(String::as_str).chain([good_url.as_str()]))),
            _ => fault("the lister is not a peer"),
        });
        let before = snapshot(root.path());
        let (run, took) = client(&dir, &fake.url, "");
        assert!(took < GIVE_UP, "client took {took:?}");
        assert_eq!(run.status.code(), Some(1), "stderr: {}", short(&run.stderr));
        assert!(!run.stderr.contains("panicked"), "{}", short(&run.stderr));
        assert!(!run.stderr.contains("a local file") && !run.stdout.contains("a local file"));
        let mut expected = before;
        expected.insert("client/good.txt".into(), Entry::File(GOOD.as_bytes().to_vec()));
        assert_eq!(snapshot(root.path()), expected, "stderr: {}", short(&run.stderr));
    }

    #[test]
    fn a_peer_listed_many_times_is_asked_once() {
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = asked.clone();
        let fake = Fake::start(move |ask, own| match ask.mode {
            0 => ok(&strings([own, own, own])),
            mode => {
                counted.fetch_add(1, Ordering::SeqCst);
                if mode == 1 { ok(&listing(["once.txt"])) } else { ok(&text(GOOD)) }
            }
        });
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, "");
        assert_eq!(run.status.code(), Some(0), "stderr: {}", short(&run.stderr));
        assert_eq!(fs::read(dir.path().join("once.txt")).unwrap(), GOOD.as_bytes());
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one listing and one file, not three of each");
        assert!(run.stdout.starts_with("fetched \"once.txt\""), "{}", run.stdout);
    }
}

mod client_symlinks {
    use super::*;

    #[test]
    fn an_existing_symlink_with_the_fetched_name_is_neither_followed_nor_replaced() {
        let root = TempDir::new();
        let dir = root.path().join("client");
        fs::create_dir(&dir).unwrap();
        root.write("outside.txt", "outside, untouched");
        symlink(root.path().join("outside.txt"), dir.join("want.txt")).unwrap();
        // A dangling link: following it would create a file outside the folder.
        symlink(root.path().join("created.txt"), dir.join("dangling.txt")).unwrap();
        symlink("../outside.txt", dir.join("relative.txt")).unwrap();
        let fake = Fake::peer(|ask| match ask.mode {
            1 => ok(&listing(["want.txt", "dangling.txt", "relative.txt", "fresh.txt"])),
            _ => ok(&text("OVERWRITTEN")),
        });
        let before = snapshot(root.path());
        let (run, _) = client(&dir, &fake.url, "txt");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        let mut expected = before;
        expected.insert("client/fresh.txt".into(), Entry::File(b"OVERWRITTEN".to_vec()));
        assert_eq!(snapshot(root.path()), expected, "stderr: {}", run.stderr);
        assert!(!root.path().join("created.txt").exists());
    }
}

mod broken_transfers {
    use super::*;

    fn full_answer() -> Vec<u8> {
        response(&text(&bad_content())).into_bytes()
    }

    #[test]
    fn a_file_answer_cut_off_mid_stream_leaves_nothing_and_the_others_still_arrive() {
        bad_then_good(|ask| {
            let body = full_answer();
            let half = body.len() / 2;
            (ask.mode == 2).then(|| Reply::Close(cut(http_unframed(&body), half)))
        });
    }

    #[test]
    fn a_content_length_that_is_never_delivered_leaves_nothing() {
        bad_then_good(|ask| {
            let whole = http("200 OK", &full_answer());
            let half = whole.len() / 2;
            (ask.mode == 2).then(|| Reply::Close(cut(whole, half)))
        });
    }

    #[test]
    fn a_content_length_longer_than_the_complete_document_leaves_nothing() {
        // The XML is complete, the HTTP body is not: the transfer did not finish.
        bad_then_good(|ask| {
            let body = full_answer();
            let mut bytes = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                body.len() + 1000
            )
            .into_bytes();
            bytes.extend_from_slice(&body);
            (ask.mode == 2).then_some(Reply::Close(bytes))
        });
    }

    #[test]
    fn a_file_answer_that_stalls_mid_stream_times_out_and_leaves_nothing() {
        bad_then_good(|ask| {
            let whole = http("200 OK", &full_answer());
            let half = whole.len() / 2;
            (ask.mode == 2).then(|| Reply::Hold(cut(whole, half)))
        });
    }

    #[test]
    fn a_peer_that_never_answers_a_file_request_times_out() {
        bad_then_good(|ask| (ask.mode == 2).then(|| Reply::Hold(Vec::new())));
    }

    #[test]
    fn a_peer_that_never_answers_a_listing_times_out() {
        bad_then_good(|ask| (ask.mode == 1).then(|| Reply::Hold(Vec::new())));
    }

    #[test]
    fn a_peer_that_closes_without_answering_is_reported() {
        bad_then_good(|ask| (ask.mode == 2).then(|| Reply::Close(Vec::new())));
    }
}

mod bad_answers {
    use super::*;

    #[test]
    fn junk_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| Reply::Close(http("200 OK", b"this is not XML at all <<<&&&")));
    }

    #[test]
    fn a_number_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| ok("<int>42</int>"));
    }

    #[test]
    fn a_peer_list_holding_numbers_is_a_clear_error() {
        bad_peer_list(|| ok("<array><data><value><int>42</int></value></data></array>"));
    }

    #[test]
    fn a_fault_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| fault("no peers for you"));
    }

    #[test]
    fn false_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| ok("<boolean>0</boolean>"));
    }

    #[test]
    fn an_http_error_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| Reply::Close(http("500 Internal Server Error", b"oops")));
    }

    #[test]
    fn an_empty_answer_instead_of_a_peer_list_is_a_clear_error() {
        bad_peer_list(|| Reply::Close(http("200 OK", b"")));
    }

    #[test]
    fn junk_instead_of_a_listing_is_reported_and_the_others_still_arrive() {
        bad_then_good(|ask| (ask.mode == 1).then(|| Reply::Close(http("200 OK", b"\x00\xff junk"))));
    }

    #[test]
    fn a_number_instead_of_a_listing_is_reported() {
        bad_then_good(|ask| (ask.mode == 1).then(|| ok("<int>7</int>")));
    }

    #[test]
    fn a_flat_list_instead_of_a_listing_of_lists_is_reported() {
        bad_then_good(|ask| (ask.mode == 1).then(|| ok(&strings(["bad.txt"]))));
    }

    #[test]
    fn a_listing_of_numbers_is_reported() {
        bad_then_good(|ask| {
            (ask.mode == 1).then(|| ok("<array><data><value><array><data><value><int>1</int></value></data></array></value></data></array>"))
        });
    }

    #[test]
    fn a_fault_instead_of_a_listing_is_reported() {
        bad_then_good(|ask| (ask.mode == 1).then(|| fault("bad regex, says the peer")));
    }

    #[test]
    fn false_instead_of_a_listing_is_reported() {
        bad_then_good(|ask| (ask.mode == 1).then(|| ok("<boolean>0</boolean>")));
    }

    #[test]
    fn a_fault_of_100000_characters_is_shown_cut_on_one_line() {
        let long = "x".repeat(100_000);
        let fake = Fake::start(move |ask, own| match ask.mode {
            0 => ok(&strings([own])),
            _ => fault(&long),
        });
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, "");
        assert_eq!(run.status.code(), Some(1), "stderr: {}", short(&run.stderr));
        assert_eq!(run.stderr.lines().count(), 1, "stderr: {}", short(&run.stderr));
        assert!(run.stderr.contains("answered a fault: xxxxxxxxxx"), "stderr: {}", short(&run.stderr));
        assert!(run.stderr.len() < 1_000, "a line of {} bytes", run.stderr.len());
    }

    #[test]
    fn a_fault_instead_of_a_file_is_reported_and_writes_nothing() {
        bad_then_good(|ask| (ask.mode == 2).then(|| fault("No such file")));
    }

    #[test]
    fn false_instead_of_a_file_is_reported_and_writes_nothing() {
        bad_then_good(|ask| (ask.mode == 2).then(|| ok("<boolean>0</boolean>")));
    }

    #[test]
    fn a_number_instead_of_a_file_is_reported_and_writes_nothing() {
        bad_then_good(|ask| (ask.mode == 2).then(|| ok("<int>12</int>")));
    }

    #[test]
    fn junk_instead_of_a_file_is_reported_and_writes_nothing() {
        bad_then_good(|ask| {
            (ask.mode == 2).then(|| {
                Reply::Close(http("200 OK", b"<methodResponse><params><param><value><string>x</oops>"))
            })
        });
    }

    #[test]
    fn a_file_answer_in_an_encoding_the_xml_reader_would_misread_is_refused_and_writes_nothing() {
        // 0xA4 is the euro sign in ISO-8859-15, and ¤ in the ISO-8859-1 xml-rs took it for
        let body = b"<?xml version=\"1.0\" encoding=\"iso-8859-15\"?>\n<methodResponse><params><param>\
                         <value><string>\xa45\n</string></value></param></params></methodResponse>\n"
            .to_vec();
        let fake = Fake::peer(move |ask| match ask.mode {
            1 => ok(&listing(["euro.txt"])),
            _ => Reply::Close(http("200 OK", &body)),
        });
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, "");
        assert_failed_naming(&run, &fake.url);
        assert!(run.stderr.contains("\"iso-8859-15\" is not supported"), "stderr: {}", short(&run.stderr));
        assert!(dir.names().is_empty(), "wrote {:?}", dir.names());
    }

    #[test]
    fn bad_base64_instead_of_a_file_is_reported_and_writes_nothing() {
        bad_then_good(|ask| (ask.mode == 2).then(|| ok("<base64>!!!not base64!!!</base64>")));
    }
}

mod floods {
    use super::*;

    #[test]
    fn a_peer_list_of_200000_urls_is_cut_to_10000_peers() {
        // Distinct loopback addresses on a closed port: every call fails at once.
        let urls: Vec<String> = (0..200_000u32)
            .map(|i| format!("http://127.{}.{}.{}:1", 1 + i / 62_500, (i / 250) % 250, 1 + i % 250))
            .collect();
        let answer = Arc::new(strings(&urls));
        let fake = Fake::start(move |ask, _| match ask.mode {
            0 => ok(&answer),
            _ => fault("unexpected"),
        });
        let dir = TempDir::new();
        let (run, took) = client(dir.path(), &fake.url, "");
        assert!(took < Duration::from_secs(40), "client took {took:?}");
        assert_eq!(run.status.code(), Some(1), "stderr: {}", short(&run.stderr));
        assert!(!run.stderr.contains("panicked"), "{}", short(&run.stderr));
        let named = regex::Regex::new(r"http://127\.\d+\.\d+\.\d+:1\b").unwrap();
        let tried: BTreeSet<&str> = named.find_iter(&run.stderr).map(|m| m.as_str()).collect();
        assert!(!tried.is_empty(), "no failed peer named: {}", short(&run.stderr));
        assert!(tried.len() <= MAX_PEERS, "client tried {} peers", tried.len());
        assert!(dir.names().is_empty());
    }

    #[test]
    fn a_listing_of_200000_names_fetches_only_the_matching_one() {
        let mut many: Vec<String> = (0..200_000).map(|i| format!("other-{i}.dat")).collect();
        many.insert(100_000, "wanted.txt".into());
        let fake = listing_peer(&many, "wanted bytes");
        let dir = TempDir::new();
        let (run, took) = client(dir.path(), &fake.url, "^wanted");
        assert!(took < GIVE_UP, "client took {took:?}");
        assert!(!run.stderr.contains("panicked"), "{}", short(&run.stderr));
        assert_eq!(dir.names(), ["wanted.txt"], "stderr: {}", short(&run.stderr));
        assert_eq!(dir.read("wanted.txt"), b"wanted bytes");
        assert_eq!(fake.fetched(), ["wanted.txt"]);
    }

    #[test]
    fn each_refused_name_is_named_with_its_reason() {
        let names = ["Zoo.txt", ".tinyp2p-h-1-0.part", "a/b.txt", "ok.txt"].map(String::from);
        let fake = listing_peer(&names, "ok bytes");
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, "^[^Z]");
        assert_failed_naming(&run, &fake.url);
        assert_eq!(dir.names(), ["ok.txt"]);
        for (name, why) in [
            ("Zoo.txt", "the pattern, as this client reads it, does not match it"),
            (".tinyp2p-h-1-0.part", "it is a client's unfinished download"),
            ("a/b.txt", "it is not one plain file name"),
        ] {
            let line = format!("offered the name \"{name}\", which is refused: {why}\n");
            assert!(run.stderr.contains(&line), "{name}: {}", short(&run.stderr));
        }
    }

    #[test]
    fn refused_names_of_megabytes_are_shown_by_their_start() {
        let names = ["x".repeat(200_000), "y".repeat(200_000), "ok.txt".into()];
        let fake = listing_peer(&names, "ok bytes");
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, ".");
        assert_failed_naming(&run, &fake.url);
        assert_eq!(dir.names(), ["ok.txt"]);
        assert!(run.stderr.len() < 1000, "{} bytes: {}", run.stderr.len(), short(&run.stderr));
        let line = format!(
            "offered the name \"{}...\", which is refused: it is not one plain file name",
            "x".repeat(100)
        );
        assert!(run.stderr.contains(&line), "{}", short(&run.stderr));
    }

    #[test]
    fn a_listing_of_thousands_of_refused_names_is_a_few_lines_and_counts_each() {
        let mut names: Vec<String> = (0..2000).map(|i| format!("../escape-{i}.txt")).collect();
        names.push("good.txt".into());
        let fake = listing_peer(&names, "good bytes");
        let dir = TempDir::new();
        let (run, took) = client(dir.path(), &fake.url, "txt");
        assert!(took < GIVE_UP, "client took {took:?}");
        assert_failed_naming(&run, &fake.url);
        assert_eq!(dir.names(), ["good.txt"]);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 6, "five names shown, then one line for the rest: {}", short(&run.stderr));
        let why = "\"../escape-0.txt\", which is refused: it is not one plain file name";
        assert!(lines[0].contains(why), "{}", lines[0]);
        assert!(lines[5].contains("1995 more names that are refused (2000 in all)"), "{}", lines[5]);
        assert!(run.stdout.contains("1 fetched, 0 skipped, 2000 failed"), "{}", run.stdout);
    }

    /// An answer that starts like `value` and then never ends: spaces at full speed.
    fn endless(opening: &str) -> Reply {
        let head = http_unframed(format!("<?xml version=\"1.0\"?><methodResponse>{opening}").as_bytes());
        Reply::Endless(head, vec![b' '; 64 * 1024])
    }

    #[test]
    fn a_peer_list_that_never_ends_is_cut_at_the_cap() {
        bad_peer_list(|| endless("<params><param><value><array><data>"));
    }

    #[test]
    fn a_listing_that_never_ends_is_cut_at_the_cap_and_the_others_still_arrive() {
        bad_then_good(|ask| (ask.mode == 1).then(|| endless("<params><param><value><array><data><value>")));
    }

    #[test]
    fn a_listing_trickled_a_byte_at_a_time_is_cut_at_the_deadline() {
        let opening = b"<?xml version=\"1.0\"?><methodResponse><params><param><value>";
        bad_then_good(move |ask| (ask.mode == 1).then(|| Reply::Trickle(http_unframed(opening))));
    }

    #[test]
    fn a_fault_that_never_ends_is_cut_at_the_cap() {
        bad_then_good(|ask| (ask.mode == 2).then(|| endless("<fault><value><struct><member><name>")));
    }

    #[test]
    fn a_peer_list_answer_over_16_mib_is_an_error_for_that_peer() {
        let huge = Arc::new("x".repeat(MAX_ANSWER_BYTES + (1 << 20)));
        bad_peer_list(move || fault(&huge));
    }

    #[test]
    fn a_listing_over_16_mib_is_an_error_and_the_others_still_arrive() {
        let name = Arc::new(format!("{}.txt", "n".repeat(1 << 20)));
        bad_then_good(move |ask| (ask.mode == 1).then(|| ok(&listing(vec![name.as_str(); 17]))));
    }
}

// ---------------------------------------------------------------------------------------
// Hostile requests against a real node
// ---------------------------------------------------------------------------------------

const HELLO: &str = "hello, world\n";

/// A Rust node serving root/share (hello.txt, a symlink and a relative symlink to
/// root/secret.txt, a subdirectory holding the secret too), next to root/secret.txt.
struct Target {
    root: TempDir,
    share: PathBuf,
    secret: String,
    node: Node,
}

impl Target {
    fn new() -> Target {
        let root = TempDir::new();
        let share = root.path().join("share");
        fs::create_dir(&share).unwrap();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let secret = format!("TOPSECRET-{}-{}", std::process::id(), nanos.as_nanos());
        root.write("secret.txt", &secret);
        fs::write(share.join("hello.txt"), HELLO).unwrap();
        symlink(root.path().join("secret.txt"), share.join("link.txt")).unwrap();
        symlink("../secret.txt", share.join("relative.txt")).unwrap();
        fs::create_dir(share.join("subdir")).unwrap();
        fs::write(share.join("subdir/inner.txt"), &secret).unwrap();
        let node = Node::rust(PW, &share, &[]);
        Target { root, share, secret, node }
    }

    fn token(&self) -> String {
        common::token(PW, &self.node.url)
    }

    /// Posts a raw body: the 200 answer's body, or the HTTP or transport error.
    fn post(&self, body: &[u8]) -> Result<String, String> {
        let (url, body) = (self.node.url.clone(), body.to_vec());
        within("a request", move || common::post(&url, &body).map_err(|e| e.to_string()))
    }

    /// Calls f with the right token and the given mode and arg (XML inside `<value>`).
    fn call(&self, mode: &str, arg: &str) -> Result<String, String> {
        self.post(call_xml(&self.token(), mode, arg).as_bytes())
    }

    /// The answer is a fault or an HTTP error, and the secret is not in it.
    fn assert_refused(&self, what: &str, answer: Result<String, String>) {
        match answer {
            Ok(body) => {
                assert!(!body.contains(&self.secret), "{what}: the secret leaked: {}", short(&body));
                assert!(body.contains("<fault>"), "{what}: not a fault: {}", short(&body));
            }
            Err(e) => assert!(!e.contains(&self.secret), "{what}: the secret leaked: {e}"),
        }
    }

    /// A normal listing and a normal download still work.
    fn assert_serves(&self) {
        let t = self.token();
        let listed =
            rpc(&self.node.url, &t, 1, Value::String(String::new())).expect("mode 1 after hostile input");
        let names = listed.as_array().and_then(|a| a.first()).and_then(|v| v.as_array());
        let hello = Value::String("hello.txt".into());
        assert!(names.is_some_and(|n| n.contains(&hello)), "listing after hostile input: {listed:?}");
        let content = rpc(&self.node.url, &t, 2, hello).expect("mode 2 after hostile input");
        assert_eq!(content, Value::String(HELLO.into()));
    }

    /// The node's resident memory in KiB, found through its working directory.
    fn rss_kb(&self) -> u64 {
        let pid = pid_in(&self.share).expect("find the node's pid");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn assert_memory_bounded(&self, what: &str) {
        let rss = self.rss_kb();
        assert!(rss < RSS_LIMIT_KB, "{what}: node resident memory is {rss} KiB");
    }
}

/// The pid of the tinyp2p server whose working directory is `dir`.
fn pid_in(dir: &Path) -> Option<u32> {
    let want = fs::canonicalize(dir).ok()?;
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cwd = fs::read_link(e.path().join("cwd")).ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let server = cmdline.split(|b| *b == 0).any(|arg| arg == b"server");
        (cwd == want && server).then_some(pid)
    })
}

/// An XML-RPC call of f; `mode` and `arg` are the XML inside their `<value>`.
pub(crate) fn call_xml(token: &str, mode: &str, arg: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>f</methodName><params>\
         <param><value>{}</value></param><param><value>{mode}</value></param>\
         <param><value>{arg}</value></param></params></methodCall>\n",
        text(token)
    )
}

mod request_names {
    use super::*;

    #[test]
    fn names_outside_the_folder_get_a_fault_and_never_the_secret() {
        let t = Target::new();
        let absolute = t.root.path().join("secret.txt").to_string_lossy().into_owned();
        let inner = t.share.join("subdir/inner.txt").to_string_lossy().into_owned();
        let names = [
            "../secret.txt",
            absolute.as_str(),
            inner.as_str(),
            "link.txt",
            "relative.txt",
            "subdir/inner.txt",
            "subdir/../../secret.txt",
            "%2e%2e%2fsecret.txt",
            "..%2fsecret.txt",
            "..\\secret.txt",
            "./hello.txt",
            "hello.txt/",
            "/proc/self/environ",
            "missing.txt",
        ];
        for name in names {
            t.assert_refused(name, t.call("<int>2</int>", &text(name)));
            t.assert_refused(name, t.call("<int>7</int>", &text(name)));
        }
        // the fault's words, without the name: a client's error line names the file once
        let missing = t.call("<int>2</int>", &text("missing.txt")).expect("an answer");
        assert!(missing.contains("no such file") && !missing.contains("missing.txt"), "{}", short(&missing));
        t.assert_serves();
    }

    #[test]
    fn a_directory_and_the_dot_names_get_a_fault() {
        let t = Target::new();
        for name in ["subdir", ".", "..", ""] {
            t.assert_refused(name, t.call("<int>2</int>", &text(name)));
        }
        t.assert_serves();
    }

    #[test]
    fn the_listing_holds_neither_outward_symlinks_nor_directories() {
        let t = Target::new();
        let listed = rpc(&t.node.url, &t.token(), 1, Value::String(String::new()));
        let hello = Value::Array(vec![Value::String("hello.txt".into())]);
        assert_eq!(listed, Ok(Value::Array(vec![hello])));
    }
}

mod request_types {
    use super::*;

    #[test]
    fn a_mode_of_another_type_asks_for_a_file_as_in_the_original_and_never_one_outside() {
        let t = Target::new();
        for mode in ["<string>2</string>", "2", "<string>1</string>", "<double>2.0</double>", "<nil/>"] {
            let served = t.call(mode, &text("hello.txt")).unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert!(served.contains(HELLO), "{mode}: {}", short(&served));
            t.assert_refused(mode, t.call(mode, &text("../secret.txt")));
        }
        t.assert_serves();
    }

    #[test]
    fn mode_zero_with_a_string_does_not_add_one_peer_per_character() {
        let t = Target::new();
        let before = peers(&t.node);
        t.assert_refused("string", t.call("<int>0</int>", &text("http://evil.invalid:1")));
        t.assert_refused("bare string", t.call("<int>0</int>", "abc"));
        assert_eq!(peers(&t.node), before);
        t.assert_serves();
    }

    #[test]
    fn peer_urls_with_bidi_invisible_or_control_characters_are_not_kept() {
        let t = Target::new();
        let before = peers(&t.node);
        let odd = [
            "http://\u{202e}gnp.exe\u{202c}.invalid:1",
            "http://127.0.0.1\u{2066}:2",
            "http://a\u{200b}.invalid:3",
        ];
        let offered: Vec<Value> = odd.iter().map(|u| Value::from(*u)).collect();
        rpc(&t.node.url, &common::token(PW, &t.node.url), 0, Value::Array(offered)).expect("mode 0 call");
        assert_eq!(peers(&t.node), before);
        t.assert_serves();
    }

    #[test]
    fn mode_zero_with_non_string_items_gets_a_fault_and_adds_nothing() {
        let t = Target::new();
        let before = peers(&t.node);
        let items = [
            "<int>1</int>",
            "<boolean>1</boolean>",
            "<double>1.5</double>",
            "<array><data><value><string>http://nested.invalid:1</string></value></data></array>",
            "<struct><member><name>a</name><value><string>b</string></value></member></struct>",
            "<base64>aGk=</base64>",
        ];
        for item in items {
            let list = format!(
                "<array><data><value><string>http://ok.invalid:1</string></value><value>{item}</value></data></array>"
            );
            t.assert_refused(item, t.call("<int>0</int>", &list));
        }
        assert_eq!(peers(&t.node), before);
        t.assert_serves();
    }

    #[test]
    fn a_hundred_thousand_peers_offered_at_once_leave_at_most_ten_thousand() {
        let t = Target::new();
        let offered: Vec<String> = (0..100_000u32)
            .map(|i| format!("http://10.{}.{}.{}:1", i / 65_536, (i / 256) % 256, i % 256))
            .collect();
        let answer = t.call("<int>0</int>", &strings(&offered));
        if let Ok(body) = &answer {
            let n = body.matches("http://").count();
            assert!(body.contains("<fault>") || n <= MAX_PEERS, "answered {n} peers");
        }
        let peers = peers(&t.node);
        assert!(peers.len() <= MAX_PEERS, "the node keeps {} peers", peers.len());
        assert!(peers.contains(&t.node.url), "the node dropped itself from its list");
        t.assert_serves();
        t.assert_memory_bounded("after 100,000 peers");
    }

    #[test]
    fn an_invalid_regex_gets_a_fault() {
        let t = Target::new();
        for pattern in ["(", "[", "a{2,1}", "*", "(?P<x>a)(?P<x>b)"] {
            t.assert_refused(pattern, t.call("<int>1</int>", &text(pattern)));
        }
        t.assert_serves();
    }

    #[test]
    fn a_regex_too_large_to_compile_gets_a_fault_quickly() {
        let t = Target::new();
        for pattern in [r"\w{1000}{1000}", r"(a{1000}){1000}", r"(\w{1000}){1000}"] {
            let start = Instant::now();
            t.assert_refused(pattern, t.call("<int>1</int>", &text(pattern)));
            assert!(start.elapsed() < Duration::from_secs(10), "{pattern} took {:?}", start.elapsed());
        }
        t.assert_serves();
        t.assert_memory_bounded("after huge regexes");
    }
}

mod request_documents {
    use super::*;

    #[test]
    fn a_call_in_an_encoding_the_xml_reader_would_misread_is_refused_as_such() {
        // a Python client made with ServerProxy(url, encoding="iso-8859-15") asking for "€":
        // read as ISO-8859-1 that is "¤", another name, which could be another file
        let t = Target::new();
        fs::write(t.share.join("\u{a4}"), "not the file asked for").unwrap();
        let call = call_xml(&t.token(), "<int>2</int>", "<string>\u{a4}</string>");
        let call =
            call.replace("<?xml version=\"1.0\"?>", "<?xml version=\"1.0\" encoding=\"iso-8859-15\"?>");
        let body: Vec<u8> = call.chars().map(|c| if c == '\u{a4}' { 0xa4 } else { c as u8 }).collect();
        let answer = t.post(&body).expect("an answer");
        assert!(answer.contains("<fault>") && answer.contains("not supported"), "{}", short(&answer));
        assert!(!answer.contains("not the file asked for"), "{}", short(&answer));
        t.assert_serves();
    }

    #[test]
    fn a_call_declaring_thousands_of_namespaces_is_refused_as_such() {
        // xml-rs copies every namespace in scope into each element: 2,000 declarations by
        // 2,000 elements was a second of a core, 10,000 by 10,000 nineteen seconds.
        let t = Target::new();
        let declarations: String = (0..2000).map(|i| format!(" xmlns:n{i}=\"u\"")).collect();
        let body = format!(
            "<?xml version=\"1.0\"?><methodCall{declarations}><methodName>f</methodName>\
             <params>{}</params></methodCall>",
            "<x/>".repeat(2000)
        );
        let answer = common::post(&t.node.url, body.as_bytes()).expect("an answer");
        assert!(answer.contains("<fault>") && answer.contains("namespaces"), "{}", short(&answer));
        t.assert_serves();
    }

    #[test]
    fn malformed_and_truncated_xml_gets_a_fault_or_an_http_error() {
        let t = Target::new();
        let good = call_xml(&t.token(), "<int>2</int>", &text("hello.txt"));
        let truncated = good[..good.len() / 2].to_string();
        let two_params = good.replace("<param><value><string>hello.txt</string></value></param>", "");
        let four_params = good.replace("</params>", "<param><value><int>1</int></value></param></params>");
        let bodies: Vec<Vec<u8>> = [
            String::new(),
            "not xml at all".into(),
            "<methodCall>".into(),
            truncated,
            good.replace("</string></value></param></params>", "</value></string></param></params>"),
            good.replace("<int>2</int>", "<int>two</int>"),
            good.replace("<int>2</int>", "<int>99999999999999999999</int>"),
            two_params,
            four_params,
            "<?xml version=\"1.0\"?><methodCall><methodName>f</methodName></methodCall>".into(),
            "<?xml version=\"1.0\"?><methodCall><params></params></methodCall>".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .chain([b"<methodCall>\xff\xfe\x00</methodCall>".to_vec()])
        .collect();
        for body in &bodies {
            t.assert_refused(&String::from_utf8_lossy(body), t.post(body));
        }
        t.assert_serves();
    }

    #[test]
    fn an_unknown_method_gets_a_fault() {
        let t = Target::new();
        let good = call_xml(&t.token(), "<int>1</int>", &text(""));
        for method in ["g", "system.listMethods", "", "f.__class__"] {
            let body =
                good.replace("<methodName>f</methodName>", &format!("<methodName>{method}</methodName>"));
            t.assert_refused(method, t.post(body.as_bytes()));
        }
        t.assert_serves();
    }

    #[test]
    fn an_entity_expansion_body_is_refused_with_memory_flat() {
        let t = Target::new();
        let mut doctype = String::from("<!DOCTYPE lolz [<!ENTITY lol0 \"lol\">");
        for i in 1..10 {
            let prev = format!("&lol{};", i - 1).repeat(10);
            doctype.push_str(&format!("<!ENTITY lol{i} \"{prev}\">"));
        }
        let secret_path = t.root.path().join("secret.txt");
        doctype.push_str(&format!("<!ENTITY xxe SYSTEM \"file://{}\">]>", secret_path.display()));
        for entity in ["&lol9;", "&xxe;"] {
            let call = call_xml(&t.token(), "<int>1</int>", &format!("<string>{entity}</string>"));
            let body = call.replacen("\n", &format!("\n{doctype}\n"), 1);
            let start = Instant::now();
            t.assert_refused(entity, t.post(body.as_bytes()));
            assert!(start.elapsed() < Duration::from_secs(10), "{entity} took {:?}", start.elapsed());
        }
        t.assert_serves();
        t.assert_memory_bounded("after billion laughs");
    }

    #[test]
    fn an_entity_expansion_body_in_utf_16_is_refused_with_memory_flat() {
        let t = Target::new();
        // parameter entities, ten times bigger each: nine levels, 1.6 KB, took 17 GB
        let levels: String =
            (1..=9).map(|i| format!("<!ENTITY % a{i} \"{}\">", format!("%a{};", i - 1).repeat(10))).collect();
        let dtd = format!("<!DOCTYPE m [<!ENTITY % a0 \"xxxxxxxxxx\">{levels}]>");
        let call = call_xml(&t.token(), "<int>1</int>", "<string>x</string>");
        let body = format!(
            "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-16\"?>{dtd}{}",
            call.split_once("?>").unwrap().1
        );
        for bytes in [u16::to_le_bytes, u16::to_be_bytes] {
            let body: Vec<u8> = body.encode_utf16().flat_map(bytes).collect();
            let start = Instant::now();
            t.assert_refused("a UTF-16 DTD", t.post(&body));
            assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        }
        t.assert_serves();
        t.assert_memory_bounded("after a UTF-16 billion laughs");
    }

    #[test]
    fn a_deeply_nested_array_does_not_crash_the_node() {
        let t = Target::new();
        let depth = 100_000;
        let nested = format!(
            "{}<string>http://deep.invalid:1</string>{}",
            "<array><data><value>".repeat(depth),
            "</value></data></array>".repeat(depth)
        );
        t.assert_refused("nested", t.call("<int>0</int>", &nested));
        t.assert_serves();
    }

    #[test]
    fn non_post_requests_and_other_paths_get_http_errors() {
        let t = Target::new();
        let addr = t.node.url.trim_start_matches("http://");
        let get =
            common::raw_http(&t.node.url, format!("GET /RPC2 HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes());
        assert!(get.starts_with("HTTP/1.1 405") || get.starts_with("HTTP/1.0 405"), "GET: {get}");
        let body = call_xml(&t.token(), "<int>2</int>", &text("hello.txt"));
        let other = common::raw_http(
            &t.node.url,
            format!(
                "POST /../secret.txt HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert!(other.contains(" 404 "), "other path: {other}");
        assert!(!other.contains(&t.secret));
        t.assert_serves();
    }
}

mod request_sizes {
    use super::*;

    /// Reads an answer's head, or what came before the node closed the connection;
    /// panics if the node did neither within the read timeout.
    fn read_head(stream: &mut TcpStream, what: &str) -> String {
        common::read_head(stream)
            .unwrap_or_else(|partial| panic!("{what}: the node neither answered nor closed: {partial:?}"))
    }

    fn connect(t: &Target) -> TcpStream {
        let stream = TcpStream::connect(t.node.url.trim_start_matches("http://")).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    fn head(t: &Target, length: &str) -> String {
        let addr = t.node.url.trim_start_matches("http://");
        format!("POST /RPC2 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\n{length}\r\n")
    }

    #[test]
    fn a_200_mb_body_is_refused_early_with_memory_flat() {
        let t = Target::new();
        let mut stream = connect(&t);
        let start = Instant::now();
        let _ = stream.write_all(head(&t, "Content-Length: 200000000\r\n").as_bytes());
        let _ = stream.write_all(&[b'<'; 64 * 1024]);
        let answer = read_head(&mut stream, "a 200 MB body");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(9), "no answer for {took:?}: {answer:?}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.0 413"),
            "answer to a 200 MB body: {answer:?}"
        );
        t.assert_serves();
        t.assert_memory_bounded("after a 200 MB body");
    }

    #[test]
    fn a_terabyte_content_length_on_any_path_neither_aborts_nor_grows_the_node() {
        let t = Target::new();
        let addr = t.node.url.trim_start_matches("http://").to_string();
        let length = "Content-Length: 1099511627776\r\n";
        for request_head in [
            head(&t, length),
            format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n{length}\r\n"),
            format!("POST /elsewhere HTTP/1.1\r\nHost: {addr}\r\n{length}\r\n"),
        ] {
            let mut stream = connect(&t);
            let _ = stream.write_all(request_head.as_bytes());
            let _ = stream.write_all(b"abc");
            let answer = read_head(&mut stream, "a terabyte body");
            assert!(answer.is_empty() || answer.contains(" 4"), "answer: {answer:?}");
            drop(stream);
            t.assert_serves();
        }
        t.assert_memory_bounded("after terabyte bodies");
    }

    #[test]
    fn a_chunked_body_over_the_cap_is_refused_with_memory_flat() {
        let t = Target::new();
        let mut stream = connect(&t);
        let _ = stream.write_all(head(&t, "Transfer-Encoding: chunked\r\n").as_bytes());
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "<".repeat(1 << 20));
        for _ in 0..24 {
            if stream.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        let answer = read_head(&mut stream, "a chunked body");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.0 4"),
            "answer to a 24 MiB chunked body: {answer:?}"
        );
        t.assert_serves();
        t.assert_memory_bounded("after a 24 MiB chunked body");
    }

    /// Sends `prefix`, then `filler` over and over, up to `total` bytes, until the node
    /// stops reading or closes, or its memory passes the limit (checked every MiB, so a
    /// node that buffers everything does not take the machine down with it).
    fn flood_head(prefix: &[u8], filler: &[u8], total: usize) {
        let t = Target::new();
        let mut stream = connect(&t);
        let end = Instant::now() + Duration::from_secs(12);
        let (mut sent, mut checked) = (0, 0);
        let _ = stream.write_all(prefix);
        while sent < total && Instant::now() < end && stream.write_all(filler).is_ok() {
            sent += filler.len();
            if sent - checked >= 1 << 20 {
                checked = sent;
                if t.rss_kb() > RSS_LIMIT_KB {
                    break;
                }
            }
        }
        t.assert_memory_bounded(&format!("after {sent} bytes of one request head"));
        drop(stream);
        t.assert_serves();
    }

    #[test]
    #[ignore = "known limit: tiny_http 0.12 buffers a request head without any cap (README, Known limits)"]
    fn an_endless_header_line_does_not_grow_memory() {
        flood_head(b"POST /RPC2 HTTP/1.1\r\nX-Long: ", &[b'a'; 1 << 20], 160 << 20);
    }

    #[test]
    #[ignore = "known limit: tiny_http 0.12 buffers a request head without any cap (README, Known limits)"]
    fn an_endless_list_of_header_lines_does_not_grow_memory() {
        flood_head(b"POST /RPC2 HTTP/1.1\r\n", "X-A: b\r\n".repeat(1 << 17).as_bytes(), 160 << 20);
    }

    #[test]
    #[ignore = "known limit: tiny_http 0.12 buffers a request head without any cap (README, Known limits)"]
    fn an_endless_request_target_does_not_grow_memory() {
        flood_head(b"POST /", &[b'a'; 1 << 20], 160 << 20);
    }

    #[test]
    fn odd_http_framing_gets_an_http_error_or_a_fault() {
        let t = Target::new();
        let body = call_xml(&t.token(), "<int>2</int>", &text("../secret.txt"));
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let framings = [
            ("Content-Length: -1\r\n".to_string(), body.clone()),
            ("Content-Length: abc\r\n".to_string(), body.clone()),
            ("Content-Length: 99999999999999999999999\r\n".to_string(), body.clone()),
            (format!("Content-Length: {}\r\nContent-Length: 5\r\n", body.len()), body.clone()),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n".to_string(), chunked.clone()),
            ("Transfer-Encoding: chunked\r\n".to_string(), format!("zz\r\n{body}\r\n0\r\n\r\n")),
            ("Transfer-Encoding: gzip, chunked\r\n".to_string(), chunked),
        ];
        for (framing, body) in framings {
            let mut stream = connect(&t);
            let _ = stream.write_all(format!("{}{body}", head(&t, &framing)).as_bytes());
            let answer = read_head(&mut stream, &framing);
            assert!(!answer.contains(&t.secret), "{framing:?}: the secret leaked");
            let status = answer.split(' ').nth(1).unwrap_or("");
            assert!(
                answer.is_empty() || status == "200" || status.starts_with('4'),
                "{framing:?}: {answer:?}"
            );
        }
        t.assert_serves();
    }

    #[test]
    fn one_connection_pipelining_two_thousand_requests_it_never_reads_holds_no_workers() {
        let t = Target::new();
        // an answer larger than the sockets hold: the first stalls, and those after it wait
        fs::write(t.share.join("big.txt"), "x".repeat(4 << 20)).unwrap();
        let body = call_xml(&t.token(), "<int>2</int>", &text("big.txt"));
        let one = format!("{}{body}", head(&t, &format!("Content-Length: {}\r\n", body.len())));
        let mut stream = connect(&t);
        // the node closes the connection part way: the rest of the write fails, as it should
        let writer = std::thread::spawn(move || {
            let _ = stream.write_all(one.repeat(2000).as_bytes());
            stream // kept open until the end of the test
        });
        t.assert_serves();
        let pid = pid_in(&t.share).expect("the node's pid");
        let threads = || {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap().to_string();
            line.split_whitespace().nth(1).unwrap().parse::<u32>().unwrap()
        };
        // before, each request it had sent held a worker waiting its turn to answer, for as
        // long as the connection stayed open: 1,000 and more
        let freed = common::eventually(Duration::from_secs(5), || threads() < 50);
        assert!(freed, "the node holds {} threads", threads());
        let stream = writer.join().unwrap();
        t.assert_serves();
        drop(stream);
    }

    #[test]
    fn requests_refused_for_piling_up_on_one_connection_are_logged_too() {
        let t = Target::new();
        let body = call_xml(&t.token(), "<int>1</int>", &text("hello"));
        let one = format!("{}{body}", head(&t, &format!("Content-Length: {}\r\n", body.len())));
        let mut stream = connect(&t);
        // all at once, read only once all are sent: more than 4 pile up, and the node closes
        let _ = stream.write_all(one.repeat(100).as_bytes());
        let mut answers = Vec::new();
        let _ = stream.read_to_end(&mut answers);
        let refused = |l: &String| l.contains(" 429 - over 4 requests under way on one connection");
        let seen =
            common::eventually(Duration::from_secs(5), || t.node.log.lock().unwrap().iter().any(refused));
        let log = t.node.log.lock().unwrap();
        assert!(seen, "no request refused with 429 was logged:\n{}", log.join("\n"));
        assert!(log.iter().filter(|l| refused(l)).all(|l| l.contains("\"POST /RPC2 HTTP/1.1\"")), "{log:?}");
    }

    #[test]
    fn what_a_fault_and_the_log_repeat_of_a_request_is_cut_short() {
        let t = Target::new();
        let method = "m".repeat(1 << 20);
        let body =
            format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName></methodCall>");
        let answer = t.post(body.as_bytes()).expect("an answer");
        assert!(answer.contains("<fault>") && answer.contains("is not supported"), "{}", short(&answer));
        assert!(answer.len() < 2000, "a fault of {} bytes", answer.len());
        let logged = |l: &String| l.contains("fault: method");
        let seen =
            common::eventually(Duration::from_secs(5), || t.node.log.lock().unwrap().iter().any(logged));
        let log = t.node.log.lock().unwrap();
        assert!(seen, "the request was not logged");
        let line = log.iter().find(|l| logged(l)).unwrap();
        assert!(line.len() < 2000, "a log line of {} bytes", line.len());
    }

    #[test]
    fn forty_half_sent_requests_do_not_stop_the_node() {
        let t = Target::new();
        let body = call_xml(&t.token(), "<int>2</int>", &text("hello.txt"));
        let padded = format!("{body}{}", " ".repeat(3000));
        let mut stalled = Vec::new();
        for i in 0..40 {
            let mut stream = connect(&t);
            let sent = match i % 3 {
                // Half a head, no blank line.
                0 => head(&t, "Content-Length: 500\r\n")[..40].to_string(),
                // A whole head, no body.
                1 => head(&t, &format!("Content-Length: {}\r\n", padded.len())),
                // A head and more than 1024 bytes of a longer body.
                _ => format!(
                    "{}{}",
                    head(&t, &format!("Content-Length: {}\r\n", padded.len())),
                    &padded[..2000]
                ),
            };
            stream.write_all(sent.as_bytes()).expect("send half a request");
            stalled.push(stream);
        }
        t.assert_serves();
        t.assert_memory_bounded("with 40 stalled requests");
        drop(stalled);
        t.assert_serves();
    }
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

mod faults {
    use super::*;

    /// Asks a node for a 64 MiB text file of `x` on a keep-alive connection, runs `change` on
    /// the file once the answer's head has come (the node still sending: the sockets hold a few
    /// MB), and reads on until the node closes the connection or the answer is whole: the
    /// length the head declared, and the body read.
    fn answer_when(change: impl FnOnce(&Path)) -> (usize, Vec<u8>) {
        let share = TempDir::new();
        share.write("big.txt", "x".repeat(64 << 20));
        let node = Node::rust(PW, share.path(), &[]);
        let body = call_xml(&common::token(PW, &node.url), "<int>2</int>", &text("big.txt"));
        let mut stream = TcpStream::connect(node.url.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(GIVE_UP)).unwrap();
        let request = format!("POST /RPC2 HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(format!("{request}{body}").as_bytes()).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).unwrap();
        answer.truncate(n);
        let head = String::from_utf8_lossy(&answer).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
        change(&share.path().join("big.txt"));
        let mut body = answer.split_off(head.find("\r\n\r\n").expect("a whole head in the first read") + 4);
        let declared: usize =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        // keep-alive: the read ends early only if the node closes the connection
        let read = (&mut stream).take((declared - body.len()) as u64).read_to_end(&mut body);
        assert!(read.is_ok(), "the node neither sent the answer whole nor closed: {read:?}");
        (declared, body)
    }

    /// Asserts that the node closed the connection with the answer cut short, once `change` ran.
    fn assert_cut_short_when(change: impl FnOnce(&Path)) {
        let (declared, body) = answer_when(change);
        let end = String::from_utf8_lossy(&body[body.len().saturating_sub(64)..]).into_owned();
        assert!(body.len() < declared, "{} of {declared} bytes came, ending {end:?}", body.len());
        assert!(!end.contains("</methodResponse>"), "the answer ended well: {end:?}");
    }

    #[test]
    fn a_file_renamed_over_removed_or_chmodded_while_it_is_sent_arrives_whole_as_it_was_opened() {
        // what was opened stays whole: it is sent, as the original (which read it first) sent it
        let changes: [fn(&Path); 3] = [
            |path| {
                fs::write(path.with_file_name("new.txt"), "new").unwrap();
                fs::rename(path.with_file_name("new.txt"), path).unwrap();
            },
            |path| fs::remove_file(path).unwrap(),
            |path| fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap(),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let (declared, body) = answer_when(change);
            assert_eq!(body.len(), declared, "change {i}: the answer was cut short");
            let xml = String::from_utf8(body).expect("UTF-8");
            let content = xml.split_once("<string>").and_then(|(_, rest)| rest.split_once("</string>"));
            let whole =
                content.is_some_and(|(text, _)| text.len() == 64 << 20 && text.bytes().all(|b| b == b'x'));
            assert!(whole, "change {i}: not the file as it was opened");
            assert!(xml.ends_with("</methodResponse>\n"), "change {i}: {:?}", &xml[xml.len() - 64..]);
        }
    }

    #[test]
    fn a_file_that_grows_while_it_is_sent_has_its_answer_cut_short() {
        assert_cut_short_when(|path| {
            fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"more").unwrap();
        });
    }

    #[test]
    fn a_file_rewritten_in_place_at_its_size_while_it_is_sent_has_its_answer_cut_short() {
        // every length stays as the node measured it: only the change time tells
        assert_cut_short_when(|path| {
            let in_place = fs::OpenOptions::new().write(true).open(path).unwrap();
            (&in_place).write_all("y".repeat(64 << 20).as_bytes()).unwrap();
        });
    }

    #[test]
    fn a_file_rewritten_in_place_mid_download_is_not_kept_and_the_client_names_the_node() {
        let share = TempDir::new();
        share.write("big.bin", binary(64 << 20));
        let node = Node::rust(PW, share.path(), &[]);
        let dir = TempDir::new();
        let child = spawn_client(dir.path(), &node.url, "big");
        let pid = child.id().to_string();
        let started = common::eventually(Duration::from_secs(20), || {
            download_size(child.id(), dir.path()).unwrap_or(0) > 0
        });
        // Freeze the client mid-transfer, rewrite the file in place at its size, let it go on.
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        let got = download_size(child.id(), dir.path());
        let mut file = fs::OpenOptions::new().write(true).open(share.path().join("big.bin")).unwrap();
        file.write_all(&vec![b'z'; 64 << 20]).unwrap();
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let run = finish(child);
        assert!(started, "no download began; stderr: {}", run.stderr);
        assert!(got.is_some_and(|n| n < 64 << 20), "the download was not caught mid-way: {got:?} bytes");
        assert_failed_naming(&run, &node.url);
        assert!(run.stderr.contains("broke off its answer"), "stderr: {}", run.stderr);
        assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
    }

    #[test]
    fn a_node_killed_mid_transfer_leaves_no_file_and_is_named() {
        let share = TempDir::new();
        share.write("big.bin", binary(64 << 20));
        let mut node = Node::rust(PW, share.path(), &[]);
        let url = node.url.clone();
        let dir = TempDir::new();
        let child = spawn_client(dir.path(), &url, "big");
        let pid = child.id();
        // The download file may have no name (O_TMPFILE): watch the client's open files.
        let started =
            common::eventually(Duration::from_secs(20), || download_size(pid, dir.path()).unwrap_or(0) > 0);
        // Freeze the client so the transfer cannot finish, kill the node, let it go on.
        let _ = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
        let got = download_size(pid, dir.path());
        node.kill();
        let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        let run = finish(child);
        assert!(started, "no download began; stderr: {}", run.stderr);
        assert!(got.is_some_and(|n| n < 64 << 20), "the download was not cut: {got:?} bytes");
        assert_failed_naming(&run, &url);
        assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
    }

    #[test]
    fn a_node_that_cuts_off_every_answer_is_asked_for_each_file_and_not_counted_unreachable() {
        // an answer that came in part, then broke off (a file changed while sent), is an answer
        let names: Vec<String> = (0..6).map(|i| format!("f{i}.txt")).collect();
        let listed = names.clone();
        let fake = Fake::peer(move |ask| match ask.mode {
            1 => ok(&listing(&listed)),
            _ => Reply::Close(cut(http("200 OK", response(&text(&"x".repeat(100_000))).as_bytes()), 50_000)),
        });
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &fake.url, ".");
        assert_failed_naming(&run, &fake.url);
        assert_eq!(run.stderr.matches("broke off its answer").count(), 6, "{}", short(&run.stderr));
        assert!(!run.stderr.contains("not asked again"), "{}", short(&run.stderr));
        let mut fetched = fake.fetched();
        fetched.sort();
        assert_eq!(fetched, names, "each file asked for once");
        assert!(run.stdout.contains("6 failed;") && !run.stdout.contains("unreachable"), "{}", run.stdout);
        assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
    }

    #[test]
    fn a_dead_peer_is_reported_and_everything_comes_from_the_live_one() {
        let share = TempDir::new();
        share.write("a.txt", "from a\n");
        share.write("b.bin", binary(5000));
        let node = Node::rust(PW, share.path(), &[]);
        let dead = dead_url();
        let offered = Value::Array(vec![Value::String(dead.clone())]);
        rpc(&node.url, &common::token(PW, &node.url), 0, offered).expect("offer the dead peer");
        assert!(peers(&node).contains(&dead));
        let dir = TempDir::new();
        let (run, took) = client(dir.path(), &node.url, "");
        assert!(took < GIVE_UP);
        assert_failed_naming(&run, &dead);
        assert_eq!(dir.names(), ["a.txt", "b.bin"]);
        assert_eq!(dir.read("a.txt"), b"from a\n");
        assert_eq!(dir.read("b.bin"), binary(5000));
    }

    #[test]
    fn a_node_restarted_on_the_same_port_rejoins_and_serves_again() {
        let hub_dir = TempDir::new();
        let hub = Node::rust(PW, hub_dir.path(), &[]);
        let a_dir = TempDir::new();
        let mut a = Node::rust(PW, a_dir.path(), &[&hub.url]);
        let (a_url, port) = (a.url.clone(), a.port());
        assert!(peers(&hub).contains(&a_url));
        a.kill();
        a_dir.write("after-restart.txt", "back again\n");
        let mut again = None;
        for _ in 0..5 {
            common::eventually(Duration::from_secs(10), || TcpListener::bind(("127.0.0.1", port)).is_ok());
            let mut cmd = common::tinyp2p();
            cmd.args([PW, "server", "127.0.0.1", &port.to_string(), &hub.url]).current_dir(a_dir.path());
            if let Ok(node) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Node::start(cmd))) {
                again = Some(node);
                break;
            }
        }
        let again = again.expect("restart on the same port");
        assert_eq!(again.url, a_url);
        assert!(peers(&again).contains(&hub.url), "restarted node lost the hub");
        let hub_peers = peers(&hub);
        assert_eq!(hub_peers.iter().filter(|p| **p == a_url).count(), 1, "hub peers: {hub_peers:?}");
        let dir = TempDir::new();
        let (run, _) = client(dir.path(), &hub.url, "after");
        assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
        assert_eq!(dir.read("after-restart.txt"), b"back again\n");
    }

    #[test]
    fn a_client_that_cannot_write_gives_a_clear_error_and_leaves_nothing_partial() {
        let share = TempDir::new();
        share.write("small.txt", "small\n");
        share.write("big.bin", binary(256 * 1024));
        let node = Node::rust(PW, share.path(), &[]);
        let dir = TempDir::new();
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(true);
        let run = if root {
            // Root ignores permissions: use a file-size limit instead, with SIGXFSZ
            // ignored so a write past it fails with EFBIG, as on a full disk.
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\""])
                .arg(common::bin())
                .args([PW, "client", &node.url, ""])
                .current_dir(dir.path())
                .env("TINYP2P_TIMEOUT", TIMEOUT);
            let run = common::run(cmd);
            assert_eq!(dir.names(), ["small.txt"], "stderr: {}", run.stderr);
            assert!(run.stderr.contains("big.bin"), "the error names no file: {}", run.stderr);
            run
        } else {
            let mut perms = fs::metadata(dir.path()).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
            fs::set_permissions(dir.path(), perms.clone()).unwrap();
            let (run, _) = client(dir.path(), &node.url, "");
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            fs::set_permissions(dir.path(), perms).unwrap();
            assert!(dir.names().is_empty(), "left: {:?}", dir.names());
            run
        };
        assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(run.stderr.lines().any(|l| l.starts_with("tinyp2p: ")), "no error line: {}", run.stderr);
    }
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

mod tokens {
    use super::*;

    #[test]
    fn wrong_tokens_of_any_shape_get_false_and_never_a_fault() {
        let t = Target::new();
        let right = t.token();
        let mut flipped = right.clone().into_bytes();
        flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
        let mut wrong = vec![
            String::new(),
            "abc".into(),
            right[..31].to_string(),
            format!("{right}0"),
            format!(" {right}"),
            "zz".repeat(16),
            "é".repeat(32),
            String::from_utf8(flipped).unwrap(),
            right.repeat(100),
            common::token(PW, &t.node.url.replace("127.0.0.1", "localhost")),
            common::token("other password", &t.node.url),
        ];
        // The original compared strings, so uppercase hex is another token.
        if right.to_uppercase() != right {
            wrong.push(right.to_uppercase());
        }
        for token in &wrong {
            for (mode, arg) in [(1, Value::String(String::new())), (2, Value::String("hello.txt".into()))] {
                let answer = rpc(&t.node.url, token, mode, arg);
                assert_eq!(answer, Ok(Value::Bool(false)), "token {token:?}, mode {mode}");
            }
        }
        t.assert_serves();
    }
}
