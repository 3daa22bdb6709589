//! Real processes on 127.0.0.1, Rust and Python (the original's behaviour) in every direction:
//! the seed's walkthrough, content carried byte-exact, the join walk, parallel and stalled
//! transfers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Node, Run, TempDir};
use xmlrpc::Value;

/// The walkthrough's password.
const PW: &str = "123456";

/// Which program runs a node or a client.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Rust,
    Python,
}

/// A file: its name and its content.
type File<'a> = (&'a str, &'a [u8]);

/// Starts a node of `kind` sharing `dir`, joining `peers`.
fn start(kind: Kind, dir: &TempDir, peers: &[&str]) -> Node {
    match kind {
        Kind::Rust => Node::rust(PW, dir.path(), peers),
        Kind::Python => Node::python(PW, dir.path(), peers),
    }
}

/// Runs a client of `kind` in `dir` against `url`.
fn fetch(kind: Kind, dir: &TempDir, url: &str, pattern: &str) -> Run {
    match kind {
        Kind::Rust => common::rust_client(PW, dir.path(), url, pattern),
        Kind::Python => common::python_client(PW, dir.path(), url, pattern),
    }
}

/// Panics with both streams unless the run exited 0.
fn assert_success(run: &Run) {
    assert!(
        run.status.success(),
        "client failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// Asserts a node's peer list is exactly its own URL (the single-server fix).
fn assert_lists_only_itself(node: &Node) {
    assert_eq!(node.peers(PW), vec![node.url.clone()], "peer list of {}", node.url);
}

/// Writes `files` into `dir`.
fn put(dir: &TempDir, files: &[File]) {
    for (name, content) in files {
        dir.write(name, content);
    }
}

/// Asserts `dir` holds each of `files` byte for byte.
fn assert_holds(dir: &TempDir, files: &[File]) {
    for (name, want) in files {
        let got = dir.read(name);
        let first_difference = got.iter().zip(want.iter()).position(|(a, b)| a != b);
        assert!(
            got == *want,
            "{name:?}: got {} bytes, want {}; first difference at byte {first_difference:?}",
            got.len(),
            want.len(),
        );
    }
}

/// Some nodes: the first started alone, each next one joining the one before it.
struct Network {
    /// The shared folders, removed when the network goes.
    _dirs: Vec<TempDir>,
    nodes: Vec<Node>,
}

impl Network {
    /// Starts one node per entry, sharing that entry's files.
    fn chain(shares: &[(Kind, &[File])]) -> Network {
        let mut dirs = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        for (kind, files) in shares {
            let dir = TempDir::new();
            put(&dir, files);
            let previous: Vec<&str> = nodes.last().map(|n| n.url.as_str()).into_iter().collect();
            let node = start(*kind, &dir, &previous);
            dirs.push(dir);
            nodes.push(node);
        }
        Network { _dirs: dirs, nodes }
    }

    /// The first node's URL: the one clients are pointed at.
    fn url(&self) -> &str {
        &self.nodes[0].url
    }

    /// Runs a client of `kind` through the first node in a fresh folder.
    fn fetch(&self, kind: Kind, pattern: &str) -> (TempDir, Run) {
        let dir = TempDir::new();
        let run = fetch(kind, &dir, self.url(), pattern);
        (dir, run)
    }
}

/// One `fetched NAME (N bytes) from URL` line of the Rust client.
#[derive(Debug)]
struct Fetched {
    name: String,
    bytes: u64,
    from: String,
}

/// The `fetched "NAME" (N bytes) from URL` lines of a Rust client run (names quoted as
/// error lines quote them; the names in these tests need no escapes).
fn fetched(run: &Run) -> Vec<Fetched> {
    let parse = |rest: &str| {
        let (head, from) = rest.rsplit_once(" bytes) from ")?;
        let (name, bytes) = head.rsplit_once(" (")?;
        let name = name.strip_prefix('"')?.strip_suffix('"')?;
        Some(Fetched { name: name.to_string(), bytes: bytes.parse().ok()?, from: from.to_string() })
    };
    run.stdout
        .lines()
        .filter_map(|line| line.strip_prefix("fetched "))
        .map(|rest| parse(rest).unwrap_or_else(|| panic!("malformed line: fetched {rest}")))
        .collect()
}

/// The counts of the Rust client's summary line, `done: F fetched, S skipped, E failed`
/// (before the `; SIZE in TIME` that follows).
fn summary(run: &Run) -> &str {
    let line = run.stdout.lines().find(|line| line.starts_with("done: "));
    let line = line.unwrap_or_else(|| panic!("no summary line in stdout:\n{}", run.stdout));
    line.split(';').next().unwrap_or_default()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Every byte value, twice, then bytes that are no UTF-8 at all.
fn all_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255).chain(0..=255).collect();
    bytes.extend_from_slice(b"\xff\xfe\xc3\x28\x80");
    bytes
}

/// A request body for `f(token, mode, arg)` on the node at `url`.
fn request_body(url: &str, mode: i32, arg: Value) -> Vec<u8> {
    let request = xmlrpc::Request::new("f").arg(common::token(PW, url)).arg(mode).arg(arg);
    let mut body = Vec::new();
    request.write_as_xml(&mut body).unwrap();
    body
}

/// A raw HTTP/1.1 POST of `body` to `path`; `close` asks the node to close afterwards.
fn http_post(url: &str, path: &str, body: &[u8], close: bool) -> Vec<u8> {
    let host = url.trim_start_matches("http://");
    let connection = if close { "close" } else { "keep-alive" };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A TCP connection to the node at `url`.
fn connect(url: &str) -> TcpStream {
    let stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

/// Reads one HTTP response (Content-Length or chunked) and returns its status line and body.
fn read_response(reader: &mut impl BufRead) -> (String, Vec<u8>) {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let (mut length, mut chunked) = (0, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header line");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("header has a colon");
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().expect("numeric length"),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if !chunked {
        body.resize(length, 0);
        reader.read_exact(&mut body).expect("body");
    }
    while chunked {
        let mut size = String::new();
        reader.read_line(&mut size).expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).expect("chunk");
        body.extend_from_slice(&chunk[..size]);
        chunked = size > 0;
    }
    (status.trim_end().to_string(), body)
}

mod encodings {
    use super::*;

    /// Files a node in Latin-1 sends: white space alone (which the xmlrpc crate reads as
    /// empty), characters within Latin-1 and beyond it (sent as `&#8364;`), and 4 MiB.
    fn files() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("space.txt", b"   \n\t ".to_vec()),
            ("accents.txt", "caf\u{e9} \u{ff} \u{20ac}\r\n".as_bytes().to_vec()),
            ("big.txt", b"abc def\n".repeat(1 << 19)),
        ]
    }

    #[test]
    fn a_python_node_answering_in_latin_1_is_read_exactly_white_space_and_large_files_too() {
        let share = TempDir::new();
        let files = files();
        files.iter().for_each(|(name, content)| share.write(name, content));
        let mut cmd = common::python_peer();
        cmd.args([PW, "server", "127.0.0.1", "0"]).current_dir(share.path()).env("PEER_ENCODING", "latin-1");
        let node = Node::start(cmd);
        let dir = TempDir::new();
        // a node answering one request at a time: the client must not hold an answer open
        let run = fetch(Kind::Rust, &dir, &node.url, ".");
        assert_success(&run);
        let files: Vec<File> = files.iter().map(|(name, content)| (*name, &content[..])).collect();
        assert_holds(&dir, &files);
    }

    #[test]
    fn a_python_client_calling_in_latin_1_is_answered_by_a_rust_node() {
        let share = TempDir::new();
        let files = files();
        files.iter().for_each(|(name, content)| share.write(name, content));
        let node = start(Kind::Rust, &share, &[]);
        let dir = TempDir::new();
        let mut cmd = common::python_peer();
        cmd.args([PW, "client", &node.url, "accents"])
            .current_dir(dir.path())
            .env("PEER_ENCODING", "latin-1");
        let run = common::run(cmd);
        assert_success(&run);
        assert_eq!(dir.read("accents.txt"), files[1].1, "the CR goes as &#13;, so Python keeps it");
    }
}

mod walkthrough {
    use super::*;

    /// The program itself, which the walkthrough copies to `file0` and `file1`.
    const PROGRAM: &[u8] = include_bytes!("../peer.py");

    /// node0 alone, node1 joining node0, a client in a third folder via node0 with `file*`.
    fn play(kind0: Kind, kind1: Kind, client: Kind) {
        let dir0 = TempDir::new();
        put(&dir0, &[("tinyp2p.py", PROGRAM), ("file0", PROGRAM)]);
        let node0 = start(kind0, &dir0, &[]);
        assert_lists_only_itself(&node0);

        let dir1 = TempDir::new();
        put(&dir1, &[("tinyp2p.py", PROGRAM), ("file1", PROGRAM)]);
        let node1 = start(kind1, &dir1, &[&node0.url]);

        let dir2 = TempDir::new();
        put(&dir2, &[("tinyp2p.py", PROGRAM)]);
        let run = fetch(client, &dir2, &node0.url, "file*");
        assert_success(&run);
        assert_eq!(dir2.names(), ["file0", "file1", "tinyp2p.py"]);
        assert_holds(&dir2, &[("file0", PROGRAM), ("file1", PROGRAM)]);
        if let Kind::Rust = client {
            let lines = fetched(&run);
            let origins: Vec<(&str, &str)> =
                lines.iter().map(|f| (f.name.as_str(), f.from.as_str())).collect();
            assert!(origins.contains(&("file0", &node0.url)), "{lines:?}");
            assert!(origins.contains(&("file1", &node1.url)), "{lines:?}");
            assert!(lines.iter().all(|f| f.bytes == PROGRAM.len() as u64), "{lines:?}");
            assert_eq!(summary(&run), "done: 2 fetched, 0 skipped, 0 failed");
        }
    }

    #[test]
    fn rust_nodes_and_the_rust_client_play_it_as_written() {
        play(Kind::Rust, Kind::Rust, Kind::Rust);
    }

    #[test]
    fn a_python_node0_and_a_rust_node1_play_it_with_the_rust_client() {
        play(Kind::Python, Kind::Rust, Kind::Rust);
    }

    #[test]
    fn a_rust_node0_and_a_python_node1_play_it_with_the_rust_client() {
        play(Kind::Rust, Kind::Python, Kind::Rust);
    }

    #[test]
    fn the_original_client_plays_it_against_rust_nodes() {
        play(Kind::Rust, Kind::Rust, Kind::Python);
    }

    #[test]
    fn the_original_client_plays_it_against_mixed_nodes() {
        play(Kind::Python, Kind::Rust, Kind::Python);
    }
}

mod rust_client_and_python_nodes {
    use super::*;

    const TEXT: &[u8] = b"plain text\nwith a & an <element> and ]]> in it\n\ttabbed\n";
    const UNICODE: &[u8] = "Grüße aus Köln — 世界 🌍\nzweite Zeile: ½ ≠ ∞\n".as_bytes();

    /// Fetches everything `pattern` searches from two Python nodes (the second joins the
    /// first) with the Rust client, asserting the run went well.
    fn fetch_from_python(first: &[File], second: &[File], pattern: &str) -> (Network, TempDir, Run) {
        let network = Network::chain(&[(Kind::Python, first), (Kind::Python, second)]);
        let (dir, run) = network.fetch(Kind::Rust, pattern);
        assert_success(&run);
        (network, dir, run)
    }

    #[test]
    fn text_files_from_two_python_nodes_arrive_byte_exact_from_the_right_node() {
        let second: &[File] = &[("b.txt", b"from the second node\n")];
        let (network, dir, run) = fetch_from_python(&[("a.txt", TEXT)], second, ".");
        assert_eq!(dir.names(), ["a.txt", "b.txt"]);
        assert_holds(&dir, &[("a.txt", TEXT), ("b.txt", second[0].1)]);
        let origins: BTreeMap<String, String> = fetched(&run).into_iter().map(|f| (f.name, f.from)).collect();
        assert_eq!(origins["a.txt"], network.nodes[0].url);
        assert_eq!(origins["b.txt"], network.nodes[1].url);
    }

    #[test]
    fn a_large_text_full_of_entities_from_python_arrives_byte_exact() {
        let line = "a & b < c > d ]]> ü 世 🌍\n".as_bytes();
        let text: Vec<u8> = line.iter().copied().cycle().take(line.len() * 40_000).collect();
        let (_network, dir, _run) = fetch_from_python(&[("big.txt", &text)], &[], ".");
        assert_holds(&dir, &[("big.txt", &text)]);
    }

    #[test]
    fn a_binary_file_python_sends_as_base64_arrives_byte_exact() {
        let binary = all_bytes();
        let (_network, dir, run) = fetch_from_python(&[("a.txt", TEXT)], &[("blob.bin", &binary)], ".");
        assert_holds(&dir, &[("blob.bin", &binary), ("a.txt", TEXT)]);
        let blob = fetched(&run).into_iter().find(|f| f.name == "blob.bin");
        assert_eq!(blob.map(|f| f.bytes), Some(binary.len() as u64));
    }

    #[test]
    fn non_ascii_utf8_text_and_names_from_python_arrive_byte_exact() {
        let (_network, dir, _run) =
            fetch_from_python(&[("grüße.txt", UNICODE)], &[("世界.txt", UNICODE)], ".");
        assert_eq!(dir.names(), ["grüße.txt", "世界.txt"]);
        assert_holds(&dir, &[("grüße.txt", UNICODE), ("世界.txt", UNICODE)]);
    }

    #[test]
    fn names_of_white_space_alone_from_python_arrive_under_those_names() {
        let (_network, dir, _run) = fetch_from_python(&[(" ", TEXT)], &[("   ", UNICODE)], ".");
        assert_eq!(dir.names(), [" ", "   "]);
        assert_holds(&dir, &[(" ", TEXT), ("   ", UNICODE)]);
    }

    #[test]
    fn only_names_the_pattern_searches_come_from_python_nodes() {
        let first: &[File] = &[("keep.txt", TEXT), ("skip.bin", b"x")];
        let (_network, dir, _run) =
            fetch_from_python(first, &[("also.txt", UNICODE), ("txt.nope", b"y")], r"\.txt$");
        assert_eq!(dir.names(), ["also.txt", "keep.txt"]);
    }

    /// The Python node sends text raw, CR and all. The original client's XML parser turns
    /// CR LF and a lone CR into LF (PROTOCOL.md); the `xmlrpc` crate keeps them. The Rust
    /// client may read it either way, but must not garble it.
    #[test]
    fn raw_carriage_returns_from_python_arrive_raw_where_the_original_client_folds_them() {
        // Python sends text raw, CR included. Its own client folds CR LF and CR into LF,
        // as XML says; the Rust client keeps them, as the xmlrpc crate does: byte-exact.
        let raw: &[u8] = b"one\r\ntwo\rthree\n";
        let network = Network::chain(&[(Kind::Python, &[("cr.txt", raw)])]);
        let (python_dir, python_run) = network.fetch(Kind::Python, ".");
        assert_success(&python_run);
        assert_holds(&python_dir, &[("cr.txt", b"one\ntwo\nthree\n")]);
        let (rust_dir, rust_run) = network.fetch(Kind::Rust, ".");
        assert_success(&rust_run);
        assert_holds(&rust_dir, &[("cr.txt", raw)]);
    }

    /// Runs the Rust client in a new folder against `url`, fetching everything, with
    /// TINYP2P_TIMEOUT of 1 s.
    fn fetch_with_a_1_s_timeout(url: &str) -> (TempDir, Run) {
        let dir = TempDir::new();
        let mut cmd = common::tinyp2p();
        cmd.args([PW, "client", url, "."]).current_dir(dir.path()).env("TINYP2P_TIMEOUT", "1");
        (dir, common::run(cmd))
    }

    #[test]
    fn two_hundred_files_from_one_python_node_all_arrive_though_it_queues_only_five_connections() {
        // a Python node answers one call at a time and queues 5 connections: more, and the
        // kernel drops a connection, to retry it a second later, past a 1 s timeout
        let share = TempDir::new();
        (0..200).for_each(|i| share.write(&format!("f{i:03}"), format!("{i}\n")));
        let node = Node::python(PW, share.path(), &[]);
        let (dir, run) = fetch_with_a_1_s_timeout(&node.url);
        assert_success(&run);
        assert_eq!(dir.names().len(), 200, "{}", run.stderr);
        assert_eq!(dir.read("f123"), b"123\n");
    }

    #[test]
    fn a_python_node_that_stops_answering_mid_fetch_is_given_up_and_counted_unreachable() {
        // opening a FIFO hangs the single-threaded node for good; its name comes first
        let share = TempDir::new();
        (0..40).for_each(|i| share.write(&format!("f{i:02}"), "x"));
        nix::unistd::mkfifo(&share.path().join("a fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let node = Node::python(PW, share.path(), &[]);
        let (dir, run) = fetch_with_a_1_s_timeout(&node.url);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        assert!(run.stderr.contains("not asked again"), "the node was asked for every file:\n{}", run.stderr);
        let summary = run.stdout.lines().last().unwrap_or_default();
        assert!(summary.contains("41 failed, 1 of 1 node unreachable"), "{summary}");
        assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
    }

    #[test]
    fn the_rust_client_adds_nothing_to_a_python_network() {
        let (network, _dir, _run) = fetch_from_python(&[("a.txt", TEXT)], &[], ".");
        let expected: Vec<String> = network.nodes.iter().map(|n| n.url.clone()).collect();
        for node in &network.nodes {
            let mut peers = node.peers(PW);
            peers.sort();
            let mut want = expected.clone();
            want.sort();
            assert_eq!(peers, want, "peer list of {}", node.url);
        }
    }
}

mod python_client_and_rust_nodes {
    use super::*;

    /// The original client fetches `files` (shared by a Rust node that a second Rust node
    /// joined) and must get each one byte-exact.
    fn assert_the_original_client_gets(files: &[File]) {
        let marker: &[File] = &[("from-node1.txt", b"the second rust node\n")];
        let network = Network::chain(&[(Kind::Rust, files), (Kind::Rust, marker)]);
        let (dir, run) = network.fetch(Kind::Python, ".");
        assert_success(&run);
        assert_holds(&dir, files);
        assert_holds(&dir, marker);
        assert_eq!(dir.names().len(), files.len() + 1, "{:?}", dir.names());
    }

    #[test]
    fn plain_and_non_ascii_text_reach_the_original_client_byte_exact() {
        assert_the_original_client_gets(&[
            ("plain.txt", b"hello\nworld\n"),
            ("unicode.txt", "Grüße — 世界 🌍 ½\n".as_bytes()),
            ("ünïcödé name.txt", b"a name with spaces and umlauts\n"),
        ]);
    }

    #[test]
    fn crlf_text_and_a_lone_cr_reach_the_original_client_byte_exact() {
        assert_the_original_client_gets(&[
            ("crlf.txt", b"one\r\ntwo\r\n"),
            ("cr.txt", b"lone\rcarriage return\r"),
            ("mixed.txt", "\r\n\n\r\r\nüber\r\n".as_bytes()),
        ]);
    }

    #[test]
    fn binary_content_reaches_the_original_client_byte_exact() {
        let binary = all_bytes();
        let random = pseudo_random(300_000, 3);
        assert_the_original_client_gets(&[("all.bin", &binary), ("random.bin", &random)]);
    }

    #[test]
    fn text_with_characters_xml_forbids_reaches_the_original_client_byte_exact() {
        assert_the_original_client_gets(&[
            ("nul.txt", b"before\0after\n"),
            ("escape.txt", b"\x1b[31mred\x1b[0m\n"),
            ("vtab.txt", b"a\x0bb\x0cc\n"),
            ("nonchar.txt", "x\u{fffe}y\n".as_bytes()),
        ]);
    }

    #[test]
    fn the_empty_file_and_markup_characters_reach_the_original_client() {
        assert_the_original_client_gets(&[
            ("empty", b""),
            ("markup.txt", b"a & b < c > d ]]> &amp; &#13; <![CDATA[x]]>\n"),
            ("spaces.txt", b"  \n\t \n"),
        ]);
    }
}

mod joining {
    use super::*;

    /// Asserts every node lists every node's URL, and none twice.
    fn assert_all_know_all(nodes: &[&Node]) {
        for node in nodes {
            let peers = node.peers(PW);
            for other in nodes {
                assert!(peers.contains(&other.url), "{} does not list {}: {peers:?}", node.url, other.url);
            }
            let mut unique = peers.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), peers.len(), "{} lists a peer twice: {peers:?}", node.url);
        }
    }

    /// A lone node of `kind` answers mode 0 with exactly its own URL.
    fn assert_lone_node_lists_itself(kind: Kind) {
        let dir = TempDir::new();
        let node = start(kind, &dir, &[]);
        assert_lists_only_itself(&node);
    }

    /// A node of `second` joining a node of `first`: both list both.
    fn assert_pair_knows_each_other(first: Kind, second: Kind) {
        let network = Network::chain(&[(first, &[]), (second, &[])]);
        assert_all_know_all(&network.nodes.iter().collect::<Vec<_>>());
    }

    /// Tells `node` about `url` with a mode-0 call, as a joining node would.
    fn introduce(node: &Node, url: &str) {
        let arg = Value::Array(vec![Value::String(url.to_string())]);
        let answer = common::call(&node.url, &common::token(PW, &node.url), 0, arg);
        assert!(answer.is_ok(), "introducing {url} to {}: {answer:?}", node.url);
    }

    /// R alone, Q joins R, P alone is told of Q (but not R); a `newcomer` node joins P.
    /// R is only reachable through Q's answer, learned during the walk: the original's walk
    /// over the growing list still calls it, so R learns the newcomer and the newcomer R.
    fn assert_walk_reaches_peers_learned_on_the_way(newcomer: Kind) {
        let (dir_r, dir_q, dir_p, dir_n) = (TempDir::new(), TempDir::new(), TempDir::new(), TempDir::new());
        let r = start(Kind::Python, &dir_r, &[]);
        let q = start(Kind::Rust, &dir_q, &[&r.url]);
        let p = start(Kind::Python, &dir_p, &[]);
        introduce(&p, &q.url);
        assert!(!p.peers(PW).contains(&r.url), "P must not know R for this test");
        let n = start(newcomer, &dir_n, &[&p.url]);
        let known = n.peers(PW);
        for url in [&p.url, &q.url, &r.url] {
            assert!(known.contains(url), "the newcomer does not list {url}: {known:?}");
        }
        for node in [&p, &q, &r] {
            assert!(node.peers(PW).contains(&n.url), "{} never learned the newcomer", node.url);
        }
    }

    #[test]
    fn a_lone_rust_node_lists_only_itself() {
        assert_lone_node_lists_itself(Kind::Rust);
    }

    #[test]
    fn a_lone_python_node_lists_only_itself() {
        assert_lone_node_lists_itself(Kind::Python);
    }

    #[test]
    fn a_python_node_joining_a_rust_node_is_known_to_both() {
        assert_pair_knows_each_other(Kind::Rust, Kind::Python);
    }

    #[test]
    fn a_rust_node_joining_a_python_node_is_known_to_both() {
        assert_pair_knows_each_other(Kind::Python, Kind::Rust);
    }

    #[test]
    fn every_node_of_a_mixed_chain_of_four_knows_every_other_and_both_clients_reach_all() {
        let kinds = [Kind::Rust, Kind::Python, Kind::Rust, Kind::Python];
        let files: [&[File]; 4] =
            [&[("n0.txt", b"zero")], &[("n1.txt", b"one")], &[("n2.txt", b"two")], &[("n3.txt", b"three")]];
        let shares: Vec<(Kind, &[File])> = kinds.into_iter().zip(files).collect();
        let network = Network::chain(&shares);
        assert_all_know_all(&network.nodes.iter().collect::<Vec<_>>());
        for client in [Kind::Rust, Kind::Python] {
            let (dir, run) = network.fetch(client, ".");
            assert_success(&run);
            assert_eq!(dir.names(), ["n0.txt", "n1.txt", "n2.txt", "n3.txt"], "{client:?} client");
            assert_holds(&dir, &files.concat());
        }
    }

    #[test]
    fn a_rust_node_walks_to_peers_it_learns_during_the_walk() {
        assert_walk_reaches_peers_learned_on_the_way(Kind::Rust);
    }

    #[test]
    fn a_python_node_walks_to_peers_it_learns_during_the_walk_as_the_original_did() {
        assert_walk_reaches_peers_learned_on_the_way(Kind::Python);
    }

    #[test]
    fn a_rust_node_started_with_two_peers_joins_both_networks() {
        let first = Network::chain(&[(Kind::Python, &[]), (Kind::Rust, &[])]);
        let second = Network::chain(&[(Kind::Rust, &[]), (Kind::Python, &[])]);
        let dir = TempDir::new();
        let bridge = Node::rust(PW, dir.path(), &[first.url(), second.url()]);
        let known = bridge.peers(PW);
        for node in first.nodes.iter().chain(&second.nodes) {
            assert!(known.contains(&node.url), "the bridge does not list {}: {known:?}", node.url);
            assert!(node.peers(PW).contains(&bridge.url), "{} never learned the bridge", node.url);
        }
    }
}

mod rust_to_rust {
    use super::*;

    /// Shares `files` on one Rust node and fetches them all with the Rust client: each must
    /// arrive byte-exact under its own name, with its size on its `fetched` line.
    fn assert_round_trip(files: &[File]) {
        let network = Network::chain(&[(Kind::Rust, files)]);
        let (dir, run) = network.fetch(Kind::Rust, ".");
        assert_success(&run);
        let mut names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
        names.sort();
        assert_eq!(dir.names(), names);
        assert_holds(&dir, files);
        let sizes: BTreeMap<String, u64> = fetched(&run).into_iter().map(|f| (f.name, f.bytes)).collect();
        for (name, content) in files {
            assert_eq!(sizes.get(*name), Some(&(content.len() as u64)), "size of {name:?}");
        }
    }

    #[test]
    fn a_binary_file_with_all_256_byte_values_arrives_byte_exact() {
        assert_round_trip(&[("all.bin", &all_bytes())]);
    }

    #[test]
    fn crlf_text_and_a_lone_cr_arrive_byte_exact() {
        assert_round_trip(&[
            ("crlf.txt", b"one\r\ntwo\r\n"),
            ("cr.txt", b"lone\rcarriage return\r"),
            ("mixed.txt", "\r\n\n\r\r\nüber\r\n".as_bytes()),
        ]);
    }

    #[test]
    fn non_ascii_text_arrives_byte_exact() {
        assert_round_trip(&[("unicode.txt", "Grüße aus Köln — 世界 🌍 ½ ≠ ∞\n".as_bytes())]);
    }

    #[test]
    fn the_empty_file_arrives_empty() {
        assert_round_trip(&[("empty", b"")]);
    }

    #[test]
    fn whitespace_only_text_arrives_byte_exact() {
        assert_round_trip(&[("spaces.txt", b"  \n\t \n"), ("newline", b"\n")]);
    }

    #[test]
    fn markup_characters_and_a_cdata_end_arrive_byte_exact() {
        assert_round_trip(&[("markup.txt", b"&<>]]> a & b < c > d &amp; &#13; <![CDATA[x]]>")]);
    }

    #[test]
    fn text_with_characters_xml_forbids_arrives_byte_exact() {
        assert_round_trip(&[
            ("nul.txt", b"before\0after\n"),
            ("escape.txt", b"\x1b[31mred\x1b[0m\n"),
            ("nonchar.txt", "x\u{fffe}y\u{ffff}\n".as_bytes()),
        ]);
    }

    #[test]
    fn a_three_mib_random_binary_file_arrives_byte_exact() {
        assert_round_trip(&[("random.bin", &pseudo_random(3 << 20, 42))]);
    }

    #[test]
    fn a_two_mib_text_full_of_escapes_arrives_byte_exact() {
        let line = "a&b<c>d\r\n]]>ü世🌍\r".as_bytes();
        let text: Vec<u8> = line.iter().copied().cycle().take(2 << 20).collect();
        let text = String::from_utf8_lossy(&text).into_owned().into_bytes();
        assert_round_trip(&[("escapes.txt", &text)]);
    }

    #[test]
    fn a_name_with_spaces_and_unicode_arrives_under_that_name() {
        assert_round_trip(&[("my file — ünïcödé 文件.txt", b"named\n")]);
    }

    #[test]
    fn names_of_white_space_alone_arrive_under_those_names() {
        assert_round_trip(&[(" ", b"one space\n"), ("  ", b"  ")]);
    }

    #[test]
    fn the_client_skips_a_name_already_present_and_keeps_its_content() {
        let network = Network::chain(&[(Kind::Rust, &[("a.txt", b"theirs"), ("b.txt", b"new")])]);
        let dir = TempDir::new();
        dir.write("a.txt", b"mine");
        let run = fetch(Kind::Rust, &dir, network.url(), ".");
        assert_success(&run);
        assert_holds(&dir, &[("a.txt", b"mine"), ("b.txt", b"new")]);
        assert_eq!(dir.names(), ["a.txt", "b.txt"]);
        assert_eq!(summary(&run), "done: 1 fetched, 1 skipped, 0 failed");
    }

    #[test]
    fn a_present_name_two_peers_list_is_skipped_once() {
        let network =
            Network::chain(&[(Kind::Rust, &[("a.txt", b"one")]), (Kind::Rust, &[("a.txt", b"two")])]);
        let dir = TempDir::new();
        dir.write("a.txt", b"mine");
        let run = fetch(Kind::Rust, &dir, network.url(), ".");
        assert_success(&run);
        assert_holds(&dir, &[("a.txt", b"mine")]);
        assert_eq!(summary(&run), "done: 0 fetched, 1 skipped, 0 failed");
    }

    #[test]
    fn a_name_two_peers_list_is_fetched_exactly_once() {
        let (one, two): (&[u8], &[u8]) = (b"from the first node", b"from the second node");
        let network =
            Network::chain(&[(Kind::Rust, &[("same.txt", one)]), (Kind::Rust, &[("same.txt", two)])]);
        let (dir, run) = network.fetch(Kind::Rust, ".");
        assert_success(&run);
        let lines = fetched(&run);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(dir.names(), ["same.txt"]);
        let got = dir.read("same.txt");
        assert!(got == one || got == two, "mixed content: {:?}", String::from_utf8_lossy(&got));
        assert!(summary(&run).starts_with("done: 1 fetched,"), "{}", summary(&run));
    }

    #[test]
    fn parallel_downloads_from_three_nodes_fetch_every_file_exactly_once() {
        let own: Vec<Vec<(String, Vec<u8>)>> = (0..3)
            .map(|node| {
                let files =
                    (0..100).map(|i| (format!("n{node}-{i:03}.txt"), format!("node {node} file {i}\n")));
                let shared =
                    (0..20).map(|i| (format!("shared-{i:02}.txt"), format!("shared {i} on node {node}\n")));
                files.chain(shared).map(|(name, text)| (name, text.into_bytes())).collect()
            })
            .collect();
        let lists: Vec<Vec<File>> =
            own.iter().map(|files| files.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect()).collect();
        let network =
            Network::chain(&[(Kind::Rust, &lists[0]), (Kind::Rust, &lists[1]), (Kind::Rust, &lists[2])]);
        let (dir, run) = network.fetch(Kind::Rust, ".");
        assert_success(&run);

        let mut names: Vec<String> = fetched(&run).into_iter().map(|f| f.name).collect();
        names.sort();
        let mut expected: Vec<String> = lists.iter().flatten().map(|(n, _)| n.to_string()).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(expected.len(), 320);
        assert_eq!(names, expected, "each name fetched exactly once");
        assert_eq!(dir.names(), expected, "the folder holds exactly the files, no leftovers");
        for (name, content) in lists.iter().flatten() {
            if !name.starts_with("shared-") {
                assert_holds(&dir, &[(name, content)]);
            }
        }
        for i in 0..20 {
            let got = String::from_utf8(dir.read(&format!("shared-{i:02}.txt"))).unwrap();
            assert!((0..3).any(|node| got == format!("shared {i} on node {node}\n")), "{got:?}");
        }
        assert!(summary(&run).starts_with("done: 320 fetched,"), "{}", summary(&run));
    }

    #[test]
    fn a_stalled_client_does_not_block_another() {
        let dir = TempDir::new();
        dir.write("big.bin", pseudo_random(24 << 20, 9));
        dir.write("small.txt", b"small\n");
        let node = Node::rust(PW, dir.path(), &[]);

        // Asks for the big file and reads only the start of the answer, never the rest.
        let mut unread = connect(&node.url);
        let body = request_body(&node.url, 2, Value::from("big.bin"));
        unread.write_all(&http_post(&node.url, "/RPC2", &body, false)).unwrap();
        let mut start = [0u8; 12];
        unread.read_exact(&mut start).expect("the node starts answering");
        assert_eq!(&start, b"HTTP/1.1 200");
        // Announces a body and sends only part of it.
        let mut half_body = connect(&node.url);
        let half = http_post(&node.url, "/RPC2", &body, false);
        half_body.write_all(&half[..half.len() - 20]).unwrap();
        // Sends half a request line.
        let mut half_head = connect(&node.url);
        half_head.write_all(b"POST /RP").unwrap();

        let client_dir = TempDir::new();
        let began = Instant::now();
        let run = fetch(Kind::Rust, &client_dir, &node.url, "small");
        let took = began.elapsed();
        assert_success(&run);
        assert_holds(&client_dir, &[("small.txt", b"small\n")]);
        assert!(took < Duration::from_secs(8), "the client took {took:?} beside stalled ones");
        drop((unread, half_body, half_head));
    }

    #[test]
    fn one_connection_carries_two_calls_with_keep_alive() {
        let dir = TempDir::new();
        let node = Node::rust(PW, dir.path(), &[]);
        let mut stream = connect(&node.url);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let body = request_body(&node.url, 0, Value::Array(vec![]));
        for call in 1..=2 {
            stream.write_all(&http_post(&node.url, "/RPC2", &body, false)).unwrap();
            let (status, answer) = read_response(&mut reader);
            assert!(status.starts_with("HTTP/1.1 200"), "call {call}: {status}");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.contains(&node.url), "call {call} answered {answer}");
        }
    }

    #[test]
    fn one_ureq_agent_makes_two_calls_in_a_row() {
        let dir = TempDir::new();
        let node = Node::rust(PW, dir.path(), &[]);
        let agent = ureq::Agent::new_with_defaults();
        let body = request_body(&node.url, 0, Value::Array(vec![]));
        for call in 1..=2 {
            let request = agent.post(format!("{}/RPC2", node.url)).header("Content-Type", "text/xml");
            let mut response = request.send(&body[..]).expect("post");
            let answer = response.body_mut().read_to_string().expect("answer");
            assert!(answer.contains(&node.url), "call {call} answered {answer}");
        }
    }
}

