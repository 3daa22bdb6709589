//! Test harness: real tinyp2p and Python peer processes on 127.0.0.1, port 0, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

/// How long a node may take to join and print its URL: generous, CI machines are shared.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one client run may take before the test calls it hung.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh folder under the system temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new, empty, uniquely named folder.
    pub fn new() -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tinyp2p-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file into the folder.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), content).expect("write test file");
    }

    /// Reads a file of the folder.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.0.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// The sorted names in the folder.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The token a node started as `url` accepts: hex HMAC-MD5 of the URL keyed by the password.
pub fn token(password: &str, url: &str) -> String {
    let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The tinyp2p binary under test.
pub fn tinyp2p() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tinyp2p"))
}

/// The Python peer of tests/peer.py; fails loudly when python3 is missing.
pub fn python_peer() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer.py");
    let ok = Command::new("python3").arg("--version").output();
    assert!(ok.is_ok(), "python3 is required by the interop tests and was not found");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    cmd
}

/// A running server process; killed and reaped on drop.
pub struct Node {
    child: Child,
    /// The URL the node printed: the one its token is bound to.
    pub url: String,
    /// Every stderr line the node printed so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `cmd` (a server) and waits for its `listening on URL` line.
    pub fn start(mut cmd: Command) -> Node {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let (tx, rx) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let url = line.strip_prefix("listening on ").map(str::to_string);
                sink.lock().unwrap().push(line);
                if let Some(url) = url {
                    let _ = tx.send(url);
                }
            }
        });
        let url = match rx.recv_timeout(START_DEADLINE) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("node printed no URL; its log: {:?}", log.lock().unwrap());
            }
        };
        Node { child, url, log }
    }

    /// Starts a Rust node serving `dir`, joining `peers`.
    pub fn rust(password: &str, dir: &Path, peers: &[&str]) -> Node {
        let mut cmd = tinyp2p();
        cmd.args([password, "server", "127.0.0.1", "0"]).args(peers).current_dir(dir);
        Node::start(cmd)
    }

    /// Starts a Python peer (the original's behaviour) serving `dir`, joining `peers`.
    pub fn python(password: &str, dir: &Path, peers: &[&str]) -> Node {
        let mut cmd = python_peer();
        cmd.args([password, "server", "127.0.0.1", "0"]).args(peers).current_dir(dir);
        Node::start(cmd)
    }

    /// The node's port.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Kills the node now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's peer list, asked with a mode-0 call that offers nothing.
    pub fn peers(&self, password: &str) -> Vec<String> {
        let answer = call(&self.url, &token(password, &self.url), 0, xmlrpc::Value::Array(vec![]));
        let list = answer.expect("mode 0 call");
        list.as_array()
            .expect("peer list is an array")
            .iter()
            .map(|v| v.as_str().expect("peer is a string").to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished client run left: exit status and its two streams.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end within RUN_DEADLINE, panicking if it hangs.
pub fn run(mut cmd: Command) -> Run {
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (tx, rx): (_, Receiver<std::io::Result<std::process::Output>>) = channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(output) => output.expect("wait for child"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command hung past {RUN_DEADLINE:?}: {cmd:?}");
        }
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the Rust client in `dir`.
pub fn rust_client(password: &str, dir: &Path, url: &str, pattern: &str) -> Run {
    let mut cmd = tinyp2p();
    cmd.args([password, "client", url, pattern]).current_dir(dir);
    run(cmd)
}

/// Runs the Python client (the original's loop) in `dir`.
pub fn python_client(password: &str, dir: &Path, url: &str, pattern: &str) -> Run {
    let mut cmd = python_peer();
    cmd.args([password, "client", url, pattern]).current_dir(dir);
    run(cmd)
}

/// Calls `f(token, mode, arg)` on a node with the xmlrpc crate; Err holds the failure text.
pub fn call(url: &str, token: &str, mode: i32, arg: xmlrpc::Value) -> Result<xmlrpc::Value, String> {
    let request = xmlrpc::Request::new("f").arg(token).arg(mode).arg(arg);
    let mut body = Vec::new();
    request.write_as_xml(&mut body).unwrap();
    let answer = post(url, &body).map_err(|e| e.to_string())?;
    let wrapped = xmlrpc::Request::new("unused");
    wrapped.call(Replay(answer.into_bytes())).map_err(|e| e.to_string())
}

/// A Transport that answers with bytes already received.
struct Replay(Vec<u8>);

impl xmlrpc::Transport for Replay {
    type Stream = std::io::Cursor<Vec<u8>>;
    fn transmit(
        self,
        _: &xmlrpc::Request<'_>,
    ) -> Result<Self::Stream, Box<dyn std::error::Error + Send + Sync>> {
        Ok(std::io::Cursor::new(self.0))
    }
}

/// Posts raw bytes to `url` + `/RPC2` and returns the body of a 200 answer.
pub fn post(url: &str, body: &[u8]) -> Result<String, ureq::Error> {
    let target = format!("{url}/RPC2");
    let mut response = ureq::post(&target).header("Content-Type", "text/xml").send(body)?;
    response.body_mut().with_config().limit(64 << 20).read_to_string()
}

/// Sends raw bytes over a fresh TCP connection and returns all the node answered.
pub fn raw_http(url: &str, request: &[u8]) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until `check` holds or `deadline` passes; returns whether it held.
pub fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
