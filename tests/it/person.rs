//! Issue 9, "Pleasant in a person's hands": what a person sees, against real processes.
//!
//! - `progress`: a live display on a terminal (a real pseudo-terminal, tests/terminal.py),
//!   the `fetched` lines whole above it, nothing of it in a pipe, a file or with `-q`.
//! - `urls`: the other spellings of a node's URL found and named; a real wrong password.
//! - `start`: what a server says when it starts, and its Python-like request log.
//! - `list`: a look before fetching.
//! - `plain_words`: errors in a person's words, once; the glob hint; quoting.
//! - `usage_errors`: bad settings and bad patterns are exit 2 before any network call.
//! - `help`: the modes, the settings and an example.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::common::{self, Fake, Key, Node, Reply, Run, TempDir};

/// The password of the nodes these tests start.
const PW: &str = "person-pw";

/// The settings a person may set; removed so that the tests run with the defaults.
const SETTINGS: [&str; 4] =
    ["TINYP2P_PASSWORD", "TINYP2P_TIMEOUT", "TINYP2P_SPEED_LIMIT", "TINYP2P_SPEED_TIME"];

/// The binary with `args`, run in `dir`, with no setting in the environment.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = common::tinyp2p();
    cmd.args(args).current_dir(dir);
    for name in SETTINGS {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs the binary with `args` in `dir`, its output going to pipes.
fn tinyp2p(dir: &Path, args: &[&str]) -> Run {
    common::run(command(dir, args))
}

/// Runs the binary with `args` in `dir` in a pseudo-terminal, no keys typed.
fn on_terminal(dir: &Path, args: &[&str]) -> common::Shown {
    let mut program = vec![common::bin()];
    program.extend_from_slice(args);
    common::terminal(dir, &[], &[], &program)
}

/// `len` bytes from /dev/urandom: content no encoding shortcut applies to.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    let mut source = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut source, &mut bytes).expect("read /dev/urandom");
    bytes
}

/// The lines of terminal output, without the carriage returns the terminal adds.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

/// The `fetched "NAME" (N bytes) from URL` line of the Rust client.
fn fetched_line(name: &str, len: usize, url: &str) -> String {
    format!("fetched {name:?} ({len} bytes) from {url}")
}

/// Asserts the messages on stderr are plain words: prefixed, no OS error codes, no HTTP
/// library jargon, no panic, and no URL twice in one line.
fn assert_plain(run: &Run) {
    let url = Regex::new(r"http://[^\s,;)]+").unwrap();
    for line in run.stderr.lines() {
        assert!(line.starts_with("tinyp2p: "), "a stderr line without the prefix: {line:?}");
        for jargon in
            ["(os error", "timeout: per read", "Timeout(", "io: ", "Io(", "panicked", "transport error"]
        {
            assert!(!line.contains(jargon), "{jargon:?} in {line:?}");
        }
        let urls: Vec<&str> = url.find_iter(line).map(|m| m.as_str()).collect();
        let distinct: BTreeSet<&str> = urls.iter().copied().collect();
        assert_eq!(urls.len(), distinct.len(), "a URL named twice in {line:?}");
    }
}

/// A URL where nothing listens: a port just bound and released.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// A listening port that must never be called: proof that no network call was made.
struct Untouched {
    listener: TcpListener,
    url: String,
}

impl Untouched {
    fn new() -> Untouched {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        Untouched { listener, url }
    }

    /// Panics if anything connected since the last check.
    fn assert_untouched(&self, what: &str) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(_) => panic!("{what} connected to {} before refusing its command line", self.url),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A Rust node sharing `files` from a fresh folder, which lives as long as the TempDir.
fn node_sharing(files: &[(&str, &[u8])], peers: &[&str]) -> (TempDir, Node) {
    let dir = TempDir::new();
    for (name, content) in files {
        dir.write(name, content);
    }
    let node = Node::rust(PW, dir.path(), peers);
    (dir, node)
}

/// Waits until `node` lists `n` peers.
fn wait_for_peers(node: &Node, n: usize) {
    let joined = common::eventually(common::START_DEADLINE, || node.peers(PW).len() >= n);
    assert!(joined, "{} lists {:?}, not {n} peers", node.url, node.peers(PW));
}

/// Waits until the node's log holds a line starting `start`, and returns the log.
fn log_with(node: &Node, start: &str) -> Vec<String> {
    let log = || node.log.lock().unwrap().clone();
    let came = common::eventually(common::START_DEADLINE, || log().iter().any(|l| l.starts_with(start)));
    assert!(came, "no line starting {start:?} in the log: {:#?}", log());
    log()
}

/// The small files next to the large one in the progress tests.
const SMALL: [(&str, &[u8]); 3] =
    [("a.txt", b"first small file\n"), ("b.txt", b"second small file\n"), ("c.txt", b"third\n")];

mod progress {
    use super::*;

    /// A node sharing the small files and `big.bin` of `len` random bytes.
    fn node_with_big_file(len: usize) -> (TempDir, Node, Vec<u8>) {
        let big = random_bytes(len);
        let mut files: Vec<(&str, &[u8])> = SMALL.to_vec();
        files.push(("big.bin", &big));
        let (dir, node) = node_sharing(&files, &[]);
        (dir, node, big)
    }

    /// Asserts `dir` received the small files and `big`.
    fn assert_all_arrived(dir: &TempDir, big: &[u8]) {
        for (name, content) in SMALL {
            assert_eq!(dir.read(name), content, "{name}");
        }
        assert!(dir.read("big.bin") == big, "big.bin arrived different");
    }

