//! Issue 10, "The textbook's node": `tinyp2p PW shell HOST PORT [PEER_URL...]`, a serving
//! node that reads commands.
//!
//! - `piped`: commands piped in, against a network of Rust nodes and a Python node
//!   (tests/peer.py); what `fetch` brings is served at once to other clients; bad commands
//!   say one line and the shell goes on; the exit status.
//! - `terminal`: a real pseudo-terminal (tests/terminal.py): the prompt, a command answered,
//!   `exit`, Ctrl-D, Ctrl-C at the prompt and during a `fetch`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use xmlrpc::Value;

use crate::common::{self, Fake, Key, Node, Reply, Shell, TempDir};

/// The network's password.
const PW: &str = "shell-pw";

/// The shell's own file.
const MINE: (&str, &[u8]) = ("mine.txt", b"the shell node's own file\n");

/// The start lines every node prints, the shell too.
const START_LINES: usize = 3;

/// Content that goes as base64: every byte value.
fn binary() -> Vec<u8> {
    (0..=255u8).cycle().take(4096).collect()
}

/// A folder holding `files`.
fn folder(files: &[(&str, &[u8])]) -> TempDir {
    let dir = TempDir::new();
    for (name, content) in files {
        dir.write(name, content);
    }
    dir
}

/// A peer that answers, wrongly, only once a node's join grace is over: the shell reads
/// commands by then.
fn late_peer() -> Fake {
    Fake::start(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        Reply::Value("<string>no list</string>".into())
    })
}

/// Waits until the node at `url` lists `n` peers.
fn wait_for_peers(url: &str, n: usize) {
    let token = common::token(PW, url);
    let count = || match common::call(url, &token, 0, Value::Array(vec![])) {
        Ok(Value::Array(list)) => list.len(),
        _ => 0,
    };
    assert!(common::eventually(common::START_DEADLINE, || count() >= n), "{url} never listed {n} peers");
}

/// The URL of a port nobody listens on: a node there is refused at once.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// The stderr lines after the start lines.
fn after_start(stderr: &str) -> Vec<&str> {
    stderr.lines().skip(START_LINES).collect()
}

/// The lines of terminal output, without the carriage returns the terminal adds.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

mod piped {
    use super::*;

    /// Three nodes: Rust (one.txt), Python joined to it (py.txt), Rust joined to the
    /// Python node (two.bin).
    struct Network {
        dirs: Vec<TempDir>,
        nodes: Vec<Node>,
    }

    impl Network {
        fn start() -> Network {
            let dirs = vec![
                folder(&[("one.txt", b"from the first Rust node\n")]),
                folder(&[("py.txt", b"from the Python node\n")]),
                folder(&[("two.bin", &binary())]),
            ];
            let first = Node::rust(PW, dirs[0].path(), &[]);
            let python = Node::python(PW, dirs[1].path(), &[&first.url]);
            let second = Node::rust(PW, dirs[2].path(), &[&python.url]);
            wait_for_peers(&second.url, 3);
            Network { dirs, nodes: vec![first, python, second] }
        }

        /// The files the network offers (the shell's aside), and who offers each.
        fn files(&self) -> Vec<(&'static str, Vec<u8>, &str)> {
            vec![
                ("one.txt", b"from the first Rust node\n".to_vec(), self.nodes[0].url.as_str()),
                ("py.txt", b"from the Python node\n".to_vec(), self.nodes[1].url.as_str()),
                ("two.bin", binary(), self.nodes[2].url.as_str()),
            ]
        }
    }

    #[test]
    fn a_session_lists_fetches_into_the_nodes_folder_and_serves_what_it_fetched() {
        let net = Network::start();
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[&net.nodes[2].url]);
        wait_for_peers(&shell.url, 4);
        for command in ["help", "peers", "ls", r"ls \.txt$", "fetch ."] {
            shell.send(command);
        }
        shell.wait_for_lines("done: ", 1);
        let out = shell.stdout();
        let out: Vec<&str> = out.lines().collect();

