#!/usr/bin/env python3
"""A Python 3 tinyp2p peer with the original's behaviour, for the interop tests.

Written from shared/PROTOCOL.md on Python's own xmlrpc modules, so it speaks exactly
the XML-RPC an original node speaks: the same token, the same join walk over the
growing peer list, the same answers, the shared folder is the current one, the same
client loop. Usage is the original's:

    peer.py PW server HOST PORT [PEER...]
    peer.py PW client URL PATTERN

Where it departs from the 2004 program, and why:
- PORT 0 binds a free port, and a serving node prints `listening on URL` to stderr,
  so tests need no fixed ports (the URL, and so the token, carries the real port);
- the single-server fix is in (the node lists itself);
- content that is not XML-safe UTF-8 text goes as <base64> (Python 2 sent raw bytes,
  which no parser reads back); text goes as a plain string, raw CR and all, as before;
- its client writes a <base64> answer's bytes, and text as UTF-8 (under Python 2.7 the
  original client stops with a TypeError on a Binary, and a UnicodeEncodeError on text
  beyond ASCII, leaving the file it was writing behind; ASCII text, CR, CRLF and markup
  included, reaches it byte-exact from a Rust node).
"""
import hmac
import os
import re
import sys
from xmlrpc.client import Binary, ServerProxy
from xmlrpc.server import SimpleXMLRPCServer

XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# The encoding its server answers in and its client calls in (Python's own default: UTF-8).
ENCODING = os.environ.get("PEER_ENCODING")


def pw(url):
    """The token: hex HMAC-MD5 of the URL, keyed with the password."""
    return hmac.new(sys.argv[1].encode(), url.encode(), "md5").hexdigest()


def ls(pattern=""):
    """The names in the shared folder that the pattern searches (all for "")."""
    return [n for n in os.listdir(os.getcwd()) if pattern == "" or re.search(pattern, n)]


def content(name):
    """A file's content as the original sent it: text as a string."""
    with open(name, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Binary(data)
    return Binary(data) if XML_ILLEGAL.search(text) else text


def server(host, port, peers):
    """Joins the network like the original, then serves f forever."""
    sv = SimpleXMLRPCServer((host, int(port)), allow_none=False, encoding=ENCODING)
    my_url = "http://%s:%d" % (host, sv.server_address[1])
    prs = peers + [my_url]

    def pr(x=()):
        for y in x:
            if y not in prs:
                prs.append(y)
        return prs

    def f(p, n, a):
        if p != pw(my_url):
            return False
        if n == 0:
            return pr(a)
        if n == 1:
            return [ls(a)]
        return content(a)

    def aug(u):
        return pr() if u == my_url else pr(ServerProxy(u).f(pw(u), 0, pr([my_url])))

    for s in aug(prs[0]):  # walks the list while it grows, as the original did
        aug(s)
    sv.register_function(f, "f")
    print("listening on " + my_url, file=sys.stderr, flush=True)
    sv.serve_forever()


def client(url, pattern):
    """Fetches every name the pattern searches from every peer, skipping present ones."""
    for peer in ServerProxy(url, encoding=ENCODING).f(pw(url), 0, []):
        node = ServerProxy(peer, encoding=ENCODING)
        for fn in [n for n in node.f(pw(peer), 1, pattern)[0] if n not in ls()]:
            data = node.f(pw(peer), 2, fn)
            with open(fn, "wb") as fi:
                fi.write(data.data if isinstance(data, Binary) else data.encode("utf-8"))


if __name__ == "__main__":
    if sys.argv[2] == "client":
        client(sys.argv[3], sys.argv[4])
    else:
        server(sys.argv[3], sys.argv[4], sys.argv[5:])
