//! tinyp2p: a faithful, safe and fast Rust clone of Ed Felten's 2004 tinyp2p.
//!
//! Nodes speak the original's XML-RPC: one method `f(token, mode, arg)` (README.md,
//! shared/PROTOCOL.md). The file reads top to bottom: command line, token, XML-RPC codec,
//! content codec, node, tiny_http's price, join, client, shell, files and signals.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Cursor, IsTerminal, Read, Seek, Write};
use std::mem::{ManuallyDrop, take};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use hmac::{Hmac, KeyInit, Mac};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use md5::Md5;
use memchr::{memchr, memchr_iter, memchr2, memchr3_iter, memmem};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, RenameFlags, renameat2};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::termios::tcgetattr;
use nix::unistd::{Pid, linkat};
use regex::{Regex, RegexBuilder};
use tiny_http::{Header, Method, Request, Response};
use unicode_width::UnicodeWidthStr;
use xml::reader::{EventReader, XmlEvent};
use xmlrpc::{Fault, Value};

// ================================================================ command line

/// The command lines, shown with every usage error.
const SYNOPSIS: &str = "\
usage: tinyp2p PW server HOST PORT [PEER_URL...]   share this folder, join via the peers
       tinyp2p PW shell HOST PORT [PEER_URL...]    the same, with a prompt (ls, fetch, peers)
       tinyp2p PW client URL PATTERN               fetch every file matching PATTERN
       tinyp2p PW list URL [PATTERN]               show what the network offers, fetch nothing
       tinyp2p --help | --version";

/// The rest of `--help`.
const HELP: &str = "
PW is the network's password; '-' reads it from TINYP2P_PASSWORD instead, so it stays out
of the process list. A node is known as http://HOST:PORT, exactly as started (PORT 0 picks a
free port): give other nodes the address they can reach. PATTERN is a regular expression
searched in each name: '\\.txt$', 'report', '.' for all. -q (--quiet) prints only errors
and what was asked for (a node's URL, list's names).

settings (environment):
  TINYP2P_TIMEOUT      seconds to connect, and for any read or write to stall
                       (0.1 to 86400, default 10)
  TINYP2P_SPEED_LIMIT  a download slower than this many bytes a second...
                       (0 to 10^12, default 1024)
  TINYP2P_SPEED_TIME   ...for this many seconds is abandoned
                       (0.1 to 86400, default 3 timeouts: 30)

example, as in the original:
  node0$ tinyp2p 123456 server 127.0.0.1 33330
  node1$ tinyp2p 123456 server 127.0.0.1 33331 http://127.0.0.1:33330
  node2$ tinyp2p 123456 list http://127.0.0.1:33330
  node2$ tinyp2p 123456 client http://127.0.0.1:33330 'file'

Exit status: 0 all went well, 1 something failed, 2 the command line or a setting was wrong.";

/// What the command line asks for.
enum Cli {
    /// `--help` or `--version`: the text to print.
    Show(String),
    /// `server` or `shell`: share this folder as `http://HOST:PORT`, joining via `peers`.
    Node {
        /// The network's password.
        password: String,
        /// The node's host, as other nodes will call it.
        host: String,
        /// Its port (0: a free one).
        port: u16,
        /// Peers to join through.
        peers: Vec<String>,
        /// Whether to offer a prompt as well (`shell`).
        shell: bool,
    },
    /// `client` or `list`: what `pattern` finds on the network that `url` knows.
    Client {
        /// The network's password.
        password: String,
        /// The node to start from.
        url: String,
        /// The regex searched in each name.
        pattern: Regex,
        /// Whether only to show what is offered (`list`).
        list: bool,
    },
}

/// The limits a person may tune, from the environment.
#[derive(Clone, Copy, Debug, Default)]
struct Settings {
    /// Allowed to connect, and for any one read or write to stall (TINYP2P_TIMEOUT).
    timeout: Duration,
    /// A download slower than this many bytes a second... (TINYP2P_SPEED_LIMIT)
    speed_limit: f64,
    /// ...over this long is abandoned (TINYP2P_SPEED_TIME).
    speed_time: Duration,
    /// Print only errors (`-q`).
    quiet: bool,
}

/// A command line that cannot run (exit status 2): why, and whether to show the synopsis.
struct UsageError(String, bool);

/// Parses the command line, runs it, and alone decides the exit status.
fn main() -> ExitCode {
    let parsed = parse_cli(std::env::args_os().skip(1)).inspect_err(|UsageError(why, synopsis)| {
        say_err(error_line(why));
        if *synopsis {
            say_err(format_args!("{SYNOPSIS}\n(tinyp2p --help tells more)"));
        }
    });
    let Ok((cli, settings)) = parsed else { return ExitCode::from(2) };
    std::panic::set_hook(Box::new(|panic| {
        // tiny_http's own threads can give up (its accept loop on EMFILE, say): the pool
        // notices and serves again (see "tiny_http's price"); anything else is a bug here
        let what = panic.payload_as_str().unwrap_or("a panic");
        match panic.location().filter(|at| at.file().contains("tiny_http")) {
            Some(_) => say_err(error_line(format_args!("a tiny_http thread stopped: {what}"))),
            None => say_err(error_line(format_args!("internal error: {panic}"))),
        }
    }));
    watch_signals();
    let ok = run(cli, settings).inspect_err(|e| say_err(error_line(format_args!("{e:#}")))).unwrap_or(false);
    remove_parts();
    if ok && !OUTPUT_LOST.load(Relaxed) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs what the command line asked for; `Ok(false)` when some part of it failed.
fn run(cli: Cli, settings: Settings) -> Result<bool> {
    match cli {
        Cli::Show(text) => say(text),
        Cli::Node { password, host, port, peers, shell } => {
            return serve(Caller::new(&password, settings), &host, port, &peers, shell);
        }
        Cli::Client { password, url, pattern, list } => {
            let (caller, report) = (Caller::new(&password, settings), Report::new(&settings, !list));
            return client(&caller, &url, &pattern, list, &report);
        }
    }
    Ok(true)
}

/// Parses the arguments after the program name, and the settings.
fn parse_cli(args: impl Iterator<Item = OsString>) -> Result<(Cli, Settings), UsageError> {
    let usage = |why: &str| UsageError(why.to_string(), true);
    let mut args: Vec<String> = args
        .map(|a| a.into_string().map_err(|a| usage(&format!("argument {a:?} is not UTF-8"))))
        .collect::<Result<_, _>>()?;
    let given = args.len();
    args.retain(|a| a != "-q" && a != "--quiet");
    let quiet = args.len() < given;
    let mode = args.get(1).map(String::as_str);
    // help and the version need no settings: a bad one must not hide them
    let show = |text| Ok((Cli::Show(text), Settings::default()));
    let cli = match (args.first().map(String::as_str), mode, args.len()) {
        (None, ..) => return Err(usage("missing arguments")),
        (Some("-h" | "--help"), ..) => return show(format!("{SYNOPSIS}\n{HELP}")),
        (Some("-V" | "--version"), ..) => return show(format!("tinyp2p {}", env!("CARGO_PKG_VERSION"))),
        (_, Some("server" | "shell"), 4..) => {
            let bad_port = || usage(&format!("PORT must be a number from 0 to 65535, not {:?}", args[3]));
            let port: u16 = args[3].parse().map_err(|_| bad_port())?;
            // a path typed after a peer's address is not part of its URL
            let peers: Vec<String> = args[4..].iter().map(|peer| node_base(peer).to_string()).collect();
            if let Some(bad) = peers.iter().find(|p| !valid_peer_url(p)) {
                return Err(usage(&format!("peer {bad:?} is not a URL like http://host:port")));
            }
            let (host, shell) = (args[2].clone(), mode == Some("shell"));
            // other nodes keep the node only by a valid peer URL; a URL given as HOST is a common slip
            if !valid_peer_url(&node_url(&host, port.max(1))) {
                let why = format!("HOST must be a name or an address like 127.0.0.1, not {host:?}");
                return Err(usage(&why));
            }
            Cli::Node { password: password(&args[0])?, host, port, peers, shell }
        }
        (_, Some("client"), 4) | (_, Some("list"), 3 | 4) => {
            let url = args[2].clone();
            if !valid_peer_url(node_base(&url)) {
                return Err(usage(&format!("URL {url:?} is not a node URL like http://host:port")));
            }
            if endpoint(&url).parse::<ureq::http::Uri>().is_err() {
                let why = format!("URL {url:?}: its path cannot be sent (write a space, say, as %20)");
                return Err(usage(&why));
            }
            let pattern = args.get(3).map_or("", String::as_str);
            let pattern = compile_regex(pattern).map_err(|why| UsageError(why, false))?;
            Cli::Client { password: password(&args[0])?, url, pattern, list: mode == Some("list") }
        }
        (_, Some(mode @ ("server" | "shell")), _) => {
            return Err(usage(&format!("{mode} takes HOST PORT [PEER_URL...]")));
        }
        (_, Some("client"), _) => return Err(usage("client takes URL PATTERN")),
        (_, Some("list"), _) => return Err(usage("list takes URL [PATTERN]")),
        (_, Some(mode), _) => return Err(usage(&format!("unknown mode {mode:?}"))),
        (_, None, _) => return Err(usage("missing mode: server, shell, client or list")),
    };
    Ok((cli, settings(quiet)?))
}

/// The password: the argument, or `TINYP2P_PASSWORD` when the argument is `-`.
fn password(arg: &str) -> Result<String, UsageError> {
    let unusable = |e| {
        let why = if matches!(e, std::env::VarError::NotPresent) { "not set" } else { "not UTF-8" };
        UsageError(format!("PW is '-' but TINYP2P_PASSWORD is {why}"), true)
    };
    if arg == "-" { std::env::var("TINYP2P_PASSWORD").map_err(unusable) } else { Ok(arg.to_string()) }
}

/// The settings from the environment; a value out of range is a usage error naming the range.
fn settings(quiet: bool) -> Result<Settings, UsageError> {
    let timeout = env_number("TINYP2P_TIMEOUT", 10.0, 0.1, 86_400.0)?;
    Ok(Settings {
        timeout: Duration::from_secs_f64(timeout),
        speed_limit: env_number("TINYP2P_SPEED_LIMIT", 1024.0, 0.0, 1e12)?,
        speed_time: Duration::from_secs_f64(env_number("TINYP2P_SPEED_TIME", 3.0 * timeout, 0.1, 86_400.0)?),
        quiet,
    })
}

/// The number in environment variable `name`, from `min` to `max`; `default` when unset.
fn env_number(name: &str, default: f64, min: f64, max: f64) -> Result<f64, UsageError> {
    let Some(text) = std::env::var_os(name) else { return Ok(default) };
    let text = text.to_string_lossy(); // a value that is not UTF-8 is shown with U+FFFD
    match text.trim().parse::<f64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(UsageError(format!("{name} must be a number from {min} to {max}, not {text:?}"), false)),
    }
}

/// Text on one line with everything a terminal would hide or act on (control characters,
/// bidi and invisible formatting) escaped, so that what a person reads is what is there.
/// Quotes and backslashes stay as they are, and so do up to two accents after a character
/// shown as it is (a decomposed é, as macOS writes names, reads é).
fn printable(text: &str) -> String {
    let (mut out, mut shown, mut accents) = (String::with_capacity(text.len()), false, 0);
    for c in text.chars() {
        // U+0300 to U+036F, but for the invisible combining grapheme joiner
        if matches!(c, '\u{300}'..='\u{36F}') && c != '\u{34F}' && shown && accents < 2 {
            out.push(c);
            accents += 1;
            continue;
        }
        let escaped = c.escape_debug();
        shown = escaped.len() == 1; // not escaped: an accent may follow it as it is
        accents = 0;
        if shown || matches!(c, '"' | '\'' | '\\') { out.push(c) } else { out.extend(escaped) }
    }
    out
}

/// Most characters of what another party sent that a line or a fault repeats: a hostile
/// peer's or client's words can be megabytes.
const MAX_ECHO: usize = 500;

