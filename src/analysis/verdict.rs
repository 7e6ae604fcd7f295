//! One measurement's verdict: what a query returned, judged by the metric's CEL conditions or
//! its threshold range. Pure.
//!
//! The rules, in Argo Rollouts' order: a failureCondition that holds is Failed; with only a
//! successCondition, false is Failed; with only a failureCondition, false is Successful; with
//! both, neither holding is Inconclusive. No data (an empty vector, NaN) is never judged by the
//! conditions: it is Inconclusive with "query returned no data" unless `noDataAs` says otherwise.

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};

use crate::api::analysis::{AnalysisPhase, Metric, NoDataAs, ThresholdRange};

/// What a Prometheus instant query returned, in the shape `result` has in conditions.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    Scalar(f64),
    Vector(Vec<f64>),
}

impl QueryValue {
    /// An empty vector, or NaN anywhere (Prometheus' answer to 0/0 when there is no traffic).
    pub fn is_no_data(&self) -> bool {
        match self {
            QueryValue::Scalar(value) => value.is_nan(),
            QueryValue::Vector(values) => values.is_empty() || values.iter().any(|v| v.is_nan()),
        }
    }

    fn to_cel(&self) -> Value {
        match self {
            QueryValue::Scalar(value) => Value::Float(*value),
            QueryValue::Vector(values) => {
                Value::List(Arc::new(values.iter().map(|v| Value::Float(*v)).collect()))
            }
        }
    }

    fn samples(&self) -> &[f64] {
        match self {
            QueryValue::Scalar(value) => std::slice::from_ref(value),
            QueryValue::Vector(values) => values,
        }
    }
}