        // help: one line per command
        for command in ["ls [PATTERN]", "fetch PATTERN", "peers", "log", "help", "exit, quit"] {
            assert!(out.iter().any(|l| l.starts_with(command)), "help lacks {command:?}:\n{out:#?}");
        }
        // peers: every node, this one marked
        let peers: BTreeSet<&str> = out.iter().copied().filter(|l| l.starts_with("http://")).collect();
        let mut want: BTreeSet<String> = net.nodes.iter().map(|n| n.url.clone()).collect();
        want.insert(format!("{} (this node)", shell.url));
        assert_eq!(peers, want.iter().map(String::as_str).collect(), "{out:#?}");
        // ls and ls PATTERN: as `list` prints them
        for (name, _, url) in net.files() {
            let line = format!("{:<12}{url}", format!("{name:?}"));
            assert!(out.contains(&line.as_str()), "ls lacks {line:?}:\n{out:#?}");
        }
        assert!(out.contains(&format!("\"mine.txt\"  {}", shell.url).as_str()), "{out:#?}");
        assert!(out.contains(&"4 names on 4 nodes"), "{out:#?}");
        assert!(out.contains(&"3 names on 4 nodes"), "ls \\.txt$: {out:#?}");
        // fetch: the client's lines and summary, the files in the node's folder
        for (name, content, url) in net.files() {
            let line = format!("fetched {name:?} ({} bytes) from {url}", content.len());
            assert!(out.contains(&line.as_str()), "no {line:?}:\n{out:#?}");
            assert_eq!(dir.read(name), content, "{name}");
        }
        assert!(out.iter().any(|l| l.starts_with("done: 3 fetched, 1 skipped, 0 failed; ")), "{out:#?}");
        assert_eq!(dir.names(), ["mine.txt", "one.txt", "py.txt", "two.bin"]);

        // What arrived is shared at once: the shell lists itself for it...
        shell.send("ls py");
        shell.wait_for_lines("1 name on 4 nodes", 1);
        let out = shell.stdout();
        let line = out.lines().rfind(|l| l.starts_with("\"py.txt\"")).unwrap_or_default();
        let urls: BTreeSet<&str> = line.trim_start_matches("\"py.txt\"").trim().split(", ").collect();
        assert_eq!(urls, BTreeSet::from([net.nodes[1].url.as_str(), shell.url.as_str()]), "{line:?}");
        // ...and with the originals gone, other clients get every file from the shell node.
        for (dir, (name, ..)) in net.dirs.iter().zip(net.files()) {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        let rust = TempDir::new();
        let run = common::rust_client(PW, rust.path(), &shell.url, ".");
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        let python = TempDir::new();
        let py_run = common::python_client(PW, python.path(), &shell.url, ".");
        assert!(py_run.status.success(), "{}", py_run.stderr);
        let mut files = net.files();
        files.push((MINE.0, MINE.1.to_vec(), ""));
        for (name, content, _) in files {
            let line = format!("fetched {name:?} ({} bytes) from {}", content.len(), shell.url);
            assert!(run.stdout.contains(&line), "no {line:?}:\n{}", run.stdout);
            assert_eq!(rust.read(name), content, "Rust client: {name}");
            assert_eq!(python.read(name), content, "Python client: {name}");
        }

        shell.send("exit");
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(after_start(&run.stderr), Vec::<&str>::new(), "stderr: {}", run.stderr);
    }