/// The first `most` characters of `text`, and `...` where it was cut.
fn cut(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// An I/O error in words, without the `(os error N)` a person has no use for.
fn words(e: &io::Error) -> String {
    e.to_string().split(" (os error").next().unwrap_or_default().to_string()
}

/// `n` things, in the singular for one: `1 file`, `2 files`.
fn plural(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// A name as every line shows it: in quotes, its own quotes and backslashes escaped, and
/// escaped as `printable` escapes.
fn quoted(name: &str) -> String {
    format!("\"{}\"", printable(&name.replace('\\', r"\\").replace('"', r#"\""#)))
}

/// An error line as every one is printed: `tinyp2p: ` and the words on one printable line.
fn error_line(what: impl fmt::Display) -> String {
    format!("tinyp2p: {}", printable(&what.to_string()))
}

/// Set once a line could not be written to stdout for a reason other than a closed pipe
/// (a full disk, say): the run then fails.
static OUTPUT_LOST: AtomicBool = AtomicBool::new(false);
/// Set once stdout is a pipe whose reader has gone (`| head -1`): the shell then ends.
static OUTPUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints a line on stdout; a closed pipe is not an error, any other failure is said once.
fn say(line: impl fmt::Display) {
    match io::stdout().lock().write_all(format!("{line}\n").as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => OUTPUT_CLOSED.store(true, Relaxed),
        Err(e) if !OUTPUT_LOST.swap(true, Relaxed) => {
            say_err(error_line(format_args!("cannot write to standard output: {}", words(&e))));
        }
        _ => {}
    }
}

/// Prints a line on stderr in one write (stderr is unbuffered); a closed pipe is not an error.
fn say_err(line: impl fmt::Display) {
    let _ = io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

// ================================================================ token

/// The HMAC-MD5 of `url` keyed with the password, as the original's `hmac.new(pw, url)`.
fn mac(password: &[u8], url: &str) -> Hmac<Md5> {
    Hmac::<Md5>::new_from_slice(password).expect("HMAC takes keys of any length").chain_update(url)
}

/// The token a node started as `url` accepts: 32 lowercase hex digits.
fn token(password: &[u8], url: &str) -> String {
    mac(password, url).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` is this URL's token, as the original compared them: as strings, so
/// uppercase hex is a wrong token. In constant time: what is compared is the MACs of the
/// two strings, which differ everywhere however alike the strings are.
fn token_ok(password: &[u8], url: &str, token: &str) -> bool {
    let given = mac(password, token).finalize().into_bytes();
    mac(password, &crate::token(password, url)).verify_slice(&given).is_ok()
}

// ================================================================ XML-RPC codec

/// Deepest element nesting read: a listing is 11 deep, and a deeper value is junk.
const MAX_XML_DEPTH: usize = 32;
/// Most elements in one call a node reads: a full peer list takes two per peer.
const MAX_ELEMENTS: usize = 2 * MAX_PEERS + 64;
/// Most elements in one answer a client reads: a listing as long as MAX_ANSWER_BYTES allows,
/// of the shortest names, takes one per name (`<value>a</value>`); so junk costs no more.
const MAX_ANSWER_ELEMENTS: usize = (MAX_ANSWER_BYTES / 16) as usize;
/// Most namespace bindings in scope at an element (three are built in; XML-RPC declares
/// none): xml-rs copies them all into each element it reads, so that many declarations
/// times many elements would keep a core busy for minutes.
const MAX_NAMESPACES: usize = 16;
/// Most bytes of the namespace URIs in scope at an element, for the same reason (measured:
/// one URI of 8 MB before 40,000 elements took 11 s).
const MAX_NAMESPACE_BYTES: usize = 4096;

/// An XML-RPC `<methodCall>` for `f(token, mode, arg)`.
fn call_xml(token: &str, mode: i32, arg: Value) -> Vec<u8> {
    let mut body = Vec::new();
    let request = xmlrpc::Request::new("f").arg(token).arg(mode).arg(arg);
    request.write_as_xml(&mut body).expect("writing to a Vec cannot fail");
    body
}

/// An XML-RPC `<methodResponse>`: the value, or a fault with code 1 (as Python's server
/// answers an exception).
fn answer_xml(answer: Result<Value, String>) -> Vec<u8> {
    let (open, value, close) = match answer {
        Ok(value) => ("<params><param>", value, "</param></params>"),
        Err(why) => ("<fault>", Fault { fault_code: 1, fault_string: why }.to_value(), "</fault>"),
    };
    let mut body = format!("<?xml version=\"1.0\"?>\n<methodResponse>{open}").into_bytes();
    value.write_as_xml(&mut body).expect("writing to a Vec cannot fail");
    body.extend_from_slice(format!("{close}</methodResponse>\n").as_bytes());
    body
}

/// Refuses a document declared in an encoding xml-rs would misread: it matches an encoding's
/// name by its start only, so it would read ISO-8859-15 (where 0xA4 is the euro sign) as
/// ISO-8859-1, and the file would arrive with other characters than it has.
fn refuse_misread(encoding: &str) -> Result<(), String> {
    let name = encoding.to_ascii_lowercase();
    let read = matches!(name.as_str(), "utf-8" | "utf8" | "iso-8859-1" | "latin1" | "us-ascii" | "ascii");
    // UTF-16 is told from the bytes themselves, whatever its name says
    let utf16 = name.starts_with("utf-16") || name.starts_with("utf16");
    let shown = cut(encoding, 40);
    if read || utf16 { Ok(()) } else { Err(format!("XML in the encoding {shown:?} is not supported")) }
}

/// The encoding an XML declaration (the text before its `?>`) names, in lowercase.
fn encoding_named(declaration: &[u8]) -> Option<String> {
    let declaration = String::from_utf8_lossy(declaration).to_lowercase();
    let (_, rest) = declaration.split_once("encoding")?;
    rest.split(['"', '\'']).nth(1).map(str::to_string)
}

/// Where the XML declaration that `xml` starts with ends (its `?>`), if it has one: a
/// processing instruction such as `<?xml-stylesheet` is none.
fn declaration_end(xml: &[u8]) -> Option<usize> {
    let declared = xml.starts_with(b"<?xml") && xml.get(5).copied().is_some_and(xml_space);
    memmem::find(xml, b"?>").filter(|_| declared)
}

/// A document declared in Latin-1 or ASCII, under any of Python's names for them
/// (`encoding='latin-1'` on its server or client), in UTF-8: xml-rs knows few of those names,
/// the streaming reader only UTF-8, and Latin-1's bytes are the first 256 characters.
fn to_utf8(xml: Vec<u8>) -> Vec<u8> {
    let Some(end) = declaration_end(&xml[..xml.len().min(256)]) else { return xml };
    let name = encoding_named(&xml[..end]).unwrap_or_default().replace('_', "-");
    let latin = ["latin-1", "latin1", "iso-8859-1", "iso8859-1", "8859", "cp819", "l1", "ascii", "us-ascii"];
    if !latin.contains(&name.as_str()) {
        return xml;
    }
    let text: String = xml[end + 2..].iter().map(|&b| char::from(b)).collect();
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{text}").into_bytes()
}

/// The tags of XML-RPC, which elements hold without an allocation of their own.
const TAGS: &str = "methodCall methodName methodResponse params param value fault array data struct member \
                    name string int i4 i8 double boolean base64 nil";

/// An element being read.
#[derive(Default)]
struct Open {
    /// Its local name: one of TAGS without an allocation of its own (a listing holds a
    /// million), any other as read.
    tag: Cow<'static, str>,
    /// Its character data, white space included: Python reads `<string> </string>` as " ".
    text: String,
    /// The values of the elements in it so far, in order (see `close`).
    values: Vec<Value>,
}

/// Reads an XML-RPC document: its root's tag, and the values of the elements in it. Each
/// element becomes a value once it is whole, so a listing costs its names and no tree.
/// Refused: a DTD, an encoding xml-rs would misread, nesting deeper than MAX_XML_DEPTH, more
/// than `most` elements, or past MAX_NAMESPACES or MAX_NAMESPACE_BYTES, so a small body cannot
/// cost a node or client much.
fn read_xml(xml: &[u8], most: usize) -> Result<(Cow<'static, str>, Vec<Value>), String> {
    // a DTD's entities are a way to blow a small body up (entity bombs): looked for as ASCII
    // spells it, and as UTF-16 does either way round (a zero byte between the characters):
    // 1.6 KB of UTF-16 took 17 GB
    let dtd = [&b"<!DOCTYPE"[..], b"<!ENTITY", b"<\0!\0D\0O\0C\0T\0Y\0P\0E", b"<\0!\0E\0N\0T\0I\0T\0Y"];
    if dtd.iter().any(|word| memmem::find(xml, word).is_some()) {
        return Err("XML with a DTD is refused".into());
    }
    let (mut open, mut count) = (vec![Open::default()], 0); // the document, then its open elements
    for event in EventReader::new(xml) {
        match event.map_err(|e| format!("malformed XML: {e}"))? {
            XmlEvent::StartDocument { encoding, .. } => refuse_misread(&encoding)?,
            XmlEvent::StartElement { name, namespace, .. } => {
                count += 1;
                let uris: usize = namespace.0.values().map(String::len).sum();
                let crowded = namespace.0.len() > MAX_NAMESPACES || uris > MAX_NAMESPACE_BYTES;
                if open.len() > MAX_XML_DEPTH || count > most || crowded {
                    return Err("XML nested too deeply, too long or declaring too many namespaces".into());
                }
                let known = TAGS.split(' ').find(|tag| *tag == name.local_name);
                let tag: Cow<'static, str> = known.map_or(name.local_name.into(), Into::into);
                if open.len() > 1 {
                    nested(&open[open.len() - 1].tag, &tag)?; // the root's place is checked by the caller
                }
                open.push(Open { tag, ..Open::default() });
            }
            XmlEvent::EndElement { .. } => {
                let done = open.pop().expect("xml-rs pairs every end with a start");
                if open.len() == 1 {
                    return Ok((done.tag, done.values)); // the root is whole: what follows it is not read
                }
                open.last_mut().expect("the document stays open").values.push(close(done)?);
            }
            XmlEvent::Characters(text) | XmlEvent::Whitespace(text) | XmlEvent::CData(text) => {
                open.last_mut().expect("the document stays open").text.push_str(&text);
            }
            _ => {} // comments, processing instructions, the declaration
        }
    }
    Err("no XML element".into())
}

/// Refuses an element `child` where XML-RPC has none: in a `parent` that holds no such element.
fn nested(parent: &str, child: &str) -> Result<(), String> {
    let types = ["string", "int", "i4", "i8", "double", "boolean", "base64", "nil", "array", "struct"];
    let fits = match parent {
        "methodCall" => matches!(child, "methodName" | "params"),
        "methodResponse" => matches!(child, "params" | "fault"),
        "params" => child == "param",
        "param" | "fault" | "data" => child == "value",
        "array" => child == "data",
        "struct" => child == "member",
        "member" => matches!(child, "name" | "value"),
        "value" if !types.contains(&child) => {
            return Err(format!("XML-RPC type <{child}> is not supported here"));
        }
        "value" => true,
        _ => false,
    };
    if fits { Ok(()) } else { Err(format!("malformed XML-RPC: <{child}> in <{parent}>")) }
}

/// The value a whole element stands for: a `<value>` that of the typed element in it, or its
/// text as a string; a typed element its text read as that type; `<array>`, `<param>` and
/// `<fault>` the value in them; `<data>`, `<params>` and a `<member>` the list of theirs.
fn close(Open { tag, text, mut values }: Open) -> Result<Value, String> {
    let trimmed = text.trim();
    let (blank, malformed) = (trimmed.is_empty(), || format!("malformed XML-RPC <{tag}>"));
    let invalid = || format!("invalid <{tag}> {trimmed:?}");
    match (&*tag, values.len()) {
        ("value" | "string" | "name" | "methodName", 0) => Ok(Value::String(text)),
        ("value" | "array", 1) | ("data", _) if !blank => Err(malformed()),
        ("value" | "array" | "param", 1) => Ok(values.remove(0)),
        ("fault", 1) if matches!(values[0], Value::Struct(_)) => Ok(values.remove(0)),
        ("data" | "params", _) | ("member", 2) => Ok(Value::Array(values)),
        ("struct", _) => {
            let member = |member| {
                let Value::Array(pair) = member else { return None };
                let Ok([Value::String(name), value]) = <[Value; 2]>::try_from(pair) else { return None };
                Some((name, value))
            };
            values.into_iter().map(member).collect::<Option<_>>().map(Value::Struct).ok_or_else(malformed)
        }
        // Python reads an <int> past i32 too (one past i64 is refused here)
        ("int" | "i4" | "i8", 0) => trimmed.parse().map(Value::Int64).map_err(|_| invalid()),
        ("double", 0) => trimmed.parse().map(Value::Double).map_err(|_| invalid()),
        ("boolean", 0) => {
            matches!(trimmed, "0" | "1").then(|| Value::Bool(trimmed == "1")).ok_or_else(invalid)
        }
        ("base64", 0) => {
            let digits: Vec<u8> = trimmed.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            base64_simd::STANDARD.decode_to_vec(&digits).map(Value::Base64).map_err(|_| invalid())
        }
        ("nil", 0) => Ok(Value::Nil),
        _ => Err(malformed()),
    }
}

/// Parses a `<methodCall>` into its method name and parameters.
fn parse_call(body: &[u8]) -> Result<(String, Vec<Value>), String> {
    let (root, mut values) = read_xml(body, MAX_ELEMENTS)?;
    match (&*root, values.as_mut_slice()) {
        ("methodCall", [Value::String(name)]) => Ok((take(name), vec![])),
        ("methodCall", [Value::String(name), Value::Array(params)]) => Ok((take(name), take(params))),
        _ => Err("malformed XML-RPC call".into()),
    }
}

// ================================================================ content codec

/// Raw bytes encoded per step in the content path: large enough for few system calls.
const CHUNK: usize = 64 * 1024;
/// Raw bytes base64-encoded per step: a multiple of 3, so steps join without padding.
const B64_CHUNK: usize = 3 * 16 * 1024;
/// Bytes scanned per step by the fast checks below: small enough to stay in registers.
const BLOCK: usize = 64;
/// Bytes a client scans at a time: ureq buffers the socket, so small is cheap, and a
/// small file costs no large zeroed buffer.
const SCAN_BUFFER: usize = 16 * 1024;
/// Most white space a client skips in an answer's framing, or beyond one in four
/// characters of base64 (where lines break every 76): more is a peer stalling in plain sight.
const MAX_WHITE_SPACE: usize = 1 << 20;
/// Largest file a client streams to disk, so a peer cannot fill the disk without end.
const MAX_FILE_BYTES: u64 = 16 << 30;

/// What a first pass over a file found: how it travels and its raw and encoded lengths.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Survey {
    /// Whether it travels as an escaped string (XML-safe UTF-8); if not, as base64.
    text: bool,
    /// The file's length.
    raw: u64,
    /// The length of its encoded form: the answer's length less its frame.
    encoded: u64,
}

/// Whether a byte needs a closer look: a control character XML forbids, or the lead byte
/// of U+FFFE and U+FFFF (EF BF BE, EF BF BF). Branch-free, so block scans vectorise.
fn odd_byte(b: u8) -> bool {
    (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r') | (b == 0xEF)
}

/// Whether whole UTF-8 `text` holds only characters XML 1.0 allows.
fn xml_safe(text: &[u8]) -> bool {
    text.chunks(BLOCK).enumerate().all(|(k, block)| {
        !block.iter().fold(false, |any, &b| any | odd_byte(b))
            || (k * BLOCK..k * BLOCK + block.len()).all(|i| match text[i] {
                0xEF => !(text.get(i + 1) == Some(&0xBF) && matches!(text.get(i + 2), Some(0xBE | 0xBF))),
                b => !odd_byte(b),
            })
    })
}

/// The length of the whole UTF-8 characters that `data` starts with, leaving a character
/// cut at its end for the next read (unless `at_end`); `None` if it is not XML-safe UTF-8.
fn text_len(data: &[u8], at_end: bool) -> Option<usize> {
    let whole = match std::str::from_utf8(data) {
        Ok(_) => data.len(),
        Err(e) if e.error_len().is_none() && !at_end => e.valid_up_to(),
        Err(_) => return None,
    };
    xml_safe(&data[..whole]).then_some(whole)
}

/// The length of `text` once escaped by `escape_into`.
fn escaped_len(text: &[u8]) -> u64 {
    let extra = |b: u8| 4 * u32::from((b == b'&') | (b == b'\r')) + 3 * u32::from((b == b'<') | (b == b'>'));
    let blocks = text.chunks(BLOCK).map(|block| block.iter().map(|&b| extra(b)).sum::<u32>());
    text.len() as u64 + blocks.map(u64::from).sum::<u64>()
}

/// Appends `text` escaped for XML character data: CR as `&#13;` so parsers keep it, and
/// markup. Runs between escapes are found with memchr and copied whole.
fn escape_into(text: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for cr in memchr_iter(b'\r', text).chain([text.len()]) {
        let mut from = start;
        for at in memchr3_iter(b'&', b'<', b'>', &text[start..cr]).map(|i| start + i) {
            out.extend_from_slice(&text[from..at]);
            out.extend_from_slice(match text[at] {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                _ => b"&gt;",
            });
            from = at + 1;
        }
        out.extend_from_slice(&text[from..cr]);
        if cr < text.len() {
            out.extend_from_slice(b"&#13;");
        }
        start = cr + 1;
    }
}

/// A buffer size for `len` bytes, at least 1 and at most `most`: small files then cost
/// no large zeroed buffer.
fn buffer_for(len: u64, most: usize) -> usize {
    usize::try_from(len).map_or(most, |len| len.clamp(1, most))
}

/// Reads `src` once to choose its encoding and the exact length of its encoded form.
fn survey(src: &mut impl Read, size_hint: u64) -> io::Result<Survey> {
    // sized to the file: zeroing a full chunk for each small file is most of its cost
    let step = buffer_for(size_hint, CHUNK);
    let mut buf = Vec::with_capacity(step + 4);
    let (mut raw, mut encoded) = (0u64, 0u64);
    loop {
        let n = src.by_ref().take(step as u64).read_to_end(&mut buf)?;
        raw += n as u64;
        match text_len(&buf, n == 0) {
            Some(_) if n == 0 => return Ok(Survey { text: true, raw, encoded }),
            Some(whole) => {
                encoded += escaped_len(&buf[..whole]);
                buf.drain(..whole); // a character cut at the end stays in front
            }
            // not text: base64, whose length follows from the raw length alone
            None => {
                let raw = size_hint.max(raw);
                return Ok(Survey { text: false, raw, encoded: raw.div_ceil(3) * 4 });
            }
        }
    }
}

/// The error of a file that changed while it was being sent.
fn changed_midway() -> io::Error {
    io::Error::other("the file changed while it was being sent")
}

/// The second pass: writes a file's encoded content, failing rather than sending bytes that
/// differ from what the survey promised (the file changed under us).
fn encode(mut src: impl Read, plan: Survey, out: &mut impl Write) -> io::Result<()> {
    let (mut sent, mut raw_left) = (0u64, plan.raw);
    let mut raw = Vec::with_capacity(buffer_for(plan.raw, CHUNK) + 4);
    let mut encoded = Vec::with_capacity(buffer_for(plan.encoded, 2 * CHUNK));
    while raw_left > 0 {
        let step = buffer_for(raw_left, if plan.text { CHUNK } else { B64_CHUNK });
        if src.by_ref().take(step as u64).read_to_end(&mut raw)? < step {
            return Err(changed_midway());
        }
        raw_left -= step as u64;
        encoded.clear();
        let used = if plan.text {
            let whole = text_len(&raw, raw_left == 0).ok_or_else(changed_midway)?;
            escape_into(&raw[..whole], &mut encoded);
            whole
        } else {
            base64_simd::STANDARD.encode_append(&raw, &mut encoded);
            raw.len()
        };
        raw.drain(..used);
        if sent + encoded.len() as u64 > plan.encoded {
            return Err(changed_midway());
        }
        out.write_all(&encoded)?;
        sent += encoded.len() as u64;
    }
    let ended = src.read(&mut [0u8; 1])? == 0 && sent == plan.encoded && raw.is_empty();
    if ended { Ok(()) } else { Err(changed_midway()) }
}

/// The text before and after a streamed content value in a `<methodResponse>`: a
/// `<string>` for text, else `<base64>`.
fn content_frame(text: bool) -> (String, String) {
    let tag = if text { "string" } else { "base64" };
    let head = format!("<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><{tag}>");
    (head, format!("</{tag}></value></param></params></methodResponse>\n"))
}

/// Whether a byte is XML white space.
fn xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A small pull scanner over a byte stream: enough XML to find and stream one value.
struct Scanner<R> {
    /// The answer as it arrives.
    src: R,
    /// Bytes read from `src`; those in `pos..end` are not yet consumed.
    buf: Vec<u8>,
    /// Where the bytes not yet consumed begin.
    pos: usize,
    /// Where the bytes read end.
    end: usize,
}

impl<R: Read> Scanner<R> {
    /// The bytes read but not yet consumed.
    fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Reads more of the stream; false at its end.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.copy_within(self.pos..self.end, 0);
        (self.end, self.pos) = (self.end - self.pos, 0);
        let n = loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.end += n;
        Ok(n > 0)
    }

    /// Makes at least `n` bytes available, unless the stream ends first.
    fn ensure(&mut self, n: usize) -> io::Result<()> {
        while self.available().len() < n && self.fill()? {}
        Ok(())
    }

    /// Consumes XML white space.
    fn skip_ws(&mut self) -> io::Result<()> {
        let mut skipped = 0;
        loop {
            let ws = self.available().iter().take_while(|&&b| xml_space(b)).count();
            self.pos += ws;
            skipped += ws;
            if skipped > MAX_WHITE_SPACE {
                return Err(io::Error::other("it padded its answer with endless white space"));
            }
            if !self.available().is_empty() || !self.fill()? {
                return Ok(());
            }
        }
    }

    /// Consumes each of `tags` in turn, with any white space before them; false at the
    /// first that does not come next.
    fn eat(&mut self, tags: &[&[u8]]) -> io::Result<bool> {
        for tag in tags {
            self.skip_ws()?;
            self.ensure(tag.len())?;
            if !self.available().starts_with(tag) {
                return Ok(false);
            }
            self.pos += tag.len();
        }
        Ok(true)
    }
}

/// Streams a mode-2 answer's content into `out`: `Some(bytes)` when it was a string or
/// base64 value, `None` for anything else (False, a fault, XML this path does not stream),
/// which the caller then asks for again whole, for `parse`.
fn decode_content(src: impl Read, out: &mut impl Write) -> io::Result<Option<u64>> {
    let mut s = Scanner { src, buf: vec![0; SCAN_BUFFER], pos: 0, end: 0 };
    let Some(close) = open_value(&mut s)? else { return Ok(None) };
    let written =
        if close == b"</base64>" { stream_base64(&mut s, out)? } else { stream_text(&mut s, close, out)? };
    let tail = [&b"</value>"[..], b"</param>", b"</params>", b"</methodResponse>"];
    // a bare value's text ended at its `</value>`
    if !s.eat(&tail[usize::from(close == b"</value>")..])? {
        return Ok(None);
    }
    s.skip_ws()?;
    Ok(written.filter(|_| s.available().is_empty()))
}

/// Consumes the answer up to its value's content; the tag that closes the content (which
/// tells its form: `</string>`, `</base64>`, or a bare value's `</value>`), or `None` if
/// the answer has another shape.
fn open_value(s: &mut Scanner<impl Read>) -> io::Result<Option<&'static [u8]>> {
    s.skip_ws()?;
    s.ensure(256)?;
    if s.available().starts_with(b"<?xml") {
        let Some(end) = declaration_end(s.available()) else { return Ok(None) };
        // an encoding other than UTF-8 is asked for again, read whole (see `to_utf8`)
        let encoding = encoding_named(&s.available()[..end]);
        if encoding.is_some_and(|name| !matches!(name.as_str(), "utf-8" | "utf8")) {
            return Ok(None);
        }
        s.pos += end + 2;
    }
    if !s.eat(&[b"<methodResponse>", b"<params>", b"<param>", b"<value>"])? {
        return Ok(None);
    }
    s.ensure(64)?;
    let rest = s.available();
    let ws = rest.iter().take_while(|&&b| xml_space(b)).count();
    let close: &'static [u8] = match &rest[ws..] {
        r if r.starts_with(b"<string>") => b"</string>",
        r if r.starts_with(b"<base64>") => b"</base64>",
        // empty, or white space alone: that is its text, as Python reads it
        r if r.starts_with(b"</value>") => return Ok(Some(b"</value>")),
        // other tags, and white space past what is read, are for `parse`
        r if r.is_empty() || r[0] == b'<' => return Ok(None),
        _ => return Ok(Some(b"</value>")), // its leading white space is part of the text
    };
    s.pos += ws + b"<string>".len();
    Ok(Some(close))
}

/// Streams character data up to `close`, undoing escapes; `None` on XML it does not
/// stream (CDATA, comments, unusual entities). A raw CR is kept as it came, as `parse`
/// (xml-rs) keeps it, so CRLF text from a Python node arrives exact. Text xml-rs would refuse
/// (control characters, broken UTF-8) is written as it came: content is content, and on
/// every answer `parse` accepts the two agree.
fn stream_text(s: &mut Scanner<impl Read>, close: &[u8], out: &mut impl Write) -> io::Result<Option<u64>> {
    let (mut text, mut total) = (Vec::with_capacity(CHUNK + 8), 0u64);
    loop {
        if text.len() >= CHUNK {
            write_capped(out, &text, &mut total)?;
            text.clear();
        }
        let avail = s.available();
        let Some(i) = memchr2(b'&', b'<', avail) else {
            text.extend_from_slice(avail);
            s.pos += avail.len();
            if !s.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            continue;
        };
        text.extend_from_slice(&avail[..i]);
        let special = avail[i];
        s.pos += i;
        if special == b'<' {
            if !s.eat(&[close])? {
                return Ok(None);
            }
            write_capped(out, &text, &mut total)?;
            return Ok(Some(total));
        }
        let Some(c) = entity(s)? else { return Ok(None) };
        text.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// Writes `data`, failing once the content passes MAX_FILE_BYTES.
fn write_capped(out: &mut impl Write, data: &[u8], total: &mut u64) -> io::Result<()> {
    *total += data.len() as u64;
    if *total > MAX_FILE_BYTES {
        return Err(io::Error::other(format!("it sent more than the {MAX_FILE_BYTES}-byte cap")));
    }
    out.write_all(data)
}

/// Consumes one `&…;` reference; `None` for one this path does not decode.
fn entity(s: &mut Scanner<impl Read>) -> io::Result<Option<char>> {
    s.ensure(12)?;
    let avail = s.available();
    let Some(end) = memchr(b';', &avail[..avail.len().min(12)]) else { return Ok(None) };
    // digits only: from_str_radix refuses anything else but a leading '+'
    let number = |digits: &[u8], radix| {
        let digits = std::str::from_utf8(digits).ok().filter(|d| !d.starts_with('+'))?;
        char::from_u32(u32::from_str_radix(digits, radix).ok()?)
    };
    let c = match &avail[1..end] {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x', hex @ ..] => number(hex, 16),
        [b'#', dec @ ..] => number(dec, 10),
        _ => None,
    };
    s.pos += end + 1;
    Ok(c)
}

/// Streams base64 text up to `</base64>`, skipping white space; `None` on anything else.
fn stream_base64(s: &mut Scanner<impl Read>, out: &mut impl Write) -> io::Result<Option<u64>> {
    let (mut quads, mut bytes, mut total) = (Vec::new(), Vec::new(), 0u64);
    let (mut chars, mut spaces, mut padded) = (0usize, 0usize, false);
    loop {
        let avail = s.available();
        let stop = memchr(b'<', avail);
        let run = &avail[..stop.unwrap_or(avail.len())];
        let before = quads.len();
        // base64 holds no byte at or below the space, and most answers no white space at all
        if run.iter().fold(false, |any, &b| any | (b <= b' ')) {
            quads.extend(run.iter().filter(|&&b| !xml_space(b)));
        } else {
            quads.extend_from_slice(run);
        }
        (chars, spaces) = (chars + quads.len() - before, spaces + run.len() - (quads.len() - before));
        if spaces > chars / 4 + MAX_WHITE_SPACE {
            return Err(io::Error::other("it padded its base64 with endless white space"));
        }
        s.pos += run.len();
        let whole = if stop.is_some() { quads.len() } else { quads.len() / 4 * 4 };
        // padding ends the data: more after it is refused, wherever the reads split the answer
        if padded && whole > 0 {
            return Ok(None);
        }
        padded |= quads[..whole].ends_with(b"=");
        // at most a scan buffer's worth, so one step; a last run that is not whole quads fails here
        bytes.clear();
        if base64_simd::STANDARD.decode_append(&quads[..whole], &mut bytes).is_err() {
            return Ok(None);
        }
        write_capped(out, &bytes, &mut total)?;
        quads.drain(..whole);
        if stop.is_some() {
            return Ok(s.eat(&[b"</base64>"])?.then_some(total));
        }
        if !s.fill()? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

// ================================================================ node

/// Peers one node keeps and one client visits: bounds memory and the join walk.
const MAX_PEERS: usize = 10_000;
/// Largest request body a node reads: a full 10,000-peer list fits twice over.
const MAX_REQUEST_BYTES: u64 = 2 << 20;
/// Compiled size limit of a regex, so a hostile pattern cannot eat memory or time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest pattern compiled: the parser holds each `\w` in about 7 KB before the size limit
/// above is checked (500 KB of them took 1.6 GB); an alternation of 1,000 names still fits.
const MAX_PATTERN: usize = 32 << 10;
/// Patterns at least this long are compiled one at a time, so the cost above is paid for one
/// pattern at a time, and given back to the system after each.
const LONG_PATTERN: usize = 1024;
/// Mode-1 answers a node keeps written, by pattern: clients repeat the same few patterns.
const ANSWER_CACHE: usize = 64;
/// Files whose survey a node keeps (see `Node::survey`).
const SURVEY_CACHE: usize = 4096;
/// Age a folder's or a file's change time must have before what was read from it is kept:
/// a change within one file-system clock tick (up to 2 s on some) could otherwise leave the
/// time, and the stale copy, as they were.
const SETTLE: Duration = Duration::from_secs(2);
/// Request log lines the shell keeps for its `log` command.
const LOG_LINES: usize = 200;
/// Request log lines that wait to be written (at most about 5 MB); more are dropped.
const LOG_BACKLOG: usize = 8192;
/// Longest a node waits for a peer it probes to make room in a full list.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Peers probed at once to make room in a full list.
const PROBES: usize = 32;
/// Most peers probed for one offer.
const MOST_PROBES: usize = 128;

/// A serving node: its URL (the token is bound to it), peer list and caches. Its folder is
/// the process's current folder, which the node never changes: every name is looked up
/// relative to it, a reference to the folder itself rather than its path, so a folder
/// deleted or swapped under a running node is never followed to another.
struct Node {
    /// The URL the node was started as: the one its token is bound to.
    url: String,
    /// Known peers, this node among them.
    peers: Mutex<Peers>,
    /// The folder's listing, with the folder's change time it was read at.
    listing: Mutex<Option<(Changed, Arc<Listing>)>>,
    /// Surveys of files already sent, by device, inode, size and change time.
    surveys: Mutex<HashMap<[u64; 5], Survey>>,
    /// Calls to other nodes: the join, and probes when the peer list is full.
    caller: Caller,
    /// Held while an offer probes peers to make room in a full list.
    probing: Mutex<()>,
    /// The shell's request log, once its prompt is up; `None`: log lines go to stderr.
    log: Mutex<Option<VecDeque<String>>>,
    /// What shows a warning above the shell's prompt, with line editing on a terminal.
    printer: Mutex<Option<Box<dyn rustyline::ExternalPrinter + Send>>>,
}

/// A peer list in arrival order, with a set for fast membership.
#[derive(Default)]
struct Peers {
    /// The URLs, in the order they came.
    list: Vec<String>,
    /// The same URLs.
    seen: HashSet<String>,
    /// Other spellings of this node's own URL, which are never listed (see `own_spellings`).
    own: HashSet<String>,
}

impl Peers {
    /// Whether `url` is a valid peer URL not known yet.
    fn is_new(&self, url: &str) -> bool {
        valid_peer_url(url) && !self.seen.contains(url) && !self.own.contains(url)
    }

    /// Appends every valid URL not yet known, in order, up to MAX_PEERS.
    fn merge<'a>(&mut self, urls: impl IntoIterator<Item = &'a str>) {
        for url in urls {
            if self.list.len() < MAX_PEERS && self.is_new(url) {
                self.seen.insert(url.to_string());
                self.list.push(url.to_string());
            }
        }
    }

    /// Forgets `url`.
    fn remove(&mut self, url: &str) {
        self.seen.remove(url);
        self.list.retain(|u| u != url);
    }

    /// The list as an XML-RPC array of strings.
    fn to_value(&self) -> Value {
        Value::Array(self.list.iter().map(|u| Value::from(u.as_str())).collect())
    }
}

/// The servable names of the folder as it was at one time, and the mode-1 answers already
/// written from them, by pattern: clients repeat the same few patterns.
struct Listing {
    /// The names, sorted.
    names: Vec<String>,
    /// Each pattern's written answer.
    answers: Mutex<HashMap<String, Written>>,
}

/// A mode-1 answer written, and how many names it holds.
type Written = (Arc<[u8]>, usize);

/// What a call of `f` is answered with.
enum Answer {
    /// An XML-RPC answer already written, and a few words on it for the log.
    Xml(Arc<[u8]>, String),
    /// A file's content, streamed (see `send_content`).
    File(File, Survey),
}

/// Serves this folder as `http://HOST:PORT`, joined through `peers`; with `shell`, a prompt too.
fn serve(caller: Caller, host: &str, port: u16, peers: &[String], shell: bool) -> Result<bool> {
    let scanned = folder().and_then(|_| scan());
    let (names, left_out) = scanned.map_err(|e| anyhow!("cannot share this folder: {}", words(&e)))?;
    raise_fd_limit();
    let listener = Arc::new(listen(host.trim_matches(['[', ']']), port, caller.settings.timeout)?);
    let local = listener.local_addr().context("no local address")?;
    let node = Arc::new(Node::new(caller, node_url(host, local.port()), peers, own_spellings(local)));
    // a shell's log holds every request and warning from the start, and no request reaches stderr
    *lock(&node.log) = shell.then(VecDeque::new);
    Pool::start(&node, listener)?;
    let (joined, join_done) = mpsc::channel();
    let (joiner, given) = (node.clone(), peers.to_vec());
    std::thread::spawn(move || {
        join(&joiner, &given);
        let _ = joined.send(());
    });
    // Serving already; the join goes on in the background, and most joins are done by now.
    let _ = join_done.recv_timeout(JOIN_GRACE);
    say_hello(&node, host, names.len(), &left_out);
    if shell {
        return run_shell(&node);
    }
    loop {
        std::thread::park(); // the workers serve; a signal ends the program
    }
}

/// The start lines: what the node shares and leaves out, where it listens, how to fetch from it.
fn say_hello(node: &Node, host: &str, files: usize, left_out: &BTreeMap<&str, usize>) {
    let left_out: Vec<String> = left_out.iter().map(|(why, n)| format!("{why}: {n}")).collect();
    let left_out =
        if left_out.is_empty() { String::new() } else { format!(" (left out: {})", left_out.join(", ")) };
    let folder = fs::canonicalize(".").map_or("a folder deleted".into(), |f| printable(&f.to_string_lossy()));
    let (quiet, url) = (node.caller.settings.quiet, &node.url);
    let nowhere = host.trim_matches(['[', ']']).parse().is_ok_and(|ip: IpAddr| ip.is_unspecified());
    if !quiet {
        say_err(format_args!("sharing {} from {folder}{left_out}", plural(files, "file")));
    }
    if nowhere {
        let why = "which they cannot reach: start the node with the address they will use";
        say_err(error_line(format_args!("warning: other nodes will be told {url}, {why}")));
    }
    say_err(format_args!("listening on {url}"));
    if !quiet && !nowhere {
        say_err(format_args!("to fetch from here: tinyp2p - client {url} PATTERN (TINYP2P_PASSWORD set)"));
    }
}

impl Node {
    /// A node known as `url`, sharing the current folder, its list holding `peers` and itself
    /// (and none of the `own` other spellings of its URL).
    fn new(caller: Caller, url: String, peers: &[String], own: HashSet<String>) -> Node {
        let mut list = Peers { own, ..Peers::default() };
        list.own.remove(&url);
        list.merge(peers.iter().map(String::as_str).chain([url.as_str()]));
        Node {
            url,
            peers: Mutex::new(list),
            listing: Mutex::default(),
            surveys: Mutex::default(),
            caller,
            probing: Mutex::default(),
            log: Mutex::default(),
            printer: Mutex::default(),
        }
    }

    /// Logs a line: on stderr (only warnings when quiet), or into the shell's log, so that
    /// it cannot garble the prompt; a warning (a peer it cannot join) is shown there too.
    fn note(&self, line: String) {
        let warning = line.starts_with("tinyp2p: ");
        let in_shell = lock(&self.log).as_mut().map(|log| {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line.clone());
        });
        if !warning && (in_shell.is_some() || self.caller.settings.quiet) {
            return; // the printer may wait on the terminal (Ctrl-S): a request's line never does
        }
        match lock(&self.printer).as_mut() {
            Some(printer) => drop(printer.print(format!("{line}\n"))),
            None if warning => say_err(line),
            None => log_later(line),
        }
    }

    /// The one method: `f(token, mode, arg)`, as the original answers it.
    fn f(&self, params: &[Value]) -> Result<Answer, String> {
        let [token, mode, arg] = params else {
            return Err(format!("f takes 3 arguments ({} given)", params.len()));
        };
        // a token of another type is as wrong as a wrong string, as Python 3 compares it
        if !token_ok(&self.caller.password, &self.url, token.as_str().unwrap_or_default()) {
            return Ok(Answer::Xml(answer_xml(Ok(Value::Bool(false))).into(), "wrong token".into()));
        }
        // as the original's `n==0` and `n==1`: 0.0 and False are 0, 1.0 and True are 1, and any
        // other value (the string "1" too) asks for a file
        match mode {
            Value::Int(0) | Value::Int64(0) | Value::Double(0.0) | Value::Bool(false) => self.offer(arg),
            Value::Int(1) | Value::Int64(1) | Value::Double(1.0) | Value::Bool(true) => self.search(arg),
            _ => self.open(arg),
        }
    }

    /// Mode 0: merges the offered URLs into the peer list and answers the list; a full
    /// list first makes room (see `make_room`).
    fn offer(&self, arg: &Value) -> Result<Answer, String> {
        let items = arg.as_array().ok_or("mode 0 takes a list of peer URLs")?;
        if items.len() > MAX_PEERS {
            return Err(format!("lists of more than {MAX_PEERS} items are refused"));
        }
        let urls: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
        let urls = urls.ok_or("mode 0 takes a list of strings")?;
        let mut peers = lock(&self.peers);
        let new = urls.iter().filter(|u| peers.is_new(u)).count();
        if new > 0 && peers.list.len() + new > MAX_PEERS {
            drop(peers); // the probes take a while, and make_room locks the list itself
            // one offer probes at a time (each would start threads and connections of its own);
            // the next sees the room the last one made
            let _one = lock(&self.probing);
            if lock(&self.peers).list.len() + new > MAX_PEERS {
                self.make_room(new);
            }
            peers = lock(&self.peers);
        }
        peers.merge(urls);
        Ok(Answer::Xml(answer_xml(Ok(peers.to_value())).into(), plural(peers.list.len(), "peer")))
    }

    /// Makes room in a full peer list for `n` newcomers, dropping peers that do not answer
    /// a quick call, newest first: a list flooded with dead URLs cannot keep a node out.
    fn make_room(&self, n: usize) {
        let prober = Caller { deadline: PROBE_TIMEOUT, ..self.caller.clone() };
        let list = lock(&self.peers).list.clone();
        let candidates = Vec::from_iter(list.iter().rev().filter(|url| **url != self.url).take(MOST_PROBES));
        for batch in candidates.chunks(PROBES) {
            // dead: no answer, or one that is no peer list (False from another network too)
            let dead = parallel(batch, PROBES, |url| {
                prober.call(url, 0, Value::Array(vec![])).and_then(|answer| strings(answer, url)).is_err()
            });
            let mut peers = lock(&self.peers);
            batch.iter().zip(dead).filter(|(_, dead)| *dead).for_each(|(url, _)| peers.remove(url));
            if peers.list.len() + n <= MAX_PEERS {
                return;
            }
        }
    }

    /// Mode 1: `[[names]]`, the servable names the regex searches; written once per
    /// pattern and listing, since clients repeat their patterns.
    fn search(&self, arg: &Value) -> Result<Answer, String> {
        let pattern = arg.as_str().ok_or("mode 1 takes a regex string")?;
        let listing = self.listing().map_err(|e| format!("cannot list the shared folder: {e}"))?;
        if let Some((xml, n)) = lock(&listing.answers).get(pattern) {
            return Ok(Answer::Xml(xml.clone(), plural(*n, "name")));
        }
        let regex = compile_regex(pattern)?;
        let found: Vec<Value> =
            listing.names.iter().filter(|n| regex.is_match(n)).map(|n| Value::from(n.as_str())).collect();
        let n = found.len();
        let xml: Arc<[u8]> = answer_xml(Ok(Value::Array(vec![Value::Array(found)]))).into();
        remember(&listing.answers, ANSWER_CACHE, pattern.to_string(), (xml.clone(), n));
        Ok(Answer::Xml(xml, plural(n, "name")))
    }

    /// Mode 2: the named file, opened in the folder and surveyed, if it is served.
    fn open(&self, arg: &Value) -> Result<Answer, String> {
        let name = arg.as_str().ok_or("mode 2 takes a file name")?;
        let refused = || "no such file".to_string();
        let target = servable(name).ok_or_else(refused)?;
        // Not through a link swapped in since the check, nor blocking on a FIFO.
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let mut file = OpenOptions::new().read(true).custom_flags(flags).open(target).map_err(|e| {
            let unreadable = e.kind() == io::ErrorKind::PermissionDenied;
            if unreadable { format!("cannot read it: {}", words(&e)) } else { refused() }
        })?;
        let meta = file.metadata().ok().filter(fs::Metadata::is_file).ok_or_else(refused)?;
        let plan = self.survey(&mut file, &meta).map_err(|e| format!("cannot read it: {}", words(&e)))?;
        Ok(Answer::File(file, plan))
    }

    /// A file's survey, kept while its device, inode, size and change time stay the same, so a
    /// file asked for again streams at once. A change that slips past them costs nothing
    /// worse than a failed transfer: the encoder checks every byte against the survey.
    fn survey(&self, file: &mut File, meta: &fs::Metadata) -> io::Result<Survey> {
        let ctime = changed(meta);
        let stamp = [meta.dev(), meta.ino(), meta.len(), ctime.0 as u64, ctime.1 as u64];
        if let Some(plan) = lock(&self.surveys).get(&stamp) {
            return Ok(*plan);
        }
        let plan = survey(file, meta.len())?;
        file.rewind()?;
        if settled(ctime) {
            remember(&self.surveys, SURVEY_CACHE, stamp, plan);
        }
        Ok(plan)
    }

    /// The folder's listing; scanned again only when the folder changed.
    fn listing(&self) -> io::Result<Arc<Listing>> {
        let stamp = changed(&folder()?);
        let mut cache = lock(&self.listing);
        if let Some((_, listing)) = cache.as_ref().filter(|(seen, _)| *seen == stamp) {
            return Ok(listing.clone());
        }
        let listing = Arc::new(Listing { names: scan()?.0, answers: Mutex::default() });
        *cache = settled(stamp).then(|| (stamp, listing.clone()));
        Ok(listing)
    }
}

/// The shared folder's metadata; an error once it is deleted (it reads as empty then).
fn folder() -> io::Result<fs::Metadata> {
    let folder = fs::metadata(".")?;
    if folder.nlink() == 0 { Err(io::Error::other("it was deleted")) } else { Ok(folder) }
}

/// When a file or folder last changed, in content or metadata: its ctime, in seconds and
/// nanoseconds. Unlike its mtime, which `touch -d` or `cp -p` set at will, only a change sets
/// it, so what a node keeps under it cannot be taken for the file as it is now.
type Changed = (i64, i64);

/// The change time of a file or folder.
fn changed(meta: &fs::Metadata) -> Changed {
    (meta.ctime(), meta.ctime_nsec())
}

/// The URLs that reach a node listening on `local` (`http://127.0.0.1:P`, and `localhost` on
/// 127.0.0.1 or ::1): a peer list holding one of them besides the node's own URL lists it twice.
fn own_spellings(local: SocketAddr) -> HashSet<String> {
    // not on 127.0.1.1 (a Debian host name): `localhost` is another node's address there
    let loopback = [IpAddr::from(Ipv4Addr::LOCALHOST), IpAddr::from(Ipv6Addr::LOCALHOST)];
    let localhost = loopback.contains(&local.ip()).then(|| format!("http://localhost:{}", local.port()));
    HashSet::from_iter([format!("http://{local}")].into_iter().chain(localhost))
}

/// Whether a change time is over SETTLE ago (one before 1970, as SMB or FUSE may give, is).
fn settled((secs, nanos): Changed) -> bool {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    now.as_secs_f64() - (secs as f64 + nanos as f64 / 1e9) >= SETTLE.as_secs_f64()
}

/// Keeps `value` under `key` in a cache of at most `most` entries, emptied when full.
fn remember<K: std::hash::Hash + Eq, V>(cache: &Mutex<HashMap<K, V>>, most: usize, key: K, value: V) {
    let mut cache = lock(cache);
    if cache.len() >= most {
        cache.clear();
    }
    cache.insert(key, value);
}

/// Requests being answered (counted by `Pool::answer`): a signal that ends the node waits a
/// moment for their log lines.
static ANSWERING: AtomicUsize = AtomicUsize::new(0);

/// Answers one HTTP request, or refuses it with the status and reason `refused`, and logs it in
/// one line, as Python's server does.
fn handle(node: &Node, mut request: Request, refused: Option<(u16, String)>) {
    let who = request.remote_addr().map_or("-".to_string(), |a| a.ip().to_string());
    // all of it escaped: tiny_http takes any method, control characters included
    let asked = format!("{} {} HTTP/{}", request.method(), request.url(), request.http_version());
    let line = format!("{who} - - [{}] \"{}\"", log_time(), printable(&cut(&asked, MAX_ECHO)));
    let answer = refused.map_or_else(|| respond(node, &mut request), Err);
    let (status, note, sent) = match answer {
        Ok(Answer::File(file, plan)) => {
            (200, format!("{} bytes", plan.raw), send_content(request, file, plan))
        }
        Ok(Answer::Xml(xml, note)) => {
            let header = Header::from_bytes(&b"Content-Type"[..], &b"text/xml"[..]).expect("a valid header");
            (200, note, send(request, Response::from_data(xml.to_vec()).with_header(header)))
        }
        Err((status, why)) => {
            (status, why.clone(), send(request, Response::from_string(why).with_status_code(status)))
        }
    };
    let failed = sent.err().map(|e| format!(": sending failed: {}", words(&e))).unwrap_or_default();
    node.note(format!("{line} {status} - {}{failed}", printable(&note)));
}

/// The answer to one request, or an HTTP error status and its reason.
fn respond(node: &Node, request: &mut Request) -> Result<Answer, (u16, String)> {
    if *request.method() != Method::Post {
        return Err((405, "only POST is served".into()));
    }
    if !matches!(request.url(), "/" | "/RPC2") {
        return Err((404, "XML-RPC is served at / and /RPC2".into()));
    }
    let too_large = || (413, format!("requests of over {MAX_REQUEST_BYTES} bytes are refused"));
    if request.body_length().is_some_and(|n| n as u64 > MAX_REQUEST_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut reader = request.as_reader().take(MAX_REQUEST_BYTES + 1);
    reader.read_to_end(&mut body).map_err(|e| (400, format!("cannot read the request: {e}")))?;
    if body.len() as u64 > MAX_REQUEST_BYTES {
        return Err(too_large());
    }
    let call = parse_call(&to_utf8(body)).and_then(|(method, params)| match method.as_str() {
        "f" => node.f(&params),
        other => Err(format!("method {:?} is not supported", cut(other, 100))),
    });
    Ok(call.unwrap_or_else(|why| {
        // it may repeat what the client sent: cut, and what XML cannot carry escaped
        let why = printable(&cut(&why, MAX_ECHO));
        Answer::Xml(answer_xml(Err(why.clone())).into(), format!("fault: {why}"))
    }))
}

/// Keeps a request's log line for stderr, where a thread of its own writes the lines kept
/// every POOL_TICK, in order and in one write: a terminal paused with Ctrl-S, or a pipe nobody
/// reads, then holds up that thread, never a worker (measured: a paused terminal stopped a
/// node answering anyone within 5 s), and a busy node logs in few system calls.
fn log_later(line: String) {
    static WRITER: std::sync::Once = std::sync::Once::new();
    WRITER.call_once(|| {
        // with no thread to be had, the lines are dropped
        let _ = std::thread::Builder::new().spawn(|| {
            loop {
                std::thread::sleep(POOL_TICK);
                write_log();
            }
        });
    });
    let mut waiting = lock(&LOG_WAITING);
    if waiting.len() < LOG_BACKLOG {
        waiting.push(line); // LOG_BACKLOG lines waiting: this one is dropped
    }
}

/// Request log lines waiting to be written (see `log_later`).
static LOG_WAITING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Writes the request log lines waiting, in one write.
fn write_log() {
    // locked first, so that lines taken are written before any taken after them
    let mut stderr = io::stderr().lock();
    let lines = take(&mut *lock(&LOG_WAITING));
    if !lines.is_empty() {
        let _ = stderr.write_all(format!("{}\n", lines.join("\n")).as_bytes());
    }
}

/// The local time as Python's server log writes it: `24/Nov/2026 10:00:00`.
fn log_time() -> String {
    let mut buf = [0u8; 64];
    // SAFETY: time, localtime_r and strftime get valid pointers, and strftime the buffer's size.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&libc::time(std::ptr::null_mut()), &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c"%d/%b/%Y %H:%M:%S".as_ptr(), &tm)
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Compiles a pattern with a size limit, so a hostile one cannot eat memory; the error is
/// one line (the regex crate's own draws a caret under the pattern on lines of its own),
/// with a hint when the pattern looks like a shell glob.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let shown = cut(pattern, 100); // a long pattern by its start: the error stays one line
    if pattern.len() > MAX_PATTERN {
        return Err(format!("invalid regex {shown:?}: longer than {MAX_PATTERN} bytes"));
    }
    // sent as it is, such a character would make every node refuse the call as malformed
    if let Some(c) = pattern.chars().find(|c| !xml_safe(c.encode_utf8(&mut [0; 4]).as_bytes())) {
        // spelt as both Rust's regex and Python's re read it
        let escape = format!("\\u{:04X}", u32::from(c));
        return Err(format!("invalid regex {shown:?}: XML-RPC cannot carry {c:?}; write it as {escape}"));
    }
    static ONE_LONG: Mutex<()> = Mutex::new(());
    let one = (pattern.len() >= LONG_PATTERN).then(|| lock(&ONE_LONG));
    let built =
        RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build();
    if one.is_some() {
        // freed, the parser's memory would stay in this thread's arena of the C allocator
        // SAFETY: malloc_trim only releases free memory of the C allocator.
        unsafe { libc::malloc_trim(0) };
    }
    drop(one);
    built.map_err(|e| {
        let text = e.to_string();
        let gist = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
        let gist = gist.trim_start_matches("error: ");
        // a hint repeats the pattern, so only for one shown whole, and never for one too large
        let hint = (shown == pattern && matches!(e, regex::Error::Syntax(_))).then(|| {
            let glob =
                glob_as_regex(pattern).map(|re| format!("; PATTERN is a regex, not a glob: try '{re}'"));
            glob.or_else(|| python_only(pattern).map(|re| format!("; that is Python's syntax: try '{re}'")))
        });
        format!("invalid regex {shown:?}: {gist}{}", hint.flatten().unwrap_or_default())
    })
}

/// A pattern in Python's own spellings (`\Z` for the end, `{,n}`), written as Python and the
/// regex crate both read it, if that compiles.
fn python_only(pattern: &str) -> Option<String> {
    // in a class, or after an escaped `\` or `{`, they may be other things: no hint then
    if pattern.contains('[') || pattern.contains(r"\\") || pattern.contains(r"\{") {
        return None;
    }
    let common = pattern.replace(r"\Z", "$").replace("{,", "{0,");
    (common != pattern && compile_regex(&common).is_ok()).then_some(common)
}

/// The regex a pattern written as a shell glob means (`*.txt` is `\.txt$`), if it has a
/// wildcard and no regex syntax besides (`(?=a)` is no glob).
fn glob_as_regex(pattern: &str) -> Option<String> {
    if !pattern.contains(['*', '?']) || pattern.contains(['(', ')', '[', '{', '\\', '|', '^', '$', '+']) {
        return None;
    }
    // escaped whole, then each `\*` and `\?` made a wildcard again: only a `*` or `?` escapes to those
    let re = format!("^{}$", regex::escape(pattern).replace(r"\*", ".*").replace(r"\?", "."));
    let re = re.strip_prefix("^.*").unwrap_or(&re);
    let re = re.strip_suffix(".*$").unwrap_or(re);
    Some(if re.is_empty() || re == "$" || re == "^" { ".".into() } else { re.to_string() })
}

/// The servable names of a folder, sorted, and how many entries were left out, by reason.
fn scan() -> io::Result<(Vec<String>, BTreeMap<&'static str, usize>)> {
    let (mut names, mut left_out) = (Vec::new(), BTreeMap::new());
    for entry in fs::read_dir(".")?.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let why = match entry.file_name().into_string().ok().filter(|n| plain_name(n)) {
            Some(name) if is_part(&name) => "unfinished downloads",
            // the directory's own file types spare a system call per regular file
            Some(name) if kind.is_file() || (kind.is_symlink() && servable(&name).is_some()) => {
                names.push(name);
                continue;
            }
            _ if kind.is_dir() => "subfolders",
            None => "names it cannot carry",
            Some(_) if kind.is_symlink() => "links leading out",
            Some(_) => "other kinds of file",
        };
        *left_out.entry(why).or_insert(0) += 1;
    }
    names.sort();
    Ok((names, left_out))
}

/// The name in the folder to open for `name`, if it is served: a regular file directly in
/// the folder, or a link that resolves to one, relative to the folder opened. Client
/// temporary files are never served.
fn servable(name: &str) -> Option<String> {
    if !plain_name(name) || is_part(name) {
        return None;
    }
    let kind = fs::symlink_metadata(name).ok()?.file_type();
    if kind.is_file() {
        return Some(name.to_string());
    }
    let real = fs::canonicalize(name).ok().filter(|_| kind.is_symlink())?;
    let target = real.file_name()?.to_str()?.to_string();
    // canonicalize(".") is where the folder is now; gone (deleted) means refused
    let inside = real.parent() == Some(fs::canonicalize(".").ok()?.as_path()) && !is_part(&target);
    (inside && fs::metadata(&real).ok()?.is_file()).then_some(target)
}

// ================================================================ tiny_http's price
//
// What this program pays for tiny_http 0.12, all in this section, so that it can go
// together the day the crate is fixed or replaced; the node's code above reads as if the
// crate had no gaps. Each item names what was measured.
// 1. Nagle: tiny_http writes a response's head and body apart, and Nagle's algorithm with
//    delayed ACKs held each body back 40 ms. The listener sets TCP_NODELAY, which Linux
//    passes on to every connection it accepts.
// 2. No socket timeouts: a client that stalled mid-request, or never read its answer, held
//    a thread for good, and 500 idle connections ran a node out of descriptors. The
//    listener sets read and write timeouts, also passed on. They bound the listener's own
//    accept() too: the pool connects to the node at least twice a timeout (item 4), and an
//    accept that times out anyway is one more restart (item 6).
// 3. Workers: tiny_http reads each connection on a thread of its own (and holds two
//    descriptors for it), then hands each request to whichever thread calls `recv`. A few hot
//    threads answer fastest (measured: 4 serve about twice the requests per second of
//    64), but a stalled client holds one until its timeout, so the pool never runs out of
//    free ones: a worker that takes the last free place starts another, and one that finds
//    MIN_WORKERS free when it is done leaves.
// 4. Pool race: connections arriving in a burst could wait with no tiny_http thread to
//    read them until another connection closed (measured: 4 of 8 parallel downloads timed
//    out). Each connection of our own gives its pool a thread that takes them up: every
//    POOL_TICK while busy (repeated until one is taken up at once), and while idle twice a
//    timeout (item 2) and at least every second, so a race while idle lasts a second at most.
//    The client opens its connections to a node one by one for the same reason (`parallel`).
// 5. Unread bodies: dropping a request whose body was not read makes tiny_http read the
//    rest into one zeroed buffer of the size the client declared: a terabyte aborted the
//    node, and holding those buffers while clients trickle would run out of address space.
//    `Allocator` maps such blocks lazily and unaccounted, and `send` shuts the connection's
//    reading side first, so the drain ends at once. A size past MAPPABLE cannot be mapped
//    at all: that request is kept and its connection closed; one thread of tiny_http's
//    waits for it until the node stops. (Upstream tiny_http#290 drains through a fixed
//    buffer; with it all of this goes.)
// 6. Its accept loop ends for good on an error (EMFILE, out of descriptors) or a panic
//    (its `try_clone().unwrap()`), and the node then stopped. The pool notices (an error
//    from `recv`, or connections left in the listen queue for a second), logs one line,
//    and serves again on the same socket from a new tiny_http server as soon as a few
//    descriptors are free; the old server's workers leave once its connections are gone.
// 7. Its response writer copies 8 KiB per system call, a third of a large file's time:
//    content answers write their own head, and large writes (see `send_content`).
// 8. It reads request heads with no size limit: a flood of headers grows the node while it
//    lasts. The C allocator's free memory is given back to the system every second.
// 9. Pipelining: it reads every request a client pipelines and hands each to a worker, which
//    waits until the answers before its own are written. One connection that sent 4,000 and
//    read slowly held all 1,024 workers, and the node answered nobody else. A connection
//    with more than PIPELINED requests under way for PIPELINED_FOR is closed.
// Not worked around (README, Known limits): a request line claiming HTTP/2.0 or 3.0 makes
// tiny_http answer 505 through a writer that waits for the request being answered, so that
// connection's thread and its two descriptors are lost for good, before any code here runs.

/// How often the pool nudges tiny_http's pool while busy, and watches its accept loop.
const POOL_TICK: Duration = Duration::from_millis(20);
/// Workers a node starts with, and most it keeps free for new requests.
const MIN_WORKERS: usize = 4;
/// Most workers: stalled clients beyond this many do hold up the others.
const MAX_WORKERS: usize = 1024;
/// Most connections the pool makes to itself in one tick (item 4).
const NUDGES: usize = 64;
/// How long connections may wait in the listen queue before the accept loop counts as gone.
const ACCEPT_STALL: Duration = Duration::from_secs(1);
/// Descriptors that must be free before a new tiny_http server starts (item 6).
const SPARE_FDS: usize = 16;
/// Longest wait before `parallel` starts its next worker (item 4).
const WORKER_STAGGER: Duration = Duration::from_millis(20);
/// Requests of one connection answered at once (item 9): clients that pipeline are rare.
const PIPELINED: usize = 4;
/// How long a connection may have more than PIPELINED under way (item 9): the workers that
/// answered a client that does not pipeline can wait that long for a core before they count
/// their answers done (measured: wrk's 64 connections on 2 cores were cut 2 times in 5 s).
const PIPELINED_FOR: Duration = Duration::from_millis(50);
/// Largest single write of a content answer to its socket.
const SEND_BUFFER: usize = 256 * 1024;
/// Blocks at least this large are mapped by `Allocator` itself (item 5).
const HUGE_BLOCK: usize = 1 << 30;
/// Largest unread body whose drain buffer can surely be mapped: 32 TiB of 128 TiB of
/// address space (item 5).
const MAPPABLE: u64 = 1 << 45;

/// A listener whose connections inherit TCP_NODELAY and the read and write timeouts (items 1, 2).
fn listen(host: &str, port: u16, timeout: Duration) -> Result<TcpListener> {
    let listener = TcpListener::bind((host, port))
        .map_err(|e| anyhow!("cannot listen on {host}:{port}: {}", words(&e)))?;
    // SAFETY: the listener's own socket, borrowed as a stream to set options, never closed.
    let socket = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
    let set = socket.set_nodelay(true).and_then(|()| socket.set_read_timeout(Some(timeout)));
    set.and_then(|()| socket.set_write_timeout(Some(timeout))).context("cannot set socket options")?;
    Ok(listener)
}

/// The workers of one tiny_http server (items 3, 4 and 6).
struct Pool {
    /// The server whose requests these workers answer.
    server: tiny_http::Server,
    /// What the requests are answered from.
    node: Arc<Node>,
    /// The listening socket, shared by every server started on it.
    listener: Arc<TcpListener>,
    /// Its workers.
    workers: AtomicUsize,
    /// Those of them waiting for a request.
    free: AtomicUsize,
    /// When the last request came.
    last: Mutex<Instant>,
    /// Set once the server stopped accepting: its workers leave when it falls quiet.
    retired: AtomicBool,
    /// Requests being answered, by the connection they came on (item 9).
    under_way: Mutex<HashMap<Option<SocketAddr>, usize>>,
}

impl Pool {
    /// Starts a tiny_http server on `listener`, with its workers and their keeper.
    fn start(node: &Arc<Node>, listener: Arc<TcpListener>) -> Result<()> {
        let own = listener.try_clone().context("no descriptor free")?;
        let server = tiny_http::Server::from_listener(own, None).map_err(|e| anyhow!("cannot serve: {e}"))?;
        let pool = Arc::new(Pool {
            server,
            node: node.clone(),
            listener,
            workers: AtomicUsize::new(0),
            free: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            retired: AtomicBool::new(false),
            under_way: Mutex::default(),
        });
        (0..MIN_WORKERS).for_each(|_| pool.add());
        std::thread::spawn(move || pool.keep());
        Ok(())
    }

    /// Starts one more worker, within MAX_WORKERS and the threads the system gives.
    fn add(self: &Arc<Self>) {
        if self.workers.fetch_update(Relaxed, Relaxed, |n| (n < MAX_WORKERS).then_some(n + 1)).is_ok() {
            self.free.fetch_add(1, Relaxed);
            let pool = self.clone();
            if std::thread::Builder::new().spawn(move || pool.work()).is_err() {
                self.leave();
            }
        }
    }

    /// Counts a worker out.
    fn leave(&self) {
        self.free.fetch_sub(1, Relaxed);
        self.workers.fetch_sub(1, Relaxed);
    }

    /// A worker: answers requests until more than enough others are free, or its server is
    /// retired and quiet.
    fn work(self: Arc<Self>) {
        // this long without a request, a retired server's idle connections have all timed out
        // (item 2): none can bring a request any more
        let quiet = 2 * self.node.caller.settings.timeout;
        loop {
            match self.server.recv_timeout(Duration::from_secs(1)) {
                Ok(Some(request)) => {
                    *lock(&self.last) = Instant::now();
                    if self.free.fetch_sub(1, Relaxed) == 1 {
                        self.add(); // the last free one taken: a stalled client must not leave none
                    }
                    self.answer(request);
                    // free again, unless enough are: then it leaves (decided in one step, so
                    // that a worker counted free is one)
                    let again = |n: usize| (n < MIN_WORKERS).then_some(n + 1);
                    if self.free.fetch_update(Relaxed, Relaxed, again).is_err() {
                        self.workers.fetch_sub(1, Relaxed);
                        return;
                    }
                }
                Ok(None) if self.retired.load(Relaxed) && lock(&self.last).elapsed() > quiet => break,
                Ok(None) => {}
                // an accept that timed out is routine (item 2); anything else is worth a line
                Err(e) => self.retire((e.kind() != io::ErrorKind::WouldBlock).then(|| e.to_string())),
            }
        }
        self.leave();
    }

    /// Answers a request, unless its connection has had more than PIPELINED under way for
    /// PIPELINED_FOR: then the connection is closed, so that the answers waiting on it fail
    /// at once (item 9).
    fn answer(&self, request: Request) {
        let conn = request.remote_addr().copied();
        let depth = *lock(&self.under_way).entry(conn).and_modify(|n| *n += 1).or_insert(1);
        // looked at again only while it is too deep: the common request locks twice, as before
        let (mut piled_up, since) = (depth > PIPELINED, Instant::now());
        while piled_up && since.elapsed() < PIPELINED_FOR {
            std::thread::sleep(Duration::from_millis(1));
            piled_up = lock(&self.under_way).get(&conn).is_some_and(|&n| n > PIPELINED);
        }
        if piled_up {
            shut(conn, Shutdown::Both);
        }
        let refused =
            piled_up.then(|| (429, format!("over {PIPELINED} requests under way on one connection")));
        // a bug in one answer costs that answer (the hook prints it), not the worker
        ANSWERING.fetch_add(1, AcqRel);
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle(&self.node, request, refused)));
        ANSWERING.fetch_sub(1, AcqRel); // once its log line is kept, or it panicked: see `end_on`
        let mut under_way = lock(&self.under_way);
        if let Some(n) = under_way.remove(&conn).filter(|&n| n > 1) {
            under_way.insert(conn, n - 1);
        }
    }

    /// Every POOL_TICK: nudges tiny_http's pool, watches the accept loop, and every second
    /// gives free memory back. Ends once the server is retired: its workers leave by themselves.
    fn keep(self: Arc<Self>) {
        let idle_nudge = (self.node.caller.settings.timeout / 2).min(Duration::from_secs(1));
        let nudge_every = (idle_nudge.as_millis() / POOL_TICK.as_millis()).max(1) as u64;
        let mut queued = Duration::ZERO;
        for tick in 1u64.. {
            std::thread::sleep(POOL_TICK);
            if self.retired.load(Relaxed) {
                return;
            }
            queued = if listen_queue(&self.listener) > 0 { queued + POOL_TICK } else { Duration::ZERO };
            if queued >= ACCEPT_STALL {
                self.retire(Some("connections were left waiting".into()));
            }
            let held = self.free.load(Relaxed) < self.workers.load(Relaxed);
            let busy = held || lock(&self.last).elapsed() < Duration::from_secs(1);
            if queued.is_zero() && (busy || tick % nudge_every == 0) {
                // one after another, until one is taken up at once
                (0..NUDGES).any(|_| nudge(&self.listener));
            }
            if tick % 50 == 0 {
                // SAFETY: malloc_trim only releases free memory of the C allocator.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }

    /// Marks this server retired (its accept loop has ended), says `why` if given, and serves
    /// on from a new one.
    fn retire(&self, why: Option<String>) {
        if self.retired.swap(true, Relaxed) {
            return;
        }
        if let Some(why) = why {
            self.node.note(error_line(format_args!("stopped accepting connections ({why}); serving again")));
        }
        let (node, listener) = (self.node.clone(), self.listener.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(POOL_TICK * 5);
                // a few descriptors free, or the new accept loop fails again at once
                let free =
                    (0..SPARE_FDS).map(|_| listener.try_clone()).collect::<io::Result<Vec<_>>>().is_ok();
                if free && Pool::start(&node, listener.clone()).is_ok() {
                    return;
                }
            }
        });
    }
}

/// Connects to this node and half-closes; true if tiny_http took the connection up (and
/// closed it) within POOL_TICK, or none could be made; false if it sits queued behind
/// others (item 4).
fn nudge(listener: &TcpListener) -> bool {
    let connected = listener.local_addr().and_then(|addr| TcpStream::connect_timeout(&addr, POOL_TICK));
    let Ok(mut stream) = connected else { return true };
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(POOL_TICK));
    matches!(stream.read(&mut [0u8; 1]), Ok(0))
}

/// Connections waiting in the listen queue, not yet accepted (item 6): on a listening
/// socket, Linux reports the accept queue's length in `tcpi_unacked`.
fn listen_queue(listener: &TcpListener) -> u32 {
    let fd = listener.as_raw_fd();
    // SAFETY: the kernel fills at most `len` bytes of a tcp_info for a valid socket.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len);
        if rc == 0 { info.tcpi_unacked } else { 0 }
    }
}

/// Sends an answer held in memory. When a request's body was left unread, tiny_http drains
/// the rest into one buffer of the declared size once the request is dropped (item 5): the
/// connection's reading side is shut first, so that drain ends at once, and drains run one
/// at a time: 200 at once of 32 TiB each ran out of address space, and the node aborted. A
/// size past MAPPABLE cannot be mapped even lazily, and dropping would abort: that request is
/// kept, its connection answered and closed (its tiny_http thread then waits for good).
fn send(request: Request, response: Response<Cursor<Vec<u8>>>) -> io::Result<()> {
    let Some(declared) = request.body_length().filter(|&n| n as u64 > MAX_REQUEST_BYTES) else {
        return request.respond(response);
    };
    let peer = request.remote_addr().copied();
    if declared as u64 <= MAPPABLE {
        static DRAINING: Mutex<()> = Mutex::new(());
        shut(peer, Shutdown::Read);
        let _one = lock(&DRAINING);
        return request.respond(response);
    }
    std::mem::forget(request.upgrade("close", response));
    for socket in sockets_to(peer) {
        // SAFETY: the request holding this descriptor was forgotten and is never used again.
        unsafe { libc::close(socket.as_raw_fd()) };
    }
    Ok(())
}

/// Shuts this process's connection with `peer` for reading, writing or both.
fn shut(peer: Option<SocketAddr>, how: Shutdown) {
    sockets_to(peer).iter().for_each(|socket| drop(socket.shutdown(how)));
}

/// This process's descriptors of its connection with `peer` (tiny_http holds two), found
/// through /proc and borrowed, never closed on drop.
fn sockets_to(peer: Option<SocketAddr>) -> Vec<ManuallyDrop<TcpStream>> {
    let fds = fs::read_dir("/proc/self/fd").into_iter().flatten().flatten();
    let fds = fds.filter_map(|fd| fd.file_name().to_str()?.parse().ok());
    // SAFETY: each descriptor is only borrowed to ask for its peer (a non-socket just fails),
    // and ManuallyDrop never closes it.
    let sockets = fds.map(|fd| ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) }));
    sockets.filter(|socket| peer.is_some() && socket.peer_addr().ok() == peer).collect()
}

