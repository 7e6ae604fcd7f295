//! Kubernetes object names: the DNS label and subdomain rules.

use super::violation::Report;

#[derive(Clone, Copy)]
pub(super) enum NameRule {
    /// Services: lower-case letters, digits and '-', starting with a letter, at most 63.
    Dns1035Label,
    /// Namespaces: lower-case letters, digits and '-', at most 63.
    Dns1123Label,
    /// Most object names: DNS-1123 labels joined by '.', at most 253.
    Dns1123Subdomain,
}

pub(super) fn check_name(report: &mut Report, field: &str, name: &str, rule: NameRule) {
    let label_ok = |label: &str, letter_first: bool| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && (!letter_first || bytes[0].is_ascii_lowercase())
    };
    let (ok, what) = match rule {
        NameRule::Dns1035Label => (
            label_ok(name, true),
            "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters)",
        ),
        NameRule::Dns1123Label => (
            label_ok(name, false),
            "a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)",
        ),
        NameRule::Dns1123Subdomain => (
            name.len() <= 253 && name.split('.').all(|label| label_ok(label, false)),
            "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)",
        ),
    };
    if name.is_empty() {
        report.required(field, "must not be empty");
    } else if !ok {
        report.invalid(field, format!("{name:?} is not {what}"));
    }
}

/// Label and annotation keys: an optional DNS-1123 subdomain prefix and '/', then a name of
/// at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
/// None when `key` is one; else what is wrong.
pub(super) fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let mut report = Report::default();
        check_name(&mut report, "", prefix, NameRule::Dns1123Subdomain);
        if !report.finish().is_empty() {
            return Some(format!(
                "{key:?}: its prefix must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)"
            ));
        }
    }
    (!label_value_ok(name) || name.is_empty()).then(|| {
        format!(
            "{key:?}: its name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    })
}

/// Label values: empty, or at most 63 letters, digits, '-', '_' and '.', starting and
/// ending with a letter or digit.
pub fn label_value_ok(value: &str) -> bool {
    let bytes = value.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes.iter().all(inner)
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric())
}
