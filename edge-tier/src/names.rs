//! File names are bytes: how a robot's file name becomes an object path.
//!
//! Each component of a file's path under its watched directory becomes one
//! segment of the object path. Characters of valid UTF-8 are kept as they
//! are, except control characters (U+0000–U+001F, U+007F–U+009F) and
//! `%` `\` `#` `*` `?` `~` `|` `"` `<` `>` `[` `]` `{` `}` `^` `` ` ``,
//! which object stores refuse or advise against; each of their UTF-8
//! bytes becomes `%XX` (upper-case hex). Bytes that are not valid UTF-8
//! become `%XX` too. `%` itself is always encoded, so percent-decoding a
//! segment gives the original name back exactly, byte for byte.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// Characters encoded although they are valid UTF-8.
const RESERVED: &[char] = &['%', '\\', '#', '*', '?', '~', '|', '"', '<', '>', '[', ']', '{', '}', '^', '`'];

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "%{b:02X}");
    }
}

/// The object path segment of file name `name`.
pub fn object_segment(name: &OsStr) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || RESERVED.contains(&c) {
                let mut buf = [0u8; 4];
                push_escaped(&mut out, c.encode_utf8(&mut buf).as_bytes());
            } else {
                out.push(c);
            }
        }
        push_escaped(&mut out, chunk.invalid());
    }
    out
}

/// The original bytes of a segment made by [`object_segment`].
pub fn file_name(segment: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(segment).collect()
}

/// `path` for a log line or a status line: control characters and bytes
/// that are not UTF-8 escaped, so a file name cannot write to the terminal.
pub fn display(path: &std::path::Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn every_name_becomes_a_segment_that_decodes_to_it() {
        let names: &[&[u8]] = &[
            b"plain.mcap",
            b"tab\there",
            b"new\nline",
            b"back\\slash",
            b"50% done",
            b"a#1",
            b"\xff\xfe not utf-8 \xc3",
            "caf\u{e9} \u{65e5}\u{672c}".as_bytes(),
            b"bell\x07 and del\x7f",
            "c1\u{85}".as_bytes(),
            b"~backup~",
        ];
        for n in names {
            let seg = object_segment(OsStr::from_bytes(n));
            assert_eq!(file_name(&seg), *n, "{seg:?}");
            assert!(!seg.chars().any(|c| c.is_control() || c == '/' || c == '\\'), "{seg:?}");
            assert!(ferry_protocol::ids::NsPath::parse(&format!("/logs/{seg}")).is_ok(), "{seg:?}");
        }
        assert_eq!(object_segment(OsStr::new("plain.mcap")), "plain.mcap");
        assert_eq!(object_segment(OsStr::new("tab\there")), "tab%09here");
        assert_eq!(object_segment(OsStr::new("caf\u{e9}")), "caf\u{e9}");
        assert_eq!(object_segment(OsStr::from_bytes(b"x\xff")), "x%FF");
    }

    #[test]
    fn display_escapes_what_a_terminal_would_act_on() {
        let p = std::path::Path::new(OsStr::from_bytes(b"/d/a\x1b[2Jb\n\xff"));
        assert_eq!(display(p), "/d/a\\u{1b}[2Jb\\n\\xff");
    }
}