/// Streams a file's content as an XML-RPC answer of exactly the length its survey gave, with
/// its own HTTP head and writes of up to SEND_BUFFER: a small file's whole answer is one write (item 7).
fn send_content(request: Request, file: File, plan: Survey) -> io::Result<()> {
    let (head, tail) = content_frame(plan.text);
    let len = head.len() as u64 + plan.encoded + tail.len() as u64;
    let (version, peer) = (request.http_version(), request.remote_addr().copied());
    let http = format!("HTTP/{version} 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {len}\r\n\r\n");
    // A write sets the modification time: rewritten in place at its size, a file keeps every
    // length, and only that time tells. A rename over it, its removal or a chmod (which set the
    // change time) leave what was opened whole, which is sent, as the original would send it.
    let stamp = |file: &File| file.metadata().map(|meta| (meta.len(), meta.mtime(), meta.mtime_nsec()));
    let before = stamp(&file)?;
    let mut out =
        BufWriter::with_capacity(buffer_for(http.len() as u64 + len, SEND_BUFFER), request.into_writer());
    write!(out, "{http}{head}")?;
    let encoded = encode(&file, plan, &mut out)
        .and_then(|()| if stamp(&file)? == before { Ok(()) } else { Err(changed_midway()) });
    if encoded.is_err() {
        // The head promised `len` bytes, and tiny_http keeps the connection open: the client
        // would wait for the rest. Closed, the answer is cut short, and the client fails at once.
        shut(peer, Shutdown::Both);
        return encoded;
    }
    out.write_all(tail.as_bytes())?;
    out.flush()
}