    #[test]
    fn a_terminal_shows_live_totals_and_the_large_download_with_its_percent() {
        let (_shared, node, big) = node_with_big_file(64 << 20);
        let dir = TempDir::new();
        let shown = on_terminal(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert_all_arrived(&dir, &big);
        assert!(shown.raw.contains("\x1b[2K"), "no line ever cleared: no live display\n{}", shown.dump());
        let totals =
            Regex::new(r"\d of 4 files, [\d.]+ (B|KiB|MiB) received at [\d.]+ (B|KiB|MiB|GiB)/s").unwrap();
        let frames: BTreeSet<&str> = totals.find_iter(&shown.raw).map(|m| m.as_str()).collect();
        assert!(frames.len() >= 2, "the totals never changed on screen: {frames:?}\n{}", shown.dump());
        let large = Regex::new(r#""big\.bin" +\d{1,3}%"#).unwrap();
        assert!(large.is_match(&shown.raw), "no line for big.bin with its percent\n{}", shown.dump());
        let small = Regex::new(r#""[abc]\.txt" +\d{1,3}%"#).unwrap();
        assert!(!small.is_match(&shown.raw), "a small file got a progress line of its own");
    }

    #[test]
    fn a_name_of_wide_characters_is_cut_to_the_screen_and_leaves_no_progress_line_behind() {
        // 60 CJK characters: 120 columns, wider than the 100 of the terminal
        let name = format!("{}.bin", "議事録".repeat(20));
        let big = random_bytes(64 << 20);
        let (_shared, node) = node_sharing(&[(&name, &big)], &[]);
        let dir = TempDir::new();
        let shown = on_terminal(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert!(dir.read(&name) == big, "{name} arrived different");
        assert!(shown.raw.contains("議事録"), "no line for the download on screen\n{}", shown.dump());
        let screen = lines(&shown.screen);
        for line in &screen {
            assert!(!line.contains("received at") && !line.contains('%'), "left on screen: {line:?}");
        }
        // the fetched line is wider than the screen: it wraps, and nothing comes in between
        let fetched = fetched_line(&name, big.len(), &node.url);
        assert!(screen.concat().starts_with(&fetched), "{}", shown.screen);
        assert!(screen.last().unwrap().starts_with("done: 1 fetched"), "{}", shown.screen);
    }

    #[test]
    fn a_signal_that_ends_a_download_clears_the_display_and_leaves_nothing_partial() {
        let fake = Fake::start(|mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own])),
            1 => Reply::Value(common::xml_listing(&["endless.bin"])),
            _ => Reply::Trickle(1 << 30),
        });
        // by `kill`, and Ctrl-C typed (which the terminal echoes as `^C`, under the display)
        let ends = [(Key::Signal("INT"), 130), (Key::Signal("TERM"), 143), (Key::Signal("HUP"), 129)];
        for (end, status) in ends.into_iter().chain([(Key::Send("\x03"), 130)]) {
            let dir = TempDir::new();
            let program = [common::bin(), PW, "client", fake.url.as_str(), "."];
            let keys = [Key::Expect("\"endless.bin\""), Key::Expect("received at"), end];
            let shown = common::terminal(dir.path(), &[], &keys, &program);
            assert_eq!(shown.status, Some(status), "{}", shown.dump());
            for line in lines(&shown.screen) {
                assert!(!line.contains("received at") && !line.ends_with('%'), "{status}: left {line:?}");
            }
            assert!(dir.names().is_empty(), "{status}: left {:?}", dir.names());
        }
    }