    #[test]
    fn a_bad_command_a_bad_regex_and_a_missing_pattern_each_say_one_line_and_the_shell_goes_on() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        for command in ["frobnicate now", "ls (", "fetch *.txt", "fetch", "peers", "exit"] {
            shell.send(command);
        }
        let url = shell.url.clone();
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(1), "a failed command makes the status 1: {}", run.stderr);
        assert_eq!(run.stdout, format!("{url} (this node)\n"), "peers after the errors");
        let errors = after_start(&run.stderr);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert_eq!(errors[0], "tinyp2p: unknown command \"frobnicate\"; help lists the commands");
        assert_eq!(errors[1], "tinyp2p: invalid regex \"(\": unclosed group");
        assert!(errors[2].starts_with("tinyp2p: invalid regex \"*.txt\": "), "{}", errors[2]);
        assert!(errors[2].ends_with("; PATTERN is a regex, not a glob: try '\\.txt$'"), "{}", errors[2]);
        assert_eq!(errors[3], "tinyp2p: fetch takes a PATTERN ('.' fetches everything)");
        assert_eq!(dir.names(), ["mine.txt"]);
    }

    #[test]
    fn a_fetch_from_a_dead_node_says_so_in_one_line_and_the_shell_goes_on() {
        let other = folder(&[("one.txt", b"one\n")]);
        let mut node = Node::rust(PW, other.path(), &[]);
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[&node.url]);
        wait_for_peers(&shell.url, 2);
        node.kill();
        for command in ["fetch .", "peers", "exit"] {
            shell.send(command);
        }
        let url = shell.url.clone();
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        let errors = after_start(&run.stderr);
        assert_eq!(errors, [format!("tinyp2p: node {} is unreachable (connection refused)", node.url)]);
        let out: Vec<&str> = run.stdout.lines().collect();
        assert!(
            out[0].starts_with("done: 0 fetched, 1 skipped, 0 failed, 1 of 2 nodes unreachable; "),
            "{out:#?}"
        );
        assert!(out.contains(&format!("{url} (this node)").as_str()), "peers after the failure: {out:#?}");
        assert_eq!(dir.names(), ["mine.txt"]);
    }

    #[test]
    fn the_end_of_input_stops_the_node_with_status_0() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send("peers");
        shell.wait_for_lines(&shell.url, 1);
        let address = shell.url.trim_start_matches("http://").to_string();
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert!(std::net::TcpStream::connect(&address).is_err(), "the node still serves at {address}");
    }

    #[test]
    fn quit_stops_the_node_and_nothing_after_it_runs() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send("quit\npeers\nfrobnicate"); // in one write: the shell is gone after the first line
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(after_start(&run.stderr), Vec::<&str>::new());
    }

    #[test]
    fn the_log_command_says_so_when_no_request_came_yet() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send("log");
        shell.send("exit");
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(run.stdout.lines().collect::<Vec<_>>(), ["no requests answered yet"], "{}", run.stdout);
    }

    #[test]
    fn the_request_log_stays_off_stderr_and_the_log_command_shows_it() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        let answer = common::call(&shell.url, &common::token(PW, &shell.url), 1, Value::from("mine"));
        assert_eq!(answer, Ok(Value::Array(vec![Value::Array(vec![Value::from("mine.txt")])])));
        let logged = regex::Regex::new(
            r#"^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "POST /RPC2 HTTP/1\.1" 200 - 1 name$"#,
        )
        .unwrap();
        let mut asked = 0;
        let shown = common::eventually(Duration::from_secs(10), || {
            // The node notes a request just after answering it: ask until the line is there.
            asked += 1;
            shell.send("log");
            shell.send("peers");
            shell.wait_for_lines(&format!("{} (this node)", shell.url), asked);
            shell.stdout().lines().any(|l| logged.is_match(l))
        });
        assert!(shown, "log never showed the request:\n{}", shell.stdout());
        shell.send("exit");
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0));
        assert_eq!(after_start(&run.stderr), Vec::<&str>::new(), "the request log reached stderr");
    }

    /// The threads of process `pid`.
    fn threads(pid: u32) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the shell runs");
        let line = status.lines().find_map(|l| l.strip_prefix("Threads:")).expect("a Threads line");
        line.trim().parse().expect("a number")
    }

    #[test]
    fn peers_and_log_printed_to_output_nobody_reads_hold_up_no_request() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        let token = common::token(PW, &shell.url);
        // 8,000 peers print about 190 KB, and 200 logged requests with long paths about 110 KB:
        // each more than a pipe holds
        let many: Vec<Value> =
            (1..=8000).map(|port| Value::from(format!("http://127.0.0.1:{port}"))).collect();
        assert!(common::call(&shell.url, &token, 0, Value::Array(many)).is_ok());
        let long =
            format!("POST /{} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "x".repeat(600));
        (0..200).for_each(|_| assert!(common::raw_http(&shell.url, long.as_bytes()).contains(" 404 ")));
        shell.pause_stdout(true);
        shell.send("peers");
        shell.wait_for_lines("http://", 1);
        // the shell is stuck printing the peers: an offer must still be answered
        let (url, offer_token) = (shell.url.clone(), token.clone());
        let (answered, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || answered.send(common::call(&url, &offer_token, 0, Value::Array(vec![]))));
        let answer = answer.recv_timeout(Duration::from_secs(20));
        assert!(matches!(answer, Ok(Ok(Value::Array(_)))), "an offer waited on `peers`: {answer:?}");
        shell.pause_stdout(false);
        shell.wait_for_lines("http://", 8001);
        shell.pause_stdout(true);
        shell.send("log");
        shell.wait_for_lines("127.0.0.1 - - [", 1);
        // stuck printing the log: requests answered meanwhile must not hold up a worker each
        let before = threads(shell.pid());
        for _ in 0..40 {
            assert!(common::call(&shell.url, &token, 1, Value::from("mine")).is_ok());
        }
        let after = threads(shell.pid());
        assert!(after < before + 20, "40 requests left {} more threads ({before} before)", after - before);
        shell.pause_stdout(false);
        shell.send("exit");
        assert_eq!(shell.finish().status.code(), Some(0));
    }

    #[test]
    fn a_line_too_long_for_a_command_is_refused_in_one_line_and_the_next_command_runs() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send(&"x".repeat(200_000));
        shell.send("peers");
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        let said: Vec<&str> = after_start(&run.stderr);
        assert_eq!(said, ["tinyp2p: a command of over 32832 bytes is refused"]);
        assert!(run.stdout.contains("(this node)"), "peers did not run after it:\n{}", run.stdout);
    }

    #[test]
    fn lines_ended_by_a_lone_carriage_return_each_run() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send("log\rpeers\rexit\r");
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        let out: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], "no requests answered yet");
        assert!(out[1].ends_with(" (this node)"), "{out:?}");
    }

    /// A quiet shell fed by `input` (on a thread of its own) whose output is read up to its first
    /// line, a `peers` line, and then by nobody, as `| head -1` reads it: its exit status within
    /// 20 s (`None`: it went on), and its stderr.
    fn read_by_head_1(
        input: impl FnOnce(std::process::ChildStdin) + Send + 'static,
    ) -> (Option<i32>, String) {
        let dir = folder(&[MINE]);
        let mut child = common::tinyp2p()
            .args(["-q", PW, "shell", "127.0.0.1", "0"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the shell");
        let stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || input(stdin));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first)
            .unwrap();
        assert!(first.ends_with(" (this node)\n"), "{first:?}");
        let ended = common::eventually(Duration::from_secs(20), || child.try_wait().unwrap().is_some());
        let _ = child.kill();
        let run = child.wait_with_output().unwrap();
        (run.status.code().filter(|_| ended), String::from_utf8_lossy(&run.stderr).into_owned())
    }

    #[test]
    fn the_shell_ends_with_status_0_once_nobody_reads_its_output() {
        // commands without end, as `yes peers` types them
        let (status, stderr) =
            read_by_head_1(|mut stdin| while std::io::Write::write_all(&mut stdin, b"peers\n").is_ok() {});
        assert_eq!(status, Some(0), "{stderr}");
    }

    #[test]
    fn input_of_lone_cr_lines_cut_short_at_the_limit_is_refused_whole_not_run_cut() {
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[]);
        shell.send(&"peers\r".repeat(6000)); // 36,000 bytes before its newline
        let run = shell.finish();
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert_eq!(after_start(&run.stderr), ["tinyp2p: a command of over 32832 bytes is refused"]);
        assert_eq!(run.stdout, "", "a command of the cut text ran");
    }

    #[test]
    fn once_nobody_reads_its_output_the_rest_of_a_read_is_not_run() {
        // one read of 3,000 commands (about 100 KB of output, more than a pipe holds), then one
        // that would fail
        let input = format!("{}bogus_last\r\n", "peers\r".repeat(3000));
        let (status, stderr) = read_by_head_1(move |mut stdin| {
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        });
        assert_eq!(status, Some(0), "{stderr}");
        assert!(!stderr.contains("bogus_last"), "{stderr}");
    }

    #[test]
    fn a_warning_at_start_is_kept_in_the_log_too() {
        let dead = closed_url();
        let dir = folder(&[MINE]);
        let mut shell = Shell::start(PW, dir.path(), &[&dead]);
        shell.send("log");
        let run = shell.finish();
        let warning =
            format!("tinyp2p: warning: cannot join: node {dead} is unreachable (connection refused)");
        assert!(run.stdout.lines().any(|l| l == warning), "log did not keep {warning:?}:\n{}", run.stdout);
    }

    #[test]
    fn a_peer_it_cannot_join_is_said_at_start_as_a_server_says_it() {
        let dead = closed_url();
        let dir = folder(&[MINE]);
        let shell = Shell::start(PW, dir.path(), &[&dead]);
        let warning =
            format!("tinyp2p: warning: cannot join: node {dead} is unreachable (connection refused)");
        let said = common::eventually(Duration::from_secs(5), || shell.stderr().contains(&warning));
        assert!(said, "no {warning:?} on stderr:\n{}", shell.stderr());
    }

    #[test]
    fn a_peer_it_cannot_join_after_the_start_is_said_too_not_only_logged() {
        let late = late_peer();
        let dir = folder(&[MINE]);
        let shell = Shell::start(PW, dir.path(), &[&late.url]);
        let warning = format!("tinyp2p: warning: cannot join: node {} answered a string", late.url);
        let said = common::eventually(Duration::from_secs(10), || shell.stderr().contains(&warning));
        assert!(said, "no {warning:?} on stderr:\n{}", shell.stderr());
    }
}

