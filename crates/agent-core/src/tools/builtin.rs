//! Built-in tools, safe by construction: no shell, no network, no file access.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use exmex::{
    BinOp, Express, FlatEx, FloatOpsFactory, MakeOperators, MatchLiteral, Operator,
    literal_matcher_from_pattern,
};
use serde_json::{Value, json};

use super::Tool;
use crate::error::ToolError;

/// Answers the current time in UTC.
#[derive(Debug, Clone, Copy)]
pub struct CurrentTime;

#[async_trait]
impl Tool for CurrentTime {
    fn name(&self) -> &str {
        "current_time"
    }

    fn description(&self) -> &str {
        "Returns the current date and time in UTC (RFC 3339) and as a Unix timestamp."
    }

    fn parameters(&self) -> Value {
        json!({ "type": "object", "properties": {}, "additionalProperties": false })
    }

    async fn call(&self, _arguments: Value) -> Result<String, ToolError> {
        let now = SystemTime::now();
        let unix = now
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        Ok(
            json!({ "utc": humantime::format_rfc3339_seconds(now).to_string(), "unix": unix })
                .to_string(),
        )
    }
}

/// Evaluates arithmetic with exmex: numbers (`1.5`, `2e3`), + - * / % ^, parentheses, functions
/// (`sqrt`, `ln`, `sin`, ...; also written `math::sqrt`) and the constants `PI` and `E`. Every
/// number is a float, so 7/2 is 3.5.
#[derive(Debug, Clone, Copy)]
pub struct Calculator;

/// The longest expression accepted.
const MAX_EXPRESSION: usize = 256;

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression such as \"2+3*4\" or \"(1.5+2)^2 / 7\" and returns the number."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": { "type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION }
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let expression = arguments["expression"].as_str().unwrap_or_default();
        evaluate(expression).map_err(ToolError::Failed)
    }
}

/// exmex's float operators, and `%`.
#[derive(Debug, Clone)]
struct Operators;

impl MakeOperators<f64> for Operators {
    fn make<'a>() -> Vec<Operator<'a, f64>> {
        let mut operators = FloatOpsFactory::<f64>::make();
        operators.push(Operator::make_bin(
            "%",
            BinOp {
                apply: |a, b| a % b,
                // As `/`.
                prio: 3,
                is_commutative: false,
            },
        ));
        operators
    }
}

// Numbers in decimal or scientific notation.
literal_matcher_from_pattern!(Numbers, r"^(\.?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)");

/// Evaluates `expression`, in floats.
pub(crate) fn evaluate(expression: &str) -> Result<String, String> {
    if expression.len() > MAX_EXPRESSION {
        return Err(format!(
            "the expression is longer than {MAX_EXPRESSION} characters"
        ));
    }
    // evalexpr's names, which models have learned from this tool's earlier versions.
    let plain = expression.replace("math::", "");
    let parsed = FlatEx::<f64, Operators, Numbers>::parse(&plain)
        .map_err(|error| format!("cannot evaluate {expression:?}: {error}"))?;
    if let Some(name) = parsed.var_names().first() {
        return Err(format!(
            "only arithmetic is allowed: {name:?} is not a number, operator or function"
        ));
    }
    let number = parsed
        .eval(&[])
        .map_err(|error| format!("cannot evaluate {expression:?}: {error}"))?;
    if !number.is_finite() {
        return Err(format!("{expression:?} has no finite value"));
    }
    Ok(if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    })
}

#[cfg(test)]
mod tests {
    use super::evaluate;

    #[test]
    fn the_calculator_does_arithmetic_and_refuses_the_rest() {
        let cases = [
            ("2+3*4", Ok("14")),
            ("7/2", Ok("3.5")),
            ("(1.5+2)^2", Ok("12.25")),
            ("10 % 3", Ok("1")),
            ("-4 * 2.5", Ok("-10")),
            ("math::sqrt(16)", Ok("4")),
            ("sqrt(16) + ln(E)", Ok("5")),
            ("2e3 / 4", Ok("500")),
            ("PI * 0", Ok("0")),
            ("a + 1", Err(())),
            ("1/0", Err(())),
            ("a = 5", Err(())),
            ("\"text\"", Err(())),
            ("2 +", Err(())),
            ("1 < 2", Err(())),
        ];
        for (expression, expected) in cases {
            let result = evaluate(expression);
            match expected {
                Ok(value) => assert_eq!(result.as_deref(), Ok(value), "{expression}"),
                Err(()) => assert!(result.is_err(), "{expression} gave {result:?}"),
            }
        }
        assert!(
            evaluate(&"1+".repeat(200)).is_err(),
            "over-long expressions are refused"
        );
    }
}