    #[test]
    fn parallel_large_downloads_each_get_a_whole_line_of_their_own_at_any_width() {
        let fake = Fake::start(|mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own])),
            1 => Reply::Value(common::xml_listing(&["a.bin", "b.bin", "c.bin"])),
            _ => Reply::Trickle(1 << 30),
        });
        // at 30 columns the totals wrap onto a second line
        for cols in [100, 30] {
            let dir = TempDir::new();
            let program = [common::bin(), PW, "client", fake.url.as_str(), "."];
            let names = [Key::Expect("\"a.bin\""), Key::Expect("\"b.bin\""), Key::Expect("\"c.bin\"")];
            let keys: Vec<Key> = names.into_iter().chain([Key::Snapshot, Key::Signal("TERM")]).collect();
            let shown = common::terminal_of(cols, dir.path(), &[], &keys, &program);
            assert_eq!(shown.status, Some(143), "{cols} columns: {}", shown.dump());
            let snapshot = &shown.snapshots[0];
            let bars: Vec<&str> = lines(snapshot).into_iter().filter(|l| l.ends_with('%')).collect();
            assert_eq!(bars.len(), 3, "{cols} columns, not a line per download:\n{snapshot}");
            for (bar, name) in bars.iter().zip(["\"a.bin\"", "\"b.bin\"", "\"c.bin\""]) {
                assert!(bar.starts_with(&format!("  {name}")), "{cols} columns: {bar:?} in\n{snapshot}");
            }
            assert!(lines(snapshot)[0].starts_with("0 of 3 files,"), "{cols} columns:\n{snapshot}");
            assert!(shown.screen.trim().is_empty(), "{cols} columns, left:\n{}", shown.screen);
        }
    }

    #[test]
    fn the_fetched_lines_stay_whole_above_the_display_which_is_cleared_at_the_end() {
        let (_shared, node, big) = node_with_big_file(64 << 20);
        let dir = TempDir::new();
        let shown = on_terminal(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert_all_arrived(&dir, &big);
        let screen = lines(&shown.screen);
        let mut want: Vec<String> = SMALL.iter().map(|(n, c)| fetched_line(n, c.len(), &node.url)).collect();
        want.push(fetched_line("big.bin", big.len(), &node.url));
        for line in &want {
            let n = screen.iter().filter(|l| *l == line).count();
            assert_eq!(n, 1, "{line:?} is not on the screen once, whole:\n{}", shown.screen);
        }
        let fetched: Vec<&&str> = screen.iter().filter(|l| l.starts_with("fetched ")).collect();
        assert_eq!(fetched.len(), 4, "garbled or extra fetched lines:\n{}", shown.screen);
        for line in &screen {
            assert!(!line.contains("received at") && !line.ends_with('%'), "left on screen: {line:?}");
        }
        let last = screen.last().copied().unwrap_or_default();
        assert!(last.starts_with("done: 4 fetched, 0 skipped, 0 failed; 64.00 MiB in "), "{}", shown.screen);
    }

    #[test]
    fn a_pipe_gets_plain_lines_and_a_summary_with_bytes_and_time_but_no_display() {
        let (_shared, node, big) = node_with_big_file(2 << 20);
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_all_arrived(&dir, &big);
        assert_eq!(run.stderr, "", "stderr of a run that went well, into a pipe");
        assert!(!run.stdout.contains(['\x1b', '\r']), "terminal codes in a pipe: {:?}", run.stdout);
        let out = lines(&run.stdout);
        assert_eq!(out.len(), 5, "4 fetched lines and the summary:\n{}", run.stdout);
        assert!(out.contains(&fetched_line("big.bin", big.len(), &node.url).as_str()), "{}", run.stdout);
        let summary =
            Regex::new(r"^done: 4 fetched, 0 skipped, 0 failed; 2\.00 MiB in \d+\.\d\d s$").unwrap();
        assert!(summary.is_match(out[4]), "summary: {:?}", out[4]);
    }

    #[test]
    fn quiet_on_a_terminal_prints_nothing_when_all_goes_well() {
        let (_shared, node, big) = node_with_big_file(2 << 20);
        for flag in ["-q", "--quiet"] {
            let dir = TempDir::new();
            let shown = on_terminal(dir.path(), &[flag, PW, "client", &node.url, "."]);
            assert_eq!(shown.status, Some(0), "{flag}: {}", shown.dump());
            assert_all_arrived(&dir, &big);
            assert_eq!(shown.raw, "", "{flag} printed something");
        }
    }

    #[test]
    fn a_terminal_that_cannot_move_its_cursor_gets_plain_lines_and_no_display() {
        let (_shared, node, big) = node_with_big_file(2 << 20);
        for term in ["dumb", "emacs"] {
            let dir = TempDir::new();
            let program = [common::bin(), PW, "client", &node.url, "."];
            let shown = common::terminal(dir.path(), &[("TERM", term)], &[], &program);
            assert_eq!(shown.status, Some(0), "TERM={term}: {}", shown.dump());
            assert_all_arrived(&dir, &big);
            assert!(!shown.raw.contains('\x1b'), "TERM={term}: terminal codes: {:?}", shown.raw);
            let want = fetched_line("big.bin", big.len(), &node.url);
            assert!(lines(&shown.screen).contains(&want.as_str()), "TERM={term}: {}", shown.dump());
        }
    }

    #[test]
    fn stdout_through_a_pipe_gets_no_display_and_every_fetched_line_reaches_the_screen() {
        let (_shared, node, big) = node_with_big_file(2 << 20);
        let dir = TempDir::new();
        // as `tinyp2p ... | tee log` would: the lines reach the terminal through another process
        let program = ["sh", "-c", "\"$0\" \"$@\" | cat", common::bin(), PW, "client", &node.url, "."];
        let shown = common::terminal(dir.path(), &[], &[], &program);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert_all_arrived(&dir, &big);
        assert!(!shown.raw.contains('\x1b'), "terminal codes: {:?}", shown.raw);
        let screen = lines(&shown.screen);
        assert_eq!(screen.iter().filter(|l| l.starts_with("fetched ")).count(), 4, "{}", shown.screen);
    }

    #[test]
    fn while_a_silent_node_holds_up_the_listings_the_display_says_how_many_nodes_are_asked() {
        let silent = Fake::start(|_, _| Reply::Silent);
        let other = silent.url.clone();
        let fake = Fake::start(move |mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own, &other])),
            _ => Reply::Silent,
        });
        let dir = TempDir::new();
        let program = [common::bin(), PW, "client", fake.url.as_str(), "."];
        let keys = [Key::Expect("asking"), Key::Snapshot, Key::Signal("TERM")];
        let shown = common::terminal(dir.path(), &[], &keys, &program);
        assert_eq!(shown.status, Some(143), "{}", shown.dump());
        let first = lines(&shown.snapshots[0]).first().map(|l| l.to_string()).unwrap_or_default();
        assert!(first.starts_with("asking 2 nodes for names, 0 B received"), "{}", shown.snapshots[0]);
        assert!(shown.screen.trim().is_empty(), "left:\n{}", shown.screen);
    }

    #[test]
    fn names_refused_count_among_the_files_done_and_to_fetch_and_a_node_answering_false_does_not() {
        let erring = Fake::start(|_, _| Reply::Value("<boolean>0</boolean>".into()));
        let other = erring.url.clone();
        let fake = Fake::start(move |mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own, &other])),
            1 => Reply::Value(common::xml_listing(&["../evil.bin", "big.bin"])),
            _ => Reply::Trickle(1 << 30),
        });
        let dir = TempDir::new();
        let program = [common::bin(), PW, "client", fake.url.as_str(), "."];
        let keys = [Key::Expect("\"big.bin\""), Key::Snapshot, Key::Signal("TERM")];
        let shown = common::terminal(dir.path(), &[], &keys, &program);
        assert_eq!(shown.status, Some(143), "{}", shown.dump());
        assert!(shown.snapshots[0].contains("1 of 2 files,"), "{}", shown.snapshots[0]);
    }

    #[test]
    fn stderr_into_a_file_gets_no_display_even_with_stdout_on_a_terminal() {
        let (_shared, node, big) = node_with_big_file(2 << 20);
        let dir = TempDir::new();
        let script = "exec \"$0\" \"$@\" 2>stderr.txt";
        let program = ["sh", "-c", script, common::bin(), PW, "client", &node.url, "."];
        let shown = common::terminal(dir.path(), &[], &[], &program);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert_eq!(std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap(), "");
        std::fs::remove_file(dir.path().join("stderr.txt")).unwrap();
        assert_all_arrived(&dir, &big);
        assert!(!shown.raw.contains('\x1b'), "terminal codes: {:?}", shown.raw);
        let want = fetched_line("big.bin", big.len(), &node.url);
        assert!(lines(&shown.raw).contains(&want.as_str()), "{}", shown.dump());
    }
}

mod urls {
    use super::*;

    const HELLO: &[u8] = b"hello\n";