/// Runs `work` on every item with at most `workers` threads; results keep item order.
/// Workers start one by one, each when the last finished its first item or after
/// WORKER_STAGGER, since connections opened in a burst can stall in tiny_http (its pool race).
fn parallel<T: Sync, R: Send>(items: &[T], workers: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let (next, results_ref, work) = (&next, &results, &work);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            let (item_done, first_done) = mpsc::channel();
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(item) = items.get(i) else { break };
                    *lock(&results_ref[i]) = Some(work(item));
                    let _ = item_done.send(());
                }
            });
            let _ = first_done.recv_timeout(WORKER_STAGGER);
        }
    });
    // every item has its result: a panic in `work` would have gone on through the scope
    results.into_iter().flat_map(|r| r.into_inner().unwrap_or_else(PoisonError::into_inner)).collect()
}

/// The global allocator: the system's, but blocks of HUGE_BLOCK or more are mapped with
/// MAP_NORESERVE, lazily and unaccounted, so an unread body's drain cannot abort the node (item 5).
struct Allocator;

/// The allocator every allocation of this program goes through.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Whether `Allocator` maps a block of this layout itself.
fn huge(layout: Layout) -> bool {
    layout.size() >= HUGE_BLOCK && layout.align() <= 4096
}

// SAFETY: each block is valid for its layout until freed, and goes back to where it came
// from: `huge` routes a layout the same way on the way in and on the way out. (realloc is
// the trait's own, alloc-copy-free: measured, the benchmark shows no difference.)
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !huge(layout) {
            return unsafe { System.alloc(layout) };
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let block = unsafe { libc::mmap(std::ptr::null_mut(), layout.size(), prot, flags, -1, 0) };
        if block == libc::MAP_FAILED { std::ptr::null_mut() } else { block.cast() }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // a fresh mapping reads as zeros
        if huge(layout) { unsafe { self.alloc(layout) } } else { unsafe { System.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if huge(layout) {
            unsafe { libc::munmap(block.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(block, layout) }
        }
    }
}

// ================================================================ join

/// How long a starting node waits for its join before it says it is listening.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// Introduces this node to every node reachable from its peers, as the original's walk
/// over the growing list did, but in waves of parallel calls, each peer tried once. The
/// peers a person gave are settled first (see `settle`).
fn join(node: &Node, given: &[String]) {
    let mine = |url: &str| url == node.url || lock(&node.peers).own.contains(url);
    let given: Vec<String> = given.iter().filter(|url| !mine(url)).cloned().collect();
    let settled = parallel(&given, CLIENT_WORKERS, |url| settle(node, url));
    // a peer given that did not answer has had its warning: the walk does not try it again
    let mut tried: HashSet<String> =
        given.iter().zip(settled).filter(|(_, ok)| !ok).map(|(u, _)| u.clone()).collect();
    tried.insert(node.url.clone());
    loop {
        let wave: Vec<String> =
            lock(&node.peers).list.iter().filter(|url| tried.insert(url.to_string())).cloned().collect();
        if wave.is_empty() {
            return;
        }
        parallel(&wave, CLIENT_WORKERS, |url| introduce(node, url));
    }
}

/// Offers a peer a person gave only this node, by any spelling of its address: one given
/// as `localhost` for a node started as 127.0.0.1 is replaced by the URL it goes by, before
/// any list holding it goes out. True if the peer answered.
fn settle(node: &Node, url: &str) -> bool {
    let me = Value::Array(vec![Value::from(node.url.as_str())]);
    // one that answers, but takes the password under no spelling, is a node of another
    // network (or of a URL nobody gave): left out rather than handed on
    let answered = node.caller.call_by_any_name(url, 0, me).and_then(|answered| {
        answered.map_err(|why| {
            lock(&node.peers).remove(url);
            anyhow!("{why}; left out of the peer list")
        })
    });
    merge_answer(node, url, answered)
}

/// Sends our peer list to `url` and merges the list it answers; warns if that fails.
fn introduce(node: &Node, url: &str) {
    let offer = lock(&node.peers).to_value();
    merge_answer(node, url, node.caller.call(url, 0, offer).map(|answer| (url.to_string(), answer)));
}

/// Merges the peer list that the peer called as `url` answered by the URL `by`, which
/// replaces `url` if it differs, or warns that the call failed; true if it answered.
fn merge_answer(node: &Node, url: &str, answered: Result<(String, Value)>) -> bool {
    let answered = answered.and_then(|(by, answer)| Ok((strings(answer, &by)?, by)));
    let warn = |e: &anyhow::Error| node.note(error_line(format_args!("warning: cannot join: {e:#}")));
    let Ok((urls, by)) = answered.inspect_err(warn) else { return false };
    if by != url {
        node.note(error_line(format_args!("note: the peer {url} goes by {by}; using that")));
    }
    let mut peers = lock(&node.peers);
    peers.merge(urls.iter().map(String::as_str));
    if by != url {
        peers.remove(url);
        peers.merge([by.as_str()]);
    }
    true
}

// ================================================================ client

/// Largest non-content answer (peer list, listing, fault) a client reads into memory.
const MAX_ANSWER_BYTES: u64 = 16 << 20;
/// A non-content answer must arrive whole within this many network timeouts.
const ANSWER_DEADLINE_TIMEOUTS: u32 = 6;
/// Peers a client lists, and files it downloads, at once.
const CLIENT_WORKERS: usize = 8;
/// Files a client downloads from any one node at once: a Python node answers one request at a
/// time and queues 5 connections, and a connection past those waits 1 s for the kernel to
/// retry it (measured: 200 files from one took 1.04 s with 8 at once, 0.06 to 0.08 s with 4).
const NODE_WORKERS: usize = 4;
/// Calls in a row a node gives no answer to before a client asks it for no more files: a
/// Python node hung (on a FIFO in its folder, say) would otherwise cost a timeout per 4 files.
const MOST_SILENCES: usize = 2;
/// Bytes a client writes to a file at once.
const WRITE_BUFFER: usize = 256 * 1024;
/// Downloads at least this large get a line of their own in the progress display.
const SHOWN_SIZE: u64 = 1 << 20;
/// Names refused that a client shows one by one for each node; the rest are counted.
const REFUSED_SHOWN: usize = 5;

/// XML-RPC calls to any node over one keep-alive HTTP agent.
#[derive(Clone)]
struct Caller {
    /// The HTTP agent: it keeps idle connections for the next call.
    agent: ureq::Agent,
    /// The network's password.
    password: Vec<u8>,
    /// The timeouts and the speed floor.
    settings: Settings,
    /// Whole-call limit on answers read into memory: a peer trickling a byte at a time
    /// beats any idle timeout.
    deadline: Duration,
}

/// A call the node gave no answer to, or not all of it, in time, in a person's words: counted
/// apart from the nodes that answered with an error. An anyhow message (`anyhow::Error::msg`),
/// which `anyhow::Error::is` tells as it tells an error type.
#[derive(Debug)]
struct NoAnswer {
    /// What happened, in a person's words.
    why: String,
    /// Whether an answer came in part, then broke off: the node is there.
    broke_off: bool,
}

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl Caller {
    /// An agent with the network timeouts, no proxy (nodes are addressed directly), no
    /// redirects (a 3xx is an error naming the node), and an idle connection kept per worker.
    fn new(password: &str, settings: Settings) -> Self {
        let timeout = Some(settings.timeout);
        let config = ureq::Agent::config_builder()
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(timeout)
            .timeout_per_read(timeout)
            .timeout_per_write(timeout)
            // an answer's head must come in time: the speed floor counts only its body
            .timeout_recv_response(Some(settings.speed_time + settings.timeout))
            .max_idle_connections_per_host(CLIENT_WORKERS)
            .build();
        Caller {
            agent: ureq::Agent::new_with_config(config),
            password: password.as_bytes().to_vec(),
            settings,
            deadline: settings.timeout * ANSWER_DEADLINE_TIMEOUTS,
        }
    }

    /// Posts an XML-RPC body to a node; the body of its answer, which must be a 200. With
    /// `whole`, the answer must arrive within the deadline.
    fn send(&self, url: &str, body: &[u8], whole: bool) -> Result<ureq::Body> {
        let post = self.agent.post(endpoint(url)).config().timeout_global(whole.then_some(self.deadline));
        let answer =
            post.build().header("Content-Type", "text/xml").send(body).map_err(|e| self.plain(url, e))?;
        match answer.status().as_u16() {
            200 => Ok(answer.into_body()),
            code @ 300..400 => bail!("node {url} answered HTTP {code}, a redirect, which is not followed"),
            code => bail!("node {url} answered HTTP {code}"),
        }
    }

    /// The whole answer of `url` to an XML-RPC `body` (Latin-1 turned into UTF-8): at most
    /// MAX_ANSWER_BYTES, within the deadline.
    fn answer(&self, url: &str, body: &[u8]) -> Result<Vec<u8>> {
        let read = self.send(url, body, true)?.into_with_config().limit(MAX_ANSWER_BYTES).read_to_vec();
        Ok(to_utf8(read.map_err(|e| self.plain(url, e))?))
    }

    /// A failed call to `url`, or read or write of its answer, in a person's words; a
    /// `NoAnswer` when the node gave none, or not all of it, in time. (ureq
    /// turns an I/O error back into the ureq error it wraps, if any, else into `Io`.)
    fn plain(&self, url: &str, e: impl Into<ureq::Error>) -> anyhow::Error {
        use io::ErrorKind::*;
        let secs = self.settings.timeout.as_secs_f64();
        let none = |why: String| anyhow::Error::msg(NoAnswer { why, broke_off: false });
        let unreachable = |why: String| none(format!("node {url} is unreachable ({})", why.to_lowercase()));
        match e.into() {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
            | ureq::Error::ConnectionFailed => unreachable(format!("no connection within {secs} s")),
            // the whole answer, or its head, did not come in time, though it may have been trickling
            ureq::Error::Timeout(ureq::Timeout::Global | ureq::Timeout::RecvResponse) => {
                none(format!("node {url} did not answer in time"))
            }
            ureq::Error::Timeout(_) => none(format!("no data from {url} for {secs} s")),
            ureq::Error::HostNotFound => unreachable("unknown host".into()),
            ureq::Error::StatusCode(code) => anyhow!("node {url} answered HTTP {code}"),
            ureq::Error::BodyExceedsLimit(n) => anyhow!("node {url} sent an answer of over {n} bytes"),
            ureq::Error::Io(e) => match e.kind() {
                ConnectionRefused => unreachable("connection refused".into()),
                HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable => {
                    unreachable(words(&e))
                }
                // std reports a failed name lookup with no kind of its own
                _ if e.to_string().starts_with("failed to lookup address") => unreachable(words(&e)),
                TimedOut | WouldBlock => none(format!("no data from {url} for {secs} s")),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                    anyhow::Error::msg(NoAnswer {
                        why: format!("node {url} broke off its answer"),
                        broke_off: true,
                    })
                }
                StorageFull | FileTooLarge | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied => {
                    anyhow!("cannot write it here: {}", words(&e).to_lowercase())
                }
                _ => anyhow!("node {url}: {}", words(&e)),
            },
            e => anyhow!("node {url}: {e}"),
        }
    }

    /// Calls `f(token, mode, arg)` on `url` and parses the whole answer.
    fn call(&self, url: &str, mode: i32, arg: Value) -> Result<Value> {
        parse(url, &self.answer(url, &call_xml(&token(&self.password, node_base(url)), mode, arg))?)
    }

    /// The peer list of the node a person named, each peer once, cut at MAX_PEERS.
    fn entry_peers(&self, url: &str, report: &Report) -> Result<Vec<String>> {
        let (by, answer) =
            self.call_by_any_name(url, 0, Value::Array(vec![]))?.map_err(anyhow::Error::msg)?;
        if by != url && !report.quiet {
            report.line(true, error_line(format!("note: the node at {url} goes by {by}; using that")));
        }
        let mut peers = strings(answer, &by)?;
        let mut seen = HashSet::new();
        peers.retain(|peer| seen.insert(peer.clone())); // a peer listed twice is visited once
        if peers.len() > MAX_PEERS {
            let warning = format!("warning: {by} listed {} peers; using the first {MAX_PEERS}", peers.len());
            report.line(true, error_line(warning));
            peers.truncate(MAX_PEERS);
        }
        Ok(peers)
    }

    /// Calls `f(token, mode, arg)` on a node: the URL it answered by, and its answer, or (the
    /// inner error) why the node refused the password under every spelling tried. Its token
    /// is taken over `http://HOST:PORT` and, if the node refuses it, over the other spellings of
    /// that address (a node started as `127.0.0.1` refuses `localhost`).
    fn call_by_any_name(&self, url: &str, mode: i32, arg: Value) -> Result<Result<(String, Value), String>> {
        let answer = self.call(url, mode, arg.clone())?;
        if answer != Value::Bool(false) {
            return Ok(Ok((url.to_string(), answer)));
        }
        let others = spellings(node_base(url));
        for other in &others {
            if let Ok(answer) = self.call(other, mode, arg.clone())
                && answer != Value::Bool(false)
            {
                return Ok(Ok((other.clone(), answer)));
            }
        }
        let tried =
            if others.is_empty() { String::new() } else { format!(" (also tried {})", others.join(", ")) };
        Ok(Err(format!(
            "wrong password for {}{tried}: the node refused its token, which is bound to the password \
             and to the URL the node was started as",
            node_base(url)
        )))
    }

    /// The names a peer lists for `pattern` (its answer `[[names]]`), and the URL its node goes
    /// by: a list may hold another spelling of it (one given to a node while it was down).
    fn listing(&self, url: &str, pattern: &str) -> Result<(String, Vec<String>)> {
        if !valid_peer_url(url) {
            bail!("the peer list holds {:?}, which is not a node URL", cut(url, 100));
        }
        let answer = self.call_by_any_name(url, 1, Value::from(pattern))?;
        let (by, answer) = answer.map_err(|_| anyhow!("node {url} refused the password"))?;
        match answer {
            Value::Array(mut outer) if outer.len() == 1 => Ok((by.clone(), strings(outer.remove(0), &by)?)),
            other => Err(unexpected(&other, &by, "a listing [[names]]")),
        }
    }

    /// Downloads `name` from `url` into a new unnamed file, streaming the common case, and
    /// gives it its name: its size, or `None` if that name exists by now.
    fn download(&self, url: &str, name: &str, report: &Report) -> Result<Option<u64>> {
        let mut part = Part::create().map_err(|e| anyhow!("cannot create a file here: {}", words(&e)))?;
        let request = call_xml(&token(&self.password, node_base(url)), 2, Value::from(name));
        let answer = self.send(url, &request, false)?;
        let (bar, answer) = (report.bar(name, answer.content_length()), answer.into_reader());
        let mut meter = Meter { answer, report, bar, settings: self.settings, window: (Instant::now(), 0) };
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, &mut part.file);
        let streamed = decode_content(&mut meter, &mut out).and_then(|n| out.flush().map(|()| n));
        drop(out);
        if let Some(size) = streamed.map_err(|e| self.plain(url, e))? {
            return Ok(part.publish(name)?.then_some(size));
        }
        // Not a plain string or base64 answer in UTF-8: ask again for the whole of it (the first
        // closed, as a node serving one request at a time is still writing it). In UTF-8 now,
        // the streaming reader takes it; `parse` reads the rest (CDATA, comments, entities).
        drop(meter);
        part.file.set_len(0).and_then(|()| part.file.rewind())?;
        let answer = self.answer(url, &request)?;
        let mut data = Vec::new();
        if decode_content(&answer[..], &mut data).map_err(|e| self.plain(url, e))?.is_none() {
            data = match parse(url, &answer)? {
                Value::String(text) => text.into_bytes(),
                Value::Base64(bytes) => bytes,
                other => return Err(unexpected(&other, url, "the file")),
            };
        }
        part.file.write_all(&data).map_err(|e| self.plain(url, e))?;
        Ok(part.publish(name)?.then_some(data.len() as u64))
    }
}