mod terminal {
    use super::*;

    /// Runs a shell node in `dir` in a pseudo-terminal, joining `peers`, playing `keys`.
    fn shell(dir: &TempDir, envs: &[(&str, &str)], peers: &[&str], keys: &[Key]) -> common::Shown {
        let mut program = vec![common::bin(), PW, "shell", "127.0.0.1", "0"];
        program.extend_from_slice(peers);
        common::terminal(dir.path(), envs, keys, &program)
    }

    /// The URL the node printed on the terminal.
    fn url_of(shown: &common::Shown) -> String {
        let url =
            lines(&shown.screen).iter().find_map(|l| l.strip_prefix("listening on ")).map(str::to_string);
        url.unwrap_or_else(|| panic!("no URL on the screen:\n{}", shown.dump()))
    }

    const PROMPT: &str = "tinyp2p> ";

    #[test]
    fn the_prompt_is_shown_commands_are_answered_and_exit_ends_it_with_status_0() {
        let dir = folder(&[MINE]);
        let keys = [
            Key::Expect(PROMPT),
            Key::Send("peers\r"),
            Key::Expect("(this node)"),
            Key::Expect(PROMPT),
            Key::Send("ls\r"),
            Key::Expect("1 name on 1 node"),
            Key::Expect(PROMPT),
            Key::Send("exit\r"),
        ];
        let shown = shell(&dir, &[], &[], &keys);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        let url = url_of(&shown);
        let folder = std::fs::canonicalize(dir.path()).unwrap();
        // The request log of `ls` stays off the terminal: the screen is exactly this.
        let want = [
            format!("sharing 1 file from {}", folder.display()),
            format!("listening on {url}"),
            format!("to fetch from here: tinyp2p - client {url} PATTERN (TINYP2P_PASSWORD set)"),
            "tinyp2p> peers".to_string(),
            format!("{url} (this node)"),
            "tinyp2p> ls".to_string(),
            format!("\"mine.txt\"  {url}"),
            "1 name on 1 node".to_string(),
            "tinyp2p> exit".to_string(),
        ];
        assert_eq!(lines(&shown.screen), want, "{}", shown.dump());
    }

