//! What a condition can cost, read from its syntax tree before it ever runs. Pure.
//!
//! The walk finds names CEL does not have (variables other than `result` and the ones macros
//! bind, functions the standard library lacks) and bounds the work one evaluation can do over
//! the largest `result` weir judges: every node counts one step (a function call a few more,
//! for finding its overload), a comprehension (`all`,
//! `exists`, `exists_one`, `map`, `filter`) counts its body once per element of its range,
//! and a call counts the elements and characters of the values it is given (a comparison of
//! two lists, a concatenation, `in`). Lengths are upper bounds followed through the
//! expression: `result` has [`MAX_SAMPLES`] elements, a list literal its element count, a
//! concatenation the sum, `map` and `filter` their range's length. Kubernetes does the same
//! for its CEL rules (an estimated cost refused above a limit), for the same reason: a
//! condition is written by a tenant and run by the controller everyone shares.

use cel::common::ast::operators;
use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;

/// Most samples a measurement judges; a larger answer is an Error measurement. Far above any
/// real gate (one sample per pod or per route), and the size every cost estimate assumes.
pub const MAX_SAMPLES: usize = 10_000;

/// Functions the standard library declares, called as `f(x)`; the operators are the parser's
/// names for `a + b`, `a[i]`, `c ? a : b` and the rest. Kept in step with the `cel` crate by
/// a test that asks it.
pub(super) const GLOBAL_FUNCTIONS: &[&str] = &[
    "size", "int", "uint", "double", "string", "bytes", "bool", "dyn", "type",
];
/// Functions the standard library declares, called as `x.f(y)`.
pub(super) const MEMBER_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "hasValue",
    "value",
    "or",
    "orValue",
];
const OPERATORS: &[&str] = &[
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::SUBSTRACT,
    operators::ADD,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::GREATER_EQUALS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::LESS,
    operators::NEGATE,
    operators::INDEX,
    operators::OPT_INDEX,
    operators::OPT_SELECT,
    operators::NOT_STRICTLY_FALSE,
    operators::IN,
];
/// Calls whose answer is a number, a bool or a short string, whatever they are given.
const SCALAR_RESULTS: &[&str] = &[
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::GREATER_EQUALS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::LESS,
    operators::NEGATE,
    operators::NOT_STRICTLY_FALSE,
    operators::IN,
    "size",
    "int",
    "uint",
    "double",
    "bool",
    "type",
    "contains",
    "startsWith",
    "endsWith",
    "hasValue",
];
/// Calls that look at one element or one flag, never at a whole value.
const CONSTANT_TIME: &[&str] = &[
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::NOT_STRICTLY_FALSE,
    operators::INDEX,
    operators::OPT_INDEX,
    "size",
    "hasValue",
    "value",
];
/// What finding a function's overload costs beyond an operator, in steps: the bench's
/// conversions (`int(x) + int(x) ...`) take about twice as long a step as comparisons
/// without it.
const FUNCTION_LOOKUP: u64 = 3;
/// The longest text `string(x)` makes of a number.
const NUMBER_TEXT: u64 = 32;

/// The bound on a value: how many elements at each level of nesting (`[]` for a number or a
/// bool, `[n]` for a list of numbers, `[n, m]` for a list of lists), and how long a string in
/// it can be.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Shape {
    lengths: Vec<u64>,
    text: u64,
}

impl Shape {
    fn scalar() -> Shape {
        Shape::default()
    }

    /// How many elements a comprehension over this value runs its body for.
    fn length(&self) -> u64 {
        self.lengths.first().copied().unwrap_or(0)
    }

    /// What one element is.
    fn element(&self) -> Shape {
        Shape {
            lengths: self.lengths.iter().skip(1).copied().collect(),
            text: self.text,
        }
    }

    /// Everything in it, counted once: what copying or comparing it costs.
    fn volume(&self) -> u64 {
        let mut total = 0u64;
        let mut at_level = 1u64;
        for length in &self.lengths {
            at_level = at_level.saturating_mul(*length);
            total = total.saturating_add(at_level);
        }
        total.saturating_add(self.text)
    }

    /// A value that is either one or the other.
    fn either(&self, other: &Shape) -> Shape {
        let depth = self.lengths.len().max(other.lengths.len());
        let at = |s: &Shape, i: usize| s.lengths.get(i).copied().unwrap_or(0);
        Shape {
            lengths: (0..depth).map(|i| at(self, i).max(at(other, i))).collect(),
            text: self.text.max(other.text),
        }
    }

