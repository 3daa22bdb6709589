//! Integration tests: the built binary, and a Python peer with the original's behaviour,
//! as real processes on 127.0.0.1 (port 0, addresses read from their output, killed on drop).
//!
//! - `cli`: the command line, settings, exit statuses, what a node says and answers.
//! - `interop`: Rust and Python nodes and clients in every direction, content byte-exact.
//! - `hostile`: hostile peers, hostile requests and faults.
//! - `person`: what a person sees: progress on a terminal, plain diagnosis, `list`, help.
//! - `shell`: the serving node with a prompt, piped and on a pseudo-terminal.
//! - `trust`: the promises of the README under attack and faults: redirects, trickles, part
//!   files, names on a terminal, swapped folders, floods, stalls, joins.

mod cli;
mod common;
mod hostile;
mod interop;
mod person;
mod shell;
mod trust;
