//! Five-field cron (as users write it) to CloudNativePG's six-field form (seconds first).
//!
//! CloudNativePG parses `ScheduledBackup.spec.schedule` with robfig/cron and a leading seconds
//! field, so `0 1 * * *` (01:00 daily) must become `0 0 1 * * *`. Every field is parsed and
//! written back in a normal form, so that an expression CloudNativePG would refuse, or read
//! differently, is rejected here with a message instead of failing later in the cluster.

use std::fmt;

/// Why a cron expression was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError(String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    question_mark: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        question_mark: false,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        question_mark: false,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        question_mark: true,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        question_mark: false,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 6,
        names: WEEKDAYS,
        question_mark: true,
    },
];

/// Converts a five-field cron expression (minute hour day-of-month month day-of-week, UTC) or one
/// of the macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and
/// `@hourly` into CloudNativePG's six-field form with seconds first.
///
/// Accepted in each field: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (from `a`
/// to the field's end), lists `x,y`, month names `jan`–`dec` and weekday names `sun`–`sat`, and
/// `?` (same as `*`) in the day fields. Days of the week run from 0 (Sunday) to 6.
pub fn to_cnpg_schedule(expression: &str) -> Result<String, CronError> {
    let expression = expression.trim();
    if let Some(macro_name) = expression.strip_prefix('@') {
        let six = match macro_name.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 0 1 1 *",
            "monthly" => "0 0 0 1 * *",
            "weekly" => "0 0 0 * * 0",
            "daily" | "midnight" => "0 0 0 * * *",
            "hourly" => "0 0 * * * *",
            _ => {
                return Err(CronError(format!(
                    "unknown macro @{macro_name}; use @yearly, @monthly, @weekly, @daily, @hourly or five fields"
                )));
            }
        };
        return Ok(six.to_string());
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        let hint = if fields.len() == 6 {
            "; write five fields without seconds (the operator adds them), e.g. \"0 1 * * *\""
        } else {
            ", e.g. \"0 1 * * *\" for 01:00 every day"
        };
        return Err(CronError(format!(
            "expected five fields (minute hour day-of-month month day-of-week), found {}{hint}",
            fields.len()
        )));
    }
    let mut out = vec!["0".to_string()];
    for (text, field) in fields.iter().zip(FIELDS.iter()) {
        out.push(normalize_field(text, field)?);
    }
    Ok(out.join(" "))
}

fn normalize_field(text: &str, field: &Field) -> Result<String, CronError> {
    let items: Result<Vec<String>, CronError> = text
        .split(',')
        .map(|item| normalize_item(item, field))
        .collect();
    Ok(items?.join(","))
}

