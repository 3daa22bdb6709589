//! The command line: usage, the password from the environment, clear one-line failures,
//! and what a node says and answers.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::{Node, Run, TempDir};
use xmlrpc::Value;

/// The password of the nodes these tests start.
const PW: &str = "secret";
/// The file every node here shares.
const HELLO: &[u8] = b"hello from the node\n";

/// The binary with `args`, run in `dir` with no password in the environment.
fn command(dir: &TempDir, args: &[&str]) -> Command {
    let mut cmd = common::tinyp2p();
    cmd.args(args).current_dir(dir.path()).env_remove("TINYP2P_PASSWORD");
    cmd
}

/// Runs the binary with `args` in a fresh folder.
fn tinyp2p(args: &[&str]) -> Run {
    common::run(command(&TempDir::new(), args))
}

/// Asserts the run printed no panic and no backtrace.
fn assert_no_panic(run: &Run) {
    for sign in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(sign), "stderr shows {sign:?}:\n{}", run.stderr);
    }
}

/// Asserts `args` are refused with a usage message on stderr and exit status 2.
fn assert_usage_error(args: &[&str]) {
    let run = tinyp2p(args);
    assert_eq!(run.status.code(), Some(2), "{args:?}; stderr:\n{}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("usage"), "{args:?}; stderr:\n{}", run.stderr);
    assert_no_panic(&run);
}

/// Asserts stderr is one line, starting `tinyp2p: `.
fn assert_one_line(run: &Run) {
    assert_eq!(run.stderr.lines().count(), 1, "one line:\n{}", run.stderr);
    assert!(run.stderr.starts_with("tinyp2p: "), "{}", run.stderr);
}

/// Asserts the run failed (status 1) with stderr lines that all start `tinyp2p: `.
fn assert_failed(run: &Run) {
    assert_eq!(run.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(!run.stderr.trim().is_empty(), "a failure says something on stderr");
    for line in run.stderr.lines() {
        assert!(line.starts_with("tinyp2p: "), "stderr line without the prefix: {line:?}");
    }
    assert_no_panic(run);
}

/// A URL where nothing listens: a port just bound and released.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Starts a Rust node with the password `PW` sharing `hello.txt` from a fresh folder, which
/// lives as long as the returned TempDir.
fn hello_node(peers: &[&str]) -> (TempDir, Node) {
    let dir = TempDir::new();
    dir.write("hello.txt", HELLO);
    let node = Node::rust(PW, dir.path(), peers);
    (dir, node)
}

/// Asserts the run went well and brought `hello.txt` into `dir`.
fn assert_fetched_hello(dir: &TempDir, run: &Run) {
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert_eq!(dir.read("hello.txt"), HELLO);
}

/// Runs the client with `password` against `url` in `dir`, fetching everything.
fn client(dir: &TempDir, password: &str, url: &str) -> Run {
    common::run(command(dir, &[password, "client", url, "."]))
}

mod usage {
    use super::*;

    #[test]
    fn help_prints_usage_on_stdout_and_exits_zero() {
        for flag in ["--help", "-h"] {
            let run = tinyp2p(&[flag]);
            assert_eq!(run.status.code(), Some(0), "{flag}: {}", run.stderr);
            let text = run.stdout.to_lowercase();
            for word in ["usage", "server", "client"] {
                assert!(text.contains(word), "{flag} does not mention {word:?}:\n{}", run.stdout);
            }
        }
    }

    #[test]
    fn help_gives_each_setting_its_range_and_default() {
        let help = tinyp2p(&["--help"]).stdout;
        let ranges = ["(0.1 to 86400, default 10)", "(0 to 10^12, default 1024)", "(0.1 to 86400, default 3"];
        for (setting, range) in
            ["TINYP2P_TIMEOUT", "TINYP2P_SPEED_LIMIT", "TINYP2P_SPEED_TIME"].iter().zip(ranges)
        {
            let after = help.split_once(setting).map_or("", |(_, after)| after);
            let own = after.split("TINYP2P_").next().unwrap_or_default();
            assert!(own.contains(range), "--help gives {setting} no {range}:\n{help}");
        }
    }

    #[test]
    fn version_prints_the_package_version() {
        let run = tinyp2p(&["--version"]);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert!(run.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", run.stdout);
    }

    #[test]
    fn no_arguments_is_a_usage_error() {
        assert_usage_error(&[]);
    }

    #[test]
    fn a_mode_word_other_than_server_or_client_is_a_usage_error() {
        assert_usage_error(&[PW, "serve", "127.0.0.1", "0"]);
        assert_usage_error(&[PW, "Client", "http://127.0.0.1:1", "x"]);
    }

    #[test]
    fn a_server_without_host_or_port_is_a_usage_error() {
        assert_usage_error(&[PW, "server", "127.0.0.1"]);
        assert_usage_error(&[PW, "server"]);
    }

    #[test]
    fn a_shell_without_host_or_port_is_a_usage_error_naming_shell() {
        for args in [&[PW, "shell", "127.0.0.1"][..], &[PW, "shell"]] {
            let run = tinyp2p(args);
            assert_eq!(run.status.code(), Some(2), "{args:?}; stderr:\n{}", run.stderr);
            let first = run.stderr.lines().next().unwrap_or_default();
            assert_eq!(first, "tinyp2p: shell takes HOST PORT [PEER_URL...]", "{args:?}");
        }
    }

    #[test]
    fn a_client_with_too_few_or_too_many_arguments_is_a_usage_error() {
        assert_usage_error(&[PW, "client", "http://127.0.0.1:1"]);
        assert_usage_error(&[PW, "client", "http://127.0.0.1:1", "x", "extra"]);
    }

    #[test]
    fn a_url_or_nothing_given_as_host_is_a_usage_error_naming_host() {
        // "[::1" would make the node's own URL "http://[::1:PORT", which no peer keeps
        for host in ["http://127.0.0.1", "127.0.0.1/", "", "user@127.0.0.1", "[::1", "127.0.0.1:80", "a<b"] {
            assert_usage_error(&[PW, "server", host, "0"]);
            assert!(tinyp2p(&[PW, "shell", host, "0"]).stderr.contains("HOST must be"), "{host:?}");
        }
    }

    #[test]
    fn a_non_numeric_port_is_a_usage_error() {
        assert_usage_error(&[PW, "server", "127.0.0.1", "http"]);
        assert_usage_error(&[PW, "server", "127.0.0.1", "-5"]);
    }

    #[test]
    fn a_node_url_without_a_valid_port_is_a_usage_error_and_nothing_is_called() {
        for url in ["http://127.0.0.1", "http://127.0.0.1:", "http://127.0.0.1:abc", "http://127.0.0.1:0"] {
            assert_usage_error(&[PW, "list", url]);
            assert_usage_error(&[PW, "client", url, "x"]);
            assert_usage_error(&[PW, "server", "127.0.0.1", "0", url]);
        }
        for url in ["http://127.0.0.1:99999", "http://127.0.0.1:1:2", "http://::1:80"] {
            assert_usage_error(&[PW, "list", url]);
        }
        // a host no client can call: user info (taken for a wrong password before), markup
        for url in ["http://user@127.0.0.1:1", "http://a<b>:1", "http://[zz]:1"] {
            assert_usage_error(&[PW, "list", url]);
        }
    }

    #[test]
    fn a_node_url_with_a_path_no_request_can_carry_is_a_usage_error() {
        let url = format!("{}/x y", closed_url());
        assert_usage_error(&[PW, "list", &url]);
        assert_usage_error(&[PW, "client", &url, "x"]);
    }

    #[test]
    fn help_and_version_are_shown_whatever_the_settings_say() {
        for flag in ["--help", "--version"] {
            let dir = TempDir::new();
            let mut cmd = command(&dir, &[flag]);
            cmd.env("TINYP2P_TIMEOUT", "bad").env("TINYP2P_SPEED_TIME", "-1");
            let run = common::run(cmd);
            assert_eq!(run.status.code(), Some(0), "{flag}: {}", run.stderr);
            assert!(run.stdout.contains("tinyp2p"), "{flag}: {}", run.stdout);
        }
    }

    #[test]
    fn output_that_cannot_be_written_is_one_line_and_a_failure() {
        for args in [&["--help"][..], &["--version"]] {
            let full = std::fs::File::create("/dev/full").expect("/dev/full");
            let run = common::run_with_stdout(command(&TempDir::new(), args), full);
            assert_eq!(run.status.code(), Some(1), "{args:?}: {}", run.stderr);
            assert_one_line(&run);
            assert!(run.stderr.contains("cannot write to standard output"), "{}", run.stderr);
        }
    }

    #[test]
    fn a_closed_pipe_on_stdout_is_not_an_error() {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let run = common::run_with_stdout(command(&TempDir::new(), &["--help"]), writer);
        assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
        assert_eq!(run.stderr, "");
    }
}

mod password {
    use super::*;

    #[test]
    fn a_client_given_dash_reads_the_password_from_tinyp2p_password() {
        let (_shared, node) = hello_node(&[]);
        let dir = TempDir::new();
        let mut cmd = command(&dir, &["-", "client", &node.url, "."]);
        cmd.env("TINYP2P_PASSWORD", PW);
        let run = common::run(cmd);
        assert_fetched_hello(&dir, &run);
    }

    #[test]
    fn a_node_given_dash_reads_the_password_from_tinyp2p_password() {
        let shared = TempDir::new();
        shared.write("hello.txt", HELLO);
        let mut cmd = command(&shared, &["-", "server", "127.0.0.1", "0"]);
        cmd.env("TINYP2P_PASSWORD", PW);
        let node = Node::start(cmd);
        let dir = TempDir::new();
        let run = client(&dir, PW, &node.url);
        assert_fetched_hello(&dir, &run);
    }

    #[test]
    fn dash_with_a_variable_that_is_not_utf8_says_so_not_that_it_is_unset() {
        use std::os::unix::ffi::OsStrExt;
        let dir = TempDir::new();
        let mut cmd = command(&dir, &["-", "list", &closed_url()]);
        cmd.env("TINYP2P_PASSWORD", std::ffi::OsStr::from_bytes(b"pass\xffword"));
        let run = common::run(cmd);
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("TINYP2P_PASSWORD is not UTF-8"), "{}", run.stderr);
        assert!(!run.stderr.contains("not set"), "{}", run.stderr);
    }

    #[test]
    fn dash_without_the_variable_is_a_clear_error_naming_it() {
        let (_shared, node) = hello_node(&[]);
        let dir = TempDir::new();
        let run = client(&dir, "-", &node.url);
        assert!(!run.status.success(), "a run without a password succeeded");
        assert!(run.stderr.contains("TINYP2P_PASSWORD"), "{}", run.stderr);
        assert_no_panic(&run);
        assert!(dir.names().is_empty(), "{:?}", dir.names());
    }

    /// A client calling `url` (the node started as `node.url`) with `password` fails, saying
    /// the password or token is wrong and that the token is bound to the node's URL.
    fn assert_refused_as_wrong_password(node: &Node, password: &str, url: &str) {
        let dir = TempDir::new();
        let run = client(&dir, password, url);
        assert_failed(&run);
        let text = run.stderr.to_lowercase();
        assert!(text.contains("password") || text.contains("token"), "{}", run.stderr);
        assert!(text.contains("bound") || text.contains("localhost"), "no URL binding hint: {}", run.stderr);
        assert!(run.stderr.contains(url), "the message names {url}: {}", run.stderr);
        assert!(dir.names().is_empty(), "{:?} from {}", dir.names(), node.url);
    }

    #[test]
    fn a_wrong_password_fails_and_says_the_token_is_bound_to_the_url() {
        let (_shared, node) = hello_node(&[]);
        assert_refused_as_wrong_password(&node, "not the secret", &node.url);
    }

    #[test]
    fn a_wrong_password_names_the_other_spellings_it_tried() {
        let (_shared, node) = hello_node(&[]);
        let run = client(&TempDir::new(), "not the secret", &node.url);
        let localhost = format!("http://localhost:{}", node.port());
        assert!(run.stderr.contains(&localhost), "tried spellings not named: {}", run.stderr);
    }

    /// A client given `url` for the node started as `node.url` fetches from it, and says
    /// which URL the node goes by when that differs from what it was given.
    fn assert_found_by_its_own_url(node: &Node, url: &str) {
        let dir = TempDir::new();
        let run = client(&dir, PW, url);
        assert_fetched_hello(&dir, &run);
        assert_no_panic(&run);
        if !url.starts_with(&node.url) {
            let note = format!("goes by {}", node.url);
            assert!(run.stderr.contains(&note), "no {note:?} in: {}", run.stderr);
        }
    }

    #[test]
    fn localhost_for_a_node_started_as_127_0_0_1_finds_it_under_its_own_url() {
        let (_shared, node) = hello_node(&[]);
        assert_found_by_its_own_url(&node, &format!("http://localhost:{}", node.port()));
    }

    #[test]
    fn a_trailing_slash_or_rpc2_path_is_not_part_of_the_node_url() {
        let (_shared, node) = hello_node(&[]);
        for url in [format!("{}/", node.url), format!("{}/RPC2", node.url)] {
            assert_found_by_its_own_url(&node, &url);
        }
    }
}

mod failures {
    use super::*;

    #[test]
    fn a_port_in_use_is_one_plain_line_and_a_failure() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let run = tinyp2p(&[PW, "server", "127.0.0.1", &port]);
        assert_failed(&run);
        assert_one_line(&run);
        assert!(run.stderr.contains(&format!("cannot listen on 127.0.0.1:{port}: ")), "{}", run.stderr);
        assert!(!run.stderr.contains("os error"), "{}", run.stderr);
    }

    /// Runs the binary with `args` in a folder deleted once the shell starting it is inside.
    fn in_deleted_folder(args: &[&str]) -> Run {
        let parent = TempDir::new();
        let gone = parent.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let script = "cd \"$1\" && rmdir \"$1\" && shift && exec \"$0\" \"$@\"";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, common::bin()]).arg(&gone).args(args);
        common::run(cmd)
    }

    #[test]
    fn a_node_started_in_a_deleted_folder_fails_saying_so() {
        let run = in_deleted_folder(&[PW, "server", "127.0.0.1", "0"]);
        assert_failed(&run);
        assert!(run.stderr.contains("cannot share this folder: it was deleted"), "{}", run.stderr);
    }

    #[test]
    fn a_client_in_a_deleted_folder_fails_saying_so_before_any_call() {
        let run = in_deleted_folder(&[PW, "client", &closed_url(), "."]);
        assert_failed(&run);
        assert_one_line(&run);
        assert!(run.stderr.contains("cannot fetch into this folder: it was deleted"), "{}", run.stderr);
    }

    #[test]
    fn an_unreachable_node_is_one_clear_line_and_a_non_zero_exit() {
        let url = closed_url();
        let run = client(&TempDir::new(), PW, &url);
        assert_failed(&run);
        assert_one_line(&run);
        assert!(run.stderr.contains(&url), "names the node: {}", run.stderr);
    }

    #[test]
    fn an_invalid_regex_is_refused_before_any_network_call() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let run = common::run(command(&TempDir::new(), &[PW, "client", &url, "("]));
        assert!(!run.status.success(), "an invalid regex was accepted");
        let text = run.stderr.to_lowercase();
        assert!(text.contains("regex") || text.contains("pattern"), "{}", run.stderr);
        assert!(!text.contains(&url), "the error is about the network: {}", run.stderr);
        assert_no_panic(&run);
        assert_one_line(&run);
        let connection = listener.accept();
        assert!(connection.is_err(), "the client connected to {url} before checking the regex");
    }

    #[test]
    fn a_pattern_holding_a_character_xml_cannot_carry_is_refused_with_the_escape_to_write() {
        for (pattern, escape) in [("\u{1}|ok", r"\u0001"), ("a\u{1b}", r"\u001B"), ("\u{fffe}", r"\uFFFE")] {
            let run = tinyp2p(&[PW, "list", &closed_url(), pattern]);
            assert_eq!(run.status.code(), Some(2), "{pattern:?}: {}", run.stderr);
            assert_one_line(&run);
            assert!(run.stderr.contains(&format!("write it as {escape}")), "{pattern:?}: {}", run.stderr);
        }
    }
}