/// Parses a whole answer of `url` as a node parses a call; a fault is an error.
fn parse(url: &str, answer: &[u8]) -> Result<Value> {
    let not_rpc = |why: String| anyhow!("node {url} answered something that is not XML-RPC ({why})");
    let (root, mut values) = read_xml(answer, MAX_ANSWER_ELEMENTS).map_err(not_rpc)?;
    match (&*root, values.as_mut_slice()) {
        // <params> stands for the list of its one <param>'s value, a <fault> for its struct
        ("methodResponse", [Value::Array(params)]) if params.len() == 1 => Ok(params.remove(0)),
        ("methodResponse", [Value::Struct(fault)]) => match fault.get("faultString") {
            Some(Value::String(why)) => bail!("node {url} answered a fault: {}", cut(why, MAX_ECHO)),
            _ => Err(not_rpc("malformed <fault>".into())),
        },
        _ => Err(not_rpc("not one value or fault in a <methodResponse>".into())),
    }
}

/// A node's URL as its token knows it: `http://HOST:PORT`, without a path a person typed.
fn node_base(url: &str) -> &str {
    let Some(rest) = url.strip_prefix("http://") else { return url };
    &url[.."http://".len() + rest.find(['/', '?', '#']).unwrap_or(rest.len())]
}

/// Where calls to a node go: the path its URL names, else `/RPC2` as Python's ServerProxy
/// does; a query stays, a fragment does not.
fn endpoint(url: &str) -> String {
    let base = node_base(url);
    let rest = url[base.len()..].split('#').next().unwrap_or_default();
    if rest.starts_with('/') { format!("{base}{rest}") } else { format!("{base}/RPC2{rest}") }
}

