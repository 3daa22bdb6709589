//! Test harness: real tinyp2p and Python peer processes on 127.0.0.1, port 0, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// The path of the tinyp2p binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tinyp2p")
}

/// The tinyp2p binary under test.
pub fn tinyp2p() -> Command {
    Command::new(bin())
}

/// Python 3 running one of the scripts in tests/; fails loudly when python3 is missing.
fn python_script(script: &str) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let ok = Command::new("python3").arg("--version").output();
    assert!(ok.is_ok(), "python3 is required by these tests and was not found");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    cmd
}

/// The Python peer of tests/peer.py; fails loudly when python3 is missing.
pub fn python_peer() -> Command {
    python_script("peer.py")
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
    pub fn start(cmd: Command) -> Node {
        Node::start_reading(cmd, true)
    }

    /// Starts `cmd` (a server), waits for its `listening on URL` line, and reads no more of its
    /// stderr, as a terminal paused with Ctrl-S or a pipe nobody reads would.
    pub fn start_unread(cmd: Command) -> Node {
        Node::start_reading(cmd, false)
    }

    /// Starts `cmd` and waits for its URL; with `on`, reads its stderr to the end.
    fn start_reading(mut cmd: Command, on: bool) -> Node {
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
                    if !on {
                        loop {
                            std::thread::park(); // the pipe stays open, unread
                        }
                    }
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

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
pub fn run(cmd: Command) -> Run {
    run_with_stdout(cmd, Stdio::piped())
}

/// Runs `cmd` as `run` does, its standard output going to `stdout` (`Run::stdout` holds it
/// only when that is a pipe).
pub fn run_with_stdout(mut cmd: Command, stdout: impl Into<Stdio>) -> Run {
    let child = cmd.stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped()).spawn().expect("spawn");
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
    let answer = post(url, &call_body(token, mode, arg)).map_err(|e| e.to_string())?;
    parse_answer(answer).map_err(|e| e.to_string())
}

/// The XML-RPC body of a call of `f(token, mode, arg)`.
pub fn call_body(token: &str, mode: i32, arg: xmlrpc::Value) -> Vec<u8> {
    let request = xmlrpc::Request::new("f").arg(token).arg(mode).arg(arg);
    let mut body = Vec::new();
    request.write_as_xml(&mut body).unwrap();
    body
}

/// Parses an XML-RPC answer with the xmlrpc crate: a fault, or XML it cannot read, is an error.
pub fn parse_answer(answer: String) -> Result<xmlrpc::Value, xmlrpc::Error> {
    xmlrpc::Request::new("unused").call(Replay(answer.into_bytes()))
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

// ---------------------------------------------------------------------------------------
// A terminal: tests/terminal.py runs a command in a real pseudo-terminal
// ---------------------------------------------------------------------------------------

/// One step of a terminal session.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// Wait until this text appears after what the last `Expect` found.
    Expect(&'a str),
    /// Type this, as is: "\r" is Enter, "\x03" Ctrl-C, "\x04" Ctrl-D.
    Send(&'a str),
    /// Send the command this signal, as `kill` would: "INT", "TERM".
    Signal(&'a str),
    /// Once the command has been quiet for 50 ms, keep what the terminal shows (`Shown::snapshots`).
    Snapshot,
}

/// What a command run in a pseudo-terminal left.
pub struct Shown {
    /// Its exit status; 124 if a step or the exit did not come in time (see `driver`).
    pub status: Option<i32>,
    /// Every byte it wrote to the terminal, escape sequences and all.
    pub raw: String,
    /// The text a person reads on the terminal at the end, line by line.
    pub screen: String,
    /// The text on the terminal at each `Key::Snapshot`, in order.
    pub snapshots: Vec<String>,
    /// What the driver said on its own stderr (why it gave up, if it did).
    pub driver: String,
}

impl Shown {
    /// Everything, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "status {:?}; driver: {}\nscreen:\n{}\nraw: {:?}",
            self.status, self.driver, self.screen, self.raw
        )
    }
}

/// Runs `program` (its path, then its arguments) in `dir` in a pseudo-terminal of 24 rows
/// and 100 columns, playing `keys`, with the environment `envs` added.
pub fn terminal(dir: &Path, envs: &[(&str, &str)], keys: &[Key], program: &[&str]) -> Shown {
    terminal_of(100, dir, envs, keys, program)
}

/// `terminal`, with a window of 24 rows and `cols` columns.
pub fn terminal_of(cols: u16, dir: &Path, envs: &[(&str, &str)], keys: &[Key], program: &[&str]) -> Shown {
    let screen = TempDir::new();
    let screen_file = screen.path().join("screen.txt");
    let snapshot = |i: usize| screen.path().join(format!("snapshot-{i}.txt"));
    let mut cmd = python_script("terminal.py");
    cmd.args(["--rows", "24", "--cols", &cols.to_string(), "--deadline", "40", "--screen"]).arg(&screen_file);
    let mut snapshots = 0;
    for key in keys {
        match key {
            Key::Expect(text) => cmd.args(["--expect", text]),
            Key::Send(text) => cmd.args(["--send", &text.replace('\\', "\\\\")]),
            Key::Signal(name) => cmd.args(["--signal", name]),
            Key::Snapshot => {
                snapshots += 1;
                cmd.arg("--snapshot").arg(snapshot(snapshots - 1))
            }
        };
    }
    cmd.arg("--").args(program).current_dir(dir).envs(envs.iter().copied());
    let run = run(cmd);
    Shown {
        status: run.status.code(),
        raw: run.stdout,
        screen: std::fs::read_to_string(&screen_file).unwrap_or_default(),
        snapshots: (0..snapshots).map(|i| std::fs::read_to_string(snapshot(i)).unwrap_or_default()).collect(),
        driver: run.stderr,
    }
}

// ---------------------------------------------------------------------------------------
// A shell with its commands piped in
// ---------------------------------------------------------------------------------------

/// A `tinyp2p PW shell` process reading commands from a pipe; killed on drop.
pub struct Shell {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// The URL the node printed.
    pub url: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// While set, stdout is not read, as a terminal paused with Ctrl-S would not.
    paused: Arc<AtomicBool>,
}

/// Appends everything `from` yields to `to`, line by line as it comes, but none while `paused`.
fn collect(
    from: impl std::io::Read + Send + 'static,
    to: Arc<Mutex<String>>,
    paused: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            while paused.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                break;
            }
            to.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    })
}