mod server {
    use super::*;

    #[test]
    fn a_lone_server_answers_a_client() {
        let (_shared, node) = hello_node(&[]);
        let dir = TempDir::new();
        let run = client(&dir, PW, &node.url);
        assert_fetched_hello(&dir, &run);
        let line = format!("fetched \"hello.txt\" ({} bytes) from {}", HELLO.len(), node.url);
        assert!(run.stdout.lines().any(|l| l == line), "no {line:?} in:\n{}", run.stdout);
    }

    #[test]
    fn a_fault_repeating_characters_xml_cannot_carry_is_still_a_readable_fault() {
        let (_shared, node) = hello_node(&[]);
        for body in ["\x01", "\x0c<x/>", "<a\x01/>"] {
            let answer = common::post(&node.url, body.as_bytes()).expect("an HTTP 200 answer");
            let fault = common::parse_answer(answer.clone()).map(|_| ()).unwrap_err();
            let fault = fault.fault().unwrap_or_else(|| panic!("{body:?}: not a readable fault: {answer:?}"));
            assert!(fault.fault_string.starts_with("malformed XML"), "{body:?}: {fault:?}");
        }
    }

    #[test]
    fn a_download_is_created_as_python_creates_files_less_the_umask() {
        let (_shared, node) = hello_node(&[]);
        for (umask, mode) in [("002", 0o664), ("077", 0o600)] {
            let dir = TempDir::new();
            let script = format!("umask {umask}; exec \"$0\" {PW} client {} hello", node.url);
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script, common::bin()]).current_dir(dir.path());
            assert_fetched_hello(&dir, &common::run(cmd));
            let meta = std::fs::metadata(dir.path().join("hello.txt")).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                mode,
                "umask {umask}"
            );
        }
    }

    #[test]
    fn a_server_with_an_unreachable_peer_warns_and_still_serves() {
        let dead = closed_url();
        let (_shared, node) = hello_node(&[&dead]);
        let log = node.log.lock().unwrap().clone();
        let warning = log.iter().find(|line| line.contains(&dead));
        assert!(warning.is_some(), "no warning naming {dead}: {log:?}");
        // The dead peer may stay in the node's list, so the run itself may report it.
        let dir = TempDir::new();
        let run = client(&dir, PW, &node.url);
        assert_eq!(dir.read("hello.txt"), HELLO, "{}", run.stderr);
        assert_no_panic(&run);
    }

    #[test]
    fn a_wrong_token_gets_false_in_every_mode() {
        let (_shared, node) = hello_node(&[]);
        let wrong = common::token(PW, &format!("http://localhost:{}", node.port()));
        let args = [Value::Array(vec![]), Value::from("."), Value::from("hello.txt")];
        for (mode, arg) in args.into_iter().enumerate() {
            let answer = common::call(&node.url, &wrong, mode as i32, arg);
            assert_eq!(answer, Ok(Value::Bool(false)), "mode {mode}");
        }
    }

    #[test]
    fn a_method_with_control_characters_is_logged_escaped_on_one_line() {
        let (_shared, node) = hello_node(&[]);
        // tabs for spaces, which would end the method: tiny_http takes the rest as one
        let forged = "127.0.0.1\t-\t-\t[24/Nov/2026\t10:00:00]\t\"POST\t/RPC2\tHTTP/1.1\"\t200\t-";
        let request = format!("X\n{forged}\n\x1b[8m / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let answer = common::raw_http(&node.url, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer:?}");
        let logged = |l: &String| l.contains("\\u{1b}[8m / HTTP/1.1") && l.contains(" 405 - ");
        let seen = common::eventually(Duration::from_secs(5), || node.log.lock().unwrap().iter().any(logged));
        let log = node.log.lock().unwrap();
        assert!(seen, "no escaped line for the request: {log:?}");
        assert!(!log.iter().any(|l| l.starts_with(forged) || l.contains('\x1b')), "{log:?}");
    }

    #[test]
    fn the_node_logs_one_line_per_request() {
        let (_shared, node) = hello_node(&[]);
        // Request lines only: the start lines may be recorded just after start returns.
        let logged = || node.log.lock().unwrap().iter().filter(|l| l.contains("\"POST /RPC2 HTTP/")).count();
        let before = logged();
        let token = common::token(PW, &node.url);
        for (mode, arg) in [(0, Value::Array(vec![])), (1, Value::from(".")), (2, Value::from("hello.txt"))] {
            common::call(&node.url, &token, mode, arg).expect("call");
        }
        let grew = common::eventually(Duration::from_secs(5), || logged() >= before + 3);
        assert!(grew, "the log did not grow by 3 lines: {:?}", node.log.lock().unwrap());
        assert_eq!(logged(), before + 3, "{:?}", node.log.lock().unwrap());
    }
}