impl std::fmt::Display for QueryValue {
    /// `0.97` for a scalar, `[0.97, 1]` for a vector: what `result` is in a condition.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryValue::Scalar(value) => write!(f, "{value}"),
            QueryValue::Vector(values) => {
                // A wide vector would swell every record it appears in (run, Rollout, Event).
                let parts: Vec<String> = values.iter().take(SHOWN).map(f64::to_string).collect();
                match values.len() {
                    n if n > SHOWN => write!(f, "[{}, ... ({n} samples)]", parts.join(", ")),
                    _ => write!(f, "[{}]", parts.join(", ")),
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub phase: AnalysisPhase,
    pub message: String,
}

impl Verdict {
    fn new(phase: AnalysisPhase, message: impl Into<String>) -> Verdict {
        Verdict {
            phase,
            message: message.into(),
        }
    }
}

pub const NO_DATA: &str = "query returned no data";
/// Samples shown of a vector result; the rest are counted.
const SHOWN: usize = 10;
/// Longest condition accepted: enough for any real gate, small enough that parsing a
/// hostile one cannot exhaust a worker's stack.
const MAX_CONDITION: usize = 1024;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Parses a condition and rejects what could never evaluate: syntax errors, names other than
/// `result`, functions CEL does not have. Where the text is Argo's expr syntax, the message
/// says how CEL writes it.
pub fn check_condition(source: &str) -> Result<(), String> {
    if source.len() > MAX_CONDITION {
        return Err(format!(
            "is {} characters long; at most {MAX_CONDITION} are accepted",
            source.len()
        ));
    }
    let depth = source
        .chars()
        .scan(0i32, |depth, c| {
            *depth += match c {
                '(' | '[' | '{' => 1,
                ')' | ']' | '}' => -1,
                _ => 0,
            };
            Some(*depth)
        })
        .max()
        .unwrap_or(0);
    if depth > 32 {
        return Err(format!(
            "nests {depth} brackets deep; at most 32 are accepted"
        ));
    }
    let program = compile(source)?;
    let bound = bound_variables(source);
    let references = program.references();
    let unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| *v != "result" && !bound.contains(v))
        .collect();
    if let Some(name) = unknown.first() {
        return Err(undefined(name, source));
    }
    // Evaluating against both result shapes, small and large, finds unknown functions the
    // parser accepts (`isNaN(x)`), also behind `&&` and `||`; type errors are left alone since
    // they depend on the shape.
    for probe in [
        QueryValue::Vector(vec![0.0; 4]),
        QueryValue::Vector(vec![1e12; 4]),
        QueryValue::Vector(vec![-1e12; 4]),
        QueryValue::Scalar(0.0),
        QueryValue::Scalar(1e12),
        QueryValue::Scalar(-1e12),
    ] {
        if let Err(cel::ExecutionError::UndeclaredReference(name)) = evaluate(&program, &probe) {
            return Err(undefined(&name, source));
        }
    }
    Ok(())
}

fn undefined(name: &str, source: &str) -> String {
    let mut message = format!("{name:?} is not defined: the only variable is `result`");
    if let Some(hint) = argo_hint(source) {
        message.push_str("; ");
        message.push_str(&hint);
    }
    message
}

/// The names macros bind (`x` in `result.all(x, x < 1)`), which are variables too.
fn bound_variables(source: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for macro_name in ["all(", "exists(", "exists_one(", "map(", "filter("] {
        let mut rest = source;
        while let Some(at) = rest.find(macro_name) {
            let after = &rest[at + macro_name.len()..];
            if rest[..at].ends_with('.')
                && let Some((name, _)) = after.split_once(',')
            {
                names.push(name.trim());
            }
            rest = after;
        }
    }
    names
}

fn compile(source: &str) -> Result<Program, String> {
    Program::compile(source).map_err(|errors| {
        let first = errors
            .errors
            .first()
            .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
            .unwrap_or_else(|| errors.to_string());
        match argo_hint(source) {
            Some(hint) => format!("not valid CEL ({first}); {hint}"),
            None => format!("not valid CEL ({first})"),
        }
    })
}

fn evaluate(program: &Program, value: &QueryValue) -> Result<Value, cel::ExecutionError> {
    let mut context = Context::with_env(ENV.clone());
    context.add_variable_from_value("result", value.to_cel());
    program.execute(&context)
}

/// How CEL spells what Argo's expr language writes differently, when the text shows it.
pub fn argo_hint(source: &str) -> Option<String> {
    let mut hints = Vec::new();
    if source.contains('#') {
        hints.push(
            "Argo's expr `all(result, # < 1000)` is `result.all(x, x < 1000)` in CEL (likewise any -> exists, filter, map)",
        );
    }
    let words: Vec<&str> = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    if words.iter().any(|w| ["and", "or", "not"].contains(w)) {
        hints.push("CEL writes `&&`, `||` and `!` where expr accepts `and`, `or`, `not`");
    }
    if source.contains("len(") {
        hints.push("expr's `len(result)` is `size(result)` in CEL");
    }
    if source.contains("isNaN(") || source.contains("isInf(") {
        hints.push(
            "CEL has no isNaN: weir treats NaN as no data before any condition runs (see noDataAs)",
        );
    }
    if source.contains("isNil(") || source.contains("default(") {
        hints.push("CEL has no isNil or default: an empty result is no data before any condition runs (see noDataAs)");
    }
    (!hints.is_empty()).then(|| hints.join("; "))
}

/// Judges one query result.
pub fn judge(metric: &Metric, value: &QueryValue) -> Verdict {
    if value.is_no_data() {
        let phase = match metric.no_data_as.unwrap_or_default() {
            NoDataAs::Inconclusive => AnalysisPhase::Inconclusive,
            NoDataAs::Failed => AnalysisPhase::Failed,
            NoDataAs::Error => AnalysisPhase::Error,
        };
        return Verdict::new(phase, NO_DATA);
    }
    if let Some(range) = &metric.threshold_range {
        return judge_range(range, value);
    }
    let success = metric.success_condition.as_deref();
    let failure = metric.failure_condition.as_deref();
    let failed = match failure.map(|c| holds("failureCondition", c, value)) {
        Some(Err(error)) => return error,
        Some(Ok(held)) => held,
        None => false,
    };
    if failed {
        return Verdict::new(
            AnalysisPhase::Failed,
            format!(
                "failureCondition `{}` is true for {value}",
                failure.unwrap_or_default()
            ),
        );
    }
    let succeeded = match success.map(|c| holds("successCondition", c, value)) {
        Some(Err(error)) => return error,
        Some(Ok(held)) => held,
        None => false,
    };
    match (success, failure) {
        (Some(condition), _) if succeeded => Verdict::new(
            AnalysisPhase::Successful,
            format!("successCondition `{condition}` is true for {value}"),
        ),
        (Some(condition), None) => Verdict::new(
            AnalysisPhase::Failed,
            format!("successCondition `{condition}` is false for {value}"),
        ),
        (None, Some(condition)) => Verdict::new(
            AnalysisPhase::Successful,
            format!("failureCondition `{condition}` is false for {value}"),
        ),
        (Some(success), Some(failure)) => Verdict::new(
            AnalysisPhase::Inconclusive,
            format!(
                "neither successCondition `{success}` nor failureCondition `{failure}` is true for {value}"
            ),
        ),
        // Validation requires a condition or a range; a run made by hand without one is
        // measured but can never pass.
        (None, None) => Verdict::new(
            AnalysisPhase::Error,
            "the metric has no successCondition, failureCondition or thresholdRange",
        ),
    }
}

/// Evaluates a condition; anything but true or false is an Error verdict that says why.
fn holds(field: &str, condition: &str, value: &QueryValue) -> Result<bool, Verdict> {
    let error = |why: String| Verdict::new(AnalysisPhase::Error, why);
    let program = compile(condition).map_err(|e| error(format!("{field}: {e}")))?;
    match evaluate(&program, value) {
        Ok(Value::Bool(held)) => Ok(held),
        Ok(other) => Err(error(format!(
            "{field} `{condition}` must give true or false, gave {other:?} for {value}"
        ))),
        Err(failure) => {
            let hint = match value {
                QueryValue::Scalar(_) if condition.contains("result[") => {
                    " (the query returned a scalar: write `result`, not `result[0]`)"
                }
                _ => "",
            };
            Err(error(format!(
                "{field} `{condition}` could not be evaluated for {value}: {failure}{hint}"
            )))
        }
    }
}

/// Flagger's range: every sample within `[min, max]`.
fn judge_range(range: &ThresholdRange, value: &QueryValue) -> Verdict {
    for sample in value.samples() {
        if let Some(min) = range.min
            && *sample < min
        {
            return Verdict::new(
                AnalysisPhase::Failed,
                format!("{sample} is below the thresholdRange min {min}"),
            );
        }
        if let Some(max) = range.max
            && *sample > max
        {
            return Verdict::new(
                AnalysisPhase::Failed,
                format!("{sample} is above the thresholdRange max {max}"),
            );
        }
    }
    let bound = |b: Option<f64>, open: &str| b.map_or_else(|| open.to_owned(), |b| b.to_string());
    Verdict::new(
        AnalysisPhase::Successful,
        format!(
            "{value} is within the thresholdRange [{}, {}]",
            bound(range.min, "-inf"),
            bound(range.max, "+inf")
        ),
    )
}

#[cfg(test)]
mod tests;