    /// Runs the client with `password` against `url` in a fresh folder.
    fn client(password: &str, url: &str) -> (TempDir, Run) {
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[password, "client", url, "."]);
        (dir, run)
    }

    #[test]
    fn localhost_for_a_node_started_as_127_0_0_1_is_found_and_the_note_names_its_url() {
        let (_shared, node) = node_sharing(&[("hello.txt", HELLO)], &[]);
        let typed = format!("http://localhost:{}", node.port());
        let (dir, run) = client(PW, &typed);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(dir.read("hello.txt"), HELLO);
        let note = format!("tinyp2p: note: the node at {typed} goes by {}; using that\n", node.url);
        assert_eq!(run.stderr, note);
        assert!(run.stdout.contains(&fetched_line("hello.txt", HELLO.len(), &node.url)), "{}", run.stdout);
        assert_plain(&run);
    }

    #[test]
    fn a_peer_named_by_localhost_is_joined_by_the_url_it_goes_by_and_the_spelling_spreads_nowhere() {
        for kind in ["rust", "python"] {
            let dir_a = TempDir::new();
            dir_a.write("a.txt", b"a\n");
            let a = if kind == "rust" {
                Node::rust(PW, dir_a.path(), &[])
            } else {
                Node::python(PW, dir_a.path(), &[])
            };
            // C, a Python node, is given too, first: the join must not hand it the spelling
            let (dir_c, typed) = (TempDir::new(), format!("http://localhost:{}", a.port()));
            let c = Node::python(PW, dir_c.path(), &[]);
            let (_dir_b, b) = node_sharing(&[("b.txt", b"b\n")], &[&c.url, &typed]);
            let all = BTreeSet::from([a.url.clone(), b.url.clone(), c.url.clone()]);
            let listed = |node: &Node| node.peers(PW).into_iter().collect::<BTreeSet<String>>();
            let joined =
                common::eventually(common::START_DEADLINE, || [&a, &b, &c].iter().all(|n| listed(n) == all));
            let lists = [&a, &b, &c].map(listed);
            assert!(joined, "{kind}: {lists:?}, not {all:?} each");
            let note = format!("tinyp2p: note: the peer {typed} goes by {}; using that", a.url);
            log_with(&b, &note);
            for node in [&b, &c] {
                let run = tinyp2p(TempDir::new().path(), &[PW, "list", &node.url]);
                assert_eq!(run.status.code(), Some(0), "{kind}: {}", run.stderr);
                assert_eq!(lines(&run.stdout).last(), Some(&"2 names on 3 nodes"), "{kind}");
            }
        }
    }

    #[test]
    fn a_peer_listed_under_another_spelling_of_its_node_is_that_node_not_a_refusal() {
        let (_dir_a, a) = node_sharing(&[("a.txt", b"a\n")], &[]);
        let (_dir_z, lone) = node_sharing(&[("z.txt", b"z\n")], &[]);
        let (_dir_b, b) = node_sharing(&[("b.txt", b"b\n")], &[&a.url]);
        wait_for_peers(&b, 2);
        // as a node given `localhost` while its peer was down holds it: one alias of a node B
        // lists, and one of a node B knows by no other URL
        let (alias, lone_alias) =
            (format!("http://localhost:{}", a.port()), format!("http://localhost:{}", lone.port()));
        let offer = xmlrpc::Value::Array(vec![alias.as_str().into(), lone_alias.as_str().into()]);
        common::call(&b.url, &common::token(PW, &b.url), 0, offer).expect("an offer");
        let (dir, run) = client(PW, &b.url);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(dir.names(), ["a.txt", "b.txt", "z.txt"]);
        assert!(run.stdout.contains(&fetched_line("z.txt", 2, &lone.url)), "{}", run.stdout);
        let notes = [
            format!("tinyp2p: note: the peer {alias} goes by {}; listed already", a.url),
            format!("tinyp2p: note: the peer {lone_alias} goes by {}; using that", lone.url),
        ];
        assert_eq!(lines(&run.stderr), notes.iter().map(String::as_str).collect::<Vec<_>>());
        let listed = tinyp2p(TempDir::new().path(), &[PW, "list", &b.url]);
        assert_eq!(listed.status.code(), Some(0), "{}", listed.stderr);
        assert!(!listed.stdout.contains("localhost"), "{}", listed.stdout);
        // the alias is a node listed already: three nodes, not four
        assert_eq!(lines(&listed.stdout).last(), Some(&"3 names on 3 nodes"), "{}", listed.stdout);
    }

    #[test]
    fn a_trailing_slash_or_rpc2_is_not_part_of_the_node_url_and_needs_no_note() {
        let (_shared, node) = node_sharing(&[("hello.txt", HELLO)], &[]);
        for typed in [format!("{}/", node.url), format!("{}/RPC2", node.url)] {
            let (dir, run) = client(PW, &typed);
            assert_eq!(run.status.code(), Some(0), "{typed}: {}", run.stderr);
            assert_eq!(dir.read("hello.txt"), HELLO, "{typed}");
            assert_eq!(run.stderr, "", "{typed}");
            let line = fetched_line("hello.txt", HELLO.len(), &node.url);
            assert!(run.stdout.contains(&line), "{typed}: {}", run.stdout);
        }
    }

    #[test]
    fn localhost_with_a_path_is_found_and_named_too() {
        let (_shared, node) = node_sharing(&[("hello.txt", HELLO)], &[]);
        let typed = format!("http://localhost:{}/RPC2", node.port());
        let (dir, run) = client(PW, &typed);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(dir.read("hello.txt"), HELLO);
        assert!(run.stderr.contains(&format!("goes by {}; using that", node.url)), "{}", run.stderr);
    }

    #[test]
    fn a_real_wrong_password_says_wrong_password_naming_every_url_tried_and_its_port_only() {
        let (_shared, node) = node_sharing(&[("hello.txt", HELLO)], &[]);
        let port = node.port().to_string();
        let urls = Regex::new(r"http://[^\s,;)]+").unwrap();
        for mode in [&["client", &node.url, "."][..], &["list", &node.url]] {
            let dir = TempDir::new();
            let mut args = vec!["not the password"];
            args.extend_from_slice(mode);
            let run = tinyp2p(dir.path(), &args);
            assert_eq!(run.status.code(), Some(1), "{mode:?}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{mode:?}: {}", run.stderr);
            let start = format!("tinyp2p: wrong password for {} (also tried ", node.url);
            assert!(run.stderr.starts_with(&start), "{mode:?}: {}", run.stderr);
            for other in [format!("http://localhost:{port}"), format!("http://[::1]:{port}")] {
                assert!(run.stderr.contains(&other), "{other} not named: {}", run.stderr);
            }
            assert!(run.stderr.contains("bound to the password and to the URL"), "{}", run.stderr);
            let ports: Vec<&str> =
                urls.find_iter(&run.stderr).filter_map(|u| u.as_str().rsplit(':').next()).collect();
            assert_eq!(ports.len(), 3, "{}", run.stderr);
            assert!(ports.iter().all(|p| *p == port), "a port other than {port}: {}", run.stderr);
            assert!(dir.names().is_empty(), "{:?}", dir.names());
            assert_plain(&run);
        }
    }
}