/// The URL of a node started on `host` and `port`: an IPv6 address goes in brackets, `::1`
/// is `http://[::1]:PORT`.
fn node_url(host: &str, port: u16) -> String {
    let bare_ipv6 = host.contains(':') && !host.starts_with('[');
    if bare_ipv6 { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") }
}

/// The HOST and PORT of `http://HOST:PORT`, as written.
fn host_and_port(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("http://")?.rsplit_once(':')
}

/// Other spellings of a node URL: the loopback names for a loopback host, else the host's
/// addresses.
fn spellings(base: &str) -> Vec<String> {
    let Some((host, port)) = host_and_port(base) else { return vec![] };
    // the port as a number: `:080` is port 80, and a node started on it goes by `:80`
    let Ok(port) = port.parse::<u16>() else { return vec![] };
    let loopback = ["127.0.0.1", "localhost", "[::1]"];
    let hosts: Vec<String> = if loopback.contains(&host) || host.starts_with("127.") {
        loopback.map(String::from).to_vec()
    } else {
        let addrs = (host.trim_matches(['[', ']']), port).to_socket_addrs();
        let ip = |a: SocketAddr| if a.is_ipv6() { format!("[{}]", a.ip()) } else { a.ip().to_string() };
        addrs.map(|addrs| addrs.map(ip).collect()).unwrap_or_default()
    };
    let mut urls: Vec<String> =
        hosts.iter().map(|h| format!("http://{h}:{port}")).filter(|u| u != base).collect();
    urls.dedup();
    urls
}

/// The strings of an answer that must be a list of strings, taken out of it: a listing can
/// hold a million names, and copies would double what it costs.
fn strings(answer: Value, url: &str) -> Result<Vec<String>> {
    let Value::Array(items) = answer else { return Err(unexpected(&answer, url, "a list")) };
    let string = |item| if let Value::String(s) = item { Some(s) } else { None };
    let strings: Option<Vec<String>> = items.into_iter().map(string).collect();
    strings.ok_or_else(|| anyhow!("node {url} answered a list holding non-strings"))
}

/// The error for an answer of the wrong kind; `False` means the node refused the password.
fn unexpected(answer: &Value, url: &str, wanted: &str) -> anyhow::Error {
    let kind = match answer {
        Value::Bool(false) => return anyhow!("node {url} refused the password"),
        Value::Int(_) | Value::Int64(_) => "an integer",
        Value::Bool(_) => "a boolean",
        Value::String(_) => "a string",
        Value::Double(_) => "a double",
        Value::DateTime(_) => "a date",
        Value::Base64(_) => "binary data",
        Value::Struct(_) => "a struct",
        Value::Array(_) => "a list",
        Value::Nil => "nil",
    };
    anyhow!("node {url} answered {kind} instead of {wanted}")
}

/// A download's answer as it arrives: counted for the progress display, and abandoned when
/// it runs under the speed floor for a whole window, or when a person interrupts it.
struct Meter<'a, R> {
    /// The answer's body.
    answer: R,
    /// The run's report, for the live status.
    report: &'a Report,
    /// The download's own progress line, for a large one on a terminal.
    bar: Option<ProgressBar>,
    /// The speed floor and its window.
    settings: Settings,
    /// When the current window began, and the bytes that came in it.
    window: (Instant, u64),
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.report.interrupted() {
            return Err(io::Error::other("interrupted"));
        }
        let n = self.answer.read(buf)?;
        std::iter::once(&self.report.totals).chain(&self.bar).for_each(|bar| bar.inc(n as u64));
        self.window.1 += n as u64;
        let (secs, limit) = (self.window.0.elapsed().as_secs_f64(), self.settings.speed_limit);
        let window = self.settings.speed_time.as_secs_f64(); // as set: 1.5 is not "2 s"
        if secs >= window {
            if (self.window.1 as f64) < limit * secs {
                return Err(io::Error::other(format!("it sent under {limit} bytes/s for {window} s")));
            }
            self.window = (Instant::now(), 0);
        }
        Ok(n)
    }
}

impl<R> Drop for Meter<'_, R> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            self.report.multi.remove(bar);
        }
    }
}

/// What a client run did, and its live status on a terminal.
struct Report {
    /// Set when Ctrl-C interrupted the run (in the shell): it stops at its next read, unheard.
    interrupted: AtomicBool,
    /// What happened so far.
    counts: Mutex<Counts>,
    /// When the run began.
    started: Instant,
    /// Print only errors.
    quiet: bool,
    /// The live status: drawn on a terminal, else (and once interrupted) hidden.
    multi: MultiProgress,
    /// Its line of totals.
    totals: ProgressBar,
}

/// A client run's counts.
#[derive(Default)]
struct Counts {
    /// Files fetched.
    fetched: usize,
    /// Files already here.
    skipped: usize,
    /// Files that failed.
    failed: usize,
    /// Files planned.
    to_fetch: usize,
    /// Nodes that did not answer.
    unreachable: usize,
    /// Nodes that answered a listing with an error (a fault, `False`, an HTTP error).
    erring: usize,
    /// Bytes of the files fetched.
    bytes: u64,
}

/// The live status of the latest client run on a terminal: a signal that ends the program
/// clears it.
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Standard error as the live status draws on it, each draw ended with a carriage return.
/// indicatif pads every status line to the last column and lets the terminal wrap it, which
/// leaves the cursor waiting there to wrap: the `^C` a terminal echoes would then start a
/// new line under the status, from which it could not be cleared; back at the first column,
/// the echo only overwrites the status.
#[derive(Debug)]
struct Stderr(console::Term);

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        self.0.size().1
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, line: &str) -> io::Result<()> {
        self.0.write_line(line)
    }
    fn write_str(&self, text: &str) -> io::Result<()> {
        self.0.write_str(text)
    }
    fn clear_line(&self) -> io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> io::Result<()> {
        self.0.write_str("\r")?;
        self.0.flush()
    }
}

/// A progress style from a template known to be valid.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template")
}

impl Report {
    /// A report, with a live status shown if `live`, not quiet, and stdout and stderr are a terminal.
    fn new(settings: &Settings, live: bool) -> Report {
        // a terminal that cannot move its cursor (Emacs's shell) would show the redraws as garbage,
        // and lines that reach it through a pipe (`| tee`) land wherever a redraw left the cursor
        let dumb = matches!(std::env::var("TERM").as_deref(), Ok("dumb" | "emacs"));
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        if live && !settings.quiet && io::stderr().is_terminal() && io::stdout().is_terminal() && !dumb {
            let stderr = Stderr(console::Term::buffered_stderr());
            multi.set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(stderr), 5));
            *lock(&LIVE) = Some(multi.clone());
        }
        let totals = style("{prefix} {binary_bytes} received at {binary_bytes_per_sec}");
        let totals = multi.add(ProgressBar::no_length().with_style(totals));
        let (started, quiet) = (Instant::now(), settings.quiet);
        Report { interrupted: AtomicBool::default(), counts: Mutex::default(), started, quiet, multi, totals }
    }

    /// Whether Ctrl-C interrupted the run.
    fn interrupted(&self) -> bool {
        self.interrupted.load(Relaxed)
    }

    /// Interrupts the run: clears its live status for good, and silences it.
    fn interrupt(&self) -> anyhow::Error {
        self.interrupted.store(true, Relaxed);
        let _ = self.multi.clear();
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        anyhow!("interrupted")
    }

    /// Prints a whole line above the live status: on stdout, or with `err` on stderr.
    fn line(&self, err: bool, text: String) {
        if !self.interrupted() {
            // (indicatif runs it even when the status is hidden)
            self.multi.suspend(|| if err { say_err(&text) } else { say(&text) });
        }
    }

    /// Counts what `change` does to the counts, and shows the files done of those to fetch.
    fn count(&self, change: impl FnOnce(&mut Counts)) {
        let mut counts = lock(&self.counts);
        change(&mut counts);
        let (done, to_fetch) = (counts.fetched + counts.failed, plural(counts.to_fetch, "file"));
        self.totals.set_prefix(format!("{done} of {to_fetch},"));
    }

    /// A file arrived.
    fn fetched(&self, name: &str, size: u64, url: &str) {
        self.count(|c| (c.fetched, c.bytes) = (c.fetched + 1, c.bytes + size));
        if !self.quiet {
            self.line(false, format!("fetched {} ({size} bytes) from {url}", quoted(name)));
        }
    }

    /// Something failed, which `count` counts: a file, or a whole node.
    fn failed(&self, count: impl FnOnce(&mut Counts), why: String) {
        self.count(count);
        self.line(true, error_line(why));
    }

    /// A download's own line in the live status, when the download is large and the status shown.
    fn bar(&self, name: &str, size: Option<u64>) -> Option<ProgressBar> {
        let size = size.filter(|&size| size >= SHOWN_SIZE && !self.multi.is_hidden())?;
        let bar = ProgressBar::new(size).with_style(style("  {wide_msg} {percent:>3}%"));
        Some(self.multi.add(bar.with_message(quoted(name))))
    }

    /// Clears the live status and prints the summary line `summary` makes of the counts;
    /// true if nothing failed.
    fn finish(&self, summary: impl FnOnce(&Counts) -> String) -> bool {
        let _ = self.multi.clear();
        let c = lock(&self.counts);
        if !self.quiet {
            self.line(false, summary(&c));
        }
        c.failed + c.unreachable + c.erring == 0
    }
}

/// The names offered, each with the peers offering it (indices into the peer list), in
/// peer order.
type Offers = BTreeMap<String, Vec<usize>>;
/// One file to fetch: an entry of the offers.
type Job = (String, Vec<usize>);
/// A peer's listing: the URL its node goes by, and the names it lists.
type Listed = Result<(String, Vec<String>)>;

/// The client: every file the pattern searches, or with `list` what the network offers,
/// from every node that `url` knows; true if nothing failed.
fn client(caller: &Caller, url: &str, regex: &Regex, list: bool, report: &Report) -> Result<bool> {
    if !list {
        folder().map_err(|e| anyhow!("cannot fetch into this folder: {}", words(&e)))?;
    }
    let mut peers = caller.entry_peers(url, report)?;
    // drawn at once: a node that does not answer may keep the listings a while
    report.totals.set_prefix(format!("asking {} for names,", nodes(&peers)));
    let listings = parallel(&peers, CLIENT_WORKERS, |peer| {
        if report.interrupted() { Err(anyhow!("interrupted")) } else { caller.listing(peer, regex.as_str()) }
    });
    let offers = gather(&mut peers, listings, regex, report);
    if list {
        return Ok(show(&peers, &offers, report));
    }
    clean_stale_parts();
    // a file-size limit (`ulimit -f`) then fails a write instead of killing the client
    // mid-download (SIGXFSZ's default), so the error is reported and nothing is left
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let jobs = plan(offers, report);
    report.count(|c| c.to_fetch = jobs.len() + c.failed); // the names refused have failed already
    let load = Load { state: Mutex::new(vec![(0, 0); peers.len()]), ended: Condvar::new() };
    parallel(&jobs, CLIENT_WORKERS, |job| fetch(caller, &peers, job, &load, report));
    Ok(report.finish(|c| {
        let (f, s, e, nodes) = (c.fetched, c.skipped, c.failed, nodes(&peers));
        let dead = clause(c.unreachable, &format!(" of {nodes} unreachable"));
        let erring = clause(c.erring, &format!(" of {nodes} answered with an error"));
        let (secs, bytes) = (report.started.elapsed().as_secs_f64(), HumanBytes(c.bytes));
        format!("done: {f} fetched, {s} skipped, {e} failed{dead}{erring}; {bytes} in {secs:.2} s")
    }))
}

/// The safe names the peers offer, each with the peers offering it, in peer order; a
/// failed listing and the names refused are reported (each refused name a failed file). A
/// peer listed under another spelling of its node's URL is known by that URL from here on.
fn gather(peers: &mut [String], listings: Vec<Listed>, regex: &Regex, report: &Report) -> Offers {
    let mut offers = Offers::new();
    let listing_failed = |e: &anyhow::Error| {
        let no_answer = e.is::<NoAnswer>();
        report.failed(|c| if no_answer { c.unreachable += 1 } else { c.erring += 1 }, format!("{e:#}"));
    };
    for (p, listing) in listings.into_iter().enumerate() {
        let Ok((by, names)) = listing.inspect_err(listing_failed) else { continue };
        if by != peers[p] {
            let listed = peers.contains(&by); // then its names come from there
            let what = if listed { "listed already" } else { "using that" };
            if !report.quiet {
                report.line(true, error_line(format!("note: the peer {} goes by {by}; {what}", peers[p])));
            }
            peers[p] = by;
            if listed {
                continue;
            }
        }
        let safe = |name: &String| plain_name(name) && !is_part(name) && regex.is_match(name);
        let (names, refused): (Vec<_>, Vec<_>) = names.into_iter().partition(safe);
        refuse(&peers[p], &refused, report);
        for name in names {
            if offers.get(&name).is_none_or(|at| at.last() != Some(&p)) {
                offers.entry(name).or_default().push(p);
            }
        }
    }
    offers
}

/// Counts each name a node offered that is refused as a failed file, and names the first
/// few: a node offering a million such names gets a line more, not a million.
fn refuse(url: &str, refused: &[String], report: &Report) {
    let shown = if refused.len() > REFUSED_SHOWN + 1 { REFUSED_SHOWN } else { refused.len() };
    for name in &refused[..shown] {
        let why = match name {
            _ if !plain_name(name) => "it is not one plain file name",
            _ if is_part(name) => "it is a client's unfinished download",
            // Python reads some syntax otherwise (its `\w` matches `²`)
            _ => "the pattern, as this client reads it, does not match it",
        };
        // a hostile node's names can be megabytes
        let line =
            format!("node {url} offered the name {}, which is refused: {why}", quoted(&cut(name, 100)));
        report.failed(|c| c.failed += 1, line);
    }
    if shown < refused.len() {
        let (more, all) = (refused.len() - shown, refused.len());
        let why = format!("node {url} offered {more} more names that are refused ({all} in all)");
        report.failed(|c| c.failed += more, why);
    }
}

/// The files to fetch: each name offered that is not here yet (skipped once, however many
/// peers list it), in rounds over the first peers, so the workers spread over the nodes.
fn plan(offers: Offers, report: &Report) -> Vec<Job> {
    let (mut rounds, mut jobs) = (HashMap::<usize, usize>::new(), Vec::new());
    for (name, peers) in offers {
        if fs::symlink_metadata(&name).is_ok() {
            report.count(|c| c.skipped += 1);
            continue;
        }
        let round = rounds.entry(peers[0]).or_default();
        *round += 1;
        jobs.push((*round, peers[0], (name, peers)));
    }
    jobs.sort_by_key(|(round, first, _)| (*round, *first));
    jobs.into_iter().map(|(.., job)| job).collect()
}

/// Prints what the network offers, a line per name with the nodes offering it, then a
/// summary; true if every node answered.
fn show(peers: &[String], offers: &Offers, report: &Report) -> bool {
    let quoted: Vec<String> = offers.keys().map(|name| quoted(name)).collect();
    // in screen columns: a CJK character or an emoji takes two
    let width = quoted.iter().map(|q| q.width()).max().unwrap_or(0).min(40);
    for (name, at) in quoted.iter().zip(offers.values()) {
        let nodes: Vec<&str> = at.iter().map(|&p| peers[p].as_str()).collect();
        let pad = width.saturating_sub(name.width());
        report.line(false, format!("{name}{:pad$}  {}", "", nodes.join(", ")));
    }
    report.finish(|c| {
        let (dead, erring) =
            (clause(c.unreachable, " did not answer"), clause(c.erring, " answered with an error"));
        format!("{} on {}{dead}{erring}", plural(offers.len(), "name"), nodes(peers))
    })
}

/// How many nodes a peer list holds, in words: a node listed under two spellings is one.
fn nodes(peers: &[String]) -> String {
    plural(peers.iter().collect::<HashSet<_>>().len(), "node")
}

/// A clause of a summary line on `n` things that went wrong: `, 1 did not answer`; none for 0.
fn clause(n: usize, what: &str) -> String {
    if n > 0 { format!(", {n}{what}") } else { String::new() }
}

/// The downloads under way from each node of a client run, and how it answered of late.
struct Load {
    /// By peer: its downloads under way, and its downloads in a row that got no answer.
    state: Mutex<Vec<(usize, usize)>>,
    /// Notified as a download ends, so a worker waiting for its node looks again.
    ended: Condvar,
}

impl Load {
    /// Runs `download` from peer `p` once fewer than NODE_WORKERS are under way from it; fails
    /// at once if the run was interrupted meanwhile, or the node gave no answer MOST_SILENCES
    /// times in a row (then counted unreachable, once: a late answer does not bring it back).
    fn run<T>(
        &self,
        p: usize,
        url: &str,
        report: &Report,
        download: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let busy = |state: &mut Vec<(usize, usize)>| state[p].0 >= NODE_WORKERS && state[p].1 < MOST_SILENCES;
        let mut state =
            self.ended.wait_while(lock(&self.state), busy).unwrap_or_else(PoisonError::into_inner);
        if state[p].1 >= MOST_SILENCES {
            bail!("node {url} gave no answer {MOST_SILENCES} times in a row; not asked again");
        }
        if report.interrupted() {
            bail!("interrupted");
        }
        state[p].0 += 1;
        drop(state);
        // a bug in one download costs that file (the hook prints it): its place is given back
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(download)).unwrap_or_else(|_| bail!("internal error"));
        // an answer that came in part, then broke off (a file changed while sent) is an answer
        let silent =
            outcome.as_ref().err().and_then(|e| e.downcast_ref::<NoAnswer>()).is_some_and(|e| !e.broke_off);
        let mut state = lock(&self.state);
        let (under_way, silences) = &mut state[p];
        *under_way -= 1;
        if *silences < MOST_SILENCES {
            *silences = if silent { *silences + 1 } else { 0 };
            if *silences == MOST_SILENCES {
                report.count(|c| c.unreachable += 1);
            }
        }
        self.ended.notify_all();
        outcome
    }
}

/// Fetches one file from the first of its peers that delivers it.
fn fetch(caller: &Caller, peers: &[String], (name, at): &Job, load: &Load, report: &Report) {
    for &p in at {
        if report.interrupted() {
            return;
        }
        let url = &peers[p];
        match load.run(p, url, report, || caller.download(url, name, report)) {
            Ok(Some(size)) => return report.fetched(name, size, url),
            Ok(None) => return report.count(|c| c.skipped += 1),
            Err(e) if at.last() != Some(&p) => {
                let why = format!("cannot fetch {}: {e:#}; trying the next node", quoted(name));
                report.line(true, error_line(why));
            }
            Err(e) => report.failed(|c| c.failed += 1, format!("cannot fetch {}: {e:#}", quoted(name))),
        }
    }
}

// ================================================================ shell

/// The shell's commands, one line each.
const SHELL_HELP: &str = "\
ls [PATTERN]    what the network offers (everything without PATTERN)
fetch PATTERN   download every matching name not here yet into this node's folder
peers           the nodes this node knows, itself marked
log             the latest requests this node answered
help            these lines
exit, quit      stop the node (so does the end of input)";

/// Longest command line run: `fetch` and the longest pattern, with room to spare. A longer
/// line is refused, and read no further than this (a line without end would fill memory).
const MAX_COMMAND: usize = MAX_PATTERN + 64;

/// Set while the shell reads a terminal (its output may go to a file): Ctrl-C then interrupts
/// a command, never the program.
static PROMPT: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C on the shell's terminal since its last prompt.
static CTRL_C: AtomicBool = AtomicBool::new(false);

/// The textbook's interface to a serving node: commands until `exit` or the end of input,
/// with a prompt and line editing on a terminal; true if every command succeeded.
fn run_shell(node: &Node) -> Result<bool> {
    // line editing draws on stdout: with stdout in a file, plain lines are read, as from a pipe
    let terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
    let mut editor = if terminal { Some(rustyline::DefaultEditor::new()?) } else { None };
    if let Some(printer) = editor.as_mut().and_then(|editor| editor.create_external_printer().ok()) {
        *lock(&node.printer) = Some(Box::new(printer));
    }
    // Ctrl-C reaches the whole pipeline: with the output piped on (`| tee`), it ends the shell too
    let piped = fs::metadata("/proc/self/fd/1")
        .is_ok_and(|out| out.file_type().is_fifo() || out.file_type().is_socket());
    PROMPT.store(io::stdin().is_terminal() && !piped, Relaxed);
    if let Some(terminal) = editor.as_ref().and_then(|_| tcgetattr(io::stdin()).ok()) {
        let _ = TERMINAL.set(terminal.into());
    }
    let mut ok = true;
    while !OUTPUT_CLOSED.load(Relaxed)
        && let Some(text) = read_command(&mut editor)
    {
        // a text cut short at MAX_COMMAND (see `read_command`) is refused whole, as its last
        // command would run cut
        if text.len() > MAX_COMMAND && !text.ends_with('\n') {
            say_err(error_line(format_args!("a command of over {MAX_COMMAND} bytes is refused")));
            ok = false;
            continue;
        }
        // several lines pasted at the prompt come as one text: each line is a command (a lone
        // CR ends one too, as old Macs wrote lines)
        for line in text.split(['\r', '\n']) {
            let Some(done) = command(node, line) else { return Ok(ok) };
            ok &= done;
            // the person interrupted, or nobody reads the output: the rest is not run
            if CTRL_C.swap(false, Relaxed) || OUTPUT_CLOSED.load(Relaxed) {
                break;
            }
        }
    }
    Ok(ok)
}

