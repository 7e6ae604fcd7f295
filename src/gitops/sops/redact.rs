//! Scrubbing decrypted values out of failure messages. The API server (a CRD's pattern, an
//! admission webhook), serde and kustomize all may quote a value in their errors, and those
//! become a GitSync's status, Events and logs, which far more people read than the Secret.
//!
//! Pure: no I/O.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What replaces a decrypted value in a message.
pub const MARKER: &str = "<decrypted>";
/// Shorter values are left: scrubbing `true` or `prod` would garble every message, and so
/// short a value is no secret anyway.
pub const MIN_CHARS: usize = 4;
/// Forms (a value, its JSON-escaped and base64 forms) kept; a revision holding more
/// withholds its failure messages whole rather than let some value through.
const MAX_FORMS: usize = 4096;
/// Bytes of those forms together, for the same reason.
const MAX_BYTES: usize = 1 << 20;
/// The message in place of one that cannot be scrubbed with certainty.
const WITHHELD: &str = "(message withheld: it may quote values weir decrypted)";

/// The decrypted values of one revision, to scrub from its messages. Debug shows only how
/// many it holds.
#[derive(Clone, Default)]
pub struct Redactor {
    forms: Vec<String>,
    bytes: usize,
    /// More values than are kept: every message is withheld.
    overflowed: bool,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.forms.len())
            .field("overflowed", &self.overflowed)
            .finish()
    }
}

impl Redactor {
    /// Keeps `value` (if long enough) and the forms a message may quote it in: as it is,
    /// escaped as in JSON or Go's `%q` (a value with a quote or a newline), and base64 (a
    /// Secret's `data`, which a webhook sees even for `stringData`).
    pub fn add(&mut self, value: &str) {
        if value.chars().count() < MIN_CHARS {
            return;
        }
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped
            .strip_prefix('"')
            .and_then(|e| e.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned();
        let encoded = STANDARD.encode(value);
        for form in [value.to_owned(), escaped, encoded] {
            if form.chars().count() < MIN_CHARS || self.forms.contains(&form) {
                continue;
            }
            if self.forms.len() == MAX_FORMS || self.bytes + form.len() > MAX_BYTES {
                self.overflowed = true;
                return;
            }
            self.bytes += form.len();
            self.forms.push(form);
        }
    }

    /// Every other redactor's values too (the same revision decrypted in parts).
    pub fn extend(&mut self, other: Redactor) {
        self.overflowed |= other.overflowed;
        for form in other.forms {
            if self.forms.contains(&form) {
                continue;
            }
            if self.forms.len() == MAX_FORMS || self.bytes + form.len() > MAX_BYTES {
                self.overflowed = true;
                return;
            }
            self.bytes += form.len();
            self.forms.push(form);
        }
    }

    /// Whether it holds nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty() && !self.overflowed
    }

    /// `text` with every occurrence of a kept value replaced by `<decrypted>`. Overlapping
    /// occurrences are replaced as one. Should the result still hold a value (one that is
    /// part of the marker and the text around it), the whole message is withheld.
    pub fn scrub(&self, text: &str) -> String {
        if self.forms.is_empty() && !self.overflowed {
            return text.to_owned();
        }
        if self.overflowed {
            return self.withheld();
        }
        // Byte ranges to replace, found in the original text so that no replacement can
        // make or hide another.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for form in &self.forms {
            let mut from = 0;
            while let Some(at) = text[from..].find(form.as_str()) {
                let start = from + at;
                ranges.push((start, start + form.len()));
                // Overlapping occurrences too (`aaaa` in `aaaaa`): the next char boundary.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for (start, end) in ranges {
            if end <= done {
                continue;
            }
            if start >= done {
                out.push_str(&text[done..start]);
                out.push_str(MARKER);
            }
            done = end;
        }
        out.push_str(&text[done..]);
        if self.leaks(&out) {
            return self.withheld();
        }
        out
    }

    fn leaks(&self, text: &str) -> bool {
        self.forms.iter().any(|form| text.contains(form.as_str()))
    }

    /// The notice for a message that cannot be scrubbed: empty should a value be part of it.
    fn withheld(&self) -> String {
        if self.leaks(WITHHELD) {
            String::new()
        } else {
            WITHHELD.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor(values: &[&str]) -> Redactor {
        let mut redactor = Redactor::default();
        for value in values {
            redactor.add(value);
        }
        redactor
    }

    #[test]
    fn values_are_replaced_wherever_a_message_quotes_them() {
        let r = redactor(&["hunter2", "s3cr\"et\nline", "abc"]);
        assert_eq!(
            r.scrub("spec.password: Invalid value: \"hunter2\": must match '^[a-z]+$'"),
            "spec.password: Invalid value: \"<decrypted>\": must match '^[a-z]+$'"
        );
        // serde and Go quote with escapes; a webhook may see a Secret's base64.
        assert_eq!(
            r.scrub(r#"invalid type: string "s3cr\"et\nline", expected"#),
            "invalid type: string \"<decrypted>\", expected"
        );
        assert_eq!(
            r.scrub("data.password: aHVudGVyMg=="),
            "data.password: <decrypted>"
        );
        // Too short to scrub.
        assert_eq!(r.scrub("abc is fine"), "abc is fine");
        assert_eq!(
            Redactor::default().scrub("nothing decrypted"),
            "nothing decrypted"
        );
    }

    #[test]
    fn overlapping_values_are_replaced_as_one() {
        let r = redactor(&["abcdef", "defghi"]);
        assert_eq!(r.scrub("x abcdefghi y"), "x <decrypted> y");
        let r = redactor(&["aaaa"]);
        assert_eq!(r.scrub("aaaaa!"), "<decrypted>!");
    }

    #[test]
    fn a_value_the_marker_would_make_withholds_the_message() {
        let r = redactor(&["d>tail"]);
        assert_eq!(r.scrub("d>tail"), "<decrypted>");
        let r = redactor(&["ted>"]);
        assert_eq!(r.scrub("a ted> b"), WITHHELD);
        // A value the notice itself holds: nothing is said at all.
        let r = redactor(&["rypt"]);
        assert_eq!(r.scrub("a rypt b"), "");
    }

    #[test]
    fn too_many_values_withhold_every_message() {
        let mut r = Redactor::default();
        for i in 0..MAX_FORMS {
            r.add(&format!("value-{i:06}"));
        }
        assert_eq!(r.scrub("anything"), WITHHELD);
        assert!(format!("{r:?}").contains("overflowed: true"));
    }

    #[test]
    fn debug_never_shows_a_value() {
        let r = redactor(&["hunter2"]);
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    proptest! {
        /// Whatever the values and the text, none of them is left in what is scrubbed.
        #[test]
        fn no_value_survives_scrubbing(
            values in prop::collection::vec("[a-e<>déc\"]{0,8}", 0..6),
            text in "[a-e<>déc\" rypt]{0,64}",
            quoted in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let redactor = redactor(&values.iter().map(String::as_str).collect::<Vec<_>>());
            // The text quotes some of the values, as an error message would.
            let mut message = text.clone();
            for at in &quoted {
                if !values.is_empty() {
                    message.push_str(&values[at.index(values.len())]);
                    message.push_str(&text);
                }
            }
            let scrubbed = redactor.scrub(&message);
            for value in values.iter().filter(|v| v.chars().count() >= MIN_CHARS) {
                prop_assert!(!scrubbed.contains(value.as_str()), "{value:?} in {scrubbed:?}");
            }
        }
    }
}