mod start {
    use super::*;

    /// The start lines of `node`: its log up to the `to fetch from here` line.
    fn start_lines(node: &Node) -> Vec<String> {
        let mut log = log_with(node, "to fetch from here: ");
        let end = log.iter().position(|l| l.starts_with("to fetch from here: ")).unwrap();
        log.truncate(end + 1);
        log
    }

    /// The folder as the node names it.
    fn canonical(dir: &TempDir) -> String {
        std::fs::canonicalize(dir.path()).unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn a_server_says_what_it_shares_and_what_it_leaves_out_and_why_in_one_line() {
        use std::os::unix::ffi::OsStrExt;
        let outside = TempDir::new();
        outside.write("secret.txt", "not shared\n");
        let dir = TempDir::new();
        dir.write("a.txt", "a\n");
        dir.write("b.txt", "b\n");
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), dir.path().join("out")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"not \xff UTF-8");
        std::fs::write(dir.path().join(odd), "odd\n").unwrap();
        dir.write(".tinyp2p-elsewhere-1-0.part", "half a download");
        let node = Node::rust(PW, dir.path(), &[]);
        let lines = start_lines(&node);
        let left_out =
            "links leading out: 1, names it cannot carry: 1, subfolders: 1, unfinished downloads: 1";
        let want = format!("sharing 2 files from {} (left out: {left_out})", canonical(&dir));
        assert_eq!(lines[0], want, "{lines:#?}");
    }

    #[test]
    fn one_file_and_nothing_left_out_is_1_file_and_no_parenthesis() {
        let (dir, node) = node_sharing(&[("only.txt", b"only\n")], &[]);
        let lines = start_lines(&node);
        assert_eq!(lines[0], format!("sharing 1 file from {}", canonical(&dir)), "{lines:#?}");
    }

    #[test]
    fn the_start_lines_end_with_the_command_to_fetch_from_here_and_that_command_works() {
        let (dir, node) = node_sharing(&[("hello.txt", b"hello\n")], &[]);
        let lines = start_lines(&node);
        let hint =
            format!("to fetch from here: tinyp2p - client {} PATTERN (TINYP2P_PASSWORD set)", node.url);
        let want =
            [format!("sharing 1 file from {}", canonical(&dir)), format!("listening on {}", node.url), hint];
        assert_eq!(lines, want);
        let client = TempDir::new();
        let mut cmd = command(client.path(), &["-", "client", &node.url, "."]);
        cmd.env("TINYP2P_PASSWORD", PW);
        let run = common::run(cmd);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(client.read("hello.txt"), b"hello\n");
    }

    #[test]
    fn a_node_on_0_0_0_0_or_on_ipv6s_any_address_warns_that_other_nodes_cannot_reach_it() {
        // IPv6's `::` too, bracketed or not, where the machine has IPv6
        let ipv6 = TcpListener::bind("[::1]:0").is_ok();
        let hosts = if ipv6 { &["0.0.0.0", "[::]", "::"][..] } else { &["0.0.0.0"][..] };
        for host in hosts {
            assert_warns_of_an_address_nobody_reaches(host);
        }
    }

    /// Starts a node on `host` and asserts its start lines warn that nobody can reach it.
    fn assert_warns_of_an_address_nobody_reaches(host: &str) {
        let dir = TempDir::new();
        let node = Node::start(command(dir.path(), &[PW, "server", host, "0"]));
        let lines = log_with(&node, "listening on ");
        let warning = format!(
            "tinyp2p: warning: other nodes will be told {}, which they cannot reach: start the node with \
             the address they will use",
            node.url
        );
        assert_eq!(lines[1], warning, "{lines:#?}");
        assert_eq!(lines[2], format!("listening on {}", node.url));
        // No command to fetch from an address that cannot be reached: it would contradict the warning.
        let hint = common::eventually(Duration::from_millis(500), || {
            node.log.lock().unwrap().iter().any(|l| l.starts_with("to fetch from here: "))
        });
        assert!(!hint, "{:#?}", node.log.lock().unwrap());
    }

    #[test]
    fn a_node_on_127_0_0_1_gives_no_such_warning() {
        let (_dir, node) = node_sharing(&[], &[]);
        let lines = start_lines(&node);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines.iter().all(|l| !l.contains("warning")), "{lines:#?}");
    }

    #[test]
    fn the_request_log_reads_like_pythons_with_the_date_and_then_a_note() {
        let (_rust_dir, rust) = node_sharing(&[], &[]);
        let python_dir = TempDir::new();
        let python = Node::python(PW, python_dir.path(), &[]);
        for node in [&rust, &python] {
            assert_eq!(node.peers(PW), vec![node.url.clone()]);
        }
        let shape = r#"127\.0\.0\.1 - - \[(\d\d/[A-Z][a-z]{2}/\d{4}) (\d\d:\d\d:\d\d)\] "POST /RPC2 HTTP/1\.1" 200 -"#;
        let python_line = Regex::new(&format!("^{shape}$")).unwrap();
        let rust_line = Regex::new(&format!("^{shape} 1 peer$")).unwrap();
        let line = |node: &Node, re: &Regex| {
            let find = || node.log.lock().unwrap().iter().find(|l| re.is_match(l)).cloned();
            let came = common::eventually(Duration::from_secs(10), || find().is_some());
            assert!(came, "no request line like {re} in {:#?}", node.log.lock().unwrap());
            find().unwrap()
        };
        let (from_rust, from_python) = (line(&rust, &rust_line), line(&python, &python_line));
        let (r, p) = (rust_line.captures(&from_rust).unwrap(), python_line.captures(&from_python).unwrap());
        let midnight = r[2].starts_with("00:00") || p[2].starts_with("00:00");
        assert!(r[1] == p[1] || midnight, "dates differ: {from_rust:?} and {from_python:?}");
    }
}

mod list {
    use super::*;