mod http_paths {
    use super::*;

    #[test]
    fn calls_to_the_root_path_and_to_rpc2_are_both_answered() {
        let dir = TempDir::new();
        let node = Node::rust(PW, dir.path(), &[]);
        let body = request_body(&node.url, 0, Value::Array(vec![]));
        for path in ["/", "/RPC2"] {
            let answer = common::raw_http(&node.url, &http_post(&node.url, path, &body, true));
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
            assert!(answer.contains(&node.url), "{path}: {answer}");
        }
        assert_lists_only_itself(&node);
    }
}

mod as_the_original_compares {
    use super::*;

    /// What a node of `kind`, sharing `file0.txt`, answers to `f` called with these XML-RPC
    /// values as they are written, its own URL written SELF.
    fn answers(kind: Kind, calls: &[(&str, &str, &str)]) -> Vec<String> {
        let dir = TempDir::new();
        dir.write("file0.txt", "hello\n");
        let node = start(kind, &dir, &[]);
        let token = common::token(PW, &node.url);
        let value = |v: &str| format!("<param><value>{}</value></param>", v.replace("TOKEN", &token));
        let answer = |&(token, mode, arg): &(&str, &str, &str)| {
            let params = [token, mode, arg].map(value).concat();
            let body = format!(
                "<?xml version='1.0'?><methodCall><methodName>f</methodName><params>{params}</params></methodCall>"
            );
            let answer = common::post(&node.url, body.as_bytes()).expect("an HTTP 200 answer");
            format!("{:?}", common::parse_answer(answer).map_err(|e| e.fault().is_some()))
                .replace(&node.url, "SELF")
        };
        calls.iter().map(answer).collect()
    }