    #[test]
    fn a_peer_it_cannot_join_after_the_start_is_shown_above_the_prompt() {
        let late = late_peer();
        let dir = folder(&[MINE]);
        let keys =
            [Key::Expect(PROMPT), Key::Expect("cannot join"), Key::Expect(PROMPT), Key::Send("exit\r")];
        let shown = shell(&dir, &[], &[&late.url], &keys);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        let warning =
            format!("tinyp2p: warning: cannot join: node {} answered a string instead of a list", late.url);
        let screen = lines(&shown.screen);
        let at = screen.iter().position(|l| *l == warning);
        assert!(at.is_some_and(|at| screen[at + 1] == "tinyp2p> exit"), "{}", shown.dump());
    }

    #[test]
    fn a_terminal_line_editing_does_not_know_takes_commands_and_ctrl_c_there_spoils_none() {
        let dir = folder(&[MINE]);
        // a peer slow to list, so that `ls` is still running when it looks for a Ctrl-C
        let slow = Fake::start(|mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own])),
            _ => {
                std::thread::sleep(Duration::from_millis(300));
                Reply::Value(common::xml_listing(&["slow.txt"]))
            }
        });
        // Line editing reads such a terminal as plain input, and Ctrl-C at its prompt is a
        // signal: it must neither end the shell nor spoil the commands typed after it.
        let keys = [
            Key::Expect(PROMPT),
            Key::Send("\x03"),
            Key::Expect("^C"),
            Key::Send("peers\r"),
            Key::Expect("(this node)"),
            Key::Expect(PROMPT),
            Key::Send("ls\r"),
            Key::Expect("2 names on 2 nodes"),
            Key::Expect(PROMPT),
            Key::Send("exit\r"),
        ];
        for term in ["dumb", "emacs"] {
            let shown = shell(&dir, &[("TERM", term)], &[&slow.url], &keys);
            assert_eq!(shown.status, Some(0), "TERM={term}: {}", shown.dump());
            assert!(!shown.screen.contains("interrupted"), "TERM={term}: {}", shown.dump());
        }
    }

    /// Starts a shell node on a pseudo-terminal, sends it SIGTERM at its prompt, and says
    /// what the terminal was set to at the prompt and after: `ICANON ECHO` flags, the exit
    /// status, and whether bracketed paste was turned off after it was last turned on.
    const SIGTERM_AT_PROMPT: &str = r#"