    /// Two Rust nodes: the first shares a.txt and shared.txt, the second (joined to the
    /// first) b.log and shared.txt.
    fn network() -> (Vec<TempDir>, Node, Node) {
        let (dir_a, a) = node_sharing(&[("a.txt", b"a\n"), ("shared.txt", b"shared\n")], &[]);
        let (dir_b, b) = node_sharing(&[("b.log", b"b\n"), ("shared.txt", b"shared\n")], &[&a.url]);
        wait_for_peers(&a, 2);
        (vec![dir_a, dir_b], a, b)
    }

    /// The name lines of a `list` run as (quoted name, set of URLs), and where the URLs start.
    fn entries(run: &Run) -> Vec<(String, BTreeSet<String>, usize)> {
        let out = lines(&run.stdout);
        out[..out.len() - 1]
            .iter()
            .map(|line| {
                let (name, urls) = line.split_once("  ").unwrap_or_else(|| panic!("malformed line {line:?}"));
                let column = line.len() - urls.trim_start().len();
                let urls = urls.trim_start().split(", ").map(str::to_string).collect();
                (name.to_string(), urls, column)
            })
            .collect()
    }

    #[test]
    fn without_a_pattern_it_shows_every_name_with_the_nodes_that_have_it_and_writes_nothing() {
        let (_dirs, a, b) = network();
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "list", &a.url]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(run.stderr, "");
        let got = entries(&run);
        let both: BTreeSet<String> = [a.url.clone(), b.url.clone()].into();
        let want = [
            ("\"a.txt\"", BTreeSet::from([a.url.clone()])),
            ("\"b.log\"", BTreeSet::from([b.url.clone()])),
            ("\"shared.txt\"", both),
        ];
        let names: Vec<(&str, &BTreeSet<String>)> = got.iter().map(|(n, u, _)| (n.as_str(), u)).collect();
        let want: Vec<(&str, &BTreeSet<String>)> = want.iter().map(|(n, u)| (*n, u)).collect();
        assert_eq!(names, want, "{}", run.stdout);
        let columns: BTreeSet<usize> = got.iter().map(|(.., c)| *c).collect();
        assert_eq!(
            columns,
            BTreeSet::from(["\"shared.txt\"".len() + 2]),
            "nodes not in one column:\n{}",
            run.stdout
        );
        assert_eq!(lines(&run.stdout).last(), Some(&"3 names on 2 nodes"));
        assert!(dir.names().is_empty(), "list wrote {:?}", dir.names());
    }

    #[test]
    fn names_of_wide_characters_keep_the_nodes_in_one_column_on_screen() {
        // "日本語.txt" quoted is 8 characters but 12 columns; "abcdefghij" quoted 12 of both
        let (_dir, node) = node_sharing(&[("日本語.txt", b"j\n"), ("abcdefghij", b"a\n")], &[]);
        let run = tinyp2p(TempDir::new().path(), &[PW, "list", &node.url]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        let want = [format!("\"abcdefghij\"  {}", node.url), format!("\"日本語.txt\"  {}", node.url)];
        assert_eq!(lines(&run.stdout)[..2], want, "{}", run.stdout);
    }

    #[test]
    fn with_a_pattern_it_shows_only_the_names_the_pattern_finds() {
        let (_dirs, a, _b) = network();
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "list", &a.url, r"\.txt$"]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        let names: Vec<String> = entries(&run).into_iter().map(|(n, ..)| n).collect();
        assert_eq!(names, ["\"a.txt\"", "\"shared.txt\""], "{}", run.stdout);
        assert_eq!(lines(&run.stdout).last(), Some(&"2 names on 2 nodes"));
        assert!(dir.names().is_empty(), "list wrote {:?}", dir.names());
    }

    #[test]
    fn a_node_that_does_not_answer_is_counted_and_makes_the_exit_status_1() {
        let (_dirs, a, mut b) = network();
        b.kill();
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "list", &a.url]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(run.stderr, format!("tinyp2p: node {} is unreachable (connection refused)\n", b.url));
        assert_eq!(
            lines(&run.stdout).last(),
            Some(&"2 names on 2 nodes, 1 did not answer"),
            "{}",
            run.stdout
        );
        assert_plain(&run);
    }

    #[test]
    fn an_unreachable_entry_node_is_one_line_and_exit_status_1() {
        let url = closed_url();
        let run = tinyp2p(TempDir::new().path(), &[PW, "list", &url]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(run.stderr, format!("tinyp2p: node {url} is unreachable (connection refused)\n"));
    }

    #[test]
    fn on_a_terminal_a_node_that_does_not_answer_leaves_no_progress_line_behind() {
        let (_dirs, a, mut b) = network();
        b.kill();
        let dir = TempDir::new();
        let shown = on_terminal(dir.path(), &[PW, "list", &a.url]);
        assert_eq!(shown.status, Some(1), "{}", shown.dump());
        let want = [
            format!("tinyp2p: node {} is unreachable (connection refused)", b.url),
            format!("\"a.txt\"       {}", a.url),
            format!("\"shared.txt\"  {}", a.url),
            "2 names on 2 nodes, 1 did not answer".to_string(),
        ];
        assert_eq!(lines(&shown.screen), want, "{}", shown.dump());
    }
}

mod plain_words {
    use super::*;

    #[test]
    fn an_unreachable_node_is_one_line_naming_it_once_in_plain_words() {
        let url = closed_url();
        let run = tinyp2p(TempDir::new().path(), &[PW, "client", &url, "."]);
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(run.stderr, format!("tinyp2p: node {url} is unreachable (connection refused)\n"));
        assert_plain(&run);
    }

    #[test]
    fn a_node_that_sends_nothing_is_no_data_for_the_timeout_set() {
        let silent = Fake::start(|_, _| Reply::Silent);
        let dir = TempDir::new();
        let mut cmd = command(dir.path(), &[PW, "client", &silent.url, "."]);
        cmd.env("TINYP2P_TIMEOUT", "0.5");
        let started = Instant::now();
        let run = common::run(cmd);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(run.stderr, format!("tinyp2p: no data from {} for 0.5 s\n", silent.url));
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert_plain(&run);
    }

