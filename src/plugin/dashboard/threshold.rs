//! The threshold line of an analysis metric's plot, read from its condition. A
//! `thresholdRange` gives it directly; a simple CEL comparison of the first result with a
//! number (`result[0] >= 0.95`, `result < 5`) is parsed for its number; anything else has no
//! line, and the page says so.

/// Where the line goes and how it reads (`>= 0.95`); `None` when the condition is not a
/// simple comparison.
pub fn from_condition(condition: &str) -> Option<(f64, String)> {
    let text = condition.trim();
    let rest = text
        .strip_prefix("result[0]")
        .or_else(|| text.strip_prefix("result"))?
        .trim_start();
    let operator = [">=", "<=", "==", ">", "<"]
        .into_iter()
        .find(|op| rest.starts_with(op))?;
    let number: f64 = rest[operator.len()..].trim().parse().ok()?;
    number
        .is_finite()
        .then(|| (number, format!("{operator} {number}")))
}

#[cfg(test)]
mod tests {
    use super::from_condition;

    #[test]
    fn simple_comparisons_give_their_number() {
        assert_eq!(
            from_condition("result[0] >= 0.95"),
            Some((0.95, ">= 0.95".into()))
        );
        assert_eq!(from_condition(" result < 5 "), Some((5.0, "< 5".into())));
        assert_eq!(
            from_condition("result[0]<=1e2"),
            Some((100.0, "<= 100".into()))
        );
    }

    #[test]
    fn anything_else_has_no_line() {
        for condition in [
            "result[0] >= 0.95 && result[1] < 3",
            "result[1] >= 0.95",
            "len(result) > 0",
            "result[0] >= inf",
            "result[0] >= NaN",
            "result[0] ~ 3",
            "",
        ] {
            assert_eq!(from_condition(condition), None, "{condition}");
        }
    }
}