    #[test]
    fn modes_and_tokens_of_any_type_are_read_as_a_python_node_reads_them() {
        let (list, name) = ("<array><data></data></array>", "<string>file0.txt</string>");
        let calls = [
            ("<string>TOKEN</string>", "<int>0</int>", list),
            ("<string>TOKEN</string>", "<double>0.0</double>", list),
            ("<string>TOKEN</string>", "<boolean>0</boolean>", list),
            ("<string>TOKEN</string>", "<double>1.0</double>", "<string>file</string>"),
            ("<string>TOKEN</string>", "<boolean>1</boolean>", "<string>file</string>"),
            ("<string>TOKEN</string>", "<i8>1</i8>", "<string>file</string>"),
            ("<string>TOKEN</string>", "<i4>2</i4>", name),
            ("<string>TOKEN</string>", "<double>2.5</double>", name),
            ("<string>TOKEN</string>", "<string>1</string>", name),
            ("<string>TOKEN</string>", "<int>2147483648</int>", name),
            ("<string>TOKEN</string>", list, name),
            ("<int>5</int>", "<int>1</int>", "<string>file</string>"),
            ("<array><data><value>TOKEN</value></data></array>", "<int>2</int>", name),
        ];
        let python = answers(Kind::Python, &calls);
        assert!(python[0].contains("SELF") && python[6].contains("hello"), "{python:?}");
        assert_eq!(answers(Kind::Rust, &calls), python);
    }
}