impl Shell {
    /// Starts a shell node in `dir` joining `peers`, and waits for its `listening on` line.
    pub fn start(password: &str, dir: &Path, peers: &[&str]) -> Shell {
        let mut cmd = tinyp2p();
        cmd.args([password, "shell", "127.0.0.1", "0"]).args(peers).current_dir(dir);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shell");
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let paused = Arc::new(AtomicBool::new(false));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone(), paused.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone(), Arc::default()),
        ];
        let stdin = child.stdin.take();
        let mut shell = Shell { child, stdin, url: String::new(), stdout, stderr, readers, paused };
        let url = || {
            let err = shell.stderr.lock().unwrap();
            err.lines().find_map(|l| l.strip_prefix("listening on ")).map(str::to_string)
        };
        let found = eventually(START_DEADLINE, || url().is_some());
        assert!(found, "the shell printed no URL; stderr:\n{}", shell.stderr());
        shell.url = url().unwrap();
        shell
    }

    /// Types one command (or several, one a line, in one write).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write a command");
        stdin.flush().unwrap();
    }

    /// Stops reading stdout (`true`), as a terminal paused with Ctrl-S, or reads it again.
    pub fn pause_stdout(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// The shell's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All the shell wrote on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// All the shell wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stdout holds `count` lines that start with `start`; panics after RUN_DEADLINE.
    pub fn wait_for_lines(&self, start: &str, count: usize) {
        let seen = || self.stdout().lines().filter(|l| l.starts_with(start)).count();
        let came = eventually(RUN_DEADLINE, || seen() >= count);
        assert!(came, "stdout never held {count} lines starting {start:?}:\n{}", self.stdout());
    }

    /// Closes stdin (the end of input) and waits for the shell to exit.
    pub fn finish(mut self) -> Run {
        self.pause_stdout(false);
        drop(self.stdin.take());
        let end = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the shell") {
                break status;
            }
            assert!(Instant::now() < end, "the shell did not exit at the end of input:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Run { status, stdout: self.stdout(), stderr: self.stderr() }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// A fake peer: a scripted XML-RPC responder for what real nodes do not do on demand
// ---------------------------------------------------------------------------------------

/// What the fake does with one request.
pub enum Reply {
    /// A 200 answer holding this XML-RPC value (the XML inside `<value>`).
    Value(String),
    /// Nothing at all: the connection is held open, silent.
    Silent,
    /// A file answer with a Content-Length of `len` bytes, of which the head and a few KiB
    /// come, then nothing more: the connection is held open.
    Stall(u64),
    /// A file answer with a Content-Length of `len` bytes, trickled a KiB every 10 ms: it
    /// flows but does not end while the test runs.
    Trickle(u64),
}

/// A scripted responder on 127.0.0.1: answers each request with `script(mode, own URL)`.
pub struct Fake {
    /// Its URL.
    pub url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

/// The mode (second parameter) of an XML-RPC call to `f`; -1 when unreadable.
fn call_mode(body: &str) -> i64 {
    let re =
        regex::Regex::new(r"(?s)<param>.*?</param>\s*<param>\s*<value>\s*<(?:int|i4)>\s*(-?\d+)").unwrap();
    re.captures(body).and_then(|c| c[1].parse().ok()).unwrap_or(-1)
}

/// Reads one request; its body, or None if the connection ended first.
fn read_call(conn: &mut std::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = std::io::Read::read(conn, &mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok())?;
    while buf.len() < head_end + length {
        let n = std::io::Read::read(conn, &mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned())
}

/// The head and the start of a file answer of `len` bytes, sent as base64.
fn file_head(len: u64) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    out.extend_from_slice(b"<?xml version=\"1.0\"?><methodResponse><params><param><value><base64>");
    out
}

impl Fake {
    /// Starts a fake answering every request with `script(mode, own URL)`.
    pub fn start(script: impl Fn(i64, &str) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (own, stopped, keep) = (url.clone(), stop.clone(), held.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (script, own, stopped, keep) =
                    (script.clone(), own.clone(), stopped.clone(), keep.clone());
                std::thread::spawn(move || Fake::serve(conn, &*script, &own, &stopped, &keep));
            }
        });
        Fake { url, stop, held }
    }

    /// Answers the requests of one connection.
    fn serve(
        mut conn: std::net::TcpStream,
        script: &(dyn Fn(i64, &str) -> Reply + Send + Sync),
        own: &str,
        stop: &std::sync::atomic::AtomicBool,
        held: &Mutex<Vec<std::net::TcpStream>>,
    ) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(RUN_DEADLINE));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        while let Some(body) = read_call(&mut conn) {
            match script(call_mode(&body), own) {
                Reply::Value(value) => {
                    let xml = format!(
                        "<?xml version=\"1.0\"?><methodResponse><params><param><value>{value}\
                         </value></param></params></methodResponse>"
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                        xml.len()
                    );
                    if conn.write_all(format!("{head}{xml}").as_bytes()).is_err() {
                        return;
                    }
                }
                Reply::Silent => return held.lock().unwrap().push(conn),
                Reply::Stall(len) => {
                    let mut bytes = file_head(len);
                    bytes.extend(b"QUJD".repeat(1024));
                    let _ = conn.write_all(&bytes);
                    return held.lock().unwrap().push(conn);
                }
                Reply::Trickle(len) => {
                    let _ = conn.write_all(&file_head(len));
                    let kib = b"QUJD".repeat(256);
                    while !stop.load(Ordering::Relaxed) && conn.write_all(&kib).is_ok() {
                        std::thread::sleep(Duration::from_millis(10)); // the pace is the point
                    }
                    return;
                }
            }
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.held.lock().unwrap().clear();
    }
}

/// XML-RPC value: an array of strings (names or URLs, no escapes needed).
pub fn xml_strings(items: &[&str]) -> String {
    let values: String = items.iter().map(|s| format!("<value><string>{s}</string></value>")).collect();
    format!("<array><data>{values}</data></array>")
}

/// XML-RPC value: a mode-1 listing `[[names]]`.
pub fn xml_listing(names: &[&str]) -> String {
    format!("<array><data><value>{}</value></data></array>", xml_strings(names))
}

/// Reads a response's head, or what came before the connection closed; `Err` with what
/// came if the connection neither answered nor closed within the stream's read timeout.
pub fn read_head(stream: &mut std::net::TcpStream) -> Result<String, String> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match std::io::Read::read(stream, &mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(String::from_utf8_lossy(&answer).into_owned());
            }
            Err(_) => break, // reset: closed
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