    /// Both joined, as `+` joins lists or strings.
    fn joined(&self, other: &Shape) -> Shape {
        let mut shape = self.either(other);
        if let Some(first) = shape.lengths.first_mut() {
            *first = self.length().saturating_add(other.length());
        }
        shape.text = self.text.saturating_add(other.text);
        shape
    }

    /// A list of `length` elements, each at most `element`.
    fn list_of(length: u64, element: &Shape) -> Shape {
        let mut lengths = vec![length];
        lengths.extend(&element.lengths);
        Shape {
            lengths,
            text: element.text,
        }
    }
}

/// What the walk found.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Analysis {
    /// Steps one evaluation can take at most, over a `result` of [`MAX_SAMPLES`] samples.
    pub cost: u64,
    /// Comprehensions nested inside each other's bodies, at most.
    pub depth: usize,
    /// Of those, how many iterate over something as long as `result`.
    pub depth_over_result: usize,
    /// Nodes inside each other, at most: evaluation recurses once per level, on a thread
    /// whose stack is a few MiB (`result[0][0]...` or `x.size().size()...` add levels
    /// without brackets).
    pub levels: usize,
    /// The first variable CEL would not find.
    pub unknown_variable: Option<String>,
    /// The first function CEL would not find.
    pub unknown_function: Option<String>,
}

struct Walked {
    shape: Shape,
    cost: u64,
}

impl Walked {
    fn new(shape: Shape, cost: u64) -> Walked {
        Walked { shape, cost }
    }
}

/// The names in scope, innermost last, with the bound on each value.
type Scope = Vec<(String, Shape)>;

/// Where a node is: how deep in the tree, and inside how many comprehensions' bodies (of
/// which over something as long as `result`).
#[derive(Clone, Copy)]
struct At {
    level: usize,
    loops: usize,
    loops_over_result: usize,
}

pub(super) fn analyse(expression: &Expression) -> Analysis {
    let mut analysis = Analysis::default();
    let at = At {
        level: 0,
        loops: 0,
        loops_over_result: 0,
    };
    let walked = walk(expression, &mut Vec::new(), at, &mut analysis);
    analysis.cost = walked.cost;
    analysis
}