/// Runs one command line of the shell: whether it went well, or `None` for `exit`.
fn command(node: &Node, line: &str) -> Option<bool> {
    let line = line.trim();
    let (command, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let fail = |why: String| {
        say_err(error_line(why));
        Some(false)
    };
    match (command, arg.trim()) {
        ("", _) => {}
        ("exit" | "quit", _) => return None,
        ("help", _) => say(SHELL_HELP),
        // both copied before they are printed: output can stall (Ctrl-S, a pipe nobody reads),
        // and an offer waiting on the peer list, or a worker on the log, would stall with it
        ("peers", _) => {
            let mark = |url: &String| if *url == node.url { " (this node)" } else { "" };
            let peers = lock(&node.peers).list.clone();
            peers.iter().for_each(|url| say(format_args!("{url}{}", mark(url))));
        }
        ("log", _) => {
            let log: Vec<String> = lock(&node.log).iter().flatten().cloned().collect();
            if log.is_empty() { say("no requests answered yet") } else { log.iter().for_each(say) }
        }
        ("fetch", "") => return fail("fetch takes a PATTERN ('.' fetches everything)".into()),
        ("ls" | "fetch", pattern) => return Some(look_or_fetch(node, pattern, command == "ls")),
        (other, _) => return fail(format!("unknown command {:?}; help lists the commands", cut(other, 100))),
    }
    Some(true)
}

/// The next command line: at the prompt on a terminal (Ctrl-C there gives a new prompt),
/// else the next line of input; `None` at the end of input. Standard input is locked for
/// one line at a time: on a terminal line editing does not know (TERM=dumb), it reads
/// standard input itself.
fn read_command(editor: &mut Option<rustyline::DefaultEditor>) -> Option<String> {
    let Some(editor) = editor else {
        let (mut line, mut stdin) = (Vec::new(), io::stdin().lock());
        let read = stdin.by_ref().take(MAX_COMMAND as u64 + 1).read_until(b'\n', &mut line);
        if line.len() > MAX_COMMAND && !line.ends_with(b"\n") {
            let _ = stdin.skip_until(b'\n'); // not kept: `run_shell` refuses a line this long
        }
        CTRL_C.store(false, Relaxed); // one pressed while nothing ran was for no command
        return read.ok().filter(|&n| n > 0).map(|_| String::from_utf8_lossy(&line).into_owned());
    };
    loop {
        match editor.readline("tinyp2p> ") {
            Ok(line) => {
                CTRL_C.store(false, Relaxed); // a Ctrl-C from here on is for the command typed
                let _ = editor.add_history_entry(line.as_str());
                return Some(line);
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {}
            Err(_) => return None,
        }
    }
}

/// `ls` or `fetch`: the client's run over this node's network, on a thread of its own, so
/// that Ctrl-C gives the prompt back at once, even while a node sends nothing (the run
/// then stops at its next read, unheard); true if it went well.
fn look_or_fetch(node: &Node, pattern: &str, list: bool) -> bool {
    let Ok(regex) = compile_regex(pattern).inspect_err(|why| say_err(error_line(why))) else { return false };
    let report = Arc::new(Report::new(&node.caller.settings, !list));
    let (caller, url, run) = (node.caller.clone(), node.url.clone(), report.clone());
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || done.send(client(&caller, &url, &regex, list, &run)));
    let outcome = loop {
        match outcome.recv_timeout(POOL_TICK) {
            Ok(outcome) => break outcome,
            // the run panicked (the hook has said so): nothing will come
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(anyhow!("the run stopped")),
            Err(_) if CTRL_C.load(Relaxed) => break Err(report.interrupt()),
            Err(_) => {}
        }
    };
    outcome.inspect_err(|e| say_err(error_line(format_args!("{e:#}")))).unwrap_or(false)
}

// ================================================================ files and signals

/// Longest file name: the usual file system limit.
const MAX_NAME_LEN: usize = 255;
/// Longest peer URL kept: real ones are `http://host:port`.
const MAX_URL_LEN: usize = 512;
/// Prefix of a client's temporary file where the file system has no O_TMPFILE.
const PART_PREFIX: &str = ".tinyp2p-";

/// The shell's terminal as it was before line editing: a signal that ends the program
/// restores it, or the person would be left typing blind.
static TERMINAL: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();
/// The `.part` files in use (where there is no O_TMPFILE): removed on Ctrl-C and SIGTERM.
static PARTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A lock, even if a thread panicked while holding it: every lock here guards data that
/// stays whole between statements.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `name` is one plain file name: not empty, `.` or `..`, no separators, no
/// control characters, nothing XML cannot carry.
fn plain_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| matches!(c, '/' | '\\' | '\u{FFFE}' | '\u{FFFF}') || c.is_control())
}

/// Whether `name` is a client's temporary file, which is never listed, served or fetched.
fn is_part(name: &str) -> bool {
    name.starts_with(PART_PREFIX) && name.ends_with(".part")
}

/// Whether `url` is a node's URL: `http://HOST:PORT` with a port from 1 to 65535, and a HOST
/// that is a name of ASCII letters, digits, `.`, `-` and `_`, or an IPv6 address in brackets.
/// So no path (one server could otherwise pass for any number of nodes), no user info, no
/// `%` escapes, and nothing a terminal would act on.
fn valid_peer_url(url: &str) -> bool {
    let Some((host, port)) = host_and_port(url) else { return false };
    let name = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    let ipv6 =
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse::<Ipv6Addr>().ok());
    let port_ok = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    url.len() <= MAX_URL_LEN && (name || ipv6.is_some()) && port_ok
}

/// A download in progress, in the current folder. Where the file system allows it the
/// file has no name at all (O_TMPFILE) until it is complete, so even a killed client
/// leaves nothing behind; elsewhere it is a hidden `.part` file, removed on drop, on
/// Ctrl-C and SIGTERM, and by the next client run if this one was killed outright.
struct Part {
    /// The file being written.
    file: File,
    /// Its name, where it needs one.
    path: Option<String>,
}

impl Part {
    /// A new empty file in the current folder.
    fn create() -> io::Result<Part> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(0o666); // less the umask, as Python's open() does
        match options.clone().custom_flags(libc::O_TMPFILE).open(".") {
            Ok(file) => return Ok(Part { file, path: None }),
            // no O_TMPFILE here (the file system, or an old kernel): a named file instead
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {}
            Err(e) => return Err(e),
        }
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        loop {
            let n = COUNT.fetch_add(1, Relaxed);
            let path = format!("{PART_PREFIX}{}-{}-{n}.part", host_name(), std::process::id());
            if let Some(file) = create_listed(&options, &path)? {
                return Ok(Part { file, path: Some(path) });
            }
        }
    }

    /// Gives the complete file its name unless that name exists by now (never
    /// overwrites); true if it did.
    fn publish(mut self, name: &str) -> io::Result<bool> {
        let linked = match &self.path {
            // a rename is one step; where it cannot refuse to replace (NFS), a link (of the
            // part itself, never of what a link swapped in for it points to)
            Some(path) => rename_new(path, name).or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Err(e),
                _ => fs::hard_link(path, name),
            }),
            None => link_unnamed(&self.file, name),
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // neither links nor renames that refuse to replace (vboxsf, some FUSE file systems)
            Err(_) => self.copy_to(name),
        }
        .map_err(|e| io::Error::new(e.kind(), format!("cannot give the file its name: {}", words(&e))))
    }

    /// Copies the file into a new file `name`, unless that exists; removes it on failure,
    /// and (listed as a part meanwhile) on Ctrl-C or SIGTERM. A client killed outright
    /// mid-copy leaves it partial: only where no link or safe rename is to be had.
    fn copy_to(&mut self, name: &str) -> io::Result<bool> {
        let Some(mut target) = create_listed(OpenOptions::new().write(true), name)? else { return Ok(false) };
        let copied = self.file.rewind().and_then(|()| io::copy(&mut self.file, &mut target));
        // a failed copy is gone before it is unlisted, so a signal in between finds it listed
        let copied = copied.inspect_err(|_| drop(fs::remove_file(name)));
        lock(&PARTS).retain(|part| part != name);
        copied.map(|_| true)
    }
}

/// Creates the new file `name` with `options` and lists it in PARTS, for removal on Ctrl-C
/// and SIGTERM; `None` if `name` exists.
fn create_listed(options: &OpenOptions, name: &str) -> io::Result<Option<File>> {
    let mut parts = lock(&PARTS); // held, so a signal cannot come between create and record
    let file = match options.clone().create_new(true).open(name) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        opened => opened?,
    };
    parts.push(name.to_string());
    Ok(Some(file))
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            // gone before it is forgotten, so a signal in between finds it gone or listed
            let _ = fs::remove_file(path);
            lock(&PARTS).retain(|p| p != path);
        }
    }
}

/// Links an O_TMPFILE file to `name`: the way open(2) documents, through /proc.
fn link_unnamed(file: &File, name: &str) -> io::Result<()> {
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(linkat(AT_FDCWD, from.as_str(), AT_FDCWD, name, AtFlags::AT_SYMLINK_FOLLOW)?)
}

/// Renames `from` to `to` unless `to` exists (RENAME_NOREPLACE).
fn rename_new(from: &str, to: &str) -> io::Result<()> {
    Ok(renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)?)
}

/// This machine's name: part files carry it, since on a shared file system (NFS, SMB)
/// another machine's process ids mean nothing here.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().replace(['/', '-'], "_")
}

/// Removes the `.part` files here of this machine's client runs that no longer exist
/// (killed outright, on a file system without O_TMPFILE).
fn clean_stale_parts() {
    let Ok(entries) = fs::read_dir(".") else { return };
    let mine = format!("{PART_PREFIX}{}-", host_name());
    for name in entries.flatten().filter_map(|entry| entry.file_name().into_string().ok()) {
        // PID-N, as Part::create names them
        let owner = name.strip_prefix(&mine).and_then(|rest| rest.strip_suffix(".part"));
        let pid = owner.and_then(|owner| owner.rsplit_once('-')).and_then(|(pid, _)| pid.parse::<i32>().ok());
        // kill with no signal only asks whether the process exists
        if pid.is_some_and(|pid| pid > 0 && kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)) {
            let _ = fs::remove_file(&name);
        }
    }
}

/// Takes Ctrl-C, SIGTERM, SIGHUP, and the other signals whose default ends a program (SIGQUIT,
/// SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU and the rare ones; not the real-time signals) on a
/// thread of its own: Ctrl-C during a shell's `ls` or `fetch`
/// interrupts it; otherwise unfinished `.part` files are removed, the terminal restored, and
/// the program ends (128 + the signal, as shells report it).
fn watch_signals() {
    // blocked in this thread's mask, which every thread started later inherits, so the
    // signals reach only `wait` below
    use Signal::*;
    let common = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM];
    // the rest whose default ends a program and that no fault of its own raises (`ulimit -t`
    // sends SIGXCPU); SIGXFSZ is ignored where files are written, so that a write fails instead
    let rare = [SIGPROF, SIGVTALRM, SIGIO, SIGPWR, SIGXCPU, SIGSTKFLT];
    let set = SigSet::from_iter(common.into_iter().chain(rare));
    let _ = set.thread_block();
    std::thread::spawn(move || {
        loop {
            let Ok(signal) = set.wait() else { continue };
            if signal == SIGINT && PROMPT.load(Relaxed) {
                CTRL_C.store(true, Relaxed);
            } else {
                end_on(signal as i32);
            }
        }
    });
}

/// Ends the program on a signal: unfinished `.part` files removed, the terminal restored, the
/// request log written and the live status cleared.
fn end_on(signal: i32) -> ! {
    remove_parts();
    if let Some(terminal) = TERMINAL.get() {
        // SAFETY: restores standard input's terminal to a state read from it, and turns off
        // the bracketed paste line editing turns on at the prompt.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, terminal);
            libc::write(1, c"\x1b[?2004l".as_ptr().cast(), 8);
        }
    }
    let (code, live) = (128 + signal, lock(&LIVE).take());
    // The request log's last lines written, the live status cleared, and the program ended
    // before a download can draw it again; waited for briefly only, as a terminal stopped by
    // Ctrl-S holds any write.
    let last = move || {
        // the client of an answer just sent may be what sent the signal: its line comes next
        let since = Instant::now();
        while ANSWERING.load(Acquire) > 0 && since.elapsed() < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(1));
        }
        write_log();
        live.map_or_else(|| end(code), |live| live.suspend(|| end(code)))
    };
    if std::thread::Builder::new().spawn(last).is_ok() {
        std::thread::sleep(Duration::from_millis(100));
    }
    end(code)
}

/// Ends the process at once with status `code`.
fn end(code: i32) -> ! {
    // SAFETY: _exit runs no destructors or atexit handlers; every line printed was written
    // whole already.
    unsafe { libc::_exit(code) }
}

/// Removes the `.part` files in use as the program ends, and keeps PARTS locked to the
/// end, so that no new one comes between: a run the shell interrupted may still hold one.
fn remove_parts() {
    let parts = lock(&PARTS);
    parts.iter().for_each(|path| drop(fs::remove_file(path)));
    std::mem::forget(parts);
}

