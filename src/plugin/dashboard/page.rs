//! Pages rendered as HTML from plain rows, readable without JavaScript; every piece of text
//! escaped.

use super::html::escape;

/// One Rollout in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// `2/5`, or empty when the strategy has no steps.
    pub step: String,
    pub weight: u32,
    pub stable: String,
    pub canary: String,
}

/// The Rollouts list as an HTML fragment (a table), each name linking to its page.
pub fn rollouts(rows: &[RolloutRow]) -> String {
    if rows.is_empty() {
        return "<p>No Rollouts.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"rollouts\"><thead><tr><th>Namespace</th><th>Name</th><th>Phase</th>\
         <th>Step</th><th>Weight</th><th>Stable</th><th>Canary</th></tr></thead><tbody>",
    );
    for row in rows {
        out.push_str(&format!(
            "<tr><td>{ns}</td><td><a href=\"/rollouts/{ns_path}/{name_path}\">{name}</a></td>\
             <td>{phase}</td><td>{step}</td><td>{weight}%</td><td>{stable}</td><td>{canary}</td></tr>",
            ns = escape(&row.namespace),
            ns_path = escape(&path_segment(&row.namespace)),
            name_path = escape(&path_segment(&row.name)),
            name = escape(&row.name),
            phase = escape(&row.phase),
            step = escape(&row.step),
            weight = row.weight,
            stable = escape(&row.stable),
            canary = escape(&row.canary),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// A Rollout's steps as an ordered list (each described in words by the caller), the current
/// one marked with `aria-current="step"` and in bold, so the mark reads without styles.
pub fn steps(described: &[String], current: Option<usize>) -> String {
    let mut out = String::from("<ol class=\"steps\">");
    for (index, step) in described.iter().enumerate() {
        if Some(index) == current {
            out.push_str(&format!(
                "<li aria-current=\"step\"><strong>{}</strong> (current)</li>",
                escape(step)
            ));
        } else {
            out.push_str(&format!("<li>{}</li>", escape(step)));
        }
    }
    out.push_str("</ol>");
    out
}

/// `text` percent-encoded for one segment of a URL path. Kubernetes names cannot hold these
/// characters, but a page must not trust that what it is given was validated.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> RolloutRow {
        RolloutRow {
            namespace: "shop".into(),
            name: name.into(),
            phase: "Paused".into(),
            step: "2/5".into(),
            weight: 20,
            stable: "7f9c".into(),
            canary: "b4d1".into(),
        }
    }

    #[test]
    fn each_rollout_is_a_row_linking_to_its_page() {
        let html = rollouts(&[row("web"), row("api")]);
        assert_eq!(html.matches("<tr><td>shop</td>").count(), 2);
        assert!(html.contains(
            "<a href=\"/rollouts/shop/web\">web</a></td><td>Paused</td><td>2/5</td>\
             <td>20%</td><td>7f9c</td><td>b4d1</td>"
        ));
    }

    #[test]
    fn hostile_names_stay_text() {
        let html = rollouts(&[row("\"><script>x</script>/../a")]);
        assert!(!html.contains("<script>"));
        assert!(
            html.contains("href=\"/rollouts/shop/%22%3E%3Cscript%3Ex%3C%2Fscript%3E%2F..%2Fa\"")
        );
    }

    #[test]
    fn no_rollouts_says_so() {
        assert_eq!(rollouts(&[]), "<p>No Rollouts.</p>");
    }

    #[test]
    fn the_current_step_alone_is_marked() {
        let described = vec!["setWeight 20".to_owned(), "pause".into(), "<b>".into()];
        let html = steps(&described, Some(1));
        assert_eq!(
            html,
            "<ol class=\"steps\"><li>setWeight 20</li><li aria-current=\"step\">\
             <strong>pause</strong> (current)</li><li>&lt;b&gt;</li></ol>"
        );
        assert!(!steps(&described, None).contains("current"));
        assert!(!steps(&described, Some(3)).contains("current"));
    }
}