    #[test]
    fn a_dead_node_is_counted_apart_from_failed_files_in_the_summary() {
        let (_dir_a, a) = node_sharing(&[("a.txt", b"a\n")], &[]);
        let (_dir_b, mut b) = node_sharing(&[("b.txt", b"b\n")], &[&a.url]);
        wait_for_peers(&a, 2);
        b.kill();
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &a.url, "."]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(dir.read("a.txt"), b"a\n");
        assert_eq!(run.stderr, format!("tinyp2p: node {} is unreachable (connection refused)\n", b.url));
        let summary = lines(&run.stdout).last().copied().unwrap_or_default().to_string();
        assert!(
            summary.starts_with("done: 1 fetched, 0 skipped, 0 failed, 1 of 2 nodes unreachable; "),
            "{summary:?}"
        );
        assert_plain(&run);
    }

    #[test]
    fn a_node_that_answers_with_an_error_is_counted_apart_not_as_unreachable() {
        let (_dir_a, a) = node_sharing(&[("a.txt", b"a\n")], &[]);
        let other = a.url.clone();
        // a node of another network: it answers, with False
        let fake = Fake::start(move |mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own, &other])),
            _ => Reply::Value("<boolean>0</boolean>".into()),
        });
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &fake.url, "."]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(dir.read("a.txt"), b"a\n");
        assert_eq!(run.stderr, format!("tinyp2p: node {} refused the password\n", fake.url));
        let summary = lines(&run.stdout).last().copied().unwrap_or_default().to_string();
        let want = "done: 1 fetched, 0 skipped, 0 failed, 1 of 2 nodes answered with an error; ";
        assert!(summary.starts_with(want), "{summary:?}");
        let listed = tinyp2p(dir.path(), &[PW, "list", &fake.url]);
        assert_eq!(listed.status.code(), Some(1), "{}", listed.stderr);
        let want = "1 name on 2 nodes, 1 answered with an error";
        assert_eq!(lines(&listed.stdout).last(), Some(&want), "{}", listed.stdout);
    }

    #[test]
    fn a_pattern_that_looks_like_a_glob_gets_the_regex_it_means() {
        for (glob, hint) in [("*.txt", r"\.txt$"), ("*", "."), ("*report*", "report")] {
            let run = tinyp2p(TempDir::new().path(), &[PW, "client", "http://127.0.0.1:9", glob]);
            assert_eq!(run.status.code(), Some(2), "{glob}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(run.stderr.starts_with(&format!("tinyp2p: invalid regex {glob:?}: ")), "{}", run.stderr);
            let tail = format!("; PATTERN is a regex, not a glob: try '{hint}'\n");
            assert!(run.stderr.ends_with(&tail), "{glob}: {}", run.stderr);
        }
    }

    #[test]
    fn a_pattern_in_python_only_syntax_gets_the_spelling_both_read() {
        for (python, hint) in [(r"txt\Z", "txt$"), ("^a{,3}$", "^a{0,3}$")] {
            let run = tinyp2p(TempDir::new().path(), &[PW, "list", "http://127.0.0.1:9", python]);
            assert_eq!(run.status.code(), Some(2), "{python}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            let tail = format!("; that is Python's syntax: try '{hint}'\n");
            assert!(run.stderr.ends_with(&tail), "{python}: {}", run.stderr);
        }
    }

    #[test]
    fn no_python_hint_is_given_where_the_spelling_may_mean_another_thing_or_the_pattern_is_long() {
        let long = format!("{}\\Z", "a".repeat(30_000));
        for pattern in [r"\\Z{,3}", "[{,]x{,2}", r"\{,x{,2}", &long] {
            let run = tinyp2p(TempDir::new().path(), &[PW, "list", "http://127.0.0.1:9", pattern]);
            assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
            assert!(!run.stderr.contains("try '"), "{}", run.stderr);
            assert!(run.stderr.len() < 400, "{} bytes: {}", run.stderr.len(), &run.stderr[..400]);
        }
    }

    #[test]
    fn an_invalid_regex_that_is_no_glob_gets_no_glob_hint() {
        let run = tinyp2p(TempDir::new().path(), &[PW, "client", "http://127.0.0.1:9", "(unclosed"]);
        assert_eq!(run.status.code(), Some(2));
        assert_eq!(run.stderr, "tinyp2p: invalid regex \"(unclosed\": unclosed group\n");
    }

    #[test]
    fn success_lines_quote_names_as_error_lines_do_and_escape_what_a_terminal_would_hide() {
        let name = "say \"hi\", it's \u{202e}txt.exe";
        let (_shared, node) = node_sharing(&[(name, b"quoted\n")], &[]);
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(dir.read(name), b"quoted\n");
        let quoted = r#""say \"hi\", it's \u{202e}txt.exe""#;
        let line = format!("fetched {quoted} (7 bytes) from {}", node.url);
        assert!(lines(&run.stdout).contains(&line.as_str()), "no {line:?} in:\n{}", run.stdout);
        assert!(!run.stdout.contains('\u{202e}'), "a bidi override reached the terminal");
        let listed = tinyp2p(dir.path(), &[PW, "list", &node.url]);
        assert!(listed.stdout.starts_with(&format!("{quoted}  {}", node.url)), "{}", listed.stdout);
    }

    #[test]
    fn a_decomposed_accent_is_shown_as_the_letter_it_makes_not_as_an_escape() {
        let name = "cafe\u{301}.txt"; // é as macOS writes names: e and a combining accent
        let (_shared, node) = node_sharing(&[(name, b"nfd\n")], &[]);
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        let line = format!("fetched \"{name}\" (4 bytes) from {}", node.url);
        assert!(lines(&run.stdout).contains(&line.as_str()), "no {line:?} in:\n{}", run.stdout);
        let listed = tinyp2p(dir.path(), &[PW, "list", &node.url]);
        assert!(listed.stdout.starts_with(&format!("\"{name}\"  {}", node.url)), "{}", listed.stdout);
    }

    #[test]
    fn a_file_gone_since_its_listing_is_named_once() {
        // A node that listed a name, and whose file went before it was asked for, answers
        // with the fault a Rust node gives then.
        use crate::hostile::{fault, listing, ok, text};
        let node = crate::hostile::Fake::peer(|ask| match (ask.mode, ask.arg.as_str()) {
            (1, _) => ok(&listing(["gone.txt", "kept.txt"])),
            (_, "kept.txt") => ok(&text("kept\n")),
            _ => fault("no such file"),
        });
        let dir = TempDir::new();
        let run = tinyp2p(dir.path(), &[PW, "client", &node.url, "."]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(dir.names(), ["kept.txt"]);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_eq!(run.stderr.matches("gone.txt").count(), 1, "the name twice: {}", run.stderr);
        assert_plain(&run);
    }

    #[test]
    fn a_client_whose_folder_is_gone_says_so_without_os_error_codes() {
        let (_shared, node) = node_sharing(&[("hello.txt", b"hello\n")], &[]);
        let parent = TempDir::new();
        let gone = parent.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let script = "cd \"$1\" && rmdir \"$1\" && exec \"$0\" \"$2\" client \"$3\" .";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, common::bin()]).arg(&gone).args([PW, &node.url]);
        let run = common::run(cmd);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_plain(&run);
    }
}