fn walk(expression: &Expression, scope: &mut Scope, at: At, analysis: &mut Analysis) -> Walked {
    analysis.levels = analysis.levels.max(at.level + 1);
    let nesting = At {
        level: at.level + 1,
        ..at
    };
    match &expression.expr {
        Expr::Unspecified => Walked::new(Shape::scalar(), 1),
        Expr::Literal(literal) => {
            let text = match literal {
                LiteralValue::String(s) => s.inner().len(),
                LiteralValue::Bytes(b) => b.inner().len(),
                _ => 0,
            };
            Walked::new(
                Shape {
                    lengths: Vec::new(),
                    text: u64::try_from(text).unwrap_or(u64::MAX),
                },
                1,
            )
        }
        Expr::Ident(name) => {
            let shape = match scope.iter().rev().find(|(bound, _)| bound == name) {
                Some((_, shape)) => shape.clone(),
                None if name == "result" => Shape::list_of(MAX_SAMPLES as u64, &Shape::scalar()),
                None => {
                    analysis
                        .unknown_variable
                        .get_or_insert_with(|| name.clone());
                    Shape::scalar()
                }
            };
            Walked::new(shape, 1)
        }
        Expr::Select(select) => {
            let operand = walk(&select.operand, scope, nesting, analysis);
            // A field of a map: any of its values. Records weir does not have.
            Walked::new(operand.shape.element(), operand.cost.saturating_add(1))
        }
        Expr::List(list) => {
            let mut cost = 1u64;
            let mut element = Shape::scalar();
            for item in &list.elements {
                let walked = walk(item, scope, nesting, analysis);
                cost = cost
                    .saturating_add(walked.cost)
                    .saturating_add(walked.shape.volume());
                element = element.either(&walked.shape);
            }
            let length = u64::try_from(list.elements.len()).unwrap_or(u64::MAX);
            Walked::new(Shape::list_of(length, &element), cost)
        }
        Expr::Map(map) => {
            let mut cost = 1u64;
            let mut element = Shape::scalar();
            for entry in &map.entries {
                let parts: Vec<&Expression> = match &entry.expr {
                    EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
                    EntryExpr::StructField(f) => vec![&f.value],
                };
                for part in parts {
                    let walked = walk(part, scope, nesting, analysis);
                    cost = cost
                        .saturating_add(walked.cost)
                        .saturating_add(walked.shape.volume());
                    element = element.either(&walked.shape);
                }
            }
            let length = u64::try_from(map.entries.len()).unwrap_or(u64::MAX);
            Walked::new(Shape::list_of(length, &element), cost)
        }
        Expr::Struct(structure) => {
            // No message types are declared: it fails at once, after its fields.
            let mut cost = 1u64;
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    cost = cost.saturating_add(walk(&field.value, scope, nesting, analysis).cost);
                }
            }
            Walked::new(Shape::scalar(), cost)
        }
        Expr::Call(call) => {
            let known = match &call.target {
                None => {
                    OPERATORS.contains(&call.func_name.as_str())
                        || GLOBAL_FUNCTIONS.contains(&call.func_name.as_str())
                }
                Some(_) => MEMBER_FUNCTIONS.contains(&call.func_name.as_str()),
            };
            if !known {
                analysis
                    .unknown_function
                    .get_or_insert_with(|| call.func_name.clone());
            }
            let mut cost = 1u64;
            let mut given = Vec::new();
            for argument in call.target.iter().map(|t| t.as_ref()).chain(&call.args) {
                let walked = walk(argument, scope, nesting, analysis);
                cost = cost.saturating_add(walked.cost);
                given.push(walked.shape);
            }
            let name = call.func_name.as_str();
            if !OPERATORS.contains(&name) {
                cost = cost.saturating_add(FUNCTION_LOOKUP);
            }
            if !CONSTANT_TIME.contains(&name) {
                for shape in &given {
                    cost = cost.saturating_add(shape.volume());
                }
            }
            let shape = match name {
                operators::INDEX => given.first().map(Shape::element).unwrap_or_default(),
                operators::CONDITIONAL => given
                    .iter()
                    .skip(1)
                    .fold(Shape::scalar(), |s, g| s.either(g)),
                "string" => Shape {
                    lengths: Vec::new(),
                    text: given
                        .iter()
                        .map(|g| g.text)
                        .max()
                        .unwrap_or(0)
                        .max(NUMBER_TEXT),
                },
                name if SCALAR_RESULTS.contains(&name) => Shape::scalar(),
                // `+`, and what hands back what it is given (dyn, optional values): as large
                // as everything given together.
                _ => given.iter().fold(Shape::scalar(), |s, g| s.joined(g)),
            };
            Walked::new(shape, cost)
        }
        Expr::Comprehension(comprehension) => {
            let range = walk(&comprehension.iter_range, scope, nesting, analysis);
            let init = walk(&comprehension.accu_init, scope, nesting, analysis);
            let runs = range.shape.length();
            let element = range.shape.element();
            // map and filter start from an empty list and append to it; cel appends in place.
            let builds_list =
                matches!(&comprehension.accu_init.expr, Expr::List(l) if l.elements.is_empty());
            let accumulator = if builds_list {
                Shape::list_of(0, &Shape::scalar())
            } else {
                init.shape.clone()
            };
            let over_result = runs >= MAX_SAMPLES as u64;
            let inner = At {
                level: nesting.level,
                loops: nesting.loops + 1,
                loops_over_result: nesting.loops_over_result + usize::from(over_result),
            };
            analysis.depth = analysis.depth.max(inner.loops);
            analysis.depth_over_result = analysis.depth_over_result.max(inner.loops_over_result);
            let outer_len = scope.len();
            // Two-variable forms bind the index (or key) first, then the element.
            if let Some(second) = &comprehension.iter_var2 {
                scope.push((comprehension.iter_var.clone(), Shape::scalar()));
                scope.push((second.clone(), element.clone()));
            } else {
                scope.push((comprehension.iter_var.clone(), element.clone()));
            }
            scope.push((comprehension.accu_var.clone(), accumulator));
            let condition = walk(&comprehension.loop_cond, scope, inner, analysis);
            let step = walk(&comprehension.loop_step, scope, inner, analysis);
            scope.truncate(outer_len);
            // The result sees the accumulator only.
            scope.push((comprehension.accu_var.clone(), init.shape.clone()));
            let result = walk(&comprehension.result, scope, nesting, analysis);
            scope.truncate(outer_len);
            // map and filter append in place: no `+`, no one-element list, no accumulator read.
            let appending = if builds_list { 3 } else { 0 };
            let per_element = condition
                .cost
                .saturating_add(step.cost.saturating_sub(appending))
                .saturating_add(element.volume())
                .saturating_add(1);
            let cost = range
                .cost
                .saturating_add(init.cost)
                .saturating_add(runs.saturating_mul(per_element))
                .saturating_add(result.cost);
            let shape = if builds_list {
                Shape::list_of(runs, &step.shape.element())
            } else {
                result.shape
            };
            Walked::new(shape, cost)
        }
    }
}
