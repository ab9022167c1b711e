//! File names carried with a stream, made safe to create on the receiving side.
//!
//! A sender may name a stream (`hermes stream --file F` sends F's file name). The name is the
//! sender's word, not a path: the receiver must never let it choose a directory, climb out of the
//! save directory, hide a file, or smuggle terminal control sequences into a listing. On the
//! wire it is bounded by [`MAX_NAME_LEN`]; [`sanitize`] turns whatever arrived into a name that is
//! safe to join to a directory, or `None` when nothing usable is left.

/// Longest name a stream may carry, in bytes (the common file-system limit for one component).
pub const MAX_NAME_LEN: usize = 255;

/// Longest sanitized name, in bytes: room is left under the file-system limit for a `-N` suffix
/// (added when the name is taken) and a temporary extension.
pub const MAX_SAVED_NAME_LEN: usize = 200;

/// A safe single path component derived from `raw`:
///
/// 1. invalid UTF-8 becomes U+FFFD; path separators (`/`, `\`) and control characters become `_`;
/// 2. runs of dots collapse to one (so no `..` survives) and surrounding whitespace is trimmed;
/// 3. a leading dot becomes `_` (no hidden files, never `.`);
/// 4. the result is cut to [`MAX_SAVED_NAME_LEN`] bytes on a character boundary, keeping the
///    extension when it is short.
///
/// Returns `None` when nothing but underscores and dots is left (the caller then uses its own
/// name, such as the stream id).
pub fn sanitize(raw: &[u8]) -> Option<String> {
    let mut out = clean(&String::from_utf8_lossy(raw));
    if out.len() > MAX_SAVED_NAME_LEN {
        // Cutting may leave a trailing space or join dots; clean once more (it never lengthens).
        out = clean(&truncate(out));
    }
    if out.chars().all(|c| c == '_' || c == '.') {
        return None;
    }
    Some(out)
}

/// Steps 1–3 of [`sanitize`].
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c == '/' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        if c == '.' && out.ends_with('.') {
            continue;
        }
        out.push(c);
    }
    let mut out = out.trim().to_string();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

/// Cuts `name` to [`MAX_SAVED_NAME_LEN`] bytes, keeping an extension of up to 16 bytes.
fn truncate(name: String) -> String {
    if name.len() <= MAX_SAVED_NAME_LEN {
        return name;
    }
    let ext = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => &name[i..],
        _ => "",
    };
    let mut cut = MAX_SAVED_NAME_LEN - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &name[..cut])
}

/// The `n`-th alternative to a taken name: `report.pdf` → `report-1.pdf`, `notes` → `notes-1`.
pub fn with_suffix(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}-{n}{}", &name[..i], &name[i..]),
        _ => format!("{name}-{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dangerous_names_are_defused() {
        assert_eq!(sanitize(b"weights.bin").as_deref(), Some("weights.bin"));
        assert_eq!(
            sanitize(b"../../etc/passwd").as_deref(),
            Some("__._etc_passwd")
        );
        assert_eq!(sanitize(b"/abs/path").as_deref(), Some("_abs_path"));
        assert_eq!(sanitize(b"a\\b").as_deref(), Some("a_b"));
        assert_eq!(sanitize(b".bashrc").as_deref(), Some("_bashrc"));
        assert_eq!(sanitize(b"x\x1b[2Jy\n").as_deref(), Some("x_[2Jy_"));
        assert_eq!(sanitize(b"a..b...c").as_deref(), Some("a.b.c"));
        assert_eq!(sanitize(b"  spaced  ").as_deref(), Some("spaced"));
        assert_eq!(sanitize(b"caf\xc3\xa9.txt").as_deref(), Some("café.txt"));
        for nothing in [&b""[..], b".", b"..", b"/", b"...", b"  ", b"\0"] {
            assert_eq!(sanitize(nothing), None, "{nothing:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(300));
        let s = sanitize(long.as_bytes()).unwrap();
        assert!(s.len() <= MAX_SAVED_NAME_LEN && s.ends_with(".gz"), "{s}");
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        assert_eq!(with_suffix("report.pdf", 1), "report-1.pdf");
        assert_eq!(with_suffix("notes", 2), "notes-2");
        assert_eq!(with_suffix("_bashrc", 3), "_bashrc-3");
    }

    proptest! {
        #[test]
        fn sanitized_names_are_single_safe_components(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Some(s) = sanitize(&raw) {
                prop_assert!(!s.is_empty() && s.len() <= MAX_SAVED_NAME_LEN);
                prop_assert!(!s.contains('/') && !s.contains('\\') && !s.contains(".."));
                prop_assert!(!s.starts_with('.'));
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert_eq!(sanitize(s.as_bytes()), Some(s.clone()), "not idempotent");
                let p = std::path::Path::new(&s);
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(matches!(p.components().next(), Some(std::path::Component::Normal(_))));
            }
        }
    }
}