fn normalize_item(item: &str, field: &Field) -> Result<String, CronError> {
    let err = |reason: String| CronError(format!("{} field {item:?}: {reason}", field.name));
    if item.is_empty() {
        return Err(err("empty list element".into()));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step
                .parse()
                .map_err(|_| err(format!("step {step:?} is not a number")))?;
            if step == 0 || step > field.max - field.min + 1 {
                return Err(err(format!(
                    "step {step} must be between 1 and {}",
                    field.max - field.min + 1
                )));
            }
            (range, Some(step))
        }
        None => (item, None),
    };
    let body = if range == "*" || (range == "?" && field.question_mark) {
        "*".to_string()
    } else if range == "?" {
        return Err(err(
            "? is only allowed in the day-of-month and day-of-week fields".into(),
        ));
    } else if let Some((low, high)) = range.split_once('-') {
        let low = value(low, field).map_err(err)?;
        let high = value(high, field).map_err(err)?;
        if low > high {
            return Err(err(format!(
                "range {low}-{high} runs backwards; write the smaller value first"
            )));
        }
        format!("{low}-{high}")
    } else {
        let single = value(range, field).map_err(err)?;
        match step {
            // robfig/cron reads `a/n` as `a-max/n`; spell that out.
            Some(_) => format!("{single}-{}", field.max),
            None => single.to_string(),
        }
    };
    Ok(match step {
        Some(step) => format!("{body}/{step}"),
        None => body,
    })
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|n| *n == lower) {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        return Ok(field.min + index);
    }
    let number: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("{text:?} is not a number")
        } else {
            format!(
                "{text:?} is neither a number nor one of {}",
                field.names.join(", ")
            )
        }
    })?;
    if number < field.min || number > field.max {
        let hint = if field.name == "day of week" && number == 7 {
            " (use 0 for Sunday)"
        } else {
            ""
        };
        return Err(format!(
            "{number} is outside {}-{}{hint}",
            field.min, field.max
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> String {
        match to_cnpg_schedule(expr) {
            Ok(s) => s,
            Err(e) => panic!("{expr}: {e}"),
        }
    }

    fn err(expr: &str) -> String {
        match to_cnpg_schedule(expr) {
            Ok(s) => panic!("{expr} was accepted as {s}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_step_may_be_as_long_as_its_field_and_no_longer() {
        assert_eq!(ok("*/60 */24 * * *"), "0 */60 */24 * * *");
        assert_eq!(ok("0 0 */31 */12 */7"), "0 0 0 */31 */12 */7");
        assert_eq!(
            err("*/61 * * * *"),
            "minute field \"*/61\": step 61 must be between 1 and 60"
        );
        assert_eq!(
            err("0 0 */32 * *"),
            "day of month field \"*/32\": step 32 must be between 1 and 31"
        );
        assert_eq!(
            err("0 0 * */13 *"),
            "month field \"*/13\": step 13 must be between 1 and 12"
        );
    }

    #[test]
    fn only_a_seven_in_the_day_of_week_gets_the_sunday_hint() {
        assert_eq!(
            err("0 0 * * 7"),
            "day of week field \"7\": 7 is outside 0-6 (use 0 for Sunday)"
        );
        assert_eq!(
            err("0 0 * * 8"),
            "day of week field \"8\": 8 is outside 0-6"
        );
        assert_eq!(err("0 0 * 13 *"), "month field \"13\": 13 is outside 1-12");
    }

    #[test]
    fn prepends_seconds() {
        assert_eq!(ok("0 1 * * *"), "0 0 1 * * *");
        assert_eq!(ok("30 4 * * 0"), "0 30 4 * * 0");
        assert_eq!(ok("  15   2 1 * *  "), "0 15 2 1 * *");
    }

    #[test]
    fn normalizes_ranges_steps_lists_and_names() {
        assert_eq!(ok("*/15 1-5 * * mon-fri"), "0 */15 1-5 * * 1-5");
        assert_eq!(ok("0 0 1,15 jan,JUL ?"), "0 0 0 1,15 1,7 *");
        assert_eq!(ok("5/20 * * * *"), "0 5-59/20 * * * *");
        assert_eq!(ok("0 0-12/6 * * SUN"), "0 0 0-12/6 * * 0");
        assert_eq!(ok("0 3 ? * 6"), "0 0 3 * * 6");
    }

    #[test]
    fn macros_expand() {
        assert_eq!(ok("@daily"), "0 0 0 * * *");
        assert_eq!(ok("@midnight"), "0 0 0 * * *");
        assert_eq!(ok("@weekly"), "0 0 0 * * 0");
        assert_eq!(ok("@hourly"), "0 0 * * * *");
        assert_eq!(ok("@monthly"), "0 0 0 1 * *");
        assert_eq!(ok("@annually"), "0 0 0 1 1 *");
        assert!(err("@reboot").contains("unknown macro"));
        assert!(err("@every 1h").contains("unknown macro"));
    }

    #[test]
    fn rejects_what_cloudnativepg_would_refuse_or_misread() {
        assert!(err("0 0 1 * * *").contains("without seconds"));
        assert!(err("0 1 * *").contains("expected five fields"));
        assert!(err("60 * * * *").contains("outside 0-59"));
        assert!(err("0 24 * * *").contains("hour"));
        assert!(err("0 0 0 * *").contains("outside 1-31"));
        assert!(err("0 0 * 13 *").contains("outside 1-12"));
        assert!(err("0 0 * * 7").contains("use 0 for Sunday"));
        assert!(err("0 0 * * 5-1").contains("backwards"));
        assert!(err("*/0 * * * *").contains("step 0"));
        assert!(err("*/61 * * * *").contains("step 61"));
        assert!(err("? * * * *").contains("only allowed"));
        assert!(err("0 0 L * *").contains("not a number"));
        assert!(
            err("0 0 * * 1#2").contains("not a number") || err("0 0 * * 1#2").contains("neither")
        );
        assert!(err("0 0 * * foo").contains("neither a number nor one of sun"));
        assert!(err("1,,2 * * * *").contains("empty list element"));
        assert!(err("").contains("expected five fields"));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("0 99 * * *").starts_with("hour field \"99\""));
    }
}
