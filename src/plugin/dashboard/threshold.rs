//! The threshold line of an analysis metric's plot, read from its condition. A
//! `thresholdRange` gives it directly; a simple CEL comparison of the first result with a
//! number (`result[0] >= 0.95`, `result < 5`) is parsed for its number; anything else has no
//! line, and the page says so. A judge's measurements are the canary against its baseline
//! (1.0: the same), so its line is the tolerance's edge.

use crate::analysis::judge::DEFAULT_TOLERANCE;
use crate::api::analysis::{JudgeDirection, JudgeMetric};

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

/// A judge's line: the effect past which a difference matters (`1 + tolerance` when an
/// increase is bad, `1 - tolerance` when a decrease is). The judge fails a canary only past
/// it and beyond doubt, so a point past the line need not be a failure.
pub fn of_judge(judge: &JudgeMetric) -> (f64, String) {
    let tolerance = judge.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    match judge.direction {
        JudgeDirection::Increase => (1.0 + tolerance, format!("baseline x {}", 1.0 + tolerance)),
        JudgeDirection::Decrease => (1.0 - tolerance, format!("baseline x {}", 1.0 - tolerance)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_judges_line_is_the_edge_of_its_tolerance() {
        let judge = JudgeMetric::default();
        assert_eq!(of_judge(&judge), (1.1, "baseline x 1.1".into()));
        let judge = JudgeMetric {
            direction: JudgeDirection::Decrease,
            tolerance: Some(0.25),
            ..JudgeMetric::default()
        };
        assert_eq!(of_judge(&judge), (0.75, "baseline x 0.75".into()));
    }

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