import os, pty, select, signal, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, end = b"", time.time() + 20
while b"tinyp2p> " not in out and time.time() < end:
    if select.select([fd], [], [], 0.1)[0]:
        out += os.read(fd, 4096)
flags = lambda: [bool(termios.tcgetattr(fd)[3] & f) for f in (termios.ICANON, termios.ECHO)]
at_prompt = flags()
os.kill(pid, signal.SIGTERM)
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
while select.select([fd], [], [], 0.5)[0]:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
paste_off = out.rfind(b"\x1b[?2004l") > out.rfind(b"\x1b[?2004h")
print(at_prompt, flags(), status, paste_off)
"#;

    #[test]
    fn sigterm_at_the_prompt_leaves_the_terminal_as_it_was() {
        let dir = folder(&[MINE]);
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", SIGTERM_AT_PROMPT, common::bin(), PW, "shell", "127.0.0.1", "0"])
            .current_dir(dir.path());
        let run = common::run(cmd);
        // Line editing turns echo and line mode off at the prompt, and bracketed paste on:
        // SIGTERM must turn them back.
        assert_eq!(run.stdout.trim(), "[False, False] [True, True] 143 True", "stderr: {}", run.stderr);
    }

    #[test]
    fn ctrl_d_at_the_prompt_ends_it_with_status_0() {
        let dir = folder(&[MINE]);
        let shown = shell(&dir, &[], &[], &[Key::Expect(PROMPT), Key::Send("\x04")]);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        assert_eq!(lines(&shown.screen).last(), Some(&"tinyp2p>"), "{}", shown.dump());
    }

    #[test]
    fn ctrl_c_at_the_prompt_gives_a_new_prompt_and_the_shell_goes_on() {
        let dir = folder(&[MINE]);
        let keys = [
            Key::Expect(PROMPT),
            Key::Send("half a comm"),
            Key::Send("\x03"),
            Key::Expect(PROMPT),
            Key::Send("peers\r"),
            Key::Expect("(this node)"),
            Key::Expect(PROMPT),
            Key::Send("exit\r"),
        ];
        let shown = shell(&dir, &[], &[], &keys);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        let screen = lines(&shown.screen);
        assert!(screen.contains(&format!("{} (this node)", url_of(&shown)).as_str()), "{}", shown.dump());
        assert!(!shown.screen.contains("unknown command"), "the half command ran:\n{}", shown.dump());
    }

    #[test]
    fn lines_typed_ahead_or_pasted_together_each_run_in_turn() {
        let dir = folder(&[MINE]);
        let keys = [
            Key::Expect(PROMPT),
            // two commands at once, as typed ahead, or pasted where there is no bracketed paste
            Key::Send("peers\rls\r"),
            Key::Expect("1 name on 1 node"),
            Key::Expect(PROMPT),
            // a bracketed paste of two lines, then Enter
            Key::Send("\x1b[200~ls mine\rpeers\r\x1b[201~"),
            Key::Send("\r"),
            Key::Expect("1 name on 1 node"),
            Key::Expect("(this node)"),
            Key::Expect(PROMPT),
            Key::Send("exit\r"),
        ];
        let shown = shell(&dir, &[], &[], &keys);
        assert_eq!(shown.status, Some(0), "{}", shown.dump());
        let screen = lines(&shown.screen);
        let count = |end: &str| screen.iter().filter(|l| l.ends_with(end)).count();
        assert_eq!((count("(this node)"), count("1 name on 1 node")), (2, 2), "{}", shown.dump());
    }

    #[test]
    fn with_stdout_in_a_file_it_reads_plain_lines_ctrl_c_ends_nothing_and_the_file_holds_the_answers() {
        let dir = folder(&[MINE]);
        let script = "exec \"$0\" \"$1\" shell 127.0.0.1 0 > answers.txt";
        let program = ["sh", "-c", script, common::bin(), PW];
        let keys = [
            Key::Expect("listening on"),
            // its error line comes on the terminal once the shell reads commands
            Key::Send("nosuch\r"),
            Key::Expect("unknown command"),
            // Ctrl-C with nothing running ends nothing, as at a prompt
            Key::Send("\x03"),
            Key::Send("peers\rexit\r"),
        ];
        let shown = common::terminal(dir.path(), &[], &keys, &program);
        assert_eq!(shown.status, Some(1), "1 for the unknown command, not 130: {}", shown.dump());
        let answers = String::from_utf8(dir.read("answers.txt")).unwrap();
        assert!(answers.ends_with(" (this node)\n") && answers.lines().count() == 1, "{answers:?}");
        // the terminal echoed what was typed: nobody typed blind
        assert!(lines(&shown.screen).iter().any(|l| l.ends_with("peers")), "{}", shown.dump());
    }

    #[test]
    fn with_its_output_piped_on_ctrl_c_ends_the_shell_as_it_ends_the_rest_of_the_pipeline() {
        // Ctrl-C ends `cat` too: a shell left running would answer into a closed pipe, unheard
        let dir = folder(&[MINE]);
        let program = ["sh", "-c", "\"$0\" \"$1\" shell 127.0.0.1 0 | cat", common::bin(), PW];
        let keys = [Key::Send("nosuch\r"), Key::Expect("unknown command"), Key::Send("\x03")];
        let shown = common::terminal(dir.path(), &[], &keys, &program);
        assert_eq!(shown.status, Some(130), "the pipeline did not end: {}", shown.dump());
    }

    /// A fake node offering `endless.bin`, whose download goes as `download` says.
    fn offering(download: fn() -> Reply) -> Fake {
        Fake::start(move |mode, own| match mode {
            0 => Reply::Value(common::xml_strings(&[own])),
            1 => Reply::Value(common::xml_listing(&["endless.bin"])),
            _ => download(),
        })
    }

    /// Runs `command` in a shell joined to `fake`, with `env` added to TINYP2P_TIMEOUT=25,
    /// presses Ctrl-C once `seen` is on screen, then asks `peers` and exits; returns what was
    /// shown and how long it all took.
    fn interrupt(
        fake: &Fake,
        env: &[(&str, &str)],
        command: &str,
        seen: &str,
    ) -> (TempDir, common::Shown, Duration) {
        let dir = folder(&[MINE]);
        let line = format!("{command}\r");
        // The line echoed and ended: the prompt has given the terminal back (Ctrl-C is a
        // signal again, not a key), and the command runs.
        let keys = [
            Key::Expect(PROMPT),
            Key::Send(&line),
            Key::Expect(command),
            Key::Expect("\n"),
            Key::Expect(seen),
            Key::Send("\x03"),
            Key::Expect(PROMPT),
            Key::Send("peers\r"),
            Key::Expect("(this node)"),
            Key::Expect(PROMPT),
            Key::Send("exit\r"),
        ];
        let started = Instant::now();
        let env = [&[("TINYP2P_TIMEOUT", "25")][..], env].concat();
        let shown = shell(&dir, &env, &[&fake.url], &keys);
        (dir, shown, started.elapsed())
    }

    #[test]
    fn ctrl_c_interrupts_a_running_fetch_leaving_nothing_and_the_shell_goes_on() {
        let fake = offering(|| Reply::Trickle(1 << 30));
        let (dir, shown, took) = interrupt(&fake, &[], "fetch .", "\"endless.bin\"");
        assert!(matches!(shown.status, Some(0 | 1)), "{}", shown.dump());
        assert!(took < Duration::from_secs(20), "took {took:?}");
        let screen = lines(&shown.screen);
        // (the terminal itself may echo `^C` in front of it)
        assert!(screen.iter().any(|l| l.ends_with("tinyp2p: interrupted")), "{}", shown.dump());
        assert!(
            !screen.iter().any(|l| l.starts_with("done: ")),
            "the interrupted run went on: {}",
            shown.dump()
        );
        assert!(screen.contains(&"tinyp2p> peers"), "{}", shown.dump());
        for line in &screen {
            assert!(!line.contains("received at") && !line.ends_with('%'), "left on screen: {line:?}");
        }
        assert_eq!(dir.names(), ["mine.txt"], "something partial was left");
    }

    #[test]
    fn ctrl_c_interrupts_a_fetch_whose_node_stopped_sending() {
        let fake = offering(|| Reply::Stall(10 << 20));
        let (dir, shown, took) = interrupt(&fake, &[], "fetch .", "\"endless.bin\"");
        assert!(took < Duration::from_secs(10), "Ctrl-C took {took:?} to act\n{}", shown.dump());
        assert_eq!(dir.names(), ["mine.txt"], "something partial was left");
    }

    #[test]
    fn exit_right_after_an_interrupted_fetch_leaves_no_part_file_where_o_tmpfile_is_missing() {
        let fake = offering(|| Reply::Stall(10 << 20));
        let shim_dir = TempDir::new();
        let lib = crate::trust::part_files::shim(&shim_dir);
        // The interrupted download still holds its `.part` file, waiting on the silent node
        // for 25 s, when the shell exits.
        let (dir, shown, _) =
            interrupt(&fake, &[("LD_PRELOAD", lib.to_str().unwrap())], "fetch .", "\"endless.bin\"");
        assert!(matches!(shown.status, Some(0 | 1)), "{}", shown.dump());
        assert_eq!(dir.names(), ["mine.txt"], "something partial was left\n{}", shown.dump());
    }

    #[test]
    fn ctrl_c_interrupts_a_fetch_still_asking_a_node_that_does_not_answer() {
        let fake = Fake::start(|_, _| Reply::Silent);
        // The node never answers the listing the fetch begins with.
        let (dir, shown, took) = interrupt(&fake, &[], "fetch .", "");
        assert!(took < Duration::from_secs(10), "Ctrl-C took {took:?} to act\n{}", shown.dump());
        assert!(lines(&shown.screen).iter().any(|l| l.ends_with("tinyp2p: interrupted")), "{}", shown.dump());
        assert_eq!(dir.names(), ["mine.txt"], "something was written");
    }
}