mod usage_errors {
    use super::*;

    #[test]
    fn a_bad_setting_is_exit_2_naming_the_range_before_any_network_call() {
        let untouched = Untouched::new();
        let settings = [
            ("TINYP2P_TIMEOUT", "0", "0.1 to 86400"),
            ("TINYP2P_TIMEOUT", "ten", "0.1 to 86400"),
            ("TINYP2P_TIMEOUT", "86401", "0.1 to 86400"),
            ("TINYP2P_SPEED_LIMIT", "-1", "0 to 1000000000000"),
            ("TINYP2P_SPEED_LIMIT", "2e12", "0 to 1000000000000"),
            ("TINYP2P_SPEED_TIME", "0", "0.1 to 86400"),
            ("TINYP2P_SPEED_TIME", "", "0.1 to 86400"),
        ];
        let url = untouched.url.as_str();
        let modes: [&[&str]; 4] = [
            &["client", url, "."],
            &["list", url],
            &["server", "127.0.0.1", "0", url],
            &["shell", "127.0.0.1", "0", url],
        ];
        let dir = TempDir::new();
        for (name, value, range) in settings {
            for mode in modes {
                let mut cmd = command(dir.path(), &[&[PW][..], mode].concat());
                cmd.env(name, value);
                let run = common::run(cmd);
                let what = format!("{name}={value:?} {mode:?}");
                assert_eq!(run.status.code(), Some(2), "{what}: {}", run.stderr);
                let want = format!("tinyp2p: {name} must be a number from {range}, not {value:?}\n");
                assert_eq!(run.stderr, want, "{what}");
                assert_eq!(run.stdout, "", "{what}");
                untouched.assert_untouched(&what);
            }
        }
        assert!(dir.names().is_empty(), "{:?}", dir.names());
    }

    #[test]
    fn a_setting_that_is_not_utf8_is_shown_as_it_reads_not_as_empty() {
        use std::os::unix::ffi::OsStrExt;
        let dir = TempDir::new();
        let mut cmd = command(dir.path(), &[PW, "list", &closed_url()]);
        cmd.env("TINYP2P_TIMEOUT", std::ffi::OsStr::from_bytes(b"5\xff"));
        let run = common::run(cmd);
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("not \"5\u{fffd}\""), "{}", run.stderr);
    }

    #[test]
    fn settings_at_the_ends_of_their_ranges_are_taken() {
        let url = closed_url();
        let ends = [
            [("TINYP2P_TIMEOUT", "0.1"), ("TINYP2P_SPEED_LIMIT", "0"), ("TINYP2P_SPEED_TIME", "86400")],
            [("TINYP2P_TIMEOUT", "86400"), ("TINYP2P_SPEED_LIMIT", "1e12"), ("TINYP2P_SPEED_TIME", "0.1")],
        ];
        for settings in ends {
            let dir = TempDir::new();
            let mut cmd = command(dir.path(), &[PW, "list", &url]);
            cmd.envs(settings);
            let run = common::run(cmd);
            assert_eq!(run.status.code(), Some(1), "{settings:?}: {}", run.stderr);
            assert_eq!(run.stderr, format!("tinyp2p: node {url} is unreachable (connection refused)\n"));
        }
    }

    #[test]
    fn an_invalid_regex_is_exit_2_before_any_network_call() {
        let untouched = Untouched::new();
        for pattern in ["(", "*.txt", "[a-", "x{2,1}"] {
            for mode in ["client", "list"] {
                let run = tinyp2p(TempDir::new().path(), &[PW, mode, &untouched.url, pattern]);
                let what = format!("{mode} {pattern:?}");
                assert_eq!(run.status.code(), Some(2), "{what}: {}", run.stderr);
                assert_eq!(run.stderr.lines().count(), 1, "{what}: {}", run.stderr);
                assert!(
                    run.stderr.starts_with(&format!("tinyp2p: invalid regex {pattern:?}: ")),
                    "{}",
                    run.stderr
                );
                assert!(!run.stderr.contains("usage"), "a regex error is no synopsis: {}", run.stderr);
                untouched.assert_untouched(&what);
            }
        }
    }
}

mod help {
    use super::*;

    #[test]
    fn help_shows_the_modes_the_settings_and_an_example_session() {
        let run = tinyp2p(TempDir::new().path(), &["--help"]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(run.stderr, "");
        let text = &run.stdout;
        for mode in [
            "tinyp2p PW server HOST PORT [PEER_URL...]",
            "tinyp2p PW shell HOST PORT [PEER_URL...]",
            "tinyp2p PW client URL PATTERN",
            "tinyp2p PW list URL [PATTERN]",
        ] {
            assert!(text.contains(mode), "no {mode:?} in:\n{text}");
        }
        for setting in SETTINGS {
            assert!(text.contains(setting), "no {setting} in:\n{text}");
        }
        for word in ["-q", "Exit status", "regular expression"] {
            assert!(text.contains(word), "no {word:?} in:\n{text}");
        }
        let server = Regex::new(r"\$ tinyp2p \S+ server 127\.0\.0\.1 (\d+)").unwrap();
        let port =
            server.captures(text).unwrap_or_else(|| panic!("no example server in:\n{text}"))[1].to_string();
        for example in [format!("list http://127.0.0.1:{port}"), format!("client http://127.0.0.1:{port} ")] {
            assert!(text.contains(&example), "the example session has no {example:?}:\n{text}");
        }
    }
}
