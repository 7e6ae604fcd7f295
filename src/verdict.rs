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

/// What a measurement returned, in the shape `result` has in conditions: a Prometheus
/// instant query's number or vector, or the JSON a `web` metric's `jsonPath` selected.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    Scalar(f64),
    Vector(Vec<f64>),
    /// At most [`MAX_JSON_VALUES`] values, nested at most [`MAX_JSON_DEPTH`] deep (the
    /// provider refuses more), so that a condition's work stays within what its estimate
    /// allows for `result`'s samples.
    Json(serde_json::Value),
}

/// Most values (every number, string, bool, null, list and object counts one) in a JSON
/// result: with at most two comprehensions nested, a condition then does at most 256² body
/// evaluations however the JSON is shaped, less than one pass over [`MAX_SAMPLES`] samples
/// with a few tests each.
pub const MAX_JSON_VALUES: usize = 256;
/// Deepest nesting of lists and objects in a JSON result.
pub const MAX_JSON_DEPTH: usize = 16;
/// Longest string in a JSON result.
pub const MAX_JSON_TEXT: usize = 1024;

/// Why a JSON result is beyond what conditions judge, if it is.
pub fn json_beyond_bounds(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, depth: usize, count: &mut usize) -> Option<String> {
        *count += 1;
        if *count > MAX_JSON_VALUES {
            return Some(format!(
                "the selected JSON has more than {MAX_JSON_VALUES} values; select less with jsonPath"
            ));
        }
        if depth > MAX_JSON_DEPTH {
            return Some(format!(
                "the selected JSON nests deeper than {MAX_JSON_DEPTH}; select less with jsonPath"
            ));
        }
        match value {
            serde_json::Value::String(text) if text.len() > MAX_JSON_TEXT => Some(format!(
                "the selected JSON has a string of {} bytes; at most {MAX_JSON_TEXT} are judged",
                text.len()
            )),
            serde_json::Value::Array(items) => items.iter().find_map(|v| walk(v, depth + 1, count)),
            serde_json::Value::Object(fields) => {
                fields.values().find_map(|v| walk(v, depth + 1, count))
            }
            _ => None,
        }
    }
    walk(value, 0, &mut 0)
}

fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        // Every number a double, as Prometheus' samples are: `result.rate >= 1` compares alike.
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(text) => Value::String(Arc::new(text.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: std::collections::HashMap<cel::objects::Key, Value> = fields
                .iter()
                .map(|(k, v)| {
                    (
                        cel::objects::Key::String(Arc::new(k.clone())),
                        json_to_cel(v),
                    )
                })
                .collect();
            Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

impl QueryValue {
    /// An empty vector, or NaN anywhere (Prometheus' answer to 0/0 when there is no traffic);
    /// JSON null (a jsonPath that selected nothing).
    pub fn is_no_data(&self) -> bool {
        match self {
            QueryValue::Scalar(value) => value.is_nan(),
            QueryValue::Vector(values) => values.is_empty() || values.iter().any(|v| v.is_nan()),
            QueryValue::Json(value) => value.is_null(),
        }
    }

    fn to_cel(&self) -> Value {
        match self {
            QueryValue::Scalar(value) => Value::Float(*value),
            QueryValue::Vector(values) => {
                Value::List(Arc::new(values.iter().map(|v| Value::Float(*v)).collect()))
            }
            QueryValue::Json(value) => json_to_cel(value),
        }
    }

    /// The numbers a thresholdRange judges: a JSON number, or a JSON list's numbers.
    pub fn samples(&self) -> Vec<f64> {
        match self {
            QueryValue::Scalar(value) => vec![*value],
            QueryValue::Vector(values) => values.clone(),
            QueryValue::Json(serde_json::Value::Number(n)) => n.as_f64().into_iter().collect(),
            QueryValue::Json(serde_json::Value::Array(items)) => {
                items.iter().filter_map(serde_json::Value::as_f64).collect()
            }
            QueryValue::Json(_) => Vec::new(),
        }
    }
}

impl std::fmt::Display for QueryValue {
    /// `0.97` for a scalar, `[0.97, 1]` for a vector, JSON as it came: what `result` is in a
    /// condition.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryValue::Json(value) => {
                // Bounded as a vector is: the record it appears in stays small.
                let text = value.to_string();
                match text.char_indices().nth(SHOWN_JSON) {
                    Some((at, _)) => write!(f, "{}... ({} bytes)", &text[..at], text.len()),
                    None => write!(f, "{text}"),
                }
            }
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
/// Characters shown of a JSON result.
const SHOWN_JSON: usize = 200;
/// Longest condition accepted: enough for any real gate, small enough that parsing a
/// hostile one cannot exhaust a worker's stack.
const MAX_CONDITION: usize = 1024;

/// Expressions inside each other. Evaluation recurses once per level on a thread of a few MiB
/// of stack; real gates use a dozen, and chains of `&&` and `||` are balanced by the parser.
const MAX_LEVELS: usize = 48;
/// Comprehensions inside each other's bodies: two are enough to compare each sample with a
/// few thresholds.
const MAX_NESTED_COMPREHENSIONS: usize = 2;
/// Most estimated steps one condition may take over [`MAX_SAMPLES`] samples: a pass or two
/// over `result` with a few tests per sample (`result.all(x, x >= 0.9 && x <= 1.1)` is
/// 120,003), judged in milliseconds (BENCHMARKS.md, "Figures behind limits").
pub const MAX_COST: u64 = 150_000;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Parses a condition and rejects what could never evaluate or could cost too much, without
/// ever running it: syntax errors, names other than `result` and the ones macros bind,
/// functions CEL does not have, comprehensions nested too deep, and an estimated cost over
/// [`MAX_SAMPLES`] samples above [`MAX_COST`]. Where the text is Argo's expr syntax, the
/// message says how CEL writes it.
pub fn check_condition(source: &str) -> Result<(), String> {
    check_text(source)?;
    on_cel_stack(|| {
        let program = compile(source)?;
        check_program(&program, source)
    })
}

/// cel's parser, its tree's drop and its evaluator recurse once per nesting level, and take
/// well over 100 KiB of stack per bracket in a debug build: a dozen brackets overflowed a
/// tokio worker's 2 MiB and aborted the whole controller. They run on a stack of their own,
/// ample for the deepest text `check_text` lets through (virtual memory, touched only as
/// far as it is used).
const CEL_STACK: usize = 32 << 20;

fn on_cel_stack<T>(work: impl FnOnce() -> T) -> T {
    stacker::grow(CEL_STACK, work)
}

/// What is refused before cel parses anything: too long, or nested too deep.
fn check_text(source: &str) -> Result<(), String> {
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
    Ok(())
}

/// The estimated steps of a condition over [`MAX_SAMPLES`] samples (what [`check_condition`]
/// holds against [`MAX_COST`]), or None when it does not parse.
pub fn estimated_cost(source: &str) -> Option<u64> {
    check_text(source).ok()?;
    on_cel_stack(|| {
        let program = Program::compile(source).ok()?;
        Some(cost::analyse(program.expression()).cost)
    })
}

/// The static checks on a parsed condition.
fn check_program(program: &Program, source: &str) -> Result<(), String> {
    let analysis = cost::analyse(program.expression());
    if let Some(name) = &analysis.unknown_variable {
        return Err(undefined(name, "the only variable is `result`", source));
    }
    if let Some(name) = &analysis.unknown_function {
        let known = format!(
            "CEL has no such function here (it has {}, and x.{})",
            cost::GLOBAL_FUNCTIONS.join(", "),
            cost::MEMBER_FUNCTIONS.join(", x.")
        );
        return Err(undefined(name, &known, source));
    }
    if analysis.levels > MAX_LEVELS {
        return Err(format!(
            "nests expressions {} levels deep (calls, indexes, operators, macros); at most {MAX_LEVELS} are accepted: write it as shorter tests joined with && or ||",
            analysis.levels
        ));
    }
    if analysis.depth > MAX_NESTED_COMPREHENSIONS {
        return Err(format!(
            "nests {} comprehensions (all, exists, exists_one, map, filter) inside each other; at most {MAX_NESTED_COMPREHENSIONS} are accepted: {ONE_PASS}",
            analysis.depth
        ));
    }
    if analysis.cost > MAX_COST {
        let why = match analysis.depth_over_result {
            n if n >= 2 => format!("nests {n} comprehensions over result: "),
            _ => String::new(),
        };
        return Err(format!(
            "{why}estimated {} steps for {} samples, above the limit of {}; {ONE_PASS}",
            steps(analysis.cost),
            thousands(MAX_SAMPLES as u64),
            steps(MAX_COST),
        ));
    }
    Ok(())
}

/// What to write instead of a condition that costs too much.
const ONE_PASS: &str = "compare each sample once, e.g. result.all(x, x < 0.05), and join tests on one sample with && inside one comprehension";

/// `10^8` for a round power of ten, `about 1.2e8` for a large number, `70,004` below a million.
fn steps(cost: u64) -> String {
    if cost < 1_000_000 {
        return thousands(cost);
    }
    let exponent = cost.ilog10();
    if 10u64.checked_pow(exponent) == Some(cost) {
        format!("10^{exponent}")
    } else {
        #[allow(clippy::cast_precision_loss)] // two digits are shown
        let mantissa = cost as f64 / 10f64.powi(exponent as i32);
        format!("about {mantissa:.1}e{exponent}")
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(c);
    }
    text
}

fn undefined(name: &str, why: &str, source: &str) -> String {
    let mut message = format!("{name:?} is not defined: {why}");
    if let Some(hint) = argo_hint(source) {
        message.push_str("; ");
        message.push_str(&hint);
    }
    message
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
    // Every cost estimate assumes at most this many; the provider refuses more before this.
    if value.samples().len() > MAX_SAMPLES {
        return Verdict::new(
            AnalysisPhase::Error,
            too_many_samples(value.samples().len()),
        );
    }
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

/// The message of a measurement whose answer is too large to judge.
pub fn too_many_samples(samples: usize) -> String {
    format!(
        "result too large: {samples} samples, at most {MAX_SAMPLES} are judged; aggregate in the query (sum, max, topk) so that it returns fewer"
    )
}

/// Evaluates a condition; anything but true or false is an Error verdict that says why. The
/// static checks run again first: a run written by hand may carry a condition validation
/// never saw.
fn holds(field: &str, condition: &str, value: &QueryValue) -> Result<bool, Verdict> {
    let error = |why: String| Verdict::new(AnalysisPhase::Error, why);
    check_text(condition).map_err(|e| error(format!("{field}: {e}")))?;
    on_cel_stack(|| holds_checked(field, condition, value))
}

fn holds_checked(field: &str, condition: &str, value: &QueryValue) -> Result<bool, Verdict> {
    let error = |why: String| Verdict::new(AnalysisPhase::Error, why);
    let program = compile(condition).map_err(|e| error(format!("{field}: {e}")))?;
    check_program(&program, condition).map_err(|e| error(format!("{field}: {e}")))?;
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
    let samples = value.samples();
    if samples.is_empty() {
        return Verdict::new(
            AnalysisPhase::Error,
            format!(
                "thresholdRange judges numbers, and the result {value} has none; select a number with jsonPath, or use successCondition"
            ),
        );
    }
    for sample in samples {
        if let Some(min) = range.min
            && sample < min
        {
            return Verdict::new(
                AnalysisPhase::Failed,
                format!("{sample} is below the thresholdRange min {min}"),
            );
        }
        if let Some(max) = range.max
            && sample > max
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

mod cost;
pub use cost::MAX_SAMPLES;
#[cfg(test)]
mod tests;
