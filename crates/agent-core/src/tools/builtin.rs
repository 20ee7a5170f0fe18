//! Built-in tools, safe by construction: no shell, no network, no file access.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
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

/// Evaluates arithmetic with evalexpr: numbers, + - * / % ^, parentheses, math functions.
/// Every number is a float, so 7/2 is 3.5.
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

/// Evaluates `expression` with every integer literal read as a float.
pub(crate) fn evaluate(expression: &str) -> Result<String, String> {
    if expression.len() > MAX_EXPRESSION {
        return Err(format!(
            "the expression is longer than {MAX_EXPRESSION} characters"
        ));
    }
    if expression.contains(['=', '"', ';']) {
        return Err("only arithmetic is allowed: no assignments, strings or sequences".into());
    }
    let value = evalexpr::eval(&floats(expression))
        .map_err(|error| format!("cannot evaluate {expression:?}: {error}"))?;
    let number = match value {
        evalexpr::Value::Float(number) => number,
        evalexpr::Value::Int(number) => number as f64,
        other => return Err(format!("{expression:?} is not a number but {other}")),
    };
    if !number.is_finite() {
        return Err(format!("{expression:?} has no finite value"));
    }
    Ok(if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    })
}

/// Rewrites integer literals as floats (`7/2` → `7.0/2.0`), leaving names such as `math::ln`
/// and existing floats alone.
fn floats(expression: &str) -> String {
    let characters: Vec<char> = expression.chars().collect();
    let mut rewritten = String::with_capacity(expression.len() + 8);
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        let starts_number = character.is_ascii_digit()
            && (index == 0
                || !(characters[index - 1].is_alphanumeric()
                    || matches!(characters[index - 1], '.' | '_')));
        if !starts_number {
            rewritten.push(character);
            index += 1;
            continue;
        }
        let start = index;
        while index < characters.len() && characters[index].is_ascii_digit() {
            index += 1;
        }
        rewritten.extend(&characters[start..index]);
        let continues = index < characters.len()
            && (matches!(characters[index], '.' | 'e' | 'E') || characters[index].is_alphabetic());
        if !continues {
            rewritten.push_str(".0");
        }
    }
    rewritten
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