/// Raises the soft limit on open descriptors to the hard one: each connection costs a node
/// two, and a client's count is what should run out, not the node's.
fn raise_fd_limit() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ================================================================ unit tests

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes a few at a time, so every chunk boundary occurs.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        rng: Rng,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.data.len() - self.pos).min(1 + self.rng.below(17));
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Content of the kinds that break naive codecs: any byte, markup, CR, multi-byte UTF-8.
        fn content(&mut self) -> Vec<u8> {
            let len = [0, 1, 7, 300, 5000, 70_000][self.below(6)];
            let pieces: [&[u8]; 12] = [
                b"a",
                b"&",
                b"<",
                b">",
                b"\r",
                b"\n",
                b"\r\n",
                b"]]>",
                "é".as_bytes(),
                "😀".as_bytes(),
                b"&amp;",
                b"\t",
            ];
            let mut out = Vec::new();
            let binary = self.below(4) == 0;
            while out.len() < len {
                if binary {
                    out.push(self.next() as u8);
                } else {
                    out.extend_from_slice(pieces[self.below(pieces.len())]);
                }
            }
            out
        }
    }

    /// What a client reads as content from a whole answer (asked for again), if it accepts it.
    fn whole_reads(answer: &[u8]) -> Option<Vec<u8>> {
        match parse("u", &to_utf8(answer.to_vec())) {
            Ok(Value::String(s)) => Some(s.into_bytes()),
            Ok(Value::Base64(b)) => Some(b),
            _ => None,
        }
    }

    /// What the streaming decoder reads from an answer handed out in small pieces.
    fn fast_reads(answer: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        let src = Trickle { data: answer.to_vec(), pos: 0, rng: Rng(rng.next() | 1) };
        let mut out = Vec::new();
        decode_content(src, &mut out).ok()?.map(|n| {
            assert_eq!(n, out.len() as u64);
            out
        })
    }

    /// The answer this node streams for `content`, built by the server's own code path.
    fn served(content: &[u8]) -> Vec<u8> {
        let plan = survey(&mut &content[..], content.len() as u64).unwrap();
        let (head, tail) = content_frame(plan.text);
        let mut answer = head.clone().into_bytes();
        encode(content, plan, &mut answer).unwrap();
        assert_eq!(answer.len() as u64, head.len() as u64 + plan.encoded);
        answer.extend_from_slice(tail.as_bytes());
        answer
    }

    mod token {
        use super::*;

        #[test]
        fn matches_every_known_value_of_the_protocol() {
            let known = [
                ("123456", "http://192.168.1.101:33330", "0b50d85b9b3e6c9cb4cf620e439e87c3"),
                ("123456", "http://192.168.1.102:33331", "79eb83e67d8ddcb5acbc7afb9e31aeac"),
                ("secret", "http://127.0.0.1:4242", "f82865a6bd1cd8622b534a343940baa3"),
                ("", "http://localhost:1", "fde7444c07a88bf6b508d10cca08dc6a"),
            ];
            for (password, url, expected) in known {
                assert_eq!(token(password.as_bytes(), url), expected);
                assert!(token_ok(password.as_bytes(), url, expected));
            }
        }

        #[test]
        fn is_refused_for_another_url_uppercase_odd_length_or_junk() {
            let good = "f82865a6bd1cd8622b534a343940baa3";
            let url = "http://127.0.0.1:4242";
            assert!(!token_ok(b"secret", "http://localhost:4242", good));
            assert!(!token_ok(b"secret", url, &good.to_uppercase()));
            assert!(!token_ok(b"secret", url, &good[..31]));
            assert!(!token_ok(b"secret", url, &good[..30]));
            assert!(!token_ok(b"secret", url, ""));
            assert!(!token_ok(b"secret", url, &format!("{}zz", &good[..30])));
            assert!(!token_ok(b"other", url, good));
        }
    }

    mod names {
        use super::*;

        #[test]
        fn a_node_s_own_spellings_are_its_socket_s_address_and_localhost_only_on_127_0_0_1_or_1() {
            let own = |addr: &str| {
                let mut own: Vec<String> = own_spellings(addr.parse().unwrap()).into_iter().collect();
                own.sort();
                own
            };
            assert_eq!(own("127.0.0.1:80"), ["http://127.0.0.1:80", "http://localhost:80"]);
            assert_eq!(own("[::1]:80"), ["http://[::1]:80", "http://localhost:80"]);
            // a Debian host name's address: `localhost` there is 127.0.0.1, another socket
            assert_eq!(own("127.0.1.1:80"), ["http://127.0.1.1:80"]);
            assert_eq!(own("0.0.0.0:80"), ["http://0.0.0.0:80"]);
        }

        #[test]
        fn plain_names_pass_and_paths_or_control_characters_do_not() {
            for ok in ["file0", "a b", "über.txt", ".hidden", "x..y", "..."] {
                assert!(plain_name(ok), "{ok:?}");
            }
            let long = "x".repeat(MAX_NAME_LEN + 1);
            for bad in [
                "",
                ".",
                "..",
                "../x",
                "/etc/passwd",
                "a/b",
                "a\\b",
                "a\nb",
                "a\tb",
                "a\0b",
                "a\u{7f}",
                "\u{FFFE}",
                &long,
            ] {
                assert!(!plain_name(bad), "{bad:?}");
            }
        }

        #[test]
        fn error_text_from_peers_stays_on_one_printable_line() {
            assert_eq!(printable("a\nb\x1b[31m\u{7f}ü"), "a\\nb\\u{1b}[31m\\u{7f}ü");
        }

        #[test]
        fn bidi_and_invisible_characters_are_shown_escaped() {
            assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
            assert_eq!(printable("a\u{200b}b\u{2066}c\u{feff}"), "a\\u{200b}b\\u{2066}c\\u{feff}");
            assert_eq!(printable("quotes \"stay\" 'as' \\ they are"), "quotes \"stay\" 'as' \\ they are");
        }

        #[test]
        fn a_combining_mark_after_a_character_is_shown_as_it_is_and_alone_escaped() {
            assert_eq!(printable("cafe\u{301}.txt"), "cafe\u{301}.txt");
            assert_eq!(printable("\u{301}x \"\u{301}"), "\\u{301}x \"\\u{301}");
            // invisible marks stay escaped, and so do a third accent and one after an escape
            assert_eq!(printable("a\u{fe00}\u{34f}\u{17b4}"), "a\\u{fe00}\\u{34f}\\u{17b4}");
            assert_eq!(printable("e\u{338}\u{338}\u{338}"), "e\u{338}\u{338}\\u{338}");
            assert_eq!(printable("\n\u{301}"), "\\n\\u{301}");
            assert_eq!(quoted("cafe\u{301} \"q\" \\ 'a'\n"), "\"cafe\u{301} \\\"q\\\" \\\\ 'a'\\n\"");
        }

        #[test]
        fn a_glob_gets_the_regex_it_means_as_a_hint() {
            assert_eq!(glob_as_regex("*.txt").as_deref(), Some("\\.txt$"));
            assert_eq!(glob_as_regex("file?.*").as_deref(), Some("^file.\\."));
            assert_eq!(glob_as_regex("*").as_deref(), Some("."));
            assert_eq!(glob_as_regex("plain"), None);
            for regex_syntax in ["(?=a)", "(?i)*x", "a+*", "[a-z]*(", "x{2}*", "\\d*?"] {
                assert_eq!(glob_as_regex(regex_syntax), None, "{regex_syntax}");
            }
            assert!(compile_regex("*.txt").unwrap_err().contains("try '\\.txt$'"));
        }

        #[test]
        fn temporary_files_are_recognised() {
            assert!(is_part(".tinyp2p-12-0.part"));
            assert!(!is_part("tinyp2p-12-0.part"));
        }

        #[test]
        fn peer_urls_must_be_plain_http_with_a_port() {
            for good in ["http://127.0.0.1:4242", "http://[::1]:1", "http://node.example:65535"] {
                assert!(valid_peer_url(good), "{good:?}");
            }
            let paths = ["http://x:1/", "http://x:1/RPC2", "http://x:1?q", "http://x:1#f"];
            let others = ["", "http://", "https://x:1", "file:///etc/passwd", "http://a b:1", "http://x:1\n"];
            let ports =
                ["http://x", "http://x:", "http://x:abc", "http://x:0", "http://x:65536", "http://x:+80"];
            let hosts = ["http://:80", "http://::1:80", "http://1:2:3", "http://[::1]", "http://[zz]:80"];
            let odd =
                ["http://<b>:80", "http://a\"b:80", "http://%41:80", "http://u@x:80", "http://\u{430}:80"];
            for bad in others.into_iter().chain(paths).chain(ports).chain(hosts).chain(odd) {
                assert!(!valid_peer_url(bad), "{bad:?}");
            }
        }

        #[test]
        fn calls_go_to_rpc2_unless_the_url_has_a_path() {
            assert_eq!(endpoint("http://h:1"), "http://h:1/RPC2");
            assert_eq!(endpoint("http://h:1/"), "http://h:1/");
            assert_eq!(endpoint("http://h:1/x"), "http://h:1/x");
            assert_eq!(endpoint("http://h:1?x=1"), "http://h:1/RPC2?x=1");
            assert_eq!(endpoint("http://h:1/RPC2#top"), "http://h:1/RPC2");
        }

        #[test]
        fn the_token_is_taken_over_scheme_host_and_port_alone() {
            for url in ["http://h:1", "http://h:1/", "http://h:1/RPC2", "http://h:1?x", "http://h:1#y"] {
                assert_eq!(node_base(url), "http://h:1", "{url}");
            }
        }

        #[test]
        fn loopback_spellings_are_tried_for_a_loopback_node() {
            assert_eq!(spellings("http://localhost:7"), ["http://127.0.0.1:7", "http://[::1]:7"]);
            assert_eq!(spellings("http://127.0.0.1:7"), ["http://localhost:7", "http://[::1]:7"]);
        }
    }

    mod encoding {
        use super::*;

        fn plan(content: &[u8]) -> Survey {
            survey(&mut &content[..], content.len() as u64).unwrap()
        }

        #[test]
        fn xml_safe_utf8_travels_as_text_and_anything_else_as_base64() {
            for text in [&b""[..], b"a\r\nb", "é😀".as_bytes(), b"\x7f"] {
                assert!(plan(text).text, "{text:?}");
            }
            for binary in [&b"\xff"[..], b"a\x00", b"\x1b[0m", "\u{FFFE}".as_bytes(), b"\xc3"] {
                assert!(!plan(binary).text, "{binary:?}");
            }
        }

        #[test]
        fn text_escapes_markup_and_carriage_returns() {
            let answer = served(b"<a>&\r\n");
            let text = String::from_utf8(answer).unwrap();
            assert!(text.contains("<string>&lt;a&gt;&amp;&#13;\n</string>"), "{text}");
        }

        #[test]
        fn a_file_that_changes_after_its_survey_is_cut_short() {
            for (before, after) in [
                (&b"abc"[..], &b"ab"[..]),
                (b"abc", b"abcd"),
                (b"abc", b"a<c"),
                (b"abc", b"a\xffc"),
                (b"a", b"\xc3"),
            ] {
                let mut sent = Vec::new();
                let result = encode(after, plan(before), &mut sent);
                assert!(result.is_err(), "{before:?} -> {after:?} sent {sent:?}");
            }
        }
    }

    mod decoding {
        use super::*;

        #[test]
        fn streams_what_this_node_serves_byte_exact() {
            let mut rng = Rng(0x9e3779b97f4a7c15);
            for _ in 0..300 {
                let content = rng.content();
                let answer = served(&content);
                assert_eq!(fast_reads(&answer, &mut rng).as_deref(), Some(&content[..]));
            }
        }

        #[test]
        fn agrees_with_the_whole_answer_reader_on_every_answer_it_accepts() {
            let mut rng = Rng(0x2545f4914f6cdd1d);
            let mut streamed = 0;
            for _ in 0..400 {
                let content = rng.content();
                for answer in answer_forms(&content) {
                    let fast = fast_reads(&answer, &mut rng);
                    let slow = whole_reads(&answer);
                    let (Some(fast), Some(slow)) = (fast, slow) else { continue };
                    streamed += 1;
                    let shown = String::from_utf8_lossy(&answer);
                    assert_eq!(fast, slow, "answer {shown:?}");
                }
            }
            assert!(streamed > 1000, "the fast path streamed only {streamed} answers");
        }

        /// The ways a content answer is written: ours, Python's (raw CR), bare, wrapped base64.
        fn answer_forms(content: &[u8]) -> Vec<Vec<u8>> {
            let b64 = base64_simd::STANDARD.encode_to_string(content);
            let wrapped: Vec<String> =
                b64.as_bytes().chunks(76).map(|l| String::from_utf8_lossy(l).into()).collect();
            let frame = |value: String| {
                format!("<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value>{value}</value>\n</param>\n</params>\n</methodResponse>\n").into_bytes()
            };
            let mut forms =
                vec![served(content), frame(format!("<base64>\n{}\n</base64>", wrapped.join("\n")))];
            if let Ok(text) = std::str::from_utf8(content) {
                let python = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                forms.push(frame(format!("<string>{python}</string>")));
                forms.push(frame(python));
            }
            forms
        }

        #[test]
        fn leaves_faults_false_and_cdata_to_the_whole_answer_reader() {
            let mut rng = Rng(7);
            let fault = answer_xml(Err("no such file".into()));
            let no = answer_xml(Ok(Value::Bool(false)));
            let cdata = b"<?xml version=\"1.0\"?><methodResponse><params><param><value><string><![CDATA[x]]></string></value></param></params></methodResponse>";
            for answer in [&fault[..], &no[..], &cdata[..]] {
                assert_eq!(fast_reads(answer, &mut rng), None);
            }
            assert_eq!(whole_reads(cdata), Some(b"x".to_vec()));
            let spaces = String::from_utf8_lossy(cdata).replace("[x]", "[ \t ]");
            assert_eq!(whole_reads(spaces.as_bytes()), Some(b" \t ".to_vec()));
        }

        #[test]
        fn leaves_answers_in_other_encodings_to_the_whole_answer_reader() {
            let mut rng = Rng(11);
            let value = b"<methodResponse><params><param><value><string>caf\xe9</string></value></param></params></methodResponse>";
            let answer = |declaration: &str| [declaration.as_bytes(), &value[..]].concat();
            let latin1 = answer("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>");
            assert_eq!(fast_reads(&latin1, &mut rng), None);
            assert_eq!(whole_reads(&latin1), Some("café".as_bytes().to_vec()));
            let utf8 = answer("<?xml version='1.0' encoding='utf-8'?>");
            assert_eq!(fast_reads(&utf8, &mut rng), Some(b"caf\xe9".to_vec()));
        }

        #[test]
        fn padding_inside_base64_is_refused_however_the_reads_fall() {
            let mut rng = Rng(17);
            let digits = format!("{}QQ=={}", "QUJD".repeat(1000), "QUJD".repeat(1000));
            let answer = format!(
                "<methodResponse><params><param><value><base64>{digits}</base64></value></param></params></methodResponse>"
            );
            let split = answer.find("==").unwrap() + 2;
            let (front, back) = answer.as_bytes().split_at(split);
            assert_eq!(
                decode_content(front.chain(back), &mut Vec::new()).unwrap(),
                None,
                "cut after the padding"
            );
            assert_eq!(fast_reads(answer.as_bytes(), &mut rng), None);
            assert_eq!(whole_reads(answer.as_bytes()), None);
        }

        #[test]
        fn a_declaration_with_a_tab_or_a_newline_after_xml_is_streamed() {
            let mut rng = Rng(23);
            let value = "<methodResponse><params><param><value><string>café</string></value></param></params></methodResponse>";
            for space in ["\t", "\n", " "] {
                let answer = format!("<?xml{space}version=\"1.0\"?>{value}");
                assert_eq!(
                    fast_reads(answer.as_bytes(), &mut rng),
                    Some("café".as_bytes().to_vec()),
                    "{space:?}"
                );
            }
        }

        #[test]
        fn a_processing_instruction_naming_an_encoding_is_not_the_declaration() {
            let mut rng = Rng(19);
            let value = "<methodResponse><params><param><value><string>café</string></value></param></params></methodResponse>";
            let answer =
                format!("<?xml-stylesheet type=\"text/xsl\" encoding=\"latin-1\"?>{value}").into_bytes();
            assert_eq!(to_utf8(answer.clone()), answer);
            assert_eq!(fast_reads(&answer, &mut rng), None);
            assert_eq!(whole_reads(&answer), Some("café".as_bytes().to_vec()));
        }

        #[test]
        fn a_bare_value_of_white_space_is_that_text_as_python_reads_it() {
            let mut rng = Rng(13);
            for text in ["", "   ", "\n\t "] {
                let answer = format!(
                    "<methodResponse><params><param><value>{text}</value></param></params></methodResponse>"
                );
                assert_eq!(fast_reads(answer.as_bytes(), &mut rng).as_deref(), Some(text.as_bytes()));
            }
        }

        #[test]
        fn a_cut_off_answer_is_an_error_not_a_short_file() {
            let answer = served(&[b'x'; 1000]);
            let mut out = Vec::new();
            assert!(decode_content(&answer[..answer.len() / 2], &mut out).is_err());
        }
    }

    mod calls {
        use super::*;

        #[test]
        fn parses_what_python_sends() {
            let body = b"<?xml version='1.0'?>\n<methodCall>\n<methodName>f</methodName>\n<params>\n<param>\n<value><string>tok</string></value>\n</param>\n<param>\n<value><int>0</int></value>\n</param>\n<param>\n<value><array><data>\n<value><string>http://a:1</string></value>\n<value>http://b:2</value>\n</data></array></value>\n</param>\n</params>\n</methodCall>\n";
            let (name, params) = parse_call(body).unwrap();
            assert_eq!(name, "f");
            let urls = Value::Array(vec![Value::from("http://a:1"), Value::from("http://b:2")]);
            assert_eq!(params, vec![Value::from("tok"), Value::Int64(0), urls]);
        }

        #[test]
        fn keeps_strings_of_white_space_as_python_does() {
            let body = b"<methodCall><methodName>f</methodName><params>\n<param><value><string> </string></value></param>\n<param><value>\t</value></param>\n<param><value>\n<string>x</string>\n</value></param>\n</params></methodCall>";
            let (_, params) = parse_call(body).unwrap();
            assert_eq!(params, vec![Value::from(" "), Value::from("\t"), Value::from("x")]);
        }

        #[test]
        fn reads_no_further_than_the_end_of_the_call() {
            let mut body = call_xml("t", 1, Value::from("."));
            body.extend_from_slice(b"\0junk<");
            let (_, params) = parse_call(&body).unwrap();
            assert_eq!(params, vec![Value::from("t"), Value::Int64(1), Value::from(".")]);
        }

        #[test]
        fn parses_what_the_xmlrpc_crate_sends() {
            let body = call_xml("t", 2, Value::from("a&b"));
            let (_, params) = parse_call(&body).unwrap();
            assert_eq!(params, vec![Value::from("t"), Value::Int64(2), Value::from("a&b")]);
        }

        #[test]
        fn calls_and_answers_declaring_many_namespaces_are_refused() {
            let many: String = (0..MAX_NAMESPACES).map(|i| format!(" xmlns:n{i}=\"u\"")).collect();
            let call = format!("<methodCall{many}><methodName>f</methodName></methodCall>");
            assert!(parse_call(call.as_bytes()).unwrap_err().contains("namespaces"));
            let answer = format!("<methodResponse><params{many}/></methodResponse>");
            assert!(parse("u", answer.as_bytes()).unwrap_err().to_string().contains("namespaces"));
            let one = "<methodCall xmlns:a=\"u\"><methodName>f</methodName></methodCall>";
            assert!(parse_call(one.as_bytes()).is_ok());
            // one long URI, which xml-rs would copy into every element after it
            let long = one.replace("\"u\"", &format!("\"{}\"", "u".repeat(MAX_NAMESPACE_BYTES)));
            assert!(parse_call(long.as_bytes()).unwrap_err().contains("namespaces"));
            let answer = long.replace("methodCall", "methodResponse");
            assert!(parse("u", answer.as_bytes()).unwrap_err().to_string().contains("namespaces"));
        }

        #[test]
        fn documents_in_an_encoding_xml_rs_would_misread_are_refused_and_the_others_read() {
            let call = |declaration: &str, name: &str| {
                format!("{declaration}<methodCall><methodName>{name}</methodName></methodCall>")
            };
            // xml-rs matches a name by its start, either way: all these it would misread
            for refused in ["iso-8859-15", "ISO-8859-16", "latin10", "utf-8x", "utf", "iso-8859", ""] {
                let declared = call(&format!("<?xml version=\"1.0\" encoding=\"{refused}\"?>"), "f");
                let why = parse_call(declared.as_bytes()).unwrap_err();
                assert!(why.contains(&format!("{refused:?} is not supported")), "{refused}: {why}");
                let answer = format!("<?xml version='1.0' encoding='{refused}'?><methodResponse/>");
                assert!(parse("u", answer.as_bytes()).unwrap_err().to_string().contains("is not supported"));
            }
            // a name xml-rs does not know at all it refuses itself
            let unknown = "<?xml version='1.0' encoding='cp1252'?><methodResponse/>";
            assert!(parse_call(unknown.as_bytes()).is_err() && parse("u", unknown.as_bytes()).is_err());
            for read in ["", "<?xml version=\"1.0\"?>", "<?xml version='1.0' encoding='UTF-8'?>"] {
                assert_eq!(parse_call(call(read, "f\u{e9}").as_bytes()).map(|c| c.0), Ok("f\u{e9}".into()));
            }
            for ascii in ["utf8", "us-ascii", "ASCII", "latin1"] {
                let declared = call(&format!("<?xml version=\"1.0\" encoding=\"{ascii}\"?>"), "f");
                assert_eq!(parse_call(declared.as_bytes()).map(|c| c.0), Ok("f".into()), "{ascii}");
            }
            let latin1 = concat!(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>",
                "<methodCall><methodName>f\u{e9}</methodName></methodCall>"
            );
            let latin1: Vec<u8> = latin1.chars().map(|c| c as u8).collect();
            assert_eq!(parse_call(&latin1).map(|c| c.0), Ok("f\u{e9}".into()));
            let utf16 = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-16\"?><methodResponse><params><param><value>\u{e9}</value></param></params></methodResponse>";
            let utf16: Vec<u8> = utf16.encode_utf16().flat_map(u16::to_le_bytes).collect();
            assert_eq!(parse("u", &utf16).unwrap(), Value::from("\u{e9}"));
            let utf16_call = call("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-16\"?>", "f\u{e9}");
            let utf16_call: Vec<u8> = utf16_call.encode_utf16().flat_map(u16::to_le_bytes).collect();
            assert_eq!(parse_call(&utf16_call).map(|c| c.0), Ok("f\u{e9}".into()));
        }

        #[test]
        fn answers_nested_deeper_than_the_limit_are_refused_however_they_hide_it() {
            let listing = answer_xml(Ok(Value::Array(vec![Value::Array(vec![Value::from("a")])])));
            assert!(parse("u", &listing).is_ok());
            let fault = parse("u", &answer_xml(Err("no".into()))).unwrap_err().to_string();
            assert_eq!(fault, "node u answered a fault: no");
            let hidden = [
                "<value><array><data>",
                "<value><array><data><!--</array>-->",
                "<value><array><data><![CDATA[</array>]]>",
            ];
            for level in hidden {
                let deep =
                    format!("<?xml version=\"1.0\"?><methodResponse><params><param>{}", level.repeat(5000));
                assert!(parse("u", deep.as_bytes()).is_err(), "{level}");
            }
        }

        #[test]
        fn reads_answers_and_faults_and_refuses_elements_out_of_place() {
            let listing = Value::Array(vec![Value::Array(vec![Value::from(" "), Value::from("a")])]);
            assert_eq!(parse("u", &answer_xml(Ok(listing.clone()))).unwrap(), listing);
            let python = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>&lt;class 'OSError'&gt;:no</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";
            assert_eq!(
                parse("u", python.as_bytes()).unwrap_err().to_string(),
                "node u answered a fault: <class 'OSError'>:no"
            );
            let answer = |inner: &str| format!("<methodResponse>{inner}</methodResponse>");
            let not_rpc = [
                "<fault><value><string>no</string></value></fault>",
                "<fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member></struct></value></fault>",
                "<params><param><value>a</value></param><param><value>b</value></param></params>",
                "<params><value>a</value></params>",
                "<params><param><value><params/></value></param></params>",
                "<params><param><value><struct><member><value>a</value></member></struct></value></param></params>",
                "<params/><params/>",
                "",
            ];
            for inner in not_rpc {
                let why = parse("u", answer(inner).as_bytes()).unwrap_err().to_string();
                assert!(why.starts_with("node u answered something that is not XML-RPC ("), "{inner}: {why}");
            }
            let call = |inner: &str| format!("<methodCall><methodName>f</methodName>{inner}</methodCall>");
            for out_of_place in ["<params><value>a</value></params>", "<param/>", "<params><param/></params>"]
            {
                assert!(
                    parse_call(call(out_of_place).as_bytes()).unwrap_err().starts_with("malformed XML-RPC")
                );
            }
        }

        #[test]
        fn refuses_entity_bombs_deep_nesting_and_junk() {
            let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><methodCall><methodName>&b;</methodName></methodCall>";
            assert!(parse_call(bomb).is_err());
            // spelt in UTF-16, the DTD is still found (parameter entities ten times bigger each:
            // five levels here, where nine took 17 GB)
            let levels: String = (1..=5)
                .map(|i| format!("<!ENTITY % a{i} \"{}\">", format!("%a{};", i - 1).repeat(10)))
                .collect();
            let dtd = format!(
                "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-16\"?><!DOCTYPE m [<!ENTITY % a0 \"x\">{levels}]><m/>"
            );
            let le: Vec<u8> = dtd.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let be: Vec<u8> = dtd.encode_utf16().flat_map(u16::to_be_bytes).collect();
            for bomb in [le, be] {
                assert_eq!(parse_call(&bomb).unwrap_err(), "XML with a DTD is refused");
                assert!(parse("u", &bomb).unwrap_err().to_string().contains("DTD"));
            }
            let deep = format!(
                "<methodCall><methodName>f</methodName><params><param>{}</param></params></methodCall>",
                "<value><array><data>".repeat(100)
            );
            assert!(parse_call(deep.as_bytes()).is_err());
            assert!(parse_call(b"not xml").is_err());
            let strings = |n: usize| Value::Array(vec![Value::from("http://a:1"); n]);
            let (_, params) = parse_call(&call_xml("t", 0, strings(MAX_PEERS))).unwrap();
            assert_eq!(params[2], strings(MAX_PEERS));
            let too_many = parse_call(&call_xml("t", 0, strings(MAX_ELEMENTS / 2))).unwrap_err();
            assert!(too_many.contains("too long"), "{too_many}");
            let dict = b"<methodCall><methodName>f</methodName><params><param><value><struct><member><name>a</name><value>1</value></member></struct></value></param></params></methodCall>";
            let struct_of_one = Value::Struct([("a".to_string(), Value::from("1"))].into());
            assert_eq!(parse_call(dict).unwrap().1, vec![struct_of_one]);
            let date = b"<methodCall><methodName>f</methodName><params><param><value><dateTime.iso8601>20261125T00:00:00</dateTime.iso8601></value></param></params></methodCall>";
            assert_eq!(
                parse_call(date).unwrap_err(),
                "XML-RPC type <dateTime.iso8601> is not supported here"
            );
            assert!(parse_call(b"<methodCall><methodName>f</methodName><params><param><value><int>x</int></value></param></params></methodCall>").is_err());
        }
    }
}
